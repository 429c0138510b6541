import FieldSyncTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The operator documentation, run as written: every ```sh block of README.md and the operator guides runs, in
/// order, in a fresh temporary directory, against the built `fieldsync` binary. A doc that drifts from the binary
/// (a flag renamed, a file a step never made, an exit code) fails here, and so in CI.
///
/// Conventions (docs/doctests.md says the same for writers of docs):
/// - `fieldsync ...` and `swift run fieldsync ...` both run the built binary.
/// - A block is skipped only with a reason: `<!-- doctest: skip (why) -->` on a line before its fence.
/// - `<!-- doctest: file PATH -->` before a fenced block (JSON, a unit file) writes its text to PATH, so a config
///   shown to the reader is the config the following commands use.
/// - `<!-- doctest-page: map /var/lib/fieldsync /etc/fieldsync -->` (once per page) runs the page's absolute
///   paths inside the temporary directory; `sudo -u USER CMD` then runs CMD as the test's user.
/// - `<!-- doctest-page: port 7000 9464 -->` runs the page with a free port in place of each port named (pages
///   run in parallel, beside other tests).
/// - A command ending with `&` (a `serve`) runs in the background; the next command waits until it logs
///   `serving`; at the end of the page it gets SIGTERM and must exit 0.
/// - A failing command fails the page, with its line in the doc, unless the doc shows its exit code
///   with a trailing comment `# exit N` (then it must exit exactly N).
// Serialized: the pages' passphrase keystores cost 256 MiB and a CPU-second of Argon2id at every unlock; six pages
// at once loaded the 2-core machine enough to fail timing tests elsewhere in the suite (handshake timeouts).
@Suite(.ownThread, .serialized) struct DocTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The pages an operator follows, and for each the number of blocks it must run at least (so that a page
    /// whose blocks all became skipped or unfenced does not pass by running nothing).
    static let pages: [(String, Int)] = [
        ("README.md", 5), ("docs/enrollment.md", 6), ("docs/relay-ops.md", 3), ("docs/hq-ops.md", 3),
        ("docs/cli.md", 5), ("docs/node.md", 3), ("docs/backup.md", 6),
    ]

    @Test(arguments: pages.map(\.0))
    func pageRunsAsWritten(_ page: String) throws {
        // FIELDSYNC_TEST_BINARY runs the docs against another build (an older one, to see what they catch).
        let binary = try FieldSyncBinary.required()
        let text = try String(contentsOfFile: Self.root + "/" + page, encoding: .utf8)
        let doc = try DocPage(parsing: text, name: page)
        let minimum = Self.pages.first { $0.0 == page }?.1 ?? 1
        #expect(doc.runnable >= minimum, "\(page): only \(doc.runnable) blocks run (expected at least \(minimum))")
        let dir = NSTemporaryDirectory() + "fieldsync-doctest-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/.doctest/bin", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/.doctest/bin/fieldsync", withDestinationPath: binary)
        var portMap: [UInt16: UInt16] = [:]
        for p in doc.ports { portMap[p] = try FreePort.pick() }
        let script = doc.script(root: dir, portMap: portMap)
        try script.write(toFile: dir + "/.doctest/page.sh", atomically: true, encoding: .utf8)
        let started = ContinuousClock.now
        let r = try DocShell.run(script: dir + "/.doctest/page.sh", in: dir, timeout: .seconds(180))
        let took = ContinuousClock.now - started
        let tail = r.output.split(separator: "\n", omittingEmptySubsequences: false).suffix(60).joined(separator: "\n")
        #expect(r.status == 0, "\(page) does not run as written (exit \(r.status)\(r.timedOut ? ", timed out" : "")):\n\(tail)")
        if let keep = ProcessInfo.processInfo.environment["FIELDSYNC_DOCTEST_KEEP"] {
            try? FileManager.default.copyItem(atPath: dir + "/.doctest/output.log", toPath: keep + "/" + page.replacingOccurrences(of: "/", with: "_") + ".log")
        }
        print("doctest \(page): \(doc.runnable) blocks run, \(doc.skipped.count) skipped (\(doc.skipped.map { "line \($0.line): \($0.reason)" }.joined(separator: "; "))), \(took)")
    }

    @Test func skipNeedsAReasonAndUnknownDirectivesAreRefused() {
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "<!-- doctest: skip -->\n```sh\nls\n```\n", name: "t") }
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "<!-- doctest: skipp (x) -->\n```sh\nls\n```\n", name: "t") }
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "<!-- doctest: skip (x) -->\ntext\n```sh\nls\n```\n", name: "t") }
        // An indented command block is not run: it must be fenced (or it would drift unseen).
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "text\n\n    fieldsync status --config x\n", name: "t") }
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "```sh\nls\n", name: "t") }
        // A system path the page does not map would be written on the test machine.
        #expect(throws: DocPage.Problem.self) { try DocPage(parsing: "```sh\nfieldsync device init --dir /var/lib/fieldsync/device\n```\n", name: "t") }
        #expect(throws: Never.self) {
            try DocPage(parsing: "<!-- doctest-page: map /var/lib/fieldsync -->\n```sh\nfieldsync x --dir /var/lib/fieldsync/device\n```\n", name: "t")
        }
    }

    @Test func aFailingCommandFailsThePageWithItsLine() throws {
        let doc = try DocPage(parsing: "# t\n\n```sh\ntrue\nfalse\ntrue\n```\n", name: "t")
        let dir = NSTemporaryDirectory() + "fieldsync-doctest-self-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/.doctest/bin", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try doc.script().write(toFile: dir + "/.doctest/page.sh", atomically: true, encoding: .utf8)
        let r = try DocShell.run(script: dir + "/.doctest/page.sh", in: dir, timeout: .seconds(20))
        #expect(r.status != 0)
        #expect(r.output.contains("t:5"), "\(r.output)")
        let ok = try DocPage(parsing: "```sh\nfalse   # exit 1\nsh -c 'exit 3'   # exit 3\n```\n", name: "t")
        try ok.script().write(toFile: dir + "/.doctest/page.sh", atomically: true, encoding: .utf8)
        #expect(try DocShell.run(script: dir + "/.doctest/page.sh", in: dir, timeout: .seconds(20)).status == 0)
        let wrong = try DocPage(parsing: "```sh\ntrue   # exit 1\n```\n", name: "t")
        try wrong.script().write(toFile: dir + "/.doctest/page.sh", atomically: true, encoding: .utf8)
        #expect(try DocShell.run(script: dir + "/.doctest/page.sh", in: dir, timeout: .seconds(20)).status != 0)
    }
}

