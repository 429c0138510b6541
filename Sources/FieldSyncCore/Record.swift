// Records are generic documents. Sync and storage never switch on the kind: a record is a bag of named
// CRDT fields, and edits are small, self-describing deltas. Typed views (`Incident`, `Visit`) sit on top.

/// The kind of a record (`incident`, `visit`, ...). The set is open; each kind has a `RecordSchema`.
public struct RecordKind: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible,
    ExpressibleByStringLiteral
{
    /// The kind's name: 1 to 32 characters of `a-z`, `0-9`, `-`.
    public let name: String
    /// Creates a kind (unchecked; decoding and schema lookup validate it).
    public init(_ name: String) { self.name = name }
    public init(stringLiteral value: String) { name = value }
    /// The incident kind (警情).
    public static let incident: RecordKind = "incident"
    /// The visit kind (走访).
    public static let visit: RecordKind = "visit"
    public var description: String { name }
    public static func < (a: RecordKind, b: RecordKind) -> Bool { a.name.utf8.lexicographicallyPrecedes(b.name.utf8) }
    /// Whether `name` is a well-formed kind name.
    public var isWellFormed: Bool {
        (1...32).contains(name.utf8.count)
            && name.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 45 }
    }
    public func encode(to writer: inout ByteWriter) { writer.writeString(name) }
    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        name = try reader.readString()
        guard isWellFormed else { throw DecodingError(.invalidValue, at: at, "record kind \"\(name)\"") }
    }
}

/// Field names (in schemas, exports and the CLI) are ASCII identifiers (`[a-zA-Z][a-zA-Z0-9_]{0,63}`).
public enum FieldName {
    /// Whether `name` is a valid field name.
    public static func isValid(_ name: String) -> Bool {
        let u = Array(name.utf8)
        guard (1...64).contains(u.count), (65...90).contains(u[0]) || (97...122).contains(u[0]) else { return false }
        return u.allSatisfy { (65...90).contains($0) || (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }

}

/// A field's number within its kind's schema. Edits and record state carry numbers, not names, on the
/// wire; the schema maps numbers to names (Protocols/encoding.md).
public struct FieldID: Hashable, Comparable, Sendable, CanonicalCodable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    /// The number (1 or more; 0 is reserved).
    public let raw: UInt32
    /// Creates a field id.
    public init(_ raw: UInt32) { self.raw = raw }
    public init(integerLiteral value: UInt32) { raw = value }
    public var description: String { "#\(raw)" }
    public static func < (a: FieldID, b: FieldID) -> Bool { a.raw < b.raw }
    public func encode(to writer: inout ByteWriter) { writer.writeVarint(UInt64(raw)) }
    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        raw = try reader.readVarint(as: UInt32.self)
        if raw == 0 { throw DecodingError(.invalidValue, at: at, "field id 0 is reserved") }
    }
}

/// One action of an edit. Tag bytes are normative (Protocols/encoding.md).
public enum Action: Hashable, Sendable, CanonicalCodable {
    /// Writes a last-writer-wins field (`.null` clears it). Tag 1.
    case set(field: FieldID, value: FieldValue)
    /// Raises a lattice field (incident status) to a point. Tag 2.
    case raise(field: FieldID, to: LatticePoint)
    /// Adds an element to an observed-remove set field. Tag 3.
    case add(field: FieldID, element: Token)
    /// Removes the observed tags of an element from a set field. Tag 4. `observed` is a set: it is
    /// encoded sorted and without duplicates, so compare actions by `canonicalBytes`.
    case remove(field: FieldID, element: Token, observed: [OpID])
    /// Appends an entry to an add-only log field (notes, timeline). Tag 5.
    case append(field: FieldID, text: String)
    /// Deletes the record (a permanent tombstone). Tag 6.
    case delete

    /// The field the action targets, if any.
    public var field: FieldID? {
        switch self {
        case let .set(f, _), let .raise(f, _), let .add(f, _), let .remove(f, _, _), let .append(f, _): f
        case .delete: nil
        }
    }

