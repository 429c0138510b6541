// The node: one Replicator, one event loop, TCP listeners and outgoing syncs. The only layer of FieldSync
// with sockets, timers and tasks.
//
// Threading rule: the Replicator and its store are not thread-safe. A node owns a
// MultiThreadedEventLoopGroup of exactly ONE thread; every channel (listening, accepted, outgoing) lives
// on it, so every session, and therefore every call into the Replicator, runs on that one thread. Code
// outside the loop reaches the replicator only through `withReplicator`, which runs on the loop.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix

/// Tunables of a node.
public struct NodeConfiguration: Sendable {
    /// The network both peers must share (Noise prologue).
    public var network: NetworkParameters
    /// A session with no bytes in either direction for this long is cut (it resumes at the next contact).
    public var idleTimeout: TimeAmount = .seconds(30)
    /// Most sessions (incoming and outgoing together) at once; further connections are closed at accept.
    public var maxConcurrentSessions = 8
    /// Timeout for establishing an outgoing TCP connection.
    public var connectTimeout: TimeAmount = .seconds(10)

    /// Creates a configuration.
    public init(network: NetworkParameters) { self.network = network }
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
    private let activeSessions: NIOLoopBoundBox<Int>
    private let activeIncoming: NIOLoopBoundBox<Int>
    private let openChannels: NIOLoopBoundBox<[ObjectIdentifier: any Channel]>
    private let draining: NIOLoopBoundBox<Bool>
    private let log: @Sendable (String) -> Void
    /// Structured log of sessions and refusals (`sync.*` metadata keys).
    public let logger: Logger

