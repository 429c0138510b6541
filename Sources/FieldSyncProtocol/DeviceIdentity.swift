import FieldSyncCore
import FieldSyncCrypto

/// A device's own identity: its keys and certificate.
public struct DeviceIdentity: Sendable {
    /// Ed25519 signing key (authors changes).
    public let signingKey: Ed25519.SecretKey
    /// X25519 key (Noise static key; epoch keys are sealed to it).
    public let agreementKey: X25519.SecretKey
    /// The certificate an authority issued for these keys: the newest one (after a renewal, the renewed
    /// one). It is the certificate presented in handshakes.
    public let certificate: Certificate
    /// The issuing county authority's certificate(s) when the issuer is not the root (the keystore's
    /// chain, Protocols/identity.md §6); empty for a root-issued device. The handshake presents the
    /// newest one whose key issued `certificate`.
    public let chain: [Certificate]

    /// Bundles an identity.
    public init(signingKey: Ed25519.SecretKey, agreementKey: X25519.SecretKey, certificate: Certificate, chain: [Certificate] = []) {
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.certificate = certificate
        self.chain = chain
    }

    /// The chain presented with `certificate` in a handshake: the newest authority certificate of its
    /// issuer, or nothing for a root-issued certificate.
    public var presentedChain: [Certificate] {
        let issuers = chain.filter { $0.kind == .authority && $0.subject == certificate.issuer }
        guard let newest = issuers.max(by: { $1.isNewer(than: $0) }) else { return [] }
        return [newest]
    }

    /// The device id.
    public var id: DeviceID { certificate.subject }
}
