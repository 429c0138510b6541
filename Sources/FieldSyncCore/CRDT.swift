// Conflict-free replicated data types used inside records. Every type here is a join-semilattice:
// `merge` is commutative, associative and idempotent, and every state has one canonical encoding, so
// replicas that saw the same operations in any order, with duplicates, encode to identical bytes.
// The merge laws are property-tested in Tests/FieldSyncCoreTests/CRDTLawTests.swift.

/// A state-based CRDT: a value with a join (`merge`) and a canonical encoding.
public protocol CRDT: Equatable, Sendable, CanonicalCodable {
    /// Joins `other` into `self`. Must be commutative, associative and idempotent.
    mutating func merge(_ other: Self)
}

extension CRDT {
    /// The join of `self` and `other`, leaving both unchanged.
    public func merging(_ other: Self) -> Self {
        var copy = self
        copy.merge(other)
        return copy
    }
}

/// The unique identity of one action: the HLC and author of its edit, and its index inside the edit.
///
/// OpIDs are totally ordered (HLC, then author, then index). This order decides last-writer-wins
/// conflicts: the later HLC wins, and the author id breaks ties between equal clocks deterministically.
public struct OpID: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// When the edit was made (hybrid logical clock).
    public var hlc: HLCTimestamp
    /// Who made it.
    public var author: DeviceID
    /// Position of the action inside its edit.
    public var index: UInt32

    /// Creates an op id.
    public init(hlc: HLCTimestamp, author: DeviceID, index: UInt32 = 0) {
        self.hlc = hlc
        self.author = author
        self.index = index
    }

    public static func < (a: OpID, b: OpID) -> Bool {
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        if a.author != b.author { return a.author < b.author }
        return a.index < b.index
    }

    public var description: String { "\(hlc)@\(author.raw.hex.prefix(8))#\(index)" }

    public func encode(to writer: inout ByteWriter) {
        hlc.encode(to: &writer)
        author.encode(to: &writer)
        writer.writeVarint(UInt64(index))
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        hlc = try HLCTimestamp(from: &reader)
        author = try DeviceID(from: &reader)
        index = try reader.readVarint(as: UInt32.self)
    }
}

/// Byte-exact comparison of canonical encodings; the final tie-break that keeps merges deterministic
/// even when a misbehaving author reuses an OpID with a different value.
@inlinable func bytesGreater<T: CanonicalEncodable>(_ a: T, than b: T) -> Bool {
    b.canonicalBytes.lexicographicallyPrecedes(a.canonicalBytes)
}

// MARK: - Last-writer-wins register

/// A last-writer-wins register: the value written by the greatest `OpID` wins.
public struct LWWRegister<Value: CanonicalCodable & Equatable & Sendable>: CRDT {
    /// The current value.
    public private(set) var value: Value
    /// The op that wrote it.
    public private(set) var stamp: OpID

    /// A register holding `value`, written by `stamp`.
    public init(_ value: Value, stamp: OpID) {
        self.value = value
        self.stamp = stamp
    }

    /// Applies a write: it wins only if its stamp is greater.
    public mutating func set(_ newValue: Value, stamp newStamp: OpID) {
        merge(LWWRegister(newValue, stamp: newStamp))
    }

    public mutating func merge(_ other: LWWRegister) {
        if other.stamp > stamp || (other.stamp == stamp && bytesGreater(other.value, than: value)) {
            self = other
        }
    }

    public func encode(to writer: inout ByteWriter) {
        stamp.encode(to: &writer)
        value.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        stamp = try OpID(from: &reader)
        value = try Value(from: &reader)
    }
}

// MARK: - Generational lattice (incident status)

/// A point of a generational lattice: `(generation, level)` ordered lexicographically.
///
/// Incident status uses levels reported(0) < dispatched(1) < on scene(2) < resolved(3) < closed(4).
/// Reopening bumps the generation and restarts at level 0, so `(1, reported)` is above `(0, closed)`:
/// an explicit reopen beats the close it reopens, while a stale write from an older generation can
/// never move the status backwards.
public struct LatticePoint: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Reopen count.
    public var generation: UInt32
    /// Level within the generation.
    public var level: UInt8

    /// Creates a point.
    public init(generation: UInt32, level: UInt8) {
        self.generation = generation
        self.level = level
    }

    public static func < (a: LatticePoint, b: LatticePoint) -> Bool {
        (a.generation, a.level) < (b.generation, b.level)
    }

    public var description: String { "g\(generation).\(level)" }

    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(generation))
        writer.writeByte(level)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        generation = try reader.readVarint(as: UInt32.self)
        level = try reader.readByte()
    }
}

