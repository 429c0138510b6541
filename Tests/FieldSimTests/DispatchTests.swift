@testable import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, "Model gaps": incidents dispatched to the nearest available unit, which writes on its own device
/// at the scene; incidents over the day by a profile (docs/simulator.md, "Issue 14: dispatch").
@Suite struct DispatchTests {
    /// A small hand-built `longnan` file: one county, one station with 3 backpack officers, 12 villages,
    /// one county car, villages 40 % 4G, 30 % intermittent, 30 % without coverage, many incidents (so units are
    /// busy and every branch is taken).
    static func smallFile(incidentsPerYear: Double = 20_000, dispatch: String? = nil) throws -> ScenarioFile {
        var (f, _) = try shippedScenario("longnan-small", days: 4)
        f.longnan!.stations = 1
        f.longnan!.villages = 12
        f.longnan!.vehiclesPerCounty = 1
        f.longnan!.connectivityShares = ["4g": 0.4, "intermittent": 0.3, "none": 0.3]
        f.longnan!.incidentsPerYear = incidentsPerYear
        f.longnan!.dispatch = dispatch
        if dispatch == "legacy" { f.longnan!.incidentHourWeights = nil }  // legacy's uniform day, as before
        return f
    }

    static func changes(_ f: ScenarioFile, seed: UInt64, day: Int) throws -> (LongnanScenario, ScenarioSchedule) {
        var scen = try LongnanScenario(file: f, seed: seed)
        var out = ScenarioSchedule()
        for d in 0...day {
            out = ScenarioSchedule()
            scen.generate(step: d, into: &out)
        }
        return (scen, out)
    }

