import ArgumentParser
import Foundation

/// The benchmarks entry point. Each benchmark prints its figure next to a baseline measured in the same
/// run and the ratio between them; `docs/benchmarks.md` records the latest results.
@main
struct FieldSyncBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync-bench",
        abstract: "Run FieldSync benchmarks; every figure is a ratio against a baseline measured in the same run."
    )

    @Argument(help: "Benchmarks to run (default: all). Use --list to see names.")
    var names: [String] = []

    @Flag(help: "List the benchmarks and exit.")
    var list = false

    @Option(help: "Scale factor for workload sizes (1 = the sizes quoted in docs/benchmarks.md).")
    var scale: Double = 1

    @Flag(help: "Print results as JSON lines.")
    var json = false

    @Option(help: "catchup only: number of changes (default 100,000, or 100,000 x --scale).")
    var changes: Int?

    func run() throws {
        let all = allBenchmarks()
        if list {
            for b in all { print("\(b.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(b.summary)\(b.byNameOnly ? " (run by name only)" : "")") }
            return
        }
        let unknown = names.filter { n in !all.contains { $0.name == n } }
        if !unknown.isEmpty {
            throw ValidationError("unknown benchmark(s): \(unknown.joined(separator: ", ")); see --list")
        }
        let selected = names.isEmpty ? all.filter { !$0.byNameOnly } : all.filter { names.contains($0.name) }
        if changes != nil, !selected.contains(where: { $0.name == "catchup" }) {
            throw ValidationError("--changes applies to the catchup benchmark only: fieldsync-bench catchup --changes N")
        }
        for b in selected {
            if !json { print("== \(b.name): \(b.summary)") }
            let scale = b.name == "catchup" ? changes.map { Double($0) / 100_000 } ?? self.scale : self.scale
            for r in try b.run(scale) {
                if json {
                    let obj: [String: Any] = [
                        "benchmark": b.name, "name": r.name, "value": r.value, "baseline": r.baseline,
                        "unit": r.unit, "baselineName": r.baselineName, "ratio": r.ratio, "goal": r.goal ?? "",
                    ]
                    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    let goal = r.goal.map { "  (goal \($0))" } ?? ""
                    print(String(format: "  %@: %.4g %@ vs %@ %.4g %@ -> ratio %.3f%@",
                                 r.name, r.value, r.unit, r.baselineName, r.baseline, r.unit, r.ratio, goal))
                }
            }
        }
    }
}

/// Every benchmark, in the order they run. Later issues append here.
func allBenchmarks() -> [Benchmark] {
    let all: [[Benchmark]] = [coreBenchmarks(), cryptoBenchmarks(), storeBenchmarks(), reconcileBenchmarks(), sessionBenchmarks(), simBenchmarks(),
                              catchupBenchmarks(), attackBenchmarks(), feedBenchmarks(), observeBenchmarks(), reportBenchmarks(), commandCenterBenchmarks()]
    return all.flatMap { $0 }
}
