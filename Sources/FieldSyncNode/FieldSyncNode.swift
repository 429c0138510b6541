// The node: one Replicator, one event loop, TCP listeners and outgoing syncs. The only layer of FieldSync
// with sockets, timers and tasks.
//
// Threading rule: the Replicator and its store are not thread-safe. A node owns a
// MultiThreadedEventLoopGroup of exactly ONE thread; every channel (listening, accepted, outgoing) lives
// on it, so every session, and therefore every call into the Replicator, runs on that one thread. Code
// outside the loop reaches the replicator only through `withReplicator`, which runs on the loop.

import FieldSyncCore
import FieldSyncCrypto
@_exported import FieldSyncDriver
import FieldSyncProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Tunables of a node.
public struct NodeConfiguration: Sendable {
    /// The network both peers must share (Noise prologue).
    public var network: NetworkParameters
    /// A session with no bytes in either direction for this long is cut (it resumes at the next contact).
    public var idleTimeout: TimeAmount = .seconds(30)
    /// Most authenticated sessions (incoming and outgoing together) at once, live ones not counted;
    /// further connections are closed at accept, and a handshake that completes beyond it is closed.
    /// Connections still in their handshake do not count (they are bounded by `maxPendingHandshakes`,
    /// `maxHandshakesPerSource` and `handshakeTimeout`), so hosts that never authenticate cannot take
    /// a session slot.
    public var maxConcurrentSessions = 8
    /// A connection (incoming or outgoing) whose handshake has not completed this long after it opened is
    /// cut (`CutReason.handshakeTimeout`). An honest handshake is three small messages.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// Most incoming connections in their handshake at once (the unauthenticated pool, `HandshakeAdmission`).
    public var maxPendingHandshakes = 16
    /// Most incoming connections in their handshake from one source address at once.
    public var maxHandshakesPerSource = 4
    /// Most handshakes a source address that has not authenticated within `provenSourceMemory` may start
    /// per `unprovenHandshakeWindow`; further connections from it are refused at accept
    /// (`RefusalReason.handshakeRate`, `HandshakeRateLimiter`). 0: no limit.
    public var unprovenHandshakesPerSource = 8
    /// The window of `unprovenHandshakesPerSource`.
    public var unprovenHandshakeWindow: TimeAmount = .seconds(10)
    /// How long a source address from which a handshake completed is exempt from
    /// `unprovenHandshakesPerSource`.
    public var provenSourceMemory: TimeAmount = .hours(1)
    /// A session that has work to do (anything but an idle live session) and moves fewer than
    /// `minProgressBytes` bytes, both directions together (bytes written count once the socket took
    /// them), in a `progressInterval` is cut (`CutReason.tooSlow`): a trickle of bytes does not keep it.
    public var minProgressBytes = 1_024
    /// The interval of the progress check.
    public var progressInterval: TimeAmount = .seconds(10)
    /// Failed sessions and refusals logged per source address per minute; further ones are counted and
    /// summarised in the next line logged for that source (`LogRateLimiter`).
    public var logLinesPerSourcePerMinute = 5
    /// Timeout for establishing an outgoing TCP connection.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// Ask every peer, incoming and outgoing, to keep the session open after the first exchange (live
    /// mode, Protocols/sync.md §4.1): later changes then travel on it through `pushLive`, without a new
    /// handshake or reconciliation. Off by default (a one-shot `sync` must finish); the daemon turns it on
    /// (`sessions.live`). A session in its live phase does not count toward `maxConcurrentSessions`.
    public var liveSessions = false
    /// Most sessions asking for live mode at once; sessions beyond it run as one-shot sessions.
    public var maxLiveSessions = 64
    /// A session in its live phase with no bytes in either direction for this long is closed (a normal
    /// end; nil: never). The next session handshakes and reconciles anew, re-checking the peer from
    /// scratch: a backstop behind the standing checks on every push and message (Protocols/sync.md §4.2).
    public var liveIdleTimeout: TimeAmount? = DriverPolicy().liveIdle.map { .milliseconds(Int64($0)) }
    /// The keep-alive of live sessions (Protocols/sync.md §4.1; nil: off): a live session that sent
    /// nothing for `interval` sends a keep-alive frame, and one that heard nothing from its peer for
    /// `deadAfter` is cut (`CutReason.peerGone`): a peer gone without a word, hung, or behind a half-open
    /// connection is noticed within `deadAfter` (plus one timer tick). With it on, `liveIdleTimeout` does
    /// not apply (`LiveSessionRules.idleLimit`): an idle link stays open instead of being closed and
    /// handshaked again. Default `KeepAlivePolicy.default` (10 and 25 minutes).
    public var liveKeepAlive: KeepAlivePolicy? = DriverPolicy().liveKeepAlive
    /// A live session whose store refused changes (relay quota full, too many held back behind a gap)
    /// closes once idle this long after the first refusal, so that a new session's reconciliation offers
    /// them again (a live session does not: they were acknowledged). Changes refused as dated ahead of
    /// this clock close it as soon as they may be accepted instead.
    public var refusedRetry: TimeAmount = .milliseconds(Int64(DriverPolicy().refusedRetry))
    /// TCP keepalive on every session socket, so that a peer gone without a word (power cut, link down)
    /// is noticed on an idle live session (nil: off). Default: first probe after 60 s of silence, or after
    /// the live keep-alive's interval and a minute when that is longer (so that probes never run on a
    /// healthy live session: they would cost more bytes than the keep-alive), then every 10 s, given up
    /// after 6 unanswered probes; data unacknowledged for 2 minutes drops the connection
    /// (`TCPKeepAlive.options(live:)`).
    public var keepAlive: TCPKeepAlive? = TCPKeepAlive()
    /// Verify and open the peers' batches on worker threads (`BatchPreparer`, one thread fewer than the
    /// cores, at least one) while the event loop commits earlier ones, instead of on the loop as they
    /// arrive: catch-up uses a second core and the loop stays free for other sessions (docs/node.md,
    /// "Threading"). The outcome is the same either way.
    public var prepareBatchesOffLoop = true

