import FieldSyncCore
import FieldSyncCrypto

/// Tunables of a session.
public struct SessionConfiguration: Sendable {
    /// Network parameters (prologue).
    public var network: NetworkParameters
    /// Largest encoded batch (bytes), below the transport's 65,519-byte plaintext limit.
    public var maxBatchBytes = 60_000
    /// The first batch's size limit; each next batch doubles it up to `maxBatchBytes`. Small first
    /// batches get the most urgent changes applied early on a slow link that may be cut at any moment.
    public var firstBatchBytes = 4_000
    /// Batches sent but not yet acknowledged.
    public var window = 4
    /// Most application messages accepted from a peer in one session (bounds work per session).
    public var maxMessages = 1_000_000
    /// 16 random bytes for reconciliation (drawn by the driver from its injected generator).
    public var salt: [UInt8]
    /// Keep the session open after the first exchange when the peer asks for it too (live mode,
    /// Protocols/sync.md §4.1): later changes travel as batches on it through `push`, without a new
    /// handshake or reconciliation. For links that stay up (wired links, a station's Wi-Fi).
    public var live = false
    /// Let the driver decode, verify and open the peer's batches elsewhere (another thread): a batch's
    /// certificates are learned as it arrives, then it is handed out (`SessionOutput.preparations`) and
    /// applied when the driver returns it prepared (`completeBatchPreparation`), in arrival order;
    /// messages that come after it wait for it. False (the default): batches are decoded, verified and
    /// applied as they arrive.
    public var preparesBatchesElsewhere = false
    /// Send this side's clock (`SessionMessage.clock`) at the start of the session, so that the peer holds
    /// back changes dated beyond it plus the tolerance instead of sending them to be refused
    /// (Protocols/sync.md §4.3). True by default; a network with nodes of a version before tag 10 turns it
    /// off until every node has one (they fail a session on an unknown tag).
    public var announcesClock = true

    /// Creates a configuration.
    public init(network: NetworkParameters, salt: [UInt8]) {
        precondition(salt.count == 16, "salts are 16 bytes")
        self.network = network
        self.salt = salt
    }
}

/// A batch of the peer's changes for a driver to decode, verify and open on another thread
/// (`SessionConfiguration.preparesBatchesElsewhere`): pure work on values, `Sendable`.
public struct BatchPreparation: Sendable {
    /// Identifies the batch to `SyncSession.completeBatchPreparation`.
    public let ticket: UInt64
    /// The batch's id on the wire.
    public let id: UInt32
    /// The batch's changes as they came, in order.
    public let encoded: [[UInt8]]
    /// This node's certificate and the peer's (as its handshake presented it): both must be entitled to
    /// every log of the batch (Protocols/sync.md §3).
    let own: Certificate
    let peer: Certificate
    /// A snapshot of the replicator's trust, certificates and keys, taken after the batch's certificates
    /// were learned.
    public let verifier: ChangeVerifier
    /// When the batch arrived (ms since the Unix epoch).
    public let now: UInt64

    /// What the other thread runs: decodes the changes and checks that both sides may hold their logs
    /// (as a session that prepares its own batches does on arrival), then verifies and opens them and
    /// decodes and validates their edits (`ChangeVerifier.prepare(_:now:decodingEdits:)`), so that the
    /// committing thread only merges, seals and commits.
    public func prepare() -> PreparedBatch {
        do {
            let changes = try SyncSession.decodeBatch(id, encoded, own: own, peer: peer)
            return PreparedBatch(changes: verifier.prepare(changes, now: now, decodingEdits: true))
        } catch {
            return PreparedBatch(failure: error)
        }
    }
}

/// A batch prepared elsewhere (`BatchPreparation.prepare()`), for `SyncSession.completeBatchPreparation`.
public struct PreparedBatch: Sendable {
    /// The changes, decoded, verified and (where this node may read them) opened, in order; empty when
    /// the batch is refused whole.
    public let changes: [PreparedChange]
    /// Why the batch is refused whole (a change that does not decode: `protocolViolation`; a log one of
    /// the two sides may not hold: `notEntitled`). The session fails with it when the batch's turn comes,
    /// after the batches before it, as a session that prepares its own batches does when it arrives, and
    /// nothing of the batch is stored.
    public let failure: SessionError?

    /// A prepared batch.
    public init(changes: [PreparedChange]) {
        self.changes = changes
        failure = nil
    }

    /// A batch refused whole.
    public init(failure: SessionError) {
        changes = []
        self.failure = failure
    }
}

/// One sync session between two nodes: handshake, reconciliation of log heads, then streaming of the
/// changes each side lacks, most urgent first, in batches the receiver applies atomically and
/// acknowledges. A cut at any byte loses at most the batches not yet acknowledged; the next session
/// resends only what is missing.
///
/// A state machine in the manner of swift-nio-ssh's `SSHConnectionStateMachine`: every input (`start`,
/// `receive`, `push`, `checkStanding`, `timerFired`, `connectionClosed`) takes the time from the driver
/// and returns a `SessionOutput`: the frames to send and the events that happened (`SessionEvent`:
/// authenticated, reconciled, sent, applied, refused, deferred, needs-timer, live, closed with a typed
/// `SessionCloseReason`). The states carry their own data:
///
/// ```
/// created --start--> handshaking(handshake)
/// handshaking --message 3 read/written--> reconciling(link, reconciler)      [authenticated]
/// reconciling --reconciler finished--> streaming(link, outbound)             [reconciled]
/// streaming --done/live sent and received, nothing in flight--> closed(.finished)  [closed]
///                                                          or live(link, outbound) [live]
/// live --connection closed, nothing of this side in flight--> closed(.finished)
/// any --bad frame or message, message out of state, limit, standing lost--> closed(.failed(code))
/// ```
///
/// `link` (the transport, the verified peer, what was exchanged) exists from `reconciling` on;
/// `outbound` (the plan, the window, batches in flight) from `streaming` on. Inputs after `closed` do
/// nothing and return an empty output. Receiving applies the peer's batches through the `Replicator`
/// (commits to its store) before acknowledging them.
public final class SyncSession {
    /// What the peer said at the end of its first exchange.
    private enum PeerEnd { case done, live }

    /// What exists once the handshake is over, in every later state.
    private struct Link {
        var transport: NoiseTransport
        /// The peer's certificate as the handshake presented it.
        let peer: Certificate
        /// The peer's certificate as the trust store certified it (signatures, issuer): what
        /// `checkStanding` re-checks against the replicator's current trust store (validity, revocation).
        let peerVerified: VerifiedCertificate
        var messagesReceived = 0
        /// `done` or `live` received.
        var peerEnd: PeerEnd?
        /// Live mode: what the peer is known to hold of each log both may hold (its holdings as
        /// reconciliation revealed them, plus what either side sent since). What `push` does not resend.
        var peerKnown = PeerKnowledge()
        /// Live mode, until the first exchange ends: the store's `holdingsGeneration` when reconciliation
        /// read the holdings, and the logs of which the peer may lack a held change that no commit since
        /// explains (the reconciliation view left some held range out, a fork cut the plan, a change was
        /// held back or withheld). What the push at the end of the first exchange looks at, with the logs
        /// that commits since moved, instead of every log (`settleFirstExchange`).
        var holdingsGeneration: UInt64?
        var recheck: Set<LogID> = []
        /// Proofs this session sent or received (by their two change ids), so none travels twice.
        var proofsExchanged: Set<[UInt8]> = []
        /// `Replicator.forksRecorded` when this session last sent proofs (live mode sends new ones on push).
        var forksSeen = -1
        /// Device and authority certificates sent in batches and proofs.
        var certificatesSent: Set<Certificate> = []
        /// Authors whose every known certificate was sent.
        var authorsCovered: Set<DeviceID> = []
        /// Every known authority certificate went with the first control change.
        var authoritiesSent = false
        /// The peer's clock as its `clock` message said (`theirs`, clamped to at most `maxPeerClockLag`
        /// behind this clock) and this node's clock when it arrived (`at`): what `pump` holds back changes
        /// dated ahead of (Protocols/sync.md §4.3). Nil until the peer sent one (or never: an older peer).
        var peerClock: (theirs: UInt64, at: UInt64)?
        /// Logs both sides may hold that this side held changes of at reconciliation.
        var ownLogs: [LogHoldings] = []
        /// Authors of which the peer holds a change (reconciliation showed it): it verified one of their
        /// certificates and keeps it (stores keep the certificates of the authors of held changes), so a
        /// batch leaves their certificates out (Protocols/sync.md §Batches, "Certificates the receiver
        /// holds"), unless the peer asked for them (`certificatesNeeded`).
        var peerHoldsAuthors: Set<DeviceID> = []
        /// Authors whose certificates the peer said it lacked (`ack-refused` reason 6): their certificates
        /// go with their changes for the rest of the session, sent again once.
        var certificatesNeeded: Set<DeviceID> = []
        /// Authors of which the peer sent a device certificate in this session.
        var certificatesReceivedFor: Set<DeviceID> = []
        /// The peer's batches being prepared elsewhere and what came after them (`preparesBatchesElsewhere`).
        var inbound = Inbound()
    }

    /// Live mode: what the peer is known to hold of each log. The logs that did not differ at reconciliation
    /// are read from this side's holdings of then (`agreed`, the array reconciliation used, not copied);
    /// every other log, and every log known to have changed since, from `changed`. A table entry per log
    /// and session was most of the cost of starting a live session, and of ending it, at a store of
    /// thousands of logs.
    private struct PeerKnowledge {
        /// This side's holdings at reconciliation, sorted by log.
        private var agreed: [LogHoldings] = []
        private var changed: [LogID: HeldIntervals] = [:]

        /// What the peer is known to hold of `log`; nil if nothing is known.
        subscript(log: LogID) -> HeldIntervals? {
            if let k = changed[log] { return k }
            guard let i = Self.position(of: log, in: agreed) else { return nil }
            return HeldIntervals(sortedRanges: agreed[i].intervals.map { UInt64($0.start)...UInt64($0.end) })
        }

        mutating func set(_ log: LogID, _ held: HeldIntervals) { changed[log] = held }

        mutating func insert(_ seq: UInt64, of log: LogID) {
            var k = self[log] ?? HeldIntervals()
            k.insert(seq)
            changed[log] = k
        }

        /// After reconciliation: the peer holds what `own` holds of every log not in `differences`, and
        /// its revealed intervals (or what it was already known to hold) of those that are.
        mutating func reconciled(own: Holdings, differences: [LogDifference]) throws(SessionError) {
            let differing = Set(differences.map(\.log))
            for log in Array(changed.keys) where !differing.contains(log) && Self.position(of: log, in: own.logs) != nil {
                changed[log] = nil  // the holdings of then say it
            }
            agreed = own.logs
            for d in differences {
                if d.remote.isEmpty {
                    if changed[d.log] == nil { changed[d.log] = HeldIntervals() }  // not what this side held
                    continue
                }
                guard IntervalSummary.isValidHolding(d.remote) else { throw SessionError(.protocolViolation, "peer holdings of \(d.log) are not canonical") }
                changed[d.log] = HeldIntervals(sortedRanges: d.remote.map { UInt64($0.start)...UInt64($0.end) })
            }
        }

