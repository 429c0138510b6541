import FieldSyncCore
import FieldSyncCrypto

/// A framed message a session asks its driver to send, with what it carries (for accounting).
public struct SessionFrame: Sendable, Equatable {
    /// The bytes to write, already framed (`u16 length || body`).
    public var bytes: [UInt8]
    /// What the frame carries.
    public var kind: SessionFrameKind
    /// For a `batch` (or `fork`) frame: what is inside it, for byte accounting (nil for other frames).
    /// Not sent: the wire bytes are `bytes` alone.
    public var contents: BatchFrameContents?

    /// Creates a frame.
    public init(bytes: [UInt8], kind: SessionFrameKind, contents: BatchFrameContents? = nil) {
        self.bytes = bytes
        self.kind = kind
        self.contents = contents
    }
}

/// What a `batch` or `fork` frame carries (`SessionFrame.contents`), for accounting only: a simulator or
/// a node splits a batch frame's bytes into the changes, the certificates and the rest (message encoding,
/// then the frame's length prefix and AEAD tag: `SessionFrame.bytes.count - plaintextBytes`).
public struct BatchFrameContents: Sendable, Equatable {
    /// The changes, in batch order: log, seq and encoded size (bytes, as stored and sent). Empty for a
    /// fork proof.
    public var changes: [(log: LogID, seq: UInt64, bytes: Int)]
    /// Certificates carried (authors' chains and authorities, once per session), and their canonical bytes.
    public var certificates: [Certificate]
    /// The sum of the certificates' canonical sizes.
    public var certificateBytes: Int
    /// Canonical bytes of a fork proof (0 for a batch).
    public var forkProofBytes: Int
    /// Size of the encoded message before sealing (tag, id, counts, length prefixes, certificates, changes).
    public var plaintextBytes: Int

    /// Creates a value.
    public init(changes: [(log: LogID, seq: UInt64, bytes: Int)], certificates: [Certificate], certificateBytes: Int,
                forkProofBytes: Int, plaintextBytes: Int) {
        self.changes = changes
        self.certificates = certificates
        self.certificateBytes = certificateBytes
        self.forkProofBytes = forkProofBytes
        self.plaintextBytes = plaintextBytes
    }

    /// Equal contents: the same changes (log, seq, size) in order and the same counts and sizes.
    public static func == (a: Self, b: Self) -> Bool {
        a.certificates == b.certificates && a.certificateBytes == b.certificateBytes && a.forkProofBytes == b.forkProofBytes
            && a.plaintextBytes == b.plaintextBytes && a.changes.elementsEqual(b.changes) { $0.log == $1.log && $0.seq == $1.seq && $0.bytes == $1.bytes }
    }
}

/// How a session ended. Every closed session has exactly one reason; a driver closes the connection
/// once it has written the frames of the output that carried it.
public enum SessionCloseReason: Sendable, Equatable, CustomStringConvertible {
    /// Both sides were done (Protocols/sync.md §4), or a live session's connection closed with none of
    /// this side's batches in flight (§4.1): a normal end.
    case finished
    /// The session failed. The code says why; `SessionRefusal(refusing:)` gives the wire `refuse`
    /// reason for a peer refused for its standing (`revoked`, `badCertificate`), which is then the last
    /// frame sent; every other code closes the connection without a message (§4, "any state").
    case failed(SessionError)

    /// The error, for a failed session.
    public var error: SessionError? {
        if case let .failed(e) = self { e } else { nil }
    }

    public var description: String {
        switch self {
        case .finished: "finished"
        case let .failed(e): "failed: \(e)"
        }
    }
}

/// Why the receiving side did not store a change of a batch it acknowledged (or, for `revoked` and
/// `timestampInFuture`, a change it refused without cutting the session). None of these is evidence
/// against the peer; each is offered again by a later session where that can help.
public enum ChangeRefusal: String, Sendable, Equatable {
    /// Dated ahead of this node's clock beyond the tolerance; acceptable later (`SessionEvent.deferred`).
    case timestampInFuture
    /// Its author's certificate has a revocation in force at its HLC (the peer may have stored it before
    /// it learned the revocation).
    case revoked
    /// The relay quota is full of unreceipted changes.
    case quota
    /// Too many changes are already held back behind gaps.
    case heldBack
    /// It contradicts a log this node holds (a fork, `CommitReport.refusedForked`); not offered again
    /// above the fork by this peer.
    case forked
    /// Its author's certificate (valid at its HLC) is not known to this node and the batch did not carry
    /// it: the sender left it out, inferring this node held it (Protocols/sync.md §Batches, "Certificates
    /// the receiver holds"). The sender sends the change again with every certificate of its author.
    case certificateNeeded

    /// The reason's byte in `ack-refused` (Protocols/sync.md §2): 1 quota, 2 heldBack,
    /// 3 timestampInFuture, 4 revoked, 5 forked, 6 certificateNeeded. Normative.
    public var wireCode: UInt8 {
        switch self {
        case .quota: 1
        case .heldBack: 2
        case .timestampInFuture: 3
        case .revoked: 4
        case .forked: 5
        case .certificateNeeded: 6
        }
    }

    /// The reason for a wire byte; nil for any other value (a decoding error).
    public init?(wireCode: UInt8) {
        switch wireCode {
        case 1: self = .quota
        case 2: self = .heldBack
        case 3: self = .timestampInFuture
        case 4: self = .revoked
        case 5: self = .forked
        case 6: self = .certificateNeeded
        default: return nil
        }
    }

