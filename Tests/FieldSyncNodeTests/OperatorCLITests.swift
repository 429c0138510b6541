import FieldSyncTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What an operator sees from the command line (issue 19): where results and errors go, dates a person can
/// read, certificate lifetimes, the revocation cut-off, and `status` telling a dead daemon from a live one.
@Suite(.ownThread) struct OperatorCLITests {
    static let scope = "longnan/wudu/station-017"

    /// A temporary directory with HQ, a backpack unit `bp` and a station `st` (key files: fast), enrolled
    /// without `--days`, and an epoch key file.
    static func world() throws -> String {
        let dir = NSTemporaryDirectory() + "fieldsync-operator-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for step in [["authority", "init", "--dir", "hq", "--key-file", "hq.key"],
                     ["device", "init", "--dir", "bp", "--key-file", "bp.key", "--role", "backpack", "--scope", scope, "--label", "bp"],
                     ["device", "init", "--dir", "st", "--key-file", "st.key", "--role", "station", "--scope", scope, "--label", "st"],
                     ["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "backpack", "--scope", scope,
                      "--out", "bp.cert"],
                     ["authority", "enroll", "st/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "station", "--scope", scope,
                      "--out", "st.cert"],
                     ["device", "import", "bp.cert", "--dir", "bp", "--key-file", "bp.key", "--root", "hq/root.pub"],
                     ["device", "import", "st.cert", "--dir", "st", "--key-file", "st.key", "--root", "hq/root.pub"],
                     ["epoch-key", "new", "--scope", scope, "--out", "s.epochkey"]] {
            let r = try FieldSyncBinary.run(step, in: dir)
            guard r.status == 0 else { throw DocPage.Problem(description: "\(step): \(r.err)") }
        }
        return dir
    }

    static let bp = ["--dir", "bp", "--key-file", "bp.key", "--store", "bp.sqlite", "--epoch-key-file", "s.epochkey"]
    static let st = ["--dir", "st", "--key-file", "st.key", "--store", "st.sqlite", "--epoch-key-file", "s.epochkey"]

    /// A station `serve` on a free port, started and waited for.
    final class Station {
        let process = Process()
        let port: UInt16
        let log: String

        init(in dir: String, device: [String] = OperatorCLITests.st, extra: [String] = []) throws {
            port = try FreePort.pick()
            log = dir + "/serve.log"
            FileManager.default.createFile(atPath: log, contents: nil)
            process.executableURL = URL(fileURLWithPath: try FieldSyncBinary.required())
            process.arguments = ["serve"] + device + ["--listen", "127.0.0.1:\(port)"] + extra
            process.currentDirectoryURL = URL(fileURLWithPath: dir)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline, process.isRunning, !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("serving") {
                usleep(20_000)
            }
            guard ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("serving") else {
                process.terminate()
                throw DocPage.Problem(description: "serve did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
        }

        func stop(signal: Int32 = SIGTERM) {
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }
    }

    /// Issue 19, item 5: `sync` printed its result twice (standard output, and a timestamped copy of the session
    /// line on standard error), and `export --out` reported on standard error, though cli.md says results go to
    /// standard output.
    @Test func resultsGoToStandardOutputOnce() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = try FieldSyncBinary.run(["incident", "new"] + Self.bp + ["--scope", Self.scope, "--category", "dispute", "--priority", "high",
                                                                            "--summary", "s", "--lat", "1", "--lon", "2"], in: dir)
        #expect(made.status == 0, "\(made.err)")
        let station = try Station(in: dir)
        let sync = try FieldSyncBinary.run(["sync", "127.0.0.1:\(station.port)"] + Self.bp, in: dir)
        station.stop()
        #expect(sync.status == 0, "\(sync.err)")
        #expect(sync.out.contains("finished; sent"), "the result is on standard output: \(sync.out)")
        #expect(!sync.err.contains("finished; sent"), "and only there: \(sync.err)")
        let export = try FieldSyncBinary.run(["export"] + Self.bp + ["--format", "csv", "--out", "r.csv"], in: dir)
        #expect(export.status == 0 && export.out.contains("exported 1 record to r.csv") && export.err.isEmpty, "out: \(export.out) err: \(export.err)")
    }

    /// Issue 19, item 5: with `--json`, an error of a command that is not a record command was plain text.
    @Test func jsonErrorsAreJSON() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try FreePort.pick()  // nothing listens there
        for args in [["sync", "127.0.0.1:\(port)", "--json"] + Self.bp,
                     ["device", "show", "--dir", "nowhere", "--key-file", "bp.key", "--json"],
                     ["status", "--dir", "bp", "--key-file", "bp.key", "--store", "missing.sqlite", "--json"]] {
            let r = try FieldSyncBinary.run(args, in: dir)
            #expect(r.status != 0, "\(args)")
            let object = try? JSONSerialization.jsonObject(with: Data(r.err.utf8)) as? [String: Any]
            #expect(object?["error"] is String && object?["exitCode"] as? Int == Int(r.status), "\(args): \(r.err)")
        }
        // A usage error keeps the parser's text and exit 64.
        let usage = try FieldSyncBinary.run(["sync", "--json", "--bogus"], in: dir)
        #expect(usage.status == 64 && usage.err.contains("Error:"), "\(usage.err)")
    }

    /// Issue 19 ("Honest outcomes"): a revoked device syncing to a node that knows the revocation saw
    /// `connectionClosed: connection closed mid-session`; it is told `revoked` in a sealed refusal after the handshake.
    @Test func aRevokedDeviceIsToldItIsRevoked() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for step in [["authority", "revoke", "--certificate", "bp.cert", "--dir", "hq", "--key-file", "hq.key", "--reason", "lost", "--out", "bp.rev"],
                     ["publish", "bp.rev"] + Array(Self.st.prefix(6))] {
            let r = try FieldSyncBinary.run(step, in: dir)
            #expect(r.status == 0, "\(step): \(r.err)")
        }
        let station = try Station(in: dir)
        let sync = try FieldSyncBinary.run(["sync", "127.0.0.1:\(station.port)"] + Self.bp, in: dir)
        station.stop()
        #expect(sync.status == 1 && sync.out.contains("failed: revoked: the peer refused this device"), "\(sync.out)\(sync.err)")
    }

    /// Issue 19 ("Certificates": a warning before a certificate *or its issuer* expires): a device enrolled by a
    /// county authority whose own certificate ends in 10 days (the device's in 100) is warned about the
    /// authority's, in `status` (text and `--json`), in the daemon's log and in the metric
    /// `fieldsync_certificate_chain_expiry_seconds`. Before, only the device's own certificate was watched.
    @Test func theIssuersExpiryIsWarnedAbout() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for step in [["authority", "init", "--county", "--dir", "wudu", "--key-file", "wudu.key", "--scope", "longnan/wudu"],
                     ["authority", "delegate", "wudu/authority.req", "--dir", "hq", "--key-file", "hq.key", "--scope", "longnan/wudu",
                      "--days", "10", "--out", "wudu.cert"],
                     ["authority", "import", "wudu.cert", "--dir", "wudu", "--key-file", "wudu.key", "--root", "hq/root.pub"],
                     ["device", "init", "--dir", "cb", "--key-file", "cb.key", "--role", "station", "--scope", Self.scope, "--label", "cb"],
                     ["authority", "enroll", "cb/enrollment.req", "--dir", "wudu", "--key-file", "wudu.key", "--role", "station",
                      "--scope", Self.scope, "--days", "100", "--out", "cb.cert"],
                     ["device", "import", "cb.cert", "--dir", "cb", "--key-file", "cb.key", "--root", "hq/root.pub", "--authority", "wudu.cert"]] {
            let r = try FieldSyncBinary.run(step, in: dir)
            #expect(r.status == 0, "\(step): \(r.err)")
        }
        let cb = ["--dir", "cb", "--key-file", "cb.key", "--store", "cb.sqlite"]
        // The daemon (which creates the store `status` reads): one log line, and the metric an alert watches.
        let metricsPort = try FreePort.pick()
        let daemon = try Station(in: dir, device: cb, extra: ["--metrics-listen", "127.0.0.1:\(metricsPort)"])
        defer { daemon.stop() }
        var metrics = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !metrics.contains("fieldsync_certificate_chain_expiry_seconds ") {
            metrics = (try? String(contentsOf: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!, encoding: .utf8)) ?? ""
            usleep(100_000)
        }
        let seconds = metrics.split(separator: "\n").first { $0.hasPrefix("fieldsync_certificate_chain_expiry_seconds ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect(seconds.map { $0 > 9 * 86_400 && $0 <= 10 * 86_400 } == true, "\(metrics)")
        let own = metrics.split(separator: "\n").first { $0.hasPrefix("fieldsync_certificate_expiry_seconds ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect(own.map { $0 > 99 * 86_400 } == true, "the device's own is still there: \(metrics)")
        let log = (try? String(contentsOfFile: daemon.log, encoding: .utf8)) ?? ""
        #expect(log.contains("the certificate of this device's issuer (county authority"), "\(log)")
        let status = try FieldSyncBinary.run(["status"] + cb, in: dir)
        #expect(status.status == 0, "\(status.err)")
        #expect(status.out.contains("(99 days left)") || status.out.contains("(100 days left)"), "\(status.out)")
        #expect(status.out.contains("issuer: county authority"), "\(status.out)")
        #expect(status.out.contains("WARNING: the certificate of this device's issuer (county authority ")
                && (status.out.contains("in 9 day(s)") || status.out.contains("in 10 day(s)")), "\(status.out)")
        #expect(!status.out.contains("WARNING: this device's certificate"), "its own has 100 days: \(status.out)")
        let json = try FieldSyncBinary.run(["status", "--json"] + cb, in: dir)
        let object = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        let issuer = object?["issuerCertificate"] as? [String: Any]
        #expect(issuer?["expiresSoon"] as? Bool == true && (issuer?["daysLeft"] as? Int ?? 0) >= 9, "\(json.out)")
        #expect((object?["warnings"] as? [String])?.count == 1, "\(json.out)")
    }

    /// Issue 19 ("Honest outcomes"): a sender whose changes a full relay refused saw `sent 34 (acked 34)`. Two
    /// processes: a relay `serve` with a 1 MiB quota, a backpack with 2,500 records (34 changes, 1.6 MB);
    /// `sync` prints what the relay refused and why, and `--json` carries it (the second sync offers the
    /// refused changes again and they are refused again).
    @Test func syncShowsWhatAFullRelayRefused() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for step in [["device", "init", "--dir", "rl", "--key-file", "rl.key", "--role", "relay", "--scope", "longnan/wudu", "--label", "rl"],
                     ["authority", "enroll", "rl/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "relay", "--scope", "longnan/wudu",
                      "--out", "rl.cert"],
                     ["device", "import", "rl.cert", "--dir", "rl", "--key-file", "rl.key", "--root", "hq/root.pub"]] {
            let r = try FieldSyncBinary.run(step, in: dir)
            #expect(r.status == 0, "\(step): \(r.err)")
        }
        let records: [[String: Any]] = (0..<2_500).map { i in
            ["kind": "incident", "status": "reported", "scope": Self.scope, "category": "fire", "priority": "normal",
             "location": ["lat": 33.39, "lon": 104.93], "summary": String(repeating: "x", count: 480) + "\(i)", "reportedAt": "2026-11-29",
             "reporter": "r"]
        }
        try JSONSerialization.data(withJSONObject: records).write(to: URL(fileURLWithPath: dir + "/recs.json"))
        let imported = try FieldSyncBinary.run(["import", "recs.json"] + Self.bp, in: dir)
        #expect(imported.status == 0, "\(imported.err)")
        try Data(#"{ "device": { "dir": "rl", "keyFile": "rl.key" }, "store": { "path": "rl.sqlite" }, "relay": { "quotaBytes": 1048576 } }"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/relay.json"))
        let relay = try Station(in: dir, device: ["--config", "relay.json"])
        defer { relay.stop() }
        let sync = try FieldSyncBinary.run(["sync", "127.0.0.1:\(relay.port)"] + Self.bp, in: dir)
        #expect(sync.status == 0, "a refusal for room is no failure: \(sync.out)\(sync.err)")
        let shown = sync.out.range(of: #"sent (\d+) \(acked (\d+), refused (\d+) by the peer: relay full\)"#, options: .regularExpression)
        #expect(shown != nil, "\(sync.out)")
        let json = try FieldSyncBinary.run(["sync", "127.0.0.1:\(relay.port)", "--json"] + Self.bp, in: dir)
        let object = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        let refused = object?["changesRefusedByPeer"] as? Int ?? 0
        #expect(refused > 0 && object?["changesAcknowledged"] as? Int == 0 && object?["changesSent"] as? Int == refused, "\(json.out)")
        #expect((object?["refusedByPeer"] as? [String: Int]) == ["quota": refused], "\(json.out)")
    }

    /// Issue 19, item 7: after `kill -9`, `status` said "daemon: running, pid N" from the file the dead daemon left.
    @Test func statusAfterKill9SaysNotRunning() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let station = try Station(in: dir)
        let live = try FieldSyncBinary.run(["status"] + Self.st.prefix(6), in: dir)
        #expect(live.out.contains("daemon: running, pid \(station.process.processIdentifier)"), "\(live.out)\(live.err)")
        station.stop(signal: SIGKILL)
        let dead = try FieldSyncBinary.run(["status"] + Self.st.prefix(6), in: dir)
        #expect(dead.status == 0, "\(dead.err)")
        #expect(!dead.out.contains("daemon: running") && dead.out.contains("daemon: not running"), "\(dead.out)")
        let json = try FieldSyncBinary.run(["status", "--json"] + Self.st.prefix(6), in: dir)
        let daemon = (try? JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])?["daemon"] as? [String: Any]
        #expect(daemon?["alive"] as? Bool == false, "\(json.out)")
    }

    /// Issue 16: the plain-text `status` left out the `feed` section of the daemon's status file (only `--json`
    /// and `feed status` showed it): the feed's state, the database, the lag in changes and seconds, the last error.
    @Test func statusShowsTheFeedSectionInText() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let station = try Station(in: dir)
        station.stop()  // a status file of a stopped daemon, given the section a feed that lost its database writes
        let path = dir + "/st.sqlite.status.json"
        func withFeed(_ feed: [String: Any]) throws {
            var file = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
            file["feed"] = feed
            try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: path))
        }
        let target = "postgres://fieldsync@db.hq.longnan:5432/police?sslmode=require schema fieldsync"
        try withFeed(["target": target, "state": "retrying", "database": "down", "lagChanges": 30, "lagSeconds": 12, "changesFed": 20,
                      "lastError": "PostgreSQL: connectionError (connection refused)", "retryAt": 1_780_000_000_000])
        let down = try FieldSyncBinary.run(["status"] + Self.st.prefix(6), in: dir)
        #expect(down.status == 0, "\(down.err)")
        #expect(down.out.contains("feed: retrying into \(target); database down; lag 30 change(s), 12 s; 20 change(s) fed since the daemon "
                                  + "started; last error: PostgreSQL: connectionError (connection refused)\n"), "\(down.out)")
        try withFeed(["target": target, "state": "starting", "database": "unknown", "lagSeconds": 0, "changesFed": 0])
        let unknown = try FieldSyncBinary.run(["status"] + Self.st.prefix(6), in: dir)
        #expect(unknown.out.contains("feed: starting into \(target); database unknown; lag unknown change(s) (the database has not answered "
                                     + "since the daemon started), 0 s; 0 change(s) fed since the daemon started\n"), "\(unknown.out)")
    }

    /// Issue 19 ("Epoch keys"; item 1's README made a second key under `station-017#1`): `keys list` shows every key
    /// a device holds with where it came from, and two different keys under one scope and epoch are flagged (exit 65),
    /// in `status` too.
    @Test func keysListFlagsTwoKeysUnderOneScopeAndEpoch() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for step in [["authority", "grant", "--dir", "hq", "--key-file", "hq.key", "--epoch-key-file", "s.epochkey", "--member", "bp.cert",
                      "--out", "s.grant"],
                     ["publish", "s.grant", "--dir", "bp", "--key-file", "bp.key", "--store", "bp.sqlite"],
                     ["epoch-key", "new", "--scope", Self.scope, "--out", "other.epochkey"]] {
            let r = try FieldSyncBinary.run(step, in: dir)
            #expect(r.status == 0, "\(step): \(r.err)")
        }
        let device = ["--dir", "bp", "--key-file", "bp.key", "--store", "bp.sqlite"]
        let one = try FieldSyncBinary.run(["keys", "list"] + device, in: dir)
        #expect(one.status == 0 && one.out.contains("\(Self.scope)  epoch 1  key ") && one.out.contains("grant signed")
                && one.out.contains("1 key(s)"), "\(one.out)\(one.err)")
        let two = try FieldSyncBinary.run(["keys", "list"] + device + ["--epoch-key-file", "other.epochkey"], in: dir)
        #expect(two.status == 65 && two.out.contains("--epoch-key-file  CONFLICT") && two.err.contains("two different keys under one scope and epoch"),
                "\(two.out)\(two.err)")
        try #"{"device": {"dir": "bp", "keyFile": "bp.key"}, "store": {"path": "bp.sqlite"}, "epochKeyFiles": ["other.epochkey"]}"#
            .write(toFile: dir + "/bp.json", atomically: true, encoding: .utf8)
        let status = try FieldSyncBinary.run(["status", "--config", "bp.json"], in: dir)
        #expect(status.out.contains("WARNING: two different keys under one scope and epoch"), "\(status.out)\(status.err)")
    }

    /// Issue 19, items 2 and 3: `authority revoke` had no way to set the cut-off the docs ask to choose; relays and
    /// stations got the backpack's 7-day certificate when `--days` was left out (an unattended relay stopped
    /// after a week); dates were printed as raw milliseconds.
    @Test func revocationCutOffCertificateDefaultsAndDates() throws {
        let dir = try Self.world()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let show = try FieldSyncBinary.run(["device", "show", "--dir", "st", "--key-file", "st.key", "--json"], in: dir)
        let cert = (try? JSONSerialization.jsonObject(with: Data(show.out.utf8)) as? [String: Any])?["certificate"] as? [String: Any]
        let days = ((cert?["notAfter"] as? Int ?? 0) - (cert?["notBefore"] as? Int ?? 0)) / 86_400_000
        #expect(days == 365, "a station enrolled without --days: \(show.out)")
        #expect((cert?["notAfterTime"] as? String)?.hasSuffix("Z") == true, "\(show.out)")
        let bpShow = try FieldSyncBinary.run(["device", "show", "--dir", "bp", "--key-file", "bp.key"], in: dir)
        #expect(bpShow.out.contains("days left") && bpShow.out.contains("WARNING: this device's certificate expires"),
                "a 7-day backpack certificate is within the 30-day warning: \(bpShow.out)")

        let revoke = try FieldSyncBinary.run(["authority", "revoke", "--certificate", "bp.cert", "--dir", "hq", "--key-file", "hq.key",
                                              "--reason", "lost", "--at", "2026-12-01T06:00:00Z", "--out", "bp.rev", "--json"], in: dir)
        #expect(revoke.status == 0, "\(revoke.err)")
        let o = try? JSONSerialization.jsonObject(with: Data(revoke.out.utf8)) as? [String: Any]
        #expect(o?["revokedAtTime"] as? String == "2026-12-01T06:00:00.000Z", "\(revoke.out)")
        let future = try FieldSyncBinary.run(["authority", "revoke", "--certificate", "bp.cert", "--dir", "hq", "--key-file", "hq.key",
                                              "--reason", "lost", "--at", "+2h", "--out", "bp2.rev"], in: dir)
        #expect(future.status == 64 && future.err.contains("in the future"), "\(future.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/bp2.rev"))
        // cert show: the certificate in words and dates, checked against a root.
        let certShow = try FieldSyncBinary.run(["cert", "show", "st.cert", "--root", "hq/root.pub"], in: dir)
        #expect(certShow.status == 0 && certShow.out.contains("role      station") && certShow.out.contains("valid now under the root")
                && (certShow.out.contains("(365 days left)") || certShow.out.contains("(364 days left)")), "\(certShow.out)\(certShow.err)")
        let other = try FieldSyncBinary.run(["authority", "init", "--dir", "hq2", "--key-file", "hq2.key"], in: dir)
        #expect(other.status == 0)
        let foreign = try FieldSyncBinary.run(["cert", "show", "st.cert", "--root", "hq2/root.pub"], in: dir)
        #expect(foreign.status == 1 && foreign.out.contains("NOT valid now"), "\(foreign.out)\(foreign.err)")
        // The authority's list of what it signed.
        let list = try FieldSyncBinary.run(["authority", "list", "--dir", "hq"], in: dir)
        let lines = list.out.split(separator: "\n")
        #expect(list.status == 0 && lines.count == 4, "\(list.out)\(list.err)")
        #expect(lines.count == 4 && lines[0].contains("enrolled") && lines[0].contains("backpack") && lines[1].contains("station")
                && lines[2].contains("revoked") && lines[2].contains("from 2026-12-01T06:00:00.000Z (lost)") && lines[3].contains("3 entries"),
                "\(list.out)")
        // The published revocation cuts off at that time: the station's store holds it.
        let published = try FieldSyncBinary.run(["publish", "bp.rev"] + Self.st.prefix(6), in: dir)
        #expect(published.status == 0, "\(published.err)")
    }
}
