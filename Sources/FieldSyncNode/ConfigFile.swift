// The node's config file: one JSON object, every key optional except the device and the store, with the
// defaults documented in docs/node.md ("Config reference"). Decoding rejects unknown keys (a typo must
// not silently fall back to a default); `check` then validates values and files and names the key at
// fault with what to do.

import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncProtocol
import Foundation
import NIOCore

/// The daemon's configuration as read from a JSON file.
///
/// ```swift
/// let config = try NodeConfigFile.load(path: "/etc/fieldsync/node.json")
/// let problems = config.check()   // [] when ready to serve
/// ```
public struct NodeConfigFile: Sendable, Equatable, Decodable {
    /// The device: its directory and how to unlock its keystore.
    public struct Device: Sendable, Equatable, Decodable {
        /// The device directory (holds `device.keystore`). Required.
        public var dir: String
        /// File whose first line is the keystore passphrase (exactly one of this and `keyFile`).
        public var passphraseFile: String?
        /// 32-byte key file that unlocks the keystore (exactly one of this and `passphraseFile`).
        public var keyFile: String?

        static let keys: Set<String> = ["dir", "passphraseFile", "keyFile"]
        public init(dir: String, passphraseFile: String? = nil, keyFile: String? = nil) {
            self.dir = dir
            self.passphraseFile = passphraseFile
            self.keyFile = keyFile
        }

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "device")
            dir = try c.decode(String.self, forKey: AnyKey("dir"))
            passphraseFile = try c.decodeIfPresent(String.self, forKey: AnyKey("passphraseFile"))
            keyFile = try c.decodeIfPresent(String.self, forKey: AnyKey("keyFile"))
        }
    }

    /// The SQLite store.
    public struct Store: Sendable, Equatable, Decodable {
        /// The store file (created if missing). Required.
        public var path: String
        /// `full` (default: a committed batch survives power loss) or `normal` (WAL NORMAL; faster).
        public var syncMode = "full"
        /// Hard cap on the database file in bytes (SQLite `max_page_count`); null for none.
        public var maxFileBytes: Int?

        static let keys: Set<String> = ["path", "syncMode", "maxFileBytes"]
        public init(path: String) { self.path = path }

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "store")
            path = try c.decode(String.self, forKey: AnyKey("path"))
            syncMode = try c.value("syncMode", or: syncMode)
            maxFileBytes = try c.decodeIfPresent(Int.self, forKey: AnyKey("maxFileBytes"))
        }
    }

    /// Session limits and timing.
    public struct Sessions: Sendable, Equatable, Decodable {
        /// Most concurrent sessions, incoming and outgoing together (default 8).
        public var max = 8
        /// Seconds without bytes in either direction before a session is cut (default 30).
        public var idleTimeoutSeconds = 30
        /// Seconds to establish an outgoing TCP connection (default 10).
        public var connectTimeoutSeconds = 10
        /// On SIGTERM, seconds running sessions get to finish before they are cut (default 10).
        public var shutdownGraceSeconds = 10
        /// Keep sessions open after the first exchange and push later changes on them (live sessions,
        /// Protocols/sync.md §4.1; default true); false: one session per burst of changes.
        public var live = true
        /// Most sessions asking for live mode at once; further ones run as one-shot sessions (default 64).
        /// Live sessions do not count toward `max`.
        public var maxLive = 64
        /// Seconds after the store first refused changes on a live session (relay quota full, too many
        /// held back) before that session closes when idle, so that a new one offers them again (default 600).
        public var refusedRetrySeconds = 600
        /// Seconds without bytes in either direction after which a live session is closed (a normal end;
        /// the next session handshakes and reconciles anew, re-checking the peer); 0: never (default 600).
        public var liveIdleTimeoutSeconds = 600
        /// Seconds without sending after which a live session sends a keep-alive (a 19-byte sealed frame,
        /// Protocols/sync.md §4.1), so that an idle link stays open instead of being closed and handshaked
        /// again; 0: no keep-alive (then `liveIdleTimeoutSeconds` applies). Default 600.
        public var keepAliveSeconds = Int(KeepAlivePolicy.default.interval / 1_000)
        /// With keep-alive on: seconds without a byte from the peer after which a live session is cut as
        /// gone (`peer_gone`: powered off, hung, or a half-open connection). More than `keepAliveSeconds`.
        /// Default 1500.
        public var deadPeerSeconds = Int(KeepAlivePolicy.default.deadAfter / 1_000)
        /// Seconds a connection (either direction) may take to complete its handshake before it is cut
        /// (default 5).
        public var handshakeTimeoutSeconds = 5
        /// Most incoming connections in their handshake at once (the unauthenticated pool; they never
        /// take one of the `max` session slots) (default 16).
        public var maxHandshakes = 16
        /// Most incoming connections in their handshake from one source address (default 4).
        public var maxHandshakesPerSource = 4
        /// Most handshakes per 10 s from a source address with no authenticated session in the last hour;
        /// further connections from it are refused at accept (default 8; 0: no limit).
        public var unprovenHandshakesPerSource = 8
        /// A session with work to do that moves fewer bytes than this (both directions) in
        /// `progressIntervalSeconds` is cut (default 1024; 0: no progress check).
        public var minProgressBytes = 1_024
        /// The interval of the progress check, seconds (default 10).
        public var progressIntervalSeconds = 10

        static let keys: Set<String> = ["max", "idleTimeoutSeconds", "connectTimeoutSeconds", "shutdownGraceSeconds", "live", "maxLive",
                                        "refusedRetrySeconds", "liveIdleTimeoutSeconds", "keepAliveSeconds", "deadPeerSeconds",
                                        "handshakeTimeoutSeconds", "maxHandshakes",
                                        "maxHandshakesPerSource", "unprovenHandshakesPerSource", "minProgressBytes", "progressIntervalSeconds"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "sessions")
            max = try c.value("max", or: max)
            idleTimeoutSeconds = try c.value("idleTimeoutSeconds", or: idleTimeoutSeconds)
            connectTimeoutSeconds = try c.value("connectTimeoutSeconds", or: connectTimeoutSeconds)
            shutdownGraceSeconds = try c.value("shutdownGraceSeconds", or: shutdownGraceSeconds)
            live = try c.value("live", or: live)
            maxLive = try c.value("maxLive", or: maxLive)
            refusedRetrySeconds = try c.value("refusedRetrySeconds", or: refusedRetrySeconds)
            liveIdleTimeoutSeconds = try c.value("liveIdleTimeoutSeconds", or: liveIdleTimeoutSeconds)
            keepAliveSeconds = try c.value("keepAliveSeconds", or: keepAliveSeconds)
            deadPeerSeconds = try c.value("deadPeerSeconds", or: deadPeerSeconds)
            handshakeTimeoutSeconds = try c.value("handshakeTimeoutSeconds", or: handshakeTimeoutSeconds)
            maxHandshakes = try c.value("maxHandshakes", or: maxHandshakes)
            maxHandshakesPerSource = try c.value("maxHandshakesPerSource", or: maxHandshakesPerSource)
            unprovenHandshakesPerSource = try c.value("unprovenHandshakesPerSource", or: unprovenHandshakesPerSource)
            minProgressBytes = try c.value("minProgressBytes", or: minProgressBytes)
            progressIntervalSeconds = try c.value("progressIntervalSeconds", or: progressIntervalSeconds)
        }
    }

    /// When to sync.
    public struct Schedule: Sendable, Equatable, Decodable {
        /// Seconds between syncs with a peer when nothing changed (default 300).
        public var resyncIntervalSeconds = 300
        /// First retry delay after a failed session, ms (default 1000).
        public var backoffMinMilliseconds = 1_000
        /// Largest retry delay, ms (default 300000).
        public var backoffMaxMilliseconds = 300_000
        /// Delay between noticing a change and pushing it, ms (default 250); changes within it ride along.
        public var pushDebounceMilliseconds = 250
        /// How often the store's heads are read to notice writes by other processes, ms (default 500).
        public var pollIntervalMilliseconds = 500
        /// Most sessions at once to discovered peers that never completed a handshake with this node
        /// (on top of `sessions.max`, which they never take) (default 2).
        public var maxDiscoveryProbes = 2

        static let keys: Set<String> = ["resyncIntervalSeconds", "backoffMinMilliseconds", "backoffMaxMilliseconds",
                                        "pushDebounceMilliseconds", "pollIntervalMilliseconds", "maxDiscoveryProbes"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "schedule")
            resyncIntervalSeconds = try c.value("resyncIntervalSeconds", or: resyncIntervalSeconds)
            backoffMinMilliseconds = try c.value("backoffMinMilliseconds", or: backoffMinMilliseconds)
            backoffMaxMilliseconds = try c.value("backoffMaxMilliseconds", or: backoffMaxMilliseconds)
            pushDebounceMilliseconds = try c.value("pushDebounceMilliseconds", or: pushDebounceMilliseconds)
            pollIntervalMilliseconds = try c.value("pollIntervalMilliseconds", or: pollIntervalMilliseconds)
            maxDiscoveryProbes = try c.value("maxDiscoveryProbes", or: maxDiscoveryProbes)
        }
    }

    /// Relay boxes only.
    public struct Relay: Sendable, Equatable, Decodable {
        /// Bytes of stored changes a relay keeps (null: no quota). Past it, receipted changes are evicted
        /// first; unreceipted ones are refused and reported.
        public var quotaBytes: Int?

        static let keys: Set<String> = ["quotaBytes"]
        public init(quotaBytes: Int? = nil) { self.quotaBytes = quotaBytes }

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "relay")
            quotaBytes = try c.decodeIfPresent(Int.self, forKey: AnyKey("quotaBytes"))
        }
    }

    /// The HQ feed into PostgreSQL (docs/postgres-feed.md): off unless `postgres` is given; refused at start
    /// on relay and backpack roles (what it writes is plaintext).
    public struct Feed: Sendable, Equatable, Decodable {
        /// The database.
        public struct Postgres: Sendable, Equatable, Decodable {
            /// `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=require][&host=/socket/dir]` (no password in it).
            public var url: String
            /// The schema the feed's tables live in (default `fieldsync`).
            public var schema = "fieldsync"
            /// File whose first line is the database password (mode 0600), or null.
            public var passwordFile: String?
            /// Changes per PostgreSQL transaction (default 1000).
            public var batchSize = 1000

            static let keys: Set<String> = ["url", "schema", "passwordFile", "batchSize"]
            public init(url: String) { self.url = url }

            public init(from decoder: any Decoder) throws {
                let c = try strictContainer(decoder, allowed: Self.keys, section: "feed.postgres")
                url = try c.required("url", or: "")
                schema = try c.value("schema", or: schema)
                passwordFile = try c.decodeIfPresent(String.self, forKey: AnyKey("passwordFile"))
                batchSize = try c.value("batchSize", or: batchSize)
            }
        }

        /// The PostgreSQL feed, or nil (no feed).
        public var postgres: Postgres?

        static let keys: Set<String> = ["postgres"]
        public init(postgres: Postgres? = nil) { self.postgres = postgres }

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "feed")
            postgres = try c.decodeIfPresent(Postgres.self, forKey: AnyKey("postgres"))
        }
    }

    /// Reports the node writes by itself (docs/reports.md): off unless `daily` is given.
    public struct Reports: Sendable, Equatable, Decodable {
        /// The daily report (situation report and duty logs), written every morning for the day before.
        public struct Daily: Sendable, Equatable, Decodable {
            /// The folder the reports are written to (`daily-YYYY-MM-DD.html`, `.csv`, `.json`; mode 0600).
            public var dir: String
            /// When, `HH:MM` in China Standard Time (UTC+8) (default `07:00`).
            public var at = "07:00"
            /// The forms written (default all three: `html`, `csv`, `json`).
            public var formats = ["html", "csv", "json"]
            /// Only this county (its scope segment), or null for every county.
            public var county: String?

            static let keys: Set<String> = ["dir", "at", "formats", "county"]
            public init(dir: String) { self.dir = dir }

            public init(from decoder: any Decoder) throws {
                let c = try strictContainer(decoder, allowed: Self.keys, section: "reports.daily")
                dir = try c.required("dir", or: "")
                at = try c.value("at", or: at)
                formats = try c.value("formats", or: formats)
                county = try c.decodeIfPresent(String.self, forKey: AnyKey("county"))
            }

            /// Minutes after midnight (UTC+8) of `at`, nil if it is not `HH:MM`.
            public var atMinutes: Int? {
                let p = at.split(separator: ":", omittingEmptySubsequences: false)
                guard p.count == 2, p[0].count == 2, p[1].count == 2, let h = Int(p[0]), let m = Int(p[1]),
                      (0...23).contains(h), (0...59).contains(m) else { return nil }
                return h * 60 + m
            }
        }

        /// The daily report, or nil (none).
        public var daily: Daily?

        static let keys: Set<String> = ["daily"]
        public init(daily: Daily? = nil) { self.daily = daily }

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "reports")
            daily = try c.decodeIfPresent(Daily.self, forKey: AnyKey("daily"))
        }
    }

    /// The command center web UI (docs/command-center.md): off unless the section is given; refused at
    /// start on relay roles (they cannot read) and on a non-loopback listen address (put a TLS reverse proxy
    /// in front instead).
    public struct Web: Sendable, Equatable, Decodable {
        /// Where, `HOST:PORT` (default `127.0.0.1:8080`); only loopback addresses are accepted.
        public var listen = "127.0.0.1:8080"
        /// The operator accounts file (`fieldsync web user add`; mode 0600). Default: `web-users.json`
        /// beside the config file.
        public var usersFile: String?
        /// The access log (one JSON line per page view and action). Default: the store path + `.web-access.log`.
        public var accessLog: String?
        /// Minutes a login lasts (default 480: an 8-hour duty shift).
        public var sessionMinutes = 480
        /// Set `Secure` on the session cookie: the pages are reached over HTTPS through a reverse proxy.
        public var secureCookies = false
        /// Minutes of silence after which a unit raises an alarm on the units page (default 1440: a day).
        public var unitSilentMinutes = 1_440
        /// The suspected-duplicates rule of the list and detail pages: same category, within this many metres
        /// (default 500) and minutes (default 30), created by different devices (docs/reports.md).
        public var duplicateMetres = 500.0, duplicateMinutes = 30

        static let keys: Set<String> = ["listen", "usersFile", "accessLog", "sessionMinutes", "secureCookies", "unitSilentMinutes",
                                        "duplicateMetres", "duplicateMinutes"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "web")
            listen = try c.value("listen", or: listen)
            usersFile = try c.decodeIfPresent(String.self, forKey: AnyKey("usersFile"))
            accessLog = try c.decodeIfPresent(String.self, forKey: AnyKey("accessLog"))
            sessionMinutes = try c.value("sessionMinutes", or: sessionMinutes)
            secureCookies = try c.value("secureCookies", or: secureCookies)
            unitSilentMinutes = try c.value("unitSilentMinutes", or: unitSilentMinutes)
            duplicateMetres = try c.value("duplicateMetres", or: duplicateMetres)
            duplicateMinutes = try c.value("duplicateMinutes", or: duplicateMinutes)
        }
    }

    /// The Prometheus endpoint.
    public struct Metrics: Sendable, Equatable, Decodable {
        /// Whether to serve `GET /metrics` (default false).
        public var enabled = false
        /// Where, `HOST:PORT` (default `127.0.0.1:9464`).
        public var listen = "127.0.0.1:9464"
        /// Most connections to the endpoint at once; further ones are closed at accept (default 8).
        public var maxConnections = 8
        /// Seconds a connection may stay without a complete request before it is closed (default 5).
        public var idleTimeoutSeconds = 5

        static let keys: Set<String> = ["enabled", "listen", "maxConnections", "idleTimeoutSeconds"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "metrics")
            enabled = try c.value("enabled", or: enabled)
            listen = try c.value("listen", or: listen)
            maxConnections = try c.value("maxConnections", or: maxConnections)
            idleTimeoutSeconds = try c.value("idleTimeoutSeconds", or: idleTimeoutSeconds)
        }
    }

    /// LAN discovery beacons (Protocols/discovery.md; `LANDiscovery` in Discovery.swift).
    public struct Discovery: Sendable, Equatable, Decodable {
        /// Whether to send and listen for beacons (default false).
        public var enabled = false
        /// UDP port of the beacons, the same on every node of the network (default 7946).
        public var port = 7946
        /// Seconds between beacons, each jittered by ±25% (default 5).
        public var intervalSeconds = 5
        /// Where beacons go: broadcast (default `255.255.255.255`), an IPv4 multicast group, or one address.
        public var destination = "255.255.255.255"
        /// Whether this node announces itself; false: it only listens (a backpack unit) (default true).
        public var announce = true
        /// A file (mode 0600) holding a shared discovery secret; beacons then verify only with it (default none).
        public var secretFile: String?

        static let keys: Set<String> = ["enabled", "port", "intervalSeconds", "destination", "announce", "secretFile"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "discovery")
            enabled = try c.value("enabled", or: enabled)
            port = try c.value("port", or: port)
            intervalSeconds = try c.value("intervalSeconds", or: intervalSeconds)
            destination = try c.value("destination", or: destination)
            announce = try c.value("announce", or: announce)
            secretFile = try c.decodeIfPresent(String.self, forKey: AnyKey("secretFile"))
        }

        /// The socket-level configuration.
        public var configuration: DiscoveryConfiguration {
            var d = DiscoveryConfiguration()
            d.port = port
            d.destination = destination
            d.interval = .seconds(Int64(intervalSeconds))
            d.expiry = .seconds(Int64(max(30, intervalSeconds * 6)))
            d.announce = announce
            return d
        }
    }

    /// Epoch key rotation and freshness (attack cases 27 and 31; docs/enrollment.md, "Scheduled rotation").
    public struct Epochs: Sendable, Equatable, Decodable {
        /// Days between scheduled rotations of each scope's epoch key (the period the rotation timer uses,
        /// `fieldsync epoch rotate --if-older-than`; default 7).
        public var rotationEveryDays = 7
        /// Days after which the newest epoch key a node holds of a scope counts as stale: no rotation has
        /// reached the node for that long (default: twice `rotationEveryDays`, so one missed rotation is
        /// tolerated and a second one is not).
        public var staleAfterDays: Int?

        static let keys: Set<String> = ["rotationEveryDays", "staleAfterDays"]
        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try strictContainer(decoder, allowed: Self.keys, section: "epochs")
            rotationEveryDays = try c.value("rotationEveryDays", or: rotationEveryDays)
            staleAfterDays = try c.decodeIfPresent(Int.self, forKey: AnyKey("staleAfterDays"))
        }

        /// The staleness threshold in force, in days.
        public var staleDays: Int { staleAfterDays ?? 2 * rotationEveryDays }
        /// The staleness threshold in force, in ms.
        public var staleAfterMilliseconds: UInt64 { UInt64(max(0, staleDays)) * 86_400_000 }
    }

    /// The device. Required.
    public var device: Device
    /// The store. Required.
    public var store: Store
    /// Epoch key files (`SCOPE EPOCH HEX64` per line, mode 0600) besides the keystore's keys (default none;
    /// a relay must have none).
    public var epochKeyFiles: [String] = []
    /// Where to accept sessions, `HOST:PORT` (default `0.0.0.0:7000`).
    public var listen = "0.0.0.0:7000"
    /// The network name; peers of other networks cannot connect (default `longnan-police`).
    public var network = "longnan-police"
    /// Static peers, `HOST:PORT` each (default none).
    public var peers: [String] = []
    /// Session limits.
    public var sessions = Sessions()
    /// Scheduling.
    public var schedule = Schedule()
    /// Relay quota.
    public var relay = Relay()
    /// Metrics endpoint.
    public var metrics = Metrics()
    /// Log level: trace, debug, info (default), notice, warning, error, critical.
    public var logLevel = "info"
    /// The status file `fieldsync status` reads (default: the store path + `.status.json`).
    public var statusFile: String?
    /// LAN discovery.
    public var discovery = Discovery()
    /// Epoch key rotation period and staleness threshold.
    public var epochs = Epochs()
    /// The PostgreSQL feed (HQ).
    public var feed = Feed()
    /// The command center web UI (nil: off).
    public var web: Web?
    /// The directory of the config file this was loaded from (nil: built from flags).
    public var configDirectory: String?

    /// Reports written by the node (the daily report).
    public var reports = Reports()

    static let keys: Set<String> = ["device", "store", "epochKeyFiles", "listen", "network", "peers", "sessions", "schedule",
                                    "relay", "metrics", "logLevel", "statusFile", "discovery", "epochs", "feed", "reports", "web"]
    /// The accepted log levels.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// A configuration with defaults for everything but the device and the store.
    public init(device: Device, store: Store) {
        self.device = device
        self.store = store
    }

    public init(from decoder: any Decoder) throws {
        let c = try strictContainer(decoder, allowed: Self.keys, section: nil)
        device = try c.required("device", or: Device(dir: ""))
        store = try c.required("store", or: Store(path: ""))
        epochKeyFiles = try c.value("epochKeyFiles", or: epochKeyFiles)
        listen = try c.value("listen", or: listen)
        network = try c.value("network", or: network)
        peers = try c.value("peers", or: peers)
        sessions = try c.value("sessions", or: sessions)
        schedule = try c.value("schedule", or: schedule)
        relay = try c.value("relay", or: relay)
        metrics = try c.value("metrics", or: metrics)
        logLevel = try c.value("logLevel", or: logLevel)
        statusFile = try c.decodeIfPresent(String.self, forKey: AnyKey("statusFile"))
        discovery = try c.value("discovery", or: discovery)
        epochs = try c.value("epochs", or: epochs)
        feed = try c.value("feed", or: feed)
        reports = try c.value("reports", or: reports)
        web = try c.decodeIfPresent(Web.self, forKey: AnyKey("web"))
    }

    /// Whether `host` names the loopback interface (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || (host.hasPrefix("127.") && host.split(separator: ".").count == 4
            && host.split(separator: ".").allSatisfy { UInt8($0) != nil })
    }

    /// The operator accounts file in force (nil: no web section).
    public var webUsersPath: String? {
        guard let web else { return nil }
        return web.usersFile ?? (configDirectory ?? ".") + "/web-users.json"
    }

    /// The web access log in force (nil: no web section).
    public var webAccessLogPath: String? {
        guard let web else { return nil }
        return web.accessLog ?? store.path + ".web-access.log"
    }

    /// The status file path in force.
    public var statusPath: String { statusFile ?? store.path + ".status.json" }

    /// Reads and decodes a config file. Relative paths inside it are taken relative to the file's folder.
    /// - Throws: `ConfigError` naming the file, and the key at fault when the JSON is well formed.
    public static func load(path: String) throws -> NodeConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(key: nil, "cannot read config file \(path); check the path and its permissions")
        }
        var config = try decode(data, source: path)
        config.resolvePaths(relativeTo: PathText.folder(of: path))
        return config
    }

    /// Decodes config JSON (no path resolution).
    /// - Throws: `ConfigError`: the first problem (`problems(path:)` lists them all).
    public static func decode(_ data: Data, source: String = "config") throws -> NodeConfigFile {
        if let first = StrictJSON.problems(in: data).first {
            throw ConfigError(key: nil, "\(source) is not valid JSON: \(first)")
        }
        do {
            return try JSONDecoder().decode(NodeConfigFile.self, from: data)
        } catch {
            throw configError(error, source: source)
        }
    }

    /// Every problem of the config file at `path`, in one pass: its JSON syntax (strict: no trailing comma, no
    /// key given twice, no comment), then each unknown key, missing key and wrong type, then the values and
    /// files (`check()`). Empty when the config is ready to serve.
    public static func problems(path: String) -> [ConfigError] {
        guard let data = FileManager.default.contents(atPath: path) else {
            return [ConfigError(key: nil, "cannot read config file \(path); check the path and its permissions")]
        }
        var out = StrictJSON.problems(in: data).map { ConfigError(key: nil, "\(path) is not valid JSON: \($0)") }
        let sink = ConfigProblems()
        let decoded: NodeConfigFile?
        do {
            decoded = try ConfigProblems.$current.withValue(sink) { try JSONDecoder().decode(NodeConfigFile.self, from: data) }
        } catch {
            decoded = nil
            // The strict check already said why the syntax is wrong; Foundation's wording would repeat it.
            if out.isEmpty || !(error is DecodingError) { sink.errors.append(error) }
        }
        out += sink.errors.map { configError($0, source: path) }
        if var config = decoded, sink.errors.isEmpty, out.isEmpty {
            config.resolvePaths(relativeTo: PathText.folder(of: path))
            out += config.check()
        }
        return out
    }

    /// A decoding error as a `ConfigError` naming the key at fault and what to do.
    static func configError(_ error: any Error, source: String) -> ConfigError {
        switch error {
        case let e as ConfigError:
            return ConfigError(key: e.key, "\(source): \(e.description)")
        case let DecodingError.keyNotFound(key, ctx):
            let at = keyPath(ctx.codingPath + [key])
            return ConfigError(key: at, "\(source): `\(at)` is required; add it (see `fieldsync config example`)")
        case let DecodingError.typeMismatch(type, ctx):
            let at = keyPath(ctx.codingPath)
            return ConfigError(key: at, "\(source): `\(at)` must be \(describe(type)); fix its value")
        case let DecodingError.valueNotFound(type, ctx):
            let at = keyPath(ctx.codingPath)
            return ConfigError(key: at, "\(source): `\(at)` must be \(describe(type)), not null; give a value or remove the key")
        case let DecodingError.dataCorrupted(ctx):
            let detail = (ctx.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? ctx.debugDescription
            return ConfigError(key: ctx.codingPath.isEmpty ? nil : keyPath(ctx.codingPath),
                               "\(source) is not valid JSON (\(detail)); fix the syntax (comments are not allowed)")
        default:
            return ConfigError(key: nil, "\(source): \(error)")
        }
    }

    mutating func resolvePaths(relativeTo base: String) {
        func abs(_ p: String) -> String { p.hasPrefix("/") ? p : base + "/" + p }
        device.dir = abs(device.dir)
        device.passphraseFile = device.passphraseFile.map(abs)
        device.keyFile = device.keyFile.map(abs)
        store.path = abs(store.path)
        epochKeyFiles = epochKeyFiles.map(abs)
        statusFile = statusFile.map(abs)
        if let p = feed.postgres?.passwordFile { feed.postgres?.passwordFile = abs(p) }
        if let d = reports.daily?.dir { reports.daily?.dir = abs(d) }
        configDirectory = base
        if var w = web {
            w.usersFile = w.usersFile.map(abs)
            w.accessLog = w.accessLog.map(abs)
            web = w
        }
    }

    /// Validates values and files; an empty result means the config is ready to serve. Checks that need
    /// the keystore unlocked (the certificate's role; a relay must not hold epoch keys) are made at start.
    public func check() -> [ConfigError] {
        var out: [ConfigError] = []
        let fm = FileManager.default
        func fail(_ key: String, _ text: String) { out.append(ConfigError(key: key, "`\(key)`: \(text)")) }
        var isDir: ObjCBool = false
        if !fm.fileExists(atPath: device.dir, isDirectory: &isDir) || !isDir.boolValue {
            fail("device.dir", "\(device.dir) is not a directory; run `fieldsync device init --dir \(device.dir)` or fix the path")
        } else if !fm.fileExists(atPath: device.dir + "/device.keystore") {
            fail("device.dir", "\(device.dir) holds no device.keystore; run `fieldsync device init` and `device import` there")
        }
        switch (device.passphraseFile, device.keyFile) {
        case (nil, nil), (.some, .some):
            fail("device", "give exactly one of `passphraseFile` and `keyFile`")
        case let (p?, nil):
            if !fm.isReadableFile(atPath: p) { fail("device.passphraseFile", "cannot read \(p); create it or fix the path") }
        case let (nil, k?):
            if !fm.isReadableFile(atPath: k) { fail("device.keyFile", "cannot read \(k); fix the path") }
        }
        if epochs.rotationEveryDays < 1 { fail("epochs.rotationEveryDays", "must be at least 1 (days)") }
        if epochs.staleDays < 1 { fail("epochs.staleAfterDays", "must be at least 1 (days)") }
        let storeDir = PathText.folder(of: store.path)
        if !fm.fileExists(atPath: storeDir, isDirectory: &isDir) || !isDir.boolValue {
            fail("store.path", "the folder \(storeDir) does not exist; create it (the store file itself is created if missing)")
        }
        if !["full", "normal"].contains(store.syncMode) { fail("store.syncMode", "must be \"full\" or \"normal\", not \"\(store.syncMode)\"") }
        if let m = store.maxFileBytes, m < 1 << 20 { fail("store.maxFileBytes", "must be at least 1048576 (1 MiB), or null for no cap") }
        for (i, f) in epochKeyFiles.enumerated() where !fm.isReadableFile(atPath: f) {
            fail("epochKeyFiles[\(i)]", "cannot read \(f); create it with `fieldsync epoch-key new` or remove the entry")
        }
        if PeerAddress(listen) == nil && !listen.hasSuffix(":0") {
            fail("listen", "\"\(listen)\" is not HOST:PORT with a port 1-65535 (e.g. \"0.0.0.0:7000\")")
        }
        if network.isEmpty || network.utf8.count > 64 { fail("network", "must be 1 to 64 bytes (every peer must use the same name)") }
        for (i, p) in peers.enumerated() where PeerAddress(p) == nil {
            fail("peers[\(i)]", "\"\(p)\" is not HOST:PORT with a port 1-65535 (e.g. \"10.20.0.5:7000\")")
        }
        if !(1...1_024).contains(sessions.max) { fail("sessions.max", "must be 1 to 1024, not \(sessions.max)") }
        if !(1...86_400).contains(sessions.idleTimeoutSeconds) { fail("sessions.idleTimeoutSeconds", "must be 1 to 86400") }
        if !(1...600).contains(sessions.connectTimeoutSeconds) { fail("sessions.connectTimeoutSeconds", "must be 1 to 600") }
        if !(0...3_600).contains(sessions.shutdownGraceSeconds) { fail("sessions.shutdownGraceSeconds", "must be 0 to 3600") }
        if !(1...4_096).contains(sessions.maxLive) { fail("sessions.maxLive", "must be 1 to 4096, not \(sessions.maxLive) (set `live` to false for none)") }
        if !(1...604_800).contains(sessions.refusedRetrySeconds) { fail("sessions.refusedRetrySeconds", "must be 1 to 604800") }
        if !(0...604_800).contains(sessions.liveIdleTimeoutSeconds) {
            fail("sessions.liveIdleTimeoutSeconds", "must be 0 (never) to 604800")
        }
        if !(0...86_400).contains(sessions.keepAliveSeconds) { fail("sessions.keepAliveSeconds", "must be 0 (no keep-alive) to 86400") }
        if sessions.keepAliveSeconds > 0, !((sessions.keepAliveSeconds + 1)...604_800).contains(sessions.deadPeerSeconds) {
            fail("sessions.deadPeerSeconds", "must be more than sessions.keepAliveSeconds (\(sessions.keepAliveSeconds)) and at most 604800")
        }
        if !(1...300).contains(sessions.handshakeTimeoutSeconds) { fail("sessions.handshakeTimeoutSeconds", "must be 1 to 300") }
        if !(1...4_096).contains(sessions.maxHandshakes) { fail("sessions.maxHandshakes", "must be 1 to 4096, not \(sessions.maxHandshakes)") }
        if !(0...4_096).contains(sessions.unprovenHandshakesPerSource) {
            fail("sessions.unprovenHandshakesPerSource", "must be 0 (no limit) to 4096, not \(sessions.unprovenHandshakesPerSource)")
        }
        if !(1...sessions.maxHandshakes).contains(sessions.maxHandshakesPerSource) {
            fail("sessions.maxHandshakesPerSource", "must be 1 to sessions.maxHandshakes (\(sessions.maxHandshakes)), not \(sessions.maxHandshakesPerSource)")
        }
        if !(0...(1 << 30)).contains(sessions.minProgressBytes) { fail("sessions.minProgressBytes", "must be 0 (no check) to 1073741824") }
        if !(1...3_600).contains(sessions.progressIntervalSeconds) { fail("sessions.progressIntervalSeconds", "must be 1 to 3600") }
        if !(1...604_800).contains(schedule.resyncIntervalSeconds) { fail("schedule.resyncIntervalSeconds", "must be 1 to 604800") }
        if schedule.backoffMinMilliseconds < 10 { fail("schedule.backoffMinMilliseconds", "must be at least 10") }
        if schedule.backoffMaxMilliseconds < schedule.backoffMinMilliseconds {
            fail("schedule.backoffMaxMilliseconds", "must be at least backoffMinMilliseconds (\(schedule.backoffMinMilliseconds))")
        }
        if !(0...60_000).contains(schedule.pushDebounceMilliseconds) { fail("schedule.pushDebounceMilliseconds", "must be 0 to 60000") }
        if !(50...60_000).contains(schedule.pollIntervalMilliseconds) { fail("schedule.pollIntervalMilliseconds", "must be 50 to 60000") }
        if !(0...64).contains(schedule.maxDiscoveryProbes) { fail("schedule.maxDiscoveryProbes", "must be 0 to 64") }
        if let q = relay.quotaBytes, q < 1 << 20 { fail("relay.quotaBytes", "must be at least 1048576 (1 MiB), or null for no quota") }
        if metrics.enabled, PeerAddress(metrics.listen) == nil {
            fail("metrics.listen", "\"\(metrics.listen)\" is not HOST:PORT (e.g. \"127.0.0.1:9464\")")
        }
        if !(1...1_024).contains(metrics.maxConnections) { fail("metrics.maxConnections", "must be 1 to 1024") }
        if !(1...3_600).contains(metrics.idleTimeoutSeconds) { fail("metrics.idleTimeoutSeconds", "must be 1 to 3600") }
        if let web {
            if let address = PeerAddress(web.listen) {
                if !Self.isLoopback(address.host) {
                    fail("web.listen", "\(web.listen) is not a loopback address: the command center listens on 127.0.0.1 or ::1 only; "
                         + "serve it to other machines through a TLS reverse proxy (docs/command-center.md, \"Reverse proxy\")")
                }
            } else {
                fail("web.listen", "\"\(web.listen)\" is not HOST:PORT (e.g. \"127.0.0.1:8080\")")
            }
            if !(1...10_080).contains(web.sessionMinutes) { fail("web.sessionMinutes", "must be 1 to 10080 (a week)") }
            if !(1...525_600).contains(web.unitSilentMinutes) { fail("web.unitSilentMinutes", "must be 1 to 525600 (a year)") }
            if !(web.duplicateMetres >= 0 && web.duplicateMetres <= 100_000) { fail("web.duplicateMetres", "must be 0 to 100000") }
            if !(0...10_080).contains(web.duplicateMinutes) { fail("web.duplicateMinutes", "must be 0 to 10080 (a week)") }
        }
        if !Self.logLevels.contains(logLevel) { fail("logLevel", "must be one of \(Self.logLevels.joined(separator: ", ")), not \"\(logLevel)\"") }
        let statusDir = PathText.folder(of: statusPath)
        if !fm.fileExists(atPath: statusDir) { fail("statusFile", "the folder \(statusDir) does not exist") }
        if !(1...65_535).contains(discovery.port) { fail("discovery.port", "must be 1 to 65535") }
        if !(1...3_600).contains(discovery.intervalSeconds) { fail("discovery.intervalSeconds", "must be 1 to 3600") }
        let octets = discovery.destination.split(separator: ".", omittingEmptySubsequences: false)
        if octets.count != 4 || octets.contains(where: { UInt8($0) == nil }) {
            fail("discovery.destination", "\"\(discovery.destination)\" is not an IPv4 address (e.g. \"255.255.255.255\" or \"239.255.70.83\")")
        }
        if let f = discovery.secretFile, !fm.fileExists(atPath: f) { fail("discovery.secretFile", "\(f) does not exist") }
        if let d = reports.daily {
            var isDir: ObjCBool = false
            if !fm.fileExists(atPath: d.dir, isDirectory: &isDir) || !isDir.boolValue {
                fail("reports.daily.dir", "\(d.dir) is not a directory; create it (mode 0700: the reports hold record text in clear)")
            }
            if d.atMinutes == nil { fail("reports.daily.at", "\"\(d.at)\" is not HH:MM (24-hour, China Standard Time, UTC+8), e.g. \"07:00\"") }
            let forms = ["html", "csv", "json"]
            if d.formats.isEmpty || d.formats.contains(where: { !forms.contains($0) }) {
                fail("reports.daily.formats", "must list one or more of html, csv, json, not \(d.formats)")
            }
        }
        return out
    }

    /// The node settings this config asks for (network, session limits and timeouts, live sessions).
    public var nodeConfiguration: NodeConfiguration {
        var n = NodeConfiguration(network: NetworkParameters(networkID: network))
        n.maxConcurrentSessions = sessions.max
        n.idleTimeout = .seconds(Int64(sessions.idleTimeoutSeconds))
        n.connectTimeout = .seconds(Int64(sessions.connectTimeoutSeconds))
        n.liveSessions = sessions.live
        n.maxLiveSessions = sessions.maxLive
        n.refusedRetry = .seconds(Int64(sessions.refusedRetrySeconds))
        n.liveIdleTimeout = sessions.liveIdleTimeoutSeconds == 0 ? nil : .seconds(Int64(sessions.liveIdleTimeoutSeconds))
        n.liveKeepAlive = sessions.keepAliveSeconds <= 0 || sessions.deadPeerSeconds <= sessions.keepAliveSeconds ? nil
            : KeepAlivePolicy(interval: UInt64(sessions.keepAliveSeconds) * 1_000, deadAfter: UInt64(sessions.deadPeerSeconds) * 1_000)
        n.handshakeTimeout = .seconds(Int64(sessions.handshakeTimeoutSeconds))
        n.maxPendingHandshakes = sessions.maxHandshakes
        n.maxHandshakesPerSource = sessions.maxHandshakesPerSource
        n.unprovenHandshakesPerSource = sessions.unprovenHandshakesPerSource
        n.minProgressBytes = sessions.minProgressBytes
        n.progressInterval = .seconds(Int64(sessions.progressIntervalSeconds))
        return n
    }

    /// The scheduler policy this config asks for.
    public var schedulePolicy: SchedulePolicy {
        var p = SchedulePolicy()
        p.maxSessions = sessions.max
        p.resyncInterval = UInt64(max(1, schedule.resyncIntervalSeconds)) * 1_000
        p.backoffMin = UInt64(max(1, schedule.backoffMinMilliseconds))
        p.backoffMax = UInt64(max(schedule.backoffMinMilliseconds, schedule.backoffMaxMilliseconds))
        p.pushDebounce = UInt64(max(0, schedule.pushDebounceMilliseconds))
        p.maxProbes = max(0, schedule.maxDiscoveryProbes)
        return p
    }

    /// A commented example with every key at its default (JSON has no comments: `//` lines must be
    /// removed before use, which `fieldsync config example --plain` does).
    public static let example = """
        {
          // The device directory (from `fieldsync device init`) and exactly one way to unlock its keystore.
          "device": { "dir": "/var/lib/fieldsync/device", "passphraseFile": null, "keyFile": "/var/lib/fieldsync/keystore.key" },
          // The SQLite store (created if missing). syncMode: "full" (survives power loss) or "normal" (faster).
          // maxFileBytes: hard cap on the file (null: none).
          "store": { "path": "/var/lib/fieldsync/store.sqlite", "syncMode": "full", "maxFileBytes": null },
          // Epoch key files (`SCOPE EPOCH HEX64` per line, mode 0600). A relay must have none.
          "epochKeyFiles": [],
          // Where to accept sessions, and the network name every peer shares.
          "listen": "0.0.0.0:7000",
          "network": "longnan-police",
          // Peers to sync with, HOST:PORT each (discovered peers are added at run time).
          "peers": [],
          // max: concurrent sessions (in + out); idle: cut a stalled session; grace: SIGTERM drain time.
          // live: keep sessions open and push later changes on them (false: one session per burst);
          // maxLive: most live sessions at once (they do not count toward max; the stall timeout does not cut
          // an idle one); refusedRetrySeconds: a live session on which the store refused changes (quota) reopens
          // after it; keepAliveSeconds: a live session that sent nothing for this long sends a keep-alive (0: none),
          // and one that heard nothing from its peer for deadPeerSeconds is cut as gone; liveIdleTimeoutSeconds
          // (only without keep-alive): an idle live session closes after it and reconnects (0: never).
          // handshakeTimeoutSeconds: cut a connection that has not authenticated by then; maxHandshakes and
          // maxHandshakesPerSource: the unauthenticated pool (it never takes a `max` slot); unprovenHandshakesPerSource:
          // handshakes per 10 s from an address with no authenticated session in the last hour (0: no limit); a session with work
          // to do that moves fewer than minProgressBytes per progressIntervalSeconds is cut (0: no check).
          "sessions": { "max": 8, "idleTimeoutSeconds": 30, "connectTimeoutSeconds": 10, "shutdownGraceSeconds": 10,
                        "live": true, "maxLive": 64, "refusedRetrySeconds": 600, "liveIdleTimeoutSeconds": 600,
                        "keepAliveSeconds": 600, "deadPeerSeconds": 1500,
                        "handshakeTimeoutSeconds": 5, "maxHandshakes": 16, "maxHandshakesPerSource": 4,
                        "unprovenHandshakesPerSource": 8, "minProgressBytes": 1024,
                        "progressIntervalSeconds": 10 },
          // Resync each peer every resyncIntervalSeconds; retry failures with jittered exponential backoff;
          // changes are noticed by polling the store every pollIntervalMilliseconds, pushed at once on live
          // sessions and pushDebounceMilliseconds later to peers without one (a new session).
          // maxDiscoveryProbes: sessions at once to discovered peers never authenticated (beyond sessions.max).
          "schedule": { "resyncIntervalSeconds": 300, "backoffMinMilliseconds": 1000, "backoffMaxMilliseconds": 300000,
                        "pushDebounceMilliseconds": 250, "pollIntervalMilliseconds": 500, "maxDiscoveryProbes": 2 },
          // Relay boxes: bytes of ciphertext kept (null: no quota).
          "relay": { "quotaBytes": null },
          // Prometheus text endpoint (GET /metrics) on its own thread: at most maxConnections at once, each
          // closed after idleTimeoutSeconds without a complete request.
          "metrics": { "enabled": false, "listen": "127.0.0.1:9464", "maxConnections": 8, "idleTimeoutSeconds": 5 },
          // trace, debug, info, notice, warning, error, critical.
          "logLevel": "info",
          // Where the daemon keeps its status for `fieldsync status` (null: the store path + ".status.json").
          "statusFile": null,
          // LAN discovery beacons (Protocols/discovery.md): UDP port, seconds between beacons, where they go
          // (broadcast, a multicast group or one address), whether to announce or only listen, and an
          // optional shared secret file (mode 0600).
          "discovery": { "enabled": false, "port": 7946, "intervalSeconds": 5, "destination": "255.255.255.255",
                         "announce": true, "secretFile": null },
          // Epoch keys: the rotation period (days) of `fieldsync epoch-key rotate --if-older-than`, and after how many
          // days the newest key held of a scope is warned about as stale (null: twice rotationEveryDays).
          "epochs": { "rotationEveryDays": 7, "staleAfterDays": null },
          // HQ only: mirror the records this node decrypts into PostgreSQL (docs/postgres-feed.md), e.g.
          // "postgres": { "url": "postgres://fieldsync@db.hq:5432/police?sslmode=require", "schema": "fieldsync",
          //               "passwordFile": "/etc/fieldsync/pg.pass", "batchSize": 1000 }
          // (null: no feed). Refused on relay and backpack roles: what it writes is plaintext.
          "feed": { "postgres": null },
          // The daily report (docs/reports.md): every day at `at` (HH:MM, China Standard Time, UTC+8) `serve` writes the
          // report of the day before into dir as daily-YYYY-MM-DD.html/.csv/.json (mode 0600: record text in clear), e.g.
          // "daily": { "dir": "/var/lib/fieldsync/reports", "at": "07:00", "formats": ["html", "csv", "json"], "county": null }
          // (null: no daily report).
          "reports": { "daily": null },
          // The command center web UI (docs/command-center.md), e.g. "web": { "listen": "127.0.0.1:8080",
          // "usersFile": null, "accessLog": null, "sessionMinutes": 480, "secureCookies": false, "unitSilentMinutes": 1440,
          // "duplicateMetres": 500, "duplicateMinutes": 30 } (null: off).
          // Loopback only (reach it through a TLS reverse proxy); refused on relays. usersFile defaults to
          // web-users.json beside this file, accessLog to the store path + ".web-access.log".
          "web": null
        }
        """

    /// `example` without its comment lines: valid JSON.
    public static var examplePlain: String {
        example.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("//") }.joined(separator: "\n")
    }
}