/// A max-register over `LatticePoint`, remembering which op first reached the current point
/// (the smallest stamp among writes of the maximal point), for the audit trail.
public struct LatticeRegister: CRDT {
    /// The current point.
    public private(set) var point: LatticePoint
    /// The op that set it.
    public private(set) var stamp: OpID

    /// Creates a register at `point`.
    public init(_ point: LatticePoint, stamp: OpID) {
        self.point = point
        self.stamp = stamp
    }

    /// Raises the register to `newPoint` if it is higher.
    public mutating func raise(to newPoint: LatticePoint, stamp newStamp: OpID) {
        merge(LatticeRegister(newPoint, stamp: newStamp))
    }

    public mutating func merge(_ other: LatticeRegister) {
        if other.point > point || (other.point == point && other.stamp < stamp) { self = other }
    }

    public func encode(to writer: inout ByteWriter) {
        point.encode(to: &writer)
        stamp.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        point = try LatticePoint(from: &reader)
        stamp = try OpID(from: &reader)
    }
}

// MARK: - Token: a byte-exact string

/// A UTF-8 string compared and hashed by its bytes.
///
/// Swift's `String` treats canonically equivalent strings (precomposed and decomposed "é") as equal,
/// which would let two replicas key the same set element with different bytes. Set elements therefore
/// use `Token`, whose identity is its exact UTF-8 bytes.
public struct Token: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible,
    ExpressibleByStringLiteral
{
    /// The exact UTF-8 bytes.
    public let utf8: [UInt8]
    /// Creates a token from a string.
    public init(_ string: String) { utf8 = Array(string.utf8) }
    public init(stringLiteral value: String) { self.init(value) }
    /// The token as a string.
    public var string: String { String(decoding: utf8, as: UTF8.self) }
    public var description: String { string }
    public static func < (a: Token, b: Token) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
    public func encode(to writer: inout ByteWriter) { writer.writeBytes(utf8) }
    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        let bytes = try reader.readBytes()
        guard String(validating: bytes, as: UTF8.self) != nil else { throw DecodingError(.invalidUTF8, at: at) }
        utf8 = bytes
    }
}

// MARK: - Add-wins observed-remove set

/// An add-wins observed-remove set (OR-set).
///
/// Each add carries a unique tag (its `OpID`); a remove lists the tags it observed. An element is
/// present while it has a tag that no remove has covered, so an add concurrent with a remove wins.
/// The state is kept in a normal form (live tags exclude removed tags) so equal states encode equally.
public struct ORSet<Element: Hashable & Comparable & Sendable & CanonicalCodable>: CRDT {
    /// Live tags per element.
    public private(set) var tags: [Element: Set<OpID>]
    /// Tags removed so far (kept so a late-arriving add with a removed tag stays removed).
    public private(set) var removed: Set<OpID>

    /// An empty set.
    public init() {
        tags = [:]
        removed = []
    }

    /// The elements currently present, sorted.
    public var elements: [Element] { tags.keys.sorted() }

    /// Whether `element` is present.
    public func contains(_ element: Element) -> Bool { tags[element] != nil }

    /// The live tags of `element` (what a remove must list to remove it).
    public func observedTags(of element: Element) -> [OpID] { (tags[element] ?? []).sorted() }

    /// Adds `element` with the unique tag `tag`.
    public mutating func add(_ element: Element, tag: OpID) {
        guard !removed.contains(tag) else { return }
        tags[element, default: []].insert(tag)
    }

    /// Removes the observed tags of `element`.
    /// A tag names one add, so a removed tag is removed under whatever element it was added with (an
    /// honest remove lists only tags of `element`; the rule keeps replicas identical even if not).
    public mutating func remove(_ element: Element, observed: [OpID]) {
        guard !observed.isEmpty else { return }
        removed.formUnion(observed)
        for (e, live) in tags where !live.isDisjoint(with: observed) {
            let rest = live.subtracting(observed)
            tags[e] = rest.isEmpty ? nil : rest
        }
    }

    public mutating func merge(_ other: ORSet) {
        removed.formUnion(other.removed)
        for (e, t) in other.tags { tags[e, default: []].formUnion(t) }
        for (e, t) in tags {
            let live = t.subtracting(removed)
            tags[e] = live.isEmpty ? nil : live
        }
    }

