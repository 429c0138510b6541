// Parameter sweeps (issue 14): a grid or list of parameter sets × seeds -> one run each -> a merged
// report (mean and 95 % t interval of each metric per set; CSV, JSON and an SVG chart). Runs are
// independent deterministic simulations, so they run on any number of threads and any number of
// machines (`--shard i/n`) and the merged report is byte-identical whatever the split.

import Foundation

/// A parameter a sweep may vary: one of the scenario file's existing knobs (nothing here adds a knob to
/// the engine). Values are numbers; integer knobs need integral values, `faults.partition` takes 0 or 1.
public enum SweepParameter {
    /// The names accepted, in the order `--help` and the docs list them.
    public static var names: [String] {
        ["days", "relayShare", "coverage", "bandwidthScale", "patrolDaysPerWeek", "dispatchPlanned"]
            + longnanDoubles.map { "longnan.\($0.0)" } + longnanInts.map { "longnan.\($0.0)" }
            + ["longnan.relayProbability.<4g|intermittent|none>", "longnan.links.<class>.bytesPerSecond", "longnan.links.<class>.latencyMs"]
            + faultDoubles.map { "faults.\($0.0)" } + ["faults.partition"]
    }

    static var longnanDoubles: [(String, WritableKeyPath<LongnanConfig, Double?>)] {
        [
            ("restDaysPerWeek", \.restDaysPerWeek), ("incidentsPerYear", \.incidentsPerYear), ("visitsPerYear", \.visitsPerYear),
            ("intermittentWindowProbability", \.intermittentWindowProbability), ("relayUplinkMinutes", \.relayUplinkMinutes),
            ("wiredOutagesPer30Days", \.wiredOutagesPer30Days), ("wiredOutageMeanHours", \.wiredOutageMeanHours),
            ("walkKmPerHour", \.walkKmPerHour), ("driveKmPerHour", \.driveKmPerHour), ("departHour", \.departHour),
            ("maxWalkMinutes", \.maxWalkMinutes),
        ]
    }
    static var longnanInts: [(String, WritableKeyPath<LongnanConfig, Int?>)] {
        [
            ("backpacksPerStation", \.backpacksPerStation), ("vehiclesPerCounty", \.vehiclesPerCounty),
            ("relayUplinkWindowsPerDay", \.relayUplinkWindowsPerDay),
        ]
    }
    static var faultDoubles: [(String, WritableKeyPath<FaultConfig, Double?>)] {
        [
            ("crashesPerDeviceYear", \.crashesPerDeviceYear), ("crashesPerInfraYear", \.crashesPerInfraYear), ("deviceLossPerYear", \.deviceLossPerYear),
            ("clockSkewShare", \.clockSkewShare), ("clockSkewMaxHours", \.clockSkewMaxHours),
            ("linkDuplicate", \.linkDuplicate), ("linkReorder", \.linkReorder), ("linkCorrupt", \.linkCorrupt),
        ]
    }

