import FieldSyncCore
import FieldSyncDriver
import FieldSyncProtocol
import Testing

/// Unit tests of the driver policy (FieldSyncDriver): backoff bounds and jitter, the retry of refused
/// and future-dated changes, HQ receipt timing, settling duplicate live sessions, the live idle close,
/// the store-heads trigger, and the driver's events and decisions.
@Suite struct DriverPolicyTests {
    static let peer = PeerAddress(host: "10.0.0.2", port: 7000)

    static func device(_ byte: UInt8) -> DeviceID { DeviceID(ID128(high: UInt64(byte), low: UInt64(byte))) }

    @Test func backoffStaysWithinOneToThreeHundredSecondsWithJitter() {
        let policy = DriverPolicy().schedule
        #expect(policy.backoffMin == 1_000 && policy.backoffMax == 300_000)
        var d = SyncDriver<PeerAddress>(policy: policy, seed: 11)
        d.handle(.peerAdded(Self.peer, .static), now: 0)
        var now: UInt64 = 0
        var delays: [UInt64] = []
        for failures in 1...30 {
            let start = d.handle(.tick(incoming: 0), now: now)
            #expect(start.first == .connect(Self.peer), "due after its backoff (failure \(failures))")
            d.handle(.sessionEnded(Self.peer, finished: false, device: nil), now: now)
            let due = d.scheduler.peer(Self.peer)!.due!
            let delay = due - now
            let base = min(300_000, 1_000 << UInt64(min(failures - 1, 20)))
            #expect(delay >= max(1_000, base / 2) && delay <= base, "failure \(failures): \(delay) ms outside [\(max(1_000, base / 2)), \(base)]")
            #expect(d.handle(.tick(incoming: 0), now: due - 1).first == .nextTick(due), "not before its time")
            delays.append(delay)
            now = due
        }
        #expect(delays[0] == 1_000, "the first retry after 1 s")
        #expect(delays.suffix(10).allSatisfy { $0 >= 150_000 && $0 <= 300_000 })
        #expect(Set(delays.suffix(10)).count > 5, "jittered: the capped delays differ")
        // A finished session resets the failures: the next failure waits 1 s again.
        _ = d.handle(.tick(incoming: 0), now: now)
        d.handle(.sessionEnded(Self.peer, finished: true, device: nil), now: now)
        #expect(d.scheduler.peer(Self.peer)!.due == now + policy.resyncInterval)
    }

    @Test func aFutureDatedChangeClosesTheLiveSessionWhenItBecomesAcceptable() {
        var r = RefusedRetry(retryAfter: DriverPolicy().refusedRetry)
        // One-shot (not live): the session ends by itself; the next reconciliation offers the change again.
        #expect(r.check(now: 1_000, refused: 0, deferredUntil: 50_000, live: false) == .keep)
        // Live: look again when the change may be accepted, close then.
        #expect(r.check(now: 2_000, refused: 0, deferredUntil: 50_000, live: true) == .recheck(at: 50_000))
        #expect(r.check(now: 49_999, refused: 0, deferredUntil: 50_000, live: true) == .recheck(at: 50_000))
        #expect(r.check(now: 50_000, refused: 0, deferredUntil: 50_000, live: true) == .close(.deferredAcceptable))
    }

    @Test func changesTheStoreRefusedAreOfferedAgainAfterTheRetryDelay() {
        var r = RefusedRetry(retryAfter: 600_000)
        #expect(r.check(now: 10_000, refused: 0, deferredUntil: nil, live: true) == .keep)
        #expect(r.check(now: 20_000, refused: 3, deferredUntil: nil, live: true) == .recheck(at: 620_000))
        #expect(r.refusedSince == 20_000)
        // Later refusals do not push the retry back; a future-dated change due earlier comes first.
        #expect(r.check(now: 30_000, refused: 5, deferredUntil: 100_000, live: true) == .recheck(at: 100_000))
        #expect(r.check(now: 100_000, refused: 5, deferredUntil: 100_000, live: true) == .close(.deferredAcceptable))
        #expect(r.check(now: 620_000, refused: 5, deferredUntil: nil, live: true) == .close(.refusedByStore))
    }

