@testable import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14: a dispatched backpack officer acts when the device's store really holds the dispatch (reactive
/// `nearest` dispatch), over whatever path brought it, not at a moment the scenario computed from direct paths
/// (`nearest-planned`). docs/simulator.md, "Issue 14: dispatch to the nearest unit".
@Suite struct ReactiveDispatchTests {
    /// `longnan-small` (4 stations, 64 villages, 12 backpack units) with many incidents and a relay box in every
    /// village out of 4G.
    /// `oneStation`: one station, 12 villages (40 % 4G, 30 % intermittent, 30 % without coverage), 3 backpack units,
    /// so that officers often pass the same relay boxes.
    static func file(days: Double = 4, dispatch: String? = nil, relayShare: Double = 1, oneStation: Bool = false) throws -> (ScenarioFile, String) {
        var (f, path) = try shippedScenario("longnan-small", days: days)
        if oneStation {
            f.longnan!.stations = 1
            f.longnan!.villages = 12
            f.longnan!.connectivityShares = ["4g": 0.4, "intermittent": 0.3, "none": 0.3]
        }
        f.longnan!.incidentsPerYear = 20_000
        f.longnan!.dispatch = dispatch
        try SweepParameter.apply("relayShare", relayShare, to: &f)
        return (f, path)
    }

