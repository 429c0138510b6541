import FieldSyncCore
import FieldSyncTestSupport
import Foundation
import Testing

@testable import FieldSyncCrypto

/// Runs the built `fieldsync` binary (`FieldSyncBinary`) in a fresh directory.
struct CLI {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "fieldsync-cli-\(Hex.encode(SecureRandom.bytes(6)))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    @discardableResult
    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try FieldSyncBinary.run(args, in: dir) }

    func json(_ args: [String]) throws -> [String: Any] {
        let r = try run(args)
        #expect(r.status == 0, "\(args): \(r.err)")
        return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] ?? [:]
    }
}

@Suite(.ownThread)
struct CLITests {
    @Test func rootEnrollImportRevoke() throws {
        let cli = try CLI()
        let root = try cli.json(["authority", "init", "--dir", "hq", "--key-file", "hq.key", "--json"])
        #expect((root["rootKey"] as? String)?.count == 64)
        let dev = try cli.json(["device", "init", "--dir", "bp", "--key-file", "bp.key", "--scope", "longnan/wudu/station-017", "--label", "bp 17", "--json"])
        let id = try #require(dev["deviceID"] as? String)
        let cert = try cli.json(["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "backpack",
                                 "--scope", "longnan/wudu/station-017", "--days", "7", "--out", "bp.cert", "--json"])
        #expect(cert["subject"] as? String == id && cert["role"] as? String == "backpack")
        let imported = try cli.run(["device", "import", "bp.cert", "--dir", "bp", "--key-file", "bp.key", "--root", "hq/root.pub"])
        #expect(imported.status == 0, "\(imported.err)")
        let shown = try cli.json(["device", "show", "--dir", "bp", "--key-file", "bp.key", "--json"])
        #expect((shown["certificate"] as? [String: Any])?["subject"] as? String == id)
        let rev = try cli.json(["authority", "revoke", id, "--dir", "hq", "--key-file", "hq.key", "--reason", "lost", "--out", "bp.rev", "--json"])
        #expect(rev["device"] as? String == id)
        // The files decode with the library and verify against the root.
        let certificate = try Certificate(canonicalBytes: [UInt8](FileManager.default.contents(atPath: cli.dir + "/bp.cert")!))
        let rootKey = try Ed25519.PublicKey(bytes: Hex.decode(root["rootKey"] as! String)!)
        var trust = TrustStore(root: rootKey)
        try trust.verify(certificate, now: certificate.notBefore)
        try trust.addRevocation(try Revocation(canonicalBytes: [UInt8](FileManager.default.contents(atPath: cli.dir + "/bp.rev")!)))
        #expect(identityCode { try trust.verify(certificate, now: certificate.notBefore) } == .revoked)
    }

