// The daily report as printable HTML (self-contained: inline CSS, no script, no external asset; every
// record text escaped), CSV (one long table, every cell formula-neutralised as `fieldsync export` does) and
// JSON (sorted keys, stable).

import FieldSyncCore
import FieldSyncNode
import Foundation

/// The forms a report is written in.
public enum ReportFormat: String, Sendable, CaseIterable {
    case html, csv, json

    /// The file extension.
    public var fileExtension: String { rawValue }
}

extension DailyReport {
    /// The report in `format`.
    public func rendered(_ format: ReportFormat) -> String {
        switch format {
        case .html: html()
        case .csv: csv()
        case .json: json()
        }
    }

    // MARK: JSON

    /// The report as JSON (sorted keys, pretty printed; text escaped as JSON requires).
    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain values cannot fail; a failure is our bug.
        let data = try! e.encode(self)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    // MARK: CSV

    /// The CSV header.
    public static let csvColumns = ["section", "county", "station", "time", "record", "item", "value", "text"]

    /// The report as one long CSV table (RFC 4180, CRLF), columns `csvColumns`:
    /// - `figure` rows: `county` (or `all`), `item` the figure (`incidents`, `category:traffic`,
    ///   `priority:urgent`, `stillOpen`, `closures`, `feedbackDue`, `feedbackOverdue`, `overdueRate`,
    ///   `feedbackJudgedByWriteTime` (due feedback whose arrival this node does not know),
    ///   `suspectedDuplicates`, `markedDuplicates`, `visits`, `visitType:routine`), `value` the number;
    /// - `overdue` rows: `time` the deadline, `record`, `item` the category, `value` minutes late, `text` the summary;
    /// - `duplicate` rows: `time` the later report, `record` the later incident, `item` the earlier one,
    ///   `value` the distance in metres, `text` the later summary;
    /// - `duty` rows: a station's duty log entry: `item` its kind, `text` subject and detail.
    /// Every cell goes through the export's formula neutralisation (`CSVText.neutralized`).
    public func csv() -> String {
        var out = CSVText.line(Self.csvColumns)
        func row(_ cells: [String]) { out += CSVText.line(cells.map(CSVText.neutralized)) }
        for f in counties + [total] {
            func fig(_ item: String, _ v: String) { row(["figure", f.county, "", date, "", item, v, ""]) }
            fig("incidents", "\(f.incidents)")
            for c in Incident.Category.allCases { fig("category:\(c.rawValue)", "\(f.byCategory[c.rawValue] ?? 0)") }
            for p in Priority.allCases { fig("priority:\(p.name)", "\(f.byPriority[p.name] ?? 0)") }
            fig("stillOpen", "\(f.stillOpen)")
            fig("closures", "\(f.closures)")
            fig("feedbackDue", "\(f.feedbackDue)")
            fig("feedbackOverdue", "\(f.feedbackOverdue)")
            fig("overdueRate", f.overdueRate.map { String(format: "%.4f", $0) } ?? "")
            fig("feedbackJudgedByWriteTime", "\(f.feedbackJudgedByWriteTime)")
            fig("suspectedDuplicates", "\(f.suspectedDuplicates)")
            fig("markedDuplicates", "\(f.markedDuplicates)")
            fig("visits", "\(f.visits)")
            for t in Visit.VisitType.allCases { fig("visitType:\(t.rawValue)", "\(f.visitsByType[t.rawValue] ?? 0)") }
        }
        for o in overdue { row(["overdue", o.county, o.station, o.deadline, o.id, o.category, "\(o.lateMinutes)", o.summary]) }
        for d in duplicates {
            row(["duplicate", d.county, d.station, d.laterReportedAt, d.pair.later.description, d.pair.earlier.description,
                 String(format: "%.0f", d.pair.distanceMetres), d.laterSummary])
        }
        for l in dutyLogs {
            for e in l.entries {
                row(["duty", l.county, l.station, e.time, e.record, e.kind, "", e.subject + (e.detail.map { " | " + $0 } ?? "")])
            }
        }
        return out
    }

    // MARK: HTML

