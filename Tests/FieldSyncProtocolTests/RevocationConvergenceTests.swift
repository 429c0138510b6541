import FieldSyncCore
import Testing
@testable import FieldSyncCrypto
@testable import FieldSyncProtocol

/// TestPKI plus a delegated county authority for longnan/wudu, whose devices every replicator here can
/// verify (the trust store knows the county).
struct CountyPKI {
    var pki = TestPKI()
    let county: Authority
    let trust: TrustStore

    /// A county certificate valid over `validity` (ms since the Unix epoch).
    init(validity: ClosedRange<UInt64> = (TestPKI.now - TestPKI.day)...(TestPKI.now + 365 * TestPKI.day)) throws {
        let key = Ed25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: key, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                        requestedScopes: [try Scope("longnan/wudu")], createdAt: validity.lowerBound, label: "wudu county")
        let cert = try pki.hq.delegate(req, scopes: [try Scope("longnan/wudu")], notBefore: validity.lowerBound,
                                       notAfter: validity.upperBound, serial: 500)
        county = try Authority(delegated: key, certificate: cert)
        var t = pki.trust
        try t.learnAuthority(cert)
        trust = t
    }

    /// A device enrolled by `authority` (the root unless given).
    mutating func device(_ role: Role, scopes: [Scope], by authority: Authority? = nil) throws -> DeviceIdentity {
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: TestPKI.now, label: "d")
        pki.serial += 1
        let cert = try (authority ?? pki.hq).enroll(req, role: role, scopes: scopes, notBefore: TestPKI.now - TestPKI.day,
                                                    notAfter: TestPKI.now + 30 * TestPKI.day, serial: pki.serial)
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }

    /// A replicator as a node opens it: over `store`, with the station key unless `withKey` is false,
    /// certificates and control state restored from the store.
    func replicator(_ id: DeviceIdentity, store: any SyncStore = MemoryStore(), withKey: Bool = true, now: UInt64 = TestPKI.now) throws -> Replicator {
        let r = Replicator(identity: id, trust: trust, store: store)
        if withKey { r.addKey(pki.stationKey) }
        try r.restoreCertificates(now: now)
        try r.restoreControlState(now: now)
        return r
    }
}

/// Issue 12 items 2 and 5, attack cases 33 and 35: out-of-bounds revocations never reach a store,
/// revocations merge as a join (earliest cut-off, whatever the arrival order and restarts), stored
/// grants and revocations survive their issuer's expiry, and a revoked device's history is kept up to
/// the cut-off and flagged.
@Suite struct RevocationConvergenceTests {
    static let now = TestPKI.now
    static func at(_ ms: UInt64) -> HLCTimestamp { HLCTimestamp(milliseconds: now + ms, counter: 0) }

    static func incident(_ r: Replicator, _ n: UInt64, at ms: UInt64) throws -> RecordEdit {
        Incident.create(id: RecordID(ID128(high: 35, low: n)), scope: TestPKI.village, author: r.identity.id,
                        hlc: HLCTimestamp(milliseconds: now + ms, counter: UInt16(n)), category: .dispute, priority: .normal,
                        location: Location(latitude: 33.41, longitude: 104.95), summary: "incident \(n)", reportedAt: Int64(now),
                        reporter: "walk-in")
    }

