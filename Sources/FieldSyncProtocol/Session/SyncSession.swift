import FieldSyncCore
import FieldSyncCrypto

/// Who may hold which logs. Relay boxes and HQ carry everything (relays as ciphertext); every other
/// device holds the logs on its jurisdiction path: scopes that contain one of its scopes (HQ and county
/// control logs: revocations, grants, receipts) or lie within one (its station's and villages' records).
public enum Entitlement {
    /// Whether the holder of `certificate` may receive and store changes of `log`.
    public static func mayHold(_ certificate: Certificate, _ log: LogID) -> Bool {
        if certificate.role == .relay || certificate.role == .hq { return true }
        return certificate.scopes.contains { $0.contains(log.scope) || log.scope.contains($0) }
    }
}

/// Application messages inside the encrypted transport (Protocols/sync.md). Tag bytes are normative.
public enum SessionMessage: Sendable {
    /// A reconciliation message. Tag 1.
    case recon(ReconMessage)
    /// A batch of changes (each an encoded `Change`, as stored) with the certificates of their authors
    /// the peer may lack. Tag 2.
    case batch(id: UInt32, certificates: [Certificate], changes: [[UInt8]])
    /// The receiver applied batch `id` atomically. Tag 3.
    case ack(id: UInt32)
    /// The sender has nothing more to send. Tag 4.
    case done
    /// The sender has nothing more to send now and keeps the session open: it will send batches of
    /// changes it gets later (live mode, Protocols/sync.md §4.1). Tag 5.
    case live
    /// A fork proof (Protocols/change.md §6) the receiver may lack, with the author's certificate if
    /// this session has not sent it yet. Not acknowledged. Tag 6.
    case fork(certificates: [Certificate], proof: ForkProof)
    /// The sender no longer accepts the receiver (its certificate, or its issuer's, is revoked or no
    /// longer valid) and closes the session: sent last, then the connection is closed
    /// (Protocols/sync.md §4.2). Tag 7.
    case refuse(SessionRefusal)

    func encode(to w: inout ByteWriter) {
        switch self {
        case let .recon(m):
            w.writeByte(1)
            m.encode(to: &w)
        case let .batch(id, certs, changes):
            w.writeByte(2)
            w.writeVarint(UInt64(id))
            w.writeArray(certs)
            w.writeVarint(UInt64(changes.count))
            for c in changes { w.writeBytes(c) }
        case let .ack(id):
            w.writeByte(3)
            w.writeVarint(UInt64(id))
        case .done:
            w.writeByte(4)
        case .live:
            w.writeByte(5)
        case let .fork(certs, proof):
            w.writeByte(6)
            w.writeArray(certs)
            w.writeBytes(proof.canonicalBytes)
        case let .refuse(reason):
            w.writeByte(7)
            w.writeByte(reason.rawValue)
        }
    }

    static func decode(_ bytes: [UInt8]) throws(DecodingError) -> SessionMessage {
        var r = ByteReader(bytes)
        let at = r.offset
        let m: SessionMessage
        switch try r.readByte() {
        case 1: m = .recon(try ReconMessage(from: &r))
        case 2:
            let id = try r.readVarint(as: UInt32.self)
            let certs = try r.readArray(Certificate.self, minElementSize: 100)
            let n = try r.readCount(minElementSize: 100)
            var changes: [[UInt8]] = []
            changes.reserveCapacity(n)
            for _ in 0..<n { changes.append(try r.readBytes()) }
            m = .batch(id: id, certificates: certs, changes: changes)
        case 3: m = .ack(id: try r.readVarint(as: UInt32.self))
        case 4: m = .done
        case 5: m = .live
        case 6:
            let certs = try r.readArray(Certificate.self, minElementSize: 100)
            let pAt = r.offset
            let bytes = try r.readBytes()
            do { m = .fork(certificates: certs, proof: try ForkProof(canonicalBytes: bytes)) } catch {
                throw DecodingError(.invalidValue, at: pAt, "fork proof: \(error)")
            }
        case 7:
            let at = r.offset
            let b = try r.readByte()
            guard let reason = SessionRefusal(rawValue: b) else { throw DecodingError(.unknownTag, at: at, "refusal reason \(b)") }
            m = .refuse(reason)
        case let t: throw DecodingError(.unknownTag, at: at, "session message tag \(t)")
        }
        try r.expectEnd()
        return m
    }
}

/// Why a session refuses its peer after the handshake (`SessionMessage.refuse`). Raw values are normative.
public enum SessionRefusal: UInt8, Sendable, Equatable {
    /// The receiver's certificate, or its issuer's, is revoked (as the sender knows it).
    case revoked = 1
    /// The receiver's certificate, or its issuer's, is outside its validity window (expired).
    case certificateInvalid = 2

    /// The error the refused side reports.
    var error: SessionError {
        switch self {
        case .revoked: SessionError(.revoked, "the peer refused this device: it (or its issuer) is revoked")
        case .certificateInvalid: SessionError(.badCertificate, "the peer refused this device: its certificate (or its issuer's) is not valid now")
        }
    }
}

/// What a frame a session sends carries, for accounting (`SyncSession.bytesSent`).
public enum SessionFrameKind: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// A handshake message.
    case handshake
    /// A reconciliation message.
    case reconciliation
    /// A batch of changes (or a fork proof: two changes).
    case batch
    /// A batch acknowledgement.
    case ack
    /// The final `done` (or `live`), or a `refuse`.
    case done

    /// Name used in reports.
    public var description: String {
        switch self {
        case .handshake: "handshake"
        case .reconciliation: "reconciliation"
        case .batch: "batch"
        case .ack: "ack"
        case .done: "done"
        }
    }
}

