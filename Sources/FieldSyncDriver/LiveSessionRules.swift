// The live-session rules of the driver policy (Protocols/sync.md §4.1, docs/node.md "Live sessions"):
// which of two live sessions between the same pair of devices is kept, and when a live session closes
// by itself (changes it refused may be offered again; no traffic for a long time). Pure functions and
// one small state value; the node's channel handler and the simulator's agent own the timers.

import FieldSyncCore

/// Why the driver closes a live session (a normal end, once nothing is in flight on this side).
public enum LiveCloseReason: Sendable, Equatable, CustomStringConvertible {
    /// Sessions in both directions exist between the pair: the one opened by the larger device id goes.
    case duplicateOpenedByLarger(DeviceID)
    /// The same device opened several: it keeps its oldest.
    case duplicateNewer(DeviceID)
    /// The store refused changes (quota, held back) and the retry delay passed: a new session's
    /// reconciliation offers them again.
    case refusedByStore
    /// The peer refused changes of this node (it said so in `ack-refused`: its quota is full, ...) and
    /// the retry delay passed: a new session's reconciliation offers them again.
    case refusedByPeer
    /// Changes refused as dated ahead of this clock may be accepted now: a new session offers them again.
    case deferredAcceptable
    /// No bytes in either direction for this long (ms): the next session checks everything anew.
    case idle(UInt64)

    public var description: String {
        switch self {
        case let .duplicateOpenedByLarger(peer): "another live session with \(peer) is kept (opened by the smaller device id)"
        case let .duplicateNewer(peer): "an older live session with \(peer) is kept"
        case .refusedByStore: "the store refused changes (quota or held back); a new session offers them again"
        case .refusedByPeer: "the peer refused changes of this node (its quota full or held back); a new session offers them again"
        case .deferredAcceptable: "changes refused as dated ahead of this clock may be accepted now; a new session offers them again"
        case let .idle(ms): "idle live session: no traffic for \(ms / 1_000) s"
        }
    }
}

/// What to do about one live session now.
public enum LiveDecision: Sendable, Equatable {
    /// Nothing, and nothing to wait for.
    case keep
    /// Close it when idle, for this reason.
    case close(LiveCloseReason)
    /// Look again at this time (ms).
    case recheck(at: UInt64)
}

/// The live-session rules.
public enum LiveSessionRules {
    /// A live session between this device and one peer, as `settle` sees it.
    public struct Session<ID: Sendable & Equatable>: Sendable, Equatable {
        /// The caller's handle.
        public var id: ID
        /// Whether this device opened it.
        public var initiator: Bool
        /// Creates one.
        public init(id: ID, initiator: Bool) {
            self.id = id
            self.initiator = initiator
        }
    }

    /// Two nodes that connect to each other at the same moment end up with two live sessions between
    /// them; pushes would then travel twice. Both sides keep the same one, whatever the timing: when
    /// sessions in both directions exist, those opened by the device with the larger id are closed (by
    /// both sides); several sessions opened by the same device are settled by that device alone, which
    /// keeps its oldest.
    /// - Parameter live: the live sessions with `peer`, oldest first.
    /// - Returns: the sessions to close when idle, and why (none for fewer than two, or `me == peer`).
    public static func settle<ID>(me: DeviceID, peer: DeviceID, live: [Session<ID>]) -> [(id: ID, reason: LiveCloseReason)] {
        guard me != peer, live.count > 1 else { return [] }
        let smallerOpens = me < peer  // on this side, sessions the smaller device opened have initiator == (me < peer)
        let preferred = live.filter { $0.initiator == smallerOpens }
        var out: [(ID, LiveCloseReason)] = []
        var kept = live
        if !preferred.isEmpty {
            out = live.filter { $0.initiator != smallerOpens }.map { ($0.id, .duplicateOpenedByLarger(peer)) }
            kept = preferred
        }
        // Every kept session has the same opener; only the opener settles them.
        guard kept.count > 1, kept[0].initiator else { return out }
        return out + kept.dropFirst().map { ($0.id, .duplicateNewer(peer)) }
    }

