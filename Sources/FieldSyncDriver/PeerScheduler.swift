// When to sync with whom: a pure state machine (no sockets, no clock, no global randomness). The daemon
// (`NodeDaemon`) feeds it events with the wall clock and a seeded generator and starts the sessions it
// returns; the simulator's `FieldSyncAgent` feeds it the same events with simulated time, one scheduler per
// node keyed by node index; the tests drive it with a fake clock (docs/node.md, "Scheduling").

import FieldSyncCore

/// A peer's network address, `host:port`.
public struct PeerAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Host name or IP literal.
    public var host: String
    /// TCP port.
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT` (IPv6 literals as `[::1]:7000`); nil if malformed or the port is out of range.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65_535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(" ") else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func < (a: PeerAddress, b: PeerAddress) -> Bool { (a.host, a.port) < (b.host, b.port) }
}

/// How the node learned of a peer.
public enum PeerSource: String, Sendable, Codable {
    /// Listed in the config file (`peers`).
    case `static`
    /// Found by LAN discovery while running.
    case discovered
}

/// The scheduler's tunables (milliseconds).
public struct SchedulePolicy: Sendable, Equatable {
    /// Most sessions at once, incoming and outgoing together.
    public var maxSessions = 8
    /// After a finished session, sync the same peer again after this long even if nothing changed.
    public var resyncInterval: UInt64 = 300_000
    /// First retry delay after a failure.
    public var backoffMin: UInt64 = 1_000
    /// Largest retry delay.
    public var backoffMax: UInt64 = 300_000
    /// A change is pushed this long after it is noticed; further changes within the window ride along.
    public var pushDebounce: UInt64 = 250
    /// Most sessions at once to *unproven* peers: discovered peers that never completed a handshake with
    /// this node. They do not count toward `maxSessions` (a forged beacon cannot take a slot of a
    /// configured or proven peer), and only this many run at once.
    public var maxProbes = 2
    /// How often the node asks what is due (ms). A peer that is due while every slot is taken waits for
    /// the next tick after one frees; the simulator re-checks it at the same period.
    public var tick: UInt64 = 50

    /// The default policy.
    public init() {}
}

/// What the scheduler knows of one peer (`PeerState` for the node's peers, keyed by address).
public struct ScheduledPeer<Peer: Hashable & Comparable & Sendable>: Sendable, Equatable {
    /// Where it is (the node: its address; the simulator: its node index).
    public var address: Peer
    /// How it was learned.
    public var source: PeerSource
    /// Its device id, once a session authenticated it.
    public var device: DeviceID?
    /// When the next outgoing session is due (ms); nil while one runs.
    public var due: UInt64?
    /// Whether an outgoing session to it runs now.
    public var running = false
    /// Whether that outgoing session is in its live phase (open, carrying pushes), and since when (ms).
    public var live = false
    public var liveSince: UInt64?
    /// Whether changes arrived while a session ran (the session's reconciliation may predate them).
    public var dirty = false
    /// Failures since the last finished session.
    public var failures = 0
    /// When it was added, last discovered, and last synced (finished or failed), ms.
    public var firstSeen: UInt64, lastSeen: UInt64
    /// The last session's end (ms) and whether it finished.
    public var lastSessionEnd: UInt64?
    /// Whether the last session finished.
    public var lastSessionFinished: Bool?
}

/// Decides when to open a sync session to which peer:
///
/// - on contact: a newly added peer (static at start, or discovered) is due at once;
/// - periodic resync: after a finished session, again after `resyncInterval`;
/// - live sessions: a peer whose device has a session in its live phase (`sessionLive`, either direction)
///   gets no new session, neither on a store change (the daemon pushes on the live session) nor for the
///   periodic resync; when its last live session ends, it is due again after `backoffMin` (and backs off
///   as usual if that attempt fails);
/// - push: when the local store changes (own write, a write by another process, or changes received
///   from one peer), every other peer not in backoff and without a live session is due after
///   `pushDebounce` (the first change opens the window, later ones ride along); a peer with a session
///   running is marked dirty and re-synced `pushDebounce` after that session ends, because its
///   reconciliation may predate the change;
/// - failure: retry with jittered exponential backoff, `base = min(backoffMax, backoffMin * 2^(failures-1))`
///   and a delay drawn uniformly from `[max(backoffMin, base/2), base]`;
/// - at most `maxSessions` sessions at once to configured and proven peers (a peer is proven once a
///   session authenticated it), counting the incoming ones the caller reports; sessions in their live
///   phase do not count (they are idle but for short pushes, and must not starve new contacts);
/// - discovered peers not proven yet (a beacon is only a hint; it may be forged) get at most `maxProbes`
///   sessions at once, outside `maxSessions`, and back off on failure like any peer: hearing their beacon
///   again does not shorten the backoff (only a proven peer seen again is retried at once).
///
/// Pure: `now` and the generator are passed in; ties are broken by address, so a seed and a sequence of
/// events give one schedule.
///
/// The node's scheduler is `SyncScheduler` (peers keyed by `PeerAddress`); the simulator keys peers by node.
///
/// ```swift
/// var s = SyncScheduler(policy: SchedulePolicy(), seed: 42)
/// s.addPeer(PeerAddress(host: "10.0.0.2", port: 7000), source: .static, now: 0)
/// let start = s.due(now: 0, incoming: 0)   // [10.0.0.2:7000]
/// s.sessionEnded(start[0], finished: true, device: nil, now: 40)
/// ```
public struct PeerScheduler<Peer: Hashable & Comparable & Sendable>: Sendable {
    /// What the scheduler knows of one peer.
    public typealias State = ScheduledPeer<Peer>
    /// Tunables.
    public let policy: SchedulePolicy
    // `@usableFromInline` with the `@inlinable` queries below: a driver in another module (the simulator's
    // agent, `SyncDriver<Int32>`) then runs them specialized for its peer type instead of through generic
    // metadata and value witnesses on every tick (a sixth of a simulated week's time).
    @usableFromInline var rng: SplitMix64
    @usableFromInline var peers: [Peer: State] = [:]
    /// Live sessions open per peer device (incoming and outgoing).
    @usableFromInline var liveDevices: [DeviceID: Int] = [:]
    /// Whether `stop()` was called (nothing more is started).
    public private(set) var stopped = false

