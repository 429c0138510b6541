// Crashes of HQ, counties and stations, and relay quotas (issue 14, "Model gaps left by issue 7";
// docs/simulator.md, "Crashes of HQ, counties and stations; relay quotas").

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

/// Crashes of the fixed nodes (`faults.crashesPerInfraYear`, `faults.infraCrashDowntimeMinutes`): HQ, counties
/// and stations lose power, are restarted, are upgraded. The engine's crash and restart events are the same as
/// for field devices (sessions cut at once, the node unreachable while down, its store reopened at the restart);
/// only the draw is separate, from a generator of its own, so that switching it on leaves every other fault of
/// the run where it was.
public enum InfraCrashes {
    /// The node classes this setting crashes.
    public static let classes: [NodeClass] = [.hq, .county, .station]
    /// Downtime after a crash when the scenario gives none, minutes: a restart after a power cut or an upgrade
    /// takes half an hour to four hours at a station (someone has to come and power it up again).
    public static let defaultDowntimeMinutes: [Double] = [30, 240]

    /// Draws the crashes of `world`'s HQ, county and station nodes over `duration` and appends their crash and
    /// restart events to `faults`: per node, a Poisson number of crashes at uniform times, each down for a
    /// uniform time in the downtime range; a crash that would start while the node is still down from the one
    /// before is dropped (a node that is off cannot crash). Nothing is drawn with a rate of 0 (the default).
    /// Returns the crashes kept and one line for the derived parameters (nil with a rate of 0).
    public static func draw(world w: World, faults f: FaultConfig?, seed: UInt64, duration: SimTime,
                            into faults: inout [(SimTime, EventKind, NodeIndex)]) -> (count: Int, text: String)? {
        let rate = f?.crashesPerInfraYear ?? 0
        guard rate > 0 else { return nil }
        let down = f?.infraCrashDowntimeMinutes ?? defaultDowntimeMinutes
        let years = Double(duration) / Double(Duration.day) / 365
        var r = SimRandom(seed: seed, 0x1AF7_C4A5)
        var count = 0
        var byClass = [NodeClass: Int]()
        for n in 0..<w.count where classes.contains(w.nodes[n].nodeClass) {
            let k = r.poisson(rate * years)
            let times = (0..<k).map { _ in SimTime(r.uniform(0, Double(duration))) }.sorted()
            var upAt: SimTime = -1
            for t in times {
                let back = t + SimTime(r.uniform(down[0], down[1]) * Double(Duration.minute))
                guard t > upAt else { continue }
                faults.append((t, .crash, NodeIndex(n)))
                faults.append((back, .restart, NodeIndex(n)))
                upAt = back
                count += 1
                byClass[w.nodes[n].nodeClass, default: 0] += 1
            }
        }
        let parts = classes.map { "\($0)=\(byClass[$0] ?? 0)" }.joined(separator: " ")
        return (count, "\(count) (\(parts); \(rate) per node-year, downtime \(down[0])-\(down[1]) min)")
    }
}

extension FieldSyncAgent {
    /// Whether `node` is down (crashed, not restarted yet). Nothing runs on a node that is down: HQ writes no
    /// receipt, revocation or key grant while it is.
    public func isDown(_ node: NodeIndex) -> Bool { nodeDown[Int(node)] }

    /// Whether HQ is down (false without an HQ node).
    var hqIsDown: Bool { hqNode.map { nodeDown[Int($0)] } ?? false }

    /// The node restarted. HQ: the operator's reports of lost devices that came in while it was down are
    /// written now (the revocations, and the key rotations they start), and rotations that fell due while it
    /// was down run now, as `fieldsync epoch-key rotate` would once the node is back.
    func restartedNode(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        nodeDown[Int(node)] = false
        guard node == hqNode else { return }
        let reports = lossReportsWhileHQDown
        lossReportsWhileHQDown = []
        for (lost, replicator) in reports { revokeLost(lost, replicator, now: now, effects: &effects) }
        if now >= nextKeyEventAt { keysTick(now: now, effects: &effects) }
    }