    /// An epoch key granted by HQ and published into a member's store reaches the member's key ring, also
    /// after the process restarts (every command is a new process), with no epoch key file; a relay is
    /// refused as a member; a revocation publishes too.
    @Test func grantPublishAndRevoke() throws {
        let cli = try CLI()
        let scope = "longnan/wudu/station-017"
        _ = try cli.json(["authority", "init", "--dir", "hq", "--key-file", "hq.key", "--json"])
        for (name, role) in [("bp", "backpack"), ("relay", "relay")] {
            _ = try cli.json(["device", "init", "--dir", name, "--key-file", "\(name).key", "--scope", scope, "--json"])
            _ = try cli.json(["authority", "enroll", "\(name)/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", role,
                              "--scope", scope, "--out", "\(name).cert", "--json"])
            #expect(try cli.run(["device", "import", "\(name).cert", "--dir", name, "--key-file", "\(name).key", "--root", "hq/root.pub"]).status == 0)
        }
        #expect(try cli.run(["epoch-key", "new", "--scope", scope, "--out", "k.epochkey"]).status == 0)
        let relayGrant = try cli.run(["authority", "grant", "--dir", "hq", "--key-file", "hq.key", "--epoch-key-file", "k.epochkey",
                                      "--member", "relay.cert", "--out", "bad.grant"])
        #expect(relayGrant.status != 0 && relayGrant.err.contains("relayNotAllowed"))
        let grant = try cli.json(["authority", "grant", "--dir", "hq", "--key-file", "hq.key", "--epoch-key-file", "k.epochkey",
                                  "--member", "bp.cert", "--out", "k.grant", "--json"])
        #expect((grant["members"] as? [String])?.count == 1)
        let node = ["--dir", "bp", "--key-file", "bp.key", "--store", "bp.sqlite"]
        let incident = ["incident", "new", "--scope", scope + "/village-0412", "--category", "dispute", "--summary", "fence",
                        "--lat", "33.4", "--lon", "104.9"] + node
        let before = try cli.run(incident)
        #expect(before.status != 0, "no key yet: \(before.out)")
        let published = try cli.json(["publish", "k.grant", "--json"] + node)
        #expect(published["keysLearned"] as? Int == 1)
        let after = try cli.run(incident)
        #expect(after.status == 0, "the key was restored from the store in a new process: \(after.err)")
        // The relay may carry the grant but is not a member.
        let relayNode = ["--dir", "relay", "--key-file", "relay.key", "--store", "relay.sqlite"]
        #expect(try cli.json(["publish", "k.grant", "--json"] + relayNode)["keysLearned"] as? Int == 0)
        // A revocation, and garbage.
        let relayID = try #require(try cli.json(["device", "show", "--dir", "relay", "--key-file", "relay.key", "--json"])["deviceID"] as? String)
        _ = try cli.json(["authority", "revoke", relayID, "--dir", "hq", "--key-file", "hq.key", "--reason", "stolen", "--out", "relay.rev", "--json"])
        #expect(try cli.json(["publish", "relay.rev", "--json"] + node)["revocationsLearned"] as? Int == 1)
        FileManager.default.createFile(atPath: cli.dir + "/junk", contents: Data("junk".utf8))
        let junk = try cli.run(["publish", "junk"] + node)
        #expect(junk.status != 0 && junk.err.contains("neither a key grant nor a revocation"))
    }

    /// `authority delegate` checks `--days` like `enroll` and `renew` (1...3650 days): it used to take any
    /// value (0 signed a certificate that expires at once; a negative one stopped the process).
    @Test func delegateChecksDaysLikeEnroll() throws {
        let cli = try CLI()
        _ = try cli.json(["authority", "init", "--dir", "hq", "--key-file", "hq.key", "--json"])
        _ = try cli.json(["authority", "init", "--county", "--dir", "wudu", "--key-file", "wudu.key", "--scope", "longnan/wudu", "--json"])
        func delegate(_ days: String) throws -> (status: Int32, out: String, err: String) {
            try cli.run(["authority", "delegate", "wudu/authority.req", "--dir", "hq", "--key-file", "hq.key", "--scope", "longnan/wudu",
                         "--days=\(days)", "--out", "wudu.cert"])
        }
        for days in ["0", "-1", "3651"] {
            let r = try delegate(days)
            #expect(r.status == 64 && r.err.contains("--days must be 1...3650"), "--days \(days): \(r.status) \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: cli.dir + "/wudu.cert"), "--days \(days) wrote a certificate")
        }
        let enroll = try cli.run(["authority", "enroll", "wudu/authority.req", "--dir", "hq", "--key-file", "hq.key", "--role", "backpack",
                                  "--scope", "longnan/wudu", "--days=0", "--out", "x.cert"])
        #expect(enroll.status == 64 && enroll.err.contains("--days must be 1...3650"), "\(enroll.err)")
        #expect(try delegate("3650").status == 0)
    }

