// `fieldsync authority ...`: the HQ root and delegated county authorities.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import Foundation

/// The `authority` command group.
struct AuthorityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authority",
        abstract: "Create certificate authorities, enroll devices, delegate county authorities, renew certificates, revoke devices.",
        subcommands: [Init.self, Enroll.self, Delegate.self, Renew.self, Import.self, Revoke.self, Grant.self, List.self]
    )

    static let keystoreName = "authority.keystore"
    static let rootName = "root.pub"
    static let requestName = "authority.req"

    static func load(dir: String, keystore: KeystoreOptions) throws -> (Authority, KeystoreContents) {
        try load(dir: dir, unlock: try keystore.unlock())
    }

    /// Loads the authority in `dir` with an unlock already chosen.
    static func load(dir: String, unlock: KeystoreUnlock) throws -> (Authority, KeystoreContents) {
        let contents = try Keystore.read(from: dir + "/" + keystoreName, unlock: unlock)
        if let cert = contents.certificate {
            return (try Authority(delegated: contents.signingKey, certificate: cert), contents)
        }
        guard contents.root == contents.signingKey.publicKey else {
            throw CLIError("\(dir) holds a county authority that has no certificate yet; run `fieldsync authority import CERT --dir \(dir)`")
        }
        return (Authority(root: contents.signingKey), contents)
    }

    /// `authority init`: a new HQ root, or (with --county) the keys and request of a county authority.
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the HQ root authority (or, with --county, a county authority key and its delegation request).")

        @Option(help: "Directory for the authority's files (created, mode 0700).") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Flag(help: "Create a county authority: writes authority.req for `fieldsync authority delegate`.") var county = false
        @Option(help: "Scope the county authority asks for (repeat); required with --county.") var scope: [String] = []
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            try Files.ensureDirectory(dir)
            let sk = Ed25519.SecretKey.generate()
            let xk = X25519.SecretKey.generate()
            let keyID = DeviceID(signingKey: sk.publicKey)
            if county {
                let scopes = try parseScopes(scope)
                let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .county,
                                                requestedScopes: scopes, createdAt: wallClockMilliseconds(), label: "county authority")
                try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk), to: dir + "/" + AuthorityCommand.keystoreName,
                                   protection: try keystore.protection(creatingKeyFile: true))
                try Files.write(req.canonicalBytes, to: dir + "/" + AuthorityCommand.requestName, what: "delegation request")
                if json {
                    try printJSON(["kind": "county", "keyID": keyID.description, "request": dir + "/" + AuthorityCommand.requestName])
                } else {
                    print("county authority key \(keyID) created in \(dir)")
                    print("next: take \(dir)/\(AuthorityCommand.requestName) to HQ: fieldsync authority delegate \(AuthorityCommand.requestName) --dir HQ_DIR --scope ... --out county.cert")
                }
                return
            }
            try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, root: sk.publicKey),
                               to: dir + "/" + AuthorityCommand.keystoreName, protection: try keystore.protection(creatingKeyFile: true))
            try Files.write(Array((sk.publicKey.description + "\n").utf8), to: dir + "/" + AuthorityCommand.rootName, what: "root public key")
            if json {
                try printJSON(["kind": "root", "keyID": keyID.description, "rootKey": sk.publicKey.description])
            } else {
                print("HQ root authority \(keyID) created in \(dir)")
                print("root public key (pin it on every device): \(sk.publicKey)  [also in \(dir)/\(AuthorityCommand.rootName)]")
            }
        }
    }

    /// `authority enroll REQUEST`: sign a device certificate.
    struct Enroll: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a device certificate for an enrollment request.")

        @Argument(help: "The device's enrollment request file (from `fieldsync device init`).") var request: String
        @Option(help: "The authority's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "Role to grant: backpack, command, station, county, relay or hq.") var role: String
        @Option(help: "Scope to grant (repeat for several).") var scope: [String] = []
        @Option(help: ArgumentHelp("Validity in days from now. (default: \(CertificateValidity.defaultsText))", valueName: "days"))
        var days: Int?
        @Option(help: "Where to write the certificate.") var out: String
        @Flag(help: "Print the certificate as JSON.") var json = false

        func validate() throws { if let days { try CertificateValidity.check(days: days) } }

        func run() async throws {
            let role = try parseRole(role)
            let scopes = try parseScopes(scope)
            let req = try Files.decode(EnrollmentRequest.self, request, what: "enrollment request")
            let (authority, _) = try AuthorityCommand.load(dir: dir, keystore: keystore)
            let now = wallClockMilliseconds()
            let days = self.days ?? CertificateValidity.defaultDays(for: role)
            let cert = try authority.enroll(req, role: role, scopes: scopes, notBefore: now,
                                            notAfter: CertificateValidity.notAfter(now, days: days), serial: SecureRandom.uint64() >> 1)
            try Files.write(cert.canonicalBytes, to: out, what: "certificate")
            AuthorityLedger.record(dir: dir, AuthorityLedger.certificate("enrolled", cert, file: out))
            if json { try printJSON(certificateJSON(cert)) } else {
                print("enrolled \(cert.subject) (\(req.label)) as \(role) for \(scopes.map(\.path).joined(separator: ", ")) "
                      + "until \(TimeText.format(Int64(cert.notAfter))) (\(days) days); certificate in \(out)")
            }
        }
    }

    /// `authority delegate REQUEST`: the root delegates scopes to a county authority.
    struct Delegate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "HQ root only: sign a county authority certificate.")

        @Argument(help: "The county authority's request file (from `fieldsync authority init --county`).") var request: String
        @Option(help: "The HQ root authority's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "Scope to delegate (repeat for several).") var scope: [String] = []
        @Option(help: "Validity in days from now.") var days: Int = 365
        @Option(help: "Where to write the authority certificate.") var out: String
        @Flag(help: "Print the certificate as JSON.") var json = false

        func validate() throws { try CertificateValidity.check(days: days) }

        func run() async throws {
            let scopes = try parseScopes(scope)
            let req = try Files.decode(EnrollmentRequest.self, request, what: "delegation request")
            let (authority, _) = try AuthorityCommand.load(dir: dir, keystore: keystore)
            let now = wallClockMilliseconds()
            let cert = try authority.delegate(req, scopes: scopes, notBefore: now, notAfter: CertificateValidity.notAfter(now, days: days),
                                              serial: SecureRandom.uint64() >> 1)
            try Files.write(cert.canonicalBytes, to: out, what: "authority certificate")
            AuthorityLedger.record(dir: dir, AuthorityLedger.certificate("delegated", cert, file: out))
            if json { try printJSON(certificateJSON(cert)) } else {
                print("delegated \(scopes.map(\.path).joined(separator: ", ")) to county authority \(cert.subject) until \(TimeText.format(Int64(cert.notAfter))); certificate in \(out)")
            }
        }
    }

    /// `authority renew CERT`: a new certificate for the same keys (renewal before or after expiry, or
    /// re-enrollment with another role or scopes within the authority's bounds).
    struct Renew: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Renew a certificate this authority issued: same keys, new validity (and optionally a new role or scopes).",
            discussion: """
                Takes the existing certificate (it may have expired) and writes a new one for the same keys. The device \
                imports it with `fieldsync device import NEW_CERT` (a county authority with `fieldsync authority import`); \
                its older changes stay valid under the old certificate, which every node keeps. See docs/enrollment.md.
                """)

        @Argument(help: "The certificate to renew (device or county authority certificate).") var certificate: String
        @Option(help: "The issuing authority's directory (the authority that signed CERT).") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "New role (default: the old certificate's).") var role: String?
        @Option(help: "New scope (repeat for several). (default: the old certificate's scopes)") var scope: [String] = []
        @Option(help: ArgumentHelp("Validity in days from now. (default: by the new role, \(CertificateValidity.defaultsText))", valueName: "days"))
        var days: Int?
        @Option(help: "Where to write the new certificate.") var out: String
        @Flag(help: "Print the certificate as JSON.") var json = false

        func validate() throws { if let days { try CertificateValidity.check(days: days) } }

        func run() async throws {
            let old = try Files.decode(Certificate.self, certificate, what: "certificate")
            let newRole = try role.map(parseRole)
            let newScopes = scope.isEmpty ? nil : try parseScopes(scope)
            let (authority, _) = try AuthorityCommand.load(dir: dir, keystore: keystore)
            let now = wallClockMilliseconds()
            let days = self.days ?? CertificateValidity.defaultDays(for: newRole ?? old.role)
            let cert: Certificate
            do {
                cert = try authority.renew(old, role: newRole, scopes: newScopes, notBefore: now,
                                           notAfter: CertificateValidity.notAfter(now, days: days), serial: SecureRandom.uint64() >> 1)
            } catch { throw CLIError("cannot renew \(certificate): \(error)") }
            try Files.write(cert.canonicalBytes, to: out, what: "certificate")
            AuthorityLedger.record(dir: dir, AuthorityLedger.certificate("renewed", cert, file: out))
            if json { try printJSON(certificateJSON(cert)) } else {
                print("renewed \(cert.kind == .device ? "device" : "county authority") \(cert.subject) as \(cert.role) for \(cert.scopes.map(\.path).joined(separator: ", ")) until \(TimeText.format(Int64(cert.notAfter))) (was until \(TimeText.format(Int64(old.notAfter)))); certificate in \(out)")
            }
        }
    }

    /// `authority import CERT`: a county authority stores its delegation certificate.
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "County authority: store the delegation certificate signed by HQ.")

        @Argument(help: "The authority certificate file.") var certificate: String
        @Option(help: "The county authority's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "File with the HQ root public key (root.pub).") var root: String

        func run() async throws {
            let path = dir + "/" + AuthorityCommand.keystoreName
            var contents = try Keystore.read(from: path, unlock: try keystore.unlock())
            let cert = try Files.decode(Certificate.self, certificate, what: "authority certificate")
            guard cert.signingKey == contents.signingKey.publicKey else { throw CLIError("\(certificate) is not for the key in \(dir)") }
            var trust = TrustStore(root: try Files.readRoot(root))
            try trust.addAuthority(cert, now: wallClockMilliseconds())
            contents.certificate = cert
            contents.root = trust.root
            try Keystore.write(contents, to: path, protection: try keystore.protection(creatingKeyFile: false), overwrite: true)
            print("county authority \(cert.subject) may now enroll devices in \(cert.scopes.map(\.path).joined(separator: ", "))")
        }
    }

    /// `authority revoke [DEVICE_ID] [--certificate CERT]`: sign a revocation.
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a revocation of a lost or compromised device.",
            discussion: """
                The HQ root may revoke any device or county authority (by id or certificate), never itself. A county \
                authority may revoke only a device certificate it issued: name it with --certificate (the revocation \
                carries it, so every node can check the bound). Anything else is refused and nothing is written.
                """)

        @Argument(help: "The device id (32 hex digits); optional with --certificate.") var deviceID: String?
        @Option(help: "The revoked device's certificate file (required for a county authority).") var certificate: String?
        @Option(help: "The authority's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "Why: lost, stolen, compromised, decommissioned or other.") var reason: String
        @Option(help: "Free-text note for the audit trail.") var note: String = ""
        @Option(help: "Serial of the revoked certificate, if known (root without --certificate).") var serial: UInt64 = 0
        @Option(help: ArgumentHelp(
            "The revocation time (cut-off): changes the device signed before it stay valid, later ones are refused. "
                + "2026-11-29T06:30:00Z, 2026-11-29, -2h, now or ms since 1970; not in the future. (default: now)",
            valueName: "time")) var at: String?
        @Option(help: "Where to write the revocation.") var out: String
        @Flag(help: "Print the revocation as JSON.") var json = false

        func run() async throws {
            let named = try deviceID.map { text throws -> DeviceID in
                guard let id = DeviceID(hex: text) else { throw ValidationError("device id must be 32 hex digits") }
                return id
            }
            guard let why = RevocationReason(name: reason) else {
                throw ValidationError("unknown reason \(reason); one of \(RevocationReason.allCases.map(\.description).joined(separator: ", "))")
            }
            let cert = try certificate.map { try Files.decode(Certificate.self, $0, what: "certificate") }
            if let cert, let named, cert.subject != named {
                throw ValidationError("\(certificate!) is the certificate of \(cert.subject), not of \(named)")
            }
            guard cert != nil || named != nil else { throw ValidationError("name the device: DEVICE_ID or --certificate CERT") }
            let now = wallClockMilliseconds()
            var cutoff = now
            if let text = self.at {
                let ms = try parseTimeOption(text, option: "--at", now: now)
                guard ms >= 0, UInt64(ms) <= now else {
                    throw ValidationError("--at \(text) is in the future (\(TimeText.format(ms))); a revocation cuts off from a time that has passed, or now")
                }
                cutoff = UInt64(ms)
            }
            let (authority, _) = try AuthorityCommand.load(dir: dir, keystore: keystore)
            let at = HLCTimestamp(milliseconds: cutoff, counter: 0)
            let rev: Revocation
            do {
                if let cert {
                    rev = try Revocation(certificate: cert, revokedAt: at, reason: why, note: note, by: authority)
                } else {
                    rev = try Revocation(device: named!, serial: serial, revokedAt: at, reason: why, note: note, by: authority)
                }
            } catch {
                let hint = !authority.isRoot && cert == nil ? " (a county authority names the certificate it issued: --certificate CERT)" : ""
                throw CLIError("refused: \(error)\(hint); nothing written")
            }
            try Files.write(rev.canonicalBytes, to: out, what: "revocation")
            AuthorityLedger.record(dir: dir, ["action": "revoked", "subject": rev.device.description, "cutoff": TimeText.format(Int64(cutoff)),
                                              "reason": why.description, "file": out])
            if json {
                try printJSON(["device": rev.device.description, "revokedAt": at.raw, "revokedAtTime": TimeText.format(Int64(cutoff)),
                               "reason": why.description, "issuer": rev.issuer.description])
            } else {
                print("revoked \(rev.device) from \(TimeText.format(Int64(cutoff))) (\(why)): changes it signed before then stay valid; "
                      + "spread \(out) to every node, then rotate the epoch keys of its scopes")
            }
        }
    }
}