    /// Creates a configuration.
    public init(network: NetworkParameters) { self.network = network }
}

/// TCP keepalive timing (Linux `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`, and `TCP_USER_TIMEOUT`;
/// elsewhere only `SO_KEEPALIVE` with the system's timing).
///
/// A probe and its answer are two 52-byte segments (IP and TCP headers with timestamps), sent after every
/// `idleSeconds` of silence. On a live session kept open by the node's own keep-alive (a 19-byte frame
/// every 10 minutes each way, `KeepAlivePolicy`), probes after 60 s of silence cost about 250 KB a day
/// per idle connection (measured: 36 probe segments in 10 min 52 s), against about 35 KB for the keep-alive
/// with its headers and answers: about 580 idle live connections are open at once in the `longnan`
/// model, so some 144 MB a day of probes, ten times every byte the simulated protocol sends in the day
/// (docs/node.md, "Stalls and dead peers"). So on a node with keep-alive the first probe waits for the keep-alive's
/// interval and a minute (never, while the peer's keep-alives arrive), and a peer that vanished is
/// found by the unanswered keep-alive: `userTimeoutSeconds` after it (`TCP_USER_TIMEOUT`) the kernel
/// drops the connection.
public struct TCPKeepAlive: Sendable, Equatable {
    /// Seconds of silence before the first probe (at least the live keep-alive's interval and a minute,
    /// `options(live:)`).
    public var idleSeconds = 60
    /// Seconds between probes.
    public var intervalSeconds = 10
    /// Unanswered probes before the connection is dropped.
    public var probes = 6
    /// Seconds sent data may stay unacknowledged before the connection is dropped (0: the system's,
    /// about 15 minutes of retransmissions).
    public var userTimeoutSeconds = 120

    /// The default timing.
    public init() {}

    /// Seconds of silence before the first probe on a node whose live sessions follow `live`.
    public func idleSeconds(live: KeepAlivePolicy?) -> Int {
        guard let live else { return idleSeconds }
        return Swift.max(idleSeconds, Int(live.interval / 1_000) + 60)
    }

    /// The socket options that set it, on a node whose live sessions follow `live`.
    func options(live: KeepAlivePolicy?) -> [(ChannelOptions.Types.SocketOption, SocketOptionValue)] {
        var out: [(ChannelOptions.Types.SocketOption, SocketOptionValue)] = [(.socketOption(.so_keepalive), 1)]
        #if os(Linux)
        out.append((.tcpOption(.init(rawValue: TCP_KEEPIDLE)), SocketOptionValue(idleSeconds(live: live))))
        out.append((.tcpOption(.init(rawValue: TCP_KEEPINTVL)), SocketOptionValue(intervalSeconds)))
        out.append((.tcpOption(.init(rawValue: TCP_KEEPCNT)), SocketOptionValue(probes)))
        if userTimeoutSeconds > 0 {
            out.append((.tcpOption(.init(rawValue: TCP_USER_TIMEOUT)), SocketOptionValue(userTimeoutSeconds * 1_000)))
        }
        #endif
        return out
    }
}

/// A session in its live phase, as the node reports it (`FieldSyncNode.liveSessions`).
public struct LiveSession: Sendable, Equatable {
    /// The peer's device and role.
    public var peer: DeviceID
    public var peerRole: Role?
    /// Whether this node opened the connection.
    public var initiator: Bool
    /// For a session this node opened: the address it connected to.
    public var target: PeerAddress?
    /// The peer's socket address as seen by this node.
    public var remoteAddress: String?
    /// When the session went live (ms since the Unix epoch).
    public var since: UInt64
    /// Pushes that sent the peer changes on this session.
    public var pushes: Int
    /// Whether nothing is queued or waiting for an acknowledgement on this side.
    public var idle: Bool
    /// Socket bytes so far (the first exchange included).
    public var bytesIn: Int, bytesOut: Int
    /// Changes sent to the peer and received from it so far (the first exchange included).
    public var changesSent: Int, changesReceived: Int
}

