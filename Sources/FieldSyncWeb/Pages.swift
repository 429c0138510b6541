// The pages, rendered on the server. Every value from a record goes through `HTML.escape` (text and
// attributes) or `HTML.urlComponent` (links); the only script is /static/app.js (the CSP forbids inline).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

enum Pages {
    static func layout(title: String, op: WebOperator?, role: Role, live: String? = nil, body: String) -> String {
        var head = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title.html) · FieldSync command center</title>
            <link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script></head>
            <body\(live.map { " data-events=\"\($0.html)\"" } ?? "")>
            <header><span class="brand">FieldSync command center</span>
            """
        if let op {
            let scopes = op.scopes.isEmpty ? "all scopes" : op.scopes.map(\.path).joined(separator: ", ")
            head += """
                <nav><a href="/">Overview</a><a href="/incidents">Incidents</a><a href="/map">Map</a><a href="/units">Units</a><a href="/reports">Reports</a></nav>
                <span class="who">\(role.description.html) node · \(op.name.html) (\(scopes.html))</span>
                <span id="live-state" class="live"></span>
                <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="\(op.csrf.html)"><button>Log out</button></form>
                """
        }
        return head + "</header>\n<main>\n" + body + "\n</main></body></html>\n"
    }

    static func error(_ failure: WebFailure, op: WebOperator?, role: Role) -> String {
        layout(title: "Error", op: op, role: role, body: "<h1>\(failure.status.code) \(failure.status.reasonPhrase.html)</h1><p class=\"error\">\(failure.message.html)</p>")
    }

    static func login(csrf: String, message: String?) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>Log in · FieldSync command center</title>
        <link rel="stylesheet" href="/static/style.css"></head>
        <body><header><span class="brand">FieldSync command center</span></header><main class="login">
        <h1>Log in</h1>\(message.map { "<p class=\"error\">\($0.html)</p>" } ?? "")
        <form method="post" action="/login"><input type="hidden" name="csrf" value="\(csrf.html)">
        <label>Operator <input name="name" autocomplete="username" required maxlength="32"></label>
        <label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
        <button id="login">Log in</button></form></main></body></html>
        """
    }

    static func counts(_ title: String, _ d: [String: Int], link: ((String) -> String)? = nil) -> String {
        var s = "<table class=\"counts\"><caption>\(title.html)</caption>"
        for (k, v) in d.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            let name = k.isEmpty ? "(none)" : k
            let cell = link.map { "<a href=\"\($0(k).html)\">\(name.html)</a>" } ?? name.html
            s += "<tr><td>\(cell)</td><td class=\"n\">\(v)</td></tr>"
        }
        if d.isEmpty { s += "<tr><td colspan=\"2\" class=\"none\">none</td></tr>" }
        return s + "</table>"
    }

    static func incidentTable(_ rows: [IncidentRow], offset: Int, live: Bool, extra: String = "") -> String {
        var s = "<table class=\"incidents\"\(live ? " id=\"live-table\"" : "")><thead><tr><th>Reported</th><th>Id</th><th>County</th><th>Station</th>"
            + "<th>Category</th><th>Priority</th><th>Status</th><th>Summary</th><th>Units</th>\(extra.isEmpty ? "" : "<th>\(extra.html)</th>")</tr></thead><tbody>"
        for r in rows { s += row(r, offset: offset, extra: extra) }
        return s + "</tbody></table>"
    }

    static func row(_ r: IncidentRow, offset: Int, extra: String = "") -> String {
        var s = "<tr data-id=\"\(r.id.html)\" class=\"p-\(r.priority.html)\"><td>\(TimeText.format(r.reportedAt, offsetMinutes: offset).html)</td>"
        s += "<td><a href=\"/incidents/\(HTML.urlComponent(r.id))\">\(String(r.id.prefix(8)).html)</a>"
        if r.duplicateOf != nil { s += " <span class=\"dup\">duplicate</span>" } else if r.suspectedDuplicate { s += " <span class=\"suspect\">suspected duplicate</span>" }
        s += "</td><td>\(r.county.html)</td><td>\(r.station.html)</td><td>\(r.category.html)</td><td>\(r.priority.html)</td>"
        s += "<td>\(r.status.html)</td><td class=\"summary\">\(r.summary.html)</td><td>\(r.units.joined(separator: ", ").html)</td>"
        if extra == "Deadline" { s += "<td>\(r.feedbackDeadline.map { TimeText.format($0, offsetMinutes: offset) }?.html ?? "")</td>" }
        return s + "</tr>"
    }

    static func overview(_ m: OverviewModel, now: Int64, offset: Int) -> String {
        func countyLink(_ c: String) -> String { "/incidents" + HTML.query([("county", c)]) }
        var s = "<h1>Overview</h1><section class=\"tiles\">"
        s += "<div class=\"tile\"><b id=\"today-total\">\(m.todayTotal)</b> incidents today</div>"
        s += "<div class=\"tile\"><b>\(m.weekTotal)</b> this week</div>"
        s += "<div class=\"tile\"><b>\(m.openCount)</b> open</div>"
        let rate = m.overdueRate.map { String(format: "%.2f %%", $0 * 100) } ?? "–"
        s += "<div class=\"tile\"><b id=\"overdue-rate\">\(rate)</b> feedback overdue (\(m.overdue.count) of \(m.withDeadline) due this week)</div></section>"
        s += "<section class=\"grid\">"
        s += counts("Today by county", m.today, link: countyLink)
        s += counts("This week by county", m.week, link: countyLink)
        s += counts("This week by category", m.weekByCategory)
        s += counts("This week by priority", m.weekByPriority)
        s += counts("Visits this week by county", m.visits)
        s += "<table class=\"counts\"><caption>Freshness (newest change per county)</caption>"
        for (c, t) in m.newest.sorted(by: { $0.key < $1.key }) {
            let age = now - t
            s += "<tr class=\"\(age > 86_400_000 ? "stale" : "fresh")\"><td>\(c.html)</td><td class=\"n\">\(TimeText.age(age).html) ago</td></tr>"
        }
        if m.newest.isEmpty { s += "<tr><td class=\"none\">no change this week</td></tr>" }
        s += "</table></section>"
        s += "<h2>Live: incidents as they arrive</h2>" + incidentTable([], offset: offset, live: true)
        s += "<h2>Open incidents (most urgent first)</h2>" + incidentTable(m.open, offset: offset, live: false)
        s += "<h2>Overdue feedback</h2>" + incidentTable(m.overdue, offset: offset, live: false, extra: "Deadline")
        return s
    }

    static func list(_ page: ListPage, filter f: ListFilter, offset: Int) -> String {
        func select(_ name: String, _ options: [String], _ current: String?) -> String {
            var s = "<label>\(name.html) <select name=\"\(name.html)\"><option value=\"\">any</option>"
            for o in options { s += "<option\(o == current ? " selected" : "")>\(o.html)</option>" }
            return s + "</select></label>"
        }
        func input(_ name: String, _ value: String?, _ type: String = "text") -> String {
            "<label>\(name.html) <input type=\"\(type)\" name=\"\(name.html)\" value=\"\((value ?? "").html)\" maxlength=\"128\"></label>"
        }
        var s = "<h1>Incidents</h1><form method=\"get\" action=\"/incidents\" class=\"filters\" id=\"filters\">"
        s += input("county", f.county) + input("station", f.station)
        s += select("category", Incident.Category.allCases.map(\.rawValue), f.category?.rawValue)
        s += select("priority", Priority.allCases.map(\.name), f.priority?.name)
        s += select("status", ["open"] + Incident.statusLevels, f.statusText)
        s += input("since", f.sinceText, "date") + input("until", f.untilText, "date") + input("q", f.text)
        s += "<button id=\"apply\">Filter</button> <a href=\"/incidents.csv\(HTML.query(f.pairs).html)\" id=\"csv\">CSV</a></form>"
        if page.capped { s += "<p class=\"warn\">More than \(ListFilter.scanCap) incidents match the indexed filters; narrow the time or scope.</p>" }
        s += incidentTable(page.rows, offset: offset, live: true)
        if page.rows.isEmpty { s += "<p class=\"none\" id=\"empty\">No incident matches.</p>" }
        s += "<p class=\"paging\">"
        if f.page > 1 { s += "<a href=\"/incidents\(HTML.query(f.pairs + [("page", "\(f.page - 1)")]).html)\">← newer</a> " }
        s += "page \(f.page)"
        if page.hasMore { s += " <a href=\"/incidents\(HTML.query(f.pairs + [("page", "\(f.page + 1)")]).html)\">older →</a>" }
        return s + "</p>"
    }
}
