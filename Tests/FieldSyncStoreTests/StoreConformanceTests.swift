import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import Testing
@testable import FieldSyncStore

/// One conformance suite, run against `MemoryStore` alone, `MemoryStore` with a `RecordInterner` (its hash index
/// keeps no entry per change and looks positions up in the interner instead), a simulator's `MemoryStore` (with
/// an interner, keeping no arrivals) and `SQLiteStore`.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible {
    case memory, internedMemory, simulatorMemory, sqlite
    var testDescription: String { rawValue }

    func make(limits: StoreLimits = StoreLimits(), path: String? = nil) throws -> any SyncStore {
        switch self {
        case .memory: return MemoryStore(limits: limits)
        case .internedMemory: return MemoryStore(limits: limits, recordInterner: RecordInterner())
        case .simulatorMemory: return MemoryStore(limits: limits, recordInterner: RecordInterner(), keepsArrivals: false)
        case .sqlite: return try SQLiteStore(path: path ?? TestFiles.tempPath(), sealer: TestKeys.sealer, limits: limits, checksChanges: false)
        }
    }
}

enum TestFiles {
    static func tempPath(_ name: String = "store") -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fieldsync-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("\(name).sqlite").path
    }
}

/// Builds chains of synthetic changes (random hashes, correct prev-hash links) and the edits they carry.
struct ChangeFactory {
    var rng = SplitMix64(seed: 4)
    var lastHash: [LogID: [UInt8]] = [:]
    var nextSeq: [LogID: UInt64] = [:]

    static let author = DeviceID(hex: "0a0b0c0d0e0f00010203040506070809")!
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")

    mutating func hash() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) } }

    mutating func next(_ log: LogID, priority: Priority = .normal, size: Int = 100, contentType: ContentType = .records) -> StoredChange {
        let seq = (nextSeq[log] ?? 0) + 1
        nextSeq[log] = seq
        let h = hash()
        let c = StoredChange(log: log, seq: seq, hash: h, prevHash: lastHash[log] ?? [UInt8](repeating: 0, count: 32),
                             hlc: HLCTimestamp(milliseconds: 1_000 + seq, counter: 0), contentType: contentType,
                             priority: priority, bytes: [UInt8](repeating: UInt8(seq % 251), count: size))
        lastHash[log] = h
        return c
    }

    static func log(_ scope: Scope = village, author: DeviceID = author) -> LogID { LogID(author: author, scope: scope) }
}

@Suite struct StoreConformanceTests {
    let log = ChangeFactory.log()

    @Test(arguments: StoreKind.allCases) func contiguousAppendAndLookup(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let cs = (0..<5).map { _ in f.next(log) }
        let r = try store.commit(CommitBatch(changes: cs))
        #expect(r.inserted == 5 && r.duplicates == 0)
        #expect(try store.holdings(of: log).frontier == 5)
        #expect(try store.changes(log, in: 2...4).map(\.seq) == [2, 3, 4])
        #expect(try store.change(log, seq: 3) == cs[2])
        #expect(try store.holdings()[log]?.ranges == [1...5])
        let again = try store.commit(CommitBatch(changes: cs))
        #expect(again.inserted == 0 && again.duplicates == 5, "replays are harmless")
        #expect(try store.status().changes == 5)
    }

