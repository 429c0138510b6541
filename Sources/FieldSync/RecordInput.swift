// What an app gives the typed writes: drafts of new records and the changes of an update, with the
// checks the `fieldsync` CLI runs on its command line (same rules, same messages, which name the CLI's
// options), and the parsers of the names people type (categories, priorities, statuses, visit types).

import FieldSyncCore

/// Parsers and checks of record values given as text. Each throws `FieldSyncError` with code
/// `.invalidArgument` and the message the CLI prints.
///
/// ```swift
/// let category = try RecordText.category("traffic")
/// try RecordText.checkText(summary, option: "--summary", max: Incident.MaxBytes.summary, allowEmpty: false)
/// ```
public enum RecordText {
    /// A scope path.
    public static func scope(_ text: String) throws(FieldSyncError) -> Scope {
        do { return try Scope(text) } catch {
            throw FieldSyncError(.invalidArgument, "\(error); e.g. longnan/wudu/station-017/village-0412")
        }
    }

    /// An incident category by its name.
    public static func category(_ text: String) throws(FieldSyncError) -> Incident.Category {
        guard let c = Incident.Category(rawValue: text) else {
            throw FieldSyncError(.invalidArgument, "unknown category \(text); one of \(Incident.Category.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return c
    }

    /// A priority by its name.
    public static func priority(_ text: String) throws(FieldSyncError) -> Priority {
        guard let p = Priority(name: text) else { throw FieldSyncError(.invalidArgument, "unknown priority \(text); one of urgent, high, normal, low") }
        return p
    }

    /// An incident status by its name (`reported`, `dispatched`, `on-scene`, `resolved`, `closed`).
    public static func status(_ text: String) throws(FieldSyncError) -> Incident.Status {
        guard let i = Incident.statusLevels.firstIndex(of: text), let s = Incident.Status(rawValue: UInt8(i)) else {
            throw FieldSyncError(.invalidArgument, "unknown status \(text); one of \(Incident.statusLevels.joined(separator: ", "))")
        }
        return s
    }

    /// A visit type by its name.
    public static func visitType(_ text: String) throws(FieldSyncError) -> Visit.VisitType {
        guard let t = Visit.VisitType(rawValue: text) else {
            throw FieldSyncError(.invalidArgument, "unknown visit type \(text); one of \(Visit.VisitType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return t
    }

    /// The status levels a status filter names: a level (`dispatched`), a range (`reported..on-scene`),
    /// `open` (reported..on-scene) or `done` (resolved..closed), for `RecordQuery.statusLevels`.
    public static func statusLevels(_ text: String) throws(FieldSyncError) -> ClosedRange<UInt8> {
        switch text {
        case "open": return Incident.Status.reported.rawValue...Incident.Status.onScene.rawValue
        case "done": return Incident.Status.resolved.rawValue...Incident.Status.closed.rawValue
        default:
            let parts = text.components(separatedBy: "..")
            guard parts.count <= 2 else { throw FieldSyncError(.invalidArgument, "--status \(text): use NAME or FROM..TO") }
            let lo = try status(parts[0]).rawValue, hi = try status(parts[parts.count - 1]).rawValue
            guard lo <= hi else { throw FieldSyncError(.invalidArgument, "--status \(text): \(parts[0]) comes after \(parts[parts.count - 1])") }
            return lo...hi
        }
    }

    /// Checks a text value against the schema's byte limit (`option` names it in the message).
    public static func checkText(_ text: String?, option: String, max: Int, allowEmpty: Bool = true) throws(FieldSyncError) {
        guard let text else { return }
        if text.utf8.count > max { throw FieldSyncError(.invalidArgument, "\(option) is \(text.utf8.count) bytes; at most \(max) allowed") }
        if !allowEmpty, text.isEmpty { throw FieldSyncError(.invalidArgument, "\(option) must not be empty") }
    }

    /// Checks a location's coordinates.
    public static func checkLocation(_ location: Location) throws(FieldSyncError) {
        if let why = location.invalidReason() { throw FieldSyncError(.invalidArgument, why) }
    }
}

/// A change of a location: new coordinates or place name on top of the current location.
public struct LocationChange: Sendable, Equatable {
    /// New latitude in degrees (-90...90).
    public var latitude: Double?
    /// New longitude in degrees (-180...180).
    public var longitude: Double?
    /// New place name.
    public var place: String?

    /// A change; every part is optional.
    public init(latitude: Double? = nil, longitude: Double? = nil, place: String? = nil) {
        self.latitude = latitude
        self.longitude = longitude
        self.place = place
    }

    /// Whether the change gives nothing.
    public var isEmpty: Bool { latitude == nil && longitude == nil && place == nil }

    /// The location this change gives on top of `current` (latitude and longitude both needed without one).
    /// - Returns: nil if the change is empty.
    /// - Throws: `FieldSyncError` `.invalidArgument`.
    public func location(over current: Location?) throws(FieldSyncError) -> Location? {
        if isEmpty { return nil }
        guard let la = latitude ?? current?.latitude, let lo = longitude ?? current?.longitude else {
            throw FieldSyncError(.invalidArgument, "give both --lat and --lon")
        }
        let l = Location(latitude: la, longitude: lo, placeName: place ?? current?.placeName ?? "")
        try RecordText.checkLocation(l)
        return l
    }
}

/// A new incident (status reported).
public struct IncidentDraft: Sendable {
    /// Its scope, e.g. `longnan/wudu/station-017/village-0412`.
    public var scope: Scope
    /// Its category.
    public var category: Incident.Category
    /// Its priority (the change travels at it).
    public var priority: Priority
    /// Short summary (at most `Incident.MaxBytes.summary` bytes, not empty).
    public var summary: String
    /// Where.
    public var location: Location
    /// Who reported it (at most `Incident.MaxBytes.reporter` bytes).
    public var reporter: String
    /// When it was reported (ms since the Unix epoch); nil: now.
    public var reportedAt: Int64?
    /// Feedback deadline (ms since the Unix epoch).
    public var feedbackDeadline: Int64?
    /// First notes (each at most `Incident.MaxBytes.note` bytes, not empty).
    public var notes: [String]

    /// A draft.
    public init(scope: Scope, category: Incident.Category, priority: Priority = .normal, summary: String, location: Location,
                reporter: String = "walk-in", reportedAt: Int64? = nil, feedbackDeadline: Int64? = nil, notes: [String] = []) {
        self.scope = scope
        self.category = category
        self.priority = priority
        self.summary = summary
        self.location = location
        self.reporter = reporter
        self.reportedAt = reportedAt
        self.feedbackDeadline = feedbackDeadline
        self.notes = notes
    }

    /// The checks of `fieldsync incident new`.
    public func validate() throws(FieldSyncError) {
        try RecordText.checkText(summary, option: "--summary", max: Incident.MaxBytes.summary, allowEmpty: false)
        try RecordText.checkText(reporter, option: "--reporter", max: Incident.MaxBytes.reporter)
        for n in notes { try RecordText.checkText(n, option: "--note", max: Incident.MaxBytes.note, allowEmpty: false) }
        try RecordText.checkLocation(Location(latitude: location.latitude, longitude: location.longitude))
    }
}

/// Changes to an incident's fields (last writer wins per field). Status, units and notes have their
/// own operations.
public struct IncidentUpdate: Sendable {
    /// A value to set or clear.
    public enum Deadline: Sendable, Equatable {
        /// Set to this time (ms since the Unix epoch).
        case at(Int64)
        /// Remove it.
        case clear
    }

    /// New category.
    public var category: Incident.Category?
    /// New priority.
    public var priority: Priority?
    /// New summary.
    public var summary: String?
    /// New location, or changes to the current one.
    public var location = LocationChange()
    /// New reporter.
    public var reporter: String?
    /// New report time (ms since the Unix epoch).
    public var reportedAt: Int64?
    /// Feedback to the reporter (empty: clear it).
    public var feedback: String?
    /// New feedback deadline, or none.
    public var deadline: Deadline?
    /// Mark as a duplicate of this incident (its id or a unique prefix).
    public var duplicateOf: String?

    /// No changes yet.
    public init() {}

    /// The checks of `fieldsync incident update`.
    public func validate() throws(FieldSyncError) {
        try RecordText.checkText(summary, option: "--summary", max: Incident.MaxBytes.summary, allowEmpty: false)
        try RecordText.checkText(reporter, option: "--reporter", max: Incident.MaxBytes.reporter)
        try RecordText.checkText(feedback, option: "--feedback", max: Incident.MaxBytes.feedback)
        if category == nil, priority == nil, summary == nil, location.isEmpty, reporter == nil, reportedAt == nil, feedback == nil,
           deadline == nil, duplicateOf == nil {
            throw FieldSyncError(.invalidArgument, "nothing to update: give at least one of --category, --priority, --summary, --lat/--lon/--place, "
                                 + "--reporter, --reported-at, --feedback, --deadline, --clear-deadline, --duplicate-of")
        }
    }
}

/// A new visit.
public struct VisitDraft: Sendable {
    /// Its scope (the village).
    public var scope: Scope
    /// Household or person visited: a reference, not personal data.
    public var subject: String
    /// The visiting officer.
    public var visitor: String
    /// The visit's type.
    public var visitType: Visit.VisitType
    /// When (ms since the Unix epoch); nil: now.
    public var visitedAt: Int64?
    /// Where.
    public var location: Location?
    /// Outcome.
    public var outcome: String?
    /// Follow-up due by (ms since the Unix epoch); marks a follow-up as needed.
    public var followUpBy: Int64?
    /// Tags (an add-wins set).
    public var tags: [String]
    /// First notes.
    public var notes: [String]

    /// A draft.
    public init(scope: Scope, subject: String, visitor: String, visitType: Visit.VisitType, visitedAt: Int64? = nil,
                location: Location? = nil, outcome: String? = nil, followUpBy: Int64? = nil, tags: [String] = [], notes: [String] = []) {
        self.scope = scope
        self.subject = subject
        self.visitor = visitor
        self.visitType = visitType
        self.visitedAt = visitedAt
        self.location = location
        self.outcome = outcome
        self.followUpBy = followUpBy
        self.tags = tags
        self.notes = notes
    }

    /// The checks of `fieldsync visit new`.
    public func validate() throws(FieldSyncError) {
        try RecordText.checkText(subject, option: "--subject", max: Visit.MaxBytes.subject, allowEmpty: false)
        try RecordText.checkText(visitor, option: "--visitor", max: Visit.MaxBytes.visitor, allowEmpty: false)
        try RecordText.checkText(outcome, option: "--outcome", max: Visit.MaxBytes.outcome)
        for t in tags { try RecordText.checkText(t, option: "--tag", max: Visit.MaxBytes.tag, allowEmpty: false) }
        for n in notes { try RecordText.checkText(n, option: "--note", max: Visit.MaxBytes.note, allowEmpty: false) }
        if let location { try RecordText.checkLocation(location) }
    }
}

/// Changes to a visit's fields (last writer wins per field; tags are an add-wins set).
public struct VisitUpdate: Sendable {
    /// New subject.
    public var subject: String?
    /// New visitor.
    public var visitor: String?
    /// New visit type.
    public var visitType: Visit.VisitType?
    /// New visit time (ms since the Unix epoch).
    public var visitedAt: Int64?
    /// New location, or changes to the current one.
    public var location = LocationChange()
    /// Outcome (empty: clear it).
    public var outcome: String?
    /// Follow-up due by (marks a follow-up as needed).
    public var followUpBy: Int64?
    /// No follow-up needed (clears the due date).
    public var noFollowUp = false
    /// Tags to add.
    public var addTags: [String] = []
    /// Tags to remove (each must be on the visit).
    public var removeTags: [String] = []

    /// No changes yet.
    public init() {}

    /// The checks of `fieldsync visit update`.
    public func validate() throws(FieldSyncError) {
        try RecordText.checkText(subject, option: "--subject", max: Visit.MaxBytes.subject, allowEmpty: false)
        try RecordText.checkText(visitor, option: "--visitor", max: Visit.MaxBytes.visitor, allowEmpty: false)
        try RecordText.checkText(outcome, option: "--outcome", max: Visit.MaxBytes.outcome)
        for t in addTags + removeTags { try RecordText.checkText(t, option: "--tag", max: Visit.MaxBytes.tag, allowEmpty: false) }
        if followUpBy != nil && noFollowUp { throw FieldSyncError(.invalidArgument, "give --follow-up-by or --no-follow-up, not both") }
        if subject == nil, visitor == nil, visitType == nil, visitedAt == nil, location.isEmpty, outcome == nil, followUpBy == nil, !noFollowUp,
           addTags.isEmpty, removeTags.isEmpty {
            throw FieldSyncError(.invalidArgument, "nothing to update: give at least one of --subject, --visitor, --type, --visited-at, --lat/--lon/--place, "
                                 + "--outcome, --follow-up-by, --no-follow-up, --tag, --untag")
        }
    }
}
