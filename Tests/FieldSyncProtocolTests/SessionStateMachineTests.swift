import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// `SyncSession` as a state machine: each state's legal and illegal inputs, what every input returns
/// (frames and events), its timer requests, and its typed close reasons. The peer is driven by hand
/// (`StandingTests.RawPeer`) so that it can send anything in any state.
@Suite struct SessionStateMachineTests {
    static let now = TestPKI.now

    /// A station (responder) with one change of its own, and a backpack peer driven by hand.
    struct Rig {
        var pki = TestPKI()
        let station: Replicator
        let backpack: DeviceIdentity
        let session: SyncSession
        var peer: StandingTests.RawPeer
        var decoder = FrameDecoder()

        init(live: Bool = false, changes: Int = 1) throws {
            station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
            for i in 0..<changes { _ = try SessionTests.write(station, UInt64(i + 1)) }
            backpack = try pki.device(.backpack, scopes: [TestPKI.station])
            var c = SessionConfiguration(network: SessionTests.net, salt: salt(11))
            c.live = live
            session = SyncSession(initiator: false, replicator: station, configuration: c, now: SessionStateMachineTests.now)
            peer = StandingTests.RawPeer(backpack, trust: pki.trust)
        }

        /// Runs the handshake by hand; returns the session's outputs to message 1 and message 3.
        mutating func handshake() throws -> (SessionOutput, SessionOutput) {
            let start = session.start()
            #expect(start.isEmpty, "a responder sends nothing first")
            let o1 = session.receive(FrameDecoder.frame(try peer.handshake.write()), now: SessionStateMachineTests.now)
            for f in o1.frames { decoder.append(f.bytes) }
            try peer.handshake.read(try #require(try decoder.next()), now: SessionStateMachineTests.now)
            let o3 = session.receive(FrameDecoder.frame(try peer.handshake.write()), now: SessionStateMachineTests.now)
            peer.transport = try peer.handshake.transport()
            for f in o3.frames { decoder.append(f.bytes) }  // opened by the next `messages` call, in order
            return (o1, o3)
        }

        /// Seals `m` as the peer and feeds it to the session.
        mutating func send(_ m: SessionMessage, now: UInt64 = SessionStateMachineTests.now) throws -> SessionOutput {
            var w = ByteWriter()
            m.encode(to: &w)
            return session.receive(FrameDecoder.frame(try peer.transport!.seal(w.bytes)), now: now)
        }

        /// The messages in an output's frames, opened as the peer.
        mutating func messages(_ out: SessionOutput) throws -> [SessionMessage] {
            for f in out.frames { decoder.append(f.bytes) }
            var ms: [SessionMessage] = []
            while let frame = try decoder.next() { ms.append(try SessionMessage.decode(try peer.transport!.open(frame))) }
            return ms
        }

        /// Reconciles as a peer that holds nothing, from the handshake's end; returns every output of the
        /// session until it planned its streaming.
        mutating func reconcileAsEmptyPeer() throws -> [SessionOutput] {
            var rec = Reconciler(role: .initiator, holdings: Holdings([]),
                                 hashing: SipHashReconciliationHashing(sessionKey: Array(peer.handshake.handshakeHash.prefix(32))),
                                 salt: salt(12))
            var outs: [SessionOutput] = []
            var pending = rec.start()
            var inbox = try messages(SessionOutput())
            for _ in 0..<20 {
                for case let .send(m) in pending {
                    let o = try send(.recon(m))
                    outs.append(o)
                    inbox += try messages(o)
                }
                pending = []
                if outs.contains(where: { $0.events.contains { if case .reconciled = $0 { true } else { false } } }) { return outs }
                for case let .recon(m) in inbox { pending += try rec.receive(m) }
                inbox = inbox.filter { if case .recon = $0 { false } else { true } }
            }
            Issue.record("reconciliation did not finish")
            return outs
        }
    }

    static func closeCode(_ out: SessionOutput) -> SessionError.Code? { out.closeReason?.error?.code }

