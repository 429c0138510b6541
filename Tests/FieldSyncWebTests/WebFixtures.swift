import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import FieldSyncWeb
import Foundation
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Enrolled devices on disk under one HQ root, a command center over one of them, operator accounts.
struct WebFixtures {
    static let wudu = try! Scope("longnan/wudu/station-017")
    static let wuduVillage = try! Scope("longnan/wudu/station-017/village-0412")
    static let cheng = try! Scope("longnan/cheng/station-101")
    static let wuduKey = EpochKey.generate(scope: wudu, epoch: 1)
    static let chengKey = EpochKey.generate(scope: cheng, epoch: 1)
    static let day: UInt64 = 86_400_000
    static let password = "correct horse battery"

    let dir: String
    let rootKey = Ed25519.SecretKey.generate()
    var serial: UInt64 = 0

    init() throws {
        dir = NSTemporaryDirectory() + "fieldsync-web-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }

    var usersPath: String { dir + "/web-users.json" }
    var accessLogPath: String { dir + "/web-access.log" }

    mutating func device(_ name: String, role: Role, scopes: [Scope], keys: [EpochKey]) throws -> FieldSyncDevice {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let sk = Ed25519.SecretKey.generate()
        let xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: now, label: name)
        serial += 1
        let cert = try Authority(root: rootKey).enroll(req, role: role, scopes: scopes, notBefore: now - Self.day,
                                                       notAfter: now + 30 * Self.day, serial: serial)
        let deviceDir = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: deviceDir, withIntermediateDirectories: true)
        let keyFile = "\(dir)/\(name).key"
        try Keystore.createKeyFile(at: keyFile)
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: rootKey.publicKey, epochKeys: keys),
                           to: "\(deviceDir)/\(FieldSyncDevice.keystoreName)", protection: .keyFile(path: keyFile))
        return FieldSyncDevice(directory: deviceDir, key: .keyFile(path: keyFile), storePath: "\(dir)/\(name).sqlite")
    }

    /// The station node the command center serves from: two stations in two counties, both keys.
    mutating func stationApp(clock: @escaping @Sendable () -> UInt64 = FieldSyncApp.wallClock) async throws -> FieldSyncApp {
        try await FieldSyncApp.open(device: try device("station", role: .station, scopes: [Self.wudu, Self.cheng], keys: [Self.wuduKey, Self.chengKey]),
                                    configuration: Self.configuration, clock: clock)
    }

    static var configuration: NodeConfiguration {
        var c = NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))
        c.liveSessions = true
        c.idleTimeout = .seconds(5)
        return c
    }

    static func syncOptions(peers: [PeerAddress] = []) -> DaemonOptions {
        var o = DaemonOptions(listenHost: "127.0.0.1", listenPort: 0)
        o.policy.resyncInterval = 600_000
        o.policy.pushDebounce = 50
        o.policy.backoffMin = 100
        o.policy.backoffMax = 1_000
        o.pollInterval = 100
        o.tick = 20
        o.staticPeers = peers
        o.seed = 1
        return o
    }

    /// Adds operators: `alice` (all scopes) and `wudu` (only longnan/wudu), at the cheapest Argon2id cost.
    func addOperators() throws {
        var a = OperatorAccounts()
        try a.add(name: "alice", password: Self.password, scopes: [], replace: false, now: 0, cost: .testingOnlyMinimum)
        try a.add(name: "wudu", password: Self.password, scopes: ["longnan/wudu"], replace: false, now: 0, cost: .testingOnlyMinimum)
        try a.save(path: usersPath)
    }

    func center(_ app: FieldSyncApp, clock: (@Sendable () -> UInt64)? = nil, lifetime: UInt64 = 3_600_000, logger: Logger? = nil,
                configure: (inout CommandCenterOptions) -> Void = { _ in }) async throws -> CommandCenter {
        var o = CommandCenterOptions(usersPath: usersPath, accessLogPath: accessLogPath)
        configure(&o)
        o.port = 0
        o.sessionLifetime = lifetime
        o.executor = OwnThreadExecutor.shared  // not the cooperative pool, which blocking tests hold in a full run
        if let clock { o.clock = clock }
        let c = try await CommandCenter(app: app, options: o)
        if let logger { try await c.start(logger: logger) } else { try await c.start() }
        return c
    }

    /// Hands every change `from`'s own device wrote to `to`, as a sync would (the test needs incidents of two
    /// devices on one node, without the network), at `now` (default: the wall clock), the changes' arrival on `to`.
    static func deliver(_ from: FieldSyncApp, to: FieldSyncApp, now: UInt64? = nil) async throws {
        let (changes, certificate) = try await from.perform { book -> ([Change], Certificate) in
            let r = book.replicator
            var out: [Change] = []
            for log in try r.store.orderedLogs() where log.author == r.identity.id {
                for range in try r.store.holdings(of: log).ranges { out += try r.store.changes(log, in: range).map { try Change(canonicalBytes: $0.bytes) } }
            }
            return (out, r.identity.certificate)
        }
        let now = now ?? FieldSyncApp.wallClock()
        try await to.perform { _ = try $0.replicator.ingest(changes, certificates: [certificate], now: now) }
    }

    /// The access log's lines.
    func accessLog() throws -> [AccessLogEntry] {
        try String(contentsOfFile: accessLogPath, encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONDecoder().decode(AccessLogEntry.self, from: Data($0.utf8)) }
    }

    static func draft(_ summary: String, scope: Scope = wuduVillage, priority: Priority = .normal, reporter: String = "caller") -> IncidentDraft {
        IncidentDraft(scope: scope, category: .traffic, priority: priority, summary: summary,
                      location: Location(latitude: 33.39, longitude: 104.92, placeName: "Wudu"), reporter: reporter)
    }
}