    /// Issue 19: the sender learns what its peer refused for room (`ack-refused`); its own driver re-offers
    /// those changes after the same delay, on a new session (the peer's driver may run another delay).
    @Test func changesThePeerRefusedAreOfferedAgainAfterTheRetryDelay() {
        var r = RefusedRetry(retryAfter: 600_000)
        #expect(r.check(now: 10_000, refused: 0, refusedByPeer: 0, deferredUntil: nil, live: true) == .keep)
        #expect(r.check(now: 20_000, refused: 0, refusedByPeer: 4, deferredUntil: nil, live: true) == .recheck(at: 620_000))
        #expect(r.refusedByPeerSince == 20_000 && r.refusedSince == nil)
        #expect(r.check(now: 20_000, refused: 0, refusedByPeer: 4, deferredUntil: nil, live: false) == .keep, "a one-shot session ends by itself")
        #expect(r.check(now: 620_000, refused: 0, refusedByPeer: 6, deferredUntil: nil, live: true) == .close(.refusedByPeer))
    }

    @Test func hqReceiptsAtSessionEndAndAfterALiveBurst() {
        var r = ReceiptScheduler<Int>(policy: ReceiptPolicy())
        #expect(r.sessionEnded(0, received: 0, now: 1_000) == .none, "nothing received, no receipt")
        #expect(r.sessionEnded(0, received: 3, now: 1_000) == .write(received: 3))
        // A burst on a live session: one receipt 250 ms after its first change.
        #expect(r.liveChanges(0, received: 1, now: 2_000) == .armTimer(at: 2_250))
        #expect(r.liveChanges(0, received: 4, now: 2_100) == .none)
        #expect(r.timerFired(0, now: 2_200) == .none, "not due yet")
        #expect(r.timerFired(0, now: 2_250) == .write(received: 5))
        #expect(r.timerFired(0, now: 2_300) == .none, "written once")
        // The node writes at a session's end even with a burst's timer pending.
        #expect(r.liveChanges(0, received: 1, now: 3_000) == .armTimer(at: 3_250))
        #expect(r.sessionEnded(0, received: 2, now: 3_010) == .write(received: 2))
        // A minimum interval per key (the simulator's per-station receipt interval).
        var p = ReceiptPolicy()
        p.minInterval = 60_000
        var m = ReceiptScheduler<Int32>(policy: p)
        #expect(m.sessionEnded(7, received: 1, now: 0) == .write(received: 1))
        #expect(m.sessionEnded(7, received: 1, now: 10_000) == .armTimer(at: 60_000))
        #expect(m.liveChanges(7, received: 2, now: 20_000) == .none)
        #expect(m.liveChanges(8, received: 1, now: 20_000) == .armTimer(at: 20_250), "keys are independent")
        #expect(m.timerFired(7, now: 60_000) == .write(received: 3))
    }

    @Test func twoLiveSessionsBetweenAPairSettleOnTheSameOneOnBothSides() {
        let small = Self.device(1), large = Self.device(2)
        typealias S = LiveSessionRules.Session<Int>
        // Both directions: the session the larger device opened goes, on both sides.
        let atSmall = LiveSessionRules.settle(me: small, peer: large, live: [S(id: 1, initiator: false), S(id: 2, initiator: true)])
        #expect(atSmall.map(\.id) == [1] && atSmall.first?.reason == .duplicateOpenedByLarger(large))
        let atLarge = LiveSessionRules.settle(me: large, peer: small, live: [S(id: 5, initiator: true), S(id: 6, initiator: false)])
        #expect(atLarge.map(\.id) == [5], "the larger side closes the one it opened")
        // Several opened by the same device: the opener keeps its oldest; the other side leaves it to the opener.
        let opener = LiveSessionRules.settle(me: small, peer: large, live: [S(id: 1, initiator: true), S(id: 2, initiator: true), S(id: 3, initiator: true)])
        #expect(opener.map(\.id) == [2, 3] && opener.allSatisfy { $0.reason == .duplicateNewer(large) })
        #expect(LiveSessionRules.settle(me: large, peer: small, live: [S(id: 1, initiator: false), S(id: 2, initiator: false)]).isEmpty)
        #expect(LiveSessionRules.settle(me: small, peer: large, live: [S(id: 1, initiator: true)]).isEmpty)
        #expect(LiveSessionRules.settle(me: small, peer: small, live: [S(id: 1, initiator: true), S(id: 2, initiator: false)]).isEmpty)
    }

