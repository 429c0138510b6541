import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import NIOCore
import Testing

/// Live sessions in the daemon (Protocols/sync.md §4.1): the session a contact opens stays open, and
/// later changes travel on it through `push`, without a new session. Daemons on 127.0.0.1 in one process.
@Suite(.ownThread) struct LiveDaemonTests {
    typealias Running = DaemonTests.Running

    static func live(_ r: Running) async throws -> [LiveSession] { try await r.node.loop.submit { r.node.liveSessions }.get() }
    static func running(_ r: Running) async throws -> Int { try await r.node.loop.submit { r.node.runningSessions }.get() }

    /// Writes one urgent incident into `r`'s store through a second SQLite connection, as the CLI does from
    /// another process; `ahead` dates it that many ms after the wall clock.
    static func writeAsAnotherProcess(_ r: Running, trust: TrustStore, summary: String, ahead: UInt64 = 0) throws {
        let other = try SQLiteStore(path: r.storePath, sealer: try StorageKeySealer(key: SecretBytes(copying: r.storageKey)))
        let writer = Replicator(identity: r.identity, trust: trust, store: other)
        writer.addKey(NodeTests.stationKey)
        try writer.restoreClock()
        let now = UInt64(Date().timeIntervalSince1970 * 1000) + ahead
        var clock = writer.clock
        var g = SystemRandomNumberGenerator()
        let edit = Incident.create(id: RecordID.random(using: &g), scope: NodeTests.village, author: r.identity.id,
                                   hlc: try clock.now(wall: now), category: .dispute, priority: .urgent,
                                   location: Location(latitude: 33.4, longitude: 104.9), summary: summary, reportedAt: Int64(now),
                                   reporter: "walk-in")
        try writer.write([edit], scope: NodeTests.village, priority: .urgent, now: now)
    }

