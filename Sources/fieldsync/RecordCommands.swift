// The record commands: `incident new|update|status|assign|note|close|reopen`, `visit new|update|note`,
// `list`, `show`, `export`, `import`. Every edit goes through `Replicator.write` as a signed, sealed
// change, the CRDT way: status through the generational lattice, units and tags through the OR-set,
// notes appended to the log. Usage, formats and exit codes: docs/cli.md.

import ArgumentParser
import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

// MARK: - Shared plumbing

/// A record command's client of the app API: the device's `RecordBook` (the domain logic: checks,
/// lookups, typed writes, queries, history; Sources/FieldSync/RecordBook.swift), with the wall clock
/// read once, and how the outcome of a write is printed.
struct RecordContext {
    let book: RecordBook

    /// Opens the device's replicator and moves its clock past this device's own last write.
    /// - Parameter readOnly: the command only reads: a missing store is an error, not a new store.
    init(_ node: NodeOptions, readOnly: Bool = false) throws {
        let replicator = try node.openReplicator(create: !readOnly)
        book = try RecordBook(replicator: replicator, now: wallClockMilliseconds())
    }

    var replicator: Replicator { book.replicator }
    var now: UInt64 { book.now }
    var schemas: SchemaRegistry { book.schemas }

    /// Prints the outcome of a write: the record as JSON, or one line for people.
    func printWritten(_ verb: String, _ written: RecordWrite, json: Bool) {
        printWritten(verb, written.record, change: written.change, json: json)
    }

    /// Prints the outcome of a write: the record as JSON, or one line for people.
    func printWritten(_ verb: String, _ record: Record, change: Change?, json: Bool) {
        if json {
            // `id`, `scope` and `seq` at the top, as `incident new --json` printed them before the other commands existed.
            var o: [(String, JSONValue)] = [("id", .string(record.id.description)), ("scope", .string(record.scope.path)),
                                            ("written", .bool(change != nil))]
            if let change { o += [("seq", .int(Int64(change.header.seq))), ("change", .string(Hex.encode(change.id)))] }
            o.append(("record", .object(RecordForm.object(record, schemas: schemas))))
            print(JSONValue.object(o).serialized)
        } else if let change {
            print("\(record.kind) \(record.id) \(verb) (change \(change.header.seq) of this device's log for \(record.scope); "
                  + "it syncs at the next contact)")
        } else {
            print("\(record.kind) \(record.id): \(verb); nothing written")
        }
    }
}

/// `n thing` or `n things`.
func plural(_ n: Int, _ thing: String) -> String { "\(n) \(thing)\(n == 1 ? "" : "s")" }

func parseScopeOption(_ text: String) throws -> Scope { try checkingArgument { () throws(FieldSyncError) in try RecordText.scope(text) } }

func parseCategory(_ text: String) throws -> Incident.Category {
    try checkingArgument { () throws(FieldSyncError) in try RecordText.category(text) }
}

func parsePriority(_ text: String) throws -> Priority { try checkingArgument { () throws(FieldSyncError) in try RecordText.priority(text) } }

func parseStatus(_ text: String) throws -> Incident.Status { try checkingArgument { () throws(FieldSyncError) in try RecordText.status(text) } }

func parseVisitType(_ text: String) throws -> Visit.VisitType {
    try checkingArgument { () throws(FieldSyncError) in try RecordText.visitType(text) }
}

/// Checks a text option against the schema's byte limit before anything is opened.
func checkText(_ text: String?, option: String, max: Int, allowEmpty: Bool = true) throws {
    try checkingArgument { () throws(FieldSyncError) in try RecordText.checkText(text, option: option, max: max, allowEmpty: allowEmpty) }
}

/// `--lat`, `--lon`, `--place`: a new location, or changes to the current one.
struct LocationOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Latitude in degrees (-90...90).") var lat: Double?
    @Option(parsing: .unconditional, help: "Longitude in degrees (-180...180).") var lon: Double?
    @Option(help: "Place name (village, road, landmark).") var place: String?

    var isEmpty: Bool { lat == nil && lon == nil && place == nil }

    /// The change these options give (`LocationChange` applies it over the current location).
    var change: LocationChange { LocationChange(latitude: lat, longitude: lon, place: place) }
}

// MARK: - incident

