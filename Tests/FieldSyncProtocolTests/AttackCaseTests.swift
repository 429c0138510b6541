import FieldSyncCore
import Foundation
import Testing
@testable import FieldSyncCrypto
@testable import FieldSyncProtocol

/// Attack cases of security-notes §11 at the session and replicator level (the table in
/// docs/threat-model.md names each test; Noise-level cases are in FieldSyncCryptoTests.AttackCaseTests).
@Suite struct SessionAttackCaseTests {
    static let now = TestPKI.now
    static let net = NetworkParameters(networkID: "longnan-police")

    static func failure(_ s: TestSession) -> SessionError? {
        while let e = s.pollEvent() { if case let .closed(.failed(err)) = e { return err } }
        return nil
    }

    // MARK: Case 11: reflection

    /// A session that gets its own frames echoed back fails at the handshake, as initiator (message 1
    /// reflected) and as responder (message 2 reflected); a node that dials itself is refused.
    @Test func case11EchoedFramesAndSelfConnectionFail() throws {
        var pki = TestPKI()
        let a = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let b = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let cfg = SessionConfiguration(network: Self.net, salt: Array(repeating: 1, count: 16))
        let i = TestSession(initiator: true, replicator: a, configuration: cfg, now: Self.now)
        let m1 = try #require(i.pollTransmit())
        i.receive(m1, now: Self.now)
        #expect(Self.failure(i)?.code == .handshakeFailed, "message 1 echoed to the initiator")

        let i2 = TestSession(initiator: true, replicator: a, configuration: cfg, now: Self.now)
        let r = TestSession(initiator: false, replicator: b, configuration: cfg, now: Self.now)
        r.receive(try #require(i2.pollTransmit()), now: Self.now)
        let m2 = try #require(r.pollTransmit())
        r.receive(m2, now: Self.now)
        #expect(Self.failure(r)?.code == .handshakeFailed, "message 2 echoed to the responder")

        var selfLink = SessionTests.connect(a, a)
        SessionTests.run(&selfLink)
        let codes = [Self.failure(selfLink.a)?.code, Self.failure(selfLink.b)?.code]
        #expect(codes.contains(.selfConnection), "dialling itself: \(codes)")
    }

    /// After the handshake, a transport frame reflected to its sender does not open (each direction has
    /// its own key), so a peer cannot be fed its own batches or acknowledgements.
    @Test func case11ReflectedTransportFrameFails() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        let (i, r) = try HandshakeTests.run(a, b, trustA: pki.trust, trustB: pki.trust)
        var ti = try i.transport(), tr = try r.transport()
        let frame = try ti.seal([3, 0x01])  // an ack
        #expect(HandshakeTests.code { _ = try ti.open(frame) } == .protocolViolation)
        #expect(try tr.open(frame) == [3, 0x01])
    }

    // MARK: Case 13: identity probing