        private static func position(of log: LogID, in logs: [LogHoldings]) -> Int? {
            let at = logs.firstIndex(notBelow: log, by: \.log)
            return at < logs.count && logs[at].log == log ? at : nil
        }
    }

    /// `preparesBatchesElsewhere`: the peer's batches handed out for preparation, and the messages that
    /// came after the first of them, in arrival order; applied in that order as preparations come back.
    private struct Inbound {
        enum Held {
            case message(SessionMessage)
            /// A batch handed out for preparation and the snapshot its preparation runs against.
            case batch(id: UInt32, ticket: UInt64, verifier: ChangeVerifier)
        }
        var held: [Held] = []
        /// Preparations returned and not applied yet (a later batch's, while an earlier one is out).
        var prepared: [UInt64: PreparedBatch] = [:]
        var nextTicket: UInt64 = 1
        /// Batches in `held`.
        var batches = 0

        func holds(ticket: UInt64) -> Bool {
            held.contains { if case let .batch(_, t, _) = $0 { t == ticket } else { false } }
        }
    }

    /// What the session acts on after the handshake: a message from the peer, or one of its batches
    /// prepared elsewhere.
    private enum Incoming {
        case message(SessionMessage)
        case prepared(id: UInt32, PreparedBatch, verifier: ChangeVerifier)
        /// Consecutive batches, each prepared and `Replicator.canCommitTogether`, committed in one store
        /// transaction.
        case preparedTogether([ReadyBatch])
    }

    /// A batch prepared elsewhere, in its turn.
    private struct ReadyBatch {
        let id: UInt32
        let batch: PreparedBatch
        let verifier: ChangeVerifier
    }

    /// A change of the sending plan: its key (what the order sorts by) and, once read, its bytes. The plan
    /// is sorted on keys alone; `pump` reads the bytes a page (`planPage` changes) ahead of the cursor.
    private struct Planned {
        enum Bytes {
            /// Not read yet.
            case unread
            /// Read, not sent yet.
            case read([UInt8])
            /// No longer held when its page was read (evicted, quarantined as damaged): not sent.
            case gone
            /// Sent (the bytes are let go).
            case sent
        }
        var key: StoredChangeKey
        var bytes: Bytes
    }

    /// What this side sends, from `streaming` on.
    private struct Outbound {
        /// Ordered, most urgent first.
        var toSend: [Planned] = []
        /// Next index of `toSend`.
        var cursor = 0
        var nextBatchID: UInt32 = 1
        var batchLimit: Int
        /// Batch id -> its changes (log and seq, in batch order): what an `ack-refused` names by position.
        var inFlight: [UInt32: [(log: LogID, seq: UInt64)]] = [:]
        /// `done` or `live` sent.
        var sentEnd = false

        var isIdle: Bool { inFlight.isEmpty && cursor == toSend.count }
    }

    private enum State {
        /// Not started (`start` not called yet).
        case created(any SessionHandshaking)
        case handshaking(any SessionHandshaking)
        /// `ownHoldings`: this side's holdings at reconciliation, kept in live mode to learn what the
        /// peer holds.
        case reconciling(Link, Reconciler, ownHoldings: Holdings?)
        case streaming(Link, Outbound)
        case live(Link, Outbound)
        case closed(SessionCloseReason)
        /// Transient while an input mutates the state's data in place (no copy of its arrays).
        case modifying
    }

    /// `State`'s case without its data. The state holds an existential handshake, so it is address-only
    /// and every pattern match on the stored property copied it whole (the link's and the plan's every
    /// buffer retained and released): the queries below (`isLive`, `isIdle`, `isClosed`, ...) read this
    /// and `liveIdle` instead, set next to every assignment of `state` (and in `setLive`).
    private enum Stage { case created, handshaking, reconciling, streaming, live, closed, modifying }

    /// Ends an input early: a typed failure, or the peer refused for its standing (the `refuse` frame,
    /// sealed, goes last).
    private enum Stop: Error {
        case fail(SessionError)
        case refuse(SessionError, frame: SessionFrame)
    }

    private let replicator: Replicator
    private let config: SessionConfiguration
    private let isInitiator: Bool
    private var state: State
    /// `state.stage`, set with every assignment of `state` (an observer on `state` cost a copy per
    /// assignment: reading the new value's case copies it too).
    private var stage: Stage = .created
    /// In `live`: nothing queued or in flight on this side and nothing of the peer held (`isIdle`), as of
    /// the last `setLive`, the only way the state becomes `live`.
    private var liveIdle = false
    /// The reason given to `close`, the only way the state becomes `closed`.
    private var closedWith: SessionCloseReason?
    private var decoder = FrameDecoder()
    /// The latest `now` a driver passed in (ms since the Unix epoch).
    private var lastNow: UInt64
    /// The timer last requested (`SessionEvent.needsTimer`), nil if none is pending.
    private var timerAt: UInt64?
    /// Whether `deferredDue` was reported for the current `deferredUntil`.
    private var deferredReported = false

    /// Changes sent, acknowledged by the peer (applied there, not refused), and received and applied, in
    /// this session.
    public private(set) var changesSent = 0, changesAcknowledged = 0, changesReceived = 0
    /// Changes sent in this session that the peer applied in their batch but did not store, as it said in
    /// `ack-refused` (a relay whose quota is full of unreceipted changes, ...): not acknowledged, still
    /// held here, offered again by a later session (`refusedByPeer` says why, by reason).
    public private(set) var changesRefusedByPeer = 0
    /// `changesRefusedByPeer` by reason.
    public private(set) var refusedByPeer: [ChangeRefusal: Int] = [:]
    /// Changes received in this session that the store refused: relay quota full of unreceipted changes,
    /// or too many changes held back behind gaps. They are acknowledged (the batch was applied atomically)
    /// and are offered again by the next session, when there may be room.
    public private(set) var changesRefused = 0
    /// Changes of the plan not sent because this node does not hold their author's certificate (verified),
    /// counted each time one is passed over (a live session offers it again on every push of its log):
    /// the peer could not verify them, and a batch with such a change would fail (Protocols/sync.md,
    /// Batches). They stay where they are; a peer that knows the author gets them from another node.
    public private(set) var changesWithheld = 0
    /// Changes received in this session that the store already held.
    public private(set) var changesDuplicate = 0
    /// Changes received in this session that the store refused as contradicting a log it holds (a fork:
    /// `CommitReport.refusedForked`). They are acknowledged and not offered again by this peer's
    /// reconciliation plan above the fork.
    public private(set) var changesForked = 0
    /// Fork evidence recorded by this node during the session (from the peer's changes or proofs).
    public private(set) var forksDetected = 0
    /// The peer's batches applied in store transactions that carried several of them (batches prepared
    /// elsewhere and ready together, `preparesBatchesElsewhere`), and those transactions.
    public private(set) var batchesCommittedTogether = 0, groupCommits = 0
    /// Fork proofs sent to and received (verified) from the peer.
    public private(set) var forkProofsSent = 0, forkProofsReceived = 0
    /// Fork proofs not sent because a change of theirs is dated beyond the peer's clock plus the tolerance
    /// (`sendForkProofs`), counted each time one is passed over, as `changesHeldBack`.
    public private(set) var forkProofsHeldBack = 0
    /// Whole frames of the peer handled so far: handshake messages, then sealed frames that opened (their
    /// AEAD check passed; a frame that fails it closes the session). A driver's "heard from the peer"
    /// (the keep-alive's `deadAfter`, `LiveSessionRules.keepAlive`) is the time this last grew, not the
    /// time any byte arrived: bytes of a frame that never completes (a corrupted length prefix, a hostile
    /// peer trickling a large frame) are no sign of life (Protocols/sync.md §4.1).
    public private(set) var framesReceived = 0
    /// Whether the peer's bytes held end in a frame not yet whole (`FrameDecoder.holdsPartialFrame`): a
    /// live session waiting for the rest of a frame is not idle for a driver's stall and progress checks,
    /// although `isIdle` (nothing to send or acknowledge on this side) may hold.
    public var receivingFrame: Bool { !isClosed && decoder.holdsPartialFrame }
    /// Framed bytes sent, by `SessionFrameKind` (indexed by its raw value).
    public private(set) var bytesSent = [Int](repeating: 0, count: SessionFrameKind.allCases.count)
    /// When changes this session refused as dated in the future (`timestampInFuture`) start to be
    /// acceptable (`SessionEvent.deferred`); nil if none was refused.
    public private(set) var deferredUntil: UInt64?
    /// Changes of the plan (or of a live push) not sent because they are dated beyond the peer's clock
    /// (its `clock` message, as it runs on since) plus the tolerance: the peer would refuse them as
    /// `timestampInFuture` (Protocols/sync.md §4.3). Counted each time one is passed over; a live session
    /// offers them again when they would be accepted (`heldBackUntil`), a one-shot session leaves them to
    /// the next session.
    public private(set) var changesHeldBack = 0
    /// Certificates left out of batches because the peer holds a change of their author (it verified
    /// and kept them): Protocols/sync.md §Batches, "Certificates the receiver holds".
    public private(set) var certificatesOmitted = 0
    /// When the earliest change held back as dated ahead of the peer's clock would be accepted (this
    /// node's clock, ms): a live session pushes it then (`timerFired`). Nil if none is held back.
    public private(set) var heldBackUntil: UInt64?
    /// Logs with changes held back as dated ahead of the peer (in order of first hold-back).
    private var heldBackLogs: [LogID] = []
    /// How far behind this node's clock a peer's `clock` is believed (24 h): an earlier value counts as
    /// this much behind. A wrong or hostile clock can so delay what the peer is sent by at most this long
    /// past the time this node's own clock would accept it, and only on this session (the next session
    /// reads the clock again). Honest field clocks are off by hours at most (`longnan`: ±6 h).
    public static let maxPeerClockLag: UInt64 = 24 * 3_600_000

    /// Creates a session in its `created` state; `start` begins it.
    /// - Parameter handshake: a handshake to use instead of Noise XX (the simulator's stand-in; real
    ///   nodes leave it nil).
    public init(initiator: Bool, replicator: Replicator, configuration: SessionConfiguration, now: UInt64,
                handshake: (any SessionHandshaking)? = nil) {
        self.replicator = replicator
        config = configuration
        isInitiator = initiator
        lastNow = now
        state = .created(handshake ?? SessionHandshake(initiator: initiator, identity: replicator.identity,
                                                       trust: replicator.trust, network: configuration.network))
    }

    // MARK: State queries

