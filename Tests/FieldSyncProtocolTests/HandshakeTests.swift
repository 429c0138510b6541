import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

@Suite struct HandshakeTests {
    static let net = NetworkParameters(networkID: "longnan-police")
    static let now = TestPKI.now

    /// Runs the three messages; returns both sides or the first error.
    static func run(_ a: DeviceIdentity, _ b: DeviceIdentity, trustA: TrustStore, trustB: TrustStore,
                    netA: NetworkParameters = net, netB: NetworkParameters = net, now: UInt64 = now,
                    tamper: (Int, inout [UInt8]) -> Void = { _, _ in }) throws(SessionError) -> (SessionHandshake, SessionHandshake) {
        var i = SessionHandshake(initiator: true, identity: a, trust: trustA, network: netA)
        var r = SessionHandshake(initiator: false, identity: b, trust: trustB, network: netB)
        var m1 = try i.write()
        tamper(0, &m1)
        try r.read(m1, now: now)
        var m2 = try r.write()
        tamper(1, &m2)
        try i.read(m2, now: now)
        var m3 = try i.write()
        tamper(2, &m3)
        try r.read(m3, now: now)
        return (i, r)
    }

    static func code(_ body: () throws -> Void) -> SessionError.Code? {
        do {
            try body()
            return nil
        } catch let e as SessionError {
            return e.code
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func mutualAuthenticationAndTransport() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.relay, scopes: [TestPKI.root])
        let (i, r) = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust)
        #expect(i.peer == b.certificate && r.peer == a.certificate && i.handshakeHash == r.handshakeHash)
        var ti = try i.transport(), tr = try r.transport()
        #expect(try tr.open(try ti.seal([1, 2, 3])) == [1, 2, 3])
        #expect(try ti.open(try tr.seal([4])) == [4])
        let sealed = try ti.seal([5])
        var flipped = sealed
        flipped[0] ^= 0x80
        #expect(Self.code { _ = try tr.open(flipped) } == .protocolViolation)
        #expect(Self.code { _ = try tr.open(Array(sealed.prefix(10))) } == .protocolViolation)
    }

    @Test func wrongNetworkID() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        #expect(Self.code { _ = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust, netB: NetworkParameters(networkID: "other")) }
                == .handshakeFailed)
    }

    @Test func unknownAuthority() throws {
        var pki = TestPKI()
        var other = TestPKI()
        let a = try other.device(.backpack, scopes: [TestPKI.station])  // enrolled by another root
        let b = try pki.device(.station, scopes: [TestPKI.station])
        #expect(Self.code { _ = try Self.run(a, b, trustA: other.trust, trustB: pki.trust) } == .badCertificate)
    }

    @Test func expiredCertificate() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station], validDays: 1)
        let b = try pki.device(.station, scopes: [TestPKI.station], validDays: 30)
        #expect(Self.code { _ = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust, now: Self.now + 3 * TestPKI.day) }
                == .badCertificate)
    }

    @Test func revokedPeerIsRefused() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        var trustB = pki.trust
        let rev = try Revocation(device: a.id, serial: a.certificate.serial, revokedAt: HLCTimestamp(milliseconds: Self.now, counter: 0),
                                 reason: .lost, note: "", by: pki.hq)
        try trustB.revocations.insert(rev, verifiedBy: trustB)
        #expect(Self.code { _ = try Self.run(a, b, trustA: pki.trust, trustB: trustB) } == .revoked)
    }

    @Test func certificateOfAnotherKeyIsRefused() throws {
        var pki = TestPKI()
        let victim = try pki.device(.station, scopes: [TestPKI.station])
        let thief = try pki.device(.backpack, scopes: [TestPKI.station])
        // The thief presents the victim's certificate with its own Noise key.
        let impostor = DeviceIdentity(signingKey: thief.signingKey, agreementKey: thief.agreementKey, certificate: victim.certificate)
        let b = try pki.device(.relay, scopes: [TestPKI.root])
        #expect(Self.code { _ = try Self.run(impostor, b, trustA: pki.trust, trustB: pki.trust) } == .keyMismatch)
    }

    @Test func selfConnectionIsRefused() throws {
        var pki = TestPKI()
        let a = try pki.device(.station, scopes: [TestPKI.station])
        #expect(Self.code { _ = try Self.run(a, a, trustA: pki.trust, trustB: pki.trust) } == .selfConnection)
    }

    @Test func tamperedOrReplayedHandshakeMessages() throws {
        var pki = TestPKI()
        let a = try pki.device(.backpack, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        for n in 0..<3 {
            #expect(Self.code { _ = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust) { i, m in if i == n { m[m.count - 1] ^= 1 } } }
                    != nil, "bit flip in message \(n + 1)")
        }
        // A version field other than 1 in message 1 is a clear error.
        #expect(Self.code { _ = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust) { i, m in if i == 0 { m[32] = 2 } } }
                == .unsupportedVersion)
        // Replaying a recorded message 1 to a fresh responder gives a new responder ephemeral; the
        // recorded message 3 then fails against it.
        var recorded: [[UInt8]] = []
        _ = try Self.run(a, b, trustA: pki.trust, trustB: pki.trust) { _, m in recorded.append(m) }
        var r = SessionHandshake(initiator: false, identity: b, trust: pki.trust, network: Self.net)
        try r.read(recorded[0], now: Self.now)
        _ = try r.write()
        #expect(Self.code { try r.read(recorded[2], now: Self.now) } == .handshakeFailed)
    }
}