    /// What an operator reads: the sender's view of why its peer did not store its changes.
    public var explanation: String {
        switch self {
        case .quota: "relay full"
        case .heldBack: "too many changes held back behind gaps"
        case .timestampInFuture: "dated ahead of the peer's clock"
        case .revoked: "author revoked"
        case .forked: "fork: the peer holds another branch"
        case .certificateNeeded: "the peer lacked the author's certificate (sent again with it)"
        }
    }
}

/// A change of the peer's batch that was not stored.
public struct RefusedChange: Sendable, Equatable {
    /// Its log and position.
    public var log: LogID
    /// Its position in the log.
    public var seq: UInt64
    /// Why.
    public var reason: ChangeRefusal

    /// Creates a value.
    public init(log: LogID, seq: UInt64, reason: ChangeRefusal) {
        self.log = log
        self.seq = seq
        self.reason = reason
    }
}

/// What one batch from the peer did to this node's store.
public struct AppliedBatch: Sendable, Equatable {
    /// Changes in the batch.
    public var changes = 0
    /// Changes that verified and went to the store (`SyncSession.changesReceived` counts the same); of
    /// those, the store may have held some already (`duplicates`) or refused some (`refused` events:
    /// quota, held back, forked).
    public var accepted = 0
    /// Changes the store already held (sent twice: two peers raced, or a batch was resent after a cut).
    public var duplicates = 0
    /// Changes that failed verification, excused ones included (`revoked`, `timestampInFuture`; any
    /// other failure ends the session with `badChange`).
    public var rejected = 0
    /// Fork evidence the store recorded from this batch.
    public var forksRecorded = 0
    /// The logs in which changes were stored, each once, in the order first seen: what a driver pushes
    /// to its other live sessions or scans for news.
    public var logs: [LogID] = []

    /// An empty value.
    public init() {}
}

/// What happened, reported by every input of a `SyncSession` in order. A driver acts on these; it has
/// no need to compare counters before and after.
public enum SessionEvent: Sendable, Equatable {
    /// The handshake completed with this peer.
    case authenticated(DeviceID, Role)
    /// Reconciliation finished: how many logs differed.
    case reconciled(differingLogs: Int)
    /// A batch of changes was sent (counted when queued).
    case sent(changes: Int)
    /// A batch from the peer was applied (atomically) and acknowledged.
    case applied(AppliedBatch)
    /// A change of the peer's batch was not stored, and why. Reported after the batch's `applied`.
    case refused(RefusedChange)
    /// The peer applied a batch of this side's but did not store this change of it, and why (it said so in
    /// `ack-refused`): the change is not counted as acknowledged (`SyncSession.changesRefusedByPeer`).
    /// Reported when the acknowledgement arrives.
    case refusedByPeer(RefusedChange)
    /// Changes were refused as dated in the future (`timestampInFuture`); they start to be acceptable at
    /// `until` (ms since the Unix epoch on this node's clock: the earliest such HLC minus the clock-skew
    /// tolerance, the earliest over the session). A driver resyncs after that time; a live session
    /// reports `deferredDue` then through its timer.
    case deferred(until: UInt64)
    /// The time of `deferred` has come (reported by `timerFired`, once): a live session does not offer
    /// those changes again, so a driver closes it when idle and the next session's reconciliation does.
    case deferredDue
    /// The session wants `timerFired(now:)` at this time (ms since the Unix epoch, on this node's
    /// clock): it replaces any earlier request. Used for the peer's standing lapsing (its certificate or
    /// its issuer's reaching `notAfter` plus the tolerance) and for `deferredDue`.
    case needsTimer(at: UInt64)
    /// Both sides are done and asked to stay open (live mode): the session now carries later changes
    /// (`SyncSession.push`) until the connection closes.
    case live
    /// The session is over; close the connection after sending this output's frames.
    case closed(SessionCloseReason)
}

/// What a session input produced: frames to send, in order, what happened, and batches of the peer to
/// prepare elsewhere.
public struct SessionOutput: Sendable, Equatable {
    /// Frames to write, in order.
    public var frames: [SessionFrame] = []
    /// What happened, in order.
    public var events: [SessionEvent] = []
    /// Batches of the peer to verify and open on another thread (`BatchPreparation.prepare()`) and return
    /// with `SyncSession.completeBatchPreparation` (`SessionConfiguration.preparesBatchesElsewhere`;
    /// always empty otherwise).
    public var preparations: [BatchPreparation] = []

    /// Nothing.
    public init() {}

    /// Whether there is nothing to send, nothing to prepare and nothing happened.
    public var isEmpty: Bool { frames.isEmpty && events.isEmpty && preparations.isEmpty }

    /// Same frames, events, and preparations (by ticket).
    public static func == (a: SessionOutput, b: SessionOutput) -> Bool {
        a.frames == b.frames && a.events == b.events && a.preparations.map(\.ticket) == b.preparations.map(\.ticket)
    }

    /// The close reason, if the session closed in this output.
    public var closeReason: SessionCloseReason? {
        for case let .closed(r) in events { return r }
        return nil
    }

    /// Changes sent in batches in this output.
    public var changesSent: Int {
        events.reduce(0) { if case let .sent(n) = $1 { $0 + n } else { $0 } }
    }

    /// Changes of the peer that verified and went to the store in this output (`AppliedBatch.accepted`).
    public var changesAccepted: Int {
        events.reduce(0) { if case let .applied(b) = $1 { $0 + b.accepted } else { $0 } }
    }

    /// Appends another output.
    public mutating func append(_ other: SessionOutput) {
        frames += other.frames
        events += other.events
        preparations += other.preparations
    }
}
