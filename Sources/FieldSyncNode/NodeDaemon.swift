// The running daemon: a `FieldSyncNode` listening, the driver policy (`SyncDriver`, FieldSyncDriver)
// deciding when to open sessions to which peer, a poll of the store's heads to notice writes (its own,
// another process's through the CLI, or received; `StoreHeadsTrigger` says what a move calls for) and
// push them on the live sessions, metrics, and the status file. This file is the I/O around the policy:
// it turns sockets, timers and the wall clock into driver events and carries out the decisions.
// Everything mutable lives on the node's one loop.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix

/// How the daemon runs (the config file's scheduling part, in the units the daemon uses).
public struct DaemonOptions: Sendable {
    /// Where to listen (`port` 0: an ephemeral port, see `NodeDaemon.listeningPort`).
    public var listenHost: String
    public var listenPort: Int
    /// Scheduling policy.
    public var policy = SchedulePolicy()
    /// Static peers, synced on start.
    public var staticPeers: [PeerAddress] = []
    /// How often the store's heads are read (ms).
    public var pollInterval: Int64 = 500
    /// How often the scheduler is asked what is due (ms); bounds the extra latency of a push.
    public var tick = Int64(SchedulePolicy().tick)
    /// The status file to keep (nil: none).
    public var statusPath: String?
    /// Age (ms) past which the newest epoch key of a scope counts as stale and is warned about (attack
    /// case 27; `NodeConfigFile.Epochs`, default 14 days).
    public var epochStaleAfter: UInt64 = 14 * 86_400_000
    /// Seed of the backoff jitter.
    public var seed: UInt64 = UInt64.random(in: 0...UInt64.max)

    /// Creates options.
    public init(listenHost: String, listenPort: Int) {
        self.listenHost = listenHost
        self.listenPort = listenPort
    }
}

/// Extension points run on the node's loop with the replicator (the only place it may be used).
public struct DaemonHooks: Sendable {
    /// After every session (incoming or outgoing), with its result. HQ's receipt writing belongs here:
    /// a hook that writes a change makes the store's heads move, and the next poll pushes it to peers.
    public var sessionEnded: (@Sendable (SessionResult, Replicator) throws -> Void)?
    /// After the store's heads moved (any cause), before the push is scheduled.
    public var storeChanged: (@Sendable (Replicator) throws -> Void)?
    /// When a session authenticated its peer and started.
    public var sessionStarted: (@Sendable (SessionStart) -> Void)?
    /// When a session went live (after the daemon's own bookkeeping).
    public var sessionWentLive: (@Sendable (LiveSession) -> Void)?
    /// When `addPeer` added a peer the daemon did not know (LAN discovery finding one, or the owner).
    public var peerAdded: (@Sendable (PeerAddress, PeerSource) -> Void)?
    /// The feed's section of the status file (`DaemonStatus.feed`), asked each second and whenever the file is
    /// written (off any lock of the daemon's; cheap). Nil: no section.
    public var feedStatus: (@Sendable () -> DaemonStatus.Feed?)?

    /// No hooks.
    public init() {}
}

/// The node daemon: serve, schedule, push, report.
///
/// ```swift
/// let daemon = NodeDaemon(node: node, options: options, metrics: NodeMetrics(factory: factory))
/// try await daemon.start()
/// daemon.addPeer(host: "10.0.0.7", port: 7000, source: .discovered)   // from discovery, any thread
/// try await daemon.shutdown(grace: .seconds(10))
/// ```
public final class NodeDaemon: Sendable {
    /// The node (TCP sessions, the replicator).
    public let node: FieldSyncNode
    /// Options.
    public let options: DaemonOptions
    /// Metrics.
    public let metrics: NodeMetrics
    /// Extension points.
    public let hooks: DaemonHooks

