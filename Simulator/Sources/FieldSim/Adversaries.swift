// Adversarial agents in the simulator (issue 14): a revoked device that keeps trying, a device that
// equivocates, a relay box that drops, replays and delays what it carries, and a peer that floods. Each is a
// real `Replicator`/`SyncSession` of the `fieldsync` agent whose behaviour is altered only at the edges
// (what it writes, which frames it sends, when it connects); the trust rules are checked as invariants
// (`AdversaryChecks`). docs/simulator.md, "Issue 14: adversaries".

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

/// Which adversaries a run has and how they behave. Empty (the default): none, and the run is the honest run
/// (same trace hash).
public struct AdversaryConfig: Sendable, Equatable {
    /// A backpack unit HQ revokes (reason `compromised`) at `start`, which keeps syncing and writing as before
    /// and reconnects `revokedRetrySeconds` after every refused or ended session it opened.
    public var revoked = false
    /// A backpack unit that equivocates: at its first write after `start` it also signs a different change at
    /// the same seq (a second `Replicator` with its identity and a copy of its own log), and then shows its
    /// peers the two branches in turn (one session pair with the original, the next with the copy).
    public var equivocator = false
    /// A relay box that, of the frames it sends, drops `relayDrop`, replays an old frame (of any earlier session
    /// of its own) before `relayReplay`, and holds `relayDelay` for a uniform 0 to `relayDelayMaxSeconds`.
    public var badRelay = false
    /// A backpack unit that floods within its rights: from `start` it writes `floodChangesPerHour` extra changes
    /// of `floodEditsPerChange` visits each in its station's scope (log `<station>/flood`), and on the
    /// contacts it has (whichever side opened them) it closes and reopens the session pair every `floodSessionSeconds`.
    public var flooder = false
    /// When the adversaries start (simulated days; nil: a quarter of the workload).
    public var startDay: Double?
    /// Revoked device: seconds between its reconnects.
    public var revokedRetrySeconds = 60.0
    /// Revoked device: extra changes an hour it writes after its revocation (one visit each, log
    /// `<station>/revoked`), besides its workload changes (a backpack may write none for hours).
    public var revokedWritesPerHour = 6.0
    /// Bad relay: per frame it sends, probability of dropping it, of replaying an old frame first, of holding it.
    public var relayDrop = 0.05, relayReplay = 0.05, relayDelay = 0.2
    /// Bad relay: the longest hold (seconds).
    public var relayDelayMaxSeconds = 600.0
    /// Flooder: extra changes per hour, visits per change, seconds between session restarts.
    public var floodChangesPerHour = 60.0, floodEditsPerChange = 20, floodSessionSeconds = 60.0

    /// No adversaries.
    public init() {}

    /// The kinds, as named on the command line.
    public static let kinds = ["revoked", "equivocator", "bad-relay", "flooder"]

    /// From a comma-separated list of `kinds` ("all" for every one).
    public init(kinds list: String) throws {
        for k in list.split(separator: ",").map({ String($0).trimmingCharacters(in: .whitespaces) }) where !k.isEmpty {
            switch k {
            case "all": (revoked, equivocator, badRelay, flooder) = (true, true, true, true)
            case "revoked": revoked = true
            case "equivocator": equivocator = true
            case "bad-relay": badRelay = true
            case "flooder": flooder = true
            default: throw ScenarioError(file: "--adversaries", "unknown adversary \"\(k)\"; known: \(Self.kinds.joined(separator: ", ")), all")
            }
        }
    }

    /// Whether no adversary is on.
    public var isEmpty: Bool { !revoked && !equivocator && !badRelay && !flooder }