    @Test(.timeLimit(.minutes(1))) func aWriteTravelsOnTheOpenSessionWithoutANewOne() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b")
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [try await DaemonTests.address(b)])
        // The contact session goes live on both sides and stays open.
        #expect(try await DaemonTests.eventually(20) { try await a.daemon.peers().first?.live == true })
        #expect(try await DaemonTests.eventually(20) { try await Self.live(b).count == 1 })
        let opened = try #require(try await Self.live(a).first)
        #expect(opened.initiator && opened.peer == b.identity.id && opened.pushes == 0)
        #expect(DaemonTests.sessionsEnded(a) == 0 && DaemonTests.sessionsEnded(b) == 0)

        // A write by another process into A's store reaches B on that session.
        let written = Date()
        try Self.writeAsAnotherProcess(a, trust: pki.trust, summary: "pushed live")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 1 }, "B did not receive A's write")
        print("live session: write in another connection to record at the peer in \(Int(Date().timeIntervalSince(written) * 1000)) ms")
        // The same session carried it: still one session on each side, none ended, one push.
        let after = try #require(try await Self.live(a).first)
        #expect(after.since == opened.since && after.pushes == 1 && after.changesSent == 1, "\(after)")
        let (runningA, runningB) = (try await Self.running(a), try await Self.running(b))
        #expect(runningA == 1 && runningB == 1)
        #expect(DaemonTests.sessionsEnded(a) == 0 && DaemonTests.sessionsEnded(b) == 0)
        #expect(DaemonTests.metric(a, "fieldsync_live_pushes_total") == 1 && DaemonTests.metric(a, "fieldsync_sessions_live") == 1)
        // Traffic is counted while the session is open.
        #expect(try await DaemonTests.eventually(20) { DaemonTests.metric(b, "fieldsync_changes_applied_total") == 1 })
        #expect((DaemonTests.metric(a, "fieldsync_bytes_out_total") ?? 0) > 0)

        // B writes: A gets it on the same session, and nothing is echoed back.
        try await NodeTests.write(b.node, count: 1, tag: "from b")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(a.node).count == 2 })
        #expect(try await DaemonTests.eventually(20) { try await Self.live(b).first?.pushes == 1 })
        #expect(try await Self.live(a).first?.changesSent == 1)
        #expect(try await Self.running(a) == 1)
        #expect(DaemonTests.sessionsEnded(a) == 0 && DaemonTests.sessionsEnded(b) == 0)

        // Status: A shows B live with its push; B shows A as an incoming peer, live.
        let status = try await a.daemon.status()
        let peer = try #require(status.peers.first)
        #expect(status.sessionsLive == 1 && peer.liveSince == opened.since && peer.livePushes == 1, "\(status)")
        #expect(peer.changesSent == 1 && peer.changesReceived == 1 && peer.role == "backpack" && peer.nextAttemptAt == nil, "\(peer)")
        let bs = try await b.daemon.status()
        #expect(bs.peers.count == 1 && bs.peers.first?.source == "incoming" && bs.peers.first?.liveSince != nil, "\(bs.peers)")

        // Drain: the idle live session closes at once, a normal end on both sides.
        let stopping = Date()
        #expect(try await a.daemon.shutdown(grace: .seconds(20)) == 0)
        #expect(Date().timeIntervalSince(stopping) < 10, "an idle live session does not wait for the grace period")
        let ended = try await DaemonTests.eventually(20) {
            DaemonTests.metric(b, #"fieldsync_sessions_total{outcome="finished",direction="in"}"#) == 1
        }
        let (bLive, bPeers) = (try await Self.live(b), try await b.daemon.status().peers)
        let stillRunning = try await Self.running(b)
        // In full parallel runs B used to keep this session (idle, with A's address) after A had shut
        // down: a PostgreSQL server started meanwhile by another test had inherited A's socket and held it
        // open (`PostgresFeedTests.theServerHoldsNoneOfTheCallersConnections`).
        #expect(ended, "B: \(bLive); \(bPeers)")
        #expect(stillRunning == 0)
        _ = try await b.daemon.shutdown(grace: .zero)
    }

    @Test(.timeLimit(.minutes(2))) func anIdleLiveSessionOutlivesTheIdleTimeout() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                            idle: .seconds(6))
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [try await DaemonTests.address(b)], idle: .seconds(6))
        #expect(try await DaemonTests.eventually(20) {
            let (la, lb) = (try await Self.live(a), try await Self.live(b))
            return la.count == 1 && lb.count == 1
        })
        let opened = try #require(try await Self.live(a).first)
        // Silence for two and a half idle timeouts: a session in its first exchange would have been cut
        // after one. (6 s, not less: the session's last exchange before it is idle, and the push below,
        // must each finish within one timeout; 300 ms failed in a loaded parallel run, and 2 s in a
        // clean-clone CI run beside the process suites.)
        try await TestClock.sleep(for: .seconds(15))
        #expect(try await Self.live(a).first?.since == opened.since)
        #expect(DaemonTests.sessionsEnded(a) == 0 && DaemonTests.sessionsEnded(b) == 0)
        // And it still carries changes.
        try await NodeTests.write(a.node, count: 2, tag: "after the silence")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 2 })
        #expect(try await Self.live(a).first?.since == opened.since && DaemonTests.sessionsEnded(a) == 0)
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// A fork proof goes out at once (issue 14, the simulator's equivocating device): a station records a
    /// fork when a second copy of a backpack's identity brings another change at the same seq; the proof
    /// reaches HQ over their live session with no further change. Before, a node pushed on live sessions
    /// only when its store's heads moved, and a proof moves none: HQ got it with the station's next change.
    @Test(.timeLimit(.minutes(1))) func aNewForkProofIsPushedOnLiveSessionsAtOnce() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hqID = try pki.device(.hq, scopes: [try Scope("longnan")])
        let hq = try await DaemonTests.start(hqID, trust: pki.trust, dir: dir, name: "hq")
        let st = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "st",
                                             peers: [try await DaemonTests.address(hq)])
        #expect(try await DaemonTests.eventually(20) { try await Self.live(st).count == 1 }, "the station and HQ are live")
        let forker = try pki.device(.backpack, scopes: [NodeTests.station])
        func forks(_ r: DaemonTests.Running) async throws -> Int { try await r.node.withReplicator { try $0.store.forks().count } }
        // The first branch reaches HQ through the station.
        let one = try await DaemonTests.start(forker, trust: pki.trust, dir: dir, name: "one", peers: [try await DaemonTests.address(st)], live: false)
        try await NodeTests.write(one.node, count: 1, tag: "branch one")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(hq.node).count == 1 }, "branch one at HQ")
        // HQ's receipt for it comes back to the station (a change of HQ's log): wait for it, so that no change
        // is on its way when the fork is recorded (a change arriving later would carry the proof out too).
        #expect(try await DaemonTests.eventually(20) {
            try await st.node.withReplicator { r in try r.store.holdings().keys.contains { $0.author == hqID.id } }
        }, "HQ's receipt at the station")
        try await TestClock.sleep(for: .milliseconds(500))
        _ = try await one.daemon.shutdown(grace: .seconds(5))
        // A copy of the same identity with an empty store writes seq 1 again: a fork, detected by the station.
        let two = try await DaemonTests.start(forker, trust: pki.trust, dir: dir, name: "two", peers: [try await DaemonTests.address(st)], live: false)
        try await NodeTests.write(two.node, count: 1, tag: "branch two")
        #expect(try await DaemonTests.eventually(20) { try await forks(st) >= 1 }, "the station recorded the fork")
        // Nothing else is written: the proof alone travels to HQ on the live session.
        #expect(try await DaemonTests.eventually(10) { try await forks(hq) >= 1 }, "HQ got the proof without a further change")
        #expect(try await Self.live(st).count >= 1)
        _ = try await two.daemon.shutdown(grace: .seconds(5))
        _ = try await st.daemon.shutdown(grace: .seconds(5))
        _ = try await hq.daemon.shutdown(grace: .seconds(5))
    }

    /// Keep-alive (issue 14): with keep-alives, an idle live session outlives the live idle limit (before:
    /// closed after it and handshaked again) and keep-alive frames cross it both ways while nothing is written.
    @Test(.timeLimit(.minutes(1))) func keepAlivesKeepAnIdleLiveSessionOpenPastTheLiveIdleLimit() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keep: (inout NodeConfiguration, inout DaemonOptions) -> Void = { c, _ in
            // Margins of 8 and 20 intervals: with 200 ms, a 700 ms live idle limit and 1.5 s, a full parallel
            // run on 2 cores let 700 ms pass without a keep-alive, and the session closed as idle.
            c.liveKeepAlive = KeepAlivePolicy(interval: 500, deadAfter: 10_000)
        }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                            liveIdle: .seconds(4), tune: keep)
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [try await DaemonTests.address(b)], liveIdle: .seconds(4), tune: keep)
        var first: LiveSession?
        #expect(try await DaemonTests.eventually(20) {
            first = try await Self.live(a).first
            return first != nil
        })
        let opened = try #require(first)
        // Three live idle limits of silence but for the keep-alives.
        try await TestClock.sleep(for: .seconds(12))
        let now = try #require(try await Self.live(a).first)
        #expect(now.since == opened.since, "the same session, not closed when idle and replaced")
        #expect(DaemonTests.sessionsEnded(a) == 0 && DaemonTests.sessionsEnded(b) == 0)
        // Nothing was written, yet bytes crossed both ways: keep-alives of 19 bytes (one per 500 ms without
        // sending, about 24 in 12 s; at least 2 asked for, as timers slip on a loaded machine).
        #expect(now.bytesIn - opened.bytesIn >= 2 * 19 && now.bytesOut - opened.bytesOut >= 2 * 19, "\(opened) -> \(now)")
        try await NodeTests.write(a.node, count: 1, tag: "after the silence")
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 1 })
        #expect(try await Self.live(a).first?.since == opened.since)
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// Keep-alive (issue 14): a live session whose path goes silent without a close or a reset (a half-open
    /// connection: here a link that drops every byte) is cut `peer_gone` within the keep-alive's `deadAfter`
    /// (before: it stayed open for ever, TCP keepalive cannot see it), and the node reconnects once the
    /// path is back.
    @Test(.timeLimit(.minutes(1))) func aHalfOpenLiveSessionIsCutWithinDeadAfter() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keep: (inout NodeConfiguration, inout DaemonOptions) -> Void = { c, _ in
            c.liveKeepAlive = KeepAlivePolicy(interval: 200, deadAfter: 3_000)  // 15 intervals: no false cut under load
        }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                            tune: keep)
        let bPort = try #require(await b.daemon.listeningPort)
        let link = try LinkEmulator(targetPort: bPort, profile: .clean, seed: 1)
        defer { link.stop() }
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [PeerAddress(host: "127.0.0.1", port: link.port)], tune: keep)
        var live: LiveSession?
        #expect(try await DaemonTests.eventually(20) {
            let (la, lb) = (try await Self.live(a), try await Self.live(b))
            live = la.first
            return la.count == 1 && lb.count == 1
        })
        let first = try #require(live)
        link.blackhole(true)
        let silent = Date()
        #expect(try await DaemonTests.eventually(20) {
            let (la, lb) = (try await Self.live(a), try await Self.live(b))
            return la.isEmpty && lb.isEmpty
        })
        let took = Date().timeIntervalSince(silent)
        #expect(took < 8, "cut \(took) s after the path went silent (deadAfter 3 s)")
        let (ca, cb) = (try await a.node.loop.submit { a.node.connectionCounters }.get(), try await b.node.loop.submit { b.node.connectionCounters }.get())
        #expect(ca.cut[CutReason.peerGone.rawValue] ?? 0 >= 1 && cb.cut[CutReason.peerGone.rawValue] ?? 0 >= 1, "\(ca) \(cb)")
        link.blackhole(false)
        #expect(try await DaemonTests.eventually(20) { (try await Self.live(a).first?.since ?? 0) > first.since }, "reconnected")
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// A peer that stops reading (a hung process, or a hostile one: a zero TCP window) while this node
    /// pushes to it: the session is cut (peer gone: nothing heard for `deadAfter`; or too slow) and its
    /// connection closes at once, although writes are still pending. Before, every close waited for the
    /// last write to leave, with no bound: the cut session kept its connection and its slot for ever (and
    /// so would a revoked peer's: the revocation's close waited the same way).
    @Test(.timeLimit(.minutes(1))) func aCutSessionClosesAtOnceWhenThePeerStopsReading() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keep: (inout NodeConfiguration, inout DaemonOptions) -> Void = { c, _ in
            c.liveKeepAlive = KeepAlivePolicy(interval: 500, deadAfter: 4_000)
        }
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                            tune: keep)
        let link = try LinkEmulator(targetPort: try #require(await b.daemon.listeningPort), profile: .clean, seed: 1, receiveBuffer: 4_096)
        defer { link.stop() }
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [PeerAddress(host: "127.0.0.1", port: link.port)], tune: keep)
        #expect(try await DaemonTests.eventually(20) {
            let (la, lb) = (try await Self.live(a), try await Self.live(b))
            return la.count == 1 && lb.count == 1
        })
        // A's socket toward the link gets a small send buffer, as behind a slow radio link (on loopback
        // the kernel would otherwise take A's whole window of batches, and no write would stay pending).
        #expect(Self.shrinkSendBuffers(towardPort: link.port) == 1, "A's connection to the link, found by its peer's port")
        link.freeze(true)
        // About 1 MB of changes: the live push sends eight batches ahead (about 400 KB), more than the
        // kernel's buffers take, so A's last writes stay pending.
        try await a.node.withReplicator { r in
            var g = SystemRandomNumberGenerator()
            for chunk in 0..<35 {
                let now = UInt64(Date().timeIntervalSince1970 * 1000)
                var clock = r.clock
                let edits = try (0..<45).map { n in
                    Incident.create(id: RecordID.random(using: &g), scope: NodeTests.village, author: r.identity.id,
                                    hlc: try clock.now(wall: now), category: .dispute, priority: .normal,
                                    location: Location(latitude: 33.4, longitude: 104.9),
                                    summary: String(repeating: "\(chunk)-\(n) ", count: 500).prefix(500).description,
                                    reportedAt: Int64(now), reporter: "walk-in")
                }
                try r.write(edits, scope: NodeTests.village, priority: .normal, now: now)
            }
        }
        let frozen = Date()
        let closed = try await DaemonTests.eventually(30) {
            let (live, running) = (try await Self.live(a), try await Self.running(a))
            return live.isEmpty && running == 0
        }
        #expect(closed, "A's session to a peer that reads nothing is still open")
        let took = Date().timeIntervalSince(frozen)
        #expect(took < 20, "closed \(took) s after the peer stopped reading (deadAfter 4 s)")
        let counters = try await a.node.loop.submit { a.node.connectionCounters }.get()
        #expect((counters.cut[CutReason.peerGone.rawValue] ?? 0) + (counters.cut[CutReason.tooSlow.rawValue] ?? 0) >= 1, "\(counters)")
        link.stop()
        _ = try await a.daemon.shutdown(grace: .seconds(2))
        _ = try await b.daemon.shutdown(grace: .seconds(2))
    }

    /// Sets an 8 KB send buffer on this process's TCP sockets connected to 127.0.0.1:`port`.
    /// - Returns: how many sockets it found.
    static func shrinkSendBuffers(towardPort port: Int) -> Int {
        var found = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            guard let fd = Int32(name) else { continue }
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) == 0 }
            }
            guard ok, addr.sin_family == sa_family_t(AF_INET), Int(UInt16(bigEndian: addr.sin_port)) == port else { continue }
            var size: Int32 = 4_096
            if setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size)) == 0 { found += 1 }
        }
        return found
    }

    @Test(.timeLimit(.minutes(1))) func aStoppedPeerEndsTheSessionAndIsReconnectedWhenBack() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bID = try pki.device(.backpack, scopes: [NodeTests.station])
        // A port from the test process's own sequence, below the ephemeral range: B is restarted on it
        // below, and a kernel-chosen port was taken meanwhile by another test's outgoing connection in a
        // CI run ("Address already in use").
        var b = try await DaemonTests.start(bID, trust: pki.trust, dir: dir, name: "b", port: try ProcessWorld.freePort())
        let bAddress = try await DaemonTests.address(b)
        // Only A knows B: whatever reconnects is A's scheduler.
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [bAddress])
        #expect(try await DaemonTests.eventually(20) { try await a.daemon.peers().first?.live == true })
        let first = try #require(try await Self.live(a).first)

        // B stops: A's live session ends normally, and A's attempts to reconnect fail meanwhile.
        _ = try await b.daemon.shutdown(grace: .seconds(5))
        let ended = try await DaemonTests.eventually(20) { try await Self.live(a).isEmpty }
        let aLive = try await Self.live(a)
        #expect(ended, "A: \(aLive)")
        #expect(DaemonTests.metric(a, #"fieldsync_sessions_total{outcome="finished",direction="out"}"#) == 1)
        guard ended else {  // the rest needs the session ended
            _ = try await a.daemon.shutdown(grace: .zero)
            return
        }
        #expect(try await DaemonTests.eventually(20) { (try await a.daemon.peers().first?.failures ?? 0) >= 1 })
        try await NodeTests.write(a.node, count: 3, tag: "while b was away")

        // B comes back on the same port and store: A reconnects, goes live again, and B catches up.
        b = try await DaemonTests.start(bID, trust: pki.trust, dir: dir, name: "b", port: bAddress.port, storageKey: b.storageKey)
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(b.node).count == 3 })
        #expect(try await DaemonTests.eventually(20) { try await a.daemon.peers().first?.live == true })
        let second = try #require(try await Self.live(a).first)
        #expect(second.since > first.since && second.peer == bID.id)
        #expect(try await a.daemon.peers().first?.failures == 0)
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// A change refused as dated ahead of the receiver's clock is acknowledged, so the live session does
    /// not offer it again; the receiver closes the session once the change may be accepted, and the next
    /// session's reconciliation delivers it (Protocols/sync.md §4.1).
    @Test(.timeLimit(.minutes(3))) func aChangeRefusedAsEarlyArrivesThroughANewSession() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // B tolerates 1 s of clock skew; A's change is dated 8 s ahead: the push must reach B within 7 s to
        // be refused (at 2.5 s ahead, a full parallel run on 2 cores delivered it after B's clock allowed it,
        // on the live session, and nothing was left to test).
        let strict = TrustStore(root: pki.rootKey.publicKey, clockSkewMilliseconds: 1_000)
        // Idle timeouts far beyond the test: only the deferral may end the live session.
        let b = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: strict, dir: dir, name: "b",
                                            idle: .seconds(120))
        let a = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                            peers: [try await DaemonTests.address(b)], idle: .seconds(120))
        #expect(try await DaemonTests.eventually(20) { try await Self.live(b).count == 1 })
        let opened = try #require(try await Self.live(b).first)
        try Self.writeAsAnotherProcess(a, trust: pki.trust, summary: "from a fast clock", ahead: 8_000)
        // Pushed and refused on the live session (acknowledged, not stored).
        #expect(try await DaemonTests.eventually(20) { try await Self.live(a).first?.pushes == 1 })
        #expect(try await NodeTests.state(b.node).isEmpty)
        // B closes the live session once its clock allows the change (7 s); A reconnects; the change
        // arrives. (60 s: 20 did not suffice in a clean-clone CI run beside the process suites.)
        #expect(try await DaemonTests.eventually(60) { try await NodeTests.state(b.node).count == 1 })
        #expect(DaemonTests.metric(b, #"fieldsync_sessions_total{outcome="finished",direction="in"}"#) == 1)
        #expect(try await DaemonTests.eventually(60) { (try await Self.live(b).first?.since ?? 0) > opened.since })
        _ = try await a.daemon.shutdown(grace: .seconds(5))
        _ = try await b.daemon.shutdown(grace: .seconds(5))
    }

    /// Changes a relay's store refused for its quota were acknowledged, so its live session does not offer
    /// them again; the relay closes the session once idle `refusedRetry` after the refusal, and the next
    /// session's reconciliation offers them again (refused again here: the quota is still full).
    @Test(.timeLimit(.minutes(1))) func changesRefusedForQuotaAreOfferedAgainByANewSession() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let relay = try await DaemonTests.start(try pki.device(.relay, scopes: [NodeTests.station]), trust: pki.trust, dir: dir,
                                                name: "relay", keys: [], quota: 4_000, idle: .seconds(120), refusedRetry: .seconds(1))
        let bp = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "bp",
                                             peers: [try await DaemonTests.address(relay)], idle: .seconds(120))
        #expect(try await DaemonTests.eventually(20) { try await Self.live(relay).count == 1 })
        try await NodeTests.write(bp.node, count: 30, tag: "backpack")  // pushed on the live session
        let refused = "fieldsync_changes_refused_total"
        #expect(try await DaemonTests.eventually(20) { (DaemonTests.metric(relay, refused) ?? 0) > 0 })
        let first = DaemonTests.metric(relay, refused) ?? 0
        // The relay closes the live session (its retry delay is 1 s) and the backpack opens a new one. Not
        // checked by catching the new session live: while the relay is still full, a new session whose
        // reconciliation (which the relay refuses again) takes longer than the retry delay closes as soon as it
        // goes live, so on a loaded machine no poll may see it live (a CI run failed so, with the re-offer
        // below seen). The ended session is counted; the re-offer is the point.
        #expect(try await DaemonTests.eventually(20) {
            DaemonTests.metric(relay, #"fieldsync_sessions_total{outcome="finished",direction="in"}"#).map { $0 >= 1 } == true
        }, "the relay closed the live session")
        #expect(try await DaemonTests.eventually(20) { (DaemonTests.metric(relay, refused) ?? 0) > first },
                "the new session offered the refused changes again")
        let held = try await relay.node.withReplicator { try $0.store.status() }
        #expect(held.changeBytes <= 4_000 && held.changes < 30)
        _ = try await bp.daemon.shutdown(grace: .seconds(5))
        _ = try await relay.daemon.shutdown(grace: .seconds(5))
    }

    /// Two nodes that open a session to each other keep one: the one the smaller device id opened.
    @Test(.timeLimit(.minutes(1))) func twoLiveSessionsBetweenTheSamePairSettleOnOne() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trust = pki.trust
        func node(_ id: DeviceIdentity, _ name: String) throws -> FieldSyncNode {
            var config = NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))
            config.liveSessions = true
            return try FieldSyncNode(configuration: config) {
                let store = try SQLiteStore(path: "\(dir)/\(name).sqlite", sealer: try StorageKeySealer(key: SecretBytes.random(count: 32)))
                let r = Replicator(identity: id, trust: trust, store: store)
                r.addKey(NodeTests.stationKey)
                return r
            }
        }
        let xID = try pki.device(.station, scopes: [NodeTests.station]), yID = try pki.device(.backpack, scopes: [NodeTests.station])
        let x = try node(xID, "x"), y = try node(yID, "y")
        let lx = try await x.listen(host: "127.0.0.1", port: 0), ly = try await y.listen(host: "127.0.0.1", port: 0)
        func live(_ n: FieldSyncNode) async throws -> [LiveSession] { try await n.loop.submit { n.liveSessions }.get() }
        func bothLive() async throws -> Bool {
            let (sx, sy) = (try await live(x), try await live(y))
            return sx.count == 1 && sy.count == 1
        }
        // X opens a session to Y; it goes live. Then Y opens one to X.
        let xToY = Task.onOwnThread { try await x.sync(host: "127.0.0.1", port: try NodeTests.port(ly)) }
        #expect(try await DaemonTests.eventually(20) { try await bothLive() })
        let yToX = Task.onOwnThread { try await y.sync(host: "127.0.0.1", port: try NodeTests.port(lx)) }
        let xOpens = xID.id < yID.id
        // The one the larger id opened ends normally (closed by both sides once idle); one stays on each side.
        let closed = try await (xOpens ? yToX : xToY).value
        #expect(closed.isFinished && closed.liveSince != nil, "\(closed)")
        #expect(try await DaemonTests.eventually(20) { try await bothLive() })
        #expect(try await live(x).first?.initiator == xOpens)
        #expect(try await live(y).first?.initiator == !xOpens)
        // The kept one still carries changes.
        try await NodeTests.write(x, count: 1, tag: "x")
        #expect(try await x.loop.submit { x.pushLive() }.get() == 1)
        #expect(try await DaemonTests.eventually(20) { try await NodeTests.state(y).count == 1 })
        _ = try await x.drain(grace: .seconds(5))
        _ = try await y.drain(grace: .seconds(5))
        _ = try await (xOpens ? xToY : yToX).value
        try await lx.close()
        try await ly.close()
        try await x.shutdown()
        try await y.shutdown()
    }
}
