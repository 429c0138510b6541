import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncStore
import Foundation
import GRDB
import Testing

/// The overdue rate by arrival (issue 15: "feedback that reached this node after its deadline"): a feedback
/// written in time on a backpack node that reaches HQ by sync after the deadline is overdue at HQ, and one
/// that reaches it in time is not; a store migrated from schema version 7 (no arrival times) falls back to
/// the write time and says so. Times come from `now` parameters, never from sleeping.
@Suite struct OverdueArrivalTests {
    typealias F = ReportFixtures

    /// A backpack unit reports an incident at 09:00 with its feedback due at 12:00 and gives the feedback at
    /// 11:00 (in time, on the unit); HQ (over `hqStore`) receives the unit's changes by sync at `arrival`.
    static func scenario(arrival: Int64, hqStore: any SyncStore = MemoryStore()) throws -> (hq: Replicator, unit: Replicator, incident: RecordID, f: ReportFixtures) {
        var f = ReportFixtures()
        let hq = try f.replicator(.hq, scopes: [F.root], label: "hq", store: hqStore)
        let unit = try f.replicator(.backpack, scopes: [F.wudu17], label: "bp1")
        let book = try RecordBook(replicator: unit, now: UInt64(F.dayStart))
        let d = F.dayStart, h = F.hour
        let id = try F.incident(book, at: d + 9 * h, priority: .high, summary: "road blocked", deadline: d + 12 * h).id
        book.now = UInt64(d + 11 * h)
        _ = try book.giveFeedback(id.description, "cleared at 10:50")
        try F.deliver(unit, to: hq, now: arrival)
        return (hq, unit, id, f)
    }

    static var reportTime: Int64 { F.dayStart + 31 * F.hour }

    @Test func feedbackWrittenInTimeThatReachesHQAfterTheDeadlineIsOverdueThere() throws {
        let d = F.dayStart, h = F.hour
        let (hq, unit, id, _) = try Self.scenario(arrival: d + 13 * h)  // by sync at 13:00, an hour past the deadline
        let r = try DailyReport.make(try RecordBook(replicator: hq, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
        #expect(r.total.feedbackDue == 1 && r.total.feedbackOverdue == 1 && r.total.overdueRate == 1)
        try #require(r.overdue.map(\.id) == [id.description])
        #expect(r.overdue[0].feedbackAt == "2026-12-03T11:00:00+08:00", "written in time")
        #expect(r.overdue[0].feedbackArrivedAt == "2026-12-03T13:00:00+08:00" && r.overdue[0].lateMinutes == 60, "reached HQ an hour late")
        #expect(r.total.feedbackJudgedByWriteTime == 0)
        let log = try #require(r.dutyLogs.first)
        #expect(log.entries.first { $0.kind == "feedback" }?.detail?.hasPrefix("LATE: ") == true)
        #expect(r.html().contains("reached this node after its deadline") && r.csv().contains("figure,all,,2026-12-03,,feedbackOverdue,1,"))
        // On the unit, where it was written (and so arrived) at 11:00, the same feedback is in time.
        let own = try DailyReport.make(try RecordBook(replicator: unit, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
        #expect(own.total.feedbackDue == 1 && own.total.feedbackOverdue == 0)
    }

    @Test func feedbackThatReachesHQBeforeTheDeadlineIsInTime() throws {
        let d = F.dayStart, h = F.hour
        let (hq, _, _, _) = try Self.scenario(arrival: d + 11 * h + 30 * F.minute)
        let r = try DailyReport.make(try RecordBook(replicator: hq, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
        #expect(r.total.feedbackDue == 1 && r.total.feedbackOverdue == 0 && r.total.overdueRate == 0 && r.overdue.isEmpty)
        // A second copy arriving later (another peer, after the deadline) does not move the first arrival.
        let again = try Self.scenario(arrival: d + 11 * h + 30 * F.minute)
        try F.deliver(again.unit, to: again.hq, now: d + 20 * h)
        let r2 = try DailyReport.make(try RecordBook(replicator: again.hq, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
        #expect(r2.total.feedbackOverdue == 0)
    }

    /// A store written before arrival times were kept (schema version 7: the `arrived` column and its migration
    /// taken out again, as such a store's file is) opens, is migrated, and reports by the write time, saying so.
    @Test func aStoreMigratedFromSchema7ReportsByWriteTimeAndSaysSo() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fieldsync-overdue-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/hq.sqlite"
        let sealer = try StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 0x33, count: 32)))
        let d = F.dayStart, h = F.hour
        var identity: DeviceIdentity?, trust: TrustStore?, id: RecordID?
        do {
            let s = try Self.scenario(arrival: d + 13 * h, hqStore: try SQLiteStore(path: path, sealer: sealer))
            identity = s.hq.identity
            trust = s.f.trust
            id = s.incident
            let r = try DailyReport.make(try RecordBook(replicator: s.hq, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
            #expect(r.total.feedbackOverdue == 1, "with its arrival known, the feedback is late at HQ")
        }
        // Back to schema version 7, as a store written by the previous release.
        try DatabaseQueue(path: path).write { db in
            try db.execute(sql: "DROP INDEX records_kind_status_time")
            try db.execute(sql: "ALTER TABLE changes DROP COLUMN arrived")
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier IN ('v8-change-arrival', 'v9-record-status-index')")
        }
        func migrations() throws -> Int { try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM grdb_migrations") ?? 0 } }
        #expect(try migrations() == 7)
        let store = try SQLiteStore(path: path, sealer: sealer)
        #expect(try migrations() == SQLiteStore.schemaVersion && SQLiteStore.schemaVersion >= 8, "migrated on open")
        #expect(try store.arrivals(of: [id!])[id!]?.allSatisfy { $0.arrivedAt == nil } == true, "changes stored before: unknown")
        let hq = Replicator(identity: identity!, trust: trust!, store: store)
        let r = try DailyReport.make(try RecordBook(replicator: hq, now: UInt64(Self.reportTime)), day: F.day, now: Self.reportTime)
        #expect(r.total.feedbackDue == 1 && r.total.feedbackJudgedByWriteTime == 1)
        #expect(r.total.feedbackOverdue == 0, "judged by its write time (11:00), before the 12:00 deadline")
        #expect(r.html().contains("judged by the time they were written instead"))
        #expect(r.csv().contains("figure,all,,2026-12-03,,feedbackJudgedByWriteTime,1,"))
    }
}