/// `fieldsync incident ...`.
struct IncidentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incident", abstract: "Record and edit incidents (警情) in the local store; edits sync at the next contact.",
        subcommands: [New.self, Update.self, Status.self, Assign.self, Note.self, Close.self, Reopen.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a new incident (status reported).")

        @OptionGroup var node: NodeOptions
        @Option(help: "Scope, e.g. longnan/wudu/station-017/village-0412.") var scope: String
        @Option(help: "One of \(Incident.Category.allCases.map(\.rawValue).joined(separator: ", ")).") var category: String
        @Option(help: "urgent, high, normal or low.") var priority: String = "normal"
        @Option(help: "Short summary (at most \(Incident.MaxBytes.summary) bytes).") var summary: String
        @Option(parsing: .unconditional, help: "Latitude (degrees).") var lat: Double
        @Option(parsing: .unconditional, help: "Longitude (degrees).") var lon: Double
        @Option(help: "Place name.") var place: String = ""
        @Option(help: "Who reported it (at most \(Incident.MaxBytes.reporter) bytes).") var reporter: String = "walk-in"
        @Option(parsing: .unconditional, help: "When it was reported: ISO 8601, +/-duration, ms. (default: now)") var reportedAt: String?
        @Option(parsing: .unconditional, help: "Feedback deadline (ISO 8601 or +24h).") var deadline: String?
        @Option(help: "A first note; repeatable.") var note: [String] = []
        @Flag(help: "Print the result as JSON.") var json = false

        /// The draft these options give (times relative to `now`).
        func draft(now: UInt64) throws -> IncidentDraft {
            IncidentDraft(scope: try parseScopeOption(scope), category: try parseCategory(category), priority: try parsePriority(priority),
                          summary: summary, location: Location(latitude: lat, longitude: lon, placeName: place), reporter: reporter,
                          reportedAt: try reportedAt.map { try parseTimeOption($0, option: "--reported-at", now: now) },
                          feedbackDeadline: try deadline.map { try parseTimeOption($0, option: "--deadline", now: now) }, notes: note)
        }

        func validate() throws {
            let d = IncidentDraft(scope: try parseScopeOption(scope), category: try parseCategory(category), priority: try parsePriority(priority),
                                  summary: summary, location: Location(latitude: lat, longitude: lon), reporter: reporter, notes: note)
            try checkingArgument { () throws(FieldSyncError) in try d.validate() }
        }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.createIncident(try draft(now: ctx.now))
                ctx.printWritten("recorded in \(written.record.scope)", written, json: json)
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change an incident's fields (last writer wins per field).",
            discussion: "Status, units and notes have their own subcommands: status, assign, note, close, reopen.")

        @Argument(help: "The incident id (or a unique prefix).") var id: String
        @OptionGroup var node: NodeOptions
        @Option(help: "New category.") var category: String?
        @Option(help: "New priority: urgent, high, normal or low.") var priority: String?
        @Option(help: "New summary.") var summary: String?
        @OptionGroup var location: LocationOptions
        @Option(help: "New reporter.") var reporter: String?
        @Option(parsing: .unconditional, help: "New report time.") var reportedAt: String?
        @Option(help: "Feedback to the reporter (at most \(Incident.MaxBytes.feedback) bytes).") var feedback: String?
        @Option(parsing: .unconditional, help: "Feedback deadline (ISO 8601 or +24h).") var deadline: String?
        @Flag(help: "Remove the feedback deadline.") var clearDeadline = false
        @Option(help: "Mark as a duplicate of this incident id.") var duplicateOf: String?
        @Flag(help: "Print the result as JSON.") var json = false

        /// The update these options give (times relative to `now`; a placeholder time when only validating).
        func update(now: UInt64?) throws -> IncidentUpdate {
            var u = IncidentUpdate()
            u.category = try category.map(parseCategory)
            u.priority = try priority.map(parsePriority)
            u.summary = summary
            u.location = location.change
            u.reporter = reporter
            u.reportedAt = try reportedAt.map { text in try now.map { try parseTimeOption(text, option: "--reported-at", now: $0) } ?? 0 }
            u.feedback = feedback
            if let deadline {
                u.deadline = .at(try now.map { try parseTimeOption(deadline, option: "--deadline", now: $0) } ?? 0)
            } else if clearDeadline {
                u.deadline = .clear
            }
            u.duplicateOf = duplicateOf
            return u
        }

        func validate() throws {
            let u = try update(now: nil)
            try checkingArgument { () throws(FieldSyncError) in try u.validate() }
            if deadline != nil && clearDeadline { throw ValidationError("give --deadline or --clear-deadline, not both") }
        }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.updateIncident(id, try update(now: ctx.now))
                ctx.printWritten("updated", written, json: json)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move an incident's status forward: reported → dispatched → on-scene → resolved → closed.",
            discussion: "Status only moves forward within a generation (concurrent updates keep the highest); `reopen` starts a new one.")

        @Argument(help: "The incident id (or a unique prefix).") var id: String
        @Argument(help: "The new status: \(Incident.statusLevels.joined(separator: ", ")).") var status: String
        @OptionGroup var node: NodeOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws { _ = try parseStatus(status) }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                IncidentCommand.printAdvanced(ctx, try ctx.book.setStatus(id, to: try parseStatus(status)), json: json)
            }
        }
    }

    struct Assign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Assign units to an incident (an add-wins set: concurrent assignments all stay).")

        @Argument(help: "The incident id (or a unique prefix).") var id: String
        @Argument(help: "Units to assign, e.g. station-017-car-2.") var units: [String] = []
        @OptionGroup var node: NodeOptions
        @Option(help: "A unit to take off the incident; repeatable.") var remove: [String] = []
        @Flag(help: "Also move the status to dispatched if it is still reported.") var dispatch = false
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws {
            if units.isEmpty && remove.isEmpty { throw ValidationError("give at least one unit to assign, or --remove UNIT") }
            for u in units + remove { try checkText(u, option: "unit", max: Incident.MaxBytes.assignedUnit, allowEmpty: false) }
        }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.assign(id, units: units, remove: remove, dispatch: dispatch)
                if written.change == nil {
                    ctx.printWritten("already assigned to \(units.joined(separator: ", "))", written, json: json)
                    return
                }
                let units = written.record.elements(Incident.Field.assignedUnits).joined(separator: ", ")
                ctx.printWritten("units now \(units)", written, json: json)
            }
        }
    }

    struct Note: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Append a note to an incident's log (notes are never edited or lost).")
        @OptionGroup var note: NoteArguments
        func run() async throws { try note.append(kind: .incident) }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close an incident (status closed in its current generation).")

        @Argument(help: "The incident id (or a unique prefix).") var id: String
        @OptionGroup var node: NodeOptions
        @Option(help: "Feedback to record with the close.") var feedback: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws { try checkText(feedback, option: "--feedback", max: Incident.MaxBytes.feedback, allowEmpty: false) }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                IncidentCommand.printAdvanced(ctx, try ctx.book.close(id, feedback: feedback), json: json)
            }
        }
    }

    struct Reopen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reopen a resolved or closed incident: a new status generation starting at reported.",
            discussion: "The new generation outranks every status of the old one, so a late 'closed' from another device cannot undo the reopen.")

        @Argument(help: "The incident id (or a unique prefix).") var id: String
        @OptionGroup var node: NodeOptions
        @Option(help: "Why it is reopened (appended to the notes).") var note: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws { try checkText(note, option: "--note", max: Incident.MaxBytes.note, allowEmpty: false) }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.reopen(id, note: note)
                let generation = try written.previous.map { try RecordBook.incident($0).generation } ?? 0
                ctx.printWritten("reopened (generation \(generation + 1), status reported)", written, json: json)
            }
        }
    }

    /// Prints the outcome of a status move (`status`, `close`): from the status before to the one after,
    /// or that it already was there.
    static func printAdvanced(_ ctx: RecordContext, _ written: RecordWrite, json: Bool) {
        let after = (try? RecordBook.incident(written.record).status).map { "\($0)" } ?? "?"
        guard written.change != nil, let previous = written.previous else {
            ctx.printWritten("already \(after)", written, json: json)
            return
        }
        let before = (try? RecordBook.incident(previous).status).map { "\($0)" } ?? "?"
        ctx.printWritten("status \(before) → \(after)", written, json: json)
    }
}

