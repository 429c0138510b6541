import FieldSyncCore
import Testing

@testable import FieldSyncCrypto

@Suite struct IdentityTests {
    @Test func deviceIDIsTruncatedBLAKE2bOfKey() throws {
        let k = try Ed25519.SecretKey(seed: World.seed(9))
        let id = DeviceID(signingKey: k.publicKey)
        #expect(id.raw.bytes == Array(try BLAKE2b.hash(k.publicKey.bytes, outputLength: 32)[0..<16]))
    }

    @Test func rootAndCountyIssuedCertificatesVerify() throws {
        let w = try World()
        let a = try Device(10, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.root)
        let b = try Device(11, role: .station, scopes: ["longnan/wudu/station-017"], by: w.county)
        try w.trust.verify(a.certificate, now: World.t0)
        try w.trust.verify(b.certificate, now: World.t0)
        // Round trip through the canonical encoding.
        let bytes = b.certificate.canonicalBytes
        #expect(try Certificate(canonicalBytes: bytes) == b.certificate)
        let r = try EnrollmentRequest(signingKey: a.signing, agreementKey: a.agreement.publicKey, requestedRole: .backpack,
                                      requestedScopes: [World.scope("longnan")], createdAt: 5, label: "x")
        #expect(try EnrollmentRequest(canonicalBytes: r.canonicalBytes) == r)
        try r.verify()
    }

    @Test func expiredAndNotYetValid() throws {
        let w = try World()
        let d = try Device(12, role: .backpack, scopes: ["longnan/wudu"], by: w.root, notBefore: World.t0, notAfter: World.t0 + World.day)
        try w.trust.verify(d.certificate, now: World.t0 - 60_000)  // within the 5-minute skew
        #expect(identityCode { try w.trust.verify(d.certificate, now: World.t0 + 2 * World.day) } == .expired)
        #expect(identityCode { try w.trust.verify(d.certificate, now: World.t0 - World.day) } == .notYetValid)
    }

    @Test func unknownAuthority() throws {
        let w = try World()
        let rogue = Authority(root: try Ed25519.SecretKey(seed: World.seed(77)))
        let d = try Device(13, role: .backpack, scopes: ["longnan"], by: rogue)
        #expect(identityCode { try w.trust.verify(d.certificate, now: World.t0) } == .unknownAuthority)
        // A county authority certificate from a rogue root is refused too.
        var t = w.trust
        #expect(identityCode { try t.addAuthority(w.county.certificate!, now: World.t0) } == nil)
        let other = TrustStore(root: rogue.signingKey.publicKey)
        t = other
        #expect(identityCode { try t.addAuthority(w.county.certificate!, now: World.t0) } == .unknownAuthority)
    }

    @Test func scopeEscalationByCountyAuthority() throws {
        let w = try World()
        #expect(identityCode { _ = try Device(14, role: .backpack, scopes: ["longnan/chengxian"], by: w.county) } == .scopeEscalation)
        #expect(identityCode { _ = try Device(14, role: .backpack, scopes: ["longnan"], by: w.county) } == .scopeEscalation)
        // A certificate forged past the issuer-side check (signed by the county key directly) is refused by verifiers.
        let k = try Ed25519.SecretKey(seed: World.seed(14))
        let forged = try Certificate(kind: .device, signingKey: k.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                     role: .backpack, scopes: [World.scope("longnan")], notBefore: World.t0, notAfter: World.t0 + World.day,
                                     serial: 1, issuer: w.county.signingKey)
        #expect(identityCode { try w.trust.verify(forged, now: World.t0) } == .scopeEscalation)
    }

