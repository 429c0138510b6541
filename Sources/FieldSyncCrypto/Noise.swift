import CSodium
import FieldSyncCore

// The Noise Protocol Framework (revision 34), specialised to the one protocol FieldSync speaks:
// Noise_XX_25519_ChaChaPoly_BLAKE2b. Pure: keys and ephemerals come in, bytes come out; nothing here
// touches the network or the clock. The FieldSync handshake (certificates in the payloads, prologue,
// checks) is built on top of `NoiseXX` in FieldSyncProtocol. Tested against the cacophony vectors.

/// Constants of `Noise_XX_25519_ChaChaPoly_BLAKE2b`.
public enum Noise {
    /// The protocol name hashed into the handshake.
    public static let protocolName = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
    /// BLAKE2b output length used by Noise (HASHLEN).
    public static let hashLength = 64
    /// BLAKE2b block length (BLOCKLEN), for HMAC.
    static let blockLength = 128
    /// Maximum Noise message length.
    public static let maxMessageLength = 65_535
    /// AEAD tag length.
    public static let tagLength = 16

    /// HASH(data) = BLAKE2b-512.
    static func hash(_ data: [UInt8]) -> [UInt8] {
        // BLAKE2b with a valid output length and no key cannot fail.
        try! BLAKE2b.hash(data, outputLength: hashLength)
    }

    /// HMAC-BLAKE2b (RFC 2104 with BLOCKLEN 128, HASHLEN 64), as the Noise spec defines it.
    static func hmac(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        var k = key.count > blockLength ? hash(key) : key
        k += [UInt8](repeating: 0, count: blockLength - k.count)
        let inner = hash(k.map { $0 ^ 0x36 } + data)
        let outer = hash(k.map { $0 ^ 0x5c } + inner)
        wipe(&k)
        return outer
    }

    /// HKDF(chaining_key, input_key_material, 2 or 3) of the Noise spec.
    static func hkdf(chainingKey: [UInt8], _ ikm: [UInt8], outputs: Int) -> [[UInt8]] {
        var temp = hmac(key: chainingKey, ikm)
        let o1 = hmac(key: temp, [0x01])
        let o2 = hmac(key: temp, o1 + [0x02])
        var out = [o1, o2]
        if outputs == 3 { out.append(hmac(key: temp, o2 + [0x03])) }
        wipe(&temp)
        return out
    }

    static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let p = $0.baseAddress { sodium_memzero(p, $0.count) } }
    }
}

/// Why a Noise operation failed. Every failure is fatal for the handshake or session it happened in.
public struct NoiseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Sendable {
        /// A message is shorter than its pattern requires, or longer than 65,535 bytes.
        case badLength
        /// AEAD authentication failed (tampered, truncated, replayed or wrong key).
        case decryptFailed
        /// A public key is a low-order point (the DH output is all zeros).
        case lowOrderKey
        /// A message was written or read out of turn, or after the handshake finished.
        case outOfTurn
        /// The nonce counter is exhausted; the session must end (or rekey before it).
        case nonceExhausted
    }

    /// The code.
    public var code: Code
    /// Detail for logs.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String { detail.isEmpty ? "noise: \(code.rawValue)" : "noise: \(code.rawValue): \(detail)" }
}

/// A Noise CipherState: a ChaCha20-Poly1305 key and a 64-bit nonce counter.
public struct NoiseCipherState: Sendable {
    private var key: SecretBytes?
    /// The next nonce.
    public private(set) var nonce: UInt64 = 0

    /// A cipher state holding `key` (nil: encryption is the identity, as before the first MixKey).
    /// Public for handshake stand-ins (the simulator's); real sessions get theirs from `NoiseXX.split()`.
    public init(key: SecretBytes?) { self.key = key }

    /// Whether a key is set.
    public var hasKey: Bool { key != nil }

    /// A copy of this cipher state whose next nonce is `nonce`: for tests that exercise the rekey
    /// boundary (2^20 messages) and nonce exhaustion without sending a million messages first.
    func settingNonce(_ nonce: UInt64) -> NoiseCipherState {
        var copy = self
        copy.nonce = nonce
        return copy
    }

