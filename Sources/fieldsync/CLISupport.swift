// Shared helpers of the identity subcommands: keystore unlock options, file I/O, JSON output, the clock.

import ArgumentParser
import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A runtime error of the CLI; its text says what to do.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// How a keystore is protected or unlocked: exactly one of a passphrase file or a key file.
struct KeystoreOptions: ParsableArguments {
    @Option(help: ArgumentHelp("File holding the keystore passphrase (first line).", valueName: "file"))
    var passphraseFile: String?

    @Option(help: ArgumentHelp("32-byte key file (mode 0600); created if missing on init.", valueName: "file"))
    var keyFile: String?

    @Option(help: "Argon2id cost for a new passphrase keystore: moderate (256 MiB, default) or interactive (64 MiB).")
    var kdf: String = "moderate"

    func validate() throws {
        guard (passphraseFile == nil) != (keyFile == nil) else {
            throw ValidationError("give exactly one of --passphrase-file or --key-file")
        }
        guard ["moderate", "interactive"].contains(kdf) else { throw ValidationError("--kdf must be moderate or interactive") }
    }

    func passphrase() throws -> [UInt8] {
        guard let passphraseFile else { return [] }
        return try Self.readPassphrase(passphraseFile)
    }

    /// The first line of a passphrase file. Like a key file, a passphrase file that group or others may
    /// access is refused (a pipe, such as `<(pass show fieldsync)`, is accepted: nothing stores it).
    static func readPassphrase(_ passphraseFile: String) throws -> [UInt8] {
        // One rule for the CLI and the app library (`PassphraseFile.read`): mode, pipes, first line.
        do { return try PassphraseFile.read(passphraseFile) } catch { throw CLIError(error.message) }
    }

    /// Protection for a new keystore (creates the key file if it does not exist yet).
    func protection(creatingKeyFile: Bool) throws -> KeystoreProtection {
        if let keyFile {
            if creatingKeyFile, !FileManager.default.fileExists(atPath: keyFile) { try Keystore.createKeyFile(at: keyFile) }
            return .keyFile(path: keyFile)
        }
        return .passphrase(try passphrase(), kdf == "interactive" ? .interactive : .moderate)
    }

    func unlock() throws -> KeystoreUnlock {
        if let keyFile { return .keyFile(path: keyFile) }
        return .passphrase(try passphrase())
    }
}

enum Files {
    static func read(_ path: String, what: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(what) \(path)") }
        return [UInt8](d)
    }

    static func write(_ bytes: [UInt8], to path: String, what: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw CLIError("\(path) already exists; remove it or choose another --out")
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw CLIError("cannot write \(what) \(path)") }
    }

    static func ensureDirectory(_ dir: String) throws {
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        catch { throw CLIError("cannot create directory \(dir): \(error.localizedDescription)") }
    }

    static func decode<T: CanonicalDecodable>(_ type: T.Type, _ path: String, what: String) throws -> T {
        let bytes = try read(path, what: what)
        do { return try T(canonicalBytes: bytes) } catch { throw CLIError("\(path) is not a valid \(what): \(error)") }
    }

    static func readRoot(_ path: String) throws -> Ed25519.PublicKey {
        let text = String(decoding: try read(path, what: "root public key"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let b = Hex.decode(text), let k = try? Ed25519.PublicKey(bytes: b) else {
            throw CLIError("\(path) must hold the 64 hex digits of the HQ root public key")
        }
        return k
    }
}

/// Prints `object` as one line of sorted-key JSON.
func printJSON(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: data, as: UTF8.self))
}

/// The wall clock in ms since the Unix epoch (CLI only: the library never reads the clock).
func wallClockMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

func parseScopes(_ raw: [String]) throws -> [Scope] {
    guard !raw.isEmpty else { throw ValidationError("give at least one --scope") }
    return try raw.map { s in
        do { return try Scope(s) } catch { throw ValidationError("\(error)") }
    }
}

func parseRole(_ raw: String) throws -> Role {
    guard let r = Role(name: raw) else {
        throw ValidationError("unknown role \(raw); one of \(Role.allCases.map(\.description).joined(separator: ", "))")
    }
    return r
}

func certificateJSON(_ c: Certificate) -> [String: Any] {
    ["kind": c.kind == .device ? "device" : "authority", "subject": c.subject.description, "role": c.role.description,
     "scopes": c.scopes.map(\.path), "notBefore": c.notBefore, "notAfter": c.notAfter, "serial": String(c.serial),
     "notBeforeTime": TimeText.format(Int64(c.notBefore)), "notAfterTime": TimeText.format(Int64(c.notAfter)),
     "issuer": c.issuer.description, "signingKey": c.signingKey.description, "agreementKey": c.agreementKey.description]
}