    /// Whether the session finished normally.
    public var isFinished: Bool { closeReason == .finished }
    /// Whether the session failed.
    public var hasFailed: Bool { failure != nil }
    /// Whether the session is over (finished or failed).
    public var isClosed: Bool { stage == .closed }
    /// Why the session failed, once it has.
    public var failure: SessionError? { closeReason?.error }
    /// How the session ended, once it has.
    public var closeReason: SessionCloseReason? { stage == .closed ? closedWith : nil }
    /// Whether the session is live (both sides asked to stay open and the first exchange is over).
    public var isLive: Bool { stage == .live }
    /// Whether the session is live with nothing queued or waiting for an acknowledgement on this side.
    public var isIdle: Bool { stage == .live && liveIdle }
    /// Batches of the peer received and not applied yet because they are being prepared elsewhere
    /// (`SessionConfiguration.preparesBatchesElsewhere`). A driver stops reading from the peer while this
    /// is at its bound.
    public var batchesPreparing: Int { config.preparesBatchesElsewhere ? link?.inbound.batches ?? 0 : 0 }  // only then held
    /// Most batches held for preparation at once: further frames stay in the frame decoder (unread)
    /// until one is applied, and a driver stops reading from the socket (`preparationBacklogFull`).
    /// Eight (about 520 KB of a hostile peer's frames per session): a node sends that many batches ahead
    /// (its `SessionConfiguration.window`), so that while its loop commits what was verified its worker
    /// still has batches to verify (with four the pipeline ran dry every four batches; issue 13).
    public static let maxBatchesPreparing = 8
    /// Whether `maxBatchesPreparing` batches are held: the driver should stop reading from the peer
    /// until a preparation completes.
    public var preparationBacklogFull: Bool { batchesPreparing >= Self.maxBatchesPreparing }
    /// The peer's certificate, from the handshake's completion on (kept once the session closed: a driver
    /// reports whom a session that ended was with).
    public private(set) var peer: Certificate?
    /// Whether this session lifted this node's restore fence (`RestoreFence`, `Replicator.confirmOwnHeads`):
    /// its first exchange showed this device's own logs' heads.
    public private(set) var liftedRestoreFence = false
    /// Only while this node is fenced after a restore: per own log both sides may hold, the highest seq
    /// the peer held and the highest held here, when reconciliation ran (`Replicator.confirmOwnHeads`).
    private var fenceWitness: [LogID: (peer: UInt64, own: UInt64)]?

    private var link: Link? {
        switch state {
        case let .reconciling(l, _, _), let .streaming(l, _), let .live(l, _): l
        case .created, .handshaking, .closed, .modifying: nil
        }
    }

    /// When the peer's standing lapses by time alone (ms since the Unix epoch, on this node's clock): the
    /// first instant after the end of its certificate's validity, or its issuing authority's, widened by
    /// the clock-skew tolerance. Nil before the handshake completes and after the session closed.
    public var peerStandingLapsesAt: UInt64? { link.map { lapse(of: $0.peerVerified) } }

    private func lapse(of v: VerifiedCertificate) -> UInt64 {
        let end = min(v.certificate.notAfter, v.authority?.notAfter ?? .max)
        return end &+ replicator.trust.clockSkewMilliseconds &+ 1
    }

    // MARK: Inputs

    /// Starts the session: the initiator's first handshake message. Call once, first.
    public func start() -> SessionOutput {
        guard case var .created(hs) = state else { preconditionFailure("SyncSession.start called twice") }
        var out = SessionOutput()
        guard isInitiator else {
            stage = .handshaking; state = .handshaking(hs)
            return out
        }
        do {
            emit(FrameDecoder.frame(try hs.write()), .handshake, &out)
            stage = .handshaking; state = .handshaking(hs)
        } catch { close(.failed(error), &out) }
        return out
    }

    /// Feeds bytes received from the peer (any cut of the stream).
    public func receive(_ bytes: [UInt8], now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        if stage == .created { preconditionFailure("SyncSession.receive before start") }
        guard !isClosed else { return out }
        lastNow = now
        decoder.append(bytes)
        run(&out) { out in
            while !isClosed, !preparationBacklogFull, let frame = try decoder.next() {
                try handle(frame, now: now, &out)
                framesReceived += 1
            }
        }
        return out
    }

    /// Returns a batch prepared elsewhere (`BatchPreparation.prepare()`, handed out in
    /// `SessionOutput.preparations`): `completeBatchPreparations` with this one result.
    public func completeBatchPreparation(ticket: UInt64, _ batch: PreparedBatch, now: UInt64) -> SessionOutput {
        completeBatchPreparations([(ticket, batch)], now: now)
    }

    /// Returns batches prepared elsewhere (`BatchPreparation.prepare()`, handed out in
    /// `SessionOutput.preparations`), in any order; a driver passes every result that came back since it
    /// last called this (the node: all that came back while its loop was busy). Batches are applied in
    /// the order they arrived, so a batch is applied (and then the messages held behind it) only once
    /// every batch before it is back; then the frames left unread while `maxBatchesPreparing` were held
    /// are read. Applying commits through `Replicator.ingest(prepared:by:now:)`, which prepares the batch
    /// again on this thread if the replicator learned anything since the snapshot (a revocation, a key),
    /// and re-checks the peer's standing first: the result is the same as if the batch had been verified
    /// and applied when it arrived, at the time it is applied. Consecutive batches that are ready now and
    /// that `Replicator.canCommitTogether` accepts are committed in one store transaction (`readyGroup`),
    /// then reported and acknowledged one by one. Unknown tickets (or a closed session) do nothing.
    public func completeBatchPreparations(_ results: [(ticket: UInt64, batch: PreparedBatch)], now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        guard let link else { return out }
        let known = results.filter { link.inbound.holds(ticket: $0.ticket) }
        guard !known.isEmpty else { return out }
        lastNow = now
        run(&out) { out in
            try withLink { link in for r in known { link.inbound.prepared[r.ticket] = r.batch } }
            drain: while !isClosed, let inbound = self.link?.inbound, let first = inbound.held.first {
                let next: Incoming
                var taken = 1
                switch first {
                case let .message(m):
                    next = .message(m)
                case let .batch(id, ticket, verifier):
                    guard let result = inbound.prepared[ticket] else { break drain }  // an earlier batch is still out
                    let group = readyGroup(ReadyBatch(id: id, batch: result, verifier: verifier), inbound)
                    taken = group.count
                    next = group.count == 1 ? .prepared(id: id, result, verifier: verifier) : .preparedTogether(group)
                }
                try withLink { link in
                    for _ in 0..<taken {
                        let held = link.inbound.held.removeFirst()
                        if case let .batch(_, t, _) = held {
                            link.inbound.prepared[t] = nil
                            link.inbound.batches -= 1
                        }
                    }
                    try checkStanding(&link, now: now)
                }
                try dispatch(next, now: now, &out)
            }
            // Frames left in the decoder while the bound was reached.
            while !isClosed, !preparationBacklogFull, let frame = try decoder.next() {
                try handle(frame, now: now, &out)
                framesReceived += 1
            }
        }
        return out
    }

    /// The batches to commit now, starting with `head` (the first held, prepared): `head` and the batches
    /// right behind it that are already back and may be committed together with it
    /// (`Replicator.canCommitTogether`), in one store transaction. It never waits for a batch still being
    /// prepared: a group forms only when the loop was behind its worker (several came back while it was
    /// busy), which is when a transaction fewer helps; otherwise the batch is committed at once and the
    /// worker keeps its queue (a wait left the cores idle: docs/benchmarks.md, "Batches that wait to be
    /// committed together" and the section after it).
    private func readyGroup(_ head: ReadyBatch, _ inbound: Inbound) -> [ReadyBatch] {
        guard replicator.canCommitTogether(head.batch.changes, by: head.verifier), head.batch.failure == nil else { return [head] }
        var group = [head]
        var rest = inbound.held.dropFirst()
        while case let .batch(id, ticket, verifier)? = rest.first, let result = inbound.prepared[ticket] {
            guard result.failure == nil, replicator.canCommitTogether(result.changes, by: verifier) else { break }
            group.append(ReadyBatch(id: id, batch: result, verifier: verifier))
            rest = rest.dropFirst()
        }
        return group
    }

    /// Live mode: sends the peer the changes of `logs` (every log when nil) it may hold and is not known
    /// to hold: what this node got since the session began, from its own writes or other sessions. Call
    /// it after the store changed; before the session is live it does nothing (the session pushes
    /// everything new when it becomes live). The peer's standing is checked first (`checkStanding`): a
    /// peer revoked or expired by `now` gets nothing. Cost: one holdings lookup per log named.
    public func push(logs: [LogID]? = nil, now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        guard stage == .live, case .live(var link, var outbound) = takeState() else { return out }
        lastNow = now
        stage = .modifying; state = .modifying
        run(&out) { out in
            try checkStanding(&link, now: now)
            try pushFresh(logs, &link, &outbound, &out)
            setLive(link, outbound)
        }
        return out
    }

    /// Live mode: sends the peer a `keepAlive` (Protocols/sync.md §4.1), so that an idle live session
    /// keeps showing traffic both ways instead of being closed. A driver calls it when this side sent
    /// nothing for its keep-alive interval (`LiveSessionRules.keepAlive` in FieldSyncDriver). The peer's
    /// standing is checked first, as before a push: a peer revoked or expired by `now` is refused instead.
    /// Does nothing unless the session is live.
    public func keepAlive(now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        guard stage == .live, case .live(var link, let outbound) = takeState() else { return out }
        lastNow = now
        stage = .modifying; state = .modifying
        run(&out) { out in
            try checkStanding(&link, now: now)
            try send(.keepAlive, &link, &out)
            setLive(link, outbound)
        }
        return out
    }

    /// Re-checks the peer's standing against the replicator's trust store as it is now: the peer's
    /// certificate and its issuer's must be valid at `now` and neither revoked. A driver calls this
    /// whenever its trust store may have changed (a revocation learned from any session, from the store,
    /// or written locally); the session checks it on its own timer (`needsTimer`, `timerFired`) when the
    /// peer's certificate lapses, before every push and on every message it receives. A peer that fails
    /// is refused at once: nothing more is sent or accepted, the peer is told why (`SessionMessage.refuse`,
    /// the last frame), and the session closes failed with `revoked` or `badCertificate`. Before the
    /// handshake completes it does nothing (the handshake checks the same).
    public func checkStanding(now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        lastNow = max(lastNow, now)
        modifyLink(&out) { link throws in try checkStanding(&link, now: now) }
        return out
    }