    public func encode(to writer: inout ByteWriter) {
        switch self {
        case let .set(f, v):
            writer.writeByte(1)
            f.encode(to: &writer)
            v.encode(to: &writer)
        case let .raise(f, p):
            writer.writeByte(2)
            f.encode(to: &writer)
            p.encode(to: &writer)
        case let .add(f, e):
            writer.writeByte(3)
            f.encode(to: &writer)
            e.encode(to: &writer)
        case let .remove(f, e, observed):
            writer.writeByte(4)
            f.encode(to: &writer)
            e.encode(to: &writer)
            writer.writeArray(Set(observed).sorted())  // a set: sorted, without duplicates
        case let .append(f, t):
            writer.writeByte(5)
            f.encode(to: &writer)
            writer.writeString(t)
        case .delete:
            writer.writeByte(6)
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        switch try reader.readByte() {
        case 1: self = .set(field: try FieldID(from: &reader), value: try FieldValue(from: &reader))
        case 2: self = .raise(field: try FieldID(from: &reader), to: try LatticePoint(from: &reader))
        case 3: self = .add(field: try FieldID(from: &reader), element: try Token(from: &reader))
        case 4:
            let f = try FieldID(from: &reader)
            let e = try Token(from: &reader)
            let o = try reader.readArray(OpID.self, minElementSize: 18, strictlyIncreasingBy: <)
            self = .remove(field: f, element: e, observed: o)
        case 5: self = .append(field: try FieldID(from: &reader), text: try reader.readString())
        case 6: self = .delete
        case let t: throw DecodingError(.unknownTag, at: at, "action tag \(t)")
        }
    }
}

/// An edit: the actions one author made to one record at one instant. The unit that goes into a change.
///
/// Action `i` of the edit has the op id `OpID(hlc: hlc, author: author, index: i)`.
public struct RecordEdit: Hashable, Sendable, CanonicalCodable {
    /// The record edited.
    public var record: RecordID
    /// Its kind.
    public var kind: RecordKind
    /// Its scope (jurisdiction).
    public var scope: Scope
    /// The author's device.
    public var author: DeviceID
    /// The author's HLC reading when making the edit.
    public var hlc: HLCTimestamp
    /// Whether this edit creates the record (it must then set every required field).
    public var creates: Bool
    /// The actions, applied in order.
    public var actions: [Action]

    /// Creates an edit.
    public init(
        record: RecordID, kind: RecordKind, scope: Scope, author: DeviceID, hlc: HLCTimestamp, creates: Bool = false,
        actions: [Action]
    ) {
        self.record = record
        self.kind = kind
        self.scope = scope
        self.author = author
        self.hlc = hlc
        self.creates = creates
        self.actions = actions
    }

    /// The op id of action `index`.
    public func opID(_ index: Int) -> OpID { OpID(hlc: hlc, author: author, index: UInt32(index)) }

    public func encode(to writer: inout ByteWriter) {
        record.encode(to: &writer)
        kind.encode(to: &writer)
        scope.encode(to: &writer)
        author.encode(to: &writer)
        hlc.encode(to: &writer)
        writer.writeBool(creates)
        writer.writeArray(actions)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        record = try RecordID(from: &reader)
        kind = try RecordKind(from: &reader)
        scope = try Scope(from: &reader)
        author = try DeviceID(from: &reader)
        hlc = try HLCTimestamp(from: &reader)
        creates = try reader.readBool()
        let at = reader.offset
        actions = try reader.readArray(Action.self)
        if actions.count > Int(UInt32.max) { throw DecodingError(.lengthTooLarge, at: at, "too many actions") }
    }
}

/// Why an edit cannot be applied to a record.
public struct RecordError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Sendable {
        /// The edit targets another record.
        case wrongRecord
        /// The edit disagrees with the record's kind or scope.
        case identityMismatch
        /// The field is not in the kind's schema.
        case unknownField
        /// The action does not fit the field's CRDT (e.g. `add` on a register).
        case wrongFieldKind
        /// The value has the wrong type or is out of range.
        case invalidValue
        /// A creating edit does not set a required field.
        case missingRequiredField
        /// The record kind has no schema.
        case unknownKind
    }

