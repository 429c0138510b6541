import ArgumentParser

/// The `fieldsync` command line: demo, identity and enrollment, the node (serve, sync), records (incident, visit, list, show, export, import).
@main
struct FieldSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "FieldSync: offline-first, encrypted, peer-to-peer sync for field policing nodes.",
        subcommands: [Demo.self, AuthorityCommand.self, DeviceCommand.self, Serve.self, Sync.self, IncidentCommand.self, VisitCommand.self, List.self,
                      Show.self, Export.self, Import.self,
                      EpochKeyCommand.self, CrashWriter.self]
    )
}
