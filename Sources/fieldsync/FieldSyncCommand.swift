import ArgumentParser

/// The `fieldsync` command line: demo, identity and enrollment, and (later) the node daemon.
@main
struct FieldSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsync",
        abstract: "FieldSync: offline-first, encrypted, peer-to-peer sync for field policing nodes.",
        subcommands: [Demo.self, AuthorityCommand.self, DeviceCommand.self, CrashWriter.self]
    )
}