/// Tunables of a session.
public struct SessionConfiguration: Sendable {
    /// Network parameters (prologue).
    public var network: NetworkParameters
    /// Largest encoded batch (bytes), below the transport's 65,519-byte plaintext limit.
    public var maxBatchBytes = 60_000
    /// The first batch's size limit; each next batch doubles it up to `maxBatchBytes`. Small first
    /// batches get the most urgent changes applied early on a slow link that may be cut at any moment.
    public var firstBatchBytes = 4_000
    /// Batches sent but not yet acknowledged.
    public var window = 4
    /// Most application messages accepted from a peer in one session (bounds work per session).
    public var maxMessages = 1_000_000
    /// 16 random bytes for reconciliation (drawn by the driver from its injected generator).
    public var salt: [UInt8]
    /// Keep the session open after the first exchange when the peer asks for it too (live mode,
    /// Protocols/sync.md §4.1): later changes travel as batches on it through `push`, without a new
    /// handshake or reconciliation. For links that stay up (wired links, a station's Wi-Fi).
    public var live = false
    /// Let the driver verify and open the peer's batches elsewhere (another thread): a batch is decoded and
    /// its certificates learned as it arrives, then handed out (`pollBatchPreparation`) and applied when the
    /// driver returns it prepared (`completeBatchPreparation`), in arrival order; messages that come
    /// after it wait for it. False (the default): batches are verified and applied as they arrive.
    public var preparesBatchesElsewhere = false

    /// Creates a configuration.
    public init(network: NetworkParameters, salt: [UInt8]) {
        precondition(salt.count == 16, "salts are 16 bytes")
        self.network = network
        self.salt = salt
    }
}

/// What a session reports to its driver.
public enum SessionEvent: Sendable, Equatable {
    /// The handshake completed with this peer.
    case authenticated(DeviceID, Role)
    /// Reconciliation finished: how many logs differed.
    case reconciled(differingLogs: Int)
    /// A batch from the peer was applied.
    case applied(changes: Int, rejected: Int)
    /// Both sides are done; the session can be closed.
    case finished
    /// Both sides are done and asked to stay open (live mode): the session now carries later changes
    /// (`SyncSession.push`) until the connection closes.
    case live
    /// The session failed; close the connection.
    case failed(SessionError)
}

/// A batch of the peer's changes for a driver to verify and open on another thread
/// (`SessionConfiguration.preparesBatchesElsewhere`): pure work on values, `Sendable`.
public struct BatchPreparation: Sendable {
    /// Identifies the batch to `SyncSession.completeBatchPreparation`.
    public let ticket: UInt64
    /// The batch's changes, decoded, in order.
    public let changes: [Change]
    /// A snapshot of the replicator's trust, certificates and keys, taken after the batch's certificates
    /// were learned.
    public let verifier: ChangeVerifier
    /// When the batch arrived (ms since the Unix epoch).
    public let now: UInt64

    /// Verifies and opens the changes (`ChangeVerifier.prepare`): what the other thread runs.
    public func prepare() -> [PreparedChange] { verifier.prepare(changes, now: now) }
}

/// One sync session between two nodes: handshake, reconciliation of log heads, then streaming of the
/// changes each side lacks, most urgent first, in batches the receiver applies atomically and
/// acknowledges. A pure state machine: bytes and `now` in, bytes and events out. A cut at any byte
/// loses at most the batches not yet acknowledged; the next session resends only what is missing.
public final class SyncSession {
    private enum Phase { case handshake, reconciling, streaming, live, finished, failed }

    private let replicator: Replicator
    private let config: SessionConfiguration
    private var handshake: any SessionHandshaking
    private(set) var transport: NoiseTransport?  // internal read for tests
    private var reconciler: Reconciler?
    private var decoder = FrameDecoder()
    private var phase = Phase.handshake
    private var outbox: [([UInt8], SessionFrameKind)] = []
    private var events: [SessionEvent] = []
    /// The peer's certificate, after the handshake.
    public private(set) var peer: Certificate?
    /// The peer's certificate as the trust store certified it (signatures, issuer): what `checkStanding`
    /// re-checks at each time against the replicator's current trust store (validity, revocation).
    private var peerVerified: VerifiedCertificate?

    private var toSend: [StoredChange] = []  // ordered, most urgent first
    private var cursor = 0  // next index of toSend
    private var nextBatchID: UInt32 = 1
    private lazy var batchLimit = config.firstBatchBytes
    private var inFlight: [UInt32: Int] = [:]  // batch id -> changes
    private var certificatesSent: Set<Certificate> = []  // device and authority certificates sent in batches
    private var authorsCovered: Set<DeviceID> = []  // authors whose every known certificate was sent
    private var authoritiesSent = false  // every known authority certificate went with the first control change
    private var sentDone = false
    private var peerDone = false
    private var peerLive = false
    /// Live mode: what the peer is known to hold of each log both may hold (its holdings as
    /// reconciliation revealed them, plus what either side sent since). What `push` does not resend.
    private var peerKnown: [LogID: HeldIntervals] = [:]
    private var reconciled: Holdings?
    private var messagesReceived = 0
    /// Batches being prepared elsewhere, and the messages that came after the first of them, in arrival
    /// order (`SessionConfiguration.preparesBatchesElsewhere`).
    private enum Held {
        case message(SessionMessage)
        case batch(id: UInt32, changes: [Change], preparation: BatchPreparation)
    }
    private var held: [Held] = []
    private var preparationsOut: [BatchPreparation] = []  // handed out by `pollBatchPreparation`
    private var prepared: [UInt64: [PreparedChange]] = [:]  // returned, not yet applied
    private var nextTicket: UInt64 = 1
    /// The latest `now` a driver passed in (ms since the Unix epoch).
    private var lastNow: UInt64