    @Test func countyDelegationAndEscalationRefused() throws {
        let cli = try CLI()
        _ = try cli.json(["authority", "init", "--dir", "hq", "--key-file", "hq.key", "--json"])
        _ = try cli.json(["authority", "init", "--county", "--dir", "wudu", "--key-file", "wudu.key", "--scope", "longnan/wudu", "--json"])
        #expect(try cli.run(["authority", "delegate", "wudu/authority.req", "--dir", "hq", "--key-file", "hq.key", "--scope", "longnan/wudu",
                             "--out", "wudu.cert"]).status == 0)
        #expect(try cli.run(["authority", "import", "wudu.cert", "--dir", "wudu", "--key-file", "wudu.key", "--root", "hq/root.pub"]).status == 0)
        _ = try cli.json(["device", "init", "--dir", "bp", "--key-file", "bp.key", "--scope", "longnan/wudu", "--json"])
        let esc = try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "wudu", "--key-file", "wudu.key", "--role", "hq",
                               "--scope", "longnan/wudu", "--out", "x.cert"])
        #expect(esc.status != 0 && esc.err.contains("roleEscalation"))
        let scope = try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "wudu", "--key-file", "wudu.key", "--role", "backpack",
                                 "--scope", "longnan", "--out", "x.cert"])
        #expect(scope.status != 0 && scope.err.contains("scopeEscalation"))
        #expect(try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "wudu", "--key-file", "wudu.key", "--role", "backpack",
                             "--scope", "longnan/wudu", "--out", "bp.cert"]).status == 0)
        // Import needs the county certificate to chain to the root, and says so.
        let missing = try cli.run(["device", "import", "bp.cert", "--dir", "bp", "--key-file", "bp.key", "--root", "hq/root.pub"])
        #expect(missing.status != 0 && missing.err.contains("--authority"))
        #expect(try cli.run(["device", "import", "bp.cert", "--dir", "bp", "--key-file", "bp.key", "--root", "hq/root.pub",
                             "--authority", "wudu.cert"]).status == 0)
    }

    @Test func clearErrors() throws {
        let cli = try CLI()
        FileManager.default.createFile(atPath: cli.dir + "/pw", contents: Data("secret pass\n".utf8), attributes: [.posixPermissions: 0o600])
        #expect(try cli.run(["authority", "init", "--dir", "hq", "--passphrase-file", "pw", "--kdf", "interactive"]).status == 0)
        FileManager.default.createFile(atPath: cli.dir + "/bad", contents: Data("nope\n".utf8), attributes: [.posixPermissions: 0o600])
        _ = try cli.json(["device", "init", "--dir", "bp", "--key-file", "bp.key", "--scope", "longnan", "--json"])
        let wrong = try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--passphrase-file", "bad", "--role", "backpack",
                                 "--scope", "longnan", "--out", "x"])
        #expect(wrong.status != 0 && wrong.err.contains("wrongPassphraseOrKey"))
        let both = try cli.run(["device", "show", "--dir", "bp"])
        #expect(both.status != 0 && both.err.contains("exactly one of --passphrase-file or --key-file"))
        chmod(cli.dir + "/bp.key", 0o644)
        let perm = try cli.run(["device", "show", "--dir", "bp", "--key-file", "bp.key"])
        #expect(perm.status != 0 && perm.err.contains("chmod 600"))
        // A passphrase file readable by others is refused like a key file (before: accepted).
        chmod(cli.dir + "/pw", 0o644)
        let loose = try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--passphrase-file", "pw", "--role", "backpack",
                                 "--scope", "longnan", "--out", "x"])
        #expect(loose.status != 0 && loose.err.contains("passphrase file pw has mode 644") && loose.err.contains("chmod 600"), "\(loose.err)")
        #expect(!FileManager.default.fileExists(atPath: cli.dir + "/x"))
        chmod(cli.dir + "/pw", 0o600)
        let role = try cli.run(["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--passphrase-file", "pw", "--role", "pilot",
                                "--scope", "longnan", "--out", "x"])
        #expect(role.status != 0 && role.err.contains("unknown role pilot"))
    }
}