    /// Whether a live session that stayed silent closes: once idle (nothing in flight) and no bytes moved
    /// in either direction for `limit` ms (nil: never), it closes (a normal end; the next session
    /// handshakes and reconciles anew, re-checking the peer from scratch). Otherwise look again when the
    /// limit would be reached.
    public static func idle(now: UInt64, lastTraffic: UInt64, isIdle: Bool, limit: UInt64?) -> LiveDecision {
        guard let limit else { return .keep }
        if isIdle && now &- lastTraffic >= limit { return .close(.idle(limit)) }
        return .recheck(at: lastTraffic &+ limit)
    }
}

/// Changes a live session refused are not offered again on it (they were acknowledged): once changes
/// refused as dated ahead of this node's clock may be accepted (`SyncSession.deferredUntil`), or
/// `retryAfter` ms after the store first refused changes (quota, held back), the session closes when
/// idle and the next session's reconciliation offers them again (Protocols/sync.md §4.1). The sending
/// side applies the same delay to changes its peer refused for room (quota, held back; the peer says so
/// in `ack-refused`), so that its own driver re-offers them even when the peer's runs another delay or
/// none; changes a peer refused as revoked or forked are never offered to it again, and those it refused
/// as dated ahead are the peer's `deferred` to retry. One value per session; `check` after every input of
/// the session and when the `recheck` time comes.
public struct RefusedRetry: Sendable, Equatable {
    /// How long after the first refusal by the store (quota, held back) a live session closes (ms).
    public let retryAfter: UInt64
    /// When the store first refused changes on this session (ms), nil if it did not.
    public private(set) var refusedSince: UInt64?
    /// When the peer first refused changes of this node for room on this session (ms), nil if it did not.
    public private(set) var refusedByPeerSince: UInt64?

    /// Creates the rule for one session.
    public init(retryAfter: UInt64) { self.retryAfter = retryAfter }

    /// The decision now.
    /// - Parameters:
    ///   - refused: changes the store refused on this session so far.
    ///   - refusedByPeer: changes of this node the peer refused for room (quota, held back) so far.
    ///   - deferredUntil: the session's `deferredUntil` (when refused future-dated changes become acceptable).
    ///   - live: whether the session is in its live phase (a one-shot session ends by itself).
    public mutating func check(now: UInt64, refused: Int, refusedByPeer: Int = 0, deferredUntil: UInt64?, live: Bool) -> LiveDecision {
        if refused > 0, refusedSince == nil { refusedSince = now }
        if refusedByPeer > 0, refusedByPeerSince == nil { refusedByPeerSince = now }
        let retry = refusedSince.map { $0 &+ retryAfter }
        let peerRetry = refusedByPeerSince.map { $0 &+ retryAfter }
        guard live, let until = [deferredUntil, retry, peerRetry].compactMap({ $0 }).min() else { return .keep }
        if now >= until { return .close(until == retry ? .refusedByStore : until == peerRetry ? .refusedByPeer : .deferredAcceptable) }
        return .recheck(at: until)
    }
}

/// The keep-alive of live sessions (Protocols/sync.md §4.1, `SessionMessage.keepAlive`): an idle link
/// carries a keep-alive (a small sealed frame) about every `interval`, so it stays open instead of being
/// closed and handshaked again, and a side that heard nothing from its peer for `deadAfter` takes the
/// peer for gone (powered off, out of range, hung, a half-open TCP connection) and cuts the connection.
/// The two sides take turns (`LiveSessionRules.keepAlive`): one keep-alive per interval on the link, not
/// one per side, and each side still hears its peer at least every `alone` plus the link's delay.
public struct KeepAlivePolicy: Sendable, Equatable {
    /// A live side that sent nothing for this long sends a keep-alive (ms).
    public var interval: UInt64
    /// A live side that received nothing for this long cuts the connection (ms); more than `interval`.
    public var deadAfter: UInt64

    /// Creates a policy; `deadAfter` must exceed `interval` (a healthy peer's keep-alives would be late).
    public init(interval: UInt64, deadAfter: UInt64) {
        precondition(interval > 0 && deadAfter > interval, "keep-alive: deadAfter (\(deadAfter)) must exceed interval (\(interval)) > 0")
        self.interval = interval
        self.deadAfter = deadAfter
    }