/// A session that authenticated its peer and took a session slot: it runs until it ends
/// (`SessionObserver.ended`).
public struct SessionStart: Sendable, Equatable {
    /// The peer's device.
    public var peer: DeviceID
    /// The peer's role, from its certificate.
    public var peerRole: Role?
    /// Whether this node opened the connection.
    public var initiator: Bool
}

/// What a node reports to its owner about running sessions, on the node's loop (`FieldSyncNode.observe`).
public struct SessionObserver: Sendable {
    /// A session authenticated its peer and started (refused ones are reported to `refused` instead).
    public var started: (@Sendable (SessionStart) -> Void)?
    /// A session went live.
    public var live: (@Sendable (LiveSession) -> Void)?
    /// A session applied changes from the peer (the device, once authenticated), in any phase: the store
    /// changed.
    public var applied: (@Sendable (DeviceID?) -> Void)?
    /// A session's counters grew (bytes, changes), reported as they grow rather than at the session's end.
    public var traffic: (@Sendable (SessionTraffic) -> Void)?
    /// A session ended (any session, incoming or outgoing, before the caller of `sync` or `listen`
    /// hears of it); one that went live has `liveSince` set.
    public var ended: (@Sendable (SessionResult) -> Void)?
    /// A connection was refused (at accept, or at authentication when the session slots were full).
    /// Cut connections end as sessions: see `SessionResult.cut`.
    public var refused: (@Sendable (RefusalReason) -> Void)?

    /// Reports nothing.
    public init() {}
}

/// A node error; the text says what to do.
public struct NodeError: Error, Sendable, CustomStringConvertible {
    /// What happened.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

/// Runs sync sessions over TCP for one `Replicator`.
///
/// ```swift
/// let node = FieldSyncNode(configuration: config) { try makeReplicator() }
/// let server = try await node.listen(host: "127.0.0.1", port: 7000)
/// let result = try await node.sync(host: "127.0.0.1", port: 7001)
/// try await node.shutdown()
/// ```
public final class FieldSyncNode: Sendable {
    /// The node's single event loop group (one thread).
    public let group: MultiThreadedEventLoopGroup
    /// The loop every channel and every replicator call runs on.
    public let loop: any EventLoop
    /// Tunables.
    public let configuration: NodeConfiguration
    private let replicator: NIOLoopBoundBox<Replicator?>
    private let table: NIOLoopBoundBox<SessionTable>
    private let log: @Sendable (String) -> Void
    /// Structured log of sessions and refusals (`sync.*` metadata keys).
    public let logger: Logger

