import FieldSyncNode
import FieldSyncTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The systemd units in docs/systemd, checked as far as a machine without systemd running allows: the syntax
/// with `systemd-analyze verify`, the system call filter against the calls the binary really makes (traced with
/// strace), and the stop timeout against the shutdown grace the guides configure. The tools come from Debian's
/// `systemd` and `strace` packages (.ci/run installs them); a missing tool fails the test, it never skips.
@Suite(.ownThread) struct SystemdUnitTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let units = ["fieldsync.service", "fieldsync-rotate.service", "fieldsync-rotate.timer"]

    static func text(_ unit: String) throws -> String { try String(contentsOfFile: root + "/docs/systemd/" + unit, encoding: .utf8) }

    /// The values of `key=` in a unit, in order.
    static func values(_ key: String, in text: String) -> [String] {
        text.split(separator: "\n").compactMap { line in
            line.hasPrefix(key + "=") ? String(line.dropFirst(key.count + 1)).trimmingCharacters(in: .whitespaces) : nil
        }
    }

    static func tool(_ name: String) throws -> String {
        for dir in ["/usr/bin", "/bin", "/usr/sbin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
        throw ToolMissing(name: name)
    }

    struct ToolMissing: Error, CustomStringConvertible {
        let name: String
        var description: String { "\(name) is not installed: apt-get install \(name == "systemd-analyze" ? "systemd" : name) (.ci/run does)" }
    }

    /// `systemd-analyze verify` reports nothing for each unit (it exits 0 even on unknown keys and bad values, so
    /// its output is what counts). The binary's path is the only change made to the copies checked: verify
    /// requires the executable to exist.
    @Test func unitsVerify() throws {
        let analyze = try Self.tool("systemd-analyze")
        let binary = try FieldSyncBinary.required()
        let dir = NSTemporaryDirectory() + "fieldsync-units-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for unit in Self.units {
            try Self.text(unit).replacingOccurrences(of: "/usr/local/bin/fieldsync", with: binary)
                .write(toFile: dir + "/" + unit, atomically: true, encoding: .utf8)
        }
        for unit in Self.units {
            let r = try FieldSyncBinary.run(["verify", "--man=no", dir + "/" + unit], in: dir, executable: analyze)
            #expect(r.status == 0 && (r.out + r.err).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
                    "systemd-analyze verify \(unit): exit \(r.status)\n\(r.out)\(r.err)")
        }
        // The test itself sees a bad unit.
        try "[Service]\nExecStart=/bin/true\nTimeoutStopSec=soon\n".write(toFile: dir + "/bad.service", atomically: true, encoding: .utf8)
        let bad = try FieldSyncBinary.run(["verify", "--man=no", dir + "/bad.service"], in: dir, executable: analyze)
        #expect(!(bad.out + bad.err).isEmpty)
    }

    /// The system calls a `SystemCallFilter=` list denies, its `@sets` expanded by `systemd-analyze syscall-filter`.
    static func denied(by unit: String, analyze: String) throws -> Set<String> {
        var denied: Set<String> = []
        var cache: [String: Set<String>] = [:]
        func expand(_ name: String) throws -> Set<String> {
            guard name.hasPrefix("@") else { return [name] }
            if let c = cache[name] { return c }
            let r = try FieldSyncBinary.run(["syscall-filter", name], executable: analyze)
            var out: Set<String> = []
            for line in r.out.split(separator: "\n").dropFirst() {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.isEmpty || t.hasPrefix("#") { continue }
                out.formUnion(try expand(t))
            }
            cache[name] = out
            return out
        }
        for value in values("SystemCallFilter", in: unit) where value.hasPrefix("~") {
            for name in value.dropFirst().split(separator: " ") { denied.formUnion(try expand(String(name))) }
        }
        return denied
    }

    /// Issue 19, item 4: `SystemCallFilter=~@privileged @resources` denied `setpriority`, which the Swift runtime's
    /// threads call at start in `config check` (the unit's ExecStartPre) and `serve`: under systemd the service
    /// would have been killed with SIGSYS before serving. The calls are traced here, not assumed.
    @Test func theSystemCallFilterAllowsWhatTheBinaryCalls() throws {
        let analyze = try Self.tool("systemd-analyze")
        let strace = try Self.tool("strace")
        let binary = try FieldSyncBinary.required()
        let denied = try Self.denied(by: try Self.text("fieldsync.service"), analyze: analyze)
        #expect(denied.contains("setuid") && denied.contains("chown"), "the filter is read: \(denied.sorted())")

        let dir = NSTemporaryDirectory() + "fieldsync-syscalls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for step in [["authority", "init", "--dir", "hq", "--key-file", "hq.key"],
                     ["device", "init", "--dir", "dev", "--key-file", "dev.key", "--role", "relay", "--scope", "longnan/wudu", "--label", "r"],
                     ["authority", "enroll", "dev/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "relay",
                      "--scope", "longnan/wudu", "--out", "dev.cert"],
                     ["device", "import", "dev.cert", "--dir", "dev", "--key-file", "dev.key", "--root", "hq/root.pub"]] {
            let r = try FieldSyncBinary.run(step, in: dir)
            #expect(r.status == 0, "\(step): \(r.err)")
        }
        try #"{"device": {"dir": "dev", "keyFile": "dev.key"}, "store": {"path": "s.sqlite"}, "listen": "127.0.0.1:0", "peers": []}"#
            .write(toFile: dir + "/node.json", atomically: true, encoding: .utf8)

        // config check, as ExecStartPre runs it.
        let check = try FieldSyncBinary.run(["-f", "-qq", "-o", dir + "/check.trace", binary, "config", "check", "node.json"], in: dir,
                                            executable: strace)
        #expect(check.status == 0, "config check under strace: \(check.out)\(check.err)")

        // serve, until it logs "serving", then SIGTERM, as systemd stops it.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: strace)
        p.arguments = ["-f", "-qq", "-o", dir + "/serve.trace", binary, "serve", "--config", "node.json"]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        var log = ""
        let deadline = Date().addingTimeInterval(30)
        let fd = err.fileHandleForReading.fileDescriptor
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !log.contains("serving"), Date() < deadline, p.isRunning {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { log += String(decoding: buffer[..<n], as: UTF8.self) } else { usleep(20_000) }
        }
        #expect(log.contains("serving"), "serve under strace did not start: \(log)")
        // The traced child is strace's child: SIGTERM goes to it, not to strace.
        let children = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/task/\(p.processIdentifier)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ pid_t($0) }) { kill(child, SIGTERM) }
        if children.isEmpty { p.terminate() }
        p.waitUntilExit()

        var called: Set<String> = []
        for trace in ["check.trace", "serve.trace"] {
            let text = try String(contentsOfFile: dir + "/" + trace, encoding: .utf8)
            for line in text.split(separator: "\n") {
                // "1234  name(args..." or "1234  <... name resumed>..."
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 1 else { continue }
                var word = Substring(fields[1])
                if word == "<...", fields.count > 2 { word = fields[2] }
                let name = word.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                if !name.isEmpty { called.insert(String(name)) }
            }
        }
        #expect(called.contains("setpriority"), "the trace is read: \(called.sorted())")
        var blocked = called.intersection(denied)
        // SQLite gives a new -wal or -journal file its database's owner with fchown only when it runs as root
        // (unixOpen, robust_fchown); the unit runs as User=fieldsync, so only a test run as root sees it.
        if geteuid() == 0 { blocked.remove("fchown") }
        #expect(blocked.isEmpty, "the unit's SystemCallFilter denies calls the binary makes (SIGSYS under systemd): \(blocked.sorted())")
    }

    /// Issue 19, item 4: `TimeoutStopSec=30` equalled HQ's 30 s shutdown grace, leaving the daemon no time to
    /// close its store after the drain before systemd's SIGKILL. The unit must leave a margin over the largest
    /// grace any guide configures.
    @Test func theStopTimeoutLeavesAMarginOverTheShutdownGrace() throws {
        let timeout = try #require(Self.values("TimeoutStopSec", in: try Self.text("fieldsync.service")).last.flatMap { Int($0) })
        var graces: [Int] = []
        for page in ["docs/hq-ops.md", "docs/relay-ops.md", "docs/node.md", "README.md"] {
            let text = try String(contentsOfFile: Self.root + "/" + page, encoding: .utf8)
            let pattern = try NSRegularExpression(pattern: #""shutdownGraceSeconds":\s*([0-9]+)"#)
            for m in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                graces.append(Int((text as NSString).substring(with: m.range(at: 1)))!)
            }
        }
        #expect(graces.contains(30), "the guides are read: \(graces)")
        #expect(timeout >= (graces.max() ?? 10) + 15, "TimeoutStopSec=\(timeout) leaves no margin over shutdownGraceSeconds \(graces.max() ?? 10)")
    }

    /// Issue 19, item 4: `Documentation=` pointed at a file nothing installs; relay-ops.md's install step now
    /// installs every file the units name.
    @Test func documentationNamesFilesTheInstallStepInstalls() throws {
        let guide = try String(contentsOfFile: Self.root + "/docs/relay-ops.md", encoding: .utf8)
        for unit in Self.units {
            for doc in Self.values("Documentation", in: try Self.text(unit)).flatMap({ $0.split(separator: " ") }) {
                guard doc.hasPrefix("file://") else { continue }
                let path = String(doc.dropFirst("file://".count))
                let name = (path as NSString).lastPathComponent
                #expect(FileManager.default.fileExists(atPath: Self.root + "/docs/" + name), "\(unit): \(doc) is not one of the docs")
                let folder = (path as NSString).deletingLastPathComponent
                let installs = guide.split(separator: "\n").contains { $0.hasPrefix("install ") && $0.contains(" \(folder) ") && $0.contains(" docs/\(name)") }
                #expect(installs, "\(unit): nothing in relay-ops.md installs \(path)")
            }
        }
    }

    /// Issue 19 ("Paths"): the example config put the key file in /etc/fieldsync and the guides in
    /// /var/lib/fieldsync. The example's device, key file and store paths are the ones the guides' configs and the
    /// units use.
    @Test func theExampleConfigTheGuidesAndTheUnitsAgreeOnPaths() throws {
        let example = try JSONSerialization.jsonObject(with: Data(NodeConfigFile.examplePlain.utf8)) as? [String: Any]
        let device = example?["device"] as? [String: Any]
        let paths = [device?["dir"] as? String, device?["keyFile"] as? String, (example?["store"] as? [String: Any])?["path"] as? String].compactMap { $0 }
        #expect(paths.count == 3, "\(String(describing: example))")
        for page in ["docs/relay-ops.md", "docs/hq-ops.md"] {
            let text = try String(contentsOfFile: Self.root + "/" + page, encoding: .utf8)
            for p in paths { #expect(text.contains("\"\(p)\""), "\(page) does not use \(p) in its config") }
        }
        let rotate = try Self.text("fieldsync-rotate.service")
        for p in paths { #expect(rotate.contains(" \(p)"), "fieldsync-rotate.service does not use \(p)") }
        #expect(try Self.text("fieldsync.service").contains("/etc/fieldsync/node.json"))
    }
}
