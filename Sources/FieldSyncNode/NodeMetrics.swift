// The node's swift-metrics counters and gauges, and a minimal Prometheus text endpoint (NIOHTTP1) over a
// `PrometheusCollectorRegistry`. Names are listed in docs/node.md ("Metrics").

import CoreMetrics
import FieldSyncProtocol
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// The daemon's metrics, created through an injected factory (a Prometheus registry in the daemon, any
/// `MetricsFactory` in tests), so two nodes in one process do not share counters.
public final class NodeMetrics: Sendable {
    /// The factory the metrics were made with.
    public let factory: any MetricsFactory
    private let sessionsFinishedIn, sessionsFinishedOut, sessionsFailedIn, sessionsFailedOut: CoreMetrics.Counter
    /// Bytes read from and written to session sockets.
    public let bytesIn, bytesOut: CoreMetrics.Counter
    /// Changes received and stored (verified, not refused).
    public let changesApplied: CoreMetrics.Counter
    /// Changes refused by the store (relay quota, held-back limit).
    public let changesRefused: CoreMetrics.Counter
    /// Changes rejected by verification.
    public let changesRejected: CoreMetrics.Counter
    /// This node's changes its peers applied but did not store (`ack-refused`), by reason
    /// (`fieldsync_changes_refused_by_peer_total{reason="quota"}`: a full relay turned them away).
    private let refusedByPeer: [ChangeRefusal: CoreMetrics.Counter]
    /// Sessions running now (live ones included).
    public let sessionsActive: CoreMetrics.Gauge
    /// Sessions in their live phase now (open, carrying pushes).
    public let sessionsLive: CoreMetrics.Gauge
    /// Pushes on live sessions that sent changes (one per session per store change).
    public let livePushes: CoreMetrics.Counter
    /// Changes held back behind gaps (store).
    public let heldBack: CoreMetrics.Gauge
    /// This node's own changes HQ has not receipted yet.
    public let pendingToHQ: CoreMetrics.Gauge
    /// Bytes of changes stored.
    public let storeBytes: CoreMetrics.Gauge
    /// The relay quota in bytes (0: none), so that an alert can compare `fieldsync_store_bytes` with it.
    public let storeQuotaBytes: CoreMetrics.Gauge
    /// Seconds until this device's certificate expires (negative once expired): alert well before 0.
    public let certificateExpirySeconds: CoreMetrics.Gauge
    /// Seconds until the first certificate of this device's chain expires: its own, or its issuing county
    /// authority's (negative once expired). Peers refuse the device when either has; alert on this one.
    public let certificateChainExpirySeconds: CoreMetrics.Gauge
    /// Fork proofs the store holds (`fieldsync forks` lists them).
    public let forks: CoreMetrics.Gauge
    /// Known peers.
    public let peers: CoreMetrics.Gauge
    /// Incoming connections in their handshake now (the unauthenticated pool).
    public let handshakesPending: CoreMetrics.Gauge
    private let refused: [RefusalReason: CoreMetrics.Counter]
    private let cut: [CutReason: CoreMetrics.Counter]
    /// Changes found corrupt on disk and quarantined, not yet received again from a peer.
    public let quarantined: CoreMetrics.Gauge
    /// Changes by revoked devices dated after their revocation's cut-off, quarantined (attack case 35).
    public let revokedQuarantined: CoreMetrics.Gauge
    /// Scopes whose newest epoch key held is older than the staleness threshold (attack case 27).
    public let staleEpochKeys: CoreMetrics.Gauge
    /// Age in seconds of the oldest among the newest epoch keys held per scope (granted keys only).
    public let newestEpochKeyAge: CoreMetrics.Gauge

