import FieldSim
import FieldSyncCore
import Foundation

/// Benchmarks of the simulator engine.
func simBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "sim-queue", summary: "event queue hold model (pop one, push one) at 10,000 pending: binary heap vs naive sorted list") { scale in
            queueBenchmark(pending: max(100, Int(10_000 * scale)))
        },
        Benchmark(name: "sim-longnan", summary: "longnan: ideal-epidemic agent, one simulated week vs one day (events/s); then the real protocol (fieldsync agent, stand-in crypto) vs ideal-epidemic over one day (same run)") { scale in
            try longnanBenchmark(days: max(2, 7 * scale)) + longnanFieldSyncBenchmark(days: max(0.5, scale))
        },
        Benchmark(name: "sim-longnan-fieldsync", summary: "longnan with the real protocol (stand-in crypto) vs the ideal-epidemic agent on the same contacts, one simulated day: wall time, bytes, HQ latency") { scale in
            try longnanFieldSyncBenchmark(days: max(0.5, scale))
        },
        Benchmark(name: "sim-engines", summary: "longnan with the real protocol (stand-in crypto), one simulated day: this engine in process vs a previous fieldsim binary ($FIELDSIM_PREVIOUS) on the same scenario and seed: CPU time, events, trace hash", byNameOnly: true) { scale in
            try enginesBenchmark(days: max(0.1, scale))
        },
    ]
}

