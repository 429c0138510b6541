// The thin channel handler over the sans-IO `SyncSession` (STYLE.md section 2): bytes in with the wall
// clock; each input's `SessionOutput` acted on (frames written, events handled, batches handed to the
// preparer, the session's timer kept). Every protocol decision (framing, handshake, what to send, when
// the session is done or has failed) is the session's; the handler only moves bytes, keeps counters,
// closes the channel when the session says so, cuts a session that stalls, and in live mode calls `push`
// when its node says the store changed.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncDriver
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
    /// Changes sent to the peer / acknowledged by it (applied there and not refused) / received from it and
    /// applied here.
    public var changesSent = 0, changesAcknowledged = 0, changesReceived = 0
    /// Changes sent that the peer applied in their batch but did not store, as it said (`ack-refused`,
    /// Protocols/sync.md): a relay whose quota is full, ... They stay here and are offered again later.
    public var changesRefusedByPeer = 0
    /// `changesRefusedByPeer` by reason (`ChangeRefusal.rawValue`: quota, heldBack, timestampInFuture, revoked, forked).
    public var refusedByPeer: [String: Int] = [:]
    /// Changes the peer sent that were rejected here.
    public var changesRejected = 0
    /// Changes the peer sent that verified but the store refused (relay quota full, too many held back).
    public var changesRefused = 0
    /// Fork evidence this node recorded in the session (`SyncSession.forksDetected`), and changes it
    /// refused as contradicting a log it holds (`SyncSession.changesForked`).
    public var forksDetected = 0, changesForked = 0
    /// Whether this session lifted this node's restore fence (`SyncSession.liftedRestoreFence`, docs/backup.md).
    public var liftedRestoreFence = false
    /// The peer's socket address as seen by this node (for an incoming session, its ephemeral port).
    public var remoteAddress: String?
    /// Bytes read from and written to the socket.
    public var bytesIn = 0, bytesOut = 0
    /// Wall time from channel active to the end, in milliseconds.
    public var durationMilliseconds: UInt64 = 0
    /// When the session went live (ms since the Unix epoch; Protocols/sync.md §4.1), nil if it never did.
    public var liveSince: UInt64?
    /// Pushes in the live phase that sent the peer something (`SyncSession.push` with changes to send).
    public var pushes = 0
    /// Keep-alives this node sent in the live phase (`NodeConfiguration.liveKeepAlive`).
    public var keepAlivesSent = 0
    /// Why this node cut the connection (handshake deadline, too slow, idle, evicted), nil if it did not.
    public var cut: CutReason?
    /// The session's own typed reason when it failed (`SyncSession`'s close reason), nil when it finished
    /// or the handler closed the connection for a reason of its own (`cut`, a refused peer, an error).
    public var error: SessionError?

    /// Creates a result (the handler fills it in; tests and hooks may build one).
    public init(outcome: Outcome, initiator: Bool) {
        self.outcome = outcome
        self.initiator = initiator
    }

    /// Whether the session finished normally.
    public var isFinished: Bool { outcome == .finished }

    /// `, refused N by the peer: relay full` (each reason with its count when several), or empty.
    public var refusedByPeerText: String {
        changesRefusedByPeer > 0 ? ", refused \(changesRefusedByPeer) by the peer: \(Self.reasons(refusedByPeer))" : ""
    }

    /// Counts by reason (`ChangeRefusal.rawValue`) as an operator reads them: `relay full` for one reason,
    /// `3 relay full, 1 dated ahead of the peer's clock` for several.
    public static func reasons(_ byReason: [String: Int]) -> String {
        byReason.sorted { $0.key < $1.key }.map { key, n in
            let why = ChangeRefusal(rawValue: key)?.explanation ?? key
            return byReason.count > 1 ? "\(n) \(why)" : why
        }.joined(separator: ", ")
    }

    public var description: String {
        let who = peer.map { "\($0)\(peerRole.map { " (\($0))" } ?? "")" } ?? "unauthenticated peer"
        let how: String
        switch outcome {
        case .finished: how = "finished"
        case let .failed(why): how = "failed: \(why)"
        }
        let refused = changesRefused > 0 ? ", refused \(changesRefused) (store full)" : ""
        let forks = forksDetected > 0 || changesForked > 0 ? ", FORK: \(forksDetected) new proof(s), \(changesForked) change(s) of another branch refused" : ""
        let live = (liveSince == nil ? "" : " (live, \(pushes) push(es))") + (liftedRestoreFence ? " (restore fence lifted)" : "")
        return "\(initiator ? "to" : "from") \(who): \(how)\(live); sent \(changesSent) (acked \(changesAcknowledged)\(refusedByPeerText)), "
            + "received \(changesReceived), rejected \(changesRejected)\(refused)\(forks); \(bytesOut) B out, \(bytesIn) B in, \(durationMilliseconds) ms"
    }
}

