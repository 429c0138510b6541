// What the pages show, read on the node's loop through `RecordBook` (the store's index, the replicator's
// keys) and handed to the renderers as plain values.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import Foundation

/// One incident as the pages show it.
struct IncidentRow: Sendable, Codable {
    var id: String
    var scope: String
    var county: String
    var station: String
    var category: String
    var priority: String
    var priorityRank: Int
    var status: String
    var statusLevel: Int
    var summary: String
    var reporter: String
    var reportedAt: Int64
    var units: [String]
    var feedback: String?
    var feedbackDeadline: Int64?
    /// When the feedback was written (its register's HLC, ms).
    var feedbackAt: Int64?
    /// When the feedback reached this node (ms), set by the pages that judge it (`withFeedbackArrivals`); nil:
    /// not asked, or unknown (a change stored before the store kept arrival times): judged by `feedbackAt`.
    var feedbackArrivedAt: Int64?
    var duplicateOf: String?
    var lastChange: Int64
    var latitude: Double
    var longitude: Double
    var place: String?
    /// In an unmarked suspected-duplicate pair (set by the list page; `Suspects`).
    var suspectedDuplicate = false

    init?(_ record: Record) {
        guard let i = try? Incident(record) else { return nil }
        id = record.id.description
        scope = record.scope.path
        county = ScopePath.segment(scope, 1)
        station = ScopePath.segment(scope, 2)
        category = i.category.rawValue
        priority = i.priority.name
        priorityRank = Int(i.priority.rawValue)
        status = i.status.name
        statusLevel = Int(i.status.rawValue)
        summary = i.summary
        reporter = i.reporter
        reportedAt = i.reportedAt
        units = i.assignedUnits.sorted()
        feedback = i.feedback
        feedbackDeadline = i.feedbackDeadline
        feedbackAt = i.feedback == nil ? nil : record.registers[Incident.Field.feedback].map { Int64($0.stamp.hlc.milliseconds) }
        duplicateOf = i.duplicateOf?.description
        lastChange = Int64(record.lastModified.value?.hlc.milliseconds ?? 0)
        latitude = i.location.latitude
        longitude = i.location.longitude
        place = i.location.placeName.isEmpty ? nil : i.location.placeName
    }

    /// Whether the feedback is overdue at `now`: it reached this node after its deadline (when it was
    /// written, if its arrival is unknown), or it is still missing past the deadline.
    func feedbackOverdue(now: Int64) -> Bool {
        guard let d = feedbackDeadline else { return false }
        if let at = feedbackArrivedAt ?? feedbackAt { return at > d }
        return now > d
    }

    /// `rows` with `feedbackArrivedAt` set for those with a feedback and a deadline (one indexed read of the
    /// store for all of them; `RecordBook.arrivals(of:in:)`).
    static func withFeedbackArrivals(_ rows: [(IncidentRow, Record)], _ book: RecordBook) throws -> [IncidentRow] {
        let judged = rows.filter { $0.0.feedbackDeadline != nil && $0.0.feedbackAt != nil }.map(\.1)
        let arrivals = try book.arrivals(of: Incident.Field.feedback, in: judged)
        return rows.map { row, record in
            var row = row
            row.feedbackArrivedAt = arrivals[record.id]?.arrivedAt
            return row
        }
    }
}

/// The list filters (query string of /incidents, /incidents.csv and /events).
struct ListFilter: Sendable {
    var county: String?
    var station: String?
    var category: Incident.Category?
    var priority: Priority?
    var statusText: String?
    var statusLevels: ClosedRange<UInt8>?
    var since: Int64?
    var until: Int64?
    var sinceText: String?
    var untilText: String?
    var text: String?
    var page = 1

    static let pageSize = 50
    /// Most index rows read for one list when a filter is applied after decryption (category, priority).
    static let scanCap = 5_000

    init() {}

