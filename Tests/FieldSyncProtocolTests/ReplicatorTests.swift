import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

@Suite struct ReplicatorTests {
    static let now = TestPKI.now

    static func incident(_ r: Replicator, _ n: UInt64, priority: Incident.Priority = .high) throws -> RecordEdit {
        Incident.create(id: RecordID(ID128(high: 9, low: n)), scope: TestPKI.village, author: r.identity.id,
                        hlc: HLCTimestamp(milliseconds: now, counter: UInt16(n)), category: .dispute, priority: priority,
                        location: Location(latitude: 33.41, longitude: 104.95), summary: "incident \(n)",
                        reportedAt: Int64(now), reporter: "walk-in", notes: ["SECRET-\(n)"])
    }

    /// Backpack → relay (cannot read) → station and HQ (can read), by forwarding the stored bytes.
    @Test func blindRelayCarriesWhatMembersRead() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let relay = pki.replicator(try pki.device(.relay, scopes: [TestPKI.root]), withKey: false)
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let c = try bp.write([try Self.incident(bp, 1)], scope: TestPKI.village, priority: .high, now: Self.now)
        let r1 = try relay.ingest([c], certificates: [bp.identity.certificate], now: Self.now)
        #expect(r1.outcomes == [.accepted] && r1.heldSealed == 1 && r1.editsMerged == 0)
        #expect(try relay.store.records(RecordQuery()).isEmpty, "a relay materializes nothing")
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        let carried = try #require(try relay.store.change(log, seq: 1))
        #expect(!carried.bytes.contains(subsequence: Array("SECRET-1".utf8)), "the relay holds ciphertext only")
        let forwarded = try Change(canonicalBytes: carried.bytes)
        let r2 = try station.ingest([forwarded], certificates: [bp.identity.certificate], now: Self.now)
        #expect(r2.editsMerged == 1)
        let inc = try Incident(try #require(try station.store.record(RecordID(ID128(high: 9, low: 1)))))
        #expect(inc.summary == "incident 1" && inc.notes.map(\.text) == ["SECRET-1"])
    }

