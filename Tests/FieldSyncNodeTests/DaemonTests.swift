import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NIOCore
import NIOPosix
import Prometheus
import Testing

/// Daemons on 127.0.0.1 in one process: live push, peers added at run time, relay quota, status, drain.
@Suite(.ownThread) struct DaemonTests {
    /// A daemon with its store file and storage key (so a second "process" can open the same store).
    struct Running {
        let daemon: NodeDaemon
        let registry: PrometheusCollectorRegistry
        let storePath: String
        let storageKey: [UInt8]
        let identity: DeviceIdentity
        var node: FieldSyncNode { daemon.node }
    }

    /// Starts a daemon on 127.0.0.1 (`port` 0: an ephemeral one) with live sessions unless `live` is false;
    /// `storageKey` reopens the store of an earlier run of the same device.
    static func start(_ id: DeviceIdentity, trust: TrustStore, dir: String, name: String, keys: [EpochKey] = [NodeTests.stationKey],
                      quota: Int? = nil, peers: [PeerAddress] = [], idle: TimeAmount = .seconds(5), live: Bool = true,
                      port: Int = 0, storageKey: [UInt8]? = nil, refusedRetry: TimeAmount = .minutes(10),
                      liveIdle: TimeAmount? = .minutes(10),
                      tune: (inout NodeConfiguration, inout DaemonOptions) -> Void = { _, _ in }) async throws -> Running {
        var config = NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))
        config.idleTimeout = idle
        config.liveIdleTimeout = liveIdle
        config.refusedRetry = refusedRetry
        config.liveSessions = live
        let storePath = "\(dir)/\(name).sqlite"
        let key = storageKey ?? (0..<32).map { _ in UInt8.random(in: 0...255) }
        var options = DaemonOptions(listenHost: "127.0.0.1", listenPort: port)
        options.policy.resyncInterval = 600_000  // only pushes and contacts deliver within a test
        options.policy.pushDebounce = 50
        options.policy.backoffMin = 100
        options.policy.backoffMax = 1_000
        options.pollInterval = 100
        options.tick = 20
        options.staticPeers = peers
        options.statusPath = "\(dir)/\(name).status.json"
        options.seed = 1
        tune(&config, &options)
        let trace = ProcessInfo.processInfo.environment["FIELDSYNC_TEST_NODE_LOG"] != nil
        let tag = "\((dir as NSString).lastPathComponent)/\(name)"
        let node = try FieldSyncNode(configuration: config, log: { line in if trace { print("NODE \(tag) \(Date().timeIntervalSince1970) \(line)") } }) {
            let store = try SQLiteStore(path: storePath, sealer: try StorageKeySealer(key: SecretBytes(copying: key)),
                                        limits: StoreLimits(quotaBytes: quota))
            let r = Replicator(identity: id, trust: trust, store: store)
            for k in keys { r.addKey(k) }
            return r
        }
        let registry = PrometheusCollectorRegistry()
        let daemon = NodeDaemon(node: node, options: options, metrics: NodeMetrics(factory: PrometheusMetricsFactory(registry: registry)))
        try await daemon.start()
        return Running(daemon: daemon, registry: registry, storePath: storePath, storageKey: key, identity: id)
    }

    static func address(_ r: Running) async throws -> PeerAddress {
        guard let port = await r.daemon.listeningPort else { throw NodeError("not listening") }
        return PeerAddress(host: "127.0.0.1", port: port)
    }

    /// Polls `condition` every 20 ms until it holds or `seconds` pass.
    static func eventually(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await TestClock.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    /// Whether the scheduler's peer has synced: a finished session, or one that is live now.
    static func synced(_ p: PeerState?) -> Bool { p?.lastSessionFinished == true || p?.live == true }

    /// Sessions that ended (finished or failed, either direction), from the metrics.
    static func sessionsEnded(_ r: Running) -> Int {
        [#"outcome="finished",direction="in""#, #"outcome="finished",direction="out""#, #"outcome="failed",direction="in""#,
         #"outcome="failed",direction="out""#].reduce(0) { $0 + (metric(r, "fieldsync_sessions_total{\($1)}") ?? 0) }
    }

    static func metric(_ r: Running, _ line: String) -> Int? {
        let text = r.registry.emitToString()
        for l in text.split(separator: "\n") where l.hasPrefix(line + " ") {
            return Int(Double(l.split(separator: " ").last ?? "") ?? -1)
        }
        return nil
    }

    /// With `sessions.live` false, the old behaviour: every burst of changes is a new session.
    @Test(.timeLimit(.minutes(1))) func writeInAnotherProcessIsPushedWithoutAManualSync() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = try await Self.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b",
                                     live: false)
        let a = try await Self.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                     live: false)
        // B is found at run time (as discovery would report it); the contact sync runs at once.
        a.daemon.addPeer(host: "127.0.0.1", port: try await Self.address(b).port, source: .discovered)
        #expect(try await Self.eventually(20) { try await a.daemon.peers().first?.lastSessionFinished == true })

        // A write to A's store by another connection (the CLI is another process; same file, same key).
        let other = try SQLiteStore(path: a.storePath, sealer: try StorageKeySealer(key: SecretBytes(copying: a.storageKey)))
        let writer = Replicator(identity: a.identity, trust: pki.trust, store: other)
        writer.addKey(NodeTests.stationKey)
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        var clock = writer.clock
        var g = SystemRandomNumberGenerator()
        let edit = Incident.create(id: RecordID.random(using: &g), scope: NodeTests.village, author: a.identity.id,
                                   hlc: try clock.now(wall: now), category: .dispute, priority: .urgent,
                                   location: Location(latitude: 33.4, longitude: 104.9), summary: "pushed", reportedAt: Int64(now),
                                   reporter: "walk-in")
        let written = Date()
        try writer.write([edit], scope: NodeTests.village, priority: .urgent, now: now)
        let arrived = try await Self.eventually(20) { try await NodeTests.state(b.node).count == 1 }
        let latency = Date().timeIntervalSince(written)
        #expect(arrived, "B did not receive A's write")
        print("live push: write in another connection to record at the peer in \(Int(latency * 1000)) ms")

        // Status: the peer is listed as discovered, synced, with its device; the file says the same. (A
        // records the session when its side closes, just after B applied the batch.)
        #expect(try await Self.eventually(20) { try await a.daemon.status().peers.first?.changesSent == 1 })
        let status = try await a.daemon.status()
        #expect(status.state == "running" && status.role == "station" && status.device == a.identity.id.description)
        let peer = try #require(status.peers.first)
        #expect(status.peers.count == 1 && peer.source == "discovered" && peer.device == b.identity.id.description)
        #expect(peer.lastOutcome == "finished" && peer.changesSent == 1 && peer.role == "backpack", "\(peer)")
        #expect(try await Self.eventually(20) { (try? DaemonStatus.read(from: "\(dir)/a.status.json"))?.peers.first?.changesSent == 1 })
        // B saw A only as an incoming peer.
        #expect(try await Self.eventually(20) { try await b.daemon.status().peers.first?.changesReceived == 1 })
        let bs = try await b.daemon.status()
        #expect(bs.peers.map(\.source) == ["incoming"] && bs.peers.first?.device == a.identity.id.description, "\(bs.peers)")
        // Store report: A's own log holds the change, unreceipted (no HQ here).
        let report = try await a.node.withReplicator { try StoreReport.read($0) }
        #expect(report.pendingToHQ == 1 && report.logs.filter(\.own).map(\.frontier) == [1])
        #expect(Self.metric(a, #"fieldsync_sessions_total{outcome="finished",direction="out"}"#).map { $0 >= 2 } == true,
                "\(a.registry.emitToString())")
        #expect(try await Self.eventually(20) { Self.metric(b, "fieldsync_changes_applied_total") == 1 })
        #expect(try await Self.eventually(20) { Self.metric(a, "fieldsync_pending_to_hq") == 1 })
        // No session stayed open: the contact and the push were two sessions that finished.
        #expect(try await a.node.loop.submit { a.node.liveSessionCount }.get() == 0 && status.sessionsLive == 0)
        #expect(Self.metric(a, "fieldsync_live_pushes_total") == 0)

        #expect(try await a.daemon.shutdown(grace: .seconds(2)) == 0)
        #expect(try DaemonStatus.read(from: "\(dir)/a.status.json").state == "stopped")
        try await b.daemon.shutdown(grace: .seconds(2))
    }

    @Test(.timeLimit(.minutes(1))) func relayQuotaRefusalIsReported() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let relay = try await Self.start(try pki.device(.relay, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "relay",
                                         keys: [], quota: 4_000)
        let bp = try NodeTests.node(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "bp")
        try await NodeTests.write(bp, count: 30, tag: "backpack")
        let result = try await bp.sync(host: "127.0.0.1", port: try await Self.address(relay).port)
        #expect(result.changesSent == 30, "\(result)")
        let held = try await relay.node.withReplicator { try $0.store.status() }
        #expect(held.changeBytes <= 4_000 && held.changes < 30, "\(held)")
        // Issue 19: the sender is told (`ack-refused`): not `sent 30 (acked 30)`.
        #expect(result.isFinished && result.changesAcknowledged == held.changes && result.changesRefusedByPeer == 30 - held.changes,
                "\(result)")
        #expect(result.refusedByPeer == ["quota": 30 - held.changes])
        #expect(result.description.contains("sent 30 (acked \(held.changes), refused \(30 - held.changes) by the peer: relay full)"), "\(result)")
        #expect(try await Self.eventually(20) { (Self.metric(relay, "fieldsync_changes_refused_total") ?? 0) == 30 - held.changes },
                "\(relay.registry.emitToString())")
        #expect(Self.metric(relay, "fieldsync_changes_applied_total") == held.changes)
        // (Metrics grow while a session runs; the peer is listed once the relay's side of the session ended.)
        #expect(try await Self.eventually(20) { try await relay.daemon.status().peers.first?.source == "incoming" })
        let status = try await relay.daemon.status()
        #expect(status.role == "relay" && status.peers.first?.source == "incoming")
        // The status file counts the refusals too (issue 19: `fieldsync status` shows them, not only the metric).
        #expect(status.changesRefused == 30 - held.changes, "\(String(describing: status.changesRefused))")
        // The quota and the certificate's remaining life are metrics, for the alerts relay-ops.md suggests.
        #expect(try await Self.eventually(20) { Self.metric(relay, "fieldsync_store_quota_bytes") == 4_000 }, "\(relay.registry.emitToString())")
        #expect((Self.metric(relay, "fieldsync_certificate_expiry_seconds") ?? 0) > 0, "\(relay.registry.emitToString())")
        try await relay.daemon.shutdown(grace: .seconds(1))
        try await bp.shutdown()
    }

    /// Issue 19: a sender daemon whose changes a full relay refused shows it in its status file (per peer
    /// and in total), its metrics (`fieldsync_changes_refused_by_peer_total{reason="quota"}`) and its
    /// session log line, instead of counting them as acknowledged.
    @Test(.timeLimit(.minutes(1))) func aSenderDaemonSeesWhatAFullRelayRefused() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let relay = try await Self.start(try pki.device(.relay, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "relay",
                                         keys: [], quota: 4_000)
        let bp = try await Self.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "bp",
                                      live: false)
        // Written before the relay becomes a peer: one session carries all 30.
        try await NodeTests.write(bp.node, count: 30, tag: "backpack")
        bp.daemon.addPeer(host: "127.0.0.1", port: try await Self.address(relay).port, source: .static)
        #expect(try await Self.eventually(20) { (try await bp.daemon.status().refusedByPeers?["quota"] ?? 0) > 0 })
        let held = try await relay.node.withReplicator { try $0.store.status() }
        let refused = 30 - held.changes
        #expect(held.changes < 30 && refused > 0, "\(held)")
        let status = try await bp.daemon.status()
        #expect(status.refusedByPeers == ["quota": refused], "\(String(describing: status.refusedByPeers))")
        #expect(status.peers.first?.refusedByPeer == ["quota": refused], "\(status.peers)")
        #expect(try await Self.eventually(20) { try DaemonStatus.read(from: "\(dir)/bp.status.json").refusedByPeers == ["quota": refused] },
                "the status file says it too")
        #expect(try await Self.eventually(20) { Self.metric(bp, #"fieldsync_changes_refused_by_peer_total{reason="quota"}"#) == refused },
                "\(bp.registry.emitToString())")
        try await bp.daemon.shutdown(grace: .seconds(1))
        try await relay.daemon.shutdown(grace: .seconds(1))
    }

    @Test(.timeLimit(.minutes(1))) func relayForwardsWhatItCannotRead() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let station = try await Self.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "st")
        let relay = try await Self.start(try pki.device(.relay, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "relay",
                                         keys: [], peers: [try await Self.address(station)])
        let bp = try await Self.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "bp",
                                      peers: [try await Self.address(relay)])
        #expect(try await Self.eventually(20) { Self.synced(try await bp.daemon.peers().first) })
        // Written after start: backpack -> relay (push), relay -> station (push of what it just stored).
        try await NodeTests.write(bp.node, count: 3, tag: "backpack")
        #expect(try await Self.eventually(20) { try await NodeTests.state(station.node).count == 3 })
        let held = try await relay.node.withReplicator { try $0.store.status() }
        #expect(held.changes == 3 && held.unopened == 3 && held.records == 0, "the relay stores ciphertext only: \(held)")
        for d in [bp, relay, station] { try await d.daemon.shutdown(grace: .seconds(1)) }
    }

    @Test(.timeLimit(.minutes(1))) func metricsEndpointServesPrometheusText() async throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = NodeMetrics(factory: PrometheusMetricsFactory(registry: registry))
        var r = SessionResult(outcome: .finished, initiator: true)
        r.bytesIn = 100
        r.bytesOut = 250
        r.changesReceived = 5
        r.changesRefused = 2
        metrics.record(r)
        metrics.pendingToHQ.record(7)
        let endpoint = try await MetricsEndpoint.start(registry: registry, host: "127.0.0.1", port: 0)
        let port = try #require(endpoint.channel.localAddress?.port)
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        let text = String(decoding: data, as: UTF8.self)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        for line in [#"fieldsync_sessions_total{outcome="finished",direction="out"} 1"#, "fieldsync_bytes_in_total 100",
                     "fieldsync_bytes_out_total 250", "fieldsync_changes_applied_total 3", "fieldsync_changes_refused_total 2",
                     "fieldsync_pending_to_hq 7.0"] {
            #expect(text.contains(line + "\n"), "\(line) missing from:\n\(text)")
        }
        let (_, other) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/")!)
        #expect((other as? HTTPURLResponse)?.statusCode == 404)
        await endpoint.stop()
    }

    /// A station daemon holding one session that never progresses: a silent client whose handshake never
    /// completes. A long idle timeout and handshake deadline, and no progress check, so that on a loaded
    /// machine the session is certainly still there when the test drains. Shut `group` down at the end.
    static func stalledSession(dir: String) async throws -> (Running, any Channel, MultiThreadedEventLoopGroup) {
        var pki = NodeTests.PKI()
        let a = try await start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                idle: .seconds(50), tune: { config, _ in config.handshakeTimeout = .seconds(120); config.minProgressBytes = 0 })
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let silent = try await ClientBootstrap(group: group).connect(host: "127.0.0.1", port: try await address(a).port).get()
        #expect(try await eventually(20) { try await a.node.loop.submit { a.node.runningSessions }.get() == 1 })
        return (a, silent, group)
    }

    @Test(.timeLimit(.minutes(1))) func shutdownDrainsThenCutsStalledSessions() async throws {
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, silent, group) = try await Self.stalledSession(dir: dir)
        let started = Date()
        let cut = try await a.daemon.shutdown(grace: .milliseconds(300))
        let took = Date().timeIntervalSince(started)
        #expect(cut == 1 && took >= 0.3 && took < 20, "cut \(cut) after \(took) s")
        try await silent.closeFuture.get()
        #expect(try DaemonStatus.read(from: "\(dir)/a.status.json").state == "stopped")
        try await group.shutdownOffThePool()
    }

    /// The drain and the shutdown after it wait on the node's event loop and on a queue of the node's own:
    /// with every thread of Swift's cooperative pool busy (an app's own work, or the other tests of a
    /// parallel run), a 300 ms grace still ends in about 300 ms and the whole shutdown soon after. The
    /// drain used to poll with `Task.sleep`, whose wake-ups wait for a free pool thread; the shutdown
    /// used NIO's `shutdownGracefully()`, which completes on `DispatchQueue.global()`, whose threads on
    /// Linux are the pool's: it waited for the busy tasks to end (9.6 s here, 36 to 39 s in a full run).
    @Test(.timeLimit(.minutes(1))) func theDrainAndShutdownEndOnTimeWhileThePoolIsBusy() async throws {
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, silent, group) = try await Self.stalledSession(dir: dir)
        CooperativePool.occupy(for: .seconds(10))
        try await TestClock.sleep(for: .milliseconds(100))  // the busy tasks have started
        let started = Date()
        let cut = try await a.node.drain(grace: .milliseconds(300))
        let took = Date().timeIntervalSince(started)
        #expect(cut == 1 && took >= 0.3 && took < 5, "cut \(cut) after \(took) s")
        try await silent.closeFuture.get()
        let stopping = Date()
        _ = try await a.daemon.shutdown(grace: .zero)
        let stopped = Date().timeIntervalSince(stopping)
        #expect(stopped < 5, "the shutdown after the drain took \(stopped) s")
        try await group.shutdownOffThePool()
    }

    @Test(.timeLimit(.minutes(1))) func unreachablePeerIsRetriedWithBackoff() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A port nobody listens on, held for the whole test: a socket bound to it without `listen`, so a
        // connection is refused and no other test's listener can take the port (bound then closed, it was
        // taken by another test's server in a CI run, and the sessions "stalled" instead).
        let held = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(held) }
        var address = RawSocket.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(held, $0, length) == 0 && getsockname(held, $0, &length) == 0 }
        }
        #expect(held >= 0 && bound)
        let dead = Int(UInt16(bigEndian: address.sin_port))
        let a = try await Self.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "a",
                                     peers: [PeerAddress(host: "127.0.0.1", port: dead)])
        #expect(try await Self.eventually(20) { (try await a.daemon.peers().first?.failures ?? 0) >= 3 })
        let p = try #require(try await a.daemon.peers().first)
        #expect(p.source == .static && p.lastSessionFinished == false)
        let status = try await a.daemon.status()
        #expect(status.peers.first?.lastError?.contains("cannot connect") == true, "\(status.peers)")
        try await a.daemon.shutdown(grace: .seconds(1))
    }
}