    /// A county revocation of the HQ root or of an HQ-enrolled station, carried in a control change by a
    /// valid device, is refused by the replicator before storing: nothing is stored, nothing learned,
    /// so nothing can spread; the writer's own replicator refuses to write it at all.
    @Test func anOutOfBoundsRevocationIsRefusedBeforeStoring() throws {
        var c = try CountyPKI()
        let stationID = try c.device(.station, scopes: [TestPKI.station])
        let station = try c.replicator(stationID)
        let courierID = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        let courier = try c.replicator(courierID)
        let forRoot = try Certificate(kind: .device, signingKey: c.pki.rootKey.publicKey, agreementKey: courierID.agreementKey.publicKey,
                                      role: .backpack, scopes: [TestPKI.station], notBefore: Self.now, notAfter: Self.now + TestPKI.day,
                                      serial: 1, issuer: c.county.signingKey)
        let forgeries = [
            try Revocation(unchecked: c.pki.hq.keyID, serial: 1, revokedAt: Self.at(0), reason: .compromised, note: "", by: c.county,
                           issuerCertificate: c.county.certificate, revokedCertificate: forRoot),
            try Revocation(unchecked: stationID.id, serial: stationID.certificate.serial, revokedAt: Self.at(0), reason: .compromised,
                           note: "", by: c.county, issuerCertificate: c.county.certificate, revokedCertificate: stationID.certificate),
        ]
        for (i, forged) in forgeries.enumerated() {
            #expect(throws: WriteError.self, "the writer's replicator refuses to store it") {
                try courier.writeControl(.revocation, payload: forged.canonicalBytes, scope: TestPKI.station, now: Self.now)
            }
            let change = try Change.control(author: courierID.signingKey, scope: i == 0 ? TestPKI.station : TestPKI.village, seq: 1,
                                            prevHash: Change.zeroHash, hlc: Self.at(10), contentType: .revocation, priority: .urgent,
                                            payload: forged.canonicalBytes)
            let report = try station.ingest([change], certificates: [courierID.certificate], now: Self.now + 20)
            guard case .rejected(.unauthorizedControl, _) = report.outcomes[0] else {
                Issue.record("forgery \(i) was not refused: \(report.outcomes)")
                continue
            }
            #expect(report.commit.inserted == 0 && report.revocationsLearned == 0)
        }
        #expect(try courier.store.status().changes == 0 && station.store.status().changes == 0, "nothing stored anywhere")
        #expect(station.trust.revocations.count == 0)
        try station.trust.verify(stationID.certificate, now: Self.now + 30)
        // The station still syncs: its own writes and the courier's records are accepted.
        let mine = try station.write([try Self.incident(station, 1, at: 40)], scope: TestPKI.village, priority: .normal, now: Self.now + 40)
        #expect(mine.header.seq == 1)
        let records = try courier.write([try Self.incident(courier, 2, at: 50)], scope: TestPKI.village, priority: .normal, now: Self.now + 50)
        #expect(try station.ingest([records], certificates: [courierID.certificate], now: Self.now + 60).outcomes == [.accepted])
    }

    /// Several revocations of one device (by the root and by its county, with different cut-offs), each
    /// published in its own log, reach three replicas in random orders and batches, with restarts in
    /// between: every replica ends with the earliest cut-off, and the same revocation set.
    @Test(arguments: 0..<12) func revocationsConvergeWhateverTheArrivalOrder(seed: UInt64) throws {
        var rng = SplitMix64(seed: 0xF1E1_D5EC + seed)
        var c = try CountyPKI()
        let deviceID = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        let other = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        // Cut-offs in a random order of issuance; the earliest is what every replica must end with.
        var cutoffs: [UInt64] = [9_000, 7_000, 3_000, 5_000, 4_000]
        cutoffs.shuffle(using: &rng)
        var changes: [Change] = []
        var publisherCerts: [Certificate] = []
        for (i, ms) in cutoffs.enumerated() {
            let r = i % 2 == 0
                ? try Revocation(device: deviceID.id, serial: deviceID.certificate.serial, revokedAt: Self.at(ms), reason: .lost, note: "\(i)", by: c.pki.hq)
                : try Revocation(certificate: deviceID.certificate, revokedAt: Self.at(ms), reason: .stolen, note: "\(i)", by: c.county)
            let publisher = try c.device(.hq, scopes: [TestPKI.root])
            publisherCerts.append(publisher.certificate)
            changes.append(try Change.control(author: publisher.signingKey, scope: TestPKI.root, seq: 1, prevHash: Change.zeroHash,
                                              hlc: Self.at(10_000 + UInt64(i)), contentType: .revocation, priority: .urgent,
                                              payload: r.canonicalBytes))
        }
        let unrelated = try Revocation(certificate: other.certificate, revokedAt: Self.at(1_000), reason: .lost, note: "", by: c.county)
        let unrelatedPublisher = try c.device(.hq, scopes: [TestPKI.root])
        publisherCerts.append(unrelatedPublisher.certificate)
        changes.append(try Change.control(author: unrelatedPublisher.signingKey, scope: TestPKI.root, seq: 1, prevHash: Change.zeroHash,
                                          hlc: Self.at(10_100), contentType: .revocation, priority: .urgent, payload: unrelated.canonicalBytes))
        let expected = Self.at(cutoffs.min()!)
        let ingestAt = Self.now + 20_000
        var sets: [[Revocation]] = []
        for _ in 0..<3 {
            let id = try c.device(.station, scopes: [TestPKI.station])
            let store = MemoryStore()
            var replica = try c.replicator(id, store: store, now: ingestAt)
            var pending = changes
            pending.shuffle(using: &rng)
            while !pending.isEmpty {
                let n = Int.random(in: 1...min(3, pending.count), using: &rng)
                let batch = Array(pending.prefix(n))
                pending.removeFirst(n)
                let report = try replica.ingest(batch, certificates: publisherCerts, now: ingestAt)
                #expect(report.outcomes.allSatisfy { $0 == .accepted }, "\(report.outcomes)")
                if Bool.random(using: &rng) {  // the process restarts; a new replicator restores from the store
                    replica = try c.replicator(id, store: store, now: ingestAt + TestPKI.day * UInt64.random(in: 0...400, using: &rng))
                }
            }
            #expect(replica.trust.revocation(of: deviceID.certificate)?.revokedAt == expected, "seed \(seed)")
            #expect(replica.trust.revocation(of: other.certificate)?.revokedAt == Self.at(1_000))
            replica = try c.replicator(id, store: store, now: ingestAt + 1_000 * TestPKI.day)
            #expect(replica.trust.revocation(of: deviceID.certificate)?.revokedAt == expected, "after a last restart, seed \(seed)")
            // A change between the earliest cut-off and any later one is refused everywhere.
            let between = try Change.control(author: deviceID.signingKey, scope: TestPKI.station, seq: 1, prevHash: Change.zeroHash,
                                             hlc: Self.at(cutoffs.min()! + 1), contentType: .receipt, priority: .low, payload: [0])
            guard case .rejected(.revoked, _) = try replica.ingest([between], certificates: [deviceID.certificate], now: ingestAt).outcomes[0] else {
                Issue.record("a change after the earliest cut-off was accepted, seed \(seed)")
                continue
            }
            sets.append(replica.trust.revocations.all)
        }
        #expect(Set(sets.map { $0.map(\.canonicalBytes) }).count == 1, "all replicas hold the same revocations")
        #expect(sets.first?.count == cutoffs.count + 1)
    }

    /// Attack case 33, rollback: a later revocation (a later cut-off, by the root or the county) never
    /// moves the cut-off back, whatever order they come in; replaying a held revocation changes nothing,
    /// and a restart restores the same cut-off.
    @Test func aLaterRevocationCannotRollTheCutoffBack() throws {
        var c = try CountyPKI()
        let thief = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        let hqID = try c.device(.hq, scopes: [TestPKI.root])
        let hq = try c.replicator(hqID)
        let early = try Revocation(certificate: thief.certificate, revokedAt: Self.at(1_000), reason: .stolen, note: "", by: c.county)
        let late = try Revocation(device: thief.id, serial: thief.certificate.serial, revokedAt: Self.at(50_000), reason: .other,
                                  note: "reinstated?", by: c.pki.hq)
        let c1 = try hq.writeControl(.revocation, payload: early.canonicalBytes, scope: TestPKI.root, now: Self.now + 2_000)
        let c2 = try hq.writeControl(.revocation, payload: late.canonicalBytes, scope: TestPKI.root, now: Self.now + 3_000)
        let stationID = try c.device(.station, scopes: [TestPKI.station])
        let store = MemoryStore()
        let station = try c.replicator(stationID, store: store)
        _ = try station.ingest([c1, c2], certificates: [hqID.certificate], now: Self.now + 4_000)
        #expect(station.trust.revocation(of: thief.certificate)?.revokedAt == Self.at(1_000))
        let replay = try station.ingest([c1], certificates: [hqID.certificate], now: Self.now + 5_000)
        #expect(replay.commit.duplicates == 1 && replay.revocationsLearned == 0)
        let restarted = try c.replicator(stationID, store: store, now: Self.now + 400 * TestPKI.day)
        #expect(restarted.trust.revocation(of: thief.certificate)?.revokedAt == Self.at(1_000))
        #expect(restarted.trust.revocations.count == 2)
    }

    /// Issue 12 item 5: a grant and a revocation signed by a county authority stay in force after a
    /// restart at a time when the county's certificate has expired (they are judged at signing time).
    @Test func grantsAndRevocationsSurviveTheirIssuersExpiry() throws {
        var c = try CountyPKI(validity: (TestPKI.now - 2 * TestPKI.day)...(TestPKI.now + TestPKI.day))
        let memberID = try c.device(.station, scopes: [TestPKI.station], by: c.county)
        let thief = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        let hqID = try c.device(.hq, scopes: [TestPKI.root])
        let hq = try c.replicator(hqID)
        let grant = try KeyGrant.issue(epochKey: c.pki.stationKey, members: [memberID.certificate], issuedAt: Self.now, by: c.county)
        let g = try hq.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: TestPKI.root, now: Self.now)
        let rev = try Revocation(certificate: thief.certificate, revokedAt: Self.at(1_000), reason: .lost, note: "", by: c.county)
        let r = try hq.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.root, now: Self.now + 2_000)
        let store = MemoryStore()
        let member = try c.replicator(memberID, store: store, withKey: false)
        let learned = try member.ingest([g, r], certificates: [hqID.certificate], now: Self.now + 3_000)
        #expect(learned.keysLearned == 1 && learned.revocationsLearned == 1)

        // Ten days later the county's certificate has expired; the node restarts.
        let later = Self.now + 10 * TestPKI.day
        let restarted = Replicator(identity: memberID, trust: c.trust, store: store)
        try restarted.restoreCertificates(now: later)
        #expect(try restarted.restoreControlState(now: later) == (keys: 1, revocations: 1))
        #expect(restarted.writingKey(for: TestPKI.station)?.epoch == 1)
        #expect(restarted.trust.revocation(of: thief.certificate)?.revokedAt == Self.at(1_000))
        // The same control changes, arriving only now at a fresh node, are accepted too: every node decides alike.
        let fresh = try c.replicator(try c.device(.station, scopes: [TestPKI.station]), withKey: false, now: later)
        #expect(try fresh.ingest([g, r], certificates: [hqID.certificate], now: later).outcomes == [.accepted, .accepted])
    }

    /// Attack case 35: what a revoked device wrote up to its cut-off is kept and flagged in the audit
    /// trail; what it wrote after is refused and not stored.
    @Test func aRevokedDevicesHistoryIsKeptUpToTheCutoffAndFlagged() throws {
        var c = try CountyPKI()
        let thiefID = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
        let thief = try c.replicator(thiefID)
        let honestID = try c.device(.backpack, scopes: [TestPKI.station])
        let honest = try c.replicator(honestID)
        let station = try c.replicator(try c.device(.station, scopes: [TestPKI.station]))
        let before = try thief.write([try Self.incident(thief, 1, at: 0)], scope: TestPKI.village, priority: .normal, now: Self.now)
        let fine = try honest.write([try Self.incident(honest, 2, at: 0)], scope: TestPKI.village, priority: .normal, now: Self.now)
        _ = try station.ingest([before, fine], certificates: [thiefID.certificate, honestID.certificate], now: Self.now + 100)
        let rev = try Revocation(certificate: thiefID.certificate, revokedAt: Self.at(1_000), reason: .stolen, note: "", by: c.county)
        _ = try station.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.station, now: Self.now + 2_000)
        let after = try thief.write([try Self.incident(thief, 3, at: 5_000)], scope: TestPKI.village, priority: .normal, now: Self.now + 5_000)
        let report = try station.ingest([after], certificates: [thiefID.certificate], now: Self.now + 6_000)
        guard case .rejected(.revoked, _) = report.outcomes[0] else {
            Issue.record("post-cutoff change accepted: \(report.outcomes)")
            return
        }
        #expect(try station.store.change(LogID(author: thiefID.id, scope: TestPKI.village), seq: 2) == nil, "not stored")
        #expect(try station.store.record(RecordID(ID128(high: 35, low: 3))) == nil)
        let kept = try station.auditTrail(of: RecordID(ID128(high: 35, low: 1)), now: Self.now + 7_000)
        #expect(kept.count == 1 && kept[0].verification == .accepted, "pre-cutoff record kept")
        #expect(kept[0].authorRevocation == rev, "and flagged: its author was revoked later")
        let clean = try station.auditTrail(of: RecordID(ID128(high: 35, low: 2)), now: Self.now + 7_000)
        #expect(clean.count == 1 && clean[0].authorRevocation == nil)
    }
}

