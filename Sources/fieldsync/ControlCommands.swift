// `fieldsync revocation import FILE`: a node learns a revocation signed by an authority and writes it
// into its log as a control change, so it takes effect here and travels to every peer with the next
// sessions (docs/enrollment.md, "Revoking a lost device").

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

/// The `revocation` command group.
struct RevocationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revocation",
        abstract: "Spread revocations (from `fieldsync authority revoke`) through the nodes.",
        subcommands: [Import.self]
    )

    /// `revocation import FILE`.
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a revocation file and write it into this node's store as a control change.",
            discussion: """
                The node refuses the revoked device in new sessions from its next start (run this while its `serve` is \
                stopped, or restart it), and every peer it syncs with learns the revocation too. Exit status 0 also \
                when the node already knew it.
                """
        )

        @Argument(help: "The revocation file (from `fieldsync authority revoke`).") var file: String
        @OptionGroup var node: NodeOptions
        @Option(help: "Scope of the control change (default: this device's widest certificate scope, so it reaches the most peers).")
        var scope: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            let revocation = try Files.decode(Revocation.self, file, what: "revocation")
            let r = try node.openReplicator()
            let now = wallClockMilliseconds()
            let cert = r.identity.certificate
            let target: Scope
            if let scope {
                do { target = try Scope(scope) } catch { throw ValidationError("\(error)") }
                guard Scope.all([target], within: cert.scopes) else {
                    throw ValidationError("this device may write only within \(cert.scopes.map(\.path).joined(separator: ", ")); choose --scope there")
                }
            } else {
                target = cert.scopes.min { $0.path.count < $1.path.count }!
            }
            if r.trust.revocations.revocation(of: revocation.device) != nil {
                if json { try printJSON(["device": revocation.device.description, "new": false]) } else {
                    print("\(revocation.device) is already revoked on this node; nothing written")
                }
                return
            }
            // Checked before writing: a revocation that does not verify against this node's trust
            // (another root, an authority outside its scope) would travel but never take effect.
            var check = r.trust
            do { try check.addRevocation(revocation, now: now) } catch {
                throw CLIError("\(file) does not verify against this node's HQ root: \(error)")
            }
            let change = try r.writeControl(.revocation, payload: revocation.canonicalBytes, scope: target, now: now)
            guard r.trust.revocations.revocation(of: revocation.device) != nil else {
                throw CLIError("the revocation was written but not applied; report this as a bug")
            }
            if json {
                try printJSON(["device": revocation.device.description, "new": true, "scope": target.path, "seq": change.header.seq])
            } else {
                print("revoked \(revocation.device) on this node (control change \(target)#\(change.header.seq)); "
                      + "it reaches every peer at the next syncs; restart this node's serve for it to refuse the device")
            }
        }
    }
}