    /// Creates a node. `makeReplicator` runs on the node's loop, which then owns the replicator; the
    /// calling thread waits for it (use ``open(configuration:logger:log:makeReplicator:)`` from async code).
    /// - Parameters:
    ///   - logger: structured log (one entry per session end, refusals); discards everything by default.
    ///   - log: receives one plain line per noteworthy event (session end with its reason, refusals).
    ///   - makeReplicator: opens the replicator (on the node's loop).
    /// - Throws: what `makeReplicator` throws (the loop is then shut down).
    public convenience init(configuration: NodeConfiguration,
                            logger: Logger = Logger(label: "fieldsync.node", factory: { _ in SwiftLogNoOpLogHandler() }),
                            log: @escaping @Sendable (String) -> Void = { _ in },
                            makeReplicator: @escaping @Sendable () throws -> Replicator) throws {
        self.init(unopened: configuration, logger: logger, log: log)
        let box = replicator
        do {
            try loop.submit { box.value = try makeReplicator() }.wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Creates a node without blocking the caller: `makeReplicator` runs on the node's loop (its own
    /// thread, not Swift's cooperative pool) while the calling task is suspended. Opening a passphrase
    /// keystore derives its key with Argon2id (hundreds of milliseconds): an app's other tasks go on meanwhile.
    /// - Parameters:
    ///   - configuration: tunables.
    ///   - logger: structured log (one entry per session end, refusals); discards everything by default.
    ///   - log: receives one plain line per noteworthy event (session end with its reason, refusals).
    ///   - makeReplicator: opens the replicator (on the node's loop).
    /// - Returns: the node, owning the replicator.
    /// - Throws: what `makeReplicator` throws (the loop is then shut down).
    public static func open(configuration: NodeConfiguration,
                            logger: Logger = Logger(label: "fieldsync.node", factory: { _ in SwiftLogNoOpLogHandler() }),
                            log: @escaping @Sendable (String) -> Void = { _ in },
                            makeReplicator: @escaping @Sendable () throws -> Replicator) async throws -> FieldSyncNode {
        let node = FieldSyncNode(unopened: configuration, logger: logger, log: log)
        let box = node.replicator
        do {
            try await node.loop.submit { box.value = try makeReplicator() }.get()
        } catch {
            try? await node.group.shutdownOffThePool()
            throw error
        }
        return node
    }

    /// The node's loop and tables, without a replicator yet.
    private init(unopened configuration: NodeConfiguration, logger: Logger, log: @escaping @Sendable (String) -> Void) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        loop = group.next()
        self.configuration = configuration
        self.log = log
        self.logger = logger
        replicator = NIOLoopBoundBox.makeEmptyBox(valueType: Replicator.self, eventLoop: loop)
        table = NIOLoopBoundBox.makeBoxSendingValue(
            SessionTable(admission: HandshakeAdmission(capacity: max(1, configuration.maxPendingHandshakes),
                                                       perSource: max(1, configuration.maxHandshakesPerSource)),
                         logLimiter: LogRateLimiter(burst: max(1, configuration.logLinesPerSourcePerMinute)),
                         // Without a rate limit it still remembers proven sources (the handshake pool protects them).
                         handshakeRate: HandshakeRateLimiter(burst: configuration.unprovenHandshakesPerSource > 0
                                                                 ? configuration.unprovenHandshakesPerSource : Int.max,
                                                             window: UInt64(max(1, configuration.unprovenHandshakeWindow.nanoseconds / 1_000_000)),
                                                             provenFor: UInt64(max(0, configuration.provenSourceMemory.nanoseconds / 1_000_000)))),
            eventLoop: loop)
    }

    /// Runs `body` with the replicator on the node's loop (the only place it may be used).
    /// Sessions whose peer the body's writes revoked (a revocation written here) are cut at once
    /// (`recheckPeers`).
    public func withReplicator<T: Sendable>(_ body: @escaping @Sendable (Replicator) throws -> T) async throws -> T {
        let box = replicator
        return try await loop.submit { [self] () throws -> T in
            guard let r = box.value else { throw NodeError("the node was shut down") }
            defer { recheckPeers() }
            return try body(r)
        }.get()
    }

    /// Runs `body` with the replicator; call on the node's loop (daemon code already running there).
    public func withReplicatorOnLoop<T>(_ body: (Replicator) throws -> T) throws -> T {
        loop.preconditionInEventLoop()
        guard let r = replicator.value else { throw NodeError("the node was shut down") }
        return try body(r)
    }

    /// Starts listening; each accepted connection runs one session as responder.
    /// - Parameter onSession: called (on the loop) with each finished or failed session.
    /// - Returns: the listening channel (its `localAddress` gives the bound port when `port` is 0).
    public func listen(host: String, port: Int,
                       onSession: @escaping @Sendable (SessionResult) -> Void = { _ in }) async throws -> any Channel {
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // TCP_NODELAY is a TCP-level option: `.socketOption(.tcp_nodelay)` set SO_DEBUG (SOL_SOCKET, 1), which
            // an unprivileged node may not set, so it refused every connection (DebianPackageTests, NonRootServeTests).
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        for (option, value) in configuration.keepAlive?.options(live: configuration.liveKeepAlive) ?? [] { bootstrap = bootstrap.childChannelOption(option, value: value) }
        bootstrap = bootstrap.childChannelInitializer { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                let done = channel.eventLoop.makePromise(of: SessionResult.self)
                if try self.attachSession(to: channel, initiator: false, target: nil, done: done) {
                    done.futureResult.whenSuccess(onSession)
                } else {
                    done.fail(NodeError("refused"))
                }
            }
        }
        do {
            return try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw NodeError("cannot listen on \(host):\(port): \(error); change `listen` (or --listen), or stop what holds the port")
        }
    }

    /// Connects to `host:port`, runs one session as initiator and returns how it ended. With
    /// `liveSessions` configured and the peer agreeing, the session stays open after its first exchange
    /// and this returns only when its connection closes.
    /// - Throws: `NodeError` if the connection cannot be made or the node is at its session limit.
    /// - Parameter progress: called on the node's loop after every read of the session with its counters
    ///   so far (changes sent, acknowledged, received; bytes; elapsed time), for a progress display.
    public func sync(host: String, port: Int, progress: (@Sendable (SessionResult) -> Void)? = nil) async throws -> SessionResult {
        try await startSync(host: host, port: port, progress: progress).get()
    }

    /// `sync(host:port:progress:)` without Swift concurrency: the session runs on the node's loop and the
    /// future completes there. The daemon uses this, so its sessions never wait for a thread of the
    /// cooperative pool (which an embedding app, or a test process, may keep busy).
    public func startSync(host: String, port: Int, progress: (@Sendable (SessionResult) -> Void)? = nil) -> EventLoopFuture<SessionResult> {
        let done = loop.makePromise(of: SessionResult.self)
        let target = PeerAddress(host: host, port: port)
        var bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        for (option, value) in configuration.keepAlive?.options(live: configuration.liveKeepAlive) ?? [] { bootstrap = bootstrap.channelOption(option, value: value) }
        bootstrap = bootstrap.channelInitializer { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                guard try self.attachSession(to: channel, initiator: true, target: target, done: done, progress: progress) else {
                    throw NodeError("this node runs its limit of \(self.configuration.maxConcurrentSessions) sessions (outgoing handshakes included) or is shutting down; try again later")
                }
            }
        }
        bootstrap.connect(host: host, port: port).whenFailure { error in
            done.fail((error as? NodeError) ?? NodeError("cannot connect to \(host):\(port): \(error)"))
        }
        return done.futureResult
    }

