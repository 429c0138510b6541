// Typed views over generic records: incidents (警情) and visits (走访).

/// A note or timeline entry: its text and the op (author, time) that added it.
public struct Note: Hashable, Sendable {
    /// Who added it and when.
    public var id: OpID
    /// The text.
    public var text: String
}

extension Record {
    /// Makes an edit of this record by `author` at `hlc`.
    public func edit(author: DeviceID, hlc: HLCTimestamp, _ actions: [Action]) -> RecordEdit {
        RecordEdit(record: id, kind: kind, scope: scope, author: author, hlc: hlc, actions: actions)
    }

    /// Entries of a log field, in order.
    public func notes(_ field: FieldID) -> [Note] {
        (logs[field]?.ordered ?? []).map { Note(id: $0.id, text: $0.entry) }
    }

    /// Elements of a set field, sorted.
    public func elements(_ field: FieldID) -> [String] { (sets[field]?.elements ?? []).map(\.string) }

    /// The action that removes `element` from set field `field`, listing every tag this replica observed.
    public func removeAction(_ field: FieldID, element: String) -> Action {
        let e = Token(element)
        return .remove(field: field, element: e, observed: sets[field]?.observedTags(of: e) ?? [])
    }

    /// The schema name of `field` (or `#n`), for error messages.
    func name(of field: FieldID) -> String { SchemaRegistry.standard.schemas[kind]?.name(of: field) ?? field.description }

    func required(_ field: FieldID) throws(RecordError) -> FieldValue {
        guard let v = value(field) else {
            throw RecordError(.missingRequiredField, field: name(of: field), "\(kind) \(id) has no \(name(of: field)) yet")
        }
        return v
    }

    func requiredSymbol<S: RawRepresentable<String>>(_ field: FieldID, _: S.Type) throws(RecordError) -> S {
        guard case let .symbol(s) = try required(field), let v = S(rawValue: s) else {
            throw RecordError(.invalidValue, field: name(of: field), "not a \(S.self)")
        }
        return v
    }

    func string(_ field: FieldID) -> String? {
        if case let .string(s)? = value(field) { return s }
        return nil
    }

    func time(_ field: FieldID) -> Int64? {
        if case let .time(t)? = value(field) { return t }
        return nil
    }
}

/// An incident (警情): a typed view over a `Record` of kind `incident`.
///
/// ```swift
/// let edit = Incident.create(id: id, scope: scope, author: me, hlc: t, category: .dispute, priority: .high,
///                            location: Location(latitude: 33.39, longitude: 104.93, placeName: "Wudu"),
///                            summary: "Boundary dispute", reportedAt: 1_700_000_000_000, reporter: "caller")
/// var record = Record(id: id, kind: .incident, scope: scope)
/// try record.apply(edit)
/// let incident = try Incident(record)
/// ```
public struct Incident: Sendable {
    /// The 11 incident categories collected by the Longnan command centre.
    public enum Category: String, CaseIterable, Sendable {
        case criminal, publicOrder = "public-order", traffic, fire, dispute, helpRequest = "help-request"
        case complaint, disasterOrAccident = "disaster-accident", groupEvent = "group-event"
        case suspicious = "suspicious-situation", other
    }

    /// Priority, most urgent first: the change priority (an incident's changes travel at it), stored as
    /// its `name`.
    public typealias Priority = FieldSyncCore.Priority

    /// Status levels of the lattice; a reopen starts a new generation at `.reported`.
    public enum Status: UInt8, CaseIterable, Sendable, Comparable, CustomStringConvertible {
        case reported = 0, dispatched, onScene, resolved, closed
        /// Level names as in the schema.
        public var name: String { Incident.statusLevels[Int(rawValue)] }
        public var description: String { name }
        public static func < (a: Status, b: Status) -> Bool { a.rawValue < b.rawValue }
    }

    /// Status level names, lowest first.
    public static let statusLevels = ["reported", "dispatched", "on-scene", "resolved", "closed"]