    /// Runs `f` with the ideal epidemic; returns the run and the scenario as it stands at the end.
    static func run(_ f: ScenarioFile, path: String, seed: UInt64) throws -> (Simulation<BaselineAgent>, LongnanScenario) {
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: seed, path: path))
        return (sim, try #require(sim.scenarioNow as? LongnanScenario))
    }

    /// The dispatch change of each incident (its first `incident-status` change), by subject.
    static func dispatchChanges(_ sim: Simulation<BaselineAgent>) -> [Int64: Int] {
        let ch = sim.context.changes
        var out: [Int64: Int] = [:]
        for i in 0..<ch.count where ch.changeClass[i] == .incidentStatus && out[ch.subject[i]] == nil { out[ch.subject[i]] = i }
        return out
    }

    /// An officer whose dispatch reaches the device through a relay box acts at that moment: the record's receipt
    /// is the moment the engine saw the unit's store first hold the dispatch change, the on-scene status is
    /// written by the unit's device when it arrives, and some of these receipts come from a relay box that had
    /// no uplink window since the dispatch (another officer brought the dispatch there), a path the planned model
    /// never counted. Fails on `nearest-planned` (no officer acts on a receipt).
    @Test func anOfficerActsWhenTheDispatchReachesThemThroughARelayBox() throws {
        var byVia: [String: Int] = [:]
        var relayWithoutUplink = 0
        for seed in [1, 2, 3] as [UInt64] {
            let (f, path) = try Self.file(days: 8, oneStation: true)
            let (sim, scen) = try Self.run(f, path: path, seed: seed)
            let ch = sim.context.changes
            let dispatch = Self.dispatchChanges(sim)
            for d in scen.dispatchLog where d.kind == .backpack && d.received >= 0 {
                let c = try #require(dispatch[d.subject])
                #expect(ch.author[c] != d.unit && ch.createdAt[c] == d.dispatched)
                // The receipt is when the unit's store first held the dispatch (the engine's delivery record).
                #expect(sim.sampledArrivals[UInt64(c) << 32 | UInt64(UInt32(bitPattern: d.unit))] == d.received)
                #expect(d.received >= d.dispatched)
                guard d.left >= 0 else { continue }  // still reading it when the run ended
                #expect(d.left > d.received && d.onScene >= d.left && d.feedback > d.onScene)
                if d.feedback < sim.workloadEnd {
                    let mine = (0..<ch.count).filter { ch.subject[$0] == d.subject && ch.author[$0] == d.unit }
                    #expect(mine.map { ch.createdAt[$0] } == [d.onScene, d.feedback])
                    #expect(mine.map { ch.changeClass[$0] } == [.incidentStatus, .incidentFeedback])
                }
                byVia[d.via?.description ?? "none", default: 0] += 1
                if d.via == .relayWiFi {
                    // The box the unit was talking to when it turned round (its contact ended then, or went on if the
                    // scene is that village).
                    let contact = try #require(sim.contacts.first {
                        $0.spec.linkClass == .relayWiFi && ($0.spec.a == d.unit || $0.spec.b == d.unit) && $0.start < d.received && $0.end >= d.received
                    })
                    let box = contact.spec.a == d.unit ? contact.spec.b : contact.spec.a
                    let village = try #require(scen.villages.firstIndex { $0.relay == box })
                    // The planned model counts a box only at an intermittent village, from its first uplink window
                    // after the dispatch; a box without uplink, or before its uplink, got it from another officer.
                    let days = Int(d.dispatched / Duration.day)...Int(d.received / Duration.day)
                    let uplinked = scen.villages[village].connectivity == .intermittent
                        && days.flatMap { scen.relayUplinkWindows(village: village, day: $0) }.contains { $0.1 > d.dispatched && $0.0 <= d.received }
                    if !uplinked { relayWithoutUplink += 1 }
                }
            }
        }
        #expect(byVia["relay-wifi", default: 0] > 0, "receipts by link class: \(byVia)")
        #expect(relayWithoutUplink > 0, "receipts from a relay box that had no uplink since the dispatch: \(relayWithoutUplink); by link class: \(byVia)")
        #expect(byVia["cellular-4g", default: 0] > 0 && byVia["station-wifi", default: 0] > 0, "\(byVia)")
    }

    /// When the officer turns round, the rest of the plan is withdrawn: contacts up then end then, the later
    /// stops' contacts and visits never happen (the officer walks to the scene with no contact and writes no
    /// visit on the way), and the engine counts what it withdrew. Fails on `nearest-planned` (nothing turns
    /// round at a receipt, nothing is withdrawn).
    @Test func withdrawnContactsAndVisitsNeverHappen() throws {
        var turned = 0
        for seed in [1, 2, 3] as [UInt64] {
            let (f, path) = try Self.file()
            let (sim, scen) = try Self.run(f, path: path, seed: seed)
            #expect(sim.withdrawnWindows.neverUp > 0 && sim.withdrawnWindows.endedEarly > 0, "seed \(seed): \(sim.withdrawnWindows)")
            #expect(sim.withdrawnWrites > 0, "seed \(seed): visits withdrawn")
            #expect(sim.holdNotices == scen.dispatchLog.filter { $0.kind == .backpack && $0.received >= 0 }.count)
            let ch = sim.context.changes
            for d in scen.dispatchLog where d.kind == .backpack && d.left >= 0 && d.onScene < sim.duration {
                turned += 1
                // The officer sets off 1-5 minutes after the device holds the dispatch (`reactionMinutes`).
                #expect(d.left >= d.received + Duration.minute && d.left <= d.received + 5 * Duration.minute)
                let mine = sim.contacts.filter { $0.spec.a == d.unit || $0.spec.b == d.unit }
                // Nothing the old plan had up outlives the turn-round (unless the scene is where the officer stands: the
                // stop there continues), and nothing comes up on the walk.
                #expect(d.onScene == d.left || !mine.contains { $0.start < d.left && $0.end > d.left }, "seed \(seed), incident \(d.subject)")
                #expect(!mine.contains { $0.start > d.left && $0.start < d.onScene }, "seed \(seed), incident \(d.subject)")
                #expect(!(0..<ch.count).contains {
                    ch.author[$0] == d.unit && ch.changeClass[$0] == .visit && ch.createdAt[$0] > d.left && ch.createdAt[$0] <= d.onScene
                }, "seed \(seed), incident \(d.subject): a visit on the walk to the scene")
            }
        }
        #expect(turned > 20, "officers turned round: \(turned)")
    }

    /// Same seed, same run: the trace hash and the dispatch log agree across two runs, and the hash is pinned;
    /// `nearest-planned` is a different run (and stays reachable).
    @Test func reactiveDispatchIsDeterministic() throws {
        let (f, path) = try Self.file(days: 2, relayShare: 0.5)
        let (a, sa) = try Self.run(f, path: path, seed: 1)
        let (b, sb) = try Self.run(f, path: path, seed: 1)
        #expect(a.traceHash == b.traceHash && a.eventsProcessed == b.eventsProcessed)
        #expect(sa.dispatchLog.map(\.received) == sb.dispatchLog.map(\.received))
        #expect(sa.dispatchLog.contains { $0.kind == .backpack && $0.received >= 0 })
        #expect(String(a.traceHash, radix: 16) == Self.reactiveSmallTwoDayHash)
        // Without the officers' meetings (issue 14, "Officers meeting; village-scope logs") the run is the one
        // before them, hash and all.
        var nm = f
        nm.longnan!.backpackMeetings = false
        #expect(String(try Self.run(nm, path: path, seed: 1).0.traceHash, radix: 16) == Self.reactiveSmallTwoDayHashWithoutMeetings)
        let (p, pp) = try Self.file(days: 2, dispatch: "nearest-planned", relayShare: 0.5)
        let (planned, sp) = try Self.run(p, path: pp, seed: 1)
        #expect(planned.traceHash != a.traceHash && sp.dispatchLog.isEmpty && planned.holdNotices == 0)
    }

    /// `longnan-small`, 2 days, seed 1, 20,000 incidents a year, relay share 0.5, ideal epidemic, reactive dispatch,
    /// officers meeting (the default since 2026-12-05).
    static let reactiveSmallTwoDayHash = "9d10b78aa884b4b7"
    /// The same without the meetings (`backpackMeetings: false`): the hash pinned before them.
    static let reactiveSmallTwoDayHashWithoutMeetings = "6106f521fb6388c8"

    /// Minute ranges that would overflow the simulated clock's milliseconds when converted (a reaction time,
    /// a time on scene, a crash's downtime of 1e300 minutes; JSON has no infinity) are refused with the key
    /// named, not trapped on; a year is accepted.
    @Test func minuteRangesTooLargeForTheClockAreRefused() throws {
        var (f, _) = try shippedScenario("longnan")
        f.longnan?.reactionMinutes = [1, 1e300]
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(f)) }
        f.longnan?.reactionMinutes = [1, 525_600]
        _ = try ScenarioFile.parse(JSONEncoder().encode(f))
        f.longnan?.onSceneMinutes = [30, 1e300]
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(f)) }
        f.longnan?.onSceneMinutes = nil
        f.faults = try JSONDecoder().decode(FaultConfig.self, from: Data(#"{"crashDowntimeMinutes": [1, 1e300]}"#.utf8))
        #expect(throws: ScenarioError.self) { try ScenarioFile.parse(JSONEncoder().encode(f)) }
    }
}
