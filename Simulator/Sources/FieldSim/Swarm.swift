// The fault swarm (issue 14): `longnan-small` with the real protocol under a random fault mix drawn
// from each seed, and the safety and convergence invariants checked at the end of every run.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

/// The fault mix of one swarm seed: every fault knob the engine has, each switched on with probability
/// one half and its rate drawn from the seed (`SimRandom(seed: seed, 0x5A4A_12D0)`).
public struct SwarmMix: Sendable {
    /// The scenario's fault section as drawn.
    public var faults: FaultConfig
    /// Wired outages per link per 30 days, and their mean length in hours (scenario knobs of `longnan`).
    public var wiredOutagesPer30Days: Double, wiredOutageMeanHours: Double
    /// HQ receipts every this many hours (nil: none).
    public var receiptsEveryHours: Double?
    /// Adversaries (`fieldsim swarm --adversaries`: `AdversaryConfig(swarmSeed:)`, from a generator of their own,
    /// so the faults above are the same with and without them); empty otherwise.
    public var adversaries = AdversaryConfig()
    /// Store durability (`fieldsim swarm --power-loss`: `StoreDurability(swarmSeed:)`, from a generator of its
    /// own, so the faults above are the same with and without it); every store `FULL` otherwise.
    public var durability = StoreDurability()
    /// Epoch rotation (scenario section `keys`): after a revocation at once on half the seeds, after up to 6 h on
    /// the others; on schedule every 0.5-3 days on half the seeds. From a generator of its own, so the faults
    /// above are the same as before rotation was simulated.
    public var keys: KeysConfig

    /// Draws the mix of `seed`.
    public init(seed: UInt64) {
        var r = SimRandom(seed: seed, 0x5A4A_12D0)
        func maybe(_ lo: Double, _ hi: Double) -> Double { r.unit() < 0.5 ? 0 : r.uniform(lo, hi) }
        var f = FaultConfig()
        f.crashesPerDeviceYear = maybe(20, 300)
        f.crashDowntimeMinutes = [1, r.uniform(5, 360)]
        f.deviceLossPerYear = maybe(30, 300)
        f.partition = r.unit() < 0.5
        f.partitionDays = [0.1, r.uniform(0.2, 1.5)]
        f.clockSkewShare = maybe(0.05, 0.5)
        f.clockSkewMaxHours = r.uniform(0.05, 6)
        f.linkDuplicate = maybe(0.001, 0.05)
        f.linkReorder = maybe(0.001, 0.05)
        f.linkCorrupt = maybe(0.001, 0.05)
        faults = f
        wiredOutagesPer30Days = maybe(1, 30)
        wiredOutageMeanHours = r.uniform(0.2, 6)
        receiptsEveryHours = r.unit() < 0.5 ? nil : r.uniform(0.5, 6)
        var k = SimRandom(seed: seed, 0x6B65_7902)
        keys = KeysConfig(rotateAfterRevocation: true, rotateAfterRevocationSeconds: k.unit() < 0.5 ? 0 : k.uniform(60, 6 * 3_600),
                          rotateEveryDays: k.unit() < 0.5 ? nil : k.uniform(0.5, 3))
    }

    /// The scenario with this mix.
    public func apply(to file: ScenarioFile) -> ScenarioFile {
        var f = file
        f.faults = faults
        f.keys = keys
        f.longnan?.wiredOutagesPer30Days = wiredOutagesPer30Days
        f.longnan?.wiredOutageMeanHours = wiredOutageMeanHours
        return f
    }

    /// One line: the knobs that are on.
    public var description: String {
        let f = faults
        var on: [String] = []
        let g = { (d: Double) in String(format: "%.3g", d) }
        if let c = f.crashesPerDeviceYear, c > 0 { on.append("crashes \(g(c))/device-year (down 1-\(g(f.crashDowntimeMinutes![1])) min)") }
        if let l = f.deviceLossPerYear, l > 0 { on.append("device loss \(g(l))/year") }
        if f.partition == true { on.append("partition 0.1-\(g(f.partitionDays![1])) days") }
        if let s = f.clockSkewShare, s > 0 { on.append("clock skew \(g(s)) of devices within ±\(g(f.clockSkewMaxHours!)) h") }
        if let p = f.linkDuplicate, p > 0 { on.append("duplicate \(g(p))") }
        if let p = f.linkReorder, p > 0 { on.append("reorder \(g(p))") }
        if let p = f.linkCorrupt, p > 0 { on.append("corrupt \(g(p))") }
        if wiredOutagesPer30Days > 0 { on.append("wired outages \(g(wiredOutagesPer30Days))/30 days (mean \(g(wiredOutageMeanHours)) h)") }
        if let h = receiptsEveryHours { on.append("receipts every \(g(h)) h") }
        if !adversaries.isEmpty { on.append("adversaries: \(adversaries.description)") }
        if !durability.normal.isEmpty { on.append(durability.description) } else if let q = durability.relayQuotaBytes { on.append("relay quota \(q) bytes") }
        if let c = f.crashesPerInfraYear, c > 0 { on.append("crashes of hq/counties/stations \(g(c))/node-year (down \(g(f.infraCrashDowntimeMinutes![0]))-\(g(f.infraCrashDowntimeMinutes![1])) min)") }
        if KeyRotation(keys) != KeyRotation() { on.append(KeyRotation(keys).description) }
        return on.isEmpty ? "no faults" : on.joined(separator: ", ")
    }
}