    /// Changes sent and acknowledged by the peer, and received and applied, in this session.
    public private(set) var changesSent = 0, changesAcknowledged = 0, changesReceived = 0
    /// Changes received in this session that the store refused: relay quota full of unreceipted changes,
    /// or too many changes held back behind gaps. They are acknowledged (the batch was applied atomically)
    /// and are offered again by the next session, when there may be room.
    public private(set) var changesRefused = 0
    /// Changes of the plan not sent because this node does not hold their author's certificate (verified),
    /// counted each time one is passed over (a live session offers it again on every push of its log):
    /// the peer could not verify them, and a batch with such a change would fail (Protocols/sync.md,
    /// Batches). They stay where they are; a peer that knows the author gets them from another node.
    public private(set) var changesWithheld = 0
    /// Changes received in this session that the store already held (sent twice: two peers raced, or a
    /// batch was resent after a cut).
    public private(set) var changesDuplicate = 0
    /// Changes received in this session that the store refused as contradicting a log it holds (a fork:
    /// `CommitReport.refusedForked`). They are acknowledged and not offered again by this peer's
    /// reconciliation plan above the fork.
    public private(set) var changesForked = 0
    /// Fork evidence recorded by this node during the session (from the peer's changes or proofs).
    public private(set) var forksDetected = 0
    /// Fork proofs sent to and received (verified) from the peer.
    public private(set) var forkProofsSent = 0, forkProofsReceived = 0
    /// Proofs this session sent or received (by their two change ids), so none travels twice.
    private var proofsExchanged: Set<[UInt8]> = []
    /// `Replicator.forksRecorded` when this session last sent proofs (live mode sends new ones on push).
    private var forksSeen = -1
    /// Logs of the changes applied from the peer since the driver last took them (`takeAppliedLogs`).
    private var appliedLogs: [LogID] = []
    /// Framed bytes queued for sending, by `SessionFrameKind` (indexed by its raw value).
    public private(set) var bytesSent = [Int](repeating: 0, count: SessionFrameKind.allCases.count)

    /// Starts a session. The initiator's first message is queued at once.
    /// - Parameter handshake: a handshake to use instead of Noise XX (the simulator's stand-in; real
    ///   nodes leave it nil).
    public init(initiator: Bool, replicator: Replicator, configuration: SessionConfiguration, now: UInt64,
                handshake: (any SessionHandshaking)? = nil) {
        self.replicator = replicator
        config = configuration
        lastNow = now
        self.handshake = handshake ?? SessionHandshake(initiator: initiator, identity: replicator.identity,
                                                       trust: replicator.trust, network: configuration.network)
        if initiator { writeHandshake() }
    }

    /// Whether the session finished normally.
    public var isFinished: Bool { phase == .finished }
    /// Whether the session is live (both sides asked to stay open and the first exchange is over).
    public var isLive: Bool { phase == .live }
    /// Whether the session is live with nothing queued or waiting for an acknowledgement on this side.
    public var isIdle: Bool { phase == .live && inFlight.isEmpty && cursor == toSend.count && outbox.isEmpty && held.isEmpty }
    /// Batches of the peer received and not applied yet because they are being prepared elsewhere
    /// (`SessionConfiguration.preparesBatchesElsewhere`). A driver stops reading from the peer while this
    /// is at its bound.
    public var batchesPreparing: Int { held.reduce(0) { if case .batch = $1 { $0 + 1 } else { $0 } } }
    /// Most batches held for preparation at once: further frames stay in the frame decoder (unread)
    /// until one is applied, and a driver stops reading from the socket (`preparationBacklogFull`).
    public static let maxBatchesPreparing = 4
    /// Whether `maxBatchesPreparing` batches are held: the driver should stop reading from the peer
    /// until a preparation completes.
    public var preparationBacklogFull: Bool { batchesPreparing >= Self.maxBatchesPreparing }
    /// Whether the session failed.
    public var hasFailed: Bool { phase == .failed }
    /// Why the session failed, once it has.
    public private(set) var failure: SessionError?
    /// When changes this session refused as dated in the future (`timestampInFuture`) start to be
    /// acceptable: the earliest such HLC minus the clock-skew tolerance (ms since the Unix epoch, on
    /// this node's clock). A driver resyncs after that time; nil if none was refused.
    public private(set) var deferredUntil: UInt64?

    /// The next bytes to send, if any (already framed).
    public func pollTransmit() -> [UInt8]? { pollFrame()?.bytes }

    /// The next bytes to send with what they carry, if any.
    public func pollFrame() -> (bytes: [UInt8], kind: SessionFrameKind)? {
        guard !outbox.isEmpty else { return nil }
        let (b, k) = outbox.removeFirst()
        return (b, k)
    }

    /// The logs in which batches from the peer stored changes since the last call, each once, in the
    /// order first seen: what a driver passes to `push` on its other live sessions, or scans for news.
    public func takeAppliedLogs() -> [LogID] {
        defer { appliedLogs = [] }
        return appliedLogs
    }

    /// The next event, if any.
    public func pollEvent() -> SessionEvent? { events.isEmpty ? nil : events.removeFirst() }