    // MARK: created and handshaking

    @Test func startOutputsTheInitiatorsFirstMessageOnly() throws {
        var pki = TestPKI()
        let r = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let cfg = SessionConfiguration(network: SessionTests.net, salt: salt(1))
        let i = SyncSession(initiator: true, replicator: r, configuration: cfg, now: Self.now)
        let out = i.start()
        #expect(out.frames.map(\.kind) == [.handshake] && out.events.isEmpty)
        #expect(i.bytesSent[SessionFrameKind.handshake.rawValue] == out.frames[0].bytes.count)
        let resp = SyncSession(initiator: false, replicator: r, configuration: cfg, now: Self.now)
        #expect(resp.start().isEmpty)
    }

    /// While handshaking, push, standing checks and timers do nothing; a close fails the session with
    /// the typed `connectionClosed`; after that every input returns nothing.
    @Test func handshakingIgnoresDriverInputsAndClosesTyped() throws {
        var rig = try Rig()
        #expect(rig.session.start().isEmpty)
        let o1 = rig.session.receive(FrameDecoder.frame(try rig.peer.handshake.write()), now: Self.now)
        #expect(o1.frames.map(\.kind) == [.handshake] && o1.events.isEmpty, "message 2, nothing happened yet")
        #expect(rig.session.push(now: Self.now).isEmpty)
        #expect(rig.session.checkStanding(now: Self.now).isEmpty)
        #expect(rig.session.timerFired(now: Self.now).isEmpty)
        #expect(rig.session.peer == nil && rig.session.peerStandingLapsesAt == nil && !rig.session.isLive)
        let closed = rig.session.connectionClosed()
        #expect(closed.frames.isEmpty && closed.events.count == 1 && Self.closeCode(closed) == .connectionClosed)
        #expect(rig.session.failure?.code == .connectionClosed && rig.session.isClosed && !rig.session.isFinished)
        // Closed: nothing more happens, whatever comes.
        #expect(rig.session.receive([0, 3, 1, 2, 3], now: Self.now).isEmpty)
        #expect(rig.session.connectionClosed().isEmpty)
        #expect(rig.session.checkStanding(now: Self.now).isEmpty)
    }

    /// A frame that is not a handshake message fails the session: one `closed` event with a typed
    /// reason, and nothing sent.
    @Test func garbageHandshakeClosesWithATypedReasonAndSendsNothing() throws {
        let rig = try Rig()
        _ = rig.session.start()
        let out = rig.session.receive(FrameDecoder.frame([UInt8](repeating: 0xEE, count: 7)), now: Self.now)
        #expect(out.frames.isEmpty)
        #expect(out.events.count == 1 && Self.closeCode(out) == .handshakeFailed, "\(out.events)")
    }

    // MARK: reconciling

    /// The handshake's end: `authenticated`, a timer for the peer's standing lapse, this side's clock
    /// (Protocols/sync.md §4.3) and the first reconciliation message.
    @Test func authenticationAsksForTheStandingTimer() throws {
        var rig = try Rig()
        let (_, o3) = try rig.handshake()
        let lapse = try #require(rig.session.peerStandingLapsesAt)
        #expect(o3.events == [.authenticated(rig.backpack.id, .backpack), .needsTimer(at: lapse)], "\(o3.events)")
        #expect(o3.frames.map(\.kind) == [.clock, .reconciliation])
        #expect(rig.session.peer == rig.backpack.certificate)
    }

