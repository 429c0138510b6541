import FieldSyncCore

/// The sequence numbers of one log a store holds, as disjoint, non-adjacent, sorted closed intervals.
///
/// Almost always a single prefix `1...h`. Extra intervals appear when changes arrive before their
/// predecessors (urgent first); they are *held back* in the frontier sense: stored and merged, but the
/// log's frontier (the highest contiguous seq from 1) does not move past a gap.
public struct HeldIntervals: Sendable, Equatable, CanonicalCodable {
    /// The intervals, sorted, disjoint and separated by at least one missing seq.
    public private(set) var ranges: [ClosedRange<UInt64>]

    /// Nothing held.
    public init() { ranges = [] }

    /// Intervals from sorted, disjoint, non-adjacent ranges (checked).
    public init(_ ranges: [ClosedRange<UInt64>]) {
        self.ranges = []
        for r in ranges { for s in r { insert(s) } }
    }

    /// Intervals from ranges sorted by lower bound and not overlapping, merging ranges that touch: linear
    /// in the number of ranges (`init(_:)` inserts seq by seq).
    /// - Precondition: every range starts at 1 or more, after the end of the previous one.
    public init(sortedRanges: [ClosedRange<UInt64>]) {
        var out: [ClosedRange<UInt64>] = []
        out.reserveCapacity(sortedRanges.count)
        for r in sortedRanges {
            precondition(r.lowerBound >= 1, "seq numbers start at 1")
            if let last = out.last {
                precondition(r.lowerBound > last.upperBound, "ranges must be sorted and disjoint")
                if r.lowerBound == last.upperBound + 1 {
                    out[out.count - 1] = last.lowerBound...r.upperBound
                    continue
                }
            }
            out.append(r)
        }
        ranges = out
    }

    /// The seqs held in `a` and not in `b`, as sorted ranges (linear in the number of ranges).
    public static func difference(_ a: HeldIntervals, _ b: HeldIntervals) -> [ClosedRange<UInt64>] {
        var out: [ClosedRange<UInt64>] = []
        var j = 0
        let o = b.ranges
        for r in a.ranges {
            var lo = r.lowerBound
            while j < o.count, o[j].upperBound < lo { j += 1 }
            var k = j
            while lo <= r.upperBound {
                guard k < o.count, o[k].lowerBound <= r.upperBound else {
                    out.append(lo...r.upperBound)
                    break
                }
                if o[k].lowerBound > lo { out.append(lo...(o[k].lowerBound - 1)) }
                if o[k].upperBound >= r.upperBound { break }
                lo = max(lo, o[k].upperBound + 1)
                k += 1
            }
        }
        return out
    }

    /// The highest seq `f` such that `1...f` are all held (0 if seq 1 is missing).
    public var frontier: UInt64 { ranges.first.map { $0.lowerBound == 1 ? $0.upperBound : 0 } ?? 0 }

    /// Number of seqs held beyond the frontier (held back behind a gap).
    public var heldBack: UInt64 {
        ranges.dropFirst(frontier > 0 ? 1 : 0).reduce(0) { $0 + ($1.upperBound - $1.lowerBound + 1) }
    }

    /// Total number of seqs held.
    public var count: UInt64 { ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound + 1) } }

    /// Whether `seq` is held.
    public func contains(_ seq: UInt64) -> Bool {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].contains(seq)
    }

    /// The missing seqs below the highest held one, as intervals (what to ask a peer for).
    public var gaps: [ClosedRange<UInt64>] {
        var out: [ClosedRange<UInt64>] = []
        var next: UInt64 = 1
        for r in ranges {
            if r.lowerBound > next { out.append(next...(r.lowerBound - 1)) }
            next = r.upperBound + 1
        }
        return out
    }

    /// Removes one seq (a held change found corrupt on disk and quarantined): the range holding it
    /// splits, so reconciliation shows the seq as missing and a peer sends it again.
    public mutating func remove(_ seq: UInt64) {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < seq { lo = mid + 1 } else { hi = mid }
        }
        guard lo < ranges.count, ranges[lo].contains(seq) else { return }
        let r = ranges[lo]
        var parts: [ClosedRange<UInt64>] = []
        if r.lowerBound < seq { parts.append(r.lowerBound...(seq - 1)) }
        if seq < r.upperBound { parts.append((seq + 1)...r.upperBound) }
        ranges.replaceSubrange(lo...lo, with: parts)
    }

    /// Adds one seq, merging with neighbours.
    public mutating func insert(_ seq: UInt64) {
        precondition(seq >= 1, "seq numbers start at 1")
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < seq { lo = mid + 1 } else { hi = mid }
        }
        if lo < ranges.count, ranges[lo].contains(seq) { return }
        let joinsLeft = lo > 0 && ranges[lo - 1].upperBound + 1 == seq
        let joinsRight = lo < ranges.count && ranges[lo].lowerBound == seq + 1
        switch (joinsLeft, joinsRight) {
        case (true, true):
            ranges[lo - 1] = ranges[lo - 1].lowerBound...ranges[lo].upperBound
            ranges.remove(at: lo)
        case (true, false): ranges[lo - 1] = ranges[lo - 1].lowerBound...seq
        case (false, true): ranges[lo] = seq...ranges[lo].upperBound
        case (false, false): ranges.insert(seq...seq, at: lo)
        }
    }

    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(ranges.count))
        var prev: UInt64 = 0
        for r in ranges {  // delta-encoded: gap before the start, then length - 1
            writer.writeVarint(r.lowerBound - prev)
            writer.writeVarint(r.upperBound - r.lowerBound)
            prev = r.upperBound
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 2)
        var out: [ClosedRange<UInt64>] = []
        var prev: UInt64 = 0
        for _ in 0..<n {
            let at = reader.offset
            let gap = try reader.readVarint()
            let len = try reader.readVarint()
            let (lo, o1) = prev.addingReportingOverflow(gap)
            let (hi, o2) = lo.addingReportingOverflow(len)
            guard !o1, !o2, gap >= (prev == 0 ? 1 : 2) else {
                throw DecodingError(.invalidValue, at: at, "intervals must be disjoint, separated and start at 1 or more")
            }
            out.append(lo...hi)
            prev = hi
        }
        ranges = out
    }
}