    @Test func roleEscalationByCountyAuthority() throws {
        let w = try World()
        #expect(identityCode { _ = try Device(15, role: .hq, scopes: ["longnan/wudu"], by: w.county) } == .roleEscalation)
        #expect(identityCode { _ = try Device(15, role: .county, scopes: ["longnan/wudu"], by: w.county) } == .roleEscalation)
        let k = try Ed25519.SecretKey(seed: World.seed(15))
        let forged = try Certificate(kind: .device, signingKey: k.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                     role: .hq, scopes: [World.scope("longnan/wudu")], notBefore: World.t0, notAfter: World.t0 + World.day,
                                     serial: 1, issuer: w.county.signingKey)
        #expect(identityCode { try w.trust.verify(forged, now: World.t0) } == .roleEscalation)
        // Only the root may delegate (depth at most 2).
        let req = try EnrollmentRequest(signingKey: k, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                        requestedScopes: [World.scope("longnan/wudu")], createdAt: 0, label: "")
        #expect(identityCode { _ = try w.county.delegate(req, scopes: [World.scope("longnan/wudu")], notBefore: 0, notAfter: 1, serial: 1) } == .roleEscalation)
    }

    @Test func chainTooDeep() throws {
        let w = try World()
        // A "sub-authority" certificate signed by the county authority is refused.
        let k = try Ed25519.SecretKey(seed: World.seed(16))
        let sub = try Certificate(kind: .authority, signingKey: k.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                  role: .county, scopes: [World.scope("longnan/wudu")], notBefore: World.t0, notAfter: World.t0 + World.day,
                                  serial: 1, issuer: w.county.signingKey)
        var t = w.trust
        #expect(identityCode { try t.addAuthority(sub, now: World.t0) } == .chainTooDeep)
    }

    @Test func badSignatureAndDeviceIDMismatch() throws {
        let w = try World()
        let d = try Device(17, role: .backpack, scopes: ["longnan/wudu"], by: w.root)
        var bytes = d.certificate.canonicalBytes
        bytes[bytes.count - 1] ^= 1  // signature
        #expect(identityCode { try w.trust.verify(try Certificate(canonicalBytes: bytes), now: World.t0) } == .badSignature)
        bytes = d.certificate.canonicalBytes
        bytes[3] ^= 1  // first byte of the subject id
        #expect(identityCode { try w.trust.verify(try Certificate(canonicalBytes: bytes), now: World.t0) } == .deviceIDMismatch)
        // An enrollment request whose self-signature fails.
        let r = try EnrollmentRequest(signingKey: d.signing, agreementKey: d.agreement.publicKey, requestedRole: .backpack,
                                      requestedScopes: [World.scope("longnan")], createdAt: 5, label: "x")
        var rb = r.canonicalBytes
        rb[rb.count - 70] ^= 1  // inside the label/createdAt region? flip a signed byte
        let tampered = try? EnrollmentRequest(canonicalBytes: rb)
        if let tampered { #expect(identityCode { try tampered.verify() } != nil) }
    }

    @Test func revokedDeviceRefused() throws {
        var w = try World()
        let d = try Device(18, role: .backpack, scopes: ["longnan/wudu"], by: w.county)
        let rev = try Revocation(certificate: d.certificate, revokedAt: HLCTimestamp(milliseconds: World.t0, counter: 0),
                                 reason: .lost, note: "lost on patrol", by: w.county)
        try w.trust.addRevocation(rev)
        #expect(identityCode { try w.trust.verify(d.certificate, now: World.t0) } == .revoked)
    }

    @Test func decoderIsTotalOnTruncationsAndFlips() throws {
        let w = try World()
        let d = try Device(19, role: .backpack, scopes: ["longnan/wudu", "longnan/wudu/station-017"], by: w.root)
        let bytes = d.certificate.canonicalBytes
        for n in 0..<bytes.count {
            #expect(throws: DecodingError.self) { _ = try Certificate(canonicalBytes: bytes.prefix(n)) }
        }
        for i in 0..<bytes.count {
            var b = bytes
            b[i] ^= 0xFF
            // Either a typed decoding error or a certificate that fails verification.
            if let c = try? Certificate(canonicalBytes: b) {
                #expect(identityCode { try w.trust.verify(c, now: World.t0) } != nil)
            }
        }
    }
}
