import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import NIOCore
import Testing

/// A peer's standing on the daemon's live sessions (Protocols/sync.md §4.2; issue 12 item 1, attack
/// cases 34 and 36): whatever way a revocation reaches a node (its own write, another session, another
/// process writing its store), and when a peer's certificate expires, the live session with that peer is
/// cut before anything else is pushed, and nothing written afterwards reaches the peer. Idle live
/// sessions without keep-alive close after `liveIdleTimeout`. Daemons on 127.0.0.1 in one process.
@Suite(.ownThread) struct StandingDaemonTests {
    typealias Running = DaemonTests.Running

    static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    static func revocation(of device: DeviceIdentity, _ pki: NodeTests.PKI) throws -> Revocation {
        try Revocation(device: device.id, serial: device.certificate.serial, revokedAt: HLCTimestamp(milliseconds: nowMilliseconds(), counter: 0),
                       reason: .lost, note: "", by: Authority(root: pki.rootKey))
    }

    /// A replicator over `r`'s store through a second SQLite connection, as a CLI process opens it.
    static func anotherProcess(_ r: Running, trust: TrustStore) throws -> Replicator {
        let store = try SQLiteStore(path: r.storePath, sealer: try StorageKeySealer(key: SecretBytes(copying: r.storageKey)))
        let writer = Replicator(identity: r.identity, trust: trust, store: store)
        writer.addKey(NodeTests.stationKey)
        try writer.restoreClock()
        return writer
    }

    /// How many records `r` holds, and how many of them mention `text`.
    static func records(_ r: Running, mentioning text: String) async throws -> (all: Int, matching: Int) {
        try await r.node.withReplicator { rep in
            var q = RecordQuery()
            q.text = text
            return (try rep.store.records(RecordQuery()).count, try rep.store.records(q).count)
        }
    }

    /// The last error `r`'s status shows for its only peer.
    static func lastError(_ r: Running) async throws -> String {
        try await r.daemon.status().peers.first?.lastError ?? ""
    }