    /// One line: the adversaries that are on and their knobs.
    public var description: String {
        let g = { (d: Double) in String(format: "%.3g", d) }
        var on: [String] = []
        if revoked { on.append("revoked device (reconnects every \(g(revokedRetrySeconds)) s, \(g(revokedWritesPerHour)) extra changes/h)") }
        if equivocator { on.append("equivocating device") }
        if badRelay { on.append("bad relay (drop \(g(relayDrop)), replay \(g(relayReplay)), delay \(g(relayDelay)) up to \(g(relayDelayMaxSeconds)) s)") }
        if flooder { on.append("flooder (\(g(floodChangesPerHour)) changes/h of \(floodEditsPerChange) visits, sessions restarted every \(g(floodSessionSeconds)) s)") }
        if on.isEmpty { return "no adversaries" }
        return on.joined(separator: ", ") + (startDay.map { " from day \(g($0))" } ?? " from a quarter of the workload")
    }

    /// The swarm's draw for `seed` (`fieldsim swarm --adversaries`): each adversary on with probability one
    /// half, its rates drawn uniformly; from its own generator, so the seed's fault mix is unchanged.
    public init(swarmSeed seed: UInt64) {
        var r = SimRandom(seed: seed, 0xADE5_A001)
        revoked = r.unit() < 0.5
        equivocator = r.unit() < 0.5
        badRelay = r.unit() < 0.5
        flooder = r.unit() < 0.5
        revokedRetrySeconds = r.uniform(10, 600)
        relayDrop = r.uniform(0, 0.2)
        relayReplay = r.uniform(0, 0.2)
        relayDelay = r.uniform(0, 0.5)
        relayDelayMaxSeconds = r.uniform(1, 1_800)
        floodChangesPerHour = r.uniform(6, 120)
        floodEditsPerChange = 1 + r.int(30)
        floodSessionSeconds = r.uniform(10, 600)
        startDay = nil
    }
}

/// What the adversaries of one run did and whether the trust rules held (`AdversaryChecks.check`).
public struct AdversaryReport: Sendable {
    /// Breaches of a trust rule (empty: every rule held).
    public var failures: [String] = []
    /// Counts, in a fixed order (name, value).
    public var counts: [(String, Int)] = []
    /// Propagation figures (seconds): the revocation of the revoked device from HQ's write to each live node,
    /// the fork proof from the first detection to each reader of the equivocator's station. Nil when no node
    /// learned it.
    public var revocationLatency: (p50: Double, p95: Double, max: Double, informed: Int, of: Int)?
    /// See `revocationLatency`.
    public var forkProofLatency: (p50: Double, p95: Double, max: Double, informed: Int, of: Int)?
    /// The nodes that played each adversary (kind, node name).
    public var nodes: [(String, String)] = []

    /// The report as a `summary.json` section.
    public var json: JSON {
        func lat(_ l: (p50: Double, p95: Double, max: Double, informed: Int, of: Int)?) -> JSON {
            guard let l else { return .null }
            return .object([("p50_s", .number(l.p50)), ("p95_s", .number(l.p95)), ("max_s", .number(l.max)),
                            ("nodes_informed", .int(Int64(l.informed))), ("nodes", .int(Int64(l.of)))])
        }
        return .object([("nodes", .object(nodes.map { ($0.0, .string($0.1)) })),
                        ("counts", .object(counts.map { ($0.0, .int(Int64($0.1))) })),
                        ("revocation_latency", lat(revocationLatency)), ("fork_proof_latency", lat(forkProofLatency)),
                        ("trust_failures", .array(failures.map { .string($0) }))])
    }
}

/// The trust rules checked at the end of a run with adversaries (and, where cheap, at every event: the engine's
/// per-event check in `FieldSyncAgent.scan`):
/// 1. no node that holds the revocation of the revoked device holds a change of it dated after the cut-off;
/// 2. no node holds two conflicting changes of the equivocator's log (its held changes chain by `prevHash`), and
///    every node that refused a change of it as `forked` holds a fork proof;
/// 3. the fork proof reaches every live reader of the equivocator's station that the run's contacts (without
///    the adversaries' own, from their start) reached from the first detection at least `slack` before the end;
/// 4. relays hold no plaintext (the bad relay included) and every node holds only logs it is entitled to
///    (`Swarm.run` and the run command check these for every node).
public enum AdversaryChecks {
    /// Contacts without those of the adversary nodes after they started (the other paths).
    public static func honestContacts(_ sim: Simulation<FieldSyncAgent>) -> [ContactRecord] {
        let a = sim.agent
        var from: [(NodeIndex, SimTime)] = []
        if let d = a.revokedNode { from.append((d, a.revokedAt ?? a.adversaryStart)) }
        if let e = a.equivocatorNode { from.append((e, a.equivocation?.at ?? a.adversaryStart)) }
        if let r = a.badRelayNode { from.append((r, a.adversaryStart)) }
        guard !from.isEmpty else { return sim.contacts }
        return sim.contacts.filter { c in !from.contains { (n, t) in (c.spec.a == n || c.spec.b == n) && c.end > t } }
    }