    /// Sets parameter `name` to `value` in `file`.
    ///
    /// `days` shortens or lengthens the run as `fieldsim --days` does; `relayShare` sets the relay-box
    /// probability of both intermittent and unconnected villages; `coverage` sets the share of villages with
    /// usable 4G, the rest split between intermittent and none in the file's proportion; `bandwidthScale` multiplies every link
    /// class's bytes per second given in the file; `patrolDaysPerWeek` is 7 − `restDaysPerWeek`; `dispatchPlanned` 1
    /// sets `longnan.dispatch` to `nearest-planned`, 0 to `nearest`.
    /// - Throws: `ScenarioError` for an unknown name, a value the knob cannot take, or a file without the
    ///   section the knob lives in.
    public static func apply(_ name: String, _ value: Double, to file: inout ScenarioFile) throws(ScenarioError) {
        func fail(_ m: String) -> ScenarioError { ScenarioError(file: file.name, "sweep parameter \"\(name)\": \(m)") }
        func integral() throws(ScenarioError) -> Int {
            guard value == value.rounded(), abs(value) < 1e9 else { throw fail("needs an integer, got \(value)") }
            return Int(value)
        }
        if name == "days" {
            guard value > 0 else { throw fail("must be positive") }
            file = file.withDays(value)
            return
        }
        if name.hasPrefix("faults.") {
            let key = String(name.dropFirst("faults.".count))
            var f = file.faults ?? FaultConfig()
            if key == "partition" {
                guard value == 0 || value == 1 else { throw fail("takes 0 (off) or 1 (on)") }
                f.partition = value == 1
            } else if let kp = faultDoubles.first(where: { $0.0 == key })?.1 {
                f[keyPath: kp] = value
            } else {
                throw fail("unknown; known: \(names.joined(separator: ", "))")
            }
            file.faults = f
            return
        }
        guard var l = file.longnan else { throw fail("needs a longnan scenario (the file has no \"longnan\" section)") }
        let key = name.hasPrefix("longnan.") ? String(name.dropFirst("longnan.".count)) : name
        let parts = key.split(separator: ".").map(String.init)
        switch parts.count {
        case 1 where key == "relayShare":
            var p = l.relayProbability ?? ["4g": 0, "intermittent": 0.25, "none": 0.5]
            p["intermittent"] = value
            p["none"] = value
            l.relayProbability = p
        case 1 where key == "coverage":
            // The share of villages with usable 4G; the rest split between intermittent and none as in the file.
            guard (0...1).contains(value) else { throw fail("must be a share in [0, 1]") }
            var sh = l.connectivityShares ?? ["4g": 0.55, "intermittent": 0.30, "none": 0.15]
            let other = (sh["intermittent"] ?? 0) + (sh["none"] ?? 0)
            let iShare = other > 0 ? (sh["intermittent"] ?? 0) / other : 2.0 / 3
            sh["4g"] = value
            sh["intermittent"] = (1 - value) * iShare
            sh["none"] = (1 - value) * (1 - iShare)
            l.connectivityShares = sh
        case 1 where key == "bandwidthScale":
            guard value > 0 else { throw fail("must be positive") }
            guard var links = l.links, !links.isEmpty else { throw fail("the file gives no link speeds (\"longnan.links\")") }
            for k in links.keys.sorted() { links[k]!.bytesPerSecond = Int64((Double(links[k]!.bytesPerSecond) * value).rounded()) }
            l.links = links
        case 1 where key == "dispatchPlanned":
            // 1: `dispatch: nearest-planned` (the officer acts when the plan says a direct path could deliver the
            // dispatch); 0: `nearest` (when the device's store holds it).
            guard value == 0 || value == 1 else { throw fail("takes 0 (nearest) or 1 (nearest-planned)") }
            l.dispatch = value == 1 ? "nearest-planned" : "nearest"
        case 1 where key == "patrolDaysPerWeek":
            guard (0...7).contains(value) else { throw fail("must be in [0, 7]") }
            l.restDaysPerWeek = 7 - value
        case 1:
            if let kp = longnanDoubles.first(where: { $0.0 == key })?.1 {
                l[keyPath: kp] = value
            } else if let kp = longnanInts.first(where: { $0.0 == key })?.1 {
                l[keyPath: kp] = try integral()
            } else {
                throw fail("unknown; known: \(names.joined(separator: ", "))")
            }
        case 2 where parts[0] == "relayProbability" && ["4g", "intermittent", "none"].contains(parts[1]):
            guard (0...1).contains(value) else { throw fail("must be a probability") }
            var p = l.relayProbability ?? ["4g": 0, "intermittent": 0.25, "none": 0.5]
            p[parts[1]] = value
            l.relayProbability = p
        case 3 where parts[0] == "links" && ["bytesPerSecond", "latencyMs"].contains(parts[2]):
            guard var link = l.links?[parts[1]] else { throw fail("the file gives no speed for link class \"\(parts[1])\"") }
            if parts[2] == "bytesPerSecond" { link.bytesPerSecond = Int64(try integral()) } else { link.latencyMs = Int64(try integral()) }
            l.links![parts[1]] = link
        default:
            throw fail("unknown; known: \(names.joined(separator: ", "))")
        }
        file.longnan = l
    }
}

extension ScenarioFile {
    /// The file with `days` simulated days, as `fieldsim --days` sets them: for the `longnan` kind the
    /// workload stops at max(days − g, days / 2), g being the file's gap between `days` and
    /// `workloadStopDays`; other kinds write until the end.
    public func withDays(_ d: Double) -> ScenarioFile {
        var f = self
        let stopGap = days - (workloadStopDays ?? (kind == "longnan" ? days - 2 : days))
        f.days = d
        f.workloadStopDays = kind == "longnan" ? max(d - stopGap, d / 2) : d
        return f
    }

    /// The CLI's default oracle sampling: about 300 sampled changes per run.
    public var defaultOracleEvery: Int {
        guard kind == "longnan" else { return 1 }
        let perDay = ((longnan?.incidentsPerYear ?? 190_000) * 4 + (longnan?.visitsPerYear ?? 650_000)) / 365
        return max(1, Int(perDay * days / 300))
    }
}