/// Counters a session adds to its node's totals, reported as they grow (after every read and push),
/// so that a live session open for days shows its traffic in the metrics while it runs.
public struct SessionTraffic: Sendable, Equatable {
    /// Bytes read from and written to the socket.
    public var bytesIn = 0, bytesOut = 0
    /// Changes received and accepted; of those, refused by the store; changes rejected by verification.
    public var changesReceived = 0, changesRefused = 0, changesRejected = 0
    /// Changes sent that the peer applied but did not store (`ack-refused`), by reason (`ChangeRefusal.rawValue`).
    public var refusedByPeer: [String: Int] = [:]

    /// No traffic.
    public init() {}

    /// Traffic with these counters.
    public init(bytesIn: Int, bytesOut: Int, changesReceived: Int, changesRefused: Int, changesRejected: Int) {
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.changesReceived = changesReceived
        self.changesRefused = changesRefused
        self.changesRejected = changesRejected
    }

    /// Whether every counter is zero.
    public var isEmpty: Bool { self == SessionTraffic() }

    fileprivate static func - (a: SessionTraffic, b: SessionTraffic) -> SessionTraffic {
        var d = SessionTraffic()
        d.bytesIn = a.bytesIn - b.bytesIn
        d.bytesOut = a.bytesOut - b.bytesOut
        d.changesReceived = a.changesReceived - b.changesReceived
        d.changesRefused = a.changesRefused - b.changesRefused
        d.changesRejected = a.changesRejected - b.changesRejected
        for (k, n) in a.refusedByPeer where n != b.refusedByPeer[k, default: 0] { d.refusedByPeer[k] = n - b.refusedByPeer[k, default: 0] }
        return d
    }
}

