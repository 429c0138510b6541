// The report pages of the command center (docs/command-center.md): the map of Longnan, units and stations,
// the daily reports (stored by `serve` every morning, or made on demand), and the suspected duplicates the
// list and detail pages flag. Everything is made by FieldSyncReports on the node's loop and limited to the
// operator's scopes: another county's station, unit, incident or report is not drawn, listed or named, and
// a parameter naming it answers 404 like one that does not exist.

import CSodium
import FieldSync
import FieldSyncCore
import FieldSyncGeo
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Suspected duplicates among the incidents an operator may see.
enum Suspects {
    /// The rule's pairs among the incidents of `op`'s scopes reported from `since` minus the window to `until`
    /// plus the window (at most `ListFilter.scanCap` per scope, newest first), and the rows of those incidents.
    static func pairs(_ book: RecordBook, op: WebOperator, since: Int64, until: Int64,
                      rule: DuplicateRule) throws -> (pairs: [SuspectedDuplicate], rows: [String: IncidentRow]) {
        let scopes: [Scope?] = op.scopes.isEmpty ? [nil] : op.scopes
        var rows: [String: IncidentRow] = [:]
        var points: [IncidentPoint] = []
        for s in scopes {
            let q = RecordQuery(kind: .incident, scope: s, since: since - rule.windowMilliseconds, until: until + rule.windowMilliseconds + 1,
                                limit: ListFilter.scanCap)
            for r in try book.records(q) where op.mayRead(r.scope) {
                guard let incident = try? Incident(r), let row = IncidentRow(r), rows[row.id] == nil else { continue }
                rows[row.id] = row
                points.append(IncidentPoint(incident))
            }
        }
        return (DuplicateFinder.pairs(points, rule: rule), rows)
    }

    /// Flags the rows of a list page that are in an unmarked suspected pair.
    static func flag(_ page: inout ListPage, _ book: RecordBook, op: WebOperator, rule: DuplicateRule) throws {
        guard let lo = page.rows.map(\.reportedAt).min(), let hi = page.rows.map(\.reportedAt).max() else { return }
        let found = try pairs(book, op: op, since: lo, until: hi, rule: rule).pairs.filter { !$0.marked }
        let ids = Set(found.flatMap { [$0.earlier.description, $0.later.description] })
        for i in page.rows.indices where ids.contains(page.rows[i].id) { page.rows[i].suspectedDuplicate = true }
    }
}

/// One suspected pair as the detail page shows it: the other incident and which one would be marked.
struct SuspectRow: Sendable {
    var pair: SuspectedDuplicate
    var other: IncidentRow
}

/// Where the daily reports are and who may read them.
struct ReportAccess: Sendable {
    var directory: String?
    var county: String?
    var root: String

    /// The counties `op` may have a report of (each whole county visible), and whether the whole city.
    func counties(for op: WebOperator) -> (all: Bool, counties: [String]) {
        let names = LongnanGeography.counties.map(\.name)
        let all = (try? Scope(root)).map(op.mayRead) ?? false
        return (all, names.filter { (try? Scope("\(root)/\($0)")).map(op.mayRead) ?? false })
    }

    /// Whether `op` may read the stored reports (all of what they cover is visible to it).
    func mayReadStored(_ op: WebOperator) -> Bool {
        guard directory != nil else { return false }
        let c = counties(for: op)
        if let county { return c.counties.contains(county) }
        return c.all
    }

    /// The stored report files, newest day first (`daily-YYYY-MM-DD.html|csv|json`).
    func stored() -> [String] {
        guard let directory, let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return names.filter(Self.isReportName).sorted(by: >)
    }

    static func isReportName(_ name: String) -> Bool {
        guard name.hasPrefix("daily-"), name.utf8.count <= 32 else { return false }
        let rest = name.dropFirst("daily-".count)
        guard let dot = rest.firstIndex(of: "."), ReportFormat(rawValue: String(rest[rest.index(after: dot)...])) != nil else { return false }
        return (try? ReportDay(parsing: String(rest[..<dot]))) != nil
    }
}

