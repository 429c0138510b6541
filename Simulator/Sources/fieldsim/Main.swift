import ArgumentParser

/// `fieldsim`: the simulator's command line. `run` (the default: `fieldsim --scenario ...` is `fieldsim run
/// --scenario ...`) runs one scenario; `sweep` and `merge` run parameter sweeps; `swarm` runs the fault swarm.
@main
struct FieldSimMain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fieldsim",
        abstract: "Deterministic discrete-event simulator of FieldSync over a model of Longnan (see Simulator/README.md).",
        subcommands: [FieldSimCommand.self, SweepCommand.self, MergeCommand.self, SwarmCommand.self],
        defaultSubcommand: FieldSimCommand.self
    )
}
