// The thin channel handler over the sans-IO `SyncSession` (STYLE.md section 2): bytes in with the wall
// clock, bytes out, events drained. Every protocol decision (framing, handshake, what to send, when the
// session is done or has failed) is the session's; the handler only moves bytes, keeps counters, closes
// the channel when the session says so, and cuts a session that stalls.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Logging
import NIOCore

/// How one session over one connection ended.
public struct SessionResult: Sendable, CustomStringConvertible {
    /// The outcome.
    public enum Outcome: Sendable, Equatable {
        /// Both sides were done; everything each side lacked was sent and acknowledged.
        case finished
        /// The session failed (protocol error, refused peer, stall, connection cut); the reason is logged.
        case failed(String)
    }

    /// The outcome.
    public var outcome: Outcome
    /// Whether this node opened the connection.
    public var initiator: Bool
    /// The peer's device id and role, once the handshake completed.
    public var peer: DeviceID?
    /// The peer's role, once the handshake completed.
    public var peerRole: Role?
    /// Changes sent to the peer / acknowledged by it / received from it and applied here.
    public var changesSent = 0, changesAcknowledged = 0, changesReceived = 0
    /// Changes the peer sent that were rejected here.
    public var changesRejected = 0
    /// Changes the peer sent that verified but the store refused (relay quota full, too many held back).
    public var changesRefused = 0
    /// The peer's socket address as seen by this node (for an incoming session, its ephemeral port).
    public var remoteAddress: String?
    /// Bytes read from and written to the socket.
    public var bytesIn = 0, bytesOut = 0
    /// Wall time from channel active to the end, in milliseconds.
    public var durationMilliseconds: UInt64 = 0

    /// Creates a result (the handler fills it in; tests and hooks may build one).
    public init(outcome: Outcome, initiator: Bool) {
        self.outcome = outcome
        self.initiator = initiator
    }

    /// Whether the session finished normally.
    public var isFinished: Bool { outcome == .finished }

    public var description: String {
        let who = peer.map { "\($0)\(peerRole.map { " (\($0))" } ?? "")" } ?? "unauthenticated peer"
        let how: String
        switch outcome {
        case .finished: how = "finished"
        case let .failed(why): how = "failed: \(why)"
        }
        let refused = changesRefused > 0 ? ", refused \(changesRefused) (store full)" : ""
        return "\(initiator ? "to" : "from") \(who): \(how); sent \(changesSent) (acked \(changesAcknowledged)), "
            + "received \(changesReceived), rejected \(changesRejected)\(refused); \(bytesOut) B out, \(bytesIn) B in, \(durationMilliseconds) ms"
    }
}

