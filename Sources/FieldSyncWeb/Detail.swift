// The incident detail: fields, status timeline, notes, feedback and deadline, the signed history with each
// change's verification, and whether each change reached HQ (its receipts); and the dispatch actions, each
// one signed change written by this node's device with the operator named in a note of the same change.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import Foundation

struct HistoryRow: Sendable {
    var at: Int64
    var author: String
    var role: String
    var seq: UInt64
    var verified: Bool
    var verification: String
    var actions: [String]
    /// nil: this node is HQ (it holds what it holds); otherwise whether HQ receipted the change.
    var reachedHQ: Bool?
}

struct DetailModel: Sendable {
    var row: IncidentRow
    var notes: [(at: Int64, author: String, text: String)]
    var timeline: [(at: Int64, status: String, author: String)]
    var history: [HistoryRow]
    var duplicateOfShort: String?
    /// Suspected duplicate pairs this incident is in (the duplicates rule, among what the operator may see).
    var suspects: [SuspectRow] = []
}

/// The dispatch actions.
enum WebAction: Sendable {
    case assign(unit: String)
    case route(body: String)
    case status(Incident.Status)
    case note(String)
    case duplicate(of: String)

    /// The receiving bodies an incident can be routed to.
    static let bodies = ["comprehensive-governance-centre", "12345-hotline", "village-committee"]

    var name: String {
        switch self {
        case .assign: "assign"
        case .route: "route"
        case .status: "status"
        case .note: "note"
        case .duplicate: "duplicate"
        }
    }

    /// Parses a posted form for `action`.
    init(_ action: String, form: FormPairs) throws(WebFailure) {
        func unitLike(_ key: String) throws(WebFailure) -> String {
            guard let v = form[key], (1...64).contains(v.utf8.count),
                  v.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 45 || $0 == 95 || $0 == 46 }) else {
                throw WebFailure(.badRequest, "\(key) must be 1 to 64 of a-z, 0-9, '-', '_', '.'.")
            }
            return v
        }
        switch action {
        case "assign": self = .assign(unit: try unitLike("unit"))
        case "route":
            let b = try unitLike("body")
            guard Self.bodies.contains(b) else { throw WebFailure(.badRequest, "Unknown receiving body.") }
            self = .route(body: b)
        case "status":
            guard let s = form["status"], let i = Incident.statusLevels.firstIndex(of: s), let st = Incident.Status(rawValue: UInt8(i)) else {
                throw WebFailure(.badRequest, "Unknown status.")
            }
            self = .status(st)
        case "note":
            guard let t = form["text"], t.utf8.count <= 3_900 else { throw WebFailure(.badRequest, "A note is 1 to 3900 bytes.") }
            self = .note(t)
        case "duplicate":
            guard let o = form["of"], (6...32).contains(o.utf8.count), o.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
                throw WebFailure(.badRequest, "Give the original incident's id (6 to 32 hex digits).")
            }
            self = .duplicate(of: o)
        default: throw WebFailure.notFound()
        }
    }
}

enum DetailReads {
    /// A record by id for `op`: unknown, ambiguous, another kind and out of the operator's scopes all read
    /// as not found (404), so ids do not leak.
    static func incident(_ book: RecordBook, id: String, op: WebOperator) throws(WebFailure) -> Record {
        guard (6...32).contains(id.utf8.count), id.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
              let record = try? book.record(id, kind: .incident), op.mayRead(record.scope) else {
            throw WebFailure.notFound()
        }
        return record
    }