    /// Connections open now (incoming and outgoing, in their handshake or live included). Call on the loop.
    public var runningSessions: Int {
        loop.preconditionInEventLoop()
        return table.value.running
    }

    /// Incoming sessions that count toward `maxConcurrentSessions` now: authenticated ones not in their
    /// live phase (connections still in their handshake do not count). Call on the loop.
    public var incomingSessions: Int {
        loop.preconditionInEventLoop()
        return table.value.sessionsIn - table.value.liveIncoming
    }

    /// How many sessions are in their live phase now. Call on the loop.
    public var liveSessionCount: Int {
        loop.preconditionInEventLoop()
        return table.value.live
    }

    /// Sessions in their live phase now, oldest first. Call on the loop.
    public var liveSessions: [LiveSession] {
        loop.preconditionInEventLoop()
        return table.value.handlers.values.sorted { $0.serial < $1.serial }.compactMap(\.liveSnapshot)
    }

    /// Sets what the node reports about running sessions (the daemon's scheduler and metrics). Call on the loop.
    public func observe(_ observer: SessionObserver) {
        loop.preconditionInEventLoop()
        table.value.observer = observer
    }

    /// Live mode: every session in its live phase sends its peer what the peer may hold of `logs` (every
    /// log when nil) and is not known to hold (`SyncSession.push`). Call on the loop after the store changed.
    /// A session whose peer sent those changes sends nothing back: it knows the peer holds them.
    /// - Returns: how many sessions sent changes.
    @discardableResult
    public func pushLive(logs: [LogID]? = nil) -> Int {
        loop.preconditionInEventLoop()
        var sent = 0
        for h in table.value.handlers.values.sorted(by: { $0.serial < $1.serial }) where h.isLive {
            if h.push(logs: logs) { sent += 1 }
        }
        return sent
    }

    /// Re-checks the standing of every session's peer against the trust store as it is now
    /// (`SyncSession.checkStanding`): a peer whose certificate, or its issuer's, is revoked or no longer
    /// valid is told why and its connection closed at once. The node calls this itself after a session
    /// applied changes (a revocation may have come in) and after `withReplicator`; call it (on the loop)
    /// after anything else that may have changed the trust store, such as reloading control state
    /// written by another process.
    /// - Returns: how many sessions were cut.
    @discardableResult
    public func recheckPeers() -> Int {
        loop.preconditionInEventLoop()
        var cut = 0
        for h in table.value.handlers.values.sorted(by: { $0.serial < $1.serial }) where h.recheckStanding() { cut += 1 }
        if cut > 0 {
            let line = "cut \(cut) session(s) whose peer is revoked or whose certificate is no longer valid"
            log(line)
            logger.warning("\(line)", metadata: ["sync.sessions.cut": .stringConvertible(cut)])
        }
        return cut
    }

    /// Graceful stop of sessions: refuses new ones (incoming connections are closed at accept, `sync`
    /// fails), closes idle live sessions at once (a normal end) and busy ones as soon as their batches are
    /// acknowledged, waits up to `grace` for the other running ones to finish, then closes what is left
    /// (each closed session loses at most its unacknowledged batches, which the next session resends).
    /// - Returns: how many sessions were cut when the grace period ran out.
    ///
    /// The wait runs on the node's event loop (a check every 20 ms), not on Swift's cooperative pool: an
    /// app whose pool is busy still gets its drain ended on time.
    @discardableResult
    public func drain(grace: TimeAmount) async throws -> Int {
        let table = self.table, loop = self.loop
        let done = loop.makePromise(of: Int.self)
        loop.execute {
            table.value.draining = true
            for h in table.value.handlers.values.sorted(by: { $0.serial < $1.serial }) { h.closeWhenIdle("the node is shutting down") }
            let deadline = NIODeadline.now() + grace
            func check() {
                if table.value.running == 0 {
                    done.succeed(0)
                } else if NIODeadline.now() >= deadline {
                    let open = Array(table.value.channels.values)
                    for c in open { c.close(promise: nil) }
                    done.succeed(open.count)
                } else {
                    loop.scheduleTask(in: .milliseconds(20)) { check() }
                }
            }
            check()
        }
        return try await done.futureResult.get()
    }

    /// Accepts sessions again after ``drain(grace:)``: background sync stopped and starts again on the same
    /// node (the app API's `stopSync` then `startSync`).
    public func resume() async throws {
        let table = self.table
        try await loop.submit { table.value.draining = false }.get()
    }