// MARK: - visit

/// `fieldsync visit ...`.
struct VisitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "visit", abstract: "Record and edit visits (走访) in the local store; edits sync at the next contact.",
        subcommands: [New.self, Update.self, Note.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a visit.")

        @OptionGroup var node: NodeOptions
        @Option(help: "Scope (the village), e.g. longnan/wudu/station-017/village-0412.") var scope: String
        @Option(help: "Household or person visited: a reference, not personal data (at most \(Visit.MaxBytes.subject) bytes).") var subject: String
        @Option(help: "The visiting officer (at most \(Visit.MaxBytes.visitor) bytes).") var visitor: String
        @Option(help: "One of \(Visit.VisitType.allCases.map(\.rawValue).joined(separator: ", ")).") var type: String
        @Option(parsing: .unconditional, help: "When: ISO 8601, +/-duration, ms. (default: now)") var visitedAt: String?
        @OptionGroup var location: LocationOptions
        @Option(help: "Outcome (at most \(Visit.MaxBytes.outcome) bytes).") var outcome: String?
        @Option(parsing: .unconditional, help: "Follow-up due by (ISO 8601 or +7d); marks a follow-up as needed.") var followUpBy: String?
        @Option(help: "A tag; repeatable.") var tag: [String] = []
        @Option(help: "A first note; repeatable.") var note: [String] = []
        @Flag(help: "Print the result as JSON.") var json = false

        /// The draft these options give (times relative to `now`; none when only validating).
        func draft(now: UInt64?) throws -> VisitDraft {
            var d = VisitDraft(scope: try parseScopeOption(scope), subject: subject, visitor: visitor, visitType: try parseVisitType(type),
                               outcome: outcome, tags: tag, notes: note)
            if let now {
                d.visitedAt = try visitedAt.map { try parseTimeOption($0, option: "--visited-at", now: now) }
                d.followUpBy = try followUpBy.map { try parseTimeOption($0, option: "--follow-up-by", now: now) }
                d.location = try checkingArgument { () throws(FieldSyncError) in try location.change.location(over: nil) }
            }
            return d
        }

        func validate() throws {
            let d = try draft(now: nil)
            try checkingArgument { () throws(FieldSyncError) in
                try d.validate()
                _ = try location.change.location(over: nil)
            }
        }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.createVisit(try draft(now: ctx.now))
                ctx.printWritten("recorded in \(written.record.scope)", written, json: json)
            }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a visit's fields (last writer wins per field; tags are an add-wins set).")

        @Argument(help: "The visit id (or a unique prefix).") var id: String
        @OptionGroup var node: NodeOptions
        @Option(help: "New subject.") var subject: String?
        @Option(help: "New visitor.") var visitor: String?
        @Option(help: "New visit type.") var type: String?
        @Option(parsing: .unconditional, help: "New visit time.") var visitedAt: String?
        @OptionGroup var location: LocationOptions
        @Option(help: "Outcome.") var outcome: String?
        @Option(parsing: .unconditional, help: "Follow-up due by (marks a follow-up as needed).") var followUpBy: String?
        @Flag(help: "No follow-up needed (clears the due date).") var noFollowUp = false
        @Option(help: "A tag to add; repeatable.") var tag: [String] = []
        @Option(help: "A tag to remove; repeatable.") var untag: [String] = []
        @Flag(help: "Print the result as JSON.") var json = false

        /// The update these options give (times relative to `now`; a placeholder time when only validating).
        func update(now: UInt64?) throws -> VisitUpdate {
            var u = VisitUpdate()
            u.subject = subject
            u.visitor = visitor
            u.visitType = try type.map(parseVisitType)
            u.visitedAt = try visitedAt.map { text in try now.map { try parseTimeOption(text, option: "--visited-at", now: $0) } ?? 0 }
            u.location = location.change
            u.outcome = outcome
            u.followUpBy = try followUpBy.map { text in try now.map { try parseTimeOption(text, option: "--follow-up-by", now: $0) } ?? 0 }
            u.noFollowUp = noFollowUp
            u.addTags = tag
            u.removeTags = untag
            return u
        }

        func validate() throws {
            let u = try update(now: nil)
            try checkingArgument { () throws(FieldSyncError) in try u.validate() }
        }

        func run() async throws {
            try reportingErrors(json: json) {
                let ctx = try RecordContext(node)
                let written = try ctx.book.updateVisit(id, try update(now: ctx.now))
                if written.change == nil {
                    ctx.printWritten("already tagged \(tag.joined(separator: ", "))", written, json: json)
                    return
                }
                ctx.printWritten("updated", written, json: json)
            }
        }
    }

    struct Note: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Append a note to a visit's log (notes are never edited or lost).")
        @OptionGroup var note: NoteArguments
        func run() async throws { try note.append(kind: .visit) }
    }
}