    /// Creates a scheduler with a seeded generator for the jitter.
    public init(policy: SchedulePolicy, seed: UInt64) {
        self.init(policy: policy, random: SplitMix64(seed: seed))
    }

    /// Creates a scheduler drawing the jitter from `random` (the caller's seeded stream).
    public init(policy: SchedulePolicy, random: SplitMix64) {
        self.policy = policy
        rng = random
    }

    /// Every known peer, sorted by address.
    public var allPeers: [State] { peers.keys.sorted().map { peers[$0]! } }

    /// One peer's state.
    @inlinable public func peer(_ address: Peer) -> State? { peers[address] }

    /// Adds a peer (or refreshes one seen again). A new peer is due at once (sync on contact); a known one
    /// keeps its schedule, except that a proven discovered peer (one a session authenticated before) seen
    /// again after failures is retried at the earlier of its backoff and `backoffMin` (it is back in
    /// range). An unproven one keeps its backoff: a forged beacon repeated cannot make the node hammer it.
    /// - Returns: whether the peer was new.
    @discardableResult
    public mutating func addPeer(_ address: Peer, source: PeerSource, now: UInt64) -> Bool {
        if var p = peers[address] {
            p.lastSeen = now
            if source == .static { p.source = .static }  // a configured peer stays configured
            if source == .discovered, p.device != nil, p.failures > 0, !p.running, let due = p.due {
                p.due = min(due, now + policy.backoffMin)
            }
            peers[address] = p
            return false
        }
        peers[address] = State(address: address, source: source, due: now, firstSeen: now, lastSeen: now)
        return true
    }