/// Runs `longnan` for `days` with the `fieldsync` agent (stand-in crypto, seed 1, the CLI's options) in this
/// process, then the previous engine (`FIELDSIM_PREVIOUS`: a release `fieldsim` built from an earlier
/// commit) as a child process on the same scenario; compares CPU time (user + system, `getrusage`: the
/// machine is shared, so wall time would measure the neighbours), events and trace hash.
func enginesBenchmark(days: Double) throws -> [BenchResult] {
    let path = try shippedLongnan()
    guard let previous = ProcessInfo.processInfo.environment["FIELDSIM_PREVIOUS"],
          FileManager.default.isExecutableFile(atPath: previous) else {
        throw ValidationErrorMessage("sim-engines needs FIELDSIM_PREVIOUS=<a fieldsim binary built from an earlier commit>, e.g. "
            + "git archive <commit> | tar -x -C /tmp/prev && (cd /tmp/prev && swift build -c release --product fieldsim), "
            + "then FIELDSIM_PREVIOUS=/tmp/prev/.build/release/fieldsim")
    }
    func cpu(children: Bool) -> Double {
        var u = rusage()
        getrusage(Int32(truncatingIfNeeded: (children ? RUSAGE_CHILDREN : RUSAGE_SELF).rawValue), &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }
    // This engine, with the options `fieldsim --days D` uses (its sample interval: samples are events).
    var f = try ScenarioFile.load(path: path)
    f.days = days
    f.workloadStopDays = max(days - 2, days / 2)
    let interval = f.sampleIntervalMinutes.map { SimTime($0 * 60_000) } ?? (days > 30 ? Duration.day : Duration.hour)
    let options = RunOptions(sampleInterval: interval, recordContacts: true, oracleSampleEvery: 0)
    var start = cpu(children: false)
    let sim = runFieldSync(scenario: try makeScenario(f, seed: 1, path: path), seed: 1, crypto: .standIn, options: options)
    let current = cpu(children: false) - start
    let hash = String(sim.traceHash, radix: 16)
    // The previous engine.
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("sim-engines-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: out) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: previous)
    p.arguments = ["--days", "\(days)", "--agents", "fieldsync", "--crypto", "stand-in", "--seed", "1", "--oracle-every", "0", "--quiet", "--out", out]
    p.standardOutput = FileHandle.nullDevice  // its parameter lines
    start = cpu(children: true)
    try p.run()
    p.waitUntilExit()
    let before = cpu(children: true) - start
    guard p.terminationStatus == 0, let data = FileManager.default.contents(atPath: out + "/fieldsync/summary.json"),
          let summary = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw ValidationErrorMessage("the previous engine failed (status \(p.terminationStatus)) or wrote no summary")
    }
    func find(_ key: String, in v: Any) -> Any? {
        if let d = v as? [String: Any] {
            if let x = d[key] { return x }
            for (_, x) in d { if let y = find(key, in: x) { return y } }
        }
        return nil
    }
    let prevHash = find("trace_hash", in: summary) as? String ?? "?"
    let prevEvents = (find("events", in: summary) as? NSNumber)?.doubleValue ?? .nan
    return [
        BenchResult(name: "CPU seconds for \(days) days", value: current, baseline: before, unit: "s", baselineName: "previous engine", goal: nil),
        BenchResult(name: "simulated days per CPU second", value: days / current, baseline: days / before, unit: "days/s",
                    baselineName: "previous engine", goal: nil),
        BenchResult(name: "events processed", value: Double(sim.eventsProcessed), baseline: prevEvents, unit: "events",
                    baselineName: "previous engine", goal: nil),
        BenchResult(name: "trace hash \(hash) vs \(prevHash) (1 = same run)", value: hash == prevHash ? 1 : 0, baseline: 1, unit: "",
                    baselineName: "same", goal: nil),
    ]
}

/// The classic hold model: a queue of `pending` events; each step pops the earliest and pushes one later.
func queueBenchmark(pending: Int) -> [BenchResult] {
    func hold<Q: EventQueueProtocol>(_ q: inout Q, steps: Int) {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<steps {
            let e = q.pop()!
            q.push(Event(time: e.time + SimTime(rng.next() % 10_000), kind: .sample))
        }
    }
    func filled<Q: EventQueueProtocol>(_ q: Q) -> Q {
        var q = q
        var rng = SplitMix64(seed: 7)
        for _ in 0..<pending { q.push(Event(time: SimTime(rng.next() % 10_000), kind: .sample)) }
        return q
    }
    let steps = 20_000
    var heap = filled(EventQueue())
    let tHeap = secondsPerIteration { hold(&heap, steps: steps) }
    var naive = filled(NaiveEventList())
    let tNaive = secondsPerIteration { hold(&naive, steps: steps) }
    blackHole((heap.count, naive.count))
    return [BenchResult(name: "hold operations/s at \(pending) pending", value: Double(steps) / tHeap, baseline: Double(steps) / tNaive,
                        unit: "ops/s", baselineName: "naive sorted list", goal: nil)]
}

/// Runs `longnan` for `days` and for one day; reports events/s and simulated days per wall second.
func longnanBenchmark(days: Double) throws -> [BenchResult] {
    let path = try shippedLongnan()
    func once(_ d: Double) throws -> (events: Double, wall: Double) {
        var f = try ScenarioFile.load(path: path)
        f.days = d
        f.workloadStopDays = max(d - 2, d / 2)
        let scen = try makeScenario(f, seed: 1, path: path)
        let clock = ContinuousClock()
        let start = clock.now
        let sim = runBaseline(.idealEpidemic, scenario: scen, options: RunOptions(sampleInterval: Duration.day, recordContacts: false, oracleSampleEvery: 0))
        let d = clock.now - start
        return (Double(sim.eventsProcessed), Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }
    let day = try once(1)
    let week = try once(days)
    return [
        BenchResult(name: "events/s over \(days) days", value: week.events / week.wall, baseline: day.events / day.wall,
                    unit: "events/s", baselineName: "one day", goal: nil),
        BenchResult(name: "simulated days per wall second over \(days) days", value: days / week.wall, baseline: 1 / day.wall,
                    unit: "days/s", baselineName: "one day", goal: nil),
    ]
}

/// Runs `longnan` for `days` with the `fieldsync` agent (stand-in crypto, live sessions) and with the
/// ideal-epidemic baseline on the same contacts, reporting the protocol's cost against the ideal; then
/// the `fieldsync` agent with one session per burst (`liveSessions: false`) as the naive variant.
func longnanFieldSyncBenchmark(days: Double) throws -> [BenchResult] {
    let path = try shippedLongnan()
    var f = try ScenarioFile.load(path: path)
    f.days = days
    f.workloadStopDays = max(days - 2, days / 2)
    let options = RunOptions(sampleInterval: Duration.day, recordContacts: true, oracleSampleEvery: 0)
    let clock = ContinuousClock()
    func secs(_ d: Swift.Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
    var start = clock.now
    let fs = runFieldSync(scenario: try makeScenario(f, seed: 1, path: path), seed: 1, crypto: .standIn, options: options)
    let fsWall = secs(clock.now - start)
    let fsReport = fieldSyncReport(fs, scenarioName: f.name, seed: 1, derived: [])
    start = clock.now
    let ep = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path), options: options)
    let epWall = secs(clock.now - start)
    let epReport = baselineReport(ep, scenarioName: f.name, seed: 1, derived: [])
    start = clock.now
    let burst = runFieldSync(scenario: try makeScenario(f, seed: 1, path: path), seed: 1, crypto: .standIn, liveSessions: false,
                             options: options)
    let burstWall = secs(clock.now - start)
    let burstReport = fieldSyncReport(burst, scenarioName: f.name, seed: 1, derived: [])
    return [
        BenchResult(name: "live sessions: simulated days per wall second over \(days) days", value: days / fsWall,
                    baseline: days / burstWall, unit: "days/s", baselineName: "one session per burst", goal: nil),
        BenchResult(name: "live sessions: sessions over \(days) days", value: Double(fs.agent.sessionsStarted),
                    baseline: Double(burst.agent.sessionsStarted), unit: "sessions", baselineName: "one session per burst", goal: nil),
        BenchResult(name: "live sessions: bytes on links over \(days) days", value: Double(fsReport.headline.bytes),
                    baseline: Double(burstReport.headline.bytes), unit: "bytes", baselineName: "one session per burst", goal: nil),
        BenchResult(name: "simulated days per wall second over \(days) days", value: days / fsWall, baseline: days / epWall,
                    unit: "days/s", baselineName: "ideal-epidemic", goal: nil),
        BenchResult(name: "events/s over \(days) days", value: Double(fs.eventsProcessed) / fsWall,
                    baseline: Double(ep.eventsProcessed) / epWall, unit: "events/s", baselineName: "ideal-epidemic", goal: nil),
        BenchResult(name: "bytes on links over \(days) days", value: Double(fsReport.headline.bytes), baseline: Double(epReport.headline.bytes),
                    unit: "bytes", baselineName: "ideal-epidemic", goal: nil),
        BenchResult(name: "HQ latency median (s) over \(days) days", value: fsReport.headline.hqLatencyMedian / 1000,
                    baseline: epReport.headline.hqLatencyMedian / 1000, unit: "s", baselineName: "ideal-epidemic", goal: nil),
    ]
}

/// A benchmark failure with a message.
struct ValidationErrorMessage: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The `longnan` scenario shipped with FieldSim (its resources), so the benchmarks run from any directory.
func shippedLongnan() throws -> String {
    guard let path = ShippedScenarios.path(named: "longnan") else { throw ValidationErrorMessage("the shipped scenario longnan is missing") }
    return path
}
