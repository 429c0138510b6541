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
    /// The field name (an ASCII identifier).
    public var name: String
    /// How it merges and what it holds.
    public var kind: FieldKind
    /// Whether a creating edit must set it.
    public var required: Bool

    /// Creates a field spec.
    public init(_ name: String, _ kind: FieldKind, required: Bool = false) {
        precondition(FieldName.isValid(name), "invalid field name \(name)")
        self.name = name
        self.kind = kind
        self.required = required
    }
}

/// The schema of one record kind.
public struct RecordSchema: Sendable {
    /// The kind.
    public var kind: RecordKind
    /// The fields by name.
    public private(set) var fields: [String: FieldSpec]
    /// Field names in declaration order (for display and export).
    public private(set) var fieldOrder: [String]

    /// Creates a schema.
    public init(kind: RecordKind, fields: [FieldSpec]) {
        precondition(kind.isWellFormed, "invalid kind name \(kind)")
        self.kind = kind
        self.fields = Dictionary(fields.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in
            preconditionFailure("duplicate field \(a.name)")
        })
        fieldOrder = fields.map(\.name)
    }

    /// Checks an edit against the schema: known fields, matching CRDT kinds, valid values, and (for a
    /// creating edit) every required field set to a non-null value.
    /// - Throws: `RecordError` naming the first field that is wrong.
    public func validate(_ edit: RecordEdit) throws(RecordError) {
        guard edit.kind == kind else { throw RecordError(.identityMismatch, "edit of kind \(edit.kind) checked against \(kind)") }
        for action in edit.actions {
            guard let name = action.field else { continue }
            guard let spec = fields[name] else {
                throw RecordError(.unknownField, field: name, "\(kind) has no field \"\(name)\"")
            }
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
        for name in fieldOrder where fields[name]!.required {
            let isSet = edit.actions.contains { a in
                switch a {
                case let .set(f, v): f == name && v != .null
                case let .raise(f, _), let .add(f, _), let .append(f, _): f == name
                default: false
                }
            }
            if !isSet { throw RecordError(.missingRequiredField, field: name, "a new \(kind) needs \"\(name)\"") }
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
