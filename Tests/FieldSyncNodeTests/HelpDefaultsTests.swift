import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 19, "Done when": `--help` of every command names its defaults. The commands are not listed by
/// hand: the test walks ArgumentParser's own command tree (`fieldsync --experimental-dump-help`, the
/// tool-info JSON every ArgumentParser tool prints), runs `--help` of every command and subcommand in it,
/// and checks each option:
/// - an option with a default value ArgumentParser knows (`defaultValue` in the tree) shows
///   `(default: VALUE)` in the help;
/// - an option whose default is decided at run time (an optional one: the config's value, the file's
///   only key, now) and whose help speaks of a default says it the same way, `(default: ...)`, so that an
///   operator (and this test) finds every default in one form.
@Suite(.ownThread) struct HelpDefaultsTests {
    struct Command {
        var path: [String]
        var arguments: [[String: Any]]
    }

    /// Every command of the tree, the root first.
    static func commands() throws -> [Command] {
        let dump = try FieldSyncBinary.run(["--experimental-dump-help"])
        guard dump.status == 0, let object = try JSONSerialization.jsonObject(with: Data(dump.out.utf8)) as? [String: Any],
              let root = object["command"] as? [String: Any] else {
            throw DocPage.Problem(description: "no command tree from --experimental-dump-help: \(dump.err)")
        }
        var out: [Command] = []
        func walk(_ c: [String: Any], _ path: [String]) {
            out.append(Command(path: path, arguments: c["arguments"] as? [[String: Any]] ?? []))
            for s in c["subcommands"] as? [[String: Any]] ?? [] {
                guard let name = s["commandName"] as? String, name != "help" else { continue }
                walk(s, path + [name])
            }
        }
        walk(root, [])
        return out
    }

    /// Help text with every run of white space (the wrapping at 80 columns) made one space.
    static func flattened(_ text: String) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).joined(separator: " ")
    }

    @Test func everyCommandsHelpNamesItsDefaults() throws {
        let commands = try Self.commands()
        #expect(commands.count > 40, "the tree has every command: \(commands.map { $0.path.joined(separator: " ") })")
        var missing: [String] = []
        var checked = 0
        for command in commands {
            let options = command.arguments.filter { ($0["kind"] as? String) == "option" && ($0["shouldDisplay"] as? Bool ?? true) }
            guard !options.isEmpty else { continue }
            let help = try FieldSyncBinary.run(command.path + ["--help"])
            #expect(help.status == 0, "\(command.path) --help: \(help.err)")
            let text = Self.flattened(help.out)
            for option in options {
                let name = (option["preferredName"] as? [String: Any])?["name"] as? String ?? "?"
                let abstract = Self.flattened(option["abstract"] as? String ?? "")
                let where_ = "fieldsync \(command.path.joined(separator: " ")) --\(name)"
                if let value = option["defaultValue"] as? String {
                    checked += 1
                    if !text.contains("(default: \(value))") { missing.append("\(where_): default \(value) not shown") }
                } else if abstract.range(of: "default", options: .caseInsensitive) != nil {
                    checked += 1
                    if !abstract.contains("(default: ") { missing.append("\(where_): says a default, not as (default: ...): \(abstract)") }
                    else if !text.contains(abstract) { missing.append("\(where_): its help text is not in --help") }
                }
            }
        }
        #expect(checked > 40, "options with defaults checked: \(checked)")
        #expect(missing.isEmpty, "\(missing.count) option(s):\n\(missing.joined(separator: "\n"))")
    }
}