    @Test func tamperedAndUnknownChangesAreNotStored() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let c = try bp.write([try Self.incident(bp, 1)], scope: TestPKI.village, priority: .high, now: Self.now)
        var bytes = c.canonicalBytes
        bytes[bytes.count - 70] ^= 1  // inside the payload ciphertext
        let tampered = try Change(canonicalBytes: bytes)
        let r = try station.ingest([tampered], certificates: [bp.identity.certificate], now: Self.now)
        #expect(r.rejected == 1 && r.commit.inserted == 0)
        #expect(try station.store.status().changes == 0)
        let stranger = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let unknown = try stranger.ingest([c], now: Self.now)  // no certificate for the author
        #expect(unknown.outcomes == [.unknownAuthor] && unknown.commit.inserted == 0)
        #expect(try stranger.store.status().changes == 0)
    }

    /// `sealingRandomness` (the simulator's seeded generator) makes writes reproducible: two replicators
    /// of the same device with generators in the same state seal the same bytes, one by one and in
    /// groups; without one (nodes) sealing draws from libsodium and the bytes differ.
    @Test func sealingRandomnessMakesWritesReproducible() throws {
        var pki = TestPKI()
        let device = try pki.device(.station, scopes: [TestPKI.station])
        func written(seed: UInt64?) throws -> [[UInt8]] {
            let r = pki.replicator(device)
            r.sealingRandomness = seed.map { SplitMix64(seed: $0) }
            let one = try r.write([try Self.incident(r, 1)], scope: TestPKI.village, priority: .high, now: Self.now)
            let groups = try r.write(groups: [Replicator.WriteGroup(scope: TestPKI.village, priority: .normal, edits: [try Self.incident(r, 2)]),
                                              Replicator.WriteGroup(scope: TestPKI.village, priority: .low, edits: [try Self.incident(r, 3)])],
                                     now: Self.now + 1)
            return ([one] + groups).map(\.canonicalBytes)
        }
        #expect(try written(seed: 3) == written(seed: 3))
        #expect(try written(seed: 3) != written(seed: 4))
        #expect(try written(seed: nil) != written(seed: nil))
    }

    @Test func writingOutsideTheCertificateIsRefused() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let elsewhere = try Scope("longnan/cheng/station-101")
        var e = try Self.incident(bp, 1)
        e.scope = elsewhere
        #expect(throws: WriteError.self) { try bp.write([e], scope: elsewhere, priority: .high, now: Self.now) }
    }

    @Test func keyGrantArrivingLateOpensHeldChanges() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let newcomerID = try pki.device(.backpack, scopes: [TestPKI.station])
        let newcomer = pki.replicator(newcomerID, withKey: false)
        let hqNode = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let c = try bp.write([try Self.incident(bp, 1)], scope: TestPKI.village, priority: .normal, now: Self.now)
        let r1 = try newcomer.ingest([c], certificates: [bp.identity.certificate], now: Self.now)
        #expect(try r1.heldSealed == 1 && newcomer.store.records(RecordQuery()).isEmpty)
        let grant = try KeyGrant.issue(epochKey: pki.stationKey, members: [newcomerID.certificate], issuedAt: Self.now, by: pki.hq)
        let g = try hqNode.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: TestPKI.root, now: Self.now)
        let r2 = try newcomer.ingest([g], certificates: [hqNode.identity.certificate], now: Self.now)
        #expect(r2.keysLearned == 1 && r2.editsMerged == 1)
        #expect(try newcomer.store.records(RecordQuery()).count == 1)
    }

    @Test func revokedAuthorIsRefusedAfterTheCutoff() throws {
        var pki = TestPKI()
        let thiefID = try pki.device(.backpack, scopes: [TestPKI.station])
        let thief = pki.replicator(thiefID)
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let hqNode = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let before = try thief.write([try Self.incident(thief, 1)], scope: TestPKI.village, priority: .normal, now: Self.now)
        let rev = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial,
                                 revokedAt: HLCTimestamp(milliseconds: Self.now + 1_000, counter: 0), reason: .lost, note: "lost on patrol",
                                 by: pki.hq)
        let rc = try hqNode.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.root, now: Self.now + 2_000)
        let r1 = try station.ingest([rc], certificates: [hqNode.identity.certificate], now: Self.now + 2_000)
        #expect(r1.revocationsLearned == 1)
        let after = try thief.write([try Self.incident(thief, 2)], scope: TestPKI.village, priority: .normal, now: Self.now + 5_000)
        let r2 = try station.ingest([before, after], certificates: [thiefID.certificate], now: Self.now + 6_000)
        #expect(r2.outcomes[0] == .accepted, "changes from before the revocation are kept")
        guard case .rejected(.revoked, _) = r2.outcomes[1] else {
            Issue.record("post-revocation change accepted: \(r2.outcomes[1])")
            return
        }
    }

    @Test func aRestartRestoresGrantedKeysAndRevocationsFromTheStore() throws {
        var pki = TestPKI()
        let thiefID = try pki.device(.backpack, scopes: [TestPKI.station])
        let thief = pki.replicator(thiefID)
        let stationID = try pki.device(.station, scopes: [TestPKI.station])
        let store = MemoryStore()
        let station = pki.replicator(stationID, withKey: false, store: store)
        let hqNode = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        let grant = try KeyGrant.issue(epochKey: pki.stationKey, members: [stationID.certificate], issuedAt: Self.now, by: pki.hq)
        let g = try hqNode.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: TestPKI.root, now: Self.now)
        let rev = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial,
                                 revokedAt: HLCTimestamp(milliseconds: Self.now + 1_000, counter: 0), reason: .lost, note: "",
                                 by: pki.hq)
        let rc = try hqNode.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.root, now: Self.now + 2_000)
        let learned = try station.ingest([g, rc], certificates: [hqNode.identity.certificate], now: Self.now + 2_000)
        #expect(learned.keysLearned == 1 && learned.revocationsLearned == 1)
        #expect(try store.controlChanges().map(\.hash) == [g.id, rc.id])

        // The process restarts: a new replicator over the same store knows neither until it restores.
        let restarted = pki.replicator(stationID, withKey: false, store: store)
        #expect(restarted.writingKey(for: TestPKI.station) == nil)
        #expect(try restarted.restoreControlState(now: Self.now + 3_000) == (keys: 1, revocations: 1))
        #expect(restarted.writingKey(for: TestPKI.station)?.epoch == 1)
        #expect(try restarted.restoreControlState(now: Self.now + 3_000) == (keys: 0, revocations: 0), "idempotent")
        let after = try thief.write([try Self.incident(thief, 2)], scope: TestPKI.village, priority: .normal, now: Self.now + 5_000)
        let r = try restarted.ingest([after], certificates: [thiefID.certificate], now: Self.now + 6_000)
        guard case .rejected(.revoked, _) = r.outcomes[0] else {
            Issue.record("a revoked device's change was accepted after a restart: \(r.outcomes[0])")
            return
        }
    }

    @Test func auditTrailShowsWhoDidWhatWhenWithProof() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let c1 = try bp.write([try Self.incident(bp, 1)], scope: TestPKI.village, priority: .high, now: Self.now)
        _ = try station.ingest([c1], certificates: [bp.identity.certificate], now: Self.now)
        let id = RecordID(ID128(high: 9, low: 1))
        let rec = try #require(try station.store.record(id))
        let edit = rec.edit(author: station.identity.id, hlc: HLCTimestamp(milliseconds: Self.now + 60_000, counter: 0),
                            [try Incident(rec).advance(to: .dispatched), .add(field: Incident.Field.assignedUnits, element: "car-2")])
        _ = try station.write([edit], scope: TestPKI.village, priority: .high, now: Self.now + 60_000)
        let trail = try station.auditTrail(of: id, now: Self.now + 70_000)
        #expect(trail.map { $0.log.author } == [bp.identity.id, station.identity.id])
        #expect(trail.allSatisfy { $0.verification == .accepted })
        #expect(trail[0].author?.role == .backpack && trail[1].author?.role == .station)
        #expect(trail[1].actions?.count == 2)
        // The evidence verifies on its own, with public material only.
        let evidence = try Change(canonicalBytes: trail[1].signedChange)
        #expect(throws: Never.self) { try evidence.verify(authorCertificate: station.identity.certificate, trust: pki.trust, now: Self.now + 70_000) }
    }

    @Test func outOfOrderAndDuplicateDeliveryConverges() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var changes: [Change] = []
        for n in 1...6 {
            changes.append(try bp.write([try Self.incident(bp, UInt64(n))], scope: TestPKI.village, priority: .normal, now: Self.now + UInt64(n)))
        }
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        _ = try station.ingest([changes[5], changes[2]], certificates: [bp.identity.certificate], now: Self.now + 10)
        #expect(try station.store.holdings(of: log).frontier == 0 && station.store.records(RecordQuery()).count == 2,
                "urgent-first: merged before its predecessors, frontier waits")
        _ = try station.ingest(changes + changes, now: Self.now + 10)
        #expect(try station.store.holdings(of: log).frontier == 6)
        #expect(try station.store.records(RecordQuery()).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) }
                == bp.store.records(RecordQuery()).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) })
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        for i in 0...(count - s.count) where Array(self[i..<(i + s.count)]) == s { return true }
        return false
    }
}
