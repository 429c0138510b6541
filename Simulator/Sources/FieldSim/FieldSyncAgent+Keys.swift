// Key grants and epoch rotation in the `fieldsync` agent (issue 14, "Key grants and epoch rotation (also after
// a revocation)"; docs/simulator.md, "Key grants and epoch rotation"). Every epoch key a node holds reaches it
// through a real `KeyGrant` control change signed by the simulated authority and written by HQ into its log in
// the station's scope, as `fieldsync epoch-key rotate` and `fieldsync publish --scope` do; the members of a
// rotation are those `Replicator.rotationPlan` gives on HQ's node. Nothing of the grant or trust logic is
// reimplemented here: a member holds a key when its replicator opened a grant its store took from a session.

@_spi(Seeded) import FieldSyncCrypto
import FieldSyncCore
import FieldSyncProtocol

/// When HQ rotates the epoch keys of station scopes (scenario section `keys`).
public struct KeyRotation: Sendable, Equatable, CustomStringConvertible {
    /// After HQ revokes a device (device loss, the revoked adversary), it rotates every station scope the device
    /// could read (default on).
    public var afterRevocation = true
    /// How long after the revocation (ms; default 0: at the same moment, as `epoch-key rotate` run at once).
    public var afterRevocationDelay: SimTime = 0
    /// HQ rotates every station scope when its newest epoch is this old (ms; nil, the default: never on schedule).
    public var every: SimTime?

    /// Rotation after a revocation at once, no scheduled rotation.
    public init() {}

    /// The given settings.
    public init(afterRevocation: Bool = true, delay: SimTime = 0, every: SimTime? = nil) {
        self.afterRevocation = afterRevocation
        afterRevocationDelay = max(0, delay)
        self.every = every
    }

    /// The scenario's setting (`keys.rotateAfterRevocation`, `keys.rotateAfterRevocationSeconds`, `keys.rotateEveryDays`).
    public init(_ keys: KeysConfig?) {
        self.init(afterRevocation: keys?.rotateAfterRevocation ?? true,
                  delay: SimTime((keys?.rotateAfterRevocationSeconds ?? 0) * 1_000),
                  every: keys?.rotateEveryDays.map { SimTime($0 * Double(Duration.day)) })
    }

    /// One line for outputs.
    public var description: String {
        let g = { (d: Double) in JSON.format(d) }
        let after = afterRevocation ? "after a revocation " + (afterRevocationDelay == 0 ? "at once" : "after \(g(Double(afterRevocationDelay) / 1_000)) s") : "not after a revocation"
        return "epoch rotation \(after), " + (every.map { "every \(g(Double($0) / Double(Duration.day))) days" } ?? "none on schedule")
    }
}

/// The scenario's `keys` section (docs/simulator.md, "Key grants and epoch rotation").
public struct KeysConfig: Codable, Sendable, Equatable {
    /// HQ rotates the scopes a revoked device could read (default true).
    public var rotateAfterRevocation: Bool?
    /// Seconds between the revocation and that rotation (default 0).
    public var rotateAfterRevocationSeconds: Double?
    /// HQ rotates every station scope when its newest epoch is this many days old (default: never).
    public var rotateEveryDays: Double?

    /// Creates a section.
    public init(rotateAfterRevocation: Bool? = nil, rotateAfterRevocationSeconds: Double? = nil, rotateEveryDays: Double? = nil) {
        self.rotateAfterRevocation = rotateAfterRevocation
        self.rotateAfterRevocationSeconds = rotateAfterRevocationSeconds
        self.rotateEveryDays = rotateEveryDays
    }
}

/// One epoch rotation HQ issued and which of its members hold the new key.
public struct RotationTrack: Sendable {
    /// Why HQ rotated.
    public enum Cause: Sendable, Equatable {
        /// After the revocation at this index of `FieldSyncAgent.revocations`.
        case revocation(Int)
        /// On schedule (`KeyRotation.every`).
        case schedule
    }
    /// The station (domain) and the new epoch.
    public let domain: Int32, epoch: UInt32
    /// When HQ wrote the grant.
    public let at: SimTime
    /// Why.
    public let cause: Cause
    /// The grant's members (the nodes of its device ids, in device-id order).
    public let members: [NodeIndex]
    /// Per member: when its replicator first held the new key (nil: not yet).
    public var learned: [SimTime?]
    /// The grant change's encoded bytes.
    public let grantBytes: Int
    /// The grant change's place: HQ's log in the station's scope, and its seq there.
    public let log: LogID, seq: UInt64
    /// Changes of the station its members wrote while this was the newest epoch, sealed under an older one
    /// (the writer had not received this grant yet).
    public var staleWrites = 0
}