/// The `--days` rule of every command that signs a certificate (`authority enroll`, `delegate`, `renew`).
enum CertificateValidity {
    /// The longest validity, in days (about ten years).
    static let maxDays = 3650

    /// The validity a certificate gets when `--days` is not given: 7 days for the devices officers carry
    /// (a lost one stops working within a week even if its revocation never reaches a node), 365 days for
    /// fixed nodes, and 395 for a relay box: it is enrolled at HQ and carried to a village hall where nobody
    /// looks after it, so its certificate covers a year in service plus a month to get there (docs/relay-ops.md,
    /// "A year unattended"); the warning 30 days before the end then falls after its first year.
    static func defaultDays(for role: Role) -> Int {
        switch role {
        case .backpack, .command: 7
        case .station, .county, .hq: 365
        case .relay: 395
        }
    }

    /// The defaults, for `--help`.
    static let defaultsText = "7 for backpack and command, 395 for relay, 365 for station, county and hq"

    /// Refuses a validity outside 1...`maxDays` days.
    static func check(days: Int) throws {
        guard (1...maxDays).contains(days) else { throw ValidationError("--days must be 1...\(maxDays)") }
    }

    /// The end of a validity of `days` days from `now` (ms since the Unix epoch).
    static func notAfter(_ now: UInt64, days: Int) -> UInt64 { now + UInt64(days) * 86_400_000 }
}
