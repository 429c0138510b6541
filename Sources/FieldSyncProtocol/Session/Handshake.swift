import FieldSyncCore
import FieldSyncCrypto

/// Why a session ended abnormally. Every case closes the connection; nothing the peer sent is kept
/// except changes that verified and were committed before the failure.
public struct SessionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong. Raw values are stable and appear in logs and the simulator's reports.
    public enum Code: String, Sendable {
        /// The peer speaks a protocol version this node does not.
        case unsupportedVersion
        /// Noise failed: wrong network id (prologue), tampering, replay, truncation, low-order key.
        case handshakeFailed
        /// The peer's certificate does not verify (unknown authority, expired, bad signature, ...), also
        /// when it expires during a session; or the peer refused this device's certificate as expired.
        case badCertificate
        /// The peer's certificate (or its issuer) is revoked; or the peer refused this device as revoked.
        case revoked
        /// The certificate's X25519 key is not the key the peer proved in the handshake.
        case keyMismatch
        /// The peer is this device.
        case selfConnection
        /// A frame or message is malformed, oversized, out of turn or undecryptable.
        case protocolViolation
        /// The peer sent a change that failed verification, or one by an author whose certificate it did
        /// not send and this node does not know.
        case badChange
        /// The peer sent changes of a log this node, or the peer itself, may not hold (`Entitlement`).
        case notEntitled
        /// The peer exceeded a limit (too many frames, batches, symbols or bytes).
        case limitExceeded
        /// A store error on this side (`SessionError.store` holds it).
        case storeFailed
        /// The connection closed before the session finished (a cut, the peer gone), or while a batch of
        /// a live session was in flight. Not the peer's fault as far as this side can tell; what was not
        /// acknowledged is offered again by the next session.
        case connectionClosed
    }

    /// The code.
    public var code: Code
    /// Detail for logs: at most `maxDetail` characters, control characters escaped (`LogText.bounded`),
    /// because details are often built from what an unauthenticated peer sent and end up in log lines.
    public var detail: String
    /// Most characters of `detail`.
    public static let maxDetail = 240

    /// The store's error behind a `storeFailed` (with its own code), nil otherwise.
    public var store: StoreError?
    /// The certificate check's own code behind a `badCertificate` or `revoked` that a check of the peer's
    /// certificate raised (`expired`, `notYetValid`, `unknownAuthority`, ...), nil otherwise: a responder
    /// tells an initiator refused at message 3 why only when it is revoked or outside its validity window
    /// (Protocols/handshake.md §4.1).
    public var certificate: IdentityError.Code?

    /// Creates an error; `detail` is bounded and escaped (`LogText.bounded`).
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = LogText.bounded(detail, max: Self.maxDetail)
    }

    /// A `storeFailed` error that keeps the store's typed error.
    public init(store error: StoreError) {
        self.init(.storeFailed, error.description)
        store = error
    }

    public var description: String { detail.isEmpty ? code.rawValue : "\(code.rawValue): \(detail)" }
}

/// Parameters both peers of a network share.
public struct NetworkParameters: Sendable, Equatable {
    /// The protocol version this implementation speaks.
    public static let protocolVersion: UInt8 = 1
    /// A network name (e.g. `longnan-police`): peers of different networks cannot complete a handshake.
    public var networkID: String

    /// Creates parameters.
    public init(networkID: String) { self.networkID = networkID }

    /// The Noise prologue: `"FieldSync" || u8 version || string networkID` (Protocols/handshake.md).
    public var prologue: [UInt8] {
        var w = ByteWriter()
        w.writeRaw(Array("FieldSync".utf8))
        w.writeByte(Self.protocolVersion)
        w.writeString(networkID)
        return w.bytes
    }
}

/// What `SyncSession` needs of a handshake. `SessionHandshake` (Noise XX) is the only one real nodes
/// use; the simulator substitutes a stand-in with messages of identical sizes and the same checks but
/// no X25519 work, for city-scale runs (docs/simulator.md).
public protocol SessionHandshaking {
    /// Whether the handshake is complete.
    var isComplete: Bool { get }
    /// Whether this side starts.
    var isInitiator: Bool { get }
    /// The handshake hash (a session id both sides share; keys reconciliation hashing).
    var handshakeHash: [UInt8] { get }
    /// The peer's verified certificate, once known.
    var peer: Certificate? { get }
    /// The chain the peer presented with its certificate (its issuing county authority's certificate,
    /// verified against the root), empty for a root-issued peer.
    var peerChain: [Certificate] { get }
    /// Whether it is this side's turn to write.
    var shouldWrite: Bool { get }
    /// The next handshake message this side must send.
    mutating func write() throws(SessionError) -> [UInt8]
    /// Reads a handshake message from the peer and checks what it carries.
    mutating func read(_ message: [UInt8], now: UInt64) throws(SessionError)
    /// After completion: the transport.
    func transport() throws(SessionError) -> NoiseTransport
}

