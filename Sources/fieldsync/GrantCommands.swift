// `fieldsync authority grant` and `fieldsync publish`: epoch keys and revocations travel as signed control
// changes, so a key given to a station's devices, or the revocation of a lost unit, reaches every node
// through ordinary sync (relays carry both; only the named members can open a grant).

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

extension AuthorityCommand {
    /// `authority grant`: seal an epoch key to member devices, signed by the authority.
    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Grant an epoch key to member devices (signed; only members can open it). Spread it with `fieldsync publish`.")

        @Option(help: "The authority's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "Epoch key file (from `fieldsync epoch-key new`) holding the key to grant.") var epochKeyFile: String
        @Option(help: "Scope of the key to grant, if the file holds several. (default: the file's only key)") var scope: String?
        @Option(help: "Epoch of the key to grant, if the file holds several. (default: the file's only key of the scope)") var epoch: UInt32?
        @Option(help: ArgumentHelp("A member device's certificate file (repeat). Relays are refused: they never hold keys.",
                                   valueName: "cert"))
        var member: [String] = []
        @Option(help: "Where to write the grant.") var out: String
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            guard !member.isEmpty else { throw ValidationError("name at least one --member CERT") }
            let (authority, _) = try AuthorityCommand.load(dir: dir, keystore: keystore)
            var keys = try EpochKeyFile.read(epochKeyFile)
            if let scope { keys = keys.filter { $0.scope.path == scope } }
            if let epoch { keys = keys.filter { $0.epoch == epoch } }
            guard keys.count == 1, let key = keys.first else {
                throw CLIError("\(epochKeyFile) holds \(keys.count) matching key(s); choose one with --scope and --epoch")
            }
            let certs = try member.map { path in
                do { return try Certificate(canonicalBytes: try Files.read(path, what: "certificate")) } catch let e as CLIError { throw e } catch {
                    throw CLIError("\(path) is not a FieldSync certificate: \(error)")
                }
            }
            let grant: KeyGrant
            do { grant = try KeyGrant.issue(epochKey: key, members: certs, issuedAt: wallClockMilliseconds(), by: authority) } catch {
                throw CLIError("cannot grant \(key.scope)#\(key.epoch): \(error)")
            }
            try Files.write(grant.canonicalBytes, to: out, what: "key grant")
            let members = grant.members.map(\.device.description)
            AuthorityLedger.record(dir: dir, ["action": "granted", "key": "\(key.scope.path)#\(key.epoch)", "members": members, "file": out])
            if json {
                try printJSON(["scope": key.scope.path, "epoch": key.epoch, "members": members, "issuer": grant.issuer.description, "out": out])
            } else {
                print("granted \(key.scope)#\(key.epoch) to \(members.count) device(s): \(members.joined(separator: ", "))")
                print("next: fieldsync publish \(out) --dir DEVICE_DIR --store STORE on any node; sync carries it to the members")
            }
        }
    }
}

/// `fieldsync publish FILE`: write a key grant or a revocation into this node's log as a control change.
struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a key grant or revocation file as a signed control change; sync spreads it to every node.",
        discussion: """
            The file comes from `fieldsync authority grant` or `fieldsync authority revoke`. It is verified against \
            this node's root first. The node applies it at once (a member learns the key; a revoked device is refused \
            from now on) and keeps it across restarts. Publish from HQ (its log reaches every node) or from any node \
            whose scope covers the grant.
            """)

    @Argument(help: "The grant or revocation file.") var file: String
    @OptionGroup var node: NodeOptions
    @Option(help: "Scope of the control change (default: for a grant, this device's scope that covers it; for a revocation, its widest, to reach the most peers).")
    var scope: String?
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        let bytes = try Files.read(file, what: "grant or revocation")
        let r = try node.openReplicator()
        let now = wallClockMilliseconds()
        let own = r.identity.certificate
        var chosen: Scope?
        if let scope {
            do { chosen = try Scope(scope) } catch { throw ValidationError("\(error)") }
            guard Scope.all([chosen!], within: own.scopes) else {
                throw ValidationError("this device writes only within \(own.scopes.map(\.path).joined(separator: ", ")); choose --scope there")
            }
        }
        let contentType: ContentType
        let scope: Scope
        let what: String
        if let grant = try? KeyGrant(canonicalBytes: bytes) {
            do { try grant.verify(trust: r.trust) } catch { throw CLIError("\(file): the grant does not verify against this node's root: \(error)") }
            guard let s = chosen ?? own.scopes.first(where: { $0.contains(grant.scope) }) else {
                throw CLIError("this device's scopes (\(own.scopes.map(\.path).joined(separator: ", "))) do not cover \(grant.scope); publish it from HQ or a node of that scope")
            }
            (contentType, scope, what) = (.keyGrant, s, "key grant \(grant.scope)#\(grant.epoch) for \(grant.members.count) member(s)")
        } else if let revocation = try? Revocation(canonicalBytes: bytes) {
            do { try revocation.verify(trust: r.trust) } catch {
                throw CLIError("\(file): the revocation does not verify against this node's root: \(error)"
                               + (error.code == .outsideDelegation ? " (its signer may not revoke that; nothing written)" : ""))
            }
            // The broadest scope this device writes: the revocation should reach as many nodes as possible.
            guard let s = chosen ?? own.scopes.min(by: { $0.depth < $1.depth }) else { throw CLIError("this device's certificate has no scope") }
            (contentType, scope, what) = (.revocation, s, "revocation of \(revocation.device) (\(revocation.reason))")
        } else {
            throw CLIError("\(file) is neither a key grant nor a revocation (make one with `fieldsync authority grant` or `authority revoke`)")
        }
        // Publishing the same file twice writes nothing the second time.
        let held = try r.store.controlChanges().contains { stored in
            (try? Change(canonicalBytes: stored.bytes))?.payload == bytes
        }
        if held {
            if json { try printJSON(["published": what, "new": false]) } else { print("\(what) is already held by this node; nothing written") }
            return
        }
        let (keysBefore, revocationsBefore) = (r.allKeys.count, r.trust.revocations.count)
        // Writing ingests the change like any other: a member learns the key, the node learns the revocation.
        let change = try r.writeControl(contentType, payload: bytes, scope: scope, now: now)
        let applied = (keys: r.allKeys.count - keysBefore, revocations: r.trust.revocations.count - revocationsBefore)
        if json {
            try printJSON(["published": what, "new": true, "scope": scope.path, "seq": change.header.seq,
                           "keysLearned": applied.keys, "revocationsLearned": applied.revocations])
        } else {
            print("published \(what) as change \(change.header.seq) of this device's \(scope) log")
            if applied.keys > 0 { print("this device is a member: it holds the key now") }
            if applied.revocations > 0 { print("this node refuses the revoked device from now on") }
        }
    }
}
