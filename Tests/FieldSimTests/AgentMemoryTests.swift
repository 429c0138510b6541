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
