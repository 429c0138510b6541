import FieldSyncCore
import Testing
@testable import FieldSyncCrypto
@testable import FieldSyncProtocol

/// Attack case 35, the half that was missing: a change by a device dated after its revocation's cut-off
/// that a node stored *before* it learned the revocation is quarantined when the revocation arrives:
/// out of the records (rebuilt from what remains), out of the holdings (not offered), kept for audit,
/// and the same record state results whatever the arrival order.
@Suite struct RevokedQuarantineTests {
    static let now = TestPKI.now
    static let ingestAt = now + 20_000
    static func at(_ ms: UInt64) -> HLCTimestamp { HLCTimestamp(milliseconds: now + ms, counter: 0) }
    static let shared = RecordID(ID128(high: 0x35, low: 1))  // created by the honest device, edited by the thief after the cut-off
    static let early = RecordID(ID128(high: 0x35, low: 2))   // created by the thief before the cut-off, noted after it
    static let late = RecordID(ID128(high: 0x35, low: 3))    // created by the thief after the cut-off

    /// The changes of the scenario: an honest record, the thief's pre-cutoff record, two post-cutoff
    /// changes (one editing the honest record and creating another, one adding a note to its own early
    /// record), and an HQ revocation with a cut-off between them.
    struct Scenario {
        var c: CountyPKI
        let thiefID: DeviceIdentity
        let honestID: DeviceIdentity
        let hqID: DeviceIdentity
        let honest: Change, pre: Change, post1: Change, post2: Change, revocation: Change
        let revocationValue: Revocation
        var certificates: [Certificate] { [thiefID.certificate, honestID.certificate, hqID.certificate] }
        var all: [Change] { [honest, pre, post1, post2, revocation] }
        var thiefLog: LogID { LogID(author: thiefID.id, scope: TestPKI.village) }

        init() throws {
            c = try CountyPKI()
            thiefID = try c.device(.backpack, scopes: [TestPKI.station], by: c.county)
            honestID = try c.device(.backpack, scopes: [TestPKI.station])
            hqID = try c.device(.hq, scopes: [TestPKI.root])
            let thief = try c.replicator(thiefID), honestR = try c.replicator(honestID), hq = try c.replicator(hqID)
            func create(_ r: Replicator, _ id: RecordID, _ ms: UInt64, _ summary: String) -> RecordEdit {
                Incident.create(id: id, scope: TestPKI.village, author: r.identity.id, hlc: RevokedQuarantineTests.at(ms), category: .dispute,
                                priority: .normal, location: Location(latitude: 33.41, longitude: 104.95), summary: summary,
                                reportedAt: Int64(RevokedQuarantineTests.now), reporter: "walk-in")
            }
            honest = try honestR.write([create(honestR, RevokedQuarantineTests.shared, 0, "honest report")], scope: TestPKI.village,
                                       priority: .normal, now: RevokedQuarantineTests.now)
            pre = try thief.write([create(thief, RevokedQuarantineTests.early, 500, "thief before the cut-off")], scope: TestPKI.village,
                                  priority: .normal, now: RevokedQuarantineTests.now + 500)
            _ = try thief.ingest([honest], certificates: [honestID.certificate], now: RevokedQuarantineTests.now + 600)
            let sharedRecord = try #require(try thief.store.record(RevokedQuarantineTests.shared))
            let earlyRecord = try #require(try thief.store.record(RevokedQuarantineTests.early))
            post1 = try thief.write([sharedRecord.edit(author: thiefID.id, hlc: RevokedQuarantineTests.at(5_000),
                                                       [.set(field: Incident.Field.summary, value: .string("thief rewrote this"))]),
                                     create(thief, RevokedQuarantineTests.late, 5_000, "thief after the cut-off")],
                                    scope: TestPKI.village, priority: .normal, now: RevokedQuarantineTests.now + 5_000)
            post2 = try thief.write([earlyRecord.edit(author: thiefID.id, hlc: RevokedQuarantineTests.at(6_000),
                                                      [.append(field: Incident.Field.notes, text: "thief note after the cut-off")])],
                                    scope: TestPKI.village, priority: .normal, now: RevokedQuarantineTests.now + 6_000)
            revocationValue = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial, revokedAt: RevokedQuarantineTests.at(1_000),
                                             reason: .stolen, note: "last check-in", by: c.pki.hq)
            revocation = try hq.writeControl(.revocation, payload: revocationValue.canonicalBytes, scope: TestPKI.root,
                                             now: RevokedQuarantineTests.now + 7_000)
        }