/// The file of a sweep (`fieldsim sweep --spec FILE`): which scenario and agent, which seeds, and the
/// parameter sets (a grid, a list, or none: one set of the file as it is).
public struct SweepSpec: Codable, Sendable, Equatable {
    /// A shipped scenario name or a path (as `fieldsim --scenario`).
    public var scenario: String
    /// One agent: `ideal-epidemic`, `full-version-vector`, `full-state` or `fieldsync` (default ideal-epidemic).
    public var agent: String?
    /// Crypto of the `fieldsync` agent (default `stand-in`).
    public var crypto: String?
    /// `fieldsync` agent: HQ receipts every this many hours (default none).
    public var receiptsEveryHours: Double?
    /// Seeds of every set (common random numbers: every set runs the same seeds).
    public var seeds: [UInt64]?
    /// Or seeds 1...seedCount (when `seeds` is absent; default 1).
    public var seedCount: Int?
    /// A grid: the cartesian product of the axes, the first axis varying slowest.
    public var grid: [SweepAxis]?
    /// Or a list of sets, each parameter name -> value.
    public var sets: [[String: Double]]?
    /// The chart: a metric against a parameter (default `feedback_overdue_rate` against the first grid axis).
    public var chart: SweepChartSpec?

    /// Creates a spec.
    public init(scenario: String, agent: String? = nil, crypto: String? = nil, receiptsEveryHours: Double? = nil,
                seeds: [UInt64]? = nil, seedCount: Int? = nil, grid: [SweepAxis]? = nil, sets: [[String: Double]]? = nil,
                chart: SweepChartSpec? = nil) {
        (self.scenario, self.agent, self.crypto, self.receiptsEveryHours) = (scenario, agent, crypto, receiptsEveryHours)
        (self.seeds, self.seedCount, self.grid, self.sets, self.chart) = (seeds, seedCount, grid, sets, chart)
    }

    /// The agent run.
    public var agentName: String { agent ?? "ideal-epidemic" }
    /// The seeds run for every set.
    public var seedList: [UInt64] { seeds ?? (1...UInt64(max(1, seedCount ?? 1))).map { $0 } }

    /// The parameter sets, each as (name, value) pairs in a fixed order.
    public var parameterSets: [[(String, Double)]] {
        if let sets { return sets.map { d in d.keys.sorted().map { k in (k, d[k]!) } } }
        guard let grid, !grid.isEmpty else { return [[]] }
        var out: [[(String, Double)]] = [[]]
        for axis in grid { out = out.flatMap { prefix in axis.values.map { prefix + [(axis.parameter, $0)] } } }
        return out
    }

    /// The parameter names that vary across sets, in order of first appearance.
    public var parameterNames: [String] {
        var names: [String] = []
        for set in parameterSets { for (k, _) in set where !names.contains(k) { names.append(k) } }
        return names
    }

    /// Canonical JSON (sorted keys): equal specs give equal text.
    public var canonical: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try! e.encode(self), as: UTF8.self)
    }

    /// Reads a spec from JSON.
    /// - Throws: `ScenarioError` naming the file and the problem.
    public static func parse(_ data: Data, file: String) throws(ScenarioError) -> SweepSpec {
        let s: SweepSpec
        do { s = try JSONDecoder().decode(SweepSpec.self, from: data) } catch { throw ScenarioError(file: file, "not a sweep spec: \(error)") }
        try s.validate(file: file)
        return s
    }

    /// Checks the agent, seeds and the shape of the sets.
    /// - Throws: `ScenarioError`.
    public func validate(file: String) throws(ScenarioError) {
        func fail(_ m: String) -> ScenarioError { ScenarioError(file: file, m) }
        let agents = BaselineKind.allCases.map(\.rawValue) + ["fieldsync"]
        guard agents.contains(agentName) else { throw fail("unknown agent \"\(agentName)\"; known: \(agents.joined(separator: ", "))") }
        if let c = crypto, CryptoMode(rawValue: c) == nil { throw fail("unknown crypto \"\(c)\"") }
        if grid != nil && sets != nil { throw fail("give \"grid\" or \"sets\", not both") }
        if let n = seedCount, n < 1 { throw fail("\"seedCount\" must be at least 1") }
        if let s = seeds, s.isEmpty { throw fail("\"seeds\" is empty") }
        if Set(seedList).count != seedList.count { throw fail("\"seeds\" has duplicates") }
        for axis in grid ?? [] where axis.values.isEmpty { throw fail("grid axis \"\(axis.parameter)\" has no values") }
        if let g = grid, Set(g.map(\.parameter)).count != g.count { throw fail("a grid axis is given twice") }
    }
}

/// One axis of a sweep grid.
public struct SweepAxis: Codable, Sendable, Equatable {
    /// A `SweepParameter` name.
    public var parameter: String
    /// Its values.
    public var values: [Double]
    /// Creates an axis.
    public init(parameter: String, values: [Double]) { (self.parameter, self.values) = (parameter, values) }
}

