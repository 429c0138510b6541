import ArgumentParser
import FieldSim
import Foundation

/// `fieldsim run` (the default subcommand, so `fieldsim --days 1 ...` runs it): runs a scenario with one or
/// more agents and writes a JSON summary, CSV series and SVG charts.
struct FieldSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Deterministic discrete-event simulator of FieldSync over a model of Longnan (see Simulator/README.md)."
    )

    @Option(name: .long, help: "A shipped scenario (longnan, longnan-small, random-contacts, trace: the files of Simulator/Scenarios, built into fieldsim, so a name works from any directory) or a path to a JSON file (it contains / or ends in .json).")
    var scenario: String = "longnan"

    @Option(name: .long, help: "Seed from which every random choice of the run is derived.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Override the scenario's simulated days. For longnan scenarios the workload then stops at max(days - g, days/2), g being the file's days minus workloadStopDays (2 for longnan, 1 for longnan-small); other kinds write until the end.")
    var days: Double?

    @Option(name: .long, help: "Comma-separated agents: ideal-epidemic, full-state, full-version-vector, fieldsync (the real protocol; small scenarios only, e.g. --scenario longnan-small).")
    var agents: String = "ideal-epidemic"

    @Option(name: .long, help: "Crypto of the fieldsync agent: real (default), cached (each change verified and opened once per run, bodies shared between nodes), stand-in (cached plus a size-identical handshake without key exchange; for year-scale runs).")
    var crypto: String = "real"

    @Option(name: .long, help: "fieldsync agent: HQ writes a receipt per station at most every H simulated hours when it got new changes of that station (default: no receipts).")
    var receiptsEveryHours: Double?

    @Flag(inversion: .prefixedNo, help: "fieldsync agent: keep each contact's session open and push later changes on it (live mode); --no-live-sessions starts a new session (handshake and reconciliation) for each burst of new changes.")
    var liveSessions = true

    @Option(name: .long, help: "fieldsync agent: adversaries, comma-separated: revoked (a backpack HQ revokes that keeps syncing and writing), equivocator (a backpack that signs two changes at one seq and shows peers both branches), bad-relay (a relay box that drops, replays and delays the frames it sends), flooder (a backpack that writes many big changes and restarts its sessions), or all. Trust rules are checked at the end; a breach fails the run. See Simulator/README.md, \"Adversaries\".")
    var adversaries: String = ""

    @Option(name: .long, help: "With --adversaries: the day they start (default: a quarter of the way through the workload).")
    var adversaryStartDay: Double?


    @Option(name: .long, help: "Output directory (default out/<scenario>-seed<seed>).")
    var out: String?

    @Option(name: .long, help: "Also write the contacts of the run in the ONE connection-event format to this file.")
    var exportContacts: String?

    @Option(name: .long, help: "Compare with the oracle every n-th change (default: about 300 changes in the run; 0 = off).")
    var oracleEvery: Int?

    @Option(name: .long, help: "Day at which to take the staleness snapshot for the map (default: end of workload).")
    var mapDay: Double?

    @Flag(name: .long, help: "No progress line and no per-agent summary on stdout.")
    var quiet = false

    func validate() throws {
        let names = BaselineKind.allCases.map(\.rawValue) + ["fieldsync"]
        for a in agentList where !names.contains(a) {
            throw ValidationError("unknown agent \"\(a)\"; known: \(names.joined(separator: ", "))")
        }
        if let d = days, d <= 0 { throw ValidationError("--days must be positive") }
        if let h = receiptsEveryHours, h <= 0 { throw ValidationError("--receipts-every-hours must be positive") }
        if !adversaries.isEmpty {
            do { _ = try AdversaryConfig(kinds: adversaries) } catch { throw ValidationError("\(error)") }
            if !agentList.contains("fieldsync") { throw ValidationError("--adversaries needs the fieldsync agent") }
        }
        if let d = adversaryStartDay, d < 0 { throw ValidationError("--adversary-start-day must not be negative") }
        if CryptoMode(rawValue: crypto) == nil {
            throw ValidationError("unknown --crypto \"\(crypto)\"; known: \(CryptoMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    var agentList: [String] { agents.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    func run() throws {
        let path: String
        var file: ScenarioFile
        do {
            path = try ShippedScenarios.resolve(scenario)
            file = try ScenarioFile.load(path: path)
        } catch { throw SimFailure("\(error)") }
        if let d = days {
            let stopGap = file.days - (file.workloadStopDays ?? (file.kind == "longnan" ? file.days - 2 : file.days))
            file.days = d
            file.workloadStopDays = file.kind == "longnan" ? max(d - stopGap, d / 2) : d
        }
        let outDir = out ?? "out/\(file.name)-seed\(seed)"
        var reproduce = "SWIFT_DETERMINISTIC_HASHING=1 swift run -c release fieldsim --scenario \(scenario) --seed \(seed) --agents \(agents)"
        if let d = days { reproduce += " --days \(JSONFormat.number(d))" }
        if agentList.contains("fieldsync") { reproduce += " --crypto \(crypto)" + (liveSessions ? "" : " --no-live-sessions") }
        if let h = receiptsEveryHours { reproduce += " --receipts-every-hours \(JSONFormat.number(h))" }
        if let m = mapDay { reproduce += " --map-day \(JSONFormat.number(m))" }
        var adversaryConfig = try AdversaryConfig(kinds: adversaries)
        adversaryConfig.startDay = adversaryStartDay
        if !adversaryConfig.isEmpty {
            reproduce += " --adversaries \(adversaries)" + (adversaryStartDay.map { " --adversary-start-day \(JSONFormat.number($0))" } ?? "")
        }
        let tty = isatty(STDERR_FILENO) == 1 && !quiet
        for name in agentList {
            let scen: any Scenario
            do { scen = try makeScenario(file, seed: seed, path: path) } catch { throw SimFailure("\(error)") }
            let linkFaults = LinkFaults(file.faults, seed: seed)
            let derived = scen.derivedParameters + [("link faults", linkFaults.description)]
            if name == agentList.first {
                print("fieldsim: scenario \(file.name) (\(path)), seed \(seed)")
                for note in file.notes ?? [] { print("  note: \(note)") }
                for (k, v) in derived { print("  \(k): \(v)") }
                let hashing = ProcessInfo.processInfo.environment["SWIFT_DETERMINISTIC_HASHING"] == "1" ? "on" : "off (outputs do not depend on it)"
                print("  deterministic hashing: \(hashing)")
                print("  reproduce: \(reproduce)")
            }
            let every = oracleEvery ?? estimatedOracleEvery(file)
            var options = RunOptions(sampleInterval: file.sampleIntervalMinutes.map { Int64($0 * 60_000) } ?? (file.days > 30 ? Duration.day : Duration.hour),
                                     snapshotAt: mapDay.map { SimTime($0 * Double(Duration.day)) }, recordContacts: true,
                                     oracleSampleEvery: every)
            options.linkFaults = linkFaults
            let clock = ContinuousClock()
            let started = clock.now
            let total = scen.duration
            var lastDrawn: Double = -1
            // Called every 2^8 events; drawn by the wall clock, at most 4 times a second (and once at the start).
            let progress: (SimTime, UInt64) -> Void = { now, events in
                guard tty else { return }
                let el = seconds(clock.now - started)
                guard lastDrawn < 0 || el - lastDrawn >= 0.25 else { return }
                lastDrawn = el
                let line = ProgressLine.text(agent: name, now: now, duration: total, events: events, elapsed: el)
                FileHandle.standardError.write(Data((ProgressLine.erase + line).utf8))
            }
            let report: RunReport
            var engineWall = 0.0  // the run itself, without the report and the oracle
            let eventsProcessed: UInt64
            let simNow: SimTime
            var contacts: [ContactRecord] = []
            if name == "fieldsync" {
                let sim = runFieldSync(scenario: scen, seed: seed, crypto: CryptoMode(rawValue: crypto)!,
                                       receiptInterval: receiptsEveryHours.map { SimTime($0 * 3_600_000) }, liveSessions: liveSessions,
                                       adversaries: adversaryConfig, durability: StoreDurability(file.faults), keyRotation: KeyRotation(file.keys),
                                       options: options, progress: progress)
                engineWall = seconds(clock.now - started)
                if tty { FileHandle.standardError.write(Data(ProgressLine.erase.utf8)) }  // before anything is printed
                if let v = sim.invariantViolation { throw SimFailure("[\(name)] invariant violated \(v); the run stopped there; reproduce: \(reproduce)") }
                var rep = fieldSyncReport(sim, scenarioName: file.name, seed: seed, derived: derived)
                (eventsProcessed, simNow, contacts) = (sim.eventsProcessed, sim.now, sim.contacts)
                let a = sim.agent
                var adversaryFailures: [String] = []
                if !adversaryConfig.isEmpty {
                    // The trust rules, and delivery along the paths without the adversaries (Swarm.deliveryCheck).
                    let adv = AdversaryChecks.check(sim)
                    let delivery = Swarm.deliveryCheck(sim)
                    adversaryFailures = adv.failures
                    if case var .object(fields) = rep.summary {
                        fields.append(("adversaries", .object([("config", .string(adversaryConfig.description)), ("report", adv.json),
                                                               ("honest_pairs_missing_with_a_path", .int(Int64(delivery.missing))),
                                                               ("honest_pairs_missing_no_path", .int(Int64(delivery.beyondReach)))])))
                        rep.summary = .object(fields)
                    }
                    if !quiet {
                        print("[fieldsync] adversaries: \(adversaryConfig.description); played by \(adv.nodes.map { "\($0.0) \($0.1)" }.joined(separator: ", "))")
                        print("[fieldsync] adversaries: " + adv.counts.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
                        let f = { (l: (p50: Double, p95: Double, max: Double, informed: Int, of: Int)?) in
                            l.map { String(format: "p50 %.0f s, p95 %.0f s, max %.0f s (%d of %d nodes)", $0.p50, $0.p95, $0.max, $0.informed, $0.of) } ?? "none"
                        }
                        if a.revokedNode != nil { print("[fieldsync] revocation of the revoked device reached live nodes: \(f(adv.revocationLatency))") }
                        if a.equivocatorNode != nil { print("[fieldsync] fork proof from first detection to the station's readers: \(f(adv.forkProofLatency))") }
                        print("[fieldsync] honest delivery: \(delivery.missing) (change, reader) pairs missing though the contacts without the adversaries reached them, \(delivery.beyondReach) without such a path" + (delivery.examples.isEmpty ? "" : ", e.g. \(delivery.examples.joined(separator: "; "))"))
                        for x in adv.failures { print("[fieldsync] TRUST BREACH: \(x)") }
                    }
                }
                let keys = keyCheck(sim)
                if !quiet, !a.rotations.isEmpty {
                    print("[fieldsync] keys: \(a.rotations.count) rotation(s) (\(a.keyRotation.description)); \(keys.behind.count) (member, station) pairs behind the newest epoch, \(keys.unreadable) change(s) a member holds and cannot open")
                }
                report = rep
                if !keys.revokedHoldNewKeys.isEmpty || !keys.unreadableThoughCurrent.isEmpty {
                    throw SimFailure("[fieldsync] a key rule was broken: \((keys.revokedHoldNewKeys + keys.unreadableThoughCurrent).joined(separator: "; ")); reproduce: \(reproduce)")
                }
                if !adversaryFailures.isEmpty {
                    throw SimFailure("[fieldsync] a trust rule was broken with adversaries: \(adversaryFailures.joined(separator: "; ")); reproduce: \(reproduce)")
                }
                if !quiet {
                    print("[fieldsync] crypto mode: \(a.crypto.rawValue); bytes by message type: \(a.bytesByMessageType.map { "\($0.0) \($0.1)" }.joined(separator: ", "))")
                    if !a.failures.isEmpty { print("[fieldsync] failed session pairs by cause: \(a.failures.keys.sorted().map { "\($0) \(a.failures[$0]!)" }.joined(separator: ", "))") }
                    if a.receiptInterval != nil {
                        print("[fieldsync] receipts: \(a.receiptsWritten) written by HQ, \(a.changesReceiptedAtAuthor) changes receipted at their author, latency to author p50 \(String(format: "%.0f", a.receiptLatency.quantile(0.5) / 1000)) s, p95 \(String(format: "%.0f", a.receiptLatency.quantile(0.95) / 1000)) s")
                    }
                    if let c = a.verificationCache { print("[fieldsync] verification cache: \(c.count) changes, \(c.hits) hits, \(c.misses) misses, payloads opened \(c.payloadsOpened), reused \(c.payloadsReused), \(c.forgotten) forgotten (at most \(c.limit) held)") }
                    if let line = sim.pathsLine() { print("[fieldsync] paths: \(line)") }
                    print("[fieldsync] real protocol: \(a.writes) changes written (\(a.writtenBytes) bytes encoded, \(a.writeErrors) refused), sessions \(a.sessionsStarted) started / \(a.sessionsFinished) finished / \(a.sessionsFailed) cut or failed (\(a.liveSessions ? "live, \(a.livePushes) pushes" : "one per burst"))")
                }
            } else {
                let sim = runBaseline(BaselineKind(rawValue: name)!, scenario: scen, options: options, progress: progress)
                engineWall = seconds(clock.now - started)
                if tty { FileHandle.standardError.write(Data(ProgressLine.erase.utf8)) }
                if let v = sim.invariantViolation { throw SimFailure("[\(name)] invariant violated \(v); the run stopped there; reproduce: \(reproduce)") }
                report = baselineReport(sim, scenarioName: file.name, seed: seed, derived: derived)
                if !quiet, let line = sim.pathsLine() { print("[\(name)] paths: \(line)") }
                (eventsProcessed, simNow, contacts) = (sim.eventsProcessed, sim.now, sim.contacts)
            }
            let wall = seconds(clock.now - started)
            let dir = "\(outDir)/\(name)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try write(report.summary.render() + "\n", "\(dir)/summary.json")
            try write(report.seriesCSV, "\(dir)/timeseries.csv")
            try write(report.latencyCSV, "\(dir)/latency_cdf.csv")
            for (f, svg) in report.charts { try write(svg, "\(dir)/\(f)") }
            if let e = exportContacts, name == agentList.first { try write(ONETrace.export(contacts), e) }
            let h = report.headline
            let simDays = Double(simNow) / Double(Duration.day)
            if !quiet {
                print("[\(name)] changes \(h.changes), contacts \(h.contacts), delivery_prob \(String(format: "%.4f", h.deliveryProb)), overhead_ratio \(String(format: "%.3f", h.overheadRatio)), bytes \(h.bytes)")
                // A scenario without an HQ (random-contacts, a trace) or without incident feedback has no such figure:
                // say so rather than print "nan" (summary.json writes null).
                let hq = h.hqLatencyMedian.isNaN ? "none reached an HQ (no HQ in this scenario?)" : String(format: "%.1f s", h.hqLatencyMedian / 1000)
                let overdue = h.overdueRate.isNaN ? "none (no feedback deadlines)" : String(format: "%.4f", h.overdueRate)
                print("[\(name)] HQ latency p50 \(hq), feedback overdue \(overdue), missing \(h.missing), converged \(h.convergence.map { String(format: "%.0f s after workload", Double($0) / 1000) } ?? "no")")
                print("[\(name)] oracle: latency ratio \(h.oracle.latencyRatio.isNaN ? "none" : String(format: "%.2f", h.oracle.latencyRatio)) on \(h.oracle.pairs) pairs (violations \(h.oracle.violations)), bytes ratio \(String(format: "%.2f", h.oracle.bytesRatio)); entitlement \(h.entitlementOK ? "ok" : "VIOLATED")")
                print("[\(name)] performance: \(eventsProcessed) events in \(String(format: "%.2f", engineWall)) s wall = \(ProgressLine.rate(Double(eventsProcessed) / engineWall)) events/s, \(ProgressLine.simDaysPerSecond(simDays / engineWall)) sim-days/s (the run; report and oracle \(String(format: "%.2f", wall - engineWall)) s more), peak RSS \(peakRSSMB()) MB")
                print("[\(name)] wrote \(dir)/")
            }
            if h.divergedStations > 0 {
                throw SimFailure("[\(name)] replicas diverged: \(h.divergedStations) station(s) whose complete replicas hold different record state; reproduce: \(reproduce)")
            }
            if !h.entitlementOK || h.oracle.violations > 0 {
                throw SimFailure("invariant violated (\(h.entitlementOK ? "the agent beat the oracle" : "a node holds a change it may not carry")); reproduce: \(reproduce)")
            }
        }
    }

    func estimatedOracleEvery(_ f: ScenarioFile) -> Int {
        switch f.kind {
        case "longnan":
            let perDay = ((f.longnan?.incidentsPerYear ?? 190_000) * 4 + (f.longnan?.visitsPerYear ?? 650_000)) / 365
            return max(1, Int(perDay * f.days / 300))
        default: return 1
        }
    }
}

func seconds(_ d: Swift.Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

func write(_ s: String, _ path: String) throws {
    try s.write(toFile: path, atomically: true, encoding: .utf8)
}

/// Peak resident set size from /proc (Linux), in MB, or "?".
func peakRSSMB() -> String {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return "?" }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        // "VmHWM:\t  229208 kB"; from 8 digits on there is no space after the tab.
        let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first ?? 0
        return String(kb / 1024)
    }
    return "?"
}

enum JSONFormat {
    static func number(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(d) }
}

/// A run that cannot start or that broke an invariant: printed as `Error: ...`, exit status 1.
struct SimFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