    /// The time a `needsTimer` event asked for has come (or later; earlier does no harm: the session asks
    /// again). Re-checks the peer's standing and reports `deferredDue` once its time has come.
    public func timerFired(now: UInt64) -> SessionOutput {
        var out = SessionOutput()
        timerAt = nil
        guard link != nil else { return out }
        lastNow = max(lastNow, now)
        modifyLink(&out) { link throws in try checkStanding(&link, now: now) }
        guard link != nil else { return out }  // refused for its standing
        if let until = deferredUntil, !deferredReported, now >= until {
            deferredReported = true
            out.events.append(.deferredDue)
        }
        if let due = heldBackUntil, lastNow >= due {
            // Changes held back as dated ahead of the peer would be accepted now. A live session pushes
            // them (those still ahead are held back again, with a new time); in the first exchange the
            // move to live pushes everything the peer is not known to hold, and a one-shot session leaves
            // them to the next session's reconciliation.
            heldBackUntil = nil
            let logs = heldBackLogs
            heldBackLogs = []
            if stage == .live, case .live(var l, var o) = takeState() {
                stage = .modifying; state = .modifying
                run(&out) { out in
                    try pushFresh(logs, &l, &o, &out)
                    setLive(l, o)
                }
            }
        }
        if let link { requestTimer(link, &out) }
        return out
    }

    /// The transport closed (cut or peer gone). Unacknowledged batches are simply offered again next time.
    /// A live session closed with none of its batches in flight ends normally (`finished`); any other open
    /// session fails with `connectionClosed`.
    public func connectionClosed() -> SessionOutput {
        var out = SessionOutput()
        switch state {
        case let .live(_, o) where o.inFlight.isEmpty:
            close(.finished, &out)
        case .closed:
            break
        default:
            close(.failed(SessionError(.connectionClosed, "connection closed mid-session")), &out)
        }
        return out
    }

    // MARK: Running inputs

    /// Runs `body`; a typed stop or error closes the session failed.
    private func run(_ out: inout SessionOutput, _ body: (inout SessionOutput) throws -> Void) {
        do { try body(&out) } catch let Stop.fail(e) {
            fail(e, &out)
        } catch let Stop.refuse(e, frame) {
            // Nothing more goes to a refused peer but the last handshake message, if it is in this output
            // (the peer needs it to read the refusal), and the refusal.
            let handshake = out.frames.filter { $0.kind == .handshake }
            fail(e, &out)
            out.frames = handshake + [frame]
        } catch let e as SessionError {
            fail(e, &out)
        } catch let e as FrameError {
            fail(SessionError(.protocolViolation, e.description), &out)
        } catch {
            // Every other throw in the session is typed: what is left came from the store.
            fail(Self.storeFailure(error), &out)
        }
    }

    /// Runs a call into the store or the replicator's commit (the only untyped throws the session
    /// makes) and types its error: `storeFailed` carrying the `StoreError` (`SessionError.store`).
    private func stored<T>(_ body: () throws -> T) throws(SessionError) -> T {
        do { return try body() } catch { throw Self.storeFailure(error) }
    }

    /// `storeFailed` with the store's typed error; an error of another type from a store (the
    /// `SyncStore` protocol promises `StoreError`) is kept as an `ioError` naming its type.
    private static func storeFailure(_ error: any Error) -> SessionError {
        if let e = error as? StoreError { return SessionError(store: e) }
        return SessionError(store: StoreError(.ioError, "\(type(of: error)): \(error)"))
    }

    /// Runs `body` on the link of the current state, in place.
    private func modifyLink(_ out: inout SessionOutput, _ body: (inout Link) throws -> Void) {
        guard stage == .reconciling || stage == .streaming || stage == .live else { return }
        switch takeState() {
        case .reconciling(var l, let r, let h):
            stage = .modifying; state = .modifying
            run(&out) { _ in try body(&l); stage = .reconciling; state = .reconciling(l, r, ownHoldings: h) }
        case .streaming(var l, let o):
            stage = .modifying; state = .modifying
            run(&out) { _ in try body(&l); stage = .streaming; state = .streaming(l, o) }
        case .live(var l, let o):
            stage = .modifying; state = .modifying
            run(&out) { _ in try body(&l); setLive(l, o) }
        case .created, .handshaking, .closed, .modifying:
            break
        }
    }

    /// Moves the state out, leaving `.modifying` (`stage` is left as it was: the caller sets it). Matching
    /// the stored property instead copies its payload, and with it retains every buffer of the link and
    /// the plan (released again when the state is reassigned): 4.2 % of the samples of a 5-day simulator run.
    private func takeState() -> State {
        var s = State.modifying
        swap(&s, &state)
        return s
    }

    /// Enters (or stays in) `live` with `l` and `o`, noting whether this side is idle (`isIdle`).
    private func setLive(_ l: consuming Link, _ o: consuming Outbound) {
        liveIdle = o.isIdle && l.inbound.held.isEmpty
        stage = .live; state = .live(l, o)
    }

    private func fail(_ e: SessionError, _ out: inout SessionOutput) {
        out.frames.removeAll()
        close(.failed(e), &out)
    }

    private func close(_ reason: SessionCloseReason, _ out: inout SessionOutput) {
        closedWith = reason
        stage = .closed; state = .closed(reason)
        timerAt = nil
        out.events.append(.closed(reason))
    }

    /// Asks for a timer at the earliest of the peer's standing lapse and the deferred time not yet
    /// reported, if that differs from the pending request.
    private func requestTimer(_ link: Link, _ out: inout SessionOutput) {
        let deferred = deferredReported ? nil : deferredUntil
        guard let at = [lapse(of: link.peerVerified), deferred, heldBackUntil].compactMap({ $0 }).min(), at != timerAt else { return }
        timerAt = at
        out.events.append(.needsTimer(at: at))
    }

    private func emit(_ frame: [UInt8], _ kind: SessionFrameKind, _ out: inout SessionOutput,
                      contents: BatchFrameContents? = nil) {
        out.frames.append(SessionFrame(bytes: frame, kind: kind, contents: contents))
        bytesSent[kind.rawValue] += frame.count
    }

    private static func encoded(_ m: SessionMessage) -> [UInt8] {
        var w = ByteWriter()
        m.encode(to: &w)
        return w.bytes
    }

    private func send(_ m: SessionMessage, _ link: inout Link, _ out: inout SessionOutput) throws(SessionError) {
        let kind: SessionFrameKind = switch m {
        case .recon: .reconciliation
        case .batch: .batch
        case .ack, .ackRefused: .ack
        case .done, .live, .refuse: .done
        case .keepAlive: .keepAlive
        case .clock: .clock
        case .fork: .batch  // signed changes too; rare (forks only), so not a kind of its own in reports
        }
        let plain = Self.encoded(m)
        let contents: BatchFrameContents? = switch m {
        case let .batch(_, certs, _):  // the changes' logs, seqs and sizes: set by `pump`, which knows them
            BatchFrameContents(changes: [], certificates: certs, certificateBytes: certs.reduce(0) { $0 + $1.canonicalBytes.count },
                               forkProofBytes: 0, plaintextBytes: plain.count)
        case let .fork(certs, proof):
            BatchFrameContents(changes: [], certificates: certs, certificateBytes: certs.reduce(0) { $0 + $1.canonicalBytes.count },
                               forkProofBytes: proof.canonicalBytes.count, plaintextBytes: plain.count)
        default: nil
        }
        emit(FrameDecoder.frame(try link.transport.seal(plain)), kind, &out, contents: contents)
    }

    /// The sealed `refuse` frame for `error`, under the transport of a completed handshake (nil if there is none).
    private static func refusal(_ error: SessionError, after hs: any SessionHandshaking) -> SessionFrame? {
        guard var transport = try? hs.transport(), let code = SessionRefusal(refusing: error.code),
              let sealed = try? transport.seal(encoded(.refuse(code))) else { return nil }
        return SessionFrame(bytes: FrameDecoder.frame(sealed), kind: .done)
    }

    /// Throws `Stop.refuse` (with the sealed refusal) if the peer lost its standing at `now`.
    private func checkStanding(_ link: inout Link, now: UInt64) throws(Stop) {
        do { try replicator.trust.checkStanding(link.peerVerified, now: now) } catch {
            let code: SessionError.Code = error.code == .revoked ? .revoked : .badCertificate
            let e = SessionError(code, "peer \(link.peer.subject): \(error.description)")
            guard let frame = try? link.transport.seal(Self.encoded(.refuse(SessionRefusal(refusing: code)!))) else { throw .fail(e) }
            let framed = FrameDecoder.frame(frame)
            bytesSent[SessionFrameKind.done.rawValue] += framed.count
            throw .refuse(e, frame: SessionFrame(bytes: framed, kind: .done))
        }
    }

    // MARK: Receiving

    private func handle(_ frame: [UInt8], now: UInt64, _ out: inout SessionOutput) throws {
        // Each case binds its data and sets `.modifying` before mutating it, so that the bound copies are
        // the only references to the data's arrays (no copy on write). Switched on `stage`: a switch on
        // `state` copied it whole, every buffer of the link retained and released, on every frame.
        switch stage {
        case .handshaking:
            guard case var .handshaking(hs) = takeState() else { preconditionFailure("SyncSession: stage and state disagree") }
            stage = .modifying
            do { try hs.read(frame, now: now) } catch {
                // Message 3 was read, so the Noise handshake is complete although its certificate is refused:
                // an initiator refused as revoked, or outside its (or its issuer's) validity window, is told
                // why in a sealed `refuse` (its session ends `revoked` or `badCertificate`, not with a bare
                // closed connection; Protocols/handshake.md §4.1). Nothing else is sent to it, and no other
                // failure is told (a forged or foreign certificate learns nothing).
                let e: SessionError = error
                let told = e.code == .revoked || e.certificate == .expired || e.certificate == .notYetValid
                if told, !hs.isInitiator, hs.isComplete, let refusal = Self.refusal(e, after: hs) {
                    bytesSent[SessionFrameKind.done.rawValue] += refusal.bytes.count
                    throw Stop.refuse(e, frame: refusal)
                }
                throw e
            }
            if hs.shouldWrite { emit(FrameDecoder.frame(try hs.write()), .handshake, &out) }
            if hs.isComplete {
                try startReconciliation(hs, now: now, &out)
            } else {
                stage = .handshaking; state = .handshaking(hs)
            }
        case .reconciling, .streaming, .live:
            let message = try withLink { link in try open(frame, &link, now: now) }
            if config.preparesBatchesElsewhere {
                if case let .batch(id, certs, encoded) = message {
                    try holdBatch(id, certs, encoded, now: now, &out)
                    return
                }
                if self.link?.inbound.held.isEmpty == false {
                    // After a batch being prepared: handled in order, after it.
                    try withLink { $0.inbound.held.append(.message(message)) }
                    return
                }
            }
            try dispatch(.message(message), now: now, &out)
        case .created, .closed, .modifying:
            preconditionFailure("SyncSession.handle in stage \(stage)")
        }
    }

