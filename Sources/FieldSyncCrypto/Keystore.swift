// The device keystore: one file holding a device's (or an authority's) secrets, sealed with
// XChaCha20-Poly1305 under a key from Argon2id(passphrase) or from a 0600 key file. This is the only
// file of FieldSyncCrypto that does I/O (Foundation / POSIX). Format: Protocols/identity.md, "Keystore".

import FieldSyncCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Everything a device keeps secret, plus the public material it needs offline.
public struct KeystoreContents: Sendable {
    /// The Ed25519 signing key.
    public var signingKey: Ed25519.SecretKey
    /// The X25519 key-agreement key.
    public var agreementKey: X25519.SecretKey
    /// The device's (or delegated authority's) certificate, once imported; nil for the root or before enrollment.
    public var certificate: Certificate?
    /// Authority certificates the device presents with its own (its issuing county authority).
    public var chain: [Certificate]
    /// The pinned HQ root public key, once known.
    public var root: Ed25519.PublicKey?
    /// The epoch keys the device holds.
    public var epochKeys: [EpochKey]

    /// Creates contents.
    public init(signingKey: Ed25519.SecretKey, agreementKey: X25519.SecretKey, certificate: Certificate? = nil,
                chain: [Certificate] = [], root: Ed25519.PublicKey? = nil, epochKeys: [EpochKey] = []) {
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.certificate = certificate
        self.chain = chain
        self.root = root
        self.epochKeys = epochKeys
    }

    /// Plaintext encoding (sealed before it touches the disk).
    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 512)
        signingKey.seed.withUnsafeBytes { w.writeRaw($0) }
        agreementKey.secret.withUnsafeBytes { w.writeRaw($0) }
        w.writeBool(certificate != nil)
        if let certificate { w.write(certificate) }
        w.writeArray(chain)
        w.writeBool(root != nil)
        if let root { w.write(root) }
        w.writeVarint(UInt64(epochKeys.count))
        for k in epochKeys { k.encode(to: &w) }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(DecodingError) -> KeystoreContents {
        var r = ByteReader(bytes)
        var seed = try r.readRaw(32)
        var xs = try r.readRaw(32)
        defer { wipe(&seed); wipe(&xs) }
        let cert: Certificate? = try r.readBool() ? try r.read(Certificate.self) : nil
        let chain = try r.readArray(Certificate.self, minElementSize: 100)
        let root: Ed25519.PublicKey? = try r.readBool() ? try r.read(Ed25519.PublicKey.self) : nil
        let n = try r.readCount(minElementSize: 35)
        var keys: [EpochKey] = []
        for _ in 0..<n { keys.append(try EpochKey.decode(from: &r)) }
        try r.expectEnd()
        return KeystoreContents(signingKey: try! Ed25519.SecretKey(seed: SecretBytes(copying: seed)),
                                agreementKey: try! X25519.SecretKey(secret: SecretBytes(copying: xs)),
                                certificate: cert, chain: chain, root: root, epochKeys: keys)
    }
}

/// A typed keystore error; `description` says what to do.
public struct KeystoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed. Raw values are stable.
    public enum Code: String, Sendable, Equatable {
        /// The passphrase or key file does not open the keystore (the file itself is intact).
        case wrongPassphraseOrKey
        /// The file is damaged (checksum, structure or version).
        case corrupted
        /// The key file is readable or writable by group or others.
        case keyFilePermissions
        /// The key file is not exactly 32 bytes, or not a regular file.
        case keyFileInvalid
        /// The keystore was sealed with the other method (passphrase vs key file).
        case wrongUnlockMethod
        /// The target file already exists (and overwriting was not asked for).
        case alreadyExists
        /// A file-system operation failed.
        case io
        /// The key derivation or sealing failed.
        case crypto
    }

    /// The error code.
    public var code: Code
    /// What happened and what to do, including the path.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The detail, prefixed by the code.
    public var description: String { "\(code.rawValue): \(detail)" }
}

/// How to seal a keystore.
public enum KeystoreProtection: Sendable {
    /// Argon2id of a passphrase with these cost parameters and a fresh random salt.
    case passphrase([UInt8], Argon2id.Parameters)
    /// A 32-byte key read from a file that must have mode 0600 (or stricter).
    case keyFile(path: String)
}

/// How to open a keystore (the Argon2id parameters come from the file).
public enum KeystoreUnlock: Sendable {
    /// A passphrase.
    case passphrase([UInt8])
    /// A 0600 key file.
    case keyFile(path: String)
}