/// What one swarm seed found.
public struct SwarmResult: Sendable {
    /// The seed.
    public var seed: UInt64
    /// The mix.
    public var mix: SwarmMix
    /// Invariant breaches (empty: the seed passed).
    public var failures: [String]
    /// The run's trace hash.
    public var traceHash: UInt64
    /// Counts of what the run exercised (name, value), in a fixed order.
    public var counts: [(String, Int)]
    /// The failures that breach a safety invariant (all but "not delivered", which is liveness).
    public var safetyFailures: [String] { failures.filter { !$0.hasPrefix("not delivered") } }
    /// The run's files (`summary.json`, `timeseries.csv`, ...), when asked for (`fieldsim swarm --seed N --out DIR`).
    public var files: [(String, String)] = []
}

/// Running the swarm.
public enum Swarm {
    /// The command that reproduces seed `seed` (`--days` only when not the default).
    public static func reproduce(_ seed: UInt64, days: Double?, adversaries: Bool = false, powerLoss: Bool = false, infra: Bool = false) -> String {
        "SWIFT_DETERMINISTIC_HASHING=1 swift run -c release fieldsim swarm --seed \(seed)" + (days.map { " --days \(JSON.format($0))" } ?? "")
            + (adversaries ? " --adversaries" : "") + (powerLoss ? " --power-loss" : "") + (infra ? " --infra" : "")
    }

    /// The contacts the liveness checks' oracle runs on: the run's contacts (with adversaries, only those without
    /// them from their start: `AdversaryChecks.honestContacts`), less the stretches whose only session pair the
    /// link faults killed (`FieldSyncAgent.faultKilledPairs`: a duplicated, corrupted or reordered frame closes a
    /// Noise session, and the next pair comes only after the driver's backoff). Swarm seed 2919 (2 days): a member's
    /// only contact with a holder of its station's new key ran 12 minutes over a link that duplicated 4.65 % and
    /// corrupted 4.67 % of frames; each of the 12 pairs the driver opened needed about 12 frames to reach the batch
    /// with the grant, and a fault killed every one. No protocol crosses a contact whose every session a fault
    /// closes. What stays in (`FieldSyncAgent.FaultKilledPair`): a pair that failed for another reason or more than
    /// 60 s after the fault (a stall), contact time on which no pair was opened, and waits longer than the driver's.
    public static func checkedContacts(_ sim: Simulation<FieldSyncAgent>) -> [ContactRecord] {
        let a = sim.agent
        let contacts = a.adversaries.isEmpty ? sim.contacts : AdversaryChecks.honestContacts(sim)
        guard !a.faultKilledPairs.isEmpty else { return contacts }
        struct Key: Hashable { var a: NodeIndex, b: NodeIndex, link: LinkClass }
        var killed: [Key: [(from: SimTime, to: SimTime)]] = [:]
        for k in a.faultKilledPairs { killed[Key(a: k.a, b: k.b, link: k.linkClass), default: []].append((k.from, k.to)) }
        var out: [ContactRecord] = []
        out.reserveCapacity(contacts.count)
        for c in contacts {
            guard let stretches = killed[Key(a: c.spec.a, b: c.spec.b, link: c.spec.linkClass)] else {
                out.append(c)
                continue
            }
            var start = c.start
            for k in stretches.sorted(by: { $0.from < $1.from }) where k.to > c.start && k.from < c.end {
                if k.from > start { out.append(ContactRecord(start: start, end: k.from, spec: c.spec)) }
                start = max(start, k.to)
            }
            if c.end > start { out.append(ContactRecord(start: start, end: c.end, spec: c.spec)) }
        }
        return out
    }