/// Content types and the CSP of a daily report (its own page: inline style allowed by its hash, no script).
enum ReportResponse {
    static func make(_ text: String, format: ReportFormat, name: String) -> Response {
        var h = HTTPFields()
        switch format {
        case .html:
            h[.contentType] = "text/html; charset=utf-8"
            h[.contentSecurityPolicy] = csp(forReport: text)
        case .csv:
            h[.contentType] = "text/csv; charset=utf-8"
            h[.contentDisposition] = "attachment; filename=\"\(name)\""
        case .json:
            h[.contentType] = "application/json; charset=utf-8"
        }
        return Response(status: .ok, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// The report's CSP: no script, nothing from anywhere; its one `<style>` element allowed by its SHA-256
    /// (not `'unsafe-inline'`), so nothing else styled inline would apply.
    static func csp(forReport html: String) -> String {
        var style = "'none'"
        if let open = html.range(of: "<style>"), let close = html.range(of: "</style>", range: open.upperBound..<html.endIndex) {
            let css = Array(html[open.upperBound..<close.lowerBound].utf8)
            var digest = [UInt8](repeating: 0, count: 32)
            _ = crypto_hash_sha256(&digest, css, UInt64(css.count))
            style = "'sha256-\(Data(digest).base64EncodedString())'"
        }
        return "default-src 'none'; style-src \(style); img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    }
}

extension CommandCenter {
    var reportAccess: ReportAccess {
        ReportAccess(directory: options.reportsDirectory, county: options.reportsCounty, root: options.rootScope)
    }

    func addReportRoutes(_ router: Router<WebContext>) {
        router.get("/map") { request, _ in
            let op = try self.requireOperator(request)
            _ = try request.queryPairs()
            let svg = try await self.mapSVG(op)
            return self.html(Pages.layout(title: "Map", op: op, role: self.role, body: Pages.map(svg)))
        }
        router.get("/map.svg") { request, _ in
            let op = try self.requireOperator(request)
            _ = try request.queryPairs()
            return Response(status: .ok, headers: [.contentType: "image/svg+xml; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: try await self.mapSVG(op))))
        }
        router.get("/units") { request, _ in
            let op = try self.requireOperator(request)
            let q = try request.queryPairs()
            let alarmsOnly = q["show"] == "alarms"
            if let show = q["show"], show != "alarms" { throw WebFailure(.badRequest, "show must be alarms (or absent).") }
            var status: DaemonStatus?
            if let p = self.options.statusPath, FileManager.default.fileExists(atPath: p) { status = try? DaemonStatus.read(from: p) }
            let recorded = status != nil
            let now = Int64(self.options.clock()), silent = self.options.unitSilentMinutes, sessions = status
            let (report, own) = try await self.onLoop { book in
                let units = try UnitsReport.make(book.replicator, now: now, silentAfterMinutes: silent, status: sessions, includeSelf: true,
                                                 visible: { op.mayRead($0) })
                return (units, book.replicator.identity.id.description)
            }
            return self.html(Pages.layout(title: "Units", op: op, role: self.role,
                                          body: Pages.units(report, own: own, alarmsOnly: alarmsOnly, recorded: recorded)))
        }
        router.get("/reports") { request, _ in
            let op = try self.requireOperator(request)
            _ = try request.queryPairs()
            let access = self.reportAccess
            let files = access.mayReadStored(op) ? access.stored() : []
            let today = ReportDay(containing: Int64(self.options.clock()))
            return self.html(Pages.layout(title: "Daily reports", op: op, role: self.role,
                                          body: Pages.reports(access, op: op, files: files, yesterday: today.previous)))
        }
        router.get("/reports/file/:name") { request, context in
            let op = try self.requireOperator(request)
            _ = try request.queryPairs()
            let name = context.parameters.get("name") ?? ""
            let access = self.reportAccess
            guard ReportAccess.isReportName(name), access.mayReadStored(op), let dir = access.directory,
                  let text = try? String(contentsOfFile: dir + "/" + name, encoding: .utf8),
                  let format = name.split(separator: ".").last.flatMap({ ReportFormat(rawValue: String($0)) }) else {
                throw WebFailure.notFound()
            }
            return ReportResponse.make(text, format: format, name: name)
        }
        router.get("/reports/make") { request, _ in
            let op = try self.requireOperator(request)
            let q = try request.queryPairs()
            guard let date = q["date"], let day = try? ReportDay(parsing: date) else {
                throw WebFailure(.badRequest, "date must be a day YYYY-MM-DD (China Standard Time, UTC+8).")
            }
            guard let format = ReportFormat(rawValue: q["format"] ?? "html") else { throw WebFailure(.badRequest, "format must be html, csv or json.") }
            let allowed = self.reportAccess.counties(for: op)
            let county = q["county"]
            // A county the operator may not see answers as one that does not exist.
            if let county { guard allowed.counties.contains(county) else { throw WebFailure.notFound() } } else {
                guard allowed.all else { throw WebFailure.notFound() }
            }
            let now = Int64(self.options.clock())
            guard day.start <= now else { throw WebFailure(.badRequest, "That day has not begun yet.") }
            let rule = self.options.duplicateRule
            let report = try await self.onLoop { book in
                try DailyReport.make(book, day: day, options: DailyReportOptions(county: county, duplicates: rule), now: now)
            }
            return ReportResponse.make(report.rendered(format), format: format,
                                       name: "daily-\(day.text)\(county.map { "-" + $0 } ?? "").\(format.rawValue)")
        }
    }

    /// The map for `op`: only its scopes' stations, logs and incidents.
    func mapSVG(_ op: WebOperator) async throws -> String {
        let now = Int64(options.clock())
        let input = try await onLoop { book in
            try LongnanMap.input(book, now: now, visible: op.scopes.isEmpty ? nil : { op.mayRead($0) })
        }
        return LongnanMap.svg(input)
    }
}

extension Pages {
    static func map(_ svg: String) -> String {
        "<h1>Map of Longnan</h1><p class=\"note\">Drawn by this node from what it holds; stations coloured by the time since their newest "
            + "change (when it was written), open incidents by priority. Hover a point for its name. <a href=\"/map.svg\" id=\"map-svg\">SVG</a></p>"
            + "<div class=\"map\" id=\"map\">" + svg + "</div>"
    }

    static func units(_ r: UnitsReport, own: String, alarmsOnly: Bool, recorded: Bool) -> String {
        let hours = r.silentAfterMinutes % 60 == 0 ? "\(r.silentAfterMinutes / 60) h" : "\(r.silentAfterMinutes) min"
        var s = "<h1>Units and stations</h1><section class=\"tiles\"><div class=\"tile\"><b id=\"units-count\">\(r.units.count)</b> devices seen</div>"
        s += "<div class=\"tile\"><b id=\"alarms-count\">\(r.alarms)</b> silent longer than \(hours.html) (alarm)</div></section>"
        s += "<p>" + (alarmsOnly ? "<a href=\"/units\">All devices</a>" : "<a href=\"/units?show=alarms\">Alarms only</a>")
        if !recorded { s += " · last sessions are not recorded (no status file: the node runs no daemon, or it has not written one)" }
        s += "</p><table class=\"units\" id=\"units\"><thead><tr><th>Alarm</th><th>Device</th><th>Role</th><th>Scopes</th><th>Last change</th>"
            + "<th>Silent</th><th>Last session</th><th>Changes held</th><th>Not yet at HQ</th></tr></thead><tbody>"
        for u in r.units where !alarmsOnly || u.alarm {
            let silent = u.silentMinutes.map { TimeText.age($0 * 60_000) } ?? "nothing held"
            let name = String(u.device.prefix(16)) + (u.device == own ? " (this node)" : "")
            s += "<tr\(u.alarm ? " class=\"alarm\"" : "")><td>\(u.alarm ? "ALARM" : "")</td><td><code title=\"\(u.device.html)\">\(name.html)</code></td>"
            s += "<td>\((u.role ?? "unknown").html)</td><td>\(u.scopes.joined(separator: ", ").html)</td><td>\((u.lastChange ?? "none").html)</td>"
            s += "<td>\(silent.html)</td><td>\((u.lastSession ?? "not recorded").html)</td><td class=\"n\">\(u.changesHeld)</td><td class=\"n\">\(u.unreceipted)</td></tr>"
        }
        if r.units.isEmpty { s += "<tr><td colspan=\"9\" class=\"none\">no device seen</td></tr>" }
        return s + "</tbody></table><p class=\"note\">Last change: when its newest change held here was written (UTC+8). Not yet at HQ: "
            + "its changes held here above HQ's receipt of their log. Report generated \(r.generatedAt.html).</p>"
    }

    static func reports(_ access: ReportAccess, op: WebOperator, files: [String], yesterday: ReportDay) -> String {
        var s = "<h1>Daily reports (三情研判, 值班日志)</h1>"
        s += "<h2>Stored by this node every morning</h2>"
        if access.directory == nil {
            s += "<p class=\"none\">This node writes no daily report (no <code>\"reports\": {\"daily\": ...}</code> in its config).</p>"
        } else if !access.mayReadStored(op) {
            s += "<p class=\"none\">The stored reports cover \((access.county ?? "every county").html), more than your account's scopes; make yours below.</p>"
        } else if files.isEmpty {
            s += "<p class=\"none\">None written yet.</p>"
        } else {
            var byDay: [(String, [String])] = []
            for f in files {
                let day = String(f.dropFirst("daily-".count).prefix(10))
                if byDay.last?.0 == day { byDay[byDay.count - 1].1.append(f) } else { byDay.append((day, [f])) }
            }
            s += "<table class=\"reports\" id=\"stored\"><thead><tr><th>Day</th><th>Forms</th></tr></thead><tbody>"
            for (day, names) in byDay.prefix(60) {
                s += "<tr><td>\(day.html)</td><td>" + names.sorted().map {
                    "<a href=\"/reports/file/\(HTML.urlComponent($0))\">\(String($0.split(separator: ".").last ?? "").html)</a>"
                }.joined(separator: " · ") + "</td></tr>"
            }
            s += "</tbody></table>"
        }
        let allowed = access.counties(for: op)
        s += "<h2>Make a report now</h2>"
        if !allowed.all && allowed.counties.isEmpty {
            s += "<p class=\"none\">Reports are made for a county or the whole city; your account's scopes are narrower.</p>"
            return s
        }
        s += "<form method=\"get\" action=\"/reports/make\" class=\"filters\" id=\"make-report\">"
        s += "<label>date <input type=\"date\" name=\"date\" value=\"\(yesterday.text.html)\" required></label>"
        s += "<label>county <select name=\"county\">" + (allowed.all ? "<option value=\"\">all counties</option>" : "")
        s += allowed.counties.map { "<option>\($0.html)</option>" }.joined() + "</select></label>"
        s += "<label>form <select name=\"format\"><option>html</option><option>csv</option><option>json</option></select></label>"
        s += "<button id=\"make\">Make</button></form><p class=\"note\">Made from what this node holds now (UTC+8 days); not stored.</p>"
        return s
    }
}