    /// The report as one printable HTML page: inline CSS with print rules (each duty log on its own
    /// page), no script, no external asset; every text escaped.
    public func html() -> String {
        let h = HTMLText.escape
        var s = """
            <!DOCTYPE html>
            <html lang="zh-CN">
            <head>
            <meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
            <title>\(h("Daily report 三情研判 \(date)"))</title>
            <style>\(Self.css)</style>
            </head>
            <body>

            """
        s += "<h1>Daily situation report (三情研判) · \(h(date))</h1>\n"
        s += "<p class=\"meta\">Day \(h(from)) to \(h(until)), \(h(timeZone)). Made \(h(generatedAt)) by device \(h(device)) (\(h(role)))"
        s += county.map { ", county \(h($0)) only" } ?? ""
        s += ". The figures are what this node holds. Definitions: docs/reports.md.</p>\n"
        if incomplete > 0 || damaged > 0 {
            s += "<p class=\"warn\">Left out: \(incomplete) record(s) not complete on this node yet, \(damaged) damaged record(s) (`fieldsync doctor`).</p>\n"
        }
        // Figures per county.
        s += "<h2>Incidents, feedback and visits by county</h2>\n<table class=\"figures\">\n<thead><tr><th>county</th><th>incidents</th>"
        for c in Incident.Category.allCases { s += "<th class=\"v\">\(h(c.rawValue))</th>" }
        for p in Priority.allCases { s += "<th class=\"v\">\(h(p.name))</th>" }
        s += "<th>still open</th><th>closures</th><th>feedback due</th><th>overdue</th><th>overdue rate</th><th>suspected dup.</th><th>marked dup.</th><th>visits</th></tr></thead>\n<tbody>\n"
        for f in counties + [total] {
            s += f.county == "all" ? "<tr class=\"total\">" : "<tr>"
            s += "<th>\(h(f.county == "all" ? "all counties" : f.county))</th><td>\(f.incidents)</td>"
            for c in Incident.Category.allCases { s += "<td>\(f.byCategory[c.rawValue] ?? 0)</td>" }
            for p in Priority.allCases { s += "<td>\(f.byPriority[p.name] ?? 0)</td>" }
            s += "<td>\(f.stillOpen)</td><td>\(f.closures)</td><td>\(f.feedbackDue)</td><td>\(f.feedbackOverdue)</td>"
            s += "<td>\(f.overdueRate.map { String(format: "%.2f %%", $0 * 100) } ?? "–")</td>"
            s += "<td>\(f.suspectedDuplicates)</td><td>\(f.markedDuplicates)</td><td>\(f.visits)</td></tr>\n"
        }
        s += "</tbody>\n</table>\n"
        s += "<p class=\"meta\">Overdue: feedback that reached this node after its deadline (the time its change was first stored "
            + "here), or none held when the report was made."
        if total.feedbackJudgedByWriteTime > 0 {
            s += " \(total.feedbackJudgedByWriteTime) due feedback(s) reached this node before it recorded arrival times (a store of "
                + "schema version 7 or older): judged by the time they were written instead."
        }
        s += "</p>\n"
        s += "<h2>Visits by type</h2>\n<table>\n<thead><tr><th>county</th>"
        for t in Visit.VisitType.allCases { s += "<th>\(h(t.rawValue))</th>" }
        s += "</tr></thead>\n<tbody>\n"
        for f in counties + [total] {
            s += "<tr><th>\(h(f.county == "all" ? "all counties" : f.county))</th>"
            for t in Visit.VisitType.allCases { s += "<td>\(f.visitsByType[t.rawValue] ?? 0)</td>" }
            s += "</tr>\n"
        }
        s += "</tbody>\n</table>\n"
        // Overdue feedback.
        s += "<h2>Overdue feedback (\(overdue.count))</h2>\n"
        if overdue.isEmpty { s += "<p>None.</p>\n" } else {
            s += "<table>\n<thead><tr><th>deadline</th><th>feedback written</th><th>reached this node</th><th>late (min)</th><th>station</th><th>incident</th><th>category</th><th>priority</th><th>summary</th></tr></thead>\n<tbody>\n"
            for o in overdue {
                let reached = o.feedbackAt == nil ? "–" : o.feedbackArrivedAt ?? "unknown (judged by the time written)"
                s += "<tr><td>\(h(o.deadline))</td><td>\(h(o.feedbackAt ?? "none"))</td><td>\(h(reached))</td><td>\(o.lateMinutes)</td><td>\(h(o.scope))</td>"
                s += "<td class=\"id\">\(h(o.id))</td><td>\(h(o.category))</td><td>\(h(o.priority))</td><td>\(h(o.summary))</td></tr>\n"
            }
            s += "</tbody>\n</table>\n"
        }
        // Suspected duplicates.
        let rule = "same category, within \(String(format: "%.0f", duplicateRule.distanceMetres)) m and \(duplicateRule.windowMilliseconds / 60_000) min, created by different devices"
        s += "<h2>Suspected duplicates (\(duplicates.count))</h2>\n<p class=\"meta\">\(h(rule)).</p>\n"
        if !duplicates.isEmpty {
            s += "<table>\n<thead><tr><th>later</th><th>earlier</th><th>category</th><th>distance (m)</th><th>apart (min)</th><th>marked</th><th>later summary</th><th>earlier summary</th></tr></thead>\n<tbody>\n"
            for d in duplicates {
                s += "<tr><td class=\"id\">\(h(d.pair.later.description))<br>\(h(d.laterReportedAt))</td>"
                s += "<td class=\"id\">\(h(d.pair.earlier.description))<br>\(h(d.earlierReportedAt))</td><td>\(h(d.pair.category))</td>"
                s += "<td>\(String(format: "%.0f", d.pair.distanceMetres))</td><td>\(d.pair.intervalMilliseconds / 60_000)</td>"
                s += "<td>\(d.pair.marked ? "yes" : "no")</td><td>\(h(d.laterSummary))</td><td>\(h(d.earlierSummary))</td></tr>\n"
            }
            s += "</tbody>\n</table>\n"
        }
        // Duty logs.
        s += "<h2>Duty logs (值班日志): \(dutyLogs.count) station(s)</h2>\n"
        for l in dutyLogs {
            s += "<section class=\"duty\">\n<h3>\(h(l.scope)) · \(h(date))</h3>\n"
            s += "<p class=\"meta\">\(l.reported) reported, \(l.closed) closed, \(l.feedback) feedback, \(l.notes) notes, \(l.visits) visits. Times \(h(timeZone)).</p>\n"
            s += "<table>\n<thead><tr><th>time</th><th>what</th><th>record</th><th>category / type</th><th>priority</th><th>status</th><th>units</th><th>summary / subject</th><th>detail</th></tr></thead>\n<tbody>\n"
            for e in l.entries {
                s += "<tr><td>\(h(String(e.time.dropFirst(11).prefix(5))))</td><td>\(h(e.kind))</td><td class=\"id\">\(h(String(e.record.prefix(8))))</td>"
                s += "<td>\(h(e.category ?? ""))</td><td>\(h(e.priority ?? ""))</td><td>\(h(e.status ?? ""))</td>"
                s += "<td>\(h((e.units ?? []).joined(separator: ", ")))</td><td>\(h(e.subject))</td><td>\(h(e.detail ?? ""))</td></tr>\n"
            }
            s += "</tbody>\n</table>\n</section>\n"
        }
        return s + "</body>\n</html>\n"
    }

    /// The page's style: screen and print.
    static let css = """
        body{font-family:"Noto Sans CJK SC","Source Han Sans SC",sans-serif;font-size:12px;margin:16px;color:#111}
        h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}h3{font-size:13px;margin:12px 0 4px}
        .meta{color:#444;margin:2px 0 8px}.warn{color:#a00}
        table{border-collapse:collapse;margin:4px 0 10px}th,td{border:1px solid #999;padding:2px 5px;text-align:left;vertical-align:top}
        td{white-space:pre-wrap;word-break:break-word}thead th{background:#eee}.figures td{text-align:right}
        th.v{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal}tr.total{font-weight:bold;background:#f4f4f4}
        td.id{font-family:monospace;font-size:11px}
        @page{size:A4 landscape;margin:12mm}
        @media print{body{margin:0}section.duty{break-before:page}thead{display:table-header-group}tr{break-inside:avoid}}
        """
}