extension SessionHandshaking {
    /// No chain unless the handshake keeps one.
    public var peerChain: [Certificate] { [] }
}

/// The FieldSync handshake: Noise XX with certificates in the encrypted payloads of messages 2 and 3,
/// checked against the trust store, the revocation list and the handshake's static key.
///
/// Message 1 (initiator → responder): Noise `e`, payload = `u8 version` (in clear, bound by the
/// transcript). Message 2: `e, ee, s, es`, payload = the responder's certificate followed by its chain
/// (encrypted). Message 3: `s, se`, payload = the initiator's certificate and chain (encrypted). The
/// chain is the issuing county authority's certificate, or nothing for a root-issued device
/// (Protocols/handshake.md §3).
public struct SessionHandshake: SessionHandshaking, Sendable {
    private var noise: NoiseXX
    private let identity: DeviceIdentity
    private let trust: TrustStore
    /// The peer's verified certificate, once known.
    public private(set) var peer: Certificate?
    /// The chain the peer presented (verified), empty for a root-issued peer.
    public private(set) var peerChain: [Certificate] = []

    /// Starts a handshake.
    public init(initiator: Bool, identity: DeviceIdentity, trust: TrustStore, network: NetworkParameters,
                ephemeral: X25519.SecretKey? = nil) {
        noise = NoiseXX(initiator: initiator, staticKey: identity.agreementKey, prologue: network.prologue, ephemeral: ephemeral)
        self.identity = identity
        self.trust = trust
    }

    /// Whether the handshake is complete.
    public var isComplete: Bool { noise.isComplete }
    /// Whether this side starts.
    public var isInitiator: Bool { noise.isInitiator }
    /// The handshake hash (a session id both sides share).
    public var handshakeHash: [UInt8] { noise.handshakeHash }

    /// The next handshake message this side must send, if it is its turn.
    public mutating func write() throws(SessionError) -> [UInt8] {
        let payload: [UInt8]
        switch noise.messageIndex {
        case 0: payload = [NetworkParameters.protocolVersion]
        default: payload = Self.certificatePayload(identity.certificate, chain: presentedChain)
        }
        do { return try noise.writeMessage(payload: payload) } catch {
            throw SessionError(.handshakeFailed, error.description)
        }
    }

    /// The chain this side presents: the identity's (its keystore's), or else the issuing authority's
    /// certificate as the trust store knows it.
    private var presentedChain: [Certificate] {
        let own = identity.presentedChain
        guard own.isEmpty, identity.certificate.issuer != trust.rootID, let a = trust.authorities[identity.certificate.issuer] else { return own }
        return [a]
    }

    /// Whether it is this side's turn to write.
    public var shouldWrite: Bool { !noise.isComplete && (noise.messageIndex % 2 == 0) == noise.isInitiator }

    /// Reads a handshake message from the peer and checks what it carries.
    /// - Parameter now: the wall clock (ms since the Unix epoch) for certificate validity.
    public mutating func read(_ message: [UInt8], now: UInt64) throws(SessionError) {
        let index = noise.messageIndex
        let payload: [UInt8]
        do { payload = try noise.readMessage(message) } catch {
            throw SessionError(.handshakeFailed, error.description)
        }
        let trust = self.trust
        var chain: [Certificate] = []
        if let cert = try Self.check(payload: payload, ofMessage: index, remoteStatic: noise.remoteStatic?.bytes, own: identity.id,
                                     verify: { c, presented throws(IdentityError) in
                                         try trust.verify(c, chain: presented, now: now)
                                         chain = presented
                                     }) {
            peer = cert
            peerChain = chain
        }
    }

    /// The payload of handshake messages 2 and 3: the certificate, then its chain (at most one authority
    /// certificate), each self-delimiting, concatenated.
    public static func certificatePayload(_ certificate: Certificate, chain: [Certificate]) -> [UInt8] {
        var w = ByteWriter()
        certificate.encode(to: &w)
        for c in chain { c.encode(to: &w) }
        return w.bytes
    }

    /// Most chain certificates a handshake payload may carry (the issuing authority's).
    public static let maxChainLength = 1