    /// Creates a node. `makeReplicator` runs on the node's loop, which then owns the replicator.
    /// - Parameters:
    ///   - logger: structured log (one entry per session end, refusals); discards everything by default.
    ///   - log: receives one plain line per noteworthy event (session end with its reason, refusals).
    public init(configuration: NodeConfiguration, logger: Logger = Logger(label: "fieldsync.node", factory: { _ in SwiftLogNoOpLogHandler() }),
                log: @escaping @Sendable (String) -> Void = { _ in },
                makeReplicator: @escaping @Sendable () throws -> Replicator) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        loop = group.next()
        self.configuration = configuration
        self.log = log
        self.logger = logger
        replicator = NIOLoopBoundBox.makeEmptyBox(valueType: Replicator.self, eventLoop: loop)
        activeSessions = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: loop)
        activeIncoming = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: loop)
        openChannels = NIOLoopBoundBox.makeBoxSendingValue([:], eventLoop: loop)
        draining = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: loop)
        let box = replicator
        do {
            try loop.submit { box.value = try makeReplicator() }.wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Runs `body` with the replicator on the node's loop (the only place it may be used).
    public func withReplicator<T: Sendable>(_ body: @escaping @Sendable (Replicator) throws -> T) async throws -> T {
        let box = replicator
        return try await loop.submit { () throws -> T in
            guard let r = box.value else { throw NodeError("the node was shut down") }
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
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let done = channel.eventLoop.makePromise(of: SessionResult.self)
                    if try self.attachSession(to: channel, initiator: false, done: done) {
                        done.futureResult.whenSuccess(onSession)
                    } else {
                        done.fail(NodeError("refused: session limit"))
                    }
                }
            }
        do {
            return try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw NodeError("cannot listen on \(host):\(port): \(error); change `listen` (or --listen), or stop what holds the port")
        }
    }

    /// Connects to `host:port`, runs one session as initiator and returns how it ended.
    /// - Throws: `NodeError` if the connection cannot be made or the node is at its session limit.
    /// - Parameter progress: called on the node's loop after every read of the session with its counters
    ///   so far (changes sent, acknowledged, received; bytes; elapsed time), for a progress display.
    public func sync(host: String, port: Int, progress: (@Sendable (SessionResult) -> Void)? = nil) async throws -> SessionResult {
        let done = loop.makePromise(of: SessionResult.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard try self.attachSession(to: channel, initiator: true, done: done, progress: progress) else {
                        throw NodeError("this node runs its limit of \(self.configuration.maxConcurrentSessions) sessions or is shutting down; try again later")
                    }
                }
            }
        do {
            _ = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            let e = (error as? NodeError) ?? NodeError("cannot connect to \(host):\(port): \(error)")
            done.fail(e)
            throw e
        }
        return try await done.futureResult.get()
    }

    /// Sessions running now (incoming and outgoing). Call on the loop.
    public var runningSessions: Int {
        loop.preconditionInEventLoop()
        return activeSessions.value
    }

    /// Incoming sessions running now. Call on the loop.
    public var incomingSessions: Int {
        loop.preconditionInEventLoop()
        return activeIncoming.value
    }

    /// Graceful stop of sessions: refuses new ones (incoming connections are closed at accept, `sync`
    /// fails), waits up to `grace` for the running ones to finish, then closes what is left (each closed
    /// session loses at most its unacknowledged batches, which the next session resends).
    /// - Returns: how many sessions were cut when the grace period ran out.
    @discardableResult
    public func drain(grace: TimeAmount) async throws -> Int {
        let active = activeSessions, stop = draining
        try await loop.submit { stop.value = true }.get()
        let deadline = NIODeadline.now() + grace
        while NIODeadline.now() < deadline {
            if try await loop.submit({ active.value }).get() == 0 { return 0 }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await cutSessions()
    }

    /// Closes every session's connection now (each loses at most its unacknowledged batches).
    /// - Returns: how many were open.
    @discardableResult
    public func cutSessions() async throws -> Int {
        let channels = openChannels
        return try await loop.submit { () -> Int in
            let open = Array(channels.value.values)
            for c in open { c.close(promise: nil) }
            return open.count
        }.get()
    }

    /// Closes the loop. Channels still open are closed; call after closing the listener.
    public func shutdown() async throws {
        let box = replicator
        try await loop.submit { box.value = nil }.get()
        try await group.shutdownGracefully()
    }

    /// What the node's role does once a session has ended (on the loop). HQ: after a session in which it
    /// ingested changes that no HQ receipt covers yet, it writes receipts (`writeIncrementalReceipts`:
    /// the logs held beyond what is receipted, up to the frontier held) as control changes in its widest
    /// scope; they travel back to the authors with the next sessions, through stations and relays, and
    /// tell each officer what reached HQ. A session cut midway still committed its acknowledged batches,
    /// so it is receipted too.
    private func afterSession(_ result: SessionResult) {
        loop.preconditionInEventLoop()
        guard let replicator = replicator.value else { return }
        let cert = replicator.identity.certificate
        guard cert.role == .hq, result.changesReceived > 0,
              let scope = cert.scopes.min(by: { $0.path.count < $1.path.count }) else { return }
        do {
            // Only when some log of a non-HQ author is held beyond what HQ receipted: otherwise two HQ
            // devices would answer each other's receipts with receipts forever.
            let store = replicator.store
            let behind = try store.holdings().contains { log, held in
                guard replicator.certificates[log.author]?.certificate.role != .hq else { return false }
                return held.frontier > (try store.receipted(log))
            }
            guard behind else { return }
            let receipts = try replicator.writeIncrementalReceipts(scope: scope, now: nodeClockMilliseconds())
            let seqs = receipts.map { "\($0.header.seq)" }.joined(separator: ", ")
            let line = "receipt \(scope)#\(seqs) written after receiving \(result.changesReceived) change(s)"
            log(line)
            logger.info("\(line)", metadata: ["sync.receipts": .stringConvertible(receipts.count)])
        } catch {
            log("could not write a receipt after a session: \(error)")
            logger.error("could not write a receipt after a session", metadata: ["sync.error": .string("\(error)")])
        }
    }

    /// Adds the idle-state handler and a session handler to `channel` (on the loop); the session's result
    /// completes `done`. Returns false (and closes the channel) when the node already runs its maximum of
    /// sessions.
    private func attachSession(to channel: any Channel, initiator: Bool, done: EventLoopPromise<SessionResult>,
                               progress: (@Sendable (SessionResult) -> Void)? = nil) throws -> Bool {
        loop.preconditionInEventLoop()  // one loop: the replicator is never touched from another thread
        guard let replicator = replicator.value else { throw NodeError("the node was shut down") }
        let active = activeSessions
        if draining.value {
            channel.close(promise: nil)
            return false
        }
        guard active.value < configuration.maxConcurrentSessions else {
            log("refused a connection from \(channel.remoteAddress.map { "\($0)" } ?? "?"): \(active.value) sessions running (limit \(configuration.maxConcurrentSessions))")
            channel.close(promise: nil)
            return false
        }
        active.value += 1
        let incoming = activeIncoming
        if !initiator { incoming.value += 1 }
        let channels = openChannels, key = ObjectIdentifier(channel)
        channels.value[key] = channel
        done.futureResult.whenComplete { _ in
            active.value -= 1
            if !initiator { incoming.value -= 1 }
            channels.value[key] = nil
        }
        // Registered before the caller's own callbacks, so the role's behaviour is done when they run.
        done.futureResult.whenSuccess { [self] result in afterSession(result) }
        var salt = SecureRandom.bytes(16)
        let session = SyncSession(initiator: initiator, replicator: replicator,
                                  configuration: SessionConfiguration(network: configuration.network, salt: salt),
                                  now: nodeClockMilliseconds())
        salt.removeAll()
        let handler = SessionChannelHandler(session: session, initiator: initiator, clock: nodeClockMilliseconds,
                                            log: log, logger: logger, done: done, progress: progress)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(IdleStateHandler(allTimeout: configuration.idleTimeout))
        try sync.addHandler(handler)
        return true
    }
}

/// The wall clock in ms since the Unix epoch (the node layer is where the clock is read).
@Sendable func nodeClockMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