/// What the end-of-run key checks found (`keyCheck`).
public struct KeyCheck: Sendable {
    /// Trust failures: a revoked device holds a key of an epoch issued after its revocation.
    public var revokedHoldNewKeys: [String] = []
    /// Live members (not revoked) whose newest key of a station they read is older than the newest epoch
    /// HQ issued: (node, station, newest held, newest issued).
    public var behind: [(node: NodeIndex, domain: Int32, held: UInt32, newest: UInt32)] = []
    /// Changes live members hold and cannot open for want of the key.
    public var unreadable = 0
    /// Failures: a live member that holds the newest epoch of a station holds a change of it it cannot open
    /// (it lacks the key of an older epoch).
    public var unreadableThoughCurrent: [String] = []
    /// Whether every live member holds the newest epoch of its stations and can open every change it holds.
    public var converged: Bool { behind.isEmpty && unreadable == 0 }
}

extension FieldSyncAgent {
    /// Enrolment: the authority grants each station's epoch-1 key to the station's readers (never to relay
    /// boxes), HQ writes each grant into its log in the station's scope, and every node that carries the
    /// station holds that log from the start (relay boxes hold the sealed grant they cannot open), as a device
    /// synced at HQ when it was enrolled. Dated half a day before the run (the certificates' `notBefore` is one
    /// day before), so that no device's clock is moved by it. Without an HQ node (the generic scenarios) there is
    /// no one to publish grants or rotate: every reader gets the key in its keystore (an `epoch-key new` key file),
    /// as before grants were simulated (a peer's only log, its own in the root scope, carries its workload).
    func enrolmentGrants(_ keys: [EpochKey]) {
        let w = ctx.world
        let t0 = Self.epochMs - UInt64(Duration.day / 2)
        newestEpoch = Array(repeating: 1, count: w.domainCount)
        lastIssuedAt = Array(repeating: 0, count: w.domainCount)
        latestRotation = Array(repeating: -1, count: w.domainCount)
        exposureCap = Array(repeating: 0, count: w.domainCount)
        exposureRevocation = Array(repeating: -1, count: w.domainCount)
        guard let publisher = hqNode, let pr = replicators[Int(publisher)] else {
            for n in 0..<w.count where w.nodes[n].nodeClass != .relay {
                for d in w.carried[n] { replicators[n]!.addKey(keys[Int(d)]) }
            }
            return
        }
        for d in 0..<w.domainCount {
            let readers = w.readers[d]
            let grant = try! issue(keys[d], members: readers.map { enrolled[Int($0)] }, at: t0)
            let c = try! pr.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: domainScopes[d], now: t0)
            let log = LogID(author: pr.identity.id, scope: domainScopes[d])
            if logPlace[log] == nil {
                logPlace[log] = (Int32(d), -1 - Int32(controlLogs[d].count))
                controlLogs[d].append(log)
            }
            grantSeqs[log, default: []].append(c.header.seq)
            enrolmentGrants += 1
            enrolmentGrantBytes += c.encodedBytes.count
            let chain = pr.certificateChain(of: pr.identity.id)
            for n in w.carriers[d] {
                if n != publisher {
                    let report = try! replicators[Int(n)]!.ingest([c], certificates: chain, now: t0)
                    precondition(report.outcomes == [.accepted], "enrolment grant of \(domainScopes[d]) refused at \(w.nodes[Int(n)].name)")
                }
                seen[Int(n)][log, default: HeldIntervals()].insert(c.header.seq)
            }
        }
        updateNextKeyEvent()
    }

    /// A grant of `key` to `members`, signed by the authority at `t`, its sealed boxes from the run's generator.
    func issue(_ key: EpochKey, members: [Certificate], at t: UInt64) throws -> KeyGrant {
        let count = Set(members.map(\.subject)).count
        let seeds = (0..<count).map { _ in (0..<32).map { _ in UInt8(grantRandom.int(256)) } }
        return try KeyGrant.issue(epochKey: key, members: members, issuedAt: t, by: authority, ephemeralSeeds: seeds)
    }

    /// HQ revoked `node` (revocation `i`): from now on every change of its stations sealed under an epoch it
    /// holds is counted as exposed, and HQ rotates each of them now or after the configured delay.
    func revoked(_ node: NodeIndex, revocation i: Int, now: SimTime, effects: inout AgentEffects) {
        guard ctx.world.nodes[Int(node)].nodeClass != .relay else { return }
        while exposedBeforeRotation.count <= i {
            exposedBeforeRotation.append(0)
            exposedAfterRotation.append(0)
        }
        for d in ctx.world.carried[Int(node)] {
            revokedKeyCap.append((node, d, newestEpoch[Int(d)]))
            exposureCap[Int(d)] = newestEpoch[Int(d)]
            exposureRevocation[Int(d)] = Int32(i)
            guard keyRotation.afterRevocation, hqNode != nil else { continue }
            if keyRotation.afterRevocationDelay == 0 {
                rotate(d, cause: .revocation(i), now: now, effects: &effects)
            } else {
                let at = now + keyRotation.afterRevocationDelay
                let k = dueRotations.firstIndex { $0.at > at } ?? dueRotations.count
                dueRotations.insert((at, d, i), at: k)
            }
        }
        updateNextKeyEvent()
    }

    /// Rotations due by `now` (after a revocation's delay, on schedule), at the first event at or after their time.
    /// While HQ is down they wait for its restart (`restartedNode`).
    func keysTick(now: SimTime, effects: inout AgentEffects) {
        guard !hqIsDown else { return }
        while let first = dueRotations.first, first.at <= now {
            dueRotations.removeFirst()
            rotate(first.domain, cause: .revocation(first.revocation), now: now, effects: &effects)
        }
        if let every = keyRotation.every, hqNode != nil {
            for d in 0..<lastIssuedAt.count where lastIssuedAt[d] + every <= now {
                if !rotate(Int32(d), cause: .schedule, now: now, effects: &effects) { lastIssuedAt[d] = now }  // tried: again a period later
            }
        }
        updateNextKeyEvent()
    }

    func updateNextKeyEvent() {
        var next = dueRotations.first?.at ?? .max
        if let every = keyRotation.every, hqNode != nil {
            for t in lastIssuedAt { next = min(next, t + every) }
        }
        nextKeyEventAt = next
    }

    /// HQ rotates station `d`'s epoch key, as `fieldsync epoch-key rotate` does on HQ's node: the members are
    /// `Replicator.rotationPlan`'s (the current epoch's grant members, less the revoked, expired and relays),
    /// plus the enrolled devices whose certificate HQ's node has not seen yet and that are not revoked (the
    /// operator's `--member CERT`); a new key of the next epoch, granted to them, signed by the authority and
    /// written into HQ's log in the station's scope, from where sync carries it. Returns whether it wrote one.
    @discardableResult
    func rotate(_ d: Int32, cause: RotationTrack.Cause, now: SimTime, effects: inout AgentEffects) -> Bool {
        guard let hq = hqNode, let hqr = replicators[Int(hq)] else { return false }
        let scope = domainScopes[Int(d)]
        let t = wall(hq, now)
        let plan: RotationPlan
        do { plan = try hqr.rotationPlan(for: scope, now: t, olderThan: nil) } catch {
            effects.violate("HQ could not plan the rotation of \(scope): \(error)")
            return false
        }
        var members = plan.members
        for (id, _) in plan.leftOut where hqr.certificates[id] == nil {
            guard let n = nodeOfDevice[id], hqr.trust.revocation(of: enrolled[Int(n)]) == nil else { continue }
            members.append(enrolled[Int(n)])
        }
        guard !members.isEmpty, plan.currentEpoch < UInt32.max else { return false }
        let key = try! EpochKey(scope: scope, epoch: plan.currentEpoch + 1,
                                key: SecretBytes(copying: (0..<32).map { _ in UInt8(grantRandom.int(256)) }))
        let change: Change
        let grant: KeyGrant
        do {
            grant = try issue(key, members: members, at: t)
            change = try hqr.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: scope, now: t)
        } catch {
            effects.violate("HQ could not rotate \(scope) to epoch \(key.epoch): \(error)")
            return false
        }
        let log = LogID(author: hqr.identity.id, scope: scope)
        if logPlace[log] == nil {
            logPlace[log] = (d, -1 - Int32(controlLogs[Int(d)].count))
            controlLogs[Int(d)].append(log)
        }
        seen[Int(hq)][log, default: HeldIntervals()].insert(change.header.seq)
        grantSeqs[log, default: []].append(change.header.seq)
        rotationGrantBytes += change.encodedBytes.count
        let nodes = grant.members.compactMap { nodeOfDevice[$0.device] }
        let learned = nodes.map { n -> SimTime? in holdsEpoch(n, d, key.epoch) ? now : nil }  // HQ, a member, opened it as it wrote it
        rotations.append(RotationTrack(domain: d, epoch: key.epoch, at: now, cause: cause, members: nodes, learned: learned,
                                       grantBytes: change.encodedBytes.count, log: log, seq: change.header.seq))
        pendingRotations.append(rotations.count - 1)
        newestEpoch[Int(d)] = key.epoch
        lastIssuedAt[Int(d)] = now
        latestRotation[Int(d)] = Int32(rotations.count - 1)
        touched(hq, domains: [d], except: -1, now: now, effects: &effects)
        return true
    }

    /// Whether `node`'s replicator holds a key of `epoch` for station `d`.
    func holdsEpoch(_ node: NodeIndex, _ d: Int32, _ epoch: UInt32) -> Bool {
        replicators[Int(node)]?.keys[domainScopes[Int(d)]]?.contains { $0.epoch == epoch } ?? false
    }

    /// Whether `node` is the revoked adversary after its revocation.
    private func isRevokedNow(_ node: NodeIndex) -> Bool { node == revokedNode && revokedAt != nil }

    /// A change `node` wrote in station `d` (called only once the station has a rotation or a revocation):
    /// counted as stale if sealed under an epoch older than the newest HQ issued, and as exposed if sealed under
    /// an epoch a device revoked since holds.
    func noteSealed(_ c: Change, domain d: Int32, by node: NodeIndex) {
        guard !isRevokedNow(node) else { return }
        let e = c.header.keyEpoch
        let r = Int(latestRotation[Int(d)])
        if e < newestEpoch[Int(d)], r >= 0 { rotations[r].staleWrites += 1 }
        let i = Int(exposureRevocation[Int(d)])
        if i >= 0, e <= exposureCap[Int(d)] {
            if r >= 0, rotations[r].at >= revocations[i].at { exposedAfterRotation[i] += 1 } else { exposedBeforeRotation[i] += 1 }
        }
    }

    /// After `node`'s store applied a batch: which pending rotations it now holds the key of; and, for the
    /// revoked device that goes on, the trust rule that it never holds a key issued after its revocation.
    func noteKeys(at node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        if isRevokedNow(node), let r = replicators[Int(node)] {
            for cap in revokedKeyCap where cap.node == node {
                if let e = r.keys[domainScopes[Int(cap.domain)]]?.last?.epoch, e > cap.epoch {
                    effects.violate("revoked \(ctx.world.nodes[Int(node)].name) holds \(domainScopes[Int(cap.domain)])#\(e), issued after its revocation (it held #\(cap.epoch))")
                }
            }
        }
        pendingRotations.removeAll { i in
            let rot = rotations[i]
            if let k = rot.members.firstIndex(of: node), rot.learned[k] == nil, holdsEpoch(node, rot.domain, rot.epoch) {
                rotations[i].learned[k] = now
            }
            // Done once every member still there holds it (a lost device, or the revoked one, never will).
            return rotations[i].members.indices.allSatisfy { k in
                let m = rotations[i].members[k]
                return rotations[i].learned[k] != nil || replicators[Int(m)] == nil || isRevokedNow(m)
            }
        }
    }
}