/// A markdown page cut into what the doc-test runs.
struct DocPage {
    struct Problem: Error, CustomStringConvertible { let description: String }

    enum Step {
        /// Shell lines of a ```sh block, starting at `line` (1-based, the first line inside the fence).
        case shell(line: Int, lines: [String])
        /// A block whose text is written to `path` before the next steps.
        case file(line: Int, path: String, lines: [String])
    }

    let name: String
    var steps: [Step] = []
    var skipped: [(line: Int, reason: String)] = []
    var mapped: [String] = []
    var ports: [UInt16] = []
    var runnable: Int { steps.filter { if case .shell = $0 { true } else { false } }.count }

    init(parsing text: String, name: String) throws {
        self.name = name
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var directive: (line: Int, text: String)?
        var i = 0
        var inOtherFence = false
        while i < lines.count {
            let line = lines[i]
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if inOtherFence {
                if trimmed.hasPrefix("```") { inOtherFence = false }
                i += 1
                continue
            }
            if let d = Self.directive(trimmed, prefix: "<!-- doctest-page:") {
                let words = d.split(separator: " ").map(String.init)
                if words.first == "map", words.count > 1, words.dropFirst().allSatisfy({ $0.hasPrefix("/") }) {
                    mapped += words.dropFirst()
                } else if words.first == "port", words.count > 1, words.dropFirst().allSatisfy({ UInt16($0) != nil }) {
                    ports += words.dropFirst().map { UInt16($0)! }
                } else {
                    throw Problem(description: "\(name):\(i + 1): unknown page directive \(d) (known: map /ABSOLUTE/PATH ..., port N ...)")
                }
                i += 1
                continue
            }
            if let d = Self.directive(trimmed, prefix: "<!-- doctest:") {
                if let directive { throw Problem(description: "\(name):\(directive.line): doctest directive not followed by a fenced block") }
                directive = (i + 1, d)
                i += 1
                continue
            }
            if trimmed.hasPrefix("```") {
                let lang = trimmed.dropFirst(3).trimmingCharacters(in: .whitespaces)
                var body: [String] = []
                var j = i + 1
                while j < lines.count, !lines[j].trimmingCharacters(in: .whitespaces).hasPrefix("```") {
                    body.append(lines[j])
                    j += 1
                }
                guard j < lines.count else { throw Problem(description: "\(name):\(i + 1): fenced block never closed") }
                let start = i + 2
                if let d = directive {
                    if d.text.hasPrefix("skip") {
                        let reason = d.text.dropFirst(4).trimmingCharacters(in: .whitespaces)
                        guard reason.hasPrefix("("), reason.hasSuffix(")"), reason.count > 2 else {
                            throw Problem(description: "\(name):\(d.line): `doctest: skip` needs a reason: <!-- doctest: skip (why) -->")
                        }
                        skipped.append((start, String(reason.dropFirst().dropLast())))
                    } else if d.text.hasPrefix("file ") {
                        steps.append(.file(line: start, path: d.text.dropFirst(5).trimmingCharacters(in: .whitespaces), lines: body))
                    } else {
                        throw Problem(description: "\(name):\(d.line): unknown doctest directive \(d.text) (known: skip (why), file PATH)")
                    }
                    directive = nil
                } else if lang == "sh" || lang == "bash" {
                    steps.append(.shell(line: start, lines: body))
                }
                i = j + 1
                continue
            }
            if let directive, !trimmed.isEmpty {
                throw Problem(description: "\(name):\(directive.line): doctest directive not followed by a fenced block")
            }
            if line.hasPrefix("    "), !trimmed.hasPrefix("|"),
               trimmed.hasPrefix("fieldsync ") || trimmed.hasPrefix("sudo -u fieldsync fieldsync ") || trimmed.hasPrefix("swift run fieldsync ") {
                throw Problem(description: "\(name):\(i + 1): an indented command block is never run; fence it as ```sh (or skip it with a reason)")
            }
            if trimmed.hasPrefix("```") { inOtherFence = true }
            i += 1
        }
        if let directive { throw Problem(description: "\(name):\(directive.line): doctest directive not followed by a fenced block") }
        // A system path that is not mapped would be written on the machine running the tests.
        let system = try NSRegularExpression(pattern: #"(?<![\w.~-])/(var|etc|usr|opt|srv|home|root|media|mnt)/[^\s'"`]*"#)
        for step in steps {
            let (line, lines): (Int, [String])
            switch step {
            case let .shell(l, ls): (line, lines) = (l, ls)
            case let .file(l, path, ls): (line, lines) = (l, [path] + ls)
            }
            for (k, text) in lines.enumerated() {
                for m in system.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                    let path = (text as NSString).substring(with: m.range)
                    if !mapped.contains(where: { path.hasPrefix($0) }) {
                        throw Problem(description: "\(name):\(line + k): \(path) is not mapped into the test's directory; add "
                                      + "<!-- doctest-page: map \((path as NSString).pathComponents.prefix(4).joined(separator: "/").replacingOccurrences(of: "//", with: "/")) --> or skip the block")
                    }
                }
            }
        }
    }

    private static func directive(_ line: String, prefix: String) -> String? {
        guard line.hasPrefix(prefix), line.hasSuffix("-->") else { return nil }
        return line.dropFirst(prefix.count).dropLast(3).trimmingCharacters(in: .whitespaces)
    }

    /// `swift run fieldsync ARGS` runs the built binary; `sudo -u USER CMD` runs CMD as the test's user. Both are
    /// scripts that `exec`, not shell functions: a function run in the background is a subshell, and a
    /// SIGTERM to its pid (`kill %1`) would never reach the `serve` inside it.
    ///
    /// The page's own bash writes them, not the test process: a file this multi-threaded process wrote could be
    /// held open for writing by a child another test forks at that instant, and executing it then fails with
    /// ETXTBSY ("Text file busy", a CI failure of 2026-12-04). Bash closes its redirection before the next command.
    static let shimLines: [String] = {
        let shims = [
            ("swift", "if [ \"$1\" = run ] && [ \"$2\" = fieldsync ]; then shift 2; exec fieldsync \"$@\"; fi\n"
                + "echo \"doctest: only 'swift run fieldsync' runs in a doc-test (got: swift $*)\" >&2; exit 127"),
            ("sudo", "if [ \"$1\" = -u ]; then shift 2; fi\nexec \"$@\""),
        ]
        return ["mkdir -p .doctest/bin"] + shims.flatMap { name, body in
            ["printf '%s\\n' \(quote("#!/bin/bash\n" + body)) > .doctest/bin/\(name)", "chmod 755 .doctest/bin/\(name)"]
        }
    }()

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// Rewrites the page's mapped absolute paths into `root` and its ports into `portMap`.
    func rewrite(_ s: String, root: String, portMap: [UInt16: UInt16]) -> String {
        var s = s
        for m in mapped { s = s.replacingOccurrences(of: m, with: root + m) }
        for (from, to) in portMap {
            s = s.replacingOccurrences(of: "(?<![0-9])\(from)(?![0-9])", with: "\(to)", options: .regularExpression)
        }
        return s
    }

    /// The bash script that runs the page in `root`: one shell for the whole page, so variables and files carry
    /// over from block to block as they do for a reader typing them into one terminal.
    func script(root: String = "$DOCTEST_ROOT", portMap: [UInt16: UInt16] = [:]) -> String {
        func mapPaths(_ s: String) -> String { rewrite(s, root: root, portMap: portMap) }
        var out = [
            "#!/usr/bin/env bash",
            "set -Eeo pipefail",
            "echo $$ > .doctest/pid",
        ] + Self.shimLines + [
            "export DOCTEST_ROOT=\"$PWD\" PATH=\"$PWD/.doctest/bin:$PATH\" NO_COLOR=1",
            "DOCTEST_AT=start; DOCTEST_BG=(); DOCTEST_BG_AT=()",
            "doctest_failed() { echo \"doctest: \(name):$DOCTEST_AT failed (exit $1): $DOCTEST_CMD\" >&2; }",
            "trap 'doctest_failed $?' ERR",
            // A background command: wait for its "serving" line (or its early end, a failure).
            "doctest_background() {",
            "  local pid=$1 log=$2; DOCTEST_BG+=(\"$pid\"); DOCTEST_BG_AT+=(\"$DOCTEST_AT\")",
            "  for _ in $(seq 1 300); do",
            "    if grep -q 'serving' \"$log\" 2>/dev/null; then return 0; fi",
            "    if ! kill -0 \"$pid\" 2>/dev/null; then cat \"$log\" >&2; echo \"doctest: \(name):$DOCTEST_AT: the background command ended before serving\" >&2; return 1; fi",
            "    sleep 0.1",
            "  done",
            "  cat \"$log\" >&2; echo \"doctest: \(name):$DOCTEST_AT: the background command did not log serving within 30 s\" >&2; return 1",
            "}",
            // At the end: SIGTERM every background command; each must exit 0 (the docs promise a graceful stop).
            "doctest_end() {",
            "  local status=$? i",
            "  trap - ERR",
            "  for i in \"${!DOCTEST_BG[@]}\"; do kill -TERM \"${DOCTEST_BG[$i]}\" 2>/dev/null || true; done",
            "  for i in \"${!DOCTEST_BG[@]}\"; do",
            // 127: the page waited for it itself (`kill %1 && wait %1`), and its own check applied.
            "    wait \"${DOCTEST_BG[$i]}\" 2>/dev/null && continue; s=$?; [ $s -eq 127 ] && continue",
            "    if true; then",
            "      echo \"doctest: \(name):${DOCTEST_BG_AT[$i]}: the background command did not exit 0 on SIGTERM\" >&2; cat .doctest/bg-\"$i\".log >&2 || true; status=1",
            "    fi",
            "  done",
            "  exit $status",
            "}",
            "trap doctest_end EXIT",
        ]
        var background = 0
        for step in steps {
            switch step {
            case .file(let line, let path, let lines):
                let target = mapPaths(path)
                out.append("DOCTEST_AT=\(line); DOCTEST_CMD=\(Self.quote("(write " + path + ")"))")
                out.append("mkdir -p \"$(dirname \(target))\"")
                out.append("printf '%s\\n' \(lines.map { Self.quote(mapPaths($0)) }.joined(separator: " ")) > \(target)")
            case .shell(let line, let lines):
                var k = 0
                while k < lines.count {
                    // One logical command: lines joined by trailing backslashes.
                    var command = [lines[k]]
                    let at = line + k
                    while command.last!.hasSuffix("\\"), k + 1 < lines.count {
                        k += 1
                        command.append(lines[k])
                    }
                    k += 1
                    let joined = command.joined(separator: "\n")
                    let trimmed = joined.trimmingCharacters(in: .whitespaces)
                    if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                    var body = mapPaths(joined)
                    out.append("DOCTEST_AT=\(at); DOCTEST_CMD=\(Self.quote(String(trimmed.prefix(300))))")
                    let (code, withoutComment) = Self.split(body)
                    if withoutComment.hasSuffix("&"), !withoutComment.hasSuffix("&&") {
                        let log = ".doctest/bg-\(background).log"
                        body = String(withoutComment.dropLast()) + " >\(log) 2>&1 & doctest_background $! \(log)"
                        background += 1
                    } else if let code {
                        body = "set +e; trap - ERR; ( \(withoutComment) ); DOCTEST_STATUS=$?; trap 'doctest_failed $?' ERR; set -e\n"
                            + "if [ $DOCTEST_STATUS -ne \(code) ]; then echo \"doctest: \(name):\(at): expected exit \(code), got $DOCTEST_STATUS\" >&2; exit 1; fi"
                    }
                    out.append(body)
                }
            }
        }
        out.append("")
        return out.joined(separator: "\n")
    }

    /// The command without a trailing `# comment`, and the exit code the comment names (`# exit N`).
    /// A `#` counts as a comment only outside quotes and after a space.
    static func split(_ command: String) -> (code: Int32?, command: String) {
        var single = false, double = false
        var previous: Character = " "
        for (offset, ch) in command.enumerated() {
            if ch == "'" && !double { single.toggle() }
            if ch == "\"" && !single { double.toggle() }
            if ch == "#", !single, !double, previous == " " {
                let idx = command.index(command.startIndex, offsetBy: offset)
                let comment = command[idx...].dropFirst().trimmingCharacters(in: .whitespaces)
                let code = comment.hasPrefix("exit ") ? Int32(comment.dropFirst(5).prefix { $0.isNumber }) : nil
                return (code, command[..<idx].trimmingCharacters(in: .whitespaces))
            }
            previous = ch
        }
        return (nil, command.trimmingCharacters(in: .whitespaces))
    }
}

/// Runs a page's script with bash, in its own process group, killed whole at the timeout.
enum DocShell {
    static func run(script: String, in dir: String, timeout: Duration) throws -> (status: Int32, output: String, timedOut: Bool) {
        let p = Process()
        // setsid: the script and everything it starts form a process group of their own, killed whole at the timeout.
        // The script records its pid, which is its process group's id: the group is killed at the end.
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = ["--wait", "--fork", "/bin/bash", script]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = dir + "/.doctest/output.log"
        FileManager.default.createFile(atPath: out, contents: nil)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardOutput = h
        p.standardError = h
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = ContinuousClock.now + timeout
        var timedOut = false
        func group() -> pid_t? {
            (try? String(contentsOfFile: dir + "/.doctest/pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        while p.isRunning {
            if ContinuousClock.now > deadline {
                timedOut = true
                if let g = group() { kill(-g, SIGKILL) }
                break
            }
            usleep(20_000)
        }
        p.waitUntilExit()
        // Whatever the page left running (a background command it never stopped) ends with it.
        if let g = group(), g > 1 { kill(-g, SIGKILL) }
        try? h.close()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        return (p.terminationStatus, text, timedOut)
    }
}

/// A TCP port nothing listens on now (the kernel's pick for port 0).
enum FreePort {
    static func pick() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw DocPage.Problem(description: "socket: \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw DocPage.Problem(description: "bind: \(errno)") }
        return UInt16(bigEndian: addr.sin_port)
    }
}