/// What `incident note` and `visit note` share: the record, the text, and appending it to the record's
/// add-only notes log.
struct NoteArguments: ParsableArguments {
    @Argument(help: "The record id (or a unique prefix).") var id: String
    @Argument(help: "The note text (at most \(NoteArguments.maxBytes) bytes).") var text: String
    @OptionGroup var node: NodeOptions
    @Flag(help: "Print the result as JSON.") var json = false

    /// The longest note: incidents' and visits' notes have the same limit.
    static let maxBytes = RecordBook.maxNoteBytes

    func validate() throws { try checkText(text, option: "the note", max: Self.maxBytes, allowEmpty: false) }

    func append(kind: RecordKind) throws {
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node)
            ctx.printWritten("note added", try ctx.book.addNote(id, text, kind: kind), json: json)
        }
    }
}

// MARK: - list, show

/// Filters shared by `list` and `export`, answered by `RecordQuery` (kind, scope, status, since and
/// until from the store's clear index columns; text after decrypting).
struct RecordFilters: ParsableArguments {
    @Option(help: "Only this kind: incident or visit.") var kind: String?
    @Option(help: "Only records in this scope or below it.") var scope: String?
    @Option(help: ArgumentHelp("Only incidents with this status: a level (dispatched), a range (reported..on-scene), "
                               + "open (reported..on-scene) or done (resolved..closed)."))
    var status: String?
    @Option(parsing: .unconditional,
            help: "Only records whose event time (reported, visited) is at or after this (ISO 8601, 2026-11-29, 24h, -24h, ms).")
    var since: String?
    @Option(parsing: .unconditional, help: "Only records whose event time is before this.") var until: String?
    @Option(help: "Only records whose text fields or notes contain this text.") var text: String?
    @Option(help: "At most this many records (newest event first). (default: all)") var limit: Int?

    func validate() throws {
        if let kind, SchemaRegistry.standard.schemas[RecordKind(kind)] == nil {
            throw ValidationError("unknown kind \(kind); one of incident, visit")
        }
        if let scope { _ = try parseScopeOption(scope) }
        if let status { _ = try Self.levels(status) }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    static func levels(_ text: String) throws -> ClosedRange<UInt8> {
        try checkingArgument { () throws(FieldSyncError) in try RecordText.statusLevels(text) }
    }

    func query(now: UInt64) throws -> RecordQuery {
        var q = RecordQuery(kind: kind.map { RecordKind($0) }, scope: try scope.map { try parseScopeOption($0) }, limit: limit)
        if let status {
            q.statusLevels = try Self.levels(status)
            if q.kind == nil { q.kind = .incident }  // only incidents have a status
        }
        q.since = try since.map { text in
            // A bare duration (`24h`) means that long ago.
            let ago = text.first?.isNumber == true && text.last.map { "smhd".contains($0) } == true
            return try parseTimeOption(ago ? "-" + text : text, option: "--since", now: now)
        }
        q.until = try until.map { try parseTimeOption($0, option: "--until", now: now) }
        q.text = text.flatMap { $0.isEmpty ? nil : $0 }
        return q
    }
}

/// `fieldsync list`.
struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the records in the local store, newest first.",
        discussion: "A table for people; with --json, one JSON object per line (JSON Lines), in the export form (docs/cli.md).")

    @OptionGroup var node: NodeOptions
    @OptionGroup var filters: RecordFilters
    @Flag(help: "Print one JSON object per record, one per line.") var json = false

    func run() async throws {
        var damaged: [DamagedRecord] = []
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node, readOnly: true)
            let query = try filters.query(now: ctx.now)
            // A damaged record (its sealed row no longer opens) does not hide the others: they are listed,
            // it is named on standard error, and the exit code is 65.
            let scan = try ctx.book.scan(query)
            let records = scan.records
            damaged = scan.damaged
            if json {
                for r in records { print(JSONValue.object(RecordForm.object(r, schemas: ctx.schemas)).serialized) }
                return
            }
            var rows = [["ID", "KIND", "STATUS", "PRIO", "WHEN (UTC)", "SCOPE", "SUMMARY"]]
            for r in records { rows.append(Self.row(r)) }
            let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { c, cell in c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }
                    .joined(separator: "  "))
            }
            print("\(records.count) record\(records.count == 1 ? "" : "s")" + (damaged.isEmpty ? "" : ", \(damaged.count) damaged (see below)"))
        }
        guard !damaged.isEmpty else { return }
        for d in damaged {
            let line = json ? JSONValue.object([("damaged", .string(d.idText)), ("kind", .string(d.kind)), ("scope", .string(d.scope)),
                                                ("error", .string(d.reason)), ("exitCode", .int(65))]).serialized
                : "damaged: \(d.kind) \(d.idText) in \(d.scope): \(d.reason)"
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        throw ExitCode(65)
    }

    static func row(_ r: Record) -> [String] {
        var status = "-", prio = "-", when = "-", summary = ""
        if r.kind == .incident {
            if let p = r.lattices[Incident.Field.status]?.point, let s = Incident.Status(rawValue: p.level) {
                status = p.generation > 0 ? "\(s) (g\(p.generation))" : s.name
            }
            if case let .symbol(s)? = r.value(Incident.Field.priority) { prio = s }
            if case let .time(t)? = r.value(Incident.Field.reportedAt) { when = TimeText.short(t) }
            if case let .string(s)? = r.value(Incident.Field.summary) { summary = s }
        } else if r.kind == .visit {
            if case let .time(t)? = r.value(Visit.Field.visitedAt) { when = TimeText.short(t) }
            var parts: [String] = []
            if case let .symbol(s)? = r.value(Visit.Field.visitType) { parts.append(s) }
            if case let .string(s)? = r.value(Visit.Field.subject) { parts.append(s) }
            summary = parts.joined(separator: ": ")
        }
        if summary.count > 60 { summary = String(summary.prefix(59)) + "…" }
        return [String(r.id.description.prefix(12)), r.kind.name, status, prio, when, r.scope.path, summary]
    }
}