    static func detail(_ book: RecordBook, id: String, op: WebOperator, now: UInt64, rule: DuplicateRule) throws -> DetailModel {
        let record = try incident(book, id: id, op: op)
        guard let first = IncidentRow(record) else { throw WebFailure(.notFound, "This incident has not fully arrived yet.") }
        let row = try IncidentRow.withFeedbackArrivals([(first, record)], book)[0]
        let r = book.replicator
        let isHQ = r.identity.certificate.role == .hq
        let schema = Incident.schema
        var history: [HistoryRow] = []
        var timeline: [(Int64, String, String)] = []
        for e in try book.history(of: record.id) {
            let verified = e.verification == .accepted
            let text: String
            switch e.verification {
            case .accepted: text = e.authorRevocation == nil ? "verified" : "verified; author revoked later"
            case let .rejected(code, why): text = "NOT VERIFIED (\(code): \(why))"
            case .unknownAuthor: text = "NOT VERIFIED (author's certificate unknown)"
            }
            let author = e.log.author.description
            let actions = e.actions?.map { describe($0, schema: schema) } ?? ["(sealed: this node holds no key that opens it)"]
            let reached: Bool? = isHQ ? nil : ((try? r.store.receipted(e.log)) ?? 0) >= e.seq
            history.append(HistoryRow(at: Int64(e.hlc.milliseconds), author: String(author.prefix(16)),
                                      role: e.author?.role.description ?? "?", seq: e.seq, verified: verified, verification: text,
                                      actions: actions, reachedHQ: reached))
            for case let .raise(f, p) in e.actions ?? [] where f == Incident.Field.status {
                let name = Int(p.level) < Incident.statusLevels.count ? Incident.statusLevels[Int(p.level)] : "\(p.level)"
                timeline.append((Int64(e.hlc.milliseconds), p.generation > 0 ? "\(name) (reopened ×\(p.generation))" : name, String(author.prefix(16))))
            }
        }
        let notes = (try? Incident(record))?.notes.map { (Int64($0.id.hlc.milliseconds), String($0.id.author.description.prefix(16)), $0.text) } ?? []
        let found = try Suspects.pairs(book, op: op, since: row.reportedAt, until: row.reportedAt, rule: rule)
        let suspects = found.pairs.compactMap { p -> SuspectRow? in
            let other = p.earlier.description == row.id ? p.later.description : p.later.description == row.id ? p.earlier.description : nil
            return other.flatMap { found.rows[$0] }.map { SuspectRow(pair: p, other: $0) }
        }
        return DetailModel(row: row, notes: notes, timeline: timeline, history: history, duplicateOfShort: row.duplicateOf.map { String($0.prefix(8)) },
                           suspects: suspects)
    }

    static func describe(_ a: Action, schema: RecordSchema) -> String {
        func name(_ f: FieldID) -> String { schema.name(of: f) }
        func value(_ v: FieldValue) -> String {
            switch v {
            case let .string(s): return s
            case let .time(t): return TimeText.format(t, offsetMinutes: 480)
            case let .location(l): return String(format: "%.5f, %.5f", l.latitude, l.longitude) + (l.placeName.isEmpty ? "" : " (\(l.placeName))")
            default: return v.description
            }
        }
        switch a {
        case let .set(f, v): return v == .null ? "clear \(name(f))" : "set \(name(f)) = \(value(v))"
        case let .raise(f, p):
            var level = "\(p.level)"
            if case let .lattice(levels)? = schema.field(f)?.kind, Int(p.level) < levels.count { level = levels[Int(p.level)] }
            return "\(name(f)) → \(level)\(p.generation > 0 ? " (generation \(p.generation))" : "")"
        case let .add(f, e): return "add \(e) to \(name(f))"
        case let .remove(f, e, _): return "remove \(e) from \(name(f))"
        case let .append(f, t): return "append to \(name(f)): \(t)"
        case .delete: return "delete the record"
        }
    }