/// Reads and writes keystore files.
///
/// ```swift
/// try Keystore.write(contents, to: "/var/lib/fieldsync/device.keystore", protection: .passphrase(pw, .moderate))
/// let c = try Keystore.read(from: "/var/lib/fieldsync/device.keystore", unlock: .passphrase(pw))
/// ```
public enum Keystore {
    static let magic: [UInt8] = Array("FSKS".utf8)
    static let kdfArgon2id: UInt8 = 1
    static let kdfKeyFile: UInt8 = 2
    /// Largest Argon2id memory accepted from a file (4 GiB), so a damaged file cannot exhaust memory.
    static let maxMemLimit: UInt64 = 4 << 30
    static let maxOpsLimit: UInt64 = 64

    /// Seals `contents` and writes the file atomically (temporary file, fsync, rename, fsync of the directory).
    /// - Parameter overwrite: replace an existing file (default false).
    /// - Throws: ``KeystoreError`` (`alreadyExists`, `keyFilePermissions`, `keyFileInvalid`, `io`, `crypto`).
    public static func write(_ contents: KeystoreContents, to path: String, protection: KeystoreProtection,
                             overwrite: Bool = false) throws(KeystoreError) {
        if !overwrite, FileManager.default.fileExists(atPath: path) {
            throw KeystoreError(.alreadyExists, "\(path) already exists; remove it first or choose another path")
        }
        var w = ByteWriter(capacity: 1024)
        w.writeRaw(magic)
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        let key: SecretBytes
        switch protection {
        case let .passphrase(pw, params):
            guard !pw.isEmpty else { throw KeystoreError(.crypto, "the passphrase is empty") }
            let salt = SecureRandom.bytes(Argon2id.saltLength)
            w.writeByte(kdfArgon2id)
            w.writeRaw(salt)
            w.writeVarint(params.opsLimit)
            w.writeVarint(params.memLimit)
            do { key = try Argon2id.deriveKey(passphrase: pw, salt: salt, outputLength: 32, parameters: params) } catch {
                throw KeystoreError(.crypto, "Argon2id failed (\(params)): \(error)")
            }
        case let .keyFile(kf):
            w.writeByte(kdfKeyFile)
            key = try readKeyFile(kf)
        }
        let nonce = SecureRandom.bytes(XChaCha20Poly1305.nonceLength)
        w.writeRaw(nonce)
        var plain = contents.encoded()
        defer { wipe(&plain) }
        let header = w.bytes
        do {
            w.writeRaw(try XChaCha20Poly1305.seal(plain, key: key, nonce: nonce, associatedData: header))
        } catch { throw KeystoreError(.crypto, "sealing failed: \(error)") }
        w.writeRaw(BLAKE2b.hash(parts: [w.bytes[...]], outputLength: 32))
        try atomicWrite(w.bytes, to: path)
    }

    /// Reads and opens a keystore. Never modifies the file.
    /// - Throws: ``KeystoreError``: `corrupted` (damaged file), `wrongPassphraseOrKey`, `wrongUnlockMethod`,
    ///   `keyFilePermissions`, `keyFileInvalid`, `io`.
    public static func read(from path: String, unlock: KeystoreUnlock) throws(KeystoreError) -> KeystoreContents {
        let bytes = try readFile(path)
        guard bytes.count > 32 + 4 + 3 + 24 + 16 else { throw KeystoreError(.corrupted, "\(path) is too short to be a keystore") }
        let body = bytes[0..<(bytes.count - 32)]
        guard BLAKE2b.hash(parts: [body], outputLength: 32) == Array(bytes[(bytes.count - 32)...]) else {
            throw KeystoreError(.corrupted, "\(path) is damaged (checksum mismatch); restore it from a backup or re-enroll the device")
        }
        var r = ByteReader(body)
        let key: SecretBytes
        let nonce: [UInt8]
        do {
            guard try r.readRaw(4) == magic else { throw KeystoreError(.corrupted, "\(path) is not a FieldSync keystore") }
            guard try r.readByte() == fieldSyncFormatVersion, try r.readByte() == fieldSyncSuiteFPS1 else {
                throw KeystoreError(.corrupted, "\(path): unsupported keystore version or suite")
            }
            let kdf = try r.readByte()
            switch (kdf, unlock) {
            case (Self.kdfArgon2id, .passphrase(let pw)):
                let salt = try r.readRaw(Argon2id.saltLength)
                let params = Argon2id.Parameters(opsLimit: try r.readVarint(), memLimit: try r.readVarint())
                guard params.opsLimit <= maxOpsLimit, params.memLimit <= maxMemLimit else {
                    throw KeystoreError(.corrupted, "\(path): Argon2id parameters out of range (\(params))")
                }
                nonce = try r.readRaw(XChaCha20Poly1305.nonceLength)
                do { key = try Argon2id.deriveKey(passphrase: pw, salt: salt, outputLength: 32, parameters: params) } catch {
                    throw KeystoreError(.crypto, "Argon2id failed (\(params)): \(error)")
                }
            case (Self.kdfKeyFile, .keyFile(let kf)):
                nonce = try r.readRaw(XChaCha20Poly1305.nonceLength)
                key = try readKeyFile(kf)
            case (Self.kdfArgon2id, .keyFile):
                throw KeystoreError(.wrongUnlockMethod, "\(path) is protected by a passphrase; use --passphrase-file")
            case (Self.kdfKeyFile, .passphrase):
                throw KeystoreError(.wrongUnlockMethod, "\(path) is protected by a key file; use --key-file")
            default:
                throw KeystoreError(.corrupted, "\(path): unknown key derivation \(kdf)")
            }
        } catch let e as KeystoreError { throw e } catch {
            throw KeystoreError(.corrupted, "\(path): \(error)")
        }
        let headerLength = r.offset
        var plain: [UInt8]
        do {
            plain = try XChaCha20Poly1305.open(Array(body[headerLength...]), key: key, nonce: nonce,
                                              associatedData: Array(body[0..<headerLength]))
        } catch {
            throw KeystoreError(.wrongPassphraseOrKey, "the passphrase or key file does not open \(path); the file was not changed")
        }
        defer { wipe(&plain) }
        do { return try KeystoreContents.decode(plain) } catch {
            throw KeystoreError(.corrupted, "\(path): sealed contents are malformed: \(error)")
        }
    }

