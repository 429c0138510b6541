// `command-center`: the command center's pages (issue 15) over a store of 1,000,000 changes shaped like a
// year of Longnan (the store `report-daily` builds), served by a real `CommandCenter` over HTTP on loopback
// from an HQ node's `FieldSyncApp`: the overview, a list page, the daily report made on demand, the map, and
// a live update (a new incident written on the node, to its event on an open `/events` stream). Each page is
// measured against a plain indexed SQLite query of the rows it reads (id and sealed bytes, no decryption), on
// the same file in the same run; the live update against the write alone.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncGeo
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncStore
import FieldSyncWeb
import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

func commandCenterBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "command-center", summary: "command center pages over a 1,000,000-change store vs plain indexed SQLite queries of their rows") { scale in
            try commandCenterBenchmark(changes: Int(1_000_000 * scale))
        },
    ]
}

private func commandCenterBenchmark(changes: Int) throws -> [BenchResult] {
    let dir = NSTemporaryDirectory() + "fieldsync-bench-cc-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir + "/hq", withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // HQ's device: keystore (key file), certificate for all of Longnan, one station's epoch key (the live write).
    let root = Ed25519.SecretKey.generate()
    let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
    let longnan = try Scope("longnan")
    let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .hq, requestedScopes: [longnan], createdAt: 0, label: "hq")
    let cert = try Authority(root: root).enroll(req, role: .hq, scopes: [longnan], notBefore: 0, notAfter: UInt64.max / 2, serial: 1)
    let station = try Scope(LongnanGeography.standard.stations[0].scope)
    let keyFile = dir + "/hq.key"
    try Keystore.createKeyFile(at: keyFile)
    try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: root.publicKey,
                                        epochKeys: [EpochKey.generate(scope: station, epoch: 1)]),
                       to: dir + "/hq/" + FieldSyncDevice.keystoreName, protection: .keyFile(path: keyFile))
    let storePath = dir + "/hq.sqlite"
    let clock = ContinuousClock()
    let buildStart = clock.now
    try buildYearStore(changes: changes, path: storePath, sealer: try StorageKeySealer(deviceSigningKey: sk))
    let buildTime = clock.now - buildStart
    // The upgrade from schema 8: the store taken back to it (no `records_kind_status_time`), then opened, which
    // migrates it (builds the index over every record); against an open of the migrated store.
    let storageSealer = try StorageKeySealer(deviceSigningKey: sk)
    try DatabaseQueue(path: storePath).write { db in
        try db.execute(sql: "DROP INDEX records_kind_status_time")
        try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v9-record-status-index'")
    }
    let migrateStart = clock.now
    do { _ = try SQLiteStore(path: storePath, sealer: storageSealer, checksChanges: false) }
    let migrateTime = clock.now - migrateStart
    let reopenStart = clock.now
    do { _ = try SQLiteStore(path: storePath, sealer: storageSealer, checksChanges: false) }
    let reopenTime = clock.now - reopenStart
    // The node's clock: noon of day 200 of the year (UTC+8), so "today" and "this week" are inside the data.
    let day = ReportDay(daysSinceEpoch: yearStart.daysSinceEpoch + 200)
    let now = UInt64(day.start + 12 * 3_600_000)
    let usersPath = dir + "/web-users.json"
    var accounts = OperatorAccounts()
    try accounts.add(name: "bench", password: "a long benchmark password", scopes: [], replace: false, now: 0, cost: .testingOnlyMinimum)
    try accounts.save(path: usersPath)
    let device = FieldSyncDevice(directory: dir + "/hq", key: .keyFile(path: keyFile), storePath: storePath)
    let (app, center) = try blocking {
        let app = try await FieldSyncApp.open(device: device, configuration: NodeConfiguration(network: NetworkParameters(networkID: "bench")),
                                              clock: { now })
        var o = CommandCenterOptions(usersPath: usersPath, accessLogPath: dir + "/access.log")
        o.port = 0
        o.clock = { now }
        let center = try await CommandCenter(app: app, options: o)
        try await center.start()
        return (app, center)
    }
    defer { _ = try? blocking { await center.stop(); await app.close(grace: .zero) } }
    let client = BenchHTTP(port: center.port ?? 0)
    try client.login("bench", password: "a long benchmark password")

    // Each page: the request's time on loopback (the server's work plus one local round trip).
    func page(_ path: String, minimumSeconds: Double = 1) throws -> (seconds: Double, bytes: Int) {
        let first = try client.get(path)
        guard first.status == 200 else { throw BenchFailure("GET \(path) answered \(first.status)") }
        let s = secondsPerIteration(minimumSeconds: minimumSeconds) { blackHole(try? client.get(path)) }
        return (s, first.body.utf8.count)
    }
    let overview = try page("/")
    let list = try page("/incidents")
    let report = try page("/reports/make?date=\(day.text)&format=html", minimumSeconds: 2)
    let map = try page("/map")

    // The baselines: the same rows by the same indexes, id and sealed bytes, no decryption.
    let db = try DatabaseQueue(path: storePath, configuration: { var c = Configuration(); c.readonly = true; return c }())
    func plain(_ queries: [(String, StatementArguments)]) -> Double {
        secondsPerIteration(minimumSeconds: 0.5) {
            blackHole(try? db.read { db in
                var n = 0
                for (sql, args) in queries {
                    let cursor = try Row.fetchCursor(db, sql: sql, arguments: args)
                    while let row = try cursor.next() { n += (row["sealed"] as Data).count > 0 ? 1 : 0 }
                }
                return n
            })
        }
    }
    let weekStart = day.start - 6 * 86_400_000
    // Open incidents by the status index (`SQLiteStore.sql(for:)` pins it for them); the week's visits are only
    // counted by scope (`recordTallies`), as the overview now reads them.
    let open = "SELECT id, sealed FROM records INDEXED BY records_kind_status_time WHERE kind = 'incident' AND status BETWEEN 0 AND \(Incident.Status.onScene.rawValue) AND deleted = 0 ORDER BY event_time DESC, id DESC LIMIT 5000"
    let overviewPlain = plain([("SELECT id, sealed FROM records WHERE kind = 'incident' AND event_time >= ? AND event_time < ? AND deleted = 0", [weekStart, day.end]),
                               (open, []),
                               ("SELECT scope, count(*) AS n, max(updated), x'01' AS sealed FROM records WHERE kind = 'visit' AND event_time >= ? AND event_time < ? AND deleted = 0 GROUP BY scope", [weekStart, day.end])])
    let listPlain = plain([("SELECT id, sealed FROM records WHERE kind = 'incident' AND deleted = 0 ORDER BY event_time DESC, id DESC LIMIT 50", [])])
    let lookback = day.start - 14 * 86_400_000
    let reportPlain = plain([("SELECT id, sealed FROM records WHERE kind = 'incident' AND event_time >= ? AND event_time < ? AND deleted = 0", [lookback, day.end]),
                             ("SELECT id, sealed FROM records WHERE kind = 'visit' AND event_time >= ? AND event_time < ? AND deleted = 0", [day.start, day.end])])
    let mapPlain = plain([(open, [])])

    // Live: an open /events stream; a new incident written on the node; the time until its event arrives.
    var live: [Double] = [], writes: [Double] = []
    for i in 0..<5 {
        let stream = try client.openStream("/events")
        defer { close(stream) }
        _ = try BenchHTTP.readUntil(stream, contains: ": heartbeat", timeout: 5)
        let start = clock.now
        let written = try blocking {
            try await app.createIncident(IncidentDraft(scope: station, category: .traffic, summary: "live \(i)",
                                                       location: Location(latitude: 33.39, longitude: 104.92, placeName: "bench")))
        }
        let wrote = clock.now - start
        guard try BenchHTTP.readUntil(stream, contains: written.record.id.description, timeout: 10) else {
            throw BenchFailure("the live event for \(written.record.id) did not arrive within 10 s")
        }
        let arrived = clock.now - start
        live.append(seconds(arrived))
        writes.append(seconds(wrote))
    }
    live.sort()
    writes.sort()

    let status = try SQLiteStore(path: storePath, sealer: try StorageKeySealer(deviceSigningKey: sk), checksChanges: false).status()
    print("  store: \(status.changes) changes, \(status.records) records; built in \(buildTime)")
    print("  migration from schema 8 on open (the status index over every record): \(migrateTime); an open without migration: \(reopenTime)")
    print("  pages: overview \(overview.bytes) B, list \(list.bytes) B, report \(report.bytes) B, map \(map.bytes) B; day \(day.text)")
    print("  goals (issue 15): overview <= 200 ms, list page <= 100 ms, daily report <= 2 s, map <= 300 ms, live update <= 1 s")
    print("  live update, 5 runs (ms): \(live.map { String(format: "%.1f", $0 * 1e3) }.joined(separator: ", "))")
    let base = "plain indexed SELECT of the same rows"
    return [
        BenchResult(name: "overview / (goal <= 200 ms)", value: overview.seconds * 1e3, baseline: overviewPlain * 1e3, unit: "ms", baselineName: base),
        BenchResult(name: "list page /incidents (goal <= 100 ms)", value: list.seconds * 1e3, baseline: listPlain * 1e3, unit: "ms", baselineName: base),
        BenchResult(name: "daily report /reports/make (goal <= 2 s)", value: report.seconds * 1e3, baseline: reportPlain * 1e3, unit: "ms", baselineName: base),
        BenchResult(name: "map /map (goal <= 300 ms)", value: map.seconds * 1e3, baseline: mapPlain * 1e3, unit: "ms", baselineName: base),
        BenchResult(name: "live update, median of 5 (goal <= 1 s)", value: live[2] * 1e3, baseline: writes[2] * 1e3, unit: "ms",
                    baselineName: "the write alone (createIncident)"),
    ]
}

