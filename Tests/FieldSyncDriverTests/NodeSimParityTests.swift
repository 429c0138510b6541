import FieldSim
import FieldSyncCore
import FieldSyncDriver
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// The simulator runs the node's driver policy, not a copy of it: the same scripted contacts (peer
/// appearances, session results, live phases, store writes, refused and future-dated changes, timers), as
/// the simulator's `fieldsync` agent met them on a small Longnan run with link faults and clock skew,
/// are fed to the driver exactly as a node daemon builds it from its default config file
/// (`NodeDaemon.makeDriver`), and every decision must be the one the agent's driver made and acted on.
/// On its own thread: the simulation is CPU work of several seconds.
@Suite(.ownThread) struct NodeSimParityTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A node index as the node's peer address: order-preserving (ties in the schedule break by address).
    static func address(_ n: NodeIndex) -> PeerAddress { PeerAddress(host: "sim", port: Int(n) + 1) }

    static func nodeEvent(_ e: DriverEvent<NodeIndex>) -> DriverEvent<PeerAddress> {
        switch e {
        case let .peerAdded(p, s): .peerAdded(address(p), s)
        case let .peerRemoved(p, s): .peerRemoved(address(p), onlyIf: s)
        case let .sessionLive(d, p): .sessionLive(device: d, outgoing: p.map(address))
        case let .liveSessionEnded(d): .liveSessionEnded(device: d)
        case let .sessionEnded(p, f, d): .sessionEnded(address(p), finished: f, device: d)
        case let .storeChanged(x): .storeChanged(except: x)
        case let .peerChanged(p): .peerChanged(address(p))
        case let .tick(i): .tick(incoming: i)
        case .stop: .stop
        }
    }

    static func nodeDecision(_ d: DriverDecision<NodeIndex>) -> DriverDecision<PeerAddress> {
        switch d {
        case let .connect(p): .connect(address(p))
        case let .nextTick(t): .nextTick(t)
        }
    }

    /// The node daemon's configuration with every key at its default.
    static func defaultConfig() throws -> NodeConfigFile {
        try NodeConfigFile.decode(Data(#"{"device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}}"#.utf8), source: "test.json")
    }

    @Test func theAgentRunsTheNodesPolicyWithTheNodesDefaults() throws {
        let config = try Self.defaultConfig()
        let node = config.nodeConfiguration
        let agentPolicy = DriverPolicy()  // what `FieldSyncAgent` runs (its `policy`, receipts aside)
        #expect(config.schedulePolicy == agentPolicy.schedule)
        #expect(node.liveIdleTimeout.map { UInt64($0.nanoseconds / 1_000_000) } == agentPolicy.liveIdle)
        #expect(node.liveKeepAlive == agentPolicy.liveKeepAlive && node.liveKeepAlive == .default, "the same keep-alive, from the config file's defaults")
        #expect(UInt64(node.refusedRetry.nanoseconds / 1_000_000) == agentPolicy.refusedRetry)
        #expect(ReceiptPolicy() == agentPolicy.receipts)
    }

    @Test func theSameContactsGiveTheSameDecisionsInNodeAndSimulator() throws {
        let path = Self.packageRoot.appendingPathComponent("Simulator/Scenarios/longnan-small.json").path
        var f = try ScenarioFile.load(path: path)
        f.days = 2
        f.workloadStopDays = 1
        #expect(f.faults != nil, "longnan-small has a faults section")
        f.faults?.clockSkewShare = 0.3  // changes dated ahead of their receivers' clocks: refused, retried
        f.faults?.linkCorrupt = 0.002  // failed sessions: backoff and reconnect
        let seed: UInt64 = 4
        let scen = try makeScenario(f, seed: seed, path: path)
        var options = RunOptions(oracleSampleEvery: 0)
        options.linkFaults = LinkFaults(f.faults, seed: seed)
        // Sessions without their `clock` (Protocols/sync.md §4.3, as a peer of an older version): changes dated
        // ahead are then sent, refused and retried, so the driver's deferred-retry path runs too. With the
        // clock they are held back inside the session, which the driver never sees.
        let sim = runFieldSync(scenario: scen, seed: seed, crypto: .standIn, traceDrivers: true, announcesClock: false, options: options)
        let agent = sim.agent
        let config = try Self.defaultConfig()
        #expect(agent.policy.schedule == config.schedulePolicy)

        var steps = 0, connects = 0, failures = 0, liveEnds = 0, retries: [UInt64] = []
        for n in 0..<NodeIndex(sim.context.world.count) {
            let trace = agent.driverTrace(of: n)
            var options = DaemonOptions(listenHost: "127.0.0.1", listenPort: 0)
            options.policy = config.schedulePolicy
            options.seed = agent.driverSeeds[Int(n)]
            var driver = NodeDaemon.makeDriver(options: options)
            var failedAt: [NodeIndex: UInt64] = [:]
            for (i, step) in trace.enumerated() {
                let decided = driver.handle(Self.nodeEvent(step.event), now: step.now)
                let expected = step.decisions.map(Self.nodeDecision)
                guard decided == expected else {
                    Issue.record("node \(n), step \(i) at \(step.now): \(step.event): node decides \(decided), simulator decided \(expected)")
                    return
                }
                steps += 1
                switch step.event {
                case let .sessionEnded(p, false, _): failures += 1; failedAt[p] = step.now
                case .liveSessionEnded: liveEnds += 1
                case let .peerRemoved(p, _): failedAt[p] = nil  // contact over: the next one starts at once
                default: break
                }
                for case let .connect(p) in step.decisions {
                    connects += 1
                    if let t = failedAt.removeValue(forKey: p) { retries.append(step.now - t) }
                }
            }
        }
        // The run exercised the policy, and the agent acted on every decision.
        #expect(steps > 1_000 && failures > 0 && liveEnds > 0 && !retries.isEmpty)
        #expect(connects == agent.sessionsStarted, "one session pair per connect decision")
        #expect(agent.deferredRetries > 0, "live pairs closed to offer refused changes again")
        // Reconnects after a failure follow the node's backoff (1-300 s), not a fixed delay.
        #expect(retries.allSatisfy { $0 >= 1_000 }, "\(retries.filter { $0 < 1_000 })")
        #expect(agent.reconnects > 0)
    }
}
