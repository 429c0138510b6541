// The domain logic of the record commands, once, for every client: the `fieldsync` CLI, the app API
// (`FieldSyncApp`, which runs it on the node's loop) and daemon hooks. Checking that this device may
// write a scope and holds its key, ordering a local edit after what the device has seen of the record,
// choosing a change's priority, finding a record by id or unique prefix (through the store's id index),
// and the typed writes, queries and history. Synchronous: call it on the thread that owns the replicator.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore

/// The outcome of a typed write.
public struct RecordWrite: Sendable {
    /// The record after the write (merged with everything the store held), or as it was if nothing was written.
    public var record: Record
    /// The signed change written; nil when the record already was as asked (nothing written).
    public var change: Change?
    /// The record before the write (nil for a new record).
    public var previous: Record?

    /// Creates an outcome.
    public init(record: Record, change: Change?, previous: Record?) {
        self.record = record
        self.change = change
        self.previous = previous
    }
}

/// When one write (a field's current value) was made and when it reached this node (`RecordBook.arrivals(of:in:)`).
public struct WriteArrival: Sendable, Equatable {
    /// When it was written: its HLC time (ms since the Unix epoch, the author's clock).
    public var writtenAt: Int64
    /// When the change carrying it was first committed on this node (this node's clock, ms); nil when
    /// unknown (stored before the store kept arrival times: schema version 7 or older).
    public var arrivedAt: Int64?

    /// Creates an arrival.
    public init(writtenAt: Int64, arrivedAt: Int64?) {
        self.writtenAt = writtenAt
        self.arrivedAt = arrivedAt
    }

    /// When it reached this node, or, when that is unknown, when it was written (the fallback the reports
    /// name: docs/reports.md).
    public var reachedAt: Int64 { arrivedAt ?? writtenAt }
}

/// Records matching a query, and the matching rows that are damaged on disk (a damaged record does not
/// hide the others).
public struct RecordScanResult: Sendable {
    /// The records, newest event first.
    public var records: [Record]
    /// Rows that no longer open (altered on disk).
    public var damaged: [DamagedRecord]
}

/// Typed writes, queries and history over one device's replicator, with the checks and messages of the
/// `fieldsync` record commands. Not `Sendable`: use it on the thread that owns the replicator (a
/// `FieldSyncApp` does that for you; `FieldSyncApp.perform(_:)` hands you one there).
///
/// ```swift
/// let book = try RecordBook(replicator: replicator, now: wallClock())
/// let written = try book.createIncident(IncidentDraft(scope: scope, category: .traffic, summary: "Car in ditch",
///                                                     location: Location(latitude: 33.4, longitude: 104.9)))
/// _ = try book.setStatus(written.record.id.description, to: .dispatched)
/// ```
public final class RecordBook {
    /// The device's replicator.
    public let replicator: Replicator
    /// The wall clock of the current operation (ms since the Unix epoch): edits are stamped with it.
    public var now: UInt64
    /// Where new record ids come from (nil: the system's generator).
    public var idSource: (@Sendable () -> RecordID)?

    /// Wraps a replicator.
    /// - Parameters:
    ///   - replicator: the device's replicator (used on the thread that owns it).
    ///   - now: the wall clock (ms since the Unix epoch) for the writes that follow.
    ///   - restoringClock: moves the replicator's clock past this device's own last write (once per
    ///     opened replicator; `FieldSyncApp` does it when it opens).
    /// - Throws: `FieldSyncError` (store errors).
    public init(replicator: Replicator, now: UInt64, restoringClock: Bool = true) throws(FieldSyncError) {
        self.replicator = replicator
        self.now = now
        if restoringClock { try mappingErrors { try replicator.restoreClock() } }
    }

    /// The record schemas.
    public var schemas: SchemaRegistry { replicator.schemas }

    // MARK: Lookup

