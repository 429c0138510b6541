// The driver policy of a FieldSync node as one sans-IO state machine: which peers to contact when, and
// what to do when sessions start, go live, end, or the store changes. No sockets, no clock, no global
// randomness: `now` comes with every input and the jitter from a seeded `SplitMix64`. Two drivers run it:
// `NodeDaemon` (SwiftNIO, the wall clock) and the simulator's `FieldSyncAgent` (simulated time, one
// driver per node keyed by node index), so the simulator measures the node's policy, not a copy of it.
//
// The pieces (each documented where it is defined):
// - `PeerScheduler`: when to connect to whom (on contact, push debounce, resync, jittered backoff,
//   session slots, probes of unproven peers, live sessions).
// - `SyncDriver`: the scheduler behind one event/decision interface, with a trace for comparisons.
// - `LiveSessionRules`: which of two live sessions between the same pair is kept; when a live session
//   that refused changes, or that stayed silent, closes.
// - `ReceiptScheduler`: when HQ writes receipts after changes came in.
// - `StoreHeadsTrigger`: what a move of the store's heads causes (reload, live pushes, new sessions).

import FieldSyncCore

/// An input of the driver: something that happened to the node.
public enum DriverEvent<Peer: Hashable & Comparable & Sendable>: Sendable, Equatable {
    /// A peer was configured or discovered (or seen again).
    case peerAdded(Peer, PeerSource)
    /// A peer is gone (discovery lost it, or the simulator's contact ended). With a source, only a peer of
    /// that source is forgotten.
    case peerRemoved(Peer, onlyIf: PeerSource?)
    /// A session with `device` entered its live phase; `outgoing` is the peer this node connected to (nil
    /// for an incoming session).
    case sessionLive(device: DeviceID, outgoing: Peer?)
    /// A session with `device` that had gone live ended (either direction).
    case liveSessionEnded(device: DeviceID)
    /// An outgoing session ended (`finished`: false for connect failure, refusal, stall, protocol error).
    case sessionEnded(Peer, finished: Bool, device: DeviceID?)
    /// The local store changed (own write, another process's, changes received from `except`).
    case storeChanged(except: DeviceID?)
    /// The local store changed in a way that concerns this one peer (`PeerScheduler.peerChanged`).
    case peerChanged(Peer)
    /// Time passed: start what is due; `incoming` counts the incoming sessions that take a session slot.
    case tick(incoming: Int)
    /// Stop starting sessions (graceful shutdown).
    case stop
}

/// An output of the driver: what the I/O layer is to do.
public enum DriverDecision<Peer: Hashable & Comparable & Sendable>: Sendable, Equatable {
    /// Open an outgoing session to this peer now (it is marked running until `sessionEnded`).
    case connect(Peer)
    /// Nothing is due before this time (ms): tick again then at the latest (nil: nothing is waiting).
    case nextTick(UInt64?)
}

/// The driver: the scheduler behind one event/decision interface. Every input returns the decisions it
/// caused; `trace` (when enabled) keeps both, so that two drivers fed the same inputs can be compared
/// decision by decision (`Tests/FieldSyncDriverTests`).
///
/// ```swift
/// var d = SyncDriver<PeerAddress>(policy: SchedulePolicy(), seed: 1)
/// _ = d.handle(.peerAdded(PeerAddress(host: "10.0.0.2", port: 7000), .static), now: 0)
/// d.handle(.tick(incoming: 0), now: 0)   // [.connect(10.0.0.2:7000), .nextTick(nil)]
/// ```
public struct SyncDriver<Peer: Hashable & Comparable & Sendable>: Sendable {
    /// One input and what it returned.
    public struct Step: Sendable, Equatable {
        /// When (ms, the driver's clock).
        public var now: UInt64
        /// The input.
        public var event: DriverEvent<Peer>
        /// The decisions it returned.
        public var decisions: [DriverDecision<Peer>]