/// The end-of-run key checks of a `fieldsync` run (docs/simulator.md, "Key grants and epoch rotation"): no
/// revoked device (lost, or the revoked adversary) holds a key of an epoch issued after its revocation; which
/// live members (readers that are not revoked) do not hold the newest epoch of a station they read; and which
/// changes live members hold but cannot open, a failure when the member holds the station's newest epoch.
public func keyCheck(_ sim: Simulation<FieldSyncAgent>) -> KeyCheck {
    let a = sim.agent
    let world = sim.context.world
    var out = KeyCheck()
    for cap in a.revokedKeyCap {
        let r = a.revocations.first { $0.node == cap.node }.map { t in a.replicator(at: t.node) ?? t.lostDevice }
        if let r, let e = r.keys[a.domainScopes[Int(cap.domain)]]?.last?.epoch, e > cap.epoch {
            out.revokedHoldNewKeys.append("revoked \(world.nodes[Int(cap.node)].name) holds \(a.domainScopes[Int(cap.domain)])#\(e), issued after its revocation")
        }
    }
    let revoked = Set(a.revocations.map(\.node))
    for n in 0..<world.count {
        let node = NodeIndex(n)
        guard !sim.isLost(node), !revoked.contains(node), world.nodes[n].nodeClass != .relay, let r = a.replicator(at: node) else { continue }
        var current: [Int32: Bool] = [:]
        for d in world.carried[n] {
            let held = r.keys[a.domainScopes[Int(d)]]?.last?.epoch ?? 0
            current[d] = held >= a.newestEpoch[Int(d)]
            if held < a.newestEpoch[Int(d)] { out.behind.append((node, d, held, a.newestEpoch[Int(d)])) }
        }
        for stored in (try? r.store.unopened(in: nil)) ?? [] where stored.contentType == .records {
            guard let c = try? Change(canonicalBytes: stored.bytes), let d = a.logPlace[stored.log]?.domain, world.reads(d, at: node),
                  !r.keys.contains(where: { $0.key.contains(c.header.scope) && $0.value.contains { $0.epoch == c.header.keyEpoch } }) else { continue }
            out.unreadable += 1
            if current[d] == true, out.unreadableThoughCurrent.count < 5 {
                out.unreadableThoughCurrent.append("\(world.nodes[n].name) holds the newest epoch of \(a.domainScopes[Int(d)]) but cannot open \(stored.log)#\(stored.seq) (epoch \(c.header.keyEpoch))")
            }
        }
    }
    return out
}

