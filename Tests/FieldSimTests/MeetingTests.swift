@testable import FieldSim
import FieldSyncCore
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, the gaps left by issue 7: officers who meet on patrol get a short-range contact, and changes go to the
/// log of the village where they happen, as real nodes write them (docs/simulator.md, "Officers meeting;
/// village-scope logs").
@Suite struct MeetingTests {
    /// One station, two villages without coverage or relay boxes, three officers who patrol both every day and
    /// no incidents: the plans are `plan(_:day:)` as drawn, and officers can only exchange changes at the station
    /// (overnight) or when they meet.
    static func twoVillages(days: Double = 3, meetings: Bool? = nil) throws -> (ScenarioFile, String) {
        var (f, path) = try shippedScenario("longnan-small", days: days)
        f.longnan!.stations = 1
        f.longnan!.villages = 2
        f.longnan!.connectivityShares = ["4g": 0, "intermittent": 0, "none": 1]
        f.longnan!.relayProbability = ["4g": 0, "intermittent": 0, "none": 0]
        f.longnan!.villagesPerPatrol = [2, 2]
        f.longnan!.restDaysPerWeek = 0
        f.longnan!.incidentsPerYear = 0
        f.longnan!.backpackMeetings = meetings
        return (f, path)
    }

    /// Two officers at one village at overlapping times get a `backpack-direct` contact exactly for the overlap
    /// of their stops (every such overlap, nothing else), and a visit one of them writes there crosses it: the
    /// other's store holds it before the contact ends, and the engine saw it arrive over the meeting. Fails
    /// with the meetings off (no such contact).
    @Test func officersAtOneVillageMeetForTheOverlapAndAChangeCrossesIt() throws {
        let (f, path) = try Self.twoVillages()
        let scen = try #require(try makeScenario(f, seed: 1, path: path) as? LongnanScenario)
        var expected: [[Int64]] = []
        for day in 0..<3 {
            let plans = scen.backpackList.indices.map { scen.plan($0, day: day) }
            for i in plans.indices {
                for j in plans.indices where j > i {
                    for x in plans[i].stops {
                        for y in plans[j].stops where y.village == x.village {
                            let (s, e) = (max(x.arrive, y.arrive), min(x.leave, y.leave))
                            if e > s { expected.append([s, e, Int64(scen.backpackList[i]), Int64(scen.backpackList[j])]) }
                        }
                    }
                }
            }
        }
        #expect(expected.count >= 3, "overlaps planned: \(expected.count)")
        let sim = runFieldSync(scenario: scen, seed: 1, crypto: .standIn, options: RunOptions(oracleSampleEvery: 1))
        #expect(sim.invariantViolation == nil)
        let met = sim.contacts.filter { $0.spec.linkClass == .backpackDirect }
            .map { [$0.start, $0.end, Int64($0.spec.a), Int64($0.spec.b)] }
        #expect(met.sorted { $0.lexicographicallyPrecedes($1) } == expected.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(sim.contacts.allSatisfy { $0.spec.linkClass != .backpackDirect || ($0.spec.bytesPerSecond == 250_000 && $0.spec.latency == 20) })
        // A visit written by one of them during a meeting reaches the other over it, before it ends.
        let ch = sim.context.changes
        var crossed = 0
        for m in met {
            let (s, e, a, b) = (m[0], m[1], NodeIndex(m[2]), NodeIndex(m[3]))
            for c in 0..<ch.count where ch.changeClass[c] == .visit && (ch.author[c] == a || ch.author[c] == b)
                && ch.createdAt[c] >= s && ch.createdAt[c] < e {
                let other = ch.author[c] == a ? b : a
                guard let at = sim.sampledArrivals[UInt64(c) << 32 | UInt64(UInt32(bitPattern: other))], at < e else { continue }
                #expect(sim.crossedMeeting[c])
                crossed += 1
            }
        }
        #expect(crossed > 0, "visits written during a meeting that reached the other officer over it")
        #expect(sim.meetingDeliveries >= crossed)
    }