    /// Delivery (check 3 of `run`): every change a live node holds is held by every live reader of its station,
    /// unless the run's contacts reached that reader less than `slack` before the end (the oracle, with each
    /// node's clock: see `run`). With adversaries, their nodes are not readers that must hold anything, their
    /// changes no honest node may take are left out, and the oracle uses only the contacts without the
    /// adversaries from their start (`AdversaryChecks.honestContacts`: liveness is owed only along the other
    /// paths).
    ///
    /// What the trust rules and the stores' limits take out, each pair counted under its reason:
    /// - `revoked`: a change its author wrote before a revocation but dated after the revocation's cut-off (a clock
    ///   that ran ahead of HQ's; `FieldSyncAgent.RevocationTrack.datedAfter`) is refused and quarantined by every node
    ///   that learns the revocation (`TrustStore.isRevoked`): it is not owed to a reader that learned it, and the
    ///   paths to the others pass only through nodes that had not learned it yet (`Oracle`, `notAfter`);
    /// - `fullRelay`: a relay box whose store refused the change for room (`ChangeRefusal.quota`) and does not hold it
    ///   at the end carries it on no path from the moment its store came into the state that refused it first (its
    ///   last commit before that refusal that stored, evicted or quarantined anything: `relayStoreSince`; a full box
    ///   takes nothing new until HQ's receipts free room, and would have refused it at any moment since);
    /// - `evictedRelay`: a relay box whose store evicted the change's bytes to make room (HQ had receipted it) carries
    ///   it on no path from the eviction (it keeps the seq, not the change);
    /// - `faultKilled`: the oracle runs on `checkedContacts` (no contact time whose only session pair the link faults
    ///   killed); a pair the run's whole contacts reached in time and those did not is counted here.
    /// A pair is counted under a reason only if the oracle reaches it in time without that rule and not with it.
    /// Returns the pairs missing, the pairs excused (no path in time), up to three examples, and the pairs excused by
    /// each rule above.
    public static func deliveryCheck(_ sim: Simulation<FieldSyncAgent>, slack: SimTime = SimTime(Duration.hour))
        -> (missing: Int, beyondReach: Int, examples: [String], revoked: Int, fullRelay: Int, evictedRelay: Int, faultKilled: Int) {
        let world = sim.context.world
        let a = sim.agent
        let ch = sim.context.changes
        let live = (0..<world.count).map { !sim.isLost(NodeIndex($0)) && !a.isAdversary(NodeIndex($0)) }
        let holders = (0..<world.count).map { !sim.isLost(NodeIndex($0)) }
        let oracle = Oracle(contacts: checkedContacts(sim), nodes: world.count)
        // The run's contacts with the fault-killed stretches left in, when there are any (for `faultKilled`).
        let whole = a.faultKilledPairs.isEmpty ? nil
            : Oracle(contacts: a.adversaries.isEmpty ? sim.contacts : AdversaryChecks.honestContacts(sim), nodes: world.count)
        let clocks = sim.context.clockSkew
        let skewed = clocks.contains { $0 != 0 }
        var missing = 0, beyondReach = 0, revokedPairs = 0, fullRelayPairs = 0, evictedRelayPairs = 0, faultKilledPairs = 0
        var examples: [String] = []
        for c in 0..<ch.count {
            let ci = ChangeIndex(c)
            guard !a.isAdversarialChange(ci), (0..<world.count).contains(where: { holders[$0] && a.holds(ci, at: NodeIndex($0)) }) else { continue }
            var reach: [SimTime]?, wholeReach: [SimTime]?
            // The trust rules' and the quotas' limits on who carries the change (nil: none).
            let revocation = a.revocationDating(ci).map { a.revocations[$0] }
            var limits: [SimTime]?
            if let r = revocation {
                limits = r.learned.map { $0 ?? .max }
            }
            for (node, at) in a.quotaRefusals(of: ci) where !a.holds(ci, at: node) {
                if limits == nil { limits = [SimTime](repeating: .max, count: world.count) }
                limits![Int(node)] = min(limits![Int(node)], at)
            }
            let refusalLimits = limits
            for (node, at) in a.quotaEvictions(of: ci) {
                if limits == nil { limits = [SimTime](repeating: .max, count: world.count) }
                limits![Int(node)] = min(limits![Int(node)], at)
            }
            for n in world.readers[Int(ch.domain[c])] where live[Int(n)] && !a.holds(ci, at: n) {
                if let r = revocation, r.learned[Int(n)] != nil {
                    revokedPairs += 1  // the reader learned the revocation: it must not hold the change
                    continue
                }
                // When the contacts of `oracle` bring the change to `n` (`reach`: from its author, per change).
                func arrival(_ oracle: Oracle, _ reach: inout [SimTime]?) -> SimTime {
                    if reach == nil {
                        // The change's date is its author's clock when written (its HLC can run a few minutes
                        // further ahead, never more than the skew tolerance: taking the receiver's acceptance at
                        // that date, without the tolerance, errs towards excusing).
                        let dated = ch.createdAt[c] + clocks[Int(ch.author[c])]
                        reach = oracle.earliestArrival(from: ch.author[c], at: ch.createdAt[c],
                                                       notBefore: skewed ? clocks.map { dated - $0 } : nil, notAfter: limits)
                    }
                    guard a.wasLostToPower(ci) else { return reach![Int(n)] }
                    // A node lost it on a power loss (one on the paths from the author, or the reader): the paths
                    // that count start at the nodes that hold it now, when each came to hold it, pass through no
                    // node that lost it on a power loss (it may have lost it before passing it on), and reach a
                    // reader that lost it only after it lost it.
                    let dated = ch.createdAt[c] + clocks[Int(ch.author[c])]
                    var accept = skewed ? clocks.map { dated - $0 } : [SimTime](repeating: 0, count: world.count)
                    for k in a.powerLosers(of: ci) where k != n { accept[Int(k)] = .max }
                    let after = a.lostToPowerAt(ci, node: n) ?? 0
                    var best = SimTime.max
                    for h in 0..<world.count where holders[h] && a.holds(ci, at: NodeIndex(h)) {
                        guard let t = a.acquired(ci, at: NodeIndex(h)) else { continue }
                        best = min(best, oracle.earliestArrival(from: NodeIndex(h), at: max(t, after), notBefore: accept, notAfter: limits)[Int(n)])
                    }
                    return best
                }
                let at = arrival(oracle, &reach)
                guard at != SimTime.max, at + slack <= sim.now else {
                    if limits != nil, !a.wasLostToPower(ci) {
                        // Which rule excused it: without the limits, would the contacts have reached it in time?
                        let dated = ch.createdAt[c] + clocks[Int(ch.author[c])]
                        let free = oracle.earliestArrival(from: ch.author[c], at: ch.createdAt[c],
                                                          notBefore: skewed ? clocks.map { dated - $0 } : nil)[Int(n)]
                        if free != SimTime.max, free + slack <= sim.now {
                            if revocation != nil {
                                revokedPairs += 1
                            } else {
                                // Without the evictions, would the refusals alone have kept it from the reader?
                                let refusedOnly = refusalLimits.map {
                                    oracle.earliestArrival(from: ch.author[c], at: ch.createdAt[c],
                                                           notBefore: skewed ? clocks.map { dated - $0 } : nil, notAfter: $0)[Int(n)]
                                } ?? free
                                if refusedOnly != SimTime.max, refusedOnly + slack <= sim.now { evictedRelayPairs += 1 } else { fullRelayPairs += 1 }
                            }
                            continue
                        }
                    }
                    if let whole {
                        let w = arrival(whole, &wholeReach)
                        if w != SimTime.max, w + slack <= sim.now {
                            faultKilledPairs += 1
                            continue
                        }
                    }
                    beyondReach += 1
                    continue
                }
                missing += 1
                if examples.count < 3 {
                    let heldBy = (0..<world.count).filter { holders[$0] && a.holds(ci, at: NodeIndex($0)) }.map { world.nodes[$0].name }
                    let lostBy = (0..<world.count).filter { a.lostToPowerAt(ci, node: NodeIndex($0)) != nil }.map { world.nodes[$0].name }
                    examples.append("change \(c) (by \(world.nodes[Int(ch.author[c])].name), day \(String(format: "%.3f", Double(ch.createdAt[c]) / Double(Duration.day)))) not at \(world.nodes[Int(n)].name), which the contacts reached by day \(String(format: "%.3f", Double(at) / Double(Duration.day))) (held by \(heldBy.joined(separator: " ")); lost on power loss by \(lostBy.isEmpty ? "none" : lostBy.joined(separator: " ")))")
                }
            }
        }
        return (missing, beyondReach, examples, revokedPairs, fullRelayPairs, evictedRelayPairs, faultKilledPairs)
    }