/// A change a node stored before it learned a back-dated revocation of its author is refused by a peer
/// that knows the revocation, without cutting their sessions, and quarantined by the node once it learns
/// the revocation in the same session (attack case 35: post-cut-off changes are not accepted, and honest
/// nodes that carried one keep syncing).
@Suite struct RevokedBacklogTests {
    @Test func aChangeStoredBeforeItsRevocationDoesNotBreakSessions() throws {
        let now = TestPKI.now
        var pki = TestPKI()
        let thiefID = try pki.device(.backpack, scopes: [TestPKI.station])
        let thief = pki.replicator(thiefID)
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        // The thief writes at now + 5 s; the station stores it before any revocation is known.
        let x = try thief.write([try RevocationConvergenceTests.incident(thief, 7, at: 5_000)], scope: TestPKI.village, priority: .normal,
                                now: now + 5_000)
        #expect(try station.ingest([x], certificates: [thiefID.certificate], now: now + 6_000).outcomes == [.accepted])
        // HQ revokes it with a cut-off back-dated to now + 1 s.
        let rev = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial, revokedAt: HLCTimestamp(milliseconds: now + 1_000, counter: 0),
                                 reason: .stolen, note: "last check-in", by: pki.hq)
        _ = try hq.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.root, now: now + 7_000)
        var link = SessionTests.connect(station, hq)
        #expect(SessionTests.run(&link, now: now + 8_000), "the session finishes")
        #expect(try hq.store.change(LogID(author: thiefID.id, scope: TestPKI.village), seq: 1) == nil, "HQ did not store it")
        #expect(station.trust.revocation(of: thiefID.certificate) == rev, "the station learned the revocation")
        // The station's copy is quarantined when the revocation arrives (RevokedQuarantineTests): out of the
        // records and the holdings, kept for audit.
        #expect(try station.store.record(RecordID(ID128(high: 35, low: 7))) == nil)
        #expect(try station.store.quarantined().map(\.cause) == [.revoked])
        #expect(try station.store.holdings(of: LogID(author: thiefID.id, scope: TestPKI.village)).ranges.isEmpty)
        var again = SessionTests.connect(hq, station, seed: 2)
        #expect(SessionTests.run(&again, now: now + 10_000), "and the next session too")
    }
}