    private struct State {
        var driver: SyncDriver<PeerAddress>
        var scheduler: SyncScheduler { driver.scheduler }
        var listener: (any Channel)?
        var tasks: [RepeatedTask] = []
        var heads = StoreHeadsTrigger()
        var gaugesAt: UInt64 = 0
        var gaugesStale = false
        var incomingPeers: [DeviceID: DaemonStatus.Peer] = [:]
        var totals: [PeerAddress: (sent: Int, received: Int, error: String?, role: String?, refusedByPeer: [String: Int])] = [:]
        var state = "starting"
        var statusDirty = true
        /// The session counts the status file last showed (running, live, handshakes pending).
        var writtenCounts: [Int] = []
        /// The feed section the status file last showed.
        var writtenFeed: DaemonStatus.Feed?
        var startedAt: UInt64 = 0
        var device = "", role = ""
        /// A store check requested by a session that applied changes, and the device they came from (nil
        /// once changes from two devices are pending).
        var checkPending = false
        var checkExcept: DeviceID?
        /// LAN discovery running for this daemon (told which discovered peers proved themselves).
        var discoveries: [LANDiscovery] = []
        /// Changes in quarantine (corrupt on disk, waiting for a peer to send them again).
        var quarantined = 0
        /// Changes the store refused since start (quota, held-back limit), for the status file.
        var changesRefused = 0
        /// This node's changes its peers refused since start (`ack-refused`), by reason, for the status file.
        var refusedByPeers: [String: Int] = [:]
        /// The days left when each certificate of the chain (`device`, `issuer`) was last warned about (one line
        /// a day in its last month).
        var certificateWarnedDays: [String: Int64] = [:]
        /// Changes by revoked devices quarantined (dated after the cut-off), as last logged.
        var revokedQuarantined = 0
        /// The stale epoch keys last logged (scope#epoch).
        var staleKeys: [String] = []
    }

    private let box: NIOLoopBoundBox<State>
    private var logger: Logger { node.logger }

    /// The driver a daemon with `options` runs (the policy and jitter seed of its options).
    public static func makeDriver(options: DaemonOptions, tracing: Bool = false) -> SyncDriver<PeerAddress> {
        SyncDriver(policy: options.policy, seed: options.seed, tracing: tracing)
    }

    /// Creates a daemon around a node (not started).
    public init(node: FieldSyncNode, options: DaemonOptions, metrics: NodeMetrics, hooks: DaemonHooks = DaemonHooks()) {
        self.node = node
        self.options = options
        self.metrics = metrics
        self.hooks = hooks
        box = NIOLoopBoundBox.makeBoxSendingValue(State(driver: Self.makeDriver(options: options)),
                                                  eventLoop: node.loop)
    }