    /// The checks on what a handshake message carries (Protocols/handshake.md): message 0 must offer this
    /// version; messages 1 and 2 carry a certificate and its chain that must decode, pass `verify` (chain,
    /// validity, revocation), name the handshake's static key, and not be this device's own. Shared with
    /// the simulator's size-identical stand-in, which verifies certificates through its own cache.
    /// - Returns: the peer's certificate, or nil for message 0.
    public static func check(payload: [UInt8], ofMessage index: Int, remoteStatic: [UInt8]?, own: DeviceID,
                             verify: (Certificate, [Certificate]) throws(IdentityError) -> Void) throws(SessionError) -> Certificate? {
        if index == 0 {
            guard payload == [NetworkParameters.protocolVersion] else {
                throw SessionError(.unsupportedVersion, "peer offers \(LogText.hexPrefix(payload)), this node speaks \(NetworkParameters.protocolVersion)")
            }
            return nil
        }
        let cert: Certificate
        var chain: [Certificate] = []
        do {
            var r = ByteReader(payload)
            cert = try Certificate(from: &r)
            while !r.isAtEnd {
                guard chain.count < maxChainLength else {
                    throw DecodingError(.invalidValue, at: r.offset, "more than \(maxChainLength) chain certificate(s)")
                }
                chain.append(try Certificate(from: &r))
            }
        } catch {
            throw SessionError(.protocolViolation, "certificate does not decode: \(error)")
        }
        do { try verify(cert, chain) } catch {
            var e = SessionError(error.code == .revoked ? .revoked : .badCertificate, error.description)
            e.certificate = error.code
            throw e
        }
        guard cert.agreementKey.bytes == remoteStatic else {
            throw SessionError(.keyMismatch, "certificate of \(cert.subject) names another X25519 key than the handshake's")
        }
        guard cert.subject != own else { throw SessionError(.selfConnection, "connected to itself") }
        return cert
    }

    /// After completion: the transport.
    public func transport() throws(SessionError) -> NoiseTransport {
        do {
            let (s, r) = try noise.split()
            return NoiseTransport(send: s, receive: r)
        } catch { throw SessionError(.protocolViolation, error.description) }
    }
}

/// Noise transport with FieldSync's rekey schedule: each direction rekeys after every
/// `rekeyInterval` messages, long before the 64-bit nonce could run out (Protocols/handshake.md).
public struct NoiseTransport: Sendable {
    /// Messages per direction between rekeys.
    public static let rekeyInterval: UInt64 = 1 << 20
    /// Largest plaintext per transport message (65,535 minus the tag).
    public static let maxPlaintext = Noise.maxMessageLength - Noise.tagLength

    private var send: NoiseCipherState
    private var receive: NoiseCipherState

    /// A transport from the two cipher states of a completed handshake.
    public init(send: NoiseCipherState, receive: NoiseCipherState) {
        self.send = send
        self.receive = receive
    }

    /// Encrypts one message (≤ `maxPlaintext` bytes).
    /// - Throws: `limitExceeded` for a longer message (a session fails; the process does not stop: a
    ///   reconciliation list too large for one message goes in parts, but one log of thousands of
    ///   disjoint intervals can still outgrow it, Protocols/sync-reconciliation.md §6.4),
    ///   `protocolViolation` if encryption fails.
    public mutating func seal(_ plaintext: [UInt8]) throws(SessionError) -> [UInt8] {
        guard plaintext.count <= Self.maxPlaintext else {
            throw SessionError(.limitExceeded, "message of \(plaintext.count) bytes exceeds the transport's \(Self.maxPlaintext)")
        }
        do {
            let out = try send.encrypt(plaintext)
            if send.nonce % Self.rekeyInterval == 0 { send.rekey() }
            return out
        } catch { throw SessionError(.protocolViolation, error.description) }
    }

    /// Decrypts one message.
    public mutating func open(_ ciphertext: [UInt8]) throws(SessionError) -> [UInt8] {
        do {
            let out = try receive.decrypt(ciphertext)
            if receive.nonce % Self.rekeyInterval == 0 { receive.rekey() }
            return out
        } catch { throw SessionError(.protocolViolation, "transport message does not decrypt: \(error)") }
    }
}

/// Text built from what a peer sent, made safe for one log line: bounded in length, with control
/// characters (newlines, escape sequences) escaped so a peer cannot forge or garble log lines.
public enum LogText {
    /// `text` with control characters escaped as `\u{XX}`, cut to at most `max`
    /// characters (a cut text ends with `…(N more)`).
    public static func bounded(_ text: String, max: Int) -> String {
        var out = ""
        var taken = 0
        var total = 0
        for ch in text.unicodeScalars {
            total += 1
            guard taken < max else { continue }
            taken += 1
            if ch.value < 0x20 || ch.value == 0x7F || (0x80..<0xA0).contains(ch.value) {
                out += "\\u{\(String(ch.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(ch)
            }
        }
        if total > taken { out += "…(\(total - taken) more)" }
        return out
    }

    /// At most the first `limit` bytes of `bytes` in hex with the total length, e.g. `ffff00… (65503 B)`.
    public static func hexPrefix(_ bytes: [UInt8], limit: Int = 8) -> String {
        let shown = Hex.encode(Array(bytes.prefix(limit)))
        return "\(shown)\(bytes.count > limit ? "…" : "") (\(bytes.count) B)"
    }
}