    /// Field numbers (normative: Protocols/encoding.md). Never renumbered or reused.
    public enum Field {
        /// `category`
        public static let category: FieldID = 1
        /// `priority`
        public static let priority: FieldID = 2
        /// `location`
        public static let location: FieldID = 3
        /// `summary`
        public static let summary: FieldID = 4
        /// `reportedAt`
        public static let reportedAt: FieldID = 5
        /// `reporter`
        public static let reporter: FieldID = 6
        /// `status`
        public static let status: FieldID = 7
        /// `assignedUnits`
        public static let assignedUnits: FieldID = 8
        /// `feedback`
        public static let feedback: FieldID = 9
        /// `feedbackDeadline`
        public static let feedbackDeadline: FieldID = 10
        /// `duplicateOf`
        public static let duplicateOf: FieldID = 11
        /// `notes`
        public static let notes: FieldID = 12
    }

    /// The byte limits of the incident's text fields: the schema's, which the CLI checks its options against.
    public enum MaxBytes {
        /// `summary`.
        public static let summary = 512
        /// `reporter`.
        public static let reporter = 128
        /// One element of `assignedUnits`.
        public static let assignedUnit = 64
        /// `feedback`.
        public static let feedback = 4096
        /// One entry of `notes`.
        public static let note = 4096
    }

    /// The incident schema.
    public static let schema = RecordSchema(kind: .incident, fields: [
        FieldSpec(Field.category, "category", .register(.symbol(Category.allCases.map(\.rawValue))), required: true),
        FieldSpec(Field.priority, "priority", .register(.symbol(Priority.allCases.map(\.name))), required: true),
        FieldSpec(Field.location, "location", .register(.location), required: true),
        FieldSpec(Field.summary, "summary", .register(.string(maxBytes: MaxBytes.summary)), required: true),
        FieldSpec(Field.reportedAt, "reportedAt", .register(.time), required: true),
        FieldSpec(Field.reporter, "reporter", .register(.string(maxBytes: MaxBytes.reporter)), required: true),
        FieldSpec(Field.status, "status", .lattice(levels: statusLevels), required: true),
        FieldSpec(Field.assignedUnits, "assignedUnits", .set(maxBytes: MaxBytes.assignedUnit)),
        FieldSpec(Field.feedback, "feedback", .register(.string(maxBytes: MaxBytes.feedback))),
        FieldSpec(Field.feedbackDeadline, "feedbackDeadline", .register(.time)),
        FieldSpec(Field.duplicateOf, "duplicateOf", .register(.record)),
        FieldSpec(Field.notes, "notes", .log(maxBytes: MaxBytes.note)),
    ], statusField: Field.status, timeField: Field.reportedAt)

    /// The underlying record.
    public let record: Record
    /// Category.
    public let category: Category
    /// Priority.
    public let priority: Priority
    /// Where it happened.
    public let location: Location
    /// One-line summary.
    public let summary: String
    /// When it was reported (ms since the Unix epoch).
    public let reportedAt: Int64
    /// Who reported it (caller, officer or system).
    public let reporter: String
    /// Current status.
    public let status: Status
    /// Reopen generation (0 until first reopened).
    public let generation: UInt32

    /// Reads a typed incident from a record.
    /// - Throws: `RecordError` naming a required field that has not arrived yet or a wrong kind.
    public init(_ record: Record) throws(RecordError) {
        guard record.kind == .incident else { throw RecordError(.identityMismatch, "\(record.kind) is not an incident") }
        self.record = record
        category = try record.requiredSymbol(Field.category, Category.self)
        guard case let .symbol(p) = try record.required(Field.priority), let priority = Priority(name: p) else {
            throw RecordError(.invalidValue, field: "priority", "not a Priority")
        }
        self.priority = priority
        guard case let .location(l) = try record.required(Field.location) else {
            throw RecordError(.invalidValue, field: "location", "not a location")
        }
        location = l
        guard case let .string(s) = try record.required(Field.summary) else {
            throw RecordError(.invalidValue, field: "summary", "not text")
        }
        summary = s
        guard case let .time(t) = try record.required(Field.reportedAt) else {
            throw RecordError(.invalidValue, field: "reportedAt", "not a time")
        }
        reportedAt = t
        guard case let .string(r) = try record.required(Field.reporter) else {
            throw RecordError(.invalidValue, field: "reporter", "not text")
        }
        reporter = r
        guard let point = record.lattices[Field.status]?.point, let st = Status(rawValue: point.level) else {
            throw RecordError(.missingRequiredField, field: "status", "incident has no status yet")
        }
        status = st
        generation = point.generation
    }

