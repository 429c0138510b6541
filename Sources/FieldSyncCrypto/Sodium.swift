// libsodium initialisation, the typed crypto error, secret byte storage and secure randomness.
//
// Everything in FieldSyncCrypto calls `Sodium.ensureInitialized()` (directly or through a key type)
// before touching libsodium. `sodium_init()` is thread safe and idempotent; we still call it once,
// through a lazily initialised static, so its result is checked exactly once.

import CSodium

/// A typed error for every failure reported by libsodium or by the checks of this module's primitives.
///
/// ```swift
/// do { _ = try XChaCha20Poly1305.open(sealed, key: key, nonce: nonce, associatedData: ad) }
/// catch { print(error.code) }  // .authenticationFailed
/// ```
public struct CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed. The raw values are stable and may appear in logs and CLI output.
    public enum Code: String, Sendable, Equatable {
        /// An input (key, nonce, seed, salt, output length) has the wrong size.
        case invalidLength
        /// A parameter is outside the range libsodium accepts (e.g. Argon2id limits).
        case invalidParameter
        /// A signature does not verify under the given public key.
        case badSignature
        /// An AEAD ciphertext (or sealed box) failed authentication: wrong key, wrong associated data,
        /// or tampered bytes.
        case authenticationFailed
        /// An X25519 computation produced the all-zero output: the peer key is a low-order point.
        case lowOrderPoint
        /// A key could not be generated or derived (libsodium reported an error).
        case keyGenerationFailed
        /// Argon2id failed (usually: not enough memory for the requested `memLimit`).
        case keyDerivationFailed
        /// Signing failed inside libsodium.
        case signingFailed
        /// Encryption failed inside libsodium.
        case encryptionFailed
        /// A hash computation failed inside libsodium.
        case hashFailed
    }

    /// The error code.
    public var code: Code
    /// Human-readable detail: which operation, which sizes. Never contains secret material.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// A one-line description: the code and the detail.
    public var description: String { detail.isEmpty ? code.rawValue : "\(code.rawValue): \(detail)" }
}

/// libsodium initialisation.
enum Sodium {
    /// The result of the single `sodium_init()` call (0 = initialised now, 1 = already initialised).
    private static let initResult: Int32 = sodium_init()

    /// Initialises libsodium once. A failure means the process has no usable entropy source; nothing
    /// safe can be done then, so it is a fatal error rather than a thrown one.
    @inline(__always) static func ensureInitialized() {
        precondition(initResult >= 0, "sodium_init() failed: no usable entropy source")
    }

    /// Checks the result of a libsodium call whose parameters were all validated by the caller, so that
    /// a non-zero result can only be a libsodium bug.
    @inline(__always) static func checked(_ rc: Int32, _ what: StaticString) {
        precondition(rc == 0, "libsodium \(what) failed with validated parameters")
    }
}

/// Secret bytes in memory that is zeroed with `sodium_memzero` when the value is released.
///
/// Never printed: `description`, `debugDescription` and reflection show `<redacted>`. Compare with
/// ``constantTimeEquals(_:)``, not by reading the bytes.
///
/// ```swift
/// let key = SecretBytes(copying: bytes)
/// key.withUnsafeBytes { raw in /* pass raw.baseAddress to libsodium */ }
/// ```
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    // Immutable after init (written only while the initialiser runs), hence `@unchecked Sendable`.
    private let storage: UnsafeMutableRawBufferPointer

    /// Number of bytes.
    public let count: Int

    /// Allocates `count` bytes and lets `fill` write them before the value is shared.
    init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws(CryptoError) -> Void) throws(CryptoError) {
        precondition(count >= 0, "negative secret size")
        // Fill a local buffer first, so a throwing `fill` never leaves a half-built object behind.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        do {
            try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        } catch {
            sodium_memzero(buffer.baseAddress!, buffer.count)
            buffer.deallocate()
            throw error
        }
        self.count = count
        storage = buffer
    }

    /// Copies `bytes` into zero-on-release storage. The caller should wipe its own copy if it can.
    public convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        let array = Array(bytes)
        try! self.init(count: array.count) { (dst: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            dst.copyBytes(from: array)
        }
    }

    /// `count` bytes from the secure random generator (`randombytes_buf`).
    public static func random(count: Int) -> SecretBytes {
        Sodium.ensureInitialized()
        return try! SecretBytes(count: count) { (dst: UnsafeMutableRawBufferPointer) throws(CryptoError) in
            if count > 0 { randombytes_buf(dst.baseAddress!, count) }
        }
    }

    deinit {
        sodium_memzero(storage.baseAddress!, storage.count)
        storage.deallocate()
    }

    /// Calls `body` with read access to the secret bytes. Do not let the pointer escape.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// A copy of the bytes as an array. Use only to hand them to an encoder that must own them (the
    /// keystore); the copy is not wiped automatically.
    func unsafeCopy() -> [UInt8] { withUnsafeBytes { Array($0) } }

    /// Compares two secrets in constant time (`sodium_memcmp`); different lengths compare unequal.
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in other.withUnsafeBytes { b in sodium_memcmp(a.baseAddress, b.baseAddress, count) == 0 } }
    }

    /// Always `<redacted>`.
    public var description: String { "<redacted>" }
    /// Always `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// A mirror with no children, so `dump` and reflection show nothing secret.
    public var customMirror: Mirror { Mirror(self, children: ["bytes": "<redacted>"]) }
}

/// The secure random generator of libsodium (`randombytes_buf`).
///
/// This is the only source of randomness in FieldSyncCrypto; the pure logic elsewhere takes random
/// bytes as parameters.
public enum SecureRandom {
    /// `count` random bytes.
    ///
    /// ```swift
    /// let nonce = SecureRandom.bytes(24)
    /// ```
    public static func bytes(_ count: Int) -> [UInt8] {
        Sodium.ensureInitialized()
        precondition(count >= 0, "negative random byte count")
        var out = [UInt8](repeating: 0, count: count)
        if count > 0 { out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) } }
        return out
    }

    /// A uniformly random 64-bit integer.
    public static func uint64() -> UInt64 {
        bytes(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// A `RandomNumberGenerator` backed by libsodium, for APIs of FieldSyncCore that take an injected generator.
public struct SodiumRandomNumberGenerator: RandomNumberGenerator, Sendable {
    /// Creates the generator.
    public init() { Sodium.ensureInitialized() }
    /// The next random 64 bits.
    public mutating func next() -> UInt64 { SecureRandom.uint64() }
}

/// Fills a Swift array's storage with zeros (best effort for plaintext copies of secrets).
func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { raw in
        if let base = raw.baseAddress { sodium_memzero(base, raw.count) }
    }
}

/// Checks that `bytes` has exactly `expected` elements, or throws `invalidLength` naming `what`.
@inline(__always)
func requireLength<C: Collection>(_ bytes: C, _ expected: Int, _ what: @autoclosure () -> String) throws(CryptoError) {
    guard bytes.count == expected else {
        throw CryptoError(.invalidLength, "\(what()) must be \(expected) bytes, got \(bytes.count)")
    }
}
