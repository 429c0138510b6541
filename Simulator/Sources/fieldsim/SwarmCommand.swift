import ArgumentParser
import FieldSim
import Foundation

/// `fieldsim swarm`: the fault swarm on `longnan-small` with the real protocol (stand-in crypto).
struct SwarmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm",
        abstract: "Run longnan-small with the real protocol under a random fault mix per seed (crashes, device loss and revocation, partition, clock skew, duplicated, reordered and corrupted frames, wired outages, receipts) and check the invariants at the end of each run; prints the reproduce command of every failing seed.",
        discussion: "See docs/simulator.md, \"Fault swarm\". Exit status 1 if any seed fails."
    )

    @Option(name: .long, help: "Number of seeds, from --first-seed on.")
    var seeds: Int = 100

    @Option(name: .long, help: "First seed.")
    var firstSeed: UInt64 = 1

    @Option(name: .long, help: "Run only this seed (prints its fault mix); same as --first-seed N --seeds 1.")
    var seed: UInt64?

    @Option(name: .long, help: "Simulated days of longnan-small (default the file's 4; the workload stops a day before the end).")
    var days: Double?

    @Option(name: .long, help: "Seeds at a time, on threads (default: the number of cores). Results do not depend on it.")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .long, help: "With --seed: write the run's summary.json and CSV series to this directory.")
    var out: String?

    @Flag(name: .long, help: "Also draw adversaries per seed (each of revoked, equivocator, bad-relay, flooder on with probability one half, rates drawn; the fault mix is unchanged) and check the trust rules (Simulator/README.md, \"Adversaries\").")
    var adversaries = false

    @Flag(name: .long, help: "Also draw store durability per seed (with probability one half, relay boxes, vehicles and backpack units each run synchronous=NORMAL with probability one half, a WAL checkpoint every 5-300 commits; the fault mix is unchanged): a crash of such a node is a power loss that loses its commits since the last checkpoint, and every crash restarts the node from its store. Checks that nothing is lost beyond what the model explains (docs/simulator.md, \"Power loss\").")
    var powerLoss = false

    @Flag(name: .long, help: "Also draw crashes of HQ, counties and stations (with probability one half, 20-300 per node-year, down 1 min to 5-360 min) and a relay quota (with probability one half, 4-48 KiB per relay box) per seed, from a generator of their own (the fault mix is unchanged); checks the same invariants (docs/simulator.md, \"Crashes of HQ, counties and stations; relay quotas\").")
    var infra = false

    @Flag(name: .long, help: "Print a line for every seed, not only the failing ones.")
    var verbose = false

    func validate() throws {
        if seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if let d = days, d <= 0 { throw ValidationError("--days must be positive") }
    }

    func run() throws {
        let (first, count) = seed.map { ($0, 1) } ?? (firstSeed, seeds)
        let days = self.days
        let verbose = self.verbose || seed != nil
        print("fieldsim swarm: longnan-small\(days.map { ", \(JSON.format($0)) days" } ?? ""), fieldsync agent, stand-in crypto\(adversaries ? ", adversaries" : "")\(powerLoss ? ", power loss" : "")\(infra ? ", infra crashes and relay quota" : ""), seeds \(first)...\(first + UInt64(count) - 1), \(min(jobs, count)) at a time")
        let clock = ContinuousClock()
        let started = clock.now
        let results: [SwarmResult]
        do {
            results = try Swarm.run(first: first, count: count, days: days, threads: jobs, keepFiles: out != nil && seed != nil,
                                    adversaries: adversaries, powerLoss: powerLoss, infra: infra) { r in
                if !r.failures.isEmpty {
                    print("FAIL seed \(r.seed) [\(r.mix.description)]:")
                    for f in r.failures { print("  \(f)") }
                    print("  reproduce: \(Swarm.reproduce(r.seed, days: days, adversaries: adversaries, powerLoss: powerLoss, infra: infra))")
                } else if verbose {
                    print("ok seed \(r.seed) [\(r.mix.description)] trace \(String(r.traceHash, radix: 16)): " + r.counts.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
                }
            }
        } catch { throw SimFailure("\(error)") }
        let wall = seconds(clock.now - started)
        if let dir = out, seed != nil, let r = results.first {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (name, text) in r.files { try write(text, "\(dir)/\(name)") }
            print("fieldsim swarm: wrote \(r.files.map { "\(dir)/\($0.0)" }.joined(separator: ", "))")
        }
        let failed = results.filter { !$0.failures.isEmpty }
        var totals = results.first?.counts.map { ($0.0, 0) } ?? []
        for r in results { for (i, c) in r.counts.enumerated() { totals[i].1 += c.1 } }
        print("fieldsim swarm: \(count) seeds in \(String(format: "%.1f", wall)) s wall, \(failed.count) failed" + (failed.isEmpty ? "" : ": seeds \(failed.map { String($0.seed) }.joined(separator: " "))"))
        print("  totals: " + totals.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
        if !failed.isEmpty { throw ExitCode(1) }
    }
}