    /// The next batch to prepare elsewhere, if any (`SessionConfiguration.preparesBatchesElsewhere`):
    /// the driver runs `prepare()` (on any thread) and returns the result with `completeBatchPreparation`.
    public func pollBatchPreparation() -> BatchPreparation? {
        preparationsOut.isEmpty ? nil : preparationsOut.removeFirst()
    }

    /// Returns a batch prepared elsewhere (`BatchPreparation.prepare()`). Batches are applied in the order
    /// they arrived, so this applies it (and then the messages held behind it) only once every batch
    /// before it is back. Applying commits through `Replicator.ingest(prepared:by:now:)`, which prepares
    /// the batch again on this thread if the replicator learned anything since the snapshot (a
    /// revocation, a key), and re-checks the peer's standing first: the result is the same as if the
    /// batch had been verified and applied when it arrived, at the time it is applied.
    public func completeBatchPreparation(ticket: UInt64, _ changes: [PreparedChange], now: UInt64) {
        guard phase != .failed, phase != .finished else { return }
        guard held.contains(where: { if case let .batch(_, _, p) = $0 { p.ticket == ticket } else { false } }) else { return }
        lastNow = now
        prepared[ticket] = changes
        do {
            while phase != .failed, phase != .finished, let first = held.first {
                switch first {
                case let .message(m):
                    held.removeFirst()
                    guard checkStanding(now: now) else { return }
                    try dispatch(m, now: now)
                case let .batch(id, changes, preparation):
                    guard let result = prepared.removeValue(forKey: preparation.ticket) else { return }
                    held.removeFirst()
                    guard checkStanding(now: now) else { return }
                    try applyBatch(id: id, changes: changes, prepared: (result, preparation.verifier), now: now)
                }
            }
            // Frames left in the decoder while the bound was reached.
            while phase != .failed, phase != .finished, !preparationBacklogFull, let frame = try decoder.next() { try handle(frame, now: now) }
        } catch let e as SessionError {
            fail(e)
        } catch let e as FrameError {
            fail(SessionError(.protocolViolation, e.description))
        } catch {
            fail(SessionError(.storeFailed, "\(error)"))
        }
    }

    /// Feeds bytes received from the peer.
    public func receive(_ bytes: [UInt8], now: UInt64) {
        guard phase != .failed, phase != .finished else { return }
        lastNow = now
        decoder.append(bytes)
        do {
            while phase != .failed, !preparationBacklogFull, let frame = try decoder.next() { try handle(frame, now: now) }
        } catch let e as SessionError {
            fail(e)
        } catch let e as FrameError {
            fail(SessionError(.protocolViolation, e.description))
        } catch {
            fail(SessionError(.storeFailed, "\(error)"))
        }
    }

    /// Re-checks the peer's standing against the replicator's trust store as it is now: the peer's
    /// certificate and its issuer's must be valid at `now` and neither revoked. A driver calls this
    /// whenever its trust store may have changed (a revocation learned from any session, from the store,
    /// or written locally) and when the peer's certificate lapses (`peerStandingLapsesAt`); the session
    /// also checks before every push and on every message it receives. A peer that fails is refused at
    /// once: nothing more is sent or accepted, the peer is told why (`SessionMessage.refuse`, the only
    /// frame queued), and the session fails with `revoked` or `badCertificate`; the driver then closes
    /// the connection. Before the handshake completes it does nothing (the handshake checks the same).
    /// - Returns: whether the session is still usable (false once it failed, for this or another reason).
    @discardableResult
    public func checkStanding(now: UInt64) -> Bool {
        guard phase != .failed else { return false }
        guard phase != .handshake, phase != .finished, let v = peerVerified else { return true }
        do {
            try replicator.trust.checkStanding(v, now: now)
            return true
        } catch {
            let refused = error.code == .revoked
            // The last handshake message, if still queued, goes first: the peer needs it to read the refusal.
            let handshakeFrames = outbox.filter { $0.1 == .handshake }
            fail(SessionError(refused ? .revoked : .badCertificate, "peer \(v.certificate.subject): \(error.description)"))
            outbox = handshakeFrames
            if var t = transport, let frame = try? t.seal(Self.encoded(.refuse(refused ? .revoked : .certificateInvalid))) {
                transport = t
                queue(FrameDecoder.frame(frame), .done)
            }
            return false
        }
    }

    /// When the peer's standing lapses by time alone (ms since the Unix epoch, on this node's clock): the
    /// first instant after the end of its certificate's validity, or its issuing authority's, widened by
    /// the clock-skew tolerance. A driver calls `checkStanding` then. Nil before the handshake.
    public var peerStandingLapsesAt: UInt64? {
        guard let v = peerVerified else { return nil }
        let end = min(v.certificate.notAfter, v.authority?.notAfter ?? .max)
        return end &+ replicator.trust.clockSkewMilliseconds &+ 1
    }

    /// The transport closed (cut or peer gone). Unacknowledged batches are simply offered again next time.
    /// A live session closed with none of its batches in flight ends normally (`finished`).
    public func connectionClosed() {
        if phase == .live && inFlight.isEmpty {
            phase = .finished
            events.append(.finished)
        } else if phase != .finished && phase != .failed {
            fail(SessionError(.protocolViolation, "connection closed mid-session"))
        }
    }

