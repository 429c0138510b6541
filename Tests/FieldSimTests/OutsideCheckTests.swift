import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, "Bugs found by checking the simulator from outside": one test (or more) per bug, each failing
/// on the code before the fix.
@Suite struct OutsideCheckTests {
    /// A random-contacts file with `nodes` nodes, shortened to `days`.
    static func randomContacts(nodes: Int, ratePerHour: Double, days: Double, messages: Int = 1,
                               spacingSeconds: Double = 0) throws -> (ScenarioFile, String) {
        var (f, path) = try shippedScenario("random-contacts")
        f.days = days
        f.workloadStopDays = days
        f.randomContacts!.nodes = nodes
        f.randomContacts!.ratePerPairPerHour = ratePerHour
        f.randomContacts!.messages = messages
        f.randomContacts!.messageSpacingSeconds = spacingSeconds
        return (f, path)
    }

    /// Bug 1: per-change target and delivered counters were 8-bit. With 300 nodes the time series said
    /// 43 of 255 delivered while the summary said 299 of 299, and `minimal_bytes` counted 255 replicas.
    @Test func deliveryCountersHoldMoreThan255Replicas() throws {
        let (f, path) = try Self.randomContacts(nodes: 300, ratePerHour: 0.5, days: 0.05, messages: 2, spacingSeconds: 60)
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 3, path: path),
                              options: RunOptions(sampleInterval: Duration.hour))
        #expect(sim.convergence().missing == 0)
        #expect(sim.metrics.targets.map { Int($0) } == [299, 299])
        #expect(sim.metrics.reached.map { Int($0) } == [299, 299])
        let last = try #require(sim.metrics.series.last)
        #expect(last.targets == 598 && last.delivered == 598, "series: \(last.delivered) of \(last.targets)")
        #expect(sim.oracleReport().minimalBytes == 598 * 1_000)
        let csv = baselineReport(sim, scenarioName: f.name, seed: 3, derived: []).seriesCSV
        #expect(csv.split(separator: "\n").last!.split(separator: ",")[2...4].joined(separator: ",") == "598,598,1.000000")
    }

    /// A chain: node i meets node i+1 at second i for half a second; node 0 writes one change at 0.
    struct ChainScenario: Scenario {
        let name = "chain"
        let world: World
        let duration: SimTime
        var workloadEnd: SimTime { duration }
        let warmup: SimTime = 0
        let clockSkew: [SimTime]
        var derivedParameters: [(String, String)] { [] }
        let nodes: Int

        init(nodes: Int) {
            self.nodes = nodes
            let w = World(domainCount: 1, domainNames: ["all"])
            for i in 0..<nodes { w.add(SimNode(nodeClass: .peer, name: "n\(i)", scope: "all"), domains: [0]) }
            world = w
            duration = SimTime(nodes + 1) * 1_000
            clockSkew = Array(repeating: 0, count: nodes)
        }

        func generate(step: Int, into out: inout ScenarioSchedule) { fill(step, &out) }
        func generateDay(_ day: Int, into out: inout ScenarioSchedule) { fill(day, &out) }  // the API before issue 14

        func fill(_ step: Int, _ out: inout ScenarioSchedule) {
            guard step == 0 else { return }
            out.changes.append((0, ChangeSpec(author: 0, domain: 0, changeClass: .message, priority: .none, size: 100)))
            for i in 0..<(nodes - 1) {
                out.contact(ContactSpec(a: NodeIndex(i), b: NodeIndex(i + 1), linkClass: .trace, bytesPerSecond: 0, latency: 0),
                            from: SimTime(i) * 1_000 + 1, to: SimTime(i) * 1_000 + 500)
            }
        }
    }

    /// Bug 1, hop counts: they were 8-bit too (wrapping at 256 hops).
    @Test func hopCountsPast255DoNotWrap() {
        let sim = runBaseline(.idealEpidemic, scenario: ChainScenario(nodes: 300))
        #expect(sim.convergence().missing == 0)
        #expect(sim.metrics.hops.max == 299)
        #expect(sim.metrics.hops.min == 1)
    }

    /// Bug 2: random-contacts generated a whole day of contacts up front whatever the run's length (a run
    /// of 0.0006 days held 4.3 M contacts). It now generates about one contact per pair at a time.
    @Test func randomContactsAreGeneratedLazily() throws {
        // 40 nodes, 780 pairs, 10 contacts per pair per hour: 187,000 contacts a day, about 190 in this run.
        let (f, path) = try Self.randomContacts(nodes: 40, ratePerHour: 10, days: 0.001)
        let sim = Simulation(scenario: try makeScenario(f, seed: 1, path: path)) { BaselineAgent(.idealEpidemic, context: $0) }
        nonisolated(unsafe) var peak = 0
        sim.run(progressEvery: 1) { _, _ in peak = max(peak, sim.pendingEvents) }
        #expect(peak < 5_000, "largest queue: \(peak) events")
        #expect(sim.contacts.count > 50 && sim.contacts.count < 1_000, "\(sim.contacts.count) contacts")
    }

    /// Bug 3: a zero-length contact was exported as "down" before "up", and the export could not be read
    /// back ("goes down without being up").
    @Test func zeroLengthContactsSurviveExportAndImport() throws {
        let records = [
            ContactRecord(start: 10_000, end: 30_000, spec: ContactSpec(a: 0, b: 1, linkClass: .trace, bytesPerSecond: 0, latency: 0)),
            ContactRecord(start: 30_000, end: 30_000, spec: ContactSpec(a: 0, b: 1, linkClass: .trace, bytesPerSecond: 0, latency: 0)),
            ContactRecord(start: 30_000, end: 30_000, spec: ContactSpec(a: 2, b: 3, linkClass: .trace, bytesPerSecond: 0, latency: 0)),
            ContactRecord(start: 30_000, end: 45_500, spec: ContactSpec(a: 0, b: 1, linkClass: .trace, bytesPerSecond: 0, latency: 0)),
            ContactRecord(start: 20_000, end: 30_000, spec: ContactSpec(a: 1, b: 2, linkClass: .trace, bytesPerSecond: 0, latency: 0)),
        ]
        let text = ONETrace.export(records)
        let parsed = try ONETrace.parse(text)
        let expected: [(SimTime, SimTime, NodeIndex, NodeIndex)] = [
            (10_000, 30_000, 0, 1), (20_000, 30_000, 1, 2), (30_000, 30_000, 0, 1), (30_000, 45_500, 0, 1), (30_000, 30_000, 2, 3),
        ]
        #expect(parsed.contacts.count == expected.count, "\(text)")
        for (x, y) in zip(parsed.contacts, expected) { #expect(x == y, "\(text)") }
        #expect(parsed.nodes == 4)
    }

    /// Bug 3, the reader: traces exported before the fix wrote a zero-length contact `down` first. The reader
    /// now takes a `down` of a pair that is not up, followed by its `up` at the same instant, as a zero-length
    /// contact; a `down` with no such `up` is still an error, naming its line.
    @Test func zeroLengthContactsWrittenDownFirstAreRead() throws {
        let old = "10.000 CONN 0 1 up\n30.000 CONN 0 1 down\n30.000 CONN 2 3 down\n30.000 CONN 0 1 up\n30.000 CONN 2 3 up\n45.500 CONN 0 1 down\n"
        let parsed = try ONETrace.parse(old)
        let expected: [(SimTime, SimTime, NodeIndex, NodeIndex)] = [(10_000, 30_000, 0, 1), (30_000, 45_500, 0, 1), (30_000, 30_000, 2, 3)]
        #expect(parsed.contacts.count == expected.count)
        for (x, y) in zip(parsed.contacts, expected) { #expect(x == y) }
        #expect(throws: ScenarioError(file: "t", "line 2: 2-3 goes down without being up")) {
            try ONETrace.parse("10 CONN 0 1 up\n30 CONN 2 3 down\n31 CONN 2 3 up\n", file: "t")
        }
        #expect(throws: ScenarioError(file: "t", "line 1: 2-3 goes down without being up")) { try ONETrace.parse("30 CONN 3 2 down\n", file: "t") }
    }

    /// Bug 3 from a run: random contacts of zero length (`contactSeconds` 0) exported and replayed.
    @Test func aRunWithZeroLengthContactsExportsATraceThatReplays() throws {
        var (f, path) = try Self.randomContacts(nodes: 6, ratePerHour: 6, days: 0.1)
        f.randomContacts!.contactSeconds = 0
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 2, path: path))
        #expect(sim.contacts.contains { $0.start == $0.end })
        let parsed = try ONETrace.parse(ONETrace.export(sim.contacts))
        #expect(parsed.contacts.count == sim.contacts.count)
    }

    /// Bug 4: baseline runs reported progress only every 2^20 events (a debug run of a day of longnan
    /// showed nothing until its end; 1 call in a 2-day run of 83,000 events, now 5).
    @Test func baselineRunsReportProgressOften() throws {
        let (f, path) = try shippedScenario("longnan", days: 2)
        nonisolated(unsafe) var calls = 0
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path),
                              options: RunOptions(oracleSampleEvery: 0)) { _, _ in calls += 1 }
        #expect(sim.eventsProcessed > 60_000)
        #expect(UInt64(calls) >= sim.eventsProcessed / (1 << 14), "\(calls) progress calls for \(sim.eventsProcessed) events")
    }

    /// Bug 4, made time-based: the engine calls the hook every 256 events and the CLI decides by the wall
    /// clock. With the hook every 2^14 events, a debug run of the `fieldsync` agent (13.7k events a wall
    /// second on longnan-small with stand-in crypto; slower with real crypto) could redraw at best every
    /// 1.2 s; this 0.05-day run (1,136 events then, 922 since keep-alives take turns) got 1 call, at the
    /// end; 3 or more now.
    @Test func fieldSyncRunsCallTheProgressHookEvery256Events() throws {
        let (f, path) = try shippedScenario("longnan-small", days: 0.05)
        nonisolated(unsafe) var calls: [UInt64] = []
        let sim = runFieldSync(scenario: try makeScenario(f, seed: 1, path: path), seed: 1, crypto: .standIn,
                               options: RunOptions(oracleSampleEvery: 0)) { _, events in calls.append(events) }
        #expect(sim.eventsProcessed > 768, "enough events for three calls")
        let gaps = zip(calls.dropFirst(), calls).map { $0 - $1 }
        #expect((gaps.max() ?? .max) <= 256, "\(calls.count) calls for \(sim.eventsProcessed) events")
        #expect(UInt64(calls.count) >= sim.eventsProcessed / 256, "\(calls.count) calls for \(sim.eventsProcessed) events")
        print("fieldsim: progress hook: \(calls.count) calls for \(sim.eventsProcessed) events")
    }

    /// Bug 6, the performance and progress lines of a slow run: a debug run of 300 nodes at 4,734 events a
    /// second printed "0.00M events/s, 0.0 sim-days/s".
    @Test func slowRunsShowTheirRates() {
        #expect(ProgressLine.rate(4_734) == "4.7k")
        #expect(ProgressLine.rate(1_520_000) == "1.52M")
        #expect(ProgressLine.rate(950) == "950")
        #expect(ProgressLine.simDaysPerSecond(0.25 / 170.61) == "0.00147")
        #expect(ProgressLine.simDaysPerSecond(14.8) == "14.8")
        #expect(ProgressLine.simDaysPerSecond(1_328.4) == "1328")
        let line = ProgressLine.text(agent: "x", now: Duration.hour, duration: 2 * Duration.hour, events: 4_734, elapsed: 1)
        #expect(line.contains(" 4.7k events/s"), "\(line)")
    }

    /// Bug 4: a sub-day run's progress line read "day 0.0/0".
    @Test func progressLineUsesAUnitThatFitsTheRun() {
        let short = ProgressLine.text(agent: "x", now: 30 * Duration.minute, duration: Duration.hour + Duration.hour / 2,
                                      events: 1_000, elapsed: 1)
        #expect(short.contains("hour 0.5/1.5"), "\(short)")
        let tiny = ProgressLine.text(agent: "x", now: 26_000, duration: 52_000, events: 1_000, elapsed: 1)
        #expect(tiny.contains("s 26.0/52"), "\(tiny)")
        let year = ProgressLine.text(agent: "x", now: 12 * Duration.day, duration: 365 * Duration.day, events: 1_000, elapsed: 1)
        #expect(year.contains("day 12.0/365"), "\(year)")
    }

    /// Bug 5: on a short run the delivered-fraction ticks all read "0.0", and the y axis spanned 0 to 1
    /// while the data sat between 0.93 and 1.
    @Test func deliveredFractionChartHasDistinctTicksAndFitsItsData() {
        let points = (0...10).map { (Double($0) * 0.002, 0.93 + 0.007 * Double($0)) }  // 0.02 days
        let svg = SVG.lineChart(title: "t", points: points, xLabel: "day", yLabel: "delivered fraction")
        let labels = Self.texts(svg)
        let xTicks = labels.filter { $0.anchor == "middle" && $0.y > 390 && $0.y < 420 }.map(\.text)
        #expect(xTicks.count >= 3 && Set(xTicks).count == xTicks.count, "x ticks \(xTicks)")
        #expect(xTicks.first.flatMap(Double.init) == 0 && !xTicks.contains { $0.hasPrefix("-") }, "x ticks \(xTicks)")
        let yTicks = labels.filter { $0.anchor == "end" }.compactMap { Double($0.text) }
        #expect(yTicks.min() ?? 0 >= 0.85 && yTicks.min() ?? 1 <= 0.93, "y ticks \(yTicks)")
        #expect(yTicks.max() == 1)
        // A run that delivers nothing yet keeps the full 0 to 1 range.
        let flat = Self.texts(SVG.lineChart(title: "t", points: [(0, 0), (1, 0.2)], xLabel: "day", yLabel: "f"))
        #expect(flat.filter { $0.anchor == "end" }.compactMap { Double($0.text) }.min() == 0)
    }

    /// Bug 5: the fitted y axis is said on the chart (it was fitted silently), and a chart from 0 says nothing.
    @Test func aFittedFractionAxisIsSaidOnTheChart() throws {
        let points = (0...10).map { (Double($0) * 0.1, 0.93 + 0.007 * Double($0)) }
        let labels = Self.texts(SVG.lineChart(title: "t", points: points, xLabel: "day", yLabel: "f"))
        let lowest = try #require(labels.filter { $0.anchor == "end" }.min { Double($0.text)! < Double($1.text)! }?.text)
        #expect(Double(lowest)! > 0.5 && Double(lowest)! <= 0.93)
        let notes = labels.filter { $0.text.hasPrefix("y axis from ") }
        #expect(notes.map(\.text) == ["y axis from \(lowest), fitted to the data (not from 0)"])
        // Few samples are marked (a one-day run of longnan, sampled daily, drew one straight segment).
        let svg = SVG.lineChart(title: "t", points: [(0, 1), (1, 0.9926)], xLabel: "day", yLabel: "f")
        #expect(svg.components(separatedBy: "class=\"sample\"").count - 1 == 2)
        let full = SVG.lineChart(title: "t", points: [(0, 0), (1, 0.2)], xLabel: "day", yLabel: "f")
        #expect(!full.contains("y axis from"))
    }

    /// Bug 5, as seen in the drawn map: the legend's village line ran past the right edge (clipped at
    /// "seeded"), and the county areas had no borders (neighbouring tints hard to tell apart). Every legend
    /// line now fits (at 0.6 em a character) and a border is drawn where cells of two counties meet, and
    /// only there: none on one county (nor its legend line).
    @Test func mapLegendFitsAndCountyBordersAreDrawn() throws {
        let (f, path) = try shippedScenario("longnan", days: 1)
        let scen = try makeScenario(f, seed: 1, path: path) as! LongnanScenario
        let svg = SVG.stalenessMap(world: scen.world, staleness: Array(repeating: 0, count: scen.world.count), at: 0, title: "t")
        for l in Self.texts(svg) where l.anchor == "start" {
            #expect(l.x + Double(l.text.count) * 0.6 * l.size <= 720, "\"\(l.text)\" runs past the edge")
        }
        let borders = svg.components(separatedBy: "class=\"county-border\"").count - 1
        #expect(borders >= 20, "\(borders) county border segments")
        let (g, gpath) = try shippedScenario("longnan-small", days: 1)
        let small = try makeScenario(g, seed: 1, path: gpath)
        let one = SVG.stalenessMap(world: small.world, staleness: Array(repeating: 0, count: small.world.count), at: 0, title: "t")
        #expect(one.contains("class=\"county-area\"") && !one.contains("class=\"county-border\"") && !one.contains("county border"))
        // The cells stay within a few pixels of the data: on the small map a 5 km margin (32 px there) covered
        // the title.
        for map in [svg, one] {
            let ys = map.components(separatedBy: "class=\"county-area\" points=\"").dropFirst().flatMap { part in
                part.prefix { $0 != "\"" }.split(separator: " ").compactMap { Double($0.split(separator: ",")[1]) }
            }
            #expect((ys.min() ?? 0) >= 30, "county areas reach y = \(ys.min() ?? 0), the title is at 22")
        }
    }

    /// Bug 5: the map stretched east-west by about 1.2× (no correction of longitude for latitude).
    @Test func stalenessMapCorrectsLongitudeForLatitude() {
        let w = World(domainCount: 1, domainNames: ["all"])
        w.add(SimNode(nodeClass: .county, name: "sw", scope: "all", latitude: 33.5, longitude: 104.5), domains: [0])
        w.add(SimNode(nodeClass: .county, name: "se", scope: "all", latitude: 33.5, longitude: 105.5), domains: [0])
        w.add(SimNode(nodeClass: .county, name: "nw", scope: "all", latitude: 34.5, longitude: 104.5), domains: [0])
        let svg = SVG.stalenessMap(world: w, staleness: [0, 0, 0], at: 0, title: "t")
        let c = Self.circles(svg).filter { $0.r == 6 }
        #expect(c.count == 3)
        let dx = abs(c[1].x - c[0].x), dy = abs(c[2].y - c[0].y)
        let expected = cos(34.0 * .pi / 180) * 111.32 / 110.57  // 0.835
        #expect(abs(dx / dy - expected) < 0.01, "east-west / north-south = \(dx / dy), expected \(expected)")
    }

    /// Bug 5: the longnan map drew no villages (its caption named them), printed "hq" over "wudu", and had
    /// no county areas and no scale.
    @Test func longnanMapShowsVillagesCountyAreasAndAScaleAndSeparatesLabels() throws {
        let (f, path) = try shippedScenario("longnan", days: 1)
        let scen = try makeScenario(f, seed: 1, path: path) as! LongnanScenario
        let sim = runBaseline(.idealEpidemic, scenario: scen, options: RunOptions(oracleSampleEvery: 0))
        let report = baselineReport(sim, scenarioName: f.name, seed: 1, derived: [])
        let svg = try #require(report.charts.first { $0.0 == "staleness_map.svg" }?.1)
        let villages = svg.components(separatedBy: "class=\"village\"").count - 1
        #expect(villages == scen.villages.count, "\(villages) villages drawn of \(scen.villages.count)")
        #expect(svg.components(separatedBy: "class=\"county-area\"").count - 1 >= 150, "a cell per station")
        #expect(svg.contains("class=\"scale-bar\"") && svg.contains(" km</text>"))
        #expect(svg.contains("approximate"))
        let labels = Self.texts(svg)
        let hq = try #require(labels.first { $0.text == "hq" })
        let wudu = try #require(labels.first { $0.text == "wudu" })
        #expect(abs(hq.y - wudu.y) >= 12 || abs(hq.x - wudu.x) >= 40, "hq at \(hq), wudu at \(wudu)")
    }

    /// Bug 4: on a terminal the fieldsync agent's lines ran into the progress line (it was erased only
    /// after they were printed). Runs `fieldsim` under a pseudo-terminal (`script`, util-linux) and checks
    /// that every progress line is erased before the next output.
    @Test(.ownThread, .timeLimit(.minutes(5))) func agentOutputDoesNotRunIntoTheProgressLine() throws {
        let fieldsim = ((try FieldSyncBinary.required()) as NSString).deletingLastPathComponent + "/fieldsim"
        guard FileManager.default.isExecutableFile(atPath: fieldsim) else {
            Issue.record("fieldsim is not built at \(fieldsim); run `swift build --build-tests`")
            return
        }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("fieldsim-tty-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let command = "\(fieldsim) --scenario longnan-small --days 0.3 --agents fieldsync --crypto stand-in --out \(out)"
        let r = try FieldSyncBinary.run(["-qec", command, "/dev/null"], in: packageRoot.path, executable: "/usr/bin/script")
        #expect(r.status == 0, "\(r.out)\(r.err)")
        let shown = r.out.components(separatedBy: "ETA ")
        #expect(shown.count > 1, "no progress line drawn: \(r.out)")
        for (i, after) in shown.enumerated() where i > 0 {
            // What follows a progress line: its ETA figure, then another progress line or an erase.
            let rest = after.drop { $0.isNumber || $0 == "s" }
            #expect(rest.hasPrefix(ProgressLine.erase) || rest.hasPrefix("\r"), "output ran into the progress line: \(String(rest.prefix(80)).debugDescription)")
        }
        #expect(r.out.contains("[fieldsync] crypto mode: stand-in"))
    }

    // MARK: SVG reading

    struct Label { var text: String; var x: Double; var y: Double; var anchor: String; var size = 12.0 }

    /// The `<text>` elements of an SVG: content, x, y, anchor.
    static func texts(_ svg: String) -> [Label] {
        svg.components(separatedBy: "<text ").dropFirst().compactMap { part -> Label? in
            guard let close = part.range(of: ">"), let end = part.range(of: "</text>") else { return nil }
            let attrs = String(part[..<close.lowerBound])
            return Label(text: String(part[close.upperBound..<end.lowerBound]), x: attr(attrs, "x") ?? 0, y: attr(attrs, "y") ?? 0,
                         anchor: attrString(attrs, "text-anchor") ?? "start", size: attr(attrs, "font-size") ?? 12)
        }
    }

    /// The `<circle>` elements of an SVG: centre and radius.
    static func circles(_ svg: String) -> [(x: Double, y: Double, r: Double)] {
        svg.components(separatedBy: "<circle ").dropFirst().map { part in
            let attrs = String(part.prefix { $0 != ">" })
            return (attr(attrs, "cx") ?? 0, attr(attrs, "cy") ?? 0, attr(attrs, "r") ?? 0)
        }
    }

    static func attrString(_ attrs: String, _ name: String) -> String? {
        guard let r = attrs.range(of: " \(name)=\"") ?? (attrs.hasPrefix("\(name)=\"") ? attrs.range(of: "\(name)=\"") : nil) else { return nil }
        return String(attrs[r.upperBound...].prefix { $0 != "\"" })
    }

    static func attr(_ attrs: String, _ name: String) -> Double? { attrString(attrs, name).flatMap(Double.init) }
}