/// A config problem: the key at fault (dotted path, nil for the whole file) and what to do.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The dotted key path, e.g. `sessions.max` or `peers[2]`.
    public var key: String?
    /// The message, naming the key and the fix.
    public var description: String

    /// Creates an error.
    public init(key: String?, _ description: String) {
        self.key = key
        self.description = description
    }
}

/// A coding key for any string (to list a JSON object's keys).
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

/// Where `NodeConfigFile.problems(path:)` collects every decoding problem instead of stopping at the first:
/// while it is set, a key that fails to decode is recorded and keeps its default, and every unknown key is
/// recorded, so that one `config check` lists them all.
final class ConfigProblems: @unchecked Sendable {
    /// The collector of the decoding running on this task, if any.
    @TaskLocal static var current: ConfigProblems?
    var errors: [any Error] = []
}

/// A keyed container that refuses keys outside `allowed`.
extension KeyedDecodingContainer where Key == AnyKey {
    /// The value at `key`, or `current` when the key is absent: call it with the property itself, whose
    /// declaration holds the documented default (one place for each default).
    fileprivate func value<T: Decodable>(_ key: String, or current: T) throws -> T {
        do {
            return try decodeIfPresent(T.self, forKey: AnyKey(key)) ?? current
        } catch {
            guard let sink = ConfigProblems.current else { throw error }
            sink.errors.append(error)
            return current
        }
    }