    /// The record id.
    public var id: RecordID { record.id }
    /// The scope.
    public var scope: Scope { record.scope }
    /// Units assigned (OR-set).
    public var assignedUnits: [String] { record.elements(Field.assignedUnits) }
    /// Feedback text, if given.
    public var feedback: String? { record.string(Field.feedback) }
    /// Feedback deadline (ms since the Unix epoch), if set.
    public var feedbackDeadline: Int64? { record.time(Field.feedbackDeadline) }
    /// The incident this one duplicates, if screened as a duplicate.
    public var duplicateOf: RecordID? {
        if case let .record(r)? = record.value(Field.duplicateOf) { return r }
        return nil
    }
    /// Notes, in order.
    public var notes: [Note] { record.notes(Field.notes) }

    /// The creating edit of a new incident, with status `reported`.
    public static func create(
        id: RecordID, scope: Scope, author: DeviceID, hlc: HLCTimestamp, category: Category, priority: Priority,
        location: Location, summary: String, reportedAt: Int64, reporter: String, feedbackDeadline: Int64? = nil,
        notes: [String] = []
    ) -> RecordEdit {
        var actions: [Action] = [
            .set(field: Field.category, value: .symbol(category.rawValue)),
            .set(field: Field.priority, value: .symbol(priority.name)),
            .set(field: Field.location, value: .location(location)),
            .set(field: Field.summary, value: .string(summary)),
            .set(field: Field.reportedAt, value: .time(reportedAt)),
            .set(field: Field.reporter, value: .string(reporter)),
            .raise(field: Field.status, to: LatticePoint(generation: 0, level: Status.reported.rawValue)),
        ]
        if let d = feedbackDeadline { actions.append(.set(field: Field.feedbackDeadline, value: .time(d))) }
        actions += notes.map { .append(field: Field.notes, text: $0) }
        return RecordEdit(record: id, kind: .incident, scope: scope, author: author, hlc: hlc, creates: true, actions: actions)
    }

    /// The action that moves the status forward within the current generation. Moving backwards has no
    /// effect once merged (the lattice keeps the maximum).
    public func advance(to status: Status) -> Action {
        .raise(field: Field.status, to: LatticePoint(generation: generation, level: status.rawValue))
    }

    /// The action that raises the status to `status` in `generation` (for replaying a known write).
    public static func statusAction(generation: UInt32, _ status: Status) -> Action {
        .raise(field: Field.status, to: LatticePoint(generation: generation, level: status.rawValue))
    }

    /// The action that reopens the incident: a new generation starting at `reported`.
    public func reopen() -> Action {
        .raise(field: Field.status, to: LatticePoint(generation: generation + 1, level: Status.reported.rawValue))
    }
}

/// A visit (走访): a typed view over a `Record` of kind `visit`.
public struct Visit: Sendable {
    /// Why the visit was made.
    public enum VisitType: String, CaseIterable, Sendable {
        case returningMigrantWorker = "returning-migrant-worker", keyPerson = "key-person"
        case disputeMediation = "dispute-mediation", vulnerableHousehold = "vulnerable-household", routine
    }

    /// Field numbers (normative: Protocols/encoding.md). Never renumbered or reused.
    public enum Field {
        /// `subject`
        public static let subject: FieldID = 1
        /// `visitor`
        public static let visitor: FieldID = 2
        /// `visitType`
        public static let visitType: FieldID = 3
        /// `visitedAt`
        public static let visitedAt: FieldID = 4
        /// `location`
        public static let location: FieldID = 5
        /// `outcome`
        public static let outcome: FieldID = 6
        /// `followUpNeeded`
        public static let followUpNeeded: FieldID = 7
        /// `followUpBy`
        public static let followUpBy: FieldID = 8
        /// `tags`
        public static let tags: FieldID = 9
        /// `notes`
        public static let notes: FieldID = 10
    }

    /// The byte limits of the visit's text fields: the schema's, which the CLI checks its options against.
    public enum MaxBytes {
        /// `subject`.
        public static let subject = 256
        /// `visitor`.
        public static let visitor = 128
        /// `outcome`.
        public static let outcome = 4096
        /// One element of `tags`.
        public static let tag = 64
        /// One entry of `notes`.
        public static let note = 4096
    }

