import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing
@testable import FieldSyncProtocol

/// A peer's standing on an open session (Protocols/sync.md §4.2): a revocation or the expiry of the
/// peer's certificate cuts the session at once, the peer is told why, and nothing written afterwards
/// crosses it; batches with changes of unknown authors are not acknowledged; logs a node may not hold
/// are refused before anything is stored (issue 12 items 1, 8, 9; attack cases 34, 36, 37).
@Suite struct StandingTests {
    static let now = SessionTests.now

    /// A revocation of `device` signed by the root, cut-off just after `now`.
    static func revocation(of device: DeviceIdentity, _ pki: TestPKI, at time: UInt64 = now + 10) throws -> Revocation {
        try Revocation(device: device.id, serial: device.certificate.serial, revokedAt: HLCTimestamp(milliseconds: time, counter: 0),
                       reason: .stolen, note: "", by: pki.hq)
    }

    /// A device whose certificate ends at `notAfter` (ms).
    static func device(_ pki: inout TestPKI, _ role: Role, notAfter: UInt64) throws -> DeviceIdentity {
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [TestPKI.station],
                                        createdAt: now, label: "short")
        pki.serial += 1
        let cert = try pki.hq.enroll(req, role: role, scopes: [TestPKI.station], notBefore: now - TestPKI.day, notAfter: notAfter,
                                     serial: pki.serial)
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }

    static func failure(_ s: TestSession) -> SessionError? {
        SessionTests.events(s).compactMap { if case let .closed(.failed(e)) = $0 { e } else { nil } }.first ?? s.failure
    }

    /// Issue 19 (Protocols/handshake.md §4.1): an initiator whose certificate has expired is refused at
    /// message 3 with a sealed `refuse` (`certificateInvalid`): its session ends `badCertificate` with the
    /// peer's reason, not with a bare closed connection. An initiator with a certificate of a foreign root
    /// is told nothing (the responder closes).
    @Test func anExpiredInitiatorIsToldWhyAtMessage3() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try Self.device(&pki, .backpack, notAfter: Self.now - TestPKI.day / 2))  // 12 h ago: past the 5 min tolerance
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var link = SessionTests.connect(bp, st)
        #expect(!SessionTests.run(&link))
        #expect(Self.failure(link.b)?.code == .badCertificate && Self.failure(link.b)?.certificate == .expired)
        #expect(Self.failure(link.a)?.code == .badCertificate, "\(String(describing: Self.failure(link.a)))")
        #expect(Self.failure(link.a)?.detail.contains("the peer refused this device") == true, "\(String(describing: Self.failure(link.a)))")

        // Enrolled by another root, trusting the station's: it accepts message 2, the station refuses message 3.
        var foreign = TestPKI()
        let stranger = Replicator(identity: try foreign.device(.backpack, scopes: [TestPKI.station]), trust: pki.trust, store: MemoryStore())
        var other = SessionTests.connect(stranger, st, seed: 2)
        #expect(!SessionTests.run(&other))
        #expect(Self.failure(other.b)?.code == .badCertificate && Self.failure(other.b)?.certificate == .unknownAuthority)
        #expect(other.a.failure == nil, "no refusal reached it: \(String(describing: other.a.failure))")
        other.a.connectionClosed()
        #expect(other.a.failure?.code == .connectionClosed)
    }

    // MARK: item 1, case 34 on live sessions

    /// The station learns (writes) the revocation of a backpack it has a live session with, then writes a
    /// record and pushes: nothing reaches the backpack, the session is cut on both sides, and the
    /// backpack is told `revoked`.
    @Test func revocationWrittenLocallyCutsTheLiveSessionBeforeThePush() throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let bp = pki.replicator(bpID)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var link = LiveSessionTests.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive)
        _ = try SessionTests.write(st, 1)
        link.b.push(now: Self.now + 1)
        SessionTests.run(&link, now: Self.now + 1)
        #expect(try bp.store.status().changes == 1, "before the revocation the live session carries the station's writes")

        _ = try st.writeControl(.revocation, payload: try Self.revocation(of: bpID, pki).canonicalBytes, scope: TestPKI.station,
                                now: Self.now + 20)
        _ = try SessionTests.write(st, 2)
        link.b.push(now: Self.now + 30)
        SessionTests.run(&link, now: Self.now + 30)
        #expect(try bp.store.status().changes == 1, "nothing written after the revocation reached the revoked device")
        #expect(link.b.hasFailed && Self.failure(link.b)?.code == .revoked)
        #expect(link.a.hasFailed && Self.failure(link.a)?.code == .revoked, "the revoked device is told why: \(String(describing: link.a.failure))")
        #expect(link.a.failure?.detail.contains("refused this device") == true)
        // And a new session is refused at the handshake.
        var again = SessionTests.connect(bp, st, seed: 2)
        #expect(!SessionTests.run(&again, now: Self.now + 40))
        #expect(Self.failure(again.b)?.code == .revoked)
    }

    /// A live session kept open by keep-alives (issue 14) is still cut by a revocation: the keep-alive
    /// re-checks the peer's standing before it is sent (as a push does), and the receiver re-checks the
    /// sender's when it arrives (as for every message). Either way the revoked device is told why.
    @Test func aKeptAliveSessionIsCutByARevocationOnEitherSide() throws {
        var pki = TestPKI()
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for sender in ["station", "backpack"] {
            let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
            let bp = pki.replicator(bpID)
            var link = LiveSessionTests.connect(bp, st)
            SessionTests.run(&link)
            let kept = Self.now + 600_000
            link.a.keepAlive(now: kept)
            link.b.keepAlive(now: kept)
            SessionTests.run(&link, now: kept)
            #expect(link.a.isLive && link.b.isLive, "kept alive")
            _ = try st.writeControl(.revocation, payload: try Self.revocation(of: bpID, pki, at: kept + 10).canonicalBytes, scope: TestPKI.station,
                                    now: kept + 20)
            let out = sender == "station" ? link.b.keepAlive(now: kept + 600_000) : link.a.keepAlive(now: kept + 600_000)
            #expect(!out.frames.contains { $0.kind == .keepAlive } || sender == "backpack", "no keep-alive goes to a revoked peer")
            SessionTests.run(&link, now: kept + 600_000)
            #expect(Self.failure(link.b)?.code == .revoked, "\(sender) sent: the station cut the session")
            #expect(Self.failure(link.a)?.code == .revoked, "\(sender) sent: the backpack is told why: \(String(describing: link.a.failure))")
        }
    }

    /// And by the peer's certificate expiring: a keep-alive due after the expiry (plus the clock-skew
    /// tolerance) refuses the peer instead of keeping the session open; the peer is told why.
    @Test func aKeepAliveAfterThePeersCertificateExpiredRefusesIt() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try Self.device(&pki, .backpack, notAfter: Self.now + 1_000_000))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var link = LiveSessionTests.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive)
        let before = Self.now + 900_000
        #expect(link.b.keepAlive(now: before).frames.first?.kind == .keepAlive, "valid: kept alive")
        SessionTests.run(&link, now: before)
        let after = Self.now + 1_000_000 + st.trust.clockSkewMilliseconds + 1
        #expect(!link.b.keepAlive(now: after).frames.contains { $0.kind == .keepAlive }, "expired: refused instead")
        SessionTests.run(&link, now: after)
        #expect(Self.failure(link.b)?.code == .badCertificate && Self.failure(link.a)?.code == .badCertificate)
    }

    /// The revocation reaches the station through another live session (from HQ). The station's driver
    /// re-checks its sessions (`checkStanding`): the backpack's session is cut. Without the driver's call,
    /// the next batch the backpack sends is refused and not stored, and no push of the station reaches it.
    @Test(arguments: [true, false])
    func revocationFromAnotherSessionCutsTheLiveSession(driverRechecks: Bool) throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let bp = pki.replicator(bpID)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        var toBP = LiveSessionTests.connect(bp, st)
        var toHQ = LiveSessionTests.connect(hq, st, seed: 2)
        SessionTests.run(&toBP)
        SessionTests.run(&toHQ)
        #expect(toBP.a.isLive && toHQ.a.isLive)

        _ = try hq.writeControl(.revocation, payload: try Self.revocation(of: bpID, pki).canonicalBytes, scope: TestPKI.root, now: Self.now + 20)
        toHQ.a.push(now: Self.now + 30)
        SessionTests.run(&toHQ, now: Self.now + 30)
        #expect(st.trust.revocation(of: bpID.certificate) != nil && !toHQ.b.hasFailed)
        if driverRechecks {
            #expect(!toBP.b.checkStanding(now: Self.now + 31))
            SessionTests.run(&toBP, now: Self.now + 31)
            #expect(Self.failure(toBP.a)?.code == .revoked, "the backpack is told why")
        }
        // The backpack writes and pushes (its session may not know yet); the station writes and pushes.
        _ = try SessionTests.write(bp, 3)
        toBP.a.push(now: Self.now + 40)
        _ = try SessionTests.write(st, 4)
        toBP.b.push(now: Self.now + 40)
        SessionTests.run(&toBP, now: Self.now + 40)
        #expect(toBP.b.hasFailed && Self.failure(toBP.b)?.code == .revoked)
        #expect(try st.store.holdings(of: LogID(author: bpID.id, scope: TestPKI.village)).count == 0, "nothing from the revoked device stored")
        #expect(try bp.store.holdings(of: LogID(author: st.identity.id, scope: TestPKI.village)).count == 0, "nothing reached the revoked device")
    }

    /// The handshake's trust store is the one the session began with; a revocation learned between the
    /// connection and the end of the handshake still refuses the peer.
    @Test func revocationLearnedDuringTheHandshakeRefusesThePeer() throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let bp = pki.replicator(bpID)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(bp, 1)
        var link = SessionTests.connect(bp, st)
        _ = try st.writeControl(.revocation, payload: try Self.revocation(of: bpID, pki).canonicalBytes, scope: TestPKI.station, now: Self.now + 20)
        #expect(!SessionTests.run(&link, now: Self.now + 30))
        #expect(Self.failure(link.b)?.code == .revoked)
        #expect(Self.failure(link.a)?.code == .revoked, "told why: \(String(describing: link.a.failure))")
        #expect(try st.store.holdings(of: LogID(author: bpID.id, scope: TestPKI.village)).count == 0)
    }

    // MARK: case 36: expiry on a live session

    /// The backpack's certificate expires while its live session is open: the first push after the
    /// expiry (beyond the skew tolerance) sends nothing and cuts the session, and a batch the backpack
    /// sends after it is refused.
    @Test(arguments: [true, false])
    func expiryOfThePeerCertificateCutsTheLiveSession(stationPushes: Bool) throws {
        var pki = TestPKI()
        let end = Self.now + 600_000
        let bpID = try Self.device(&pki, .backpack, notAfter: end)
        let bp = pki.replicator(bpID)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var link = LiveSessionTests.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive)
        let lapse = try #require(link.b.peerStandingLapsesAt)
        #expect(lapse == end + st.trust.clockSkewMilliseconds + 1)
        #expect(link.b.checkStanding(now: lapse - 1), "valid up to the tolerance")
        _ = try SessionTests.write(st, 1)
        _ = try SessionTests.write(bp, 2)
        if stationPushes {
            link.b.push(now: lapse)
        } else {
            link.a.push(now: lapse - 1)  // the backpack still believes in itself
        }
        SessionTests.run(&link, now: lapse)
        #expect(link.b.hasFailed && Self.failure(link.b)?.code == .badCertificate, "\(String(describing: link.b.failure))")
        #expect(link.a.hasFailed && Self.failure(link.a)?.code == .badCertificate, "told why: \(String(describing: link.a.failure))")
        #expect(try bp.store.holdings(of: LogID(author: st.identity.id, scope: TestPKI.village)).count == 0)
        #expect(try st.store.holdings(of: LogID(author: bpID.id, scope: TestPKI.village)).count == 0)
    }

    // MARK: case 37: revoking a relay

    /// A relay is revoked: the station's live session with it is cut, it cannot handshake with the station
    /// nor, once the revocation spread, with a backpack; backpack records stop flowing through it.
    @Test func revokedRelayIsCutAndNoLongerUsed() throws {
        var pki = TestPKI()
        let relayID = try pki.device(.relay, scopes: [TestPKI.root])
        let relay = pki.replicator(relayID, withKey: false)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        var live = LiveSessionTests.connect(relay, st)
        SessionTests.run(&live)
        #expect(live.a.isLive)
        _ = try st.writeControl(.revocation, payload: try Self.revocation(of: relayID, pki).canonicalBytes, scope: TestPKI.station,
                                now: Self.now + 20)
        _ = try SessionTests.write(st, 1)
        live.b.push(now: Self.now + 30)
        SessionTests.run(&live, now: Self.now + 30)
        #expect(Self.failure(live.b)?.code == .revoked && Self.failure(live.a)?.code == .revoked)
        #expect(try relay.store.holdings(of: LogID(author: st.identity.id, scope: TestPKI.village)).count == 0)
        // The station refuses it; the backpack learns the revocation from the station and refuses it too.
        var again = SessionTests.connect(relay, st, seed: 3)
        #expect(!SessionTests.run(&again, now: Self.now + 40))
        var spread = SessionTests.connect(bp, st, seed: 4)
        #expect(SessionTests.run(&spread, now: Self.now + 50))
        _ = try SessionTests.write(bp, 2)
        var viaRelay = SessionTests.connect(bp, relay, seed: 5)
        #expect(!SessionTests.run(&viaRelay, now: Self.now + 60))
        #expect(Self.failure(viaRelay.a)?.code == .revoked, "the backpack refuses the revoked relay")
        #expect(try relay.store.holdings(of: LogID(author: bp.identity.id, scope: TestPKI.village)).count == 0, "nothing handed to it")
    }

    // MARK: item 8: unknown authors

    /// A peer driven by hand: a real Noise handshake, then any session message it likes (a misbehaving
    /// implementation).
    struct RawPeer {
        var handshake: SessionHandshake
        var transport: NoiseTransport?
        var decoder = FrameDecoder()

        init(_ identity: DeviceIdentity, trust: TrustStore) {
            handshake = SessionHandshake(initiator: true, identity: identity, trust: trust, network: SessionTests.net)
        }

        /// Completes the handshake with `s` (a responder).
        mutating func connect(to s: TestSession, now: UInt64) throws {
            s.receive(FrameDecoder.frame(try handshake.write()), now: now)
            while let bytes = s.pollTransmit() { decoder.append(bytes) }
            guard let m2 = try decoder.next() else { throw SessionError(.protocolViolation, "no handshake message 2") }
            try handshake.read(m2, now: now)
            s.receive(FrameDecoder.frame(try handshake.write()), now: now)
            transport = try handshake.transport()
        }

        mutating func send(_ m: SessionMessage, to s: TestSession, now: UInt64) throws {
            var w = ByteWriter()
            m.encode(to: &w)
            s.receive(FrameDecoder.frame(try transport!.seal(w.bytes)), now: now)
        }

        /// Every message `s` sent since the last call.
        mutating func received(from s: TestSession) throws -> [SessionMessage] {
            while let bytes = s.pollTransmit() { decoder.append(bytes) }
            var out: [SessionMessage] = []
            while let frame = try decoder.next() { out.append(try SessionMessage.decode(try transport!.open(frame))) }
            return out
        }
    }

    /// A peer sends a change whose author's certificate it does not send and this node does not know:
    /// the change is not stored, the batch is not acknowledged, and the session fails with `badChange`,
    /// so the sender cannot believe it was delivered.
    @Test func changeOfAnUnknownAuthorIsNotAcknowledged() throws {
        var pki = TestPKI()
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let author = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let c = try SessionTests.write(author, 1)
        let senderID = try pki.device(.backpack, scopes: [TestPKI.station])
        let s = TestSession(initiator: false, replicator: st, configuration: SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 7, count: 16)),
                            now: Self.now)
        var peer = RawPeer(senderID, trust: pki.trust)
        try peer.connect(to: s, now: Self.now)
        #expect(!s.hasFailed)
        _ = try peer.received(from: s)  // reconciliation, ignored
        try peer.send(.batch(id: 1, certificates: [], changes: [c.encodedBytes]), to: s, now: Self.now)
        let answers = try peer.received(from: s)
        #expect(!answers.contains { if case .ack = $0 { true } else { false } }, "not acknowledged: \(answers)")
        let e = Self.failure(s)
        #expect(e?.code == .badChange && e?.detail.contains("certificate") == true, "\(String(describing: e))")
        #expect(try st.store.status().changes == 0)
        // With the certificate in the batch, the same change is stored and acknowledged.
        let s2 = TestSession(initiator: false, replicator: st, configuration: SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 8, count: 16)),
                             now: Self.now)
        var peer2 = RawPeer(senderID, trust: pki.trust)
        try peer2.connect(to: s2, now: Self.now)
        _ = try peer2.received(from: s2)
        try peer2.send(.batch(id: 1, certificates: [author.identity.certificate], changes: [c.encodedBytes]), to: s2, now: Self.now)
        #expect(try peer2.received(from: s2).contains { if case .ack(1) = $0 { true } else { false } })
        #expect(try st.store.status().changes == 1)
    }

    /// A node holds a change whose author's certificate it does not hold (verified): it does not send it
    /// (the peer could not verify it), the session finishes, and nothing is acknowledged that the peer
    /// did not store.
    @Test func senderWithholdsChangesWhoseAuthorCertificateItLacks() throws {
        var pki = TestPKI()
        let author = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let c = try SessionTests.write(author, 1)
        let sender = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let stored = try #require(try author.store.change(LogID(author: author.identity.id, scope: TestPKI.village), seq: 1))
        _ = try sender.store.commit(CommitBatch(changes: [stored]))  // held without its author's certificate
        _ = try SessionTests.write(sender, 2)
        let receiver = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        var link = SessionTests.connect(sender, receiver)
        let finished = SessionTests.run(&link)
        #expect(finished, "\(String(describing: link.a.failure)) / \(String(describing: link.b.failure))")
        #expect(link.a.changesWithheld == 1)
        #expect(link.a.changesAcknowledged == (try receiver.store.status().changes))
        #expect(try receiver.store.change(LogID(author: c.header.author, scope: TestPKI.village), seq: 1) == nil)
        // Once the sender knows the certificate, the change travels.
        sender.learn(certificates: [author.identity.certificate], now: Self.now)
        var again = SessionTests.connect(sender, receiver, seed: 2)
        #expect(SessionTests.run(&again))
        #expect(try receiver.store.change(LogID(author: c.header.author, scope: TestPKI.village), seq: 1) != nil)
    }

    /// Live mode: a change withheld for want of its author's certificate is not counted as known to the
    /// peer; once the certificate is known, a push sends it on the same session.
    @Test func aWithheldChangeIsPushedOnceItsAuthorCertificateIsKnown() throws {
        var pki = TestPKI()
        let author = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        _ = try SessionTests.write(author, 1)
        let log = LogID(author: author.identity.id, scope: TestPKI.village)
        let sender = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try sender.store.commit(CommitBatch(changes: [try #require(try author.store.change(log, seq: 1))]))
        let receiver = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        var link = LiveSessionTests.connect(sender, receiver)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive && link.a.changesWithheld >= 1)
        #expect(try receiver.store.change(log, seq: 1) == nil)
        sender.learn(certificates: [author.identity.certificate], now: Self.now)
        link.a.push(logs: [log], now: Self.now)
        SessionTests.run(&link)
        #expect(try receiver.store.change(log, seq: 1) != nil, "pushed once the certificate is known")
        #expect(link.a.isLive && link.b.isLive)
    }

    // MARK: item 9: entitlement of incoming logs

    /// A handshake that reports another peer certificate than the peer's: it makes the session's owner
    /// believe its peer may hold everything (a sender ignoring entitlement).
    struct LyingHandshake: SessionHandshaking {
        var inner: SessionHandshake
        let claimed: Certificate
        var isComplete: Bool { inner.isComplete }
        var isInitiator: Bool { inner.isInitiator }
        var handshakeHash: [UInt8] { inner.handshakeHash }
        var peer: Certificate? { inner.peer == nil ? nil : claimed }
        var shouldWrite: Bool { inner.shouldWrite }
        mutating func write() throws(SessionError) -> [UInt8] { try inner.write() }
        mutating func read(_ message: [UInt8], now: UInt64) throws(SessionError) { try inner.read(message, now: now) }
        func transport() throws(SessionError) -> NoiseTransport { try inner.transport() }
    }

    /// HQ sends a backpack logs of another station (in the first exchange, or pushed live): the backpack
    /// refuses the whole batch with `notEntitled` and stores nothing of it; also when the backpack prepares
    /// its batches elsewhere (a node's worker decodes them and checks the logs, `BatchPreparation.prepare()`).
    @Test(arguments: [false, true], [false, true])
    func unentitledLogsAreRefusedBeforeStoring(live: Bool, prepared: Bool) throws {
        var pki = TestPKI()
        let other = try Scope("longnan/cheng/station-101")
        let hqID = try pki.device(.hq, scopes: [TestPKI.root])
        let hq = pki.replicator(hqID)
        hq.addKey(EpochKey.generate(scope: other, epoch: 1))
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let relayCert = try pki.device(.relay, scopes: [TestPKI.root]).certificate
        _ = try SessionTests.write(hq, 1, scope: TestPKI.village)
        if !live { _ = try SessionTests.write(hq, 2, scope: other) }
        var g = SplitMix64(seed: 1)
        let salt = { (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) } }
        var ca = SessionConfiguration(network: SessionTests.net, salt: salt()), cb = SessionConfiguration(network: SessionTests.net, salt: salt())
        ca.live = live
        cb.live = live
        cb.preparesBatchesElsewhere = prepared
        let lying = LyingHandshake(inner: SessionHandshake(initiator: true, identity: hqID, trust: pki.trust, network: SessionTests.net),
                                   claimed: relayCert)
        var link = SessionTests.Link(a: TestSession(initiator: true, replicator: hq, configuration: ca, now: Self.now, handshake: lying),
                                     b: TestSession(initiator: false, replicator: bp, configuration: cb, now: Self.now))
        func run(now: UInt64) throws {
            if prepared { try PreparedBatchTests.run(&link, now: now) } else { SessionTests.run(&link, now: now) }
        }
        try run(now: Self.now)
        if live {
            #expect(link.a.isLive && link.b.isLive)
            _ = try SessionTests.write(hq, 3, scope: TestPKI.village)
            _ = try SessionTests.write(hq, 4, scope: other)
            link.a.push(now: Self.now + 10)
            try run(now: Self.now + 10)
        }
        let e = Self.failure(link.b)
        #expect(e?.code == .notEntitled, "\(String(describing: e))")
        #expect(try bp.store.holdings().keys.allSatisfy { TestPKI.station.contains($0.scope) }, "nothing of cheng stored")
        #expect(try bp.store.holdings(of: LogID(author: hqID.id, scope: other)).count == 0)
    }

    @Test func refusalMessagesDecode() throws {
        #expect(try SessionMessage.decode([7, 1]).isRefusal(.revoked))
        #expect(try SessionMessage.decode([7, 2]).isRefusal(.certificateInvalid))
        for bad: [UInt8] in [[7], [7, 0], [7, 3], [7, 1, 0]] {
            #expect(throws: DecodingError.self, "\(bad)") { try SessionMessage.decode(bad) }
        }
    }
}

extension SessionMessage {
    fileprivate func isRefusal(_ r: SessionRefusal) -> Bool {
        if case let .refuse(x) = self { x == r } else { false }
    }
}