    /// Closes every session's connection now (each loses at most its unacknowledged batches).
    /// - Returns: how many were open.
    @discardableResult
    public func cutSessions() async throws -> Int {
        let table = self.table
        return try await loop.submit { () -> Int in
            let open = Array(table.value.channels.values)
            for c in open { c.close(promise: nil) }
            return open.count
        }.get()
    }

    /// Closes the loop. Channels still open are closed; call after closing the listener.
    public func shutdown() async throws {
        let box = replicator
        try await loop.submit { box.value = nil }.get()
        try await group.shutdownOffThePool()
    }

    /// What the node's role does once changes came in (on the loop): at a session's end, and shortly after
    /// changes arrive on a live session (which may stay open for days); when is the driver's
    /// `ReceiptScheduler`. HQ: if it holds changes that no HQ receipt covers yet
    /// (`ReceiptScheduler.scopeToReceipt`), it writes receipts (`writeIncrementalReceipts`: the logs held
    /// beyond what is receipted, up to the frontier held) as control changes in its widest scope; they
    /// travel back to the authors with the next sessions or pushes, through stations and relays, and tell
    /// each officer what reached HQ. A session cut midway still committed its acknowledged batches, so it
    /// is receipted too.
    private func receipt(_ decision: ReceiptDecision) {
        loop.preconditionInEventLoop()
        switch decision {
        case .none:
            return
        case let .armTimer(at):
            let now = nodeClockMilliseconds()
            loop.scheduleTask(in: .milliseconds(Int64(at > now ? at - now : 0))) { [self] in
                receipt(table.value.receipts.timerFired(0, now: Swift.max(at, nodeClockMilliseconds())))
            }
        case let .write(received):
            writeReceipts(received: received)
        }
    }

    private func writeReceipts(received: Int) {
        guard let replicator = replicator.value else { return }
        do {
            guard let scope = try ReceiptScheduler<Int>.scopeToReceipt(replicator) else { return }
            let receipts = try replicator.writeIncrementalReceipts(scope: scope, now: nodeClockMilliseconds())
            let seqs = receipts.map { "\($0.header.seq)" }.joined(separator: ", ")
            let line = "receipt \(scope)#\(seqs) written after receiving \(received) change(s)"
            log(line)
            logger.info("\(line)", metadata: ["sync.receipts": .stringConvertible(receipts.count)])
        } catch {
            log("could not write a receipt after a session: \(error)")
            logger.error("could not write a receipt after a session", metadata: ["sync.error": .string("\(error)")])
        }
    }

    /// Whether this node writes receipts (its certificate's role is HQ).
    private var isHQ: Bool { replicator.value?.identity.certificate.role == .hq }

    /// A session entered its live phase: count it, keep one live session per peer device, report it.
    private func sessionWentLive(_ h: SessionChannelHandler) {
        table.value.live += 1
        if !h.initiator { table.value.liveIncoming += 1 }
        settleDuplicates(of: h)
        if h.changesReceived > 0, isHQ { receipt(table.value.receipts.liveChanges(0, received: h.changesReceived, now: nodeClockMilliseconds())) }
        if let snapshot = h.liveSnapshot { table.value.observer.live?(snapshot) }
    }

    /// Two live sessions between the same pair are settled on one (`LiveSessionRules.settle`): both sides
    /// keep the same one, whatever the timing. Closing waits until the session is idle (a normal end).
    private func settleDuplicates(of h: SessionChannelHandler) {
        guard let peer = h.peer, let me = replicator.value?.identity.id else { return }
        let same = table.value.handlers.values.filter { $0.isLive && $0.peer == peer }.sorted { $0.serial < $1.serial }
        let close = LiveSessionRules.settle(me: me, peer: peer, live: same.map { .init(id: $0.serial, initiator: $0.initiator) })
        for (serial, reason) in close {
            same.first { $0.serial == serial }?.closeWhenIdle(reason.description)
        }
    }