    /// The record `idText` names: 32 hex digits, or a unique prefix of at least 6, found through the
    /// store's id index (`SyncStore.recordIDs(in:)`), not by reading records.
    /// - Parameters:
    ///   - idText: 32 hex digits, or a unique prefix of at least 6 (either case).
    ///   - kind: the kind it must be, if any.
    /// - Throws: `FieldSyncError`: `.usage` (malformed or ambiguous, or of another kind), `.notFound`,
    ///   `.failed` (a damaged record, a store error).
    public func record(_ idText: String, kind: RecordKind? = nil) throws(FieldSyncError) -> Record {
        try mappingErrors { try load(idText, kind: kind) }
    }

    private func load(_ idText: String, kind: RecordKind?) throws -> Record {
        let hex = idText.lowercased()
        guard hex.count >= 6, hex.count <= 32, hex.allSatisfy(\.isHexDigit), let range = RecordID.prefixRange(hex) else {
            throw FieldSyncError(.usage, "\"\(idText)\" is not a record id: give its 32 hex digits "
                                 + "(or a unique prefix of 6 or more) as `fieldsync list` shows")
        }
        var found: Record?
        if hex.count == 32 {
            found = try replicator.store.record(range.lowerBound)
        } else {
            let matches = try replicator.store.recordIDs(in: range)
            guard matches.count <= 1 else {
                let some = matches.prefix(3).map(\.description).joined(separator: ", ")
                throw FieldSyncError(.usage, "\(idText) matches \(matches.count) records (\(some), ...); give more digits")
            }
            // A damaged row throws here, naming the record (a full id does the same).
            found = try matches.first.flatMap { try replicator.store.record($0) }
        }
        guard let record = found, !record.isDeleted else {
            throw FieldSyncError(.notFound, "no \(kind?.name ?? "record") \(idText) in this device's store; `fieldsync list` shows "
                                 + "what it holds (a record made elsewhere arrives with `fieldsync sync`)")
        }
        if let kind, record.kind != kind {
            throw FieldSyncError(.usage, "\(record.id) is \(Self.article(record.kind)) \(record.kind), not \(Self.article(kind)) \(kind); "
                                 + "use `fieldsync \(record.kind) ...`")
        }
        return record
    }

    /// "a" or "an" before a kind's name.
    public static func article(_ kind: RecordKind) -> String { "aeiou".contains(kind.name.first ?? "x") ? "an" : "a" }

    /// The typed incident view, or an error saying which field has not arrived.
    /// - Throws: `FieldSyncError` `.data`.
    public static func incident(_ record: Record) throws(FieldSyncError) -> Incident {
        do { return try Incident(record) } catch {
            throw FieldSyncError(.data, "incident \(record.id) is incomplete on this device (\(error.detail)); "
                                 + "sync with the device that recorded it", field: error.field)
        }
    }

    // MARK: Queries and history

    /// Records matching `query`, newest event first (damaged rows are left out and reported to the store's
    /// damage handler; `scan(_:)` returns them).
    public func records(_ query: RecordQuery) throws(FieldSyncError) -> [Record] {
        try mappingErrors { try replicator.store.records(query) }
    }

    /// Per scope, how many records match `query` and the newest of their last-modified HLCs, in scope order,
    /// from the store's clear index columns where it can (`SyncStore.recordTallies(_:)`: on a SQLite store no
    /// record is opened, and a damaged row is counted like the others; `limit` is not applied).
    public func tallies(_ query: RecordQuery) throws(FieldSyncError) -> [RecordTally] {
        try mappingErrors { try replicator.store.recordTallies(query) }
    }

    /// Records matching `query`, newest event first, and the matching rows that are damaged.
    public func scan(_ query: RecordQuery) throws(FieldSyncError) -> RecordScanResult {
        try mappingErrors {
            if let sqlite = replicator.store as? SQLiteStore {
                let scan = try sqlite.recordScan(query)
                return RecordScanResult(records: scan.records, damaged: scan.damaged)
            }
            return RecordScanResult(records: try replicator.store.records(query), damaged: [])
        }
    }

    /// The signed history of a record, oldest first: who wrote each change (with role), when, what it
    /// did (when this device can open it), and whether its signature and author verify now.
    public func history(of id: RecordID) throws(FieldSyncError) -> [AuditEntry] {
        try mappingErrors { try replicator.auditTrail(of: id, now: now) }
    }

