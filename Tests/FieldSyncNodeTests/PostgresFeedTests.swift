import FieldSyncCore
import FieldSyncCrypto
@testable import FieldSyncFeed
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncTestSupport
import Foundation
import GRDB
import Logging
import Testing

/// Issue 16, the PostgreSQL feed at HQ, against a real PostgreSQL: a throwaway cluster (`ScratchPostgres`:
/// initdb into a temporary folder, the server on a Unix socket there, run as the `postgres` user when the
/// tests run as root), real `fieldsync serve` processes with `"feed": {"postgres": ...}`, real syncs.
/// Without PostgreSQL installed the tests say so and pass locally; with `CI` set they fail.
@Suite(.ownThread, .serialized)
struct PostgresFeedTests {
    static let inCI = ProcessInfo.processInfo.environment["CI"] != nil

    /// A started cluster, or nil (printed) when PostgreSQL is not installed outside CI.
    static func cluster() throws -> ScratchPostgres? {
        if let pg = try ScratchPostgres.start() { return pg }
        if inCI { throw NodeTestError("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or PATH): .ci/run installs `postgresql`") }
        print("SKIPPED: PostgreSQL is not installed here (apt-get install postgresql); the feed tests did not run")
        return nil
    }

    /// `d`'s node config with a feed into `url` (schema `fs`), written to `d.dir/node.json`.
    static func writeConfig(_ w: ProcessWorld, _ d: ProcessWorld.Device, url: String, schema: String = "fs", batchSize: Int = 1000) throws -> String {
        let path = d.dir + "/node.json"
        let keys = d.readsRecords ? "[\"\(w.epochKeyFile)\"]" : "[]"
        try """
            {"device": {"dir": "\(d.dir)", "keyFile": "\(d.keyFile)"}, "store": {"path": "\(d.store)"}, "epochKeyFiles": \(keys),
             "listen": "127.0.0.1:\(d.port)", "statusFile": "\(d.dir)/status.json",
             "feed": {"postgres": {"url": "\(url)", "schema": "\(schema)", "batchSize": \(batchSize)}}}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Starts `serve --config` for `d` and waits until it accepts connections.
    static func serve(_ w: ProcessWorld, _ d: ProcessWorld.Device, config: String) throws -> Process {
        let p = try w.start(["serve", "--config", config], log: d.dir + "/serve.log")
        let deadline = Date().addingTimeInterval(20)
        while !RawSocket.canConnect(d.port) {
            guard p.isRunning, Date() < deadline else { throw NodeTestError("\(d.name) did not start serving: \(try w.serverLog(d))") }
            usleep(20_000)
        }
        return p
    }

    /// Polls `sql` (one number) until it equals `value`, for at most `seconds`; the last value read.
    @discardableResult
    static func wait(_ pg: ScratchPostgres, _ db: String, _ sql: String, equals value: Int, seconds: Double = 30) -> Int? {
        let deadline = Date().addingTimeInterval(seconds)
        var last: Int?
        repeat {
            last = (try? pg.psql(db, sql)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if last == value { return last }
            usleep(100_000)
        } while Date() < deadline
        return last
    }

    /// The records `fieldsync list --json` shows for `d`, by id.
    static func listed(_ w: ProcessWorld, _ d: ProcessWorld.Device) throws -> [String: [String: Any]] {
        let out = try w.expectOK(["list", "--json"] + w.args(d))
        var byID: [String: [String: Any]] = [:]
        for line in out.split(separator: "\n") {
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let id = o["id"] as? String else { continue }
            byID[id] = o
        }
        return byID
    }

    /// Incident rows as `id -> [column: text]` (the columns the CLI also shows), read with psql.
    static func incidentRows(_ pg: ScratchPostgres, _ db: String, schema: String = "fs") throws -> [String: [String: String]] {
        let cols = ["scope", "category", "priority", "status", "summary", "reporter", "county", "station", "place_name"]
        // One JSON object per row: psql's own escaping cannot change the text.
        let out = try pg.psql(db, "SELECT json_build_object('id', record_id, \(cols.map { "'\($0)', \($0)" }.joined(separator: ", "))) FROM \(schema).incidents")
        var rows: [String: [String: String]] = [:]
        for line in out.split(separator: "\n") {
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let id = o["id"] as? String else { continue }
            rows[id] = o.compactMapValues { $0 as? String }
        }
        return rows
    }

    /// Every incident of `d`'s store is one row with the same values, and nothing else is there.
    static func expectRowsEqualStore(_ w: ProcessWorld, _ d: ProcessWorld.Device, _ pg: ScratchPostgres, _ db: String,
                                     schema: String = "fs", sourceLocation: SourceLocation = #_sourceLocation) throws {
        let records = try listed(w, d).filter { ($0.value["kind"] as? String) == "incident" }
        let rows = try incidentRows(pg, db, schema: schema)
        #expect(rows.count == records.count, "rows \(rows.count), store \(records.count)", sourceLocation: sourceLocation)
        var mismatches: [String] = []
        for (id, r) in records {
            guard let row = rows[id] else { mismatches.append("\(id) missing"); continue }
            for key in ["scope", "category", "priority", "status", "summary", "reporter"] where (r[key] as? String) != row[key] {
                mismatches.append("\(id).\(key): store \(r[key] ?? "nil"), row \(row[key] ?? "nil")")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))", sourceLocation: sourceLocation)
    }

    static let otherVillage = try! Scope("longnan/wudu/station-017/village-0999")

    /// `ProcessWorld.fill` in another scope under the station's key.
    static func fill(_ w: ProcessWorld, _ d: ProcessWorld.Device, count: Int, scope: Scope) throws {
        let writer = Replicator(identity: d.identity, trust: TrustStore(root: w.rootKey.publicKey), store: MemoryStore())
        writer.addKey(w.stationKey)
        let sqlite = try w.replicator(d)
        var g = SystemRandomNumberGenerator()
        var groups: [Replicator.WriteGroup] = []
        for i in 0..<count {
            var clock = writer.clock
            let e = Incident.create(id: RecordID.random(using: &g), scope: scope, author: d.id, hlc: try clock.now(wall: ProcessWorld.now()),
                                    category: .dispute, priority: .normal, location: Location(latitude: 33.4, longitude: 104.9),
                                    summary: "\(d.name) incident \(i)", reportedAt: Int64(ProcessWorld.now()), reporter: "walk-in")
            groups.append(Replicator.WriteGroup(scope: scope, priority: .normal, edits: [e]))
        }
        let changes = try writer.write(groups: groups, now: ProcessWorld.now())
        let report = try sqlite.ingest(changes, now: ProcessWorld.now())
        guard report.rejected == 0, report.commit.inserted == count else { throw NodeTestError("fill of \(d.name): \(report.commit)") }
    }

    static let oddText = "O'Brien said \"hi\"; DROP TABLE fs.incidents; -- $1 %s \\x00 \\' E'\\\\' 𝔘𝔫𝔦 e\u{301} \u{202E}evil\u{202C} \u{FEFF}\u{200B} \u{FFFD} 龍南 🚓"

    /// Records written on two field nodes (a backpack and a station) and synced to HQ's `serve` appear as rows
    /// with the store's values, text with quotes, SQL and odd Unicode intact; devices, history with verified
    /// signatures, the daily report; `feed status` shows no lag; `feed rebuild` into an empty schema gives the
    /// same rows and refuses a schema that is not empty.
    /// The cluster's server does not inherit the caller's connections. It did (`posix_spawn` passes every
    /// descriptor without close-on-exec, and SwiftNIO's sockets have none): a connection open in the test
    /// process when a cluster started stayed open in the server after the test closed it, so its peer never
    /// saw it end. In full parallel runs a daemon's live session outlived its peer's shutdown, and a node's
    /// close of a garbage connection reached the client 39 s late, when a cluster stopped.
    @Test(.timeLimit(.minutes(1))) func theServerHoldsNoneOfTheCallersConnections() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = RawSocket.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) == 0 && getsockname(listener, $0, &len) == 0 }
        }
        #expect(bound && listen(listener, 1) == 0)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let client = try #require(RawSocket.connectTo(port))
        let server = accept(listener, nil, nil)
        #expect(server >= 0)
        guard let pg = try Self.cluster() else { return }  // the server starts while both ends are open here
        defer { pg.destroy() }
        close(server)
        // The client sees the end at once (a read of 0 bytes), not when the cluster stops.
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let n = read(client, &byte, 1)
        close(client)
        #expect(n == 0, "read returned \(n) (errno \(errno)): the server process still holds the closed end")
    }

    @Test(.timeLimit(.minutes(3))) func recordsFromTwoFieldNodesAppearAsRows() throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("two")
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let st = try w.device("st", .station, [ProcessTests.station.path])
        let incident = try w.expectOK(["incident", "new"] + w.args(bp) + [
            "--scope", ProcessTests.village.path, "--category", "dispute", "--priority", "high", "--summary", Self.oddText,
            "--lat", "33.412", "--lon", "104.951", "--place", "村委会 'hall'", "--reporter", "Robert'); DROP TABLE students;--", "--json"])
        let incidentID = try #require((try JSONSerialization.jsonObject(with: Data(incident.utf8)) as? [String: Any])?["id"] as? String)
        try w.expectOK(["incident", "status", incidentID, "dispatched"] + w.args(bp))
        try w.expectOK(["incident", "note", incidentID, "note with 'quotes' and \\ backslash"] + w.args(bp))
        try w.expectOK(["incident", "new"] + w.args(st) + ["--scope", ProcessTests.station.path, "--category", "traffic",
                                                           "--summary", "station incident", "--lat", "33.4", "--lon", "104.9"])
        try w.expectOK(["visit", "new"] + w.args(st) + ["--scope", ProcessTests.village.path, "--subject", "household-0412-17",
                                                        "--visitor", "officer-li", "--type", "routine", "--outcome", "ok"])
        let config = try Self.writeConfig(w, hq, url: pg.url(database: "two"))
        let server = try Self.serve(w, hq, config: config)
        defer { server.terminate(); server.waitUntilExit() }
        for d in [bp, st] {
            let r = try w.sync(d, hq)
            #expect(r["finished"] as? Bool == true, "\(d.name): \(r)")
        }
        #expect(Self.wait(pg, "two", "SELECT count(*) FROM fs.incidents", equals: 2) == 2, "\((try? w.serverLog(hq)) ?? "")")
        #expect(Self.wait(pg, "two", "SELECT count(*) FROM fs.visits", equals: 1) == 1)
        try Self.expectRowsEqualStore(w, hq, pg, "two")
        let row = try Self.incidentRows(pg, "two")[incidentID]
        #expect(row?["summary"] == Self.oddText && row?["reporter"] == "Robert'); DROP TABLE students;--" && row?["place_name"] == "村委会 'hall'")
        #expect(row?["status"] == "dispatched" && row?["county"] == "wudu" && row?["station"] == "station-017", "\(row ?? [:])")
        // History: created, status reported then dispatched, the note; every signature verified, by the backpack.
        let history = try pg.psql("two", "SELECT kind || ':' || coalesce(value, '') || ':' || signature_verified || ':' || author_device FROM fs.record_history WHERE record_id = '\(incidentID)' ORDER BY hlc, ordinal")
        #expect(history.split(separator: "\n").map(String.init) == [
            "created:incident:true:\(bp.id)", "status:reported:true:\(bp.id)", "status:dispatched:true:\(bp.id)",
            "note:note with 'quotes' and \\ backslash:true:\(bp.id)"], "\(history)")
        // The authors fed (HQ itself too once it has written a receipt).
        let roles = try pg.psql("two", "SELECT device_id || ':' || role FROM fs.devices").split(separator: "\n").map(String.init)
        #expect(roles.contains("\(bp.id):backpack") && roles.contains("\(st.id):station"), "\(roles)")
        let report = try pg.psql("two", "SELECT county, station, category, reported, open FROM fs.daily_situation_report ORDER BY category")
        #expect(report.split(separator: "\n") == ["wudu|station-017|dispute|1|1", "wudu|station-017|traffic|1|1"], "\(report)")
        // The feed's status: no lag.
        let status = try w.expectOK(["feed", "status", "--config", config, "--json"])
        let s = try #require(try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])
        #expect(s["lagChanges"] as? Int == 0 && s["lagSeconds"] as? Int == 0, "\(status)")
        // Rebuild into an empty schema: the same rows; into one that is not empty: refused.
        let rebuilt = try w.run(["feed", "rebuild", "--config", config, "--schema", "fs2"])
        #expect(rebuilt.status == 0 && rebuilt.out.contains("changes fed"), "\(rebuilt)")
        try Self.expectRowsEqualStore(w, hq, pg, "two", schema: "fs2")
        #expect(try pg.psql("two", "SELECT count(*) FROM fs2.record_history") == pg.psql("two", "SELECT count(*) FROM fs.record_history"))
        let refused = try w.run(["feed", "rebuild", "--config", config])
        #expect(refused.status != 0 && refused.err.contains("already holds") && refused.err.contains("DROP SCHEMA fs CASCADE"), "\(refused)")
    }

    /// SIGKILL of HQ's node in the middle of a feed, then PostgreSQL down while the node keeps syncing: after a
    /// restart and the database's return the rows equal the store's records exactly (count and content), no
    /// change's history row is missing or doubled.
    @Test(.timeLimit(.minutes(4))) func killedMidBatchAndDatabaseDownLoseAndDoubleNothing() throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("crash")
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        // The backpack works in another village: HQ's 3,000 incidents are not sent to it (under load, a debug
        // backpack verifying them was cut as too slow), only its own 300 travel.
        let bp = try w.device("bp", .backpack, [Self.otherVillage.path])
        try w.fill(hq, count: 3_000)
        try Self.fill(w, bp, count: 300, scope: Self.otherVillage)
        let config = try Self.writeConfig(w, hq, url: pg.url(database: "crash"), batchSize: 50)
        var server = try Self.serve(w, hq, config: config)
        // Kill it once some batches are in and others are not.
        let deadline = Date().addingTimeInterval(60)
        var fedAtKill = 0
        while Date() < deadline {
            fedAtKill = (try? pg.psql("crash", "SELECT coalesce(sum(changes_fed), 0) FROM fs.sources")).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            if fedAtKill >= 100 { break }
            usleep(10_000)
        }
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        let fedAfterKill = Int(try pg.psql("crash", "SELECT changes_fed FROM fs.sources").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(fedAtKill >= 100 && fedAfterKill < 3_000, "killed mid-feed: \(fedAtKill) then \(fedAfterKill) of 3000 fed")
        server = try Self.serve(w, hq, config: config)
        #expect(Self.wait(pg, "crash", "SELECT count(*) FROM fs.incidents", equals: 3_000, seconds: 90) == 3_000, "\((try? w.serverLog(hq)) ?? "")")
        // The database goes away; the node keeps syncing; the feed retries and says so.
        try pg.stopServer()
        let r = try w.sync(bp, hq)
        #expect(r["finished"] as? Bool == true && r["changesSent"] as? Int == 300, "sync while the database is down: \(r)")
        let stateFile = hq.dir + "/status.json.feed.json"
        var state: FeedState?
        let retryDeadline = Date().addingTimeInterval(20)
        while Date() < retryDeadline {
            state = (try? Data(contentsOf: URL(fileURLWithPath: stateFile))).flatMap { try? JSONDecoder().decode(FeedState.self, from: $0) }
            if state?.state == "retrying" { break }
            usleep(100_000)
        }
        #expect(state?.state == "retrying" && state?.lastError != nil, "\(String(describing: state))")
        let down = try w.run(["feed", "status", "--config", config])
        #expect(down.status == 1 && down.out.contains("database: unreachable") && down.out.contains("retrying"), "\(down)")
        #expect(try w.serverLog(hq).contains("the database did not take the batch"))
        sleep(2)
        try pg.startServer()
        #expect(Self.wait(pg, "crash", "SELECT count(*) FROM fs.incidents", equals: 3_300, seconds: 90) == 3_300, "\((try? w.serverLog(hq)) ?? "")")
        server.terminate()
        server.waitUntilExit()
        try Self.expectRowsEqualStore(w, hq, pg, "crash")
        // Each incident: `created` and `status reported`, once each.
        #expect(try pg.psql("crash", "SELECT count(*), count(DISTINCT (change_hash, record_id, ordinal)) FROM fs.record_history") == "6600|6600\n")
        #expect(try pg.psql("crash", "SELECT changes_fed >= 3300, last_rowid, store_last_rowid FROM fs.sources").hasPrefix("t|"))
    }

    /// Two aggregators (one per city) feed one database: rows keyed by record id and change hash do not collide,
    /// a record both hold is one row, each keeps its own cursor.
    @Test(.timeLimit(.minutes(3))) func twoAggregatorsFeedOneDatabase() throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("prov")
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let a = try w.device("hq-a", .hq, ["longnan"])
        let b = try w.device("hq-b", .county, [ProcessTests.station.path])
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        try w.fill(a, count: 40)
        try w.fill(b, count: 25)
        try w.fill(bp, count: 10)
        let servers = try [a, b].map { d in try Self.serve(w, d, config: try Self.writeConfig(w, d, url: pg.url(database: "prov"), batchSize: 7)) }
        defer { for s in servers { s.terminate(); s.waitUntilExit() } }
        for d in [a, b] { #expect(try w.sync(bp, d)["finished"] as? Bool == true) }
        #expect(Self.wait(pg, "prov", "SELECT count(*) FROM fs.incidents", equals: 75) == 75)
        #expect(try pg.psql("prov", "SELECT count(*) FROM fs.sources") == "2\n")
        #expect(try pg.psql("prov", "SELECT count(*), count(DISTINCT change_hash) FROM fs.record_history WHERE kind = 'created'") == "75|75\n")
        // Each source caught up on its own cursor (HQ's receipts count among its changes).
        #expect(Self.wait(pg, "prov", "SELECT count(*) FROM fs.sources WHERE last_rowid = store_last_rowid AND changes_fed >= 35", equals: 2) == 2)
        #expect(try pg.psql("prov", "SELECT count(DISTINCT device_id) FROM fs.sources") == "2\n")
    }

    /// The daemon's status file shows the feed (not only `feed status` and the metrics): caught up with the
    /// database up; while PostgreSQL is down, `down` with the error and the changes synced meanwhile as lag in
    /// changes and seconds; caught up again once it is back.
    @Test(.timeLimit(.minutes(3))) func statusFileShowsTheFeed() throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("st")
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        let bp = try w.device("bp", .backpack, [Self.otherVillage.path])
        try w.fill(hq, count: 20)
        try Self.fill(w, bp, count: 30, scope: Self.otherVillage)
        let config = try Self.writeConfig(w, hq, url: pg.url(database: "st"))
        let server = try Self.serve(w, hq, config: config)
        defer { server.terminate(); server.waitUntilExit() }
        let path = hq.dir + "/status.json"
        func feed(_ done: (DaemonStatus.Feed) -> Bool) -> DaemonStatus.Feed? {
            let deadline = Date().addingTimeInterval(40)
            var last: DaemonStatus.Feed?
            repeat {
                last = (try? DaemonStatus.read(from: path))?.feed
                if let l = last, done(l) { return l }
                usleep(100_000)
            } while Date() < deadline
            return last
        }
        let up = feed { $0.state == "caught-up" && $0.changesFed >= 20 }
        #expect(up?.database == "up" && up?.lagChanges == 0 && up?.lagSeconds == 0 && up?.lastError == nil
                && up?.target == pg.url(database: "st") + " schema fs", "\(String(describing: up))")
        try pg.stopServer()
        let r = try w.sync(bp, hq)
        #expect(r["finished"] as? Bool == true && r["changesSent"] as? Int == 30, "sync while the database is down: \(r)")
        let down = feed { $0.database == "down" && ($0.lagChanges ?? 0) >= 30 && $0.lagSeconds >= 1 }
        #expect(down?.state == "retrying" && down?.lastError?.isEmpty == false && (down?.lagChanges ?? 0) >= 30 && (down?.lagSeconds ?? 0) >= 1,
                "\(String(describing: down))")
        // `status` prints the section as text too (it printed nothing of the feed before).
        let text = try w.run(["status", "--config", config])
        #expect(text.out.contains("feed: retrying into \(pg.url(database: "st")) schema fs; database down; lag ")
                && text.out.contains("; last error: "), "\(text)")
        try pg.startServer()
        let back = feed { $0.state == "caught-up" && $0.lagChanges == 0 && $0.changesFed >= 50 }
        #expect(back?.database == "up" && back?.lastError == nil && back?.lagSeconds == 0, "\(String(describing: back))")
        #expect(Self.wait(pg, "st", "SELECT count(*) FROM fs.incidents", equals: 50) == 50)
    }

    /// SIGTERM to a (debug-build) `serve` in the middle of a long feed: it stops after the batch in flight, not
    /// after the whole backlog, exits 0 without tripping postgres-nio's debug assertion on a connection let go
    /// unclosed, and the next start resumes from the cursor.
    @Test(.timeLimit(.minutes(4))) func shutdownMidFeedStopsAfterTheBatchInFlight() throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("stop")
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        try w.fill(hq, count: 3_000)
        let config = try Self.writeConfig(w, hq, url: pg.url(database: "stop"), batchSize: 10)
        var server = try Self.serve(w, hq, config: config)
        let fed = "SELECT coalesce(sum(changes_fed), 0) FROM fs.sources"
        let deadline = Date().addingTimeInterval(60)
        var fedAtStop = 0
        while Date() < deadline {
            fedAtStop = (try? pg.psql("stop", fed)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            if fedAtStop >= 50 { break }
            usleep(10_000)
        }
        server.terminate()
        server.waitUntilExit()
        let log = try w.serverLog(hq)
        #expect(server.terminationReason == .exit && server.terminationStatus == 0, "exit \(server.terminationStatus): \(log.suffix(2_000))")
        for trap in ["Fatal error", "Assertion failed", "deinitialized before being closed"] { #expect(!log.contains(trap), "\(log.suffix(2_000))") }
        let fedAfter = Int(try pg.psql("stop", fed).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(fedAtStop >= 50 && fedAfter < 3_000, "stopped mid-feed: \(fedAtStop) fed at SIGTERM, \(fedAfter) of 3000 at exit")
        // Rows and cursor moved together: every change fed is its incident's row.
        #expect(try pg.psql("stop", "SELECT count(*) FROM fs.incidents") == "\(fedAfter)\n")
        server = try Self.serve(w, hq, config: config)
        #expect(Self.wait(pg, "stop", "SELECT count(*) FROM fs.incidents", equals: 3_000, seconds: 120) == 3_000, "\((try? w.serverLog(hq)) ?? "")")
        server.terminate()
        server.waitUntilExit()
        #expect(server.terminationStatus == 0)
        try Self.expectRowsEqualStore(w, hq, pg, "stop")
    }

    /// A sink let go with its connection open closes it: postgres-nio asserts in a debug build (this test
    /// process would trap) that a connection is closed before it is released.
    @Test(.timeLimit(.minutes(1))) func aSinkLetGoWithItsConnectionOpenClosesIt() async throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        try pg.createDatabase("gone")
        var sink: PostgresFeedSink? = PostgresFeedSink(configuration: try FeedConfiguration(url: pg.url(database: "gone"), schema: "fs"),
                                                       logger: Logger(label: "test"))
        #expect(try await sink?.migrate() == [1])
        #expect(try pg.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'gone'") == "1\n")
        sink = nil
        #expect(Self.wait(pg, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'gone'", equals: 0, seconds: 10) == 0)
    }

    /// The feed trusts the store's check at ingest instead of verifying each signature again: a change whose
    /// bytes no longer hash to its id (damaged on disk) is left out and named, not fed; a store rewritten
    /// consistently (bytes and hash) by someone who can write its file is what only `--recheck-signatures`
    /// notices (docs/postgres-feed.md says so).
    @Test(.timeLimit(.minutes(1))) func damagedChangesAreLeftOutAndOnlyARecheckSeesARewrittenStore() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        try w.fill(hq, count: 3)
        let r = try w.replicator(hq)
        let store = try #require(r.store as? SQLiteStore)
        func batch(recheck: Bool = false) throws -> FeedBatch {
            try FeedRows.batch(store.feedChanges(after: 0, limit: 10), verifier: r.verifier(), now: ProcessWorld.now(), recheckSignatures: recheck,
                               records: store.feedRecords)
        }
        let clean = try batch()
        #expect(clean.incidents.count == 3 && clean.history.count == 6 && clean.history.allSatisfy(\.signatureVerified) && clean.damagedChanges.isEmpty)
        #expect(try batch(recheck: true).history.allSatisfy(\.signatureVerified))
        let second = try store.feedChanges(after: 0, limit: 10)[1]
        var bytes = second.change.bytes
        bytes[bytes.count - 10] ^= 0x01  // in the signature: the change still decodes and opens
        let q = try DatabaseQueue(path: hq.store)
        try q.write { db in try db.execute(sql: "UPDATE changes SET bytes = ? WHERE rowid = ?", arguments: [Data(bytes), second.rowid]) }
        let damaged = try batch()
        #expect(damaged.damagedChanges == [second.rowid] && damaged.history.count == 4
                && !damaged.history.contains { $0.changeHash == second.change.hash }, "\(damaged.damagedChanges)")
        // Rewritten consistently: the hash column follows the bytes. Trusting the store feeds it as verified.
        let rewritten = try BLAKE2b.hash(bytes, outputLength: 32)
        try q.write { db in try db.execute(sql: "UPDATE changes SET hash = ? WHERE rowid = ?", arguments: [Data(rewritten), second.rowid]) }
        let trusted = try batch()
        #expect(trusted.damagedChanges.isEmpty && trusted.history.filter { $0.changeHash == rewritten }.map(\.signatureVerified) == [true, true])
        let rechecked = try batch(recheck: true)
        #expect(rechecked.history.filter { $0.changeHash == rewritten }.map(\.signatureVerified) == [false, false])
        let others = rechecked.history.filter { $0.changeHash != rewritten }
        #expect(others.allSatisfy { $0.signatureVerified })
    }

    /// `sslmode=require` against a server without TLS: a clear error, no plaintext connection.
    @Test(.timeLimit(.minutes(2))) func sslmodeRequireAgainstAServerWithoutTLSFailsClearly() async throws {
        guard let pg = try Self.cluster() else { return }
        defer { pg.destroy() }
        let config = try FeedConfiguration(url: pg.tcpURL(database: "postgres", query: "sslmode=require"), schema: "fs")
        let sink = PostgresFeedSink(configuration: config, logger: Logger(label: "test"))
        do {
            try await sink.migrate()
            Issue.record("connected without TLS")
        } catch {
            let text = FeedError.describe(error)
            #expect(text.contains("sslmode=require") && text.contains("does not offer TLS"), "\(text)")
        }
        await sink.close()
        // Without sslmode the same server is reached (the failure above was TLS, not the address).
        let plain = PostgresFeedSink(configuration: try FeedConfiguration(url: pg.tcpURL(database: "postgres"), schema: "fs"), logger: Logger(label: "test"))
        #expect(try await plain.migrate() == [1])
        await plain.close()
    }

    /// The feed writes plaintext: `serve` with a feed and `feed rebuild` are refused on backpack and relay roles.
    @Test(.timeLimit(.minutes(1))) func refusedOnBackpackAndRelay() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let relay = try w.device("relay", .relay, ["longnan/wudu"], readsRecords: false)
        for d in [bp, relay] {
            let config = try Self.writeConfig(w, d, url: "postgres://postgres@127.0.0.1:1/none")
            let serve = try w.run(["serve", "--config", config])
            #expect(serve.status != 0 && serve.err.contains("refused on a \(d == bp ? "backpack" : "relay") device"), "\(serve)")
            let rebuild = try w.run(["feed", "rebuild", "--config", config])
            #expect(rebuild.status != 0 && rebuild.err.contains("writes the records it decrypts in plaintext"), "\(rebuild)")
        }
    }

    /// Config errors name what is wrong: a password in the URL, a schema that is not an identifier, a password
    /// file others can read; U+0000 (which PostgreSQL text cannot hold) is written as U+FFFD, not a stuck feed.
    @Test func configurationAndTextChecks() throws {
        #expect(throws: FeedError.self) { try FeedConfiguration(url: "postgres://u:secret@h/db") }
        #expect(throws: FeedError.self) { try FeedConfiguration(url: "postgres://u@h/db", schema: "x; DROP TABLE y") }
        #expect(throws: FeedError.self) { try FeedConfiguration(url: "postgres://u@h/db?sslmode=sometimes") }
        let c = try FeedConfiguration(url: "postgres://fieldsync@db.hq:5433/police?sslmode=verify-full", schema: "longnan")
        #expect(c.user == "fieldsync" && c.host == "db.hq" && c.port == 5433 && c.database == "police" && c.tls == .verifyFull)
        let file = NSTemporaryDirectory() + "pw-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: file) }
        _ = FileManager.default.createFile(atPath: file, contents: Data("s3cret\nignored\n".utf8), attributes: [.posixPermissions: 0o644])
        let open = try FeedConfiguration(url: "postgres://u@h/db", passwordFile: file)
        #expect(throws: FeedError.self) { try open.password() }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
        #expect(try open.password() == "s3cret")
        #expect(FeedRows.text("a\u{0}b") == "a\u{FFFD}b" && FeedRows.text("plain") == "plain")
    }
}

extension ProcessWorld.Device: Equatable {
    static func == (a: Self, b: Self) -> Bool { a.dir == b.dir }
}