    /// The dispatcher sends the nearest available backpack officer (by where the plans have them, among those
    /// on patrol and not busy) if within the walk limit, else a free county car, else the station; a unit is
    /// never sent while it is handling another incident.
    @Test func dispatchPicksTheNearestAvailableUnit() throws {
        let f = try Self.smallFile(dispatch: "nearest-planned")  // the whole day's dispatches are known when it is generated
        let walkKm = 120.0 / 60 * 4 / 1.5
        let driveKmPerMs = 40 / 1.3 / Double(Duration.hour)
        var kinds = Array(repeating: 0, count: DispatchUnit.allCases.count)
        for seed in [1, 2, 3] as [UInt64] {
            let (scen, _) = try Self.changes(f, seed: seed, day: 0)
            let car = try #require(scen.countyCars.first?.first)
            var busy: [NodeIndex: SimTime] = [:]
            var carFree: SimTime = 0
            for d in scen.dispatchesToday {
                kinds[d.kind.rawValue] += 1
                let nearest = d.available.map(\.1).min()
                switch d.kind {
                case .backpack:
                    #expect(d.available.contains { $0.0 == d.unit && $0.1 == d.distanceKm })
                    #expect(d.distanceKm == nearest)
                    #expect(d.distanceKm <= walkKm + 1e-9)
                    #expect(d.received >= d.dispatched && d.onScene >= d.received && d.feedback > d.onScene)
                case .vehicle:
                    #expect(d.unit == car)
                    #expect(nearest.map { $0 > walkKm } ?? true)
                    #expect(d.dispatched >= carFree)
                    carFree = d.feedback + Duration.minute + SimTime(d.distanceKm / driveKmPerMs)  // back at the seat
                case .station:
                    #expect(nearest.map { $0 > walkKm } ?? true)
                    #expect(d.dispatched < carFree)  // the only car was out
                }
                // Busy units are not available.
                for (u, _) in d.available { #expect(busy[u].map { $0 <= d.dispatched } ?? true) }
                if d.kind == .backpack {
                    #expect(busy[d.unit].map { $0 <= d.dispatched } ?? true)
                    busy[d.unit] = d.feedback
                }
            }
        }
        // Every branch was taken.
        #expect(kinds.allSatisfy { $0 > 0 }, "dispatches by kind: \(kinds)")
    }

    /// The station writes the incident and the dispatch; the unit writes on-scene status and feedback on its
    /// own device, at the scene: a backpack officer's plan has them in the village then, and only a village
    /// with 4G gives the device a cellular contact with its station at that moment.
    @Test func feedbackIsAuthoredByTheUnitsDeviceAtTheScene() throws {
        let f = try Self.smallFile(dispatch: "nearest-planned")
        var checked = [0, 0, 0]
        for seed in [1, 2, 3] as [UInt64] {
        let (scen, out) = try Self.changes(f, seed: seed, day: 1)
        let station: NodeIndex = scen.world.nodes.firstIndex { $0.nodeClass == .station }.map { NodeIndex($0) }!
        for d in scen.dispatchesToday where d.feedback < scen.workloadEnd {
            let mine = out.changes.filter { $0.1.subject == d.subject }.sorted { $0.0 < $1.0 }
            try #require(mine.count == 4)
            #expect(mine.map(\.1.changeClass) == [.incidentCreate, .incidentStatus, .incidentStatus, .incidentFeedback])
            #expect(mine[0].1.author == station && mine[0].0 == d.reported)
            #expect(mine[1].1.author == station && mine[1].0 == d.dispatched)
            #expect(mine[2].1.author == d.unit && mine[2].0 == d.onScene)
            #expect(mine[3].1.author == d.unit && mine[3].0 == d.feedback && mine[3].1.deadline > d.reported)
            if d.kind == .backpack {
                let v = scen.villages[Int(d.village)]
                let p = try #require(scen.backpackPosition(d.unit, at: d.feedback))
                #expect(p.0 == v.lat && p.1 == v.lon)
                // The scene's stop starts on arrival; its 4G contact (if any) with it.
                let cellular = out.ups.contains { up in
                    up.1.linkClass == .cellular4G && [up.1.a, up.1.b] == [min(d.unit, station), max(d.unit, station)] && up.0 == d.onScene
                }
                #expect(cellular == (v.connectivity == .usable4G), "village \(d.village) is \(v.connectivity)")
                checked[v.connectivity.rawValue] += 1
            }
        }
        }
        #expect(checked.allSatisfy { $0 > 0 }, "backpack feedback by village class: \(checked)")
    }

    /// Relay boxes now change the feedback overdue rate: an officer's feedback written in a village out of
    /// coverage reaches HQ through a relay box there sooner (uplink window, or another officer who passes). On
    /// the legacy model, where relay boxes carry no feedback that matters, the rates are equal.
    @Test func relayShareChangesTheOverdueRate() throws {
        func run(_ relayShare: Double, seed: UInt64, legacy: Bool) throws -> RunReport.Headline {
            var (f, path) = try shippedScenario("longnan-small", days: 8)
            if legacy {
                f.longnan!.dispatch = "legacy"
                f.longnan!.incidentHourWeights = nil
            }
            f.longnan!.incidentsPerYear = 20_000
            try SweepParameter.apply("relayShare", relayShare, to: &f)
            let scen = try makeScenario(f, seed: seed, path: path)
            let sim = runBaseline(.idealEpidemic, scenario: scen)
            return baselineReport(sim, scenarioName: f.name, seed: seed, derived: []).headline
        }
        var overdue = [0.0, 0.0]
        for seed in [1, 2, 3] as [UInt64] {
            let none = try run(0, seed: seed, legacy: false), all = try run(1, seed: seed, legacy: false)
            overdue[0] += none.overdueRate
            overdue[1] += all.overdueRate
            // More of the feedback reaches every entitled replica by its deadline (relay boxes pass it on).
            #expect(all.feedbackAllEntitledByDeadline > none.feedbackAllEntitledByDeadline, "seed \(seed)")
            // The legacy model (main before 2026-12-05): relay boxes change nothing at HQ.
            let legacyNone = try run(0, seed: seed, legacy: true), legacyAll = try run(1, seed: seed, legacy: true)
            #expect(legacyNone.overdueRate == legacyAll.overdueRate, "seed \(seed)")
        }
        #expect(overdue[0] > 0)
        #expect(overdue[1] < overdue[0], "mean overdue rate over 3 seeds: no relay boxes \(overdue[0] / 3), a box in every village out of 4G \(overdue[1] / 3)")
    }

    /// Incidents follow the hourly weights: the default profile (night low, evening high), and 24 equal weights
    /// give the uniform day.
    @Test func incidentsFollowTheDailyProfile() throws {
        func shares(_ w: [Double]) -> [Double] {
            var r = SimRandom(seed: 9, 1)
            var count = Array(repeating: 0, count: 24)
            let n = 200_000
            for _ in 0..<n {
                let t = LongnanScenario.incidentTime(dayStart: 3 * Duration.day, weights: w, using: &r)
                #expect(t >= 3 * Duration.day && t < 4 * Duration.day)
                count[Int((t - 3 * Duration.day) / Duration.hour)] += 1
            }
            return count.map { Double($0) / Double(n) }
        }
        let w = LongnanScenario.defaultIncidentHourWeights
        let total = w.reduce(0, +)
        let got = shares(w)
        for h in 0..<24 { #expect(abs(got[h] - w[h] / total) < 0.004, "hour \(h): \(got[h]) vs \(w[h] / total)") }
        let night = got[1...5].reduce(0, +), evening = got[17...21].reduce(0, +)
        #expect(evening > 4 * night)
        for s in shares(Array(repeating: 1, count: 24)) { #expect(abs(s - 1.0 / 24) < 0.003) }
        // The scenario uses the profile by default; a scenario's incidents over 20 days keep its shape.
        let f = try Self.smallFile(incidentsPerYear: 50_000)
        var scen = try LongnanScenario(file: f.withDays(22), seed: 4)
        #expect(scen.incidentHourWeights == w)
        var byHour = Array(repeating: 0, count: 24)
        for d in 0..<20 {
            var out = ScenarioSchedule()
            scen.generate(step: d, into: &out)
            for (t, c) in out.changes where c.changeClass == .incidentCreate { byHour[Int(t % Duration.day / Duration.hour)] += 1 }
        }
        #expect(byHour[17...21].reduce(0, +) > 3 * byHour[1...5].reduce(0, +), "\(byHour)")
        // Legacy keeps the uniform draw unless weights are given.
        let legacy = try LongnanScenario(file: Self.smallFile(dispatch: "legacy"), seed: 4)
        #expect(legacy.incidentHourWeights == nil)
    }

    /// The legacy model is still reachable and still what it was: a pinned trace hash of the run main made
    /// before the dispatch model (`dispatch: legacy`), and the scenario file rejects unknown values.
    @Test func legacyModelIsReachableAndBadValuesAreRejected() throws {
        var (f, path) = try shippedScenario("longnan-small", days: 2)
        f.longnan!.dispatch = "legacy"
        f.longnan!.incidentHourWeights = nil
        let legacy = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path))
        f.longnan!.dispatch = nil
        f.longnan!.incidentHourWeights = LongnanScenario.defaultIncidentHourWeights
        let nearest = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path))
        #expect(legacy.traceHash != nearest.traceHash)
        #expect(String(legacy.traceHash, radix: 16) == DispatchTests.legacySmallTwoDayHash)
        var bad = try Self.smallFile()
        bad.longnan!.dispatch = "closest"
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(bad)) }
        bad.longnan!.dispatch = nil
        bad.longnan!.incidentHourWeights = [1, 2]
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(bad)) }
        bad.longnan!.incidentHourWeights = nil
        bad.longnan!.walkKmPerHour = 0  // a walk time would be infinite: trapped in SimTime(...) before
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(bad)) }
    }

    /// `longnan-small`, 2 days, seed 1, ideal epidemic, `dispatch: legacy` without hourly weights: pinned when the
    /// dispatch model was added (legacy's code path is main's at 0f2bec0: the one-day `longnan` `fieldsync` run
    /// with `dispatch: legacy` gives main's trace hash 640caf4aa4a0ef70, docs/simulator.md, "Issue 14: dispatch").
    static let legacySmallTwoDayHash = "e2da2a4821dd4d42"
}