    /// When the write that set `field`'s current value of each record reached this node: the arrival time
    /// the store kept for the change carrying it (`SyncStore.arrivals(of:)`: the change of the same author
    /// and HLC as the register's stamp, in the record's history). One indexed read for all the records,
    /// nothing unsealed. Records whose field holds no value (never set, or cleared) are absent.
    ///
    /// ```swift
    /// let arrivals = try book.arrivals(of: Incident.Field.feedback, in: incidents)
    /// let late = arrivals[id].map { $0.reachedAt > deadline }
    /// ```
    /// - Parameters:
    ///   - field: a register field (`Incident.Field.feedback`).
    ///   - records: the records (as read from this node's store).
    /// - Returns: per record, when the value was written and when it reached this node (nil: unknown, a change
    ///   stored before the store kept arrival times).
    /// - Throws: `FieldSyncError` (store errors).
    public func arrivals(of field: FieldID, in records: [Record]) throws(FieldSyncError) -> [RecordID: WriteArrival] {
        var stamps: [RecordID: OpID] = [:]
        for r in records {
            if let reg = r.registers[field], reg.value != .null { stamps[r.id] = reg.stamp }
        }
        guard !stamps.isEmpty else { return [:] }
        let held = try mappingErrors { try replicator.store.arrivals(of: stamps.keys.sorted()) }
        var out: [RecordID: WriteArrival] = [:]
        for (id, stamp) in stamps {
            // The change carrying the edit: its author and HLC are the edit's (`Replicator.write`). Should two
            // match, the earliest arrival is the one the value was first held at.
            let arrived = (held[id] ?? []).filter { $0.log.author == stamp.author && $0.hlc == stamp.hlc }.compactMap(\.arrivedAt).min()
            out[id] = WriteArrival(writtenAt: Int64(clamping: stamp.hlc.milliseconds), arrivedAt: arrived.map { Int64(clamping: $0) })
        }
        return out
    }

    // MARK: The write path

    /// Checks that this device may write in `scope` and holds a key for it, with what to do if not.
    /// - Throws: `FieldSyncError` `.permission`.
    public func checkWritable(_ scope: Scope) throws(FieldSyncError) {
        let cert = replicator.identity.certificate
        guard Scope.all([scope], within: cert.scopes) else {
            let scopes = cert.scopes.map(\.path).joined(separator: ", ")
            throw FieldSyncError(.permission, "this device (\(cert.role), scopes \(scopes)) may not write in \(scope); "
                                 + "use a scope within its certificate")
        }
        guard replicator.writingKey(for: scope) != nil else {
            throw FieldSyncError(.permission, "no epoch key for \(scope) or a scope above it: this device needs a key grant for it, "
                                 + "or pass --epoch-key-file FILE (docs/node.md, \"Epoch keys\")")
        }
    }

    /// A fresh timestamp for a local edit of `record`, ordered after every edit this device has seen of
    /// it (so the new values win last-writer-wins against them).
    public func timestamp(after record: Record?) throws(FieldSyncError) -> HLCTimestamp {
        try mappingErrors {
            if let last = record?.lastModified.value?.hlc { replicator.observe(last, now: now) }
            var clock = replicator.clock  // `write` reads the same next timestamp for the change
            return try clock.now(wall: now)
        }
    }

    /// Writes one edit of `record` as one change (at `changePriority`).
    public func write(_ record: Record, _ actions: [Action]) throws(FieldSyncError) -> RecordWrite {
        try checkWritable(record.scope)
        let hlc = try timestamp(after: record)
        return try mappingErrors {
            let edit = record.edit(author: replicator.identity.id, hlc: hlc, actions)
            let change = try replicator.write([edit], scope: record.scope, priority: Self.changePriority(record, actions), now: now)
            return RecordWrite(record: try replicator.store.record(record.id) ?? record, change: change, previous: record)
        }
    }

    /// Writes a creating edit.
    public func create(_ edit: RecordEdit, priority: Priority) throws(FieldSyncError) -> RecordWrite {
        try checkWritable(edit.scope)
        return try mappingErrors {
            let change = try replicator.write([edit], scope: edit.scope, priority: priority, now: now)
            guard let record = try replicator.store.record(edit.record) else {
                throw FieldSyncError(.failed, "record \(edit.record) not found after writing it")
            }
            return RecordWrite(record: record, change: change, previous: nil)
        }
    }