    /// Live mode: sends the peer the changes of `logs` (every log when nil) it may hold and is not known
    /// to hold: what this node got since the session began, from its own writes or other sessions. Call
    /// it after the store changed; before the session is live it does nothing (the session pushes
    /// everything new when it becomes live). The peer's standing is checked first (`checkStanding`): a
    /// peer revoked or expired by `now` gets nothing. Cost: one holdings lookup per log named.
    public func push(logs: [LogID]? = nil, now: UInt64) {
        guard phase == .live, let peerCert = peer else { return }
        lastNow = now
        guard checkStanding(now: now) else { return }
        do {
            if replicator.forksRecorded != forksSeen { try sendForkProofs() }
            let store = replicator.store
            let own = replicator.identity.certificate
            var fresh: [StoredChange] = []
            for log in try logs ?? store.orderedLogs() where Entitlement.mayHold(peerCert, log) && Entitlement.mayHold(own, log) {
                let held = try store.holdings(of: log)
                let known = peerKnown[log] ?? HeldIntervals()
                if held == known { continue }
                for r in HeldIntervals.difference(held, known) {
                    let cs = try store.changes(log, in: r)
                    fresh += cs
                    for c in cs { peerKnown[log, default: HeldIntervals()].insert(c.seq) }
                }
            }
            guard !fresh.isEmpty else { return }
            authorsCovered = []  // certificates learned since (a renewal) are sent with the next batches
            if cursor == toSend.count {
                toSend = []
                cursor = 0
            }
            fresh.sort(by: Self.urgentFirst)
            toSend += fresh
            try pump()
        } catch let e as SessionError {
            fail(e)
        } catch {
            fail(SessionError(.storeFailed, "\(error)"))
        }
    }

    private func fail(_ e: SessionError) {
        phase = .failed
        failure = e
        outbox.removeAll()
        held.removeAll()
        preparationsOut.removeAll()
        prepared.removeAll()
        events.append(.failed(e))
    }

    private func writeHandshake() {
        do { queue(FrameDecoder.frame(try handshake.write()), .handshake) } catch { fail(error) }
    }

    private static func encoded(_ m: SessionMessage) -> [UInt8] {
        var w = ByteWriter()
        m.encode(to: &w)
        return w.bytes
    }

    private func send(_ m: SessionMessage) throws(SessionError) {
        guard var t = transport else { throw SessionError(.protocolViolation, "no transport") }
        let kind: SessionFrameKind = switch m {
        case .recon: .reconciliation
        case .batch: .batch
        case .ack: .ack
        case .done, .live, .refuse: .done
        case .fork: .batch  // signed changes too; rare (forks only), so not a kind of its own in reports
        }
        queue(FrameDecoder.frame(try t.seal(Self.encoded(m))), kind)
        transport = t
    }

    private func queue(_ frame: [UInt8], _ kind: SessionFrameKind) {
        outbox.append((frame, kind))
        bytesSent[kind.rawValue] += frame.count
    }

    private func handle(_ frame: [UInt8], now: UInt64) throws {
        if phase == .handshake {
            try handshake.read(frame, now: now)
            if handshake.shouldWrite { writeHandshake() }
            if handshake.isComplete { try startReconciliation(now: now) }
            return
        }
        messagesReceived += 1
        guard messagesReceived <= config.maxMessages else { throw SessionError(.limitExceeded, "too many messages") }
        guard var t = transport else { throw SessionError(.protocolViolation, "no transport") }
        let plain = try t.open(frame)
        transport = t
        let message: SessionMessage
        do { message = try SessionMessage.decode(plain) } catch {
            throw SessionError(.protocolViolation, "message does not decode: \(error)")
        }
        if case let .refuse(reason) = message { throw reason.error }
        // Nothing is accepted from a peer that lost its standing since the last message (§4.2).
        guard checkStanding(now: now) else { return }
        if config.preparesBatchesElsewhere {
            if case let .batch(id, certs, encoded) = message {
                try holdBatch(id: id, certificates: certs, encoded: encoded, now: now)
                return
            }
            if !held.isEmpty {
                held.append(.message(message))  // after a batch being prepared: handled in order, after it
                return
            }
        }
        try dispatch(message, now: now)
    }

    /// The changes of a batch, decoded, once the session checked that both sides may hold every log in
    /// it (§3): a batch with any other log is refused whole, before anything of it is stored.
    private func decodeBatch(id: UInt32, _ encoded: [[UInt8]]) throws -> [Change] {
        var changes: [Change] = []
        changes.reserveCapacity(encoded.count)
        for bytes in encoded {
            do { changes.append(try Change(canonicalBytes: bytes)) } catch {
                throw SessionError(.protocolViolation, "a change in batch \(id) does not decode: \(error)")
            }
        }
        let own = replicator.identity.certificate
        for c in changes {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            guard Entitlement.mayHold(own, log) else {
                throw SessionError(.notEntitled, "batch \(id) carries log \(log), which this node (\(own.role), \(own.scopes.map(\.path))) may not hold")
            }
            guard let p = peer, Entitlement.mayHold(p, log) else {
                throw SessionError(.notEntitled, "batch \(id) carries log \(log), which the peer may not hold itself")
            }
        }
        return changes
    }

    /// `preparesBatchesElsewhere`: decodes a batch, learns its certificates and hands it out for
    /// preparation; it is applied when it comes back (`completeBatchPreparation`).
    private func holdBatch(id: UInt32, certificates certs: [Certificate], encoded: [[UInt8]], now: UInt64) throws {
        switch phase {
        case .streaming, .reconciling, .live: break
        default: throw SessionError(.protocolViolation, "unexpected message in phase \(phase)")
        }
        let changes = try decodeBatch(id: id, encoded)
        if !certs.isEmpty { replicator.learn(certificates: certs, now: now) }
        let preparation = BatchPreparation(ticket: nextTicket, changes: changes, verifier: replicator.verifier(), now: now)
        nextTicket += 1
        held.append(.batch(id: id, changes: changes, preparation: preparation))
        preparationsOut.append(preparation)
    }

