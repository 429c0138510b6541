// The overview: today's and this week's incidents by county, category and priority, open incidents, the
// feedback overdue rate with the overdue list, visits by county, and how fresh each county's picture is.

import FieldSync
import FieldSyncCore
import FieldSyncProtocol

struct OverviewModel: Sendable {
    var today: [String: Int] = [:]
    var week: [String: Int] = [:]
    var weekByCategory: [String: Int] = [:]
    var weekByPriority: [String: Int] = [:]
    var todayTotal = 0
    var weekTotal = 0
    var open: [IncidentRow] = []
    var openCount = 0
    var withDeadline = 0
    var overdue: [IncidentRow] = []
    var visits: [String: Int] = [:]
    /// Newest change seen per county (ms).
    var newest: [String: Int64] = [:]

    /// Overdue feedback over incidents whose deadline has passed or whose feedback came (this week).
    var overdueRate: Double? { withDeadline == 0 ? nil : Double(overdue.count) / Double(withDeadline) }

    static let openShown = 20
    static let openCap = 5_000

    static func read(_ book: RecordBook, op: WebOperator, now: Int64, offsetMinutes: Int) throws -> OverviewModel {
        var m = OverviewModel()
        let today = TimeText.startOfDay(now, offsetMinutes: offsetMinutes)
        let weekStart = today - 6 * 86_400_000
        // The week ends with today: an incident or visit dated later (a device's clock ahead) is not this week's.
        let weekEnd = today + 86_400_000
        let scopes: [Scope?] = op.scopes.isEmpty ? [nil] : op.scopes
        for s in scopes {
            let week = try book.records(RecordQuery(kind: .incident, scope: s, since: weekStart, until: weekEnd)).compactMap { r -> (IncidentRow, Record)? in
                guard let row = IncidentRow(r), op.mayRead(r.scope) else { return nil }
                return (row, r)
            }
            // Feedback is judged by when it reached this node (docs/command-center.md, "Overview").
            for row in try IncidentRow.withFeedbackArrivals(week, book) {
                m.week[row.county, default: 0] += 1
                m.weekTotal += 1
                m.weekByCategory[row.category, default: 0] += 1
                m.weekByPriority[row.priority, default: 0] += 1
                if row.reportedAt >= today {
                    m.today[row.county, default: 0] += 1
                    m.todayTotal += 1
                }
                if let d = row.feedbackDeadline, d < now || row.feedbackAt != nil {
                    m.withDeadline += 1
                    if row.feedbackOverdue(now: now) { m.overdue.append(row) }
                }
                m.newest[row.county] = max(m.newest[row.county] ?? 0, row.lastChange)
            }
            let open = try book.records(RecordQuery(kind: .incident, scope: s, statusLevels: 0...Incident.Status.onScene.rawValue,
                                                    limit: openCap))
            let rows = open.compactMap(IncidentRow.init).filter { op.mayRead((try? Scope($0.scope)) ?? .unsafeRoot) }
            m.openCount += rows.count
            m.open += rows
            // Visits are only counted: by scope from the store's index, none opened (12,000 a week at HQ).
            for t in try book.tallies(RecordQuery(kind: .visit, scope: s, since: weekStart, until: weekEnd)) where op.mayRead(t.scope) {
                let county = ScopePath.county(t.scope.path)
                m.visits[county, default: 0] += t.count
                m.newest[county] = max(m.newest[county] ?? 0, Int64(t.newest.milliseconds))
            }
        }
        m.open.sort { ($0.priorityRank, -$0.reportedAt) < ($1.priorityRank, -$1.reportedAt) }
        m.open = Array(m.open.prefix(openShown))
        m.overdue.sort { ($0.feedbackDeadline ?? 0) < ($1.feedbackDeadline ?? 0) }
        return m
    }
}