    /// Writes groups of creating edits in one transaction, most urgent first (a bulk import).
    /// - Returns: how many changes were written.
    public func create(groups: [Replicator.WriteGroup]) throws(FieldSyncError) -> Int {
        guard !groups.isEmpty else { return 0 }
        for g in groups { try checkWritable(g.scope) }
        let ordered = groups.sorted { ($0.priority.rawValue, $0.scope) < ($1.priority.rawValue, $1.scope) }
        return try mappingErrors { try replicator.write(groups: ordered, now: now).count }
    }

    /// Which of `ids` the store holds a record of (deleted ones included), in one query.
    public func heldRecordIDs(_ ids: [RecordID]) throws(FieldSyncError) -> Set<RecordID> {
        try mappingErrors { try replicator.store.heldRecordIDs(ids) }
    }

    /// Incidents travel at their (new) priority; everything else at normal.
    public static func changePriority(_ record: Record, _ actions: [Action]) -> Priority {
        guard record.kind == .incident else { return .normal }
        var name: String?
        if case let .symbol(s)? = record.value(Incident.Field.priority) { name = s }
        for case let .set(f, .symbol(s)) in actions where f == Incident.Field.priority { name = s }
        return name.flatMap(Priority.init(name:)) ?? .normal
    }

    private func newID() -> RecordID {
        if let idSource { return idSource() }
        var g = SystemRandomNumberGenerator()
        return .random(using: &g)
    }

    // MARK: Incidents

    /// Records a new incident (status reported), at its priority.
    public func createIncident(_ draft: IncidentDraft) throws(FieldSyncError) -> RecordWrite {
        try draft.validate()
        let edit = Incident.create(id: newID(), scope: draft.scope, author: replicator.identity.id, hlc: try timestamp(after: nil),
                                   category: draft.category, priority: draft.priority, location: draft.location, summary: draft.summary,
                                   reportedAt: draft.reportedAt ?? Int64(now), reporter: draft.reporter,
                                   feedbackDeadline: draft.feedbackDeadline, notes: draft.notes)
        return try create(edit, priority: draft.priority)
    }

    /// Changes an incident's fields (last writer wins per field).
    /// - Parameters:
    ///   - id: its id or a unique prefix.
    ///   - update: the fields to change (the others stay as they are).
    public func updateIncident(_ id: String, _ update: IncidentUpdate) throws(FieldSyncError) -> RecordWrite {
        try update.validate()
        let record = try self.record(id, kind: .incident)
        let current = try Self.incident(record)
        var actions: [Action] = []
        typealias F = Incident.Field
        if let category = update.category { actions.append(.set(field: F.category, value: .symbol(category.rawValue))) }
        if let priority = update.priority { actions.append(.set(field: F.priority, value: .symbol(priority.name))) }
        if let summary = update.summary { actions.append(.set(field: F.summary, value: .string(summary))) }
        if let l = try update.location.location(over: current.location) { actions.append(.set(field: F.location, value: .location(l))) }
        if let reporter = update.reporter { actions.append(.set(field: F.reporter, value: .string(reporter))) }
        if let reportedAt = update.reportedAt { actions.append(.set(field: F.reportedAt, value: .time(reportedAt))) }
        if let feedback = update.feedback { actions.append(.set(field: F.feedback, value: feedback.isEmpty ? .null : .string(feedback))) }
        switch update.deadline {
        case let .at(t)?: actions.append(.set(field: F.feedbackDeadline, value: .time(t)))
        case .clear?: actions.append(.set(field: F.feedbackDeadline, value: .null))
        case nil: break
        }
        if let duplicateOf = update.duplicateOf {
            let other = try self.record(duplicateOf, kind: .incident)
            guard other.id != record.id else { throw FieldSyncError(.data, "an incident cannot duplicate itself", field: "duplicateOf") }
            actions.append(.set(field: F.duplicateOf, value: .record(other.id)))
        }
        return try write(record, actions)
    }