    /// The code.
    public var code: Code
    /// The field concerned, if any.
    public var field: String?
    /// Detail for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, field: String? = nil, _ detail: String) {
        self.code = code
        self.field = field
        self.detail = detail
    }

    public var description: String {
        if let field { return "\(code.rawValue) (field \"\(field)\"): \(detail)" }
        return "\(code.rawValue): \(detail)"
    }
}

/// A record: a generic document of CRDT fields. Merging two replicas of a record is a join; applying an
/// edit is joining the record with the edit's delta. Both are pure.
public struct Record: CRDT, CustomStringConvertible {
    /// Record state format version (Protocols/encoding.md).
    public static let formatVersion: UInt8 = 1

    /// The record's id.
    public let id: RecordID
    /// Its kind.
    public let kind: RecordKind
    /// Its scope.
    public private(set) var scope: Scope
    /// Last-writer-wins fields.
    public private(set) var registers: FieldTable<LWWRegister<FieldValue>>
    /// Lattice fields.
    public private(set) var lattices: FieldTable<LatticeRegister>
    /// Observed-remove set fields.
    public private(set) var sets: FieldTable<ORSet<Token>>
    /// Add-only log fields.
    public private(set) var logs: FieldTable<AddOnlyLog<String>>
    /// The earliest creating edit seen (nil until one arrives: edits may arrive out of order).
    public private(set) var created: MinOpID
    /// The tombstone: set once any delete is seen; the greatest delete op is kept.
    public private(set) var tombstone: MaxOpID
    /// The greatest op id applied (for "last modified" displays); a max register.
    public private(set) var lastModified: MaxOpID

    /// Drops the spare room in the field tables (`FieldTable.shrinkToFit`). The record is unchanged.
    public mutating func shrinkToFit() {
        registers.shrinkToFit()
        lattices.shrinkToFit()
        sets.shrinkToFit()
        logs.shrinkToFit()
    }

    /// Replaces `scope` by an equal value whose path shares its storage with other records' (a process holding
    /// many records of one scope: a simulator's interner). The record is unchanged.
    public mutating func shareScope(_ equal: Scope) {
        precondition(equal == scope, "shareScope takes an equal scope")
        scope = equal
    }

    /// An empty record.
    public init(id: RecordID, kind: RecordKind, scope: Scope) {
        self.id = id
        self.kind = kind
        self.scope = scope
        registers = FieldTable()
        lattices = FieldTable()
        sets = FieldTable()
        logs = FieldTable()
        created = MinOpID()
        tombstone = MaxOpID()
        lastModified = MaxOpID()
    }

    /// Whether the record has been deleted.
    public var isDeleted: Bool { tombstone.value != nil }

    /// The value of a register field (nil if never set or cleared).
    public func value(_ field: FieldID) -> FieldValue? {
        guard let v = registers[field]?.value, v != .null else { return nil }
        return v
    }

    /// Applies an edit (a delta). The edit must be valid for the schema (see `RecordSchema.validate`);
    /// this method checks only that it targets this record.
    /// - Throws: `RecordError` if the edit targets another record, kind or scope.
    public mutating func apply(_ edit: RecordEdit) throws(RecordError) {
        guard edit.record == id else { throw RecordError(.wrongRecord, "edit for \(edit.record) applied to \(id)") }
        guard edit.kind == kind, edit.scope == scope else {
            throw RecordError(.identityMismatch, "edit says \(edit.kind) in \(edit.scope), record is \(kind) in \(scope)")
        }
        for (i, action) in edit.actions.enumerated() {
            let op = edit.opID(i)
            lastModified.merge(MaxOpID(op))
            switch action {
            case let .set(f, v):
                registers.upsert(f, new: { LWWRegister(v, stamp: op) }, update: { $0.set(v, stamp: op) })
            case let .raise(f, p):
                lattices.upsert(f, new: { LatticeRegister(p, stamp: op) }, update: { $0.raise(to: p, stamp: op) })
            case let .add(f, e):
                sets.modify(f, default: ORSet()) { $0.add(e, tag: op) }
            case let .remove(f, e, observed):
                sets.modify(f, default: ORSet()) { $0.remove(e, observed: observed) }
            case let .append(f, t):
                logs.modify(f, default: AddOnlyLog()) { $0.append(t, id: op) }
            case .delete:
                tombstone.merge(MaxOpID(op))
            }
        }
        if edit.creates { created.merge(MinOpID(edit.opID(0))) }
    }