    /// Runs `body` on the link of the current state (reconciling, streaming or live), in place. A throw
    /// leaves the state `.modifying`: every throw closes the session (`run`).
    private func withLink<T>(_ body: (inout Link) throws -> T) throws -> T {
        switch takeState() {
        case .reconciling(var l, let r, let h):
            stage = .modifying; state = .modifying
            let v = try body(&l)
            stage = .reconciling; state = .reconciling(l, r, ownHoldings: h)
            return v
        case .streaming(var l, let o):
            stage = .modifying; state = .modifying
            let v = try body(&l)
            stage = .streaming; state = .streaming(l, o)
            return v
        case .live(var l, let o):
            stage = .modifying; state = .modifying
            let v = try body(&l)
            setLive(l, o)
            return v
        case .created, .handshaking, .closed, .modifying:
            preconditionFailure("SyncSession.withLink in stage \(stage)")
        }
    }

    /// Acts on a message from the peer (opened and its standing checked) or a batch prepared elsewhere,
    /// in the current state.
    private func dispatch(_ incoming: Incoming, now: UInt64, _ out: inout SessionOutput) throws {
        switch takeState() {
        case .reconciling(var link, var rec, let own):
            stage = .modifying; state = .modifying
            switch incoming {
            case let .message(.recon(m)):
                let outputs: [ReconOutput]
                do { outputs = try rec.receive(m) } catch {
                    throw SessionError(error.code == .limitExceeded ? .limitExceeded : .protocolViolation, error.description)
                }
                var finished: ReconciliationResult?
                for o in outputs {
                    switch o {
                    case let .send(m): try send(.recon(m), &link, &out)
                    case let .finished(result): finished = result
                    }
                }
                if let result = finished {
                    try planStreaming(result, &link, own: own, now: now, &out)
                } else {
                    stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
                }
            case let .message(.batch(id, certs, changes)):
                try receiveBatch(id, certs, changes, &link, now: now, &out)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case let .prepared(id, batch, verifier):
                try applyPrepared(id, batch, verifier, &link, now: now, &out)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case let .preparedTogether(group):
                try applyTogether(group, &link, now: now, &out)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case let .message(.fork(certs, proof)):
                try receiveForkProof(proof, certificates: certs, &link, now: now)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case .message(.done):
                try peerEnded(.done, &link)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case .message(.live):
                try peerEnded(.live, &link)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case let .message(.clock(ms)):
                noteClock(ms, &link, now: now)
                stage = .reconciling; state = .reconciling(link, rec, ownHoldings: own)
            case .message(.ack), .message(.ackRefused), .message(.refuse), .message(.keepAlive):
                throw SessionError(.protocolViolation, "unexpected message while reconciling")
            }
        case .streaming(var link, var outbound):
            stage = .modifying; state = .modifying
            switch incoming {
            case let .message(.batch(id, certs, changes)):
                try receiveBatch(id, certs, changes, &link, now: now, &out)
            case let .prepared(id, batch, verifier):
                try applyPrepared(id, batch, verifier, &link, now: now, &out)
            case let .preparedTogether(group):
                try applyTogether(group, &link, now: now, &out)
            case let .message(.ack(id)):
                try acknowledge(id, refused: [], &link, &outbound, &out)
            case let .message(.ackRefused(id, refused)):
                try acknowledge(id, refused: refused, &link, &outbound, &out)
            case let .message(.fork(certs, proof)):
                try receiveForkProof(proof, certificates: certs, &link, now: now)
            case .message(.done):
                try peerEnded(.done, &link)
            case .message(.live):
                try peerEnded(.live, &link)
            case let .message(.clock(ms)):
                noteClock(ms, &link, now: now)
            case .message(.keepAlive) where link.peerEnd == .live:
                break  // the peer is live already (this side still waits for an ack): traffic, nothing to do
            case .message(.recon), .message(.refuse), .message(.keepAlive):
                throw SessionError(.protocolViolation, "unexpected message while streaming")
            }
            try pump(&link, &outbound, &out)
            try settleFirstExchange(link, outbound, now: now, &out)
        case .live(var link, var outbound):
            stage = .modifying; state = .modifying
            switch incoming {
            case let .message(.batch(id, certs, changes)):
                try receiveBatch(id, certs, changes, &link, now: now, &out)
            case let .prepared(id, batch, verifier):
                try applyPrepared(id, batch, verifier, &link, now: now, &out)
            case let .preparedTogether(group):
                try applyTogether(group, &link, now: now, &out)
            case let .message(.ack(id)):
                try acknowledge(id, refused: [], &link, &outbound, &out)
                try pump(&link, &outbound, &out)
            case let .message(.ackRefused(id, refused)):
                try acknowledge(id, refused: refused, &link, &outbound, &out)
                try pump(&link, &outbound, &out)
            case let .message(.fork(certs, proof)):
                try receiveForkProof(proof, certificates: certs, &link, now: now)
            case .message(.keepAlive):
                break  // traffic; its standing was checked when it was opened
            case let .message(.clock(ms)):
                // A peer whose clock was set sends it again: what was held back is judged anew.
                noteClock(ms, &link, now: now)
                if !heldBackLogs.isEmpty {
                    let logs = heldBackLogs
                    heldBackLogs = []
                    heldBackUntil = nil
                    try pushFresh(logs, &link, &outbound, &out)
                }
            case .message(.recon), .message(.done), .message(.live), .message(.refuse):
                throw SessionError(.protocolViolation, "unexpected message in a live session")
            }
            setLive(link, outbound)
        case .created, .handshaking, .closed, .modifying:
            preconditionFailure("SyncSession.dispatch in stage \(stage)")
        }
    }

    /// The peer's `clock`: kept with this node's time of arrival, clamped to at most `maxPeerClockLag`
    /// behind this node's clock.
    private func noteClock(_ ms: UInt64, _ link: inout Link, now: UInt64) {
        link.peerClock = (theirs: Self.believedPeerClock(ms, now: now), at: now)
    }

    /// A peer's `clock` reading as this node believes it at `now`: at most `maxPeerClockLag` behind.
    static func believedPeerClock(_ ms: UInt64, now: UInt64) -> UInt64 {
        max(ms, now >= maxPeerClockLag ? now - maxPeerClockLag : 0)
    }

    /// The latest HLC (ms) the peer accepts now by its clock as estimated (`Link.peerClock` run on by the
    /// time elapsed here since it arrived, plus the tolerance, which a network shares); nil if the peer
    /// sent no clock.
    private func peerAcceptLimit(_ link: Link) -> UInt64? {
        guard let c = link.peerClock else { return nil }
        return Self.saturating(Self.saturating(c.theirs, lastNow > c.at ? lastNow - c.at : 0), replicator.trust.clockSkewMilliseconds)
    }

    private static func saturating(_ a: UInt64, _ b: UInt64) -> UInt64 { a > .max - b ? .max : a + b }

    /// `done` or `live` from the peer: once per session.
    private func peerEnded(_ end: PeerEnd, _ link: inout Link) throws(SessionError) {
        guard link.peerEnd == nil else { throw SessionError(.protocolViolation, "a second done or live") }
        link.peerEnd = end
    }

    /// Decrypts and decodes one message, counts it and re-checks the peer's standing before anything
    /// acts on it (§4.2). A `refuse` from the peer ends the session with its reason.
    private func open(_ frame: [UInt8], _ link: inout Link, now: UInt64) throws -> SessionMessage {
        link.messagesReceived += 1
        guard link.messagesReceived <= config.maxMessages else { throw SessionError(.limitExceeded, "too many messages") }
        let plain = try link.transport.open(frame)
        let message: SessionMessage
        do { message = try SessionMessage.decode(plain) } catch {
            throw SessionError(.protocolViolation, "message does not decode: \(error)")
        }
        if case let .refuse(reason) = message { throw reason.error }
        try checkStanding(&link, now: now)
        return message
    }

    /// `ack` or `ack-refused` of a batch in flight: its changes count as acknowledged, except those the
    /// peer says it refused (reported as `refusedByPeer`, counted in `changesRefusedByPeer`).
    private func acknowledge(_ id: UInt32, refused: [BatchRefusal], _ link: inout Link, _ outbound: inout Outbound,
                             _ out: inout SessionOutput) throws {
        guard let sent = outbound.inFlight.removeValue(forKey: id) else { throw SessionError(.protocolViolation, "ack for unknown batch \(id)") }
        // Positions are strictly increasing (the decoder checks it), so the last is the largest.
        if let last = refused.last, last.index >= sent.count {
            throw SessionError(.protocolViolation, "ack-refused of batch \(id) names change \(last.index) of \(sent.count)")
        }
        changesAcknowledged += sent.count - refused.count
        changesRefusedByPeer += refused.count
        for r in refused {
            refusedByPeer[r.reason, default: 0] += 1
            let c = sent[r.index]
            out.events.append(.refusedByPeer(RefusedChange(log: c.log, seq: c.seq, reason: r.reason)))
            guard r.reason == .certificateNeeded else { continue }
            // The peer lacked its author's certificate (this side left it out, or it was not known there):
            // the change goes again in this session, with every certificate of its author.
            let author = c.log.author
            if !link.certificatesNeeded.contains(author) {
                link.certificatesNeeded.insert(author)
                link.authorsCovered.remove(author)
                let chain = Set(replicator.certificateChain(of: author))
                link.certificatesSent.subtract(chain)
            }
            if let again = try stored({ try replicator.store.changes(c.log, in: c.seq...c.seq) }).first {
                outbound.toSend.append(Planned(key: StoredChangeKey(again), bytes: .read(again.bytes)))
            }
        }
    }

    /// Whether a batch leaves out the certificates of `author` (Protocols/sync.md §Batches, "Certificates
    /// the receiver holds"): the peer holds a change of it, so it verified and kept its certificate; it is
    /// of a version that asks for them if not (it sent `clock`); the author has one device certificate
    /// here (after a renewal the peer may hold only the older one); and the peer did not ask for them.
    private func omitsCertificates(of author: DeviceID, chain: [Certificate], _ link: Link) -> Bool {
        link.peerClock != nil && link.peerHoldsAuthors.contains(author) && !link.certificatesNeeded.contains(author)
            && chain.count(where: { $0.kind == .device }) == 1
    }

