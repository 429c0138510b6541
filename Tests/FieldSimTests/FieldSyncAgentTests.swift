import FieldSim
import Foundation
import Testing

/// The real FieldSync protocol as a simulator agent, on small scenarios (real crypto per change).
@Suite struct FieldSyncAgentTests {
    static func runFS(_ name: String, days: Double? = nil, seed: UInt64 = 1) throws -> (Simulation<FieldSyncAgent>, RunReport) {
        let (f, path) = try shippedScenario(name, days: days)
        let scen = try makeScenario(f, seed: seed, path: path)
        let sim = runFieldSync(scenario: scen, seed: seed, options: RunOptions(oracleSampleEvery: 1))
        return (sim, fieldSyncReport(sim, scenarioName: f.name, seed: seed, derived: scen.derivedParameters))
    }

    /// A node with more peers due than session slots (HQ and the counties of `longnan`, at time 0) had
    /// every waiting contact's timer set again for the same instant, so the run never left time 0 (it
    /// hung; 190,000 timer firings at 0 within a minute). The waiting contacts are now tried again at
    /// the node's next tick (`SchedulePolicy.tick`), as the node does.
    @Test(.timeLimit(.minutes(3))) func morePeersDueThanSlotsDoNotStopTheClock() throws {
        let (f, path) = try shippedScenario("longnan", days: 0.01)
        let scen = try makeScenario(f, seed: 1, path: path)
        nonisolated(unsafe) var atZero: UInt64 = 0, last: SimTime = 0
        let sim = runFieldSync(scenario: scen, seed: 1, crypto: .standIn, options: RunOptions(oracleSampleEvery: 0),
                               progressEvery: 1_000) { now, events in
            if now == 0 { atZero = events }
            last = now
        }
        #expect(atZero < 50_000, "events processed at time 0: \(atZero)")
        #expect(last >= SimTime(0.01 * 86_400_000) - 60_000, "the run reached its end: \(last) ms")
        #expect(sim.agent.sessionsStarted > 100)
        print("fieldsim: longnan 0.01 day: \(atZero) events at time 0, \(sim.agent.sessionsStarted) session pairs")
    }

    @Test func smallLongnanConvergesWithEntitledStateOnly() throws {
        let (sim, report) = try Self.runFS("longnan-small")
        let agent = sim.agent
        let world = sim.context.world
        let h = report.headline
        #expect(h.changes > 100)
        #expect(agent.writes == h.changes && agent.writeErrors == 0)
        #expect(sim.convergence().missing == 0)
        #expect(h.deliveryProb == 1)
        // Every entitled replica of a station holds the same record state for that station's scope.
        for d in 0..<world.domainCount {
            let readers = world.readers[d]
            let reference = agent.recordState(at: readers[0], domain: Int32(d))
            #expect(!reference.isEmpty)
            for n in readers { #expect(agent.recordState(at: n, domain: Int32(d)) == reference, "node \(world.nodes[Int(n)].name)") }
        }
        // No replica holds a log its certificate may not hold; relays carry changes but no records.
        for n in 0..<world.count { #expect(agent.holdsOnlyEntitledLogs(NodeIndex(n))) }
        #expect(sim.checkEntitlement())
        let relays = (0..<world.count).filter { world.nodes[$0].nodeClass == .relay }.map { NodeIndex($0) }
        #expect(!relays.isEmpty)
        for r in relays { #expect(agent.recordState(at: r).isEmpty) }
        #expect(relays.contains { agent.storedChanges(at: $0) > 0 })
        // Real bytes: more than zero and at least what the oracle's minimal transfer needs.
        #expect(h.bytes > 0)
        #expect(h.oracle.minimalBytes > 0 && h.bytes >= h.oracle.minimalBytes)
        #expect(h.oracle.violations == 0)
        #expect(agent.sessionsStarted > 0 && agent.sessionsFinished > 0)
    }

    @Test func sameSeedGivesIdenticalOutputs() throws {
        let (a, ra) = try Self.runFS("longnan-small", days: 2, seed: 5)
        let (b, rb) = try Self.runFS("longnan-small", days: 2, seed: 5)
        #expect(ra.summary.render() == rb.summary.render())
        #expect(ra.seriesCSV == rb.seriesCSV)
        #expect(a.traceHash == b.traceHash)
        #expect(a.eventsProcessed == b.eventsProcessed)
        // Seeded libsodium randomness on the simulation thread: the stores hold byte-identical changes.
        for n in 0..<a.context.world.count {
            #expect(a.agent.recordState(at: NodeIndex(n)) == b.agent.recordState(at: NodeIndex(n)))
            #expect(a.agent.storedBytes(at: NodeIndex(n)) == b.agent.storedBytes(at: NodeIndex(n)))
        }
    }

    @Test func randomContactsDelivers() throws {
        var (f, path) = try shippedScenario("random-contacts")
        f.randomContacts?.nodes = 12
        f.randomContacts?.messages = 6
        f.randomContacts?.messageSpacingSeconds = 600
        f.days = 1
        f.workloadStopDays = 1
        let scen = try makeScenario(f, seed: 3, path: path)
        let sim = runFieldSync(scenario: scen, seed: 3, options: RunOptions(oracleSampleEvery: 1))
        let h = fieldSyncReport(sim, scenarioName: f.name, seed: 3, derived: scen.derivedParameters).headline
        #expect(h.changes == 6)
        #expect(sim.convergence().missing == 0)
        #expect(h.oracle.violations == 0 && h.bytes >= h.oracle.minimalBytes)
    }
}
