import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14: `fieldsim` ran only from the repository ("cannot read the file" elsewhere: scenario names were
/// paths relative to the current directory). The scenarios now ship as resources of the `FieldSim` module.
@Suite struct ShippedScenarioTests {
    /// The bundle holds exactly the repository's scenario files and traces, byte for byte.
    @Test func shippedScenariosAreTheRepositoryFiles() throws {
        let source = packageRoot.appendingPathComponent("Simulator/Scenarios").path
        let fm = FileManager.default
        let jsons = try fm.contentsOfDirectory(atPath: source).filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
        #expect(ShippedScenarios.names == jsons)
        #expect(jsons.count >= 4)
        let files = try #require(fm.subpathsOfDirectory(atPath: source) as [String]?).filter { !$0.hasSuffix("/") }
        for f in files.sorted() {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: "\(source)/\(f)", isDirectory: &isDir), !isDir.boolValue else { continue }
            let shipped = fm.contents(atPath: ShippedScenarios.directory.appendingPathComponent(f).path)
            #expect(shipped == fm.contents(atPath: "\(source)/\(f)"), "\(f) differs from the shipped copy")
        }
        for name in jsons {
            let path = try ShippedScenarios.resolve(name)
            let file = try ScenarioFile.load(path: path)
            _ = try makeScenario(file, seed: 1, path: path)  // the trace scenario finds its trace next to it
        }
        #expect(try ShippedScenarios.resolve("x/longnan.json") == "x/longnan.json")
        #expect(throws: ScenarioError.self) { try ShippedScenarios.resolve("no-such-scenario") }
    }

    /// The built binary, run from an empty directory under the system's temporary directory: every shipped
    /// scenario by name, and an unknown name fails with the list of shipped ones. Fails on the old binary
    /// (`FIELDSIM_TEST_BINARY=<old fieldsim>`): "Simulator/Scenarios/longnan-small.json: cannot read the file".
    @Test(.ownThread, .timeLimit(.minutes(5))) func fieldsimRunsFromAnyDirectory() throws {
        let fieldsim = try #require(fieldsimBinary, "fieldsim is not built; run `swift build --build-tests`")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fieldsim-anywhere-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, days) in [("longnan-small", "0.05"), ("trace", "0.05"), ("random-contacts", "0.01"), ("longnan", "0.002")] {
            let r = try FieldSyncBinary.run(["--scenario", name, "--days", days, "--oracle-every", "0", "--quiet", "--out", "out-\(name)"],
                                            in: dir, executable: fieldsim)
            #expect(r.status == 0, "\(name): \(r.out)\(r.err)")
            #expect(FileManager.default.fileExists(atPath: "\(dir)/out-\(name)/ideal-epidemic/summary.json"), "\(name): \(r.out)\(r.err)")
            if name.hasPrefix("longnan") { #expect(r.out.contains("  note: visitsPerYear"), "\(name): \(r.out)") }
        }
        // A scenario without an HQ says so instead of printing "HQ latency p50 nan s, feedback overdue nan".
        let noHQ = try FieldSyncBinary.run(["--scenario", "random-contacts", "--days", "0.01", "--oracle-every", "0", "--out", "out-nohq"],
                                           in: dir, executable: fieldsim)
        #expect(noHQ.status == 0 && !noHQ.out.lowercased().contains("nan"), "\(noHQ.out)")
        #expect(noHQ.out.contains("HQ latency p50 none reached an HQ"), "\(noHQ.out)")
        let bad = try FieldSyncBinary.run(["--scenario", "no-such-scenario", "--quiet"], in: dir, executable: fieldsim)
        #expect(bad.status != 0)
        #expect(bad.err.contains("shipped: longnan, longnan-small, random-contacts, trace"), "\(bad.err)")
    }

    /// The article counts its 650,000 visits "to date", not per year (`shared/seed/FACTS.md`): the shipped
    /// Longnan scenarios say their visit rate is an assumption.
    @Test func theVisitRateIsMarkedAsAnAssumption() throws {
        for name in ["longnan", "longnan-small"] {
            let (f, _) = try shippedScenario(name)
            let notes = f.notes ?? []
            #expect(notes.contains { $0.contains("visitsPerYear") && $0.contains("ASSUMPTION") && $0.contains("to date") }, "\(name): \(notes)")
        }
    }
}
