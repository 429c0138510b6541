// Record schemas: which fields a kind has, their value types, which CRDT merges them, which are required.

/// The type of values a register field (or set element) accepts.
public enum ValueType: Hashable, Sendable, CustomStringConvertible {
    /// Text up to `maxBytes` UTF-8 bytes.
    case string(maxBytes: Int)
    /// A signed integer within a range.
    case int(ClosedRange<Int64>)
    /// A finite double.
    case double
    /// A boolean.
    case bool
    /// A point in time (ms since the Unix epoch).
    case time
    /// A location with valid coordinates.
    case location
    /// A reference to a record.
    case record
    /// A reference to a device.
    case device
    /// One of a closed list of symbols.
    case symbol([String])

    public var description: String {
        switch self {
        case let .string(n): "string (at most \(n) bytes)"
        case let .int(r): "integer in \(r.lowerBound)...\(r.upperBound)"
        case .double: "number"
        case .bool: "boolean"
        case .time: "time"
        case .location: "location"
        case .record: "record reference"
        case .device: "device reference"
        case let .symbol(s): "one of \(s.joined(separator: ", "))"
        }
    }

    /// Why `value` does not fit this type, or nil if it does. `.null` always fits (it clears a field).
    public func mismatch(_ value: FieldValue) -> String? {
        switch (self, value) {
        case (_, .null): return nil
        case let (.string(max), .string(s)):
            return s.utf8.count <= max ? nil : "text is \(s.utf8.count) bytes, at most \(max) allowed"
        case let (.int(range), .int(i)): return range.contains(i) ? nil : "\(i) is outside \(range)"
        case let (.double, .double(d)): return d.isFinite ? nil : "not a finite number"
        case (.bool, .bool), (.time, .time), (.record, .record), (.device, .device): return nil
        case let (.location, .location(l)): return l.invalidReason()
        case let (.symbol(allowed), .symbol(s)):
            return allowed.contains(s) ? nil : "\"\(s)\" is not one of \(allowed.joined(separator: ", "))"
        default: return "expected \(description), got \(value)"
        }
    }
}

/// How a field merges.
public enum FieldKind: Hashable, Sendable {
    /// A last-writer-wins register of the given value type.
    case register(ValueType)
    /// A generational lattice with the given level names, lowest first.
    case lattice(levels: [String])
    /// An add-wins observed-remove set of text elements up to `maxBytes` each.
    case set(maxBytes: Int)
    /// An add-only log of text entries up to `maxBytes` each (notes, timeline).
    case log(maxBytes: Int)
}

/// One field of a schema.
public struct FieldSpec: Hashable, Sendable {
    /// The field's number: what edits and record state carry on the wire. Never reused within a kind.
    public var id: FieldID
    /// The field name (an ASCII identifier), for people, exports and the CLI.
    public var name: String
    /// How it merges and what it holds.
    public var kind: FieldKind
    /// Whether a creating edit must set it.
    public var required: Bool

    /// Creates a field spec.
    public init(_ id: FieldID, _ name: String, _ kind: FieldKind, required: Bool = false) {
        precondition(id.raw > 0 && FieldName.isValid(name), "invalid field \(id) \(name)")
        self.id = id
        self.name = name
        self.kind = kind
        self.required = required
    }
}

/// The schema of one record kind.
public struct RecordSchema: Sendable {
    /// The kind.
    public var kind: RecordKind
    /// The fields in declaration order.
    public let fields: [FieldSpec]
    private let byID: [FieldID: Int]
    private let byName: [String: Int]

    /// The lattice field stores index as the record's status (open/closed queries), if any.
    public let statusField: FieldID?
    /// The time field stores index as the record's event time (reported, visited), if any.
    public let timeField: FieldID?

