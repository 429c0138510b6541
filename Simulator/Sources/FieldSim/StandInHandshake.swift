// A stand-in for the Noise XX handshake, for city-scale runs: the same three messages with the same
// sizes, the same randomness drawn, the same certificate checks and error codes, but no X25519 or
// Ed25519 work. It is not secure (anyone can compute its keys) and exists only in the simulator.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

/// Which crypto a `fieldsync` run uses (printed and written to the summary).
public enum CryptoMode: String, CaseIterable, Sendable {
    /// Everything real: Noise XX handshakes, every change verified and opened by every receiver.
    case real
    /// Real handshakes; each change's signature verified and payload opened once per run, shared by
    /// every node through a `VerificationCache` (which also shares change bodies between stores).
    case cached
    /// `cached`, plus `StandInHandshake` instead of Noise XX (size-identical, no key exchange).
    case standIn = "stand-in"
}

/// Checks certificates once per run for the stand-in handshakes (the real one verifies the issuer's
/// signature in every handshake).
final class CertificateCache {
    private var checked: [[UInt8]: VerifiedCertificate] = [:]  // signature -> result
    func certified(_ c: Certificate, trust: TrustStore) throws(IdentityError) -> VerifiedCertificate {
        if let v = checked[c.signature], v.certificate == c { return v }
        let v = try trust.certified(c)
        checked[c.signature] = v
        return v
    }
}

/// Noise XX's message layout without its cryptography (see the file comment). Message 1:
/// `e (32 random bytes) || version`; message 2: `e || s (32) || tag (16) || certificate || tag`;
/// message 3: `s || tag || certificate || tag`, as in `NoiseXX`. A tag is a BLAKE2b MAC of the
/// transcript so far, so a corrupted or truncated message, or another network's prologue, fails the
/// handshake as the real one does (`handshakeFailed`). The transport keys are derived from the
/// transcript hash; the transport itself is the real ChaCha20-Poly1305 one.
struct StandInHandshake: SessionHandshaking {
    private let initiator: Bool
    private let identity: DeviceIdentity
    private let trust: TrustStore
    private let certificates: CertificateCache
    private var h: [UInt8]
    private var index = 0
    private var remoteStatic: [UInt8]?
    private let ephemeral: [UInt8]
    private(set) var peer: Certificate?

    /// - Parameter ephemeral: the 32 bytes that stand in for this side's ephemeral key (drawn from the
    ///   simulation's seeded generator, so same-seed runs send the same bytes).
    init(initiator: Bool, identity: DeviceIdentity, trust: TrustStore, network: NetworkParameters, certificates: CertificateCache,
         ephemeral: [UInt8]) {
        precondition(ephemeral.count == 32)
        self.ephemeral = ephemeral
        self.initiator = initiator
        self.identity = identity
        self.trust = trust
        self.certificates = certificates
        h = try! BLAKE2b.hash(network.prologue, outputLength: 64)
    }

    var isComplete: Bool { index == 3 }
    var isInitiator: Bool { initiator }
    var handshakeHash: [UInt8] { h }
    var shouldWrite: Bool { index < 3 && (index % 2 == 0) == initiator }

    private func tag(_ block: ArraySlice<UInt8>) -> [UInt8] { try! BLAKE2b.hash(h + block, outputLength: 16) }
    private mutating func mix(_ message: [UInt8]) { h = try! BLAKE2b.hash(h + message, outputLength: 64) }

    mutating func write() throws(SessionError) -> [UInt8] {
        guard shouldWrite else { throw SessionError(.handshakeFailed, "noise: outOfTurn: write at message \(index)") }
        var out: [UInt8] = []
        func block(_ b: [UInt8]) {
            let t = tag(out[...] + b)
            out += b + t
        }
        switch index {
        case 0:
            out = ephemeral + [NetworkParameters.protocolVersion]  // the real one sends its ephemeral key here
        case 1:
            out = ephemeral
            block(identity.agreementKey.publicKey.bytes)
            block(SessionHandshake.certificatePayload(identity.certificate, chain: identity.presentedChain))
        default:
            block(identity.agreementKey.publicKey.bytes)
            block(SessionHandshake.certificatePayload(identity.certificate, chain: identity.presentedChain))
        }
        mix(out)
        index += 1
        return out
    }

    mutating func read(_ message: [UInt8], now: UInt64) throws(SessionError) {
        guard index < 3, !shouldWrite else { throw SessionError(.handshakeFailed, "noise: outOfTurn: read at message \(index)") }
        // Built only when thrown: a `SessionError` bounds and escapes its text (3 % of a run when made eagerly).
        func short() -> SessionError { SessionError(.handshakeFailed, "noise: badLength: message of \(message.count) bytes is too short") }
        let payload: [UInt8]
        switch index {
        case 0:
            guard message.count >= 32 else { throw short() }
            payload = Array(message[32...])
        default:
            let start = index == 1 ? 32 : 0
            guard message.count >= start + 48 + 16 else { throw short() }
            let s = message[start..<start + 32]
            let certEnd = message.count - 16
            guard tag(message[0..<start + 32]) == Array(message[start + 32..<start + 48]),
                  tag(message[0..<certEnd]) == Array(message[certEnd...])
            else { throw SessionError(.handshakeFailed, "noise: decryptFailed") }
            remoteStatic = Array(s)
            payload = Array(message[start + 48..<certEnd])
        }
        mix(message)
        index += 1
        // `TrustStore.verify(_:now:)` with the signature check done once per run.
        let (certificates, trust) = (self.certificates, self.trust)
        if let cert = try SessionHandshake.check(payload: payload, ofMessage: index - 1, remoteStatic: remoteStatic, own: identity.id,
                                                 verify: { c, chain throws(IdentityError) in
            guard chain.isEmpty else { try trust.verify(c, chain: chain, now: now); return }
            try certificates.certified(c, trust: trust).checkValidity(at: now, skew: trust.clockSkewMilliseconds)
            if let r = trust.revocation(of: c) {
                throw IdentityError(.revoked, "\(r.device) revoked at \(r.revokedAt) (\(r.reason)) by \(r.issuer)")
            }
        }) {
            peer = cert
        }
    }

    func transport() throws(SessionError) -> NoiseTransport {
        guard isComplete else { throw SessionError(.protocolViolation, "noise: outOfTurn: split before the handshake completed") }
        let k1 = SecretBytes(copying: try! BLAKE2b.hash(h + [1], outputLength: 32))
        let k2 = SecretBytes(copying: try! BLAKE2b.hash(h + [2], outputLength: 32))
        return initiator ? NoiseTransport(send: NoiseCipherState(key: k1), receive: NoiseCipherState(key: k2))
            : NoiseTransport(send: NoiseCipherState(key: k2), receive: NoiseCipherState(key: k1))
    }
}