    /// The members of `keys.behind` that the run's contacts reached from HQ after the newest grant of their station
    /// at least `slack` before the end (the oracle, with each node's clock, as `deliveryCheck`): they should hold it.
    /// A relay box whose store refused the grant's change for room and does not hold it at the end carries it on no
    /// path from the moment its store came into the state that refused it first (`deliveryCheck`'s `fullRelay`: grants
    /// are control changes, never evicted, but refused like any change when the box is full of changes HQ has not
    /// receipted). The oracle runs on `checkedContacts` (no contact time whose only session pair the link faults
    /// killed). Returns those (as text), the number excused (no path in time), and of those the number the
    /// full-relay rule excused (reached in time without it, not with it) and the number only the fault-killed
    /// pairs excused (reached in time over the run's whole contacts).
    public static func keysBehindCheck(_ sim: Simulation<FieldSyncAgent>, _ keys: KeyCheck, slack: SimTime = SimTime(Duration.hour))
        -> (missing: [String], beyondReach: Int, fullRelay: Int, faultKilled: Int) {
        let a = sim.agent
        let world = sim.context.world
        guard !keys.behind.isEmpty, let hq = a.hq else { return ([], keys.behind.count, 0, 0) }
        let oracle = Oracle(contacts: checkedContacts(sim), nodes: world.count)
        let whole = a.faultKilledPairs.isEmpty ? nil
            : Oracle(contacts: a.adversaries.isEmpty ? sim.contacts : AdversaryChecks.honestContacts(sim), nodes: world.count)
        let clocks = sim.context.clockSkew
        let skewed = clocks.contains { $0 != 0 }
        var missing: [String] = []
        var beyond = 0, fullRelay = 0, faultKilled = 0
        for b in keys.behind {
            guard let rot = a.rotations.last(where: { $0.domain == b.domain && $0.epoch == b.newest }) else { continue }
            let dated = rot.at + clocks[Int(hq)]
            let accept = skewed ? clocks.map { dated - $0 } : nil
            var limits: [SimTime]?
            for (node, since) in a.grantQuotaRefusals(rot.log, seq: rot.seq) {
                guard (try? a.replicator(at: node)?.store.holdings(of: rot.log).contains(rot.seq)) != true else { continue }
                if limits == nil { limits = [SimTime](repeating: .max, count: world.count) }
                limits![Int(node)] = min(limits![Int(node)], since)
            }
            let at = oracle.earliestArrival(from: hq, at: rot.at, notBefore: accept, notAfter: limits)[Int(b.node)]
            if at != SimTime.max, at + slack <= sim.now {
                missing.append("\(world.nodes[Int(b.node)].name) holds \(world.domainNames[Int(b.domain)])#\(b.held), not #\(b.newest) (issued at day \(String(format: "%.3f", Double(rot.at) / Double(Duration.day))), reachable by day \(String(format: "%.3f", Double(at) / Double(Duration.day))))")
            } else {
                beyond += 1
                if limits != nil {
                    let free = oracle.earliestArrival(from: hq, at: rot.at, notBefore: accept)[Int(b.node)]
                    if free != SimTime.max, free + slack <= sim.now {
                        fullRelay += 1
                        continue
                    }
                }
                if let w = whole?.earliestArrival(from: hq, at: rot.at, notBefore: accept, notAfter: limits)[Int(b.node)],
                   w != SimTime.max, w + slack <= sim.now {
                    faultKilled += 1
                }
            }
        }
        return (missing, beyond, fullRelay, faultKilled)
    }

