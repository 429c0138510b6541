// Who may hold a connection before it has proven anything, and how much a source may make the node log:
// pure bookkeeping (no sockets, no clock; `now` is passed in), used by `FieldSyncNode` on its loop.
// docs/node.md ("Admission and limits") describes the policy; issue 13 items 1 and 3 are why it exists.

/// Why the node closed a connection at accept (or at authentication), without running a session.
public enum RefusalReason: String, Sendable, CaseIterable, Codable {
    /// Every place of the unauthenticated pool is taken by sources with no more pending handshakes than
    /// this one's.
    case handshakePoolFull = "handshake_pool_full"
    /// This source address already has its maximum of handshakes in progress.
    case perSource = "per_source"
    /// This source address, which has not authenticated recently, started its maximum of handshakes in
    /// the current window (`HandshakeRateLimiter`).
    case handshakeRate = "handshake_rate"
    /// The node already runs its maximum of authenticated sessions (live ones not counted).
    case sessionLimit = "session_limit"
    /// The node is shutting down.
    case draining
}

/// Why the node cut a connection it had accepted or opened.
public enum CutReason: String, Sendable, CaseIterable, Codable {
    /// The handshake did not complete within the handshake deadline.
    case handshakeTimeout = "handshake_timeout"
    /// Fewer bytes than the minimum moved in a progress interval while the session had work to do.
    case tooSlow = "too_slow"
    /// No bytes in either direction within the idle timeout while the session had work to do (or, live,
    /// waited for the rest of a frame of the peer).
    case idle
    /// An unauthenticated connection closed to make room for one from a source with fewer pending
    /// handshakes (the pool was full).
    case evicted
    /// A live session heard nothing from its peer (no whole frame, not even a keep-alive: bytes of a
    /// frame that never completes do not count) for the keep-alive's `deadAfter`: the peer is gone or
    /// hung, the connection is half-open, or a frame never completes (a corrupted length prefix, a peer
    /// trickling a large frame).
    case peerGone = "peer_gone"
}

/// Refused and cut connections by reason since the node started (`FieldSyncNode.connectionCounters`).
public struct ConnectionCounters: Sendable, Equatable, Codable {
    /// Connections refused, by `RefusalReason.rawValue`.
    public var refused: [String: Int] = [:]
    /// Connections cut, by `CutReason.rawValue`.
    public var cut: [String: Int] = [:]

    /// No connections refused or cut.
    public init() {}

    /// All refusals.
    public var refusedTotal: Int { refused.values.reduce(0, +) }
    /// All cuts.
    public var cutTotal: Int { cut.values.reduce(0, +) }
}

/// The pool of incoming connections whose handshake has not completed: at most `capacity` at once and
/// at most `perSource` from one source address. They never take a session slot: a host that opens
/// connections and never authenticates can only fill this pool, and only its fair share of it.
///
/// When the pool is full, a newcomer from a source with fewer pending handshakes than the busiest source
/// takes the place of that source's oldest pending handshake (which is cut, `CutReason.evicted`); a
/// newcomer from a source already among the busiest is refused. So a host with many connections cannot
/// keep a host with none out, and every pending handshake is bounded in time by the handshake deadline.
///
/// A handshake from a *proven* source (one from which a handshake completed recently,
/// `HandshakeRateLimiter.isProven`) is never evicted by a newcomer from an unproven source. Without that,
/// a flood from more sources than the pool has places turns the pool over faster than a slow honest
/// handshake completes (each newcomer from a fresh source evicts the oldest entry, and a handshake over a
/// slow link or to a busy node is the oldest), so a peer that syncs every day would lose every handshake
/// for as long as the flood lasts. A proven newcomer from a source with nothing pending takes the place
/// of an unproven entry first (the busiest unproven source's oldest, whatever its count); otherwise the
/// rule above applies, unproven entries first. So an enrolled insider gains no more than any fresh
/// source had: one place at a time from its address.
///
/// ```swift
/// var pool = HandshakeAdmission(capacity: 16, perSource: 4)
/// switch pool.admit(7, source: "10.0.0.9", now: now, proven: rate.isProven("10.0.0.9", now: now)) {
/// case .admit: break
/// case let .admitEvicting(victim): cut(victim)
/// case let .refuse(reason): close(reason)
/// }
/// pool.release(7)   // authenticated, failed or closed
/// ```
public struct HandshakeAdmission: Sendable {
    /// Most pending handshakes at once.
    public let capacity: Int
    /// Most pending handshakes from one source address.
    public let perSource: Int
    private var pending: [UInt64: (source: String, since: UInt64, proven: Bool)] = [:]
    private var bySource: [String: Int] = [:]

