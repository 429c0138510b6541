import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// A batch leaves out the certificates of authors the receiver holds a change of (Protocols/sync.md
/// §Batches, "Certificates the receiver holds", issue 14): it verified and kept them. If it lacks them
/// after all, it says so (`ack-refused` reason 6) and gets the change again with them, without a failure.
@Suite struct CertificateOmissionTests {
    /// Frames moved and the certificates batches carried, per direction.
    struct Moved {
        var certificatesAB = 0, certificatesBA = 0, batchesAB = 0
    }

    static func run(_ link: inout SessionTests.Link, now: UInt64 = SessionTests.now) -> Moved {
        var m = Moved()
        while true {
            var progress = false
            while let f = link.a.pollFrame() {
                progress = true
                if f.kind == .batch { m.certificatesAB += f.contents?.certificates.count ?? 0; m.batchesAB += 1 }
                link.b.receive(f.bytes, now: now)
            }
            while let f = link.b.pollFrame() {
                progress = true
                if f.kind == .batch { m.certificatesBA += f.contents?.certificates.count ?? 0 }
                link.a.receive(f.bytes, now: now)
            }
            if !progress { return m }
        }
    }

    static func log(_ r: Replicator) -> LogID { LogID(author: r.identity.id, scope: TestPKI.village) }

    /// Before: every session's first batch with the backpack's changes carried its certificate (and its
    /// issuer's), although the station had verified and kept them in the session before. Now the second
    /// session sends none.
    @Test func aSecondSessionSendsNoCertificateTheReceiverHolds() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(2) { _ = try SessionTests.write(bp, n) }
        var first = SessionTests.connect(bp, st)
        let m1 = Self.run(&first)
        #expect(first.a.isFinished && first.b.isFinished)
        #expect(m1.certificatesAB >= 1, "the first session carries the backpack's certificate")
        for n in UInt64(3)...UInt64(4) { _ = try SessionTests.write(bp, n) }
        var second = SessionTests.connect(bp, st, seed: 2)
        let m2 = Self.run(&second)
        #expect(second.a.isFinished && second.b.isFinished)
        #expect(m2.batchesAB >= 1 && m2.certificatesAB == 0, "no certificate the station holds: \(m2)")
        #expect(second.a.session.changesRefusedByPeer == 0)
        #expect(try st.store.holdings(of: Self.log(bp)) == HeldIntervals([1...4]))
        #expect(second.a.session.certificatesOmitted == m1.certificatesAB)
        // A restarted station (its certificates re-read from its store) is the same.
        let restarted = pki.replicator(st.identity, store: st.store)
        #expect(try restarted.restoreCertificates(now: SessionTests.now) >= 1)
        _ = try SessionTests.write(bp, 5)
        var third = SessionTests.connect(bp, restarted, seed: 3)
        let m3 = Self.run(&third)
        #expect(third.a.isFinished && third.b.isFinished && m3.certificatesAB == 0 && third.a.session.changesRefusedByPeer == 0)
        #expect(try restarted.store.holdings(of: Self.log(bp)) == HeldIntervals([1...5]))
    }

    /// The inference is wrong: the station holds another backpack's changes but not its certificate (here
    /// a restart that did not re-read them). The carrier (a backpack) leaves the author's certificate out;
    /// the station refuses the new changes with reason 6, the carrier sends them again with the
    /// certificate, and the session finishes normally with everything delivered, one-shot and live.
    @Test func aReceiverLackingTheCertificateAsksForItAndTheSessionFinishes() throws {
        var pki = TestPKI()
        let author = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        func sync(_ x: Replicator, _ y: Replicator, seed: UInt64, live: Bool = false) -> (SessionTests.Link, Moved) {
            var link = SessionTests.connect(x, y, seed: seed, live: (live, live))
            let m = Self.run(&link)
            return (link, m)
        }
        _ = try SessionTests.write(author, 1)
        _ = sync(author, bp, seed: 1)
        _ = sync(bp, st, seed: 2)
        #expect(try st.store.holdings(of: Self.log(author)) == HeldIntervals([1...1]))
        for live in [false, true] {
            let forgetful = pki.replicator(st.identity, store: st.store)  // no restoreCertificates
            #expect(forgetful.certificates[author.identity.id] == nil)
            let n: UInt64 = live ? 4 : 3
            for k in (live ? 4 : 2)...n { _ = try SessionTests.write(author, k) }
            _ = sync(author, bp, seed: 10 + n)
            let (link, m) = sync(bp, forgetful, seed: 20 + n, live: live)
            #expect(live ? link.a.isLive && link.b.isLive : link.a.isFinished && link.b.isFinished,
                    "no failure: \(String(describing: link.a.session.failure)) \(String(describing: link.b.session.failure))")
            #expect(link.a.session.refusedByPeer[.certificateNeeded] == (live ? 1 : 2), "live \(live)")
            #expect(m.certificatesAB >= 1, "sent again with the certificate")
            #expect(try forgetful.store.holdings(of: Self.log(author)) == HeldIntervals([1...n]))
            #expect(link.b.session.changesRefused == 0 && !link.b.session.hasFailed && !link.a.session.hasFailed)
        }
    }

    /// A peer that sent no `clock` may be of a version that cannot ask for certificates: it gets them.
    @Test func aPeerOfAnOlderVersionGetsTheCertificates() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(bp, 1)
        var first = SessionTests.connect(bp, st)
        _ = Self.run(&first)
        _ = try SessionTests.write(bp, 2)
        var g = SplitMix64(seed: 9)
        let ca = SessionConfiguration(network: SessionTests.net, salt: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
        var cb = SessionConfiguration(network: SessionTests.net, salt: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
        cb.announcesClock = false
        var link = SessionTests.Link(a: TestSession(initiator: true, replicator: bp, configuration: ca, now: SessionTests.now),
                                     b: TestSession(initiator: false, replicator: st, configuration: cb, now: SessionTests.now))
        let m = Self.run(&link)
        #expect(link.a.isFinished && link.b.isFinished && m.certificatesAB >= 1 && link.a.session.certificatesOmitted == 0)
    }
}