    private func dispatch(_ message: SessionMessage, now: UInt64) throws {
        switch (phase, message) {
        case let (.reconciling, .recon(m)):
            guard var rec = reconciler else { throw SessionError(.protocolViolation, "no reconciler") }
            let outputs: [ReconOutput]
            do { outputs = try rec.receive(m) } catch {
                throw SessionError(error.code == .limitExceeded ? .limitExceeded : .protocolViolation, error.description)
            }
            reconciler = rec
            try process(outputs)
        case let (.streaming, .batch(id, certs, encoded)), let (.reconciling, .batch(id, certs, encoded)),
             let (.live, .batch(id, certs, encoded)):
            let changes = try decodeBatch(id: id, encoded)
            if !certs.isEmpty { replicator.learn(certificates: certs, now: now) }
            try applyBatch(id: id, changes: changes, prepared: nil, now: now)
        case let (.streaming, .ack(id)), let (.live, .ack(id)):
            guard let n = inFlight.removeValue(forKey: id) else { throw SessionError(.protocolViolation, "ack for unknown batch \(id)") }
            changesAcknowledged += n
            try pump()
        case let (.reconciling, .fork(certs, proof)), let (.streaming, .fork(certs, proof)), let (.live, .fork(certs, proof)):
            try receiveForkProof(proof, certificates: certs, now: now)
        case (.streaming, .done), (.reconciling, .done):
            peerDone = true
            try checkFinished()
        case (.streaming, .live), (.reconciling, .live):
            peerDone = true
            peerLive = true
            try checkFinished()
        default:
            throw SessionError(.protocolViolation, "unexpected message in phase \(phase)")
        }
    }

    /// Applies a batch of decoded changes: verified and opened here, or prepared elsewhere (`prepared`,
    /// with the snapshot that prepared it); then counts, judges the rejections and acknowledges.
    private func applyBatch(id: UInt32, changes: [Change], prepared: (changes: [PreparedChange], verifier: ChangeVerifier)?,
                            now: UInt64) throws {
        if config.live {  // the peer holds what it sends
            for c in changes { peerKnown[LogID(author: c.header.author, scope: c.header.scope), default: HeldIntervals()].insert(c.header.seq) }
        }
        let report: IngestReport
        if let prepared {
            report = try replicator.ingest(prepared: prepared.changes, by: prepared.verifier, now: now).report
        } else {
            report = try replicator.ingest(changes, now: now)
        }
        changesReceived += report.outcomes.filter { $0 == .accepted }.count
        for (c, o) in zip(changes, report.outcomes) where o == .accepted {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            if appliedLogs.last != log && !appliedLogs.contains(log) { appliedLogs.append(log) }
        }
        changesRefused += report.commit.refusedForQuota.count + report.commit.refusedHeldBack.count
        changesForked += report.commit.refusedForked.count
        forksDetected += report.commit.forksRecorded
        changesDuplicate += report.commit.duplicates
        let unknown = report.outcomes.filter { $0 == .unknownAuthor }.count
        events.append(.applied(changes: changes.count, rejected: report.rejected + unknown))
        // A change dated ahead of this node's clock beyond the tolerance is refused (not stored) but
        // is no evidence against the peer: honest devices' clocks differ. It travels again in a
        // later session, once this clock has caught up (Protocols/sync.md, Batches). Likewise a
        // change refused as `revoked`: the peer may have stored it before it learned the revocation
        // (a back-dated cut-off), so it is refused without cutting the session.
        var excused = 0
        for (c, o) in zip(changes, report.outcomes) {
            switch o {
            case .rejected(.revoked, _):
                excused += 1
            case .rejected(.timestampInFuture, _):
                excused += 1
                let at = c.header.hlc.milliseconds &- replicator.trust.clockSkewMilliseconds
                deferredUntil = min(deferredUntil ?? at, at)
            default:
                continue
            }
        }
        if report.rejected > excused {
            // What verified is committed; a peer that sends forgeries is cut off.
            throw SessionError(.badChange, "\(report.rejected - excused) change(s) of batch \(id) failed verification")
        }
        if unknown > 0 {
            // Not stored, so not acknowledged: the sender must not believe they were delivered.
            let authors = Set(zip(changes, report.outcomes).filter { $0.1 == .unknownAuthor }.map { $0.0.header.author })
            throw SessionError(.badChange, "\(unknown) change(s) of batch \(id) by author(s) whose certificate was not sent and is not known here: "
                               + authors.sorted().prefix(3).map(\.description).joined(separator: ", "))
        }
        // A revocation in this very batch may concern the peer: it gets no acknowledgement then.
        if report.revocationsLearned > 0, !checkStanding(now: now) { return }
        // A fork found in this batch is proven to the peer at once (before the ack, so it arrives
        // while the peer's side of the session is still open).
        if report.commit.forksRecorded > 0 { try sendForkProofs() }
        try send(.ack(id: id))
    }