/// Owns one `SyncSession` for the lifetime of one TCP connection.
///
/// Threading: NIO calls a handler only on its channel's event loop. Every channel of a `FieldSyncNode`
/// lives on the node's single event loop, so the session and the `Replicator` it drives are only ever
/// touched from that one thread (the replicator and its store are not thread-safe).
final class SessionChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: SyncSession
    private let clock: @Sendable () -> UInt64
    private let log: @Sendable (String) -> Void
    private let logger: Logger
    private let done: EventLoopPromise<SessionResult>
    private var result: SessionResult
    private var started: UInt64 = 0
    private var failure: String?
    private var lastWrite: EventLoopFuture<Void>?
    private var closing = false
    private var completed = false
    private let progress: (@Sendable (SessionResult) -> Void)?

    /// - Parameter progress: called on the loop after every read with the counters so far (the outcome
    ///   is still "not finished"); for a progress display, which should throttle itself.
    init(session: SyncSession, initiator: Bool, clock: @escaping @Sendable () -> UInt64,
         log: @escaping @Sendable (String) -> Void, logger: Logger, done: EventLoopPromise<SessionResult>,
         progress: (@Sendable (SessionResult) -> Void)? = nil) {
        self.session = session
        self.progress = progress
        self.clock = clock
        self.log = log
        self.logger = logger
        self.done = done
        result = SessionResult(outcome: .failed("not started"), initiator: initiator)
    }

    func channelActive(context: ChannelHandlerContext) {
        started = clock()
        result.remoteAddress = context.channel.remoteAddress.map(hostPort)
        // The initiator's first handshake message was queued by the session's init.
        transmit(context: context)
        drainEvents(context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard !closing, let bytes = buffer.readBytes(length: buffer.readableBytes), !bytes.isEmpty else { return }
        result.bytesIn += bytes.count
        session.receive(bytes, now: clock())
        transmit(context: context)
        drainEvents(context: context)
        if let progress, !completed {
            var snapshot = result
            snapshot.changesSent = session.changesSent
            snapshot.changesAcknowledged = session.changesAcknowledged
            snapshot.changesReceived = session.changesReceived
            snapshot.durationMilliseconds = clock() &- started
            progress(snapshot)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.connectionClosed()
        drainEvents(context: context)
        complete()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            close(context: context, reason: "stalled: no bytes in either direction within the idle timeout")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, reason: "connection error: \(error)")
    }

    /// Writes everything the session has queued, then flushes once.
    private func transmit(context: ChannelHandlerContext) {
        var wrote = false
        while let bytes = session.pollTransmit() {
            result.bytesOut += bytes.count
            lastWrite = context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)))
            wrote = true
        }
        if wrote { context.flush() }
    }

    private func drainEvents(context: ChannelHandlerContext) {
        while let event = session.pollEvent() {
            switch event {
            case let .authenticated(id, role):
                result.peer = id
                result.peerRole = role
            case let .applied(_, rejected):
                result.changesRejected += rejected
            case .reconciled, .live:
                break  // this handler does not ask for live mode (`SessionConfiguration.live` stays false)
            case .finished:
                close(context: context, reason: nil)
            case let .failed(error):
                close(context: context, reason: "\(error)")
            }
        }
    }

    /// Closes once the last write has left (so a final `done` or `ack` is not lost to the close).
    private func close(context: ChannelHandlerContext, reason: String?) {
        if let reason, failure == nil, !session.isFinished { failure = reason }
        guard !closing else { return }
        closing = true
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }

    private func complete() {
        guard !completed else { return }
        completed = true
        result.changesSent = session.changesSent
        result.changesAcknowledged = session.changesAcknowledged
        result.changesReceived = session.changesReceived
        result.changesRefused = session.changesRefused
        result.durationMilliseconds = clock() &- started
        result.outcome = session.isFinished ? .finished : .failed(failure ?? "connection closed before the session finished")
        log("session \(result)")
        var meta: Logger.Metadata = [
            "sync.direction": .string(result.initiator ? "out" : "in"),
            "sync.outcome": .string(result.isFinished ? "finished" : "failed"),
            "sync.changes.sent": .stringConvertible(result.changesSent),
            "sync.changes.acked": .stringConvertible(result.changesAcknowledged),
            "sync.changes.received": .stringConvertible(result.changesReceived),
            "sync.changes.rejected": .stringConvertible(result.changesRejected),
            "sync.changes.refused": .stringConvertible(result.changesRefused),
            "sync.bytes.in": .stringConvertible(result.bytesIn),
            "sync.bytes.out": .stringConvertible(result.bytesOut),
            "sync.duration_ms": .stringConvertible(result.durationMilliseconds),
        ]
        if let p = result.peer { meta["sync.peer"] = .string(p.description) }
        if let r = result.peerRole { meta["sync.peer.role"] = .string(r.description) }
        if let a = result.remoteAddress { meta["sync.remote"] = .string(a) }
        if case let .failed(why) = result.outcome { meta["sync.error"] = .string(why) }
        if result.changesRefused > 0 {
            logger.warning("store refused changes: quota or held-back limit reached", metadata: meta)
        } else {
            logger.info(result.isFinished ? "session finished" : "session failed", metadata: meta)
        }
        done.succeed(result)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        guard !completed else { return }
        if started == 0 {
            // The connection never became active (connect failed): no session ran, nothing to log.
            completed = true
            done.fail(NodeError("the connection was never established"))
            return
        }
        failure = failure ?? "handler removed"
        complete()
    }
}