/// A clock tests move by hand.
final class FakeClock: Sendable {
    private let now: NIOLockedValueBox<UInt64>
    /// A clock at `start` (default: the wall clock now).
    init(at start: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) { now = NIOLockedValueBox(start) }
    func read() -> UInt64 { now.withLockedValue { $0 } }
    func advance(_ ms: UInt64) { now.withLockedValue { $0 += ms } }
}

/// An HTTP/1.1 response as read off the socket.
struct HTTPReply {
    var status: Int
    var headers: [(String, String)]
    var body: String

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    func headers(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1) }
}

/// A minimal HTTP/1.1 client over a blocking loopback socket (one request per connection), with a cookie jar:
/// what the tests need and nothing that follows redirects or adds headers behind their back.
final class WebClient: @unchecked Sendable {
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
        guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func requestText(_ method: String, _ path: String, body: String? = nil, contentType: String = "application/x-www-form-urlencoded",
                     extra: [String] = []) -> String {
        var lines = ["\(method) \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Connection: close"]
        if !cookies.isEmpty { lines.append("Cookie: " + cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")) }
        if let body { lines += ["Content-Type: \(contentType)", "Content-Length: \(body.utf8.count)"] }
        lines += extra
        return lines.joined(separator: "\r\n") + "\r\n\r\n" + (body ?? "")
    }

    /// Sends one request and reads the whole answer (chunked bodies decoded).
    func send(_ method: String, _ path: String, form: [(String, String)]? = nil, raw: String? = nil,
              contentType: String = "application/x-www-form-urlencoded") throws -> HTTPReply {
        let body = form.map { $0.map { Self.escape($0.0) + "=" + Self.escape($0.1) }.joined(separator: "&") } ?? raw
        let fd = try Self.connect(port)
        defer { close(fd) }
        let request = Array(requestText(method, path, body: body, contentType: contentType).utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65_536)
        while !Self.complete(data) {
            let n = Glibc.read(fd, &buf, buf.count)
            if n <= 0 { break }
            data += buf[0..<n]
        }
        let reply = try Self.parse(data)
        for c in reply.headers("set-cookie") {
            let kv = c.split(separator: ";")[0].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.count == 2 { cookies[String(kv[0])] = kv[1].isEmpty ? nil : String(kv[1]) }
        }
        return reply
    }

    /// Whether `data` holds a whole response (by Content-Length or the last chunk): a server that keeps the
    /// connection open (chromedriver does, despite `Connection: close`) is not waited on.
    static func complete(_ data: [UInt8]) -> Bool {
        guard let end = data.firstRange(of: Array("\r\n\r\n".utf8)) else { return false }
        let head = String(decoding: data[..<end.lowerBound], as: UTF8.self).lowercased()
        let body = data.count - end.upperBound
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            if let n = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) { return body >= n }
        }
        if head.contains("transfer-encoding: chunked") { return data.suffix(5).elementsEqual(Array("0\r\n\r\n".utf8)) }
        return false
    }

    static func parse(_ data: [UInt8]) throws -> HTTPReply {
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw POSIXError(.EBADMSG) }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(head[0].split(separator: " ")[1]) ?? 0
        var headers: [(String, String)] = []
        for line in head.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        }
        var body = String(text[split.upperBound...])
        if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" && $0.1.contains("chunked") }) {
            var out = ""
            var rest = Substring(body)
            while let nl = rest.range(of: "\r\n"), let size = Int(rest[..<nl.lowerBound], radix: 16), size > 0 {
                let start = nl.upperBound
                let bytes = Array(rest[start...].utf8.prefix(size))
                out += String(decoding: bytes, as: UTF8.self)
                let consumed = String(decoding: bytes, as: UTF8.self)
                rest = rest[start...].dropFirst(consumed.count).dropFirst(2)
            }
            body = out
        }
        return HTTPReply(status: status, headers: headers, body: body)
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s
    }

    /// Logs in as `name` (GET the form for its token, POST it).
    @discardableResult
    func login(_ name: String, password: String = WebFixtures.password) throws -> HTTPReply {
        let form = try send("GET", "/login")
        let csrf = Self.csrf(in: form.body) ?? ""
        return try send("POST", "/login", form: [("csrf", csrf), ("name", name), ("password", password)])
    }

    /// The CSRF token of the first form on a page.
    static func csrf(in html: String) -> String? {
        guard let r = html.range(of: "name=\"csrf\" value=\"") else { return nil }
        return String(html[r.upperBound...].prefix { $0 != "\"" })
    }

    /// Opens a Server-Sent Events stream; returns the socket (read it with `readEvents`).
    func openStream(_ path: String) throws -> Int32 {
        let fd = try Self.connect(port)
        let request = Array(requestText("GET", path).utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Reads from a stream until `until` holds for the text so far or `seconds` pass; returns the text.
    static func read(_ fd: Int32, seconds: Double, until: (String) -> Bool) -> String {
        var text = ""
        var buf = [UInt8](repeating: 0, count: 16_384)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let n = Glibc.read(fd, &buf, buf.count)
            if n > 0 { text += String(decoding: buf[0..<n], as: UTF8.self) } else if n == 0 { break }
            if until(text) { break }
        }
        return text
    }
}