    init(_ q: FormPairs, utcOffsetMinutes: Int) throws(WebFailure) {
        func segment(_ key: String) throws(WebFailure) -> String? {
            guard let v = q[key] else { return nil }
            guard v.utf8.count <= 64, v.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 45 || $0 == 95 }) else {
                throw WebFailure(.badRequest, "\(key) must be a scope segment (a-z, 0-9, '-', '_'; at most 64).")
            }
            return v
        }
        county = try segment("county")
        station = try segment("station")
        if station != nil, county == nil { throw WebFailure(.badRequest, "A station filter needs its county.") }
        if let c = q["category"] {
            guard let cat = Incident.Category(rawValue: c) else {
                throw WebFailure(.badRequest, "Unknown category; one of: \(Incident.Category.allCases.map(\.rawValue).joined(separator: ", ")).")
            }
            category = cat
        }
        if let p = q["priority"] {
            guard let pr = Priority(name: p) else { throw WebFailure(.badRequest, "Unknown priority.") }
            priority = pr
        }
        if let s = q["status"] {
            do { statusLevels = try RecordText.statusLevels(s) } catch { throw WebFailure(.badRequest, "Unknown status; open, or one of \(Incident.statusLevels.joined(separator: ", ")).") }
            statusText = s
        }
        func date(_ key: String) throws(WebFailure) -> Int64? {
            guard let v = q[key] else { return nil }
            guard let day = TimeText.day(v) else { throw WebFailure(.badRequest, "\(key) must be a date YYYY-MM-DD.") }
            return day - Int64(utcOffsetMinutes) * 60_000
        }
        since = try date("since")
        sinceText = q["since"]
        if let u = try date("until") { until = u + 86_400_000 }
        untilText = q["until"]
        if let t = q["q"] {
            guard t.utf8.count <= 128 else { throw WebFailure(.badRequest, "The search text is too long (at most 128 bytes).") }
            text = t
        }
        if let p = q["page"] {
            guard let n = Int(p), (1...10_000).contains(n) else { throw WebFailure(.badRequest, "page must be 1 to 10000.") }
            page = n
        }
    }

    /// The filters as query pairs (for links and the live stream).
    var pairs: [(String, String)] {
        [("county", county ?? ""), ("station", station ?? ""), ("category", category?.rawValue ?? ""), ("priority", priority?.name ?? ""),
         ("status", statusText ?? ""), ("since", sinceText ?? ""), ("until", untilText ?? ""), ("q", text ?? "")]
    }

    var needsPostFilter: Bool { category != nil || priority != nil }

    /// The scope the county/station filters name, below `root`.
    func scope(root: String) -> Scope? {
        guard let county else { return nil }
        return try? Scope([root, county, station].compactMap { $0 }.joined(separator: "/"))
    }

    /// The scopes to query for `op`: the filter's scope narrowed to what the operator may see (empty: nothing).
    func scopes(for op: WebOperator, root: String) -> [Scope?] {
        let wanted = scope(root: root)
        if op.scopes.isEmpty { return [wanted] }
        guard let wanted else { return op.scopes }
        if op.mayRead(wanted) { return [wanted] }
        return op.scopes.filter { wanted.contains($0) }
    }

    /// Whether a record (already in a queried scope) matches the filters the index does not hold.
    func matches(_ row: IncidentRow) -> Bool {
        if let category, row.category != category.rawValue { return false }
        if let priority, row.priority != priority.name { return false }
        return true
    }

    /// Whether a changed record matches every filter (the live stream).
    func matchesLive(_ row: IncidentRow, root: String) -> Bool {
        if let s = scope(root: root), let rs = try? Scope(row.scope), !s.contains(rs) { return false }
        if let statusLevels, !statusLevels.contains(UInt8(row.statusLevel)) { return false }
        if let since, row.reportedAt < since { return false }
        if let until, row.reportedAt >= until { return false }
        if let text, !row.summary.contains(text), !row.reporter.contains(text) { return false }
        return matches(row)
    }
}

/// One page of the incident list.
struct ListPage: Sendable {
    var rows: [IncidentRow]
    var hasMore: Bool
    var capped: Bool
}

enum Reads {
    /// Incidents for a filter, newest first, from the store's index (scope, status, time, text), then the
    /// filters the index does not hold; at most `limit` rows after `offset`.
    static func incidents(_ book: RecordBook, _ f: ListFilter, op: WebOperator, root: String, offset: Int, limit: Int) throws -> ListPage {
        let scopes = f.scopes(for: op, root: root)
        let fetch = f.needsPostFilter ? ListFilter.scanCap : offset + limit + 1
        var rows: [IncidentRow] = []
        var capped = false
        for s in scopes {
            let q = RecordQuery(kind: .incident, scope: s, statusLevels: f.statusLevels, since: f.since, until: f.until, text: f.text, limit: fetch)
            let records = try book.records(q)
            if records.count >= ListFilter.scanCap { capped = true }
            rows += records.compactMap(IncidentRow.init).filter { op.mayRead((try? Scope($0.scope)) ?? Scope.unsafeRoot) && f.matches($0) }
        }
        rows.sort { ($0.reportedAt, $0.id) > ($1.reportedAt, $1.id) }
        let page = Array(rows.dropFirst(offset).prefix(limit))
        return ListPage(rows: page, hasMore: rows.count > offset + limit, capped: capped)
    }
}