    /// In reconciling: an ack and a refusal are not legal (protocolViolation; the peer's reason), a
    /// second `done` is a protocol violation, a batch is applied and acknowledged.
    @Test func reconcilingLegalAndIllegalInputs() throws {
        do {
            var rig = try Rig()
            _ = try rig.handshake()
            let out = try rig.send(.ack(id: 1))
            #expect(Self.closeCode(out) == .protocolViolation && out.frames.isEmpty)
        }
        do {
            var rig = try Rig()
            _ = try rig.handshake()
            let out = try rig.send(.refuse(.revoked))
            #expect(Self.closeCode(out) == .revoked, "the peer's reason, typed")
            #expect(out.closeReason?.error?.detail.contains("refused this device") == true)
        }
        do {
            var rig = try Rig()
            _ = try rig.handshake()
            #expect(try rig.send(.done).isEmpty, "done while reconciling is legal (the peer finished first)")
            #expect(Self.closeCode(try rig.send(.done)) == .protocolViolation, "a second done")
        }
        do {
            var rig = try Rig()
            _ = try rig.handshake()
            let author = rig.pki.replicator(rig.backpack)
            let c = try SessionTests.write(author, 5)
            let out = try rig.send(.batch(id: 9, certificates: [], changes: [c.encodedBytes]))
            var applied = AppliedBatch()
            applied.changes = 1
            applied.accepted = 1
            applied.logs = [LogID(author: rig.backpack.id, scope: TestPKI.village)]
            #expect(out.events == [.applied(applied)], "\(out.events)")
            guard case .ack(9)? = try rig.messages(out).last else { Issue.record("no ack"); return }
            #expect(!rig.session.isClosed && rig.session.changesReceived == 1)
        }
    }

    // MARK: streaming, finished

    /// Streaming: a reconciliation message, an ack or ack-refused of an unknown batch, an ack-refused naming
    /// a position past the batch's changes (batch 1 holds one), or a keep-alive before the peer's `live` is
    /// illegal; the ack of the batch in flight brings `done`, the peer's `done` the typed `finished`.
    @Test func streamingLegalAndIllegalInputsAndFinish() throws {
        for illegal in [SessionMessage.recon(.hello(Hello(elementCount: 0, digest: Array(repeating: 0, count: 16), salt: salt(3)))),
                        .ack(id: 77), .refuse(.certificateInvalid),
                        .ackRefused(id: 77, refused: [BatchRefusal(index: 0, reason: .quota)]),
                        .ackRefused(id: 1, refused: [BatchRefusal(index: 1, reason: .quota)]), .keepAlive] {
            var rig = try Rig()
            _ = try rig.handshake()
            let outs = try rig.reconcileAsEmptyPeer()
            #expect(outs.contains { $0.events.contains(.sent(changes: 1)) }, "the station's change went out")
            let out = try rig.send(illegal)
            let expected: SessionError.Code = if case .refuse = illegal { .badCertificate } else { .protocolViolation }
            #expect(Self.closeCode(out) == expected, "\(illegal): \(out.events)")
        }
        var rig = try Rig()
        _ = try rig.handshake()
        let outs = try rig.reconcileAsEmptyPeer()
        let all = outs.flatMap(\.events)
        #expect(all.contains(.reconciled(differingLogs: 1)) && all.contains(.sent(changes: 1)), "\(all)")
        let ack = try rig.send(.ack(id: 1))
        guard case .done? = try rig.messages(ack).last else { Issue.record("done after the last ack"); return }
        #expect(ack.events.isEmpty && !rig.session.isClosed)
        let done = try rig.send(.done)
        #expect(done.events == [.closed(.finished)] && done.frames.isEmpty)
        #expect(rig.session.isFinished && rig.session.closeReason == .finished && rig.session.changesAcknowledged == 1)
    }

    // MARK: live

