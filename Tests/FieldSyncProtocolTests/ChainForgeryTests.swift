import FieldSyncCore
@testable import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// Attack case 7 with certificate chains (Protocols/handshake.md §3, identity.md §3): forged or foreign
/// chains are refused in the handshake and in batches, and what a chain teaches is only what verifies.
@Suite struct ChainForgeryTests {
    static let now = TestPKI.now
    static let day = TestPKI.day
    static let wudu = try! Scope("longnan/wudu")
    static let cheng = try! Scope("longnan/cheng")

    struct World {
        var pki = TestPKI()
        let wuduKey = Ed25519.SecretKey.generate()
        let chengKey = Ed25519.SecretKey.generate()
        var wudu: Authority
        var cheng: Authority

        init() throws {
            let pki = TestPKI()
            self.pki = pki
            wudu = try Authority(delegated: wuduKey, certificate: try Certificate(
                kind: .authority, signingKey: wuduKey.publicKey, agreementKey: X25519.SecretKey.generate().publicKey, role: .county,
                scopes: [ChainForgeryTests.wudu], notBefore: now - day, notAfter: now + 100 * day, serial: 1, issuer: pki.rootKey))
            cheng = try Authority(delegated: chengKey, certificate: try Certificate(
                kind: .authority, signingKey: chengKey.publicKey, agreementKey: X25519.SecretKey.generate().publicKey, role: .county,
                scopes: [ChainForgeryTests.cheng], notBefore: now - day, notAfter: now + 100 * day, serial: 2, issuer: pki.rootKey))
        }

