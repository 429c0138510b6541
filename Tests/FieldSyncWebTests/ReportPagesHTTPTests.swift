import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncTestSupport
import FieldSyncWeb
import Foundation
import Testing

/// The command center's report pages over HTTP: the map, units and stations, suspected duplicates on the list
/// and detail pages and marking one, the daily reports; each escaped, limited to the operator's scopes (404
/// for another county's by parameter), bounded, and in the access log.
@Suite(.ownThread) struct ReportPagesHTTPTests {
    static let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"

    static func expectEscaped(_ body: String, _ where_: String) {
        #expect(!body.contains("<script>alert"), "\(where_)")
        #expect(!body.contains("<img src=x"), "\(where_)")
    }

    @Test(.timeLimit(.minutes(2))) func theMapIsDrawnByTheServerWithOnlyTheOperatorsScopes() async throws {
        try await CommandCenterHTTPTests.withCenter { f, app, _, port in
            let wudu = try await app.createIncident(WebFixtures.draft(Self.hostile, priority: .urgent))
            let cheng = try await app.createIncident(WebFixtures.draft("Cheng: flooded cellar", scope: WebFixtures.cheng))
            let all = WebClient(port: port)
            try all.login("alice")
            let page = try all.send("GET", "/map")
            #expect(page.status == 200)
            #expect(page.body.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""))
            #expect(page.body.contains(wudu.record.id.description) && page.body.contains(cheng.record.id.description))
            #expect(page.body.contains("longnan/cheng/"))
            Self.expectEscaped(page.body, "/map")
            #expect(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            // CSP-compatible: no inline script or style element or attribute (the SVG colours are attributes).
            #expect(page.header("content-security-policy") == "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                + "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
            #expect(!page.body.contains("<style") && !page.body.contains(" style=") && !page.body.contains("<script>"))
            // A county operator: nothing of Cheng in the SVG, its titles or ids.
            let county = WebClient(port: port)
            try county.login("wudu")
            for path in ["/map", "/map.svg"] {
                let r = try county.send("GET", path)
                #expect(r.status == 200, "\(path)")
                #expect(r.body.contains(wudu.record.id.description), "\(path)")
                #expect(!r.body.contains(cheng.record.id.description), "\(path)")
                #expect(!r.body.contains("Cheng: flooded") && !r.body.contains("longnan/cheng/"), "\(path)")
                Self.expectEscaped(r.body, path)
            }
            #expect(try county.send("GET", "/map.svg").header("content-type")?.hasPrefix("image/svg+xml") == true)
            #expect(try county.send("GET", "/map?x=%ZZ").status == 400)
            #expect(try WebClient(port: port).send("GET", "/map").status == 303)  // not logged in
            #expect(try f.accessLog().contains { $0.operatorName == "wudu" && $0.path == "/map" && $0.status == 200 })
        }
    }

    /// The map's geometry is drawn once per process (`LongnanMapLayout.standard`), its data on every request: a
    /// station with nothing held is grey on the first map, and green with its newest change on the next one
    /// after a change of its scope arrives; a new open incident is drawn too.
    @Test(.timeLimit(.minutes(2))) func aSecondMapShowsWhatArrivedSinceTheFirst() async throws {
        try await CommandCenterHTTPTests.withCenter { _, app, _, port in
            let c = WebClient(port: port)
            try c.login("alice")
            func station017(_ svg: String) -> String? {
                guard let tip = svg.range(of: "<title>longnan/wudu/station-017: "),
                      let circle = svg[..<tip.lowerBound].range(of: "<circle class=\"station\"", options: .backwards) else { return nil }
                return String(svg[circle.lowerBound...].prefix { $0 != "\n" })
            }
            let before = try c.send("GET", "/map.svg")
            #expect(before.status == 200)
            let first = try #require(station017(before.body))
            #expect(first.contains("fill=\"\(LongnanMap.noneColor)\"") && first.contains("nothing held"), "\(first)")
            let written = try await app.createIncident(WebFixtures.draft("Rockfall on the road to the station", priority: .high))
            let after = try c.send("GET", "/map.svg")
            let second = try #require(station017(after.body))
            #expect(second.contains("fill=\"#2ca02c\"") && second.contains("newest change"), "\(second)")
            #expect(!before.body.contains(written.record.id.description) && after.body.contains(written.record.id.description))
        }
    }