        @usableFromInline init(now: UInt64, event: DriverEvent<Peer>, decisions: [DriverDecision<Peer>]) {
            self.now = now
            self.event = event
            self.decisions = decisions
        }
    }

    /// The scheduler (read it for status; feed it only through `handle`).
    @inlinable public var scheduler: PeerScheduler<Peer> { _scheduler }
    // Stored under other names so that `handle` can be `@inlinable` (a driver in another module runs it
    // specialized for its peer type; `private(set)` setters cannot be used from inlinable code).
    @usableFromInline var _scheduler: PeerScheduler<Peer>
    /// Every step so far, when created with `tracing` (empty otherwise).
    @inlinable public var trace: [Step] { _trace }
    @usableFromInline var _trace: [Step] = []
    @usableFromInline let tracing: Bool

    /// Creates a driver with the node's scheduling policy and a seeded generator for the jitter.
    public init(policy: SchedulePolicy, seed: UInt64, tracing: Bool = false) {
        _scheduler = PeerScheduler(policy: policy, seed: seed)
        self.tracing = tracing
    }

    /// Feeds one input at `now`; returns what to do. Only `tick` starts sessions (it returns the peers to
    /// connect to, then when to tick next); the other inputs update the state and return nothing, except
    /// `peerAdded` of a new peer, which returns `nextTick(now)` (sync on contact).
    @discardableResult
    @inlinable public mutating func handle(_ event: DriverEvent<Peer>, now: UInt64) -> [DriverDecision<Peer>] {
        var out: [DriverDecision<Peer>] = []
        switch event {
        case let .peerAdded(peer, source):
            if _scheduler.addPeer(peer, source: source, now: now) { out.append(.nextTick(now)) }
        case let .peerRemoved(peer, source):
            _scheduler.removePeer(peer, onlyIf: source)
        case let .sessionLive(device, outgoing):
            _scheduler.sessionLive(device: device, address: outgoing, now: now)
        case let .liveSessionEnded(device):
            _scheduler.liveSessionEnded(device: device, now: now)
        case let .sessionEnded(peer, finished, device):
            _scheduler.sessionEnded(peer, finished: finished, device: device, now: now)
        case let .storeChanged(except):
            _scheduler.storeChanged(now: now, except: except)
        case let .peerChanged(peer):
            _scheduler.peerChanged(peer, now: now)
        case let .tick(incoming):
            out = _scheduler.due(now: now, incoming: incoming).map { .connect($0) }
            out.append(.nextTick(_scheduler.nextDue))
        case .stop:
            _scheduler.stop()
        }
        if tracing { _trace.append(Step(now: now, event: event, decisions: out)) }
        return out
    }

    /// Clears the trace (a long run keeps only what a comparison needs).
    public mutating func clearTrace() { _trace.removeAll(keepingCapacity: true) }
}

/// Every tunable of the driver policy, with the node's defaults (`NodeConfiguration` and the config file
/// map onto it; the simulator runs it as it is, with its scenario's receipt interval).
public struct DriverPolicy: Sendable, Equatable {
    /// When to contact whom.
    public var schedule = SchedulePolicy()
    /// A live session silent this long closes when idle (ms; nil: never). Node default 10 minutes. Only
    /// without `liveKeepAlive` (`LiveSessionRules.idleLimit`): a kept-alive session is never silent.
    public var liveIdle: UInt64? = 600_000
    /// The keep-alive of live sessions (nil: off): a keep-alive frame after `interval` without sending,
    /// the connection cut after `deadAfter` without hearing from the peer. Node default: 10 and 25 minutes
    /// (`KeepAlivePolicy.default`).
    public var liveKeepAlive: KeepAlivePolicy? = .default
    /// A live session whose store refused changes closes when idle this long after the first refusal (ms).
    public var refusedRetry: UInt64 = 600_000
    /// HQ's receipt timing.
    public var receipts = ReceiptPolicy()

    /// The node's defaults.
    public init() {}
}