        /// A device certificate signed by `issuer` exactly as given (no bounds checked at signing).
        func forged(_ role: Role, _ scopes: [Scope], issuer: Ed25519.SecretKey, kind: CertificateKind = .device,
                    from: UInt64 = now - day, to: UInt64 = now + 30 * day) throws -> (DeviceIdentity, Certificate) {
            let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
            let c = try Certificate(kind: kind, signingKey: sk.publicKey, agreementKey: xk.publicKey, role: role, scopes: scopes,
                                    notBefore: from, notAfter: to, serial: 9, issuer: issuer)
            return (DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: c), c)
        }
    }

    /// The handshake of `a` (presenting `chain`) with a root-enrolled station whose trust knows only the root.
    static func handshake(_ a: DeviceIdentity, chain: [Certificate], world: inout World, now: UInt64 = now) -> SessionError.Code? {
        let withChain = DeviceIdentity(signingKey: a.signingKey, agreementKey: a.agreementKey, certificate: a.certificate, chain: chain)
        let st = try! world.pki.device(.station, scopes: [TestPKI.station])
        return HandshakeTests.code {
            _ = try HandshakeTests.run(withChain, st, trustA: world.pki.trust, trustB: world.pki.trust, now: now)
        }
    }

    @Test func countyDevicePresentsItsChainAndIsAccepted() throws {
        var w = try World()
        let (bp, _) = try w.forged(.backpack, [TestPKI.station], issuer: w.wuduKey)
        #expect(Self.handshake(bp, chain: [w.wudu.certificate!], world: &w) == nil)
        // Without the chain, a station that never learned the county refuses it (the old behaviour).
        #expect(Self.handshake(bp, chain: [], world: &w) == .badCertificate)
    }

    @Test func authorityCertificateNotSignedByTheRootIsRefused() throws {
        var w = try World()
        let fakeRoot = Ed25519.SecretKey.generate()
        let countyKey = Ed25519.SecretKey.generate()
        let fakeCounty = try Certificate(kind: .authority, signingKey: countyKey.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                         role: .county, scopes: [Self.wudu], notBefore: Self.now - Self.day, notAfter: Self.now + Self.day,
                                         serial: 1, issuer: fakeRoot)
        let (bp, _) = try w.forged(.backpack, [TestPKI.station], issuer: countyKey)
        #expect(Self.handshake(bp, chain: [fakeCounty], world: &w) == .badCertificate)
        var t = w.pki.trust
        do { try t.learnAuthority(fakeCounty); Issue.record("foreign authority learned") } catch { #expect(error.code == .unknownAuthority) }
        // The same forgery naming the real root as issuer: its signature does not verify.
        var bytes = fakeCounty.canonicalBytes
        let rootID = DeviceID(signingKey: w.pki.rootKey.publicKey).raw
        var idw = ByteWriter()
        idw.write(DeviceID(rootID))
        bytes.replaceSubrange(bytes.count - 80..<bytes.count - 64, with: idw.bytes)
        let claimsRoot = try Certificate(canonicalBytes: bytes)
        #expect(claimsRoot.issuer == t.rootID)
        #expect(Self.handshake(bp, chain: [claimsRoot], world: &w) == .badCertificate)
        do { try t.learnAuthority(claimsRoot); Issue.record("forged authority learned") } catch { #expect(error.code == .badSignature) }
        #expect(t.authorities.isEmpty)
    }

    @Test func countyCertificateIssuedByAnotherCountyIsRefused() throws {
        var w = try World()
        // Wudu signs an "authority" certificate for a sub-county key (only the root may delegate).
        let (sub, subCert) = try w.forged(.county, [TestPKI.station], issuer: w.wuduKey, kind: .authority)
        let (bp, _) = try w.forged(.backpack, [TestPKI.station], issuer: sub.signingKey)
        #expect(Self.handshake(bp, chain: [subCert], world: &w) == .badCertificate)
        var t = w.pki.trust
        try t.learnAuthority(w.wudu.certificate!)
        do { try t.learnAuthority(subCert); Issue.record("sub-county learned") } catch { #expect(error.code == .chainTooDeep) }
        // Cheng's genuine certificate presented for a Wudu-issued device: the chain names another issuer.
        let (wuduBp, _) = try w.forged(.backpack, [TestPKI.station], issuer: w.wuduKey)
        #expect(Self.handshake(wuduBp, chain: [w.cheng.certificate!], world: &w) == .badCertificate)
        // A chain longer than one certificate is refused (a sender presents only its issuer's; this is a
        // hand-made payload), as are trailing bytes after the chain.
        let long = SessionHandshake.certificatePayload(wuduBp.certificate, chain: [w.wudu.certificate!, w.cheng.certificate!])
        let trailing = SessionHandshake.certificatePayload(wuduBp.certificate, chain: [w.wudu.certificate!]) + [0]
        for payload in [long, trailing] {
            #expect(HandshakeTests.code {
                _ = try SessionHandshake.check(payload: payload, ofMessage: 1, remoteStatic: wuduBp.agreementKey.publicKey.bytes,
                                               own: DeviceID(ID128(high: 1, low: 1)), verify: { _, _ in })
            } == .protocolViolation)
        }
    }

    @Test func deviceCertificateOutsideItsCountyIsRefused() throws {
        var w = try World()
        // Wudu's authority signs a device in Cheng's station scope, and a county-role device.
        let (outside, _) = try w.forged(.backpack, [try Scope("longnan/cheng/station-003")], issuer: w.wuduKey)
        #expect(Self.handshake(outside, chain: [w.wudu.certificate!], world: &w) == .badCertificate)
        let (hqRole, _) = try w.forged(.hq, [TestPKI.station], issuer: w.wuduKey)
        #expect(Self.handshake(hqRole, chain: [w.wudu.certificate!], world: &w) == .badCertificate)
        var t = w.pki.trust
        try t.learnAuthority(w.wudu.certificate!)
        do { _ = try t.certified(outside.certificate) } catch { #expect(error.code == .scopeEscalation) }
    }

    @Test func expiredCountyAuthorityFailsHandshakesButItsDevicesOldChangesStillVerify() throws {
        var w = try World()
        let (bp, _) = try w.forged(.backpack, [TestPKI.station], issuer: w.wuduKey, to: Self.now + 300 * Self.day)
        let writer = Replicator(identity: bp, trust: w.pki.trust, store: MemoryStore())
        #expect(writer.certificates[bp.id] == nil)  // its trust store does not know Wudu yet
        #expect(writer.learn(certificates: [w.wudu.certificate!, bp.certificate], now: 0) == 1)
        writer.addKey(w.pki.stationKey)
        let change = try SessionTests.write(writer, 1)
        let after = Self.now + 200 * Self.day  // the county authority expired at now + 100 days
        #expect(Self.handshake(bp, chain: [w.wudu.certificate!], world: &w, now: after) == .badCertificate)
        let relay = w.pki.replicator(try w.pki.device(.relay, scopes: [TestPKI.root], validDays: 400), withKey: false)
        let report = try relay.ingest([change], certificates: writer.certificateChain(of: bp.id), now: after)
        #expect(report.outcomes == [.accepted])
    }

    @Test func batchWithForgedAuthorityTeachesNothing() throws {
        var w = try World()
        let fakeRoot = Ed25519.SecretKey.generate()
        let countyKey = Ed25519.SecretKey.generate()
        let fakeCounty = try Certificate(kind: .authority, signingKey: countyKey.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                         role: .county, scopes: [TestPKI.root], notBefore: Self.now - Self.day, notAfter: Self.now + Self.day,
                                         serial: 1, issuer: fakeRoot)
        let (bp, bpCert) = try w.forged(.backpack, [TestPKI.station], issuer: countyKey)
        let writer = Replicator(identity: bp, trust: w.pki.trust, store: MemoryStore())
        let change = try Change.seal(author: bp.signingKey, scope: TestPKI.village, seq: 1, prevHash: Change.zeroHash,
                                     hlc: HLCTimestamp(milliseconds: Self.now, counter: 0), priority: .normal, payload: [1],
                                     readers: [w.pki.stationKey], archive: nil)
        _ = writer
        let st = w.pki.replicator(try w.pki.device(.station, scopes: [TestPKI.station]))
        let report = try st.ingest([change], certificates: [fakeCounty, bpCert], now: Self.now)
        #expect(report.outcomes == [.unknownAuthor])
        #expect(st.trust.authorities.isEmpty && st.certificates[bp.id] == nil)
        #expect(try st.store.certificates().isEmpty)
        #expect(try st.store.holdings(of: LogID(author: bp.id, scope: TestPKI.village)).frontier == 0)
    }

    @Test func handshakeChainVectorStaysTheSingleCertificateForRootIssuedDevices() throws {
        var pki = TestPKI()
        let d = try pki.device(.backpack, scopes: [TestPKI.station])
        #expect(SessionHandshake.certificatePayload(d.certificate, chain: d.presentedChain) == d.certificate.canonicalBytes)
        var w = try World()
        let (bp, _) = try w.forged(.backpack, [TestPKI.station], issuer: w.wuduKey)
        let chained = DeviceIdentity(signingKey: bp.signingKey, agreementKey: bp.agreementKey, certificate: bp.certificate,
                                     chain: [w.wudu.certificate!, w.cheng.certificate!])
        #expect(chained.presentedChain == [w.wudu.certificate!])
        #expect(SessionHandshake.certificatePayload(bp.certificate, chain: chained.presentedChain)
                == bp.certificate.canonicalBytes + w.wudu.certificate!.canonicalBytes)
    }

    /// A key grant signed by a county authority and published by a root-enrolled HQ node reaches a
    /// root-enrolled station (through a relay) that never met that county: the authority certificate travels
    /// with the first grant or revocation of a session, and the station keeps it across a restart.
    @Test func countySignedGrantPublishedByHQReachesNodesThatNeverMetTheCounty() throws {
        var w = try World()
        let hqNode = w.pki.replicator(try w.pki.device(.hq, scopes: [TestPKI.root]), withKey: false)
        _ = hqNode.learn(certificates: [w.wudu.certificate!], now: Self.now)  // HQ knows its counties
        let relay = w.pki.replicator(try w.pki.device(.relay, scopes: [TestPKI.root]), withKey: false)
        let stID = try w.pki.device(.station, scopes: [TestPKI.station])
        let st = w.pki.replicator(stID, withKey: false)
        let key = EpochKey.generate(scope: TestPKI.station, epoch: 2)
        let grant = try KeyGrant.issue(epochKey: key, members: [stID.certificate], issuedAt: Self.now, by: w.wudu)
        try hqNode.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: TestPKI.root, now: Self.now)
        #expect(RenewalChainTests.sync(relay, hqNode, at: Self.now + 1000).0)
        #expect(RenewalChainTests.sync(st, relay, at: Self.now + 2000, seed: 2).0)
        #expect(st.keys[TestPKI.station]?.map(\.epoch) == [2], "the station opened the county's grant")
        #expect(try st.store.certificates().contains(w.wudu.certificate!))
        // Restarted, the station still knows the key (the grant is verified again against the kept authority).
        let restarted = Replicator(identity: stID, trust: w.pki.trust, store: st.store)
        try restarted.restoreCertificates(now: Self.now + 3000)
        #expect(try restarted.restoreControlState(now: Self.now + 3000).keys == 1)
    }
}