/// Owns one `SyncSession` for the lifetime of one TCP connection.
///
/// Threading: NIO calls a handler only on its channel's event loop. Every channel of a `FieldSyncNode`
/// lives on the node's single event loop, so the session and the `Replicator` it drives are only ever
/// touched from that one thread (the replicator and its store are not thread-safe). The node calls
/// `push` and `closeWhenIdle` on that loop too. With a `preparer`, the peer's batches are verified and
/// opened on its worker threads (values only: `BatchPreparation`) and handed back to the session on the
/// loop; while the session holds its maximum of batches in preparation, the handler stops reading.
final class SessionChannelHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the handler tells its node, on the loop.
    struct Callbacks {
        /// The session went live (its first exchange is over; it stays open).
        var live: (SessionChannelHandler) -> Void = { _ in }
        /// The session accepted this many changes from the peer; the flag says whether it was already in
        /// its live phase before they came (the first exchange's changes are counted when it goes live).
        var applied: (SessionChannelHandler, Int, Bool) -> Void = { _, _, _ in }
        /// The session's counters grew by this much since the last report.
        var traffic: (SessionTraffic) -> Void = { _ in }
        /// The handshake completed: the node moves the connection from its handshake pool to a session
        /// slot, or returns why it refuses (the session is then closed).
        var authenticated: (SessionChannelHandler) -> String? = { _ in nil }
        /// Whether the end of this session may be logged (failures are limited per source address).
        var logGate: (SessionResult) -> LogRateLimiter.Decision = { _ in .log(suppressed: 0) }
    }

    /// Deadlines that keep a connection from holding its place without doing its part.
    struct Limits {
        /// The handshake must complete this long after the connection opened (nil: no deadline).
        var handshakeTimeout: TimeAmount?
        /// At least this many bytes (in and out together) per `progressInterval` while there is work to do.
        var minProgressBytes = 0
        var progressInterval: TimeAmount = .seconds(10)
        /// A normal end waits this long at most for its last write to leave (the node's idle timeout).
        var closeFlushLimit: TimeAmount = .seconds(30)
    }

    /// How long a failed session's close waits for its last write (the error frame) to leave.
    static let failureFlushLimit: TimeAmount = .seconds(1)

    /// Attach order within the node (the older of two sessions has the smaller number).
    let serial: UInt64
    /// Whether this node opened the connection.
    let initiator: Bool
    /// The address this node connected to (outgoing sessions only).
    let target: PeerAddress?
    private let session: SyncSession
    private let clock: @Sendable () -> UInt64
    private let log: @Sendable (String) -> Void
    private let logger: Logger
    private let done: EventLoopPromise<SessionResult>
    private let callbacks: Callbacks
    private var result: SessionResult
    private var started: UInt64 = 0
    private var failure: String?
    private var lastWrite: EventLoopFuture<Void>?
    private var closing = false
    private var completed = false
    private let progress: (@Sendable (SessionResult) -> Void)?
    private var context: ChannelHandlerContext?
    /// Why the live session is to be closed once idle (drain, duplicate, refused changes to offer again).
    private var closeWhenIdleReason: String?
    private var deferredTimer: Scheduled<Void>?
    private var deferredTimerAt: UInt64?
    /// When a live session that refused changes closes (the driver's rule; its `retryAfter` is how long
    /// after the store first refused changes, quota or held back, a live session closes when idle).
    private var refusedRetry: RefusedRetry
    private var reported = SessionTraffic()
    /// A live session with no bytes in either direction for this long is closed normally (nil: never);
    /// the next session handshakes and reconciles anew.
    private let liveIdleMilliseconds: UInt64?
    private var lastTraffic: UInt64 = 0
    private var liveIdleTimer: Scheduled<Void>?
    /// The keep-alive of the live phase (nil: off), when bytes last left and when the peer was last heard
    /// (a whole frame arrived: `SyncSession.framesReceived` grew; any byte is no sign of life), and its timer.
    private let keepAlive: KeepAlivePolicy?
    private var lastSent: UInt64 = 0, lastReceived: UInt64 = 0
    /// `SyncSession.forksDetected` when the node was last told of this session's news.
    private var forksNoted = 0
    /// `session.framesReceived` when `lastReceived` was last set.
    private var framesHeard = 0
    private var keepAliveTimer: Scheduled<Void>?
    /// The session's timer (`SessionEvent.needsTimer`): the peer's standing lapsing, deferred changes due.
    private var sessionTimer: Scheduled<Void>?
    /// The latest `SessionEvent.deferred` time: when changes refused as dated ahead become acceptable.
    private var deferredUntil: UInt64?
    private let limits: Limits
    private var handshakeTimer: Scheduled<Void>?
    private var progressTimer: Scheduled<Void>?
    /// Bytes the socket took (writes completed) and bytes read, counted at the last progress check.
    private var bytesWritten = 0
    private var progressMark = 0
    /// Whether the session was seen idle (live, nothing in flight) since the last progress check: the
    /// check then only restarts its window (a live session that just got work is not judged on the quiet
    /// before).
    private var idleSinceCheck = false
    /// Verifies and opens the peer's batches off the loop (nil: the session does it as they arrive).
    private let preparer: BatchPreparer?
    /// Whether reading is paused because the session holds its maximum of batches in preparation.
    private var readingPaused = false
    /// Preparations back from the preparer and not handed to the session yet: they are handed over
    /// together, one loop task after the first came back, so that the batches the worker finished while
    /// the loop was busy reach the session at once and are committed in one store transaction
    /// (`SyncSession.completeBatchPreparations`); none waits for a batch still being prepared.
    private var preparedBack: [(ticket: UInt64, batch: PreparedBatch)] = []

    /// - Parameter progress: called on the loop after every read with the counters so far (the outcome
    ///   is still "not finished"); for a progress display, which should throttle itself.
    init(session: SyncSession, initiator: Bool, serial: UInt64 = 0, target: PeerAddress? = nil,
         clock: @escaping @Sendable () -> UInt64, log: @escaping @Sendable (String) -> Void, logger: Logger,
         done: EventLoopPromise<SessionResult>, callbacks: Callbacks = Callbacks(), limits: Limits = Limits(),
         refusedRetryMilliseconds: UInt64 = 600_000, liveIdleMilliseconds: UInt64? = nil, keepAlive: KeepAlivePolicy? = nil,
         preparer: BatchPreparer? = nil, progress: (@Sendable (SessionResult) -> Void)? = nil) {
        self.session = session
        self.keepAlive = keepAlive
        self.preparer = preparer
        self.liveIdleMilliseconds = liveIdleMilliseconds
        self.limits = limits
        refusedRetry = RefusedRetry(retryAfter: refusedRetryMilliseconds)
        self.initiator = initiator
        self.serial = serial
        self.target = target
        self.progress = progress
        self.clock = clock
        self.log = log
        self.logger = logger
        self.done = done
        self.callbacks = callbacks
        result = SessionResult(outcome: .failed("not started"), initiator: initiator)
    }

    /// The peer's device, once authenticated.
    var peer: DeviceID? { result.peer }
    /// The peer's role, once authenticated.
    var peerRole: Role? { result.peerRole }
    /// Changes received and accepted so far (from the session's `applied` events).
    var changesReceived: Int { result.changesReceived }
    /// Whether the session is in its live phase and not closing.
    var isLive: Bool { session.isLive && !closing }
    /// What the node reports of this session while it is live (nil before).
    var liveSnapshot: LiveSession? {
        guard isLive, let peer = result.peer, let since = result.liveSince else { return nil }
        return LiveSession(peer: peer, peerRole: result.peerRole, initiator: initiator, target: target,
                           remoteAddress: result.remoteAddress, since: since, pushes: result.pushes, idle: session.isIdle,
                           bytesIn: result.bytesIn, bytesOut: result.bytesOut, changesSent: session.changesSent,
                           changesReceived: result.changesReceived)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        started = clock()
        result.remoteAddress = context.channel.remoteAddress.map(hostPort)
        startTimers(context: context)
        // The initiator's first handshake message.
        act(on: session.start(), context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard !closing, let bytes = buffer.readBytes(length: buffer.readableBytes), !bytes.isEmpty else { return }
        result.bytesIn += bytes.count
        lastTraffic = clock()
        let wasLive = result.liveSince != nil
        afterInput(session.receive(bytes, now: clock()), context: context, wasLive: wasLive)
    }

    /// The peer is heard when a whole frame of it was handled (`SyncSession.framesReceived`), not when
    /// bytes arrive: a frame that never completes (a corrupted length prefix, a peer trickling a large
    /// frame a byte at a time) must not keep the keep-alive's `deadAfter` from cutting the session.
    /// A frame heard after this side's last one makes it this side's turn to send the next keep-alive
    /// (`LiveSessionRules.keepAlive`): the keep-alive timer, set for the later time that applied while it
    /// was the peer's turn, is set again.
    private func noteFramesHeard() {
        let frames = session.framesReceived
        guard frames != framesHeard else { return }
        framesHeard = frames
        let peersTurn = lastReceived < lastSent
        lastReceived = clock()
        if peersTurn, lastReceived >= lastSent, let timer = keepAliveTimer, let context {
            timer.cancel()
            keepAliveTimer = nil
            watchKeepAlive(context: context)
        }
    }

    /// After the session took input (bytes, or a batch prepared elsewhere): batches to prepare, bytes to
    /// send, events, the node's callbacks, reading paused or resumed.
    private func afterInput(_ out: SessionOutput, context: ChannelHandlerContext, wasLive: Bool) {
        noteFramesHeard()
        act(on: out, context: context)
        // A fork proof recorded from this input (detected in the peer's batch, or the peer's proof) is news
        // too, though no change was stored: it goes on at once, like changes, not with the next change.
        let newForks = session.forksDetected != forksNoted
        forksNoted = session.forksDetected
        if out.changesAccepted > 0 || newForks { callbacks.applied(self, out.changesAccepted, wasLive) }
        afterActivity(context: context)
        pauseReadingIfBacklogged(context: context)
        if let progress, !completed {
            var snapshot = result
            snapshot.changesSent = session.changesSent
            snapshot.changesAcknowledged = session.changesAcknowledged
            snapshot.durationMilliseconds = clock() &- started
            progress(snapshot)
        }
    }

    /// Hands the session's batches to the preparer; each comes back to the session on the loop. If the
    /// preparer cannot take work (its pool stopped), the batch is prepared here.
    private func startPreparations(_ batches: [BatchPreparation], context: ChannelHandlerContext) {
        for batch in batches {
            guard let preparer else {
                // A session configured to prepare elsewhere with no preparer here: prepared on the loop.
                let wasLive = result.liveSince != nil
                afterInput(session.completeBatchPreparation(ticket: batch.ticket, batch.prepare(), now: clock()), context: context, wasLive: wasLive)
                continue
            }
            preparer.prepare(batch, on: context.eventLoop).assumeIsolated().whenComplete { [self] outcome in
                guard !completed, !closing, let context = self.context else { return }
                preparedBack.append((batch.ticket, (try? outcome.get()) ?? batch.prepare()))
                guard preparedBack.count == 1 else { return }
                // Handed over after the loop's tasks already queued, among them the other preparations
                // that came back meanwhile.
                context.eventLoop.assumeIsolated().execute { [self] in
                    let back = preparedBack
                    preparedBack = []
                    guard !completed, !closing, let context = self.context else { return }
                    let wasLive = result.liveSince != nil
                    afterInput(session.completeBatchPreparations(back, now: clock()), context: context, wasLive: wasLive)
                }
            }
        }
    }

    /// Stops reading from the peer while the session holds its maximum of batches in preparation (the
    /// frames already read wait in the session), and reads again once one is applied.
    private func pauseReadingIfBacklogged(context: ChannelHandlerContext) {
        let full = session.preparationBacklogFull && !closing && !completed
        guard full != readingPaused else { return }
        readingPaused = full
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: !full)
    }

    func channelInactive(context: ChannelHandlerContext) {
        act(on: session.connectionClosed(), context: context)
        complete()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // An idle live session waits for changes, silently and for as long as it takes; TCP keepalive
            // notices a peer that is gone. With a batch in flight or queued, or a frame of the peer begun and
            // not whole (a corrupted length prefix waits for bytes that never come), silence is a stall.
            if session.isIdle && !session.receivingFrame { return }
            cut(.idle, "stalled: no bytes in either direction within the idle timeout")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The handshake deadline and the progress check (Limits). An idle live session is exempt from the
    /// progress check: it waits for changes, silently, for as long as it takes; not while a frame of the
    /// peer is begun and not whole (a peer that trickles a frame is not idle, it is slow).
    private func startTimers(context: ChannelHandlerContext) {
        let loop = context.eventLoop.assumeIsolated()
        if let deadline = limits.handshakeTimeout {
            handshakeTimer = loop.scheduleTask(in: deadline) { [self] in
                handshakeTimer = nil
                guard result.peer == nil, !completed else { return }
                cut(.handshakeTimeout, "handshake not completed within \(Self.seconds(deadline)) (\(result.bytesIn) B received)")
            }
        }
        if limits.minProgressBytes > 0 { scheduleProgressCheck(loop) }
    }

    private func scheduleProgressCheck(_ loop: NIOIsolatedEventLoop) {
        let interval = limits.progressInterval
        progressTimer = loop.scheduleTask(in: interval) { [self] in
            progressTimer = nil
            guard !completed, !closing else { return }
            let moved = result.bytesIn + bytesWritten
            let wasIdle = idleSinceCheck
            let idle = session.isIdle && !session.receivingFrame
            idleSinceCheck = idle
            let delta = moved - progressMark
            progressMark = moved
            if !idle, !wasIdle, delta < limits.minProgressBytes {
                cut(.tooSlow, "too slow: \(delta) B moved in \(Self.seconds(interval)) (minimum \(limits.minProgressBytes))")
                return
            }
            scheduleProgressCheck(loop)
        }
    }

    private static func seconds(_ t: TimeAmount) -> String {
        let ms = t.nanoseconds / 1_000_000
        return ms % 1_000 == 0 ? "\(ms / 1_000) s" : "\(ms) ms"
    }

    /// Cuts the connection for `reason` (counted by the node; logged with the session's end).
    func cut(_ reason: CutReason, _ detail: String) {
        guard let context, !closing else { return }
        result.cut = reason
        close(context: context, reason: detail)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, reason: "connection error: \(error)")
    }

    /// Live mode: sends the peer the changes of `logs` (every log when nil) it is not known to hold
    /// (`SyncSession.push`). Does nothing before the session is live, once it is closing, or once it is
    /// to close when idle (more pushes would only keep it busy; the peer gets them on another session).
    /// - Returns: whether changes were sent.
    @discardableResult
    func push(logs: [LogID]?) -> Bool {
        guard let context, isLive, closeWhenIdleReason == nil else { return false }
        let out = session.push(logs: logs, now: clock())
        act(on: out, context: context)
        let sent = out.changesSent > 0
        if sent { result.pushes += 1 }
        afterActivity(context: context)
        return sent
    }

    /// Re-checks the peer's standing now (`SyncSession.checkStanding`): a peer revoked or expired is told
    /// why and the connection is closed at once. The node calls this when its trust store changed; the
    /// session's own timer covers the peer's certificate lapsing.
    /// - Returns: whether the session was cut now.
    @discardableResult
    func recheckStanding() -> Bool {
        guard let context, !closing, !completed else { return false }
        let out = session.checkStanding(now: clock())
        act(on: out, context: context)
        reportTraffic()
        return out.closeReason != nil
    }

    /// Keeps the session's one timer (`SessionEvent.needsTimer`, replacing any earlier one); when it fires,
    /// `SyncSession.timerFired` (which asks again if the wall clock moved back).
    private func setSessionTimer(at: UInt64, context: ChannelHandlerContext) {
        sessionTimer?.cancel()
        let now = clock()
        let delay = at > now ? Int64(min(at - now, UInt64(Int64.max / 1_000_000))) : 0
        sessionTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { [self] in
            sessionTimer = nil
            guard let context = self.context, !closing, !completed else { return }
            act(on: session.timerFired(now: clock()), context: context)
            afterActivity(context: context)
        }
    }

    /// Closes an idle live session once no bytes moved for `liveIdleMilliseconds` (`LiveSessionRules.idle`):
    /// a normal end; the node's scheduler opens a new session, whose handshake and reconciliation check
    /// everything anew.
    private func watchLiveIdle(context: ChannelHandlerContext) {
        guard let limit = liveIdleMilliseconds, liveIdleTimer == nil, !closing else { return }
        let now = clock()
        let due = lastTraffic &+ limit
        let delay = due > now ? Int64(min(due - now, UInt64(Int64.max / 1_000_000))) : 0
        liveIdleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { [self] in
            liveIdleTimer = nil
            guard let context = self.context, !closing else { return }
            switch LiveSessionRules.idle(now: clock(), lastTraffic: lastTraffic, isIdle: session.isIdle, limit: limit) {
            case let .close(reason): closeWhenIdle(reason.description)
            case .recheck, .keep: watchLiveIdle(context: context)
            }
        }
    }

    /// The keep-alive of the live phase (`LiveSessionRules.keepAlive`, the same rule the simulator's agent
    /// runs): a keep-alive frame after `interval` without writing (`SyncSession.keepAlive`, which
    /// re-checks the peer's standing first), and a cut (`CutReason.peerGone`) after `deadAfter` without
    /// a whole frame from the peer (bytes of a frame that never completes do not count). TCP keepalive notices a host that is gone; this also notices a peer process that
    /// hangs and a connection left half-open behind a middlebox, and keeps an idle link from being closed.
    private func watchKeepAlive(context: ChannelHandlerContext) {
        guard let policy = keepAlive, keepAliveTimer == nil, !closing, !completed, session.isLive else { return }
        let now = clock()
        switch LiveSessionRules.keepAlive(now: now, lastSent: lastSent, lastReceived: lastReceived,
                                             initiator: initiator, policy: policy) {
        case .send:
            result.keepAlivesSent += 1
            act(on: session.keepAlive(now: now), context: context)
            afterActivity(context: context)
            watchKeepAlive(context: context)  // sent now: the rule says when to look again
        case let .peerGone(silent):
            cut(.peerGone, "no whole frame from the peer for \(silent / 1_000) s (keep-alive): it is gone, hung, the connection is half-open or a frame never completes")
        case let .recheck(at):
            let delay = Int64(min(at > now ? at - now : 0, UInt64(Int64.max / 1_000_000)))
            keepAliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { [self] in
                keepAliveTimer = nil
                guard let context = self.context else { return }
                watchKeepAlive(context: context)
            }
        }
    }

    /// Closes the session as soon as it is live with nothing in flight on this side (at once if it
    /// already is): a normal end (`finished`). A session that never goes live ends as it would anyway.
    /// - Parameter reason: logged with the session's end.
    func closeWhenIdle(_ reason: String) {
        if closeWhenIdleReason == nil { closeWhenIdleReason = reason }
        if let context { closeIfIdleRequested(context: context) }
    }

    /// After bytes came in or a push went out: a requested close, refused changes to offer again, the
    /// counters.
    private func afterActivity(context: ChannelHandlerContext) {
        if session.isIdle && !session.receivingFrame { idleSinceCheck = true }
        watchDeferred(context: context)
        closeIfIdleRequested(context: context)
        reportTraffic()
    }

    private func closeIfIdleRequested(context: ChannelHandlerContext) {
        guard closeWhenIdleReason != nil, session.isIdle, !closing else { return }
        close(context: context, reason: nil)
    }

    /// Changes this session refused are not offered again on the same live session (they were
    /// acknowledged): the driver's `RefusedRetry` says when the session closes (when idle) so that the
    /// next session's reconciliation offers them again (Protocols/sync.md §4.1); this arms the timer.
    private func watchDeferred(context: ChannelHandlerContext) {
        let now = clock()
        let roomRefusedByPeer = result.refusedByPeer[ChangeRefusal.quota.rawValue, default: 0]
            + result.refusedByPeer[ChangeRefusal.heldBack.rawValue, default: 0]
        let decision = refusedRetry.check(now: now, refused: result.changesRefused, refusedByPeer: roomRefusedByPeer,
                                          deferredUntil: deferredUntil, live: session.isLive)
        guard closeWhenIdleReason == nil else { return }
        switch decision {
        case .keep:
            return
        case let .close(reason):
            closeWhenIdle(reason.description)
        case let .recheck(until):
            if let at = deferredTimerAt, at <= until { return }
            deferredTimer?.cancel()
            deferredTimerAt = until
            deferredTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(until - now))) { [self] in
                deferredTimer = nil
                deferredTimerAt = nil
                if let context = self.context { afterActivity(context: context) }
            }
        }
    }

    private func reportTraffic() {
        var now = SessionTraffic(bytesIn: result.bytesIn, bytesOut: result.bytesOut, changesReceived: result.changesReceived,
                                 changesRefused: result.changesRefused, changesRejected: result.changesRejected)
        now.refusedByPeer = result.refusedByPeer
        let delta = now - reported
        guard !delta.isEmpty else { return }
        reported = now
        callbacks.traffic(delta)
    }

    /// Writes the output's frames (then flushes once), acts on its events and hands its batches to the
    /// preparer.
    private func act(on out: SessionOutput, context: ChannelHandlerContext) {
        transmit(out.frames, context: context)
        handle(out.events, context: context)
        if !out.preparations.isEmpty { startPreparations(out.preparations, context: context) }
    }

    private func transmit(_ frames: [SessionFrame], context: ChannelHandlerContext) {
        var wrote = false
        for frame in frames {
            let bytes = frame.bytes
            result.bytesOut += bytes.count
            lastTraffic = clock()
            lastSent = lastTraffic
            let write = context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)))
            let n = bytes.count
            write.assumeIsolated().whenSuccess { [self] _ in bytesWritten += n }
            lastWrite = write
            wrote = true
        }
        if wrote { context.flush() }
    }

    private func handle(_ events: [SessionEvent], context: ChannelHandlerContext) {
        for event in events {
            switch event {
            case let .authenticated(id, role):
                result.peer = id
                result.peerRole = role
                handshakeTimer?.cancel()
                handshakeTimer = nil
                if let refused = callbacks.authenticated(self) {
                    close(context: context, reason: refused)
                    return
                }
            case let .applied(batch):
                result.changesReceived += batch.accepted
                result.changesRejected += batch.rejected
            case let .refused(change):
                // Quota or held back: offered again by a new session (`RefusedRetry`).
                if change.reason == .quota || change.reason == .heldBack { result.changesRefused += 1 }
            case let .refusedByPeer(change):
                result.changesRefusedByPeer += 1
                result.refusedByPeer[change.reason.rawValue, default: 0] += 1
            case let .deferred(until):
                deferredUntil = until
            case let .needsTimer(at):
                setSessionTimer(at: at, context: context)
            case .reconciled, .sent, .deferredDue:
                break  // deferredDue: `afterActivity` after the timer asks `RefusedRetry`, which closes when idle
            case .live:
                result.liveSince = clock()
                watchLiveIdle(context: context)
                watchKeepAlive(context: context)
                callbacks.live(self)
            case .closed(.finished):
                close(context: context, reason: nil)
            case let .closed(.failed(error)):
                result.error = error
                close(context: context, reason: "\(error)")
            }
        }
    }

    /// Closes the connection; input is ignored from here on. A cut (``cut(_:_:)``: handshake deadline, too
    /// slow, idle, evicted, peer gone) closes at once. A failure (a protocol error, a peer found revoked or
    /// expired) waits at most ``failureFlushLimit`` for its last write, the error frame that tells the peer
    /// why. A normal end waits for its last write (so that a final `done` or `ack` is not lost to the
    /// close) for at most `limits.closeFlushLimit`, the idle timeout. Before, every close waited for the
    /// last write with no bound: a peer that stops reading (a zero TCP window) kept a cut session, its
    /// slot and its connection open for ever, a revoked peer's included.
    private func close(context: ChannelHandlerContext, reason: String?) {
        if let reason, failure == nil, !session.isFinished { failure = reason }
        guard !closing else { return }
        closing = true
        let channel = context.channel
        guard result.cut == nil, let lastWrite else {
            channel.close(promise: nil)
            return
        }
        let bound = reason == nil ? limits.closeFlushLimit : Swift.min(limits.closeFlushLimit, Self.failureFlushLimit)
        let limit = context.eventLoop.scheduleTask(in: bound) { channel.close(promise: nil) }
        lastWrite.whenComplete { _ in
            limit.cancel()
            channel.close(promise: nil)
        }
    }

    private func complete() {
        guard !completed else { return }
        completed = true
        deferredTimer?.cancel()
        deferredTimer = nil
        sessionTimer?.cancel()
        sessionTimer = nil
        liveIdleTimer?.cancel()
        liveIdleTimer = nil
        keepAliveTimer?.cancel()
        keepAliveTimer = nil
        handshakeTimer?.cancel()
        handshakeTimer = nil
        progressTimer?.cancel()
        progressTimer = nil
        result.changesSent = session.changesSent
        result.changesAcknowledged = session.changesAcknowledged
        result.forksDetected = session.forksDetected
        result.changesForked = session.changesForked
        result.liftedRestoreFence = session.liftedRestoreFence
        result.durationMilliseconds = clock() &- started
        result.outcome = session.isFinished ? .finished : .failed(failure ?? "connection closed before the session finished")
        reportTraffic()
        guard case let .log(suppressed) = callbacks.logGate(result) else {
            done.succeed(result)
            return
        }
        let more = suppressed > 0 ? "; \(suppressed) similar line(s) from this source suppressed" : ""
        log("session \(result)\(closeWhenIdleReason.map { "; closed: \($0)" } ?? "")\(more)")
        var meta: Logger.Metadata = [
            "sync.direction": .string(result.initiator ? "out" : "in"),
            "sync.outcome": .string(result.isFinished ? "finished" : "failed"),
            "sync.changes.sent": .stringConvertible(result.changesSent),
            "sync.changes.acked": .stringConvertible(result.changesAcknowledged),
            "sync.changes.received": .stringConvertible(result.changesReceived),
            "sync.changes.rejected": .stringConvertible(result.changesRejected),
            "sync.changes.refused": .stringConvertible(result.changesRefused),
            "sync.changes.refusedByPeer": .stringConvertible(result.changesRefusedByPeer),
            "sync.bytes.in": .stringConvertible(result.bytesIn),
            "sync.bytes.out": .stringConvertible(result.bytesOut),
            "sync.duration_ms": .stringConvertible(result.durationMilliseconds),
        ]
        if let p = result.peer { meta["sync.peer"] = .string(p.description) }
        if let r = result.peerRole { meta["sync.peer.role"] = .string(r.description) }
        if let a = result.remoteAddress { meta["sync.remote"] = .string(a) }
        if case let .failed(why) = result.outcome { meta["sync.error"] = .string(why) }
        if let code = result.error?.code { meta["sync.error.code"] = .string(code.rawValue) }
        if let since = result.liveSince {
            meta["sync.live_ms"] = .stringConvertible(clock() &- since)
            meta["sync.live.pushes"] = .stringConvertible(result.pushes)
        }
        if let why = closeWhenIdleReason, result.isFinished { meta["sync.closed"] = .string(why) }
        if let cut = result.cut { meta["sync.cut"] = .string(cut.rawValue) }
        if suppressed > 0 { meta["sync.suppressed"] = .stringConvertible(suppressed) }
        if result.forksDetected > 0 || result.changesForked > 0 {
            meta["sync.forks.detected"] = .stringConvertible(result.forksDetected)
            meta["sync.changes.forked"] = .stringConvertible(result.changesForked)
            logger.warning("fork: an author signed two branches of one log (fieldsync forks lists the proofs)", metadata: meta)
        } else if result.changesRefused > 0 {
            logger.warning("store refused changes: quota or held-back limit reached", metadata: meta)
        } else if result.changesRefusedByPeer > 0 {
            meta["sync.changes.refusedByPeer.reasons"] = .string(result.refusedByPeer.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
            logger.warning("the peer refused changes of this node (\(result.refusedByPeerText.dropFirst(2))); they stay here and are offered again later", metadata: meta)
        } else {
            logger.info(result.isFinished ? "session finished" : "session failed", metadata: meta)
        }
        done.succeed(result)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        guard !completed else { return }
        if started == 0, result.cut == nil {
            // The connection never became active (connect failed): no session ran, nothing to log.
            completed = true
            done.fail(NodeError("the connection was never established"))
            return
        }
        // Cut before it became active (an accepted connection evicted from the handshake pool by one
        // accepted in the same burst): it ends as a cut, so the node counts it with the others.
        if started == 0 { started = clock() }
        failure = failure ?? "handler removed"
        complete()
    }
}
