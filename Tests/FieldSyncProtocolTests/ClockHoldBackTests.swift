import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// A sender does not send changes its peer would refuse as dated ahead of its clock (Protocols/sync.md
/// §4.3, issue 14): each side tells its clock at the start of the session (`SessionMessage.clock`), and the
/// other holds back changes dated beyond it plus the tolerance until they would be accepted.
@Suite struct ClockHoldBackTests {
    static let hour: UInt64 = 3_600_000
    static let tolerance: UInt64 = 5 * 60_000

    /// Moves frames until neither side has any: `a`'s clock reads `nowA`, `b`'s `nowB`.
    static func run(_ link: inout SessionTests.Link, nowA: UInt64, nowB: UInt64) {
        while true {
            var progress = false
            while let f = link.a.pollFrame() {
                progress = true
                if f.kind == .batch { link.bytesAB += f.bytes.count }
                link.b.receive(f.bytes, now: nowB)
            }
            while let f = link.b.pollFrame() {
                progress = true
                if f.kind == .batch { link.bytesBA += f.bytes.count }
                link.a.receive(f.bytes, now: nowA)
            }
            if !progress { return }
        }
    }

    static func events(_ s: TestSession) -> [SessionEvent] {
        var out: [SessionEvent] = []
        while let e = s.pollEvent() { out.append(e) }
        return out
    }

    /// The station's clock is 6 h behind the backpack's. Before: the backpack sent its three new changes,
    /// the station refused them (`ack-refused`, `timestampInFuture`) and a later session sent them again.
    /// Now: none is sent while the station would refuse it; the live session pushes them when the
    /// station's clock (as it said, run on since) reaches their HLC minus the tolerance, and the station
    /// stores them, with no refusal and no new session.
    @Test func changesDatedAheadOfThePeersClockAreHeldBackThenPushed() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(3) { _ = try SessionTests.write(bp, n) }  // HLC now + n
        let t = SessionTests.now
        let skew = 6 * Self.hour
        var link = LiveSessionTests.connect(bp, st)
        Self.run(&link, nowA: t, nowB: t - skew)
        #expect(link.a.isLive && link.b.isLive)
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        #expect(try st.store.holdings(of: log).count == 0, "nothing the station would refuse was stored")
        let first = Self.events(link.a)
        #expect(!first.contains { if case .refusedByPeer = $0 { true } else { false } }, "no change refused by the station: \(first)")
        #expect(link.a.session.changesRefusedByPeer == 0)
        #expect(link.bytesAB == 0, "no batch sent: \(link.bytesAB) bytes")
        // Each passed over twice: in the plan, and in the push of what is new when the session went live.
        #expect(link.a.session.changesHeldBack == 6)
        // Change 1 (HLC t + 1) is accepted once the station's clock reads t + 1 - tolerance, which is the
        // backpack's t + 1 - tolerance + 6 h: the session asks for its timer then.
        let due = t + 1 - Self.tolerance + skew
        #expect(link.a.session.heldBackUntil == due)
        #expect(first.contains(.needsTimer(at: due)), "\(first)")