    /// Live: the state after both sent `live`; `done` is illegal in it; a close with nothing in flight
    /// is `finished`, with a batch in flight `connectionClosed`.
    @Test func liveLegalAndIllegalInputsAndCloses() throws {
        func goLive() throws -> Rig {
            var rig = try Rig(live: true)
            _ = try rig.handshake()
            _ = try rig.reconcileAsEmptyPeer()
            #expect(try rig.send(.live).isEmpty)
            let ack = try rig.send(.ack(id: 1))
            #expect(ack.events == [.live], "\(ack.events)")
            guard case .live? = try rig.messages(ack).last else { Issue.record("live sent"); return rig }
            #expect(rig.session.isLive && rig.session.isIdle)
            return rig
        }
        do {
            var rig = try goLive()
            #expect(Self.closeCode(try rig.send(.done)) == .protocolViolation)
        }
        do {
            let rig = try goLive()
            #expect(rig.session.connectionClosed().events == [.closed(.finished)])
        }
        do {
            let rig = try goLive()
            _ = try SessionTests.write(rig.station, 50)
            let push = rig.session.push(now: Self.now + 50)
            #expect(push.events == [.sent(changes: 1)] && push.frames.map(\.kind) == [.batch])
            #expect(!rig.session.isIdle)
            #expect(Self.closeCode(rig.session.connectionClosed()) == .connectionClosed, "a batch in flight")
        }
    }

    /// A driver hears its peer when a whole frame was handled (`framesReceived`), not when bytes arrive: a
    /// keep-alive fed a byte at a time counts once, on its last byte; a frame begun and not whole
    /// (`receivingFrame`, a corrupted length prefix or a peer trickling) counts nothing however many bytes
    /// of it come, while the session stays idle on its own side (swarm finding 2).
    @Test func framesReceivedCountsWholeFramesOnly() throws {
        var rig = try Rig(live: true)
        #expect(rig.session.framesReceived == 0 && !rig.session.receivingFrame)
        _ = try rig.handshake()
        #expect(rig.session.framesReceived == 2, "handshake messages 1 and 3")
        _ = try rig.reconcileAsEmptyPeer()
        _ = try rig.send(.live)
        _ = try rig.send(.ack(id: 1))
        #expect(rig.session.isLive && rig.session.isIdle)
        let before = rig.session.framesReceived
        var w = ByteWriter()
        SessionMessage.keepAlive.encode(to: &w)
        let keepAlive = FrameDecoder.frame(try rig.peer.transport!.seal(w.bytes))
        for (i, b) in keepAlive.enumerated() {
            _ = rig.session.receive([b], now: Self.now + 10)
            let last = i == keepAlive.count - 1
            #expect(rig.session.framesReceived == before + (last ? 1 : 0) && rig.session.receivingFrame == !last, "byte \(i)")
        }
        // The header of a 65,535-byte frame and a trickle of it: bytes, no frame, and the session waits.
        _ = rig.session.receive([0xFF, 0xFF], now: Self.now + 20)
        for _ in 0..<100 { _ = rig.session.receive([0x42], now: Self.now + 30) }
        #expect(rig.session.framesReceived == before + 1)
        #expect(rig.session.receivingFrame && rig.session.isIdle && !rig.session.isClosed)
        #expect(!rig.session.connectionClosed().events.isEmpty)
        #expect(!rig.session.receivingFrame, "a closed session waits for nothing")
    }

