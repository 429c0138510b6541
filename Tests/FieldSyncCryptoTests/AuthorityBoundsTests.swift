import FieldSyncCore
import Testing

@testable import FieldSyncCrypto

/// Issue 12 item 2 and attack cases 26 and 33 (docs/threat-model.md, attack-case table): who may revoke whom
/// (Protocols/identity.md §5), checked from the revocation and the root key alone, and grants by an
/// issuer outside its delegation.
@Suite struct AuthorityBoundsTests {
    let w: World
    /// A second county authority, for longnan/cheng.
    let cheng: Authority
    /// Devices: one of Wudu county, one of Cheng county, one enrolled by the root inside Wudu's scope.
    let wuduDevice: Device, chengDevice: Device, hqStation: Device
    let at = HLCTimestamp(milliseconds: World.t0, counter: 0)

    init() throws {
        w = try World()
        let key = try Ed25519.SecretKey(seed: World.seed(4))
        let req = try EnrollmentRequest(signingKey: key, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                        requestedScopes: [World.scope("longnan/cheng")], createdAt: World.t0, label: "cheng county")
        cheng = try Authority(delegated: key, certificate: try w.root.delegate(req, scopes: [World.scope("longnan/cheng")],
                                                                             notBefore: World.t0 - World.day, notAfter: World.t0 + 365 * World.day,
                                                                             serial: 101))
        wuduDevice = try Device(60, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        chengDevice = try Device(61, role: .backpack, scopes: ["longnan/cheng"], by: cheng)
        hqStation = try Device(62, role: .station, scopes: ["longnan/wudu/station-017"], by: w.root)
    }

    /// What a rogue county (or a tampered file) would sign: any target, any carried certificates.
    func forged(_ device: DeviceID, serial: UInt64, carrying c: Certificate?, by a: Authority, at t: HLCTimestamp? = nil) throws -> Revocation {
        try Revocation(unchecked: device, serial: serial, revokedAt: t ?? at, reason: .compromised, note: "", by: a,
                       issuerCertificate: a.certificate, revokedCertificate: c)
    }

    /// The table of Protocols/identity.md §5, row by row, verified by a node that knows only the root key.
    @Test func whoMayRevokeWhom() throws {
        let rootOnly = TrustStore(root: w.root.signingKey.publicKey)
        let county = w.county.certificate!
        // The county signs a device certificate for the root's own key, and for the HQ station's key.
        let forRoot = try Certificate(kind: .device, signingKey: w.root.signingKey.publicKey, agreementKey: wuduDevice.agreement.publicKey,
                                      role: .backpack, scopes: [World.scope("longnan/wudu")], notBefore: World.t0, notAfter: World.t0 + World.day,
                                      serial: 9, issuer: w.county.signingKey)
        let deviceKey = Authority(root: wuduDevice.signing)  // a device key posing as an issuer
        let rows: [(String, Revocation, IdentityError.Code?)] = [
            ("root revokes a root-issued device", try Revocation(certificate: hqStation.certificate, revokedAt: at, reason: .lost, note: "", by: w.root), nil),
            ("root revokes a county-issued device", try Revocation(device: wuduDevice.id, serial: 0, revokedAt: at, reason: .lost, note: "", by: w.root), nil),
            ("root revokes a county authority", try Revocation(certificate: county, revokedAt: at, reason: .compromised, note: "", by: w.root), nil),
            ("county revokes a device it issued", try Revocation(certificate: wuduDevice.certificate, revokedAt: at, reason: .stolen, note: "", by: w.county), nil),
            ("root revokes itself", try Revocation(unchecked: w.root.keyID, serial: 0, revokedAt: at, reason: .other, note: "", by: w.root,
                                                   issuerCertificate: nil, revokedCertificate: nil), .outsideDelegation),
            ("county revokes the root", try forged(w.root.keyID, serial: 9, carrying: forRoot, by: w.county), .outsideDelegation),
            ("county revokes a root-issued device in its scope", try forged(hqStation.id, serial: hqStation.certificate.serial,
                                                                          carrying: hqStation.certificate, by: w.county), .outsideDelegation),
            ("county revokes another county's device", try forged(chengDevice.id, serial: chengDevice.certificate.serial,
                                                                  carrying: chengDevice.certificate, by: w.county), .outsideDelegation),
            ("county revokes another county authority", try forged(cheng.keyID, serial: 101, carrying: cheng.certificate, by: w.county),
             .outsideDelegation),
            ("county revokes itself", try forged(w.county.keyID, serial: 100, carrying: county, by: w.county), .outsideDelegation),
            ("county names no certificate", try forged(wuduDevice.id, serial: wuduDevice.certificate.serial, carrying: nil, by: w.county),
             .outsideDelegation),
            ("a device key signs a revocation", try Revocation(device: hqStation.id, serial: 0, revokedAt: at, reason: .lost, note: "",
                                                              by: deviceKey), .unknownAuthority),
            ("county signs after its certificate expired", try forged(wuduDevice.id, serial: wuduDevice.certificate.serial,
                                                                      carrying: wuduDevice.certificate, by: w.county,
                                                                      at: HLCTimestamp(milliseconds: county.notAfter + World.day, counter: 0)),
             .expired),
        ]
        for (what, r, expected) in rows {
            #expect(identityCode { try r.verify(trust: rootOnly) } == expected, "\(what)")
            #expect(identityCode { try r.verify(trust: w.trust) } == expected, "\(what), county known")
            let decoded = try Revocation(canonicalBytes: r.canonicalBytes)
            #expect(decoded == r, "\(what): round trip")
            var list = RevocationList()
            #expect(identityCode { try list.insert(decoded, verifiedBy: rootOnly) } == expected && list.count == (expected == nil ? 1 : 0))
        }
    }

    /// The checked initializers refuse to sign anything outside the signer's delegation (the CLI uses them).
    @Test func issuersRefuseToSignOutsideTheirDelegation() throws {
        #expect(identityCode { _ = try Revocation(device: w.root.keyID, serial: 0, revokedAt: at, reason: .lost, note: "", by: w.root) }
                == .outsideDelegation)
        #expect(identityCode { _ = try Revocation(device: w.root.keyID, serial: 0, revokedAt: at, reason: .lost, note: "", by: w.county) }
                == .outsideDelegation)
        #expect(identityCode { _ = try Revocation(device: hqStation.id, serial: 0, revokedAt: at, reason: .lost, note: "", by: w.county) }
                == .outsideDelegation, "a county names the certificate it issued")
        #expect(identityCode { _ = try Revocation(certificate: hqStation.certificate, revokedAt: at, reason: .lost, note: "", by: w.county) }
                == .outsideDelegation)
        #expect(identityCode { _ = try Revocation(certificate: chengDevice.certificate, revokedAt: at, reason: .lost, note: "", by: w.county) }
                == .outsideDelegation)
        #expect(identityCode { _ = try Revocation(certificate: cheng.certificate!, revokedAt: at, reason: .lost, note: "", by: w.county) }
                == .outsideDelegation)
        let r = try Revocation(certificate: wuduDevice.certificate, revokedAt: at, reason: .lost, note: "", by: w.county)
        #expect(r.issuerCertificate == w.county.certificate && r.revokedCertificate == wuduDevice.certificate && r.serial == 60)
    }

    /// A county that signs a certificate for an HQ-enrolled station's public key (public material) and
    /// revokes that certificate cuts only the certificate it issued: the station's own, root-issued
    /// certificate is untouched, for sessions and for changes.
    @Test func aCountyCertificateForgedForAnHQStationRevokesNothingOfTheStation() throws {
        let fake = try Certificate(kind: .device, signingKey: hqStation.signing.publicKey, agreementKey: hqStation.agreement.publicKey,
                                   role: .station, scopes: [World.scope("longnan/wudu/station-017")], notBefore: World.t0 - World.day,
                                   notAfter: World.t0 + World.day, serial: 777, issuer: w.county.signingKey)
        let r = try Revocation(certificate: fake, revokedAt: at, reason: .compromised, note: "", by: w.county)
        var trust = w.trust
        #expect(try trust.addRevocation(r))
        #expect(trust.revocation(of: fake) == r, "within the county's delegation: its own certificate is revoked")
        #expect(trust.revocation(of: hqStation.certificate) == nil)
        try trust.verify(hqStation.certificate, now: World.t0 + 1_000)
        let later = try Change.seal(author: hqStation.signing, scope: World.scope("longnan/wudu/station-017"), seq: 1, prevHash: Change.zeroHash,
                                    hlc: HLCTimestamp(milliseconds: World.t0 + 1_000, counter: 0), priority: .normal, payload: [1],
                                    readers: [EpochKey.generate(scope: World.scope("longnan/wudu/station-017"), epoch: 1)])
        try later.verify(authorCertificate: hqStation.certificate, trust: trust, now: World.t0 + 2_000)
        // The root's revocation of the county's key takes the county's own devices with it, not the root's.
        #expect(try trust.addRevocation(try Revocation(certificate: w.county.certificate!, revokedAt: at, reason: .compromised, note: "", by: w.root)))
        #expect(trust.revocation(of: wuduDevice.certificate)?.device == w.county.keyID)
        #expect(trust.revocation(of: hqStation.certificate) == nil)
    }

    /// A control change carrying an out-of-bounds revocation does not verify as a whole, so no node
    /// stores or forwards it; the in-bounds one does.
    @Test func aControlChangeCarryingAnOutOfBoundsRevocationDoesNotVerify() throws {
        let courier = try Device(63, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.root)
        func carried(_ r: Revocation) throws -> Change {
            try Change.control(author: courier.signing, scope: World.scope("longnan/wudu/station-017"), seq: 1, prevHash: Change.zeroHash,
                               hlc: at, contentType: .revocation, priority: .urgent, payload: r.canonicalBytes)
        }
        let bad = try carried(try forged(hqStation.id, serial: hqStation.certificate.serial, carrying: hqStation.certificate, by: w.county))
        let e = changeError { try bad.verify(authorCertificate: courier.certificate, trust: w.trust, now: World.t0) }
        #expect(e?.code == .unauthorizedControl && e?.identityCode == .outsideDelegation, "\(String(describing: e))")
        let junk = try Change.control(author: courier.signing, scope: World.scope("longnan/wudu/station-017"), seq: 1, prevHash: Change.zeroHash,
                                      hlc: at, contentType: .revocation, priority: .urgent, payload: [1, 1, 0])
        #expect(changeError { try junk.verify(authorCertificate: courier.certificate, trust: w.trust, now: World.t0) }?.identityCode == .invalid)
        let good = try carried(try Revocation(certificate: wuduDevice.certificate, revokedAt: at, reason: .lost, note: "", by: w.county))
        try good.verify(authorCertificate: courier.certificate, trust: w.trust, now: World.t0)
    }

    /// Attack case 26: a key grant (epoch announcement) by an unauthorised issuer is refused, with the
    /// control change that carries it: a county granting outside its scopes (here through a
    /// certificate it signed for itself claiming more), and a device key posing as an issuer.
    @Test func forgedGrantsByUnauthorisedIssuersAreRefused() throws {
        let member = try Device(64, role: .backpack, scopes: ["longnan/cheng"], by: w.root)
        let chengKey = EpochKey.generate(scope: World.scope("longnan/cheng"), epoch: 3)
        #expect(identityCode { _ = try KeyGrant.issue(epochKey: chengKey, members: [member.certificate], issuedAt: World.t0, by: w.county) }
                == .scopeEscalation, "the issuer refuses")
        let selfMade = try Certificate(kind: .authority, signingKey: w.county.signingKey.publicKey, agreementKey: member.agreement.publicKey,
                                       role: .county, scopes: [World.scope("longnan")], notBefore: 0, notAfter: World.t0 + World.day,
                                       serial: 1, issuer: w.county.signingKey)
        let wide = try Authority(delegated: w.county.signingKey, certificate: selfMade)
        let overreach = try KeyGrant.issue(epochKey: chengKey, members: [member.certificate], issuedAt: World.t0, by: wide)
        #expect(identityCode { try overreach.verify(trust: w.trust) } == .scopeEscalation)
        let byDevice = try KeyGrant.issue(epochKey: chengKey, members: [member.certificate], issuedAt: World.t0, by: Authority(root: wuduDevice.signing))
        #expect(identityCode { try byDevice.verify(trust: w.trust) } == .unknownAuthority)
        for g in [overreach, byDevice] {
            let c = try Change.control(author: member.signing, scope: World.scope("longnan/cheng"), seq: 1, prevHash: Change.zeroHash, hlc: at,
                                       contentType: .keyGrant, priority: .urgent, payload: g.canonicalBytes)
            #expect(changeError { try c.verify(authorCertificate: member.certificate, trust: w.trust, now: World.t0) }?.code == .unauthorizedControl)
        }
    }

    /// Grants and revocations are judged at their signing time: after the county's certificate has
    /// expired they still verify (and a restart keeps them); signed after it expired they do not.
    @Test func validityIsJudgedAtSigningTime() throws {
        let county = w.county.certificate!
        var expiredTrust = TrustStore(root: w.root.signingKey.publicKey)
        #expect(identityCode { try expiredTrust.addAuthority(county, now: county.notAfter + 30 * World.day) } == .expired)
        try expiredTrust.learnAuthority(county)  // time-independent checks only
        let grant = try KeyGrant.issue(epochKey: EpochKey.generate(scope: World.scope("longnan/wudu/station-017"), epoch: 1),
                                       members: [wuduDevice.certificate], issuedAt: World.t0, by: w.county)
        try grant.verify(trust: expiredTrust)
        let r = try Revocation(certificate: wuduDevice.certificate, revokedAt: at, reason: .lost, note: "", by: w.county)
        try r.verify(trust: expiredTrust)
        let late = try KeyGrant.issue(epochKey: EpochKey.generate(scope: World.scope("longnan/wudu/station-017"), epoch: 2),
                                      members: [wuduDevice.certificate], issuedAt: county.notAfter + World.day, by: w.county)
        #expect(identityCode { try late.verify(trust: expiredTrust) } == .expired)
    }
}