    @Test(.timeLimit(.minutes(2))) func theUnitsPageListsDevicesAndRaisesAlarmsWithinTheOperatorsScopes() async throws {
        let clock = FakeClock()
        try await CommandCenterHTTPTests.withCenter(clock: clock, lifetime: 7 * 86_400_000, configure: { _, o in o.unitSilentMinutes = 120 }) {
            f, app, _, port in
            _ = try await app.createIncident(WebFixtures.draft("Wudu: fallen tree"))
            _ = try await app.createIncident(WebFixtures.draft("Cheng: flooded cellar", scope: WebFixtures.cheng))
            let own = String(app.identity.id.description.prefix(16))
            let all = WebClient(port: port)
            try all.login("alice")
            let fresh = try all.send("GET", "/units")
            #expect(fresh.status == 200)
            #expect(fresh.body.contains("\(own) (this node)"))
            #expect(fresh.body.contains("longnan/cheng/station-101") && fresh.body.contains("longnan/wudu/station-017"))
            #expect(fresh.body.contains("id=\"alarms-count\">0<"))
            #expect(fresh.body.contains("silent longer than 2 h"))
            // Three hours later, with nothing new: the unit is silent past the threshold (2 h).
            clock.advance(3 * 3_600_000)
            let silent = try all.send("GET", "/units")
            #expect(silent.body.contains("id=\"alarms-count\">1<"))
            #expect(silent.body.contains("<tr class=\"alarm\"><td>ALARM</td>"))
            #expect(try all.send("GET", "/units?show=alarms").body.contains("(this node)"))
            #expect(try all.send("GET", "/units?show=%3Cx%3E").status == 400)
            // The county operator: the device's Wudu scope and logs only, nothing named of Cheng.
            let county = WebClient(port: port)
            try county.login("wudu")
            let mine = try county.send("GET", "/units")
            #expect(mine.body.contains("longnan/wudu/station-017"))
            #expect(!mine.body.contains("cheng"))
            #expect(try f.accessLog().contains { $0.operatorName == "wudu" && $0.path == "/units" && $0.status == 200 })
        }
    }