    /// Forgets a peer (a running session still reports its end, which is then ignored). With `onlyIf`, only
    /// a peer of that source is forgotten: discovery losing a beacon never drops a peer from the config.
    public mutating func removePeer(_ address: Peer, onlyIf source: PeerSource? = nil) {
        guard let p = peers[address], source == nil || p.source == source else { return }
        peers[address] = nil
    }

    /// Whether `device` has a session in its live phase with this node (either direction).
    @inlinable public func isLive(_ device: DeviceID) -> Bool { liveDevices[device] != nil }

    /// Whether a new session to `p` would duplicate a live one (its device is known and live).
    @inlinable func covered(_ p: State) -> Bool {
        guard let d = p.device else { return false }
        return liveDevices[d] != nil
    }

    /// A session with `device` entered its live phase.
    /// - Parameter address: the peer this node connected to, for an outgoing session (nil: incoming). It
    ///   is marked live: the contact worked (its failures are reset) and it stays running until
    ///   `sessionEnded`, without counting toward `maxSessions`.
    @inlinable public mutating func sessionLive(device: DeviceID, address: Peer?, now: UInt64) {
        liveDevices[device, default: 0] += 1
        guard let address, var p = peers[address], p.running else { return }
        p.device = device
        p.live = true
        p.liveSince = now
        p.failures = 0
        p.dirty = false  // the live session pushes what changed from now on, and pushed what changed meanwhile
        peers[address] = p
    }

    /// A session with `device` that was live ended (either direction; for an outgoing one, call
    /// `sessionEnded` as well). When it was the device's last, each peer of that device not running and not
    /// in backoff is due again after `backoffMin` at the latest: the link may be back at once (the peer
    /// restarted, or closed the session to reconcile anew); if it is not, the attempt fails and backs off.
    @inlinable public mutating func liveSessionEnded(device: DeviceID, now: UInt64) {
        guard let n = liveDevices[device] else { return }
        if n > 1 {
            liveDevices[device] = n - 1
            return
        }
        liveDevices[device] = nil
        for address in peers.keys {
            var p = peers[address]!
            guard p.device == device, !p.running, p.failures == 0 else { continue }
            p.due = min(p.due ?? .max, now + policy.backoffMin)
            peers[address] = p
        }
    }

    /// The local store changed at `now` (own write, another process's write, or changes received).
    /// Peers with a live session are skipped: the daemon pushes to them on that session.
    /// - Parameter except: the device the changes came from, if known; it is not pushed to.
    @inlinable public mutating func storeChanged(now: UInt64, except: DeviceID? = nil) {
        for address in peers.keys {
            if let except, peers[address]!.device == except { continue }
            peerChanged(address, now: now)
        }
    }

    /// The local store changed in a way that concerns `address` (`storeChanged` for one peer): unless it has
    /// a live session or is in backoff, it is due after `pushDebounce` at the latest; a peer with a session
    /// running is marked dirty (re-synced `pushDebounce` after that session ends). The simulator calls this
    /// for the contacts whose peer may hold what changed (a node calls `storeChanged`: every peer).
    @inlinable public mutating func peerChanged(_ address: Peer, now: UInt64) {
        guard var p = peers[address], !p.live, !covered(p) else { return }
        if p.running {
            p.dirty = true
        } else if p.failures == 0, let due = p.due {
            p.due = min(due, now + policy.pushDebounce)
        }
        peers[address] = p
    }

    /// Whether `p` is configured or was authenticated by a session (not only heard of in a beacon).
    @inlinable public static func isProven(_ p: State) -> Bool { p.source == .static || p.device != nil }

    /// Outgoing sessions running now that count toward `maxSessions` (proven peers marked running, not live).
    @inlinable public var outgoing: Int {
        // Plain loops here and below: these run on every driver input (a simulator's hot path); `filter`
        // and a key path over the generic peer table cost an array and a key-path instantiation each time.
        var n = 0
        for p in peers.values where p.running && !p.live && Self.isProven(p) { n += 1 }
        return n
    }