    @Test func aSilentLiveSessionClosesAfterTheIdleLimit() {
        let limit = DriverPolicy().liveIdle
        #expect(limit == 600_000)
        #expect(LiveSessionRules.idle(now: 100_000, lastTraffic: 0, isIdle: true, limit: limit) == .recheck(at: 600_000))
        #expect(LiveSessionRules.idle(now: 600_000, lastTraffic: 0, isIdle: true, limit: limit) == .close(.idle(600_000)))
        #expect(LiveSessionRules.idle(now: 600_000, lastTraffic: 0, isIdle: false, limit: limit) == .recheck(at: 600_000),
                "something in flight: not closed")
        #expect(LiveSessionRules.idle(now: .max / 2, lastTraffic: 0, isIdle: true, limit: nil) == .keep)
    }

    /// The keep-alive (issue 14: idle links were closed and handshaked again every 10 minutes): the side
    /// whose turn it is (the peer spoke last) sends once the link was quiet for `interval` (an eighth more
    /// for the side that did not open the connection); any side sends after `alone` without sending; a side
    /// that heard nothing for `deadAfter` takes the peer for gone; otherwise it looks again at the earliest
    /// of these; a clock that went back is no time passed.
    @Test func aLiveSessionSendsKeepAlivesAndCutsAPeerItNoLongerHears() {
        let p = KeepAlivePolicy(interval: 600_000, deadAfter: 1_500_000)
        #expect(DriverPolicy().liveKeepAlive == p, "the node's default")
        #expect(p.alone == 1_200_000 && p.turnWait(initiator: true) == 600_000 && p.turnWait(initiator: false) == 675_000)
        func rule(_ now: UInt64, sent: UInt64, heard: UInt64, initiator: Bool = true) -> KeepAliveDecision {
            LiveSessionRules.keepAlive(now: now, lastSent: sent, lastReceived: heard, initiator: initiator, policy: p)
        }
        // Both sides' last frames at 0 (the session went live): each side's turn, the opener's first.
        #expect(rule(100_000, sent: 0, heard: 0) == .recheck(at: 600_000))
        #expect(rule(600_000, sent: 0, heard: 0) == .send)
        #expect(rule(600_000, sent: 0, heard: 0, initiator: false) == .recheck(at: 675_000))
        // Sent at 600 s, the peer's frame came before it (10 s): the peer's turn; ours again only after
        // `alone` (1,200 s) unless the peer speaks.
        #expect(rule(600_000, sent: 600_000, heard: 10_000) == .recheck(at: 1_510_000), "the deadline (10 + 1,500 s) before alone (600 + 1,200 s)")
        #expect(rule(1_400_000, sent: 1_200_000, heard: 10_000) == .recheck(at: 1_510_000), "the deadline comes before the next keep-alive")
        #expect(rule(1_510_000, sent: 1_200_000, heard: 10_000) == .peerGone(silentFor: 1_500_000))
        // The peer's keep-alive came at 1,210 s after ours at 600 s: our turn, at 1,810 s.
        #expect(rule(1_300_000, sent: 600_000, heard: 1_210_000) == .recheck(at: 1_800_000), "alone (600 + 1,200) comes first")
        #expect(rule(1_300_000, sent: 1_000_000, heard: 1_210_000) == .recheck(at: 1_810_000))
        #expect(rule(1_810_000, sent: 1_000_000, heard: 1_210_000) == .send)
        #expect(rule(5_000, sent: 9_000, heard: 9_000) == .recheck(at: 605_000), "the clock went back 4 s: a full interval from now")
        // A deadline below one and a half intervals: every side sends every interval, turns or not.
        let tight = KeepAlivePolicy(interval: 600_000, deadAfter: 800_000)
        #expect(tight.alone == 600_000)
        #expect(LiveSessionRules.keepAlive(now: 600_000, lastSent: 0, lastReceived: 500_000, initiator: true, policy: tight) == .send)
        // With keep-alive on, the idle close does not apply; without it, the configured limit does.
        #expect(LiveSessionRules.idleLimit(liveIdle: 600_000, keepAlive: p) == nil)
        #expect(LiveSessionRules.idleLimit(liveIdle: 600_000, keepAlive: nil) == 600_000)
    }

    /// Two sides running the keep-alive rule over an idle link with a delay, from frames that crossed (both
    /// sent at the same moment): they fall into turns, one keep-alive per interval on the link in all (the
    /// rule without turns sent one per side: twice as many), and neither ever takes the other for gone. A
    /// side facing a peer that sends every interval whatever it hears (a node of the rule without turns)
    /// still sends at least every `alone`, before that peer's `deadAfter`.
    @Test func idleSidesTakeTurnsAndNeitherIsTakenForGone() {
        let p = KeepAlivePolicy.default
        for delay: UInt64 in [0, 50, 2_000, 30_000] {
            // side 0 opened the connection; frames in flight as (arrival, to side).
            var sent: [UInt64] = [0, 0], heard: [UInt64] = [delay, delay], count = [0, 0]
            var inFlight: [(at: UInt64, to: Int)] = []
            var now: UInt64 = delay, maxSilence: UInt64 = 0
            let end: UInt64 = 48 * 3_600_000
            while now < end {
                var next = UInt64.max
                inFlight.sort { $0.at < $1.at }
                while let f = inFlight.first, f.at <= now {
                    maxSilence = max(maxSilence, f.at - heard[f.to])
                    heard[f.to] = f.at
                    inFlight.removeFirst()
                }
                for side in 0..<2 {
                    switch LiveSessionRules.keepAlive(now: now, lastSent: sent[side], lastReceived: heard[side], initiator: side == 0, policy: p) {
                    case .send:
                        sent[side] = now
                        count[side] += 1
                        inFlight.append((now + delay, 1 - side))
                        next = min(next, now + delay)
                    case .peerGone:
                        Issue.record("side \(side) took a healthy peer for gone at \(now) (delay \(delay))")
                        return
                    case let .recheck(at): next = min(next, at)
                    }
                }
                if let f = inFlight.map(\.at).min() { next = min(next, f) }
                now = max(now + 1, next)
            }
            let intervals = Int(end / p.interval)
            #expect(count[0] + count[1] <= intervals + 2, "delay \(delay): \(count) keep-alives in \(intervals) intervals")
            #expect(count[0] >= intervals / 2 - 2 && count[1] >= intervals / 2 - 2, "both sides take turns: \(count)")
            #expect(maxSilence < p.deadAfter, "delay \(delay): heard at least every \(maxSilence) ms")
        }
        // Against a peer that sends every interval whatever it hears: that peer never waits on us, so this
        // side is never on its turn after a quiet interval; it still sends every `alone`.
        var sent: UInt64 = 0, now: UInt64 = 0, gaps: [UInt64] = []
        while now < 24 * 3_600_000 {
            let peerFrame = now / p.interval * p.interval  // the old rule's peer: a frame every interval
            switch LiveSessionRules.keepAlive(now: now, lastSent: sent, lastReceived: peerFrame, initiator: false, policy: p) {
            case .send: gaps.append(now - sent); sent = now
            case .peerGone: Issue.record("took the old peer for gone"); return
            case let .recheck(at): now = min(at, (now / p.interval + 1) * p.interval)
            }
        }
        #expect(!gaps.isEmpty && gaps.allSatisfy { $0 <= p.alone && $0 < p.deadAfter }, "\(gaps.prefix(5))")
    }

    @Test func newStoreHeadsPushTheLogsThatMoved() throws {
        let me = Self.device(1), other = Self.device(2)
        let mine = LogID(author: me, scope: try Scope("longnan")), theirs = LogID(author: other, scope: try Scope("longnan"))
        func held(_ n: UInt64) -> HeldIntervals {
            var h = HeldIntervals()
            for s in 1...n { h.insert(s) }
            return h
        }
        var t = StoreHeadsTrigger()
        #expect(t.observe([mine: held(1)], except: nil, me: me) == nil, "the first reading is the baseline")
        #expect(t.observe([mine: held(1)], except: nil, me: me) == nil, "nothing moved")
        // A new fork proof moves no head (the conflicting change is refused) but is pushed all the same.
        #expect(t.observe([mine: held(1)], forks: 1, except: other, me: me) == StoreHeadsChange(moved: [], reload: false, except: other))
        #expect(t.observe([mine: held(1)], forks: 1, except: other, me: me) == nil, "the same proof count: nothing new")
        #expect(t.observe([mine: held(1)], forks: 2, except: nil, me: me) == StoreHeadsChange(moved: [], reload: true, except: nil),
                "a poll that sees a new proof: pushed, and the store reloaded as after any poll's move")
        // Changes from a session: pushed on, not back; no reload (a session brings no changes of our logs).
        #expect(t.observe([mine: held(1), theirs: held(2)], except: other, me: me)
            == StoreHeadsChange(moved: [theirs], reload: false, except: other))
        // Our own log moved after a session: another process wrote it, reload.
        #expect(t.observe([mine: held(2), theirs: held(2)], except: other, me: me)?.reload == true)
        // A poll (no session): reload.
        #expect(t.observe([mine: held(2), theirs: held(3)], except: nil, me: me)?.reload == true)
    }

    @Test func theDriverStartsOnContactPushesAfterTheDebounceAndWaitsForLiveSessions() {
        let policy = SchedulePolicy()
        var d = SyncDriver<PeerAddress>(policy: policy, seed: 1, tracing: true)
        let dev = Self.device(9)
        #expect(d.handle(.peerAdded(Self.peer, .discovered), now: 0) == [.nextTick(0)], "sync on contact")
        #expect(d.handle(.peerAdded(Self.peer, .discovered), now: 5).isEmpty, "seen again: nothing new")
        #expect(d.handle(.tick(incoming: 0), now: 10) == [.connect(Self.peer), .nextTick(nil)])
        d.handle(.sessionLive(device: dev, outgoing: Self.peer), now: 50)
        d.handle(.storeChanged(except: nil), now: 60)
        #expect(d.handle(.tick(incoming: 0), now: 1_000) == [.nextTick(nil)], "a live session carries the change")
        d.handle(.liveSessionEnded(device: dev), now: 2_000)
        d.handle(.sessionEnded(Self.peer, finished: true, device: dev), now: 2_000)
        #expect(d.handle(.tick(incoming: 0), now: 2_000) == [.nextTick(2_000 + policy.backoffMin)], "reconnect after backoffMin")
        #expect(d.handle(.tick(incoming: 0), now: 3_000) == [.connect(Self.peer), .nextTick(nil)])
        d.handle(.sessionEnded(Self.peer, finished: true, device: dev), now: 3_100)  // one-shot this time
        #expect(d.scheduler.peer(Self.peer)?.due == 3_100 + policy.resyncInterval)
        d.handle(.storeChanged(except: nil), now: 4_000)
        #expect(d.handle(.tick(incoming: 0), now: 4_000) == [.nextTick(4_000 + policy.pushDebounce)], "push debounce")
        d.handle(.storeChanged(except: dev), now: 4_100)
        #expect(d.scheduler.peer(Self.peer)?.due == 4_000 + policy.pushDebounce, "changes from the peer are not pushed back")
        d.handle(.stop, now: 5_000)
        #expect(d.handle(.tick(incoming: 0), now: 5_000) == [.nextTick(nil)])
        #expect(d.trace.count == 16)
    }
}