    /// Adds the idle-state handler and a session handler to `channel` (on the loop); the session's result
    /// completes `done`. Returns false (and closes the channel) when the connection is refused: the node
    /// is draining; it already runs its maximum of authenticated sessions (live ones not counted); for an
    /// incoming connection, the unauthenticated pool refuses it (`HandshakeAdmission`); for an outgoing
    /// one, as many outgoing handshakes and sessions as `maxConcurrentSessions` already run.
    private func attachSession(to channel: any Channel, initiator: Bool, target: PeerAddress?, done: EventLoopPromise<SessionResult>,
                               progress: (@Sendable (SessionResult) -> Void)? = nil) throws -> Bool {
        loop.preconditionInEventLoop()  // one loop: the replicator is never touched from another thread
        guard let replicator = replicator.value else { throw NodeError("the node was shut down") }
        let table = self.table
        let source = channel.remoteAddress?.ipAddress ?? "?"
        let max = configuration.maxConcurrentSessions
        if table.value.draining {
            refuse(channel, .draining, source: source, initiator: initiator, detail: "the node is shutting down")
            return false
        }
        let counted = table.value.sessions - table.value.live
        table.value.nextSerial += 1
        let serial = table.value.nextSerial
        if initiator {
            guard counted + table.value.pendingOut < max else {
                refuse(channel, .sessionLimit, source: source, initiator: true,
                       detail: "\(counted) sessions and \(table.value.pendingOut) outgoing handshakes running (limit \(max))")
                return false
            }
            table.value.pendingOut += 1
        } else {
            guard counted < max else {
                refuse(channel, .sessionLimit, source: source, initiator: false,
                       detail: "\(counted) sessions running (limit \(max), live sessions not counted)")
                return false
            }
            // Before any work: a source that keeps starting handshakes and never completes one is refused
            // here, where a refusal costs almost nothing, rather than answered with a key agreement.
            if !table.value.handshakeRate.allows(source, now: nodeClockMilliseconds()) {
                refuse(channel, .handshakeRate, source: source, initiator: false,
                       detail: "more than \(configuration.unprovenHandshakesPerSource) handshakes in \(configuration.unprovenHandshakeWindow.nanoseconds / 1_000_000) ms "
                           + "from a source with no recent authenticated session")
                return false
            }
            let now = nodeClockMilliseconds()
            let proven = table.value.handshakeRate.isProven(source, now: now)
            switch table.value.admission.admit(serial, source: source, now: now, proven: proven) {
            case .admit:
                break
            case let .admitEvicting(victim):
                table.value.handlers.values.first { $0.serial == victim }?.cut(.evicted, "evicted from the full handshake pool by a connection from a less busy source")
            case let .refuse(reason):
                refuse(channel, reason, source: source, initiator: false,
                       detail: "\(table.value.admission.count) handshakes pending (limit \(configuration.maxPendingHandshakes), "
                           + "\(configuration.maxHandshakesPerSource) per source; this source has \(table.value.admission.count(from: source)))")
                return false
            }
        }
        let asksLive = configuration.liveSessions && table.value.askingLive < configuration.maxLiveSessions
        table.value.running += 1
        if asksLive { table.value.askingLive += 1 }
        let key = ObjectIdentifier(channel)
        table.value.channels[key] = channel
        done.futureResult.whenComplete { outcome in
            table.value.running -= 1
            if asksLive { table.value.askingLive -= 1 }
            if table.value.counted.remove(key) != nil {
                table.value.sessions -= 1
                if !initiator { table.value.sessionsIn -= 1 }
            } else if table.value.pending.remove(key) != nil {
                if initiator { table.value.pendingOut -= 1 } else { table.value.admission.release(serial) }
            }
            table.value.channels[key] = nil
            table.value.handlers[key] = nil
            guard case let .success(r) = outcome else { return }
            if let cut = r.cut { table.value.counters.cut[cut.rawValue, default: 0] += 1 }
            if r.liveSince != nil {
                table.value.live -= 1
                if !initiator { table.value.liveIncoming -= 1 }
            }
            table.value.observer.ended?(r)
        }
        table.value.pending.insert(key)
        // Registered before the caller's own callbacks, so the role's behaviour is done when they run.
        done.futureResult.whenSuccess { [self] result in
            guard isHQ else { return }
            receipt(table.value.receipts.sessionEnded(0, received: result.changesReceived, now: nodeClockMilliseconds()))
        }
        var salt = SecureRandom.bytes(16)
        var sessionConfig = SessionConfiguration(network: configuration.network, salt: salt)
        sessionConfig.live = asksLive
        sessionConfig.preparesBatchesElsewhere = configuration.prepareBatchesOffLoop
        // As many batches ahead as a receiving node prepares ahead (`SyncSession.maxBatchesPreparing`), so
        // that its verification worker still has batches queued when its loop has committed what was
        // verified: with 4, the receiver's pipeline ran dry every four batches and its loop waited a
        // batch's verification (issue 13, docs/benchmarks.md "Catch-up near 0.7"). The simulator keeps the
        // protocol default (4): it verifies on the spot.
        sessionConfig.window = SyncSession.maxBatchesPreparing
        let session = SyncSession(initiator: initiator, replicator: replicator, configuration: sessionConfig, now: nodeClockMilliseconds())
        salt.removeAll()
        var callbacks = SessionChannelHandler.Callbacks()
        callbacks.authenticated = { h in
            // Out of the handshake pool; into a session slot if one is free.
            table.value.pending.remove(key)
            if initiator {
                table.value.pendingOut -= 1
            } else {
                table.value.admission.release(serial)
                table.value.handshakeRate.authenticated(source, now: nodeClockMilliseconds())
            }
            let now = table.value.sessions - table.value.live
            guard now < max else {
                table.value.counters.refused[RefusalReason.sessionLimit.rawValue, default: 0] += 1
                table.value.observer.refused?(.sessionLimit)
                return "refused: \(now) authenticated sessions running (limit \(max))"
            }
            table.value.counted.insert(key)
            table.value.sessions += 1
            if !initiator { table.value.sessionsIn += 1 }
            if let peer = h.peer { table.value.observer.started?(SessionStart(peer: peer, peerRole: h.peerRole, initiator: initiator)) }
            return nil
        }
        callbacks.live = { [self] h in sessionWentLive(h) }
        callbacks.applied = { [self] h, changes, wasLive in
            if wasLive, isHQ { receipt(table.value.receipts.liveChanges(0, received: changes, now: nodeClockMilliseconds())) }
            recheckPeers()  // the changes may include a revocation of another session's peer
            table.value.observer.applied?(h.peer)
        }
        callbacks.traffic = { t in table.value.observer.traffic?(t) }
        callbacks.logGate = { r in
            // Finished sessions are always logged; failures are limited per source address.
            guard !r.isFinished else { return .log(suppressed: 0) }
            return table.value.logLimiter.check(source, now: nodeClockMilliseconds())
        }
        let limits = SessionChannelHandler.Limits(
            handshakeTimeout: configuration.handshakeTimeout, minProgressBytes: configuration.minProgressBytes,
            progressInterval: configuration.progressInterval, closeFlushLimit: configuration.idleTimeout)
        let handler = SessionChannelHandler(session: session, initiator: initiator, serial: serial, target: target,
                                            clock: nodeClockMilliseconds, log: log, logger: logger, done: done,
                                            callbacks: callbacks, limits: limits,
                                            refusedRetryMilliseconds: UInt64(Swift.max(0, configuration.refusedRetry.nanoseconds / 1_000_000)),
                                            liveIdleMilliseconds: LiveSessionRules.idleLimit(
                                                liveIdle: configuration.liveIdleTimeout.map { UInt64(Swift.max(1, $0.nanoseconds / 1_000_000)) },
                                                keepAlive: configuration.liveKeepAlive),
                                            keepAlive: configuration.liveKeepAlive,
                                            preparer: configuration.prepareBatchesOffLoop ? BatchPreparer.shared : nil,
                                            progress: progress)
        table.value.handlers[key] = handler
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(IdleStateHandler(allTimeout: configuration.idleTimeout))
        try sync.addHandler(handler)
        return true
    }