/// `fieldsync show ID`.
struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one record: its fields and its signed history (who, when, what, verified).")

    @Argument(help: "The record id (or a unique prefix).") var id: String
    @OptionGroup var node: NodeOptions
    @Flag(help: "Print the record and its history as one JSON object.") var json = false

    func run() async throws {
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node, readOnly: true)
            let record = try ctx.book.record(id)
            let trail = try ctx.book.history(of: record.id)
            let schema = ctx.schemas.schemas[record.kind]
            if json {
                var o = RecordForm.object(record, schemas: ctx.schemas)
                if let spec = schema?.fields.first(where: { if case .log = $0.kind { true } else { false } }) {
                    o.append(("\(spec.name)Log", .array(record.notes(spec.id).map { n in
                        .object([("text", .string(n.text)), ("author", .string(n.id.author.description)),
                                 ("at", .string(TimeText.format(Int64(n.id.hlc.milliseconds))))])
                    })))
                }
                o.append(("history", .array(trail.map { Self.entryJSON($0, schema: schema) })))
                print(JSONValue.object(o).serialized)
                return
            }
            print("\(record.kind) \(record.id)")
            print("  \("scope".padding(toLength: 18, withPad: " ", startingAt: 0))\(record.scope)")
            for spec in schema?.fields ?? [] {
                let name = spec.name.padding(toLength: 18, withPad: " ", startingAt: 0)
                switch spec.kind {
                case .register:
                    if let v = record.value(spec.id) { print("  \(name)\(RecordForm.display(v))") }
                case let .lattice(levels):
                    if let p = record.lattices[spec.id]?.point {
                        let level = Int(p.level) < levels.count ? levels[Int(p.level)] : "\(p.level)"
                        print("  \(name)\(level)\(p.generation > 0 ? " (generation \(p.generation), reopened)" : "")")
                    }
                case .set:
                    let e = record.elements(spec.id)
                    if !e.isEmpty { print("  \(name)\(e.joined(separator: ", "))") }
                case .log:
                    let notes = record.notes(spec.id)
                    if !notes.isEmpty {
                        print("  \(spec.name)")
                        for n in notes {
                            print("    \(TimeText.format(Int64(n.id.hlc.milliseconds)))  \(n.id.author.description.prefix(12))  \(n.text)")
                        }
                    }
                }
            }
            print("history (\(trail.count) change\(trail.count == 1 ? "" : "s"), oldest first)")
            for e in trail {
                let who = e.author.map { "\($0.subject.description.prefix(12)) (\($0.role))" }
                    ?? "\(e.log.author.description.prefix(12)) (certificate unknown)"
                print("  \(TimeText.format(Int64(e.hlc.milliseconds)))  \(who)  seq \(e.seq)  \(Self.verification(e.verification))")
                if let r = e.authorRevocation, e.verification == .accepted {
                    print("      FLAGGED: author revoked from \(TimeText.format(Int64(r.revokedAt.milliseconds))) (\(r.reason)); written before the cut-off, kept")
                }
                if let actions = e.actions {
                    for a in actions { print("      \(Self.describe(a, schema: schema))") }
                } else {
                    print("      (sealed: this device holds no key that opens it)")
                }
            }
        }
    }

    static func verification(_ v: IngestOutcome) -> String {
        switch v {
        case .accepted: "verified"
        case let .rejected(code, why): "NOT VERIFIED (\(code): \(why))"
        case .unknownAuthor: "NOT VERIFIED (author's certificate unknown)"
        }
    }

    static func describe(_ a: Action, schema: RecordSchema?) -> String {
        func name(_ f: FieldID) -> String { schema?.name(of: f) ?? f.description }
        switch a {
        case let .set(f, v): return v == .null ? "clear \(name(f))" : "set \(name(f)) = \(RecordForm.display(v))"
        case let .raise(f, p):
            var level = "\(p.level)"
            if case let .lattice(levels)? = schema?.field(f)?.kind, Int(p.level) < levels.count { level = levels[Int(p.level)] }
            return "\(name(f)) → \(level)\(p.generation > 0 ? " (generation \(p.generation))" : "")"
        case let .add(f, e): return "add \(e) to \(name(f))"
        case let .remove(f, e, _): return "remove \(e) from \(name(f))"
        case let .append(f, t): return "append to \(name(f)): \(t)"
        case .delete: return "delete the record"
        }
    }

    static func entryJSON(_ e: AuditEntry, schema: RecordSchema?) -> JSONValue {
        var o: [(String, JSONValue)] = [
            ("at", .string(TimeText.format(Int64(e.hlc.milliseconds)))), ("hlc", .string(e.hlc.description)),
            ("author", .string(e.log.author.description)), ("role", e.author.map { .string($0.role.description) } ?? .null),
            ("log", .string(e.log.scope.path)), ("seq", .int(Int64(e.seq))), ("change", .string(Hex.encode(e.changeHash))),
            ("verified", .bool(e.verification == .accepted)),
        ]
        if e.verification != .accepted { o.append(("verification", .string(verification(e.verification)))) }
        if let r = e.authorRevocation {
            o.append(("authorRevoked", .object([("at", .string(TimeText.format(Int64(r.revokedAt.milliseconds)))),
                                                 ("hlc", .string(r.revokedAt.description)), ("reason", .string(r.reason.description)),
                                                 ("issuer", .string(r.issuer.description))])))
        }
        o.append(("actions", e.actions.map { .array($0.map { .string(describe($0, schema: schema)) }) } ?? .null))
        return .object(o)
    }
}

// MARK: - export, import