        // A moment early: nothing goes.
        link.a.timerFired(now: due - 1_000)
        #expect(link.a.pollFrame() == nil)
        // When due: the live session pushes change 1; 2 and 3 are due 1 and 2 ms later.
        link.a.timerFired(now: due)
        Self.run(&link, nowA: due, nowB: due - skew)
        #expect(try st.store.holdings(of: log).count == 1)
        link.a.timerFired(now: due + 2)
        Self.run(&link, nowA: due + 2, nowB: due + 2 - skew)
        #expect(try st.store.holdings(of: log) == HeldIntervals([1...3]))
        #expect(link.a.session.changesRefusedByPeer == 0 && link.b.session.changesRefused == 0)
        #expect(link.a.session.changesSent == 3, "each change sent once")
        #expect(link.a.isLive && link.b.isLive, "no new session needed")
        #expect(try SessionTests.state(st) == SessionTests.state(bp))
    }

    /// A one-shot session sends what the peer accepts and leaves what it would refuse to a later session,
    /// which sends it once the peer's clock has caught up.
    @Test func aOneShotSessionLeavesChangesDatedAheadToALaterSession() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(2) { _ = try SessionTests.write(bp, n) }
        let t = SessionTests.now
        let ahead = t + 3 * Self.hour
        let e = Incident.create(id: RecordID(ID128(high: 9, low: 9)), scope: TestPKI.village, author: bp.identity.id,
                                hlc: HLCTimestamp(milliseconds: ahead, counter: 0), category: .dispute, priority: .normal,
                                location: Location(latitude: 33.4, longitude: 104.9), summary: "ahead", reportedAt: Int64(ahead),
                                reporter: "r")
        _ = try bp.write([e], scope: TestPKI.village, priority: .normal, now: ahead)
        var link = SessionTests.connect(bp, st)
        Self.run(&link, nowA: t, nowB: t)
        #expect(link.a.isFinished && link.b.isFinished)
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        #expect(try st.store.holdings(of: log) == HeldIntervals([1...2]))
        #expect(link.a.session.changesRefusedByPeer == 0 && link.a.session.changesSent == 2 && link.a.session.changesHeldBack == 1)
        var later = SessionTests.connect(bp, st, seed: 2)
        Self.run(&later, nowA: ahead, nowB: ahead)
        #expect(later.a.isFinished && later.b.isFinished)
        #expect(try st.store.holdings(of: log) == HeldIntervals([1...3]))
        #expect(later.a.session.changesRefusedByPeer == 0)
    }

    /// A peer without the clock (an older version, or `announcesClock` off) gets what it got before:
    /// everything, the future-dated change refused and acknowledged.
    @Test func withoutThePeersClockNothingIsHeldBack() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(bp, 1)
        var g = SplitMix64(seed: 1)
        var ca = SessionConfiguration(network: SessionTests.net, salt: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
        var cb = SessionConfiguration(network: SessionTests.net, salt: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
        cb.announcesClock = false
        ca.announcesClock = true
        let a = TestSession(initiator: true, replicator: bp, configuration: ca, now: SessionTests.now)
        let b = TestSession(initiator: false, replicator: st, configuration: cb, now: SessionTests.now)
        var link = SessionTests.Link(a: a, b: b)
        Self.run(&link, nowA: SessionTests.now, nowB: SessionTests.now - Self.hour)
        #expect(link.a.isFinished && link.b.isFinished)
        #expect(link.a.session.changesHeldBack == 0 && link.a.session.changesRefusedByPeer == 1)
        #expect(link.a.session.bytesSent[SessionFrameKind.clock.rawValue] == 25 && link.b.session.bytesSent[SessionFrameKind.clock.rawValue] == 0)
    }

    /// A wrong or hostile clock cannot hold changes back for long: a reading more than 24 h behind this
    /// node's clock counts as 24 h behind.
    @Test func aPeersClockCountsAtMostADayBehind() {
        let t = SessionTests.now
        #expect(SyncSession.believedPeerClock(t - 6 * Self.hour, now: t) == t - 6 * Self.hour)
        #expect(SyncSession.believedPeerClock(0, now: t) == t - 24 * Self.hour)
        #expect(SyncSession.believedPeerClock(t + Self.hour, now: t) == t + Self.hour)
        #expect(SyncSession.believedPeerClock(.max, now: t) == .max)
        #expect(SyncSession.believedPeerClock(5, now: 10) == 5)
    }

    /// Tag 10: `u8 10`, `varint` milliseconds (Protocols/sync.md §2).
    @Test func clockMessageEncoding() throws {
        var w = ByteWriter()
        SessionMessage.clock(milliseconds: 1_717_200_000_000).encode(to: &w)
        #expect(w.bytes == [0x0A, 0x80, 0xA8, 0xE2, 0x88, 0xFD, 0x31])
        guard case .clock(1_717_200_000_000) = try SessionMessage.decode(w.bytes) else { Issue.record("tag 10 is not clock"); return }
        #expect(throws: DecodingError.self) { try SessionMessage.decode([0x0A]) }
        #expect(throws: DecodingError.self) { try SessionMessage.decode(w.bytes + [0]) }
    }
}