    /// The node's default: a keep-alive after 10 minutes without sending (the old idle-close limit: no live
    /// session stays silent longer than it used to), the peer taken for gone after 25 minutes without a
    /// byte from it (two and a half intervals: one keep-alive late behind a slow link is not a death).
    /// Chosen by measurement (docs/simulator.md, "Keep-alive"): each halving of the interval doubles the
    /// keep-alive bytes (5 minutes: 6.5 MB a simulated day of `longnan`, more than the changes' own
    /// minimum), while TCP keepalive already notices a host that is gone within about 2 minutes.
    public static let `default` = KeepAlivePolicy(interval: 600_000, deadAfter: 1_500_000)

    /// A side that sent nothing for this long sends a keep-alive even when it is not its turn (ms): twice
    /// the interval, but always at least half an interval before `deadAfter` (so a healthy peer taking
    /// turns is never taken for gone behind a link's delay), and never less than the interval (with
    /// `deadAfter` below one and a half intervals both sides send every interval, as without turns).
    /// The default: 20 minutes, 5 before the 25-minute `deadAfter`.
    public var alone: UInt64 { max(interval, min(2 * interval, deadAfter - interval / 2)) }

    /// How long the side whose turn it is waits after the last frame either way (ms): the interval for the
    /// side that opened the connection, an eighth more for the other, so that two sides that sent at the
    /// same moment (frames crossing) fall into turns instead of crossing again every interval.
    public func turnWait(initiator: Bool) -> UInt64 { initiator ? interval : interval + interval / 8 }
}

/// What the keep-alive rule says about one live session now.
public enum KeepAliveDecision: Sendable, Equatable {
    /// Send a keep-alive now (`SyncSession.keepAlive`), then ask again.
    case send
    /// Nothing came from the peer for this long (ms): cut the connection, the peer is gone.
    case peerGone(silentFor: UInt64)
    /// Ask again at this time (ms).
    case recheck(at: UInt64)
}

extension LiveSessionRules {
    /// The idle-close limit that applies to a live session (`idle`'s `limit`): `liveIdle` without
    /// keep-alive, none with it. A kept-alive session is never silent, and silence from its peer is the
    /// keep-alive's `deadAfter` (a cut) rather than a normal close to be reopened at once.
    public static func idleLimit(liveIdle: UInt64?, keepAlive: KeepAlivePolicy?) -> UInt64? {
        keepAlive == nil ? liveIdle : nil
    }

    /// The keep-alive rule of a live session (`KeepAlivePolicy`). `lastSent` and `lastReceived` are when
    /// this side last wrote and last read a frame of the session (ms, the caller's clock); a clock that
    /// went back counts as no time passed. `initiator`: this side opened the connection.
    ///
    /// The sides take turns: it is this side's turn when the peer's last frame came after (or with) this
    /// side's last one, and it then sends once the link was quiet both ways for `turnWait`. So on an idle
    /// link the sides alternate, one keep-alive per interval in all, and each hears the other about every
    /// two intervals. A side sends regardless of turn after `alone` without sending: a peer that never
    /// takes its turn (one that sends every interval by the rule without turns, or a frame of ours it has
    /// not seen yet) still hears from us before its `deadAfter`.
    public static func keepAlive(now: UInt64, lastSent: UInt64, lastReceived: UInt64, initiator: Bool,
                                 policy: KeepAlivePolicy) -> KeepAliveDecision {
        let heard = now > lastReceived ? now - lastReceived : 0
        if heard >= policy.deadAfter { return .peerGone(silentFor: heard) }
        let said = now > lastSent ? now - lastSent : 0
        if said >= policy.alone { return .send }
        var next = min(now + (policy.alone - said), now + (policy.deadAfter - heard))
        if lastReceived >= lastSent {
            let quiet = min(said, heard), wait = policy.turnWait(initiator: initiator)
            if quiet >= wait { return .send }
            next = min(next, now + (wait - quiet))
        }
        return .recheck(at: next)
    }
}
