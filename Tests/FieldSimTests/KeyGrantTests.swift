import FieldSim
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// Issue 14, "Key grants and epoch rotation (also after a revocation)": every epoch key reaches its members
/// through a real `KeyGrant`, HQ rotates a revoked device's stations (`Replicator.rotationPlan`) and, with
/// `keys.rotateEveryDays`, every station on schedule; the key checks (`keyCheck`) hold at the end of each run.
@Suite struct KeyGrantTests {
    /// `longnan-small` for `days` (faults as given, stand-in crypto), with `adversaries` and `keys`.
    static func run(days: Double, seed: UInt64 = 1, adversaries: String? = nil, keys: KeysConfig? = nil,
                    tune: (inout ScenarioFile) -> Void = { _ in }) throws -> Simulation<FieldSyncAgent> {
        var (f, path) = try shippedScenario("longnan-small", days: days)
        f.keys = keys
        tune(&f)
        let scen = try makeScenario(f, seed: seed, path: path)
        let adv = try adversaries.map { try AdversaryConfig(kinds: $0) } ?? AdversaryConfig()
        var options = RunOptions(oracleSampleEvery: 0)
        options.linkFaults = LinkFaults(f.faults, seed: seed)
        return runFieldSync(scenario: scen, seed: seed, crypto: .standIn, adversaries: adv, keyRotation: KeyRotation(f.keys), options: options)
    }

    /// Before any session: every reader of a station holds its epoch-1 key, opened from the enrolment grant its
    /// store holds (a key from a grant has its signing time, `keyIssuedAt`; a keystore key has none), and every
    /// relay box holds the sealed grant but no key.
    @Test func enrolmentGrantsGiveEveryReaderItsKeyAndRelaysNone() throws {
        let sim = try Self.run(days: 0.001)
        let world = sim.context.world
        var readers = 0, relays = 0
        for n in 0..<world.count {
            let r = try #require(sim.agent.replicator(at: NodeIndex(n)))
            let grants = try r.store.controlChanges().filter { $0.contentType == .keyGrant }
            if world.nodes[n].nodeClass == .relay {
                #expect(r.allKeys.isEmpty, "relay \(world.nodes[n].name) holds a key")
                #expect(grants.count == world.carried[n].count, "relay \(world.nodes[n].name) holds \(grants.count) grants")
                relays += 1
                continue
            }
            for d in world.carried[n] {
                let scope = try Scope(world.domainNames[Int(d)])
                #expect(r.keys[scope]?.map(\.epoch) == [1], "\(world.nodes[n].name): \(r.keys[scope]?.map(\.epoch) ?? [])")
                #expect(r.keyIssuedAt[scope]?[1] != nil, "\(world.nodes[n].name)'s key of \(scope) did not come from a grant")
            }
            readers += 1
        }
        #expect(readers > 0 && relays > 0)
        #expect(sim.agent.enrolmentGrants == world.domainCount)
    }