    /// Runs `longnan-small` (`base`) under `mix` as seed `seed` of the swarm does, without the checks (`run` checks;
    /// tests use the simulation to look inside a seed). Returns the simulation, the scenario file with the mix and the scenario.
    public static func simulate(seed: UInt64, mix: SwarmMix, base: ScenarioFile, path: String) throws
        -> (sim: Simulation<FieldSyncAgent>, file: ScenarioFile, scenario: any Scenario) {
        let file = mix.apply(to: base)
        try file.validate(file: "\(base.name) (swarm seed \(seed))")
        let scen = try makeScenario(file, seed: seed, path: path)
        var options = RunOptions(sampleInterval: Duration.hour, snapshotAt: nil, recordContacts: true, oracleSampleEvery: file.defaultOracleEvery)
        options.linkFaults = LinkFaults(file.faults, seed: seed)
        let sim = runFieldSync(scenario: scen, seed: seed, crypto: .standIn,
                               receiptInterval: mix.receiptsEveryHours.map { SimTime($0 * 3_600_000) }, adversaries: mix.adversaries,
                               durability: mix.durability, keyRotation: KeyRotation(file.keys), options: options)
        return (sim, file, scen)
    }

    /// Runs seed `seed` of the swarm on `base` (normally `longnan-small`) with the `fieldsync` agent and
    /// stand-in crypto, and checks at the end:
    /// 1. the engine's per-event invariant (every replica holds at (log, seq) exactly what its author wrote);
    /// 2. no divergence: the live readers of a station that hold all of its changes hold identical records;
    /// 3. nothing lost that was acknowledged, and delivery: a change any live node holds is held by every
    ///    live reader of its station (a change only a lost device held was never acknowledged), unless the
    ///    run's contacts (`Oracle`) reached that reader less than 1 h before the end. With clock skew, a node
    ///    refuses a change dated ahead of its clock (`timestampInFuture`) until its clock passes the change's
    ///    date: the oracle lets the change reach each node only from then (`notBefore`), and carry on from
    ///    there only after that (swarm finding 3: a reader whose clock runs behind and whose last contact
    ///    with a holder came before its clock caught up cannot have the change, whatever the protocol does);
    /// 4. entitlement: no node holds a log its certificate may not hold; the oracle is never beaten;
    /// 5. no relay reads plaintext: relay boxes hold no records (they cannot open what they carry);
    /// 6. trust: each lost (revoked) device then writes a change dated after its revocation; every live
    ///    node that learned the revocation refuses the device's session (`revoked`) and refuses to store
    ///    that change when it is handed over directly (as a node that had not learned it would forward it).
    public static func run(seed: UInt64, base: ScenarioFile, path: String, keepFiles: Bool = false, adversaries: Bool = false,
                           powerLoss: Bool = false, infra: Bool = false) throws -> SwarmResult {
        var mix = SwarmMix(seed: seed)
        if adversaries {
            mix.adversaries = AdversaryConfig(swarmSeed: seed)
        }
        if powerLoss {
            mix.durability = StoreDurability(swarmSeed: seed)
        }
        if infra { mix.drawInfra(seed: seed) }
        let (sim, file, scen) = try simulate(seed: seed, mix: mix, base: base, path: path)
        var failures: [String] = []
        if let v = sim.invariantViolation { failures.append("engine invariant: \(v)") }
        let report = fieldSyncReport(sim, scenarioName: file.name, seed: seed, derived: scen.derivedParameters)
        let h = report.headline
        let world = sim.context.world
        let a = sim.agent
        let ch = sim.context.changes
        let live = (0..<world.count).map { !sim.isLost(NodeIndex($0)) }
        if h.divergedStations > 0 { failures.append("divergence: \(h.divergedStations) station(s) whose complete replicas hold different records") }
        if h.oracle.violations > 0 { failures.append("oracle beaten on \(h.oracle.violations) sampled pairs") }
        // 3. Held by a live node => held by every live reader, unless the run's own contacts gave no path
        //    that arrived `slack` before the end (the oracle: earliest arrival over the contacts that ran).
        let slack = SimTime(Duration.hour)
        let (missing, beyondReach, examples, revokedPairs, fullRelayPairs, evictedRelayPairs, faultKilledPairs) = deliveryCheck(sim, slack: slack)
        if missing > 0 { failures.append("not delivered: \(missing) (change, live reader) pairs missing a change a live node holds, though the run's contacts reached the reader at least \(JSON.format(Double(slack) / 3_600_000)) h before the end, e.g. \(examples.joined(separator: "; "))") }
        // 4. Entitlement, every node and every log.
        for n in 0..<world.count where live[n] && !a.holdsOnlyEntitledLogs(NodeIndex(n)) {
            failures.append("entitlement: \(world.nodes[n].name) holds a log its certificate may not hold")
        }
        // 5. Relays hold no plaintext.
        var relayChanges = 0
        for n in 0..<world.count where live[n] && world.nodes[n].nodeClass == .relay {
            relayChanges += a.storedChanges(at: NodeIndex(n))
            let records = a.recordState(at: NodeIndex(n))
            if !records.isEmpty { failures.append("relay \(world.nodes[n].name) holds \(records.count) readable records") }
        }
        // 6. Revoked devices.
        var refusedSessions = 0, refusedChanges = 0, uninformed = 0
        let at = FieldSyncAgent.epochMs + UInt64(sim.now) + 60_000
        // (The revoked device that keeps going is checked by `AdversaryChecks` on its own changes: its clock may
        // run ahead of the test change's date below.)
        for (k, t) in a.revocations.enumerated() where t.node != a.revokedNode {
            let thief = t.lostDevice
            guard let scope = thief.identity.certificate.scopes.first else { continue }
            let id = RecordID(ID128(high: 0x7417_EF00_0000_0000, low: UInt64(k)))
            let edit = Visit.create(id: id, scope: scope, author: thief.identity.id, hlc: HLCTimestamp(milliseconds: at, counter: 0),
                                    subject: "after revocation", visitor: "thief", visitType: .returningMigrantWorker, visitedAt: Int64(at),
                                    location: Location(latitude: 33.4, longitude: 104.9), outcome: "written after the device was revoked")
            let change: Change
            do { change = try thief.write([edit], scope: scope, priority: .low, now: at) } catch {
                failures.append("revoked device \(world.nodes[Int(t.node)].name) could not write its test change: \(error)")
                continue
            }
            let log = LogID(author: thief.identity.id, scope: scope)
            for n in 0..<world.count where live[n] && n != Int(t.node) {
                guard t.learned[n] != nil, let honest = a.replicator(at: NodeIndex(n)) else {
                    uninformed += 1
                    continue
                }
                let name = world.nodes[n].name
                let s1 = SyncSession(initiator: true, replicator: thief,
                                     configuration: SessionConfiguration(network: FieldSyncAgent.network, salt: Array(repeating: 1, count: 16)), now: at)
                let s2 = SyncSession(initiator: false, replicator: honest,
                                     configuration: SessionConfiguration(network: FieldSyncAgent.network, salt: Array(repeating: 2, count: 16)), now: at)
                var toHonest = s1.start().frames, toThief = s2.start().frames
                for _ in 0..<8 where !(toHonest.isEmpty && toThief.isEmpty) {
                    for f in toHonest { toThief += s2.receive(f.bytes, now: at).frames }
                    toHonest = []
                    for f in toThief { toHonest += s1.receive(f.bytes, now: at).frames }
                    toThief = []
                }
                if s2.failure?.code == .revoked { refusedSessions += 1 } else {
                    failures.append("trust: \(name) learned the revocation of \(world.nodes[Int(t.node)].name) but did not refuse its session (\(s2.failure.map { "\($0.code)" } ?? "no failure"))")
                }
                _ = try? honest.ingest([change], certificates: [thief.identity.certificate], now: at)
                if (try? honest.store.holdings(of: log).contains(change.header.seq)) == true {
                    failures.append("trust: \(name) stored a change the revoked \(world.nodes[Int(t.node)].name) wrote after its revocation")
                } else {
                    refusedChanges += 1
                }
            }
        }
        // 7. Adversaries: the trust rules (`AdversaryChecks`).
        let adv = AdversaryChecks.check(sim, slack: slack)
        failures += adv.failures
        // 8. Durability: what each live store holds is what the run says it kept; changes lost for good only where
        //    every node that held them lost them (power loss of a `normal` store, device loss); nothing HQ
        //    receipted missing at HQ; no revocation forgotten over a power loss (a commit that changes what a node
        //    trusts is synced at once, `CommitBatch.mustBeDurable(after:)`).
        let dur = durabilityCheck(sim)
        failures += dur.failures
        if a.quarantinedBeforeCutoff > 0 {
            failures.append("trust: \(a.quarantinedBeforeCutoff) held change(s) left a store when it learned a revocation though not dated after its cut-off")
        }
        if a.revocationsForgotten > 0 {
            failures.append("trust: \(a.revocationsForgotten) revocation(s) forgotten by a node whose store lost them over a power loss")
        }
        // 9. Keys (docs/simulator.md, "Key grants and epoch rotation"): no revoked device holds a key of an epoch
        //    issued after its revocation; no member holds a change it cannot open while it holds the newest epoch of
        //    its station; every live member holds the newest epoch of its stations unless the run's contacts gave
        //    no path from HQ, after the grant, that arrived `slack` before the end.
        let keys = keyCheck(sim)
        failures += keys.revokedHoldNewKeys.map { "trust: \($0)" } + keys.unreadableThoughCurrent.map { "keys: \($0)" }
        let keysBehind = keysBehindCheck(sim, keys, slack: slack)
        if !keysBehind.missing.isEmpty {
            failures.append("keys: \(keysBehind.missing.count) (member, station) pair(s) without the newest epoch though the contacts reached the member from HQ in time, e.g. \(keysBehind.missing.prefix(3).joined(separator: "; "))")
        }
        let m = sim.metrics
        let base: [(String, Int)] = [
            ("changes", ch.count), ("contacts", h.contacts), ("session_pairs", a.sessionsStarted), ("session_pairs_failed_or_cut", a.sessionsFailed),
            ("contacts_cut_mid_transfer", m.contactsCut), ("frames_duplicated", m.linkDuplicated), ("frames_reordered", m.linkReordered),
            ("frames_corrupted", m.linkCorrupted), ("devices_revoked", a.revocations.count), ("revoked_sessions_refused", refusedSessions),
            ("post_revocation_changes_refused", refusedChanges), ("live_nodes_not_informed_of_a_revocation", uninformed),
            ("changes_held_by_relays", relayChanges), ("pairs_missing_no_path_in_time", beyondReach), ("receipts_written", a.receiptsWritten), ("deferred_retries", a.deferredRetries),
            ("idle_timeout_cuts", a.pairEnds.reduce(0) { $0 + $1[FieldSyncAgent.PairEnd.idleTimeout.rawValue] }),
            ("peer_gone_cuts", a.pairEnds.reduce(0) { $0 + $1[FieldSyncAgent.PairEnd.peerGone.rawValue] }),
            ("key_rotations", a.rotations.count), ("members_behind_newest_epoch_no_path_in_time", keysBehind.beyondReach),
            ("changes_unreadable_at_members", keys.unreadable),
            ("changes_dated_after_their_authors_revocation", a.revocations.reduce(0) { $0 + $1.datedAfter.count }),
            ("held_changes_quarantined_for_a_revocation", a.quarantinedForRevocation),
            ("pairs_missing_revoked", revokedPairs), ("pairs_missing_only_through_full_relays", fullRelayPairs),
            ("pairs_missing_only_through_relays_that_evicted_it", evictedRelayPairs),
            ("members_behind_only_through_full_relays", keysBehind.fullRelay),
            ("session_pairs_killed_by_link_faults", a.faultKilledPairs.count),
            ("pairs_missing_only_through_fault_killed_sessions", faultKilledPairs),
            ("members_behind_only_through_fault_killed_sessions", keysBehind.faultKilled),
        ] + (adversaries ? adversaryCounts(adv) : [])
        let infraPart: [(String, Int)] = infra ? infraCounts(sim) : []
        let counts: [(String, Int)] = base + infraPart
            + (powerLoss ? [("crashes", a.crashes), ("power_losses", a.powerLosses), ("commits_lost", a.commitsLost),
                            ("changes_lost_by_a_store", a.changesLost), ("changes_lost_for_good", dur.lostForGood.count),
                            ("of_which_only_their_author_held", dur.lostForGood.filter(\.onlyAuthor).count),
                            ("revocations_forgotten", a.revocationsForgotten), ("trust_syncs", a.trustSyncs)] : [])
        var result = SwarmResult(seed: seed, mix: mix, failures: failures, traceHash: sim.traceHash, counts: counts)
        if keepFiles {
            result.files = [("summary.json", report.summary.render() + "\n"), ("timeseries.csv", report.seriesCSV)]
                + report.charts.filter { $0.0.hasSuffix(".csv") }
        }
        return result
    }