/// What `fieldsync status` reports of this node's own records once HQ's receipt comes back.
@Suite(.ownThread) struct StatusReportTests {
    @Test(.timeLimit(.minutes(1))) func ownRecordsReceiptedByHQ() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = try Scope("longnan")
        let station = try NodeTests.node(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "st")
        let hq = try NodeTests.node(try pki.device(.hq, scopes: [root]), trust: pki.trust, dir: dir, name: "hq")
        let listener = try await hq.listen(host: "127.0.0.1", port: 0)
        let port = try NodeTests.port(listener)
        try await NodeTests.write(station, count: 2, tag: "before")
        #expect(try await station.sync(host: "127.0.0.1", port: port).isFinished)
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        try await hq.withReplicator { _ = try $0.writeReceipt(scope: root, now: now) }
        try await NodeTests.write(station, count: 1, tag: "after")  // written after HQ's receipt
        #expect(try await station.sync(host: "127.0.0.1", port: port).isFinished)

        let (report, own) = try await station.withReplicator { (try StoreReport.read($0), try OwnRecordReceipt.read($0)) }
        let ownLog = try #require(report.logs.first { $0.own })
        // The third change reached HQ in the second session, after the receipt was written.
        #expect(ownLog.frontier == 3 && ownLog.receipted == 2 && report.pendingToHQ == 1, "\(report.logs)")
        #expect(own.count == 3 && own.filter(\.reachedHQ).count == 2, "\(own)")
        #expect(own.allSatisfy { $0.ownChanges == 1 && $0.kind == .incident })
        #expect(report.logs.contains { $0.log.author != ownLog.log.author && $0.log.scope == root }, "HQ's receipt log is held")
        try await listener.close()
        try await station.shutdown()
        try await hq.shutdown()
    }
}