/// Which metric the sweep's chart draws against which parameter.
public struct SweepChartSpec: Codable, Sendable, Equatable {
    /// A metric name (`SweepMetrics.names`).
    public var metric: String
    /// A parameter that varies in the sweep.
    public var parameter: String
    /// Creates a chart spec.
    public init(metric: String, parameter: String) { (self.metric, self.parameter) = (metric, parameter) }
}

/// The metrics every sweep run reports (the run's headline numbers), in column order.
public enum SweepMetrics {
    /// Every agent.
    public static let common = [
        "delivery_prob", "missing_pairs", "converged", "convergence_after_workload_s", "hq_latency_p50_s",
        "feedback_overdue_rate", "bytes", "bytes_over_minimal", "latency_over_oracle", "overhead_ratio", "changes", "contacts",
        "feedback_hq_latency_p95_s", "feedback_all_entitled_by_deadline", "dispatch_to_scene_p50_s", "dispatch_to_scene_p90_s",
    ]
    /// The `fieldsync` agent adds these.
    public static let fieldsync = ["session_pairs", "session_pairs_failed_or_cut", "stations_diverged"]
    /// The metrics of a sweep of `agent`.
    public static func names(agent: String) -> [String] { agent == "fieldsync" ? common + fieldsync : common }

    static func values(_ h: RunReport.Headline) -> [Double] {
        [h.deliveryProb, Double(h.missing), h.missing == 0 ? 1 : 0, h.convergence.map { Double($0) / 1000 } ?? .nan,
         h.hqLatencyMedian / 1000, h.overdueRate, Double(h.bytes), h.oracle.bytesRatio, h.oracle.latencyRatio,
         h.overheadRatio, Double(h.changes), Double(h.contacts), h.feedbackHQLatencyP95 / 1000, h.feedbackAllEntitledByDeadline,
         h.dispatchToSceneP50 / 1000, h.dispatchToSceneP90 / 1000]
    }
}

/// One run of a sweep: its job number, set, seed, trace hash and metric values (NaN: not defined in
/// this run, e.g. the convergence time of a run that did not converge).
public struct SweepRun: Codable, Sendable, Equatable {
    /// Job number: set × seeds + seed position.
    public var job: Int
    /// Parameter set index.
    public var set: Int
    /// The seed.
    public var seed: UInt64
    /// The run's trace hash (hex).
    public var traceHash: String
    /// Metric values in `SweepMetrics.names(agent:)` order; nil where NaN.
    public var values: [Double?]
}

/// What a sweep (or one shard of it) produced: the canonical spec, the shard, the runs.
public struct SweepShard: Codable, Sendable {
    /// Format version.
    public var fieldsimSweep = 1
    /// `SweepSpec.canonical` of the sweep.
    public var spec: String
    /// Shard index (0-based) and count.
    public var shard: Int, shards: Int
    /// Metric names.
    public var metrics: [String]
    /// The runs of this shard, by job number.
    public var runs: [SweepRun]

    /// Sorted-key JSON; doubles in Swift's shortest round-trip form, so reading it back gives the same values.
    public func encoded() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try! e.encode(self)
    }

    /// Reads a shard file.
    /// - Throws: `ScenarioError`.
    public static func decode(_ data: Data, file: String) throws(ScenarioError) -> SweepShard {
        do { return try JSONDecoder().decode(SweepShard.self, from: data) } catch { throw ScenarioError(file: file, "not a sweep shard: \(error)") }
    }
}

/// Running a sweep.
public enum Sweep {
    /// The job numbers of shard `index` of `count`: every job whose number is `index` modulo `count`.
    public static func jobs(of spec: SweepSpec, shard index: Int = 0, of count: Int = 1) -> [Int] {
        let total = spec.parameterSets.count * spec.seedList.count
        return stride(from: index, to: total, by: count).map { $0 }
    }

    /// Resolves and loads the spec's scenario and checks every parameter set against it (before any run).
    /// - Throws: `ScenarioError`.
    public static func prepare(_ spec: SweepSpec) throws(ScenarioError) -> (file: ScenarioFile, path: String) {
        let path = try ShippedScenarios.resolve(spec.scenario)
        let file = try ScenarioFile.load(path: path)
        for set in spec.parameterSets { _ = try scenario(file, set) }
        if let c = spec.chart {
            guard SweepMetrics.names(agent: spec.agentName).contains(c.metric) else {
                throw ScenarioError(file: spec.scenario, "chart metric \"\(c.metric)\" unknown; known: \(SweepMetrics.names(agent: spec.agentName).joined(separator: ", "))")
            }
            guard spec.parameterNames.contains(c.parameter) else { throw ScenarioError(file: spec.scenario, "chart parameter \"\(c.parameter)\" does not vary in the sweep") }
        }
        return (file, path)
    }