    @Test(.timeLimit(.minutes(2))) func suspectedDuplicatesAreFlaggedAndOneIsMarkedADuplicateOfTheOther() async throws {
        try await CommandCenterHTTPTests.withCenter { f, app, _, port in
            var fixtures = f
            let backpack = try await FieldSyncApp.open(
                device: try fixtures.device("bp17", role: .backpack, scopes: [WebFixtures.wudu], keys: [WebFixtures.wuduKey]),
                configuration: WebFixtures.configuration)
            // The same collision reported by the backpack unit and, a moment later, at the station desk; and one
            // in Cheng at the same place (a pair for an operator who sees both counties, never for Wudu's).
            let first = try await backpack.createIncident(WebFixtures.draft("Two cars collided at the bridge"))
            try await WebFixtures.deliver(backpack, to: app)
            let second = try await app.createIncident(WebFixtures.draft("Collision at the bridge " + Self.hostile))
            let cheng = try await app.createIncident(WebFixtures.draft("Cheng: collision", scope: WebFixtures.cheng))
            let other = try await app.createIncident(IncidentDraft(scope: WebFixtures.wuduVillage, category: .fire, priority: .high, summary: "Barn fire",
                                                                   location: Location(latitude: 33.39, longitude: 104.92, placeName: ""), reporter: "x"))
            let county = WebClient(port: port)
            try county.login("wudu")
            let list = try county.send("GET", "/incidents")
            for id in [first.record.id, second.record.id] {
                #expect(Self.row(list.body, id).contains("<span class=\"suspect\">suspected duplicate</span>"), "\(id)")
            }
            #expect(!Self.row(list.body, other.record.id).contains("suspect"))  // another category
            #expect(!list.body.contains(cheng.record.id.description.prefix(8)))
            Self.expectEscaped(list.body, "/incidents")
            // The detail names the other incident of the pair, not the Cheng one, and offers the mark.
            let detail = try county.send("GET", "/incidents/\(first.record.id)")
            #expect(detail.body.contains("<section class=\"suspects\" id=\"suspects\">"))
            #expect(detail.body.contains("/incidents/\(second.record.id)\">"))
            #expect(!detail.body.contains(cheng.record.id.description.prefix(8)) && !detail.body.contains("Cheng"))
            Self.expectEscaped(detail.body, "detail")
            let action = "/incidents/\(second.record.id)/duplicate"
            #expect(detail.body.contains("action=\"\(action)\""))
            #expect(detail.body.contains("name=\"of\" value=\"\(first.record.id)\""))
            // Without the session's token nothing is written.
            let before = try await app.history(of: second.record.id).count
            #expect(try county.send("POST", action, form: [("of", first.record.id.description)]).status == 403)
            #expect(try await app.history(of: second.record.id).count == before)
            // With it: one signed change of the node, the operator named, duplicateOf set.
            let csrf = try #require(WebClient.csrf(in: detail.body))
            let done = try county.send("POST", action, form: [("csrf", csrf), ("of", first.record.id.description)])
            #expect(done.status == 303)
            #expect(done.header("location") == "/incidents/\(second.record.id)?done=duplicate")
            let marked = try Incident(try await app.record(second.record.id.description))
            #expect(marked.duplicateOf == first.record.id)
            #expect(marked.notes.last?.text == "[web operator wudu] marked duplicate of \(first.record.id)")
            #expect(try await app.history(of: second.record.id).last?.log.author == app.identity.id)
            // Marked: the list shows it as a duplicate, no longer as suspected; the detail says marked.
            let after = try county.send("GET", "/incidents")
            #expect(Self.row(after.body, second.record.id).contains("<span class=\"dup\">duplicate</span>"))
            #expect(!Self.row(after.body, first.record.id).contains("suspect"))
            #expect(try county.send("GET", "/incidents/\(first.record.id)").body.contains("<td>marked</td>"))
            // Alice sees both counties: the Cheng incident is suspected with the first one.
            let all = WebClient(port: port)
            try all.login("alice")
            #expect(Self.row(try all.send("GET", "/incidents").body, cheng.record.id).contains("suspected duplicate"))
            #expect(try f.accessLog().contains { $0.operatorName == "wudu" && $0.action == "duplicate" && $0.record == second.record.id.description
                && $0.status == 303 })
            await backpack.close(grace: .zero)
        }
    }

    /// The list row of `id`.
    static func row(_ html: String, _ id: RecordID) -> String {
        guard let start = html.range(of: "<tr data-id=\"\(id)\"") else { return "" }
        return String(html[start.lowerBound...].prefix { $0 != "\n" }.components(separatedBy: "</tr>").first ?? "")
    }

    @Test(.timeLimit(.minutes(2))) func dailyReportsAreListedReadableAndMadeOnDemandWithinScopes() async throws {
        let dir = NSTemporaryDirectory() + "fieldsync-web-reports-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await CommandCenterHTTPTests.withCenter(configure: { _, o in o.reportsDirectory = dir }) { f, app, _, port in
            _ = try await app.createIncident(WebFixtures.draft("Wudu " + Self.hostile))
            _ = try await app.createIncident(WebFixtures.draft("Cheng: flooded cellar", scope: WebFixtures.cheng))
            let now = Int64(FieldSyncApp.wallClock())
            let day = ReportDay(containing: now)
            // The morning run's files (serve writes them the same way: DailyReportService).
            let report = try await app.perform { try DailyReport.make($0, day: day, options: DailyReportOptions(), now: now) }
            for format in ReportFormat.allCases {
                try report.rendered(format).write(toFile: "\(dir)/daily-\(day.text).\(format.rawValue)", atomically: true, encoding: .utf8)
            }
            let all = WebClient(port: port)
            try all.login("alice")
            let list = try all.send("GET", "/reports")
            #expect(list.status == 200)
            #expect(list.body.contains("<a href=\"/reports/file/daily-\(day.text).html\">html</a>"))
            let stored = try all.send("GET", "/reports/file/daily-\(day.text).html")
            #expect(stored.status == 200)
            #expect(stored.body.contains("Cheng: flooded cellar") && stored.body.contains("Wudu &lt;script&gt;"))
            Self.expectEscaped(stored.body, "stored report")
            let csp = try #require(stored.header("content-security-policy"))
            #expect(csp.hasPrefix("default-src 'none'; style-src 'sha256-") && !csp.contains("unsafe-inline") && !csp.contains("script-src"))
            #expect(try all.send("GET", "/reports/file/daily-\(day.text).json").header("content-type")?.hasPrefix("application/json") == true)
            // Guessed and hostile names: 404, nothing read outside the folder.
            for name in ["daily-2001-01-01.html", "..%2F..%2Fetc%2Fpasswd", "daily-\(day.text).html%00.txt", "web-users.json"] {
                #expect(try all.send("GET", "/reports/file/\(name)").status == 404, "\(name)")
            }
            // A county operator: the stored (whole-city) reports are not listed or readable; its county's on demand.
            let county = WebClient(port: port)
            try county.login("wudu")
            let theirs = try county.send("GET", "/reports")
            #expect(!theirs.body.contains("/reports/file/"))
            #expect(theirs.body.contains("<option>wudu</option>") && !theirs.body.contains("cheng"))
            #expect(try county.send("GET", "/reports/file/daily-\(day.text).html").status == 404)
            let made = try county.send("GET", "/reports/make?date=\(day.text)&county=wudu")
            #expect(made.status == 200)
            #expect(made.body.contains("Wudu &lt;script&gt;") && !made.body.contains("Cheng: flooded"))
            Self.expectEscaped(made.body, "made report")
            #expect(made.header("content-security-policy")?.contains("sha256-") == true)
            #expect(try county.send("GET", "/reports/make?date=\(day.text)&county=wudu&format=csv").header("content-type")?.hasPrefix("text/csv") == true)
            // Another county or the whole city by parameter: 404, as for a county that does not exist.
            #expect(try county.send("GET", "/reports/make?date=\(day.text)&county=cheng").status == 404)
            #expect(try county.send("GET", "/reports/make?date=\(day.text)").status == 404)
            #expect(try county.send("GET", "/reports/make?date=\(day.text)&county=nowhere").status == 404)
            // Bounded parameters.
            #expect(try county.send("GET", "/reports/make?date=yesterday&county=wudu").status == 400)
            #expect(try county.send("GET", "/reports/make?date=\(day.text)&county=wudu&format=pdf").status == 400)
            #expect(try county.send("GET", "/reports/make?date=\(day.text)&county=" + String(repeating: "w", count: 300)).status == 400)
            #expect(try f.accessLog().contains { $0.operatorName == "wudu" && $0.path == "/reports/make" && $0.action == "report" && $0.status == 200 })
        }
    }
}