    /// Creates a new 32-byte random key file with mode 0600. Refuses to overwrite.
    /// - Throws: `alreadyExists` or `io`.
    public static func createKeyFile(at path: String) throws(KeystoreError) {
        var key = SecureRandom.bytes(32)
        defer { wipe(&key) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST { throw KeystoreError(.alreadyExists, "\(path) already exists") }
            throw KeystoreError(.io, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard writeAll(fd, key), fsync(fd) == 0 else { throw KeystoreError(.io, "cannot write \(path)") }
    }

    /// Reads a key file after checking it is a regular file of 32 bytes with no group/other permissions
    /// (also the key file of a backup, docs/backup.md).
    public static func readKeyFile(_ path: String) throws(KeystoreError) -> SecretBytes {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KeystoreError(.io, "cannot read key file \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw KeystoreError(.keyFileInvalid, "key file \(path) is not a regular file") }
        guard st.st_mode & 0o077 == 0 else {
            throw KeystoreError(.keyFilePermissions, String(format: "key file %@ has mode %o; it must not be accessible by group or others: run `chmod 600 %@`",
                                                             path, Int(st.st_mode & 0o777), path))
        }
        var bytes = try readFile(path)
        defer { wipe(&bytes) }
        guard bytes.count == 32 else { throw KeystoreError(.keyFileInvalid, "key file \(path) must hold exactly 32 bytes, found \(bytes.count)") }
        return SecretBytes(copying: bytes)
    }

    static func readFile(_ path: String) throws(KeystoreError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeystoreError(.io, "cannot read \(path) (missing or unreadable)")
        }
        return [UInt8](data)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return false }
            offset += n
        }
        return true
    }

    /// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory, fsync, rename,
    /// fsync of the directory.
    static func atomicWrite(_ bytes: [UInt8], to path: String) throws(KeystoreError) {
        let dir = PathText.folder(of: path)
        let tmp = "\(path).tmp-\(Hex.encode(SecureRandom.bytes(6)))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw KeystoreError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        guard writeAll(fd, bytes), fsync(fd) == 0 else {
            close(fd)
            unlink(tmp)
            throw KeystoreError(.io, "cannot write \(tmp)")
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw KeystoreError(.io, "cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))")
        }
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 {
            _ = fsync(dfd)  // best effort: some file systems refuse fsync on directories
            close(dfd)
        }
    }
}

/// File path text, without Foundation's `NSString` path methods: `deletingLastPathComponent` of
/// swift-corelibs-foundation traps on a one-character path with no slash (`"c"`), which a user can
/// name as a config, store or key file (found by fuzzing the config file, docs/fuzzing.md).
public enum PathText {
    /// The folder part of `path`, as `NSString.deletingLastPathComponent` gives it (`"/a/b"` → `"/a"`,
    /// `"/a"` → `"/"`, `"a/b/"` → `"a"`), and `"."` for a path with no folder part (`"c"`, `""`).
    public static func folder(of path: String) -> String {
        var p = Substring(path)
        while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return "." }
        if slash == p.startIndex { return "/" }
        var folder = p[..<slash]
        while folder.count > 1, folder.hasSuffix("/") { folder = folder.dropLast() }
        return String(folder)
    }
}