    private func startReconciliation(now: UInt64) throws {
        transport = try handshake.transport()
        guard let peerCert = handshake.peer else { throw SessionError(.protocolViolation, "no peer certificate") }
        peer = peerCert
        // The peer's certificate and chain verified at now: learned so that its changes (and those of
        // devices its county authority issued) verify even before a batch brings them.
        replicator.learn(certificates: handshake.peerChain + [peerCert], now: now)
        do { peerVerified = try certify(peerCert) } catch {
            throw SessionError(error.code == .revoked ? .revoked : .badCertificate, error.description)
        }
        events.append(.authenticated(peerCert.subject, peerCert.role))
        phase = .reconciling
        // The handshake checked the trust store as it was when the session began; a revocation learned
        // since (another session, the store) counts from here on.
        guard checkStanding(now: now) else { return }
        let own = replicator.identity.certificate
        var logs: [LogHoldings] = []
        for log in try replicator.store.orderedLogs() where Entitlement.mayHold(own, log) && Entitlement.mayHold(peerCert, log) {
            if let held = try replicator.store.logHoldings(log) { logs.append(held) }
        }
        let key = Array(handshake.handshakeHash.prefix(32))
        let holdings = Holdings(logs)
        if config.live { reconciled = holdings }
        var rec = Reconciler(role: handshake.isInitiator ? .initiator : .responder, holdings: holdings,
                             hashing: SipHashReconciliationHashing(sessionKey: key), salt: config.salt)
        let outputs = rec.start()
        reconciler = rec
        try process(outputs)
    }

    /// `TrustStore.certified` for the peer's certificate, reusing the replicator's own check of the same
    /// certificate or the process's verification cache (the simulator) when there is one.
    private func certify(_ c: Certificate) throws(IdentityError) -> VerifiedCertificate {
        if let known = replicator.certificates[c.subject], known.certificate == c { return known }
        if let cache = replicator.verificationCache { return try cache.certified(c, trust: replicator.trust) }
        return try replicator.trust.certified(c)
    }

    private func process(_ outputs: [ReconOutput]) throws {
        for o in outputs {
            switch o {
            case let .send(m): try send(.recon(m))
            case let .finished(result): try planStreaming(result)
            }
        }
    }

    /// Orders what the peer lacks: control changes (revocations, grants, receipts) first, then by
    /// priority, then oldest first. In a log where the peer's holdings show another branch (a fork), it
    /// sends the changes at the forked heights (the peer gets two changes at one position: a fork
    /// proof) and only what lies below them; first it sends the fork proofs it holds.
    private func planStreaming(_ result: ReconciliationResult) throws {
        events.append(.reconciled(differingLogs: result.differences.count))
        phase = .streaming
        try sendForkProofs()
        var plan: [StoredChange] = []
        for d in result.differences {
            let forked = try forkedHeights(d)
            if let lowest = forked.first {
                for h in forked { if let c = try replicator.store.change(d.log, seq: h) { plan.append(c) } }
                for r in d.missingAtRemote where UInt64(r.lowerBound) < lowest {
                    plan += try replicator.store.changes(d.log, in: UInt64(r.lowerBound)...min(UInt64(r.upperBound), lowest - 1))
                }
                continue
            }
            for r in d.missingAtRemote {
                plan += try replicator.store.changes(d.log, in: UInt64(r.lowerBound)...UInt64(r.upperBound))
            }
        }
        plan.sort(by: Self.urgentFirst)
        toSend = plan
        if let own = reconciled {
            // Live mode: the peer holds what reconciliation showed, plus everything planned here.
            let diffs = Dictionary(uniqueKeysWithValues: result.differences.map { ($0.log, $0) })
            for l in own.logs where diffs[l.log] == nil {
                peerKnown[l.log] = HeldIntervals(sortedRanges: l.intervals.map { UInt64($0.start)...UInt64($0.end) })
            }
            for d in result.differences where !d.remote.isEmpty {
                guard IntervalSummary.isValidHolding(d.remote) else { throw SessionError(.protocolViolation, "peer holdings of \(d.log) are not canonical") }
                peerKnown[d.log] = HeldIntervals(sortedRanges: d.remote.map { UInt64($0.start)...UInt64($0.end) })
            }
            for c in plan { peerKnown[c.log, default: HeldIntervals()].insert(c.seq) }
            reconciled = nil
        }
        try pump()
    }

    /// Heights at which the peer holds another change than this node (ascending): the ends of the peer's
    /// intervals that this node holds, where the 4-byte hash prefixes differ (Protocols/sync.md,
    /// Forks). Equal ends are `LogDifference.forkedHeights`; an end inside one of our intervals costs one
    /// hash lookup. A prefix collision (2^-32) hides a fork from this check, not from the chain check
    /// at commit.
    private func forkedHeights(_ d: LogDifference) throws -> [UInt64] {
        guard !d.local.isEmpty, !d.remote.isEmpty else { return [] }
        var out: [UInt64] = []
        for r in d.remote {
            guard let mine = d.local.first(where: { $0.start <= r.end && r.end <= $0.end }) else { continue }
            let prefix: UInt32
            if mine.end == r.end {
                prefix = mine.endHashPrefix
            } else {
                guard let h = try replicator.store.hash(d.log, seq: UInt64(r.end)), h.count >= 4 else { continue }
                prefix = UInt32(h[0]) << 24 | UInt32(h[1]) << 16 | UInt32(h[2]) << 8 | UInt32(h[3])
            }
            if prefix != r.endHashPrefix { out.append(UInt64(r.end)) }
        }
        return out.sorted()
    }