    /// Checks the rules above on a finished run; `slack` as in `Swarm.run`'s delivery check.
    public static func check(_ sim: Simulation<FieldSyncAgent>, slack: SimTime = SimTime(Duration.hour)) -> AdversaryReport {
        let a = sim.agent
        let world = sim.context.world
        var out = AdversaryReport()
        guard !a.adversaries.isEmpty else { return out }
        let name = { (n: NodeIndex) in world.nodes[Int(n)].name }
        let live = (0..<world.count).map { !sim.isLost(NodeIndex($0)) }
        if let n = a.revokedNode { out.nodes.append(("revoked", name(n))) }
        if let n = a.equivocatorNode { out.nodes.append(("equivocator", name(n))) }
        if let n = a.badRelayNode { out.nodes.append(("bad_relay", name(n))) }
        if let n = a.flooderNode { out.nodes.append(("flooder", name(n))) }
        if let f = a.equivocation?.firstDetection { out.nodes.append(("first_fork_detection", name(f.node))) }
        func quantiles(_ v: [SimTime], of n: Int) -> (p50: Double, p95: Double, max: Double, informed: Int, of: Int)? {
            guard !v.isEmpty else { return nil }
            let s = v.sorted()
            let q = { (p: Double) in Double(s[min(s.count - 1, Int((p * Double(s.count)).rounded(.up)) - 1)]) / 1000 }
            return (q(0.5), q(0.95), Double(s.last!) / 1000, s.count, n)
        }
        // 1. The revoked device.
        if let d = a.revokedNode, let revoker = a.replicator(at: d) ?? a.revocations.first(where: { $0.node == d })?.lostDevice {
            let device = revoker.identity.id
            var holdingUninformed = 0
            if let cut = a.revokedCutoff {
                for n in 0..<world.count where live[n] && n != Int(d) {
                    guard let r = a.replicator(at: NodeIndex(n)), let logs = try? r.store.holdings() else { continue }
                    let knows = !r.trust.revocations.revocations(of: device).isEmpty
                    var after = 0
                    for (log, held) in logs where log.author == device {
                        for range in held.ranges {
                            after += ((try? r.store.changes(log, in: range)) ?? []).filter { $0.hlc.milliseconds > cut }.count
                        }
                    }
                    if after > 0 {
                        if knows {
                            out.failures.append("trust: \(name(NodeIndex(n))) holds the revocation of \(name(d)) and \(after) change(s) of it dated after the revocation")
                        } else {
                            holdingUninformed += 1
                        }
                    }
                }
            }
            var lat: [SimTime] = []
            var nodes = 0
            if let t = a.revocations.first(where: { $0.node == d }) {
                for n in 0..<world.count where live[n] && n != Int(d) {
                    nodes += 1
                    if let l = t.learned[n] { lat.append(l - t.at) }
                }
            }
            out.revocationLatency = quantiles(lat, of: nodes)
            out.counts += [("revoked_pairs_after_revocation", a.revokedPairs), ("revoked_pairs_authenticated", a.revokedPairsAuthenticated),
                           ("revoked_pairs_refused_revoked", a.revokedPairsRefused), ("revoked_changes_written_after", a.revokedChangesWritten),
                           ("revoked_changes_taken_by_uninformed_nodes", a.revokedChangesAccepted),
                           ("nodes_holding_revoked_changes_at_end_uninformed", holdingUninformed),
                           ("nodes_informed_of_revocation", lat.count), ("live_nodes", nodes)]
        }
        // 2 and 3. The equivocator.
        if let e = a.equivocation, let eq = a.equivocatorNode {
            var holdX = 0, holdY = 0, chainsChecked = 0
            for n in 0..<world.count where live[n] && n != Int(eq) {
                guard let r = a.replicator(at: NodeIndex(n)), let held = try? r.store.holdings(of: e.log) else { continue }
                for range in held.ranges {
                    guard let cs = try? r.store.changes(e.log, in: range) else { continue }
                    chainsChecked += 1
                    for i in 1..<max(1, cs.count) where cs[i].prevHash != cs[i - 1].hash {
                        out.failures.append("trust: \(name(NodeIndex(n))) holds conflicting changes of \(name(eq))'s log: #\(cs[i].seq) does not follow #\(cs[i - 1].seq)")
                    }
                }
                if held.contains(e.seq), let h = try? r.store.hash(e.log, seq: e.seq) {
                    if h.count >= 8, h[0..<8].reduce(UInt64(0), { $0 << 8 | UInt64($1) }) == e.otherTag { holdY += 1 } else { holdX += 1 }
                }
                if a.refusedForked[n], ((try? r.store.forks(of: e.log)) ?? []).isEmpty {
                    out.failures.append("trust: \(name(NodeIndex(n))) refused a change of \(name(eq))'s log as forked but holds no fork proof")
                }
            }
            let readers = (world.carried[Int(eq)].first.map { world.readers[Int($0)] } ?? []).filter { live[Int($0)] && $0 != eq && !a.isAdversary($0) }
            var lat: [SimTime] = []
            var unreached = 0, excused = 0
            if let first = e.firstDetection {
                let reach = Oracle(contacts: Swarm.checkedContacts(sim), nodes: world.count).earliestArrival(from: first.node, at: first.at)
                for n in readers {
                    if let p = e.proofAt[Int(n)] {
                        lat.append(p - first.at)
                    } else if reach[Int(n)] != SimTime.max, reach[Int(n)] + slack <= sim.now {
                        unreached += 1
                        if unreached <= 3 { out.failures.append("fork proof: \(name(n)) reads \(name(eq))'s station and holds no proof, though the contacts reached it from the first detection (\(name(first.node))) by day \(String(format: "%.3f", Double(reach[Int(n)]) / Double(Duration.day)))") }
                    } else {
                        excused += 1
                    }
                }
            }
            out.forkProofLatency = quantiles(lat, of: readers.count)
            let proofs = (0..<world.count).filter { live[$0] && a.replicator(at: NodeIndex($0)) != nil && $0 != Int(eq) && e.proofAt[$0] != nil }.count
            out.counts += [("equivocation_seq", Int(e.seq)), ("nodes_holding_branch_kept_by_author", holdX), ("nodes_holding_other_branch", holdY),
                           ("fork_detected", e.firstDetection == nil ? 0 : 1), ("nodes_holding_fork_proof", proofs),
                           ("readers_with_proof", lat.count), ("readers", readers.count), ("readers_unreached_excused", excused),
                           ("readers_unreached_breach", unreached), ("equivocator_chains_checked", chainsChecked)]
        } else if a.equivocatorNode != nil {
            out.counts.append(("equivocation_seq", 0))  // it wrote nothing after the start
        }
        if a.badRelayNode != nil {
            out.counts += [("relay_frames_dropped", a.relayDropped), ("relay_frames_replayed", a.relayReplayed),
                           ("relay_frames_held", a.relayHeld), ("relay_hold_total_s", Int(a.relayHeldMs / 1000))]
            if let r = a.badRelayNode, live[Int(r)], !a.recordState(at: r).isEmpty {
                out.failures.append("trust: the bad relay \(name(r)) holds readable records")
            }
        }
        if a.flooderNode != nil {
            out.counts += [("flood_changes_written", a.floodWrites), ("flood_bytes_written", a.floodBytes), ("flood_session_restarts", a.floodRestarts)]
        }
        return out
    }
}