/// What another process writes into a running daemon's store takes effect in the daemon: a revocation
/// published through a second connection (as `fieldsync publish` does) locks the device out of the
/// running station without a restart.
@Suite(.ownThread) struct DaemonReloadTests {
    @Test(.timeLimit(.minutes(1))) func aRevocationPublishedByAnotherProcessTakesEffectWithoutARestart() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stationID = try pki.device(.station, scopes: [NodeTests.station])
        let station = try await DaemonTests.start(stationID, trust: pki.trust, dir: dir, name: "st")
        let thiefID = try pki.device(.backpack, scopes: [NodeTests.station])
        let thief = try NodeTests.node(thiefID, trust: pki.trust, dir: dir, name: "thief")
        let port = try await DaemonTests.address(station).port
        try await NodeTests.write(thief, count: 1, tag: "before")
        #expect(try await thief.sync(host: "127.0.0.1", port: port).isFinished, "before the revocation")

        // `fieldsync publish` in another process: same file, same storage key, a revocation control change.
        let other = try SQLiteStore(path: station.storePath, sealer: try StorageKeySealer(key: SecretBytes(copying: station.storageKey)))
        let writer = Replicator(identity: stationID, trust: pki.trust, store: other)
        try writer.restoreClock()
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let revocation = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial,
                                        revokedAt: HLCTimestamp(milliseconds: now, counter: 0), reason: .stolen, note: "",
                                        by: Authority(root: pki.rootKey))
        _ = try writer.writeControl(.revocation, payload: revocation.canonicalBytes, scope: NodeTests.station, now: now)

        #expect(try await DaemonTests.eventually(20) {
            try await station.node.withReplicator { $0.trust.revocation(of: thiefID.certificate) != nil }
        }, "the daemon learned the revocation from its store")
        try await NodeTests.write(thief, count: 1, tag: "after")
        let refused = try await thief.sync(host: "127.0.0.1", port: port)
        #expect(!refused.isFinished && refused.changesAcknowledged == 0, "the revoked device synced: \(refused)")
        #expect(try await station.node.withReplicator { try $0.store.status().changes } == 2, "its first change and the revocation only")
        try await thief.shutdown()
        _ = try await station.daemon.shutdown(grace: .zero)
    }
}