    /// Sends the fork proofs held for logs both sides may hold that did not travel in this session yet.
    private func sendForkProofs() throws {
        guard let peerCert = peer else { return }
        forksSeen = replicator.forksRecorded
        let own = replicator.identity.certificate
        for f in try replicator.store.forks() where Entitlement.mayHold(peerCert, f.log) && Entitlement.mayHold(own, f.log) {
            let key = Self.proofKey(f.kept.hash, f.conflicting.hash)
            guard !proofsExchanged.contains(key), let proof = try? f.proof() else { continue }  // evicted bytes: nothing to prove with
            proofsExchanged.insert(key)
            let author = proof.author
            // Every certificate of the author (renewals) and its issuing authority's, once per session.
            let certs = replicator.certificateChain(of: author).filter { !certificatesSent.contains($0) }
            certificatesSent.formUnion(certs)
            forkProofsSent += 1
            try send(.fork(certificates: certs, proof: proof))
        }
    }

    /// Verifies and records a proof from the peer. A proof of a log this node may not hold breaks the
    /// entitlement rule; a proof that does not verify is a forgery: both end the session.
    private func receiveForkProof(_ proof: ForkProof, certificates: [Certificate], now: UInt64) throws {
        let log = LogID(author: proof.author, scope: proof.scope)
        guard Entitlement.mayHold(replicator.identity.certificate, log) else {
            throw SessionError(.protocolViolation, "fork proof of \(log), which this node may not hold")
        }
        proofsExchanged.insert(Self.proofKey(proof.first.id, proof.second.id))
        let before = replicator.forksRecorded
        switch try replicator.ingest(forkProof: proof, certificates: certificates, now: now) {
        case .accepted:
            forkProofsReceived += 1
            forksDetected += replicator.forksRecorded - before
        case .rejected(.timestampInFuture, _):
            break  // no evidence against the peer; the proof travels again later
        case let .rejected(code, detail):
            throw SessionError(.badChange, "fork proof of \(log) does not verify: \(code.rawValue): \(detail)")
        case .unknownAuthor:
            throw SessionError(.badChange, "fork proof of \(log) without its author's certificate")
        }
    }

    /// The two change ids in order: one key per proof whichever change a store keeps.
    private static func proofKey(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] { a.lexicographicallyPrecedes(b) ? a + b : b + a }

    /// Control changes first, then priority, then oldest, then log and seq.
    private static func urgentFirst(_ a: StoredChange, _ b: StoredChange) -> Bool {
        let ac = a.contentType.isControl, bc = b.contentType.isControl
        if ac != bc { return ac }
        if a.priority != b.priority { return a.priority < b.priority }
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        return (a.log, a.seq) < (b.log, b.seq)
    }

    /// Sends batches while the window allows; `done` when everything was sent and acknowledged.
    private func pump() throws {
        while inFlight.count < config.window, cursor < toSend.count {
            var changes: [[UInt8]] = []
            var certs: [Certificate] = []
            var bytes = 16
            while cursor < toSend.count {
                let next = toSend[cursor]
                var extra = next.bytes.count + 4
                let author = next.log.author
                if replicator.certificates[author] == nil {
                    // No verified certificate of its author here: the peer could not verify it either.
                    // Live mode: the peer is not known to hold it, so a push offers it again once the
                    // certificate is known here.
                    cursor += 1
                    changesWithheld += 1
                    if let known = peerKnown[next.log], known.contains(next.seq) {
                        peerKnown[next.log] = HeldIntervals(sortedRanges: HeldIntervals.difference(known, HeldIntervals([next.seq...next.seq])))
                    }
                    continue
                }
                // Every known certificate of the author (renewals: the one valid at each change's write
                // time) and its issuing county authority's, once per session (Protocols/sync.md §3).
                var needed = authorsCovered.contains(author) ? []
                    : replicator.certificateChain(of: author).filter { !certificatesSent.contains($0) && !certs.contains($0) }
                if next.contentType.carriesTrust && !authoritiesSent {
                    // Key grants and revocations may be signed by a county authority the peer never met
                    // (published through HQ's log): every known authority certificate travels once, first.
                    needed = replicator.trust.authorities.values.sorted { $0.subject < $1.subject }
                        .filter { !certificatesSent.contains($0) && !certs.contains($0) && !needed.contains($0) } + needed
                }
                for c in needed { extra += c.canonicalBytes.count }
                if !changes.isEmpty && bytes + extra > batchLimit { break }
                cursor += 1
                certs += needed
                authorsCovered.insert(author)
                if next.contentType.carriesTrust { authoritiesSent = true }
                changes.append(next.bytes)  // sent exactly as stored and received
                bytes += extra
            }
            if changes.isEmpty { break }
            batchLimit = min(config.maxBatchBytes, batchLimit * 2)
            let id = nextBatchID
            nextBatchID += 1
            inFlight[id] = changes.count
            certificatesSent.formUnion(certs)
            changesSent += changes.count
            try send(.batch(id: id, certificates: certs, changes: changes))
        }
        if cursor == toSend.count && inFlight.isEmpty && !sentDone {
            sentDone = true
            try send(config.live ? .live : .done)
        }
        try checkFinished()
    }

    /// The first exchange is over when `done` (or `live`) was sent and received and nothing is in
    /// flight: the session finishes, or goes live when both sides sent `live`.
    private func checkFinished() throws {
        guard sentDone && peerDone && inFlight.isEmpty && phase == .streaming else { return }
        if config.live && peerLive {
            phase = .live
            events.append(.live)
            push(now: lastNow)  // what this node got while the first exchange ran
        } else {
            phase = .finished
            events.append(.finished)
        }
    }
}
