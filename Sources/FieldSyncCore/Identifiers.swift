// Identifiers: record ids, device ids and jurisdiction scopes.

/// A 128-bit identifier stored as 16 big-endian bytes. Base of `RecordID` and `DeviceID`.
public struct ID128: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// High 64 bits.
    public var high: UInt64
    /// Low 64 bits.
    public var low: UInt64

    /// Creates an id from two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Creates an id from exactly 16 bytes (big-endian); returns nil for any other length.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0
        var l: UInt64 = 0
        var i = bytes.startIndex
        for _ in 0..<8 {
            h = h << 8 | UInt64(bytes[i])
            i = bytes.index(after: i)
        }
        for _ in 0..<8 {
            l = l << 8 | UInt64(bytes[i])
            i = bytes.index(after: i)
        }
        high = h
        low = l
    }

    /// Parses 32 hex digits; returns nil otherwise.
    public init?(hex: String) {
        guard let b = Hex.decode(hex) else { return nil }
        self.init(bytes: b)
    }

    /// Draws a random id from `rng` (the caller injects the generator; the core never reads entropy itself).
    public static func random<G: RandomNumberGenerator>(using rng: inout G) -> ID128 {
        ID128(high: rng.next(), low: rng.next())
    }

    /// The 16 big-endian bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> UInt64(56 - 8 * i))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> UInt64(56 - 8 * i))
        }
        return out
    }

    /// 32 lower-case hex digits.
    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    public static func < (a: ID128, b: ID128) -> Bool { (a.high, a.low) < (b.high, b.low) }

    public func encode(to writer: inout ByteWriter) {
        writer.writeUInt64BE(high)
        writer.writeUInt64BE(low)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        high = try reader.readUInt64BE()
        low = try reader.readUInt64BE()
    }
}

/// Identifies a record (an incident, a visit, ...). Random 128 bits, chosen by its creator.
public struct RecordID: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// The underlying 128 bits.
    public var raw: ID128
    /// Wraps raw bits.
    public init(_ raw: ID128) { self.raw = raw }
    /// Parses 32 hex digits.
    public init?(hex: String) {
        guard let r = ID128(hex: hex) else { return nil }
        raw = r
    }
    /// A fresh random record id drawn from the injected generator.
    public static func random<G: RandomNumberGenerator>(using rng: inout G) -> RecordID { RecordID(.random(using: &rng)) }
    public var description: String { raw.hex }
    public static func < (a: RecordID, b: RecordID) -> Bool { a.raw < b.raw }
    /// The ids whose hex form starts with `prefix` (1 to 32 hex digits, either case): the prefix padded
    /// with `0`s up to the prefix padded with `f`s. Nil if `prefix` is empty, longer than 32 digits or not hex.
    public static func prefixRange(_ prefix: String) -> ClosedRange<RecordID>? {
        let p = prefix.lowercased()
        guard !p.isEmpty, p.count <= 32, p.allSatisfy(\.isHexDigit), p.unicodeScalars.allSatisfy(\.isASCII) else { return nil }
        let pad = 32 - p.count
        guard let lo = RecordID(hex: p + String(repeating: "0", count: pad)),
              let hi = RecordID(hex: p + String(repeating: "f", count: pad)) else { return nil }
        return lo...hi
    }
    public func encode(to writer: inout ByteWriter) { raw.encode(to: &writer) }
    public init(from reader: inout ByteReader) throws(DecodingError) { raw = try ID128(from: &reader) }
}

/// Identifies a device (an author). Derived from the device's signing key by FieldSyncCrypto:
/// the first 16 bytes of BLAKE2b-256 of the Ed25519 public key (see Protocols/identity.md).
public struct DeviceID: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// The underlying 128 bits.
    public var raw: ID128
    /// Wraps raw bits.
    public init(_ raw: ID128) { self.raw = raw }
    /// Parses 32 hex digits.
    public init?(hex: String) {
        guard let r = ID128(hex: hex) else { return nil }
        raw = r
    }
    public var description: String { raw.hex }
    public static func < (a: DeviceID, b: DeviceID) -> Bool { a.raw < b.raw }
    public func encode(to writer: inout ByteWriter) { raw.encode(to: &writer) }
    public init(from reader: inout ByteReader) throws(DecodingError) { raw = try ID128(from: &reader) }
}