/// Segments of a scope's path cut from its bytes: the county of `longnan/wudu/station-017/village-0412` is
/// `wudu`. Splitting each incident's and visit's scope into an array of segments was 8 % of the overview's
/// time at HQ (as the map's station, `LongnanMap.stationScope`).
enum ScopePath {
    /// Segment `n` (0 is the first) of `path`, "" if it has fewer.
    static func segment(_ path: String, _ n: Int) -> String {
        let bytes = path.utf8
        var start = bytes.startIndex, index = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            if bytes[i] == UInt8(ascii: "/") {
                if index == n { return String(path[start..<i]) }
                index += 1
                start = bytes.index(after: i)
            }
            i = bytes.index(after: i)
        }
        return index == n ? String(path[start...]) : ""
    }

    /// The county: the second segment.
    static func county(_ path: String) -> String { segment(path, 1) }
}

extension Scope {
    /// A scope no operator scope contains (used when a stored scope fails to parse, which cannot happen).
    static let unsafeRoot: Scope = try! Scope("-invalid-")
}

/// Times as operators read them, in the configured local offset.
enum TimeText {
    /// `YYYY-MM-DD` → ms of that day's midnight UTC (the caller shifts by the local offset).
    static func day(_ s: String) -> Int64? {
        let p = s.split(separator: "-")
        guard s.utf8.count == 10, p.count == 3, let y = Int64(p[0]), let m = Int64(p[1]), let d = Int64(p[2]),
              (1970...2200).contains(y), (1...12).contains(m), (1...31).contains(d) else { return nil }
        return ReportDay.days(year: Int(y), month: Int(m), day: Int(d)) * 86_400_000  // the reports' civil calendar
    }

    /// `YYYY-MM-DD HH:MM` local (the year zero-padded to four characters, sign included, as `%04d` does). Built
    /// without `String(format:)`, which was a fifth of the overview's time at HQ (two times per row of its
    /// overdue table, about 730 rows). Times come from field devices: any `Int64` is shown, those beyond
    /// ±8.64e15 ms (ECMAScript's range, ±273,790 years) as its ends; the arithmetic on `Int64.min` or
    /// `Int64.max` trapped before and took the node down with the page.
    static func format(_ ms: Int64, offsetMinutes: Int) -> String {
        let local = min(max(ms, -timeLimit), timeLimit) + Int64(max(-1_440, min(1_440, offsetMinutes))) * 60_000
        let days = local >= 0 ? local / 86_400_000 : (local - 86_399_999) / 86_400_000
        let (y, m, d) = ReportDay(daysSinceEpoch: days).components
        let minutes = Int((local - days * 86_400_000) / 60_000)
        let year = y < 0 ? "-" + padded(-y, 3) : padded(y, 4)
        return year + "-" + padded(m, 2) + "-" + padded(d, 2) + " " + padded(minutes / 60, 2) + ":" + padded(minutes % 60, 2)
    }

    static let timeLimit: Int64 = 8_640_000_000_000_000

    /// `v` (not negative) in decimal, zero-padded to `width` digits.
    private static func padded(_ v: Int, _ width: Int) -> String {
        let digits = String(v)
        return digits.utf8.count >= width ? digits : String(repeating: "0", count: width - digits.utf8.count) + digits
    }

    /// Local midnight (as UTC ms) of the day holding `ms`.
    static func startOfDay(_ ms: Int64, offsetMinutes: Int) -> Int64 {
        let off = Int64(offsetMinutes) * 60_000
        let local = ms + off
        let days = local >= 0 ? local / 86_400_000 : (local - 86_399_999) / 86_400_000
        return days * 86_400_000 - off
    }

    /// "3 min", "2 h", "5 d".
    static func age(_ ms: Int64) -> String {
        let s = max(0, ms / 1000)
        if s < 120 { return "\(s) s" }
        if s < 7_200 { return "\(s / 60) min" }
        if s < 172_800 { return "\(s / 3600) h" }
        return "\(s / 86_400) d"
    }
}