    /// The relay store sizes and quota effects at the end of the run (relay boxes not lost): bytes of changes
    /// held per relay, the changes evicted (held seqs whose bytes are gone: receipted changes evicted under the
    /// quota) and the changes relays refused for quota on the way in.
    public func relayStoreFigures() -> (bytes: [Int], evicted: Int, refusedForQuota: Int) {
        var bytes: [Int] = []
        var evicted = 0
        for n in 0..<ctx.world.count where ctx.world.nodes[n].nodeClass == .relay {
            guard let r = replicators[n], let s = try? r.store.status(), let h = try? r.store.holdings() else { continue }
            bytes.append(s.changeBytes)
            let seqs = h.values.reduce(0) { $0 + Int($1.count) }
            evicted += max(0, seqs - s.changes)
        }
        return (bytes.sorted(), evicted, relayQuotaRefusals)
    }
}

/// `fieldsync.relay_stores_and_infra_crashes`: the bytes relay boxes hold at the end (max, p95, median over the
/// relay boxes not lost), the quota and what it evicted and refused; the crashes of HQ, counties and stations and
/// the writes they deferred.
func infraFaultsJSON(_ sim: Simulation<FieldSyncAgent>) -> JSON {
    let a = sim.agent
    let relay = a.relayStoreFigures()
    var hqAll = Histogram()  // every change class and priority (the summary's `latency_to_hq` splits them)
    for row in sim.metrics.latencyToHQ { for h in row { hqAll.merge(h) } }
    func q(_ p: Double) -> Int64 { relay.bytes.isEmpty ? 0 : Int64(relay.bytes[min(relay.bytes.count - 1, Int(p * Double(relay.bytes.count)))]) }
    return .object([
        ("relay_boxes", .int(Int64(relay.bytes.count))),
        ("relay_bytes_max", .int(relay.bytes.last.map(Int64.init) ?? 0)), ("relay_bytes_p95", .int(q(0.95))),
        ("relay_bytes_p50", .int(q(0.5))),
        ("relay_quota_bytes", .int(Int64(a.durability.relayQuotaBytes ?? 0))),
        ("relay_changes_evicted", .int(Int64(relay.evicted))), ("relay_changes_refused_for_quota", .int(Int64(relay.refusedForQuota))),
        ("hq_latency_all_count", .int(Int64(hqAll.count))), ("hq_latency_all_p50_s", .number(hqAll.quantile(0.5) / 1000)),
        ("hq_latency_all_p95_s", .number(hqAll.quantile(0.95) / 1000)),
        ("infra_crashes", .int(Int64(a.infraCrashes))), ("writes_deferred_while_down", .int(Int64(sim.writesDeferred))),
        ("loss_reports_waiting_for_hq", .int(Int64(a.lossReportsWhileHQDown.count))),
    ])
}

extension SwarmMix {
    /// The swarm's draw of the fixed nodes' crashes and the relay quota for `seed` (`fieldsim swarm --infra`;
    /// `SimRandom(seed, 0x5A4A_12D3)`, a generator of its own, so the rest of the mix is unchanged): with
    /// probability one half, HQ, counties and stations crash 20-300 times per node-year, down 1 min to 5-360 min;
    /// with probability one half, relay boxes have a quota of 4-48 KiB (below what a relay box of `longnan-small`
    /// holds without one: docs/simulator.md, "Crashes of HQ, counties and stations; relay quotas").
    public mutating func drawInfra(seed: UInt64) {
        var r = SimRandom(seed: seed, 0x5A4A_12D3)
        if r.unit() < 0.5 {
            faults.crashesPerInfraYear = r.uniform(20, 300)
            faults.infraCrashDowntimeMinutes = [1, r.uniform(5, 360)]
        }
        if r.unit() < 0.5 { durability.relayQuotaBytes = 4_096 + r.int(44 * 1_024) }
    }
}

extension Swarm {
    /// The counts of `fieldsim swarm --infra`, the same names in every seed.
    static func infraCounts(_ sim: Simulation<FieldSyncAgent>) -> [(String, Int)] {
        let a = sim.agent
        let relay = a.relayStoreFigures()
        return [("infra_crashes", a.infraCrashes), ("writes_deferred_while_down", sim.writesDeferred),
                ("relay_changes_evicted", relay.evicted), ("relay_changes_refused_for_quota", relay.refusedForQuota),
                ("relay_bytes_max", relay.bytes.last ?? 0)]
    }
}
