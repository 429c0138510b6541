// Metrics: log-linear histograms, ONE-style message statistics, contact and byte accounting.

/// A log-linear histogram of non-negative integers (milliseconds, bytes): exact below 32, then 32
/// sub-buckets per power of two (relative error under 3.2%). Fixed size, no allocation when recording.
public struct Histogram: Sendable {
    private var counts = [UInt64](repeating: 0, count: 1_408)
    /// Number of recorded values.
    public private(set) var count: UInt64 = 0
    /// Sum of recorded values (exact).
    public private(set) var sum: Double = 0
    /// Largest recorded value (exact), or -1 when empty.
    public private(set) var max: Int64 = -1
    /// Smallest recorded value (exact), or -1 when empty.
    public private(set) var min: Int64 = -1

    /// Creates an empty histogram.
    public init() {}

    @inline(__always) static func index(_ v: UInt64) -> Int {
        if v < 32 { return Int(v) }
        let msb = 63 - v.leadingZeroBitCount
        let shift = msb - 5
        return 32 + shift * 32 + Int(v >> UInt64(shift)) - 32
    }

    static func bounds(_ i: Int) -> (Int64, Int64) {
        if i < 32 { return (Int64(i), Int64(i)) }
        let shift = (i - 32) / 32
        let m = Int64((i - 32) % 32 + 32)
        return (m << Int64(shift), ((m + 1) << Int64(shift)) - 1)
    }

    /// Records `value` (negative values are a bug).
    @inline(__always) public mutating func record(_ value: Int64) {
        precondition(value >= 0, "negative histogram value")
        let i = Histogram.index(UInt64(value))
        counts[Swift.min(i, counts.count - 1)] += 1
        count += 1
        sum += Double(value)
        if value > max { max = value }
        if min < 0 || value < min { min = value }
    }

    /// Adds every value of `other`.
    public mutating func merge(_ other: Histogram) {
        for i in 0..<counts.count { counts[i] += other.counts[i] }
        count += other.count
        sum += other.sum
        max = Swift.max(max, other.max)
        if other.min >= 0 && (min < 0 || other.min < min) { min = other.min }
    }

    /// Mean, or NaN when empty.
    public var mean: Double { count == 0 ? .nan : sum / Double(count) }

    /// The `q` quantile (0...1): the midpoint of the bucket holding it, clamped to [min, max]; NaN when empty.
    public func quantile(_ q: Double) -> Double {
        guard count > 0 else { return .nan }
        if q >= 1 { return Double(max) }
        let rank = UInt64((q * Double(count)).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= Swift.max(rank, 1) {
                let (lo, hi) = Histogram.bounds(i)
                let mid = Double(lo + hi) / 2
                return Swift.min(Swift.max(mid, Double(min)), Double(max))
            }
        }
        return Double(max)
    }

    /// Points of the empirical CDF: (upper bound of bucket, cumulative fraction), one per non-empty bucket.
    public func cdf() -> [(Double, Double)] {
        guard count > 0 else { return [] }
        var out: [(Double, Double)] = []
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            out.append((Double(Swift.min(Histogram.bounds(i).1, max)), Double(seen) / Double(count)))
        }
        return out
    }
}

/// One row of the time series.
public struct SeriesRow: Sendable {
    /// Virtual time of the sample.
    public var time: SimTime
    /// Changes written so far (after warm-up).
    public var changes: Int
    /// Entitled (change, replica) targets created so far (after warm-up).
    public var targets: Int
    /// Of those, delivered so far.
    public var delivered: Int
    /// Changes that reached HQ so far (after warm-up).
    public var atHQ: Int
    /// Cumulative bytes per link class.
    public var bytesByLink: [Int64]
}

/// Everything the engine measures during a run. Filled by the engine; read by reports.
public struct Metrics: Sendable {
    // ONE MessageStatsReport counters.
    /// (change, entitled replica) targets of changes created after warm-up (ONE `created`, multicast).
    public var created = 0
    /// Change transfers put on a link (a dump counts as one) (ONE `started`).
    public var started = 0
    /// Change copies that completed a transfer, new or duplicate (ONE `relayed`).
    public var relayed = 0
    /// Change transfers cut by a contact's end (ONE `aborted`).
    public var aborted = 0
    /// Changes dropped from stores (device loss) (ONE `dropped`).
    public var dropped = 0
    /// Changes removed from buffers (the baselines never remove) (ONE `removed`).
    public var removed = 0
    /// First deliveries to entitled replicas, after warm-up (ONE `delivered`).
    public var delivered = 0
    /// Latency creation -> entitled replica, all classes (ms).
    public var latency = Histogram()
    /// Hop counts at delivery.
    public var hops = Histogram()
    /// Duplicates received.
    public var duplicates = 0
    /// Changes the workload asked for whose author was down or lost at that time (not written).
    public var skippedWrites = 0

    /// Latency to HQ by [class][priority] (ms).
    public var latencyToHQ = Array(repeating: Array(repeating: Histogram(), count: SimPriority.allCases.count),
                                   count: ChangeClass.allCases.count)
    /// Latency to every entitled replica by [class][priority] (ms).
    public var latencyToAll = Array(repeating: Array(repeating: Histogram(), count: SimPriority.allCases.count),
                                    count: ChangeClass.allCases.count)

    /// Bytes by link class.
    public var bytesByLink = Array(repeating: Int64(0), count: LinkClass.allCases.count)
    /// Bytes by message type.
    public var bytesByType = Array(repeating: Int64(0), count: MessageType.allCases.count)
    /// Bytes of transfers that were cut.
    public var abortedBytes: Int64 = 0

    /// Contacts that ran, by link class.
    public var contactsByLink = Array(repeating: 0, count: LinkClass.allCases.count)
    /// Contact durations (ms).
    public var contactDuration = Histogram()
    /// Gaps between consecutive contacts of the same pair (ms).
    public var interContact = Histogram()
    /// Contacts that ended with a transfer in progress.
    public var contactsCut = 0
    /// Link faults applied: frames delivered twice, delivered behind the next frame, corrupted.
    public var linkDuplicated = 0, linkReordered = 0, linkCorrupted = 0

    /// Per change: first arrival at HQ, or -1.
    public var hqArrival: [SimTime] = []
    /// Per change: last first-arrival at an entitled replica, or -1.
    public var lastArrival: [SimTime] = []
    /// Per change: entitled replicas reached. 32 bits: a run may have any number of nodes (8-bit counters
    /// wrapped at 256 and miscounted runs of 257 nodes or more).
    public var reached: [Int32] = []
    /// Per change: entitled replicas (excluding its author) alive at creation.
    public var targets: [Int32] = []

    /// Time series.
    public var series: [SeriesRow] = []
    /// Staleness of each node at the snapshot time (ms; -1 = lost or not applicable), if taken.
    public var staleness: [SimTime] = []
    /// When the staleness snapshot was taken, or -1.
    public var stalenessAt: SimTime = -1

    /// Creates empty metrics.
    public init() {}
}