    /// Joins another replica of the same record.
    /// Replicas of different records are never merged; doing so is a programming error.
    public mutating func merge(_ other: Record) {
        precondition(other.id == id && other.kind == kind && other.scope == scope, "merging different records")
        for (f, r) in other.registers { registers.upsert(f, new: { r }, update: { $0.merge(r) }) }
        for (f, l) in other.lattices { lattices.upsert(f, new: { l }, update: { $0.merge(l) }) }
        for (f, s) in other.sets { sets.modify(f, default: ORSet()) { $0.merge(s) } }
        for (f, l) in other.logs { logs.modify(f, default: AddOnlyLog()) { $0.merge(l) } }
        created.merge(other.created)
        tombstone.merge(other.tombstone)
        lastModified.merge(other.lastModified)
    }

    public var description: String { "\(kind) \(id) in \(scope)" }

    public func encode(to writer: inout ByteWriter) {
        writer.writeByte(Record.formatVersion)
        id.encode(to: &writer)
        kind.encode(to: &writer)
        scope.encode(to: &writer)
        Self.encodeMap(registers, to: &writer)
        Self.encodeMap(lattices, to: &writer)
        Self.encodeMap(sets, to: &writer)
        Self.encodeMap(logs, to: &writer)
        created.encode(to: &writer)
        tombstone.encode(to: &writer)
        lastModified.encode(to: &writer)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        let version = try reader.readByte()
        guard version == Record.formatVersion else {
            throw DecodingError(.unsupportedVersion, at: at, "record format \(version)")
        }
        id = try RecordID(from: &reader)
        kind = try RecordKind(from: &reader)
        scope = try Scope(from: &reader)
        registers = try Self.decodeMap(from: &reader)
        lattices = try Self.decodeMap(from: &reader)
        sets = try Self.decodeMap(from: &reader)
        logs = try Self.decodeMap(from: &reader)
        created = try MinOpID(from: &reader)
        tombstone = try MaxOpID(from: &reader)
        lastModified = try MaxOpID(from: &reader)
    }

    private static func encodeMap<V: CanonicalEncodable>(_ map: FieldTable<V>, to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(map.count))
        for (k, v) in map {  // in increasing field id order
            k.encode(to: &writer)
            v.encode(to: &writer)
        }
    }

    private static func decodeMap<V: CanonicalDecodable>(from reader: inout ByteReader) throws(DecodingError) -> FieldTable<V> {
        let n = try reader.readCount(minElementSize: 2)
        var out = FieldTable<V>()  // grown by what parses, not by the count read
        var last: FieldID?
        for _ in 0..<n {
            let at = reader.offset
            let k = try FieldID(from: &reader)
            if let last, !(last < k) { throw DecodingError(.nonCanonicalOrder, at: at, "field ids") }
            last = k
            out.append(k, try V(from: &reader))
        }
        return out
    }
}

/// The payload of a records change: the edits it carries, in order.
public struct ChangeBody: Hashable, Sendable, CanonicalCodable {
    /// Format version of the body (Protocols/encoding.md).
    public static let formatVersion: UInt8 = 1
    /// The edits.
    public var edits: [RecordEdit]

    /// Creates a body.
    public init(edits: [RecordEdit]) { self.edits = edits }

    public func encode(to writer: inout ByteWriter) {
        writer.writeByte(ChangeBody.formatVersion)
        writer.writeArray(edits)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        let version = try reader.readByte()
        guard version == ChangeBody.formatVersion else {
            throw DecodingError(.unsupportedVersion, at: at, "change body format \(version)")
        }
        edits = try reader.readArray(RecordEdit.self, minElementSize: 40)
    }
}