    /// Listens, adds the static peers (each synced at once), and starts the scheduler and the store poll.
    /// - Throws: `NodeError` if the address cannot be bound.
    public func start() async throws {
        let listener = try await node.listen(host: options.listenHost, port: options.listenPort) { [self] result in
            sessionEnded(result, address: nil)
        }
        try await node.loop.submit { [self] in
            let now = nodeClockMilliseconds()
            var observer = SessionObserver()
            observer.live = { [self] s in
                sessionWentLive(s)
                hooks.sessionWentLive?(s)
            }
            observer.started = hooks.sessionStarted
            observer.applied = { [self] device in changesArrived(from: device) }
            observer.traffic = { [self] t in
                metrics.record(t)
                if t.changesRefused > 0 {
                    box.value.changesRefused += t.changesRefused
                    box.value.statusDirty = true
                }
            }
            observer.refused = { [metrics] reason in metrics.recordRefused(reason) }
            observer.ended = { [self] r in
                if r.liveSince != nil, let device = r.peer {
                    box.value.driver.handle(.liveSessionEnded(device: device), now: nodeClockMilliseconds())
                }
            }
            node.observe(observer)
            box.value.listener = listener
            box.value.startedAt = now
            box.value.state = "running"
            try node.withReplicatorOnLoop { r in
                box.value.device = r.identity.id.description
                box.value.role = r.identity.certificate.role.description
            }
            for p in options.staticPeers { box.value.driver.handle(.peerAdded(p, .static), now: now) }
            metrics.peers.record(box.value.scheduler.allPeers.count)
            checkStore(except: nil)
            box.value.tasks.append(node.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(options.tick)) { [self] _ in
                tick()
            })
            box.value.tasks.append(node.loop.scheduleRepeatedTask(initialDelay: .milliseconds(options.pollInterval),
                                                                  delay: .milliseconds(options.pollInterval)) { [self] _ in
                checkStore(except: nil)
                // Sessions re-check at their peer's expiry on their own timers; this also catches a wall
                // clock that jumped forward (cheap: no signature check).
                node.recheckPeers()
            })
            box.value.tasks.append(node.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { [self] _ in
                writeStatusIfDirty()
            })
        }.get()
        logger.info("serving", metadata: ["sync.listen": .string(listener.localAddress.map(hostPort) ?? "?"),
                                          "sync.peers.static": .stringConvertible(options.staticPeers.count)])
    }

    /// The bound listening port (after `start`).
    public var listeningPort: Int? {
        get async { try? await node.loop.submit { [box] in box.value.listener?.localAddress?.port }.get() }
    }

    /// Adds a peer at run time (LAN discovery calls this for every beacon; a known peer is only refreshed).
    /// Safe from any thread.
    public func addPeer(host: String, port: Int, source: PeerSource) {
        node.loop.execute { [self] in
            let address = PeerAddress(host: host, port: port)
            if !box.value.driver.handle(.peerAdded(address, source), now: nodeClockMilliseconds()).isEmpty {
                logger.info("peer added", metadata: ["sync.remote": .string(address.description), "sync.peer.source": .string(source.rawValue)])
                metrics.peers.record(box.value.scheduler.allPeers.count)
                hooks.peerAdded?(address, source)
            }
            box.value.statusDirty = true
        }
    }

    /// Tells `discovery` which discovered peers authenticate (`LANDiscovery.markProven`). Safe from any thread.
    public func watchProven(_ discovery: LANDiscovery) {
        node.loop.execute { [box] in box.value.discoveries.append(discovery) }
    }

    /// Forgets a peer (discovery calls this with `onlyIf: .discovered` when a peer's beacons stop, which
    /// never drops a configured peer; a running session still ends normally). Safe from any thread.
    public func removePeer(host: String, port: Int, onlyIf source: PeerSource? = nil) {
        node.loop.execute { [self] in
            box.value.driver.handle(.peerRemoved(PeerAddress(host: host, port: port), onlyIf: source), now: nodeClockMilliseconds())
            metrics.peers.record(box.value.scheduler.allPeers.count)
            box.value.statusDirty = true
        }
    }

    /// The scheduler's view of every peer (a snapshot).
    public func peers() async throws -> [PeerState] {
        try await node.loop.submit { [box] in box.value.scheduler.allPeers }.get()
    }

    /// The status as it would be written now.
    public func status() async throws -> DaemonStatus {
        try await node.loop.submit { [self] in makeStatus() }.get()
    }

    /// Graceful stop: no new sessions are scheduled or accepted, running ones get `grace` to finish and are
    /// then cut, the status file says `stopped`, and the loop and the store are closed.
    /// - Returns: how many sessions were cut at the end of the grace period.
    @discardableResult
    public func shutdown(grace: TimeAmount) async throws -> Int {
        let cut = try await stop(grace: grace)
        try await node.shutdown()
        return cut
    }

    /// Graceful stop that leaves the node open: as ``shutdown(grace:)`` (no new sessions are scheduled or
    /// accepted, running ones get `grace` to finish and are then cut, the status file says `stopped`), but
    /// the loop and the store stay open for the app's writes and queries. The node then no longer reports
    /// sessions to this daemon and accepts sessions again (``FieldSyncNode/resume()``): a new daemon may
    /// start on it. A stopped daemon does not start again.
    /// - Returns: how many sessions were cut at the end of the grace period.
    @discardableResult
    public func stop(grace: TimeAmount) async throws -> Int {
        let listener = try await node.loop.submit { [self] () -> (any Channel)? in
            box.value.driver.handle(.stop, now: nodeClockMilliseconds())
            box.value.state = "stopping"
            for t in box.value.tasks { t.cancel() }
            box.value.tasks = []
            writeStatus()
            return box.value.listener
        }.get()
        try? await listener?.close()
        let cut = try await node.drain(grace: grace)
        try await node.loop.submit { [self] in
            box.value.state = "stopped"
            writeStatus()
            box.value.listener = nil
            box.value.discoveries = []
            node.observe(SessionObserver())
        }.get()
        logger.info("stopped", metadata: ["sync.sessions.cut": .stringConvertible(cut)])
        try await node.resume()
        return cut
    }

    // MARK: on the loop

    private func tick() {
        let now = nodeClockMilliseconds()
        for case let .connect(address) in box.value.driver.handle(.tick(incoming: node.incomingSessions), now: now) {
            box.value.statusDirty = true
            let node = self.node
            node.startSync(host: address.host, port: address.port).whenComplete { [self] outcome in
                switch outcome {
                case let .success(result): sessionEnded(result, address: address)
                case let .failure(error): connectFailed(address, error: error)
                }
            }
        }
        metrics.sessionsActive.record(node.runningSessions)
        metrics.sessionsLive.record(node.liveSessionCount)
        metrics.handshakesPending.record(node.pendingHandshakes)
    }

    private func sessionWentLive(_ s: LiveSession) {
        let now = nodeClockMilliseconds()
        box.value.driver.handle(.sessionLive(device: s.peer, outgoing: s.initiator ? s.target : nil), now: now)
        box.value.statusDirty = true
        metrics.sessionsLive.record(node.liveSessionCount)
        var meta: Logger.Metadata = ["sync.peer": .string(s.peer.description), "sync.direction": .string(s.initiator ? "out" : "in")]
        if let r = s.peerRole { meta["sync.peer.role"] = .string(r.description) }
        if let a = s.remoteAddress { meta["sync.remote"] = .string(a) }
        logger.info("session live", metadata: meta)
    }

    /// A session applied changes: read the heads soon (once for a burst) and push them on.
    private func changesArrived(from device: DeviceID?) {
        guard box.value.state == "running" else { return }  // draining: sessions are closing, nothing is pushed
        if box.value.checkPending {
            if box.value.checkExcept != device { box.value.checkExcept = nil }
            return
        }
        box.value.checkPending = true
        box.value.checkExcept = device
        node.loop.execute { [self] in
            box.value.checkPending = false
            checkStore(except: box.value.checkExcept)
        }
    }

    private func connectFailed(_ address: PeerAddress, error: any Error) {
        let now = nodeClockMilliseconds()
        box.value.driver.handle(.sessionEnded(address, finished: false, device: nil), now: now)
        box.value.totals[address, default: (0, 0, nil, nil, [:])].error = "\(error)"
        box.value.statusDirty = true
        let next = box.value.scheduler.peer(address)?.due.map { $0 - now } ?? 0
        logger.debug("connect failed", metadata: ["sync.remote": .string(address.description), "sync.error": .string("\(error)"),
                                                  "sync.retry_ms": .stringConvertible(next)])
    }

    private func sessionEnded(_ result: SessionResult, address: PeerAddress?) {
        let now = nodeClockMilliseconds()
        metrics.recordEnd(result)  // its traffic was counted as it grew
        metrics.sessionsLive.record(node.liveSessionCount)
        if let cut = result.cut { metrics.recordCut(cut) }
        if let address, result.peer != nil, box.value.scheduler.peer(address)?.source == .discovered {
            // A discovered peer that authenticated keeps precedence over unproven beacons.
            for d in box.value.discoveries { d.markProven(DiscoveredPeer(host: address.host, port: address.port)) }
        }
        if let address {
            box.value.driver.handle(.sessionEnded(address, finished: result.isFinished, device: result.peer), now: now)
            var t = box.value.totals[address, default: (0, 0, nil, nil, [:])]
            t.sent += result.changesSent
            t.received += result.changesReceived
            t.refusedByPeer.merge(result.refusedByPeer, uniquingKeysWith: +)
            t.role = result.peerRole?.description ?? t.role
            if case let .failed(why) = result.outcome { t.error = why } else { t.error = nil }
            box.value.totals[address] = t
        } else if let device = result.peer {
            var p = box.value.incomingPeers[device] ?? DaemonStatus.Peer(address: result.remoteAddress ?? "?", source: "incoming",
                                                                         device: device.description, lastSeen: now)
            p.address = result.remoteAddress ?? p.address
            p.role = result.peerRole?.description
            p.lastSeen = now
            p.lastSyncAt = now
            p.lastOutcome = result.isFinished ? "finished" : "failed"
            if case let .failed(why) = result.outcome { p.lastError = why } else { p.lastError = nil }
            p.changesSent += result.changesSent
            p.changesReceived += result.changesReceived
            if result.changesRefusedByPeer > 0 { p.refusedByPeer = (p.refusedByPeer ?? [:]).merging(result.refusedByPeer, uniquingKeysWith: +) }
            box.value.incomingPeers[device] = p
        }
        if result.changesRefusedByPeer > 0 { box.value.refusedByPeers.merge(result.refusedByPeer, uniquingKeysWith: +) }
        box.value.statusDirty = true
        if let hook = hooks.sessionEnded {
            do { try node.withReplicatorOnLoop { try hook(result, $0) } } catch {
                logger.error("sessionEnded hook failed", metadata: ["sync.error": .string("\(error)")])
            }
        }
        // Changes from this peer: push them to the others now rather than at the next poll, and not back.
        if result.changesReceived > 0 { checkStore(except: result.peer) }
    }

    /// Reads the store's heads (one row per log); if they moved, pushes the logs that moved on every live
    /// session (the one the changes came from sends nothing: it knows its peer holds them), schedules a
    /// new session (debounced) to every other peer but `except`, and refreshes the store gauges (at most
    /// every second when the heads moved, else every 10 s: they count rows, which costs more).
    private func checkStore(except: DeviceID?) {
        let heads: [LogID: HeldIntervals], forks: Int
        do { (heads, forks) = try node.withReplicatorOnLoop { (try $0.store.holdings(), $0.forksRecorded) } } catch {
            logger.error("cannot read the store", metadata: ["sync.error": .string("\(error)")])
            return
        }
        let now = nodeClockMilliseconds()
        let me = try? node.withReplicatorOnLoop { $0.identity.id }
        let first = box.value.heads.heads == nil
        let change = box.value.heads.observe(heads, forks: forks, except: except, me: me)
        if change != nil { box.value.gaugesStale = true }
        // At most once a second while changes stream in (a catch-up checks the heads after every batch).
        if first || now >= box.value.gaugesAt + (box.value.gaugesStale ? 1_000 : 10_000) {
            box.value.gaugesAt = now
            box.value.gaugesStale = false
            refreshGauges()
        }
        guard let change else { return }
        box.value.statusDirty = true
        if change.reload {
            // Another process may have written the store (`fieldsync publish` or `revoke` under this device's
            // identity, a `sync` run against it): take in the certificates, revocations and granted keys it
            // added, so they count here from now on.
            do {
                try node.withReplicatorOnLoop { r in
                    let certificates = try r.restoreCertificates(now: now)
                    let control = try r.restoreControlState(now: now)
                    if certificates + control.keys + control.revocations > 0 {
                        logger.info("learned from the store", metadata: [
                            "sync.certificates": .stringConvertible(certificates), "sync.keys": .stringConvertible(control.keys),
                            "sync.revocations": .stringConvertible(control.revocations)])
                    }
                }
            } catch {
                logger.error("cannot reload from the store", metadata: ["sync.error": .string("\(error)")])
            }
            // Before anything is pushed: a peer revoked by what was just loaded gets nothing more.
            node.recheckPeers()
        }
        if let hook = hooks.storeChanged {
            do { try node.withReplicatorOnLoop { try hook($0) } } catch {
                logger.error("storeChanged hook failed", metadata: ["sync.error": .string("\(error)")])
            }
        }
        let pushed = node.pushLive(logs: change.moved)
        if pushed > 0 {
            metrics.livePushes.increment(by: pushed)
            box.value.statusDirty = true
        }
        box.value.driver.handle(.storeChanged(except: except), now: now)
        logger.debug("store changed; pushed on live sessions, push scheduled to the others",
                     metadata: ["sync.except": .string(except?.description ?? "-"), "sync.live.pushes": .stringConvertible(pushed)])
    }

    private func refreshGauges() {
        let now = nodeClockMilliseconds()
        do {
            let report = try node.withReplicatorOnLoop { try StoreReport.read($0) }
            metrics.heldBack.record(report.store.heldBack)
            metrics.pendingToHQ.record(Int(report.pendingToHQ))
            metrics.storeBytes.record(report.store.changeBytes)
            metrics.storeQuotaBytes.record(report.store.limits.quotaBytes ?? 0)
            // A certificate that runs out stops every session, this device's or its county authority's (peers
            // check both): say so for a month before, once a day for each.
            let chain = try node.withReplicatorOnLoop { CertificateChainLifetime(identity: $0.identity, trust: $0.trust) }
            let notAfter = chain.links[0].notAfter
            metrics.certificateExpirySeconds.record((Int64(notAfter) - Int64(now)) / 1000)
            metrics.certificateChainExpirySeconds.record((Int64(chain.earliest.notAfter) - Int64(now)) / 1000)
            for link in chain.links {
                let daysLeft = CertificateChainLifetime.daysLeft(link.notAfter, now: now)
                guard daysLeft < CertificateChainLifetime.warnDays, box.value.certificateWarnedDays[link.role] != daysLeft,
                      let text = CertificateChainLifetime.warning(link, now: now, format: { ms in
                    let f = ISO8601DateFormatter()
                    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
                }) else { continue }
                box.value.certificateWarnedDays[link.role] = daysLeft
                logger.warning("\(text)", metadata: [
                    "sync.certificate": .string(link.role), "sync.certificate.subject": .string(link.subject.description),
                    "sync.certificate.notAfter": .stringConvertible(link.notAfter), "sync.certificate.daysLeft": .stringConvertible(daysLeft)])
            }
            metrics.forks.record(report.store.forks)
            metrics.quarantined.record(report.store.quarantined)
            metrics.revokedQuarantined.record(report.store.revokedQuarantined)
            if report.store.revokedQuarantined > box.value.revokedQuarantined {
                logger.warning("changes by revoked devices dated after their revocation's cut-off quarantined: out of the records, kept for audit, no longer offered to peers", metadata: [
                                   "sync.store.revokedQuarantined": .stringConvertible(report.store.revokedQuarantined),
                                   "sync.store.revokedQuarantinedNew": .stringConvertible(report.store.revokedQuarantined - box.value.revokedQuarantined)])
            }
            box.value.revokedQuarantined = report.store.revokedQuarantined
            // Freeze (attack case 27): the newest epoch key of a scope is older than the threshold.
            let (stale, oldest) = try node.withReplicatorOnLoop { r -> ([EpochKeyAge], UInt64) in
                let newest = r.newestEpochKeys().compactMap(\.issuedAt)
                return (r.staleEpochKeys(now: now, threshold: options.epochStaleAfter), newest.map { now > $0 ? now - $0 : 0 }.max() ?? 0)
            }
            metrics.staleEpochKeys.record(stale.count)
            metrics.newestEpochKeyAge.record(Int(oldest / 1000))
            let names = stale.map { "\($0.scope)#\($0.epoch)" }
            if names != box.value.staleKeys {
                box.value.staleKeys = names
                if !stale.isEmpty {
                    logger.warning("stale epoch keys: no rotation has reached this node; changes are still sealed under keys devices removed since may hold", metadata: [
                        "sync.epochs.stale": .string(stale.map { "\($0.scope)#\($0.epoch) granted \($0.ageDays(now: now) ?? 0) days ago" }.joined(separator: ", ")),
                        "sync.epochs.staleAfterDays": .stringConvertible(options.epochStaleAfter / 86_400_000)])
                }
            }
            if box.value.quarantined != report.store.quarantined {
                box.value.quarantined = report.store.quarantined
                box.value.statusDirty = true
            }
        } catch {
            logger.error("cannot read the store", metadata: ["sync.error": .string("\(error)")])
        }
    }

    private func makeStatus() -> DaemonStatus {
        let s = box.value
        // Open live sessions by device: since when (the oldest), pushes and counts so far (a live session's
        // totals are otherwise added when it ends).
        var live: [DeviceID: (since: UInt64, pushes: Int, sent: Int, received: Int, session: LiveSession)] = [:]
        for l in node.liveSessions {
            var e = live[l.peer] ?? (l.since, 0, 0, 0, l)
            e.since = min(e.since, l.since)
            e.pushes += l.pushes
            e.sent += l.changesSent
            e.received += l.changesReceived
            live[l.peer] = e
        }
        func addLive(_ p: inout DaemonStatus.Peer, _ device: DeviceID?) {
            guard let d = device, let l = live[d] else { return }
            p.liveSince = l.since
            p.livePushes = l.pushes
            p.changesSent += l.sent
            p.changesReceived += l.received
        }
        var peers: [DaemonStatus.Peer] = s.scheduler.allPeers.map { p in
            let t = s.totals[p.address]
            var out = DaemonStatus.Peer(address: p.address.description, source: p.source.rawValue, device: p.device?.description,
                                        role: t?.role, lastSeen: p.lastSeen, lastSyncAt: p.lastSessionEnd,
                                        lastOutcome: p.lastSessionFinished.map { $0 ? "finished" : "failed" },
                                        lastError: p.lastSessionFinished == false ? t?.error : nil,
                                        changesSent: t?.sent ?? 0, changesReceived: t?.received ?? 0, failures: p.failures,
                                        nextAttemptAt: p.running || (p.device.map(s.scheduler.isLive) ?? false) ? nil : p.due)
            if let r = t?.refusedByPeer, !r.isEmpty { out.refusedByPeer = r }
            // Sessions the peer opened to this node count too; the latest session of either kind is shown.
            if let d = p.device, let inc = s.incomingPeers[d] {
                out.changesSent += inc.changesSent
                out.changesReceived += inc.changesReceived
                if let r = inc.refusedByPeer { out.refusedByPeer = (out.refusedByPeer ?? [:]).merging(r, uniquingKeysWith: +) }
                out.lastSeen = max(out.lastSeen, inc.lastSeen)
                if let at = inc.lastSyncAt, at > out.lastSyncAt ?? 0 {
                    out.lastSyncAt = at
                    out.lastOutcome = inc.lastOutcome
                    out.lastError = inc.lastError
                }
            }
            if let l = p.device.flatMap({ live[$0] }), out.role == nil { out.role = l.session.peerRole?.description }
            addLive(&out, p.device)
            return out
        }
        let outgoingDevices = Set(s.scheduler.allPeers.compactMap(\.device))
        var incoming = s.incomingPeers.filter { !outgoingDevices.contains($0.key) }
        // A peer that connected to this node and is still live has not ended a session yet.
        for (d, l) in live where !outgoingDevices.contains(d) && incoming[d] == nil {
            incoming[d] = DaemonStatus.Peer(address: l.session.remoteAddress ?? "?", source: "incoming", device: d.description,
                                            role: l.session.peerRole?.description, lastSeen: l.since)
        }
        peers += incoming.sorted { $0.key < $1.key }.map { d, p in
            var p = p
            addLive(&p, d)
            return p
        }
        var status = DaemonStatus(pid: ProcessInfo.processInfo.processIdentifier, device: s.device, role: s.role,
                            listen: s.listener?.localAddress.map(hostPort) ?? "\(options.listenHost):\(options.listenPort)",
                            state: s.state, startedAt: s.startedAt, updatedAt: nodeClockMilliseconds(),
                            sessionsActive: node.runningSessions, sessionsLive: node.liveSessionCount,
                            handshakesPending: node.pendingHandshakes, connections: node.connectionCounters, peers: peers,
                            quarantinedChanges: s.quarantined, changesRefused: s.changesRefused,
                            refusedByPeers: s.refusedByPeers.isEmpty ? nil : s.refusedByPeers)
        status.feed = hooks.feedStatus?()
        return status
    }

    /// The session counts the status file shows.
    private var sessionCounts: [Int] { [node.runningSessions, node.liveSessionCount, node.pendingHandshakes] }

    /// Writes the status file if anything it shows changed, session counts included (a connection still
    /// in its handshake shows within a second).
    private func writeStatusIfDirty() {
        let feed = hooks.feedStatus?()
        guard box.value.statusDirty || sessionCounts != box.value.writtenCounts || feed != box.value.writtenFeed else { return }
        writeStatus()
    }

    private func writeStatus() {
        box.value.statusDirty = false
        box.value.writtenCounts = sessionCounts
        let status = makeStatus()
        box.value.writtenFeed = status.feed
        guard let path = options.statusPath else { return }
        do { try status.write(to: path) } catch {
            logger.error("status file not written", metadata: ["sync.error": .string("\(error)")])
        }
    }
}

/// `HOST:PORT` of a socket address (`[v6]:port` for IPv6).
func hostPort(_ a: SocketAddress) -> String {
    let ip = a.ipAddress ?? "?"
    return ip.contains(":") ? "[\(ip)]:\(a.port ?? 0)" : "\(ip):\(a.port ?? 0)"
}