    private func startReconciliation(_ hs: any SessionHandshaking, now: UInt64, _ out: inout SessionOutput) throws {
        let transport = try hs.transport()
        guard let peerCert = hs.peer else { throw SessionError(.protocolViolation, "no peer certificate") }
        peer = peerCert
        // The peer's certificate and chain verified at now: learned so that its changes (and those of
        // devices its county authority issued) verify even before a batch brings them.
        replicator.learn(certificates: hs.peerChain + [peerCert], now: now)
        let verified: VerifiedCertificate
        do { verified = try certify(peerCert) } catch {
            throw SessionError(error.code == .revoked ? .revoked : .badCertificate, error.description)
        }
        var link = Link(transport: transport, peer: peerCert, peerVerified: verified)
        out.events.append(.authenticated(peerCert.subject, peerCert.role))
        // The handshake checked the trust store as it was when the session began; a revocation learned
        // since (another session, the store) counts from here on.
        try checkStanding(&link, now: now)
        let own = replicator.identity.certificate
        if config.live { link.holdingsGeneration = replicator.store.holdingsGeneration }
        // Every log both may hold, as the store holds it now (kept between sessions: `ReconciliationViews`).
        let view = try stored { try replicator.reconciliationViews.view(own: own, peer: peerCert, store: replicator.store) }
        let holdings = view.holdings
        link.recheck = view.uncovered  // a new link: nothing to recheck before
        if (try? replicator.restoreFence()) ?? nil != nil {
            var witness: [LogID: (peer: UInt64, own: UInt64)] = [:]
            for l in holdings.logs where l.log.author == replicator.identity.id { witness[l.log] = (peer: 0, own: UInt64(l.intervals.last?.end ?? 0)) }
            fenceWitness = witness
        }
        link.ownLogs = holdings.logs  // every view holds an interval (`LogHoldings`)
        let key = Array(hs.handshakeHash.prefix(32))
        var rec = Reconciler(role: hs.isInitiator ? .initiator : .responder, holdings: holdings,
                             hashing: SipHashReconciliationHashing(sessionKey: key), salt: config.salt)
        requestTimer(link, &out)
        // This side's clock first (Protocols/sync.md §4.3): the peer plans after reading it.
        if config.announcesClock { try send(.clock(milliseconds: now), &link, &out) }
        var finished: ReconciliationResult?
        for o in rec.start() {
            switch o {
            case let .send(m): try send(.recon(m), &link, &out)
            case let .finished(result): finished = result
            }
        }
        let ownHoldings = config.live ? holdings : nil
        if let result = finished {
            try planStreaming(result, &link, own: ownHoldings, now: now, &out)
        } else {
            stage = .reconciling; state = .reconciling(link, rec, ownHoldings: ownHoldings)
        }
    }

    /// `TrustStore.certified` for the peer's certificate, reusing the replicator's own check of the same
    /// certificate or the process's verification cache (the simulator) when there is one.
    private func certify(_ c: Certificate) throws(IdentityError) -> VerifiedCertificate {
        if let known = replicator.certificates[c.subject], known.certificate == c { return known }
        if let cache = replicator.verificationCache { return try cache.certified(c, trust: replicator.trust) }
        return try replicator.trust.certified(c)
    }

    /// Applies a batch from the peer and acknowledges it (Protocols/sync.md, Batches).
    private func receiveBatch(_ id: UInt32, _ certs: [Certificate], _ encoded: [[UInt8]], _ link: inout Link, now: UInt64,
                              _ out: inout SessionOutput) throws {
        let changes = try Self.decodeBatch(id, encoded, own: replicator.identity.certificate, peer: link.peer)
        if !certs.isEmpty {
            replicator.learn(certificates: certs, now: now)
            for c in certs where c.kind == .device { link.certificatesReceivedFor.insert(c.subject) }
        }
        try applyBatch(id, changes, prepared: nil, &link, now: now, &out)
    }

    /// The changes of a batch, decoded, once it is checked that both sides (`own`, this node; `peer`, as
    /// its handshake presented it) may hold every log in it (§3): a batch with any other log is refused
    /// whole, before anything of it is stored. Pure: a batch prepared elsewhere is decoded there
    /// (`BatchPreparation.prepare()`).
    static func decodeBatch(_ id: UInt32, _ encoded: [[UInt8]], own: Certificate, peer: Certificate) throws(SessionError) -> [Change] {
        var changes: [Change] = []
        changes.reserveCapacity(encoded.count)
        for bytes in encoded {
            do { changes.append(try Change(canonicalBytes: bytes)) } catch {
                throw SessionError(.protocolViolation, "a change in batch \(id) does not decode: \(error)")
            }
        }
        for c in changes {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            guard Entitlement.mayHold(own, log) else {
                throw SessionError(.notEntitled, "batch \(id) carries log \(log), which this node (\(own.role), \(own.scopes.map(\.path))) may not hold")
            }
            guard Entitlement.mayHold(peer, log) else {
                throw SessionError(.notEntitled, "batch \(id) carries log \(log), which the peer may not hold itself")
            }
        }
        return changes
    }

    /// `preparesBatchesElsewhere`: learns a batch's certificates and hands it out for preparation
    /// (`SessionOutput.preparations`: decoding, entitlement, verification, opening); it is applied when it
    /// comes back (`completeBatchPreparation`), after every batch before it.
    private func holdBatch(_ id: UInt32, _ certs: [Certificate], _ encoded: [[UInt8]], now: UInt64, _ out: inout SessionOutput) throws {
        let preparation = try withLink { link throws(SessionError) -> BatchPreparation in
            if !certs.isEmpty {
                replicator.learn(certificates: certs, now: now)
                for c in certs where c.kind == .device { link.certificatesReceivedFor.insert(c.subject) }
            }
            let ticket = link.inbound.nextTicket
            link.inbound.nextTicket += 1
            let verifier = replicator.verifier()
            link.inbound.held.append(.batch(id: id, ticket: ticket, verifier: verifier))
            link.inbound.batches += 1
            return BatchPreparation(ticket: ticket, id: id, encoded: encoded, own: replicator.identity.certificate, peer: link.peer,
                                    verifier: verifier, now: now)
        }
        out.preparations.append(preparation)
    }

    /// Applies a batch prepared elsewhere in its turn, or fails the session with why it is refused whole
    /// (then nothing of it is stored, as when a session that prepares its own batches decodes it).
    private func applyPrepared(_ id: UInt32, _ batch: PreparedBatch, _ verifier: ChangeVerifier, _ link: inout Link, now: UInt64,
                               _ out: inout SessionOutput) throws {
        if let failure = batch.failure { throw failure }
        try applyBatch(id, batch.changes.map(\.change), prepared: (batch.changes, verifier), &link, now: now, &out)
    }

    /// Applies batches prepared elsewhere, consecutive and each `Replicator.canCommitTogether`, in one store
    /// transaction (`Replicator.ingest(preparedTogether:now:)`), then reports, judges and acknowledges each
    /// in order, as `applyBatch` would one after the other: no acknowledgement leaves before the
    /// transaction committed. If the transaction fails (nothing of it is stored), each batch is applied on
    /// its own, so that a failure only one of them causes neither loses nor refuses the others: the
    /// batches before it are committed and acknowledged, and it fails the session as it would alone.
    private func applyTogether(_ group: [ReadyBatch], _ link: inout Link, now: UInt64, _ out: inout SessionOutput) throws {
        let reports: [IngestReport]
        do {
            reports = try replicator.ingest(preparedTogether: group.map { ($0.batch.changes, $0.verifier) }, now: now)
        } catch {
            for b in group { try applyPrepared(b.id, b.batch, b.verifier, &link, now: now, &out) }
            return
        }
        batchesCommittedTogether += group.count
        groupCommits += 1
        for (b, report) in zip(group, reports) {
            let changes = b.batch.changes.map(\.change)
            notePeerHolds(changes, &link)
            try settleBatch(b.id, changes, report, &link, now: now, &out)
        }
    }

    /// Live mode: the peer holds what it sends.
    private func notePeerHolds(_ changes: [Change], _ link: inout Link) {
        guard config.live else { return }
        for c in changes { link.peerKnown.insert(c.header.seq, of: LogID(author: c.header.author, scope: c.header.scope)) }
    }

    /// Applies a batch of decoded changes, verified and opened here, or prepared elsewhere (`prepared`,
    /// with the snapshot that prepared it); then reports it, judges the rejections and acknowledges.
    private func applyBatch(_ id: UInt32, _ changes: [Change], prepared: (changes: [PreparedChange], verifier: ChangeVerifier)?,
                            _ link: inout Link, now: UInt64, _ out: inout SessionOutput) throws {
        notePeerHolds(changes, &link)
        let report = try stored {
            if let prepared { try replicator.ingest(prepared: prepared.changes, by: prepared.verifier, now: now).report }
            else { try replicator.ingest(changes, now: now) }
        }
        try settleBatch(id, changes, report, &link, now: now, &out)
    }

