@testable import FieldSim
import FieldSyncCore
import FieldSyncProtocol
import Testing

/// What the `fieldsync` agent keeps per (node, log) beside the stores (docs/simulator.md, "Issue 14: memory of
/// the year (session 20)").
@Suite struct AgentMemoryTests {
    /// The agent's mirror of what each node's store holds (`seen`, one entry per node and log) is keyed by the
    /// stores' shared copy of each log id: a key taken from a session's applied batch was that session's decoded
    /// copy, with a path string of its own for every (node, log) (14.7 MB of a 60-day `longnan` run's heap).
    @Test func theMirrorsKeysAreTheStoresLogIDs() throws {
        let (f, path) = try shippedScenario("longnan-small", days: 1)
        let scen = try makeScenario(f, seed: 2, path: path)
        let sim = runFieldSync(scenario: scen, seed: 2, crypto: .standIn, options: RunOptions(oracleSampleEvery: 0))
        let interner = try #require(sim.agent.recordInterner)
        func storage(_ log: LogID) -> UnsafeRawPointer? {
            log.scope.path.utf8.withContiguousStorageIfAvailable { UnsafeRawPointer($0.baseAddress) } ?? nil
        }
        var keys = 0, ownCopies = 0
        for table in sim.agent.seen {
            for log in table.keys {
                keys += 1
                if storage(log) == nil || storage(log) != storage(interner.intern(log: log)) { ownCopies += 1 }
            }
        }
        #expect(keys > 100)
        #expect(ownCopies == 0, "\(ownCopies) of \(keys) keys hold a path of their own")
    }
}

/// `HeldChanges`, the agent's record of what each node holds and each change's hop count: dense rows per carried
/// domain instead of a dictionary per node.
@Suite struct HeldChangesTests {
    /// Random sets, removals and lookups over changes of four domains (two carried) answer as a dictionary does,
    /// with the same count and the same changes listed; rows take 2 bytes a change of a carried domain (and an
    /// eighth of spare room), not about 11 bytes a held change.
    @Test func answersAsADictionaryDoes() {
        var rng = SplitMix64(seed: 5)
        var domains: [Int32] = []
        let index = ChangeDomainIndex(domainCount: 4) { domains }
        let carried: [Int32] = [1, 3]
        func slot(_ c: ChangeIndex) -> Int32 { carried.firstIndex(of: domains[Int(c)]).map(Int32.init) ?? -1 }
        var held = HeldChanges(carried: carried.count)
        var model: [ChangeIndex: HopCount] = [:]
        for step in 0..<20_000 {
            if step % 4 == 0 { domains.append(Int32.random(in: 0..<4, using: &rng)) }  // changes are created as the run goes
            guard !domains.isEmpty else { continue }
            let c = ChangeIndex(Int.random(in: 0..<domains.count, using: &rng))
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<5:
                // Now and then the saturated count (`nextHop` stops at `HopCount.max`), which a row cannot hold.
                let hops = Int.random(in: 0..<50, using: &rng) == 0 ? HopCount.max : HopCount.random(in: 0..<40, using: &rng)
                held.set(c, hops, slot: slot(c), index)
                model[c] = hops
            case 5..<7:
                held.set(c, nil, slot: slot(c), index)
                model[c] = nil
            default:
                #expect(held.hops(c, slot: slot(c), index) == model[c])
            }
        }
        #expect(held.count == model.count)
        var listed: [ChangeIndex] = []
        held.forEach(carried: carried, index) { listed.append($0) }
        #expect(listed.sorted() == model.keys.sorted())
        for c in 0..<domains.count { #expect(held.hops(ChangeIndex(c), slot: slot(ChangeIndex(c)), index) == model[ChangeIndex(c)]) }
        let ofCarried = domains.filter { carried.contains($0) }.count
        #expect(held.denseBytes <= 2 * ofCarried + 2 * ofCarried / 8 + 64, "\(held.denseBytes) bytes for \(ofCarried) changes")
    }
}