    /// With the meetings off (`backpackMeetings: false`, the model before) the same world has no such contact,
    /// and the run is the old one: no change crosses a meeting.
    @Test func meetingsCanBeSwitchedOff() throws {
        let (f, path) = try Self.twoVillages(days: 2, meetings: false)
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path))
        #expect(!sim.contacts.contains { $0.spec.linkClass == .backpackDirect })
        #expect(sim.meetingDeliveries == 0 && !sim.crossedMeeting.contains(true))
        var g = f
        g.longnan!.dispatch = "legacy"
        g.longnan!.backpackMeetings = true
        #expect(throws: ScenarioError.self) { try g.validate(file: path) }
    }

    /// Reactive dispatch: a meeting belongs to both officers' plans. When either turns round for an incident, the
    /// meetings of the old plan that were up end then and those to come never come up; the officer meets nobody
    /// on the walk to the scene. Meetings at scenes and on the new plans happen. Fails with meetings tagged with
    /// one officer's plan only (the other's withdrawal leaves them in place).
    @Test func aWithdrawnPlansMeetingsDoNotHappen() throws {
        var turned = 0, meetings = 0, withdrawn = 0
        for seed in [1, 2, 3] as [UInt64] {
            var (f, path) = try ReactiveDispatchTests.file(days: 4, oneStation: true)
            f.longnan!.villages = 6  // officers share villages more often
            let (sim, scen) = try ReactiveDispatchTests.run(f, path: path, seed: seed)
            let met = sim.contacts.filter { $0.spec.linkClass == .backpackDirect }
            meetings += met.count
            withdrawn += sim.withdrawnMeetings.neverUp + sim.withdrawnMeetings.endedEarly
            for d in scen.dispatchLog where d.kind == .backpack && d.left >= 0 && d.onScene < sim.duration {
                turned += 1
                let mine = met.filter { $0.spec.a == d.unit || $0.spec.b == d.unit }
                #expect(d.onScene == d.left || !mine.contains { $0.start < d.left && $0.end > d.left },
                        "seed \(seed), incident \(d.subject): a meeting outlived the turn-round")
                #expect(!mine.contains { $0.start > d.left && $0.start < d.onScene }, "seed \(seed), incident \(d.subject): a meeting on the walk")
            }
        }
        #expect(turned > 20 && meetings > 20, "turned round \(turned), meetings \(meetings)")
        #expect(withdrawn > 0, "meeting windows withdrawn: \(withdrawn)")
    }

    /// Village-scope logs (the default, as a real node writes: the record's scope): a visit is written to its
    /// author's log of the village where it happens, HQ holds it and receipts it (the author's store knows), and
    /// the relay box of that village carries it (a relay's village scope admits its own village's logs). Fails with
    /// `logScope: "station"` (the log is the station's).
    @Test func aChangeGoesToItsVillagesLogReachesHQIsReceiptedAndTheRelayCarriesIt() throws {
        let (f, path) = try shippedScenario("longnan-small", days: 4)
        let scen = try #require(try makeScenario(f, seed: 1, path: path) as? LongnanScenario)
        let w = scen.world
        #expect(w.placeScopes.count == scen.villages.count)
        let sim = runFieldSync(scenario: scen, seed: 1, crypto: .standIn, receiptInterval: Duration.hour, options: RunOptions(oracleSampleEvery: 0))
        #expect(sim.invariantViolation == nil)
        let a = sim.agent
        let hq = try #require(a.replicator(at: scen.hqNode))
        let ch = sim.context.changes
        var seqOf: [UInt64: UInt64] = [:]  // (author, place) -> changes so far
        var checked = 0, relayed = 0, receipted = 0
        for c in 0..<ch.count {
            let author = ch.author[c], place = ch.place[c]
            let key = UInt64(UInt32(bitPattern: author)) << 32 | UInt64(UInt32(bitPattern: place))
            let seq = (seqOf[key] ?? 0) + 1
            seqOf[key] = seq
            guard ch.changeClass[c] == .visit, ch.createdAt[c] < sim.workloadEnd, let r = a.replicator(at: author) else { continue }
            let village = scen.villages[Int(place)]
            let log = LogID(author: r.identity.id, scope: try Scope(w.placeScopes[Int(place)]))
            #expect(log.scope.path.hasSuffix(String(format: "/village-%04d", Int(place) + 1)) && log.scope.parent?.path == w.domainNames[Int(ch.domain[c])])
            #expect(try r.store.holdings(of: log).contains(seq), "the author's village log holds the visit")
            #expect(try hq.store.holdings(of: log).contains(seq), "HQ holds it")
            checked += 1
            let known = try r.store.receipted(log)
            if (a.hqReceipted[log] ?? 0) >= seq && known >= seq { receipted += 1 }
            if village.relay >= 0, let box = a.replicator(at: village.relay) {
                #expect(try Scope(w.nodes[Int(village.relay)].scope).contains(log.scope))
                if try box.store.holdings(of: log).contains(seq) { relayed += 1 }
            }
        }
        #expect(checked > 50 && relayed > 5, "visits \(checked), carried by their village's relay box \(relayed)")
        #expect(receipted == checked, "receipted at HQ and known to the author: \(receipted) of \(checked)")
    }
}
