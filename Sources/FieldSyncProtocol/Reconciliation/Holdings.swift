import FieldSyncCore

// What a node holds, log by log: the input of reconciliation.

// `LogID` (author, scope) is defined in FieldSyncCore (Identifiers.swift); same encoding and order.

/// The largest height a head element can carry (heights are 31-bit; the top bit of the element's
/// position word is the start-marker flag).
public let maximumLogHeight: UInt32 = 0x7FFF_FFFF

/// One interval of consecutive changes of a log that a node holds, with the hash of its last change.
///
/// Heights count from 1. A node that received changes in order holds exactly one interval `[1, h]`.
public struct HeldInterval: Hashable, Sendable {
    /// Height of the first held change of the interval (≥ 1).
    public var start: UInt32
    /// Height of the last held change of the interval (≥ `start`, ≤ `maximumLogHeight`).
    public var end: UInt32
    /// The 32-byte hash of the change at height `end`.
    public var endHash: [UInt8]

    /// Creates an interval.
    /// - Precondition: `1 <= start <= end <= maximumLogHeight` and `endHash.count == 32`.
    public init(start: UInt32 = 1, end: UInt32, endHash: [UInt8]) {
        precondition(start >= 1 && start <= end && end <= maximumLogHeight, "invalid interval [\(start), \(end)]")
        precondition(endHash.count == 32, "change hashes are 32 bytes")
        self.start = start
        self.end = end
        self.endHash = endHash
    }

    /// The first four bytes of `endHash` as a big-endian integer (what head elements carry).
    public var endHashPrefix: UInt32 {
        UInt32(endHash[0]) << 24 | UInt32(endHash[1]) << 16 | UInt32(endHash[2]) << 8 | UInt32(endHash[3])
    }

    /// The summary of this interval that a peer learns through reconciliation.
    public var summary: IntervalSummary { IntervalSummary(start: start, end: end, endHashPrefix: endHashPrefix) }
}

/// What reconciliation reveals of a held interval: its bounds and the first 4 bytes of its end hash.
public struct IntervalSummary: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Height of the first change of the interval (≥ 1).
    public var start: UInt32
    /// Height of the last change of the interval.
    public var end: UInt32
    /// First four bytes of the hash of the change at `end`, big-endian.
    public var endHashPrefix: UInt32

    /// Creates a summary.
    public init(start: UInt32, end: UInt32, endHashPrefix: UInt32) {
        self.start = start
        self.end = end
        self.endHashPrefix = endHashPrefix
    }

    /// `[start, end]#prefix`.
    public var description: String {
        let h = String(endHashPrefix, radix: 16)
        return "[\(start), \(end)]#\(String(repeating: "0", count: 8 - h.count))\(h)"
    }

    /// Orders by start, then end, then hash prefix.
    public static func < (a: IntervalSummary, b: IntervalSummary) -> Bool {
        (a.start, a.end, a.endHashPrefix) < (b.start, b.end, b.endHashPrefix)
    }

    /// Whether a list of summaries is a valid holding: sorted, disjoint and not adjacent, within range.
    static func isValidHolding(_ list: [IntervalSummary]) -> Bool {
        var previousEnd: UInt32 = 0
        for (i, s) in list.enumerated() {
            guard s.start >= 1, s.start <= s.end, s.end <= maximumLogHeight else { return false }
            if i > 0 && s.start <= previousEnd &+ 1 { return false }
            previousEnd = s.end
        }
        return true
    }
}

/// A node's holdings for one log: its held intervals, sorted, disjoint and not adjacent.
public struct LogHoldings: Hashable, Sendable {
    /// The log.
    public var log: LogID
    /// Held intervals in increasing order; never empty (a log with nothing held is simply absent).
    public var intervals: [HeldInterval]
    /// Whether `intervals` are every range the store holds of the log (`SyncStore.holdings(of:)`); false
    /// when a store's view left one out (above `maximumLogHeight`, or its end change no longer held).
    /// Not part of the value: equal holdings are equal whatever their store held besides.
    var coversHeld = true

