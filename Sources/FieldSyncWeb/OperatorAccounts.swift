// Operator accounts of the command center: a JSON file beside the node's config (mode 0600), one entry per
// operator with an Argon2id password hash (libsodium's crypto_pwhash_str, which embeds salt and limits) and
// the scopes the operator may see and act in. `fieldsync web user add|remove|list` edits it; the running
// server re-reads it when it changes, so removing an account ends its sessions at once.

import CSodium
import FieldSyncCore
import Foundation

/// A command center operator.
public struct OperatorAccount: Sendable, Equatable, Codable {
    /// Login name: 1 to 32 of `a-z 0-9 . _ -`.
    public var name: String
    /// `crypto_pwhash_str` output (`$argon2id$v=19$m=...,t=...,p=1$salt$hash`).
    public var passwordHash: String
    /// Scopes the operator sees and acts in (empty: everything this node holds).
    public var scopes: [String]
    /// Random id of this account: a removed and re-added name does not revive the old sessions.
    public var id: String
    /// When it was added (ms since the Unix epoch).
    public var created: Int64
}

/// Argon2id cost of new password hashes.
public struct PasswordCost: Sendable, Equatable {
    /// Passes.
    public var opsLimit: UInt64
    /// Bytes of memory.
    public var memLimit: Int
    /// libsodium's interactive limits (2 passes, 64 MiB): the default for operator logins.
    public static let interactive = PasswordCost(opsLimit: UInt64(crypto_pwhash_OPSLIMIT_INTERACTIVE),
                                                 memLimit: Int(crypto_pwhash_MEMLIMIT_INTERACTIVE))
    /// The smallest limits libsodium accepts: tests only.
    public static let testingOnlyMinimum = PasswordCost(opsLimit: UInt64(crypto_pwhash_OPSLIMIT_MIN),
                                                        memLimit: Int(crypto_pwhash_MEMLIMIT_MIN))
}

/// Why an accounts operation failed.
public struct WebAccountError: Error, Sendable, CustomStringConvertible {
    /// What went wrong and what to do.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The accounts file.
public struct OperatorAccounts: Sendable, Equatable, Codable {
    /// File format version.
    public var version = 1
    /// Accounts, sorted by name.
    public var users: [OperatorAccount] = []

    /// No accounts.
    public init() {}

    /// The account named `name`.
    public func account(_ name: String) -> OperatorAccount? { users.first { $0.name == name } }

    /// Checks a login name.
    public static func checkName(_ name: String) throws(WebAccountError) {
        guard (1...32).contains(name.utf8.count),
              name.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 46 || $0 == 95 || $0 == 45 }) else {
            throw WebAccountError("operator name \"\(name.prefix(40))\" must be 1 to 32 of a-z, 0-9, '.', '_' and '-'")
        }
    }

    /// Hashes a password with Argon2id (salt and limits embedded in the result).
    public static func hash(_ password: String, cost: PasswordCost = .interactive) throws(WebAccountError) -> String {
        guard password.utf8.count >= 10, password.utf8.count <= 1024 else {
            throw WebAccountError("a password must be 10 to 1024 bytes")
        }
        guard sodium_init() >= 0 else { throw WebAccountError("libsodium failed to initialise") }
        var out = [CChar](repeating: 0, count: Int(crypto_pwhash_STRBYTES))
        let length = UInt64(password.utf8.count)
        let rc = password.withCString { c in crypto_pwhash_str(&out, c, length, cost.opsLimit, cost.memLimit) }
        guard rc == 0 else { throw WebAccountError("Argon2id hashing failed (out of memory?)") }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether `password` matches `hash` (constant time inside libsodium).
    public static func verify(_ password: String, hash: String) -> Bool {
        guard sodium_init() >= 0, password.utf8.count <= 1024 else { return false }
        let length = UInt64(password.utf8.count)
        return password.withCString { c in crypto_pwhash_str_verify(hash, c, length) == 0 }
    }

    /// Adds (or, with `replace`, replaces) an account.
    public mutating func add(name: String, password: String, scopes: [String], replace: Bool, now: Int64,
                             cost: PasswordCost = .interactive) throws(WebAccountError) {
        try Self.checkName(name)
        for s in scopes {
            do { _ = try Scope(s) } catch { throw WebAccountError(error.description) }
        }
        if account(name) != nil, !replace { throw WebAccountError("operator \(name) exists; pass --replace to set a new password") }
        users.removeAll { $0.name == name }
        var id = [UInt8](repeating: 0, count: 16)
        randombytes_buf(&id, 16)
        users.append(OperatorAccount(name: name, passwordHash: try Self.hash(password, cost: cost), scopes: scopes,
                                     id: id.map { String(format: "%02x", $0) }.joined(), created: now))
        users.sort { $0.name < $1.name }
    }

    /// Removes an account; its sessions end at once on a running server.
    public mutating func remove(name: String) throws(WebAccountError) {
        guard account(name) != nil else { throw WebAccountError("no operator named \(name)") }
        users.removeAll { $0.name == name }
    }

    /// Reads the file (missing: no accounts). Refuses a file others may read.
    public static func load(path: String) throws(WebAccountError) -> OperatorAccounts {
        var st = stat()
        guard stat(path, &st) == 0 else { return OperatorAccounts() }
        guard st.st_mode & 0o077 == 0 else {
            throw WebAccountError(String(format: "operator accounts file %@ has mode %o; run `chmod 600 %@`", path, Int(st.st_mode & 0o777), path))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw WebAccountError("cannot read \(path)") }
        do {
            return try JSONDecoder().decode(OperatorAccounts.self, from: data)
        } catch {
            throw WebAccountError("operator accounts file \(path) is damaged: \(error)")
        }
    }

    /// Writes the file atomically with mode 0600.
    public func save(path: String) throws(WebAccountError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let tmp = path + ".tmp"
        do {
            let data = try encoder.encode(self)
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            guard fd >= 0 else { throw WebAccountError("cannot write \(tmp)") }
            fchmod(fd, 0o600)
            let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            fsync(fd)
            close(fd)
            guard written == data.count else { throw WebAccountError("cannot write \(tmp)") }
            guard rename(tmp, path) == 0 else { throw WebAccountError("cannot replace \(path)") }
        } catch let e as WebAccountError {
            throw e
        } catch {
            throw WebAccountError("cannot write \(path): \(error)")
        }
    }
}