    /// The revoked adversary (revoked at a quarter of the workload, and still syncing): HQ rotates its station at
    /// once; the rotation reaches the station, whose later changes the revoked device cannot open (it never
    /// gets the new key). With the rule taken out (`rotateAfterRevocation: false`, the model before) it opens
    /// the same kind of change: the check below fails without the rotation.
    @Test func aRevokedDeviceCannotOpenChangesWrittenAfterTheRotationReachedTheWriter() throws {
        for rotate in [true, false] {
            let sim = try Self.run(days: 2, adversaries: "revoked", keys: KeysConfig(rotateAfterRevocation: rotate))
            #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
            let a = sim.agent
            let world = sim.context.world
            let bad = try #require(a.revokedNode)
            let revoked = try #require(a.replicator(at: bad))
            let d = world.carried[Int(bad)][0]
            let scope = try Scope(world.domainNames[Int(d)])
            let station = try #require((0..<world.count).first { world.nodes[$0].nodeClass == .station && world.carried[$0] == [d] })
            let writer = try #require(a.replicator(at: NodeIndex(station)))
            // The station's latest change over its logs in the station's scope (one per village it writes in:
            // `logScope: "village"`, the default).
            var latest: Change?
            for (log, h) in try writer.store.holdings() where log.author == writer.identity.id && scope.contains(log.scope) {
                guard let head = h.ranges.last?.upperBound else { continue }
                let c = try Change(canonicalBytes: try #require(try writer.store.changes(log, in: head...head).first).bytes)
                if latest.map({ c.header.hlc.milliseconds > $0.header.hlc.milliseconds }) ?? true { latest = c }
            }
            let last = try #require(latest)
            #expect(throws: Never.self) { _ = try last.open(with: writer.allKeys) }
            let opened = (try? last.open(with: revoked.allKeys)) != nil
            if rotate {
                let rot = try #require(a.rotations.first { $0.domain == d })
                guard case let .revocation(i) = rot.cause else { #expect(Bool(false), "\(rot.cause)"); return }
                #expect(a.revocations[i].node == bad && !rot.members.contains(bad))
                let k = try #require(rot.members.firstIndex(of: NodeIndex(station)))
                let reached = try #require(rot.learned[k])
                #expect(last.header.hlc.milliseconds > FieldSyncAgent.epochMs + UInt64(reached), "the station's last change predates the rotation")
                #expect(last.header.keyEpoch == rot.epoch)
                #expect(!opened, "the revoked device opened a change sealed after the rotation reached its writer")
                #expect(revoked.keys[scope]?.last?.epoch == 1)
                let check = keyCheck(sim)
                #expect(check.revokedHoldNewKeys.isEmpty && check.unreadableThoughCurrent.isEmpty)
                #expect(a.exposedAfterRotation.count == 1)
            } else {
                #expect(a.rotations.isEmpty)
                #expect(opened, "without rotation the revoked device still reads its station")
            }
        }
    }

    /// Device loss (300 a year: several losses in 3 days): each loss is revoked and its station rotated; every
    /// remaining member that is still there at the end holds the newest epoch of its stations, no lost device got
    /// a later key, every change a member holds it can open, and the records did not diverge.
    @Test func rotationsAfterDeviceLossReachEveryRemainingMember() throws {
        let sim = try Self.run(days: 3) { f in
            f.faults?.deviceLossPerYear = 300  // (the shipped file has a faults section, all off)
        }
        #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
        let a = sim.agent
        #expect(a.revocations.count >= 2, "\(a.revocations.count) losses")
        #expect(a.rotations.count == a.revocations.count)  // a backpack reads one station
        for rot in a.rotations {
            guard case let .revocation(i) = rot.cause else { #expect(Bool(false), "unexpected \(rot.cause)"); continue }
            #expect(!rot.members.contains(a.revocations[i].node))
            #expect(rot.at == a.revocations[i].at)
        }
        let check = keyCheck(sim)
        #expect(check.revokedHoldNewKeys.isEmpty)
        #expect(check.converged, "behind: \(check.behind.map { "\(sim.context.world.nodes[Int($0.node)].name) #\($0.held) < #\($0.newest)" }), unreadable \(check.unreadable)")
        let report = fieldSyncReport(sim, scenarioName: "longnan-small", seed: 1, derived: [])
        #expect(report.headline.divergedStations == 0)
    }

    /// `keys.rotateEveryDays: 1` over 3 days: HQ rotates each station twice (days 1 and 2), and every live member
    /// ends with epoch 3 of its stations.
    @Test func scheduledRotationConverges() throws {
        let sim = try Self.run(days: 3, keys: KeysConfig(rotateEveryDays: 1))
        #expect(sim.invariantViolation == nil, "\(sim.invariantViolation ?? "")")
        let a = sim.agent
        let world = sim.context.world
        #expect(a.rotations.count == 2 * world.domainCount)
        #expect(a.rotations.allSatisfy { $0.cause == .schedule })
        let check = keyCheck(sim)
        #expect(check.converged, "behind: \(check.behind.count), unreadable \(check.unreadable)")
        for n in 0..<world.count where world.nodes[n].nodeClass != .relay {
            let r = try #require(a.replicator(at: NodeIndex(n)))
            for d in world.carried[n] { #expect(r.keys[try Scope(world.domainNames[Int(d)])]?.last?.epoch == 3) }
        }
    }

    /// The `keys` section: a delay that is negative or too large for the simulated clock, and a period of 0, negative or
    /// too large are refused (they would trap in the conversion to ms or rotate at every event); good values give the
    /// rotation they say. (JSON has no infinity or NaN.)
    @Test func badKeysSettingsAreRefused() throws {
        var (f, _) = try shippedScenario("longnan-small")
        for bad in [KeysConfig(rotateAfterRevocationSeconds: -1), KeysConfig(rotateAfterRevocationSeconds: 1e300),
                    KeysConfig(rotateEveryDays: 0), KeysConfig(rotateEveryDays: -2), KeysConfig(rotateEveryDays: 1e9)] {
            f.keys = bad
            let json = try JSONEncoder().encode(f)
            #expect(throws: ScenarioError.self, "\(bad)") { try ScenarioFile.parse(json) }
        }
        f.keys = KeysConfig(rotateAfterRevocation: true, rotateAfterRevocationSeconds: 90, rotateEveryDays: 7)
        let parsed = try ScenarioFile.parse(JSONEncoder().encode(f))
        #expect(KeyRotation(parsed.keys) == KeyRotation(afterRevocation: true, delay: 90_000, every: 7 * Duration.day))
        #expect(KeyRotation(nil) == KeyRotation())
    }

    /// The end-of-run check catches a revoked device that holds a key of an epoch issued after its revocation
    /// (planted: the key given to it directly).
    @Test func aPlantedNewKeyAtTheRevokedDeviceIsCaught() throws {
        let sim = try Self.run(days: 2, adversaries: "revoked")
        let a = sim.agent
        let bad = try #require(a.revokedNode)
        #expect(keyCheck(sim).revokedHoldNewKeys.isEmpty)
        let d = sim.context.world.carried[Int(bad)][0]
        let rot = try #require(a.rotations.last { $0.domain == d })
        let hqNode = try #require(a.hq)
        let hq = try #require(a.replicator(at: hqNode))
        let key = try #require(hq.keys[try Scope(sim.context.world.domainNames[Int(d)])]?.last)
        #expect(key.epoch == rot.epoch)
        try #require(a.replicator(at: bad)).addKey(key)
        #expect(keyCheck(sim).revokedHoldNewKeys.count == 1)
    }
}