    /// Creates the metrics through `factory`.
    public init(factory: any MetricsFactory) {
        self.factory = factory
        func sessions(_ outcome: String, _ direction: String) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: "fieldsync_sessions_total", dimensions: [("outcome", outcome), ("direction", direction)], factory: factory)
        }
        sessionsFinishedIn = sessions("finished", "in")
        sessionsFinishedOut = sessions("finished", "out")
        sessionsFailedIn = sessions("failed", "in")
        sessionsFailedOut = sessions("failed", "out")
        bytesIn = CoreMetrics.Counter(label: "fieldsync_bytes_in_total", factory: factory)
        bytesOut = CoreMetrics.Counter(label: "fieldsync_bytes_out_total", factory: factory)
        changesApplied = CoreMetrics.Counter(label: "fieldsync_changes_applied_total", factory: factory)
        changesRefused = CoreMetrics.Counter(label: "fieldsync_changes_refused_total", factory: factory)
        changesRejected = CoreMetrics.Counter(label: "fieldsync_changes_rejected_total", factory: factory)
        refusedByPeer = Dictionary(uniqueKeysWithValues: [ChangeRefusal.quota, .heldBack, .timestampInFuture, .revoked, .forked, .certificateNeeded].map {
            ($0, CoreMetrics.Counter(label: "fieldsync_changes_refused_by_peer_total", dimensions: [("reason", $0.rawValue)], factory: factory))
        })
        sessionsActive = CoreMetrics.Gauge(label: "fieldsync_sessions_active", factory: factory)
        sessionsLive = CoreMetrics.Gauge(label: "fieldsync_sessions_live", factory: factory)
        livePushes = CoreMetrics.Counter(label: "fieldsync_live_pushes_total", factory: factory)
        heldBack = CoreMetrics.Gauge(label: "fieldsync_changes_held_back", factory: factory)
        pendingToHQ = CoreMetrics.Gauge(label: "fieldsync_pending_to_hq", factory: factory)
        storeBytes = CoreMetrics.Gauge(label: "fieldsync_store_bytes", factory: factory)
        storeQuotaBytes = CoreMetrics.Gauge(label: "fieldsync_store_quota_bytes", factory: factory)
        certificateExpirySeconds = CoreMetrics.Gauge(label: "fieldsync_certificate_expiry_seconds", factory: factory)
        certificateChainExpirySeconds = CoreMetrics.Gauge(label: "fieldsync_certificate_chain_expiry_seconds", factory: factory)
        forks = CoreMetrics.Gauge(label: "fieldsync_forks", factory: factory)
        peers = CoreMetrics.Gauge(label: "fieldsync_peers", factory: factory)
        handshakesPending = CoreMetrics.Gauge(label: "fieldsync_handshakes_pending", factory: factory)
        refused = Dictionary(uniqueKeysWithValues: RefusalReason.allCases.map {
            ($0, CoreMetrics.Counter(label: "fieldsync_connections_refused_total", dimensions: [("reason", $0.rawValue)], factory: factory))
        })
        cut = Dictionary(uniqueKeysWithValues: CutReason.allCases.map {
            ($0, CoreMetrics.Counter(label: "fieldsync_connections_cut_total", dimensions: [("reason", $0.rawValue)], factory: factory))
        })
        quarantined = CoreMetrics.Gauge(label: "fieldsync_store_quarantined_changes", factory: factory)
        revokedQuarantined = CoreMetrics.Gauge(label: "fieldsync_store_revoked_quarantined_changes", factory: factory)
        staleEpochKeys = CoreMetrics.Gauge(label: "fieldsync_epoch_keys_stale", factory: factory)
        newestEpochKeyAge = CoreMetrics.Gauge(label: "fieldsync_epoch_key_age_seconds", factory: factory)
    }

    /// Counts a connection refused (at accept, or at authentication when the session slots were full).
    public func recordRefused(_ reason: RefusalReason) { refused[reason]?.increment() }

    /// Counts a connection cut (handshake deadline, too slow, idle, evicted).
    public func recordCut(_ reason: CutReason) { cut[reason]?.increment() }

    /// Counts one ended session with its traffic (for a session whose traffic was not reported as it grew).
    public func record(_ r: SessionResult) {
        recordEnd(r)
        var t = SessionTraffic(bytesIn: r.bytesIn, bytesOut: r.bytesOut, changesReceived: r.changesReceived,
                               changesRefused: r.changesRefused, changesRejected: r.changesRejected)
        t.refusedByPeer = r.refusedByPeer
        record(t)
    }

    /// Counts one ended session by outcome and direction (its traffic is counted by `record(_: SessionTraffic)`).
    public func recordEnd(_ r: SessionResult) {
        switch (r.isFinished, r.initiator) {
        case (true, false): sessionsFinishedIn.increment()
        case (true, true): sessionsFinishedOut.increment()
        case (false, false): sessionsFailedIn.increment()
        case (false, true): sessionsFailedOut.increment()
        }
    }

    /// Counts traffic a session reported while it ran (`SessionObserver.traffic`).
    public func record(_ t: SessionTraffic) {
        if t.bytesIn > 0 { bytesIn.increment(by: t.bytesIn) }
        if t.bytesOut > 0 { bytesOut.increment(by: t.bytesOut) }
        let applied = t.changesReceived - t.changesRefused
        if applied > 0 { changesApplied.increment(by: applied) }
        if t.changesRefused > 0 { changesRefused.increment(by: t.changesRefused) }
        if t.changesRejected > 0 { changesRejected.increment(by: t.changesRejected) }
        for (reason, n) in t.refusedByPeer where n > 0 {
            if let r = ChangeRefusal(rawValue: reason) { refusedByPeer[r]?.increment(by: n) }
        }
    }
}

