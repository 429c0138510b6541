// fieldsync-fuzz: the fuzz targets of FieldSyncFuzz as one program (docs/fuzzing.md).
//
//   fieldsync-fuzz list                         the target names
//   fieldsync-fuzz seeds DIR [VECTORS]          writes each target's seed corpus to DIR/TARGET/
//   fieldsync-fuzz replay TARGET FILE|DIR...    runs inputs through a target (a crash is a finding)
//   fieldsync-fuzz run TARGET [libFuzzer flags] coverage-guided fuzzing; only in the build of
//                                               Sources/fieldsync-bench/fuzz.sh (-sanitize=fuzzer)
import FieldSyncFuzz
import Foundation

#if FIELDSYNC_LIBFUZZER
/// libFuzzer's entry point for programs that keep their own `main` (LLVM 12 and later).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// The target `run` fuzzes (set once, before libFuzzer starts).
nonisolated(unsafe) var selectedTarget = FuzzTarget.encoding

/// Also exported under libFuzzer's usual name, so that the program links and runs the same way if
/// libFuzzer's own `main` is the one linked (the target then comes from `FIELDSYNC_FUZZ_TARGET`).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#endif

@main
struct FuzzCommand {
    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("fieldsync-fuzz: \(message)\n".utf8))
        exit(2)
    }

    static func target(_ name: String) -> FuzzTarget {
        guard let t = FuzzTarget(rawValue: name) else {
            fail("no target \"\(name)\"; one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return t
    }

    /// The files named, each folder replaced by the files in it (sorted).
    static func inputs(_ paths: [String]) -> [String] {
        paths.flatMap { path -> [String] in
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { fail("\(path) does not exist") }
            guard isDir.boolValue else { return [path] }
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            return names.sorted().filter { !$0.hasPrefix(".") }.map { path + "/" + $0 }
        }
    }

    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        switch args.first {
        case "list":
            for t in FuzzTarget.allCases { print(t.rawValue) }
        case "seeds":
            guard args.count >= 2 else { fail("usage: fieldsync-fuzz seeds DIR [VECTORS]") }
            let out = args[1]
            let vectors = args.count > 2 ? args[2] : "Protocols/vectors"
            for t in FuzzTarget.allCases {
                let dir = out + "/" + t.rawValue
                do {
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    let seeds = try FuzzSeeds.corpus(for: t, vectors: vectors)
                    for (i, s) in seeds.enumerated() {
                        try Data(s).write(to: URL(fileURLWithPath: dir + "/seed-\(String(format: "%03d", i))"))
                    }
                    print("\(t.rawValue): \(seeds.count) seeds in \(dir)")
                } catch { fail("\(t.rawValue): \(error)") }
            }
        case "replay":
            guard args.count >= 3 else { fail("usage: fieldsync-fuzz replay TARGET FILE|DIR...") }
            let t = target(args[1])
            let files = inputs(Array(args.dropFirst(2)))
            for f in files {
                guard let data = FileManager.default.contents(atPath: f) else { fail("cannot read \(f)") }
                t.run(Array(data))
            }
            print("\(t.rawValue): \(files.count) input(s) replayed, no crash")
        case "run":
            #if FIELDSYNC_LIBFUZZER
            guard args.count >= 2 else { fail("usage: fieldsync-fuzz run TARGET [libFuzzer flags and corpus folders]") }
            selectedTarget = target(args[1])
            // libFuzzer sees the program name followed by the flags after the target.
            var argv: [UnsafeMutablePointer<CChar>?] = ([CommandLine.arguments[0]] + args.dropFirst(2)).map { strdup($0) } + [nil]
            var argc = CInt(argv.count - 1)
            let rc = argv.withUnsafeMutableBufferPointer { buffer -> CInt in
                var base = buffer.baseAddress
                return LLVMFuzzerRunDriver(&argc, &base) { data, size in fuzzOneInput(data, size) }
            }
            exit(rc)
            #else
            fail("this build has no libFuzzer; build it with Sources/fieldsync-bench/fuzz.sh")
            #endif
        default:
            #if FIELDSYNC_LIBFUZZER
            if let name = ProcessInfo.processInfo.environment["FIELDSYNC_FUZZ_TARGET"] { selectedTarget = target(name) }
            #endif
            fail("usage: fieldsync-fuzz list | seeds DIR [VECTORS] | replay TARGET FILE|DIR... | run TARGET [libFuzzer flags]")
        }
    }
}
