// The libsodium primitives FieldSync uses, behind a small typed API (suite FPS-1):
// Ed25519, X25519, XChaCha20-Poly1305-IETF, ChaCha20-Poly1305-IETF, BLAKE2b, Argon2id, sealed boxes.

import CSodium
import FieldSyncCore

// MARK: - Ed25519

/// Ed25519 signatures (`crypto_sign_*_detached`).
public enum Ed25519 {
    /// Public key size in bytes.
    public static let publicKeyLength = 32
    /// Seed (private key) size in bytes.
    public static let seedLength = 32
    /// Signature size in bytes.
    public static let signatureLength = 64

    /// An Ed25519 public key (32 bytes). Encoded canonically as the 32 raw bytes.
    public struct PublicKey: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
        /// The 32 key bytes.
        public let bytes: [UInt8]

        /// Wraps 32 bytes.
        /// - Throws: `CryptoError.invalidLength` for any other size.
        public init(bytes: [UInt8]) throws(CryptoError) {
            try requireLength(bytes, Ed25519.publicKeyLength, "Ed25519 public key")
            self.bytes = bytes
        }

        /// Verifies a detached signature over `message`.
        ///
        /// ```swift
        /// try signer.publicKey.verify(signature: sig, message: bytes)
        /// ```
        /// - Throws: `CryptoError.badSignature` if the signature does not verify (libsodium also rejects
        ///   non-canonical and small-order encodings), `invalidLength` for a wrong-size signature.
        public func verify(signature: [UInt8], message: [UInt8]) throws(CryptoError) {
            Sodium.ensureInitialized()
            try requireLength(signature, Ed25519.signatureLength, "Ed25519 signature")
            let rc = signature.withUnsafeBufferPointer { s in
                message.withUnsafeBufferPointer { m in
                    bytes.withUnsafeBufferPointer { pk in
                        crypto_sign_verify_detached(s.baseAddress!, m.baseAddress, UInt64(m.count), pk.baseAddress!)
                    }
                }
            }
            guard rc == 0 else { throw CryptoError(.badSignature, "Ed25519 signature does not verify") }
        }

        /// Lower-case hex of the key.
        public var description: String { Hex.encode(bytes) }

        /// Writes the 32 raw bytes.
        public func encode(to writer: inout ByteWriter) { writer.writeRaw(bytes) }