    static func scenario(_ base: ScenarioFile, _ set: [(String, Double)]) throws(ScenarioError) -> ScenarioFile {
        var f = base
        for (k, v) in set { try SweepParameter.apply(k, v, to: &f) }
        try f.validate(file: "\(base.name) with \(set.map { "\($0.0)=\(JSON.format($0.1))" }.joined(separator: " "))")
        return f
    }

    /// Runs one job (the same run `fieldsim --scenario ... --seed S` makes with the set's parameters) and
    /// returns its metrics. Deterministic; touches no global state, so jobs may run on several threads.
    public static func run(job: Int, spec: SweepSpec, file base: ScenarioFile, path: String) throws -> SweepRun {
        let sets = spec.parameterSets, seeds = spec.seedList
        let (set, seed) = (job / seeds.count, seeds[job % seeds.count])
        let file = try scenario(base, sets[set])
        let scen = try makeScenario(file, seed: seed, path: path)
        let derived = scen.derivedParameters
        var options = RunOptions(sampleInterval: file.sampleIntervalMinutes.map { Int64($0 * 60_000) } ?? (file.days > 30 ? Duration.day : Duration.hour),
                                 snapshotAt: nil, recordContacts: true, oracleSampleEvery: file.defaultOracleEvery)
        options.linkFaults = LinkFaults(file.faults, seed: seed)
        var values: [Double]
        let hash: UInt64
        if spec.agentName == "fieldsync" {
            let sim = runFieldSync(scenario: scen, seed: seed, crypto: CryptoMode(rawValue: spec.crypto ?? "stand-in")!,
                                   receiptInterval: spec.receiptsEveryHours.map { SimTime($0 * 3_600_000) }, durability: StoreDurability(file.faults), keyRotation: KeyRotation(file.keys),
                                   options: options)
            if let v = sim.invariantViolation { throw ScenarioError(file: file.name, "set \(set) seed \(seed): invariant violated \(v)") }
            let h = fieldSyncReport(sim, scenarioName: file.name, seed: seed, derived: derived).headline
            let a = sim.agent
            values = SweepMetrics.values(h) + [Double(a.sessionsStarted), Double(a.sessionsFailed), Double(h.divergedStations)]
            hash = sim.traceHash
        } else {
            let sim = runBaseline(BaselineKind(rawValue: spec.agentName)!, scenario: scen, options: options)
            if let v = sim.invariantViolation { throw ScenarioError(file: file.name, "set \(set) seed \(seed): invariant violated \(v)") }
            values = SweepMetrics.values(baselineReport(sim, scenarioName: file.name, seed: seed, derived: derived).headline)
            hash = sim.traceHash
        }
        return SweepRun(job: job, set: set, seed: seed, traceHash: String(hash, radix: 16), values: values.map { $0.isFinite ? $0 : nil })
    }

    /// Runs `jobs` on `threads` threads (each run is independent; results are ordered by job number, so
    /// the output does not depend on the thread count). `done` is called after each run, from the
    /// running thread, under a lock.
    /// - Throws: the first run's error, by job number.
    public static func runJobs(_ jobs: [Int], spec: SweepSpec, threads: Int, shard: Int = 0, of shards: Int = 1,
                               done: (@Sendable (SweepRun) -> Void)? = nil) throws -> SweepShard {
        let (file, path) = try prepare(spec)
        let runs = try parallelMap(jobs.count, threads: threads, { i in try run(job: jobs[i], spec: spec, file: file, path: path) },
                                   done: done)
        return SweepShard(spec: spec.canonical, shard: shard, shards: shards, metrics: SweepMetrics.names(agent: spec.agentName), runs: runs)
    }