/// `fieldsync export`.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export records as JSON (an array) or CSV (a header row, then one row per record).",
        discussion: "The export form is what `fieldsync import` reads back (docs/cli.md). Deleted records are not exported.")

    @OptionGroup var node: NodeOptions
    @OptionGroup var filters: RecordFilters
    @Option(help: "json or csv.") var format: String = "json"
    @Option(help: "Write to this file (must not exist) instead of standard output.") var out: String?
    @Flag(help: "Print a JSON summary (count, file) instead of a line for people; needs --out.") var json = false

    func validate() throws {
        guard ["json", "csv"].contains(format) else { throw ValidationError("--format must be json or csv") }
        if json && out == nil { throw ValidationError("--json needs --out FILE (standard output carries the export)") }
    }

    func run() async throws {
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node, readOnly: true)
            if let out, FileManager.default.fileExists(atPath: out) {
                throw RecordCommandError(.failed, "\(out) already exists; remove it or choose another --out")
            }
            let records = try ctx.book.records(try filters.query(now: ctx.now))
            var progress = ProgressLine("exporting", total: records.count)
            var text = ""
            if format == "json" {
                text = "[\n"
                for (i, r) in records.enumerated() {
                    JSONValue.object(RecordForm.object(r, schemas: ctx.schemas)).write(to: &text)
                    text += i == records.count - 1 ? "\n" : ",\n"
                    progress.update(i + 1)
                }
                text += "]\n"
            } else {
                let kinds = Set(records.map(\.kind)).sorted()
                let columns = CSV.columns(kinds: kinds.isEmpty ? [.incident, .visit] : kinds, schemas: ctx.schemas)
                text = CSV.line(columns)
                for (i, r) in records.enumerated() {
                    text += CSV.line(CSV.cells(RecordForm.object(r, schemas: ctx.schemas), columns: columns))
                    progress.update(i + 1)
                }
            }
            progress.finish()
            if let out {
                guard FileManager.default.createFile(atPath: out, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                    throw RecordCommandError(.failed, "cannot write \(out); check the directory exists and is writable")
                }
                if json {
                    let o: [(String, JSONValue)] = [("exported", .int(Int64(records.count))), ("format", .string(format)), ("file", .string(out))]
                    print(JSONValue.object(o).serialized)
                } else {
                    print("exported \(records.count) record\(records.count == 1 ? "" : "s") to \(out)")
                }
            } else {
                FileHandle.standardOutput.write(Data(text.utf8))
            }
        }
    }
}

