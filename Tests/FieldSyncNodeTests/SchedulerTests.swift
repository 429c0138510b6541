import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncNode
import Testing

/// The scheduler as a pure state machine: a fake clock (plain numbers) and a seeded generator.
@Suite(.ownThread) struct SchedulerTests {
    static let a = PeerAddress(host: "10.0.0.1", port: 7000)
    static let b = PeerAddress(host: "10.0.0.2", port: 7000)
    static let c = PeerAddress(host: "10.0.0.3", port: 7000)

    static func policy() -> SchedulePolicy {
        var p = SchedulePolicy()
        p.maxSessions = 8
        p.resyncInterval = 60_000
        p.backoffMin = 1_000
        p.backoffMax = 16_000
        p.pushDebounce = 250
        return p
    }

    @Test func newPeerIsDueAtOnceThenResyncs() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        let added = s.addPeer(Self.a, source: .static, now: 1_000)
        let again = s.addPeer(Self.a, source: .discovered, now: 1_001)
        #expect(added)
        #expect(!again, "a known peer is only refreshed")
        #expect(s.peer(Self.a)?.source == .static, "a configured peer stays static")
        #expect(s.due(now: 1_000, incoming: 0) == [Self.a])
        #expect(s.due(now: 1_000, incoming: 0).isEmpty, "running: not started twice")
        s.sessionEnded(Self.a, finished: true, device: nil, now: 1_200)
        #expect(s.due(now: 61_199, incoming: 0).isEmpty)
        #expect(s.nextDue == 61_200)
        #expect(s.due(now: 61_200, incoming: 0) == [Self.a])
    }

    @Test func backoffStaysWithinBoundsAndJitters() {
        let p = Self.policy()
        var s = SyncScheduler(policy: p, seed: 7)
        for failures in 1...12 {
            let base = SyncScheduler.backoffBase(failures: failures, policy: p)
            #expect(base == min(16_000, 1_000 << UInt64(failures - 1)))
            var seen = Set<UInt64>()
            for _ in 0..<200 {
                let d = s.backoff(failures: failures)
                #expect(d >= max(p.backoffMin, base / 2) && d <= base, "failures \(failures): \(d) outside [\(base / 2), \(base)]")
                seen.insert(d)
            }
            if failures >= 2 { #expect(seen.count > 50, "failures \(failures): only \(seen.count) distinct delays") }
        }
        #expect(SyncScheduler.backoffBase(failures: 1_000, policy: p) == 16_000, "no overflow for many failures")
        // Same seed, same delays; another seed, other delays.
        var x = SyncScheduler(policy: p, seed: 99), y = SyncScheduler(policy: p, seed: 99), z = SyncScheduler(policy: p, seed: 100)
        let dx = (0..<20).map { _ in x.backoff(failures: 5) }, dy = (0..<20).map { _ in y.backoff(failures: 5) }
        let dz = (0..<20).map { _ in z.backoff(failures: 5) }
        #expect(dx == dy && dx != dz)
    }

    @Test func failuresBackOffAndSuccessResets() {
        var s = SyncScheduler(policy: Self.policy(), seed: 3)
        s.addPeer(Self.a, source: .static, now: 0)
        var now: UInt64 = 0
        var delays: [UInt64] = []
        for _ in 0..<6 {
            #expect(s.due(now: now, incoming: 0) == [Self.a])
            s.sessionEnded(Self.a, finished: false, device: nil, now: now)
            let due = s.peer(Self.a)!.due!
            delays.append(due - now)
            // A store change does not hurry a peer in backoff.
            s.storeChanged(now: now)
            #expect(s.peer(Self.a)!.due == due)
            now = due
        }
        #expect(s.peer(Self.a)!.failures == 6)
        #expect(delays[0] == 1_000 && delays[5] >= 8_000 && delays[5] <= 16_000, "\(delays)")
        #expect(s.due(now: now, incoming: 0) == [Self.a])
        s.sessionEnded(Self.a, finished: true, device: nil, now: now)
        #expect(s.peer(Self.a)!.failures == 0 && s.peer(Self.a)!.due == now + 60_000)
    }

    @Test func rediscoveredPeerInBackoffIsRetriedSoon() {
        var s = SyncScheduler(policy: Self.policy(), seed: 3)
        s.addPeer(Self.a, source: .discovered, now: 0)
        _ = s.due(now: 0, incoming: 0)
        s.sessionEnded(Self.a, finished: true, device: Self.d1, now: 10)  // proven: a session authenticated it
        s.sessionEnded(Self.a, finished: false, device: nil, now: 20)
        for _ in 0..<4 {
            let now = s.nextDue!
            _ = s.due(now: now, incoming: 0)
            s.sessionEnded(Self.a, finished: false, device: nil, now: now)
        }
        let now = s.peer(Self.a)!.lastSessionEnd!
        #expect(s.peer(Self.a)!.due! - now >= 8_000)
        s.addPeer(Self.a, source: .discovered, now: now + 10)
        #expect(s.peer(Self.a)!.due == now + 10 + 1_000)
    }

    @Test func storeChangesArePushedAfterTheDebounce() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        s.addPeer(Self.b, source: .static, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a, Self.b])
        s.sessionEnded(Self.a, finished: true, device: DeviceID(ID128(high: 0, low: 1)), now: 100)
        s.sessionEnded(Self.b, finished: true, device: DeviceID(ID128(high: 0, low: 2)), now: 100)
        s.storeChanged(now: 1_000)
        s.storeChanged(now: 1_200)  // rides along: the first change opened the window
        #expect(s.peer(Self.a)!.due == 1_250 && s.peer(Self.b)!.due == 1_250)
        #expect(s.due(now: 1_249, incoming: 0).isEmpty)
        #expect(s.due(now: 1_250, incoming: 0) == [Self.a, Self.b])
        s.sessionEnded(Self.a, finished: true, device: nil, now: 1_300)
        s.sessionEnded(Self.b, finished: true, device: nil, now: 1_300)
        // Changes that came from b's device are pushed to a only.
        s.storeChanged(now: 2_000, except: DeviceID(ID128(high: 0, low: 2)))
        #expect(s.peer(Self.a)!.due == .some(2_250))
        #expect(s.peer(Self.b)!.due == .some(1_300 + 60_000))
    }

    @Test func changeDuringASessionSyncsAgainAfterIt() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a])
        s.storeChanged(now: 50)  // the running session's reconciliation may predate this change
        #expect(s.peer(Self.a)!.dirty)
        s.sessionEnded(Self.a, finished: true, device: nil, now: 400)
        #expect(s.peer(Self.a)!.due == .some(650))
    }

    @Test func neverMoreThanMaxSessions() {
        var p = Self.policy()
        p.maxSessions = 2
        var s = SyncScheduler(policy: p, seed: 1)
        for (i, addr) in [Self.c, Self.b, Self.a].enumerated() { s.addPeer(addr, source: .static, now: UInt64(i)) }
        #expect(s.due(now: 10, incoming: 1) == [Self.c], "one slot left next to one incoming session; earliest due first")
        #expect(s.due(now: 10, incoming: 1).isEmpty)
        #expect(s.due(now: 10, incoming: 0) == [Self.b])
        #expect(s.outgoing == 2)
        #expect(s.due(now: 10, incoming: 0).isEmpty)
        s.sessionEnded(Self.c, finished: true, device: nil, now: 20)
        #expect(s.due(now: 20, incoming: 0) == [Self.a])
        #expect(s.due(now: 20, incoming: 5).isEmpty)
    }

    static let d1 = DeviceID(ID128(high: 0, low: 1)), d2 = DeviceID(ID128(high: 0, low: 2))

    @Test func aLivePeerGetsNoNewSessionAndIsRetriedSoonAfterItEnds() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        s.addPeer(Self.b, source: .static, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a, Self.b])
        s.sessionLive(device: Self.d1, address: Self.a, now: 100)
        #expect(s.peer(Self.a)!.live && s.peer(Self.a)!.running && s.peer(Self.a)!.device == Self.d1 && s.peer(Self.a)!.liveSince == 100)
        #expect(s.isLive(Self.d1) && !s.isLive(Self.d2))
        #expect(s.outgoing == 1, "the live session does not count; b's first exchange does")
        s.sessionEnded(Self.b, finished: true, device: Self.d2, now: 200)
        // A change: b gets a new session after the debounce; a is pushed to on its live session, not marked dirty.
        s.storeChanged(now: 1_000)
        #expect(s.peer(Self.b)!.due == 1_250 && !s.peer(Self.a)!.dirty && s.peer(Self.a)!.due == nil)
        #expect(s.due(now: 1_000_000, incoming: 0) == [Self.b], "no resync or push session to a live peer")
        s.sessionEnded(Self.b, finished: true, device: Self.d2, now: 1_000_010)
        s.removePeer(Self.b)
        // The live session closes (the peer went away or closed it): a is due again after backoffMin.
        s.sessionEnded(Self.a, finished: true, device: Self.d1, now: 2_000_000)
        s.liveSessionEnded(device: Self.d1, now: 2_000_000)
        #expect(!s.isLive(Self.d1) && !s.peer(Self.a)!.live && s.peer(Self.a)!.failures == 0)
        #expect(s.peer(Self.a)!.due == .some(2_001_000))
        #expect(s.due(now: 2_001_000, incoming: 0) == [Self.a])
        // That attempt fails (the peer is gone): ordinary backoff from there.
        s.sessionEnded(Self.a, finished: false, device: nil, now: 2_001_010)
        #expect(s.peer(Self.a)!.failures == 1 && s.peer(Self.a)!.due == 2_002_010)
    }

    @Test func aLiveSessionCutMidPushBacksOff() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        for _ in 0..<2 {  // failures before the contact worked
            let now = s.nextDue!
            _ = s.due(now: now, incoming: 0)
            s.sessionEnded(Self.a, finished: false, device: nil, now: now)
        }
        #expect(s.peer(Self.a)!.failures == 2)
        let now = s.nextDue!
        #expect(s.due(now: now, incoming: 0) == [Self.a])
        s.sessionLive(device: Self.d1, address: Self.a, now: now)
        #expect(s.peer(Self.a)!.failures == 0, "the contact worked")
        s.sessionEnded(Self.a, finished: false, device: Self.d1, now: now + 50_000)
        s.liveSessionEnded(device: Self.d1, now: now + 50_000)
        #expect(s.peer(Self.a)!.failures == 1 && s.peer(Self.a)!.due == now + 51_000)
    }

    @Test func anIncomingLiveSessionCoversThePeerUntilItsLastOneEnds() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a])
        s.sessionEnded(Self.a, finished: true, device: Self.d1, now: 100)  // a one-shot session: device learned
        // The peer opens two live sessions to this node (one is about to be closed as a duplicate).
        s.sessionLive(device: Self.d1, address: nil, now: 200)
        s.sessionLive(device: Self.d1, address: nil, now: 300)
        s.storeChanged(now: 1_000)
        #expect(s.peer(Self.a)!.due == .some(60_100), "not hurried: the change is pushed on the live session")
        #expect(s.due(now: 60_100, incoming: 0).isEmpty && s.nextDue == nil, "no resync while live")
        s.liveSessionEnded(device: Self.d1, now: 70_000)
        #expect(s.isLive(Self.d1) && s.due(now: 70_000, incoming: 0).isEmpty, "one live session is left")
        s.liveSessionEnded(device: Self.d1, now: 80_000)
        #expect(!s.isLive(Self.d1) && s.peer(Self.a)!.due == 60_100, "an overdue peer stays due")
        #expect(s.due(now: 80_000, incoming: 0) == [Self.a])
        s.liveSessionEnded(device: Self.d1, now: 80_001)  // an extra end is ignored
        #expect(!s.isLive(Self.d1))
    }

    @Test func liveSessionsDoNotStarveNewContacts() {
        var p = Self.policy()
        p.maxSessions = 1
        var s = SyncScheduler(policy: p, seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        s.addPeer(Self.b, source: .static, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a])
        #expect(s.due(now: 0, incoming: 0).isEmpty, "a's first exchange holds the only slot")
        s.sessionLive(device: Self.d1, address: Self.a, now: 10)
        #expect(s.due(now: 10, incoming: 0) == [Self.b], "a live session frees its slot")
        s.addPeer(Self.c, source: .static, now: 20)
        #expect(s.due(now: 20, incoming: 0).isEmpty, "b's first exchange holds it now")
        s.sessionLive(device: Self.d2, address: Self.b, now: 30)
        #expect(s.due(now: 30, incoming: 0) == [Self.c] && s.outgoing == 1)
    }

    /// Issue 13 item 2: forged beacons add discovered peers that never authenticate. They get at most
    /// `maxProbes` sessions at once, outside `maxSessions`, so configured peers are still started; and
    /// hearing a forged beacon again does not cut its backoff short.
    @Test func unprovenDiscoveredPeersGetOnlyProbes() {
        var p = Self.policy()
        p.maxSessions = 2
        p.maxProbes = 2
        var s = SyncScheduler(policy: p, seed: 1)
        let forged = (1...10).map { PeerAddress(host: "10.9.0.\($0)", port: 7000) }
        for f in forged { s.addPeer(f, source: .discovered, now: 0) }
        s.addPeer(Self.a, source: .static, now: 1)
        s.addPeer(Self.b, source: .static, now: 1)
        let started = s.due(now: 1, incoming: 0)
        #expect(started.filter { forged.contains($0) }.count == 2, "two probes: \(started)")
        #expect(started.contains(Self.a) && started.contains(Self.b), "configured peers keep their slots: \(started)")
        #expect(s.outgoing == 2 && s.probing == 2)
        #expect(s.due(now: 2, incoming: 0).isEmpty)
        // The probes fail (handshake deadline): they back off; the next two forged peers are probed.
        for f in started where forged.contains(f) { s.sessionEnded(f, finished: false, device: nil, now: 5_000) }
        let next = s.due(now: 5_000, incoming: 0)
        #expect(next.count == 2 && next.allSatisfy { forged.contains($0) && !started.contains($0) }, "\(next)")
        // A failed forged peer's beacon heard again does not shorten its backoff.
        let failed = started.first { forged.contains($0) }!
        let due = s.peer(failed)!.due!
        s.addPeer(failed, source: .discovered, now: 5_001)
        #expect(s.peer(failed)!.due == due)
        // A discovered peer that authenticated is proven: it uses the session slots, not the probes.
        s.sessionEnded(next[0], finished: true, device: Self.d1, now: 5_100)
        #expect(SyncScheduler.isProven(s.peer(next[0])!) && s.probing == 1)
    }

    @Test func removedPeerIsForgottenEvenIfItsSessionRuns() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .discovered, now: 0)
        #expect(s.due(now: 0, incoming: 0) == [Self.a])
        s.removePeer(Self.a)
        s.sessionEnded(Self.a, finished: true, device: nil, now: 10)  // the running session's end is ignored
        #expect(s.allPeers.isEmpty && s.nextDue == nil && s.outgoing == 0)
    }

    @Test func losingABeaconNeverDropsAConfiguredPeer() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        s.removePeer(Self.a, onlyIf: .discovered)
        #expect(s.allPeers.map(\.address) == [Self.a])
        s.removePeer(Self.a, onlyIf: .static)
        #expect(s.allPeers.isEmpty)
    }

    @Test func stopStartsNothing() {
        var s = SyncScheduler(policy: Self.policy(), seed: 1)
        s.addPeer(Self.a, source: .static, now: 0)
        s.stop()
        #expect(s.due(now: 10, incoming: 0).isEmpty && s.nextDue == nil)
    }

    @Test func addressesParse() {
        #expect(PeerAddress("10.0.0.1:7000") == PeerAddress(host: "10.0.0.1", port: 7000))
        #expect(PeerAddress("[::1]:7000") == PeerAddress(host: "::1", port: 7000))
        #expect(PeerAddress("[::1]:7000")?.description == "[::1]:7000")
        for bad in ["10.0.0.1", "host:0", "host:70000", ":7000", "a b:1", "host:x"] { #expect(PeerAddress(bad) == nil, "\(bad)") }
    }
}
