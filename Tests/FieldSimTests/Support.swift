import FieldSim
import FieldSyncTestSupport
import Foundation

/// The package root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Loads a scenario file shipped under Simulator/Scenarios, optionally shortened to `days`.
func shippedScenario(_ name: String, days: Double? = nil) throws -> (ScenarioFile, String) {
    let path = packageRoot.appendingPathComponent("Simulator/Scenarios/\(name).json").path
    var f = try ScenarioFile.load(path: path)
    if let d = days {
        f.days = d
        f.workloadStopDays = f.kind == "longnan" ? max(d - 2, d / 2) : d
    }
    return (f, path)
}

/// Runs a shipped scenario with a baseline agent.
func run(_ name: String, days: Double? = nil, seed: UInt64 = 1, agent: BaselineKind = .idealEpidemic,
         options: RunOptions = RunOptions()) throws -> (Simulation<BaselineAgent>, RunReport) {
    let (f, path) = try shippedScenario(name, days: days)
    let scen = try makeScenario(f, seed: seed, path: path)
    let sim = runBaseline(agent, scenario: scen, options: options)
    return (sim, baselineReport(sim, scenarioName: f.name, seed: seed, derived: scen.derivedParameters))
}

/// The built `fieldsim` executable: `FIELDSIM_TEST_BINARY` (another build, e.g. an older one, to check that a
/// test fails on the old code), else next to the test bundle or the `fieldsync` binary (where `swift build
/// --build-tests` puts them), else the package's `.build/debug`. Nil if none is built.
let fieldsimBinary: String? = ProcessInfo.processInfo.environment["FIELDSIM_TEST_BINARY"]
    ?? (FieldSyncBinary.candidates.map { ($0 as NSString).deletingLastPathComponent + "/fieldsim" })
    .first { FileManager.default.isExecutableFile(atPath: $0) }