/// `fieldsync.key_grants` of a run's summary.
func keyGrantsJSON(_ sim: Simulation<FieldSyncAgent>, _ check: KeyCheck) -> JSON {
    let a = sim.agent
    let world = sim.context.world
    var lat = Histogram()
    var informed = 0, never = 0
    var perRotation: [JSON] = []
    for rot in a.rotations {
        var h = Histogram()
        var missing = 0
        for (k, m) in rot.members.enumerated() where !sim.isLost(m) && !a.revocations.contains(where: { $0.node == m }) {
            if let l = rot.learned[k] { h.record(l - rot.at); lat.record(l - rot.at); informed += 1 } else { missing += 1; never += 1 }
        }
        guard case let .revocation(i) = rot.cause, perRotation.count < 100 else { continue }
        let t = a.revocations[i]
        perRotation.append(.object([
            ("station", .string(world.domainNames[Int(rot.domain)])), ("epoch", .int(Int64(rot.epoch))),
            ("revoked", .string(world.nodes[Int(t.node)].name)), ("revoked_at_s", .number(Double(t.at) / 1000)),
            ("issued_at_s", .number(Double(rot.at) / 1000)), ("members", .int(Int64(rot.members.count))),
            ("members_never_informed", .int(Int64(missing))),
            ("latency_p50_s", .number(h.quantile(0.5) / 1000)), ("latency_p95_s", .number(h.quantile(0.95) / 1000)),
            ("latency_max_s", .number(h.count > 0 ? Double(h.max) / 1000 : .nan)),
            ("stale_writes", .int(Int64(rot.staleWrites))),
        ]))
    }
    let revocationRotations = a.rotations.filter { if case .revocation = $0.cause { true } else { false } }.count
    return .object([
        ("rotation", .string(a.keyRotation.description)),
        ("enrolment_grants", .int(Int64(a.enrolmentGrants))), ("enrolment_grant_bytes", .int(Int64(a.enrolmentGrantBytes))),
        ("rotations_after_revocation", .int(Int64(revocationRotations))),
        ("rotations_on_schedule", .int(Int64(a.rotations.count - revocationRotations))),
        ("rotation_grant_bytes", .int(Int64(a.rotationGrantBytes))),
        ("grant_copies_sent", .int(Int64(a.grantCopiesSent))), ("grant_bytes_sent", .int(a.grantBytesSent)),
        ("member_pairs_informed", .int(Int64(informed))), ("member_pairs_never_informed", .int(Int64(never))),
        ("latency_p50_s", .number(lat.quantile(0.5) / 1000)), ("latency_p95_s", .number(lat.quantile(0.95) / 1000)),
        ("latency_max_s", .number(lat.count > 0 ? Double(lat.max) / 1000 : .nan)),
        ("exposed_writes_before_rotation", .int(Int64(a.exposedBeforeRotation.reduce(0, +)))),
        ("exposed_writes_after_rotation", .int(Int64(a.exposedAfterRotation.reduce(0, +)))),
        ("stale_writes", .int(Int64(a.rotations.reduce(0) { $0 + $1.staleWrites }))),
        ("members_behind_newest_epoch", .int(Int64(check.behind.count))),
        ("changes_unreadable_at_members", .int(Int64(check.unreadable))),
        ("revoked_holding_new_keys", .int(Int64(check.revokedHoldNewKeys.count))),
        ("keys_converged", .bool(check.converged)),
        ("rotations_after_revocation_detail", .array(perRotation)),
    ])
}
