// Hybrid logical clock (Kulkarni et al. 2014): 48-bit milliseconds since the Unix epoch and a 16-bit
// logical counter packed into one UInt64, so timestamps compare as integers.

/// A hybrid logical clock reading: `milliseconds << 16 | counter`.
public struct HLCTimestamp: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// The packed value.
    public var raw: UInt64

    /// The largest millisecond value (2^48 - 1, about the year 10889).
    public static let maxMilliseconds: UInt64 = (1 << 48) - 1
    /// The zero timestamp, before every real one.
    public static let zero = HLCTimestamp(raw: 0)

    /// Wraps a packed value.
    public init(raw: UInt64) { self.raw = raw }

    /// Packs milliseconds and a counter. Milliseconds above 48 bits are a programming error.
    public init(milliseconds: UInt64, counter: UInt16) {
        precondition(milliseconds <= HLCTimestamp.maxMilliseconds, "HLC milliseconds exceed 48 bits")
        raw = milliseconds << 16 | UInt64(counter)
    }

    /// Physical part: milliseconds since 1970-01-01T00:00:00Z.
    public var milliseconds: UInt64 { raw >> 16 }
    /// Logical part.
    public var counter: UInt16 { UInt16(truncatingIfNeeded: raw) }

    public var description: String { "\(milliseconds).\(counter)" }
    public static func < (a: HLCTimestamp, b: HLCTimestamp) -> Bool { a.raw < b.raw }

    public func encode(to writer: inout ByteWriter) { writer.writeVarint(raw) }
    public init(from reader: inout ByteReader) throws(DecodingError) { raw = try reader.readVarint() }
}

/// Why a clock refused a reading.
public enum HLCError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A remote timestamp is further ahead of the local wall clock than `maxDrift` allows. The clock was
    /// not advanced; the caller decides what to do with the data (FieldSync still merges it: CRDT merges
    /// converge whatever the timestamps, but the local clock does not jump into the future).
    case remoteTooFarAhead(remote: HLCTimestamp, wallMilliseconds: UInt64, maxDriftMilliseconds: UInt64)
    /// The wall clock reading does not fit 48 bits.
    case wallClockOutOfRange(UInt64)

    public var description: String {
        switch self {
        case let .remoteTooFarAhead(remote, wall, drift):
            return "remote timestamp \(remote) is \(remote.milliseconds &- wall) ms ahead of the local clock (limit \(drift) ms)"
        case let .wallClockOutOfRange(w): return "wall clock \(w) ms does not fit 48 bits"
        }
    }
}

/// A hybrid logical clock. Pure: the wall clock is passed in on every call.
///
/// ```swift
/// var clock = HybridLogicalClock(maxDriftMilliseconds: 60_000)
/// let t1 = try clock.now(wall: 1_700_000_000_000)
/// let t2 = try clock.receive(remote: peerStamp, wall: 1_700_000_000_005)
/// ```
///
/// Readings are strictly increasing even if the wall clock jumps backwards. When the counter would
/// overflow, the clock borrows the next millisecond, so it never stalls.
public struct HybridLogicalClock: Sendable, Equatable {
    /// The last reading issued or observed.
    public private(set) var last: HLCTimestamp
    /// How far ahead of the local wall clock a remote timestamp may be before it is refused.
    public var maxDriftMilliseconds: UInt64

    /// Creates a clock. `last` restores a persisted reading so a restarted device never goes back.
    public init(maxDriftMilliseconds: UInt64 = 5 * 60 * 1000, last: HLCTimestamp = .zero) {
        self.maxDriftMilliseconds = maxDriftMilliseconds
        self.last = last
    }

    /// A new timestamp for a local event, strictly greater than every earlier reading.
    /// - Parameter wall: the local wall clock in milliseconds since the Unix epoch.
    /// - Throws: `HLCError.wallClockOutOfRange` if `wall` exceeds 48 bits.
    public mutating func now(wall: UInt64) throws(HLCError) -> HLCTimestamp {
        guard wall <= HLCTimestamp.maxMilliseconds else { throw .wallClockOutOfRange(wall) }
        if wall > last.milliseconds {
            last = HLCTimestamp(milliseconds: wall, counter: 0)
        } else {
            last = Self.successor(of: last)
        }
        return last
    }

    /// Merges a timestamp received from a peer and returns a new local timestamp greater than both.
    /// - Throws: `HLCError.remoteTooFarAhead` (and leaves the clock unchanged) when `remote` is more than
    ///   `maxDriftMilliseconds` ahead of `wall`.
    public mutating func receive(remote: HLCTimestamp, wall: UInt64) throws(HLCError) -> HLCTimestamp {
        guard wall <= HLCTimestamp.maxMilliseconds else { throw .wallClockOutOfRange(wall) }
        if remote.milliseconds > wall, remote.milliseconds - wall > maxDriftMilliseconds {
            throw .remoteTooFarAhead(remote: remote, wallMilliseconds: wall, maxDriftMilliseconds: maxDriftMilliseconds)
        }
        let top = max(last, remote)
        if wall > top.milliseconds {
            last = HLCTimestamp(milliseconds: wall, counter: 0)
        } else {
            last = Self.successor(of: top)
        }
        return last
    }

    private static func successor(of t: HLCTimestamp) -> HLCTimestamp {
        precondition(t.raw < UInt64.max, "HLC exhausted")
        return HLCTimestamp(raw: t.raw + 1)  // counter overflow carries into the millisecond field
    }
}