    /// The visit schema.
    public static let schema = RecordSchema(kind: .visit, fields: [
        FieldSpec(Field.subject, "subject", .register(.string(maxBytes: MaxBytes.subject)), required: true),
        FieldSpec(Field.visitor, "visitor", .register(.string(maxBytes: MaxBytes.visitor)), required: true),
        FieldSpec(Field.visitType, "visitType", .register(.symbol(VisitType.allCases.map(\.rawValue))), required: true),
        FieldSpec(Field.visitedAt, "visitedAt", .register(.time), required: true),
        FieldSpec(Field.location, "location", .register(.location)),
        FieldSpec(Field.outcome, "outcome", .register(.string(maxBytes: MaxBytes.outcome))),
        FieldSpec(Field.followUpNeeded, "followUpNeeded", .register(.bool)),
        FieldSpec(Field.followUpBy, "followUpBy", .register(.time)),
        FieldSpec(Field.tags, "tags", .set(maxBytes: MaxBytes.tag)),
        FieldSpec(Field.notes, "notes", .log(maxBytes: MaxBytes.note)),
    ], timeField: Field.visitedAt)

    /// The underlying record.
    public let record: Record
    /// Household or person visited (a reference, not personal data in clear).
    public let subject: String
    /// The visiting officer.
    public let visitor: String
    /// The visit type.
    public let visitType: VisitType
    /// When (ms since the Unix epoch).
    public let visitedAt: Int64

    /// Reads a typed visit from a record.
    /// - Throws: `RecordError` naming a required field that has not arrived yet or a wrong kind.
    public init(_ record: Record) throws(RecordError) {
        guard record.kind == .visit else { throw RecordError(.identityMismatch, "\(record.kind) is not a visit") }
        self.record = record
        guard case let .string(s) = try record.required(Field.subject) else {
            throw RecordError(.invalidValue, field: "subject", "not text")
        }
        subject = s
        guard case let .string(v) = try record.required(Field.visitor) else {
            throw RecordError(.invalidValue, field: "visitor", "not text")
        }
        visitor = v
        visitType = try record.requiredSymbol(Field.visitType, VisitType.self)
        guard case let .time(t) = try record.required(Field.visitedAt) else {
            throw RecordError(.invalidValue, field: "visitedAt", "not a time")
        }
        visitedAt = t
    }

    /// The record id.
    public var id: RecordID { record.id }
    /// The scope (village).
    public var scope: Scope { record.scope }
    /// Outcome text, if recorded.
    public var outcome: String? { record.string(Field.outcome) }
    /// Whether a follow-up is needed.
    public var followUpNeeded: Bool {
        if case let .bool(b)? = record.value(Field.followUpNeeded) { return b }
        return false
    }
    /// Follow-up due date, if any.
    public var followUpBy: Int64? { record.time(Field.followUpBy) }
    /// Tags (OR-set).
    public var tags: [String] { record.elements(Field.tags) }
    /// Notes, in order.
    public var notes: [Note] { record.notes(Field.notes) }

    /// The creating edit of a new visit.
    public static func create(
        id: RecordID, scope: Scope, author: DeviceID, hlc: HLCTimestamp, subject: String, visitor: String,
        visitType: VisitType, visitedAt: Int64, location: Location? = nil, outcome: String? = nil,
        followUpBy: Int64? = nil, notes: [String] = []
    ) -> RecordEdit {
        var actions: [Action] = [
            .set(field: Field.subject, value: .string(subject)),
            .set(field: Field.visitor, value: .string(visitor)),
            .set(field: Field.visitType, value: .symbol(visitType.rawValue)),
            .set(field: Field.visitedAt, value: .time(visitedAt)),
        ]
        if let location { actions.append(.set(field: Field.location, value: .location(location))) }
        if let outcome { actions.append(.set(field: Field.outcome, value: .string(outcome))) }
        if let followUpBy {
            actions.append(.set(field: Field.followUpNeeded, value: .bool(true)))
            actions.append(.set(field: Field.followUpBy, value: .time(followUpBy)))
        }
        actions += notes.map { .append(field: Field.notes, text: $0) }
        return RecordEdit(record: id, kind: .visit, scope: scope, author: author, hlc: hlc, creates: true, actions: actions)
    }
}
