import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, "Sweeps": `fieldsim sweep` (parameter sets × seeds, on threads), `--shard i/n` and `fieldsim merge`.
@Suite struct SweepTests {
    /// A small sweep: 2 relay shares × 3 seeds of one day of `longnan-small` (ideal epidemic).
    static let spec = SweepSpec(scenario: "longnan-small", seeds: [1, 2, 3],
                                grid: [SweepAxis(parameter: "relayShare", values: [0, 1]), SweepAxis(parameter: "days", values: [1])],
                                chart: SweepChartSpec(metric: "bytes", parameter: "relayShare"))

    static func files(_ shards: [SweepShard]) throws -> [(String, String)] {
        // Through the shard file's bytes, as `fieldsim merge` reads them.
        try Sweep.merge(shards.map { try SweepShard.decode($0.encoded(), file: "shard") }).files
    }

    /// The report is byte-identical whether the runs go one at a time or on two threads, and whether the
    /// sweep ran whole or in three shards merged in any order.
    @Test func parallelismAndShardingDoNotChangeTheReport() throws {
        let s = Self.spec
        let all = Sweep.jobs(of: s)
        #expect(all == Array(0..<6))
        let one = try Self.files([Sweep.runJobs(all, spec: s, threads: 1)])
        let two = try Self.files([Sweep.runJobs(all, spec: s, threads: 2)])
        #expect(one.map(\.0) == ["sweep.json", "sweep.csv", "runs.csv", "bytes-vs-relayShare.svg"])
        #expect(one.map(\.1) == two.map(\.1))
        var shards: [SweepShard] = []
        for i in [2, 0, 1] {
            let jobs = Sweep.jobs(of: s, shard: i, of: 3)
            #expect(jobs == stride(from: i, to: 6, by: 3).map { $0 })
            shards.append(try Sweep.runJobs(jobs, spec: s, threads: 2, shard: i, of: 3))
        }
        let merged = try Self.files(shards)
        #expect(merged.map(\.1) == one.map(\.1))
        // Relay boxes carry copies: more relays, more bytes, in every seed (same contacts otherwise differ).
        let runs = try Sweep.merge(shards).runs
        let bytes = try #require(SweepMetrics.common.firstIndex(of: "bytes"))
        for seedIndex in 0..<3 { #expect(runs[3 + seedIndex].values[bytes]! > runs[seedIndex].values[bytes]!) }
        // A run of the sweep is the run `fieldsim --scenario longnan-small --days 1 --seed 2` makes with relayShare 0.
        var (f, path) = try shippedScenario("longnan-small", days: 1)
        f.longnan!.relayProbability = ["4g": 0, "intermittent": 0, "none": 0]
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 2, path: path),
                              options: RunOptions(oracleSampleEvery: f.defaultOracleEvery))
        #expect(runs[1].seed == 2 && runs[1].set == 0)
        #expect(runs[1].traceHash == String(sim.traceHash, radix: 16))
    }

    /// Merge refuses a missing shard, a shard given twice and a shard of another sweep.
    @Test func mergeRefusesIncompleteOrMixedShards() throws {
        let s = Self.spec
        let a = try Sweep.runJobs(Sweep.jobs(of: s, shard: 0, of: 2), spec: s, threads: 2, shard: 0, of: 2)
        let b = try Sweep.runJobs(Sweep.jobs(of: s, shard: 1, of: 2), spec: s, threads: 2, shard: 1, of: 2)
        #expect(throws: ScenarioError.self) { try Sweep.merge([a]) }
        #expect(throws: ScenarioError.self) { try Sweep.merge([a, b, b]) }
        var other = s
        other.seeds = [1, 2, 4]
        var c = b
        c.spec = other.canonical
        #expect(throws: ScenarioError.self) { try Sweep.merge([a, c]) }
        do {
            _ = try Sweep.merge([b])
            Issue.record("merge of one of two shards succeeded")
        } catch { #expect("\(error)".contains("shard(s) 0/2 not given"), "\(error)") }
        #expect(try Sweep.merge([b, a]).runs.count == 6)
    }

    /// Mean and 95 % interval: t quantiles against the table (and interpolated past 30 degrees of freedom).
    @Test func intervalsUseStudentsT() {
        #expect(SweepStatistic.t975(df: 1) == 12.7062)
        #expect(SweepStatistic.t975(df: 10) == 2.2281)
        #expect(abs(SweepStatistic.t975(df: 50) - 2.0086) < 0.0005)  // tables: 2.0086
        #expect(abs(SweepStatistic.t975(df: 100) - 1.9840) < 0.0005)  // tables: 1.9840
        #expect(abs(SweepStatistic.t975(df: 100_000) - 1.96) < 0.0005)
        let s = SweepStatistic([1, 2, 3])
        #expect(s.n == 3 && s.mean == 2 && s.sd == 1)
        #expect(abs(s.halfWidth - 4.3027 / 3.0.squareRoot()) < 1e-12)
        let one = SweepStatistic([5])
        #expect(one.mean == 5 && one.halfWidth.isNaN)
    }

    /// Parameters set the scenario file's existing knobs; unknown names and impossible values are refused.
    @Test func parametersSetTheScenarioKnobs() throws {
        let (f, _) = try shippedScenario("longnan-small")
        var g = f
        try SweepParameter.apply("relayShare", 1, to: &g)
        #expect(g.longnan!.relayProbability == ["4g": 0, "intermittent": 1, "none": 1])
        try SweepParameter.apply("bandwidthScale", 0.5, to: &g)
        #expect(g.longnan!.links!["relay-uplink"]!.bytesPerSecond == 32_000)
        try SweepParameter.apply("patrolDaysPerWeek", 6, to: &g)
        #expect(g.longnan!.restDaysPerWeek == 1)
        try SweepParameter.apply("faults.linkCorrupt", 0.01, to: &g)
        try SweepParameter.apply("faults.partition", 1, to: &g)
        #expect(g.faults!.linkCorrupt == 0.01 && g.faults!.partition == true)
        try SweepParameter.apply("longnan.backpacksPerStation", 5, to: &g)
        try SweepParameter.apply("longnan.links.cellular-4g.latencyMs", 50, to: &g)
        #expect(g.longnan!.backpacksPerStation == 5 && g.longnan!.links!["cellular-4g"]!.latencyMs == 50)
        try SweepParameter.apply("days", 2, to: &g)
        #expect(g.days == 2 && g.workloadStopDays == 1)  // longnan-small: the workload stops a day before the end
        #expect(throws: ScenarioError.self) { try SweepParameter.apply("longnan.backpacksPerStation", 2.5, to: &g) }
        #expect(throws: ScenarioError.self) { try SweepParameter.apply("noSuchKnob", 1, to: &g) }
        #expect(throws: ScenarioError.self) { try SweepParameter.apply("faults.partition", 0.5, to: &g) }
        #expect(throws: ScenarioError.self) { try SweepParameter.apply("longnan.links.no-such-link.latencyMs", 1, to: &g) }
        // Every relay-eligible village gets a box at relayShare 1, none at 0.
        let withAll = try makeScenario(g, seed: 1, path: "x.json").world
        var h = f
        try SweepParameter.apply("relayShare", 0, to: &h)
        let withNone = try makeScenario(h, seed: 1, path: "x.json").world
        #expect(withNone.nodes.filter { $0.nodeClass == .relay }.isEmpty)
        #expect(withAll.nodes.filter { $0.nodeClass == .relay }.count > 10)
        // A spec with an unknown parameter fails before any run.
        let bad = SweepSpec(scenario: "longnan-small", grid: [SweepAxis(parameter: "relayShares", values: [0])])
        #expect(throws: ScenarioError.self) { try Sweep.prepare(bad) }
    }

    /// The CLI: `fieldsim sweep --shard i/n` twice and `fieldsim merge` write the files an unsharded
    /// `fieldsim sweep --jobs 2` writes, byte for byte; the default subcommand still runs a scenario.
    @Test(.ownThread, .timeLimit(.minutes(5))) func cliShardsMergeToTheUnshardedReport() throws {
        let fieldsim = try #require(fieldsimBinary, "fieldsim is not built; run `swift build --build-tests`")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fieldsim-sweep-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spec = "{\"scenario\": \"longnan-small\", \"seedCount\": 2, \"sets\": [{\"relayShare\": 0, \"days\": 0.5}, {\"relayShare\": 1, \"days\": 0.5}]}"
        try spec.write(toFile: "\(dir)/s.json", atomically: true, encoding: .utf8)
        let whole = try FieldSyncBinary.run(["sweep", "--spec", "s.json", "--jobs", "2", "--out", "whole"], in: dir, executable: fieldsim)
        #expect(whole.status == 0, "\(whole.out)\(whole.err)")
        for i in 0..<2 {
            let r = try FieldSyncBinary.run(["sweep", "--spec", "s.json", "--shard", "\(i)/2", "--jobs", "1", "--out", "shards"], in: dir, executable: fieldsim)
            #expect(r.status == 0, "\(r.out)\(r.err)")
        }
        let m = try FieldSyncBinary.run(["merge", "shards/shard-1-of-2.json", "shards/shard-0-of-2.json", "--out", "merged"], in: dir, executable: fieldsim)
        #expect(m.status == 0, "\(m.out)\(m.err)")
        // The chart defaults to feedback_overdue_rate against the first parameter (sets' keys sorted: days).
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/whole").sorted()
        #expect(files == ["feedback_overdue_rate-vs-days.svg", "runs.csv", "sweep.csv", "sweep.json"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/merged").sorted() == files)
        for f in files {
            let a = FileManager.default.contents(atPath: "\(dir)/whole/\(f)")
            #expect(a != nil && a == FileManager.default.contents(atPath: "\(dir)/merged/\(f)"), "\(f)")
        }
        let partial = try FieldSyncBinary.run(["merge", "shards/shard-1-of-2.json", "--out", "partial"], in: dir, executable: fieldsim)
        #expect(partial.status != 0 && partial.err.contains("not given"), "\(partial.err)")
        let plain = try FieldSyncBinary.run(["--scenario", "longnan-small", "--days", "0.05", "--quiet", "--out", "plain"], in: dir, executable: fieldsim)
        #expect(plain.status == 0, "\(plain.out)\(plain.err)")
    }
}
