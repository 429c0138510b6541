// `fieldsync device ...`: device keys, enrollment requests and certificates.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import Foundation

/// The `device` command group.
struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Create device keys and an enrollment request, import the certificate, show the identity.",
        subcommands: [Init.self, Import.self, Show.self]
    )

    static let keystoreName = "device.keystore"
    static let requestName = "enrollment.req"

    /// `device init`: keys, keystore and enrollment request.
    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create device keys, a sealed keystore and an enrollment request.")

        @Option(help: "Directory for the device's files (created, mode 0700).") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "Role to ask for (the authority decides).") var role: String = "backpack"
        @Option(help: "Scope to ask for (repeat for several).") var scope: [String] = []
        @Option(help: "Label for the operator, e.g. \"backpack 17\".") var label: String = ""
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            let role = try parseRole(role)
            let scopes = try parseScopes(scope)
            try Files.ensureDirectory(dir)
            let sk = Ed25519.SecretKey.generate()
            let xk = X25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                            createdAt: wallClockMilliseconds(), label: label)
            try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk), to: dir + "/" + DeviceCommand.keystoreName,
                               protection: try keystore.protection(creatingKeyFile: true))
            let reqPath = dir + "/" + DeviceCommand.requestName
            try Files.write(req.canonicalBytes, to: reqPath, what: "enrollment request")
            if json {
                try printJSON(["deviceID": req.subject.description, "request": reqPath, "signingKey": sk.publicKey.description])
            } else {
                print("device \(req.subject) created in \(dir)")
                print("next: take \(reqPath) to an authority: fieldsync authority enroll \(DeviceCommand.requestName) --dir AUTH_DIR --role \(role) --scope ... --out device.cert")
            }
        }
    }

    /// `device import CERT`: check and store the certificate.
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a certificate against the device keys and the HQ root, then store it.")

        @Argument(help: "The certificate file from `fieldsync authority enroll`.") var certificate: String
        @Option(help: "The device's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Option(help: "File with the HQ root public key (root.pub) to pin.") var root: String
        @Option(help: "The issuing county authority's certificate, if a county authority signed it.") var authority: String?
        @Flag(help: "Print the certificate as JSON.") var json = false

        func run() async throws {
            let path = dir + "/" + DeviceCommand.keystoreName
            var contents = try Keystore.read(from: path, unlock: try keystore.unlock())
            let cert = try Files.decode(Certificate.self, certificate, what: "certificate")
            guard cert.signingKey == contents.signingKey.publicKey, cert.agreementKey == contents.agreementKey.publicKey else {
                throw CLIError("\(certificate) was issued for device \(cert.subject), not for the keys in \(dir)")
            }
            var trust = TrustStore(root: try Files.readRoot(root))
            let now = wallClockMilliseconds()
            var chain: [Certificate] = []
            if let authority {
                let a = try Files.decode(Certificate.self, authority, what: "authority certificate")
                try trust.addAuthority(a, now: now)
                chain.append(a)
            } else if contents.root == trust.root {
                // A renewal by the same county authority: keep its certificate from the keystore.
                for a in contents.chain where a.subject == cert.issuer && (try? trust.addAuthority(a, now: now)) != nil { chain.append(a) }
            }
            do { try trust.verify(cert, now: now) } catch {
                throw CLIError("certificate refused: \(error)\(error.code == .unknownAuthority ? " (pass the county authority certificate with --authority, or check --root)" : "")")
            }
            // A renewal or re-enrollment replaces the current certificate only if it is newer: importing an
            // older one again would make the device present a certificate it had already replaced.
            if let current = contents.certificate, current != cert, !cert.isNewer(than: current) {
                throw CLIError("\(certificate) (valid from \(cert.notBefore)) is older than the imported certificate (valid from \(current.notBefore)); nothing changed")
            }
            let previous = contents.certificate
            contents.certificate = cert
            contents.chain = chain
            contents.root = trust.root
            try Keystore.write(contents, to: path, protection: try keystore.protection(creatingKeyFile: false), overwrite: true)
            if json { try printJSON(certificateJSON(cert)) } else {
                print("device \(cert.subject) \(previous == nil ? "enrolled" : "certificate renewed"): \(cert.role) for \(cert.scopes.map(\.path).joined(separator: ", ")) until \(TimeText.format(Int64(cert.notAfter)))")
            }
        }
    }

    /// `device show`: print the identity (never the secrets).
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the device identity and certificate (never the secrets).")

        @Option(help: "The device's directory.") var dir: String
        @OptionGroup var keystore: KeystoreOptions
        @Flag(help: "Print as JSON.") var json = false

        func run() async throws {
            let contents = try Keystore.read(from: dir + "/" + DeviceCommand.keystoreName, unlock: try keystore.unlock())
            let id = DeviceID(signingKey: contents.signingKey.publicKey)
            var obj: [String: Any] = ["deviceID": id.description, "signingKey": contents.signingKey.publicKey.description,
                                      "agreementKey": contents.agreementKey.publicKey.description,
                                      "epochKeys": contents.epochKeys.map { "\($0.scope)#\($0.epoch)" }]
            if let c = contents.certificate { obj["certificate"] = certificateJSON(c) }
            if json { try printJSON(obj) } else {
                print("device \(id)")
                if let c = contents.certificate {
                    let now = wallClockMilliseconds()
                    print("certificate: \(c.role) for \(c.scopes.map(\.path).joined(separator: ", ")), issued by \(c.issuer), serial \(c.serial), "
                          + "valid \(TimeText.format(Int64(c.notBefore))) to \(TimeText.format(Int64(c.notAfter))) "
                          + "(\(CertificateLifetime.daysLeft(c.notAfter, now: now)) days left)")
                    if let warning = CertificateLifetime.warning(c.notAfter, now: now) { print("WARNING: \(warning)") }
                } else {
                    print("not enrolled yet: run `fieldsync device import CERT --dir \(dir) --root root.pub`")
                }
                print("epoch keys in the keystore: " + (contents.epochKeys.isEmpty ? "none (keys granted through sync are in the store: fieldsync status)"
                                                        : contents.epochKeys.map { "\($0.scope)#\($0.epoch)" }.joined(separator: ", ")))
            }
        }
    }
}
