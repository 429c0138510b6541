import FieldSyncCore

/// A 16-byte head element: what rateless set reconciliation compares.
///
/// Layout (big-endian, Protocols/sync-reconciliation.md, section 2):
/// - bytes 0..<8: the keyed 64-bit tag of the `LogID`;
/// - bytes 8..<12: the position word: the interval's end height, or `0x8000_0000 | start` for the
///   start marker of an interval that does not begin at height 1;
/// - bytes 12..<16: the first 4 bytes of the end change's hash (zero in a start marker).
///
/// A held interval `[1, e]` gives one element; an interval `[s, e]` with `s > 1` gives two, the end
/// element and the start marker. Two nodes whose holdings of a log differ in any interval bound or in
/// the hash at an interval end (a fork) therefore differ in at least one element.
public struct HeadElement: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Bytes 0..<8 as a big-endian integer: the log tag.
    public var high: UInt64
    /// Bytes 8..<16 as a big-endian integer: position word (high half) and hash prefix (low half).
    public var low: UInt64

    /// The bit of the position word that marks a start element.
    public static let startMarkerBit: UInt32 = 0x8000_0000

    /// Creates an element from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an element from its fields.
    public init(tag: UInt64, position: UInt32, hashPrefix: UInt32) {
        self.init(high: tag, low: UInt64(position) << 32 | UInt64(hashPrefix))
    }

    /// The all-zero element (the XOR identity).
    public static let zero = HeadElement(high: 0, low: 0)

    /// The log tag.
    public var tag: UInt64 { high }
    /// The position word.
    public var position: UInt32 { UInt32(truncatingIfNeeded: low >> 32) }
    /// The hash prefix.
    public var hashPrefix: UInt32 { UInt32(truncatingIfNeeded: low) }
    /// Whether this is the start marker of an interval.
    public var isStartMarker: Bool { position & HeadElement.startMarkerBit != 0 }

    /// XOR of two elements.
    @inlinable public static func ^ (a: HeadElement, b: HeadElement) -> HeadElement {
        HeadElement(high: a.high ^ b.high, low: a.low ^ b.low)
    }

    /// Orders by the 16 bytes, lexicographically.
    public static func < (a: HeadElement, b: HeadElement) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// The 16 bytes.
    public var bytes: [UInt8] {
        var w = ByteWriter(capacity: 16)
        w.writeUInt64BE(high)
        w.writeUInt64BE(low)
        return w.bytes
    }

    /// 32 hex digits.
    public var description: String { Hex.encode(bytes) }

    /// The elements of one log's holdings under `tag`, in increasing order.
    public static func elements(tag: UInt64, intervals: [IntervalSummary]) -> [HeadElement] {
        var out: [HeadElement] = []
        for i in intervals { append(tag: tag, i, to: &out) }
        return out.sorted()
    }

    /// Appends the elements of one interval under `tag` (its end, and its start marker if it does not start
    /// at height 1), unsorted: `elements(tag:intervals:)` without its arrays, for a caller that sorts.
    @inline(__always) static func append(tag: UInt64, _ i: IntervalSummary, to out: inout [HeadElement]) {
        out.append(HeadElement(tag: tag, position: i.end, hashPrefix: i.endHashPrefix))
        if i.start > 1 { out.append(HeadElement(tag: tag, position: startMarkerBit | i.start, hashPrefix: 0)) }
    }

    /// Rebuilds interval summaries from the complete element set of one log, or returns nil when the
    /// elements are not the image of a valid holding (bad pairing, overlap, zero heights).
    public static func intervals(from elements: [HeadElement]) -> [IntervalSummary]? {
        var ends: [(UInt32, UInt32)] = []
        var starts: [UInt32] = []
        for e in elements {
            if e.isStartMarker {
                guard e.hashPrefix == 0 else { return nil }
                starts.append(e.position & ~startMarkerBit)
            } else {
                ends.append((e.position, e.hashPrefix))
            }
        }
        ends.sort { $0.0 < $1.0 }
        starts.sort()
        guard ends.count == starts.count || ends.count == starts.count + 1 else { return nil }
        let hasPrefix = ends.count == starts.count + 1
        if starts.contains(where: { $0 < 2 }) { return nil }  // markers exist only for starts above 1
        var out: [IntervalSummary] = []
        for (i, end) in ends.enumerated() {
            let start: UInt32 = hasPrefix ? (i == 0 ? 1 : starts[i - 1]) : starts[i]
            out.append(IntervalSummary(start: start, end: end.0, endHashPrefix: end.1))
        }
        return IntervalSummary.isValidHolding(out) ? out : nil
    }
}
