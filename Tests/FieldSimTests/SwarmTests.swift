import FieldSim
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, "a fault swarm": `fieldsim swarm` on `longnan-small` with the real protocol and a random fault
/// mix per seed, invariants checked at the end of each run.
@Suite struct SwarmTests {
    /// Seeds of the suite's swarm and their length (docs/simulator.md, "Fault swarm"): 10 unless
    /// `FIELDSYNC_SWARM_SEEDS` says more. A debug build needs about 2 s of CPU per seed at one day, on one
    /// pool thread that nothing else can use meanwhile: 30 seeds held it for 190 s of a 204 s full run,
    /// and the node suites' timing tests (live sessions, keep-alives, idle limits) failed in CI on the
    /// one core left. The long swarms are `fieldsim swarm` runs (10,000 seeds in the docs).
    static let seeds = ProcessInfo.processInfo.environment["FIELDSYNC_SWARM_SEEDS"].flatMap { Int($0) }.map { max(8, $0) } ?? 10
    static let days = 1.0

    /// Every seed passes every invariant; the mixes exercise every fault kind and the trust and relay
    /// checks have something to check.
    @Test(.timeLimit(.minutes(10))) func hundredSeedsPassTheInvariants() throws {
        let results = try Swarm.run(first: 1, count: Self.seeds, days: Self.days, threads: 1)  // one core: the node suites beside it measure time
        #expect(results.map(\.seed) == (1...UInt64(Self.seeds)).map { $0 })
        for r in results where !r.safetyFailures.isEmpty {
            Issue.record("seed \(r.seed) [\(r.mix.description)]: \(r.safetyFailures.joined(separator: "; ")); reproduce: \(Swarm.reproduce(r.seed, days: Self.days))")
        }
        // Delivery (liveness): findings 2 and 3 of the 10,000-seed swarm (docs/simulator.md, "Fault swarm")
        // are fixed; seeds 1-100 at one day all deliver (seeds 7 and 20 of 1-30 did not before), so a delivery failure is a failure.
        for r in results where !r.failures.isEmpty && r.safetyFailures.isEmpty {
            Issue.record("seed \(r.seed) [\(r.mix.description)]: \(r.failures.joined(separator: "; ")); reproduce: \(Swarm.reproduce(r.seed, days: Self.days))")
        }
        var totals: [String: Int] = [:]
        for r in results { for (k, v) in r.counts { totals[k, default: 0] += v } }
        for k in ["frames_duplicated", "frames_reordered", "frames_corrupted", "devices_revoked", "revoked_sessions_refused",
                  "post_revocation_changes_refused", "changes_held_by_relays", "receipts_written", "session_pairs_failed_or_cut"] {
            #expect(totals[k, default: 0] > 0, "\(k): \(totals)")
        }
        #expect(results.contains { $0.mix.faults.partition == true } && results.contains { ($0.mix.faults.crashesPerDeviceYear ?? 0) > 0 })
        #expect(results.contains { ($0.mix.faults.clockSkewShare ?? 0) > 0 })
    }

    /// Same seed, same run; the thread count changes nothing.
    @Test func swarmRunsAreDeterministic() throws {
        let one = try Swarm.run(first: 40, count: 3, days: 0.5, threads: 1)
        let two = try Swarm.run(first: 40, count: 3, days: 0.5, threads: 2)
        #expect(one.map(\.traceHash) == two.map(\.traceHash))
        #expect(one.map { $0.counts.map(\.1) } == two.map { $0.counts.map(\.1) })
        #expect(SwarmMix(seed: 41).description == one[1].mix.description)
        #expect(Swarm.reproduce(41, days: 0.5) == "SWIFT_DETERMINISTIC_HASHING=1 swift run -c release fieldsim swarm --seed 41 --days 0.5")
    }

