// The daily report the command centre makes every morning (../shared/seed/FACTS.md: "every day the centre
// auto-generates an analysis of incidents, community and online situations (三情) and each station's duty
// log"): per county, the day's incidents by category and priority, closures, feedback due and overdue,
// suspected duplicates and visits; the overdue feedback and the suspected pairs listed; and each
// station's duty log (值班日志). Computed from the store's event-time index (the day's records and a
// lookback for closures and deadlines), decrypted once, in the node's process. Definitions: docs/reports.md.

import FieldSync
import FieldSyncCore
import FieldSyncGeo
import FieldSyncProtocol

/// How to make a daily report.
public struct DailyReportOptions: Sendable, Equatable {
    /// Only this county (its scope segment, e.g. `wudu`); nil: every county.
    public var county: String?
    /// The duplicates rule.
    public var duplicates: DuplicateRule
    /// How many days before the report's day an incident may have been reported and still count for a
    /// closure or a feedback deadline that falls in the day (default 14).
    public var lookbackDays: Int

    /// Options; every criterion has a default.
    public init(county: String? = nil, duplicates: DuplicateRule = .standard, lookbackDays: Int = 14) {
        self.county = county
        self.duplicates = duplicates
        self.lookbackDays = lookbackDays
    }
}

/// One county's figures for the day (or the whole city's, county `all`).
public struct CountyFigures: Sendable, Equatable, Codable {
    /// The county's scope segment (`all` for the total).
    public var county: String
    /// Incidents reported in the day.
    public var incidents = 0
    /// Of those, by category (every category, in `Incident.Category` order).
    public var byCategory: [String: Int] = Dictionary(uniqueKeysWithValues: Incident.Category.allCases.map { ($0.rawValue, 0) })
    /// Of those, by priority (every priority).
    public var byPriority: [String: Int] = Dictionary(uniqueKeysWithValues: Priority.allCases.map { ($0.name, 0) })
    /// Of those, still open (reported, dispatched or on scene) when the report was made.
    public var stillOpen = 0
    /// Incidents closed in the day (whenever reported, within the lookback).
    public var closures = 0
    /// Feedback deadlines that fell in the day.
    public var feedbackDue = 0
    /// Of those, overdue: the feedback reached this node after the deadline, or none was held when the
    /// report was made.
    public var feedbackOverdue = 0
    /// Of the due ones with a feedback, those whose arrival time this node does not know (the change was
    /// stored before the store kept arrival times): judged by the time the feedback was written instead.
    public var feedbackJudgedByWriteTime = 0
    /// `feedbackOverdue / feedbackDue` (nil when nothing was due).
    public var overdueRate: Double?
    /// Suspected duplicate pairs whose later incident was reported in the day.
    public var suspectedDuplicates = 0
    /// Incidents reported in the day already marked as a duplicate (`duplicateOf`).
    public var markedDuplicates = 0
    /// Visits made in the day.
    public var visits = 0
    /// Of those, by visit type (every type).
    public var visitsByType: [String: Int] = Dictionary(uniqueKeysWithValues: Visit.VisitType.allCases.map { ($0.rawValue, 0) })

    /// Empty figures for `county`.
    public init(county: String) { self.county = county }

    mutating func add(_ o: CountyFigures) {
        incidents += o.incidents
        for (k, v) in o.byCategory { byCategory[k, default: 0] += v }
        for (k, v) in o.byPriority { byPriority[k, default: 0] += v }
        stillOpen += o.stillOpen
        closures += o.closures
        feedbackDue += o.feedbackDue
        feedbackOverdue += o.feedbackOverdue
        feedbackJudgedByWriteTime += o.feedbackJudgedByWriteTime
        suspectedDuplicates += o.suspectedDuplicates
        markedDuplicates += o.markedDuplicates
        visits += o.visits
        for (k, v) in o.visitsByType { visitsByType[k, default: 0] += v }
    }

    mutating func finish() { overdueRate = feedbackDue > 0 ? Double(feedbackOverdue) / Double(feedbackDue) : nil }
}

/// A feedback deadline of the day that was missed.
public struct OverdueFeedback: Sendable, Equatable, Codable {
    /// The incident (32 hex digits).
    public var id: String
    /// Its scope, county and station.
    public var scope: String, county: String, station: String
    /// Category and priority.
    public var category: String, priority: String
    /// Its summary (untrusted text from the field).
    public var summary: String
    /// The deadline (ISO 8601, UTC+8).
    public var deadline: String
    /// When the feedback was written (ISO 8601, UTC+8), nil if none is held.
    public var feedbackAt: String?
    /// When the feedback reached this node (ISO 8601, UTC+8); nil if none is held or the arrival is
    /// unknown (then it was judged by `feedbackAt`).
    public var feedbackArrivedAt: String?
    /// Minutes from the deadline to the feedback's arrival (its writing when the arrival is unknown), or
    /// to the report when there is none.
    public var lateMinutes: Int64
}

