import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// Issue 12 items 4 and 6: certificate renewal across expiry, and devices enrolled by different county
/// authorities and by the root syncing with each other directly and through a relay. Only APIs that
/// existed before the fix are used here, so these tests also run (and fail) against the old code.
@Suite struct RenewalChainTests {
    static let net = NetworkParameters(networkID: "longnan-police")
    static let now = TestPKI.now
    static let day = TestPKI.day
    static let wudu = try! Scope("longnan/wudu")
    static let cheng = try! Scope("longnan/cheng")
    static let chengStation = try! Scope("longnan/cheng/station-003")

    /// Keys and certificate of one device, enrolled (or re-enrolled) by `authority`.
    struct Keys {
        let sk = Ed25519.SecretKey.generate()
        let xk = X25519.SecretKey.generate()

        func certificate(by authority: Authority, _ role: Role, _ scopes: [Scope], from: UInt64, to: UInt64,
                         serial: UInt64) throws -> Certificate {
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                            createdAt: from, label: "renewal test")
            return try authority.enroll(req, role: role, scopes: scopes, notBefore: from, notAfter: to, serial: serial)
        }

        func identity(_ cert: Certificate) -> DeviceIdentity { DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert) }
    }

    /// A session pair at time `at`, `x` initiating, run to the end.
    @discardableResult
    static func sync(_ x: Replicator, _ y: Replicator, at: UInt64, seed: UInt64 = 1) -> (Bool, SessionTests.Link) {
        var g = SplitMix64(seed: seed)
        func config() -> SessionConfiguration {
            SessionConfiguration(network: net, salt: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
        }
        var link = SessionTests.Link(a: TestSession(initiator: true, replicator: x, configuration: config(), now: at),
                                     b: TestSession(initiator: false, replicator: y, configuration: config(), now: at))
        let ok = SessionTests.run(&link, now: at)
        return (ok, link)
    }

    static func failure(_ link: SessionTests.Link) -> String {
        "\(link.a.failure.map(\.description) ?? "-") / \(link.b.failure.map(\.description) ?? "-")"
    }

    /// One incident written by `r` at wall time `at`.
    @discardableResult
    static func write(_ r: Replicator, _ n: UInt64, scope: Scope, at: UInt64) throws -> Change {
        let e = Incident.create(id: RecordID(ID128(high: r.identity.id.raw.low, low: n)), scope: scope, author: r.identity.id,
                                hlc: HLCTimestamp(milliseconds: at, counter: 0), category: .dispute, priority: .normal,
                                location: Location(latitude: 33.4, longitude: 104.9), summary: "i\(n)", reportedAt: Int64(at), reporter: "r")
        return try r.write([e], scope: scope, priority: .normal, now: at)
    }

    static func held(_ r: Replicator, _ author: DeviceID, _ scope: Scope) throws -> UInt64 {
        try r.store.holdings(of: LogID(author: author, scope: scope)).frontier
    }

    // MARK: Renewal (item 4)

    /// A backpack's first certificate expires; it is re-enrolled (same keys, new validity) and keeps syncing
    /// with a station that holds only the old certificate; a station that never met it gets both its old and
    /// new changes, and each verifies (the old one against the old certificate, valid at its write time).
    @Test func renewedDeviceKeepsSyncingAfterItsFirstCertificateExpired() throws {
        var pki = TestPKI()
        let bpKeys = Keys()
        let first = try bpKeys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: Self.now - Self.day,
                                           to: Self.now + 10 * Self.day, serial: 100)
        let store = MemoryStore()
        let bp = pki.replicator(bpKeys.identity(first), store: store)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station], validDays: 400))
        try Self.write(bp, 1, scope: TestPKI.village, at: Self.now)
        let (ok1, l1) = Self.sync(bp, st, at: Self.now)
        #expect(ok1, "\(Self.failure(l1))")
        #expect(try Self.held(st, bp.identity.id, TestPKI.village) == 1)

        // Twenty days later the first certificate is long expired; HQ re-enrolls the same keys.
        let later = Self.now + 20 * Self.day
        let renewed = try bpKeys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: later - Self.day,
                                             to: later + 30 * Self.day, serial: 101)
        let bp2 = pki.replicator(bpKeys.identity(renewed), store: store)
        try bp2.restoreCertificates(now: later)
        try bp2.restoreClock()
        try Self.write(bp2, 2, scope: TestPKI.village, at: later)
        try Self.write(st, 3, scope: TestPKI.village, at: later)

        let (ok2, l2) = Self.sync(bp2, st, at: later)
        #expect(ok2, "renewed device vs station holding the old certificate: \(Self.failure(l2))")
        #expect(try Self.held(st, bp.identity.id, TestPKI.village) == 2)
        #expect(try Self.held(bp2, st.identity.id, TestPKI.village) == 1)

        // The other direction (the station initiates) works too.
        try Self.write(bp2, 4, scope: TestPKI.village, at: later + 1000)
        let (ok3, l3) = Self.sync(st, bp2, at: later + 2000, seed: 3)
        #expect(ok3, "\(Self.failure(l3))")
        #expect(try Self.held(st, bp.identity.id, TestPKI.village) == 3)

        // A station that never met the backpack gets its whole log, old changes included, from either peer.
        for (i, source) in [bp2, st].enumerated() {
            let fresh = pki.replicator(try pki.device(.station, scopes: [TestPKI.station], validDays: 400))
            let (ok, l) = Self.sync(fresh, source, at: later + 3000, seed: 10 + UInt64(i))
            #expect(ok, "fresh station from \(i == 0 ? "the backpack" : "the station"): \(Self.failure(l))")
            #expect(try Self.held(fresh, bp.identity.id, TestPKI.village) == 3)
            // Every change of the backpack verifies against the certificate valid at its write time.
            let trail = try fresh.auditTrail(of: RecordID(ID128(high: bp.identity.id.raw.low, low: 1)), now: later + 3000)
            #expect(trail.count == 1 && trail.allSatisfy { $0.verification == .accepted }, "\(trail.map(\.verification))")
            #expect(try SessionTests.state(fresh).count == 4)
        }
    }

    /// Renewal while the first certificate is still valid (overlapping windows): both keep working, and
    /// changes written before the renewal still verify on a peer that learns only later.
    @Test func renewalBeforeExpiryOverlapsWithoutBreakingAnything() throws {
        var pki = TestPKI()
        let keys = Keys()
        let first = try keys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: Self.now - Self.day, to: Self.now + 5 * Self.day, serial: 7)
        let store = MemoryStore()
        let bp = pki.replicator(keys.identity(first), store: store)
        try Self.write(bp, 1, scope: TestPKI.village, at: Self.now)
        let second = try keys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: Self.now + Self.day, to: Self.now + 60 * Self.day, serial: 8)
        let bp2 = pki.replicator(keys.identity(second), store: store)
        try bp2.restoreCertificates(now: Self.now + Self.day)
        try bp2.restoreClock()
        try Self.write(bp2, 2, scope: TestPKI.village, at: Self.now + 2 * Self.day)
        // Weeks later, after the first certificate expired, a new station gets both.
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station], validDays: 400))
        let (ok, l) = Self.sync(st, bp2, at: Self.now + 30 * Self.day)
        #expect(ok, "\(Self.failure(l))")
        #expect(try Self.held(st, bp.identity.id, TestPKI.village) == 2)
    }

    /// A re-enrollment that narrows the scopes does not let the device keep writing in the old, wider scope
    /// once the old certificate has expired: each change is judged by the certificate valid at its time.
    @Test func reEnrollmentWithNarrowerScopesIsEnforcedAfterTheOldCertificateExpires() throws {
        var pki = TestPKI()
        let keys = Keys()
        let wide = try keys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: Self.now - Self.day, to: Self.now + 2 * Self.day, serial: 1)
        let later = Self.now + 10 * Self.day
        let narrow = try keys.certificate(by: pki.hq, .backpack, [TestPKI.village], from: later - Self.day, to: later + 30 * Self.day, serial: 2)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station], validDays: 400))
        // A forger holding the device key signs, after the wide certificate expired, a change in the
        // station scope (outside the narrow certificate): refused; one in the village: accepted.
        let inStation = try Change.seal(author: keys.sk, scope: TestPKI.station, seq: 1, prevHash: Change.zeroHash,
                                        hlc: HLCTimestamp(milliseconds: later, counter: 0), priority: .normal,
                                        payload: [1, 2, 3], readers: [pki.stationKey], archive: nil)
        let inVillage = try Change.seal(author: keys.sk, scope: TestPKI.village, seq: 1, prevHash: Change.zeroHash,
                                        hlc: HLCTimestamp(milliseconds: later, counter: 0), priority: .normal,
                                        payload: [1, 2, 3], readers: [pki.stationKey], archive: nil)
        let report = try st.ingest([inStation, inVillage], certificates: [wide, narrow], now: later)
        guard case .rejected = report.outcomes[0] else { Issue.record("station-scope change accepted: \(report.outcomes)"); return }
        #expect(report.outcomes[1] == .accepted, "\(report.outcomes)")
        // While the wide certificate was valid, the station-scope change was fine.
        let early = try Change.seal(author: keys.sk, scope: TestPKI.station, seq: 1, prevHash: Change.zeroHash,
                                    hlc: HLCTimestamp(milliseconds: Self.now, counter: 0), priority: .normal,
                                    payload: [1, 2, 3], readers: [pki.stationKey], archive: nil)
        #expect(try st.ingest([early], certificates: [wide, narrow], now: later).outcomes == [.accepted])
    }

    /// Attack case 36 with renewals in the system: a device that was not renewed stops syncing after its
    /// `notAfter` (handshake refused), and a change it signs after expiry is refused.
    @Test func unrenewedDeviceStopsSyncingAfterExpiry() throws {
        var pki = TestPKI()
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station], validDays: 400))
        let keys = Keys()
        let cert = try keys.certificate(by: pki.hq, .backpack, [TestPKI.station], from: Self.now - Self.day, to: Self.now + 2 * Self.day, serial: 3)
        let stolen = pki.replicator(keys.identity(cert))
        try Self.write(stolen, 1, scope: TestPKI.village, at: Self.now)
        #expect(Self.sync(stolen, st, at: Self.now).0)
        let later = Self.now + 10 * Self.day
        let (ok, link) = Self.sync(stolen, st, at: later, seed: 5)
        #expect(!ok && link.b.failure?.code == .badCertificate, "\(Self.failure(link))")
        let late = try Change.seal(author: keys.sk, scope: TestPKI.village, seq: 2, prevHash: try st.store.hash(
                                       LogID(author: cert.subject, scope: TestPKI.village), seq: 1) ?? Change.zeroHash,
                                   hlc: HLCTimestamp(milliseconds: later, counter: 0), priority: .normal, payload: [1],
                                   readers: [pki.stationKey], archive: nil)
        guard case .rejected = try st.ingest([late], now: later).outcomes[0] else { Issue.record("change after expiry accepted"); return }
    }

    // MARK: Chains (item 6)

    /// Two county authorities (Wudu and Cheng) and the root enroll devices; each device's trust store knows
    /// only the root and (for a county-enrolled device) its own county authority, as a keystore does. All of
    /// them sync with each other directly and through a root-enrolled relay; HQ gets everything.
    @Test func countyAndRootEnrolledDevicesSyncDirectlyAndThroughARelay() throws {
        var pki = TestPKI()
        var serial: UInt64 = 500
        func county(_ scope: Scope) throws -> Authority {
            let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .county, requestedScopes: [scope],
                                            createdAt: Self.now, label: "county")
            serial += 1
            return try Authority(delegated: sk, certificate: try pki.hq.delegate(req, scopes: [scope], notBefore: Self.now - Self.day,
                                                                              notAfter: Self.now + 365 * Self.day, serial: serial))
        }
        let wuduCA = try county(Self.wudu), chengCA = try county(Self.cheng)
        let chengKey = EpochKey.generate(scope: Self.chengStation, epoch: 1)
        func node(_ by: Authority, _ role: Role, _ scopes: [Scope], keys: [EpochKey]) throws -> Replicator {
            serial += 1
            let id = Keys()
            let cert = try id.certificate(by: by, role, scopes, from: Self.now - Self.day, to: Self.now + 30 * Self.day, serial: serial)
            var trust = TrustStore(root: pki.rootKey.publicKey)
            if let a = by.certificate { try trust.addAuthority(a, now: Self.now) }
            let r = Replicator(identity: id.identity(cert), trust: trust, store: MemoryStore())
            for k in keys { r.addKey(k) }
            return r
        }
        let bpWudu = try node(wuduCA, .backpack, [TestPKI.station], keys: [pki.stationKey])
        let bpWudu2 = try node(wuduCA, .backpack, [TestPKI.station], keys: [pki.stationKey])
        let stRoot = try node(pki.hq, .station, [TestPKI.station], keys: [pki.stationKey])
        let bpCheng = try node(chengCA, .backpack, [Self.chengStation], keys: [chengKey])
        let relay = try node(pki.hq, .relay, [TestPKI.root], keys: [])
        let hq = try node(pki.hq, .hq, [TestPKI.root], keys: [pki.stationKey, chengKey])
        try Self.write(bpWudu, 1, scope: TestPKI.village, at: Self.now)
        try Self.write(stRoot, 2, scope: TestPKI.village, at: Self.now)
        try Self.write(bpCheng, 3, scope: Self.chengStation, at: Self.now)

        var seed: UInt64 = 20
        func expectSync(_ x: Replicator, _ y: Replicator, _ what: String) {
            seed += 1
            let (ok, l) = Self.sync(x, y, at: Self.now + 1000, seed: seed)
            #expect(ok, "\(what): \(Self.failure(l))")
        }
        // Directly: county-enrolled backpack and root-enrolled station, both ways.
        expectSync(bpWudu, stRoot, "Wudu backpack -> root station")
        expectSync(stRoot, bpWudu, "root station -> Wudu backpack")
        #expect(try Self.held(stRoot, bpWudu.identity.id, TestPKI.village) == 1)
        #expect(try Self.held(bpWudu, stRoot.identity.id, TestPKI.village) == 1)
        // Devices of two different counties.
        expectSync(bpCheng, bpWudu, "Cheng backpack -> Wudu backpack")
        expectSync(bpWudu, bpCheng, "Wudu backpack -> Cheng backpack")
        // Through the relay: it never met the Wudu backpack nor its county, and gets its changes from the
        // root station; the second Wudu backpack and HQ get them from the relay.
        expectSync(bpCheng, relay, "Cheng backpack -> relay")
        expectSync(relay, stRoot, "relay -> root station")
        expectSync(bpWudu2, relay, "second Wudu backpack -> relay")
        expectSync(hq, relay, "HQ -> relay")
        #expect(try Self.held(relay, bpWudu.identity.id, TestPKI.village) == 1)
        #expect(try Self.held(relay, bpCheng.identity.id, Self.chengStation) == 1)
        #expect(try Self.held(bpWudu2, bpWudu.identity.id, TestPKI.village) == 1)
        #expect(try Self.held(bpWudu2, stRoot.identity.id, TestPKI.village) == 1)
        #expect(try Self.held(hq, bpWudu.identity.id, TestPKI.village) == 1)
        #expect(try Self.held(hq, bpCheng.identity.id, Self.chengStation) == 1)
        #expect(try Self.held(hq, stRoot.identity.id, TestPKI.village) == 1)
        #expect(try SessionTests.state(hq).count == 3)
        #expect(try SessionTests.state(bpWudu2).count == 2)
        // The relay restarts (a new replicator over its store): it still verifies and forwards the
        // county-enrolled authors' changes.
        let relay2 = Replicator(identity: relay.identity, trust: TrustStore(root: pki.rootKey.publicKey), store: relay.store)
        try relay2.restoreCertificates(now: Self.now + 2000)
        let hq2 = try node(pki.hq, .hq, [TestPKI.root], keys: [pki.stationKey, chengKey])
        expectSync(hq2, relay2, "second HQ -> restarted relay")
        #expect(try SessionTests.state(hq2).count == 3)
    }
}
