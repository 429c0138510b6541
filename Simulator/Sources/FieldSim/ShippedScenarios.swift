// The scenarios shipped with the simulator (Simulator/Scenarios), as SwiftPM resources of this module, so
// that `fieldsim --scenario longnan` runs from any directory.

import Foundation

/// The scenario files shipped in `Simulator/Scenarios` (and the traces they name), copied into this module's
/// resource bundle by SwiftPM (`Bundle.module`, `FieldSync_FieldSim.resources` next to the executable), so a
/// name resolves whatever the current directory is. A path still names a file of one's own.
public enum ShippedScenarios {
    /// The bundle's `Scenarios` directory.
    public static var directory: URL { Bundle.module.bundleURL.appendingPathComponent("Scenarios", isDirectory: true) }

    /// The names of the shipped scenarios (file names without `.json`), sorted.
    public static var names: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// The path of the shipped scenario `name`, or nil if there is none of that name. Traces a scenario names
    /// resolve relative to it, as for a scenario file of one's own.
    public static func path(named name: String) -> String? {
        guard !name.contains("/"), !name.hasSuffix(".json") else { return nil }
        let p = directory.appendingPathComponent("\(name).json").path
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }

    /// The path `fieldsim --scenario` reads for `argument`: a path (it contains `/` or ends in `.json`) as
    /// given, otherwise the shipped scenario of that name.
    /// - Throws: `ScenarioError` for a name that is not shipped, listing those that are.
    public static func resolve(_ argument: String) throws(ScenarioError) -> String {
        if argument.contains("/") || argument.hasSuffix(".json") { return argument }
        guard let p = path(named: argument) else {
            throw ScenarioError(file: argument, "no shipped scenario of that name (shipped: \(names.joined(separator: ", ")); a path to a JSON file names one's own)")
        }
        return p
    }
}