/// A suspected pair in the report, with what an operator needs to judge it.
public struct DuplicateEntry: Sendable, Equatable, Codable {
    /// The pair.
    public var pair: SuspectedDuplicate
    /// County and station of the later incident.
    public var county: String, station: String
    /// The two summaries (untrusted text).
    public var earlierSummary: String, laterSummary: String
    /// The two report times (ISO 8601, UTC+8).
    public var earlierReportedAt: String, laterReportedAt: String
}

/// One line of a station's duty log.
public struct DutyEntry: Sendable, Equatable, Codable {
    /// When (ISO 8601, UTC+8).
    public var time: String
    /// `reported`, `closed`, `feedback`, `note` or `visit`.
    public var kind: String
    /// The record (32 hex digits).
    public var record: String
    /// For incidents: category, priority, status now and units assigned; for visits: the visit type.
    public var category: String?, priority: String?, status: String?, units: [String]?
    /// The incident's summary or the visit's subject (untrusted text).
    public var subject: String
    /// The note, the feedback, the visit's visitor and outcome (untrusted text), or what is late.
    public var detail: String?

    /// Sort key: time, then kind, then record.
    var key: (String, String, String) { (time, kind, record) }
}

/// A station's duty log for the day.
public struct DutyLog: Sendable, Equatable, Codable {
    /// The station's scope (`longnan/COUNTY/STATION`), or the county's for records made at county level.
    public var scope: String
    /// County and station segments (station empty at county level).
    public var county: String, station: String
    /// Incidents reported, closed; feedback given; notes written; visits made in the day.
    public var reported = 0, closed = 0, feedback = 0, notes = 0, visits = 0
    /// The entries, in time order.
    public var entries: [DutyEntry] = []
}

/// The daily report.
public struct DailyReport: Sendable, Equatable, Codable {
    /// The day (`YYYY-MM-DD`) and its bounds (ISO 8601, UTC+8; the end is exclusive).
    public var date: String, from: String, until: String
    /// `China Standard Time (UTC+8)`.
    public var timeZone: String
    /// When the report was made (ISO 8601, UTC+8).
    public var generatedAt: String
    /// The node that made it: its device id and role. The report shows what this node holds.
    public var device: String, role: String
    /// The county it is limited to, or nil.
    public var county: String?
    /// The duplicates rule and the lookback used.
    public var duplicateRule: DuplicateRule
    public var lookbackDays: Int
    /// Figures per county (the 9 counties in their order, then any other county seen), and the total.
    public var counties: [CountyFigures]
    public var total: CountyFigures
    /// The day's missed feedback deadlines, by deadline.
    public var overdue: [OverdueFeedback]
    /// Suspected duplicate pairs whose later incident was reported in the day.
    public var duplicates: [DuplicateEntry]
    /// Every station's duty log with at least one entry, by scope.
    public var dutyLogs: [DutyLog]
    /// Incidents in the window not complete on this node yet (a required field has not arrived), and
    /// records whose row no longer opens (damage): left out of the figures, counted here.
    public var incomplete: Int, damaged: Int
}

