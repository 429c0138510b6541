// A throwaway PostgreSQL cluster for the feed's tests and benchmark: initdb into a temporary folder,
// the server on a Unix socket in that folder and on 127.0.0.1 at a port of its own, stopped and deleted
// at the end. Run as the `postgres` system user when the caller is root (initdb refuses root).

import Foundation

/// A scratch PostgreSQL server (tests and `fieldsync-bench feed`; not used by the node).
///
/// ```swift
/// guard let pg = try ScratchPostgres.start() else { return }   // nil: PostgreSQL is not installed
/// defer { pg.destroy() }
/// try pg.createDatabase("t1")
/// let config = try FeedConfiguration(url: pg.url(database: "t1"), schema: "feed")
/// ```
public final class ScratchPostgres: @unchecked Sendable {
    /// The folder holding the data directory, the socket and the server log.
    public let dir: String
    /// The server's port (TCP on 127.0.0.1, and the socket's name).
    public let port: Int
    /// The folder of `initdb`, `pg_ctl` and `postgres`.
    public let bin: String
    private let asPostgres: Bool

    /// Why a scratch server cannot be had.
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String
    }

    /// The folder of PostgreSQL's server programs, if installed (Debian's `/usr/lib/postgresql/N/bin`, newest
    /// first, then `PATH`).
    public static func findBinaries() -> String? {
        let fm = FileManager.default
        let versions = ((try? fm.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        for v in versions where fm.isExecutableFile(atPath: "/usr/lib/postgresql/\(v)/bin/initdb") { return "/usr/lib/postgresql/\(v)/bin" }
        for p in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        where fm.isExecutableFile(atPath: "\(p)/initdb") && fm.isExecutableFile(atPath: "\(p)/pg_ctl") { return String(p) }
        return nil
    }

    /// Makes and starts a cluster, or returns nil when PostgreSQL is not installed.
    /// - Parameter durable: keep `fsync` and `synchronous_commit` on (the benchmark); tests turn them off.
    /// - Throws: `Unavailable` when it is installed but does not start (the server log is quoted).
    public static func start(durable: Bool = false) throws -> ScratchPostgres? {
        guard let bin = findBinaries() else { return nil }
        let pg = try ScratchPostgres(bin: bin)
        do {
            try pg.initialize(durable: durable)
            try pg.startServer()
        } catch {
            pg.destroy()
            throw error
        }
        return pg
    }

    private init(bin: String) throws {
        self.bin = bin
        asPostgres = getuid() == 0
        // Short: a Unix socket path is limited to 107 bytes.
        dir = "/tmp/fspg-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        if asPostgres {
            guard let pw = getpwnam("postgres") else {
                throw Unavailable(description: "running as root and there is no `postgres` system user to run the server as (Debian's postgresql package makes it)")
            }
            chown(dir, pw.pointee.pw_uid, pw.pointee.pw_gid)
        }
        port = Self.freePort()
    }

    /// A free port in 32,000-32,767: below Linux's ephemeral range (32768-60999), so that no outgoing
    /// connection takes it before the server binds it, and apart from the 20,000-31,999 the tests hand
    /// to the nodes they start and restart (a daemon restarted on its port found it held by a cluster
    /// started meanwhile, when both picked from the same range).
    private static func freePort() -> Int {
        for _ in 0..<64 {
            let p = Int.random(in: 32_000..<32_768)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(p).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
            close(fd)
            if ok { return p }
        }
        return 32_432
    }

    /// Runs a server program (as `postgres` when root) and waits for it.
    ///
    /// Spawned with `posix_spawn` and reaped with `waitpid`, not with Foundation's `Process`: on Linux `Process`
    /// learns that a child ended from a descriptor the child inherits, and the server `pg_ctl start` leaves
    /// running inherits it too, so `waitUntilExit` would wait for the server to stop. Output goes to a file
    /// (a pipe would be held open by the server the same way).
    @discardableResult
    func run(_ program: String, _ args: [String], allowFailure: Bool = false) throws -> (status: Int32, out: String) {
        let argv = asPostgres ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + args : [program] + args
        let outPath = dir + "/cmd-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o666)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        Self.closeInheritedDescriptors(&actions)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard rc == 0 else { throw Unavailable(description: "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let code: Int32 = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let text = String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self)
        if code != 0 && !allowFailure {
            let log = (try? String(contentsOfFile: dir + "/server.log", encoding: .utf8)) ?? ""
            throw Unavailable(description: "\((program as NSString).lastPathComponent) \(args.joined(separator: " ")) exited \(code): \(text)\n\(log)")
        }
        return (code, text)
    }

    /// Adds "close every descriptor from 3 up" to `actions` (glibc 2.34's
    /// `posix_spawn_file_actions_addclosefrom_np`, looked up at run time: Swift's Glibc module does not
    /// declare it). SwiftNIO opens its sockets without close-on-exec, so the server `pg_ctl start` leaves
    /// running would otherwise hold every connection its caller had open at that moment, and keep them open
    /// after the caller closed them: in the test process, a daemon's live session outlived its peer's
    /// shutdown, and a node's close reached its client only when the cluster stopped.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
    }

    private func initialize(durable: Bool) throws {
        try run(bin + "/initdb", ["-D", dir + "/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"] + (durable ? [] : ["--no-sync"]))
        var conf = "listen_addresses = '127.0.0.1'\nport = \(port)\nunix_socket_directories = '\(dir)'\nmax_connections = 40\n"
        if !durable { conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/data/postgresql.conf"))
        h.seekToEndOfFile()
        h.write(Data(conf.utf8))
        try h.close()
    }

    /// Starts the server (again, after `stopServer()`), waiting until it accepts connections.
    public func startServer() throws {
        try run(bin + "/pg_ctl", ["-D", dir + "/data", "-l", dir + "/server.log", "-w", "-t", "60", "start"])
    }

    /// Stops the server (fast shutdown: sessions are cut).
    public func stopServer() throws {
        try run(bin + "/pg_ctl", ["-D", dir + "/data", "-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// Stops the server and deletes the folder.
    public func destroy() {
        if FileManager.default.fileExists(atPath: dir + "/data/postmaster.pid") {
            _ = try? run(bin + "/pg_ctl", ["-D", dir + "/data", "-m", "immediate", "-w", "stop"], allowFailure: true)
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// `psql` on `database` over the socket, unaligned and tuples only; the output.
    @discardableResult
    public func psql(_ database: String, _ sql: String) throws -> String {
        let psql = FileManager.default.isExecutableFile(atPath: bin + "/psql") ? bin + "/psql" : "/usr/bin/psql"
        return try run(psql, ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", "\(port)", "-U", "postgres", "-d", database, "-c", sql]).out
    }

    /// Creates a database.
    public func createDatabase(_ name: String) throws {
        try psql("postgres", "CREATE DATABASE \(name)")
    }

    /// The feed URL of `database` over the Unix socket.
    public func url(database: String) -> String { "postgres://postgres@localhost:\(port)/\(database)?host=\(dir)" }

    /// The feed URL of `database` over TCP on 127.0.0.1 (with `query`, e.g. `sslmode=require`).
    public func tcpURL(database: String, query: String? = nil) -> String {
        "postgres://postgres@127.0.0.1:\(port)/\(database)" + (query.map { "?" + $0 } ?? "")
    }
}