    /// Merges shard outputs into the sweep's report. Every shard must come from the same spec and the
    /// same shard count, and together hold every job exactly once.
    /// - Throws: `ScenarioError` naming what does not fit.
    public static func merge(_ shards: [SweepShard]) throws(ScenarioError) -> SweepReport {
        guard let first = shards.first else { throw ScenarioError(file: "merge", "no shard given") }
        let spec: SweepSpec
        do { spec = try JSONDecoder().decode(SweepSpec.self, from: Data(first.spec.utf8)) } catch {
            throw ScenarioError(file: "merge", "the shard's spec does not decode: \(error)")
        }
        var byJob: [Int: SweepRun] = [:]
        for s in shards {
            guard s.spec == first.spec else { throw ScenarioError(file: "merge", "shard \(s.shard)/\(s.shards) is of another sweep (its spec differs)") }
            guard s.shards == first.shards, s.metrics == first.metrics else { throw ScenarioError(file: "merge", "shard \(s.shard)/\(s.shards) was cut \(s.shards) ways, shard \(first.shard)/\(first.shards) \(first.shards) ways") }
            for r in s.runs {
                if byJob[r.job] != nil { throw ScenarioError(file: "merge", "job \(r.job) is in two shards (shard \(s.shard) given twice?)") }
                byJob[r.job] = r
            }
        }
        let total = spec.parameterSets.count * spec.seedList.count
        let missing = (0..<total).filter { byJob[$0] == nil }
        guard missing.isEmpty else {
            let shardsMissing = Set(missing.map { $0 % first.shards }).sorted()
            throw ScenarioError(file: "merge", "\(missing.count) of \(total) runs missing: shard(s) \(shardsMissing.map { "\($0)/\(first.shards)" }.joined(separator: ", ")) not given")
        }
        guard byJob.count == total else { throw ScenarioError(file: "merge", "a shard holds jobs beyond the sweep's \(total)") }
        return SweepReport(spec: spec, metrics: first.metrics, runs: (0..<total).map { byJob[$0]! })
    }
}

/// Mean and 95 % interval of one metric over a set's seeds.
public struct SweepStatistic: Sendable, Equatable {
    /// Runs where the metric is defined.
    public var n: Int
    /// Mean (NaN if n = 0).
    public var mean: Double
    /// Sample standard deviation (NaN if n < 2).
    public var sd: Double
    /// Half-width of the 95 % interval of the mean: t(0.975, n − 1) · sd / √n (NaN if n < 2).
    public var halfWidth: Double

    /// The statistic of `values`.
    public init(_ values: [Double]) {
        n = values.count
        mean = n > 0 ? values.reduce(0, +) / Double(n) : .nan
        guard n > 1 else {
            sd = .nan
            halfWidth = .nan
            return
        }
        let m = mean
        sd = (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(n - 1)).squareRoot()
        halfWidth = Self.t975(df: n - 1) * sd / Double(n).squareRoot()
    }

    /// The 0.975 quantile of Student's t with `df` degrees of freedom (exact to 4 decimals up to 30, then
    /// interpolated linearly in 1/df between 30, 40, 60, 120 and ∞).
    public static func t975(df: Int) -> Double {
        precondition(df >= 1)
        let table = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
                     2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
                     2.0518, 2.0484, 2.0452, 2.0423]
        if df <= 30 { return table[df - 1] }
        let knots: [(Double, Double)] = [(30, 2.0423), (40, 2.0211), (60, 2.0003), (120, 1.9799), (.infinity, 1.9600)]
        let x = 1 / Double(df)
        for i in 0..<(knots.count - 1) where Double(df) <= knots[i + 1].0 {
            let (x0, x1) = (1 / knots[i].0, 1 / knots[i + 1].0)
            return knots[i].1 + (knots[i + 1].1 - knots[i].1) * (x0 - x) / (x0 - x1)
        }
        return 1.96
    }
}

/// The merged report of a sweep: per set, each metric's mean and 95 % interval over the seeds.
public struct SweepReport {
    /// The spec.
    public var spec: SweepSpec
    /// Metric names.
    public var metrics: [String]
    /// Every run, by job number.
    public var runs: [SweepRun]

    /// Per set, per metric.
    public var statistics: [[SweepStatistic]] {
        let sets = spec.parameterSets.count
        return (0..<sets).map { s in
            let rs = runs.filter { $0.set == s }
            return metrics.indices.map { m in SweepStatistic(rs.compactMap { $0.values[m] }) }
        }
    }

    private func value(_ set: [(String, Double)], _ name: String) -> Double? { set.first { $0.0 == name }?.1 }

    private static func csvNumber(_ d: Double) -> String { d.isFinite ? JSON.format(d) : "" }

    /// `sweep.csv`: one row per set: the parameters, the number of runs, then mean, ci95_low, ci95_high of each metric.
    public var setsCSV: String {
        let names = spec.parameterNames
        var s = (["set"] + names + ["runs"] + metrics.flatMap { ["\($0)_mean", "\($0)_ci95_low", "\($0)_ci95_high"] }).joined(separator: ",") + "\n"
        for (i, (set, stats)) in zip(spec.parameterSets, statistics).enumerated() {
            var row = ["\(i)"] + names.map { value(set, $0).map(Self.csvNumber) ?? "" } + ["\(spec.seedList.count)"]
            for st in stats { row += [Self.csvNumber(st.mean), Self.csvNumber(st.mean - st.halfWidth), Self.csvNumber(st.mean + st.halfWidth)] }
            s += row.joined(separator: ",") + "\n"
        }
        return s
    }

