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

#if canImport(Glibc)
import Glibc
#endif

/// A small WebDriver (W3C) client over HTTP to a local chromedriver.
final class WebDriver: @unchecked Sendable {
    let http: WebClient
    let session: String
    static let elementKey = "element-6066-11e4-a52e-4f735466cecf"

    init(port: Int) throws {
        http = WebClient(port: port)
        let caps = """
            {"capabilities":{"alwaysMatch":{"browserName":"chrome","goog:chromeOptions":{"binary":"/usr/bin/chromium",
            "args":["--headless=new","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--window-size=1366,768","--hide-scrollbars",
            "--force-device-scale-factor=1","--lang=en-US"]}}}}
            """
        let r = try Self.json(http.send("POST", "/session", raw: caps, contentType: "application/json"))
        guard let value = r["value"] as? [String: Any], let id = value["sessionId"] as? String else {
            throw WebDriverError("no session: \(r)")
        }
        session = id
    }

    struct WebDriverError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    static func json(_ reply: HTTPReply) throws -> [String: Any] {
        guard let o = try JSONSerialization.jsonObject(with: Data(reply.body.utf8)) as? [String: Any] else { throw WebDriverError("not JSON: \(reply.body.prefix(200))") }
        return o
    }

    @discardableResult
    func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> Any? {
        let raw = body.map { String(decoding: try! JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        let r = try Self.json(http.send(method, "/session/\(session)\(path)", raw: raw ?? (method == "POST" ? "{}" : nil), contentType: "application/json"))
        if let v = r["value"] as? [String: Any], let e = v["error"] as? String {
            let text = "\(path): \(e): \(String(describing: v["message"] ?? "").prefix(300))"
            FileHandle.standardError.write(Data("WebDriver error: \(text)\n".utf8))
            throw WebDriverError(text)
        }
        return r["value"]
    }

    func go(_ url: String) throws { try command("POST", "/url", ["url": url]) }
    func url() throws -> String { (try command("GET", "/url") as? String) ?? "" }
    func element(_ css: String) throws -> String {
        let found = try command("POST", "/element", ["using": "css selector", "value": css])
        guard let v = found as? [String: Any], let id = v[Self.elementKey] as? String else {
            throw WebDriverError("no element \(css): \(String(describing: found).prefix(300))")
        }
        return id
    }
    func type(_ css: String, _ text: String) throws {
        let e = try element(css)
        try command("POST", "/element/\(e)/clear")
        try command("POST", "/element/\(e)/value", ["text": text])
    }
    func click(_ css: String) throws { try command("POST", "/element/\(try element(css))/click") }
    func text(_ css: String) throws -> String { (try command("GET", "/element/\(try element(css))/text") as? String) ?? "" }
    func script(_ js: String, _ args: [Any] = []) throws -> Any? { try command("POST", "/execute/sync", ["script": js, "args": args]) }
    func screenshot(to path: String) throws {
        guard let b64 = try command("GET", "/screenshot") as? String, let data = Data(base64Encoded: b64) else { throw WebDriverError("no screenshot") }
        try data.write(to: URL(fileURLWithPath: path))
    }
    /// Whether a JavaScript alert is open (an XSS that ran would open one).
    func alertOpen() -> Bool { (try? command("GET", "/alert/text")) != nil }
    func quit() { _ = try? http.send("DELETE", "/session/\(session)") }

    /// Polls `condition` every 50 ms for up to `seconds`.
    static func wait(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }
}

/// The command center in headless Chromium driven by WebDriver: log in; an incident written on a backpack
/// node syncs to the station and appears on the station's open page without a reload; filter; open the
/// detail; assign a unit, which reaches the backpack; an XSS summary renders as text; a county operator
/// cannot open another county's incident. With FIELDSYNC_SCREENSHOTS=DIR it also saves a 1366x768
/// screenshot of each page there (docs/command-center/).
@Suite(.ownThread) struct BrowserTests {
    static let chromium = "/usr/bin/chromium"
    static let driver = "/usr/bin/chromedriver"

    @Test(.timeLimit(.minutes(3))) func theCommandCenterInARealBrowser() async throws {
        let fm = FileManager.default
        guard fm.isExecutableFile(atPath: Self.chromium), fm.isExecutableFile(atPath: Self.driver) else {
            let why = "BrowserTests: \(Self.chromium) or \(Self.driver) is missing: `apt-get install -y chromium chromium-driver`"
            if ProcessInfo.processInfo.environment["CI"] != nil {
                Issue.record("\(why) (required in CI)")
            } else {
                print("\n*** SKIPPED *** \(why)\n")
            }
            return
        }
        let shots = ProcessInfo.processInfo.environment["FIELDSYNC_SCREENSHOTS"]
        var f = try WebFixtures()
        defer { f.remove() }
        let station = try await f.stationApp()
        let backpack = try await FieldSyncApp.open(device: try f.device("bp17", role: .backpack, scopes: [WebFixtures.wudu], keys: [WebFixtures.wuduKey]),
                                                   configuration: WebFixtures.configuration)
        try f.addOperators()
        let reports = f.dir + "/reports"
        try FileManager.default.createDirectory(atPath: reports, withIntermediateDirectories: true)
        let center = try await f.center(station, configure: { $0.reportsDirectory = reports })
        let webPort = try #require(center.port)
        try await station.startSync(WebFixtures.syncOptions())
        let syncPort = try #require(await station.listeningPort)
        try await backpack.startSync(WebFixtures.syncOptions(peers: [PeerAddress(host: "127.0.0.1", port: syncPort)]))
        // Some history for the overview and list: a closed one with late feedback, an open one in Cheng.
        let now = Int64(FieldSyncApp.wallClock())
        var late = WebFixtures.draft("Dispute over irrigation water", priority: .normal)
        late.reportedAt = now - 3_600_000
        late.feedbackDeadline = now - 1_800_000
        let lateWrite = try await station.createIncident(late)
        _ = try await station.close(lateWrite.record.id.description, feedback: "Mediated; both families agreed")
        let cheng = try await station.createIncident(WebFixtures.draft("Cheng: flooded cellar", scope: WebFixtures.cheng, priority: .high))
        _ = try await station.createIncident(WebFixtures.draft("Stray cattle on the county road", priority: .low))

        let driverPort = try LoopbackPort.next()
        // posix_spawn, not Foundation's Process: its waitUntilExit hung here after a failure.
        var pid: pid_t = 0
        let args: [String] = [Self.driver, "--port=\(driverPort)", "--allowed-ips=127.0.0.1", "--log-path=/dev/null"]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        // Not inheriting the test process's connections (`Spawn`): chromedriver and the browser would hold
        // other tests' sessions open after those tests closed them.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        #expect(Spawn.closeInheritedDescriptors(&actions))
        #expect(posix_spawn(&pid, Self.driver, &actions, nil, argv, environ) == 0)
        defer {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            for _ in 0..<50 where waitpid(pid, &status, WNOHANG) == 0 { usleep(100_000) }
            if waitpid(pid, &status, WNOHANG) == 0 { kill(pid, SIGKILL); waitpid(pid, &status, 0) }
        }
        let up = WebDriver.wait(10) { (try? WebClient(port: driverPort).send("GET", "/status"))?.status == 200 }
        #expect(up, "chromedriver did not start")
        let browser = try WebDriver(port: driverPort)
        defer { browser.quit() }
        let base = "http://127.0.0.1:\(webPort)"
        func shot(_ name: String) throws { if let shots { try browser.screenshot(to: "\(shots)/\(name).png") } }
        func step(_ text: String) { FileHandle.standardError.write(Data("BrowserTests: \(text)\n".utf8)) }

        step("Log in.")
        // Log in.
        try browser.go(base + "/")
        #expect(try browser.url().hasSuffix("/login"))
        try shot("login")
        try browser.type("input[name=name]", "alice")
        try browser.type("input[name=password]", WebFixtures.password)
        try browser.click("#login")
        #expect(WebDriver.wait(5) { (try? browser.url()) == base + "/" })
        #expect(try browser.text("h1") == "Overview")

        step("The list page is open")
        // The list page is open; a backpack writes an incident; it appears without a reload.
        try browser.go(base + "/incidents")
        #expect(WebDriver.wait(5) { (try? browser.text("#live-state")) == "live" })
        try browser.script("window.notReloaded = 42;")
        let written = try await backpack.createIncident(WebFixtures.draft("Landslide blocks the road to Liujiaping", priority: .urgent))
        let id = written.record.id.description
        let start = Date()
        let appeared = WebDriver.wait(20) {
            ((try? browser.script("return document.querySelector('#live-table tbody').textContent;")) as? String)?.contains("Landslide blocks") == true
        }
        #expect(appeared, "the synced incident did not appear on the open page")
        print("backpack write → station page: \(Date().timeIntervalSince(start)) s (sync + live update)")
        #expect(try browser.script("return window.notReloaded;") as? Int == 42)
        try shot("incidents")

        step("Filter the list")
        // Filter the list: urgent only.
        try browser.go(base + "/incidents")
        try browser.script("document.querySelector('select[name=priority]').value = 'urgent';")
        try browser.click("#apply")
        #expect(WebDriver.wait(5) { (try? browser.url())?.contains("priority=urgent") == true })
        let rows = try browser.script("return Array.from(document.querySelectorAll('#live-table tbody tr')).map(r => r.textContent);") as? [String] ?? []
        #expect(rows.count == 1 && rows.first?.contains("Landslide blocks") == true, "\(rows)")

        step("Open the detail")
        // Open the detail and assign a unit; the assignment reaches the backpack node.
        try browser.click("#live-table tbody tr a")
        #expect(WebDriver.wait(5) { (try? browser.url())?.contains("/incidents/\(id)") == true })
        try browser.type("#unit", "station-017-car-2")
        try browser.click("#assign")
        #expect(WebDriver.wait(5) { (try? browser.text("#flash")) == "Unit assigned." })
        #expect(try browser.text("#units") == "station-017-car-2")
        try shot("detail")
        var reached = false
        for _ in 0..<200 {
            if let r = try? await backpack.record(id), (try? Incident(r))?.assignedUnits == ["station-017-car-2"] { reached = true; break }
            try await TestClock.sleep(for: .milliseconds(100))
        }
        #expect(reached, "the assignment did not reach the backpack node")

        step("An XSS summary")
        // An XSS summary written in the field renders as text, live and on its detail page; no alert opens.
        try browser.go(base + "/incidents")
        #expect(WebDriver.wait(5) { (try? browser.text("#live-state")) == "live" })
        let xss = try await backpack.createIncident(WebFixtures.draft("<script>alert(1)</script><img src=x onerror=alert(2)>"))
        #expect(WebDriver.wait(20) {
            ((try? browser.script("return document.querySelector('#live-table tbody').textContent;")) as? String)?.contains("<script>alert(1)</script>") == true
        })
        #expect(!browser.alertOpen())
        try browser.go(base + "/incidents/\(xss.record.id)")
        #expect(try browser.text("#summary") == "<script>alert(1)</script><img src=x onerror=alert(2)>")
        #expect(!browser.alertOpen())
        #expect(try browser.script("return document.querySelectorAll('main img, main script').length;") as? Int == 0)

        step("Map, units, a duplicate, reports")
        let reportPagesStart = Date()
        // The map (server-drawn SVG, stations and the open incidents), the units page.
        try browser.go(base + "/map")
        #expect((try browser.script("return document.querySelectorAll('#map svg circle.station').length;") as? Int ?? 0) > 100)
        #expect((try browser.script("return document.querySelectorAll('#map svg rect.incident').length;") as? Int ?? 0) >= 3)
        try shot("map")
        try browser.go(base + "/units")
        #expect(try browser.text("h1") == "Units and stations")
        #expect(try browser.text("#units").contains("backpack"))
        try shot("units")
        // The landslide (the backpack's) is a suspected duplicate of incidents written at the station: mark one.
        try browser.go(base + "/incidents/\(id)")
        #expect(try browser.text("#suspects").contains("Stray cattle on the county road"))
        try browser.click("#suspects button.mark-duplicate")
        #expect(WebDriver.wait(5) { (try? browser.text("#flash")) == "Marked as duplicate." })
        #expect(try browser.text("main").contains("Duplicate of"))
        #expect(!browser.alertOpen())
        // The daily reports: the morning's file listed and opened (its own CSP lets its style in by hash).
        let nowMs = Int64(FieldSyncApp.wallClock())
        let today = ReportDay(containing: nowMs)
        let report = try await station.perform { try DailyReport.make($0, day: today, options: DailyReportOptions(), now: nowMs) }
        try report.html().write(toFile: "\(reports)/daily-\(today.text).html", atomically: true, encoding: .utf8)
        try browser.go(base + "/reports")
        try shot("reports")
        try browser.click("#stored a")
        #expect(WebDriver.wait(5) { (try? browser.url())?.hasSuffix("/reports/file/daily-\(today.text).html") == true })
        #expect(try browser.script("return getComputedStyle(document.body).margin;") as? String == "16px")  // its style applied
        #expect(!browser.alertOpen())
        print("report pages (map, units, a duplicate, reports): \(Date().timeIntervalSince(reportPagesStart)) s")

        try browser.go(base + "/")
        try shot("overview")

        step("A county operator")
        // A county operator cannot open another county's incident, by link or by guessed id.
        try browser.click("header form button")
        #expect(WebDriver.wait(5) { (try? browser.url())?.hasSuffix("/login") == true })
        try browser.type("input[name=name]", "wudu")
        try browser.type("input[name=password]", WebFixtures.password)
        try browser.click("#login")
        #expect(WebDriver.wait(5) { (try? browser.url()) == base + "/" })
        try browser.go(base + "/incidents/\(cheng.record.id)")
        #expect(try browser.text("h1") == "404 Not Found")
        try browser.go(base + "/incidents/\(cheng.record.id.description.prefix(10))")
        #expect(try browser.text("h1") == "404 Not Found")
        try browser.go(base + "/incidents")
        #expect(!(try browser.text("main")).contains("Cheng"))

        browser.quit()
        await center.stop()
        await backpack.close(grace: .zero)
        await station.close(grace: .zero)
    }
}