    /// What to do with a new connection.
    public enum Decision: Sendable, Equatable {
        /// Take it.
        case admit
        /// Take it and cut the pending connection with this id.
        case admitEvicting(UInt64)
        /// Close it.
        case refuse(RefusalReason)
    }

    /// An empty pool.
    /// - Precondition: `capacity >= 1`, `perSource >= 1`.
    public init(capacity: Int, perSource: Int) {
        precondition(capacity >= 1 && perSource >= 1, "pool sizes must be positive")
        self.capacity = capacity
        self.perSource = perSource
    }

    /// Pending handshakes now.
    public var count: Int { pending.count }

    /// Pending handshakes from `source` now.
    public func count(from source: String) -> Int { bySource[source] ?? 0 }

    /// Decides on connection `id` from `source` arriving at `now`; an admitted one is pending until
    /// `release`. An evicted one is removed from the pool here.
    /// - Parameter proven: whether a handshake from `source` completed recently (its pending handshakes
    ///   are then protected from unproven newcomers).
    public mutating func admit(_ id: UInt64, source: String, now: UInt64, proven: Bool = false) -> Decision {
        precondition(pending[id] == nil, "connection \(id) admitted twice")
        let mine = bySource[source] ?? 0
        guard mine < perSource else { return .refuse(.perSource) }
        if pending.count < capacity {
            insert(id, source: source, now: now, proven: proven)
            return .admit
        }
        // Full. Candidates: unproven entries, and proven ones only for a proven newcomer. Among them the
        // busiest source (ties: the one holding the oldest entry) gives up its oldest entry if it holds more
        // than the newcomer's source; a proven newcomer with nothing pending takes an unproven entry
        // whatever its count.
        func victim(proven candidates: Bool) -> (id: UInt64, count: Int, since: UInt64)? {
            var v: (id: UInt64, count: Int, since: UInt64)?
            for (pid, entry) in pending where entry.proven == candidates {
                let c = bySource[entry.source] ?? 0
                if let w = v, c < w.count || (c == w.count && (entry.since, pid) > (w.since, w.id)) { continue }
                v = (pid, c, entry.since)
            }
            return v
        }
        let chosen: UInt64?
        if let v = victim(proven: false), (proven && mine == 0) || v.count > mine {
            chosen = v.id
        } else if proven, let v = victim(proven: true), v.count > mine {
            chosen = v.id
        } else {
            chosen = nil
        }
        guard let evict = chosen else { return .refuse(.handshakePoolFull) }
        release(evict)
        insert(id, source: source, now: now, proven: proven)
        return .admitEvicting(evict)
    }

    /// Removes connection `id` (authenticated, failed or closed); unknown ids are ignored.
    public mutating func release(_ id: UInt64) {
        guard let entry = pending.removeValue(forKey: id) else { return }
        let left = (bySource[entry.source] ?? 1) - 1
        bySource[entry.source] = left > 0 ? left : nil
    }

    private mutating func insert(_ id: UInt64, source: String, now: UInt64, proven: Bool) {
        pending[id] = (source, now, proven)
        bySource[source, default: 0] += 1
    }
}