    public static func == (a: LogHoldings, b: LogHoldings) -> Bool { a.log == b.log && a.intervals == b.intervals }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(log)
        hasher.combine(intervals)
    }

    /// Creates holdings for one log.
    /// - Precondition: `intervals` is non-empty, sorted, disjoint and not adjacent (adjacent intervals
    ///   must be merged by the caller).
    public init(log: LogID, intervals: [HeldInterval]) {
        precondition(!intervals.isEmpty, "a held log has at least one interval")
        precondition(IntervalSummary.isValidHolding(intervals.map { $0.summary }), "intervals of \(log) are not canonical")
        self.log = log
        self.intervals = intervals
    }

    /// Holdings from intervals that already passed `init(log:intervals:)`'s checks (a store's cache).
    init(log: LogID, checkedIntervals intervals: [HeldInterval]) {
        self.log = log
        self.intervals = intervals
    }

    /// Holdings of the usual shape: the prefix `[1, height]` of the log.
    public init(log: LogID, height: UInt32, headHash: [UInt8]) {
        self.init(log: log, intervals: [HeldInterval(start: 1, end: height, endHash: headHash)])
    }
}

/// Everything a node holds within the scopes being reconciled: one entry per log, sorted by `LogID`.
public struct Holdings: Sendable, Equatable {
    /// The logs, in increasing `LogID` order, each at most once.
    public private(set) var logs: [LogHoldings]
    /// `canonicalDigestInput` and `elementCount`, when whoever made these holdings had them already (a kept
    /// reconciliation view: `ReconciliationViews`). Not part of the value.
    private var known: (digestInput: [UInt8], elementCount: Int)?

    public static func == (a: Holdings, b: Holdings) -> Bool { a.logs == b.logs }

    /// Holdings already in order, with their digest input and element count.
    /// - Precondition (checked by the caller, `ReconciliationViews`, in debug builds): `logs` are in
    ///   increasing `LogID` order, each once, and the two values are theirs.
    init(ordered logs: [LogHoldings], digestInput: [UInt8], elementCount: Int) {
        self.logs = logs
        known = (digestInput, elementCount)
    }

    /// Creates holdings from logs in any order.
    /// - Precondition: no log appears twice.
    public init(_ logs: [LogHoldings]) {
        // Sessions pass logs already in order (`SyncStore.orderedLogs`): check that in one pass, sort otherwise.
        var sorted = logs
        if zip(logs, logs.dropFirst()).contains(where: { !($0.log < $1.log) }) { sorted.sort { $0.log < $1.log } }
        for i in sorted.indices.dropFirst() {
            precondition(sorted[i - 1].log != sorted[i].log, "log \(sorted[i].log) appears twice")
        }
        self.logs = sorted
    }

    /// The canonical encoding that the hello digest covers (Protocols/sync-reconciliation.md, 4.1):
    /// varint log count, then per log: LogID, varint interval count, then per interval varint start,
    /// varint end and the 32-byte end hash.
    public var canonicalDigestInput: [UInt8] {
        if let known { return known.digestInput }
        var w = ByteWriter(capacity: logs.count * 96 + 8)
        w.writeVarint(UInt64(logs.count))
        for l in logs { Self.encodeDigestPart(l, to: &w) }
        return w.bytes
    }

    /// One log's part of `canonicalDigestInput`: its LogID, varint interval count, then per interval varint
    /// start, varint end and the 32-byte end hash.
    static func encodeDigestPart(_ l: LogHoldings, to w: inout ByteWriter) {
        l.log.encode(to: &w)  // its canonical bytes
        w.writeVarint(UInt64(l.intervals.count))
        for i in l.intervals {
            w.writeVarint(UInt64(i.start))
            w.writeVarint(UInt64(i.end))
            w.writeRaw(i.endHash)
        }
    }

    /// The number of head elements these holdings produce (one per interval, plus one start marker
    /// per interval that does not start at height 1).
    public var elementCount: Int {
        if let known { return known.elementCount }
        return logs.reduce(0) { $0 + Self.elementCount(of: $1) }
    }

    /// One log's share of `elementCount`.
    static func elementCount(of l: LogHoldings) -> Int { l.intervals.reduce(0) { $0 + ($1.start > 1 ? 2 : 1) } }
}

extension RandomAccessCollection where Index == Int {
    /// In a collection sorted by log, the first index whose element's log is not below `log` (`endIndex` if
    /// none): a binary search, for the stores' ordered logs and the sessions' ordered holdings.
    func firstIndex(notBelow log: LogID, by logOf: (Element) -> LogID) -> Int {
        var lo = startIndex, hi = endIndex
        while lo < hi {
            let mid = (lo + hi) / 2
            if logOf(self[mid]) < log { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
