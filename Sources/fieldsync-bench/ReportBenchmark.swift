// `report-daily`: the daily report (FieldSyncReports) over a store of 1,000,000 changes shaped like a year
// of Longnan (about 520 incidents a day, each with a second change, and about 1,700 visits a day), against
// a plain indexed SQLite query of the same rows (the day's visits and the incidents of the day and its
// lookback, id and sealed bytes, no decryption) on the same file, in the same run.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncGeo
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncStore
import Foundation
import GRDB

func reportBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "report-daily", summary: "daily report over a 1,000,000-change store (a year of Longnan) vs a plain indexed SQLite query of its rows") { scale in
            try dailyReportBenchmark(changes: Int(1_000_000 * scale))
        },
    ]
}

/// The year the synthetic store covers starts here (2026-01-01, UTC+8).
let yearStart = try! ReportDay(parsing: "2026-01-01")

/// Builds (once, cached under /tmp) a store of about `changes` changes over 365 days.
func buildYearStore(changes: Int, path: String, sealer: StorageKeySealer) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    // Built under a temporary name and closed before it is moved into place: moving a store's files while its
    // connection is open lost the last commits (the connection kept writing its write-ahead log under the old
    // name: a 9,855-change store reopened with 5,681).
    let n = try buildYearStoreFile(changes: changes, path: path + ".tmp", sealer: sealer)
    try FileManager.default.moveItem(atPath: path + ".tmp", toPath: path)
    print("  built: \(n) changes")
}

private func buildYearStoreFile(changes: Int, path: String, sealer: StorageKeySealer) throws -> Int {
    let store = try SQLiteStore(path: path, sealer: sealer, syncMode: .normal, checksChanges: false)  // synthetic changes
    let geo = LongnanGeography.standard
    var rng = SeededRandom(seed: 15)
    var seqs: [LogID: UInt64] = [:]
    var lastHash: [LogID: [UInt8]] = [:]
    var batch = CommitBatch()
    let perDay = max(1, changes / 365)
    // Per day: incidents (two changes each) take 38%, visits 62% (520 x 2 and 1,700 of 2,740).
    let incidentsPerDay = max(1, perDay * 19 / 100), visitsPerDay = max(1, perDay - 2 * incidentsPerDay)
    var n = 0
    func add(_ edit: RecordEdit, author: DeviceID, at t: Int64, priority: Priority) throws {
        let log = LogID(author: author, scope: edit.scope)
        let seq = (seqs[log] ?? 0) + 1
        seqs[log] = seq
        let hash = (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.rng.next()) }
        let bytes = ChangeBody(edits: [edit]).canonicalBytes + [UInt8](repeating: 0, count: 120)  // ~ sealed size
        // Chained like a real log: a change whose prevHash is not its held predecessor's hash is a fork and
        // is refused at commit (with zero prevHashes most of the year was refused: 5,676 of 9,855 changes held).
        let prevHash = lastHash[log] ?? [UInt8](repeating: 0, count: 32)
        lastHash[log] = hash
        batch.changes.append(StoredChange(log: log, seq: seq, hash: hash, prevHash: prevHash,
                                          hlc: edit.hlc, contentType: .records, priority: priority, bytes: bytes))
        batch.edits.append((edit, hash))
        batch.now = UInt64(t)  // arrives when written (a node online all year): the arrival times the reports read
        n += 1
        if batch.changes.count == 5_000 {
            _ = try store.commit(batch)
            batch = CommitBatch()
        }
    }
    for day in 0..<365 {
        let start = ReportDay(daysSinceEpoch: yearStart.daysSinceEpoch + Int64(day)).start
        var followUps: [(Int64, RecordEdit, DeviceID)] = []
        for i in 0..<incidentsPerDay {
            let s = rng.int(geo.stations.count), station = geo.stations[s]
            let author = DeviceID(ID128(high: 0xB0, low: UInt64(s * 3 + rng.int(3))))
            let scope = try Scope(station.scope + "/village-\(String(format: "%04d", rng.int(16)))")
            let t = start + Int64(rng.int(86_400_000))
            let id = RecordID(ID128(high: UInt64(day), low: UInt64(i)))
            let (lat, lon) = Geo.offset(station.position.latitude, station.position.longitude, km: 8 * rng.unit(), angle: rng.uniform(0, 2 * .pi))
            let category = Incident.Category.allCases[rng.int(Incident.Category.allCases.count)]
            let priority = Priority.allCases[rng.int(4)]
            try add(Incident.create(id: id, scope: scope, author: author, hlc: HLCTimestamp(milliseconds: UInt64(t), counter: 0), category: category,
                                    priority: priority, location: Location(latitude: lat, longitude: lon, placeName: "v"),
                                    summary: "incident \(day)-\(i)", reportedAt: t, reporter: "caller",
                                    feedbackDeadline: i % 2 == 0 ? t + 4 * 3_600_000 : nil), author: author, at: t, priority: priority)
            // The second change, 1 to 6 hours later: feedback and closed.
            let t2 = t + 3_600_000 + Int64(rng.int(5 * 3_600_000))
            followUps.append((t2, RecordEdit(record: id, kind: .incident, scope: scope, author: author,
                                             hlc: HLCTimestamp(milliseconds: UInt64(t2), counter: 0),
                                             actions: [.set(field: Incident.Field.feedback, value: .string("done")),
                                                       Incident.statusAction(generation: 0, .closed)]), author))
        }
        for i in 0..<visitsPerDay {
            let s = rng.int(geo.stations.count), station = geo.stations[s]
            let author = DeviceID(ID128(high: 0xB0, low: UInt64(s * 3 + rng.int(3))))
            let scope = try Scope(station.scope + "/village-\(String(format: "%04d", rng.int(16)))")
            let t = start + Int64(rng.int(86_400_000))
            try add(Visit.create(id: RecordID(ID128(high: 0x1_0000 + UInt64(day), low: UInt64(i))), scope: scope, author: author,
                                 hlc: HLCTimestamp(milliseconds: UInt64(t), counter: 0), subject: "household \(i)", visitor: "officer",
                                 visitType: .routine, visitedAt: t), author: author, at: t, priority: .normal)
        }
        for (t, e, a) in followUps { try add(e, author: a, at: t, priority: .normal) }
    }
    if !batch.changes.isEmpty { _ = try store.commit(batch) }
    return n  // `store` goes here: its connection closes, folding the write-ahead log into the file
}