        /// The records a node ends with, by id (nil: not held).
        func records(_ r: Replicator) throws -> [RecordID: Record?] {
            [shared: try r.store.record(shared), early: try r.store.record(early), late: try r.store.record(late)]
        }
    }

    /// A node that stored the thief's post-cutoff changes takes them out when the revocation arrives:
    /// the honest record loses the thief's edit, the thief's early record loses its late note, the record
    /// the thief created after the cut-off is gone; the changes are kept (bytes intact) in the quarantine,
    /// not served and not offered; status counts them; the early change stays, flagged. The records equal
    /// those of a node that learned the revocation first.
    @Test func postCutoffChangesStoredBeforeTheRevocationAreQuarantinedWhenItArrives() throws {
        var s = try Scenario()
        let reference = try s.c.replicator(try s.c.device(.station, scopes: [TestPKI.station]))
        let first = try reference.ingest([s.revocation], certificates: s.certificates, now: Self.ingestAt)
        #expect(first.revocationsLearned == 1)
        let refused = try reference.ingest([s.honest, s.pre, s.post1, s.post2], certificates: s.certificates, now: Self.ingestAt)
        #expect(refused.outcomes.filter { if case .rejected(.revoked, _) = $0 { true } else { false } }.count == 2)

        let station = try s.c.replicator(try s.c.device(.station, scopes: [TestPKI.station]))
        let stored = try station.ingest([s.honest, s.pre, s.post1, s.post2], certificates: s.certificates, now: Self.ingestAt)
        #expect(stored.commit.inserted == 4)
        #expect(try station.store.record(Self.late) != nil && station.store.record(Self.shared).flatMap { try? Incident($0) }?.summary == "thief rewrote this",
                "before the revocation the thief's edits are merged")
        let learned = try station.ingest([s.revocation], certificates: s.certificates, now: Self.ingestAt)
        #expect(learned.revocationsLearned == 1)
        #expect(learned.quarantinedRevoked.changes == 2)
        #expect(learned.quarantinedRevoked.recordsRebuilt == 2 && learned.quarantinedRevoked.recordsRemoved == 1)

        #expect(try s.records(station) == s.records(reference), "same records as a node that knew the revocation first")
        #expect(try station.store.record(Self.late) == nil, "the record created after the cut-off is gone")
        #expect(try station.store.record(Self.shared).flatMap { try? Incident($0) }?.summary == "honest report")
        #expect(try station.store.record(Self.early).flatMap { try? Incident($0) }?.notes.count == 0)
        // Not served, not offered: the thief's log holds seq 1 only.
        #expect(try station.store.holdings(of: s.thiefLog).ranges == [1...1])
        #expect(try station.store.change(s.thiefLog, seq: 2) == nil && station.store.change(s.thiefLog, seq: 3) == nil)
        #expect(try station.store.holdings() == reference.store.holdings())
        // Kept for audit, intact.
        let q = try station.store.quarantined()
        #expect(q.map(\.cause) == [.revoked, .revoked] && q.map(\.seq) == [2, 3])
        #expect(q.map(\.bytes) == [s.post1.encodedBytes, s.post2.encodedBytes])
        #expect(try station.store.status().revokedQuarantined == 2 && station.store.status().quarantined == 0)
        // The pre-cutoff change stays merged and flagged.
        let trail = try station.auditTrail(of: Self.early, now: Self.ingestAt)
        #expect(trail.count == 1 && trail[0].verification == .accepted && trail[0].authorRevocation == s.revocationValue)
        // Idempotent: nothing more to do, also after a restart.
        #expect(try station.quarantineRevokedChanges(now: Self.ingestAt).changes == 0)
        // A peer that syncs with the station is not offered the quarantined changes.
        let peer = try s.c.replicator(try s.c.device(.station, scopes: [TestPKI.station]))
        var link = SessionTests.connect(peer, station)
        #expect(SessionTests.run(&link, now: Self.ingestAt + 1_000))
        #expect(try peer.store.holdings(of: s.thiefLog).ranges == [1...1])
        #expect(try s.records(peer) == s.records(reference))
    }

    /// Convergence: the five changes reach replicas in random orders and batches, with restarts (a
    /// replicator opened again over the same store) in between; every replica ends with the records and
    /// holdings of the node that learned the revocation first.
    @Test(arguments: 0..<16) func recordStateIsTheSameWhateverTheArrivalOrder(seed: UInt64) throws {
        var rng = SplitMix64(seed: 0x35_35 + seed)
        var s = try Scenario()
        let reference = try s.c.replicator(try s.c.device(.station, scopes: [TestPKI.station]))
        _ = try reference.ingest([s.revocation], certificates: s.certificates, now: Self.ingestAt)
        _ = try reference.ingest([s.honest, s.pre, s.post1, s.post2], certificates: s.certificates, now: Self.ingestAt)
        let expected = try s.records(reference)
        let id = try s.c.device(.station, scopes: [TestPKI.station])
        let store = MemoryStore()
        var replica = try s.c.replicator(id, store: store, now: Self.ingestAt)
        var pending = s.all
        pending.shuffle(using: &rng)
        while !pending.isEmpty {
            let n = Int.random(in: 1...min(3, pending.count), using: &rng)
            let batch = Array(pending.prefix(n))
            pending.removeFirst(n)
            _ = try replica.ingest(batch, certificates: s.certificates, now: Self.ingestAt)
            if Bool.random(using: &rng) { replica = try s.c.replicator(id, store: store, now: Self.ingestAt) }
        }
        #expect(try s.records(replica) == expected, "seed \(seed)")
        #expect(try store.holdings() == reference.store.holdings(), "seed \(seed)")
        #expect(try store.change(s.thiefLog, seq: 2) == nil && store.change(s.thiefLog, seq: 3) == nil)
    }
}