    /// Records feedback to the reporter (empty: clears it).
    public func giveFeedback(_ id: String, _ feedback: String) throws(FieldSyncError) -> RecordWrite {
        var u = IncidentUpdate()
        u.feedback = feedback
        return try updateIncident(id, u)
    }

    /// Marks an incident as a duplicate of another.
    public func markDuplicate(_ id: String, of original: String) throws(FieldSyncError) -> RecordWrite {
        var u = IncidentUpdate()
        u.duplicateOf = original
        return try updateIncident(id, u)
    }

    /// Moves an incident's status forward within its generation; refuses to go back (the lattice would
    /// ignore it) and writes nothing when the status is already there.
    public func setStatus(_ id: String, to status: Incident.Status) throws(FieldSyncError) -> RecordWrite {
        try advance(try record(id, kind: .incident), to: status, extra: [])
    }

    /// Closes an incident (status closed in its current generation), with feedback if given.
    public func close(_ id: String, feedback: String? = nil) throws(FieldSyncError) -> RecordWrite {
        try RecordText.checkText(feedback, option: "--feedback", max: Incident.MaxBytes.feedback, allowEmpty: false)
        let record = try self.record(id, kind: .incident)
        let extra: [Action] = feedback.map { [.set(field: Incident.Field.feedback, value: .string($0))] } ?? []
        return try advance(record, to: .closed, extra: extra)
    }

    /// Moves the status forward (`setStatus`, `close`).
    public func advance(_ record: Record, to target: Incident.Status, extra: [Action]) throws(FieldSyncError) -> RecordWrite {
        let incident = try Self.incident(record)
        if target < incident.status {
            let order = Incident.statusLevels.joined(separator: " → ")
            throw FieldSyncError(.data, "incident \(record.id) is already \(incident.status); status only moves forward (\(order)); "
                                 + "to start over use `fieldsync incident reopen`", field: "status")
        }
        if target == incident.status && extra.isEmpty { return RecordWrite(record: record, change: nil, previous: record) }
        var actions = extra
        if target > incident.status { actions.insert(incident.advance(to: target), at: 0) }
        return try write(record, actions)
    }

    /// Assigns units to an incident (an add-wins set) and takes others off; `dispatch` also moves a
    /// reported incident to dispatched. Writes nothing if every unit is already assigned.
    public func assign(_ id: String, units: [String], remove: [String] = [], dispatch: Bool = false) throws(FieldSyncError) -> RecordWrite {
        if units.isEmpty && remove.isEmpty { throw FieldSyncError(.invalidArgument, "give at least one unit to assign, or --remove UNIT") }
        for u in units + remove { try RecordText.checkText(u, option: "unit", max: Incident.MaxBytes.assignedUnit, allowEmpty: false) }
        let record = try self.record(id, kind: .incident)
        let incident = try Self.incident(record)
        let assigned = Set(incident.assignedUnits)
        for u in remove where !assigned.contains(u) {
            let now = assigned.sorted().joined(separator: ", ")
            throw FieldSyncError(.data, "\(u) is not assigned to \(record.id) (assigned: \(now))", field: "assignedUnits")
        }
        var actions: [Action] = units.filter { !assigned.contains($0) }.map { .add(field: Incident.Field.assignedUnits, element: Token($0)) }
        actions += remove.map { record.removeAction(Incident.Field.assignedUnits, element: $0) }
        if dispatch, incident.status == .reported { actions.append(incident.advance(to: .dispatched)) }
        if actions.isEmpty { return RecordWrite(record: record, change: nil, previous: record) }
        return try write(record, actions)
    }

    /// Reopens a resolved or closed incident: a new status generation starting at reported, which
    /// outranks every status of the old one. `note` is appended to the notes.
    public func reopen(_ id: String, note: String? = nil) throws(FieldSyncError) -> RecordWrite {
        try RecordText.checkText(note, option: "--note", max: Incident.MaxBytes.note, allowEmpty: false)
        let record = try self.record(id, kind: .incident)
        let incident = try Self.incident(record)
        guard incident.status >= .resolved else {
            throw FieldSyncError(.data, "incident \(record.id) is open (\(incident.status)); "
                                 + "only a resolved or closed incident can be reopened", field: "status")
        }
        var actions = [incident.reopen()]
        if let note { actions.append(.append(field: Incident.Field.notes, text: note)) }
        return try write(record, actions)
    }