    /// The state queries (`isLive`, `isIdle`, `isClosed`, `isFinished`, `hasFailed`, `failure`,
    /// `closeReason`) after every transition of a live session, from `created` to a failed close. Since
    /// issue 14 they read a case tag and flags kept next to every assignment of the state instead of
    /// matching the state (which copied it whole, a tenth of a simulated week): this pins them to the
    /// states they describe, so that an assignment that forgets the tag fails here.
    @Test func stateQueriesFollowEveryTransition() throws {
        struct Seen: Equatable {
            var live, idle, closed, finished, failed: Bool
            var code: SessionError.Code?
        }
        func seen(_ s: SyncSession) -> Seen {
            Seen(live: s.isLive, idle: s.isIdle, closed: s.isClosed, finished: s.isFinished, failed: s.hasFailed,
                 code: s.closeReason?.error?.code)
        }
        let open = Seen(live: false, idle: false, closed: false, finished: false, failed: false, code: nil)
        let liveIdle = Seen(live: true, idle: true, closed: false, finished: false, failed: false, code: nil)
        var rig = try Rig(live: true)
        #expect(seen(rig.session) == open, "created")
        _ = try rig.handshake()
        #expect(seen(rig.session) == open, "reconciling")
        _ = try rig.reconcileAsEmptyPeer()
        #expect(seen(rig.session) == open, "streaming, a batch in flight")
        #expect(try rig.send(.live).isEmpty)
        #expect(seen(rig.session) == open, "streaming, the peer's live received, the batch still in flight")
        #expect(try rig.send(.ack(id: 1)).events == [.live])
        #expect(seen(rig.session) == liveIdle, "live")
        _ = try SessionTests.write(rig.station, 60)
        #expect(rig.session.push(now: Self.now + 60).events == [.sent(changes: 1)])
        var busy = liveIdle
        busy.idle = false
        #expect(seen(rig.session) == busy, "live, a pushed batch in flight")
        #expect(rig.session.keepAlive(now: Self.now + 61).frames.count == 1)
        #expect(seen(rig.session) == busy, "a keep-alive changes nothing")
        #expect(try rig.send(.ack(id: 2), now: Self.now + 62).events.isEmpty)
        #expect(seen(rig.session) == liveIdle, "live and idle again once acknowledged")
        #expect(Self.closeCode(try rig.send(.done, now: Self.now + 63)) == .protocolViolation)
        #expect(seen(rig.session) == Seen(live: false, idle: false, closed: true, finished: false, failed: true,
                                          code: .protocolViolation), "failed")
        #expect(rig.session.failure?.code == .protocolViolation)