    /// Closes a connection refused at accept (or, outgoing, before it ran), counts it, and logs it within
    /// the per-source limit.
    private func refuse(_ channel: any Channel, _ reason: RefusalReason, source: String, initiator: Bool, detail: String) {
        table.value.counters.refused[reason.rawValue, default: 0] += 1
        table.value.observer.refused?(reason)
        channel.close(promise: nil)
        guard !initiator else { return }
        guard case let .log(suppressed) = table.value.logLimiter.check(source, now: nodeClockMilliseconds()) else { return }
        let more = suppressed > 0 ? "; \(suppressed) similar line(s) from this source suppressed" : ""
        let line = "refused a connection from \(channel.remoteAddress.map { "\($0)" } ?? "?"): \(reason.rawValue): \(detail)\(more)"
        log(line)
        logger.notice("connection refused", metadata: ["sync.remote": .string(source), "sync.refused": .string(reason.rawValue),
                                                       "sync.suppressed": .stringConvertible(suppressed)])
    }

    /// Connections refused and cut so far, by reason. Call on the loop.
    public var connectionCounters: ConnectionCounters {
        loop.preconditionInEventLoop()
        return table.value.counters
    }

    /// Incoming connections in their handshake now (the unauthenticated pool). Call on the loop.
    public var pendingHandshakes: Int {
        loop.preconditionInEventLoop()
        return table.value.admission.count
    }
}

/// The node's sessions, on its loop.
private struct SessionTable {
    var handlers: [ObjectIdentifier: SessionChannelHandler] = [:]
    var channels: [ObjectIdentifier: any Channel] = [:]
    /// Open connections (any phase); authenticated sessions, and of them incoming ones; in their live
    /// phase, and of them incoming ones.
    var running = 0, sessions = 0, sessionsIn = 0, live = 0, liveIncoming = 0
    /// Connections in their handshake (`pending`), of them outgoing ones; authenticated ones holding a
    /// session slot (`counted`).
    var pending: Set<ObjectIdentifier> = []
    var counted: Set<ObjectIdentifier> = []
    var pendingOut = 0
    /// Incoming connections in their handshake.
    var admission: HandshakeAdmission
    /// Refusals and cuts so far.
    var counters = ConnectionCounters()
    /// Log lines caused by each source address.
    var logLimiter: LogRateLimiter
    /// Handshakes started by sources that have not authenticated recently (burst `Int.max`: no limit), and
    /// the sources that have (their pending handshakes are protected in `admission`).
    var handshakeRate: HandshakeRateLimiter
    /// Open sessions that asked for live mode (bounded by `maxLiveSessions`).
    var askingLive = 0
    var nextSerial: UInt64 = 0
    var draining = false
    var observer = SessionObserver()
    /// When HQ writes receipts (one key: its widest scope).
    var receipts = ReceiptScheduler<Int>(policy: ReceiptPolicy())
}

/// The wall clock in ms since the Unix epoch (the node layer is where the clock is read).
@Sendable func nodeClockMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