    /// Creates a schema. Field ids and names must be unique.
    /// - Parameters:
    ///   - statusField: a lattice field whose level stores may index in clear (see docs/threat-model.md).
    ///   - timeField: a time register stores may index in clear.
    public init(kind: RecordKind, fields: [FieldSpec], statusField: FieldID? = nil, timeField: FieldID? = nil) {
        precondition(kind.isWellFormed, "invalid kind name \(kind)")
        self.kind = kind
        self.fields = fields
        self.statusField = statusField
        self.timeField = timeField
        byID = Dictionary(uniqueKeysWithValues: fields.enumerated().map { ($1.id, $0) })
        byName = Dictionary(uniqueKeysWithValues: fields.enumerated().map { ($1.name, $0) })
    }

    /// The spec of field `id`, if the kind has it.
    public func field(_ id: FieldID) -> FieldSpec? { byID[id].map { fields[$0] } }

    /// The spec of the field named `name`, if the kind has it.
    public func field(named name: String) -> FieldSpec? { byName[name].map { fields[$0] } }

    /// A display name for `id`: its name, or `#n` for a field this schema does not know.
    public func name(of id: FieldID) -> String { field(id)?.name ?? id.description }

    /// Checks an edit against the schema: known fields, matching CRDT kinds, valid values, and (for a
    /// creating edit) every required field set to a non-null value.
    /// - Throws: `RecordError` naming the first field that is wrong.
    public func validate(_ edit: RecordEdit) throws(RecordError) {
        guard edit.kind == kind else { throw RecordError(.identityMismatch, "edit of kind \(edit.kind) checked against \(kind)") }
        for action in edit.actions {
            guard let id = action.field else { continue }
            guard let spec = field(id) else {
                throw RecordError(.unknownField, field: id.description, "\(kind) has no field \(id)")
            }
            let name = spec.name
            switch (spec.kind, action) {
            case let (.register(type), .set(_, value)):
                if let why = type.mismatch(value) { throw RecordError(.invalidValue, field: name, why) }
            case let (.lattice(levels), .raise(_, point)):
                guard Int(point.level) < levels.count else {
                    throw RecordError(.invalidValue, field: name, "level \(point.level) beyond \(levels.count - 1)")
                }
            case let (.set(max), .add(_, e)), let (.set(max), .remove(_, e, _)):
                guard e.utf8.count <= max, !e.utf8.isEmpty else {
                    throw RecordError(.invalidValue, field: name, "element must be 1 to \(max) bytes")
                }
            case let (.log(max), .append(_, text)):
                guard text.utf8.count <= max, !text.isEmpty else {
                    throw RecordError(.invalidValue, field: name, "entry must be 1 to \(max) bytes")
                }
            default:
                throw RecordError(.wrongFieldKind, field: name, "\(action) does not apply to a \(spec.kind) field")
            }
        }
        guard edit.creates else { return }
        for spec in fields where spec.required {
            let isSet = edit.actions.contains { a in
                switch a {
                case let .set(f, v): f == spec.id && v != .null
                case let .raise(f, _), let .add(f, _), let .append(f, _): f == spec.id
                default: false
                }
            }
            if !isSet { throw RecordError(.missingRequiredField, field: spec.name, "a new \(kind) needs \"\(spec.name)\"") }
        }
    }
}

/// The schemas a node knows, by kind. Unknown kinds still sync and store (relays carry what they cannot
/// read); only validation and typed views need a schema.
public struct SchemaRegistry: Sendable {
    /// Schemas by kind.
    public private(set) var schemas: [RecordKind: RecordSchema]

    /// A registry holding `schemas`.
    public init(_ schemas: [RecordSchema]) {
        self.schemas = Dictionary(schemas.map { ($0.kind, $0) }, uniquingKeysWith: { $1 })
    }

    /// The built-in kinds: incident and visit.
    public static let standard = SchemaRegistry([Incident.schema, Visit.schema])

    /// Adds or replaces a schema.
    public mutating func register(_ schema: RecordSchema) { schemas[schema.kind] = schema }

    /// Validates an edit against its kind's schema.
    /// - Throws: `RecordError.unknownKind` or the schema's error.
    public func validate(_ edit: RecordEdit) throws(RecordError) {
        guard let s = schemas[edit.kind] else { throw RecordError(.unknownKind, "no schema for kind \(edit.kind)") }
        try s.validate(edit)
    }
}