/// Serves `GET /metrics` in the Prometheus text format from a registry; anything else gets 404.
///
/// It runs on its own event loop group (one thread), never on the node's loop, so that scrapers, slow or
/// hostile, cannot delay a sync session; it keeps at most `maxConnections` connections (further ones are
/// closed at accept) and closes every connection `idleTimeout` after it opened (a scrape takes
/// milliseconds; the response closes the connection anyway).
public final class MetricsEndpoint: Sendable {
    /// The listening channel.
    public let channel: any Channel
    private let group: MultiThreadedEventLoopGroup

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.channel = channel
        self.group = group
    }

    /// Binds the endpoint on a thread of its own.
    /// - Throws: `NodeError` if the address cannot be bound.
    public static func start(registry: PrometheusCollectorRegistry, host: String, port: Int, maxConnections: Int = 8,
                             idleTimeout: TimeAmount = .seconds(5)) async throws -> MetricsEndpoint {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // One thread: every connection lives on this loop, so the count needs no lock.
        let open = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: group.next())
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard open.value < maxConnections else {
                        channel.close(promise: nil)
                        return
                    }
                    open.value += 1
                    // One deadline per connection, however slowly its bytes come: a scrape takes milliseconds.
                    let deadline = channel.eventLoop.scheduleTask(in: idleTimeout) { channel.close(promise: nil) }
                    channel.closeFuture.whenComplete { _ in
                        deadline.cancel()
                        open.value -= 1
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline()
                    try sync.addHandler(Handler(registry: registry))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            return MetricsEndpoint(channel: channel, group: group)
        } catch {
            try? await group.shutdownOffThePool()
            throw NodeError("cannot serve metrics on \(host):\(port): \(error); change `metrics.listen` or free the port")
        }
    }

    /// Closes the listener and every connection, and stops the endpoint's thread.
    public func stop() async {
        try? await channel.close()
        try? await group.shutdownOffThePool()
    }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let registry: PrometheusCollectorRegistry

        init(registry: PrometheusCollectorRegistry) { self.registry = registry }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case let .head(head) = unwrapInboundIn(data) else { return }
            let ok = head.method == .GET && (head.uri == "/metrics" || head.uri.hasPrefix("/metrics?"))
            let body: [UInt8] = ok ? registry.emitToBuffer() : Array("not found; try GET /metrics\n".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: "\(body.count)")
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: ok ? .ok : .notFound, headers: headers))),
                          promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