    @Test(arguments: StoreKind.allCases) func outOfOrderIsHeldBackThenReleased(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let cs = (0..<4).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: [cs[3], cs[2]]))  // urgent ones first: 4 and 3 before 1 and 2
        #expect(try store.holdings(of: log).frontier == 0)
        #expect(try store.status().heldBack == 2)
        #expect(try store.holdings(of: log).gaps == [1...2])
        _ = try store.commit(CommitBatch(changes: [cs[0]]))
        #expect(try store.holdings(of: log).frontier == 1 && store.status().heldBack == 2)
        _ = try store.commit(CommitBatch(changes: [cs[1]]))
        #expect(try store.holdings(of: log).frontier == 4 && store.status().heldBack == 0)
    }

    /// Changes held out of order, with gaps, in several logs, opened in later batches: every read answers
    /// by seq (the in-memory store keeps a log's changes and opened marks in arrays from the lowest held
    /// seq, and finds a change by hash through a set of the held changes).
    @Test(arguments: StoreKind.allCases) func sparseSeqsAndLateOpenedMarks(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let other = ChangeFactory.log(ChangeFactory.station)
        let cs = (0..<9).map { _ in f.next(log) }
        let os = (0..<3).map { _ in f.next(other) }
        _ = try store.commit(CommitBatch(changes: [cs[8], cs[4]]))  // 9 and 5 first, then below them
        _ = try store.commit(CommitBatch(changes: [cs[1], os[2], cs[0]]))
        #expect(try store.changes(log, in: 1...9).map(\.seq) == [1, 2, 5, 9])
        #expect(try store.changes(log, in: 3...4).isEmpty && store.change(log, seq: 3) == nil && store.change(log, seq: 10) == nil)
        #expect(try store.hash(log, seq: 5) == cs[4].hash && store.hash(other, seq: 3) == os[2].hash)
        #expect(try Set(store.unopened(in: nil).map(\.hash)) == Set([os[2], cs[0], cs[1], cs[4], cs[8]].map(\.hash)))
        _ = try store.commit(CommitBatch(opened: [cs[1].hash, cs[8].hash, os[2].hash]))  // opened later (a key learned)
        #expect(try store.unopened(in: nil).map(\.hash) == [cs[0].hash, cs[4].hash])
        _ = try store.commit(CommitBatch(changes: [cs[2], cs[3]], opened: [cs[3].hash]))
        #expect(try store.unopened(in: nil).map(\.hash) == [cs[0].hash, cs[2].hash, cs[4].hash])
        #expect(try store.changes(log, in: 1...9).map(\.seq) == [1, 2, 3, 4, 5, 9])
        #expect(try store.status().changes == 7)
        let again = try store.commit(CommitBatch(changes: [cs[8], os[2], cs[2]]))
        #expect(again.inserted == 0 && again.duplicates == 3)
        #expect(try store.unopened(in: nil).map(\.hash) == [cs[0].hash, cs[2].hash, cs[4].hash], "replays keep the marks")
    }

    /// A change whose seq is far beyond the held ones (a signed change of a peer's long log, or a hostile
    /// one) costs one entry, and its neighbours are found around it.
    @Test(arguments: StoreKind.allCases) func farSeqsAreHeldWithoutFillingTheGap(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let first = f.next(log)
        let far: UInt64 = 1 << 40
        let farHash = f.hash(), belowHash = f.hash()
        func at(_ seq: UInt64, hash: [UInt8], prev: [UInt8]) -> StoredChange {
            StoredChange(log: log, seq: seq, hash: hash, prevHash: prev, hlc: HLCTimestamp(milliseconds: 5_000, counter: 0),
                         contentType: .records, priority: .normal, bytes: [UInt8](repeating: 7, count: 50))
        }
        let top = at(far, hash: farHash, prev: belowHash)
        let below = at(far - 1, hash: belowHash, prev: f.hash())
        _ = try store.commit(CommitBatch(changes: [first]))
        #expect(try store.commit(CommitBatch(changes: [top])).inserted == 1)
        #expect(try store.commit(CommitBatch(changes: [below], opened: [top.hash])).inserted == 1)
        #expect(try store.changes(log, in: (far - 5)...far).map(\.seq) == [far - 1, far])
        #expect(try store.changes(log, in: 1...far).map(\.seq) == [1, far - 1, far])
        #expect(try store.change(log, seq: far)?.hash == farHash && store.change(log, seq: far - 2) == nil)
        #expect(try store.unopened(in: nil).map(\.seq) == [1, far - 1])
        #expect(try store.status().changes == 3)
        #expect(try store.commit(CommitBatch(changes: [top, below, first])).duplicates == 3)
    }

    @Test(arguments: StoreKind.allCases) func forkIsRecordedAndFirstKept(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let c1 = f.next(log)
        var evil = c1
        evil.hash = f.hash()
        evil.bytes = [9, 9, 9]
        _ = try store.commit(CommitBatch(changes: [c1]))
        let r = try store.commit(CommitBatch(changes: [evil]))
        #expect(r.inserted == 0)
        let forks = try store.forks()
        #expect(forks.count == 1 && forks[0].kept == c1 && forks[0].conflicting == evil)
        #expect(try store.change(log, seq: 1) == c1)
    }

    @Test(arguments: StoreKind.allCases) func heldBackIsBounded(kind: StoreKind) throws {
        let store = try kind.make(limits: StoreLimits(maxHeldBack: 3))
        var f = ChangeFactory()
        let cs = (0..<10).map { _ in f.next(log) }
        let r = try store.commit(CommitBatch(changes: Array(cs[2...])))  // 8 changes behind a gap
        #expect(r.inserted == 3 && r.refusedHeldBack.count == 5)
        #expect(try store.status().heldBack == 3)
        let r2 = try store.commit(CommitBatch(changes: Array(cs[0...1])))  // contiguous ones are never refused for this
        #expect(try r2.inserted == 2 && store.holdings(of: log).frontier == 5)
    }

    @Test(arguments: StoreKind.allCases) func relayQuotaEvictsReceiptedFirstAndRefusesLeastUrgent(kind: StoreKind) throws {
        let store = try kind.make(limits: StoreLimits(quotaBytes: 1_000))
        var f = ChangeFactory()
        let other = ChangeFactory.log(ChangeFactory.station)
        let old = (0..<8).map { _ in f.next(log, priority: .low) }  // 800 bytes, low priority
        _ = try store.commit(CommitBatch(changes: old))
        // HQ receipts the first 5: those may go.
        _ = try store.commit(CommitBatch(receipts: [log: 5]))
        #expect(try store.receipted(log) == 5)
        let urgent = (0..<4).map { _ in f.next(other, priority: .urgent) }  // 400 bytes
        let r = try store.commit(CommitBatch(changes: urgent))
        #expect(r.inserted == 4 && r.evicted == 2 && r.refusedForQuota.isEmpty)
        #expect(try store.status().changeBytes <= 1_000)
        // Evicted changes stay in the holdings (HQ has them) but are no longer served.
        #expect(try store.holdings(of: log).frontier == 8)
        #expect(try store.changes(log, in: 1...8).count == 6)
        // Three receipted changes are left to evict; four newcomers need room for four.
        let more = [f.next(other, priority: .urgent), f.next(log, priority: .low), f.next(log, priority: .low), f.next(log, priority: .low)]
        let r2 = try store.commit(CommitBatch(changes: more))
        #expect(r2.evicted == 3 && r2.inserted == 3)
        #expect(r2.refusedForQuota == [more[3].hash], "the least urgent, newest change is refused, and reported")
        #expect(try store.holdings(of: log).frontier == 10, "a refused change is simply not held: it will come again")
        #expect(try store.status().changeBytes <= 1_000)
    }

    /// A relay store whose quota is full of changes HQ has not receipted refuses what comes in, except a change
    /// the node's trust store learned from as it verified it (`CommitBatch.trustLearned`: a revocation now in
    /// force in memory): refusing that one would make the node forget the revocation at its next start. A change
    /// merely typed as a revocation (not applied by the replicator) gets no exemption. Found by the swarm with
    /// relay quotas (`fieldsim swarm --infra`, seed 59: a relay box forgot a revocation over a crash).
    @Test(arguments: StoreKind.allCases) func aRevocationTheNodeLearnedIsKeptOverTheQuota(kind: StoreKind) throws {
        let store = try kind.make(limits: StoreLimits(quotaBytes: 1_000))
        var f = ChangeFactory()
        _ = try store.commit(CommitBatch(changes: (0..<10).map { _ in f.next(log, priority: .low) }))  // 1,000 bytes, none receipted
        let hq = ChangeFactory.log(ChangeFactory.station, author: DeviceID(hex: "ffeeddccbbaa99887766554433221100")!)
        let revocation = f.next(hq, priority: .urgent, size: 100, contentType: .revocation)
        let typedOnly = try store.commit(CommitBatch(changes: [revocation]))
        #expect(typedOnly.refusedForQuota == [revocation.hash])
        var batch = CommitBatch(changes: [revocation])
        batch.trustLearned = [revocation.hash]
        let learned = try store.commit(batch)
        #expect(learned.inserted == 1 && learned.refusedForQuota.isEmpty)
        #expect(try store.controlChanges().map(\.hash) == [revocation.hash])
    }

    @Test(arguments: StoreKind.allCases) func controlChangesAreListedAndNeverEvicted(kind: StoreKind) throws {
        let store = try kind.make(limits: StoreLimits(quotaBytes: 700))
        var f = ChangeFactory()
        let hq = ChangeFactory.log(ChangeFactory.station, author: DeviceID(hex: "ffeeddccbbaa99887766554433221100")!)
        let grant = f.next(hq, priority: .low, size: 100, contentType: .keyGrant)
        let records = (0..<3).map { _ in f.next(hq, priority: .low) }
        let revocation = f.next(hq, priority: .low, size: 100, contentType: .revocation)
        let receipt = f.next(hq, priority: .low, size: 100, contentType: .receipt)
        _ = try store.commit(CommitBatch(changes: [grant] + records + [revocation, receipt], receipts: [hq: 6]))
        #expect(try store.controlChanges().map(\.hash) == [grant.hash, revocation.hash], "grants and revocations, in HLC order")
        // Everything is receipted; a newcomer needs room: only the record changes may be evicted.
        let newcomer = f.next(ChangeFactory.log(), priority: .urgent, size: 400)
        let r = try store.commit(CommitBatch(changes: [newcomer]))
        #expect(r.inserted == 1 && r.evicted == 3)
        #expect(try store.controlChanges().count == 2)
        #expect(try store.changes(hq, in: 1...6).map(\.contentType) == [.keyGrant, .revocation, .receipt])
    }

    static func incident(_ n: UInt64, scope: Scope = ChangeFactory.village, status: Incident.Status = .reported,
                         reportedAt: Int64 = 1_700_000_000_000, note: String = "") -> RecordEdit {
        var e = Incident.create(
            id: RecordID(ID128(high: 7, low: n)), scope: scope, author: ChangeFactory.author,
            hlc: HLCTimestamp(milliseconds: 5_000 + n, counter: 0), category: .dispute, priority: .normal,
            location: Location(latitude: 33.4, longitude: 104.9), summary: "dispute \(n)", reportedAt: reportedAt,
            reporter: "r", notes: note.isEmpty ? [] : [note])
        if status != .reported { e.actions.append(Incident.statusAction(generation: 0, status)) }
        return e
    }

    @Test(arguments: StoreKind.allCases) func recordsMergeAndQuery(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let other = try Scope("longnan/cheng/station-101/village-2000")
        let specs: [(Scope, Incident.Status, Int64, String)] = [
            (ChangeFactory.village, .reported, 1_000, "river"), (ChangeFactory.village, .onScene, 2_000, ""),
            (ChangeFactory.village, .closed, 3_000, "bridge"), (other, .reported, 4_000, "river"),
            (try Scope("longnan/wudu/station-0170"), .reported, 5_000, ""),  // a sibling whose name extends ours
        ]
        var batch = CommitBatch()
        for (i, s) in specs.enumerated() {
            let c = f.next(ChangeFactory.log(s.0))
            batch.changes.append(c)
            batch.edits.append((Self.incident(UInt64(i), scope: s.0, status: s.1, reportedAt: s.2, note: s.3), c.hash))
            batch.opened.append(c.hash)
        }
        let r = try store.commit(batch)
        #expect(r.recordsChanged == 5)
        let open = try store.records(.openIncidents(in: ChangeFactory.station))
        #expect(open.map { $0.id.raw.low } == [1, 0], "open, in station-017 (not station-0170), newest first")
        #expect(try store.records(RecordQuery(kind: .incident, text: "river")).count == 2)
        #expect(try store.records(RecordQuery(since: 2_000, until: 4_000)).map { $0.id.raw.low } == [2, 1])
        #expect(try store.records(RecordQuery(kind: .visit)).isEmpty)
        #expect(try store.records(RecordQuery(limit: 2)).count == 2)
        // An update merges; history lists both changes.
        let id = RecordID(ID128(high: 7, low: 0))
        let upd = f.next(ChangeFactory.log(ChangeFactory.village))
        let rec = try #require(try store.record(id))
        _ = try store.commit(CommitBatch(changes: [upd], edits: [(rec.edit(author: ChangeFactory.author,
            hlc: HLCTimestamp(milliseconds: 9_000, counter: 0), [try Incident(rec).advance(to: .resolved)]), upd.hash)]))
        #expect(try Incident(try #require(try store.record(id))).status == .resolved)
        #expect(try store.history(of: id).map(\.hash) == [batch.changes[0].hash, upd.hash])
        #expect(try store.unopened(in: nil).map(\.hash) == [upd.hash])
    }

    /// Incidents of every status in three scopes and visits in two, over ten days: what the command center's
    /// overview asks at HQ (open incidents in every scope; visits counted by scope).
    static func openAndVisitBatch(_ f: inout ChangeFactory) throws -> CommitBatch {
        let scopes = [ChangeFactory.village, try Scope("longnan/wudu/station-018/village-0001"), try Scope("longnan/cheng/station-101/village-2000")]
        var batch = CommitBatch()
        for n in 0..<30 {
            let scope = scopes[n % 3]
            let c = f.next(ChangeFactory.log(scope))
            let status = Incident.Status(rawValue: UInt8(n % 5))!
            batch.changes.append(c)
            batch.edits.append((Self.incident(UInt64(100 + n), scope: scope, status: status, reportedAt: 1_000 + Int64(n * 7 % 10) * 86_400_000), c.hash))
        }
        for n in 0..<20 {
            let scope = scopes[n % 2]
            let c = f.next(ChangeFactory.log(scope))
            batch.changes.append(c)
            batch.edits.append((Visit.create(id: RecordID(ID128(high: 9, low: UInt64(n))), scope: scope, author: ChangeFactory.author,
                                             hlc: HLCTimestamp(milliseconds: 6_000 + UInt64(n * 37 % 20), counter: 0), subject: "household \(n)",
                                             visitor: "officer", visitType: .routine, visitedAt: 1_000 + Int64(n % 10) * 86_400_000), c.hash))
        }
        return batch
    }

    /// Open incidents in every scope (the query `records_kind_status_time` answers on SQLite) are what the
    /// query's own criteria select from every record, newest first; tallies per scope are the records the
    /// query returns, counted (the SQLite store counts them from its index without opening one).
    @Test(arguments: StoreKind.allCases) func openInEveryScopeAndTalliesMatchTheRecords(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        _ = try store.commit(try Self.openAndVisitBatch(&f))
        let every = try store.records(RecordQuery(includeDeleted: true))
        #expect(every.count == 50)
        func expected(_ q: RecordQuery) -> [RecordID] {
            every.map { ($0, RecordIndexEntry($0)) }.filter { q.matches($0.0, index: $0.1) }
                .sorted { ($0.1.eventTime ?? .min, $0.0.id) > ($1.1.eventTime ?? .min, $1.0.id) }.map(\.0.id)
        }
        for levels: ClosedRange<UInt8> in [0...2, 0...0, 3...3, 4...4, 0...4] {
            let q = RecordQuery(kind: .incident, statusLevels: levels)
            let got = try store.records(q).map(\.id)
            #expect(got == expected(q), "status \(levels)")
            #expect(!got.isEmpty)
            var limited = q
            limited.limit = 4
            #expect(try store.records(limited).map(\.id) == Array(expected(q).prefix(4)), "status \(levels), limit 4")
        }
        let week = RecordQuery(kind: .visit, since: 1_000 + 3 * 86_400_000, until: 1_000 + 10 * 86_400_000)
        let visits = try store.records(week)
        #expect(visits.count == 14)
        let tallies = try store.recordTallies(week)
        #expect(tallies == RecordTally.tally(visits))
        #expect(tallies.map(\.count) == [6, 8] && tallies.allSatisfy { $0.newest.raw != 0 })
        var limited = week
        limited.limit = 3
        #expect(try store.recordTallies(limited) == tallies, "limit is not applied")
        #expect(try store.recordTallies(RecordQuery(kind: .visit, scope: try Scope("longnan/cheng"), since: week.since, until: week.until)).isEmpty)
        var text = RecordQuery(kind: .visit, text: "household 1")
        #expect(try store.recordTallies(text) == RecordTally.tally(try store.records(text)))
        text.limit = 1
        #expect(try store.recordTallies(text).map(\.count).reduce(0, +) == 11, "household 1 and 10-19")
        let byScope = try store.recordTallies(RecordQuery(kind: .incident, scope: try Scope("longnan/wudu")))
        #expect(byScope.map(\.scope.path) == [ChangeFactory.village.path, "longnan/wudu/station-018/village-0001"])
        #expect(byScope.map(\.count) == [10, 10])
    }

    /// Each change keeps the `now` of the commit that first stored it (its arrival on this node): a replay
    /// later does not move it, a batch without `now` leaves it unknown; the stores answer the same, except a store
    /// that keeps no arrivals (a simulator's), which says none.
    @Test(arguments: StoreKind.allCases) func arrivalIsTheFirstCommitsNow(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let c1 = f.next(log), c2 = f.next(log), c3 = f.next(log)
        let id = RecordID(ID128(high: 7, low: 1))
        var first = CommitBatch(changes: [c1], edits: [(Self.incident(1), c1.hash)], opened: [c1.hash])
        first.now = 10_000
        _ = try store.commit(first)
        let rec = try #require(try store.record(id))
        let update = rec.edit(author: ChangeFactory.author, hlc: HLCTimestamp(milliseconds: 9_000, counter: 0),
                              [try Incident(rec).advance(to: .dispatched)])
        var second = CommitBatch(changes: [c1, c2], edits: [(Self.incident(1), c1.hash), (update, c2.hash)], opened: [c1.hash, c2.hash])
        second.now = 20_000  // c1 again (a replay from another peer): it arrived at 10,000
        let r = try store.commit(second)
        #expect(r.inserted == 1 && r.duplicates == 1)
        let later = rec.edit(author: ChangeFactory.author, hlc: HLCTimestamp(milliseconds: 9_500, counter: 0),
                             [try Incident(rec).advance(to: .onScene)])
        _ = try store.commit(CommitBatch(changes: [c3], edits: [(later, c3.hash)], opened: [c3.hash]))  // no `now`: unknown
        let arrivals = try store.arrivals(of: [id, RecordID(ID128(high: 7, low: 99))])
        #expect(arrivals.keys.sorted() == [id], "a record with no held change is absent")
        let kept = kind != .simulatorMemory
        #expect(arrivals[id] == [ChangeArrival(log: log, seq: 1, hlc: c1.hlc, arrivedAt: kept ? 10_000 : nil),
                                 ChangeArrival(log: log, seq: 2, hlc: c2.hlc, arrivedAt: kept ? 20_000 : nil),
                                 ChangeArrival(log: log, seq: 3, hlc: c3.hlc, arrivedAt: nil)], "in HLC order, as history(of:)")
        #expect(try store.history(of: id).map(\.seq) == arrivals[id]!.map(\.seq))
    }

    @Test(arguments: StoreKind.allCases) func batchIsAtomic(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let c1 = f.next(log), c2 = f.next(log)
        var bad = Self.incident(1)
        _ = try store.commit(CommitBatch(changes: [c1], edits: [(bad, c1.hash)]))
        bad.kind = .visit  // same record id, another kind: a verifier bug; the store refuses the batch
        #expect(throws: StoreError.self) { try store.commit(CommitBatch(changes: [c2], edits: [(bad, c2.hash)])) }
        #expect(try store.holdings(of: log).frontier == 1, "nothing of the failed batch is applied")
        #expect(try store.change(log, seq: 2) == nil)
    }
}

