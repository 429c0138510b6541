// When the certificates this device's sessions depend on run out: its own, and its issuer's when a county
// authority enrolled it. Peers check both at every session (Protocols/handshake.md §4, Protocols/sync.md
// §4.2): a device whose county authority's certificate lapsed is refused as surely as one whose own did,
// so `status`, the daemon's log and its metrics warn before either ends.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

/// The lifetimes of the certificates a device's sessions depend on.
public struct CertificateChainLifetime: Sendable, Equatable {
    /// One certificate of the chain.
    public struct Link: Sendable, Equatable {
        /// `device` (this device's certificate) or `issuer` (the county authority that enrolled it).
        public var role: String
        /// The certificate's subject (the device, or the authority's key id).
        public var subject: DeviceID
        /// The end of its validity (ms since the Unix epoch).
        public var notAfter: UInt64
    }

    /// Warn this many days before a certificate of the chain runs out (a relay box renewed yearly gets a
    /// month's notice).
    public static let warnDays: Int64 = 30

    /// This device's certificate, then its issuer's (county-issued devices only).
    public var links: [Link]

    /// The chain of `identity`: its certificate, and the newest certificate of its issuing county authority
    /// this node knows (the keystore's chain or the trust store, whichever is newer); a root-issued device
    /// has only its own (the root key does not expire).
    public init(identity: DeviceIdentity, trust: TrustStore) {
        let cert = identity.certificate
        links = [Link(role: "device", subject: cert.subject, notAfter: cert.notAfter)]
        let issuer = cert.issuer
        guard issuer != trust.rootID else { return }
        let known = identity.chain.filter { $0.kind == .authority && $0.subject == issuer } + [trust.authorities[issuer]].compactMap { $0 }
        if let newest = known.max(by: { $1.isNewer(than: $0) }) {
            links.append(Link(role: "issuer", subject: issuer, notAfter: newest.notAfter))
        }
    }

    /// The link that ends first (the device's own on a tie).
    public var earliest: Link { links.min { $0.notAfter < $1.notAfter }! }

    /// The issuer's link, for a county-issued device whose authority certificate this node knows.
    public var issuer: Link? { links.first { $0.role == "issuer" } }

    /// Whole days from `now` to `notAfter` (negative once passed).
    public static func daysLeft(_ notAfter: UInt64, now: UInt64) -> Int64 { (Int64(notAfter) - Int64(now)) / 86_400_000 }

    /// The warning for one link, or nil when more than `warnDays` days are left. `format` renders a time.
    public static func warning(_ link: Link, now: UInt64, format: (UInt64) -> String) -> String? {
        let days = daysLeft(link.notAfter, now: now)
        let what = link.role == "device" ? "this device's certificate"
            : "the certificate of this device's issuer (county authority \(link.subject))"
        let renew = link.role == "device" ? "renew it (fieldsync authority renew, then device import; docs/enrollment.md)"
            : "HQ renews the county authority (fieldsync authority renew at HQ, then authority import on the county authority), "
            + "then this device imports the new authority certificate (device import ... --authority; docs/enrollment.md)"
        if link.notAfter <= now { return "\(what) expired at \(format(link.notAfter)); peers refuse this device's sessions: \(renew)" }
        guard days < warnDays else { return nil }
        return "\(what) expires at \(format(link.notAfter)), in \(days) day(s); peers will refuse this device's sessions then: \(renew)"
    }

    /// The warnings of every link, device first.
    public func warnings(now: UInt64, format: (UInt64) -> String) -> [String] {
        links.compactMap { Self.warning($0, now: now, format: format) }
    }
}
