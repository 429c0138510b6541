import ArgumentParser

/// The `fieldsync` command line: demo, identity and enrollment, the node (serve, sync), records (incident, list).
@main
struct FieldSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "FieldSync: offline-first, encrypted, peer-to-peer sync for field policing nodes.",
        subcommands: [Demo.self, AuthorityCommand.self, DeviceCommand.self, Serve.self, Sync.self, IncidentCommand.self, List.self,
                      EpochKeyCommand.self, RevocationCommand.self, CrashWriter.self]
    )
}