/// A jurisdiction path such as `longnan/wudu/station-017/village-0412`.
///
/// Segments are 1 to 64 characters of `a-z`, `0-9`, `-` and `_`; a path has 1 to 8 segments. A scope
/// *contains* itself and every scope below it: a device entitled to `longnan/wudu` may read
/// `longnan/wudu/station-017/village-0412`.
public struct Scope: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Maximum number of segments.
    public static let maxDepth = 8
    /// Maximum characters per segment.
    public static let maxSegmentLength = 64

    /// The path, e.g. `longnan/wudu/station-017`.
    public let path: String
    /// Number of segments.
    public var depth: Int { Int(packed >> 56) }
    /// The depth in the top 8 bits, and in the low 56 the path hashed once with the process's seeded
    /// `Hasher` (so a peer cannot choose paths that collide): what `hash(into:)` feeds, and a fast first
    /// test of `==`. Stores and sessions look logs up by `LogID` per change and per log of every session;
    /// an officer writes a log per village, so the author and the depth alone collided across all of
    /// them. One word, as the depth alone was: a `LogID` stays 40 bytes.
    private let packed: UInt64

    /// Why a scope string is invalid.
    public struct Invalid: Error, Equatable, Sendable, CustomStringConvertible {
        /// The offending input.
        public var input: String
        /// What is wrong with it.
        public var reason: String
        public var description: String { "invalid scope \"\(input)\": \(reason)" }
    }

    /// Parses and validates a path (one pass over its bytes; scopes are checked on every decode).
    /// - Throws: `Scope.Invalid` naming what is wrong.
    public init(_ path: String) throws(Invalid) {
        guard !path.isEmpty else { throw Invalid(input: path, reason: "empty") }
        var depth = 1
        var segmentLength = 0
        for c in path.utf8 {
            if c == 47 {  // "/"
                guard segmentLength > 0 else { throw Invalid(input: path, reason: "empty segment") }
                depth += 1
                segmentLength = 0
                continue
            }
            guard (97...122).contains(c) || (48...57).contains(c) || c == 45 || c == 95 else {
                throw Invalid(input: path, reason: "segments may only hold a-z, 0-9, '-' and '_'")
            }
            segmentLength += 1
            guard segmentLength <= Scope.maxSegmentLength else {
                throw Invalid(input: path, reason: "segment longer than \(Scope.maxSegmentLength)")
            }
        }
        guard segmentLength > 0 else { throw Invalid(input: path, reason: "empty segment") }
        guard depth <= Scope.maxDepth else { throw Invalid(input: path, reason: "more than \(Scope.maxDepth) segments") }
        self.path = path
        var h = Hasher()
        h.combine(path)
        packed = UInt64(depth) << 56 | UInt64(UInt(bitPattern: h.finalize())) & (1 << 56 - 1)
    }

    public static func == (a: Scope, b: Scope) -> Bool { a.packed == b.packed && a.path == b.path }
    public func hash(into hasher: inout Hasher) { hasher.combine(packed) }

    /// The path segments, root first.
    public var segments: [String] { path.split(separator: "/").map(String.init) }
    public var description: String { path }

    /// The enclosing scope, or nil at the root.
    public var parent: Scope? {
        guard depth > 1, let slash = path.utf8.lastIndex(of: 47) else { return nil }
        return try? Scope(String(path[..<slash]))
    }

    /// Whether `self` equals `other` or is one of its ancestors.
    public func contains(_ other: Scope) -> Bool {
        let a = path.utf8, b = other.path.utf8
        guard b.count >= a.count, b.starts(with: a) else { return false }
        return b.count == a.count || b[b.index(b.startIndex, offsetBy: a.count)] == 47
    }

    /// Whether `self` is a strict ancestor of `other`.
    public func isAncestor(of other: Scope) -> Bool {
        other.depth > depth && contains(other)
    }

    public static func < (a: Scope, b: Scope) -> Bool { a.path.utf8.lexicographicallyPrecedes(b.path.utf8) }

    public func encode(to writer: inout ByteWriter) { writer.writeString(path) }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        let s = try reader.readString()
        do { self = try Scope(s) } catch { throw DecodingError(.invalidValue, at: at, error.description) }
    }
}

/// An append-only log: one per (author, scope). Every change belongs to exactly one log, numbered from
/// seq 1 with a hash chain. Splitting an author's changes by scope means a peer entitled to only some
/// scopes receives whole logs, never logs with holes (Protocols/sync.md).
public struct LogID: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// The author's device.
    public var author: DeviceID
    /// The scope of every change in the log.
    public var scope: Scope

    /// Creates a log id.
    public init(author: DeviceID, scope: Scope) {
        self.author = author
        self.scope = scope
    }

    public static func < (a: LogID, b: LogID) -> Bool { a.author != b.author ? a.author < b.author : a.scope < b.scope }
    /// Hashes the author's 128 bits and the scope's path hash (`Scope` hashes its path once, when it is
    /// made): hashing the path string on every lookup was most of the cost of a log lookup, and the author
    /// and depth alone collide for an author's many village logs. Equality still compares the whole id.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(author)
        hasher.combine(scope)
    }
    public var description: String { "\(author)@\(scope)" }
    public func encode(to writer: inout ByteWriter) {
        author.encode(to: &writer)
        scope.encode(to: &writer)
    }
    public init(from reader: inout ByteReader) throws(DecodingError) {
        author = try DeviceID(from: &reader)
        scope = try Scope(from: &reader)
    }
}