        /// Reads 32 raw bytes.
        public init(from reader: inout ByteReader) throws(DecodingError) { bytes = try reader.readRaw(32) }
    }

    /// An Ed25519 signing key. The 64-byte libsodium secret key lives in zero-on-release memory and is
    /// never printed.
    public final class SecretKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// libsodium's 64-byte secret key (seed || public key).
        let secret: SecretBytes
        /// The matching public key.
        public let publicKey: PublicKey
        /// The key id (`DeviceID`) of `publicKey`, computed once.
        public let keyID: DeviceID

        /// Derives the key pair from a 32-byte seed (`crypto_sign_seed_keypair`).
        /// - Throws: `CryptoError.invalidLength` if the seed is not 32 bytes, `keyGenerationFailed` if
        ///   libsodium fails.
        public init(seed: SecretBytes) throws(CryptoError) {
            Sodium.ensureInitialized()
            try requireLength(0..<seed.count, Ed25519.seedLength, "Ed25519 seed")
            var pk = [UInt8](repeating: 0, count: Ed25519.publicKeyLength)
            secret = try SecretBytes(count: 64) { (sk: UnsafeMutableRawBufferPointer) throws(CryptoError) in
                let rc = seed.withUnsafeBytes { s in
                    pk.withUnsafeMutableBufferPointer { p in
                        crypto_sign_seed_keypair(p.baseAddress!, sk.bindMemory(to: UInt8.self).baseAddress!,
                                                 s.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
                guard rc == 0 else { throw CryptoError(.keyGenerationFailed, "crypto_sign_seed_keypair") }
            }
            publicKey = try PublicKey(bytes: pk)
            keyID = DeviceID(keyIDOf: pk)
        }

        /// A fresh key pair from a random seed.
        public static func generate() -> SecretKey {
            try! SecretKey(seed: SecretBytes.random(count: Ed25519.seedLength))
        }

        /// The 32-byte seed (first half of libsodium's secret key), for the keystore.
        public var seed: SecretBytes {
            secret.withUnsafeBytes { SecretBytes(copying: $0[0..<32]) }
        }

        /// Signs `message` (`crypto_sign_detached`), returning the 64-byte signature.
        /// - Throws: `CryptoError.signingFailed` if libsodium reports an error.
        public func sign(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
            var sig = [UInt8](repeating: 0, count: Ed25519.signatureLength)
            let rc = sig.withUnsafeMutableBufferPointer { s in
                message.withUnsafeBufferPointer { m in
                    secret.withUnsafeBytes { sk in
                        crypto_sign_detached(s.baseAddress!, nil, m.baseAddress, UInt64(m.count),
                                             sk.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
            guard rc == 0 else { throw CryptoError(.signingFailed, "crypto_sign_detached") }
            return sig
        }

        /// Always `<redacted>`.
        public var description: String { "Ed25519.SecretKey(<redacted>)" }
        /// Always `<redacted>`.
        public var debugDescription: String { description }
        /// Shows only the public key.
        public var customMirror: Mirror { Mirror(self, children: ["publicKey": publicKey, "secret": "<redacted>"]) }
    }
}

// MARK: - X25519

/// X25519 key agreement (`crypto_scalarmult`). Keys are compatible with `crypto_box` (sealed boxes).
public enum X25519 {
    /// Key size in bytes (public and secret).
    public static let keyLength = 32

    /// An X25519 public key (32 bytes), encoded canonically as the raw bytes.
    public struct PublicKey: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
        /// The 32 key bytes.
        public let bytes: [UInt8]
        /// Wraps 32 bytes.
        /// - Throws: `CryptoError.invalidLength` for any other size.
        public init(bytes: [UInt8]) throws(CryptoError) {
            try requireLength(bytes, X25519.keyLength, "X25519 public key")
            self.bytes = bytes
        }
        /// Lower-case hex.
        public var description: String { Hex.encode(bytes) }
        /// Writes the 32 raw bytes.
        public func encode(to writer: inout ByteWriter) { writer.writeRaw(bytes) }
        /// Reads 32 raw bytes.
        public init(from reader: inout ByteReader) throws(DecodingError) { bytes = try reader.readRaw(32) }
    }

    /// An X25519 secret scalar in zero-on-release memory. Never printed.
    public final class SecretKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
        /// The 32-byte scalar.
        let secret: SecretBytes
        /// The matching public key (`crypto_scalarmult_base`).
        public let publicKey: PublicKey

        /// Wraps a 32-byte scalar and computes its public key.
        /// - Throws: `CryptoError.invalidLength`, or `keyGenerationFailed` if libsodium rejects it.
        public init(secret: SecretBytes) throws(CryptoError) {
            Sodium.ensureInitialized()
            try requireLength(0..<secret.count, X25519.keyLength, "X25519 secret key")
            var pk = [UInt8](repeating: 0, count: 32)
            let rc = pk.withUnsafeMutableBufferPointer { p in
                secret.withUnsafeBytes { s in crypto_scalarmult_base(p.baseAddress!, s.bindMemory(to: UInt8.self).baseAddress!) }
            }
            guard rc == 0 else { throw CryptoError(.keyGenerationFailed, "crypto_scalarmult_base") }
            self.secret = secret
            publicKey = try PublicKey(bytes: pk)
        }

        /// A fresh random key pair.
        public static func generate() -> SecretKey {
            try! SecretKey(secret: SecretBytes.random(count: X25519.keyLength))
        }

        /// The X25519 shared secret with `peer`.
        /// - Throws: `CryptoError.lowOrderPoint` if the result is all zeros (the peer key is a low-order
        ///   point, so the "secret" would be known to everyone).
        public func sharedSecret(with peer: PublicKey) throws(CryptoError) -> SecretBytes {
            try secret.withUnsafeBytes { (s: UnsafeRawBufferPointer) throws(CryptoError) in
                try X25519.scalarMult(scalar: s, point: peer.bytes)
            }
        }

        /// Always `<redacted>`.
        public var description: String { "X25519.SecretKey(<redacted>)" }
        /// Always `<redacted>`.
        public var debugDescription: String { description }
        /// Shows only the public key.
        public var customMirror: Mirror { Mirror(self, children: ["publicKey": publicKey, "secret": "<redacted>"]) }
    }

    /// Raw scalar multiplication (`crypto_scalarmult`), exposed for the RFC 7748 vectors.
    /// - Throws: `CryptoError.lowOrderPoint` when the output is all zeros, `invalidLength` for bad sizes.
    public static func scalarMult(scalar: [UInt8], point: [UInt8]) throws(CryptoError) -> SecretBytes {
        try SecretBytes(copying: scalar).withUnsafeBytes { (s: UnsafeRawBufferPointer) throws(CryptoError) in
            try scalarMult(scalar: s, point: point)
        }
    }

    static func scalarMult(scalar: UnsafeRawBufferPointer, point: [UInt8]) throws(CryptoError) -> SecretBytes {
        Sodium.ensureInitialized()
        try requireLength(scalar, keyLength, "X25519 scalar")
        try requireLength(point, keyLength, "X25519 point")
        return try SecretBytes(count: 32) { (out: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            let o = out.bindMemory(to: UInt8.self).baseAddress!
            let rc = point.withUnsafeBufferPointer { p in
                crypto_scalarmult(o, scalar.bindMemory(to: UInt8.self).baseAddress!, p.baseAddress!)
            }
            // libsodium returns -1 for an all-zero result; check it ourselves too.
            guard rc == 0, sodium_is_zero(o, 32) == 0 else {
                throw CryptoError(.lowOrderPoint, "X25519 produced the all-zero shared secret (low-order point)")
            }
        }
    }
}

// MARK: - AEAD

/// XChaCha20-Poly1305-IETF authenticated encryption (`crypto_aead_xchacha20poly1305_ietf_*`).
/// The 24-byte nonce is large enough to be chosen at random for every message.
public enum XChaCha20Poly1305 {
    /// Key size in bytes.
    public static let keyLength = 32
    /// Nonce size in bytes.
    public static let nonceLength = 24
    /// Authentication tag size in bytes (appended to the ciphertext).
    public static let tagLength = 16

    /// Encrypts `plaintext`, authenticating `associatedData`; returns ciphertext || tag.
    ///
    /// ```swift
    /// let sealed = try XChaCha20Poly1305.seal(pt, key: key, nonce: SecureRandom.bytes(24), associatedData: ad)
    /// ```
    /// - Throws: `CryptoError.invalidLength` for a bad key or nonce size, `encryptionFailed` otherwise.
    public static func seal(_ plaintext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        try AEAD.seal(plaintext, key: key, nonce: nonce, associatedData: associatedData, nonceLength: nonceLength,
                      name: "XChaCha20-Poly1305", crypto_aead_xchacha20poly1305_ietf_encrypt)
    }

    /// Decrypts and authenticates `ciphertext` (ciphertext || tag).
    /// - Throws: `CryptoError.authenticationFailed` for a wrong key, wrong associated data, tampered or
    ///   truncated input; `invalidLength` for bad key or nonce sizes.
    public static func open(_ ciphertext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        try AEAD.open(ciphertext, key: key, nonce: nonce, associatedData: associatedData, nonceLength: nonceLength,
                      name: "XChaCha20-Poly1305", crypto_aead_xchacha20poly1305_ietf_decrypt)
    }
}

/// ChaCha20-Poly1305-IETF (RFC 8439) authenticated encryption with a 12-byte nonce, for counter-nonce
/// uses such as the Noise transport. Never use random nonces with it.
public enum ChaCha20Poly1305 {
    /// Key size in bytes.
    public static let keyLength = 32
    /// Nonce size in bytes.
    public static let nonceLength = 12
    /// Authentication tag size in bytes.
    public static let tagLength = 16

    /// Encrypts `plaintext`, authenticating `associatedData`; returns ciphertext || tag.
    /// - Throws: `CryptoError.invalidLength` for bad key or nonce sizes, `encryptionFailed` otherwise.
    public static func seal(_ plaintext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        try AEAD.seal(plaintext, key: key, nonce: nonce, associatedData: associatedData, nonceLength: nonceLength,
                      name: "ChaCha20-Poly1305", crypto_aead_chacha20poly1305_ietf_encrypt)
    }

    /// Decrypts and authenticates `ciphertext` (ciphertext || tag).
    /// - Throws: `CryptoError.authenticationFailed` on any authentication failure, `invalidLength` for
    ///   bad key or nonce sizes.
    public static func open(_ ciphertext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8]) throws(CryptoError) -> [UInt8] {
        try AEAD.open(ciphertext, key: key, nonce: nonce, associatedData: associatedData, nonceLength: nonceLength,
                      name: "ChaCha20-Poly1305", crypto_aead_chacha20poly1305_ietf_decrypt)
    }
}

/// The one implementation behind both AEADs: libsodium's IETF ChaCha20-Poly1305 encrypt and decrypt
/// functions of both nonce sizes share a signature, so only the function and the nonce length differ.
private enum AEAD {
    typealias Encrypt = (UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt64>?, UnsafePointer<UInt8>?, UInt64,
                         UnsafePointer<UInt8>?, UInt64, UnsafePointer<UInt8>?, UnsafePointer<UInt8>,
                         UnsafePointer<UInt8>) -> Int32
    typealias Decrypt = (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<UInt8>?,
                         UnsafePointer<UInt8>, UInt64, UnsafePointer<UInt8>?, UInt64, UnsafePointer<UInt8>,
                         UnsafePointer<UInt8>) -> Int32
    static let keyLength = 32
    static let tagLength = 16

    static func seal(_ plaintext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8], nonceLength: Int,
                     name: String, _ encrypt: Encrypt) throws(CryptoError) -> [UInt8] {
        Sodium.ensureInitialized()
        try requireLength(0..<key.count, keyLength, "\(name) key")
        try requireLength(nonce, nonceLength, "\(name) nonce")
        var out = [UInt8](repeating: 0, count: plaintext.count + tagLength)
        var outLen: UInt64 = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            plaintext.withUnsafeBufferPointer { m in
                associatedData.withUnsafeBufferPointer { a in
                    nonce.withUnsafeBufferPointer { n in
                        key.withUnsafeBytes { k in
                            encrypt(o.baseAddress!, &outLen, m.baseAddress, UInt64(m.count), a.baseAddress, UInt64(a.count),
                                    nil, n.baseAddress!, k.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        guard rc == 0, outLen == UInt64(out.count) else { throw CryptoError(.encryptionFailed, "\(name) encrypt") }
        return out
    }

    static func open(_ ciphertext: [UInt8], key: SecretBytes, nonce: [UInt8], associatedData: [UInt8], nonceLength: Int,
                     name: String, _ decrypt: Decrypt) throws(CryptoError) -> [UInt8] {
        Sodium.ensureInitialized()
        try requireLength(0..<key.count, keyLength, "\(name) key")
        try requireLength(nonce, nonceLength, "\(name) nonce")
        guard ciphertext.count >= tagLength else { throw CryptoError(.authenticationFailed, "ciphertext shorter than the tag") }
        var out = [UInt8](repeating: 0, count: ciphertext.count - tagLength)
        var outLen: UInt64 = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            ciphertext.withUnsafeBufferPointer { c in
                associatedData.withUnsafeBufferPointer { a in
                    nonce.withUnsafeBufferPointer { n in
                        key.withUnsafeBytes { k in
                            decrypt(o.baseAddress, &outLen, nil, c.baseAddress!, UInt64(c.count), a.baseAddress, UInt64(a.count),
                                    n.baseAddress!, k.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        guard rc == 0 else { throw CryptoError(.authenticationFailed, "\(name) authentication failed") }
        return out
    }
}

// MARK: - BLAKE2b

/// BLAKE2b hashing (`crypto_generichash`), optionally keyed, with a variable output length.
public enum BLAKE2b {
    /// Smallest output length libsodium allows.
    public static let minOutputLength = 16
    /// Largest output length.
    public static let maxOutputLength = 64
    /// Largest key length.
    public static let maxKeyLength = 64

    /// Hashes `data` to `outputLength` bytes, keyed with `key` if given.
    ///
    /// ```swift
    /// let digest = try BLAKE2b.hash(Array("abc".utf8), outputLength: 64)
    /// ```
    /// - Throws: `CryptoError.invalidLength` if the output length is outside 16...64 or the key is longer
    ///   than 64 bytes; `hashFailed` if libsodium fails.
    public static func hash(_ data: [UInt8], outputLength: Int = 32, key: SecretBytes? = nil) throws(CryptoError) -> [UInt8] {
        Sodium.ensureInitialized()
        guard (minOutputLength...maxOutputLength).contains(outputLength) else {
            throw CryptoError(.invalidLength, "BLAKE2b output length must be 16...64, got \(outputLength)")
        }
        if let key, !(1...maxKeyLength).contains(key.count) {
            throw CryptoError(.invalidLength, "BLAKE2b key length must be 1...64, got \(key.count)")
        }
        var out = [UInt8](repeating: 0, count: outputLength)
        let rc = out.withUnsafeMutableBufferPointer { o in
            data.withUnsafeBufferPointer { d in
                if let key {
                    return key.withUnsafeBytes { k in
                        crypto_generichash(o.baseAddress!, outputLength, d.baseAddress, UInt64(d.count),
                                           k.bindMemory(to: UInt8.self).baseAddress, k.count)
                    }
                }
                return crypto_generichash(o.baseAddress!, outputLength, d.baseAddress, UInt64(d.count), nil, 0)
            }
        }
        guard rc == 0 else { throw CryptoError(.hashFailed, "crypto_generichash") }
        return out
    }

    /// Unkeyed hash of the concatenation of `parts`, without building the concatenation (multi-part API).
    /// `outputLength` must be a valid constant chosen by this module (16...64).
    static func hash(parts: [ArraySlice<UInt8>], outputLength: Int) -> [UInt8] {
        Sodium.ensureInitialized()
        precondition((minOutputLength...maxOutputLength).contains(outputLength), "bad BLAKE2b length")
        var out = [UInt8](repeating: 0, count: outputLength)
        if parts.count == 1 {
            parts[0].withUnsafeBufferPointer { p in
                out.withUnsafeMutableBufferPointer { o in
                    Sodium.checked(crypto_generichash(o.baseAddress!, outputLength, p.baseAddress, UInt64(p.count), nil, 0),
                                   "crypto_generichash")
                }
            }
            return out
        }
        // libsodium's state is 64-byte aligned and imported opaquely: use an aligned stack buffer.
        withUnsafeTemporaryAllocation(byteCount: crypto_generichash_statebytes(), alignment: 64) { buffer in
            let st = OpaquePointer(buffer.baseAddress!)
            Sodium.checked(crypto_generichash_init(st, nil, 0, outputLength), "crypto_generichash_init")
            for part in parts {
                part.withUnsafeBufferPointer { p in
                    Sodium.checked(crypto_generichash_update(st, p.baseAddress, UInt64(p.count)), "crypto_generichash_update")
                }
            }
            out.withUnsafeMutableBufferPointer { o in
                Sodium.checked(crypto_generichash_final(st, o.baseAddress!, outputLength), "crypto_generichash_final")
            }
        }
        return out
    }

    /// Domain-separated hash used for every FieldSync signature and hash:
    /// `BLAKE2b-n(label_utf8 || 0x00 || part_0 || part_1 || ...)`. Labels never contain a zero byte.
    static func domainHash(_ label: StaticString, _ parts: [ArraySlice<UInt8>], outputLength: Int) -> [UInt8] {
        Sodium.ensureInitialized()
        precondition((minOutputLength...maxOutputLength).contains(outputLength), "bad BLAKE2b length")
        // One contiguous input and one-shot hashing: cheaper than the multi-part API for these sizes.
        var input: [UInt8] = []
        input.reserveCapacity(label.utf8CodeUnitCount + 1 + parts.reduce(0) { $0 + $1.count })
        label.withUTF8Buffer { l in
            precondition(!l.contains(0), "domain labels must not contain NUL")
            input.append(contentsOf: l)
        }
        input.append(0)
        for p in parts { input.append(contentsOf: p) }
        var out = [UInt8](repeating: 0, count: outputLength)
        input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                Sodium.checked(crypto_generichash(o.baseAddress!, outputLength, i.baseAddress, UInt64(i.count), nil, 0), "crypto_generichash")
            }
        }
        return out
    }
}

// MARK: - Argon2id

/// Argon2id password hashing (`crypto_pwhash` with `crypto_pwhash_ALG_ARGON2ID13`), with explicit limits.
public enum Argon2id {
    /// Salt size in bytes.
    public static let saltLength = 16

    /// Cost parameters. Stored next to the salt so that a file keeps the parameters it was sealed with.
    public struct Parameters: Hashable, Sendable, CustomStringConvertible {
        /// Number of passes (libsodium's `opslimit`); at least 1.
        public var opsLimit: UInt64
        /// Memory in bytes (libsodium's `memlimit`); at least 8 KiB.
        public var memLimit: UInt64

        /// Creates parameters (validated when used).
        public init(opsLimit: UInt64, memLimit: UInt64) {
            self.opsLimit = opsLimit
            self.memLimit = memLimit
        }

        /// libsodium's "moderate" limits (3 passes, 256 MiB): the default for keystores.
        public static let moderate = Parameters(opsLimit: UInt64(crypto_pwhash_OPSLIMIT_MODERATE),
                                                memLimit: UInt64(crypto_pwhash_MEMLIMIT_MODERATE))
        /// libsodium's "interactive" limits (2 passes, 64 MiB).
        public static let interactive = Parameters(opsLimit: UInt64(crypto_pwhash_OPSLIMIT_INTERACTIVE),
                                                   memLimit: UInt64(crypto_pwhash_MEMLIMIT_INTERACTIVE))
        /// The smallest limits libsodium accepts: for tests only, never for real keys.
        public static let testingOnlyMinimum = Parameters(opsLimit: UInt64(crypto_pwhash_OPSLIMIT_MIN),
                                                          memLimit: UInt64(crypto_pwhash_MEMLIMIT_MIN))

        /// `ops=N mem=M KiB`.
        public var description: String { "ops=\(opsLimit) mem=\(memLimit / 1024) KiB" }

        /// Throws unless libsodium accepts the limits.
        func validate() throws(CryptoError) {
            guard opsLimit >= UInt64(crypto_pwhash_OPSLIMIT_MIN), opsLimit <= UInt64(crypto_pwhash_OPSLIMIT_MAX) else {
                throw CryptoError(.invalidParameter, "Argon2id opsLimit \(opsLimit) out of range")
            }
            guard memLimit >= UInt64(crypto_pwhash_MEMLIMIT_MIN), memLimit <= UInt64(crypto_pwhash_memlimit_max()) else {
                throw CryptoError(.invalidParameter, "Argon2id memLimit \(memLimit) out of range")
            }
        }
    }

    /// Derives `outputLength` bytes from `passphrase` and `salt`.
    ///
    /// ```swift
    /// let key = try Argon2id.deriveKey(passphrase: pw, salt: salt, outputLength: 32, parameters: .moderate)
    /// ```
    /// - Throws: `CryptoError.invalidLength` (salt not 16 bytes, output not 16...), `invalidParameter`
    ///   (limits out of range), `keyDerivationFailed` (libsodium failed, e.g. out of memory).
    public static func deriveKey(passphrase: [UInt8], salt: [UInt8], outputLength: Int = 32,
                                 parameters: Parameters) throws(CryptoError) -> SecretBytes {
        Sodium.ensureInitialized()
        try requireLength(salt, saltLength, "Argon2id salt")
        guard outputLength >= Int(crypto_pwhash_BYTES_MIN), outputLength <= 1024 else {
            throw CryptoError(.invalidLength, "Argon2id output length \(outputLength) out of range")
        }
        try parameters.validate()
        return try SecretBytes(count: outputLength) { (out: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            let pw = passphrase.isEmpty ? [UInt8(0)] : passphrase  // a valid pointer; the length stays 0
            let rc = pw.withUnsafeBufferPointer { p in
                salt.withUnsafeBufferPointer { s in
                    p.withMemoryRebound(to: CChar.self) { pc in
                        crypto_pwhash(out.bindMemory(to: UInt8.self).baseAddress!, UInt64(outputLength),
                                      pc.baseAddress!, UInt64(passphrase.count), s.baseAddress!,
                                      parameters.opsLimit, Int(parameters.memLimit), crypto_pwhash_ALG_ARGON2ID13)
                    }
                }
            }
            guard rc == 0 else { throw CryptoError(.keyDerivationFailed, "crypto_pwhash (Argon2id) failed: out of memory?") }
        }
    }
}

// MARK: - Sealed boxes

/// Anonymous public-key encryption (`crypto_box_seal`): X25519 with an ephemeral key, XSalsa20-Poly1305.
/// Used to wrap epoch keys for each member and data keys for the HQ archive.
public enum SealedBox {
    /// Bytes added to the message (ephemeral public key + tag).
    public static let overhead = 48

    /// Seals `message` to `recipient`.
    /// - Throws: `CryptoError.encryptionFailed` if libsodium fails.
    public static func seal(_ message: [UInt8], to recipient: X25519.PublicKey) throws(CryptoError) -> [UInt8] {
        Sodium.ensureInitialized()
        var out = [UInt8](repeating: 0, count: message.count + overhead)
        let rc = out.withUnsafeMutableBufferPointer { o in
            message.withUnsafeBufferPointer { m in
                recipient.bytes.withUnsafeBufferPointer { r in
                    crypto_box_seal(o.baseAddress!, m.baseAddress, UInt64(m.count), r.baseAddress!)
                }
            }
        }
        guard rc == 0 else { throw CryptoError(.encryptionFailed, "crypto_box_seal") }
        return out
    }

    /// Seals deterministically from a 32-byte ephemeral seed: byte-identical to `crypto_box_seal` with
    /// the ephemeral key pair `crypto_box_seed_keypair(seed)`. For test vectors only.
    static func seal(_ message: [UInt8], to recipient: X25519.PublicKey, ephemeralSeed: [UInt8]) throws(CryptoError) -> [UInt8] {
        Sodium.ensureInitialized()
        try requireLength(ephemeralSeed, 32, "sealed box ephemeral seed")
        var epk = [UInt8](repeating: 0, count: 32)
        var esk = [UInt8](repeating: 0, count: 32)
        defer { wipe(&esk) }
        guard crypto_box_seed_keypair(&epk, &esk, ephemeralSeed) == 0 else {
            throw CryptoError(.keyGenerationFailed, "crypto_box_seed_keypair")
        }
        let nonce = BLAKE2b.hash(parts: [epk[...], recipient.bytes[...]], outputLength: Int(crypto_box_NONCEBYTES))
        var ct = [UInt8](repeating: 0, count: message.count + Int(crypto_box_MACBYTES))
        let rc = ct.withUnsafeMutableBufferPointer { c in
            message.withUnsafeBufferPointer { m in
                crypto_box_easy(c.baseAddress!, m.baseAddress, UInt64(m.count), nonce, recipient.bytes, esk)
            }
        }
        guard rc == 0 else { throw CryptoError(.encryptionFailed, "crypto_box_easy") }
        return epk + ct
    }

    /// Opens a sealed box addressed to `recipient`'s key pair.
    /// - Throws: `CryptoError.authenticationFailed` if the box was not sealed to this key or was altered.
    public static func open(_ ciphertext: [UInt8], with recipient: X25519.SecretKey) throws(CryptoError) -> SecretBytes {
        Sodium.ensureInitialized()
        guard ciphertext.count >= overhead else { throw CryptoError(.authenticationFailed, "sealed box too short") }
        return try SecretBytes(count: ciphertext.count - overhead) { (out: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            let o = out.baseAddress!.assumingMemoryBound(to: UInt8.self)  // non-nil even when empty
            let rc = ciphertext.withUnsafeBufferPointer { c in
                recipient.publicKey.bytes.withUnsafeBufferPointer { pk in
                    recipient.secret.withUnsafeBytes { sk in
                        crypto_box_seal_open(o, c.baseAddress!, UInt64(c.count), pk.baseAddress!,
                                             sk.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
            guard rc == 0 else { throw CryptoError(.authenticationFailed, "sealed box does not open with this key") }
        }
    }
}
