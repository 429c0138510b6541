// `fieldsync web user add|remove|list`: the command center's operator accounts (docs/command-center.md), and
// the command center `serve` starts when its config has `"web": {...}`.

import ArgumentParser
import FieldSync
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncReports
import FieldSyncWeb
import Foundation
import Logging

/// `fieldsync web`.
struct WebCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "web",
        abstract: "The command center web UI: operator accounts (docs/command-center.md).",
        subcommands: [WebUserCommand.self])
}

/// `fieldsync web user`.
struct WebUserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Add, remove or list command center operators (the accounts file beside the config, mode 0600).",
        subcommands: [WebUserAdd.self, WebUserRemove.self, WebUserList.self])
}

/// Where the accounts file is: `--users-file`, else the config's `web.usersFile`, else beside the config.
struct WebUsersLocation: ParsableArguments {
    @Option(help: ArgumentHelp("The node's JSON config (its web section names the accounts file).", valueName: "file")) var config: String?
    @Option(help: ArgumentHelp("The accounts file (default: the config's web.usersFile, else web-users.json beside the config).",
                               valueName: "file"))
    var usersFile: String?

    func path() throws -> String {
        if let usersFile { return usersFile }
        guard let config else { throw ValidationError("give --config FILE or --users-file FILE") }
        let c: NodeConfigFile
        do { c = try NodeConfigFile.load(path: config) } catch let e as ConfigError { throw CLIError(e.description) }
        return c.web?.usersFile ?? (c.configDirectory ?? ".") + "/web-users.json"
    }
}

struct WebUserAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add an operator (password hashed with Argon2id), optionally limited to scopes.",
        discussion: "The password is read from --password-file (first line) or, without it, from standard input (first line).")

    @OptionGroup var location: WebUsersLocation
    @Argument(help: "Login name: 1 to 32 of a-z, 0-9, '.', '_', '-'.") var name: String
    @Option(help: ArgumentHelp("A scope the operator sees and acts in (e.g. longnan/wudu); repeatable; none: everything the node holds.",
                               valueName: "scope"))
    var scope: [String] = []
    @Option(help: ArgumentHelp("File whose first line is the password (10 to 1024 bytes).", valueName: "file")) var passwordFile: String?
    @Flag(help: "Replace an existing operator (new password and scopes; their open sessions end).") var replace = false

    func run() async throws {
        let path = try location.path()
        let raw: String
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else { throw CLIError("cannot read \(passwordFile)") }
            raw = text
        } else {
            raw = readLine(strippingNewline: true) ?? ""
        }
        let password = String(raw.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
        let now = Int64(FieldSyncApp.wallClock())
        try Self.edit(path) { try $0.add(name: name, password: password, scopes: scope, replace: replace, now: now) }
        print("operator \(name) \(replace ? "set" : "added") (\(scope.isEmpty ? "all scopes" : scope.joined(separator: ", "))) in \(path)")
    }
}

extension WebUserAdd {
    /// Loads the accounts file, applies `change`, saves it (0600); account errors become CLI errors.
    static func edit(_ path: String, _ change: (inout OperatorAccounts) throws -> Void) throws {
        var accounts: OperatorAccounts
        do { accounts = try OperatorAccounts.load(path: path) } catch { throw CLIError(error.description) }
        do { try change(&accounts) } catch { throw CLIError("\(error)") }
        do { try accounts.save(path: path) } catch { throw CLIError(error.description) }
    }
}

struct WebUserRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove an operator: a running command center ends their sessions and live pages at once.")

    @OptionGroup var location: WebUsersLocation
    @Argument(help: "Login name.") var name: String

    func run() async throws {
        let path = try location.path()
        try WebUserAdd.edit(path) { try $0.remove(name: name) }
        print("operator \(name) removed from \(path)")
    }
}

struct WebUserList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List operators and their scopes.")

    @OptionGroup var location: WebUsersLocation

    func run() async throws {
        let path = try location.path()
        let accounts: OperatorAccounts
        do { accounts = try OperatorAccounts.load(path: path) } catch { throw CLIError(error.description) }
        for u in accounts.users {
            print("\(u.name)\t\(u.scopes.isEmpty ? "all scopes" : u.scopes.joined(separator: ","))")
        }
        if accounts.users.isEmpty { print("no operators in \(path); add one with `fieldsync web user add`") }
    }
}

/// The command center `serve` runs when the config has a web section.
enum WebService {
    static func start(_ c: NodeConfigFile, node: FieldSyncNode, logger: Logger) async throws -> CommandCenter? {
        guard let web = c.web, let users = c.webUsersPath, let log = c.webAccessLogPath else { return nil }
        guard let address = PeerAddress(web.listen) else { throw CLIError("`web.listen`: \(web.listen) is not HOST:PORT") }
        let app: FieldSyncApp
        do { app = try await FieldSyncApp.attach(to: node) } catch { throw CLIError(error.message) }
        var options = CommandCenterOptions(usersPath: users, accessLogPath: log)
        options.host = address.host
        options.port = address.port
        options.sessionLifetime = UInt64(web.sessionMinutes) * 60_000
        options.secureCookies = web.secureCookies
        options.reportsDirectory = c.reports.daily?.dir  // the daily reports `serve` writes, listed at /reports
        options.reportsCounty = c.reports.daily?.county
        options.statusPath = c.statusPath  // last sessions on the units page
        options.unitSilentMinutes = Int64(web.unitSilentMinutes)
        options.duplicateRule = DuplicateRule(distanceMetres: web.duplicateMetres, windowMilliseconds: Int64(web.duplicateMinutes) * 60_000)
        let center: CommandCenter
        do { center = try await CommandCenter(app: app, options: options) } catch { throw CLIError("\(error)") }
        let port = try await center.start(logger: Logger(label: "fieldsync.web"))
        logger.info("command center on", metadata: ["web.url": .string("http://\(address.host):\(port)/"), "web.users": .string(users)])
        return center
    }
}
