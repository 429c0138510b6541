@testable import FieldSim
import FieldSyncCore
import FieldSyncProtocol
import Foundation
import Testing

/// Issue 14, "Model gaps left by issue 7" (docs/simulator.md, "Crashes of HQ, counties and stations; relay
/// quotas"): HQ, county and station nodes crash and restart from their store (`faults.crashesPerInfraYear`), and
/// relay boxes keep at most `faults.relayQuotaBytes` of changes, through the store's own quota.
@Suite struct InfraFaultsTests {
    /// `longnan-small` for two days (the workload stops at day one), no field-device crashes, wired outages or clock
    /// skew, with `faults` changed by `change`.
    static func file(days: Double = 2, _ change: (inout FaultConfig) -> Void) throws -> (ScenarioFile, String) {
        var (f, path) = try shippedScenario("longnan-small", days: days)
        var faults = f.faults ?? FaultConfig()
        faults.crashesPerDeviceYear = 0
        faults.clockSkewShare = 0
        change(&faults)
        f.faults = faults
        f.longnan!.wiredOutagesPer30Days = 0
        try f.validate(file: "test")
        return (f, path)
    }

    static func run(_ f: ScenarioFile, path: String, seed: UInt64, receipts: Bool = true) throws -> Simulation<FieldSyncAgent> {
        let scen = try makeScenario(f, seed: seed, path: path)
        var options = RunOptions(sampleInterval: Duration.hour, snapshotAt: nil, recordContacts: true, oracleSampleEvery: 0)
        options.linkFaults = LinkFaults(f.faults, seed: seed)
        let sim = Simulation(scenario: scen, options: options) {
            FieldSyncAgent(context: $0, seed: seed, crypto: .standIn, receiptInterval: receipts ? Duration.hour : nil,
                           durability: StoreDurability(f.faults))
        }
        sim.run()
        return sim
    }

    /// The crash windows of the fixed nodes the run drew: (node, down at, back at), drawn again the way the scenario
    /// drew them (the same generator, world, settings and seed).
    static func windows(_ f: ScenarioFile, path: String, seed: UInt64) throws -> [(node: NodeIndex, down: SimTime, up: SimTime)] {
        let scen = try makeScenario(f, seed: seed, path: path)
        var faults: [(SimTime, EventKind, NodeIndex)] = []
        _ = InfraCrashes.draw(world: scen.world, faults: f.faults, seed: seed, duration: scen.duration, into: &faults)
        var out: [(node: NodeIndex, down: SimTime, up: SimTime)] = []
        for i in stride(from: 0, to: faults.count, by: 2) {
            #expect(faults[i].1 == .crash && faults[i + 1].1 == .restart && faults[i].2 == faults[i + 1].2)
            out.append((faults[i].2, faults[i].0, faults[i + 1].0))
        }
        return out
    }

