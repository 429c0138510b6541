import ArgumentParser
import FieldSyncNode
import Foundation

/// The `fieldsync` command line: demo, identity and enrollment, the node (serve, sync), records (incident, visit, list, show, export, import).
@main
struct FieldSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "FieldSync: offline-first, encrypted, peer-to-peer sync for field policing nodes.",
        discussion: "Record commands (incident, visit, list, show, export, import) exit 0 when done, 1 when the operation failed, "
            + "64 for a usage error, 65 for data the schema or record refuses, 66 when the record or file is not found, "
            + "77 when this device may not write there. docs/cli.md has the details.",
        version: FieldSyncVersion.text,
        subcommands: [Demo.self, AuthorityCommand.self, DeviceCommand.self, Serve.self, Sync.self, ConfigCommand.self, StatusCommand.self,
                      IncidentCommand.self, VisitCommand.self, List.self, Show.self, Export.self, ImportCommand.self,
                      EpochKeyCommand.self, Publish.self, Forks.self, Doctor.self, CertCommand.self, KeysCommand.self, CrashWriter.self,
                      FeedCommand.self, BackupCommand.self, RestoreCommand.self, FenceCommand.self,
                      ReportCommand.self, WebCommand.self]
    )

    /// Parses and runs the command. With `--json`, an error raised while running (not a usage error, which keeps
    /// the parser's text and exit 64) is printed on standard error as `{"error": "...", "exitCode": N}`, as the
    /// record commands do (docs/cli.md); the exit code is the same either way.
    static func main() async {
        let command: any ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var plain = command
                try plain.run()
            }
        } catch {
            if CommandLine.arguments.dropFirst().contains("--json"), !(error is ExitCode), !(error is ValidationError), !(error is CleanExit) {
                let code = exitCode(for: error).rawValue
                let object: [String: Any] = ["error": message(for: error), "exitCode": Int(code)]
                if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) {
                    FileHandle.standardError.write(data + Data("\n".utf8))
                    Foundation.exit(code)
                }
            }
            exit(withError: error)
        }
    }
}
