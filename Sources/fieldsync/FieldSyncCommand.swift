import ArgumentParser

/// The `fieldsync` command line: demo, identity and enrollment, the node (serve, sync), records (incident, visit, list, show, export, import).
@main
struct FieldSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "FieldSync: offline-first, encrypted, peer-to-peer sync for field policing nodes.",
        discussion: "Record commands (incident, visit, list, show, export, import) exit 0 when done, 1 when the operation failed, "
            + "64 for a usage error, 65 for data the schema or record refuses, 66 when the record or file is not found, "
            + "77 when this device may not write there. docs/cli.md has the details.",
        subcommands: [Demo.self, AuthorityCommand.self, DeviceCommand.self, Serve.self, Sync.self, ConfigCommand.self, StatusCommand.self,
                      IncidentCommand.self, VisitCommand.self, List.self, Show.self, Export.self, ImportCommand.self,
                      EpochKeyCommand.self, Publish.self, Forks.self, Doctor.self, CrashWriter.self]
    )
}