    /// Two daemons, the station `a` opening a live session to the backpack `b`; one record crossed it.
    static func liveStationAndBackpack(_ pki: inout NodeTests.PKI, dir: String, stationTrust: TrustStore? = nil,
                                       backpack: DeviceIdentity? = nil) async throws -> (a: Running, b: Running, bID: DeviceIdentity) {
        let bID = try backpack ?? pki.device(.backpack, scopes: [NodeTests.station])
        let b = try await DaemonTests.start(bID, trust: pki.trust, dir: dir, name: "b")
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: stationTrust ?? pki.trust, dir: dir,
                                            name: "a", peers: [try await DaemonTests.address(b)])
        #expect(try await DaemonTests.eventually(20) {
            let (la, lb) = (try await LiveDaemonTests.live(a), try await LiveDaemonTests.live(b))
            return la.count == 1 && lb.count == 1
        })
        try await NodeTests.write(a.node, count: 1, tag: "before")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 1 }, "the live session carries writes")
        return (a, b, bID)
    }

    /// Waits until `b` says it was refused for `reason`, gives any push a moment more, then checks that
    /// `b` holds only the record written before.
    static func expectNothingMoreReaches(_ b: Running, refusedFor reason: String) async throws {
        let told = try await DaemonTests.eventually(20) { try await Self.lastError(b).contains(reason) }
        let said = try await Self.lastError(b)
        #expect(told, "the backpack is told why: \(said)")
        try await TestClock.sleep(for: .milliseconds(1_000))
        let held = try await Self.records(b, mentioning: "after")
        #expect(held.all == 1 && held.matching == 0, "written after the cut, yet received: \(held)")
    }

    @Test(.timeLimit(.minutes(1))) func aRevocationWrittenThroughTheNodeCutsTheLiveSessionAtOnce() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, b, bID) = try await Self.liveStationAndBackpack(&pki, dir: dir)
        let rev = try Self.revocation(of: bID, pki)
        try await a.node.withReplicator { r in
            _ = try r.writeControl(.revocation, payload: rev.canonicalBytes, scope: NodeTests.station, now: Self.nowMilliseconds())
        }
        #expect(try await LiveDaemonTests.live(a).isEmpty, "cut when the write returned")
        try await NodeTests.write(a.node, count: 1, tag: "after")
        try await Self.expectNothingMoreReaches(b, refusedFor: "revoked")
        #expect(try await DaemonTests.eventually(20) { try await a.daemon.peers().first?.failures ?? 0 >= 1 }, "reconnecting is refused")
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// `fieldsync publish` (another process) writes the revocation into the station's store and a record
    /// right after it: the station's store check loads the revocation and cuts the session before it
    /// pushes what moved.
    @Test(.timeLimit(.minutes(1))) func aRevocationWrittenByAnotherProcessCutsTheLiveSessionBeforeThePush() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, b, bID) = try await Self.liveStationAndBackpack(&pki, dir: dir)
        let cli = try Self.anotherProcess(a, trust: pki.trust)
        _ = try cli.writeControl(.revocation, payload: try Self.revocation(of: bID, pki).canonicalBytes, scope: NodeTests.station,
                                 now: Self.nowMilliseconds())
        var g = SystemRandomNumberGenerator()
        let now = Self.nowMilliseconds()
        var clock = cli.clock
        let edit = Incident.create(id: RecordID.random(using: &g), scope: NodeTests.village, author: a.identity.id, hlc: try clock.now(wall: now),
                                   category: .dispute, priority: .urgent, location: Location(latitude: 33.4, longitude: 104.9),
                                   summary: "after the revocation", reportedAt: Int64(now), reporter: "walk-in")
        try cli.write([edit], scope: NodeTests.village, priority: .urgent, now: now)
        try await Self.expectNothingMoreReaches(b, refusedFor: "revoked")
        #expect(try await LiveDaemonTests.live(a).isEmpty)
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// HQ pushes the revocation to the station on their live session; the station cuts its live session
    /// with the revoked backpack as soon as it applied the batch.
    @Test(.timeLimit(.minutes(1))) func aRevocationArrivingOnAnotherSessionCutsTheLiveSession() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, b, bID) = try await Self.liveStationAndBackpack(&pki, dir: dir)
        let hq = try await DaemonTests.start(try pki.device(.hq, scopes: [try Scope("longnan")]), trust: pki.trust, dir: dir, name: "hq",
                                             peers: [try await DaemonTests.address(a)])
        #expect(try await DaemonTests.eventually(20) { try await LiveDaemonTests.live(a).count == 2 })
        let rev = try Self.revocation(of: bID, pki)
        try await hq.node.withReplicator { r in
            _ = try r.writeControl(.revocation, payload: rev.canonicalBytes, scope: try Scope("longnan"), now: Self.nowMilliseconds())
        }
        #expect(try await DaemonTests.eventually(20) {
            try await a.node.withReplicator { $0.trust.revocation(of: bID.certificate) != nil }
        })
        #expect(try await LiveDaemonTests.live(a).map(\.peer) == [hq.identity.id], "only the session with HQ is left")
        try await NodeTests.write(a.node, count: 1, tag: "after")
        try await Self.expectNothingMoreReaches(b, refusedFor: "revoked")
        for r in [hq, a, b] { _ = try await r.daemon.shutdown(grace: .seconds(5)) }
    }

    /// How long the short certificate is valid: long enough for two daemons to start, go live and carry a
    /// record on a loaded 2-core machine running the suite in parallel (8 s was not; 20 s was not while
    /// blocking tests held the cooperative pool, before the suites moved to their own threads).
    static let shortValidity: UInt64 = 30_000

    /// The backpack's certificate expires while its live session is open (the station allows no clock
    /// skew here): the station cuts the session when it lapses and tells the backpack why.
    @Test(.timeLimit(.minutes(2))) func aPeerCertificateExpiringCutsTheLiveSession() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let now = Self.nowMilliseconds()
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .backpack, requestedScopes: [NodeTests.station],
                                        createdAt: now, label: "short")
        let cert = try Authority(root: pki.rootKey).enroll(req, role: .backpack, scopes: [NodeTests.station], notBefore: now - NodeTests.day,
                                                           notAfter: now + Self.shortValidity, serial: 99)
        let strict = TrustStore(root: pki.rootKey.publicKey, clockSkewMilliseconds: 0)
        let (a, b, _) = try await Self.liveStationAndBackpack(&pki, dir: dir, stationTrust: strict,
                                                              backpack: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert))
        #expect(Self.nowMilliseconds() < now + Self.shortValidity, "the session went live before the expiry")
        #expect(try await DaemonTests.eventually(40) { try await LiveDaemonTests.live(a).isEmpty })
        #expect(Self.nowMilliseconds() > now + Self.shortValidity, "not before the expiry")
        try await NodeTests.write(a.node, count: 1, tag: "after")
        try await Self.expectNothingMoreReaches(b, refusedFor: "not valid")
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// Without keep-alive (`liveKeepAlive` nil), a live session without traffic for `liveIdleTimeout`
    /// closes normally and a new one replaces it (with keep-alive it stays open:
    /// `LiveDaemonTests.keepAlivesKeepAnIdleLiveSessionOpenPastTheLiveIdleLimit`).
    @Test(.timeLimit(.minutes(1))) func anIdleLiveSessionClosesAfterTheLiveIdleTimeoutAndIsReopened() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let noKeepAlive: (inout NodeConfiguration, inout DaemonOptions) -> Void = { c, _ in c.liveKeepAlive = nil }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                            liveIdle: .milliseconds(700), tune: noKeepAlive)
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [try await DaemonTests.address(b)], liveIdle: .milliseconds(700), tune: noKeepAlive)
        // Taken in one look: with a 700 ms idle timeout, a second look may come after it closed.
        var first: LiveSession?
        #expect(try await DaemonTests.eventually(20) {
            first = try await LiveDaemonTests.live(a).first
            return first != nil
        })
        let opened = try #require(first)
        #expect(try await DaemonTests.eventually(20) { (try await LiveDaemonTests.live(a).first?.since ?? 0) > opened.since },
                "closed when idle and replaced by a new live session")
        let finished = (DaemonTests.metric(a, #"fieldsync_sessions_total{outcome="finished",direction="out"}"#) ?? 0)
            + (DaemonTests.metric(a, #"fieldsync_sessions_total{outcome="finished",direction="in"}"#) ?? 0)
        #expect(finished >= 1, "a normal end")
        #expect(DaemonTests.metric(a, #"fieldsync_sessions_total{outcome="failed",direction="out"}"#) ?? 0 == 0)
        // The new session still carries changes.
        try await NodeTests.write(a.node, count: 1, tag: "after reopening")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 1 })
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }
}