    /// The value at `key`, which must be present; while problems are collected, `placeholder` stands in for
    /// a missing or wrong one (the config is refused anyway).
    fileprivate func required<T: Decodable>(_ key: String, or placeholder: @autoclosure () -> T) throws -> T {
        do {
            return try decode(T.self, forKey: AnyKey(key))
        } catch {
            guard let sink = ConfigProblems.current else { throw error }
            sink.errors.append(error)
            return placeholder()
        }
    }
}

private func strictContainer(_ decoder: any Decoder, allowed: Set<String>, section: String?) throws -> KeyedDecodingContainer<AnyKey> {
    let c = try decoder.container(keyedBy: AnyKey.self)
    for unknown in c.allKeys.map(\.stringValue).filter({ !allowed.contains($0) }).sorted() {
        let at = section.map { "\($0).\(unknown)" } ?? unknown
        let e = ConfigError(key: at, "unknown key `\(at)`; allowed here: \(allowed.sorted().joined(separator: ", ")) (check the spelling)")
        guard let sink = ConfigProblems.current else { throw e }
        sink.errors.append(e)
    }
    return c
}

private func keyPath(_ path: [any CodingKey]) -> String {
    var out = ""
    for k in path {
        if let i = k.intValue { out += "[\(i)]" } else { out += out.isEmpty ? k.stringValue : "." + k.stringValue }
    }
    return out
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type: return "an integer"
    case is Bool.Type: return "true or false"
    case is [String].Type: return "an array of strings"
    default: return "an object"
    }
}