        let early = try Rig(live: false, changes: 0)
        _ = early.session.start()
        #expect(seen(early.session) == open, "handshaking")
        _ = early.session.connectionClosed()
        #expect(seen(early.session) == Seen(live: false, idle: false, closed: true, finished: false, failed: true,
                                               code: .connectionClosed), "closed while handshaking")
    }

    // MARK: timers

    /// The standing timer: fired early, it only asks again; fired at the lapse, the peer is refused
    /// (`refuse` is the only frame) and the session closes with `badCertificate`.
    @Test func standingTimerRefusesAtTheLapse() throws {
        var rig = try Rig()
        _ = try rig.handshake()
        let lapse = try #require(rig.session.peerStandingLapsesAt)
        let early = rig.session.timerFired(now: lapse - 1)
        #expect(early.events == [.needsTimer(at: lapse)] && early.frames.isEmpty)
        let due = rig.session.timerFired(now: lapse)
        #expect(Self.closeCode(due) == .badCertificate && due.events.count == 1)
        let sent = try rig.messages(due)
        guard due.frames.count == 1, case .refuse(.certificateInvalid)? = sent.last else { Issue.record("only the refusal: \(sent)"); return }
        #expect(rig.session.timerFired(now: lapse + 1).isEmpty, "closed")
    }

    /// A change dated ahead of this clock: refused (typed), `deferred(until)`, a timer at that time; the
    /// timer reports `deferredDue` once and then asks for the standing timer again.
    @Test func futureDatedChangeIsDeferredWithATimer() throws {
        var rig = try Rig()
        _ = try rig.handshake()
        let author = rig.pki.replicator(rig.backpack)
        let hour: UInt64 = 3_600_000
        let c = try SessionTests.write(author, hour)
        let out = try rig.send(.batch(id: 1, certificates: [], changes: [c.encodedBytes]))
        let until = c.header.hlc.milliseconds - rig.station.trust.clockSkewMilliseconds
        let log = LogID(author: rig.backpack.id, scope: TestPKI.village)
        var applied = AppliedBatch()
        applied.changes = 1
        applied.rejected = 1
        #expect(out.events == [.applied(applied), .refused(RefusedChange(log: log, seq: 1, reason: .timestampInFuture)),
                               .deferred(until: until), .needsTimer(at: until)], "\(out.events)")
        // Acknowledged, naming the change it did not store and why (`ack-refused`, Protocols/sync.md §2).
        guard case let .ackRefused(1, refused)? = try rig.messages(out).last,
              refused == [BatchRefusal(index: 0, reason: .timestampInFuture)] else { Issue.record("acknowledged, refusal named"); return }
        #expect(rig.session.timerFired(now: until - 1).events == [.needsTimer(at: until)])
        let lapse = try #require(rig.session.peerStandingLapsesAt)
        #expect(rig.session.timerFired(now: until).events == [.deferredDue, .needsTimer(at: lapse)])
        #expect(rig.session.timerFired(now: until + 1).events == [.needsTimer(at: lapse)], "reported once")
    }

    // MARK: wire mapping

    /// The close codes that have a wire `refuse` reason, and back.
    @Test func refusalReasonsMapToCodes() {
        #expect(SessionRefusal(refusing: .revoked) == .revoked && SessionRefusal.revoked.code == .revoked)
        #expect(SessionRefusal(refusing: .badCertificate) == .certificateInvalid && SessionRefusal.certificateInvalid.code == .badCertificate)
        for code in [SessionError.Code.protocolViolation, .badChange, .limitExceeded, .notEntitled, .storeFailed, .connectionClosed] {
            #expect(SessionRefusal(refusing: code) == nil)
        }
    }

    // MARK: store errors

    /// A station whose store can fail, and a backpack with `changes` changes for it.
    static func storeRig(changes: Int) throws -> (TestPKI, FailingStore, Replicator, Replicator) {
        var pki = TestPKI()
        let store = FailingStore()
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]), store: store)
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        for n in 0..<changes { _ = try SessionTests.write(bp, UInt64(n + 1)) }
        return (pki, store, st, bp)
    }

    static func closeReason(_ s: TestSession) -> SessionCloseReason? {
        s.outputs.lazy.compactMap(\.closeReason).first
    }

    /// A commit that fails (disk full) closes the session with `storeFailed` carrying the store's own
    /// typed error, code and detail, inline and when batches are prepared elsewhere; nothing is stored
    /// or acknowledged.
    @Test(arguments: [false, true]) func aFailedCommitClosesWithTheStoresTypedError(elsewhere: Bool) throws {
        let (_, store, st, bp) = try Self.storeRig(changes: 3)
        let full = StoreError(.ioError, "disk full while writing the store; free space and retry")
        store.commitError = full
        var link = elsewhere ? PreparedBatchTests.connect(bp, st) : SessionTests.connect(bp, st)
        let finished = elsewhere ? try PreparedBatchTests.run(&link).finished : SessionTests.run(&link)
        #expect(!finished)
        let reason = try #require(Self.closeReason(link.b))
        guard case let .failed(e) = reason else { Issue.record("closed \(reason)"); return }
        #expect(e.code == .storeFailed)
        #expect(e.store == full, "the store's error itself, not a string of it")
        #expect(link.b.outputs.filter { $0.closeReason != nil }.count == 1, "one close")
        #expect(try store.inner.holdings().isEmpty)
        #expect(link.a.changesAcknowledged == 0)
        #expect(link.b.peer?.subject == bp.identity.id, "whom the session was with, kept once it closed")
    }

    /// A store that throws an error of another type than `StoreError` (the protocol promises
    /// `StoreError`) still closes the session with a typed store error (`ioError` naming the type), not
    /// a bare string.
    @Test func aForeignStoreErrorIsTyped() throws {
        struct Odd: Error {}
        let (_, store, st, bp) = try Self.storeRig(changes: 1)
        store.readError = Odd()
        var link = SessionTests.connect(bp, st)
        #expect(!SessionTests.run(&link))
        let reason = try #require(Self.closeReason(link.b))
        guard case let .failed(e) = reason else { Issue.record("closed \(reason)"); return }
        #expect(e.code == .storeFailed)
        #expect(e.store?.code == .ioError)
        #expect(e.store?.detail.hasPrefix("Odd") == true, "\(String(describing: e.store))")
    }
}