    /// Runs seeds `first ..< first + count` on `threads` threads; results in seed order (independent of
    /// the thread count). `done` is called after each seed, under a lock.
    public static func run(first: UInt64, count: Int, days: Double?, threads: Int, keepFiles: Bool = false, adversaries: Bool = false,
                           powerLoss: Bool = false, infra: Bool = false, done: (@Sendable (SwarmResult) -> Void)? = nil) throws -> [SwarmResult] {
        var base = try ScenarioFile.load(path: ShippedScenarios.resolve("longnan-small"))
        if let d = days { base = base.withDays(d) }
        let path = try ShippedScenarios.resolve("longnan-small")
        let file = base
        return try parallelMap(count, threads: threads) { i in
            let r = try run(seed: first + UInt64(i), base: file, path: path, keepFiles: keepFiles, adversaries: adversaries, powerLoss: powerLoss,
                            infra: infra)
            return r
        } done: { r in done?(r) }
    }
}

extension Swarm {
    /// The adversary counts of a swarm seed, the same names in every seed (0 for an adversary not drawn), so
    /// that the swarm's totals add up by position.
    static func adversaryCounts(_ r: AdversaryReport) -> [(String, Int)] {
        let names = ["revoked_pairs_after_revocation", "revoked_pairs_authenticated", "revoked_pairs_refused_revoked",
                     "revoked_changes_written_after", "revoked_changes_taken_by_uninformed_nodes", "fork_detected",
                     "nodes_holding_fork_proof", "readers_unreached_excused", "relay_frames_dropped", "relay_frames_replayed",
                     "relay_frames_held", "flood_changes_written", "flood_session_restarts"]
        return names.map { n in (n, r.counts.first { $0.0 == n }?.1 ?? 0) }
    }
}