    /// Performs a dispatch action as one signed change of this node's device; the operator is named in a
    /// note appended by the same change ("[web operator NAME] ...").
    static func perform(_ book: RecordBook, id: String, action: WebAction, op: WebOperator) throws -> RecordWrite {
        let record = try incident(book, id: id, op: op)
        let incident: Incident
        do { incident = try Incident(record) } catch { throw WebFailure(.conflict, "This incident has not fully arrived yet.") }
        var actions: [Action] = []
        let what: String
        switch action {
        case let .assign(unit):
            if !incident.assignedUnits.contains(unit) { actions.append(.add(field: Incident.Field.assignedUnits, element: Token(unit))) }
            if incident.status == .reported { actions.append(incident.advance(to: .dispatched)) }
            what = "assigned \(unit)"
        case let .route(body):
            if incident.status < .resolved { actions.append(incident.advance(to: .resolved)) }
            what = "routed to \(body)"
        case let .status(s):
            guard s >= incident.status else {
                throw WebFailure(.conflict, "The incident is already \(incident.status); status only moves forward.")
            }
            if s > incident.status { actions.append(incident.advance(to: s)) }
            what = "status \(s.name)"
        case let .note(text):
            what = "note: \(text)"
        case let .duplicate(of):
            let other = try self.incident(book, id: of, op: op)
            guard other.id != record.id else { throw WebFailure(.badRequest, "An incident cannot duplicate itself.") }
            actions.append(.set(field: Incident.Field.duplicateOf, value: .record(other.id)))
            what = "marked duplicate of \(other.id)"
        }
        actions.append(.append(field: Incident.Field.notes, text: "[web operator \(op.name)] \(what)"))
        return try book.write(record, actions)
    }
}