    // MARK: Notes

    /// The longest note: incidents' and visits' notes have the same limit.
    public static let maxNoteBytes = min(Incident.MaxBytes.note, Visit.MaxBytes.note)

    /// Appends a note to a record's add-only notes log (an incident's or a visit's).
    /// - Parameters:
    ///   - id: its id or a unique prefix.
    ///   - text: the note (not empty).
    ///   - kind: the kind the record must be (nil: any kind with notes).
    public func addNote(_ id: String, _ text: String, kind: RecordKind? = nil) throws(FieldSyncError) -> RecordWrite {
        try RecordText.checkText(text, option: "the note", max: Self.maxNoteBytes, allowEmpty: false)
        let record = try self.record(id, kind: kind)
        let field: FieldID
        switch record.kind {
        case .incident: field = Incident.Field.notes
        case .visit: field = Visit.Field.notes
        default: throw FieldSyncError(.usage, "\(record.id) is \(Self.article(record.kind)) \(record.kind), which has no notes")
        }
        return try write(record, [.append(field: field, text: text)])
    }

    // MARK: Visits

    /// Records a visit.
    public func createVisit(_ draft: VisitDraft) throws(FieldSyncError) -> RecordWrite {
        try draft.validate()
        var edit = Visit.create(id: newID(), scope: draft.scope, author: replicator.identity.id, hlc: try timestamp(after: nil),
                                subject: draft.subject, visitor: draft.visitor, visitType: draft.visitType,
                                visitedAt: draft.visitedAt ?? Int64(now), location: draft.location, outcome: draft.outcome,
                                followUpBy: draft.followUpBy, notes: draft.notes)
        edit.actions += Set(draft.tags).sorted().map { .add(field: Visit.Field.tags, element: Token($0)) }
        return try create(edit, priority: .normal)
    }

    /// Changes a visit's fields. Writes nothing if the update only adds tags the visit already has.
    public func updateVisit(_ id: String, _ update: VisitUpdate) throws(FieldSyncError) -> RecordWrite {
        try update.validate()
        let record = try self.record(id, kind: .visit)
        typealias F = Visit.Field
        var actions: [Action] = []
        if let subject = update.subject { actions.append(.set(field: F.subject, value: .string(subject))) }
        if let visitor = update.visitor { actions.append(.set(field: F.visitor, value: .string(visitor))) }
        if let type = update.visitType { actions.append(.set(field: F.visitType, value: .symbol(type.rawValue))) }
        if let visitedAt = update.visitedAt { actions.append(.set(field: F.visitedAt, value: .time(visitedAt))) }
        var current: Location?
        if case let .location(l)? = record.value(F.location) { current = l }
        if let l = try update.location.location(over: current) { actions.append(.set(field: F.location, value: .location(l))) }
        if let outcome = update.outcome { actions.append(.set(field: F.outcome, value: outcome.isEmpty ? .null : .string(outcome))) }
        if let followUpBy = update.followUpBy {
            actions.append(.set(field: F.followUpNeeded, value: .bool(true)))
            actions.append(.set(field: F.followUpBy, value: .time(followUpBy)))
        }
        if update.noFollowUp {
            actions.append(.set(field: F.followUpNeeded, value: .bool(false)))
            actions.append(.set(field: F.followUpBy, value: .null))
        }
        let tags = Set(record.elements(F.tags))
        for t in update.removeTags where !tags.contains(t) {
            let now = tags.sorted().joined(separator: ", ")
            throw FieldSyncError(.data, "visit \(record.id) has no tag \(t) (tags: \(now))", field: "tags")
        }
        actions += Set(update.addTags).subtracting(tags).sorted().map { .add(field: F.tags, element: Token($0)) }
        actions += update.removeTags.map { record.removeAction(F.tags, element: $0) }
        if actions.isEmpty { return RecordWrite(record: record, change: nil, previous: record) }
        return try write(record, actions)
    }
}