/// How many handshakes a source address that has not authenticated recently may start: at most `burst`
/// per `window` per source; a source from which a handshake completed within `provenFor` is not limited,
/// so an honest peer that syncs often, or reconnects after a cut, is never slowed by it. Each handshake
/// the node answers costs its one loop a key agreement and a certificate message; refusing a connection
/// at accept costs almost nothing. So a flood of handshakes from hosts that never authenticate takes a
/// bounded share of the loop (issue 13: honest sessions' latency under a handshake flood).
///
/// At most `maxSources` unproven sources are tracked separately (further ones share one budget, as in
/// `LogRateLimiter`), and at most `maxSources` proven ones (the least recently proven is forgotten first),
/// so a flood from many addresses costs bounded memory.
///
/// ```swift
/// var rate = HandshakeRateLimiter(burst: 8, window: 10_000)
/// guard rate.allows("10.0.0.9", now: now) else { return close(.handshakeRate) }
/// rate.authenticated("10.0.0.9", now: later)   // from now on not limited for `provenFor`
/// ```
public struct HandshakeRateLimiter: Sendable {
    /// Handshakes an unproven source may start per window.
    public let burst: Int
    /// The window, in milliseconds.
    public let window: UInt64
    /// How long a source stays proven after a handshake from it completed, in milliseconds.
    public let provenFor: UInt64
    /// Sources tracked separately, unproven and proven each.
    public let maxSources: Int
    private var starts: LogRateLimiter
    private var proven: [String: UInt64] = [:]

    /// A limiter.
    /// - Precondition: `burst >= 1`, `maxSources >= 1`.
    public init(burst: Int = 8, window: UInt64 = 10_000, provenFor: UInt64 = 3_600_000, maxSources: Int = 1_024) {
        precondition(burst >= 1 && maxSources >= 1, "limits must be positive")
        self.burst = burst
        self.window = window
        self.provenFor = provenFor
        self.maxSources = maxSources
        starts = LogRateLimiter(burst: burst, window: window, maxSources: maxSources)
    }

    /// Whether `source` may start a handshake at `now` (counts it if so).
    public mutating func allows(_ source: String, now: UInt64) -> Bool {
        if let at = proven[source], now >= at, now - at < provenFor { return true }
        return starts.check(source, now: now) != .suppress
    }

    /// A handshake from `source` completed at `now`: the source is proven for `provenFor`.
    public mutating func authenticated(_ source: String, now: UInt64) {
        if proven[source] == nil, proven.count >= maxSources, let oldest = proven.min(by: { $0.value < $1.value })?.key {
            proven[oldest] = nil
        }
        proven[source] = now
    }

    /// Whether `source` is proven at `now`.
    public func isProven(_ source: String, now: UInt64) -> Bool {
        guard let at = proven[source] else { return false }
        return now >= at && now - at < provenFor
    }
}

/// Limits how many log lines one source can cause: at most `burst` lines per `window` per source; the
/// rest are counted, and the next line let through says how many were suppressed. Tracks at most
/// `maxSources` sources (further sources share one budget), so a flood from many addresses costs
/// bounded memory and bounded log.
public struct LogRateLimiter: Sendable {
    /// Lines per source per window.
    public let burst: Int
    /// The window, in milliseconds.
    public let window: UInt64
    /// Sources tracked separately.
    public let maxSources: Int
    private var sources: [String: (start: UInt64, lines: Int, suppressed: Int)] = [:]
    /// The key shared by sources beyond `maxSources`.
    static let overflow = "(other sources)"

    /// What to do with a line.
    public enum Decision: Sendable, Equatable {
        /// Log it; `suppressed` lines of this source were dropped since the last one logged.
        case log(suppressed: Int)
        /// Drop it.
        case suppress
    }

    /// A limiter.
    public init(burst: Int = 5, window: UInt64 = 60_000, maxSources: Int = 1_024) {
        precondition(burst >= 1 && maxSources >= 1, "limits must be positive")
        self.burst = burst
        self.window = window
        self.maxSources = maxSources
    }

    /// Whether a line caused by `source` at `now` may be logged.
    public mutating func check(_ source: String, now: UInt64) -> Decision {
        var key = source
        if sources[key] == nil, sources.count >= maxSources {
            sources = sources.filter { now < $0.value.start || now - $0.value.start < window || $0.value.suppressed > 0 }
            if sources.count >= maxSources { key = Self.overflow }
        }
        var s = sources[key] ?? (now, 0, 0)
        if now >= s.start, now - s.start >= window {
            s.start = now
            s.lines = 0
        }
        guard s.lines < burst else {
            s.suppressed += 1
            sources[key] = s
            return .suppress
        }
        let suppressed = s.suppressed
        s.lines += 1
        s.suppressed = 0
        sources[key] = s
        return .log(suppressed: suppressed)
    }
}
