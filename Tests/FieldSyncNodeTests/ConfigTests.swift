import FieldSyncTestSupport
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation
import NIOCore
import Testing

@Suite(.ownThread) struct ConfigTests {
    static func decode(_ json: String) throws -> NodeConfigFile { try NodeConfigFile.decode(Data(json.utf8), source: "test.json") }

    static func error(_ json: String) -> ConfigError? {
        do {
            _ = try decode(json)
            return nil
        } catch let e as ConfigError { return e } catch { return ConfigError(key: "?", "\(error)") }
    }

    static let minimal = #"{"device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}}"#

    @Test func minimalConfigTakesTheDocumentedDefaults() throws {
        let c = try Self.decode(Self.minimal)
        #expect(c.listen == "0.0.0.0:7000" && c.network == "longnan-police" && c.peers.isEmpty && c.epochKeyFiles.isEmpty)
        #expect(c.sessions == NodeConfigFile.Sessions() && c.sessions.max == 8 && c.sessions.idleTimeoutSeconds == 30
            && c.sessions.shutdownGraceSeconds == 10 && c.sessions.live && c.sessions.maxLive == 64)
        #expect(c.schedule.resyncIntervalSeconds == 300 && c.schedule.backoffMinMilliseconds == 1_000
            && c.schedule.backoffMaxMilliseconds == 300_000 && c.schedule.pushDebounceMilliseconds == 250
            && c.schedule.pollIntervalMilliseconds == 500)
        #expect(c.relay.quotaBytes == nil && !c.metrics.enabled && c.metrics.listen == "127.0.0.1:9464" && c.logLevel == "info")
        #expect(c.discovery == NodeConfigFile.Discovery() && c.discovery.port == 7946 && !c.discovery.enabled)
        #expect(c.statusPath == "s.sqlite.status.json")
        let p = c.schedulePolicy
        #expect(p.maxSessions == 8 && p.resyncInterval == 300_000 && p.backoffMin == 1_000 && p.backoffMax == 300_000 && p.pushDebounce == 250)
        let n = c.nodeConfiguration
        #expect(n.liveSessions && n.maxLiveSessions == 64 && n.maxConcurrentSessions == 8 && n.idleTimeout == .seconds(30)
            && n.connectTimeout == .seconds(10) && n.network.networkID == "longnan-police" && n.keepAlive == TCPKeepAlive())
        // Availability limits (issue 13): the documented defaults, and the node's own defaults agree.
        #expect(n.handshakeTimeout == .seconds(5) && n.maxPendingHandshakes == 16 && n.maxHandshakesPerSource == 4
            && n.minProgressBytes == 1_024 && n.progressInterval == .seconds(10))
        let plain = NodeConfiguration(network: NetworkParameters(networkID: "n"))
        #expect(plain.handshakeTimeout == n.handshakeTimeout && plain.maxPendingHandshakes == n.maxPendingHandshakes
            && plain.maxHandshakesPerSource == n.maxHandshakesPerSource && plain.minProgressBytes == n.minProgressBytes
            && plain.progressInterval == n.progressInterval)
        #expect(p.maxProbes == 2 && SchedulePolicy().maxProbes == 2)
        #expect(c.metrics.maxConnections == 8 && c.metrics.idleTimeoutSeconds == 5)
    }

    /// Keep-alive of live sessions (issue 14): on by default with the driver's policy (the simulator's);
    /// 0 turns it off (the live idle close then applies); a dead-peer time not above the interval is refused.
    @Test func keepAliveKeysMapOntoTheDriversPolicy() throws {
        let c = try Self.decode(Self.minimal)
        #expect(c.sessions.keepAliveSeconds == 600 && c.sessions.deadPeerSeconds == 1_500)
        #expect(c.nodeConfiguration.liveKeepAlive == KeepAlivePolicy.default && KeepAlivePolicy.default == DriverPolicy().liveKeepAlive)
        #expect(NodeConfiguration(network: NetworkParameters(networkID: "n")).liveKeepAlive == .default)
        var off = try Self.decode(#"{"device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}, "sessions": {"keepAliveSeconds": 0}}"#)
        #expect(off.nodeConfiguration.liveKeepAlive == nil && off.nodeConfiguration.liveIdleTimeout == .seconds(600))
        #expect(!off.check().contains { $0.key?.hasPrefix("sessions.") == true })
        var set = try Self.decode(#"{"device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}, "sessions": {"keepAliveSeconds": 60, "deadPeerSeconds": 200}}"#)
        #expect(set.nodeConfiguration.liveKeepAlive == KeepAlivePolicy(interval: 60_000, deadAfter: 200_000))
        #expect(!set.check().contains { $0.key?.hasPrefix("sessions.") == true })
        set.sessions.deadPeerSeconds = 60
        #expect(set.check().contains { $0.key == "sessions.deadPeerSeconds" })
        #expect(set.nodeConfiguration.liveKeepAlive == nil, "an invalid pair never reaches the node as a policy that traps")
        off.sessions.keepAliveSeconds = -1
        #expect(off.check().contains { $0.key == "sessions.keepAliveSeconds" })
    }

    /// Found by fuzzing the config file (docs/fuzzing.md): a one-character store path or status file
    /// (`"s"`) made `check()` trap inside Foundation's `deletingLastPathComponent`, and so did
    /// `fieldsync config check c` (a config file named `c`). Now such a path's folder is `.`.
    @Test func oneCharacterPathsAreChecked() throws {
        var c = try Self.decode(#"{"device": {"dir": "d", "keyFile": "k"}, "store": {"path": "s"}, "statusFile": "t"}"#)
        let problems = c.check().compactMap(\.key)
        #expect(!problems.contains("store.path") && !problems.contains("statusFile"))
        c.store.path = "/no/such/folder/s"
        #expect(c.check().contains { $0.key == "store.path" })
        #expect(PathText.folder(of: "c") == "." && PathText.folder(of: "") == "." && PathText.folder(of: "é") == ".")
        #expect(PathText.folder(of: "/a/b") == "/a" && PathText.folder(of: "/a") == "/" && PathText.folder(of: "a/b/") == "a")
        #expect(PathText.folder(of: "/") == "/" && PathText.folder(of: "a//b") == "a" && PathText.folder(of: "./c") == ".")
    }

    @Test func liveSessionsCanBeTurnedOff() throws {
        let c = try Self.decode(#"{"device": {"dir": "d", "keyFile": "k"}, "store": {"path": "s"}, "sessions": {"live": false, "maxLive": 3}}"#)
        #expect(!c.sessions.live && c.sessions.maxLive == 3 && !c.nodeConfiguration.liveSessions && c.nodeConfiguration.maxLiveSessions == 3)
        #expect(NodeConfiguration(network: NetworkParameters(networkID: "n")).liveSessions == false, "a plain node (one-shot sync) is not live")
        let type = Self.error(#"{"device": {"dir": "d"}, "store": {"path": "s"}, "sessions": {"live": "yes"}}"#)
        #expect(type?.key == "sessions.live" && type?.description.contains("true or false") == true, "\(String(describing: type))")
    }

    @Test func theExampleIsTheDefaults() throws {
        let c = try Self.decode(NodeConfigFile.examplePlain)
        var d = try Self.decode(Self.minimal)
        d.device = c.device
        d.store = c.store
        #expect(c == d)
        #expect(NodeConfigFile.example.contains("//") && !NodeConfigFile.examplePlain.contains("//"))
    }

    @Test func unknownKeysAreErrorsNamingTheKey() {
        #expect(Self.error(#"{"device": {"dir": "d"}, "store": {"path": "s"}, "peer": []}"#)?.key == "peer")
        let nested = Self.error(#"{"device": {"dir": "d"}, "store": {"path": "s"}, "sessions": {"maxSessions": 3}}"#)
        #expect(nested?.key == "sessions.maxSessions")
        #expect(nested?.description.contains("allowed here: connectTimeoutSeconds, deadPeerSeconds, handshakeTimeoutSeconds, idleTimeoutSeconds, "
                                                + "keepAliveSeconds, live, liveIdleTimeoutSeconds, max, maxHandshakes, maxHandshakesPerSource, maxLive, minProgressBytes, "
                                                + "progressIntervalSeconds, refusedRetrySeconds, shutdownGraceSeconds") == true,
                "\(String(describing: nested))")
    }

    @Test func typeAndSyntaxErrorsNameTheKey() {
        let type = Self.error(#"{"device": {"dir": "d"}, "store": {"path": "s"}, "sessions": {"max": "eight"}}"#)
        #expect(type?.key == "sessions.max" && type?.description.contains("must be an integer") == true, "\(String(describing: type))")
        let missing = Self.error(#"{"device": {"dir": "d"}}"#)
        #expect(missing?.key == "store" && missing?.description.contains("is required") == true, "\(String(describing: missing))")
        let peers = Self.error(#"{"device": {"dir": "d"}, "store": {"path": "s"}, "peers": ["a:1", 2]}"#)
        #expect(peers?.key == "peers[1]", "\(String(describing: peers))")
        let syntax = Self.error("{\"device\": {\"dir\": \"d\"}, // comment\n}")
        #expect(syntax?.description.contains("not valid JSON") == true, "\(String(describing: syntax))")
    }

    /// Issue 19, item 6: Foundation's decoder took a trailing comma and kept the last of two `listen` keys, so
    /// `config check` said OK to a file whose meaning depends on the reader.
    @Test func trailingCommasAndDuplicateKeysAreRefusedWithTheirPlace() throws {
        let comma = Self.error(#"{"device": {"dir": "d", "keyFile": "k"}, "store": {"path": "s"},}"#)
        #expect(comma?.description.contains("trailing comma") == true && comma?.description.contains("line 1, column 64") == true,
                "\(String(describing: comma))")
        let twice = Self.error("{\"device\": {\"dir\": \"d\", \"keyFile\": \"k\"}, \"store\": {\"path\": \"s\"},\n \"listen\": \"0.0.0.0:7000\",\n \"listen\": \"127.0.0.1:7001\"}")
        #expect(twice?.description.contains("`listen` is given twice (the first at line 2, column 2)") == true, "\(String(describing: twice))")
        let inArray = Self.error(#"{"device": {"dir": "d", "keyFile": "k"}, "store": {"path": "s"}, "peers": ["a:1",]}"#)
        #expect(inArray?.description.contains("trailing comma before `]`") == true, "\(String(describing: inArray))")
        let nested = Self.error(#"{"device": {"dir": "d", "dir": "e", "keyFile": "k"}, "store": {"path": "s"}}"#)
        #expect(nested?.description.contains("`device.dir` is given twice") == true, "\(String(describing: nested))")
        #expect(StrictJSON.problems(in: Data(Self.minimal.utf8)).isEmpty)
        #expect(StrictJSON.problems(in: Data(NodeConfigFile.examplePlain.utf8)).isEmpty)
        #expect(StrictJSON.problems(in: Data(#"{"a": [1, -2.5e3, true, null, "x\"\u00e9"], "b": {}}"#.utf8)).isEmpty)
        // A hostile file nested a million deep is refused with one problem, not a stack overflow.
        let deep = Data((String(repeating: "[", count: 1_000_000) + String(repeating: "]", count: 1_000_000)).utf8)
        #expect(StrictJSON.problems(in: deep) == ["line 1, column \(StrictJSON.maxDepth + 1): arrays and objects nested more than \(StrictJSON.maxDepth) deep"])
        let fine = Data((String(repeating: "[", count: StrictJSON.maxDepth) + String(repeating: "]", count: StrictJSON.maxDepth)).utf8)
        #expect(StrictJSON.problems(in: fine).isEmpty)
    }

    /// Issue 19, item 6: `config check` stopped at the first unknown key or wrong type; it lists them all now,
    /// with the syntax problems, in one run.
    @Test func checkListsEveryProblemAtOnce() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-config-all-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = """
            {"device": {"dir": "d", "keyFile": "k", "colour": 1}, "store": {"path": "s", "syncMode": 3},
             "listen": "0.0.0.0:7000", "listen": "0.0.0.0:7001", "peer": [], "sessions": {"max": "eight", "maxSessions": 2},
             "schedule": {"resyncIntervalSeconds": "soon"},}
            """
        try text.write(toFile: dir + "/all.json", atomically: true, encoding: .utf8)
        let problems = NodeConfigFile.problems(path: dir + "/all.json")
        let text2 = problems.map(\.description).joined(separator: "\n")
        #expect(problems.count == 8, "\(text2)")
        for expected in ["`listen` is given twice", "trailing comma", "unknown key `device.colour`", "`store.syncMode` must be",
                         "unknown key `peer`", "`sessions.max` must be an integer", "unknown key `sessions.maxSessions`",
                         "`schedule.resyncIntervalSeconds` must be an integer"] {
            #expect(text2.contains(expected), "missing \(expected) in:\n\(text2)")
        }
        // A file that is not JSON at all says so once, not once per reader.
        try "{\"device\": ".write(toFile: dir + "/cut.json", atomically: true, encoding: .utf8)
        let cut = NodeConfigFile.problems(path: dir + "/cut.json")
        #expect(cut.count == 1 && cut[0].description.contains("ends where a value was expected"), "\(cut)")
    }

    @Test func checkNamesEveryBadValueAndMissingFile() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/dev", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/dev/device.keystore", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: dir + "/k", contents: Data(repeating: 1, count: 32))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = """
            {"device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}, "peers": ["10.0.0.2:7000", "[::1]:7001"]}
            """
        try good.write(toFile: dir + "/good.json", atomically: true, encoding: .utf8)
        let c = try NodeConfigFile.load(path: dir + "/good.json")
        #expect(c.device.dir == dir + "/dev" && c.device.keyFile == dir + "/k" && c.store.path == dir + "/s.sqlite",
                "relative paths are taken from the config's folder")
        #expect(c.check().isEmpty, "\(c.check())")

        let bad = """
            {"device": {"dir": "nodev", "keyFile": "k", "passphraseFile": "p"}, "store": {"path": "nofolder/s.sqlite", "syncMode": "fast"},
             "epochKeyFiles": ["missing.key"], "listen": "0.0.0.0", "network": "", "peers": ["ok:1", "bad"],
             "sessions": {"max": 0, "idleTimeoutSeconds": 0, "maxLive": 0},
             "schedule": {"backoffMinMilliseconds": 5000, "backoffMaxMilliseconds": 1000, "pollIntervalMilliseconds": 1},
             "relay": {"quotaBytes": 10}, "metrics": {"enabled": true, "listen": "nope"}, "logLevel": "loud",
             "discovery": {"port": 0}}
            """
        try bad.write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        let keys = Set(try NodeConfigFile.load(path: dir + "/bad.json").check().compactMap(\.key))
        #expect(keys == ["device.dir", "device", "store.path", "store.syncMode", "epochKeyFiles[0]", "listen", "network", "peers[1]",
                         "sessions.max", "sessions.idleTimeoutSeconds", "sessions.maxLive", "schedule.backoffMaxMilliseconds",
                         "schedule.pollIntervalMilliseconds", "relay.quotaBytes", "metrics.listen", "logLevel", "statusFile", "discovery.port"],
                "\(keys.sorted())")
        #expect(throws: ConfigError.self) { try NodeConfigFile.load(path: dir + "/none.json") }
    }

    @Test func rolesDecideKeysAndQuota() throws {
        #expect(throws: NodeError.self) { try RolePolicy.check(role: .relay, epochKeys: 1, quotaBytes: nil) }
        #expect(throws: NodeError.self) { try RolePolicy.check(role: .station, epochKeys: 1, quotaBytes: 1 << 20) }
        try RolePolicy.check(role: .relay, epochKeys: 0, quotaBytes: 1 << 30)
        try RolePolicy.check(role: .backpack, epochKeys: 2, quotaBytes: nil)
        do { try RolePolicy.check(role: .relay, epochKeys: 2, quotaBytes: nil) } catch {
            #expect("\(error)".contains("remove `epochKeyFiles`"))
        }
    }

    /// HQ's receipts let relay boxes evict what they name: HQ must not run `store.syncMode = normal`, whose power
    /// loss takes back the commits since the last WAL checkpoint (issue 14, power loss in the simulator).
    /// Other roles may (a relay box on a UPS is what `normal` is for).
    @Test func hqRunsItsStoreFull() throws {
        do {
            try RolePolicy.check(role: .hq, epochKeys: 1, quotaBytes: nil, normalSync: true)
            Issue.record("HQ started with store.syncMode normal")
        } catch {
            #expect("\(error)".contains("syncMode"), "\(error)")
        }
        try RolePolicy.check(role: .hq, epochKeys: 1, quotaBytes: nil, normalSync: false)
        try RolePolicy.check(role: .relay, epochKeys: 0, quotaBytes: 1 << 30, normalSync: true)
        try RolePolicy.check(role: .station, epochKeys: 1, quotaBytes: nil, normalSync: true)
    }
}
