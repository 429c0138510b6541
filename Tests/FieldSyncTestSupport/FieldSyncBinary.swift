import Foundation

/// The built `fieldsync` executable and one way to run it, shared by every test target that drives the
/// command line or real node processes (it used to be written three times, with three search paths).
public enum FieldSyncBinary {
    /// Where the executable was looked for, in order: next to the test bundle in the build products
    /// folder (where `swift build --build-tests` puts it, whatever the scratch path), then the package's
    /// default `.build/debug`.
    public static let candidates: [String] = {
        var out: [String] = []
        if let exe = Bundle.main.executablePath { out.append((exe as NSString).deletingLastPathComponent + "/fieldsync") }
        let runner = (CommandLine.arguments[0] as NSString).deletingLastPathComponent
        out.append(runner + "/fieldsync")
        out.append((runner as NSString).deletingLastPathComponent + "/fieldsync")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        out.append("\(root)/.build/debug/fieldsync")
        var seen: Set<String> = []
        return out.filter { seen.insert($0).inserted }
    }()

    /// The executable's path, or nil if it is not built. `FIELDSYNC_TEST_BINARY` names another build to test
    /// instead (an older one, to check that a test fails on the old code).
    public static let path: String? = ProcessInfo.processInfo.environment["FIELDSYNC_TEST_BINARY"]
        ?? candidates.first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Why a test that needs the executable cannot run: it is not built. A test fails with it rather
    /// than being skipped, so that a CI run without the binary does not pass silently.
    public struct NotBuilt: Error, CustomStringConvertible {
        /// The places looked at.
        public let searched: [String]
        public var description: String {
            "the fieldsync executable is not built (looked in \(searched.joined(separator: ", "))); run `swift build --build-tests`"
        }
    }

    /// The executable's path.
    /// - Throws: `NotBuilt` when it is missing.
    public static func required() throws -> String {
        guard let path else { throw NotBuilt(searched: candidates) }
        return path
    }

    /// Runs `executable` (default: `fieldsync`) with `args` in `dir` (default: the current directory),
    /// waits for it, and returns its status, standard output and standard error. It blocks the calling
    /// thread: call it from a suite that runs on its own thread.
    /// - Throws: `NotBuilt`, or the error of starting the process.
    @discardableResult
    public static func run(_ args: [String], in dir: String? = nil, executable: String? = nil) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try executable ?? required())
        p.arguments = args
        if let dir { p.currentDirectoryURL = URL(fileURLWithPath: dir) }
        let o = Pipe(), e = Pipe()
        p.standardOutput = o
        p.standardError = e
        try p.run()
        let out = o.fileHandleForReading.readDataToEndOfFile()
        let err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }
}