/// A change no live node holds at the end of a run (`Swarm.durabilityCheck`).
public struct LostChange: Sendable {
    /// The change.
    public var change: ChangeIndex
    /// Nodes that held it (the author included) and lost it since.
    public var holders: Int
    /// Its author was the only node that ever held it (it lost it before any peer took a copy).
    public var onlyAuthor: Bool
    /// Why, in words.
    public var why: String
}

extension StoreDurability {
    /// The swarm's durability draw for `seed` (`fieldsim swarm --power-loss`; `SimRandom(seed, 0x5A4A_12D1)`): with
    /// probability one half, each of relay boxes, vehicles and backpack units runs `synchronous = NORMAL` with
    /// probability one half (relay boxes when none was drawn), with a checkpoint every 5-300 commits;
    /// otherwise every store `FULL`.
    public init(swarmSeed seed: UInt64) {
        var r = SimRandom(seed: seed, 0x5A4A_12D1)
        guard r.unit() >= 0.5 else {
            self.init()
            return
        }
        var classes = [NodeClass.relay, .vehicle, .backpack].filter { _ in r.unit() < 0.5 }
        if classes.isEmpty { classes = [.relay] }
        self.init(normal: classes, checkpointEveryCommits: 5 + r.int(296))
    }
}

extension Swarm {
    /// Check 8 of `run`, durability under power loss. "Nothing lost": a change a node acknowledged (stored)
    /// stays in the run as long as one live node holds it, and reconciliation brings it back to whoever lost
    /// it (the delivery check covers that); a change is lost for good only when every node that ever held it
    /// lost it: a `normal` store that lost power before any peer took a copy (above all its author, whose
    /// seq guard then skips the lost seqs: the log keeps a gap, never a fork), or a lost device. Checked:
    /// 1. each live store holds each change exactly as often as the run's record says (nodes that took it
    ///    minus those that lost it: `FieldSyncAgent.holderRecord`), read from the stores themselves, so a
    ///    store that lost a change any other way (a `FULL` store, an eviction) fails the run;
    /// 2. nothing HQ receipted is missing from HQ's store (nodes evict receipted changes under their quota);
    /// 3. lost for good: reported with why (not a failure when the model explains it).
    public static func durabilityCheck(_ sim: Simulation<FieldSyncAgent>) -> (failures: [String], lostForGood: [LostChange]) {
        let world = sim.context.world
        let a = sim.agent
        let ch = sim.context.changes
        var count = [Int32](repeating: 0, count: ch.count)
        for n in 0..<world.count where !sim.isLost(NodeIndex(n)) {
            for c in a.storeHeldChanges(at: NodeIndex(n)) { count[Int(c)] += 1 }
        }
        var failures: [String] = []
        var mismatched: [String] = []
        var lost: [LostChange] = []
        for c in 0..<ch.count where !a.isAdversarialChange(ChangeIndex(c)) {
            let (holders, losses) = a.holderRecord(ChangeIndex(c))
            if Int(count[c]) != holders - losses {
                if mismatched.count < 3 { mismatched.append("change \(c) (by \(world.nodes[Int(ch.author[c])].name)): \(count[c]) live stores hold it, the run's record says \(holders - losses) (\(holders) took it, \(losses) lost it)") }
                mismatched.append("")
                continue
            }
            guard holders > 0, count[c] == 0 else { continue }
            let author = ch.author[c]
            let authorLost = a.lostToPowerAt(ChangeIndex(c), node: author) != nil
            let onlyAuthor = holders == 1 && authorLost
            let why = a.revocationDating(ChangeIndex(c)) != nil ? "dated after its author's revocation: quarantined by every live node that held it"
                : sim.isLost(author) && holders == 1 ? "only its author held it, and the device was lost"
                : onlyAuthor ? "only its author held it, and lost it on a power loss (synchronous=NORMAL) before any peer took a copy"
                : "all \(holders) nodes that held it lost it (power loss of NORMAL stores, lost devices)"
            lost.append(LostChange(change: ChangeIndex(c), holders: holders, onlyAuthor: onlyAuthor, why: why))
        }
        let bad = mismatched.filter(\.isEmpty).count
        if bad > 0 {
            failures.append("durability: \(bad) change(s) held by a number of live stores other than the run recorded (a store lost or gained a change outside the power-loss model), e.g. \(mismatched.filter { !$0.isEmpty }.joined(separator: "; "))")
        }
        if let hq = a.hq, !sim.isLost(hq), let r = a.replicator(at: hq) {
            var missing: [String] = []
            for (log, upTo) in a.hqReceipted.sorted(by: { $0.key < $1.key }) {
                let h = (try? r.store.holdings(of: log)) ?? HeldIntervals()
                if h.frontier < upTo { missing.append("\(log) held to \(h.frontier), receipted to \(upTo)") }
            }
            if !missing.isEmpty { failures.append("receipts: HQ lost changes it had receipted: \(missing.prefix(3).joined(separator: "; "))") }
        }
        return (failures, lost)
    }
}