/// `fieldsync import FILE`.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import records from a JSON or CSV export: every row is checked first, and nothing is written unless all are valid.",
        discussion: "Each row creates a record (its id is kept; an empty id gets a new one). The rows are written as a few "
            + "signed changes (one per scope and priority, each at most about 48 KB). A CSV file is read twice, row by row "
            + "(memory does not grow with the file), and written in transactions of up to 8 changes; a row without an id "
            + "gets one derived from its content, so an import cut short is completed by running it again with "
            + "--skip-existing. A JSON file is read whole and written in one transaction. "
            + "Rows whose id is already in the store are an error, or skipped with --skip-existing.")

    @Argument(help: "The file (.json: an array or one object per line; .csv: a header row).") var file: String
    @OptionGroup var node: NodeOptions
    @Option(help: "json or csv (default: from the file name, else json).") var format: String?
    @Flag(help: "Leave rows whose id the store already holds as they are, instead of failing.") var skipExisting = false
    @Flag(help: "Check every row and report, but write nothing.") var dryRun = false
    @Flag(help: "Print the result (or the row errors) as JSON.") var json = false

    /// The largest payload of one change an import writes: a change must fit one sync batch (60,000
    /// bytes with its envelope and the author's certificate).
    static let changePayloadBudget = 48_000
    /// Full changes written per transaction by a CSV import (about 380 KB of edits): what a
    /// transaction materialises is held in memory until it commits.
    static let changesPerTransaction = 8

    func validate() throws {
        if let format, !["json", "csv"].contains(format) { throw ValidationError("--format must be json or csv") }
    }

    /// What the rows of one file come to, as the checks go.
    struct Tally {
        var errors: [String] = []
        var errorCount = 0
        var skipped = 0, valid = 0, rows = 0
        /// Ids of the file's rows so far (row number), to find a record given twice.
        var seen: [RecordID: Int] = [:]

        mutating func error(_ label: String, _ e: RowError) {
            errorCount += 1
            if errors.count < 20 { errors.append("\(label)\(e.column.isEmpty ? "" : ", column \(e.column)"): \(e.reason)") }
        }
    }

    /// Groups edits into changes of one scope and priority within the payload budget; a group that
    /// cannot take the next edit is complete.
    struct Grouper {
        private var open: [String: (group: Replicator.WriteGroup, bytes: Int)] = [:]
        private var order: [String] = []
        /// Complete groups not yet written.
        var complete: [Replicator.WriteGroup] = []

        mutating func add(_ edit: RecordEdit, priority: Priority, size: Int) {
            let key = "\(edit.scope.path) \(priority.rawValue)"
            if var g = open[key], g.bytes + size <= ImportCommand.changePayloadBudget {
                g.group.edits.append(edit)
                g.bytes += size
                open[key] = g
                return
            }
            if let g = open[key] { complete.append(g.group) } else { order.append(key) }
            open[key] = (Replicator.WriteGroup(scope: edit.scope, priority: priority, edits: [edit]), size)
        }

        /// Every group, complete or not (at the end of the file).
        mutating func flushAll() -> [Replicator.WriteGroup] {
            defer { complete = []; open = [:]; order = [] }
            return complete + order.compactMap { open[$0]?.group }
        }
    }

    /// A row whose values are checked, waiting for the store's answer on its id.
    struct Checked {
        var edit: RecordEdit
        var priority: Priority
        var size: Int
        var label: String
    }

    /// Rows checked against the store per query.
    static let rowsPerLookup = 1_000

    /// Checks one row's values and builds its creating edit (the store is asked later, per chunk).
    func check(_ fields: [String: Any], row: Int, label: String, ctx: RecordContext, hlc: HLCTimestamp, tally: inout Tally,
               newID: () -> RecordID) throws(RowError) -> Checked {
        let (edit, priority) = try RecordImport.creatingEdit(fields, schemas: ctx.schemas, author: ctx.replicator.identity.id, hlc: hlc,
                                                           newID: newID)
        if let first = tally.seen[edit.record] { throw RowError("id", "\(edit.record) is also row \(first); each record once per file") }
        tally.seen[edit.record] = row
        do { try ctx.book.checkWritable(edit.scope) } catch { throw RowError("scope", error.message) }
        let size = edit.canonicalBytes.count
        guard size <= Self.changePayloadBudget else {
            throw RowError("", "the record is \(size) bytes encoded, more than one change may carry "
                               + "(\(Self.changePayloadBudget)); shorten its notes")
        }
        return Checked(edit: edit, priority: priority, size: size, label: label)
    }

    /// Asks the store in one query which of `chunk`'s ids it holds: those rows are skipped
    /// (`--skip-existing`) or errors; `accept` gets the others. Empties `chunk`.
    func settle(_ chunk: inout [Checked], ctx: RecordContext, tally: inout Tally, accept: (Checked) throws -> Void) throws {
        guard !chunk.isEmpty else { return }
        let held = try ctx.book.heldRecordIDs(chunk.map(\.edit.record))
        for c in chunk {
            if held.contains(c.edit.record) {
                if skipExisting {
                    tally.skipped += 1
                } else {
                    tally.error(c.label, RowError("id", "\(c.edit.record) is already in the store; leave it out, or pass --skip-existing"))
                }
            } else {
                tally.valid += 1
                try accept(c)
            }
        }
        chunk.removeAll(keepingCapacity: true)
    }

    func run() async throws {
        try reportingErrors(json: json) {
            let fmt = format ?? (file.lowercased().hasSuffix(".csv") ? "csv" : "json")
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw RecordCommandError(.notFound, "cannot read \(file); check the path")
            }
            let (tally, changes) = fmt == "csv" ? try importCSV() : try importJSON()
            if json {
                print(JSONValue.object([("imported", .int(Int64(dryRun ? 0 : tally.valid))), ("valid", .int(Int64(tally.valid))),
                                        ("skipped", .int(Int64(tally.skipped))), ("changes", .int(Int64(changes))), ("dryRun", .bool(dryRun))]).serialized)
            } else if dryRun {
                print("\(file): all \(tally.rows) rows are valid (\(tally.valid) to import, \(tally.skipped) already held); nothing written (--dry-run)")
            } else {
                let skip = tally.skipped > 0 ? "; \(tally.skipped) already held, skipped" : ""
                print("imported \(plural(tally.valid, "record")) from \(file) as \(plural(changes, "change"))\(skip)")
            }
        }
    }

    static func rowErrors(_ file: String, _ tally: Tally) -> RecordCommandError {
        let shown = tally.errors.joined(separator: "\n  ")
        let more = tally.errorCount > tally.errors.count ? "\n  ... and \(tally.errorCount - tally.errors.count) more" : ""
        return RecordCommandError(.data, "\(file): \(plural(tally.errorCount, "bad row")); nothing was imported:\n  \(shown)\(more)\n"
                                  + "Fix the rows and import the file again.")
    }

    /// Writes `groups` in one transaction, most urgent first.
    static func write(_ groups: [Replicator.WriteGroup], _ ctx: RecordContext) throws -> Int {
        try ctx.book.create(groups: groups)
    }

    /// JSON: the whole file is read, checked, and written in one transaction.
    func importJSON() throws -> (Tally, Int) {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw RecordCommandError(.notFound, "cannot read \(file); check the path")
        }
        let rows = try Self.jsonRows(data)
        let ctx = try RecordContext(node)
        let hlc = try ctx.book.timestamp(after: nil)
        var g = SystemRandomNumberGenerator()
        var tally = Tally()
        var grouper = Grouper()
        var chunk: [Checked] = []
        var progress = ProgressLine("checking rows", total: rows.count)
        for (n, row) in rows.enumerated() {
            progress.update(n + 1)
            tally.rows += 1
            do throws(RowError) {
                chunk.append(try check(row.fields, row: n + 1, label: row.label, ctx: ctx, hlc: hlc, tally: &tally,
                                       newID: { RecordID.random(using: &g) }))
            } catch { tally.error(row.label, error) }
            if chunk.count >= Self.rowsPerLookup { try settle(&chunk, ctx: ctx, tally: &tally) { grouper.add($0.edit, priority: $0.priority, size: $0.size) } }
        }
        try settle(&chunk, ctx: ctx, tally: &tally) { grouper.add($0.edit, priority: $0.priority, size: $0.size) }
        progress.finish()
        guard tally.errorCount == 0 else { throw Self.rowErrors(file, tally) }
        var changes = 0
        if !dryRun {
            let groups = grouper.flushAll()
            let announce = tally.valid >= 500 && isatty(STDERR_FILENO) == 1  // the same rule as ProgressLine
            if announce { FileHandle.standardError.write(Data("writing \(tally.valid) records as \(groups.count) changes...".utf8)) }
            changes = try Self.write(groups, ctx)
            if announce { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
        return (tally, changes)
    }

    /// CSV: the file is read row by row twice, checking every row first and writing nothing if one is
    /// bad, then writing changes as they fill, `changesPerTransaction` per transaction. Memory holds
    /// one chunk of rows, the open changes and the ids seen, not the file.
    func importCSV() throws -> (Tally, Int) {
        let ctx = try RecordContext(node)
        let hlc = try ctx.book.timestamp(after: nil)
        let author = ctx.replicator.identity.id
        var tally = Tally()
        var chunk: [Checked] = []
        // Pass 1: check. A progress line needs the number of rows: counted first, only for a terminal.
        var rowCount = 0
        if isatty(STDERR_FILENO) == 1 { try Self.forEachCSVRow(file) { _, _, _, _ in rowCount += 1 } }
        var progress = ProgressLine("checking rows", total: rowCount)
        try Self.forEachCSVRow(file) { fields, cells, row, label in
            progress.update(row)
            tally.rows += 1
            do throws(RowError) {
                chunk.append(try check(fields, row: row, label: label, ctx: ctx, hlc: hlc, tally: &tally,
                                       newID: { Self.derivedID(author: author, row: row, cells: cells) }))
            } catch { tally.error(label, error) }
            if chunk.count >= Self.rowsPerLookup { try settle(&chunk, ctx: ctx, tally: &tally) { _ in } }
        }
        try settle(&chunk, ctx: ctx, tally: &tally) { _ in }
        progress.finish()
        guard tally.errorCount == 0 else { throw Self.rowErrors(file, tally) }
        guard !dryRun else { return (tally, 0) }
        // Pass 2: write. The checks run again (the store may have changed since).
        tally.seen = [:]
        var again = Tally()
        var grouper = Grouper()
        var changes = 0
        var writing = ProgressLine("writing records", total: tally.valid)
        func flush(_ final: Bool) throws {
            try settle(&chunk, ctx: ctx, tally: &again) { grouper.add($0.edit, priority: $0.priority, size: $0.size) }
            if let first = again.errors.first {
                throw RecordCommandError(.data, "\(first) (the file or the store changed while importing)")
            }
            writing.update(again.valid + again.skipped)
            if final {
                changes += try Self.write(grouper.flushAll(), ctx)
            } else if grouper.complete.count >= Self.changesPerTransaction {
                changes += try Self.write(grouper.complete, ctx)
                grouper.complete = []
            }
        }
        do {
            try Self.forEachCSVRow(file) { fields, cells, row, label in
                do throws(RowError) {
                    chunk.append(try check(fields, row: row, label: label, ctx: ctx, hlc: hlc, tally: &again,
                                           newID: { Self.derivedID(author: author, row: row, cells: cells) }))
                } catch { again.error(label, error) }
                if chunk.count >= Self.rowsPerLookup || again.errorCount > 0 { try flush(false) }
            }
            try flush(true)
        } catch {
            writing.finish()
            guard changes > 0 else { throw error }
            let why = (error as? RecordCommandError)?.message ?? "\(error)"
            throw RecordCommandError(.failed, "\(file): the import stopped after \(plural(changes, "change")) were written: \(why)\n"
                                     + "Run the same import again with --skip-existing to write the rest (rows keep their ids).")
        }
        writing.finish()
        return (tally, changes)
    }

    /// The id of a CSV row that has none: derived from the importing device, the row number and the
    /// row's cells, so that importing the same file again gives the same ids (`--skip-existing` then
    /// completes an import cut short instead of duplicating it).
    static func derivedID(author: DeviceID, row: Int, cells: [String]) -> RecordID {
        var w = ByteWriter()
        w.writeBytes(Array("fieldsync/import/csv-row/v1".utf8))
        author.encode(to: &w)
        w.writeVarint(UInt64(row))
        for c in cells { w.writeString(c) }
        guard let digest = try? BLAKE2b.hash(w.bytes, outputLength: 16), let id = ID128(bytes: digest) else {
            preconditionFailure("BLAKE2b-128 gives 16 bytes")
        }
        return RecordID(id)
    }

    /// Calls `body` with each data row of a CSV file: its fields by column name (cells restored from
    /// the export's formula neutralisation), its raw cells, its row number from 1 and a label.
    static func forEachCSVRow(_ file: String, _ body: ([String: Any], [String], Int, String) throws -> Void) throws {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RecordCommandError(.notFound, "cannot read \(file); check the path") }
        defer { close(fd) }
        var reader = CSVReader(fileDescriptor: fd)
        func next() throws -> (line: Int, cells: [String])? {
            do { return try reader.next() } catch { throw RecordCommandError(.data, "\(error.column): \(error.reason)") }
        }
        guard let header = try next() else {
            throw RecordCommandError(.data, "the file is empty; a CSV import needs a header row (id,kind,scope,...)")
        }
        let names = header.cells.map { $0.trimmingCharacters(in: .whitespaces) }
        guard names.contains("kind"), names.contains("scope") else {
            throw RecordCommandError(.data, "line 1 is not a header with kind and scope columns (got \(names.prefix(5).joined(separator: ",")))")
        }
        if let dup = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw RecordCommandError(.data, "line 1: column \(dup) appears twice")
        }
        var n = 0
        while let row = try next() {
            n += 1
            let label = "line \(row.line) (row \(n))"
            guard row.cells.count == names.count else {
                throw RecordCommandError(.data, "\(label): \(row.cells.count) cells, the header has \(names.count); nothing was imported")
            }
            let cells = row.cells.map(CSV.restored)
            var fields: [String: Any] = [:]
            for (k, v) in zip(names, cells) { fields[k] = v }
            try body(fields, cells, n, label)
        }
    }

    struct Row {
        var label: String
        var fields: [String: Any]
    }

    static func jsonRows(_ data: Data) throws -> [Row] {
        let trimmed = data.drop { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        if trimmed.first == UInt8(ascii: "[") {
            guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
                throw RecordCommandError(.data, "the file starts with [ but is not a valid JSON array; nothing was imported")
            }
            return try array.enumerated().map { n, v in
                guard let o = v as? [String: Any] else { throw RecordCommandError(.data, "record \(n + 1): not a JSON object; nothing was imported") }
                return Row(label: "record \(n + 1)", fields: o)
            }
        }
        // JSON Lines (what `list --json` prints): one object per non-empty line.
        var rows: [Row] = []
        for (n, line) in data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { continue }
            guard let o = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw RecordCommandError(.data, "line \(n + 1): not a JSON object; the file must be a JSON array or one object per line; "
                                         + "nothing was imported")
            }
            rows.append(Row(label: "line \(n + 1)", fields: o))
        }
        return rows
    }
}