private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }


/// A minimal HTTP/1.1 client over loopback (one request per connection) with a cookie jar: login and GET.
private final class BenchHTTP {
    let port: Int
    var cookies: [String: String] = [:]

    init(port: Int) { self.port = port }

    static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { close(fd); throw BenchFailure("cannot connect to 127.0.0.1:\(port)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    func request(_ method: String, _ path: String, body: String? = nil) -> [UInt8] {
        var lines = ["\(method) \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Connection: close"]
        if !cookies.isEmpty { lines.append("Cookie: " + cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")) }
        if let body { lines += ["Content-Type: application/x-www-form-urlencoded", "Content-Length: \(body.utf8.count)"] }
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n" + (body ?? "")).utf8)
    }

    /// One request; the whole answer read (the server closes the connection), chunked bodies decoded.
    func send(_ method: String, _ path: String, body: String? = nil) throws -> (status: Int, body: String) {
        let fd = try Self.connect(port)
        defer { close(fd) }
        let bytes = request(method, path, body: body)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data += buf[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw BenchFailure("no HTTP answer for \(path)") }
        let head = text[..<split.lowerBound].split(separator: "\r\n")
        let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        var chunked = false
        for line in head.dropFirst() {
            let lower = line.lowercased()
            if lower.hasPrefix("set-cookie:") {
                let kv = line.dropFirst("set-cookie:".count).trimmingCharacters(in: .whitespaces).split(separator: ";")[0]
                    .split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                if kv.count == 2 { cookies[String(kv[0])] = kv[1].isEmpty ? nil : String(kv[1]) }
            }
            if lower.hasPrefix("transfer-encoding:") && lower.contains("chunked") { chunked = true }
        }
        var body = String(text[split.upperBound...])
        if chunked { body = Self.dechunk(body) }
        return (status, body)
    }

    static func dechunk(_ s: String) -> String {
        var out = "", rest = Substring(s)
        while let nl = rest.range(of: "\r\n"), let size = Int(rest[..<nl.lowerBound], radix: 16), size > 0 {
            let start = rest.utf8.index(nl.upperBound, offsetBy: 0)
            let end = rest.utf8.index(start, offsetBy: size, limitedBy: rest.utf8.endIndex) ?? rest.utf8.endIndex
            out += String(rest[start..<end])
            rest = rest[end...].dropFirst(2)
        }
        return out
    }

    func get(_ path: String) throws -> (status: Int, body: String) { try send("GET", path) }

    func login(_ name: String, password: String) throws {
        let form = try get("/login")
        guard let r = form.body.range(of: "name=\"csrf\" value=\"") else { throw BenchFailure("no login form") }
        let csrf = String(form.body[r.upperBound...].prefix { $0 != "\"" })
        func esc(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
        let answer = try send("POST", "/login", body: "csrf=\(esc(csrf))&name=\(esc(name))&password=\(esc(password))")
        guard answer.status == 303 else { throw BenchFailure("login answered \(answer.status)") }
    }

    /// Opens a Server-Sent Events stream; returns the socket.
    func openStream(_ path: String) throws -> Int32 {
        let fd = try Self.connect(port)
        let bytes = request("GET", path)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return fd
    }

    /// Reads the stream until `needle` appears or `timeout` seconds pass.
    static func readUntil(_ fd: Int32, contains needle: String, timeout: Double) throws -> Bool {
        var seen = ""
        var buf = [UInt8](repeating: 0, count: 65_536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 100)
            if ready <= 0 { continue }
            let n = read(fd, &buf, buf.count)
            if n <= 0 { return false }
            seen += String(decoding: buf[0..<n], as: UTF8.self)
            if seen.contains(needle) { return true }
        }
        return false
    }
}