    public func encode(to writer: inout ByteWriter) {
        let keys = tags.keys.sorted()
        writer.writeVarint(UInt64(keys.count))
        for k in keys {
            k.encode(to: &writer)
            writer.writeArray(tags[k]!.sorted())
        }
        writer.writeArray(removed.sorted())
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 2)
        var t: [Element: Set<OpID>] = [:]
        var last: Element?
        for _ in 0..<n {
            let at = reader.offset
            let k = try Element(from: &reader)
            if let last, !(last < k) { throw DecodingError(.nonCanonicalOrder, at: at, "set elements") }
            last = k
            let ids = try reader.readArray(OpID.self, minElementSize: 18, strictlyIncreasingBy: <)
            if ids.isEmpty { throw DecodingError(.invalidValue, at: at, "element without live tags") }
            t[k] = Set(ids)
        }
        let at = reader.offset
        let r = try reader.readArray(OpID.self, minElementSize: 18, strictlyIncreasingBy: <)
        removed = Set(r)
        for (_, ids) in t where !ids.isDisjoint(with: removed) {
            throw DecodingError(.invalidValue, at: at, "a live tag is also removed")
        }
        tags = t
    }
}

// MARK: - Add-only log

/// An add-only set of entries keyed by the op that added them (notes, timeline entries).
/// Entries are listed in `OpID` order, which is causal for one author and HLC order across authors.
public struct AddOnlyLog<Entry: CanonicalCodable & Equatable & Sendable>: CRDT {
    /// The entries by op id.
    public private(set) var entries: [OpID: Entry]

    /// An empty log.
    public init() { entries = [:] }

    /// The entries in order.
    public var ordered: [(id: OpID, entry: Entry)] { entries.keys.sorted().map { ($0, entries[$0]!) } }

    /// Adds an entry under its op id.
    public mutating func append(_ entry: Entry, id: OpID) {
        if let existing = entries[id], !bytesGreater(entry, than: existing) { return }
        entries[id] = entry
    }

    public mutating func merge(_ other: AddOnlyLog) {
        for (id, e) in other.entries { append(e, id: id) }
    }

    public func encode(to writer: inout ByteWriter) {
        let keys = entries.keys.sorted()
        writer.writeVarint(UInt64(keys.count))
        for k in keys {
            k.encode(to: &writer)
            entries[k]!.encode(to: &writer)
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 19)
        var e: [OpID: Entry] = [:]
        var last: OpID?
        for _ in 0..<n {
            let at = reader.offset
            let k = try OpID(from: &reader)
            if let last, !(last < k) { throw DecodingError(.nonCanonicalOrder, at: at, "log entries") }
            last = k
            e[k] = try Entry(from: &reader)
        }
        entries = e
    }
}

// MARK: - Small lattices

/// A max register over an optional `OpID`: used for the record tombstone (the greatest delete wins and
/// deletion is permanent) and, with `MinOpID`, for the creation stamp.
public struct MaxOpID: CRDT {
    /// The greatest op id seen, if any.
    public private(set) var value: OpID?
    /// Creates the register.
    public init(_ value: OpID? = nil) { self.value = value }
    public mutating func merge(_ other: MaxOpID) {
        if let o = other.value, value.map({ o > $0 }) ?? true { value = o }
    }
    public func encode(to writer: inout ByteWriter) { encodeOptional(value, to: &writer) }
    public init(from reader: inout ByteReader) throws(DecodingError) { value = try decodeOptional(OpID.self, from: &reader) }
}

/// A min register over an optional `OpID` (the earliest creating edit).
public struct MinOpID: CRDT {
    /// The smallest op id seen, if any.
    public private(set) var value: OpID?
    /// Creates the register.
    public init(_ value: OpID? = nil) { self.value = value }
    public mutating func merge(_ other: MinOpID) {
        if let o = other.value, value.map({ o < $0 }) ?? true { value = o }
    }
    public func encode(to writer: inout ByteWriter) { encodeOptional(value, to: &writer) }
    public init(from reader: inout ByteReader) throws(DecodingError) { value = try decodeOptional(OpID.self, from: &reader) }
}

/// Encodes an optional as a presence byte (0 or 1) followed by the value.
public func encodeOptional<T: CanonicalEncodable>(_ value: T?, to writer: inout ByteWriter) {
    if let value {
        writer.writeByte(1)
        value.encode(to: &writer)
    } else {
        writer.writeByte(0)
    }
}

/// Decodes an optional written by `encodeOptional`.
public func decodeOptional<T: CanonicalDecodable>(_: T.Type, from reader: inout ByteReader) throws(DecodingError) -> T? {
    try reader.readBool() ? try T(from: &reader) : nil
}
