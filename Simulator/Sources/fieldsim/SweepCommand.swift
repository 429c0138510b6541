import ArgumentParser
import FieldSim
import Foundation

/// `fieldsim sweep`: parameter sets × seeds, one run each, on several threads; a merged report, or with
/// `--shard i/n` one shard's runs for `fieldsim merge`.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run a parameter sweep (a grid or list of parameter sets, each over the same seeds) and write the merged report: mean and 95 % interval per set (sweep.csv, sweep.json, runs.csv, an SVG chart).",
        discussion: "Parameters: \(SweepParameter.names.joined(separator: ", ")). See docs/simulator.md, \"Sweeps\"."
    )

    @Option(name: .long, help: "A sweep file (JSON: scenario, agent, seeds or seedCount, grid or sets, chart). The flags below build one instead.")
    var spec: String?

    @Option(name: .long, help: "Scenario name or path (without --spec).")
    var scenario: String = "longnan-small"

    @Option(name: .long, help: "Agent (without --spec): ideal-epidemic, full-version-vector, full-state, fieldsync.")
    var agent: String = "ideal-epidemic"

    @Option(name: .long, help: "Crypto of the fieldsync agent (without --spec).")
    var crypto: String = "stand-in"

    @Option(name: .long, help: "Seeds (without --spec): a list 1,2,5 or a range 1-10.")
    var seeds: String = "1-5"

    @Option(name: .long, help: "A grid axis NAME=v1,v2,... (repeatable; without --spec). Days: --param days=2.")
    var param: [String] = []

    @Option(name: .long, help: "Chart this metric (default feedback_overdue_rate).")
    var metric: String?

    @Option(name: .long, help: "Chart against this parameter (default the first that varies).")
    var against: String?

    @Option(name: .long, help: "Run only shard i of n (0 <= i < n): the jobs whose number is i modulo n; writes DIR/shard-i-of-n.json for fieldsim merge.")
    var shard: String?

    @Option(name: .long, help: "Runs at a time, on threads (default: the number of cores). Outputs do not depend on it.")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .long, help: "Output directory (default out/sweep).")
    var out: String = "out/sweep"

    @Flag(name: .long, help: "No line per run.")
    var quiet = false

    func parsedShard() throws -> (Int, Int) {
        guard let s = shard else { return (0, 1) }
        let p = s.split(separator: "/")
        guard p.count == 2, let i = Int(p[0]), let n = Int(p[1]), n >= 1, (0..<n).contains(i) else {
            throw ValidationError("--shard must be i/n with 0 <= i < n, got \"\(s)\"")
        }
        return (i, n)
    }

    func validate() throws {
        _ = try parsedShard()
        if jobs < 1 { throw ValidationError("--jobs must be at least 1") }
    }

    func buildSpec() throws -> SweepSpec {
        var s: SweepSpec
        if let path = spec {
            guard let data = FileManager.default.contents(atPath: path) else { throw SimFailure("\(path): cannot read the file") }
            do { s = try SweepSpec.parse(data, file: path) } catch { throw SimFailure("\(error)") }
        } else {
            var list: [UInt64] = []
            for part in seeds.split(separator: ",") {
                let r = part.split(separator: "-")
                if r.count == 2, let a = UInt64(r[0]), let b = UInt64(r[1]), a <= b { list += Array(a...b) } else if let v = UInt64(part) { list.append(v) } else {
                    throw ValidationError("--seeds: \"\(part)\" is not a seed or a range a-b")
                }
            }
            var axes: [SweepAxis] = []
            for p in param {
                let kv = p.split(separator: "=", maxSplits: 1)
                let values = kv.count == 2 ? kv[1].split(separator: ",").compactMap { Double($0) } : []
                guard kv.count == 2, !values.isEmpty, values.count == kv[1].split(separator: ",").count else {
                    throw ValidationError("--param must be NAME=v1,v2,..., got \"\(p)\"")
                }
                axes.append(SweepAxis(parameter: String(kv[0]), values: values))
            }
            s = SweepSpec(scenario: scenario, agent: agent, crypto: agent == "fieldsync" ? crypto : nil, seeds: list, grid: axes.isEmpty ? nil : axes)
            do { try s.validate(file: "flags") } catch { throw SimFailure("\(error)") }
        }
        if metric != nil || against != nil {
            let m = metric ?? s.chart?.metric ?? "feedback_overdue_rate"
            guard let a = against ?? s.chart?.parameter ?? s.parameterNames.first else { throw ValidationError("--metric: nothing varies to chart it against") }
            s.chart = SweepChartSpec(metric: m, parameter: a)
        }
        return s
    }

    func run() throws {
        let s = try buildSpec()
        let (i, n) = try parsedShard()
        let list = Sweep.jobs(of: s, shard: i, of: n)
        let total = s.parameterSets.count * s.seedList.count
        print("fieldsim sweep: \(s.scenario), agent \(s.agentName), \(s.parameterSets.count) parameter set(s) × \(s.seedList.count) seed(s) = \(total) runs"
              + (n > 1 ? "; shard \(i)/\(n): \(list.count) runs" : "") + ", \(min(jobs, max(list.count, 1))) at a time")
        let clock = ContinuousClock()
        let started = clock.now
        let quiet = self.quiet
        let shardResult: SweepShard
        do {
            shardResult = try Sweep.runJobs(list, spec: s, threads: jobs, shard: i, of: n) { run in
                if !quiet { print("  run: job \(run.job) (set \(run.set), seed \(run.seed)) trace \(run.traceHash)") }
            }
        } catch { throw SimFailure("\(error)") }
        let wall = seconds(clock.now - started)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        if n > 1 {
            let file = "\(out)/shard-\(i)-of-\(n).json"
            try shardResult.encoded().write(to: URL(fileURLWithPath: file))
            print("fieldsim sweep: \(list.count) runs in \(String(format: "%.1f", wall)) s wall; wrote \(file) (combine the shards with fieldsim merge)")
            return
        }
        // The unsharded report goes through the shard encoding too, so it is the merge of one shard, byte for byte.
        let report: SweepReport
        do { report = try Sweep.merge([SweepShard.decode(shardResult.encoded(), file: "<memory>")]) } catch { throw SimFailure("\(error)") }
        for (name, text) in report.files { try write(text, "\(out)/\(name)") }
        print("fieldsim sweep: \(total) runs in \(String(format: "%.1f", wall)) s wall; wrote \(report.files.map { "\(out)/\($0.0)" }.joined(separator: ", "))")
    }
}

/// `fieldsim merge`: shard outputs of one sweep -> the report an unsharded run writes, byte for byte.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine the shard files of one sweep (fieldsim sweep --shard i/n) into its report; fails if a shard is missing, given twice or of another sweep."
    )

    @Argument(help: "Shard files (shard-i-of-n.json), in any order.")
    var shards: [String]

    @Option(name: .long, help: "Output directory (default out/sweep).")
    var out: String = "out/sweep"

    func run() throws {
        var list: [SweepShard] = []
        for path in shards {
            guard let data = FileManager.default.contents(atPath: path) else { throw SimFailure("\(path): cannot read the file") }
            do { list.append(try SweepShard.decode(data, file: path)) } catch { throw SimFailure("\(error)") }
        }
        let report: SweepReport
        do { report = try Sweep.merge(list) } catch { throw SimFailure("\(error)") }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for (name, text) in report.files { try write(text, "\(out)/\(name)") }
        print("fieldsim merge: \(list.count) shard(s), \(report.runs.count) runs; wrote \(report.files.map { "\(out)/\($0.0)" }.joined(separator: ", "))")
    }
}
