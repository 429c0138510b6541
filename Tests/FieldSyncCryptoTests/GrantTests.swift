import FieldSyncCore
import Testing

@testable import FieldSyncCrypto

@Suite struct GrantTests {
    let station = World.scope("longnan/wudu/station-017")

    @Test func grantIssueVerifyOpen() throws {
        let w = try World()
        let a = try Device(30, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let b = try Device(31, role: .command, scopes: ["longnan/wudu"], by: w.root)
        let key = EpochKey.generate(scope: station, epoch: 1)
        let grant = try KeyGrant.issue(epochKey: key, members: [a.certificate, b.certificate], issuedAt: World.t0, by: w.county)
        try grant.verify(trust: w.trust)
        #expect(try KeyGrant(canonicalBytes: grant.canonicalBytes) == grant)
        for d in [a, b] {
            let k = try grant.open(as: d.id, agreementKey: d.agreement)
            #expect(k.key.constantTimeEquals(key.key) && k.epoch == 1 && k.scope == station)
        }
        let outsider = try Device(32, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        #expect(throws: CryptoError.self) { _ = try grant.open(as: outsider.id, agreementKey: outsider.agreement) }
        // Someone else's entry does not open with my key.
        #expect(throws: CryptoError.self) { _ = try grant.open(as: a.id, agreementKey: outsider.agreement) }
    }

    @Test func relaysAreNeverMembers() throws {
        let w = try World()
        let relay = try Device(33, role: .relay, scopes: ["longnan/wudu"], by: w.county)
        let a = try Device(34, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let key = EpochKey.generate(scope: station, epoch: 1)
        for issuer in [w.root, w.county] {
            #expect(identityCode { _ = try KeyGrant.issue(epochKey: key, members: [a.certificate, relay.certificate], issuedAt: 0, by: issuer) } == .relayNotAllowed)
        }
        // Property over role mixes: any member list containing a relay is refused; others are accepted.
        let others = try [Role.backpack, .command, .station].enumerated().map { i, r in
            try Device(UInt8(40 + i), role: r, scopes: ["longnan/wudu"], by: w.root)
        }
        for mask in 1..<(1 << 4) {
            var members: [Certificate] = []
            for (i, d) in (others.map(\.certificate) + [relay.certificate]).enumerated() where mask & (1 << i) != 0 { members.append(d) }
            let hasRelay = members.contains { $0.role == .relay }
            let code = identityCode { _ = try KeyGrant.issue(epochKey: key, members: members, issuedAt: 0, by: w.root) }
            #expect(hasRelay ? code == .relayNotAllowed : code == nil)
        }
    }

    @Test func grantScopeChecks() throws {
        let w = try World()
        let narrow = try Device(35, role: .backpack, scopes: ["longnan/wudu/station-017/village-0412"], by: w.county)
        let key = EpochKey.generate(scope: station, epoch: 1)
        #expect(identityCode { _ = try KeyGrant.issue(epochKey: key, members: [narrow.certificate], issuedAt: 0, by: w.county) } == .scopeEscalation)
        let foreign = EpochKey.generate(scope: World.scope("longnan/chengxian"), epoch: 1)
        let fm = try Device(36, role: .backpack, scopes: ["longnan/chengxian"], by: w.root)
        #expect(identityCode { _ = try KeyGrant.issue(epochKey: foreign, members: [fm.certificate], issuedAt: 0, by: w.county) } == .scopeEscalation)
        // A grant signed by an unknown authority does not verify.
        let rogue = Authority(root: Ed25519.SecretKey.generate())
        let g = try KeyGrant.issue(epochKey: foreign, members: [fm.certificate], issuedAt: 0, by: rogue)
        #expect(identityCode { try g.verify(trust: w.trust) } == .unknownAuthority)
    }

    @Test func rotationExcludesRevokedDevice() throws {
        let w = try World()
        let keep = try Device(37, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let lost = try Device(38, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let k1 = EpochKey.generate(scope: station, epoch: 1)
        let (k2, grant) = try EpochRotation.rotate(current: k1, members: [keep.certificate, lost.certificate], removing: [lost.id],
                                                   issuedAt: World.t0, by: w.county)
        #expect(k2.epoch == 2 && !k2.key.constantTimeEquals(k1.key))
        try grant.verify(trust: w.trust)
        #expect(grant.members.map(\.device) == [keep.id])
        let opened = try grant.open(as: keep.id, agreementKey: keep.agreement)
        #expect(throws: CryptoError.self) { _ = try grant.open(as: lost.id, agreementKey: lost.agreement) }
        // End to end: a change in epoch 2 opens for the kept device and not with the lost device's epoch-1 key.
        let c = try Change.seal(author: keep.signing, scope: station, seq: 1, prevHash: Change.zeroHash,
                                hlc: HLCTimestamp(milliseconds: World.t0, counter: 0), priority: .normal, payload: [1, 2, 3], readers: [k2])
        #expect(try c.open(with: [opened]) == [1, 2, 3])
        #expect(changeError { _ = try c.open(with: [k1]) }?.code == .noMatchingSlot)
    }

    @Test func revocationListIsAGrowOnlySet() throws {
        let w = try World()
        let d1 = try Device(50, role: .backpack, scopes: ["longnan/wudu"], by: w.county)
        let late = HLCTimestamp(milliseconds: World.t0 + 200, counter: 0), early = HLCTimestamp(milliseconds: World.t0 + 100, counter: 0)
        let r1 = try Revocation(device: d1.id, serial: 50, revokedAt: late, reason: .lost, note: "a", by: w.root)
        let r2 = try Revocation(certificate: d1.certificate, revokedAt: early, reason: .stolen, note: "b", by: w.county)
        var a = RevocationList(), b = RevocationList()
        try a.insert(r1, verifiedBy: w.trust)
        try b.insert(r2, verifiedBy: w.trust)
        var ab = a; ab.merge(b)
        var ba = b; ba.merge(a)
        #expect(ab == ba && ab.count == 2)
        var abab = ab; abab.merge(ab)
        #expect(abab == ab)
        var trust = w.trust
        trust.revocations = ab
        #expect(trust.revocation(of: d1.certificate)?.revokedAt == early)
        #expect(trust.isRevoked(d1.certificate, at: HLCTimestamp(milliseconds: World.t0 + 100, counter: 1)) && !trust.isRevoked(d1.certificate, at: early))
        #expect(try Revocation(canonicalBytes: r1.canonicalBytes) == r1)
        #expect(try Revocation(canonicalBytes: r2.canonicalBytes) == r2)
        // A revocation by an unknown authority is refused and leaves the list unchanged.
        let rogue = try Revocation(device: d1.id, serial: 1, revokedAt: HLCTimestamp(raw: 1), reason: .other, note: "",
                                   by: Authority(root: Ed25519.SecretKey.generate()))
        #expect(identityCode { try a.insert(rogue, verifiedBy: w.trust) } == .unknownAuthority)
        #expect(a.count == 1)
        var bytes = r1.canonicalBytes
        bytes[bytes.count - 1] ^= 1
        #expect(identityCode { try a.insert(try Revocation(canonicalBytes: bytes), verifiedBy: w.trust) } == .badSignature)
        #expect(a.count == 1)
    }
}
