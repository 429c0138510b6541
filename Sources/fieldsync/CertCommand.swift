// `fieldsync cert show FILE`: what a certificate says, in words and dates a person reads.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import Foundation

/// `fieldsync cert`.
struct CertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cert", abstract: "Inspect certificate files.", subcommands: [Show.self])

    /// `cert show FILE`: the certificate's subject, kind, role, scopes, issuer and validity; with `--root`, whether
    /// that root signed it (a county-issued certificate is checked with `--authority COUNTY.cert` as well).
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a certificate file: device id, kind, role, scopes, issuer, serial and validity (UTC), with a warning near expiry.",
            discussion: "Reads any certificate `authority enroll`, `delegate` or `renew` wrote. With --root (and --authority for a "
                + "county-issued one), also checks its signature and its chain as a node would, now, and exits 1 if it does not hold.")

        @Argument(help: "The certificate file.") var file: String
        @Option(help: ArgumentHelp("HQ's root public key file (hq/root.pub), to check the signature. (default: not checked)", valueName: "file"))
        var root: String?
        @Option(help: ArgumentHelp("The county authority certificate that issued it, with --root.", valueName: "file")) var authority: String?
        @Flag(help: "Print one JSON object.") var json = false

        func run() async throws {
            let cert = try Files.decode(Certificate.self, file, what: "certificate")
            let now = wallClockMilliseconds()
            var check: String?
            var valid = true
            if let root {
                var trust = TrustStore(root: try Files.readRoot(root))
                do {
                    if cert.kind != .device {
                        try trust.learnAuthority(cert)
                        guard cert.notBefore <= now, now <= cert.notAfter else {
                            throw CLIError("outside its validity")
                        }
                    } else if let authority {
                        let county = try Files.decode(Certificate.self, authority, what: "authority certificate")
                        _ = try trust.verify(cert, chain: [county], now: now)
                    } else {
                        try trust.verify(cert, now: now)
                    }
                    check = "valid now under the root in \(root)"
                } catch {
                    check = "NOT valid now under the root in \(root): \(error)"
                    valid = false
                }
            }
            let days = CertificateLifetime.daysLeft(cert.notAfter, now: now)
            if json {
                var o = certificateJSON(cert)
                o["daysLeft"] = days
                o["expiresSoon"] = CertificateLifetime.warning(cert.notAfter, now: now) != nil
                if let check { o["check"] = check }
                try printJSON(o)
                if !valid { throw ExitCode.failure }
                return
            }
            print("\(cert.kind == .device ? "device" : "county authority") \(cert.subject)")
            print("  role      \(cert.role)")
            print("  scopes    \(cert.scopes.map(\.path).joined(separator: ", "))")
            print("  issuer    \(cert.issuer)")
            print("  serial    \(cert.serial)")
            print("  valid     \(TimeText.format(Int64(cert.notBefore))) to \(TimeText.format(Int64(cert.notAfter))) "
                  + (cert.notAfter <= now ? "(expired)" : "(\(days) days left)"))
            if let check { print("  check     \(check)") }
            if let warning = CertificateLifetime.warning(cert.notAfter, now: now) {
                print("WARNING: \(warning.replacingOccurrences(of: "this device's certificate", with: "the certificate"))")
            }
            if !valid { throw ExitCode.failure }
        }
    }
}
