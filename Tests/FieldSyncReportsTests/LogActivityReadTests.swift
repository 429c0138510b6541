import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncStore
import Foundation
import Testing

/// `LogActivity` (each log's newest change and HQ's receipt: the freshness the map colours stations by, and the
/// units page) reads a store once, not twice per log. A year's store at HQ holds about 10,000 logs; asked log by
/// log (`changeKeys` of its last seq, then `receipted`) the map spent 1.67 s of its node's loop on a 0.01-scale
/// store in a release build (docs/command-center.md, "Performance").
@Suite struct LogActivityReadTests {
    typealias F = ReportFixtures

    /// A store that forwards to `base` and counts the per-log reads and the one-read summaries.
    final class CountingStore: SyncStore {
        let base: any SyncStore
        var perLogReads = 0, summaries = 0
        init(_ base: any SyncStore) { self.base = base }

        func holdings() throws -> [LogID: HeldIntervals] { try base.holdings() }
        func holdings(of log: LogID) throws -> HeldIntervals { try base.holdings(of: log) }
        func orderedLogs() throws -> [LogID] { try base.orderedLogs() }
        func logHoldings(_ log: LogID) throws -> LogHoldings? { try base.logHoldings(log) }
        func change(_ log: LogID, seq: UInt64) throws -> StoredChange? { try base.change(log, seq: seq) }
        func hash(_ log: LogID, seq: UInt64) throws -> [UInt8]? { try base.hash(log, seq: seq) }
        func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange] { try base.changes(log, in: seqs) }
        func changeKeys(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChangeKey] {
            perLogReads += 1
            return try base.changeKeys(log, in: seqs)
        }
        func commit(_ batch: CommitBatch) throws -> CommitReport { try base.commit(batch) }
        func record(_ id: RecordID) throws -> Record? { try base.record(id) }
        func heldRecordIDs(_ ids: [RecordID]) throws -> Set<RecordID> { try base.heldRecordIDs(ids) }
        func records(_ query: RecordQuery) throws -> [Record] { try base.records(query) }
        func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID] { try base.recordIDs(in: range) }
        func history(of id: RecordID) throws -> [StoredChange] { try base.history(of: id) }
        func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]] { try base.arrivals(of: records) }
        func unopened(in scope: Scope?) throws -> [StoredChange] { try base.unopened(in: scope) }
        func controlChanges() throws -> [StoredChange] { try base.controlChanges() }
        func forks() throws -> [ForkEvidence] { try base.forks() }
        func forks(of log: LogID) throws -> [ForkEvidence] { try base.forks(of: log) }
        func receipted(_ log: LogID) throws -> UInt64 {
            perLogReads += 1
            return try base.receipted(log)
        }
        func logSummaries() throws -> [LogSummary] {
            summaries += 1
            return try base.logSummaries()
        }
        func certificates() throws -> [Certificate] { try base.certificates() }
        func status() throws -> StoreStatus { try base.status() }
        func quarantined() throws -> [QuarantinedChange] { try base.quarantined() }
        func changes(by author: DeviceID, after hlc: HLCTimestamp) throws -> [StoredChange] { try base.changes(by: author, after: hlc) }
    }

    /// One log's activity, as compared here.
    struct Row: Equatable {
        var log: LogID, held: UInt64, newestSeq: UInt64, newestAt: Int64?, receipted: UInt64, unreceipted: UInt64
        init(_ a: LogActivity) {
            self.init(log: a.log, held: a.held, newestSeq: a.newestSeq, newestAt: a.newestAt, receipted: a.receipted, unreceipted: a.unreceipted)
        }
        init(log: LogID, held: UInt64, newestSeq: UInt64, newestAt: Int64?, receipted: UInt64, unreceipted: UInt64) {
            (self.log, self.held, self.newestSeq, self.newestAt, self.receipted, self.unreceipted) = (log, held, newestSeq, newestAt, receipted, unreceipted)
        }
    }

    @Test func logActivityIsOneReadOfASQLiteStoreAndAnswersAsLogByLog() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-logactivity-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sqlite = try SQLiteStore(path: dir + "/hq.sqlite", sealer: try StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 7, count: 32))))
        let counting = CountingStore(sqlite)
        var f = ReportFixtures()
        let hq = try f.replicator(.hq, scopes: [F.root], label: "hq", store: counting)
        // Three units, logs in a station and in its villages, written at different hours.
        var units: [Replicator] = []
        for (k, scope) in [F.wudu17, try Scope("longnan/wudu/station-017/village-0003"), F.cheng50].enumerated() {
            let unit = try f.replicator(.backpack, scopes: [scope.segments.count > 3 ? F.wudu17 : scope], label: "bp\(k)")
            let book = try RecordBook(replicator: unit, now: UInt64(F.dayStart))
            for i in 0...k { _ = try F.incident(book, at: F.dayStart + Int64(k * 3 + i) * F.hour, scope: scope, summary: "u\(k) \(i)") }
            units.append(unit)
        }
        for unit in units { try F.deliver(unit, to: hq) }
        let first = try #require(try sqlite.orderedLogs().first)
        _ = try sqlite.commit(CommitBatch(receipts: [first: 1]))
        // What asking log by log gives (the protocol's default, straight from the SQLite store).
        var expected: [Row] = []
        for (log, held) in try sqlite.holdings().sorted(by: { $0.key < $1.key }) {
            let top = try #require(held.ranges.last?.upperBound)
            let at = try sqlite.changeKeys(log, in: top...top).first.map { Int64(clamping: $0.hlc.milliseconds) }
            let receipted = try sqlite.receipted(log)
            var above: UInt64 = 0
            for r in held.ranges where r.upperBound > receipted { above += r.upperBound - max(r.lowerBound, receipted + 1) + 1 }
            expected.append(Row(log: log, held: held.count, newestSeq: top, newestAt: at, receipted: receipted, unreceipted: above))
        }
        #expect(expected.count >= 3 && expected.contains { $0.receipted == 1 } && expected.allSatisfy { $0.newestAt != nil })
        counting.perLogReads = 0
        let activity = try LogActivity.read(counting)
        #expect(activity.map(Row.init) == expected)
        #expect(counting.perLogReads == 0, "\(counting.perLogReads) reads log by log")
        #expect(counting.summaries == 1)
        // A memory store answers the same through the protocol's default.
        let memory = MemoryStore()
        for log in try sqlite.orderedLogs() {
            for r in try sqlite.holdings(of: log).ranges { _ = try memory.commit(CommitBatch(changes: try sqlite.changes(log, in: r))) }
        }
        _ = try memory.commit(CommitBatch(receipts: [first: 1]))
        #expect(try LogActivity.read(memory).map(Row.init) == expected)
    }
}
