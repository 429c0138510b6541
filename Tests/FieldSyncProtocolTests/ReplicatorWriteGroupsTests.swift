import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// `Replicator.write(groups:now:)` (bulk import: several changes, one atomic commit) and the clock
/// helpers a short-lived process (the CLI) needs: `restoreClock()` and `observe(_:now:)`.
@Suite struct ReplicatorWriteGroupsTests {
    static let now = TestPKI.now

    static func incident(_ r: Replicator, _ n: UInt64, scope: Scope = TestPKI.village, hlc: HLCTimestamp? = nil) -> RecordEdit {
        Incident.create(id: RecordID(ID128(high: 7, low: n)), scope: scope, author: r.identity.id,
                        hlc: hlc ?? HLCTimestamp(milliseconds: now, counter: 0), category: .fire, priority: .normal,
                        location: Location(latitude: 33.41, longitude: 104.95), summary: "incident \(n)",
                        reportedAt: Int64(now), reporter: "import")
    }

    @Test func groupsBecomeChainedChangesInOneCommit() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let changes = try bp.write(groups: [
            .init(scope: TestPKI.village, priority: .urgent, edits: [Self.incident(bp, 1), Self.incident(bp, 2)]),
            .init(scope: TestPKI.village, priority: .normal, edits: [Self.incident(bp, 3)]),
            .init(scope: TestPKI.station, priority: .normal, edits: [Self.incident(bp, 4, scope: TestPKI.station)]),
        ], now: Self.now)
        #expect(changes.map(\.header.seq) == [1, 2, 1])
        #expect(changes[1].header.prevHash == changes[0].id, "the second change of a log chains to the first")
        #expect(changes.map(\.header.priority) == [.urgent, .normal, .normal])
        #expect(changes[0].header.hlc < changes[1].header.hlc && changes[1].header.hlc < changes[2].header.hlc)
        #expect(try bp.store.status().changes == 3 && bp.store.records(RecordQuery()).count == 4)
        // The log continues after the batch.
        let next = try bp.write([Self.incident(bp, 5, hlc: HLCTimestamp(milliseconds: Self.now, counter: 9))], scope: TestPKI.village,
                                priority: .low, now: Self.now)
        #expect(next.header.seq == 3 && next.header.prevHash == changes[1].id)
    }

    @Test func oneBadGroupWritesNothing() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let elsewhere = try Scope("longnan/cheng/station-101")
        let before = bp.clock
        #expect(throws: WriteError.self) {
            try bp.write(groups: [.init(scope: TestPKI.village, priority: .normal, edits: [Self.incident(bp, 1)]),
                                  .init(scope: elsewhere, priority: .normal, edits: [Self.incident(bp, 2, scope: elsewhere)])],
                         now: Self.now)
        }
        var invalid = Self.incident(bp, 3)
        invalid.actions.append(.set(field: Incident.Field.summary, value: .string(String(repeating: "x", count: 600))))
        #expect(throws: RecordError.self) {
            try bp.write(groups: [.init(scope: TestPKI.village, priority: .normal, edits: [Self.incident(bp, 1)]),
                                  .init(scope: TestPKI.village, priority: .normal, edits: [invalid])], now: Self.now)
        }
        #expect(try bp.store.status().changes == 0 && bp.store.records(RecordQuery()).isEmpty)
        #expect(bp.clock == before, "a refused batch leaves the clock alone")
    }

    @Test func restoredClockOrdersAfterOwnWritesWhenTheWallClockWentBack() throws {
        var pki = TestPKI()
        let id = try pki.device(.backpack, scopes: [TestPKI.station])
        let store = MemoryStore()
        let first = pki.replicator(id, store: store)
        let c1 = try first.write([Self.incident(first, 1)], scope: TestPKI.village, priority: .normal, now: Self.now)
        let earlier = Self.now - 90_000  // the wall clock went back 90 s (within the 5 min skew peers accept)

        // A new process on the same store: without restoring, its next write would order before c1.
        let fresh = pki.replicator(id, store: store)
        var naive = fresh.clock
        #expect(try naive.now(wall: earlier) < c1.header.hlc)
        try fresh.restoreClock()
        var edit = Self.incident(fresh, 1)
        edit.creates = false
        edit.actions = [.set(field: Incident.Field.summary, value: .string("corrected"))]
        var clock = fresh.clock
        edit.hlc = try clock.now(wall: earlier)
        let c2 = try fresh.write([edit], scope: TestPKI.village, priority: .normal, now: earlier)
        #expect(c2.header.hlc > c1.header.hlc && edit.hlc == c2.header.hlc)
        let record = try #require(try store.record(RecordID(ID128(high: 7, low: 1))))
        #expect(try Incident(record).summary == "corrected", "the later edit wins last-writer-wins")
    }

    @Test func observeAdoptsWhatWasSeenWithinTheDriftBound() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let ahead = HLCTimestamp(milliseconds: Self.now + 2_000, counter: 5)  // another device's clock, 2 s ahead
        #expect(bp.observe(ahead, now: Self.now))
        var clock = bp.clock
        #expect(try clock.now(wall: Self.now) > ahead)
        let before = bp.clock
        let farAhead = HLCTimestamp(milliseconds: Self.now + 3_600_000, counter: 0)
        #expect(!bp.observe(farAhead, now: Self.now) && bp.clock == before)
    }
}