    private static func nonceBytes(_ n: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 12)  // one array per frame (not three)
        for i in 0..<8 { b[4 + i] = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i))) }
        return b
    }

    /// EncryptWithAd: seals `plaintext` with the current nonce, then increments it.
    /// - Throws: `NoiseError.nonceExhausted` when the counter reaches 2^64 − 1.
    public mutating func encrypt(_ plaintext: [UInt8], associatedData: [UInt8] = []) throws(NoiseError) -> [UInt8] {
        guard let key else { return plaintext }
        guard nonce < UInt64.max else { throw NoiseError(.nonceExhausted) }
        let out: [UInt8]
        do {
            out = try ChaCha20Poly1305.seal(plaintext, key: key, nonce: Self.nonceBytes(nonce), associatedData: associatedData)
        } catch { throw NoiseError(.decryptFailed, "seal: \(error)") }
        nonce += 1
        return out
    }

    /// DecryptWithAd: opens `ciphertext` with the current nonce; increments it only on success.
    /// - Throws: `NoiseError.decryptFailed` on any authentication failure.
    public mutating func decrypt(_ ciphertext: [UInt8], associatedData: [UInt8] = []) throws(NoiseError) -> [UInt8] {
        guard let key else { return ciphertext }
        guard nonce < UInt64.max else { throw NoiseError(.nonceExhausted) }
        guard ciphertext.count >= Noise.tagLength else { throw NoiseError(.badLength, "ciphertext shorter than a tag") }
        let out: [UInt8]
        do {
            out = try ChaCha20Poly1305.open(ciphertext, key: key, nonce: Self.nonceBytes(nonce), associatedData: associatedData)
        } catch { throw NoiseError(.decryptFailed) }
        nonce += 1
        return out
    }

    /// Rekey: `k = ENCRYPT(k, 2^64 − 1, "", zeros(32))[0..<32]`. The nonce is unchanged.
    public mutating func rekey() {
        guard let key else { return }
        let zeros = [UInt8](repeating: 0, count: 32)
        // Sealing with a valid key and nonce cannot fail.
        var next = try! ChaCha20Poly1305.seal(zeros, key: key, nonce: Self.nonceBytes(.max), associatedData: [])
        self.key = SecretBytes(copying: next[0..<32])
        Noise.wipe(&next)
    }
}

/// The Noise SymmetricState.
struct NoiseSymmetricState: Sendable {
    var chainingKey: [UInt8]
    var h: [UInt8]
    var cipher = NoiseCipherState(key: nil)

    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        h = name.count <= Noise.hashLength ? name + [UInt8](repeating: 0, count: Noise.hashLength - name.count)
            : Noise.hash(name)
        chainingKey = h
    }

    mutating func mixKey(_ ikm: [UInt8]) {
        var out = Noise.hkdf(chainingKey: chainingKey, ikm, outputs: 2)
        chainingKey = out[0]
        cipher = NoiseCipherState(key: SecretBytes(copying: out[1][0..<32]))
        Noise.wipe(&out[1])
    }

    mutating func mixHash(_ data: [UInt8]) { h = Noise.hash(h + data) }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let c = try cipher.encrypt(plaintext, associatedData: h)
        mixHash(c)
        return c
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let p = try cipher.decrypt(ciphertext, associatedData: h)
        mixHash(ciphertext)
        return p
    }

    func split() -> (NoiseCipherState, NoiseCipherState) {
        var out = Noise.hkdf(chainingKey: chainingKey, [], outputs: 2)
        defer {
            Noise.wipe(&out[0])
            Noise.wipe(&out[1])
        }
        return (NoiseCipherState(key: SecretBytes(copying: out[0][0..<32])),
                NoiseCipherState(key: SecretBytes(copying: out[1][0..<32])))
    }
}

/// The XX handshake: `-> e`, `<- e, ee, s, es`, `-> s, se`.
///
/// ```swift
/// var alice = NoiseXX(initiator: true, staticKey: aliceKey, prologue: p)
/// var bob = NoiseXX(initiator: false, staticKey: bobKey, prologue: p)
/// let m1 = try alice.writeMessage(payload: [])
/// _ = try bob.readMessage(m1)
/// let m2 = try bob.writeMessage(payload: bobCertificate)
/// let bobCert = try alice.readMessage(m2)     // alice.remoteStatic is bob's key
/// let m3 = try alice.writeMessage(payload: aliceCertificate)
/// let aliceCert = try bob.readMessage(m3)
/// let (send, receive) = try alice.split()
/// ```
public struct NoiseXX: Sendable {
    /// Whether this side starts the handshake.
    public let isInitiator: Bool
    private let s: X25519.SecretKey
    private var e: X25519.SecretKey?
    private var presetEphemeral: X25519.SecretKey?
    /// The peer's static key, once received (after message 2 for the initiator, 3 for the responder).
    public private(set) var remoteStatic: X25519.PublicKey?
    private var re: X25519.PublicKey?
    private var symmetric: NoiseSymmetricState
    /// Messages processed so far (0 to 3).
    public private(set) var messageIndex = 0

    /// Starts a handshake.
    /// - Parameters:
    ///   - initiator: whether this side sends the first message.
    ///   - staticKey: this device's X25519 key (the one in its certificate).
    ///   - prologue: bytes both sides must agree on (protocol version and network id).
    ///   - ephemeral: a fixed ephemeral key, for test vectors only; normally generated.
    public init(initiator: Bool, staticKey: X25519.SecretKey, prologue: [UInt8], ephemeral: X25519.SecretKey? = nil) {
        isInitiator = initiator
        s = staticKey
        presetEphemeral = ephemeral
        symmetric = NoiseSymmetricState(protocolName: Noise.protocolName)
        symmetric.mixHash(prologue)
    }

