// `fieldsync config check FILE` and `fieldsync config example`.

import ArgumentParser
import FieldSyncNode
import Foundation

/// `fieldsync config`.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Check or print a node config file.",
                                                    subcommands: [Check.self, Example.self])

    /// `fieldsync config check FILE`: exit 0 if the config is ready to serve, 1 with one line per problem.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a config file: strict JSON syntax, unknown keys, types, values, files and addresses; lists every problem (exit 1 on any).")

        @Argument(help: "The JSON config file.") var file: String
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            let problems = NodeConfigFile.problems(path: file)
            if json {
                try printJSON(["file": file, "ok": problems.isEmpty,
                               "problems": problems.map { ["key": $0.key ?? "", "message": $0.description] }])
            } else if problems.isEmpty {
                print("\(file): OK")
            } else {
                print("\(file): \(problems.count) problem(s)")
                for p in problems { print("  - \(p)") }
            }
            if !problems.isEmpty { throw ExitCode.failure }
        }
    }

    /// `fieldsync config example`.
    struct Example: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a config with every key at its default, commented.")

        @Flag(help: "Without the `//` comment lines (valid JSON, ready to edit).") var plain = false

        func run() async throws { print(plain ? NodeConfigFile.examplePlain : NodeConfigFile.example) }
    }
}