extension DailyReport {
    /// Makes the report of `day` from what `book`'s store holds.
    /// - Parameters:
    ///   - book: the record book (on the replicator's thread).
    ///   - day: the day, UTC+8.
    ///   - options: county, duplicates rule, lookback.
    ///   - now: the wall clock (ms since the Unix epoch): the report's time, against which a deadline without feedback is judged.
    /// - Throws: `ReportError` (bad options), `FieldSyncError` (store errors).
    public static func make(_ book: RecordBook, day: ReportDay, options: DailyReportOptions = DailyReportOptions(),
                            now: Int64) throws -> DailyReport {
        try options.duplicates.validate()
        guard (0...366).contains(options.lookbackDays) else { throw ReportError("the lookback must be 0 to 366 days, not \(options.lookbackDays)") }
        let from = day.start, until = day.end
        let lookbackStart = from - max(Int64(options.lookbackDays) * 86_400_000, options.duplicates.windowMilliseconds)
        let incidentScan = try book.scan(RecordQuery(kind: .incident, since: lookbackStart, until: until))
        let visitScan = try book.scan(RecordQuery(kind: .visit, since: from, until: until))
        var builder = Builder(from: from, until: until, now: now, county: options.county)
        builder.damaged = incidentScan.damaged.count + visitScan.damaged.count

        var points: [IncidentPoint] = []
        var reportedInDay: [RecordID: Incident] = [:], windowIncidents: [RecordID: Incident] = [:]
        var incidents: [Incident] = []
        for record in incidentScan.records {
            guard builder.wanted(record.scope) else { continue }
            guard let incident = try? Incident(record) else {
                builder.incomplete += 1
                continue
            }
            incidents.append(incident)
        }
        // When each feedback of the window reached this node: one indexed read (docs/reports.md, "The
        // overdue rate, exactly").
        let feedback = try book.arrivals(of: Incident.Field.feedback, in: incidents.map(\.record))
        for incident in incidents {
            builder.add(incident, feedback: feedback[incident.id])
            if incident.reportedAt >= from - options.duplicates.windowMilliseconds {
                points.append(IncidentPoint(incident))
                windowIncidents[incident.id] = incident
            }
            if incident.reportedAt >= from { reportedInDay[incident.id] = incident }
        }
        for record in visitScan.records where builder.wanted(record.scope) {
            guard let visit = try? Visit(record) else {
                builder.incomplete += 1
                continue
            }
            builder.add(visit)
        }
        let byID = Dictionary(points.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var duplicates: [DuplicateEntry] = []
        for pair in DuplicateFinder.pairs(points, rule: options.duplicates) {
            guard let later = reportedInDay[pair.later], let earlier = byID[pair.earlier] else { continue }
            let place = Builder.place(later.scope)
            builder.counties[place.county, default: CountyFigures(county: place.county)].suspectedDuplicates += 1
            let earlierSummary = windowIncidents[earlier.id]?.summary ?? ""
            duplicates.append(DuplicateEntry(pair: pair, county: place.county, station: place.station, earlierSummary: earlierSummary,
                                             laterSummary: later.summary, earlierReportedAt: ReportTimeZone.iso(earlier.reportedAt),
                                             laterReportedAt: ReportTimeZone.iso(later.reportedAt)))
        }
        let identity = book.replicator.identity
        return builder.finish(day: day, device: identity.id.description, role: identity.certificate.role.description, options: options,
                              duplicates: duplicates)
    }

    /// Accumulates figures, the overdue list and the duty logs.
    struct Builder {
        let from: Int64, until: Int64, now: Int64, county: String?
        var counties: [String: CountyFigures] = [:]
        var overdue: [(Int64, OverdueFeedback)] = []
        var logs: [String: DutyLog] = [:]
        var incomplete = 0, damaged = 0

        init(from: Int64, until: Int64, now: Int64, county: String?) {
            self.from = from
            self.until = until
            self.now = now
            self.county = county
            if let county { counties[county] = CountyFigures(county: county) } else {
                for c in LongnanGeography.counties { counties[c.name] = CountyFigures(county: c.name) }
            }
        }

        /// County and station segments of a scope (`longnan/COUNTY/STATION/...`); empty when absent.
        static func place(_ scope: Scope) -> (county: String, station: String, stationScope: String) {
            let s = scope.segments
            let county = s.count > 1 ? s[1] : ""
            let station = s.count > 2 ? s[2] : ""
            return (county, station, s.prefix(3).joined(separator: "/"))
        }

        func wanted(_ scope: Scope) -> Bool { county == nil || Self.place(scope).county == county }
        func inDay(_ t: Int64) -> Bool { t >= from && t < until }

        mutating func log(_ scope: Scope, _ entry: DutyEntry, count: WritableKeyPath<DutyLog, Int>) {
            let p = Self.place(scope)
            logs[p.stationScope, default: DutyLog(scope: p.stationScope, county: p.county, station: p.station)].entries.append(entry)
            logs[p.stationScope]![keyPath: count] += 1
        }

        mutating func add(_ i: Incident, feedback arrival: WriteArrival?) {
            let county = Self.place(i.scope).county
            var f = counties[county] ?? CountyFigures(county: county)
            let status = i.status.name
            let units = i.assignedUnits
            func entry(_ t: Int64, _ kind: String, _ detail: String?) -> DutyEntry {
                DutyEntry(time: ReportTimeZone.iso(t), kind: kind, record: i.id.description, category: i.category.rawValue,
                          priority: i.priority.name, status: status, units: units, subject: i.summary, detail: detail)
            }
            if inDay(i.reportedAt) {
                f.incidents += 1
                f.byCategory[i.category.rawValue, default: 0] += 1
                f.byPriority[i.priority.name, default: 0] += 1
                if i.status < .resolved { f.stillOpen += 1 }
                if i.duplicateOf != nil { f.markedDuplicates += 1 }
                log(i.scope, entry(i.reportedAt, "reported", i.reporter.isEmpty ? nil : "reporter: \(i.reporter)"), count: \.reported)
            }
            if i.status == .closed, let stamp = i.record.lattices[Incident.Field.status]?.stamp, inDay(Int64(clamping: stamp.hlc.milliseconds)) {
                f.closures += 1
                log(i.scope, entry(Int64(clamping: stamp.hlc.milliseconds), "closed", nil), count: \.closed)
            }
            // The feedback is judged by when it reached this node; by when it was written when that is unknown.
            let feedbackAt = arrival?.writtenAt, reachedAt = arrival?.reachedAt
            if let t = feedbackAt, inDay(t) {
                let late = i.feedbackDeadline.map { reachedAt! > $0 } ?? false
                log(i.scope, entry(t, "feedback", (late ? "LATE: " : "") + (i.feedback ?? "")), count: \.feedback)
            }
            if let deadline = i.feedbackDeadline, inDay(deadline) {
                f.feedbackDue += 1
                if let arrival, arrival.arrivedAt == nil { f.feedbackJudgedByWriteTime += 1 }
                let late = reachedAt.map { $0 > deadline } ?? (now > deadline)
                if late {
                    f.feedbackOverdue += 1
                    let p = Self.place(i.scope)
                    overdue.append((deadline, OverdueFeedback(
                        id: i.id.description, scope: i.scope.path, county: p.county, station: p.station, category: i.category.rawValue,
                        priority: i.priority.name, summary: i.summary, deadline: ReportTimeZone.iso(deadline),
                        feedbackAt: feedbackAt.map(ReportTimeZone.iso), feedbackArrivedAt: arrival?.arrivedAt.map(ReportTimeZone.iso),
                        lateMinutes: ((reachedAt ?? now) - deadline) / 60_000)))
                }
            }
            for note in i.notes where inDay(Int64(clamping: note.id.hlc.milliseconds)) {
                log(i.scope, entry(Int64(clamping: note.id.hlc.milliseconds), "note", note.text), count: \.notes)
            }
            counties[county] = f
        }

        mutating func add(_ v: Visit) {
            let county = Self.place(v.scope).county
            counties[county, default: CountyFigures(county: county)].visits += 1
            counties[county]!.visitsByType[v.visitType.rawValue, default: 0] += 1
            var detail = "visitor: \(v.visitor)"
            if let o = v.outcome { detail += "; outcome: \(o)" }
            if v.followUpNeeded { detail += "; follow-up" + (v.followUpBy.map { " by \(ReportTimeZone.minute($0))" } ?? "") }
            log(v.scope, DutyEntry(time: ReportTimeZone.iso(v.visitedAt), kind: "visit", record: v.id.description, category: v.visitType.rawValue,
                                   priority: nil, status: nil, units: nil, subject: v.subject, detail: detail), count: \.visits)
        }

        func finish(day: ReportDay, device: String, role: String, options: DailyReportOptions, duplicates: [DuplicateEntry]) -> DailyReport {
            let order = LongnanGeography.counties.map(\.name)
            let names = counties.keys.sorted { a, b in
                let ia = order.firstIndex(of: a) ?? Int.max, ib = order.firstIndex(of: b) ?? Int.max
                return (ia, a) < (ib, b)
            }
            var total = CountyFigures(county: "all")
            var list: [CountyFigures] = []
            for n in names {
                var f = counties[n]!
                f.finish()
                total.add(f)
                list.append(f)
            }
            total.finish()
            let logs = self.logs.values.map { l -> DutyLog in
                var l = l
                l.entries.sort { $0.key < $1.key }
                return l
            }.sorted { $0.scope < $1.scope }
            return DailyReport(
                date: day.text, from: ReportTimeZone.iso(from), until: ReportTimeZone.iso(until), timeZone: ReportTimeZone.name,
                generatedAt: ReportTimeZone.iso(now), device: device, role: role, county: county, duplicateRule: options.duplicates,
                lookbackDays: options.lookbackDays, counties: list, total: total,
                overdue: overdue.sorted { ($0.0, $0.1.id) < ($1.0, $1.1.id) }.map { $0.1 },
                duplicates: duplicates.sorted { ($0.laterReportedAt, $0.pair.later, $0.pair.earlier) < ($1.laterReportedAt, $1.pair.later, $1.pair.earlier) },
                dutyLogs: logs, incomplete: incomplete, damaged: damaged)
        }
    }
}
