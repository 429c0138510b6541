import Foundation

/// The built `fieldsync` executable (next to the test bundle in the build folder) and a way to run it,
/// shared by the tests that drive the command line and real node processes.
enum FieldSyncBinary {
    static let path: String? = {
        var candidates: [String] = []
        if let exe = Bundle.main.executablePath { candidates.append((exe as NSString).deletingLastPathComponent + "/fieldsync") }
        candidates.append((CommandLine.arguments[0] as NSString).deletingLastPathComponent + "/fieldsync")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        candidates.append("\(root)/.build/debug/fieldsync")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs `executable` (default: `fieldsync`) with `args` in `dir` (default: the current directory) and
    /// returns its status, standard output and standard error.
    @discardableResult
    static func run(_ args: [String], in dir: String? = nil, executable: String? = nil) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable ?? path!)
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