    /// After a batch was committed: reports it, judges its rejections (a forgery fails the session, after
    /// what verified was committed) and acknowledges it.
    private func settleBatch(_ id: UInt32, _ changes: [Change], _ report: IngestReport, _ link: inout Link, now: UInt64,
                             _ out: inout SessionOutput) throws {
        var applied = AppliedBatch()
        applied.changes = changes.count
        for (c, o) in zip(changes, report.outcomes) where o == .accepted {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            if applied.logs.last != log && !applied.logs.contains(log) { applied.logs.append(log) }
        }
        // A change whose author's certificate (valid at its HLC) is unknown here, from a peer that sent no
        // certificate of that author in this session and is of a version that resends them (it sent
        // `clock`): the peer left the certificates out believing this node held them. Not stored, no
        // evidence against the peer: `ack-refused` reason 6 asks for them (Protocols/sync.md §Batches).
        var needsCertificate = [Bool](repeating: false, count: changes.count)
        if link.peerClock != nil {
            for (i, (c, o)) in zip(changes, report.outcomes).enumerated() where !link.certificatesReceivedFor.contains(c.header.author) {
                switch o {
                case .unknownAuthor, .rejected(.certificateInvalid, _): needsCertificate[i] = true
                default: continue
                }
            }
        }
        let unknown = zip(report.outcomes, needsCertificate).filter { $0.0 == .unknownAuthor && !$0.1 }.count
        // Accepted by verification and stored: not refused by the store nor already held.
        let storeRefused = report.commit.refusedForQuota.count + report.commit.refusedHeldBack.count + report.commit.refusedForked.count
        applied.accepted = report.outcomes.filter { $0 == .accepted }.count
        applied.duplicates = report.commit.duplicates
        applied.rejected = report.rejected + unknown
        applied.forksRecorded = report.commit.forksRecorded
        changesReceived += applied.accepted
        changesRefused += report.commit.refusedForQuota.count + report.commit.refusedHeldBack.count
        changesForked += report.commit.refusedForked.count
        forksDetected += report.commit.forksRecorded
        changesDuplicate += report.commit.duplicates
        // A change dated ahead of this node's clock beyond the tolerance is refused (not stored) but
        // is no evidence against the peer: honest devices' clocks differ. It travels again in a
        // later session, once this clock has caught up (Protocols/sync.md, Batches). Likewise a
        // change refused as `revoked`: the peer may have stored it before it learned the revocation
        // (a back-dated cut-off), so it is refused without cutting the session.
        var refused: [RefusedChange] = []
        var excused = 0
        let deferredBefore = deferredUntil
        for (i, (c, o)) in zip(changes, report.outcomes).enumerated() {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            if needsCertificate[i] {
                if case .rejected = o { excused += 1 }
                refused.append(RefusedChange(log: log, seq: c.header.seq, reason: .certificateNeeded))
                continue
            }
            switch o {
            case .rejected(.revoked, _):
                excused += 1
                refused.append(RefusedChange(log: log, seq: c.header.seq, reason: .revoked))
            case .rejected(.timestampInFuture, _):
                excused += 1
                refused.append(RefusedChange(log: log, seq: c.header.seq, reason: .timestampInFuture))
                let at = c.header.hlc.milliseconds &- replicator.trust.clockSkewMilliseconds
                deferredUntil = min(deferredUntil ?? at, at)
            default:
                continue
            }
        }
        // What the sender is told (`ack-refused`): each change not stored, by its position in the batch.
        var told: [BatchRefusal] = []
        for (i, o) in report.outcomes.enumerated() {
            if needsCertificate[i] {
                told.append(BatchRefusal(index: i, reason: .certificateNeeded))
                continue
            }
            switch o {
            case .rejected(.revoked, _): told.append(BatchRefusal(index: i, reason: .revoked))
            case .rejected(.timestampInFuture, _): told.append(BatchRefusal(index: i, reason: .timestampInFuture))
            default: continue
            }
        }
        if storeRefused > 0 {
            var byID: [[UInt8]: Int] = [:]
            for (i, c) in changes.enumerated() where byID[c.id] == nil { byID[c.id] = i }
            for (ids, reason) in [(report.commit.refusedForQuota, ChangeRefusal.quota), (report.commit.refusedHeldBack, .heldBack),
                                  (report.commit.refusedForked, .forked)] {
                for h in ids {
                    guard let i = byID[h] else { continue }
                    let c = changes[i]
                    refused.append(RefusedChange(log: LogID(author: c.header.author, scope: c.header.scope), seq: c.header.seq, reason: reason))
                    told.append(BatchRefusal(index: i, reason: reason))
                }
            }
        }
        // What verified is committed: reported even if the session now fails.
        out.events.append(.applied(applied))
        for r in refused { out.events.append(.refused(r)) }
        if deferredUntil != deferredBefore, let until = deferredUntil {
            deferredReported = false
            out.events.append(.deferred(until: until))
            requestTimer(link, &out)
        }
        if report.rejected > excused {
            // A peer that sends forgeries is cut off.
            throw SessionError(.badChange, "\(report.rejected - excused) change(s) of batch \(id) failed verification")
        }
        if unknown > 0 {
            // Not stored, so not acknowledged: the sender must not believe they were delivered.
            let authors = Set(zip(zip(changes, report.outcomes), needsCertificate).filter { $0.0.1 == .unknownAuthor && !$0.1 }.map { $0.0.0.header.author })
            throw SessionError(.badChange, "\(unknown) change(s) of batch \(id) by author(s) whose certificate was not sent and is not known here: "
                               + authors.sorted().prefix(3).map(\.description).joined(separator: ", "))
        }
        // A revocation in this very batch may concern the peer: it gets no acknowledgement then.
        if report.revocationsLearned > 0 { try checkStanding(&link, now: now) }
        // A fork found in this batch is proven to the peer at once (before the ack, so it arrives
        // while the peer's side of the session is still open).
        if report.commit.forksRecorded > 0 { try sendForkProofs(&link, &out) }
        told.sort { $0.index < $1.index }
        try send(told.isEmpty ? .ack(id: id) : .ackRefused(id: id, refused: told), &link, &out)
    }

    // MARK: Streaming

    /// Orders what the peer lacks: control changes (revocations, grants, receipts) first, then by
    /// priority, then oldest first. In a log where the peer's holdings show another branch (a fork), it
    /// sends the changes at the forked heights (the peer gets two changes at one position: a fork
    /// proof) and only what lies below them; first it sends the fork proofs it holds. Leaves the session
    /// streaming (or past it).
    private func planStreaming(_ result: ReconciliationResult, _ link: inout Link, own: Holdings?, now: UInt64,
                               _ out: inout SessionOutput) throws {
        out.events.append(.reconciled(differingLogs: result.differences.count))
        if var witness = fenceWitness {
            // A log that does not differ is held alike on both sides.
            for (log, heads) in witness { witness[log] = (peer: heads.own, own: heads.own) }
            for d in result.differences where d.log.author == replicator.identity.id {
                witness[d.log] = (peer: UInt64(d.remote.last?.end ?? 0), own: UInt64(d.local.last?.end ?? 0))
            }
            fenceWitness = witness
        }
        // Authors the peer holds a change of: logs that do not differ are held alike; a differing log
        // shows the peer's intervals.
        let differing = Set(result.differences.map(\.log))
        for l in link.ownLogs where !differing.contains(l.log) { link.peerHoldsAuthors.insert(l.log.author) }
        for d in result.differences where !d.remote.isEmpty { link.peerHoldsAuthors.insert(d.log.author) }
        link.ownLogs = []
        try sendForkProofs(&link, &out)
        // Keys only (no bytes): the order is decided on them, and `pump` reads the changes a page at a
        // time as the batches go out, so the first batch leaves after one page of reading, not after the
        // whole backlog.
        var plan: [StoredChangeKey] = []
        for d in result.differences {
            let forked = try forkedHeights(d)
            if let lowest = forked.first {
                link.recheck.insert(d.log)
                for h in forked { plan += try stored { try replicator.store.changeKeys(d.log, in: h...h) } }
                for r in d.missingAtRemote where UInt64(r.lowerBound) < lowest {
                    plan += try stored { try replicator.store.changeKeys(d.log, in: UInt64(r.lowerBound)...min(UInt64(r.upperBound), lowest - 1)) }
                }
                continue
            }
            for r in d.missingAtRemote {
                plan += try stored { try replicator.store.changeKeys(d.log, in: UInt64(r.lowerBound)...UInt64(r.upperBound)) }
            }
        }
        plan.sort(by: Self.urgentFirst)
        if let own {
            // Live mode: the peer holds what reconciliation showed, plus everything planned here.
            try link.peerKnown.reconciled(own: own, differences: result.differences)
            for c in plan { link.peerKnown.insert(c.seq, of: c.log) }
        }
        var outbound = Outbound(toSend: plan.map { Planned(key: $0, bytes: .unread) }, batchLimit: config.firstBatchBytes)
        try pump(&link, &outbound, &out)
        try settleFirstExchange(link, outbound, now: now, &out)
    }

    /// Leaves `streaming` once `done` (or `live`) was sent and received and nothing is in flight: the
    /// session finishes, or goes live when both sides sent `live`; else it stays streaming.
    private func settleFirstExchange(_ link: Link, _ outbound: Outbound, now: UInt64, _ out: inout SessionOutput) throws {
        guard outbound.sentEnd, let end = link.peerEnd, outbound.inFlight.isEmpty else {
            stage = .streaming; state = .streaming(link, outbound)
            return
        }
        if let witness = fenceWitness {
            // Every batch of the peer's first exchange is applied: what it held of this device's logs is here.
            fenceWitness = nil
            liftedRestoreFence = (try? replicator.confirmOwnHeads(witness)) ?? false
        }
        guard config.live && end == .live else {
            close(.finished, &out)
            return
        }
        var (l, o) = (link, outbound)
        out.events.append(.live)
        // What this node got while the first exchange ran. After the plan the peer is known to hold every
        // held change of every log except those in `recheck`, as of `holdingsGeneration`: so the logs that
        // moved since, and those, are all that can have anything to push (every log if the store cannot
        // say which moved).
        try checkStanding(&l, now: now)
        let moved = l.holdingsGeneration.flatMap { replicator.store.logsChanged(since: $0) }
        let logs = moved.map { Set($0).union(l.recheck).sorted() }
        l.holdingsGeneration = nil
        l.recheck = []
        // Debug builds (every test and debug simulation) check the argument above against every log.
        assert(logs == nil || (try? logsToPush(nil, l).isSubset(of: Set(logs!))) ?? true,
               "the push after the first exchange would miss a log that has something to push")
        try pushFresh(logs, &l, &o, &out)
        setLive(l, o)
    }

    /// The logs of `logs` (all when nil) of which `pushFresh` would queue a change now. Reads only.
    private func logsToPush(_ logs: [LogID]?, _ link: Link) throws -> Set<LogID> {
        Set(try (logs ?? stored { try replicator.store.orderedLogs() }).filter { try !unknownToPeer($0, link).isEmpty })
    }

    /// The held changes of `log` the peer may hold (both sides may hold the log) and is not known to hold.
    private func unknownToPeer(_ log: LogID, _ link: Link) throws -> [StoredChange] {
        guard Entitlement.mayHold(link.peer, log) && Entitlement.mayHold(replicator.identity.certificate, log) else { return [] }
        let store = replicator.store
        let held = try stored { try store.holdings(of: log) }
        let known = link.peerKnown[log] ?? HeldIntervals()
        if held == known { return [] }
        var out: [StoredChange] = []
        for r in HeldIntervals.difference(held, known) { out += try stored { try store.changes(log, in: r) } }
        return out
    }

    /// Queues the changes of `logs` (all when nil) the peer may hold and is not known to hold, and sends
    /// what the window allows (live mode).
    private func pushFresh(_ logs: [LogID]?, _ link: inout Link, _ outbound: inout Outbound, _ out: inout SessionOutput) throws {
        if replicator.forksRecorded != link.forksSeen { try sendForkProofs(&link, &out) }
        var fresh: [StoredChange] = []
        for log in try logs ?? stored({ try replicator.store.orderedLogs() }) {
            let cs = try unknownToPeer(log, link)
            fresh += cs
            for c in cs { link.peerKnown.insert(c.seq, of: log) }
        }
        guard !fresh.isEmpty else { return }
        link.authorsCovered = []  // certificates learned since (a renewal) are sent with the next batches
        if outbound.cursor == outbound.toSend.count {
            outbound.toSend = []
            outbound.cursor = 0
        }
        fresh.sort { Self.urgentFirst(StoredChangeKey($0), StoredChangeKey($1)) }
        outbound.toSend += fresh.map { Planned(key: StoredChangeKey($0), bytes: .read($0.bytes)) }
        try pump(&link, &outbound, &out)
    }

    /// Heights at which the peer holds another change than this node (ascending): the ends of the peer's
    /// intervals that this node holds, where the 4-byte hash prefixes differ (Protocols/sync.md,
    /// Forks). Equal ends are `LogDifference.forkedHeights`; an end inside one of our intervals costs one
    /// hash lookup. A prefix collision (2^-32) hides a fork from this check, not from the chain check
    /// at commit.
    private func forkedHeights(_ d: LogDifference) throws -> [UInt64] {
        guard !d.local.isEmpty, !d.remote.isEmpty else { return [] }
        var out: [UInt64] = []
        for r in d.remote {
            guard let mine = d.local.first(where: { $0.start <= r.end && r.end <= $0.end }) else { continue }
            let prefix: UInt32
            if mine.end == r.end {
                prefix = mine.endHashPrefix
            } else {
                guard let h = try stored({ try replicator.store.hash(d.log, seq: UInt64(r.end)) }), h.count >= 4 else { continue }
                prefix = UInt32(h[0]) << 24 | UInt32(h[1]) << 16 | UInt32(h[2]) << 8 | UInt32(h[3])
            }
            if prefix != r.endHashPrefix { out.append(UInt64(r.end)) }
        }
        return out.sorted()
    }