    /// A station that crashes has its contacts (and their sessions) cut at the crash, has none while it is down,
    /// and after its restart from its store it catches up: nothing it held is lost (the store counts match the run's
    /// record), and every change a live node holds reaches it and every other reader the contacts reached.
    /// Fails with the crashes of the fixed nodes taken out (the run then keeps the stations' contacts up).
    @Test func aStationCrashCutsItsSessionsAndTheStationCatchesUpAfterRestart() throws {
        let seed: UInt64 = 2
        let (f, path) = try Self.file { $0.crashesPerInfraYear = 500; $0.infraCrashDowntimeMinutes = [30, 120] }
        let windows = try Self.windows(f, path: path, seed: seed)
        let sim = try Self.run(f, path: path, seed: seed)
        let world = sim.context.world
        let a = sim.agent
        let stations = windows.filter { world.nodes[Int($0.node)].nodeClass == .station }
        #expect(!stations.isEmpty)
        #expect(a.infraCrashes == windows.count)
        var cutAtCrash = 0
        for w in windows {
            for c in sim.contacts where c.spec.a == w.node || c.spec.b == w.node {
                #expect(!(c.start < w.up && c.end > w.down), "\(world.nodes[Int(w.node)].name) had a contact \(c.start)-\(c.end) while down \(w.down)-\(w.up)")
                if c.end == w.down { cutAtCrash += 1 }
            }
        }
        #expect(cutAtCrash > 0, "no contact was up at a crash")
        #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
        #expect(a.crashes == windows.count && a.powerLosses == 0 && a.changesLost == 0)
        let dur = Swarm.durabilityCheck(sim)
        #expect(dur.failures.isEmpty && dur.lostForGood.isEmpty, "\(dur.failures)")
        let delivery = Swarm.deliveryCheck(sim)
        #expect(delivery.missing == 0, "\(delivery.examples)")
        // Each crashed station holds, at the end, every change of its station that some live node holds.
        let ch = sim.context.changes
        for s in Set(stations.map(\.node)) {
            for c in 0..<ch.count where world.reads(ch.domain[c], at: s) {
                let heldSomewhere = (0..<world.count).contains { !sim.isLost(NodeIndex($0)) && a.holds(ChangeIndex(c), at: NodeIndex($0)) }
                if heldSomewhere { #expect(a.holds(ChangeIndex(c), at: s), "\(world.nodes[Int(s)].name) lacks change \(c)") }
            }
        }
    }

    /// While HQ is down it writes nothing: no receipt, revocation or key grant of HQ's is dated inside one of its down
    /// windows; a device reported lost while HQ is down is revoked when HQ is back (at its restart); receipts resume
    /// after the restart. Fails with the crashes of the fixed nodes taken out (receipts inside the windows), and with
    /// the loss reports not held for HQ's restart (a revocation written by a node that is off).
    @Test func hqDownDelaysReceiptsAndRevocationsAndTheyResume() throws {
        let seed: UInt64 = 1
        let (f, path) = try Self.file {
            $0.crashesPerInfraYear = 400
            $0.infraCrashDowntimeMinutes = [300, 600]
            $0.deviceLossPerYear = 3_000
        }
        let windows = try Self.windows(f, path: path, seed: seed)
        let sim = try Self.run(f, path: path, seed: seed)
        let a = sim.agent
        let hq = try #require(a.hq)
        let hqDown = windows.filter { $0.node == hq }
        #expect(!hqDown.isEmpty, "HQ did not crash in this run")
        #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
        func inside(_ t: SimTime) -> (node: NodeIndex, down: SimTime, up: SimTime)? { hqDown.first { t > $0.down && t < $0.up } }
        let r = try #require(a.replicator(at: hq))
        let written = try r.store.changes(by: r.identity.id, after: HLCTimestamp(milliseconds: 0, counter: 0))
        var receiptsAfterARestart = 0
        for c in written {
            let t = SimTime(c.hlc.milliseconds) - SimTime(FieldSyncAgent.epochMs)
            #expect(inside(t) == nil, "HQ wrote a change at \(t) ms while down")
            if hqDown.contains(where: { t >= $0.up }) { receiptsAfterARestart += 1 }
        }
        #expect(receiptsAfterARestart > 0 && a.receiptsWritten > 0)
        var heldForRestart = 0
        for rev in a.revocations {
            #expect(inside(rev.at) == nil, "revocation of \(sim.context.world.nodes[Int(rev.node)].name) written at \(rev.at) ms while HQ was down")
            if hqDown.contains(where: { rev.at == $0.up }) { heldForRestart += 1 }
        }
        #expect(heldForRestart > 0, "no device was lost while HQ was down")
        #expect(a.lossReportsWhileHQDown.isEmpty)
        #expect(Swarm.durabilityCheck(sim).failures.isEmpty)
    }

    /// A station that is down when a dispatch is due writes it when it is back (its duty officers cannot write on a
    /// node that is off; dropping the write would leave the dispatched officer waiting for ever): the dispatch change
    /// is created at the restart and the officer acts when the device holds it. Fails on the old engine, which
    /// skipped every write of a node that was down.
    @Test func aStationDownWritesItsDispatchesWhenItIsBack() throws {
        var (f, path) = try ReactiveDispatchTests.file(days: 4)
        var faults = f.faults ?? FaultConfig()
        faults.crashesPerInfraYear = 800
        faults.infraCrashDowntimeMinutes = [60, 240]
        f.faults = faults
        try f.validate(file: "test")
        let seed: UInt64 = 1
        let windows = try Self.windows(f, path: path, seed: seed)
        let sim = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: seed, path: path))
        let scen = try #require(sim.scenarioNow as? LongnanScenario)
        let world = sim.context.world
        let dispatch = ReactiveDispatchTests.dispatchChanges(sim)
        #expect(sim.writesDeferred > 0)
        var delayed = 0, actedOn = 0
        for d in scen.dispatchLog where d.kind == .backpack {
            let station = try #require((0..<world.count).first {
                world.nodes[$0].nodeClass == .station && world.nodes[$0].station == world.nodes[Int(d.unit)].station
            })
            guard let w = windows.first(where: { Int($0.node) == station && d.dispatched >= $0.down && d.dispatched < $0.up }) else { continue }
            delayed += 1
            let c = try #require(dispatch[d.subject], "the dispatch of incident \(d.subject), due while its station was down, was never written")
            #expect(sim.context.changes.createdAt[c] == w.up && Int(sim.context.changes.author[c]) == station)
            if d.received >= 0 {
                #expect(d.received >= w.up)
                actedOn += 1
            }
        }
        #expect(delayed > 0 && actedOn > 0, "delayed \(delayed), acted on \(actedOn)")
    }

    /// Relay boxes with a quota well below what they hold without one: the stores refuse (the least urgent) and evict
    /// (what HQ receipted), never hold more than the quota, and still everything reaches HQ; HQ keeps all it
    /// receipted and the delivery check holds. Fails with the quota not passed to the relay stores.
    @Test func aRelayWithASmallQuotaRefusesAndEvictsAndHQGetsEverything() throws {
        let seed: UInt64 = 1
        let (free, path) = try Self.file(days: 3) { _ in }
        let unbounded = try Self.run(free, path: path, seed: seed).agent.relayStoreFigures()
        let largest = try #require(unbounded.bytes.last)
        let quota = largest / 10
        let (f, _) = try Self.file(days: 3) { $0.relayQuotaBytes = quota }
        let sim = try Self.run(f, path: path, seed: seed)
        let a = sim.agent
        let relay = a.relayStoreFigures()
        #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
        #expect(relay.refusedForQuota > 0 && relay.evicted > 0, "refused \(relay.refusedForQuota), evicted \(relay.evicted) (quota \(quota) of \(largest))")
        #expect(relay.bytes.allSatisfy { $0 <= quota }, "\(relay.bytes) over \(quota)")
        #expect(unbounded.refusedForQuota == 0 && unbounded.evicted == 0)
        // Every change written before the workload stopped reached HQ.
        let ch = sim.context.changes
        let hq = try #require(a.hq)
        for c in 0..<ch.count where ch.createdAt[c] < sim.workloadEnd && !a.isAdversarialChange(ChangeIndex(c)) {
            #expect(a.holds(ChangeIndex(c), at: hq), "change \(c) not at HQ")
        }
        #expect(Swarm.durabilityCheck(sim).failures.isEmpty)
        #expect(Swarm.deliveryCheck(sim).missing == 0)
    }

    /// Swarm seed 59 with `--infra` (relay quota 11,496 bytes, field crashes, device losses): a relay box whose full
    /// quota refused a revocation's change had learned the revocation in memory and forgot it over its next crash
    /// (`revocations_forgotten` 1 on the release build of b1841c5). The store now keeps what the trust store
    /// learned (`CommitBatch.trustLearned`).
    @Test func aRelayWithAFullQuotaKeepsTheRevocationsItLearned() throws {
        let (f, path) = try shippedScenario("longnan-small")
        let run = try Swarm.run(seed: 59, base: f, path: path, infra: true)
        #expect(run.mix.durability.relayQuotaBytes != nil)
        #expect(!run.failures.contains { $0.contains("revocation(s) forgotten") }, "\(run.failures)")
    }

    /// Settings a run cannot honour are refused, naming the key: a negative, non-finite or huge crash rate; a
    /// downtime range that is not [min, max] or longer than a year; a negative quota; HQ in `normalSyncClasses` (the
    /// node refuses HQ with `store.syncMode = normal`). Written as JSON, so that the test also fails on code that
    /// ignores the keys.
    @Test func badSettingsAreRefused() throws {
        let (f, _) = try shippedScenario("longnan-small")
        let base = try #require(String(data: JSONEncoder().encode(f), encoding: .utf8))
        func withFaults(_ json: String) throws -> ScenarioFile {
            var file = try JSONDecoder().decode(ScenarioFile.self, from: Data(base.utf8))
            file.faults = try JSONDecoder().decode(FaultConfig.self, from: Data(json.utf8))
            return try ScenarioFile.parse(JSONEncoder().encode(file))
        }
        for (json, key) in [(#"{"crashesPerInfraYear": -1}"#, "crashesPerInfraYear"), (#"{"crashesPerInfraYear": 1e300}"#, "crashesPerInfraYear"),
                            (#"{"infraCrashDowntimeMinutes": [10, 5]}"#, "infraCrashDowntimeMinutes"),
                            (#"{"infraCrashDowntimeMinutes": [1, 1e300]}"#, "infraCrashDowntimeMinutes"),
                            (#"{"infraCrashDowntimeMinutes": [5]}"#, "infraCrashDowntimeMinutes"),
                            (#"{"relayQuotaBytes": -1}"#, "relayQuotaBytes"), (#"{"normalSyncClasses": ["hq"]}"#, "normalSyncClasses")] {
            do {
                _ = try withFaults(json)
                Issue.record("\(json) was accepted")
            } catch {
                #expect((error as? ScenarioError)?.problem.contains(key) == true, "\(error)")
            }
        }
        let ok = try withFaults(#"{"crashesPerInfraYear": 2, "infraCrashDowntimeMinutes": [30, 525600], "relayQuotaBytes": 0, "normalSyncClasses": ["relay", "station"]}"#)
        #expect(ok.faults?.crashesPerInfraYear == 2)
    }

    /// With the settings absent or 0 nothing is drawn and no relay store has a quota: the run is the one before them.
    @Test func offByDefault() throws {
        let (f, path) = try Self.file { $0.crashesPerInfraYear = 0; $0.relayQuotaBytes = 0 }
        let scen = try makeScenario(f, seed: 1, path: path)
        var faults: [(SimTime, EventKind, NodeIndex)] = []
        #expect(InfraCrashes.draw(world: scen.world, faults: f.faults, seed: 1, duration: scen.duration, into: &faults) == nil && faults.isEmpty)
        #expect(StoreDurability(f.faults).relayQuotaBytes == nil)
    }
}