private func dailyReportBenchmark(changes: Int) throws -> [BenchResult] {
    let sealer = try StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 2, count: 32)))
    let path = NSTemporaryDirectory() + "fieldsync-bench-report-\(changes).sqlite"
    let clock = ContinuousClock()
    let buildStart = clock.now
    try buildYearStore(changes: changes, path: path, sealer: sealer)
    let buildTime = clock.now - buildStart
    let store = try SQLiteStore(path: path, sealer: sealer)
    // HQ's replicator over the store (its identity only signs; nothing is written).
    let root = Ed25519.SecretKey.generate()
    let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
    let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .hq, requestedScopes: [try Scope("longnan")],
                                    createdAt: 0, label: "hq")
    let cert = try Authority(root: root).enroll(req, role: .hq, scopes: [try Scope("longnan")], notBefore: 0, notAfter: UInt64.max / 2, serial: 1)
    let replicator = Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert), trust: TrustStore(root: root.publicKey),
                                store: store)
    let day = ReportDay(daysSinceEpoch: yearStart.daysSinceEpoch + 200)
    let now = ReportDay(daysSinceEpoch: yearStart.daysSinceEpoch + 366).start
    let book = try RecordBook(replicator: replicator, now: UInt64(now), restoringClock: false)
    let options = DailyReportOptions()
    var report: DailyReport?
    let reportSeconds = secondsPerIteration(minimumSeconds: 1) { report = try? DailyReport.make(book, day: day, options: options, now: now) }
    guard let report else { throw BenchFailure("the daily report failed") }
    let html = secondsPerIteration(minimumSeconds: 0.2) { blackHole(report.html()) }
    // The baseline: the same rows, id and sealed bytes, by the same indexes, no decryption.
    let db = try DatabaseQueue(path: path, configuration: { var c = Configuration(); c.readonly = true; return c }())
    let lookback = day.start - Int64(options.lookbackDays) * 86_400_000
    var rows = 0
    let plain = secondsPerIteration(minimumSeconds: 0.2) {
        rows = (try? db.read { db in
            var n = 0
            for (kind, from) in [("incident", lookback), ("visit", day.start)] {
                let cursor = try Row.fetchCursor(db, sql: "SELECT id, sealed FROM records WHERE kind = ? AND event_time >= ? AND event_time < ? AND deleted = 0",
                                                 arguments: [kind, from, day.end])
                while let row = try cursor.next() { n += (row["sealed"] as Data).count > 0 ? 1 : 0 }
            }
            return n
        }) ?? -1
    }
    let plan = try db.read { db in
        try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT id, sealed FROM records WHERE kind = ? AND event_time >= ? AND event_time < ? AND deleted = 0",
                         arguments: ["incident", lookback, day.end]).map { $0["detail"] as String }
    }
    let status = try store.status()
    print("  store: \(status.changes) changes, \(status.records) records; built in \(buildTime)")
    print("  report of \(day): \(report.total.incidents) incidents, \(report.total.closures) closures, \(report.total.feedbackDue) deadlines "
          + "(\(report.total.feedbackOverdue) overdue), \(report.duplicates.count) suspected pairs, \(report.total.visits) visits, "
          + "\(report.dutyLogs.count) duty logs; \(rows) rows read")
    print("  plain query plan: \(plan.joined(separator: "; "))")
    return [
        BenchResult(name: "daily report (\(rows) records)", value: reportSeconds * 1e3, baseline: plain * 1e3, unit: "ms",
                    baselineName: "plain indexed SELECT of the same rows", goal: nil),
        BenchResult(name: "the report as HTML", value: html * 1e3, baseline: reportSeconds * 1e3, unit: "ms", baselineName: "making the report"),
    ]
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