    /// Outgoing sessions running now to unproven peers (bounded by `maxProbes`).
    @inlinable public var probing: Int {
        var n = 0
        for p in peers.values where p.running && !Self.isProven(p) { n += 1 }
        return n
    }

    /// The peers to connect to now, earliest due first (ties by address): at most
    /// `maxSessions - incoming - outgoing` proven peers and `maxProbes - probing` unproven ones. They are
    /// marked running until `sessionEnded`. A peer whose device has a live session is not started (its due
    /// time waits until that session ends).
    /// - Parameter incoming: incoming sessions running now that count (the node counts them; live ones not).
    @inlinable public mutating func due(now: UInt64, incoming: Int) -> [Peer] {
        guard !stopped else { return [] }
        var free = policy.maxSessions - incoming - outgoing
        var probes = policy.maxProbes - probing
        guard free > 0 || probes > 0 else { return [] }
        var candidates: [State] = []
        for p in peers.values where !p.running && (p.due ?? .max) <= now && !covered(p) { candidates.append(p) }
        guard !candidates.isEmpty else { return [] }
        candidates.sort { ($0.due!, $0.address) < ($1.due!, $1.address) }
        var ready: [State] = []
        for p in candidates {
            if Self.isProven(p) {
                guard free > 0 else { continue }
                free -= 1
            } else {
                guard probes > 0 else { continue }
                probes -= 1
            }
            ready.append(p)
        }
        var out: [Peer] = []
        for p in ready {
            var q = p
            q.running = true
            q.dirty = false
            q.due = nil
            peers[p.address] = q
            out.append(p.address)
        }
        return out
    }

    /// An outgoing session ended. One that was live and finished (its connection closed while idle) is due
    /// again after `backoffMin`: the link may be back at once; a failed one backs off as any failure.
    /// - Parameters:
    ///   - finished: whether it finished (false: connect failure, refusal, stall, protocol error).
    ///   - device: the peer's device id if the handshake completed.
    @inlinable public mutating func sessionEnded(_ address: Peer, finished: Bool, device: DeviceID?, now: UInt64) {
        guard var p = peers[address] else { return }
        let wasLive = p.live
        p.running = false
        p.live = false
        p.liveSince = nil
        if let device { p.device = device }
        p.lastSessionEnd = now
        p.lastSessionFinished = finished
        if finished {
            p.failures = 0
            p.due = now + (wasLive ? policy.backoffMin : p.dirty ? policy.pushDebounce : policy.resyncInterval)
        } else {
            p.failures += 1
            p.due = now + backoff(failures: p.failures)
        }
        p.dirty = false
        peers[address] = p
    }

    /// The retry delay after `failures` consecutive failures (draws from the generator).
    @inlinable public mutating func backoff(failures: Int) -> UInt64 {
        let base = Self.backoffBase(failures: failures, policy: policy)
        let low = max(policy.backoffMin, base / 2)
        guard base > low else { return base }
        return low + rng.next() % (base - low + 1)
    }

    /// The upper bound of the retry delay after `failures` failures.
    @inlinable public static func backoffBase(failures: Int, policy: SchedulePolicy) -> UInt64 {
        let shift = min(max(failures - 1, 0), 40)
        let (grown, overflow) = policy.backoffMin.multipliedReportingOverflow(by: 1 << UInt64(shift))
        return overflow ? policy.backoffMax : min(policy.backoffMax, grown)
    }

    /// When the next peer becomes due (ms), or nil if none is waiting (peers with a live session wait).
    @inlinable public var nextDue: UInt64? {
        guard !stopped else { return nil }
        var next: UInt64?
        for p in peers.values where !covered(p) {
            if let d = p.due, next.map({ d < $0 }) ?? true { next = d }
        }
        return next
    }

    /// Stops scheduling: `due` returns nothing from now on (graceful shutdown).
    public mutating func stop() { stopped = true }
}

/// The node's scheduler: peers keyed by network address.
public typealias SyncScheduler = PeerScheduler<PeerAddress>

/// What the node's scheduler knows of one peer.
public typealias PeerState = ScheduledPeer<PeerAddress>