    /// `runs.csv`: one row per run.
    public var runsCSV: String {
        let names = spec.parameterNames, sets = spec.parameterSets
        var s = (["job", "set"] + names + ["seed", "trace_hash"] + metrics).joined(separator: ",") + "\n"
        for r in runs {
            s += (["\(r.job)", "\(r.set)"] + names.map { value(sets[r.set], $0).map(Self.csvNumber) ?? "" } + ["\(r.seed)", r.traceHash]
                + r.values.map { $0.map(Self.csvNumber) ?? "" }).joined(separator: ",") + "\n"
        }
        return s
    }

    /// `sweep.json`.
    public var json: JSON {
        let sets = spec.parameterSets
        let st = statistics
        let setRows: [JSON] = sets.indices.map { i in
            .object([
                ("set", .int(Int64(i))), ("parameters", .object(sets[i].map { ($0.0, .number($0.1)) })),
                ("runs", .int(Int64(spec.seedList.count))),
                ("metrics", .object(metrics.indices.map { m in
                    let x = st[i][m]
                    return (metrics[m], .object([("n", .int(Int64(x.n))), ("mean", .number(x.mean)), ("sd", .number(x.sd)),
                                                 ("ci95_low", .number(x.mean - x.halfWidth)), ("ci95_high", .number(x.mean + x.halfWidth))]))
                })),
            ])
        }
        return .object([
            ("scenario", .string(spec.scenario)), ("agent", .string(spec.agentName)),
            ("seeds", .array(spec.seedList.map { .string("\($0)") })),
            ("interval", .string("95 % interval of the mean over seeds: mean ± t(0.975, n-1) · sd / sqrt(n)")),
            ("sets", .array(setRows)),
            ("runs", .array(runs.map { r in
                .object([("job", .int(Int64(r.job))), ("set", .int(Int64(r.set))), ("seed", .string("\(r.seed)")), ("trace_hash", .string(r.traceHash)),
                         ("metrics", .object(zip(metrics, r.values).map { ($0.0, $0.1.map(JSON.number) ?? .null) }))])
            })),
        ])
    }

    /// The chart's metric and parameter: the spec's, else `feedback_overdue_rate` against the first
    /// varying parameter (nil when nothing varies).
    public var chartChoice: SweepChartSpec? {
        if let c = spec.chart { return c }
        guard let p = spec.parameterNames.first else { return nil }
        return SweepChartSpec(metric: "feedback_overdue_rate", parameter: p)
    }

    /// The SVG chart of `metric` against `parameter`: mean and 95 % interval per set, one line per
    /// combination of the other parameters.
    public func chart(metric: String, against parameter: String) -> String {
        guard let m = metrics.firstIndex(of: metric) else { return "" }
        let sets = spec.parameterSets, st = statistics
        var series: [(String, [(Double, SweepStatistic)])] = []
        for (i, set) in sets.enumerated() {
            guard let x = value(set, parameter) else { continue }
            let label = set.filter { $0.0 != parameter }.map { "\($0.0)=\(JSON.format($0.1))" }.joined(separator: ", ")
            if let k = series.firstIndex(where: { $0.0 == label }) { series[k].1.append((x, st[i][m])) } else { series.append((label, [(x, st[i][m])])) }
        }
        for k in series.indices { series[k].1.sort { $0.0 < $1.0 } }
        let n = spec.seedList.count
        return SVG.intervalChart(title: "\(metric) against \(parameter) (\(spec.scenario), \(spec.agentName), \(n) seed\(n == 1 ? "" : "s") per point)",
                                 series: series.map { ($0.0, $0.1.map { ($0.0, $0.1.mean, $0.1.halfWidth) }) },
                                 xLabel: parameter, yLabel: "\(metric) (mean, 95 % interval)")
    }

    /// The files of the report, by name: `sweep.json`, `sweep.csv`, `runs.csv` and the chart
    /// (`<metric>-vs-<parameter>.svg`).
    public var files: [(String, String)] {
        var out = [("sweep.json", json.render() + "\n"), ("sweep.csv", setsCSV), ("runs.csv", runsCSV)]
        if let c = chartChoice { out.append(("\(c.metric)-vs-\(c.parameter).svg", chart(metric: c.metric, against: c.parameter))) }
        return out
    }
}