/// The hash chain and fork evidence at commit (Protocols/sync.md, Batches; issue 12 item 3), both stores.
@Suite struct StoreChainTests {
    let log = ChangeFactory.log()

    @Test(arguments: StoreKind.allCases) func prevHashMismatchIsRefusedAndRecorded(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let cs = (0..<3).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: Array(cs[0...1])))
        var bad = cs[2]
        bad.prevHash = f.hash()  // names a predecessor this store does not hold at seq 2
        let r = try store.commit(CommitBatch(changes: [bad]))
        #expect(r.inserted == 0 && r.refusedForked == [bad.hash] && r.forksRecorded == 1)
        #expect(try store.change(log, seq: 3) == nil && store.holdings(of: log).frontier == 2)
        let forks = try store.forks()
        #expect(forks.count == 1 && forks[0].kept == cs[1] && forks[0].conflicting == bad && forks[0].seq == 2)
        #expect(try store.status().forks == 1 && store.forks(of: log) == forks)
        // The right change still goes in.
        #expect(try store.commit(CommitBatch(changes: [cs[2]])).inserted == 1)
    }

    @Test(arguments: StoreKind.allCases) func successorMismatchIsRefusedAndRecorded(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let cs = (0..<3).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: [cs[0], cs[2]]))  // a gap at 2
        var other = cs[1]
        other.hash = f.hash()  // a change at 2 that seq 3 does not follow
        let r = try store.commit(CommitBatch(changes: [other]))
        #expect(r.inserted == 0 && r.refusedForked == [other.hash])
        #expect(try store.forks().map(\.conflicting) == [other])
        #expect(try store.commit(CommitBatch(changes: [cs[1]])).inserted == 1)
        #expect(try store.holdings(of: log).frontier == 3)
    }

    @Test(arguments: StoreKind.allCases) func aRefusedBranchTakesItsDescendantsAndForkedLogsTakeNothingUnlinked(kind: StoreKind) throws {
        let store = try kind.make()
        var f = ChangeFactory()
        let main = (0..<3).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: main))
        // Another branch from seq 2: 2', 3', 4', and 6' behind a gap.
        var g = ChangeFactory(rng: SplitMix64(seed: 99))
        g.lastHash[log] = main[0].hash
        g.nextSeq[log] = 1
        let branch = (0..<5).map { _ in g.next(log) }
        let r = try store.commit(CommitBatch(changes: [branch[0], branch[1], branch[2], branch[4]]))
        #expect(r.inserted == 0 && r.refusedForked.count == 4)
        #expect(r.forksRecorded == 1, "one proof (2 vs 2'); the descendants are refused without more evidence")
        #expect(try store.holdings(of: log) == HeldIntervals([1...3]))
        // In the forked log, a change whose predecessor is not held is refused until it is.
        let more = (0..<2).map { _ in f.next(log) }
        #expect(try store.commit(CommitBatch(changes: [more[1]])).refusedForked == [more[1].hash])
        #expect(try store.commit(CommitBatch(changes: more)).inserted == 2)
    }

    /// Proofs survive a restart, and the v4 migration's index serves the per-log lookup.
    @Test func sqliteForkProofsSurviveReopen() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let cs = (0..<2).map { _ in f.next(log) }
        var bad = cs[1]
        bad.prevHash = f.hash()
        do {
            let store = try StoreKind.sqlite.make(path: path)
            _ = try store.commit(CommitBatch(changes: [cs[0]]))
            #expect(try store.commit(CommitBatch(changes: [bad])).forksRecorded == 1)
        }
        let reopened = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(try reopened.forks(of: log).map(\.conflicting) == [bad] && reopened.status().forks == 1)
        #expect(try reopened.queryPlanForksOfLog().contains { $0.contains("forks_log") })
        // The forked log now takes no change it cannot link to a held predecessor.
        #expect(try reopened.commit(CommitBatch(changes: [f.next(log)])).refusedForked.count == 1)
    }

    @Test(arguments: StoreKind.allCases) func forkEvidenceIsRecordedOnceAndBoundedPerLog(kind: StoreKind) throws {
        let store = try kind.make(limits: StoreLimits(maxForkProofsPerLog: 2))
        var f = ChangeFactory()
        let c1 = f.next(log)
        _ = try store.commit(CommitBatch(changes: [c1]))
        var others: [StoredChange] = []
        for i in 0..<4 {
            var o = c1
            o.hash = f.hash()
            o.bytes = [UInt8(i)]
            others.append(o)
        }
        #expect(try store.commit(CommitBatch(changes: [others[0]])).forksRecorded == 1)
        #expect(try store.commit(CommitBatch(changes: [others[0]])).forksRecorded == 0, "the same fork again")
        // The same pair from a peer's proof, roles swapped: still one.
        #expect(try store.commit(CommitBatch(forks: [ForkEvidence(kept: others[0], conflicting: c1)])).forksRecorded == 0)
        #expect(try store.commit(CommitBatch(changes: [others[1], others[2], others[3]])).forksRecorded == 1)
        #expect(try store.forks().count == 2 && store.status().forks == 2)
        #expect(try store.change(log, seq: 1) == c1, "the first change held is kept")
    }
}
