import FieldSim
import FieldSyncCore
import Testing

@Suite struct EngineTests {
    @Test func heapAndNaiveListPopInTheSameStableOrder() {
        var rng = SplitMix64(seed: 9)
        var heap = EventQueue()
        var naive = NaiveEventList()
        for i in 0..<2_000 {
            let e = Event(time: SimTime(rng.next() % 50), phase: UInt8(rng.next() % 2), kind: .sample, a: Int32(i))
            heap.push(e)
            naive.push(e)
        }
        var last: (SimTime, UInt8, Int32)? = nil
        while let x = heap.pop() {
            let y = naive.pop()
            #expect(x == y)
            if let l = last {
                // Equal (time, phase) keep insertion order.
                #expect((l.0, l.1) < (x.time, x.phase) || ((l.0, l.1) == (x.time, x.phase) && l.2 < x.a))
            }
            last = (x.time, x.phase, x.a)
        }
        #expect(naive.pop() == nil)
    }

    @Test func sameSeedGivesByteIdenticalOutputs() throws {
        let (a, ra) = try run("longnan", days: 1, seed: 42)
        let (b, rb) = try run("longnan", days: 1, seed: 42)
        #expect(a.traceHash == b.traceHash)
        #expect(a.eventsProcessed == b.eventsProcessed)
        #expect(ra.summary.render() == rb.summary.render())
        #expect(ra.seriesCSV == rb.seriesCSV)
        #expect(ra.charts.map(\.1) == rb.charts.map(\.1))
        let (c, _) = try run("longnan", days: 1, seed: 43)
        #expect(c.traceHash != a.traceHash)
    }

    @Test func histogramQuantilesAreWithinBucketError() {
        var h = Histogram()
        for v in 1...10_000 { h.record(Int64(v)) }
        #expect(abs(h.quantile(0.5) - 5_000) / 5_000 < 0.035)
        #expect(abs(h.quantile(0.99) - 9_900) / 9_900 < 0.035)
        #expect(h.max == 10_000)
        #expect(h.mean == 5_000.5)
    }
}

/// The engine checks the entitlement invariant at every delivery and stops the run at the first breach.
@Suite struct InvariantTests {
    /// An agent that "delivers" every new change to every node at once, readers or not.
    final class LeakyAgent: SyncAgent {
        typealias Message = Int
        var name: String { "leaky" }
        let context: SimContext
        var holdings: Set<Int64> = []
        init(context: SimContext) { self.context = context }
        static func wireSize(of message: Int) -> Int { 1 }
        static func messageType(of message: Int) -> MessageType { .control }
        static func change(in message: Int) -> ChangeIndex? { nil }
        func changeCreated(_ change: ChangeIndex, at node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
            for n in 0..<context.world.count where NodeIndex(n) != node {
                holdings.insert(Int64(change) << 32 | Int64(n))
                effects.accept(change, at: NodeIndex(n), hops: 1)
            }
        }
        func contactStarted(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {}
        func pollTransmit(_ link: LinkHandle, from side: LinkSide, now: SimTime) -> Int? { nil }
        func received(_ message: Int, on link: LinkHandle, at side: LinkSide, now: SimTime, effects: inout AgentEffects) {}
        func contactEnded(_ link: LinkHandle, now: SimTime, cut: [CutTransfer<Int>], effects: inout AgentEffects) {}
        func nodeCrashed(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {}
        func nodeRestarted(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {}
        func nodeLost(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {}
        func holds(_ change: ChangeIndex, at node: NodeIndex) -> Bool { holdings.contains(Int64(change) << 32 | Int64(node)) }
        func storedBytes(at node: NodeIndex) -> Int { 0 }
    }

    @Test func aBreachStopsTheRunAtThatEvent() throws {
        let (f, path) = try shippedScenario("longnan-small", days: 2)
        let leaky = Simulation(scenario: try makeScenario(f, seed: 1, path: path)) { LeakyAgent(context: $0) }
        leaky.run()
        let v = try #require(leaky.invariantViolation)
        #expect(v.contains("which it may not carry"), "\(v)")
        let honest = runBaseline(.idealEpidemic, scenario: try makeScenario(f, seed: 1, path: path))
        #expect(honest.invariantViolation == nil)
        #expect(leaky.eventsProcessed < honest.eventsProcessed / 10, "stopped at the first change, not at the end")
    }
}