extension SVG {
    /// Lines of (x, mean, half-width) points with vertical interval bars, on linear axes fitted to the data
    /// (the chart says when y does not start at 0).
    public static func intervalChart(title: String, series: [(String, [(Double, Double, Double)])], xLabel: String, yLabel: String) -> String {
        var s = header(title) + axes(xLabel: xLabel, yLabel: yLabel)
        let pts = series.flatMap(\.1).filter { $0.1.isFinite }
        let his = pts.map { $0.1 + ($0.2.isFinite ? $0.2 : 0) }, los = pts.map { $0.1 - ($0.2.isFinite ? $0.2 : 0) }
        var ylo = los.min() ?? 0, yhi = his.max() ?? 1
        if ylo >= 0 && ylo <= 0.5 * yhi { ylo = 0 }  // near zero: from zero
        if yhi - ylo < 1e-12 { (ylo, yhi) = (ylo - 0.5 * max(abs(ylo), 1), yhi + 0.5 * max(abs(yhi), 1)) }
        let (yt, yd) = niceTicks(ylo, yhi)
        ylo = min(ylo, yt.first ?? ylo)
        yhi = max(yhi, yt.last ?? yhi)
        let xs = pts.map(\.0)
        var xlo = xs.min() ?? 0, xhi = xs.max() ?? 1
        if xhi - xlo < 1e-12 { (xlo, xhi) = (xlo - 1, xhi + 1) }
        let pad = (xhi - xlo) * 0.05
        (xlo, xhi) = (xlo - pad, xhi + pad)
        let px = { (x: Double) in left + (x - xlo) / (xhi - xlo) * (w - left - right) }
        let py = { (y: Double) in h - bottom - (y - ylo) / (yhi - ylo) * (h - top - bottom) }
        if ylo > 0 {
            s += "<text class=\"axis-note\" x=\"\(f(left + 8))\" y=\"\(f(top - 6))\" font-size=\"10\">y axis from \(String(format: "%.\(yd)f", ylo)), fitted to the data (not from 0)</text>\n"
        }
        for q in yt {
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(q) + 4))\" text-anchor=\"end\">\(String(format: "%.\(yd)f", q))</text>\n"
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py(q)))\" x2=\"\(f(w - right))\" y2=\"\(f(py(q)))\" stroke=\"#eee\"/>\n"
        }
        let (xt, xd) = niceTicks(xlo + pad, xhi - pad)
        for x in xt where x >= xlo && x <= xhi {
            s += "<text x=\"\(f(px(x)))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">\(String(format: "%.\(xd)f", x))</text>\n"
        }
        for (i, (name, points)) in series.enumerated() {
            let color = palette[i % palette.count]
            let ok = points.filter { $0.1.isFinite }
            let d = ok.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(f(px($0.element.0))),\(f(py($0.element.1)))" }.joined(separator: " ")
            if !d.isEmpty { s += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n" }
            for (x, y, hw) in ok {
                if hw.isFinite && hw > 0 {
                    s += "<line class=\"interval\" x1=\"\(f(px(x)))\" y1=\"\(f(py(y - hw)))\" x2=\"\(f(px(x)))\" y2=\"\(f(py(y + hw)))\" stroke=\"\(color)\"/>\n"
                    for yy in [y - hw, y + hw] {
                        s += "<line x1=\"\(f(px(x) - 4))\" y1=\"\(f(py(yy)))\" x2=\"\(f(px(x) + 4))\" y2=\"\(f(py(yy)))\" stroke=\"\(color)\"/>\n"
                    }
                }
                s += "<circle class=\"mean\" cx=\"\(f(px(x)))\" cy=\"\(f(py(y)))\" r=\"3\" fill=\"\(color)\"/>\n"
            }
            if !name.isEmpty { s += "<text x=\"\(f(left + 10))\" y=\"\(f(top + 16 + Double(i) * 16))\" fill=\"\(color)\">\(escape(name))</text>\n" }
        }
        return s + "</svg>\n"
    }
}

/// Results of `body(0 ..< count)` computed on `threads` threads (each index once, results in index
/// order). `done` is called after each, under a lock. Rethrows the first error by index.
func parallelMap<T: Sendable>(_ count: Int, threads: Int, _ body: @escaping @Sendable (Int) throws -> T,
                              done: (@Sendable (T) -> Void)? = nil) throws -> [T] {
    let box = ResultBox<T>(count: count)
    let group = DispatchGroup()
    for _ in 0..<max(1, min(threads, count)) {
        group.enter()
        let t = Thread {
            while let i = box.take() { box.put(i, Result { try body(i) }, done) }
            group.leave()
        }
        t.stackSize = 64 << 20
        t.start()
    }
    group.wait()
    return try box.results.map { try $0!.get() }
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private let count: Int
    private(set) var results: [Result<T, any Error>?]
    init(count: Int) {
        self.count = count
        results = Array(repeating: nil, count: count)
    }
    func take() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard next < count else { return nil }
        next += 1
        return next - 1
    }
    func put(_ i: Int, _ r: Result<T, any Error>, _ done: (@Sendable (T) -> Void)?) {
        lock.lock()
        defer { lock.unlock() }
        results[i] = r
        if case let .success(v) = r { done?(v) }
    }
}