    /// Sends the fork proofs held for logs both sides may hold that did not travel in this session yet. A proof
    /// with a change dated beyond the peer's clock plus the tolerance is held back as such a change is
    /// (`forkProofsHeldBack`): the peer would refuse it (`timestampInFuture`), and this session, having sent it,
    /// would not send it again (swarm seed 882 with adversaries: a county car whose clock ran 2 h behind never
    /// learned a fork on a live session that lasted the rest of the run). A live session offers it again when the
    /// peer's clock reaches it (`heldBackUntil`), a one-shot session leaves it to the next session.
    private func sendForkProofs(_ link: inout Link, _ out: inout SessionOutput) throws {
        link.forksSeen = replicator.forksRecorded
        let own = replicator.identity.certificate
        let acceptLimit = peerAcceptLimit(link)
        var heldBackChanged = false
        defer { if heldBackChanged { requestTimer(link, &out) } }
        for f in try stored({ try replicator.store.forks() }) where Entitlement.mayHold(link.peer, f.log) && Entitlement.mayHold(own, f.log) {
            let key = Self.proofKey(f.kept.hash, f.conflicting.hash)
            guard !link.proofsExchanged.contains(key), let proof = try? f.proof() else { continue }  // evicted bytes: nothing to prove with
            let dated = max(proof.first.header.hlc.milliseconds, proof.second.header.hlc.milliseconds)
            if let limit = acceptLimit, dated > limit, let c = link.peerClock {
                forkProofsHeldBack += 1
                link.forksSeen = -1  // the next push looks at the proofs again
                let due = Self.saturating(c.at, dated - replicator.trust.clockSkewMilliseconds - c.theirs)
                if heldBackUntil.map({ due < $0 }) ?? true { heldBackUntil = due; heldBackChanged = true }
                continue
            }
            link.proofsExchanged.insert(key)
            // Every certificate of the author (renewals) and its issuing authority's, once per session.
            let certs = replicator.certificateChain(of: proof.author).filter { !link.certificatesSent.contains($0) }
            link.certificatesSent.formUnion(certs)
            forkProofsSent += 1
            try send(.fork(certificates: certs, proof: proof), &link, &out)
        }
    }

    /// Verifies and records a proof from the peer. A proof of a log this node may not hold breaks the
    /// entitlement rule; a proof that does not verify is a forgery: both end the session.
    private func receiveForkProof(_ proof: ForkProof, certificates: [Certificate], _ link: inout Link, now: UInt64) throws {
        let log = LogID(author: proof.author, scope: proof.scope)
        guard Entitlement.mayHold(replicator.identity.certificate, log) else {
            throw SessionError(.protocolViolation, "fork proof of \(log), which this node may not hold")
        }
        link.proofsExchanged.insert(Self.proofKey(proof.first.id, proof.second.id))
        let before = replicator.forksRecorded
        switch try stored({ try replicator.ingest(forkProof: proof, certificates: certificates, now: now) }) {
        case .accepted:
            forkProofsReceived += 1
            forksDetected += replicator.forksRecorded - before
        case .rejected(.timestampInFuture, _):
            break  // no evidence against the peer; the proof travels again later
        case let .rejected(code, detail):
            throw SessionError(.badChange, "fork proof of \(log) does not verify: \(code.rawValue): \(detail)")
        case .unknownAuthor:
            throw SessionError(.badChange, "fork proof of \(log) without its author's certificate")
        }
    }

    /// The two change ids in order: one key per proof whichever change a store keeps.
    private static func proofKey(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] { a.lexicographicallyPrecedes(b) ? a + b : b + a }

    /// Control changes first, then priority, then oldest, then log and seq.
    private static func urgentFirst(_ a: StoredChangeKey, _ b: StoredChangeKey) -> Bool {
        let ac = a.contentType.isControl, bc = b.contentType.isControl
        if ac != bc { return ac }
        if a.priority != b.priority { return a.priority < b.priority }
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        return (a.log, a.seq) < (b.log, b.seq)
    }

    /// Sends batches while the window allows; `done` (or `live`) once everything of the first exchange
    /// was sent and acknowledged.
    private func pump(_ link: inout Link, _ o: inout Outbound, _ out: inout SessionOutput) throws {
        var heldBackChanged = false
        defer { if heldBackChanged { requestTimer(link, &out) } }
        while o.inFlight.count < config.window, o.cursor < o.toSend.count {
            var changes: [[UInt8]] = []
            var sent: [(log: LogID, seq: UInt64)] = []
            var sizes: [(log: LogID, seq: UInt64, bytes: Int)] = []
            var certs: [Certificate] = []
            var bytes = 16
            let acceptLimit = peerAcceptLimit(link)
            while o.cursor < o.toSend.count {
                if let limit = acceptLimit, o.toSend[o.cursor].key.hlc.milliseconds > limit, let c = link.peerClock {
                    // Dated beyond the peer's clock plus the tolerance: it would refuse it
                    // (`timestampInFuture`). Held back until its clock (as estimated) reaches the HLC minus
                    // the tolerance; live mode: the peer is not known to hold it, so the push then offers it.
                    let key = o.toSend[o.cursor].key
                    o.toSend[o.cursor].bytes = .gone
                    o.cursor += 1
                    changesHeldBack += 1
                    let due = Self.saturating(c.at, key.hlc.milliseconds - replicator.trust.clockSkewMilliseconds - c.theirs)
                    if heldBackUntil.map({ due < $0 }) ?? true { heldBackUntil = due; heldBackChanged = true }
                    if !heldBackLogs.contains(key.log) { heldBackLogs.append(key.log) }
                    if let known = link.peerKnown[key.log], known.contains(key.seq) {
                        link.peerKnown.set(key.log, HeldIntervals(sortedRanges: HeldIntervals.difference(known, HeldIntervals([key.seq...key.seq]))))
                        if link.holdingsGeneration != nil { link.recheck.insert(key.log) }
                    }
                    continue
                }
                if case .unread = o.toSend[o.cursor].bytes { try readPage(&o) }
                let next = o.toSend[o.cursor].key
                let author = next.log.author
                guard replicator.certificates[author] != nil, case let .read(nextBytes) = o.toSend[o.cursor].bytes else {
                    // No verified certificate of its author here: the peer could not verify it either. Or
                    // no longer held (evicted or quarantined since the plan): nothing to send. Live mode:
                    // the peer is not known to hold it, so a push offers it again once the certificate is
                    // known (or the change is held again) here.
                    if replicator.certificates[author] == nil { changesWithheld += 1 }
                    o.cursor += 1
                    if let known = link.peerKnown[next.log], known.contains(next.seq) {
                        link.peerKnown.set(next.log, HeldIntervals(sortedRanges: HeldIntervals.difference(known, HeldIntervals([next.seq...next.seq]))))
                        if link.holdingsGeneration != nil { link.recheck.insert(next.log) }
                    }
                    continue
                }
                var extra = nextBytes.count + 4
                // Every known certificate of the author (renewals: the one valid at each change's write
                // time) and its issuing county authority's, once per session (Protocols/sync.md §3).
                var needed: [Certificate] = []
                if !link.authorsCovered.contains(author) {
                    let chain = replicator.certificateChain(of: author)
                    if omitsCertificates(of: author, chain: chain, link) {
                        certificatesOmitted += chain.count
                    } else {
                        needed = chain.filter { !link.certificatesSent.contains($0) && !certs.contains($0) }
                    }
                }
                if next.contentType.carriesTrust && !link.authoritiesSent {
                    // Key grants and revocations may be signed by a county authority the peer never met
                    // (published through HQ's log): every known authority certificate travels once, first.
                    needed = replicator.trust.authorities.values.sorted { $0.subject < $1.subject }
                        .filter { !link.certificatesSent.contains($0) && !certs.contains($0) && !needed.contains($0) } + needed
                }
                for c in needed { extra += c.canonicalBytes.count }
                if !changes.isEmpty && bytes + extra > o.batchLimit { break }
                o.toSend[o.cursor].bytes = .sent
                o.cursor += 1
                certs += needed
                link.authorsCovered.insert(author)
                if next.contentType.carriesTrust { link.authoritiesSent = true }
                changes.append(nextBytes)  // sent exactly as stored and received
                sent.append((next.log, next.seq))
                sizes.append((next.log, next.seq, nextBytes.count))
                bytes += extra
            }
            if changes.isEmpty { break }
            o.batchLimit = min(config.maxBatchBytes, o.batchLimit * 2)
            let id = o.nextBatchID
            o.nextBatchID += 1
            o.inFlight[id] = sent
            link.certificatesSent.formUnion(certs)
            changesSent += changes.count
            try send(.batch(id: id, certificates: certs, changes: changes), &link, &out)
            out.frames[out.frames.count - 1].contents?.changes = sizes  // accounting: which changes, how big
            out.events.append(.sent(changes: changes.count))
        }
        if o.isIdle && !o.sentEnd {
            o.sentEnd = true
            try send(config.live ? .live : .done, &link, &out)
        }
    }

    /// Changes of the plan read at a time (about 180 KB of typical changes, three batches of the largest
    /// size): what the sender reads before its first batch leaves.
    static let planPage = 256

    /// Reads the bytes of the unread changes among the next `planPage` of the plan, from the cursor: one
    /// range read per run of consecutive seqs of a log. A change the store no longer holds is `gone`.
    private func readPage(_ o: inout Outbound) throws {
        let end = min(o.toSend.count, o.cursor + Self.planPage)
        var logs: [LogID] = []  // in order of first appearance: the reads' order does not depend on hashing
        var wanted: [LogID: [(seq: UInt64, index: Int)]] = [:]
        for i in o.cursor..<end {
            guard case .unread = o.toSend[i].bytes else { continue }
            let k = o.toSend[i].key
            if wanted[k.log] == nil { logs.append(k.log) }
            wanted[k.log, default: []].append((k.seq, i))
        }
        for log in logs {
            let entries = wanted[log]!.sorted { $0.seq < $1.seq }
            var start = 0
            while start < entries.count {
                var stop = start + 1
                while stop < entries.count, entries[stop].seq == entries[stop - 1].seq + 1 { stop += 1 }
                let got = try stored { try replicator.store.changes(log, in: entries[start].seq...entries[stop - 1].seq) }
                var g = 0
                for e in entries[start..<stop] {
                    while g < got.count, got[g].seq < e.seq { g += 1 }
                    if g < got.count, got[g].seq == e.seq {
                        o.toSend[e.index].bytes = .read(got[g].bytes)
                    } else {
                        o.toSend[e.index].bytes = .gone
                    }
                }
                start = stop
            }
        }
    }
}
