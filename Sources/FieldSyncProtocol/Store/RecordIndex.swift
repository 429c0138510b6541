import FieldSyncCore

/// What a query may ask of the materialized records. Every criterion but `text` is answered from the
/// clear index columns (see docs/threat-model.md); `text` is matched after decrypting in memory.
public struct RecordQuery: Sendable, Equatable {
    /// Only records of this kind.
    public var kind: RecordKind?
    /// Only records in this scope or below it.
    public var scope: Scope?
    /// Only records whose indexed status level is in this range (incidents: 0 reported ... 4 closed).
    public var statusLevels: ClosedRange<UInt8>?
    /// Only records whose indexed event time (reported, visited) is at or after this (ms since epoch).
    public var since: Int64?
    /// Only records whose indexed event time is before this (ms since epoch).
    public var until: Int64?
    /// Only records whose notes or text fields contain this string (decrypted in memory).
    public var text: String?
    /// Include deleted records.
    public var includeDeleted: Bool
    /// At most this many records (newest event time first).
    public var limit: Int?

    /// A query; every criterion is optional.
    public init(
        kind: RecordKind? = nil, scope: Scope? = nil, statusLevels: ClosedRange<UInt8>? = nil, since: Int64? = nil,
        until: Int64? = nil, text: String? = nil, includeDeleted: Bool = false, limit: Int? = nil
    ) {
        self.kind = kind
        self.scope = scope
        self.statusLevels = statusLevels
        self.since = since
        self.until = until
        self.text = text
        self.includeDeleted = includeDeleted
        self.limit = limit
    }

    /// Open incidents (reported, dispatched or on scene) in `scope`.
    public static func openIncidents(in scope: Scope) -> RecordQuery {
        RecordQuery(kind: .incident, scope: scope, statusLevels: 0...Incident.Status.onScene.rawValue)
    }

    /// Whether `record` (with its index) matches every criterion. Stores use it for `text` and the
    /// in-memory store for all of them.
    public func matches(_ record: Record, index: RecordIndexEntry) -> Bool {
        if let kind, record.kind != kind { return false }
        if let scope, !scope.contains(record.scope) { return false }
        if !includeDeleted, index.deleted { return false }
        if let statusLevels {
            guard let s = index.statusLevel, statusLevels.contains(s) else { return false }
        }
        if let since { guard let t = index.eventTime, t >= since else { return false } }
        if let until { guard let t = index.eventTime, t < until else { return false } }
        if let text, !text.isEmpty {
            let hit = record.registers.values.contains { r in
                if case let .string(s) = r.value { return s.contains(text) }
                return false
            } || record.logs.values.contains { log in log.entries.values.contains { $0.contains(text) } }
            if !hit { return false }
        }
        return true
    }
}

/// The clear index columns of one record: exactly what a store may keep unencrypted beside the sealed
/// record so queries need not decrypt everything.
public struct RecordIndexEntry: Sendable, Equatable {
    /// Record id.
    public var id: RecordID
    /// Kind.
    public var kind: RecordKind
    /// Scope.
    public var scope: Scope
    /// The schema's status lattice level, if the kind has one and it is set.
    public var statusLevel: UInt8?
    /// The schema's event time (ms since epoch), if the kind has one and it is set.
    public var eventTime: Int64?
    /// Whether the record is deleted.
    public var deleted: Bool
    /// The greatest HLC applied (raw), for "changed since" and ordering.
    public var updated: UInt64

    /// Derives the index of `record` using its kind's schema (unknown kinds index kind and scope only).
    public init(_ record: Record, schemas: SchemaRegistry = .standard) {
        id = record.id
        kind = record.kind
        scope = record.scope
        let schema = schemas.schemas[record.kind]
        statusLevel = schema?.statusField.flatMap { record.lattices[$0]?.point.level }
        if let f = schema?.timeField, case let .time(t)? = record.value(f) { eventTime = t } else { eventTime = nil }
        deleted = record.isDeleted
        updated = record.lastModified.value?.hlc.raw ?? 0
    }
}