extension Pages {
    static func detail(_ d: DetailModel, op: WebOperator, mayDispatch: Bool, now: Int64, offset: Int, flash: String?) -> String {
        let r = d.row
        func t(_ ms: Int64) -> String { TimeText.format(ms, offsetMinutes: offset).html }
        var s = "<h1>Incident <code>\(String(r.id.prefix(8)).html)</code> <span class=\"p-\(r.priority.html)\">\(r.priority.html)</span></h1>"
        if let flash { s += "<p class=\"flash\" id=\"flash\">\(flash.html)</p>" }
        s += "<table class=\"fields\">"
        func field(_ k: String, _ v: String, id: String? = nil) { s += "<tr><th>\(k.html)</th><td\(id.map { " id=\"\($0)\"" } ?? "")>\(v)</td></tr>" }
        field("Id", "<code>\(r.id.html)</code>")
        field("Scope", r.scope.html)
        field("Category", r.category.html)
        field("Status", r.status.html, id: "status")
        field("Summary", r.summary.html, id: "summary")
        field("Reported", t(r.reportedAt) + " by " + r.reporter.html)
        field("Location", String(format: "%.5f, %.5f", r.latitude, r.longitude).html + (r.place.map { " · " + $0.html } ?? ""))
        field("Units", r.units.joined(separator: ", ").html, id: "units")
        var fb = r.feedback.map { $0.html } ?? "<i>none yet</i>"
        if let at = r.feedbackAt {
            let reached = r.feedbackArrivedAt.map { "reached this node \(t($0))" } ?? (r.feedbackDeadline == nil ? nil : "arrival here unknown")
            fb += " <small>(written \(t(at))\(reached.map { "; " + $0 } ?? ""))</small>"
        }
        field("Feedback", fb)
        if let dl = r.feedbackDeadline {
            field("Feedback deadline", t(dl) + (r.feedbackOverdue(now: now) ? " <b class=\"overdue\">OVERDUE</b>" : ""))
        }
        if let dup = r.duplicateOf {
            field("Duplicate of", "<a href=\"/incidents/\(HTML.urlComponent(dup))\">\((d.duplicateOfShort ?? dup).html)</a>")
        }
        s += "</table>"
        if mayDispatch {
            let csrf = "<input type=\"hidden\" name=\"csrf\" value=\"\(op.csrf.html)\">"
            let base = "/incidents/\(HTML.urlComponent(r.id))"
            s += "<section class=\"actions\"><h2>Dispatch</h2>"
            s += "<form method=\"post\" action=\"\(base)/assign\">\(csrf)<label>Unit <input name=\"unit\" id=\"unit\" required maxlength=\"64\"></label><button id=\"assign\">Assign</button></form>"
            s += "<form method=\"post\" action=\"\(base)/route\">\(csrf)<label>Route to <select name=\"body\">"
                + WebAction.bodies.map { "<option>\($0.html)</option>" }.joined() + "</select></label><button>Route</button></form>"
            s += "<form method=\"post\" action=\"\(base)/status\">\(csrf)<label>Status <select name=\"status\">"
                + Incident.statusLevels.map { "<option\($0 == r.status ? " selected" : "")>\($0.html)</option>" }.joined() + "</select></label><button>Set</button></form>"
            s += "<form method=\"post\" action=\"\(base)/note\">\(csrf)<label>Note <input name=\"text\" required maxlength=\"3900\"></label><button>Add note</button></form>"
            s += "<form method=\"post\" action=\"\(base)/duplicate\">\(csrf)<label>Duplicate of <input name=\"of\" required maxlength=\"32\" placeholder=\"id\"></label><button>Mark duplicate</button></form>"
            s += "</section>"
        }
        if !d.suspects.isEmpty {
            s += "<section class=\"suspects\" id=\"suspects\"><h2>Suspected duplicates</h2><table><thead><tr><th>Incident</th><th>Reported</th>"
                + "<th>Summary</th><th>Distance</th><th>Apart</th><th></th></tr></thead><tbody>"
            for x in d.suspects {
                let o = x.other, p = x.pair
                s += "<tr><td><a href=\"/incidents/\(HTML.urlComponent(o.id))\">\(String(o.id.prefix(8)).html)</a></td><td>\(t(o.reportedAt))</td>"
                s += "<td class=\"summary\">\(o.summary.html)</td><td class=\"n\">\(Int(p.distanceMetres.rounded())) m</td>"
                s += "<td class=\"n\">\(p.intervalMilliseconds / 60_000) min</td><td>"
                if p.marked {
                    s += "marked"
                } else if mayDispatch {
                    // The later report is marked a duplicate of the earlier one (the model's duplicateOf).
                    let later = p.later.description, earlier = p.earlier.description
                    s += "<form method=\"post\" action=\"/incidents/\(HTML.urlComponent(later))/duplicate\" class=\"inline\">"
                        + "<input type=\"hidden\" name=\"csrf\" value=\"\(op.csrf.html)\"><input type=\"hidden\" name=\"of\" value=\"\(earlier.html)\">"
                        + "<button class=\"mark-duplicate\">Mark \(String(later.prefix(8)).html) a duplicate of \(String(earlier.prefix(8)).html)</button></form>"
                }
                s += "</td></tr>"
            }
            s += "</tbody></table></section>"
        }
        s += "<h2>Status timeline</h2><ol class=\"timeline\">" + d.timeline.map { "<li>\(t($0.at)) · \($0.status.html) · <code>\($0.author.html)</code></li>" }.joined() + "</ol>"
        s += "<h2>Notes</h2><ul class=\"notes\">" + d.notes.map { "<li>\(t($0.at)) · <code>\($0.author.html)</code>: \($0.text.html)</li>" }.joined() + "</ul>"
        s += "<h2>Signed history</h2><table class=\"history\"><thead><tr><th>When</th><th>Author</th><th>Role</th><th>Seq</th><th>Verification</th><th>Reached HQ</th><th>Changes</th></tr></thead><tbody>"
        for h in d.history {
            let hq = h.reachedHQ.map { $0 ? "yes (receipted)" : "not yet" } ?? "this node is HQ"
            s += "<tr><td>\(t(h.at))</td><td><code>\(h.author.html)</code></td><td>\(h.role.html)</td><td>\(h.seq)</td>"
            s += "<td class=\"\(h.verified ? "ok" : "bad")\">\(h.verification.html)</td><td>\(hq.html)</td>"
            s += "<td><ul>" + h.actions.map { "<li>\($0.html)</li>" }.joined() + "</ul></td></tr>"
        }
        return s + "</tbody></table>"
    }
}