    /// Finding of the swarm (seed 108): with frames corrupted on the links, a bit flipped in a length
    /// prefix that makes a frame longer left its receiver waiting for bytes that never came and its peer
    /// waiting for an answer; the pair never ended, and on an always-up wired link that was the rest of the
    /// run (429 (change, replica) pairs never delivered, nothing reached HQ after hour 34). A node cuts such
    /// a session after its 30 s idle timeout; the agent now does too (`FieldSyncAgent.sessionIdleTimeout`).
    @Test func corruptedLengthPrefixDoesNotStallALink() throws {
        var (f, path) = try shippedScenario("longnan-small")
        #expect(f.faults != nil)  // longnan-small's faults: all off; only corruption is switched on here
        f.faults?.crashesPerDeviceYear = 0
        f.faults?.deviceLossPerYear = 0
        f.faults?.partition = false
        f.faults?.clockSkewShare = 0
        f.faults?.linkCorrupt = 0.0498
        f.longnan!.wiredOutagesPer30Days = 0
        let scen = try makeScenario(f, seed: 108, path: path)
        var options = RunOptions(oracleSampleEvery: 0)
        options.linkFaults = LinkFaults(f.faults, seed: 108)
        let sim = runFieldSync(scenario: scen, seed: 108, crypto: .standIn, options: options)
        let r = fieldSyncReport(sim, scenarioName: f.name, seed: 108, derived: scen.derivedParameters)
        #expect(sim.metrics.linkCorrupted > 100)
        #expect(r.headline.missing == 0, "missing \(r.headline.missing)")
        let cuts = sim.agent.pairEnds.map { $0[FieldSyncAgent.PairEnd.idleTimeout.rawValue] }.reduce(0, +)
        #expect(cuts > 0)
    }

    /// Finding 2 of the 10,000-seed swarm (seed 46: reordering 0.02, corruption 0.005, receipts): a bit
    /// flipped in the length prefix of a frame on a live session left the receiver waiting for up to 64 KB
    /// its peer sends only as later traffic; keep-alive bytes counted as a sign of life and an idle live
    /// session was exempt from the idle timeout, so the pair stayed open and pushes on it went nowhere
    /// (13 (change, reader) pairs undelivered at one day before the fix, 70 at two). Now a side is heard
    /// only when a whole frame arrives (`SyncSession.framesReceived`) and a live pair with a frame begun and
    /// not whole is cut by the idle timeout (`SyncSession.receivingFrame`), as on a node.
    @Test func corruptedFrameOnALiveSessionIsCut() throws {
        let r = try #require(try Swarm.run(first: 46, count: 1, days: 1, threads: 1).first)
        #expect(r.failures.isEmpty, "\(r.failures)")
        let counts = Dictionary(uniqueKeysWithValues: r.counts)
        #expect(counts["frames_corrupted", default: 0] > 0)
        #expect(counts["idle_timeout_cuts", default: 0] + counts["peer_gone_cuts", default: 0] > 0, "\(counts)")
    }

    /// Finding 3 of the 10,000-seed swarm (seeds 237, 1738, 2904, 4531, 7810 at two days; seed 7 at one
    /// day, after finding 2's fix): undelivered pairs with clock skew and no corruption. Not a protocol bug:
    /// a node refuses a change dated ahead of its clock by more than the skew tolerance (5 min,
    /// `timestampInFuture`) and the next session offers it again once its clock caught up; a backpack
    /// whose clock runs behind and whose contacts with holders all came before that cannot have it. The
    /// check allowed 1 h plus twice the largest skew after the oracle's arrival, which assumes a contact
    /// after the catch-up; it now asks the oracle with each node's acceptance time (`notBefore`), and
    /// the skew seeds pass (seed 7 failed the old check with 2 pairs: its reader, 1.45 h behind, met
    /// no holder again after its clock passed the changes' dates).
    @Test func aChangeDatedAheadCountsOnlyOnceTheReadersClockCaughtUp() throws {
        let r = try #require(try Swarm.run(first: 7, count: 1, days: 1, threads: 1).first)
        #expect((r.mix.faults.clockSkewShare ?? 0) > 0)
        #expect(r.failures.isEmpty, "\(r.failures)")
        // The oracle: node 1 accepts only from 50 s; its contact with node 0 ends at 30 s (never), and a
        // later contact carries it at 50 s; node 2 gets it from node 1 only after that.
        let spec = { (a: NodeIndex, b: NodeIndex) in ContactSpec(a: a, b: b, linkClass: .trace, bytesPerSecond: 0, latency: 0) }
        let early = Oracle(contacts: [ContactRecord(start: 10_000, end: 30_000, spec: spec(0, 1)),
                                      ContactRecord(start: 20_000, end: 90_000, spec: spec(1, 2))], nodes: 3)
        #expect(early.earliestArrival(from: 0, at: 0) == [0, 10_000, 20_000])
        #expect(early.earliestArrival(from: 0, at: 0, notBefore: [0, 50_000, 0]) == [0, .max, .max])
        let late = Oracle(contacts: [ContactRecord(start: 10_000, end: 30_000, spec: spec(0, 1)),
                                     ContactRecord(start: 40_000, end: 60_000, spec: spec(0, 1)),
                                     ContactRecord(start: 20_000, end: 90_000, spec: spec(1, 2))], nodes: 3)
        #expect(late.earliestArrival(from: 0, at: 0, notBefore: [0, 50_000, 0]) == [0, 50_000, 50_000])
    }
}