    /// Whether all three messages have been processed.
    public var isComplete: Bool { messageIndex == 3 }

    /// The handshake hash: binds everything exchanged (usable as a session identifier and for channel binding).
    public var handshakeHash: [UInt8] { symmetric.h }

    private var myTurnToWrite: Bool { (messageIndex % 2 == 0) == isInitiator }

    private mutating func dh(_ secret: X25519.SecretKey, _ pub: X25519.PublicKey) throws(NoiseError) {
        do {
            let shared = try secret.sharedSecret(with: pub)
            var raw = shared.withUnsafeBytes { Array($0) }
            symmetric.mixKey(raw)
            Noise.wipe(&raw)
        } catch { throw NoiseError(.lowOrderKey, "\(error)") }
    }

    /// Writes the next handshake message carrying `payload` (encrypted from message 2 on).
    /// - Throws: `NoiseError.outOfTurn` if it is the peer's turn or the handshake is complete.
    public mutating func writeMessage(payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard messageIndex < 3, myTurnToWrite else { throw NoiseError(.outOfTurn, "write at message \(messageIndex)") }
        var out: [UInt8] = []
        switch messageIndex {
        case 0:
            let eph = presetEphemeral ?? X25519.SecretKey.generate()
            e = eph
            out += eph.publicKey.bytes
            symmetric.mixHash(eph.publicKey.bytes)
        case 1:
            let eph = presetEphemeral ?? X25519.SecretKey.generate()
            e = eph
            out += eph.publicKey.bytes
            symmetric.mixHash(eph.publicKey.bytes)
            try dh(eph, re!)  // ee
            out += try symmetric.encryptAndHash(s.publicKey.bytes)
            try dh(s, re!)  // es (responder: s with initiator's e)
        default:
            out += try symmetric.encryptAndHash(s.publicKey.bytes)
            try dh(s, re!)  // se (initiator: s with responder's e)
        }
        out += try symmetric.encryptAndHash(payload)
        guard out.count <= Noise.maxMessageLength else { throw NoiseError(.badLength, "message of \(out.count) bytes") }
        messageIndex += 1
        presetEphemeral = nil
        return out
    }

    /// Reads the next handshake message and returns its decrypted payload.
    /// - Throws: `NoiseError` for a message out of turn, too short or too long, a low-order key, or a
    ///   failed decryption (tampering, replay, wrong prologue). The handshake must then be abandoned.
    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard messageIndex < 3, !myTurnToWrite else { throw NoiseError(.outOfTurn, "read at message \(messageIndex)") }
        guard message.count <= Noise.maxMessageLength else { throw NoiseError(.badLength, "message too long") }
        var rest = ArraySlice(message)
        func take(_ n: Int) throws(NoiseError) -> [UInt8] {
            guard rest.count >= n else { throw NoiseError(.badLength, "message of \(message.count) bytes is too short") }
            defer { rest = rest.dropFirst(n) }
            return Array(rest.prefix(n))
        }
        func publicKey(_ bytes: [UInt8]) -> X25519.PublicKey { try! X25519.PublicKey(bytes: bytes) }
        switch messageIndex {
        case 0:
            let reBytes = try take(32)
            re = publicKey(reBytes)
            symmetric.mixHash(reBytes)
        case 1:
            let reBytes = try take(32)
            re = publicKey(reBytes)
            symmetric.mixHash(reBytes)
            try dh(e!, re!)  // ee
            let rsBytes = try symmetric.decryptAndHash(try take(32 + Noise.tagLength))
            remoteStatic = publicKey(rsBytes)
            try dh(e!, remoteStatic!)  // es (initiator: e with responder's s)
        default:
            let rsBytes = try symmetric.decryptAndHash(try take(32 + Noise.tagLength))
            remoteStatic = publicKey(rsBytes)
            try dh(e!, remoteStatic!)  // se (responder: e with initiator's s)
        }
        let payload = try symmetric.decryptAndHash(Array(rest))
        messageIndex += 1
        return payload
    }

    /// After the third message: the transport cipher states `(send, receive)` for this side.
    /// - Throws: `NoiseError.outOfTurn` before the handshake is complete.
    public func split() throws(NoiseError) -> (send: NoiseCipherState, receive: NoiseCipherState) {
        guard isComplete else { throw NoiseError(.outOfTurn, "split before the handshake completed") }
        let (c1, c2) = symmetric.split()
        return isInitiator ? (c1, c2) : (c2, c1)
    }
}
