import FieldSyncCore
import FieldSyncCrypto

/// Seals records at rest with the node's 32-byte local storage key (from its keystore):
/// `nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, record bytes, ad = "fieldsync/v1/record" || id)`.
///
/// Binding the record id as associated data means a sealed row moved onto another record's row fails
/// to open. The key never touches disk in clear; it lives in `SecretBytes`, zeroed when released.
public struct StorageKeySealer: RecordSealer {
    private let key: SecretBytes
    private static let label = Array("fieldsync/v1/record".utf8)

    /// A sealer using `key` (32 bytes).
    /// - Throws: `CryptoError` if the key is not 32 bytes.
    public init(key: SecretBytes) throws {
        guard key.count == XChaCha20Poly1305.keyLength else {
            throw CryptoError(.invalidLength, "storage key must be \(XChaCha20Poly1305.keyLength) bytes")
        }
        self.key = key
    }

    /// A sealer whose key is derived from the device's signing key: `BLAKE2b-256(key = the Ed25519
    /// seed, "fieldsync/v1/storage-key")` (docs/node.md, "Keys"). The store then opens only with the
    /// device's keystore, and no key file sits next to it.
    /// - Throws: `CryptoError` from the hash.
    public init(deviceSigningKey: Ed25519.SecretKey) throws {
        var raw = try BLAKE2b.hash(Array("fieldsync/v1/storage-key".utf8), outputLength: 32, key: deviceSigningKey.seed)
        defer { raw.withUnsafeMutableBytes { p in for i in p.indices { p[i] = 0 } } }
        try self.init(key: SecretBytes(copying: raw))
    }

    public func seal(_ plaintext: [UInt8], id: RecordID) throws -> [UInt8] {
        let nonce = SecureRandom.bytes(XChaCha20Poly1305.nonceLength)
        return nonce + (try XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, associatedData: Self.label + id.raw.bytes))
    }

    public func open(_ sealed: [UInt8], id: RecordID) throws -> [UInt8] {
        guard sealed.count >= XChaCha20Poly1305.nonceLength + XChaCha20Poly1305.tagLength else {
            throw CryptoError(.invalidLength, "sealed record too short")
        }
        let nonce = Array(sealed.prefix(XChaCha20Poly1305.nonceLength))
        return try XChaCha20Poly1305.open(Array(sealed.dropFirst(XChaCha20Poly1305.nonceLength)), key: key, nonce: nonce,
                                          associatedData: Self.label + id.raw.bytes)
    }
}