    /// A passive observer of a whole session (handshake and sync) sees no certificate bytes, no device
    /// id, no signing key and no static X25519 key of either side: only the ephemeral keys, the version
    /// byte and ciphertext.
    @Test func case13PassiveObserverSeesNoCertificateBytes() throws {
        var pki = TestPKI()
        let a = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let b = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(a, 1)
        let link = SessionTests.connect(a, b)
        var wire: [UInt8] = []
        while true {
            var progress = false
            for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                while let bytes = from.pollTransmit() {
                    wire += bytes
                    to.receive(bytes, now: Self.now)
                    progress = true
                }
            }
            if !progress { break }
        }
        #expect(link.a.isFinished && link.b.isFinished && link.b.changesReceived == 1)
        for cert in [a.identity.certificate, b.identity.certificate] {
            let secrets: [(String, [UInt8])] = [
                ("certificate", cert.canonicalBytes), ("subject", cert.subject.canonicalBytes), ("signing key", cert.signingKey.bytes),
                ("static X25519 key", cert.agreementKey.bytes), ("certificate signature", Array(cert.canonicalBytes.suffix(64))),
            ]
            for (what, bytes) in secrets {
                #expect(!wire.contains(subsequence: bytes), "\(what) of \(cert.subject) visible on the wire")
            }
        }
        // The wire does carry what handshake.md §7 says a listener sees: message 1 in clear.
        #expect(wire.count > 2 + 33 && wire[2 + 32] == NetworkParameters.protocolVersion)
    }

    /// An active prober with no certificate learns the responder's certificate (XX sends it in message
    /// 2, before the initiator is authenticated: handshake.md §7); an initiator that meets a responder
    /// with an invalid certificate stops after message 2 and never sends its own.
    @Test func case13ActiveProberLearnsOnlyTheResponderCertificate() throws {
        var pki = TestPKI()
        let station = try pki.device(.station, scopes: [TestPKI.station])
        var responder = SessionHandshake(initiator: false, identity: station, trust: pki.trust, network: Self.net)
        var prober = NoiseXX(initiator: true, staticKey: .generate(), prologue: Self.net.prologue)
        try responder.read(try prober.writeMessage(payload: [NetworkParameters.protocolVersion]), now: Self.now)
        let payload = try prober.readMessage(try responder.write())
        #expect(payload == station.certificate.canonicalBytes, "what an active prober learns")

        var other = TestPKI()  // a responder enrolled under another root
        let rogue = try other.device(.station, scopes: [TestPKI.station])
        let backpack = try pki.device(.backpack, scopes: [TestPKI.station])
        var initiator = SessionHandshake(initiator: true, identity: backpack, trust: pki.trust, network: Self.net)
        var fake = SessionHandshake(initiator: false, identity: rogue, trust: other.trust, network: Self.net)
        try fake.read(try initiator.write(), now: Self.now)
        #expect(HandshakeTests.code { try initiator.read(try fake.write(), now: Self.now) } == .badCertificate)
        #expect(!initiator.isComplete && initiator.peer == nil)
    }

    // MARK: Case 15: rekey at 2^20 messages

    /// Both directions rekey after every 2^20 messages (handshake.md §5). The counters are set just
    /// below the boundary, so the test exercises it cheaply: the peers stay in step across it, the
    /// message numbered 2^20 is sealed under the new key (a receiver that does not rekey fails on
    /// exactly that message), and the next boundary (2 × 2^20) rekeys again.
    @Test func case15TransportRekeysAtTheBoundary() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        var ni = NoiseXX(initiator: true, staticKey: a.agreementKey, prologue: [])
        var nr = NoiseXX(initiator: false, staticKey: b.agreementKey, prologue: [])
        _ = try nr.readMessage(try ni.writeMessage(payload: []))
        _ = try ni.readMessage(try nr.writeMessage(payload: []))
        _ = try nr.readMessage(try ni.writeMessage(payload: []))
        let (iSend, iReceive) = try ni.split()
        let (rSend, rReceive) = try nr.split()
        let interval = NoiseTransport.rekeyInterval
        #expect(interval == 1 << 20)
        for boundary in [interval, 2 * interval] {
            let start = boundary - 2
            var sender = NoiseTransport(send: iSend.settingNonce(start), receive: iReceive)
            var receiver = NoiseTransport(send: rSend, receive: rReceive.settingNonce(start))
            // Both sides start below the boundary with the un-rekeyed key (the counters jumped there).
            var noRekey = rReceive.settingNonce(start)  // a receiver without the rekey schedule
            let frames = try (0..<4).map { n in try sender.seal([UInt8(n)]) }
            for (n, f) in frames.enumerated() {
                #expect(try receiver.open(f) == [UInt8(n)], "message \(start + UInt64(n)) across the rekey at \(boundary)")
            }
            #expect(try noRekey.decrypt(frames[0]) == [0] && (try noRekey.decrypt(frames[1])) == [1], "before the boundary: old key")
            #expect(throws: NoiseError.self, "message \(boundary) must use the new key") { _ = try noRekey.decrypt(frames[2]) }
            var manual = rReceive.settingNonce(boundary)
            manual.rekey()
            #expect(try manual.decrypt(frames[2]) == [2], "the new key is Rekey() of the old one")
        }
    }

    // MARK: Case 23: HLC far in the past

    /// A change stamped before its author's certificate was valid (beyond the skew tolerance), or at the
    /// Unix epoch, is refused and not stored; a device whose wall clock is set before its certificate
    /// cannot store its own writes (no silently back-dated data).
    @Test func case23PastTimestampsAreRefused() throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let notBefore = bpID.certificate.notBefore
        let skew = station.trust.clockSkewMilliseconds
        let body = ChangeBody(edits: []).canonicalBytes
        func change(at ms: UInt64, seq: UInt64 = 1) throws -> Change {
            try Change.seal(author: bpID.signingKey, scope: TestPKI.village, seq: seq, prevHash: Change.zeroHash,
                            hlc: HLCTimestamp(milliseconds: ms, counter: 0), priority: .normal, payload: body, readers: [pki.stationKey])
        }
        for ms in [notBefore - skew - 1, 0, 1] {
            let r = try station.ingest([try change(at: ms)], certificates: [bpID.certificate], now: Self.now)
            guard case .rejected(.certificateInvalid, _) = r.outcomes[0] else {
                Issue.record("a change stamped \(ms) ms (certificate valid from \(notBefore)) was \(r.outcomes[0])")
                continue
            }
            #expect(r.commit.inserted == 0)
        }
        #expect(try station.store.status().changes == 0)
        let inTolerance = try station.ingest([try change(at: notBefore - skew)], certificates: [bpID.certificate], now: Self.now)
        #expect(inTolerance.outcomes == [.accepted], "the tolerance edge itself is valid")

        let bp = pki.replicator(bpID)
        #expect(throws: (any Error).self) {
            try bp.write([try ReplicatorTests.incident(bp, 1)], scope: TestPKI.village, priority: .normal, now: notBefore - skew - 60_000)
        }
        #expect(try bp.store.status().changes == 0)
    }

    // MARK: Epochs (cases 27, 28, 30, 31)

    /// A control change carrying `grant`, authored by an HQ device.
    static func grantChange(_ grant: KeyGrant, _ hq: Replicator, at ms: UInt64) throws -> Change {
        try hq.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: TestPKI.root, now: ms)
    }

    /// A relay box whose quota is full of changes HQ has not receipted keeps an authority's key grant it
    /// verified, as it keeps a revocation: refused for room, the rotation after a revocation would not reach
    /// the members whose only contacts are such boxes, and they would go on writing under the epoch the
    /// revoked device holds (`fieldsim swarm --infra`, seeds 424, 668 and 781: a member without the newest
    /// epoch behind a full box). Content gets no exemption (a change only typed as a grant does not verify).
    @Test func aFullRelayKeepsTheKeyGrantsItVerified() throws {
        var pki = TestPKI()
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let memberID = try pki.device(.backpack, scopes: [TestPKI.station])
        let member = pki.replicator(memberID)
        let relay = pki.replicator(try pki.device(.relay, scopes: [TestPKI.root]), withKey: false,
                                   store: MemoryStore(limits: StoreLimits(quotaBytes: 1)))
        let content = try member.write([try ReplicatorTests.incident(member, 1)], scope: TestPKI.village, priority: .normal, now: Self.now)
        _ = try relay.ingest([content], certificates: [memberID.certificate], now: Self.now + 500)
        #expect(try relay.store.status().changes == 0, "a quota of 1 byte stores nothing unreceipted")
        let (_, g2) = try EpochRotation.rotate(current: pki.stationKey, members: [memberID.certificate], removing: [],
                                               issuedAt: Self.now + 1_000, by: pki.hq)
        let grant = try Self.grantChange(g2, hq, at: Self.now + 1_000)
        _ = try relay.ingest([grant], certificates: [hq.identity.certificate], now: Self.now + 2_000)
        #expect(try relay.store.change(LogID(author: hq.identity.id, scope: TestPKI.root), seq: grant.header.seq) != nil,
                "the grant is kept over the quota")
        #expect(try relay.store.status().changes == 1, "the content change is still refused")
        // The box passes it on: a member that meets only the box learns the new epoch.
        let late = pki.replicator(memberID, withKey: true, store: MemoryStore())
        var link = SessionTests.connect(relay, late)
        #expect(SessionTests.run(&link))
        #expect(late.writingKey(for: TestPKI.village)?.epoch == 2)
    }

    /// Epoch rollback: after a device learned epoch 2 (a rotation that removed a lost device), the
    /// epoch-1 grant replayed to it (or re-sent by a stale relay) does not make it write under epoch 1,
    /// so the removed device still cannot read what it writes.
    @Test func case27ReplayedOlderEpochDoesNotRollTheWriterBack() throws {
        var pki = TestPKI()
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let writerID = try pki.device(.backpack, scopes: [TestPKI.station])
        let lostID = try pki.device(.backpack, scopes: [TestPKI.station])
        let writer = pki.replicator(writerID, withKey: false)
        let lost = pki.replicator(lostID, withKey: false)
        let g1 = try KeyGrant.issue(epochKey: pki.stationKey, members: [writerID.certificate, lostID.certificate], issuedAt: Self.now, by: pki.hq)
        let (k2, g2) = try EpochRotation.rotate(current: pki.stationKey, members: [writerID.certificate, lostID.certificate],
                                                removing: [lostID.id], issuedAt: Self.now + 1_000, by: pki.hq)
        #expect(k2.epoch == 2)
        let c1 = try Self.grantChange(g1, hq, at: Self.now), c2 = try Self.grantChange(g2, hq, at: Self.now + 1_000)
        _ = try lost.ingest([c1, c2], certificates: [hq.identity.certificate], now: Self.now + 2_000)
        #expect(lost.writingKey(for: TestPKI.village)?.epoch == 1, "the lost device only ever got epoch 1")
        // The writer learns epoch 2 first, then epoch 1 arrives (replayed or late).
        _ = try writer.ingest([c2], certificates: [hq.identity.certificate], now: Self.now + 2_000)
        _ = try writer.ingest([c1], certificates: [hq.identity.certificate], now: Self.now + 3_000)
        #expect(writer.writingKey(for: TestPKI.village)?.epoch == 2)
        let c = try writer.write([try ReplicatorTests.incident(writer, 1)], scope: TestPKI.village, priority: .normal, now: Self.now + 4_000)
        #expect(c.header.keyEpoch == 2)
        let r = try lost.ingest([c], certificates: [writerID.certificate], now: Self.now + 5_000)
        #expect(r.outcomes == [.accepted] && r.editsMerged == 0 && r.heldSealed == 1, "the removed device cannot read epoch 2")
        // A restart re-reads the grants from the store in HLC order and still writes under epoch 2.
        let restarted = Replicator(identity: writerID, trust: pki.trust, store: writer.store)
        try restarted.restoreControlState(now: Self.now + 6_000)
        #expect(restarted.writingKey(for: TestPKI.village)?.epoch == 2)
    }

    /// Freeze: a node cut off from rotations keeps the epoch-1 key it was granted 20 days ago; with a
    /// 14-day threshold it is reported stale (also after a restart, which re-reads the grant's signing
    /// time), and no longer once the rotation's grant arrives. A key from the keystore (never granted) has
    /// no known age and is not judged.
    @Test func case27FreezeIsReportedWhenTheNewestEpochKeyIsOld() throws {
        var pki = TestPKI()
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let memberID = try pki.device(.backpack, scopes: [TestPKI.station])
        let member = pki.replicator(memberID, withKey: false)
        let threshold = 14 * TestPKI.day
        let issued = Self.now - 20 * TestPKI.day
        let g1 = try KeyGrant.issue(epochKey: pki.stationKey, members: [memberID.certificate], issuedAt: issued, by: pki.hq)
        _ = try member.ingest([try Self.grantChange(g1, hq, at: Self.now)], certificates: [hq.identity.certificate], now: Self.now)
        #expect(member.newestEpochKeys() == [EpochKeyAge(scope: TestPKI.station, epoch: 1, issuedAt: issued)])
        #expect(member.staleEpochKeys(now: Self.now, threshold: threshold).map(\.epoch) == [1])
        #expect(member.staleEpochKeys(now: Self.now, threshold: 21 * TestPKI.day).isEmpty, "not past a longer threshold")
        let restarted = Replicator(identity: memberID, trust: pki.trust, store: member.store)
        try restarted.restoreControlState(now: Self.now)
        #expect(restarted.staleEpochKeys(now: Self.now, threshold: threshold).map(\.epoch) == [1], "after a restart too")
        let (_, g2) = try EpochRotation.rotate(current: pki.stationKey, members: [memberID.certificate], removing: [], issuedAt: Self.now,
                                               by: pki.hq)
        _ = try restarted.ingest([try Self.grantChange(g2, hq, at: Self.now + 1_000)], certificates: [hq.identity.certificate], now: Self.now + 1_000)
        #expect(restarted.staleEpochKeys(now: Self.now + 1_000, threshold: threshold).isEmpty, "the rotation reached it")
        let keystoreOnly = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        #expect(keystoreOnly.newestEpochKeys().map(\.issuedAt) == [nil])
        #expect(keystoreOnly.staleEpochKeys(now: Self.now + 400 * TestPKI.day, threshold: threshold).isEmpty)
    }

    /// Two county authorities delegated for the same scope each issue epoch 2 of a station at the same
    /// time, with different keys. Members that learn the two grants in opposite orders must still read
    /// each other's changes, and what a writer seals must not depend on arrival order (nothing to win by
    /// grinding keys: a writer seals to every concurrent key of the newest epoch). A later HQ epoch
    /// supersedes both.
    @Test func case28ConcurrentDelegatedEpochsStayReadableAndOrderIndependent() throws {
        var pki = TestPKI()
        var trust = pki.trust
        let wudu = try Scope("longnan/wudu")
        func county(_ label: String, serial: UInt64) throws -> Authority {
            let sk = Ed25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                            requestedScopes: [wudu], createdAt: Self.now, label: label)
            let cert = try pki.hq.delegate(req, scopes: [wudu], notBefore: Self.now - TestPKI.day, notAfter: Self.now + 30 * TestPKI.day,
                                           serial: serial)
            try trust.addAuthority(cert, now: Self.now)
            return try Authority(delegated: sk, certificate: cert)
        }
        let countyA = try county("county a", serial: 900), countyB = try county("county b", serial: 901)
        let hqID = try pki.device(.hq, scopes: [TestPKI.root])
        let m1ID = try pki.device(.backpack, scopes: [TestPKI.station]), m2ID = try pki.device(.station, scopes: [TestPKI.station])
        let hq = Replicator(identity: hqID, trust: trust, store: MemoryStore())
        let m1 = Replicator(identity: m1ID, trust: trust, store: MemoryStore())
        let m2 = Replicator(identity: m2ID, trust: trust, store: MemoryStore())
        let members = [m1ID.certificate, m2ID.certificate]
        let kA = EpochKey.generate(scope: TestPKI.station, epoch: 2), kB = EpochKey.generate(scope: TestPKI.station, epoch: 2)
        let gA = try Self.grantChange(try KeyGrant.issue(epochKey: kA, members: members, issuedAt: Self.now, by: countyA), hq, at: Self.now)
        let gB = try Self.grantChange(try KeyGrant.issue(epochKey: kB, members: members, issuedAt: Self.now, by: countyB), hq, at: Self.now + 1)
        _ = try m1.ingest([gA], certificates: [hqID.certificate], now: Self.now + 10)
        _ = try m1.ingest([gB], certificates: [hqID.certificate], now: Self.now + 10)
        _ = try m2.ingest([gB], certificates: [hqID.certificate], now: Self.now + 10)
        _ = try m2.ingest([gA], certificates: [hqID.certificate], now: Self.now + 10)
        let w1 = try m1.write([try ReplicatorTests.incident(m1, 1)], scope: TestPKI.village, priority: .normal, now: Self.now + 20)
        let w2 = try m2.write([try ReplicatorTests.incident(m2, 2)], scope: TestPKI.village, priority: .normal, now: Self.now + 20)
        #expect(w1.header.keyEpoch == 2 && w2.header.keyEpoch == 2)
        #expect(w1.slots.map(\.recipient) == w2.slots.map(\.recipient) && w1.slots.count == 2,
                "the same slots whatever the arrival order: one per concurrent key")
        let r2 = try m2.ingest([w1], certificates: [m1ID.certificate], now: Self.now + 30)
        let r1 = try m1.ingest([w2], certificates: [m2ID.certificate], now: Self.now + 30)
        #expect(r2.editsMerged == 1 && r1.editsMerged == 1, "each member reads the other's change")
        // A member that holds only one of the concurrent keys still reads both writers.
        let m3ID = try pki.device(.backpack, scopes: [TestPKI.station])
        let m3 = Replicator(identity: m3ID, trust: trust, store: MemoryStore())
        let onlyA = try Self.grantChange(try KeyGrant.issue(epochKey: kA, members: [m3ID.certificate], issuedAt: Self.now, by: countyA), hq,
                                         at: Self.now + 2)
        _ = try m3.ingest([onlyA], certificates: [hqID.certificate], now: Self.now + 40)
        let r3 = try m3.ingest([w1, w2], certificates: [m1ID.certificate, m2ID.certificate], now: Self.now + 40)
        #expect(r3.editsMerged == 2)
        // HQ issues epoch 3: it supersedes both concurrent epoch-2 keys.
        let k3 = EpochKey.generate(scope: TestPKI.station, epoch: 3)
        let g3 = try Self.grantChange(try KeyGrant.issue(epochKey: k3, members: members, issuedAt: Self.now + 50, by: pki.hq), hq,
                                      at: Self.now + 50)
        _ = try m1.ingest([g3], certificates: [hqID.certificate], now: Self.now + 60)
        let w3 = try m1.write([try ReplicatorTests.incident(m1, 3)], scope: TestPKI.village, priority: .normal, now: Self.now + 70)
        #expect(w3.header.keyEpoch == 3 && w3.slots.count == 1)
    }

    /// A device offline across several rotations catches up: its peer sends the grants of epochs 2...4
    /// (control changes first) and the changes sealed in each epoch; the device learns every key, opens
    /// everything, and writes under the newest epoch.
    @Test func case30DeviceOfflineAcrossSeveralEpochsCatchesUp() throws {
        var pki = TestPKI()
        let hqID = try pki.device(.hq, scopes: [TestPKI.root])
        let hq = pki.replicator(hqID)
        let stationID = try pki.device(.station, scopes: [TestPKI.station])
        let awayID = try pki.device(.backpack, scopes: [TestPKI.station])
        let station = pki.replicator(stationID)
        let away = pki.replicator(awayID)  // holds epoch 1 only
        var key = pki.stationKey
        var written: [Change] = []
        for n in 1...3 {
            let (next, grant) = try EpochRotation.rotate(current: key, members: [stationID.certificate, awayID.certificate], removing: [],
                                                         issuedAt: Self.now + UInt64(n) * 1_000, by: pki.hq)
            key = next
            let g = try Self.grantChange(grant, hq, at: Self.now + UInt64(n) * 1_000)
            _ = try station.ingest([g], certificates: [hqID.certificate], now: Self.now + UInt64(n) * 1_000 + 10)
            #expect(station.writingKey(for: TestPKI.village)?.epoch == UInt32(n + 1))
            written.append(try SessionTests.write(station, UInt64(n) * 1_000 + 20))
        }
        #expect(written.map(\.header.keyEpoch) == [2, 3, 4])
        var link = SessionTests.connect(station, away)
        #expect(SessionTests.run(&link, now: Self.now + 10_000))
        #expect(away.writingKey(for: TestPKI.village)?.epoch == 4)
        #expect(try away.store.records(RecordQuery()).count == 3, "every epoch's change opened")
        let mine = try SessionTests.write(away, 9_000)
        #expect(mine.header.keyEpoch == 4)
    }

    /// Rotation without a membership change (a scheduled rotation: the same members get epoch n+1):
    /// writers move to the new epoch and everyone keeps reading. Nothing in FieldSync schedules these
    /// rotations yet; an operator (or HQ tooling) must call `EpochRotation.rotate` with `removing: []`.
    @Test func case31RotationWithoutMembershipChangeMovesWritersOn() throws {
        var pki = TestPKI()
        let hqID = try pki.device(.hq, scopes: [TestPKI.root])
        let hq = pki.replicator(hqID)
        let aID = try pki.device(.backpack, scopes: [TestPKI.station]), bID = try pki.device(.station, scopes: [TestPKI.station])
        let a = pki.replicator(aID), b = pki.replicator(bID)
        let before = try SessionTests.write(a, 1)
        let (k2, grant) = try EpochRotation.rotate(current: pki.stationKey, members: [aID.certificate, bID.certificate], removing: [],
                                                   issuedAt: Self.now + 100, by: pki.hq)
        #expect(k2.epoch == 2 && grant.members.count == 2)
        let g = try Self.grantChange(grant, hq, at: Self.now + 100)
        for r in [a, b] { _ = try r.ingest([g], certificates: [hqID.certificate], now: Self.now + 200) }
        let after = try SessionTests.write(a, 2)
        #expect(before.header.keyEpoch == 1 && after.header.keyEpoch == 2)
        let r = try b.ingest([before, after], certificates: [aID.certificate], now: Self.now + 300)
        #expect(r.editsMerged == 2)
    }
}
