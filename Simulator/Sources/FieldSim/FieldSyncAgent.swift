// The real FieldSync protocol as a simulator agent: one `Replicator` over a `MemoryStore` per node,
// enrolled by a simulated HQ authority, and per contact a pair of sans-IO `SyncSession`s whose framed,
// Noise-encrypted bytes the engine carries over the link. Nothing of the sync logic is reimplemented
// here: what a node holds is whatever its store holds after the sessions ran, and when sessions start,
// reconnect, close and receipt is decided by the node's own driver policy (FieldSyncDriver: one
// `SyncDriver` per node, `LiveSessionRules`, `RefusedRetry`, `ReceiptScheduler`).

import FieldSyncCore
@_spi(Seeded) import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncProtocol

/// One side of a contact: its session, the frames its outputs asked to send that the engine has not
/// taken yet (the engine pulls one frame at a time, at the link's pace), and what its events reported.
private final class SimSide {
    let session: SyncSession
    private var frames: [SessionFrame] = []
    private var head = 0
    /// The latest `SessionEvent.deferred` time (the earliest future-dated refusal of the session).
    private(set) var deferredUntil: UInt64?
    /// Changes the store refused on this session (`refused` events: quota, held back).
    private(set) var refused = 0
    /// Changes of this side the peer refused for room (`refusedByPeer` events: quota, held back).
    private(set) var refusedByPeer = 0
    /// The session's own timer (`SessionEvent.needsTimer`, the latest request; on this node's clock), nil
    /// once fired: the node's channel handler calls `SyncSession.timerFired` then, and so does the agent.
    var timerAt: UInt64?

    init(_ session: SyncSession) {
        self.session = session
        _ = take(session.start())
    }

    /// Queues the output's frames; returns its events. A failed session sends nothing more than its
    /// failing output's frames (a refusal): frames still queued are dropped, as a node that closes the
    /// connection does not write them.
    func take(_ out: SessionOutput) -> [SessionEvent] {
        if case .failed = out.closeReason {
            frames.removeAll(keepingCapacity: true)
            head = 0
        }
        frames += out.frames
        for e in out.events {
            switch e {
            case let .deferred(until): deferredUntil = until
            case let .refused(change) where change.reason == .quota || change.reason == .heldBack: refused += 1
            case let .refusedByPeer(change) where change.reason == .quota || change.reason == .heldBack: refusedByPeer += 1
            case let .needsTimer(at): timerAt = at
            default: break
            }
        }
        return out.events
    }

    /// The next frame to send, if any.
    func next() -> SessionFrame? {
        guard head < frames.count else { return nil }
        defer {
            head += 1
            if head == frames.count {
                frames.removeAll(keepingCapacity: true)
                head = 0
            }
        }
        return frames[head]
    }
}

/// A frame as a `SyncSession` emitted it, with the accounting the engine needs. The bytes are the
/// session's own (length prefix + Noise ciphertext); `type` is `.summary` for handshake frames and
/// `.control` for every later frame (the engine's coarse classes); `kind` is what the session says the
/// frame carries (handshake, reconciliation, batch, ack, done), which the agent counts itself.
public struct FieldSyncFrame {
    /// The framed bytes, exactly as sent.
    public var bytes: [UInt8]
    /// Accounting type (see above).
    public var type: MessageType
    /// The session's message kind.
    public var kind: SessionFrameKind
    /// Which session pair of the contact sent it (a new pair is a new connection: frames of a closed one
    /// never reach it).
    public var session: UInt32 = 0
    /// For a batch (or fork proof) frame: its bytes split as `FieldSyncAgent.batchBytes` counts them, so
    /// that a cut frame can be taken out of the parts again (accounting only, not sent).
    public var batchParts: BatchBytes?
    /// The link flipped a bit of it (`LinkFaults.corrupt`): a flipped length prefix can leave the receiver
    /// waiting for bytes that never come (see `FieldSyncAgent.sessionIdleTimeout`).
    public var corrupted = false
    /// How long the sender sits on the frame before it leaves (`SyncAgent.holdTime`): an adversarial relay's
    /// delay (`AdversaryConfig.badRelay`); 0 for every honest frame.
    public var hold: SimTime = 0
}

/// The bytes of batch frames (`SessionFrameKind.batch`: batches of changes and fork proofs) split by what
/// they carry (`fieldsync.batch_bytes_breakdown` in `summary.json`; docs/simulator.md, "Issue 14: what the
/// batch bytes are"). Every byte of a batch frame that left its sender is in exactly one part, so the parts
/// sum to `bytesByKind[batch]`; each change is classed when its frame leaves the sender.
public struct BatchBytes: Equatable, Sendable {
    /// Workload changes (the scenario's writes) to a node that reads their station and did not hold them:
    /// what the ideal epidemic also sends, at the change's real encoded size.
    public var changesToReaders: Int64 = 0
    /// Workload changes to a relay box that carries the station and did not hold them (sealed copies: the
    /// ideal epidemic sends these too).
    public var changesToRelays: Int64 = 0
    /// Workload changes to a node that does not carry their station (the ideal epidemic never sends these).
    public var changesToNonCarriers: Int64 = 0
    /// Workload changes to a node that already held them when the frame left (another path was faster).
    public var changesPeerHeld: Int64 = 0
    /// Workload changes the receiver did not store (`SessionEvent.refused`: dated ahead of its clock, relay
    /// quota, held back, revoked, forked): sent, and sent again by a later session. Moved here from
    /// `changesToReaders` or `changesToRelays` when the refusal is reported.
    public var changesRefused: Int64 = 0
    /// Control changes (HQ's receipts, revocations): not part of the workload, so the ideal epidemic has none.
    public var controlChanges: Int64 = 0
    /// Certificates carried (authors' chains and county authorities, once per session).
    public var certificates: Int64 = 0
    /// Fork proofs' canonical bytes.
    public var forkProofs: Int64 = 0
    /// Message encoding inside the plaintext: tag byte, batch id, counts, a length prefix per change.
    public var encoding: Int64 = 0
    /// Frame overhead outside the plaintext: 2-byte length prefix and 16-byte AEAD tag.
    public var framing: Int64 = 0
    /// Bytes of frames cut by the end of their contact that had left the sender (their parts are not counted
    /// above: the receiver read none of them).
    public var cutFrames: Int64 = 0
    /// Counts: batch frames (fork proofs included) that left whole, changes in them by class as above,
    /// certificates.
    public var frames = 0, readerChanges = 0, relayChanges = 0, nonCarrierChanges = 0, peerHeldChanges = 0,
               controlChangeCount = 0, certificateCount = 0, refusedChanges = 0
    /// Of `refusedChanges`: refused as dated ahead of the receiver's clock (`timestampInFuture`).
    public var refusedDatedAhead = 0
    /// Of `certificates` (not a part of its own): certificates the receiver had already verified when the
    /// frame left (from an earlier session with any peer), and their bytes.
    public var certificatesPeerHeld = 0, certificatesPeerHeldBytes: Int64 = 0
    /// Modelled sizes (`ChangeLog.size`, what the ideal epidemic charges) of the workload changes counted in
    /// `changesToReaders` and `changesToRelays`.
    public var modelBytesToReaders: Int64 = 0, modelBytesToRelays: Int64 = 0

    /// Creates an empty value.
    public init() {}

    /// The parts, named as in reports, in order; their sum is every batch byte that left a sender.
    public var parts: [(String, Int64)] {
        [("changes_to_readers", changesToReaders), ("changes_to_relays", changesToRelays),
         ("changes_to_non_carriers", changesToNonCarriers), ("changes_peer_already_held", changesPeerHeld),
         ("changes_refused_by_receiver", changesRefused),
         ("control_changes", controlChanges), ("certificates", certificates), ("fork_proofs", forkProofs),
         ("message_encoding", encoding), ("framing_length_and_aead", framing), ("cut_frames", cutFrames)]
    }

    /// The sum of `parts`.
    public var total: Int64 { parts.reduce(0) { $0 + $1.1 } }

    /// Adds (`sign` 1) or removes (`sign` -1) every part and count of `o`.
    mutating func add(_ o: BatchBytes, sign: Int64 = 1) {
        changesToReaders += sign * o.changesToReaders; changesToRelays += sign * o.changesToRelays
        changesToNonCarriers += sign * o.changesToNonCarriers; changesPeerHeld += sign * o.changesPeerHeld
        changesRefused += sign * o.changesRefused; refusedChanges += Int(sign) * o.refusedChanges
        refusedDatedAhead += Int(sign) * o.refusedDatedAhead
        controlChanges += sign * o.controlChanges; certificates += sign * o.certificates; forkProofs += sign * o.forkProofs
        encoding += sign * o.encoding; framing += sign * o.framing; cutFrames += sign * o.cutFrames
        let n = Int(sign)
        frames += n * o.frames; readerChanges += n * o.readerChanges; relayChanges += n * o.relayChanges
        nonCarrierChanges += n * o.nonCarrierChanges; peerHeldChanges += n * o.peerHeldChanges
        controlChangeCount += n * o.controlChangeCount; certificateCount += n * o.certificateCount
        certificatesPeerHeld += n * o.certificatesPeerHeld; certificatesPeerHeldBytes += sign * o.certificatesPeerHeldBytes
        modelBytesToReaders += sign * o.modelBytesToReaders; modelBytesToRelays += sign * o.modelBytesToRelays
    }
}

/// Runs the real `FieldSyncProtocol` (handshake, reconciliation, batches, verification, sealing) on
/// every node. See Simulator/README.md, "The fieldsync agent".
public final class FieldSyncAgent: SyncAgent {
    public typealias Message = FieldSyncFrame

    /// The wall clock at simulated time 0 (2024-06-01T00:00:00Z, ms since the Unix epoch). A session's
    /// `now` is this plus the node's local clock (`SimContext.localClock`).
    public static let epochMs: UInt64 = 1_717_200_000_000
    /// The network id in the handshake prologue.
    public static let network = NetworkParameters(networkID: "longnan-police")

    /// Sessions started (pairs), finished normally on both sides, failed or cut on either side.
    public private(set) var sessionsStarted = 0, sessionsFinished = 0, sessionsFailed = 0
    /// Changes written through `Replicator.write`, and writes the replicator refused.
    public private(set) var writes = 0, writeErrors = 0
    /// Sum of the real encoded sizes of the changes written (bytes).
    public private(set) var writtenBytes = 0
    /// Bytes that left a sender on a link, by `SessionFrameKind` raw value (a cut frame counts the bytes
    /// that had left, as the engine's totals do).
    public private(set) var bytesByKind = [Int64](repeating: 0, count: SessionFrameKind.allCases.count)
    /// The bytes of `bytesByKind[batch]` split by what they carry (`BatchBytes`).
    public private(set) var batchBytes = BatchBytes()
    /// `bytesByKind` with the kinds' names, in kind order.
    public var bytesByMessageType: [(String, Int64)] { SessionFrameKind.allCases.map { ($0.description, bytesByKind[$0.rawValue]) } }
    /// Session pairs that failed by error code of either side (cuts are `cut`), in code order.
    public private(set) var failures: [String: Int] = [:]
    /// The crypto mode of this run.
    public let crypto: CryptoMode
    /// The verification cache shared by every node (`cached` and `stand-in` modes).
    public let verificationCache: VerificationCache?
    /// Shares equal records between the nodes' stores (`cached` and `stand-in` modes).
    public let recordInterner: RecordInterner?
    private let certificateCache = CertificateCache()

    /// A revocation HQ wrote when a device was lost, and which nodes have learned it.
    public struct RevocationTrack {
        /// The lost node and device.
        public let node: NodeIndex, device: DeviceID
        /// When HQ wrote the revocation (the loss).
        public let at: SimTime
        /// Per node: when it learned the revocation (nil: not yet).
        public var learned: [SimTime?]
        /// The lost device's replicator as it was (a finder or thief holds it): for checking that
        /// nodes that learned the revocation refuse it.
        public let lostDevice: Replicator
        /// The revocation's cut-off (HQ's clock when it wrote it): the device's changes with a later HLC are
        /// refused and quarantined by every node that learns it (`TrustStore.isRevoked`).
        public var cutoff = HLCTimestamp(milliseconds: 0, counter: 0)
        /// The device's workload changes written before the revocation but dated after its cut-off (its clock ran
        /// ahead of HQ's), in change order: the trust rules condemn them too (`datedAfterCutoff`).
        public var datedAfter: [ChangeIndex] = []
    }
    /// Revocations of lost devices, in loss order.
    public private(set) var revocations: [RevocationTrack] = []
    private var pendingRevocations: [Int] = []  // indices into revocations not yet known everywhere
    /// Logs in no domain (HQ's root-scope revocations), in the order first seen: pushed with the touched
    /// domains' logs while a revocation is pending (`touched`).
    private var outsideLogs: [LogID] = []
    let authority: Authority
    /// Minimum time between two receipts HQ writes for the same station (nil: no receipts).
    public let receiptInterval: SimTime?
    private var receipts: ReceiptScheduler<Int32>  // when HQ writes each station's receipt (the node's timing)
    var controlLogs: [[LogID]] = []  // domain -> HQ's log in that station scope (key grants, receipts)
    private var authoredLogs: [[LogID]] = []  // node -> logs it writes
    private var receiptedAt: [[LogID: UInt64]] = []  // node -> own log -> receipted seq seen
    /// Per log: the highest seq a receipt HQ wrote names (HQ held the log up to there). Every node that holds
    /// the receipt may evict those changes under its quota: HQ must never lose them.
    public private(set) var hqReceipted: [LogID: UInt64] = [:]
    /// Receipts HQ wrote, and changes whose author learned from a receipt that HQ holds them.
    public private(set) var receiptsWritten = 0, changesReceiptedAtAuthor = 0
    /// Time from a change's creation until its author holds HQ's receipt for it (ms).
    public private(set) var receiptLatency = Histogram()
    let hqNode: NodeIndex?
    private let rootScope: Scope
    let seed: UInt64

    // MARK: Key grants and epoch rotation (FieldSyncAgent+Keys.swift; docs/simulator.md, "Key grants and epoch rotation")

    /// When HQ rotates epoch keys (after a revocation, on schedule).
    public let keyRotation: KeyRotation
    /// Every epoch rotation HQ issued, in issue order (the enrolment grants of epoch 1 are not rotations).
    public internal(set) var rotations: [RotationTrack] = []
    var pendingRotations: [Int] = []  // indices into rotations not yet held by every live member
    var dueRotations: [(at: SimTime, domain: Int32, revocation: Int)] = []  // rotations after a revocation waiting for their delay, by time
    var nextKeyEventAt: SimTime = .max  // the earliest due rotation (after a revocation or on schedule); .max: none
    var lastIssuedAt: [SimTime] = []  // domain -> when HQ issued its newest epoch (scheduled rotation counts from it)
    var newestEpoch: [UInt32] = []  // domain -> the newest epoch issued
    var latestRotation: [Int32] = []  // domain -> its newest rotation (index into rotations), -1 none
    var exposureCap: [UInt32] = []  // domain -> the newest epoch a device revoked since holds (0: none)
    var exposureRevocation: [Int32] = []  // domain -> the revocation whose exposure later writes count to, -1 none
    /// Per revocation: changes of the revoked device's scopes its honest members wrote after the revocation
    /// sealed under an epoch the revoked device holds (before the rotation was issued, and after it by
    /// members that had not received the new grant yet).
    public internal(set) var exposedBeforeRotation: [Int] = [], exposedAfterRotation: [Int] = []
    var revokedKeyCap: [(node: NodeIndex, domain: Int32, epoch: UInt32)] = []  // the newest epoch each revoked device may hold
    var enrolled: [Certificate] = []  // node -> its certificate (the authority's registry: `epoch-key rotate --member`)
    var nodeOfDevice: [DeviceID: NodeIndex] = [:]  // (lookup only)
    var grantRandom: SimRandom  // epoch keys of rotations and the grants' sealed-box ephemeral seeds
    var grantSeqs: [LogID: [UInt64]] = [:]  // HQ's station log -> the seqs that are grants (lookup only)
    /// Enrolment grants written (one per station) and their encoded bytes; grants of rotations and their bytes;
    /// grant changes in batch frames that left a sender, and their bytes (a subset of `batchBytes.controlChanges`).
    public internal(set) var enrolmentGrants = 0, enrolmentGrantBytes = 0, rotationGrantBytes = 0, grantCopiesSent = 0, grantBytesSent: Int64 = 0

    // MARK: Adversaries (`AdversaryConfig`; docs/simulator.md, "Issue 14: adversaries")

    /// The adversaries of this run (empty: none).
    public let adversaries: AdversaryConfig
    /// When they start (simulated time).
    public let adversaryStart: SimTime
    /// The node playing each adversary (nil: not in this run).
    public private(set) var revokedNode: NodeIndex?, equivocatorNode: NodeIndex?, badRelayNode: NodeIndex?, flooderNode: NodeIndex?
    private var advRandom: SimRandom
    /// Revoked device: when HQ revoked it (nil: not yet) and the revocation's cut-off (HQ's clock, ms).
    public private(set) var revokedAt: SimTime?, revokedCutoff: UInt64?
    /// Revoked device: session pairs with it started after its revocation; of them, those its peer
    /// authenticated (the peer had not learned the revocation: the device got a session) and those its peer
    /// refused as `revoked`.
    public private(set) var revokedPairs = 0, revokedPairsAuthenticated = 0, revokedPairsRefused = 0
    /// Revoked device: changes it wrote after its revocation, and (node, change) acceptances of them by
    /// nodes that had not learned the revocation (the exposure window).
    public private(set) var revokedChangesWritten = 0, revokedChangesAccepted = 0
    /// An equivocation: the log and seq at which the device signed two changes, the other change's tag,
    /// when, and per node when its store first held a fork proof of that log.
    public struct Equivocation {
        /// The log and the contested seq.
        public let log: LogID, seq: UInt64
        /// The first 8 bytes of the id of the change of the other branch (the copy's).
        public let otherTag: UInt64
        /// When the device signed the two changes.
        public let at: SimTime
        /// Per node: when its store first held a fork proof for the log (nil: never).
        public var proofAt: [SimTime?]
        /// The first honest node that held a proof, and when.
        public var firstDetection: (node: NodeIndex, at: SimTime)?
    }
    /// The equivocation of this run (nil: none yet).
    public private(set) var equivocation: Equivocation?
    private var twin: Replicator?  // the equivocator's second replicator (same identity, the other branch)
    private var twinTurn = false
    /// Per node: a session of it refused a change of the equivocator's log as `forked`.
    public private(set) var refusedForked: [Bool] = []
    /// Per change: written by an adversary in a way no honest node may take (the revoked device after its
    /// revocation; the equivocator from its fork on). Left out of the delivery and divergence checks.
    private var adversarialChange: [Bool] = []
    /// Bad relay: frames it dropped, old frames it replayed, frames it held and their total hold (ms).
    public private(set) var relayDropped = 0, relayReplayed = 0, relayHeld = 0, relayHeldMs: Int64 = 0
    private var relayRecorded: [(bytes: [UInt8], kind: SessionFrameKind)] = []
    private var relayStash: [Int: FieldSyncFrame] = [:]  // slot * 2 + side -> frame to send after a replay (lookup only)
    /// Flooder: extra changes written, their encoded bytes, session pairs it closed to reopen.
    public private(set) var floodWrites = 0, floodBytes = 0, floodRestarts = 0
    private var nextFloodAt: SimTime
    private var nextRevokedWriteAt: SimTime
    private var floodCount: UInt64 = 0
    private var advRestartAt: [SimTime?] = []  // per slot: an adversary's forced (re)start of the pair
    private var revokedWatch: [Bool] = []  // per slot: the pair is the revoked device's, after its revocation

    let ctx: SimContext
    private var rng: SimRandom
    var replicators: [Replicator?] = []
    private var scopes: [Scope] = []  // node -> certificate scope
    private var placeScopes: [Scope?] = []  // place -> its scope, parsed once (`scope(of:)`)
    var domainScopes: [Scope] = []
    private var held: [HeldChanges] = []  // node -> change -> hops
    private var changeDomains: ChangeDomainIndex!  // positions of changes in their domains, for `held`
    var seen: [[LogID: HeldIntervals]] = []  // node -> log -> holdings already reported (lookup only)
    private var ownLogIDs: Set<LogID> = []  // `sharedLogID` without an interner
    private var changeOf: [LogID: [ChangeIndex]] = [:]  // log -> change per seq - 1 (lookup only)
    private var writtenTag: [UInt64] = []  // change -> first 8 bytes of the id its author's store gave it
    private var writtenSize: [Int32] = []  // change -> its encoded size (bytes; accounting of refusals)
    private var domainLogs: [[LogID]] = []  // domain -> logs in creation order
    /// Log -> its domain and its place in `domainLogs` (index ≥ 0) or `controlLogs` (-1 - index).
    var logPlace: [LogID: (domain: Int32, index: Int32)] = [:]
    private var statusCount: [Int64: Int] = [:]  // incident -> status edits written (lookup only)
    private var active: [[Int32]] = []  // node -> active slots
    // Per slot.
    private var sessions: [[SimSide?]] = []
    private var links: [LinkHandle?] = []
    private var timerAt: [SimTime?] = []  // the earliest timer pending on the slot
    private var sessionGen: [UInt32] = []  // per slot: the current session pair's number
    /// The driver policy every node runs (the node's defaults; HQ's receipt interval from the scenario).
    public let policy: DriverPolicy
    /// Per node: the node's driver (`SyncDriver`), its peers keyed by node index. A contact's session
    /// pair is opened by its `a` side, so the `a` node's driver decides when (sync on contact, push
    /// debounce, resync, jittered backoff after a failure, reconnect after a live session ends).
    private var drivers: [SyncDriver<NodeIndex>] = []
    /// Per node: the seed of its driver's backoff jitter.
    public let driverSeeds: [UInt64]
    /// Node `node`'s driver inputs and decisions so far (empty unless created with `traceDrivers`); its
    /// clock is the node's local clock in ms since the Unix epoch.
    public func driverTrace(of node: NodeIndex) -> [SyncDriver<NodeIndex>.Step] { drivers[Int(node)].trace }
    private var peerSlot: [[NodeIndex: Int32]] = []  // node -> peer it drives a contact to -> slot (lookup only)
    private var refused: [[RefusedRetry]] = []  // per slot and side: when a live session that refused changes closes
    private var closing: [LiveCloseReason?] = []  // per slot: the live pair closes once idle, for this reason
    private var lastTraffic: [SimTime] = []  // per slot: when a frame last left or arrived
    private var lastSent: [SimTime] = []  // per slot and side (2 * slot + side): when that side's last frame left
    private var lastHeard: [SimTime] = []  // per slot and side: when that side last handled a whole frame (`framesReceived` grew)
    private var pairFailed: [Bool] = []  // per slot: the last pair failed (the next start is a reconnect)
    private var pairWentLive: [Bool] = []  // per slot: the `a` side's session went live (its driver was told)
    private var stallWatch: [Bool] = []  // per slot: a corrupted frame reached the pair (it may stall)
    /// A node cuts a session after this long without bytes either way (`FieldSyncNode`'s `idleTimeout`,
    /// config `sessions.idleTimeoutSeconds`, default 30 s). The agent applies it to pairs that are not live
    /// and received a corrupted frame: a bit flipped in a length prefix that makes the frame longer leaves
    /// the receiver waiting for bytes its peer never sends, and the peer waiting for an answer. Without
    /// it such a pair stayed open for the rest of the contact, which on an always-up wired link is the
    /// rest of the run (found by the fault swarm: `SwarmTests.corruptedLengthPrefixDoesNotStallALink`).
    /// A live pair is cut by it too while a side waits for the rest of a frame (`SyncSession.receivingFrame`:
    /// the node exempts an idle live session only when no frame is begun; finding 2 of the swarm,
    /// `SwarmTests.corruptedFrameOnALiveSessionIsCut`).
    public static let sessionIdleTimeout: SimTime = 30_000
    /// Session pairs started again after a failure on a contact that stayed up (the driver's backoff).
    public private(set) var reconnects = 0
    /// A session pair the link faults killed: the engine injected a fault into one of its frames (duplicated,
    /// corrupted or reordered: each closes a Noise session, whose nonces count frames) and it failed within
    /// `faultKillWindow` of the first, and the stretch of its contact it stood for: from the end of the pair
    /// before it (or the contact's start) to the start of the next pair (or the contact's end), each end at most
    /// `driverWait` from the pair. Anything that reached `a` or `b` in that stretch had only this pair to cross the
    /// contact, and the faults killed it; the swarm's checks take these stretches out of the oracle's contacts
    /// (`Swarm.checkedContacts`). What stays in is the protocol's to use: a pair that failed for another reason or
    /// lingered after the fault (a stall: a session must notice a broken frame within its idle timeout), contact
    /// time on which the driver opened no pair, and a wait longer than its policy's (a driver that stopped retrying).
    public struct FaultKilledPair: Sendable, Equatable {
        /// The contact's ends and link class.
        public var a: NodeIndex, b: NodeIndex, linkClass: LinkClass
        /// The stretch of the contact (sim time).
        public var from: SimTime, to: SimTime
    }
    /// The session pairs the link faults killed, in the order they ended.
    public private(set) var faultKilledPairs: [FaultKilledPair] = []
    /// A failed pair counts as killed by a fault if it ended within this of the first fault that reached it (twice
    /// the idle timeout that cuts a pair left waiting for the rest of a frame whose length prefix a flip made longer).
    public static let faultKillWindow: SimTime = 2 * sessionIdleTimeout
    /// Whether a pair that ended at `endedAt` (`finished`: both sides finished) counts as killed by the link faults,
    /// the first of which reached it at `faultAt` (nil: none did).
    public static func killedByFault(finished: Bool, faultAt: SimTime?, endedAt: SimTime) -> Bool {
        guard !finished, let f = faultAt else { return false }
        return endedAt - f <= faultKillWindow
    }
    /// The longest the driver waits between pairs on a contact (a retry after a failure, `backoffMax`, or a resync
    /// after a finished pair, `resyncInterval`, and one tick): the most a killed pair's stretch reaches either side.
    public var driverWait: SimTime { SimTime(max(policy.schedule.backoffMax, policy.schedule.resyncInterval) + policy.schedule.tick) }
    private var pairFaultAt: [SimTime] = []  // per slot: when the first injected link fault reached the current pair (-1: none)
    private var pairStartAt: [SimTime] = []  // per slot: when the current pair started
    private var stretchStart: [SimTime] = []  // per slot: when the last pair ended, or the contact came up
    private var openKilled: [Int32] = []  // per slot: the `faultKilledPairs` entry waiting for the next pair's start (-1: none)
    /// Live pairs closed so that changes refused on them (dated ahead of the receiver's clock, or refused by
    /// its store) are offered again by a new reconciliation (`RefusedRetry`).
    public private(set) var deferredRetries = 0
    /// Live pairs closed after `DriverPolicy.liveIdle` without traffic (the next session reconciles anew).
    public private(set) var idleCloses = 0
    /// Keep-alives sent on live sessions (`DriverPolicy.liveKeepAlive`), both sides together.
    public private(set) var keepAlivesSent = 0
    /// How a session pair ended (`pairEnds`).
    public enum PairEnd: Int, CaseIterable, Sendable, CustomStringConvertible {
        /// Both sessions ended by themselves, normally (a one-shot pair's `done`).
        case finished
        /// Both sessions ended by themselves and one failed (its code is in `failures`).
        case failed
        /// The driver closed the live pair after `DriverPolicy.liveIdle` without traffic.
        case idle
        /// The driver closed the live pair to offer refused changes again (`RefusedRetry`).
        case refusedRetry
        /// The contact ended (the engine cut the link: out of range, outage, crash, loss) with the pair open.
        case contactEnded
        /// A side heard nothing from its peer for `KeepAlivePolicy.deadAfter` and cut the connection.
        case peerGone
        /// A pair that was not live, or was live with a side waiting for the rest of a frame, had no traffic
        /// either way for `sessionIdleTimeout` and was cut (the node's idle timeout; only after a corrupted
        /// frame, the one way a pair stalls in the model).
        case idleTimeout
        /// An adversary (`AdversaryConfig.flooder`) closed the pair to open a new one (only in runs with
        /// adversaries; left out of the outputs when 0).
        case adversaryRestart

        /// Name used in outputs.
        public var description: String {
            switch self {
            case .finished: "finished"
            case .failed: "failed"
            case .idle: "idle_close"
            case .refusedRetry: "refused_retry_close"
            case .contactEnded: "contact_ended"
            case .peerGone: "peer_gone_cut"
            case .idleTimeout: "idle_timeout_cut"
            case .adversaryRestart: "adversary_restart"
            }
        }
    }
    /// Session pairs started, per link class (`LinkClass` raw value).
    public private(set) var pairsStartedByLink = [Int](repeating: 0, count: LinkClass.allCases.count)
    /// Session pairs ended, per link class and `PairEnd` raw value.
    public private(set) var pairEnds = [[Int]](repeating: [Int](repeating: 0, count: PairEnd.allCases.count),
                                               count: LinkClass.allCases.count)
    /// Whether sessions stay open for the whole contact (live mode, `SessionConfiguration.live`): later
    /// changes travel on the open session (`SyncSession.push`). When false, each burst of new changes
    /// on a contact starts a new session (handshake and reconciliation again).
    public let liveSessions: Bool
    /// Sessions send their `clock` (`SessionConfiguration.announcesClock`, Protocols/sync.md §4.3), so that
    /// senders hold back changes dated ahead of the receiver's clock. Off: the behaviour before 2026-12-05
    /// (such changes are sent, refused and sent again by later sessions).
    public let announcesClock: Bool
    /// Changes sessions delivered that the receiving store already held, and changes it refused (relay
    /// quota, held-back limit).
    public private(set) var duplicatesReceived = 0, refusedReceived = 0
    /// Pushes of new changes on live sessions.
    public private(set) var livePushes = 0

    // MARK: Crashes and store durability (docs/simulator.md, "Power loss")

    /// Which node classes run their store with `synchronous = NORMAL`, and their checkpoints.
    public let durability: StoreDurability
    private var durablePoints: [DurablePoint?] = []  // per node: its `normal` store's last durable point (nil: FULL)
    private var headGuards: [MemoryHeadGuard] = []  // per node: the seq guard (a synced file beside the keystore: survives every crash)
    private var baseTrust: TrustStore  // the keystore's trust anchors, what a node starts from
    private let traceDrivers: Bool
    /// Crashes (every one restarts the node from its store), power losses of `normal` stores among them, the
    /// commits and changes those lost, and revocations a node had learned and forgot with the commits it lost.
    public private(set) var crashes = 0, powerLosses = 0, commitsLost = 0, changesLost = 0, revocationsForgotten = 0
    /// Held changes nodes quarantined when they learned a revocation (dated after its cut-off), and those among
    /// them that were not (must stay 0: a change an honest store should hold never leaves it).
    public private(set) var quarantinedForRevocation = 0, quarantinedBeforeCutoff = 0
    /// Per node: changes it held and lost on a power loss and does not hold again, with when (lookup only; read
    /// in sorted order). Its readers were counted when they first received the change: one that comes back is
    /// not counted again.
    private var lostToPower: [[ChangeIndex: SimTime]] = []
    /// Per change: how many nodes came to hold it (once per node: one that gets it back after losing it is
    /// not counted again), and how many of those lost it since (power loss not made good yet, device loss,
    /// revoked quarantine). Every other way of losing a change is a bug: the end of a swarm run checks that
    /// the live stores hold each change exactly `holders - losses` times (`Swarm.durabilityCheck`).
    private var holderCount: [Int32] = [], lossCount: [Int32] = []
    /// With `normal` stores only: per node, when it last came to hold each change (lookup only), and per change
    /// whether any node lost it on a power loss (the delivery check's paths then start at its holders).
    private var acquiredAt: [[ChangeIndex: SimTime]] = []
    private var powerLosers: [ChangeIndex: [NodeIndex]] = [:]  // change -> nodes that lost it on a power loss (lookup only)
    /// Called on the store of a `FULL` node at each of its crashes, before the node restarts from it (tests
    /// only: a planted loss must make the run report an invariant violation).
    public var plantLossOnCrash: ((MemoryStore) -> Void)?
    /// Per node: down (crashed, not restarted yet). See `FieldSyncAgent+Faults.swift`.
    var nodeDown: [Bool] = []
    /// Devices reported lost while HQ was down, with their replicators: HQ revokes them when it is back.
    var lossReportsWhileHQDown: [(NodeIndex, Replicator)] = []
    /// Changes relay boxes refused for quota (`ChangeRefusal.quota`).
    public internal(set) var relayQuotaRefusals = 0
    /// Per workload change: the relay boxes whose store refused it for room, each with the time from which its store
    /// was in the state of its first refusal (`relayStoreSince`; lookup only).
    private var quotaRefused: [ChangeIndex: [(node: NodeIndex, at: SimTime)]] = [:]
    /// The same for HQ's key grant changes, per (HQ's station log, seq) (lookup only).
    var grantQuotaRefused: [LogID: [UInt64: [(node: NodeIndex, at: SimTime)]]] = [:]
    /// Per workload change: the relay boxes whose store evicted its bytes to make room, with the time (lookup only).
    var quotaEvicted: [ChangeIndex: [(node: NodeIndex, at: SimTime)]] = [:]
    /// Per node (relay boxes with a quota): when its store last changed what a quota decision depends on (a change
    /// stored, evicted or quarantined, a power loss), and the changes it held then (`MemoryStore.Snapshot.changes`).
    var relayStoreChangedAt: [SimTime] = []
    var relayStoreCount: [Int] = []
    /// Crashes of HQ, county and station nodes (`faults.crashesPerInfraYear`).
    public private(set) var infraCrashes = 0

    /// Name used in outputs.
    public var name: String { "fieldsync" }

    /// Enrols every node of `context.world` with a simulated HQ authority (keys derived from `seed`) and
    /// gives each reader of a station scope that scope's epoch key directly (key-grant distribution is
    /// not simulated). Roles: HQ `hq` on the root scope; county `county`; station `station`; backpack
    /// `backpack` on its station; vehicle `command` on its county; relay `relay` on its village with no
    /// keys; a generic peer `station` on the single domain.
    /// - Parameter traceDrivers: keep every node driver's inputs and decisions (`driverTrace(of:)`), for
    ///   comparing them with the node daemon's driver fed the same inputs.
    public init(context: SimContext, seed: UInt64, crypto: CryptoMode = .real, receiptInterval: SimTime? = nil,
                liveSessions: Bool = true, traceDrivers: Bool = false, announcesClock: Bool = true,
                adversaries: AdversaryConfig = AdversaryConfig(), adversaryStart: SimTime = 0,
                durability: StoreDurability = StoreDurability(), keyRotation: KeyRotation = KeyRotation(),
                verificationCacheLimit: Int = 65_536) {
        ctx = context
        self.keyRotation = keyRotation
        grantRandom = SimRandom(seed: seed, 0x6B65_7901)
        self.durability = durability
        self.traceDrivers = traceDrivers
        self.seed = seed
        self.adversaries = adversaries
        self.adversaryStart = adversaryStart
        advRandom = SimRandom(seed: seed, 0xADE5_0001)
        nextFloodAt = adversaryStart
        nextRevokedWriteAt = adversaryStart
        self.crypto = crypto
        self.liveSessions = liveSessions
        self.announcesClock = announcesClock
        self.receiptInterval = receiptInterval
        verificationCache = crypto == .real ? nil : VerificationCache(limit: verificationCacheLimit)
        recordInterner = crypto == .real ? nil : RecordInterner()
        rng = SimRandom(seed: seed, 0x5EED_F5A6)
        var policy = DriverPolicy()
        policy.receipts.minInterval = receiptInterval.map { UInt64(max(0, $0)) } ?? 0
        self.policy = policy
        receipts = ReceiptScheduler(policy: policy.receipts)
        let w = context.world
        var seeds = SimRandom(seed: seed, 0xD21F_E500)
        driverSeeds = (0..<w.count).map { _ in UInt64(seeds.int(Int.max)) }
        drivers = driverSeeds.map { SyncDriver(policy: policy.schedule, seed: $0, tracing: traceDrivers) }
        peerSlot = Array(repeating: [:], count: w.count)
        var keyRng = SimRandom(seed: seed, 0xC0FF_EE01)
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(keyRng.int(256)) } }
        let root = try! Ed25519.SecretKey(seed: SecretBytes(copying: bytes(32)))
        let authority = Authority(root: root)
        self.authority = authority
        let hq = (0..<w.count).first { w.nodes[$0].nodeClass == .hq }
        hqNode = hq.map { NodeIndex($0) }
        rootScope = try! Scope(hq.map { w.nodes[$0].scope } ?? w.domainNames[0])
        let trust = TrustStore(root: root.publicKey)
        baseTrust = trust
        domainScopes = w.domainNames.map { try! Scope($0) }
        // The epoch-1 keys (drawn here, before the devices' keys, as before grants were simulated).
        let keys = domainScopes.map { try! EpochKey(scope: $0, epoch: 1, key: SecretBytes(copying: bytes(32))) }
        domainLogs = Array(repeating: [], count: w.domainCount)
        for n in 0..<w.count {
            let node = w.nodes[n]
            let role: Role = switch node.nodeClass {
            case .hq: .hq
            case .county: .county
            case .station, .peer: .station
            case .backpack: .backpack
            case .vehicle: .command
            case .relay: .relay
            }
            let scope = try! Scope(node.scope)
            let sk = try! Ed25519.SecretKey(seed: SecretBytes(copying: bytes(32)))
            let xk = try! X25519.SecretKey(secret: SecretBytes(copying: bytes(32)))
            let req = try! EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role,
                                             requestedScopes: [scope], createdAt: Self.epochMs, label: node.name)
            let cert = try! authority.enroll(req, role: role, scopes: [scope], notBefore: Self.epochMs - Duration.day.asMs,
                                             notAfter: Self.epochMs + 400 * Duration.day.asMs, serial: UInt64(n + 1))
            // A relay box's quota goes through the store's limits, as the node's `relay.quotaBytes` does (`DeviceOpening`).
            let quota = node.nodeClass == .relay ? durability.relayQuotaBytes : nil
            let store = MemoryStore(limits: StoreLimits(quotaBytes: quota), recordInterner: recordInterner,
                                    keepsArrivals: false)  // no one here reads arrivals (node reports do)
            let r = Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert), trust: trust, store: store)
            r.verificationCache = verificationCache
            let headGuard = MemoryHeadGuard()
            r.headGuard = headGuard
            headGuards.append(headGuard)
            durablePoints.append(durability.isNormal(node.nodeClass) ? DurablePoint(store, every: durability.checkpointEveryCommits) : nil)
            r.sealingRandomness = SimRandom(seed: seed, 0x50D1_0000, UInt64(n)).rng  // same seed, same sealed bytes
            replicators.append(r)
            enrolled.append(cert)
            nodeOfDevice[cert.subject] = NodeIndex(n)
            scopes.append(scope)
        }
        // Nodes learn authors' certificates from the batches that carry their changes (a session sends
        // the certificate of every author it sends changes of, whether or not the peer knows it).
        held = w.carried.map { HeldChanges(carried: $0.count) }
        changeDomains = ChangeDomainIndex(domainCount: w.domainCount) { [unowned changes = ctx.changes] in changes.domain }
        seen = Array(repeating: [:], count: w.count)
        lostToPower = Array(repeating: [:], count: w.count)
        acquiredAt = Array(repeating: [:], count: durability.normal.isEmpty ? 0 : w.count)
        controlLogs = Array(repeating: [], count: w.domainCount)
        authoredLogs = Array(repeating: [], count: w.count)
        receiptedAt = Array(repeating: [:], count: w.count)
        nodeDown = Array(repeating: false, count: w.count)
        relayStoreChangedAt = Array(repeating: 0, count: w.count)
        active = Array(repeating: [], count: w.count)
        refusedForked = Array(repeating: false, count: w.count)
        enrolmentGrants(keys)
        relayStoreCount = (0..<w.count).map { (replicators[$0]?.store as? MemoryStore)?.snapshot().changes ?? 0 }
        if !adversaries.isEmpty {  // drawn from their own generator: the honest run's draws are unchanged
            var pool = (0..<w.count).filter { w.nodes[$0].nodeClass == .backpack }
            func pick() -> NodeIndex? { pool.isEmpty ? nil : NodeIndex(pool.remove(at: advRandom.int(pool.count))) }
            if adversaries.revoked { revokedNode = pick() }
            // The equivocator is the first backpack unit that writes after the start (`changeCreated`): one drawn
            // at random may write nothing in a short run.
            if adversaries.flooder { flooderNode = pick() }
            // The bad relay is the first relay box that meets anyone after the start (`contactStarted`): one drawn
            // at random may sit at a village no patrol visits in the run.
        }
    }

    /// The frame's byte count.
    public static func wireSize(of message: FieldSyncFrame) -> Int { message.bytes.count }
    /// Handshake frames are `.summary`, the rest `.control` (the type is encrypted).
    public static func messageType(of message: FieldSyncFrame) -> MessageType { message.type }
    /// Batches are encrypted and may carry many changes: never one identifiable change.
    public static func change(in message: FieldSyncFrame) -> ChangeIndex? { nil }

    /// The replicator of `node` (nil once the node is lost).
    public func replicator(at node: NodeIndex) -> Replicator? { replicators[Int(node)] }

    func wall(_ node: NodeIndex, _ now: SimTime) -> UInt64 {
        UInt64(max(0, Int64(Self.epochMs) + ctx.localClock(node, at: now)))
    }

    // MARK: Writing

    /// The scope of change `c`'s record, hence its log: the village's when the world names village scopes
    /// (`World.placeScopes`: what a real node writes, one log per author and village), else the station's.
    private func scope(of c: ChangeIndex) -> Scope {
        let place = Int(ctx.changes.place[Int(c)])
        guard place >= 0, place < ctx.world.placeScopes.count else { return domainScopes[Int(ctx.changes.domain[Int(c)])] }
        if placeScopes.count <= place { placeScopes += repeatElement(nil, count: ctx.world.placeScopes.count - placeScopes.count) }
        if let s = placeScopes[place] { return s }
        let s = try! Scope(ctx.world.placeScopes[place])
        precondition(domainScopes[Int(ctx.changes.domain[Int(c)])].contains(s), "village scope \(s) outside its station")
        placeScopes[place] = s
        return s
    }

    private func edit(for c: ChangeIndex, scope: Scope, author: DeviceID, wall: UInt64) -> (RecordEdit, Priority) {
        let i = Int(c)
        let ch = ctx.changes
        let hlc = HLCTimestamp(milliseconds: wall, counter: 0)
        let zh = { (n: Int) in String(repeating: "警", count: n) }
        let loc = Location(latitude: 33.412345, longitude: 104.951234)
        let sp = ch.priority[i]
        let pr: Priority = switch sp {
        case .urgent: .urgent
        case .high: .high
        case .normal: .normal
        case .low, .none: .low
        }
        let subject = ch.subject[i] >= 0 ? ch.subject[i] : Int64(i)
        let incidentID = RecordID(ID128(high: 0x1C1D_0000_0000_0000, low: UInt64(bitPattern: subject)))
        switch ch.changeClass[i] {
        case .incidentCreate:
            let deadline = ch.deadline[i] >= 0 ? Int64(Self.epochMs) + ch.deadline[i] : nil
            return (Incident.create(id: incidentID, scope: scope, author: author, hlc: hlc, category: .dispute, priority: pr,
                                    location: loc, summary: zh(60), reportedAt: Int64(wall), reporter: zh(4),
                                    feedbackDeadline: deadline, notes: [zh(40)]), pr)
        case .incidentStatus:
            let k = statusCount[subject, default: 0]
            statusCount[subject] = k + 1
            let status: Incident.Status = k == 0 ? .dispatched : k == 1 ? .onScene : .resolved
            return (RecordEdit(record: incidentID, kind: .incident, scope: scope, author: author, hlc: hlc, creates: false,
                               actions: [Incident.statusAction(generation: 0, status)]), pr)
        case .incidentFeedback:
            return (RecordEdit(record: incidentID, kind: .incident, scope: scope, author: author, hlc: hlc, creates: false,
                               actions: [.set(field: Incident.Field.feedback, value: .string(zh(50))),
                                         Incident.statusAction(generation: 0, .closed)]), pr)
        case .visit, .message:
            let id = RecordID(ID128(high: 0x7151_7000_0000_0000, low: UInt64(i)))
            return (Visit.create(id: id, scope: scope, author: author, hlc: hlc, subject: zh(3), visitor: zh(3),
                                 visitType: .returningMigrantWorker, visitedAt: Int64(wall), location: loc,
                                 outcome: zh(50)), .low)
        }
    }

    /// Writes a real incident or visit edit through the author's `Replicator.write` (signed, sealed
    /// with the station's epoch key, committed to its `MemoryStore`), then resyncs its live contacts.
    public func changeCreated(_ change: ChangeIndex, at node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        if now >= nextKeyEventAt { keysTick(now: now, effects: &effects) }
        if !adversaries.isEmpty { adversaryTick(now: now, effects: &effects) }
        guard let r = replicators[Int(node)] else { return }
        let t = wall(node, now)
        let sc = scope(of: change)
        let (e, p) = edit(for: change, scope: sc, author: r.identity.id, wall: t)
        if !adversaries.isEmpty {
            if adversaries.equivocator, equivocatorNode == nil, now >= adversaryStart, ctx.world.nodes[Int(node)].nodeClass == .backpack,
               node != revokedNode, node != flooderNode { equivocatorNode = node }
            if node == equivocatorNode, equivocation == nil, now >= adversaryStart { equivocate(r, scope: sc, change: change, now: now, effects: &effects) }
            let bad = (node == revokedNode && revokedAt != nil) || (node == equivocatorNode && equivocation != nil)
            if bad {
                if adversarialChange.count <= Int(change) { adversarialChange.appendGrowingByAnEighth(contentsOf: repeatElement(false, count: Int(change) + 1 - adversarialChange.count)) }
                adversarialChange[Int(change)] = true
                if node == revokedNode { revokedChangesWritten += 1 }
            }
        }
        do {
            let c = try r.write([e], scope: sc, priority: p, now: t)
            let log = LogID(author: r.identity.id, scope: sc)
            if changeOf[log] == nil {
                let d = ctx.changes.domain[Int(change)]
                logPlace[log] = (d, Int32(domainLogs[Int(d)].count))
                domainLogs[Int(d)].append(log)
                authoredLogs[Int(node)].append(log)
            }
            changeOf[log, default: []].append(change)
            precondition(changeOf[log]!.count == Int(c.header.seq), "log sequence out of step: \(ctx.world.nodes[Int(node)].name) \(log) seq \(c.header.seq), \(changeOf[log]!.count) written")
            if writtenTag.count <= Int(change) { writtenTag.appendGrowingByAnEighth(contentsOf: repeatElement(0, count: Int(change) + 1 - writtenTag.count)) }
            writtenTag[Int(change)] = Self.tag(try r.store.hash(log, seq: c.header.seq))
            if writtenSize.count <= Int(change) { writtenSize.appendGrowingByAnEighth(contentsOf: repeatElement(0, count: Int(change) + 1 - writtenSize.count)) }
            writtenSize[Int(change)] = Int32(c.encodedBytes.count)
            setHeld(node, change, 0)
            if holderCount.count <= Int(change) {
                holderCount.appendGrowingByAnEighth(contentsOf: repeatElement(0, count: Int(change) + 1 - holderCount.count))
                lossCount.appendGrowingByAnEighth(contentsOf: repeatElement(0, count: Int(change) + 1 - lossCount.count))
            }
            holderCount[Int(change)] += 1
            if !acquiredAt.isEmpty { acquiredAt[Int(node)][change] = now }
            seen[Int(node)][log, default: HeldIntervals()].insert(c.header.seq)
            writes += 1
            writtenBytes += c.encodedBytes.count
            let d = ctx.changes.domain[Int(change)]
            if newestEpoch[Int(d)] > 1 || exposureCap[Int(d)] > 0 { noteSealed(c, domain: d, by: node) }
            touched(node, domains: [ctx.changes.domain[Int(change)]], moved: [log], except: -1, now: now, effects: &effects)
        } catch {
            writeErrors += 1
        }
    }

    // MARK: Sessions

    private func ensureSlot(_ slot: Int32) {
        while sessions.count <= Int(slot) {
            sessions.append([nil, nil])
            links.append(nil)
            timerAt.append(nil)
            sessionGen.append(0)
            refused.append([])
            closing.append(nil)
            lastTraffic.append(0)
            lastSent += [0, 0]
            lastHeard += [0, 0]
            pairFailed.append(false)
            pairWentLive.append(false)
            stallWatch.append(false)
            advRestartAt.append(nil)
            revokedWatch.append(false)
            pairFaultAt.append(-1)
            pairStartAt.append(0)
            stretchStart.append(0)
            openKilled.append(-1)
        }
    }

    private func salt() -> [UInt8] { (0..<16).map { _ in UInt8(rng.int(256)) } }

    /// The session's handshake, its ephemeral key drawn from the seeded generator (same seed, same bytes).
    private func handshake(_ r: Replicator, initiator: Bool) -> any SessionHandshaking {
        let ephemeral = (0..<32).map { _ in UInt8(rng.int(256)) }
        guard crypto == .standIn else {
            return SessionHandshake(initiator: initiator, identity: r.identity, trust: r.trust, network: Self.network,
                                    ephemeral: try! X25519.SecretKey(secret: SecretBytes(copying: ephemeral)))
        }
        return StandInHandshake(initiator: initiator, identity: r.identity, trust: r.trust, network: Self.network,
                                certificates: certificateCache, ephemeral: ephemeral)
    }

    private func configuration() -> SessionConfiguration {
        var c = SessionConfiguration(network: Self.network, salt: salt())
        c.live = liveSessions
        c.announcesClock = announcesClock
        return c
    }

    private func startSessions(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        guard var ra = replicators[Int(link.spec.a)], var rb = replicators[Int(link.spec.b)] else { return }
        if !adversaries.isEmpty, isAdversary(link.spec.a) || isAdversary(link.spec.b) {
            // An adversary's pair may be (re)started outside the driver: never over one that is open.
            if sessions[s][0] != nil || sessions[s][1] != nil { return }
            if let tw = twin {  // the equivocator shows its peers the two branches in turn
                if link.spec.a == equivocatorNode || link.spec.b == equivocatorNode {
                    twinTurn.toggle()
                    if twinTurn { if link.spec.a == equivocatorNode { ra = tw } else { rb = tw } }
                }
            }
            if revokedAt != nil, link.spec.a == revokedNode || link.spec.b == revokedNode {
                revokedWatch[s] = true
                revokedPairs += 1
            }
            if link.spec.a == flooderNode || link.spec.b == flooderNode, now >= adversaryStart {
                advRestartAt[s] = now + SimTime(adversaries.floodSessionSeconds * 1_000)
                setTimer(link, at: advRestartAt[s]!, effects: &effects)
            }
            relayStash[2 * s] = nil
            relayStash[2 * s + 1] = nil
        }
        sessions[s][0] = SimSide(SyncSession(initiator: true, replicator: ra, configuration: configuration(),
                                             now: wall(link.spec.a, now), handshake: handshake(ra, initiator: true)))
        sessions[s][1] = SimSide(SyncSession(initiator: false, replicator: rb, configuration: configuration(),
                                             now: wall(link.spec.b, now), handshake: handshake(rb, initiator: false)))
        refused[s] = [RefusedRetry(retryAfter: policy.refusedRetry), RefusedRetry(retryAfter: policy.refusedRetry)]
        closing[s] = nil
        lastTraffic[s] = now
        for k in 2 * s...2 * s + 1 {
            lastSent[k] = now
            lastHeard[k] = now
        }
        pairWentLive[s] = false
        stallWatch[s] = false
        pairFaultAt[s] = -1
        pairStartAt[s] = now
        if openKilled[s] >= 0 {
            faultKilledPairs[Int(openKilled[s])].to = min(faultKilledPairs[Int(openKilled[s])].to, now)
            openKilled[s] = -1
        }
        if pairFailed[s] {
            pairFailed[s] = false
            reconnects += 1
        }
        sessionGen[s] &+= 1
        sessionsStarted += 1
        pairsStartedByLink[Int(link.spec.linkClass.rawValue)] += 1
        effects.wake(link.slot, .a)
        effects.wake(link.slot, .b)
    }

    /// The contact's peer is added to the `a` node's driver (a new peer is due at once: sync on contact),
    /// which opens the session pair (side `a` initiates) with each node's local clock.
    public func contactStarted(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        if now >= nextKeyEventAt { keysTick(now: now, effects: &effects) }
        if !adversaries.isEmpty {
            adversaryTick(now: now, effects: &effects)
            if adversaries.badRelay, badRelayNode == nil, now >= adversaryStart {
                for n in [link.spec.a, link.spec.b] where badRelayNode == nil && ctx.world.nodes[Int(n)].nodeClass == .relay { badRelayNode = n }
            }
        }
        ensureSlot(link.slot)
        links[Int(link.slot)] = link
        active[Int(link.spec.a)].append(link.slot)
        active[Int(link.spec.b)].append(link.slot)
        pairFailed[Int(link.slot)] = false
        stretchStart[Int(link.slot)] = now
        let a = link.spec.a
        peerSlot[Int(a)][link.spec.b] = link.slot
        drivers[Int(a)].handle(.peerAdded(link.spec.b, .static), now: wall(a, now))
        drive(a, now: now, effects: &effects)
    }

    /// The sim time at which `node`'s clock reads `wall` (ms since the Unix epoch).
    private func simTime(_ node: NodeIndex, wall: UInt64) -> SimTime {
        Int64(wall) - Int64(Self.epochMs) - ctx.clockSkew[Int(node)]
    }

    /// Ticks `node`'s driver: opens the session pairs it says are due and sets each of its contacts' timer
    /// for when its peer is due next.
    private func drive(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        let t = wall(node, now)
        // Incoming sessions that take a slot: pairs the other side opened to this node, not live.
        var incoming = 0
        for slot in active[Int(node)] {
            if let l = links[Int(slot)], l.spec.b == node, let sb = sessions[Int(slot)][1]?.session, !sb.isLive { incoming += 1 }
        }
        for d in drivers[Int(node)].handle(.tick(incoming: incoming), now: t) {
            guard case let .connect(peer) = d, let slot = peerSlot[Int(node)][peer], let link = links[Int(slot)] else { continue }
            startSessions(link, now: now, effects: &effects)
        }
        // A peer still due after the tick waits for a free slot: the node tries again at its next tick
        // (`SchedulePolicy.tick`), so one contact's timer is set for then. Setting every waiting contact's
        // timer for `now` instead fired them again and again at the same instant, and the run never ended
        // once a node had more peers due than slots (HQ and the counties in `longnan`, at time 0).
        var retryArmed = false
        for slot in active[Int(node)] {  // in contact order (never a dictionary's: outputs must not depend on hashing)
            guard let link = links[Int(slot)], link.spec.a == node, let p = drivers[Int(node)].scheduler.peer(link.spec.b),
                  !p.running, let due = p.due, !(p.device.map(drivers[Int(node)].scheduler.isLive) ?? false) else { continue }
            let at = simTime(node, wall: due)
            if at > now {
                setTimer(link, at: at, effects: &effects)
            } else if !retryArmed {
                retryArmed = true
                setTimer(link, at: now + SimTime(policy.schedule.tick), effects: &effects)
            }
        }
    }

    /// That side's next frame of its session's outputs.
    public func pollTransmit(_ link: LinkHandle, from side: LinkSide, now: SimTime) -> FieldSyncFrame? {
        if let relay = badRelayNode, link.node(side) == relay, now >= adversaryStart { return badRelayTransmit(link, from: side, now: now) }
        guard let frame = sessions[Int(link.slot)][Int(side.rawValue)]?.next() else { return nil }
        return outgoing(frame, link, from: side, now: now)
    }

    /// The accounting of a frame that leaves `side`, and the frame as the engine carries it.
    private func outgoing(_ frame: SessionFrame, _ link: LinkHandle, from side: LinkSide, now: SimTime) -> FieldSyncFrame {
        let (bytes, kind) = (frame.bytes, frame.kind)
        bytesByKind[kind.rawValue] += Int64(bytes.count)
        lastTraffic[Int(link.slot)] = now
        lastSent[2 * Int(link.slot) + Int(side.rawValue)] = now
        var parts: BatchBytes?
        if let contents = frame.contents {
            let p = batchParts(bytes.count, contents, to: link.node(side.other))
            batchBytes.add(p)
            parts = p
        }
        return FieldSyncFrame(bytes: bytes, type: kind == .handshake ? .summary : .control, kind: kind,
                              session: sessionGen[Int(link.slot)], batchParts: parts)
    }

    /// Moves a workload change the receiver `node` did not store from the part it was counted in when its
    /// frame left (readers or relays) to `changesRefused`.
    private func batchChangeRefused(_ r: RefusedChange, at node: NodeIndex) {
        guard let list = changeOf[r.log], r.seq >= 1, Int(r.seq) <= list.count else { return }  // control: stays there
        let change = list[Int(r.seq) - 1]
        let n = Int64(writtenSize[Int(change)]), model = Int64(ctx.changes.size[Int(change)])
        if ctx.world.reads(ctx.changes.domain[Int(change)], at: node) {
            batchBytes.changesToReaders -= n; batchBytes.readerChanges -= 1; batchBytes.modelBytesToReaders -= model
        } else {
            batchBytes.changesToRelays -= n; batchBytes.relayChanges -= 1; batchBytes.modelBytesToRelays -= model
        }
        batchBytes.changesRefused += n
        batchBytes.refusedChanges += 1
        if r.reason == .timestampInFuture { batchBytes.refusedDatedAhead += 1 }
    }

    /// A batch frame's bytes split by what it carries, each change classed by whether it belongs to the
    /// workload, whether `peer` held it already, and whether `peer` reads or only carries its station.
    private func batchParts(_ frameBytes: Int, _ c: BatchFrameContents, to peer: NodeIndex) -> BatchBytes {
        var p = BatchBytes()
        p.frames = 1
        p.framing = Int64(frameBytes - c.plaintextBytes)
        p.certificates = Int64(c.certificateBytes)
        p.certificateCount = c.certificates.count
        if let peerReplicator = replicators[Int(peer)] {  // which of them the receiver had already verified
            for cert in c.certificates {
                let had = cert.kind == .authority ? peerReplicator.trust.authorities[cert.subject] == cert
                    : peerReplicator.certificateChain(of: cert.subject).contains(cert)
                if had { p.certificatesPeerHeldBytes += Int64(cert.canonicalBytes.count); p.certificatesPeerHeld += 1 }
            }
        }
        p.forkProofs = Int64(c.forkProofBytes)
        var carried = Int64(c.certificateBytes + c.forkProofBytes)
        let world = ctx.world
        for ch in c.changes {
            let n = Int64(ch.bytes)
            carried += n
            guard let list = changeOf[ch.log], ch.seq >= 1, Int(ch.seq) <= list.count else {
                p.controlChanges += n; p.controlChangeCount += 1
                if let g = grantSeqs[ch.log], g.contains(ch.seq) { grantCopiesSent += 1; grantBytesSent += n }
                continue
            }
            let change = list[Int(ch.seq) - 1]
            let d = ctx.changes.domain[Int(change)]
            if heldHops(peer, change) != nil {
                p.changesPeerHeld += n; p.peerHeldChanges += 1
            } else if world.reads(d, at: peer) {
                p.changesToReaders += n; p.readerChanges += 1; p.modelBytesToReaders += Int64(ctx.changes.size[Int(change)])
            } else if world.carries(d, at: peer) {
                p.changesToRelays += n; p.relayChanges += 1; p.modelBytesToRelays += Int64(ctx.changes.size[Int(change)])
            } else {
                p.changesToNonCarriers += n; p.nonCarrierChanges += 1
            }
        }
        p.encoding = Int64(c.plaintextBytes) - carried
        return p
    }

    /// The frame with one bit flipped (`LinkFaults.corrupt`): the receiving session's AEAD or framing
    /// must catch it.
    public static func corrupted(_ message: FieldSyncFrame, random: inout SimRandom) -> FieldSyncFrame? {
        guard !message.bytes.isEmpty else { return message }
        var m = message
        m.bytes[random.int(m.bytes.count)] ^= UInt8(1) << UInt8(random.int(8))
        m.corrupted = true
        return m
    }

    /// Marks the pair on `link` whose frame `message` is as reached by an injected link fault (`faultKilledPairs`).
    public func linkFault(_ message: FieldSyncFrame, on link: LinkHandle, now: SimTime) {
        let s = Int(link.slot)
        guard s < sessions.count, sessions[s][0] != nil, message.session == sessionGen[s], pairFaultAt[s] < 0 else { return }
        pairFaultAt[s] = now
    }

    /// Feeds the bytes to the receiving side's session; reports the changes its store applied.
    public func received(_ message: FieldSyncFrame, on link: LinkHandle, at side: LinkSide, now: SimTime,
                         effects: inout AgentEffects) {
        let s = Int(link.slot)
        if now >= nextKeyEventAt { keysTick(now: now, effects: &effects) }
        if !adversaries.isEmpty { adversaryTick(now: now, effects: &effects) }
        guard let here = sessions[s][Int(side.rawValue)], message.session == sessionGen[s] else { return }
        let sess = here.session
        let me = link.node(side)
        lastTraffic[s] = now
        var applied = false, wentLive = false
        var appliedLogs: [LogID] = []
        let framesBefore = sess.framesReceived
        let forksBefore = replicators[Int(me)]?.forksRecorded
        let events = here.take(sess.receive(message.bytes, now: wall(me, now)))
        let fullSince = durability.relayQuotaBytes != nil && ctx.world.nodes[Int(me)].nodeClass == .relay
            ? relayStoreSince(me, events, now: now) : now
        // Heard from the peer only when a whole frame was handled, as on a node (SessionChannelHandler): the
        // bytes of a frame whose corrupted length prefix made it longer are no sign of life.
        if sess.framesReceived != framesBefore { lastHeard[2 * s + Int(side.rawValue)] = now }
        if let e = equivocation, e.proofAt[Int(me)] == nil, me != equivocatorNode { noteForkProof(at: me, now: now) }
        for e in events {
            if case let .refused(r) = e {
                batchChangeRefused(r, at: me)
                if r.reason == .forked, r.log == equivocation?.log { refusedForked[Int(me)] = true }
            }
            switch e {
            case let .applied(batch):
                duplicatesReceived += batch.duplicates
                if batch.changes > batch.rejected { applied = true }
                for log in batch.logs where !appliedLogs.contains(log) {
                    appliedLogs.append(log)
                    if logPlace[log] == nil, !outsideLogs.contains(log) { outsideLogs.append(log) }
                }
            case let .refused(change) where change.reason == .quota || change.reason == .heldBack:
                refusedReceived += 1
                if change.reason == .quota {
                    relayQuotaRefusals += 1
                    noteQuotaRefusal(change, at: me, since: fullSince)
                }
            case .live:
                wentLive = true
            default:
                break
            }
        }
        if message.corrupted, !sess.isClosed {
            stallWatch[s] = true
            setTimer(link, at: now + Self.sessionIdleTimeout, effects: &effects)
        }
        if sess.hasFailed, let peer = sessions[s][Int(side.other.rawValue)], !peer.session.isClosed {
            _ = peer.take(peer.session.connectionClosed())  // the failing node closes the connection; the peer sees it closed
        }
        if wentLive, side == .a, let peer = sess.peer?.subject {
            pairWentLive[s] = true
            drivers[Int(me)].handle(.sessionLive(device: peer, outgoing: link.spec.b), now: wall(me, now))
        }
        if let before = forksBefore, let r = replicators[Int(me)], r.forksRecorded > before,
           let forks = try? r.store.forks() {
            // The node's rule (`StoreHeadsTrigger`, `forks`): a new fork proof goes out at once on every live
            // session (`push` sends the proofs the peer lacks; no head moved) and to every peer, not with the next
            // change.
            var domains: [Int32] = []
            for f in forks { if let d = logPlace[f.log]?.domain, !domains.contains(d) { domains.append(d) } }
            domains.sort()
            touched(me, domains: domains, moved: [], except: -1, now: now, effects: &effects)
        }
        if applied, !pendingRevocations.isEmpty { noteRevocations(at: me, now: now) }
        if applied, !rotations.isEmpty, !pendingRotations.isEmpty || me == revokedNode { noteKeys(at: me, now: now, effects: &effects) }
        if applied, receiptInterval != nil, !authoredLogs[Int(me)].isEmpty { noteReceipts(at: me, now: now) }
        if applied {
            let (domains, moved) = scan(me, from: link.node(side.other), logs: appliedLogs, now: now, effects: &effects)
            if me == hqNode, receiptInterval != nil, !domains.isEmpty { receiptsFor(domains, now: now, effects: &effects) }
            if !domains.isEmpty || !pendingRevocations.isEmpty { touched(me, domains: domains, moved: moved, except: link.slot, now: now, effects: &effects) }
        }
        effects.wake(link.slot, .a)
        effects.wake(link.slot, .b)
        service(link, now: now, effects: &effects)
        settle(link, now: now, effects: &effects)
    }

    /// The live-session rules of both sides (`RefusedRetry`, `LiveSessionRules.idle`): a pair either side
    /// decided to close is closed once that side is idle (a normal end); otherwise the slot's timer is set
    /// for the next time a rule must look again.
    private func service(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        guard let sa = sessions[s][0], let sb = sessions[s][1] else { return }
        let (a, b) = (sa.session, sb.session)
        // The sessions' own timers (`needsTimer`), as the node's channel handler runs them: a live session
        // pushes then the changes it held back as dated ahead of its peer's clock (Protocols/sync.md §4.3).
        for k in 0..<2 {
            let here = k == 0 ? sa : sb
            guard let at = here.timerAt, at < Self.farFuture, !here.session.isClosed else { continue }
            let node = link.node(k == 0 ? .a : .b)
            if wall(node, now) >= at {
                here.timerAt = nil
                if !here.take(here.session.timerFired(now: wall(node, now))).isEmpty || here.timerAt != nil {
                    effects.wake(link.slot, .a)
                    effects.wake(link.slot, .b)
                }
            }
            if let at = here.timerAt, at < Self.farFuture, !here.session.isClosed { setTimer(link, at: max(now, simTime(node, wall: at)), effects: &effects) }
        }
        // Asked once per side (nothing below changes either session before `closePair`). An idle session is
        // a live one.
        let (liveA, liveB) = (a.isLive, b.isLive)
        // The node's idle timeout (`sessionIdleTimeout`): cut once nothing moved either way for that long, on
        // a pair that is not live, or a live one with a side waiting for the rest of a frame (a node's idle
        // live session is exempt only when no frame of the peer is begun: `SyncSession.receivingFrame`).
        let notLive = !liveA && !liveB
        if stallWatch[s], !a.isClosed || !b.isClosed, notLive || a.receivingFrame || b.receivingFrame {
            if now - lastTraffic[s] >= Self.sessionIdleTimeout {
                countEnd(link, .idleTimeout)
                closePair(s)
                pairEnded(link, a, b, now: now, effects: &effects)
                return
            }
            setTimer(link, at: lastTraffic[s] + Self.sessionIdleTimeout, effects: &effects)
            if notLive { return }
        }
        guard liveA || liveB else { return }
        let (idleA, idleB) = (liveA && a.isIdle, liveB && b.isIdle)
        var next: SimTime?
        var gone = false
        // Each side's decisions in order (the refused-change retry, then the idle rule), acted on at once
        // (no arrays: this runs on every frame and timer of a live contact).
        func act(_ d: LiveDecision, _ node: NodeIndex) {
            switch d {
            case .keep: break
            case let .close(reason): if closing[s] == nil { closing[s] = reason }
            case let .recheck(at): next = min(next ?? .max, max(now, simTime(node, wall: at)))
            }
        }
        for k in 0..<2 {
            let side: LinkSide = k == 0 ? .a : .b
            let here = k == 0 ? sa : sb
            let (live, idle) = k == 0 ? (liveA, idleA) : (liveB, idleB)
            let node = link.node(side)
            let t = wall(node, now)
            act(refused[s][k].check(now: t, refused: here.refused, refusedByPeer: here.refusedByPeer,
                                    deferredUntil: here.deferredUntil, live: live), node)
            if live {
                act(LiveSessionRules.idle(now: t, lastTraffic: wall(node, lastTraffic[s]), isIdle: idle,
                                          limit: LiveSessionRules.idleLimit(liveIdle: policy.liveIdle,
                                                                            keepAlive: policy.liveKeepAlive)), node)
                if let keep = policy.liveKeepAlive {
                    // The node's keep-alive (SessionChannelHandler): a keep-alive after `interval` without
                    // sending; the connection cut after `deadAfter` without hearing from the peer.
                    let k2 = 2 * s + k
                    var d = LiveSessionRules.keepAlive(now: t, lastSent: wall(node, lastSent[k2]), lastReceived: wall(node, lastHeard[k2]),
                                                       initiator: k == 0, policy: keep)
                    if d == .send {
                        keepAlivesSent += 1
                        _ = here.take(here.session.keepAlive(now: t))
                        effects.wake(link.slot, side)
                        lastSent[k2] = now  // queued now; the frame leaves at the link's pace
                        d = LiveSessionRules.keepAlive(now: t, lastSent: t, lastReceived: wall(node, lastHeard[k2]),
                                                       initiator: k == 0, policy: keep)
                    }
                    switch d {
                    case .send: break
                    case .peerGone: gone = true
                    case let .recheck(at): next = min(next ?? .max, max(now, simTime(node, wall: at)))
                    }
                }
            }
        }
        if gone {
            // A side took its peer for gone: it cuts the connection at once (the peer sees it closed).
            countEnd(link, .peerGone)
            closePair(s)
            pairEnded(link, a, b, now: now, effects: &effects)
            return
        }
        if let reason = closing[s] {
            // A side no longer live (finished or failed) has closed its end already.
            guard idleA || !liveA, idleB || !liveB else {
                // Closed once nothing is in flight either way (over TCP the last acknowledgements arrive
                // before the close): look again shortly.
                setTimer(link, at: now + 1_000, effects: &effects)
                return
            }
            if case .idle = reason { idleCloses += 1 } else { deferredRetries += 1 }
            if case .idle = reason { countEnd(link, .idle) } else { countEnd(link, .refusedRetry) }
            closePair(s)
            pairEnded(link, a, b, now: now, effects: &effects)
            return
        }
        if let next { setTimer(link, at: next, effects: &effects) }
    }

    /// When both sessions are over, the pair is counted and the `a` node's driver told how it ended: it
    /// decides when the next pair starts (the node's policy: `pushDebounce` if either node got something
    /// new meanwhile, `backoffMin` after a live pair, `resyncInterval` after a one-shot pair, jittered
    /// backoff from `backoffMin` to `backoffMax` after a failure).
    private func settle(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        guard let a = sessions[s][0]?.session, let b = sessions[s][1]?.session else { return }
        guard a.isClosed, b.isClosed else { return }
        tally(a, b)
        countEnd(link, a.isFinished && b.isFinished ? .finished : .failed)
        sessions[s] = [nil, nil]
        pairEnded(link, a, b, now: now, effects: &effects)
    }

    /// Tells the `a` node's driver that the pair on `link` ended (after `tally`), then drives that node.
    private func pairEnded(_ link: LinkHandle, _ a: SyncSession, _ b: SyncSession, now: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        let node = link.spec.a
        let t = wall(node, now)
        let device = a.peer?.subject
        if pairWentLive[s], let device {  // as a node: a session that went live reports its live end
            pairWentLive[s] = false
            drivers[Int(node)].handle(.liveSessionEnded(device: device), now: t)
        }
        let finished = a.isFinished && b.isFinished
        pairFailed[s] = !finished
        closing[s] = nil
        if Self.killedByFault(finished: finished, faultAt: pairFaultAt[s] >= 0 ? pairFaultAt[s] : nil, endedAt: now) {
            openKilled[s] = Int32(faultKilledPairs.count)
            faultKilledPairs.append(FaultKilledPair(a: link.spec.a, b: link.spec.b, linkClass: link.spec.linkClass,
                                                    from: max(stretchStart[s], pairStartAt[s] - driverWait), to: now + driverWait))
        }
        pairFaultAt[s] = -1
        stretchStart[s] = now
        if revokedWatch[s] {
            revokedWatch[s] = false
            let peer = link.spec.a == revokedNode ? b : a
            if peer.failure?.code == .revoked { revokedPairsRefused += 1 } else if peer.peer != nil { revokedPairsAuthenticated += 1 }
        }
        drivers[Int(node)].handle(.sessionEnded(link.spec.b, finished: finished, device: device), now: t)
        // A revoked device or a flooder that opened this pair opens the next one on its own schedule too.
        if node == revokedNode, revokedAt != nil, links[s] != nil {
            advRestartAt[s] = now + SimTime(adversaries.revokedRetrySeconds * 1_000)
            setTimer(link, at: advRestartAt[s]!, effects: &effects)
        } else if link.spec.a == flooderNode || link.spec.b == flooderNode, now >= adversaryStart, links[s] != nil {
            advRestartAt[s] = now + SimTime(adversaries.floodSessionSeconds * 1_000)
            setTimer(link, at: advRestartAt[s]!, effects: &effects)
        }
        drive(node, now: now, effects: &effects)
    }

    /// Session timers at or after this wall time (ms; about year 2100) are not scheduled (a certificate
    /// without an end, far beyond any run).
    private static let farFuture: UInt64 = 4_102_444_800_000

    /// Sets the contact's timer for `at` unless an earlier one is pending (one per contact).
    private func setTimer(_ link: LinkHandle, at: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        guard timerAt[s].map({ at < $0 }) ?? true else { return }
        timerAt[s] = at
        effects.setTimer(link, at: at)
    }

    private func countEnd(_ link: LinkHandle, _ end: PairEnd) {
        pairEnds[Int(link.spec.linkClass.rawValue)][end.rawValue] += 1
    }

    /// Closes both sessions on slot `s` (each side sees its connection close) and counts the pair.
    private func closePair(_ s: Int) {
        guard let a = sessions[s][0]?.session, let b = sessions[s][1]?.session else { return }
        _ = a.connectionClosed()
        _ = b.connectionClosed()
        tally(a, b)
        sessions[s] = [nil, nil]
    }

    private func tally(_ a: SyncSession, _ b: SyncSession) {
        if a.isFinished && b.isFinished {
            sessionsFinished += 1
            return
        }
        sessionsFailed += 1
        // The side that saw only the connection close did not fail for a reason of its own.
        let code = [a, b].compactMap(\.failure).first { $0.code != .connectionClosed }
        failures[code.map { $0.code.rawValue } ?? "cut", default: 0] += 1
    }

    /// Marks the other live contacts of `node` whose peer may hold changes of one of `domains` as having
    /// something new, restarting idle ones (a session with any other peer would exchange nothing new:
    /// reconciliation covers only logs both sides may hold). `moved` are the logs whose holdings moved
    /// (`StoreHeadsChange.moved`): the live sessions push those. Nil: every log of `domains` (HQ's writes,
    /// a handful of control logs).
    func touched(_ node: NodeIndex, domains: [Int32], moved: [LogID]? = nil, except: Int32, now: SimTime, effects: inout AgentEffects) {
        let w = ctx.world
        // A node that learned a revocation (HQ's root-scope control log) tells every peer.
        let everyone = !pendingRevocations.isEmpty
        for slot in active[Int(node)] where slot != except {
            let s = Int(slot)
            guard let link = links[s] else { continue }
            let peer = link.spec.a == node ? link.spec.b : link.spec.a
            let cls = w.nodes[Int(peer)].nodeClass
            guard everyone || cls == .hq || cls == .relay || domains.contains(where: { w.slot(of: $0, at: peer) >= 0 }) else { continue }
            if let side = sessions[s][link.spec.a == node ? 0 : 1], side.session.isLive {
                // The open session carries the new changes; one not yet live pushes them when it is.
                livePushes += 1
                // The node pushes the logs that moved (`StoreHeadsTrigger`), and while a revocation travels,
                // the logs in no domain that carry it. (Not every log of the store, nor of the domain: a push
                // looks up each log it is given, and a station's domain holds a log per officer and village.)
                var logs = moved ?? domains.flatMap { domainLogs[Int($0)] + controlLogs[Int($0)] }
                if everyone { logs += outsideLogs }
                _ = side.take(side.session.push(logs: logs, now: wall(node, now)))
                effects.wake(link.slot, .a)
                effects.wake(link.slot, .b)
            } else {
                // No live session: the driver schedules one (`pushDebounce`), or marks the running one dirty.
                // Simulator shortcut: only contacts whose peer may hold what changed (a node schedules every
                // peer, and reconciliation finds nothing new with the others).
                drivers[Int(link.spec.a)].handle(.peerChanged(link.spec.b), now: wall(link.spec.a, now))
                drive(link.spec.a, now: now, effects: &effects)
            }
        }
    }

    /// Finds the changes `node`'s store holds that it did not before in `logs` (those a session just
    /// stored changes in, `AppliedBatch.logs`) and reports them to the engine, domain by domain
    /// in the node's carried order, logs in creation order. Returns the domains that had any, and the logs
    /// whose holdings moved.
    private func scan(_ node: NodeIndex, from peer: NodeIndex, logs: [LogID], now: SimTime, effects: inout AgentEffects) -> ([Int32], [LogID]) {
        guard let r = replicators[Int(node)] else { return ([], []) }
        var byDomain: [Int32: [(Int32, LogID)]] = [:]
        for log in logs {
            guard let p = logPlace[log] else { continue }  // HQ's root-scope revocations: tracked apart
            byDomain[p.domain, default: []].append((p.index >= 0 ? p.index : Int32.max / 2 - p.index, log))
        }
        guard !byDomain.isEmpty else { return ([], []) }
        var found: [Int32] = []
        var moved: [LogID] = []
        for d in ctx.world.carried[Int(node)] {
            guard let list = byDomain[d] else { continue }
            var any = false
            for (place, log) in list.sorted(by: { $0.0 < $1.0 }) {
                guard let h = try? r.store.holdings(of: log) else { continue }
                let known = seen[Int(node)][log]
                let old = known ?? HeldIntervals()
                if h == old { continue }
                // A new key is the shared copy of the log id: `log` is this session's decoded copy, with a
                // path string of its own, which the table would otherwise keep for every (node, log).
                seen[Int(node)][known == nil ? sharedLogID(log) : log] = h
                moved.append(log)
                any = true  // a receipt (HQ's control log in this station's scope) travels like a change
                if let cut = revokedCutoff, let d = revokedNode, node != d, changeOf[log] == nil, log.author == replicators[Int(d)]?.identity.id {
                    // Trust invariant for the revoked device's extra log (not a workload log: checked here).
                    let knows = !r.trust.revocations.revocations(of: log.author).isEmpty
                    for range in Self.newSeqs(h, minus: old) {
                        let after = ((try? r.store.changes(log, in: range)) ?? []).filter { $0.hlc.milliseconds > cut }.count
                        if after > 0, knows {
                            effects.violate("\(ctx.world.nodes[Int(node)].name) holds the revocation of \(ctx.world.nodes[Int(d)].name) but took a change of \(log) dated after it")
                        }
                        if !knows { revokedChangesAccepted += after }
                    }
                }
                guard place < Int32.max / 2, let list = changeOf[log] else { continue }
                for range in Self.newSeqs(h, minus: old) {
                    for seq in range where seq >= 1 && Int(seq) <= list.count {
                        let c = list[Int(seq) - 1]
                        if heldHops(node, c) != nil { continue }
                        // Invariant: what a replica holds at (log, seq) is exactly what the author wrote.
                        let tag = Self.tag(try? r.store.hash(log, seq: seq))
                        if tag != writtenTag[Int(c)] {
                            // The other branch of an equivocation: the node keeps the first branch it held.
                            if let e = equivocation, e.log == log, e.seq == seq, tag == e.otherTag { continue }
                            effects.violate("\(ctx.world.nodes[Int(node)].name) holds a change at \(log)#\(seq) that is not the one its author wrote")
                        }
                        // Trust invariant: no node that holds the revocation takes a change of the revoked device
                        // dated after its cut-off.
                        if let d = revokedNode, let cut = revokedCutoff, ctx.changes.author[Int(c)] == d, node != d,
                           let hlc = try? r.store.changes(log, in: seq...seq).first?.hlc, hlc.milliseconds > cut {
                            if !r.trust.revocations.revocations(of: log.author).isEmpty {
                                effects.violate("\(ctx.world.nodes[Int(node)].name) holds the revocation of \(ctx.world.nodes[Int(d)].name) but took its change \(log)#\(seq) dated after the revocation")
                            }
                            revokedChangesAccepted += 1
                        }
                        let hops = (heldHops(peer, c) ?? 0).nextHop
                        setHeld(node, c, hops)
                        if !acquiredAt.isEmpty { acquiredAt[Int(node)][c] = now }
                        // A change lost on a power loss that came back was counted when it first arrived.
                        if lostToPower[Int(node)].isEmpty || lostToPower[Int(node)].removeValue(forKey: c) == nil {
                            holderCount[Int(c)] += 1
                            effects.accept(c, at: node, hops: hops)
                        } else {
                            lossCount[Int(c)] -= 1
                        }
                    }
                }
            }
            if any { found.append(d) }
        }
        return (found, moved)
    }

    /// The copy of `log` the stores' tables keep (`RecordInterner.intern(log:)`), or one of the agent's own
    /// when the stores share no interner (`--crypto real`).
    private func sharedLogID(_ log: LogID) -> LogID {
        recordInterner?.intern(log: log) ?? ownLogIDs.insert(log).memberAfterInsert
    }

    /// The hop count of `c` at `node` if it holds it.
    private func heldHops(_ node: NodeIndex, _ c: ChangeIndex) -> HopCount? {
        held[Int(node)].hops(c, slot: ctx.world.slot(of: ctx.changes.domain[Int(c)], at: node), changeDomains)
    }

    /// Records that `node` holds `c`, reached in `hops` (nil: no longer holds it).
    private func setHeld(_ node: NodeIndex, _ c: ChangeIndex, _ hops: HopCount?) {
        held[Int(node)].set(c, hops, slot: ctx.world.slot(of: ctx.changes.domain[Int(c)], at: node), changeDomains)
    }

    /// The first 8 bytes of a change id, big-endian (0 for none).
    private static func tag(_ hash: [UInt8]?) -> UInt64 {
        guard let h = hash, h.count >= 8 else { return 0 }
        return h[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The seqs in `new` and not in `old` (`HeldIntervals.difference`).
    static func newSeqs(_ new: HeldIntervals, minus old: HeldIntervals) -> [ClosedRange<UInt64>] {
        HeldIntervals.difference(new, old)
    }

    /// Feeds each receiving session the prefix of the first cut frame that had reached it (never the
    /// whole frame: a frame that did not arrive is not read), then closes both sessions.
    public func contactEnded(_ link: LinkHandle, now: SimTime, cut: [CutTransfer<FieldSyncFrame>], effects: inout AgentEffects) {
        let s = Int(link.slot)
        var fed: Set<Int32> = []
        for c in cut {
            bytesByKind[c.message.kind.rawValue] -= Int64(c.message.bytes.count - c.bytesSent)
            if let p = c.message.batchParts {  // the receiver reads none of it: only the bytes that left count
                batchBytes.add(p, sign: -1)
                batchBytes.cutFrames += Int64(c.bytesSent)
            }
        }
        for c in cut where !fed.contains(c.from.rawValue) && c.message.session == sessionGen[s] {
            fed.insert(c.from.rawValue)
            let side = c.from.other
            guard let receiver = sessions[s][Int(side.rawValue)] else { continue }
            let n = min(c.bytesSent, c.message.bytes.count - 1)
            if n > 0 { _ = receiver.take(receiver.session.receive(Array(c.message.bytes[0..<n]), now: wall(link.node(side), now))) }
        }
        let pair = (sessions[s][0]?.session, sessions[s][1]?.session)
        if pair.0 != nil, pair.1 != nil { countEnd(link, .contactEnded) }
        closePair(s)
        if let a = pair.0, let b = pair.1 { pairEnded(link, a, b, now: now, effects: &effects) }
        // The peer is out of reach: forgotten by the driver until the next contact.
        drivers[Int(link.spec.a)].handle(.peerRemoved(link.spec.b, onlyIf: nil), now: wall(link.spec.a, now))
        peerSlot[Int(link.spec.a)][link.spec.b] = nil
        if openKilled[s] >= 0 {
            faultKilledPairs[Int(openKilled[s])].to = min(faultKilledPairs[Int(openKilled[s])].to, now)
            openKilled[s] = -1
        }
        links[s] = nil
        timerAt[s] = nil
        closing[s] = nil
        pairFailed[s] = false
        if !adversaries.isEmpty {
            advRestartAt[s] = nil
            relayStash[2 * s] = nil
            relayStash[2 * s + 1] = nil
        }
        for n in [link.spec.a, link.spec.b] {
            if let i = active[Int(n)].firstIndex(of: link.slot) { active[Int(n)].remove(at: i) }
        }
    }

    /// HQ got new changes of `domains`: the driver's `ReceiptScheduler` (the node's timing: `debounce` after
    /// the first of a burst, and at most one receipt per station per `receiptInterval`) says when to write
    /// each station's receipt; its timer is set on every contact of HQ (any of them that is still up
    /// fires it).
    private func receiptsFor(_ domains: [Int32], now: SimTime, effects: inout AgentEffects) {
        guard let hq = hqNode else { return }
        let t = wall(hq, now)
        var written: [Int32] = []
        for d in domains {
            switch receipts.liveChanges(d, received: 1, now: t) {
            case .none: break
            case .write: if writeReceipt(d, now: now) { written.append(d) }
            case let .armTimer(at):
                for slot in active[Int(hq)] {
                    if let link = links[Int(slot)] { effects.setTimer(link, at: max(now, simTime(hq, wall: at))) }
                }
            }
        }
        if !written.isEmpty { touched(hq, domains: written, except: -1, now: now, effects: &effects) }
    }

    /// HQ writes a receipt for station `d`: the frontier of every log of that station it holds, as a
    /// control change in the station's scope (its readers, county, vehicles and relays hold it).
    private func writeReceipt(_ d: Int32, now: SimTime) -> Bool {
        guard let hq = hqNode, let r = replicators[Int(hq)] else { return false }
        let heads = domainLogs[Int(d)].compactMap { log -> (LogID, UInt64)? in
            guard let f = try? r.store.holdings(of: log).frontier, f > 0 else { return nil }
            return (log, f)
        }.sorted { $0.0 < $1.0 }
        guard !heads.isEmpty,
              let c = try? r.writeControl(.receipt, payload: Receipt(heads: heads).canonicalBytes, scope: domainScopes[Int(d)],
                                          now: wall(hq, now))
        else { return false }
        let log = LogID(author: r.identity.id, scope: domainScopes[Int(d)])
        if c.header.seq == 1 {
            logPlace[log] = (d, -1 - Int32(controlLogs[Int(d)].count))
            controlLogs[Int(d)].append(log)
        }
        seen[Int(hq)][log, default: HeldIntervals()].insert(c.header.seq)
        for (l, f) in heads where f > hqReceipted[l] ?? 0 { hqReceipted[l] = f }
        receiptsWritten += 1
        return true
    }

    /// Records the changes `node` authored that its store now knows HQ holds (`SyncStore.receipted`).
    private func noteReceipts(at node: NodeIndex, now: SimTime) {
        guard let r = replicators[Int(node)] else { return }
        for log in authoredLogs[Int(node)] {
            guard let upTo = try? r.store.receipted(log) else { continue }
            let before = receiptedAt[Int(node)][log] ?? 0
            guard upTo > before, let list = changeOf[log] else { continue }
            receiptedAt[Int(node)][log] = upTo
            for seq in (before + 1)...upTo where Int(seq) <= list.count {
                receiptLatency.record(now - ctx.changes.createdAt[Int(list[Int(seq) - 1])])
                changesReceiptedAtAuthor += 1
            }
        }
    }

    /// A timer: due receipts (on a link of HQ), the live-session rules of the contact's pair, then the
    /// `a` node's driver (a peer due: start the pair).
    public func timerFired(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        let s = Int(link.slot)
        if now >= nextKeyEventAt { keysTick(now: now, effects: &effects) }
        if receiptInterval != nil, let hq = hqNode, link.spec.a == hq || link.spec.b == hq {  // no receipts: none waits
            var written: [Int32] = []
            let t = wall(hq, now)
            for d in 0..<Int32(ctx.world.domainCount) where receipts.isWaiting(d) {
                if case .write = receipts.timerFired(d, now: t), writeReceipt(d, now: now) { written.append(d) }
            }
            if !written.isEmpty { touched(hq, domains: written, except: -1, now: now, effects: &effects) }
        }
        if !adversaries.isEmpty { adversaryTick(now: now, effects: &effects) }
        guard links[s] != nil, timerAt[s] == now else { return }  // an earlier timer replaced this one
        timerAt[s] = nil
        service(link, now: now, effects: &effects)
        if links[s] != nil { drive(link.spec.a, now: now, effects: &effects) }
        if !adversaries.isEmpty, links[s] != nil, let at = advRestartAt[s] {
            if at > now {
                setTimer(link, at: at, effects: &effects)
            } else {
                advRestartAt[s] = nil
                if sessions[s][0] != nil, link.spec.a == flooderNode || link.spec.b == flooderNode {  // the flooder drops its pair for a new one
                    let (a, b) = (sessions[s][0]!.session, sessions[s][1]!.session)
                    countEnd(link, .adversaryRestart)
                    floodRestarts += 1
                    closePair(s)
                    pairEnded(link, a, b, now: now, effects: &effects)
                }
                if sessions[s][0] == nil { startSessions(link, now: now, effects: &effects) }
            }
        }
    }

    /// The node's process (and, for a `normal` store, its power) is gone: the engine already cut its contacts
    /// (their sessions closed). Its store keeps what it committed: all of it with `synchronous = FULL`; with
    /// `NORMAL` what the last checkpoint made durable (`DurablePoint`: a power loss). Everything else the node
    /// held in memory is gone, so the node is rebuilt here from its store alone, as `FieldSyncDevice.openRaw`
    /// and `FieldSyncApp.openRaw` open it when it starts again (nothing runs on a node that is down, so
    /// rebuilding at the crash or at the restart gives the same node): a new `Replicator` over the store with
    /// the keystore's trust anchors, the certificates and control state (epoch keys from the grants it holds,
    /// revocations) read back from the store, the seq guard (a synced file, kept) and the clock past its own last change;
    /// a new driver (no backoffs, peers or live sessions; a new jitter seed, as a daemon draws at start).
    public func nodeCrashed(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        let n = Int(node)
        guard let old = replicators[n], let store = old.store as? MemoryStore else { return }
        crashes += 1
        nodeDown[n] = true
        if InfraCrashes.classes.contains(ctx.world.nodes[n].nodeClass) { infraCrashes += 1 }
        // HQ's daemon starts with a new `ReceiptScheduler`: a receipt waiting for its timer is gone with the process;
        // the next changes that come in are receipted (with everything held beyond what is receipted).
        if node == hqNode { receipts = ReceiptScheduler(policy: policy.receipts) }
        let before = try? store.holdings()
        if let point = durablePoints[n] {
            powerLosses += 1
            commitsLost += point.powerLoss(store)
            relayStoreChangedAt[n] = now
            relayStoreCount[n] = store.snapshot().changes
        } else {
            plantLossOnCrash?(store)
        }
        let t = wall(node, now)
        let r = Replicator(identity: old.identity, trust: baseTrust, store: store)
        r.verificationCache = verificationCache
        r.sealingRandomness = old.sealingRandomness  // (a node draws from libsodium; the run stays reproducible)
        // Its epoch keys come back from the grants its store holds (`restoreControlState`); without an HQ node the
        // keystore holds them (`enrolmentGrants`).
        if hqNode == nil, ctx.world.nodes[n].nodeClass != .relay {
            for k in old.allKeys { r.addKey(k) }
        }
        do {
            try r.restoreFromStore(now: t, headGuard: headGuards[n])
            try r.restoreClock()
        } catch {
            effects.violate("\(ctx.world.nodes[n].name) could not start again from its store: \(error)")
        }
        replicators[n] = r
        var seeds = SimRandom(seed: seed, 0xD21F_E501, UInt64(n), UInt64(crashes))
        drivers[n] = SyncDriver(policy: policy.schedule, seed: UInt64(seeds.int(Int.max)), tracing: traceDrivers)
        // What the store lost: the run's view of what the node holds follows its store.
        guard let after = try? store.holdings() else { return }
        if durablePoints[n] == nil, let before, before != after {
            effects.violate("\(ctx.world.nodes[n].name) runs synchronous=FULL but its store lost commits over a crash")
        }
        var lost = 0
        for (log, old) in seen[n] {  // (a dictionary's order: only counts and sets come out of this loop)
            let kept = after[log] ?? HeldIntervals()
            guard kept != old else { continue }
            if let list = changeOf[log] {
                for range in Self.newSeqs(old, minus: kept) {
                    for seq in range where seq >= 1 && Int(seq) <= list.count {
                        let c = list[Int(seq) - 1]
                        guard heldHops(node, c) != nil else { continue }
                        setHeld(node, c, nil)
                        lostToPower[n][c] = now
                        lossCount[Int(c)] += 1
                        if !(powerLosers[c]?.contains(node) ?? false) { powerLosers[c, default: []].append(node) }
                        lost += 1
                    }
                }
            }
            seen[n][log] = kept.ranges.isEmpty ? nil : kept
        }
        changesLost += lost
        effects.drop(lost)
        // A revocation the node had learned and whose control change it lost is forgotten until a peer brings
        // it again: tracked as not learned.
        for (i, track) in revocations.enumerated() where track.learned[n] != nil && track.node != node {
            if r.trust.revocations.revocations(of: track.device).isEmpty {
                revocations[i].learned[n] = nil
                revocationsForgotten += 1
                if !pendingRevocations.contains(i) { pendingRevocations.append(i) }
            }
        }
    }

    /// Nothing more: the node was rebuilt from its store at the crash (`nodeCrashed`); the engine starts its
    /// contacts again, and its new driver syncs on contact.
    /// HQ writes what was reported or fell due while it was down (`restartedNode`).
    public func nodeRestarted(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        restartedNode(node, now: now, effects: &effects)
    }

    /// How many nodes came to hold `change` and how many of them lost it since (see `holderCount`).
    public func holderRecord(_ change: ChangeIndex) -> (holders: Int, losses: Int) {
        Int(change) < holderCount.count ? (Int(holderCount[Int(change)]), Int(lossCount[Int(change)])) : (0, 0)
    }

    /// The HQ node, if the world has one.
    public var hq: NodeIndex? { hqNode }

    /// Whether `node`'s store runs `synchronous = NORMAL`.
    public func isNormalStore(_ node: NodeIndex) -> Bool { durablePoints[Int(node)] != nil }

    /// Commits of `normal` stores synced at once because they changed what the node trusts (a revocation, a key
    /// grant, fork evidence: `CommitBatch.mustBeDurable(after:)`), as the real `SQLiteStore` syncs them.
    public var trustSyncs: Int { durablePoints.reduce(0) { $0 + ($1?.trustSyncs ?? 0) } }

    /// The changes of each log `node`'s store holds now, read from the store itself (not from the run's mirror
    /// of it), in no particular order; workload changes only.
    public func storeHeldChanges(at node: NodeIndex) -> [ChangeIndex] {
        guard let r = replicators[Int(node)], let h = try? r.store.holdings() else { return [] }
        var out: [ChangeIndex] = []
        for (log, iv) in h {
            guard let list = changeOf[log] else { continue }
            for range in iv.ranges {
                for seq in range where seq >= 1 && Int(seq) <= list.count {
                    // The other branch of an equivocation sits at the same (log, seq): not the workload change.
                    if let e = equivocation, e.log == log, e.seq == seq, Self.tag(try? r.store.hash(log, seq: seq)) == e.otherTag { continue }
                    out.append(list[Int(seq) - 1])
                }
            }
        }
        return out
    }

    /// Whether any node lost `change` on a power loss during the run.
    public func wasLostToPower(_ change: ChangeIndex) -> Bool { powerLosers[change] != nil }

    /// The nodes that lost `change` on a power loss during the run (whether or not they hold it again), in the
    /// order they first lost it.
    public func powerLosers(of change: ChangeIndex) -> [NodeIndex] { powerLosers[change] ?? [] }

    /// When `node` last came to hold `change` (runs with `normal` stores only; nil otherwise or if it does not).
    public func acquired(_ change: ChangeIndex, at node: NodeIndex) -> SimTime? {
        acquiredAt.isEmpty || heldHops(node, change) == nil ? nil : acquiredAt[Int(node)][change]
    }

    /// When `node` lost `change` on a power loss, if it did and does not hold it again.
    public func lostToPowerAt(_ change: ChangeIndex, node: NodeIndex) -> SimTime? {
        lostToPower[Int(node)].isEmpty ? nil : lostToPower[Int(node)][change]
    }

    /// The changes `node` lost on a power loss and does not hold again, with when, in change order.
    public func changesLostToPower(at node: NodeIndex) -> [(change: ChangeIndex, at: SimTime)] {
        lostToPower[Int(node)].map { ($0.key, $0.value) }.sorted { $0.change < $1.change }
    }

    /// Records which pending revocations `node` has learned (its trust store holds them).
    private func noteRevocations(at node: NodeIndex, now: SimTime) {
        guard let r = replicators[Int(node)] else { return }
        pendingRevocations.removeAll { i in
            if revocations[i].learned[Int(node)] == nil, !r.trust.revocations.revocations(of: revocations[i].device).isEmpty {
                revocations[i].learned[Int(node)] = now
                // The store quarantined the device's changes dated after the cut-off it held (a lost device whose
                // clock ran ahead wrote some before it was lost; the revoked adversary's): they are no longer held.
                forgetQuarantined(at: node, revocation: i)
            }
            // The revoked device that keeps trying never learns its own revocation (every informed peer refuses it).
            return (0..<replicators.count).allSatisfy { replicators[$0] == nil || revocations[i].learned[$0] != nil || $0 == revokedNode.map(Int.init) }
        }
    }

    /// Remembers a log that is in no domain (pushed while a revocation is pending).
    private func noteOutside(_ log: LogID) {
        if logPlace[log] == nil, !outsideLogs.contains(log) { outsideLogs.append(log) }
    }

    /// Discards the node's replicator and store; HQ revokes the device at once (reason `lost`, a control
    /// change in the root scope that every device may hold), and the run tracks when each node learns it.
    /// While HQ is down, the report waits for HQ's restart (`restartedNode`): nothing is written on a node that is off.
    public func nodeLost(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        if let lost = replicators[Int(node)] {
            if hqIsDown { lossReportsWhileHQDown.append((node, lost)) } else { revokeLost(node, lost, now: now, effects: &effects) }
        }
        effects.drop(held[Int(node)].count)
        held[Int(node)].forEach(carried: ctx.world.carried[Int(node)], changeDomains) { lossCount[Int($0)] += 1 }  // (counts only)
        replicators[Int(node)] = nil
        held[Int(node)] = HeldChanges(carried: ctx.world.carried[Int(node)].count)
        seen[Int(node)] = [:]
        lostToPower[Int(node)] = [:]
    }

    /// HQ revokes the lost device `node` (its replicator `lost`, kept for the run's checks).
    func revokeLost(_ node: NodeIndex, _ lost: Replicator, now: SimTime, effects: inout AgentEffects) {
        if let hq = hqNode, hq != node, let hqr = replicators[Int(hq)] {
            let cert = lost.identity.certificate
            let t = wall(hq, now)
            if let rev = try? Revocation(device: cert.subject, serial: cert.serial, revokedAt: HLCTimestamp(milliseconds: t, counter: 0),
                                         reason: .lost, note: "device reported lost", by: authority),
               (try? hqr.writeControl(.revocation, payload: rev.canonicalBytes, scope: rootScope, now: t)) != nil
            {
                noteOutside(LogID(author: hqr.identity.id, scope: rootScope))
                var learned = [SimTime?](repeating: nil, count: replicators.count)
                learned[Int(hq)] = now
                revocations.append(RevocationTrack(node: node, device: cert.subject, at: now, learned: learned, lostDevice: lost,
                                                   cutoff: rev.revokedAt, datedAfter: datedAfterCutoff(node, lost, rev.revokedAt)))
                pendingRevocations.append(revocations.count - 1)
                replicators[Int(node)] = nil
                forgetQuarantined(at: hq, revocation: revocations.count - 1)
                touched(hq, domains: [], except: -1, now: now, effects: &effects)
                revoked(node, revocation: revocations.count - 1, now: now, effects: &effects)
            }
        }
    }

    /// Whether the node's store holds the change (mirrored from its holdings after every applied batch).
    public func holds(_ change: ChangeIndex, at node: NodeIndex) -> Bool { heldHops(node, change) != nil }

    /// Bytes of changes in the node's store (`StoreStatus.changeBytes`).
    public func storedBytes(at node: NodeIndex) -> Int {
        (try? replicators[Int(node)]?.store.status().changeBytes) ?? 0
    }

    /// The canonical bytes of every record in the node's store within domain `domain`'s scope (all
    /// records when nil), sorted: equal arrays mean identical record state (for convergence checks).
    public func recordState(at node: NodeIndex, domain: Int32? = nil) -> [[UInt8]] {
        guard let r = replicators[Int(node)], let recs = try? r.store.records(RecordQuery(includeDeleted: true)) else { return [] }
        let within = domain.map { domainScopes[Int($0)] }
        return recs.filter { within?.contains($0.scope) ?? true }.map(\.canonicalBytes)
            .sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Per station (domain), a digest of the node's record state in that station's scope: the number of
    /// records and a sum of 64-bit hashes of their canonical encodings (order-independent; compared
    /// within one run only). Equal digests mean identical record state (up to hash collisions).
    public func recordDigests(at node: NodeIndex) -> [Int32: (count: Int, sum: UInt64)] {
        guard let r = replicators[Int(node)] else { return [:] }
        if domainOfScope.isEmpty { for (d, sc) in domainScopes.enumerated() { domainOfScope[sc] = Int32(d) } }
        var out: [Int32: (count: Int, sum: UInt64)] = [:]
        func add(_ rec: Record) {  // a sum: the order records come in does not matter
            guard let d = domainOfScope[rec.scope] else { return }
            var h = Hasher()
            rec.canonicalBytes.withUnsafeBytes { h.combine(bytes: $0) }
            let v = UInt64(bitPattern: Int64(h.finalize()))
            let old = out[d] ?? (0, 0)
            out[d] = (old.count + 1, old.sum &+ v)
        }
        // The in-memory store is read in place: an array of HQ's records and their index entries was the
        // run's peak of memory, at the very end.
        if let m = r.store as? MemoryStore {
            m.forEachRecord(add)
        } else {
            guard let recs = try? r.store.records(RecordQuery(includeDeleted: true)) else { return [:] }
            recs.forEach(add)
        }
        return out
    }
    private var domainOfScope: [Scope: Int32] = [:]

    /// Changes held in the node's store (`StoreStatus.changes`).
    public func storedChanges(at node: NodeIndex) -> Int { (try? replicators[Int(node)]?.store.status().changes) ?? 0 }

    /// Whether every log the node's store holds is one `Entitlement.mayHold` allows its certificate.
    public func holdsOnlyEntitledLogs(_ node: NodeIndex) -> Bool {
        guard let r = replicators[Int(node)], let h = try? r.store.holdings() else { return true }
        let cert = r.identity.certificate
        return h.keys.allSatisfy { Entitlement.mayHold(cert, $0) }
    }
}

// MARK: Adversaries

extension FieldSyncAgent {
    /// A held frame's hold (an adversarial relay's delay).
    public static func holdTime(of message: FieldSyncFrame) -> SimTime { message.hold }

    /// Whether `node` plays an adversary in this run.
    public func isAdversary(_ node: NodeIndex) -> Bool {
        node == revokedNode || node == equivocatorNode || node == badRelayNode || node == flooderNode
    }

    /// The adversary nodes of this run, in a fixed order (revoked, equivocator, bad relay, flooder).
    public var adversaryNodes: [NodeIndex] { [revokedNode, equivocatorNode, badRelayNode, flooderNode].compactMap { $0 } }

    /// Whether `change` was written by an adversary in a way no honest node may take (the revoked device after
    /// its revocation, the equivocator from its fork on): left out of the delivery and divergence checks.
    public func isAdversarialChange(_ change: ChangeIndex) -> Bool {
        Int(change) < adversarialChange.count && adversarialChange[Int(change)]
    }

    /// Whether `node` holds a change of the revoked device written after its revocation (it has not learned
    /// the revocation yet: once it does, such changes are quarantined).
    public func holdsRevokedChanges(_ node: NodeIndex) -> Bool {
        guard let d = revokedNode, revokedAt != nil, Int(node) < held.count else { return false }
        for log in authoredLogs[Int(d)] {
            for c in changeOf[log] ?? [] where isAdversarialChange(c) && heldHops(node, c) != nil { return true }
        }
        return false
    }

    /// The equivocator's second replicator (same identity, the other branch), once it forked.
    public var equivocatorCopy: Replicator? { twin }

    /// What starts when its time comes: HQ revokes the revoked device; the flooder's extra writes.
    func adversaryTick(now: SimTime, effects: inout AgentEffects) {
        guard now >= adversaryStart else { return }
        if revokedNode != nil, revokedAt == nil, !hqIsDown { revokeAdversary(now: now, effects: &effects) }
        if let d = revokedNode, revokedAt != nil, adversaries.revokedWritesPerHour > 0, nextRevokedWriteAt <= now {
            var due = 0
            while nextRevokedWriteAt <= now {
                due += 1
                nextRevokedWriteAt += max(1, SimTime(3_600_000 / adversaries.revokedWritesPerHour))
            }
            let n = extraWrite(at: d, suffix: "revoked", count: due, edits: 1, now: now, effects: &effects)
            revokedChangesWritten += n
        }
        if flooderNode != nil, nextFloodAt <= now {
            let step = SimTime(3_600_000 / max(adversaries.floodChangesPerHour, 1e-3))
            var due = 0
            while nextFloodAt <= now {
                due += 1
                nextFloodAt += max(1, step)
            }
            let n = extraWrite(at: flooderNode!, suffix: "flood", count: due, edits: max(1, adversaries.floodEditsPerChange), now: now, effects: &effects)
            floodWrites += n
        }
    }

    /// HQ revokes the revoked device (reason `compromised`, cut-off now on HQ's clock); the device itself goes
    /// on (it is not lost), and the run tracks who learns the revocation as for lost devices.
    private func revokeAdversary(now: SimTime, effects: inout AgentEffects) {
        revokedAt = now
        guard let d = revokedNode, let hq = hqNode, let hqr = replicators[Int(hq)], let dev = replicators[Int(d)] else { return }
        let cert = dev.identity.certificate
        let t = wall(hq, now)
        guard let rev = try? Revocation(device: cert.subject, serial: cert.serial, revokedAt: HLCTimestamp(milliseconds: t, counter: 0),
                                        reason: .compromised, note: "device compromised (simulated adversary)", by: authority),
              (try? hqr.writeControl(.revocation, payload: rev.canonicalBytes, scope: rootScope, now: t)) != nil else { return }
        noteOutside(LogID(author: hqr.identity.id, scope: rootScope))
        revokedCutoff = t
        var learned = [SimTime?](repeating: nil, count: replicators.count)
        learned[Int(hq)] = now
        revocations.append(RevocationTrack(node: d, device: cert.subject, at: now, learned: learned, lostDevice: dev,
                                           cutoff: rev.revokedAt, datedAfter: datedAfterCutoff(d, dev, rev.revokedAt)))
        pendingRevocations.append(revocations.count - 1)
        forgetQuarantined(at: hq, revocation: revocations.count - 1)
        touched(hq, domains: [], except: -1, now: now, effects: &effects)
        revoked(d, revocation: revocations.count - 1, now: now, effects: &effects)
    }

    /// The revocation (index into `revocations`) whose cut-off dates `change` after it, written before it
    /// (`RevocationTrack.datedAfter`), if any.
    public func revocationDating(_ change: ChangeIndex) -> Int? {
        guard !revocations.isEmpty, Int(change) < ctx.changes.count else { return nil }
        let author = ctx.changes.author[Int(change)]
        return revocations.firstIndex { $0.node == author && $0.datedAfter.contains(change) }
    }

    /// The relay boxes whose store refused `change` for room (`ChangeRefusal.quota`), each with its first refusal.
    public func quotaRefusals(of change: ChangeIndex) -> [(node: NodeIndex, at: SimTime)] {
        (quotaRefused[change] ?? []).map { ($0.node, $0.at) }
    }

    /// Records that `node`'s store refused the workload change or HQ's key grant at (`log`, `seq`) for room (first
    /// time per node), with the time from which the store was in the state that refused it (`relayStoreSince`).
    private func noteQuotaRefusal(_ r: RefusedChange, at node: NodeIndex, since: SimTime) {
        if let g = grantSeqs[r.log], g.contains(r.seq) {
            if !(grantQuotaRefused[r.log]?[r.seq]?.contains { $0.node == node } ?? false) {
                grantQuotaRefused[r.log, default: [:]][r.seq, default: []].append((node, since))
            }
            return
        }
        guard let list = changeOf[r.log], r.seq >= 1, Int(r.seq) <= list.count else { return }
        let c = list[Int(r.seq) - 1]
        if !(quotaRefused[c]?.contains { $0.node == node } ?? false) { quotaRefused[c, default: []].append((node, since)) }
    }

    /// After relay box `node` (with a quota) handled a frame (`events`): the time from which its store has been in
    /// the state it is in now, for the refusals of this frame. A quota decision depends only on what the store holds
    /// and what HQ receipted; a commit that stored a change (a receipt included), evicted or quarantined one changes
    /// that, so the store refused what it refused now at any moment since its last such commit. Evictions found here
    /// are recorded per change (`quotaEvicted`): from then on the box holds the seq but not the change.
    func relayStoreSince(_ node: NodeIndex, _ events: [SessionEvent], now: SimTime) -> SimTime {
        let n = Int(node)
        guard let store = replicators[n]?.store as? MemoryStore else { return now }
        var inserted = 0
        for e in events {
            switch e {
            case let .applied(b): inserted += b.accepted - b.duplicates
            case let .refused(r) where r.reason == .quota || r.reason == .heldBack || r.reason == .forked: inserted -= 1
            default: break
            }
        }
        let count = store.snapshot().changes
        let before = relayStoreCount[n]
        guard count != before || inserted != 0 else { return relayStoreChangedAt[n] }
        relayStoreCount[n] = count
        relayStoreChangedAt[n] = now
        if count < before + inserted, let holdings = try? store.holdings() {  // some left: evicted (or quarantined)
            for (log, iv) in holdings {
                guard let list = changeOf[log] else { continue }
                for range in iv.ranges {
                    for seq in range where seq >= 1 && Int(seq) <= list.count {
                        let c = list[Int(seq) - 1]
                        guard heldHops(node, c) != nil, !(quotaEvicted[c]?.contains { $0.node == node } ?? false),
                              (try? store.change(log, seq: seq)) == nil else { continue }
                        quotaEvicted[c, default: []].append((node, now))
                    }
                }
            }
        }
        return now
    }

    /// The relay boxes whose store evicted `change`'s bytes to make room (HQ had receipted it), each with the time.
    public func quotaEvictions(of change: ChangeIndex) -> [(node: NodeIndex, at: SimTime)] {
        (quotaEvicted[change] ?? []).map { ($0.node, $0.at) }
    }

    /// The relay boxes whose store refused HQ's key grant at (`log`, `seq`) for room, each with the time from which
    /// its store was in the state that refused it.
    public func grantQuotaRefusals(_ log: LogID, seq: UInt64) -> [(node: NodeIndex, at: SimTime)] {
        (grantQuotaRefused[log]?[seq] ?? []).map { ($0.node, $0.at) }
    }

    /// Drops from `held` the revoked device's changes the node's store quarantined when it learned revocation
    /// `k` (`Replicator.quarantineRevokedChanges`), so that `holds` says what the store holds, and counts them
    /// (`quarantinedForRevocation`). Only a change dated after the cut-off may go (one the trust rules condemn): a
    /// change that left the store otherwise is counted in `quarantinedBeforeCutoff`, a failure of the swarm.
    private func forgetQuarantined(at node: NodeIndex, revocation k: Int) {
        guard let r = replicators[Int(node)] else { return }
        let author = revocations[k].node, cutoff = revocations[k].cutoff
        for log in authoredLogs[Int(author)] {
            guard let h = try? r.store.holdings(of: log), let list = changeOf[log] else { continue }
            var gone: [UInt64] = []
            for (i, c) in list.enumerated() where heldHops(node, c) != nil && !h.contains(UInt64(i + 1)) {
                setHeld(node, c, nil)
                lossCount[Int(c)] += 1
                quarantinedForRevocation += 1
                gone.append(UInt64(i + 1))
            }
            if !gone.isEmpty {
                let quarantined = (try? r.store.quarantined().filter { $0.log == log && $0.cause == .revoked }) ?? []
                for seq in gone where !quarantined.contains(where: { q in
                    q.seq == seq && ((try? Change(canonicalBytes: q.bytes))?.header.hlc).map { $0 > cutoff } == true
                }) { quarantinedBeforeCutoff += 1 }
            }
            // What the store no longer holds leaves the scan's baseline; changes of the same batch that the next
            // `scan` has not counted yet stay new to it (the baseline is not set to the holdings).
            if var old = seen[Int(node)][log] {
                for range in Self.newSeqs(old, minus: h) { for seq in range { old.remove(seq) } }
                seen[Int(node)][log] = old.ranges.isEmpty ? nil : old
            }
        }
    }

    /// The workload changes of `node` (the device `device`, revoked with cut-off `cutoff`) dated after the cut-off,
    /// read from the device's store (or, for a change it lost on a power loss, any store that holds it).
    private func datedAfterCutoff(_ node: NodeIndex, _ device: Replicator, _ cutoff: HLCTimestamp) -> [ChangeIndex] {
        var out: [ChangeIndex] = []
        for log in authoredLogs[Int(node)] {
            guard let list = changeOf[log] else { continue }
            for (i, c) in list.enumerated() {
                let seq = UInt64(i + 1)
                var hlc = try? device.store.changes(log, in: seq...seq).first?.hlc
                for r in replicators where hlc == nil { hlc = try? r?.store.changes(log, in: seq...seq).first?.hlc }
                if let t = hlc, t > cutoff { out.append(c) }
            }
        }
        return out.sorted()
    }

    /// The equivocator's fork: a second replicator with its identity and a copy of its own log signs another
    /// change at the seq the workload change about to be written will take.
    private func equivocate(_ r: Replicator, scope sc: Scope, change: ChangeIndex, now: SimTime, effects: inout AgentEffects) {
        guard let node = equivocatorNode else { return }
        let t = wall(node, now)
        let log = LogID(author: r.identity.id, scope: sc)
        let head = UInt64(changeOf[log]?.count ?? 0)
        let tw = Replicator(identity: r.identity, trust: r.trust, store: MemoryStore(recordInterner: recordInterner, keepsArrivals: false))
        tw.verificationCache = verificationCache
        tw.sealingRandomness = SimRandom(seed: seed, 0x7A1F_0000, UInt64(node)).rng
        for k in r.allKeys { tw.addKey(k) }
        do {
            if head > 0 {
                let own = try r.store.changes(log, in: 1...head).map { try Change(canonicalBytes: $0.bytes) }
                _ = try tw.ingest(own, certificates: [r.identity.certificate], now: t)
            }
            let id = RecordID(ID128(high: 0xE001_7000_0000_0000, low: UInt64(change)))
            let other = Visit.create(id: id, scope: sc, author: r.identity.id, hlc: HLCTimestamp(milliseconds: t, counter: 0),
                                     subject: "other branch", visitor: "equivocator", visitType: .returningMigrantWorker,
                                     visitedAt: Int64(t), location: Location(latitude: 33.4, longitude: 104.9),
                                     outcome: "a change signed at the same seq as another")
            let y = try tw.write([other], scope: sc, priority: .low, now: t)
            guard y.header.seq == head + 1 else { return }
            twin = tw
            equivocation = Equivocation(log: log, seq: head + 1, otherTag: Self.tag(try tw.store.hash(log, seq: head + 1)), at: now,
                                        proofAt: Array(repeating: nil, count: ctx.world.count))
            // Its open pairs would push the original's change at once: it drops them and opens new ones, the first
            // with the copy, so that the peers it meets now get the other branch first.
            for slot in active[Int(node)] {
                let s = Int(slot)
                guard let link = links[s], let sa = sessions[s][0]?.session, let sb = sessions[s][1]?.session else { continue }
                countEnd(link, .adversaryRestart)
                closePair(s)
                pairEnded(link, sa, sb, now: now, effects: &effects)
                if links[s] != nil, sessions[s][0] == nil { startSessions(link, now: now, effects: &effects) }
            }
        } catch {
            return
        }
    }

    /// Records when `node`'s store first holds a fork proof of the equivocator's log.
    private func noteForkProof(at node: NodeIndex, now: SimTime) {
        guard let e = equivocation, let r = replicators[Int(node)], let f = try? r.store.forks(of: e.log), !f.isEmpty else { return }
        equivocation!.proofAt[Int(node)] = now
        if e.firstDetection == nil { equivocation!.firstDetection = (node, now) }
    }

    /// The bad relay's side of a link: drops, replays and holds frames of its sessions.
    private func badRelayTransmit(_ link: LinkHandle, from side: LinkSide, now: SimTime) -> FieldSyncFrame? {
        let s = Int(link.slot)
        let k = 2 * s + Int(side.rawValue)
        if let f = relayStash[k] {
            relayStash[k] = nil
            return f
        }
        while true {
            guard let frame = sessions[s][Int(side.rawValue)]?.next() else { return nil }
            if advRandom.unit() < adversaries.relayDrop {  // never leaves: the peer's next frame fails its check
                relayDropped += 1
                continue
            }
            var out = outgoing(frame, link, from: side, now: now)
            if advRandom.unit() < adversaries.relayDelay {
                out.hold = SimTime(advRandom.uniform(0, adversaries.relayDelayMaxSeconds * 1_000))
                relayHeld += 1
                relayHeldMs += Int64(out.hold)
            }
            let replay = !relayRecorded.isEmpty && advRandom.unit() < adversaries.relayReplay
            let old = replay ? relayRecorded[advRandom.int(relayRecorded.count)] : nil
            relayRecorded.append((frame.bytes, frame.kind))
            if relayRecorded.count > 32 { relayRecorded.removeFirst() }
            guard let old else { return out }
            // An old frame first (of this or an earlier session), the frame itself next.
            relayReplayed += 1
            relayStash[k] = out
            bytesByKind[old.kind.rawValue] += Int64(old.bytes.count)
            return FieldSyncFrame(bytes: old.bytes, type: old.kind == .handshake ? .summary : .control, kind: old.kind,
                                  session: sessionGen[s])
        }
    }

    /// An adversary writes `count` extra changes of `edits` visits each in its station's sub-scope `suffix`
    /// (within its certificate; the flooder's `flood`, the revoked device's `revoked`), pushed like any write.
    /// Returns how many it wrote.
    private func extraWrite(at f: NodeIndex, suffix: String, count: Int, edits k: Int, now: SimTime, effects: inout AgentEffects) -> Int {
        guard let r = replicators[Int(f)], let d = ctx.world.carried[Int(f)].first,
              let sc = try? Scope(domainScopes[Int(d)].path + "/" + suffix) else { return 0 }
        var written = 0
        let t = wall(f, now)
        let log = LogID(author: r.identity.id, scope: sc)
        let zh = { (n: Int) in String(repeating: "洪", count: n) }
        for _ in 0..<count {
            floodCount += 1
            let edits = (0..<k).map { i in
                Visit.create(id: RecordID(ID128(high: 0xF100_D000_0000_0000, low: floodCount << 8 | UInt64(i & 0xFF))), scope: sc,
                             author: r.identity.id, hlc: HLCTimestamp(milliseconds: t, counter: 0), subject: zh(3), visitor: zh(3),
                             visitType: .returningMigrantWorker, visitedAt: Int64(t), location: Location(latitude: 33.4, longitude: 104.9),
                             outcome: zh(50))
            }
            guard let c = try? r.write(edits, scope: sc, priority: .low, now: t) else { break }
            if logPlace[log] == nil {  // travels with the station's logs (live pushes, receipts); no workload change of its own
                logPlace[log] = (d, Int32(domainLogs[Int(d)].count))
                domainLogs[Int(d)].append(log)
            }
            seen[Int(f)][log, default: HeldIntervals()].insert(c.header.seq)
            written += 1
            if f == flooderNode { floodBytes += c.encodedBytes.count }
        }
        touched(f, domains: [d], moved: written > 0 ? [log] : [], except: -1, now: now, effects: &effects)
        return written
    }
}

extension SimTime {
    fileprivate var asMs: UInt64 { UInt64(self) }
}

/// Runs `scenario` with the real FieldSync protocol to the end (specialised here, like `runBaseline`),
/// with every random draw of the protocol (sealing, handshake ephemeral keys) taken from generators
/// seeded from `seed` (`Replicator.sealingRandomness`): same seed, same bytes.
public func runFieldSync(scenario: any Scenario, seed: UInt64, crypto: CryptoMode = .real, receiptInterval: SimTime? = nil,
                         liveSessions: Bool = true, traceDrivers: Bool = false, announcesClock: Bool = true,
                         adversaries: AdversaryConfig = AdversaryConfig(), durability: StoreDurability = StoreDurability(),
                         keyRotation: KeyRotation = KeyRotation(), verificationCacheLimit: Int = 65_536,
                         options: RunOptions = RunOptions(), progressEvery: UInt64 = 1 << 8, progress: ((SimTime, UInt64) -> Void)? = nil) -> Simulation<FieldSyncAgent> {
    // Adversaries start at `startDay`, by default a quarter of the way through the workload.
    let start = adversaries.startDay.map { SimTime($0 * Double(Duration.day)) } ?? scenario.workloadEnd / 4
    let sim = Simulation(scenario: scenario, options: options) { FieldSyncAgent(context: $0, seed: seed, crypto: crypto, receiptInterval: receiptInterval,
                                                                             liveSessions: liveSessions, traceDrivers: traceDrivers,
                                                                             announcesClock: announcesClock, adversaries: adversaries,
                                                                             adversaryStart: start, durability: durability,
                                                                             keyRotation: keyRotation,
                                                                             verificationCacheLimit: verificationCacheLimit) }
    sim.run(progressEvery: progressEvery, progress: progress)
    return sim
}

/// Builds the report of a finished FieldSync run: the common report plus a `fieldsync` section (crypto
/// mode, sessions, failures by code, bytes by message kind, verification cache) and a CSV of bytes by
/// message kind (`bytes_by_message_type.csv`).
public func fieldSyncReport(_ sim: Simulation<FieldSyncAgent>, scenarioName: String, seed: UInt64,
                            derived: [(String, String)]) -> RunReport {
    var r = sim.report(scenarioName: scenarioName, seed: seed, derived: derived)
    let a = sim.agent
    var section: [(String, JSON)] = [
        ("crypto_mode", .string(a.crypto.rawValue)),
        ("sessions", .object([("started", .int(Int64(a.sessionsStarted))), ("finished", .int(Int64(a.sessionsFinished))),
                              ("failed_or_cut", .int(Int64(a.sessionsFailed)))])),
        ("session_failures", .object(a.failures.keys.sorted().map { ($0, .int(Int64(a.failures[$0]!))) })),
        ("bytes_by_message_type", .object(SessionFrameKind.allCases.map { ($0.description, .int(a.bytesByKind[$0.rawValue])) })),
        ("live_sessions", .bool(a.liveSessions)), ("live_pushes", .int(Int64(a.livePushes))),
        ("duplicate_changes_received", .int(Int64(a.duplicatesReceived))), ("changes_refused_by_store", .int(Int64(a.refusedReceived))),
        ("deferred_retries", .int(Int64(a.deferredRetries))), ("reconnects_after_failure", .int(Int64(a.reconnects))),
        ("live_idle_closes", .int(Int64(a.idleCloses))), ("keep_alives_sent", .int(Int64(a.keepAlivesSent))),
        ("session_pairs_by_link", .object(LinkClass.allCases.filter { a.pairsStartedByLink[Int($0.rawValue)] > 0 }.map { c in
            (c.description, .object([("started", .int(Int64(a.pairsStartedByLink[Int(c.rawValue)])))]
                + FieldSyncAgent.PairEnd.allCases.filter { $0 != .adversaryRestart || a.pairEnds[Int(c.rawValue)][$0.rawValue] > 0 }
                .map { ($0.description, .int(Int64(a.pairEnds[Int(c.rawValue)][$0.rawValue]))) }))
        })),
        ("changes_written", .int(Int64(a.writes))), ("write_errors", .int(Int64(a.writeErrors))),
        ("written_change_bytes", .int(Int64(a.writtenBytes))),
        ("batch_bytes_breakdown", batchBreakdownJSON(a.batchBytes, total: a.bytesByKind[SessionFrameKind.batch.rawValue])),
    ]
    let div = divergence(sim)
    r.headline.divergedStations = div.diverged.count
    section.append(("divergence", .object([("stations_checked", .int(Int64(div.domainsChecked))),
                                           ("replicas_compared", .int(Int64(div.replicasCompared))),
                                           ("stations_diverged", .int(Int64(div.diverged.count)))])))
    if a.receiptInterval != nil {
        section.append(("receipts", .object([
            ("written_by_hq", .int(Int64(a.receiptsWritten))), ("changes_receipted_at_author", .int(Int64(a.changesReceiptedAtAuthor))),
            ("latency_to_author_p50_s", .number(a.receiptLatency.quantile(0.5) / 1000)),
            ("latency_to_author_p95_s", .number(a.receiptLatency.quantile(0.95) / 1000)),
            ("latency_to_author_max_s", .number(a.receiptLatency.count > 0 ? Double(a.receiptLatency.max) / 1000 : .nan)),
        ])))
    }
    if !a.revocations.isEmpty {
        var lat = Histogram()
        var informed = 0, uninformed = 0
        for t in a.revocations {
            for (n, l) in t.learned.enumerated() where !sim.isLost(NodeIndex(n)) && n != Int(t.node) {  // a revoked device that goes on never learns its own
                if let l { lat.record(l - t.at); informed += 1 } else { uninformed += 1 }
            }
        }
        section.append(("revocations", .object([
            ("devices_revoked", .int(Int64(a.revocations.count))), ("node_pairs_informed", .int(Int64(informed))),
            ("node_pairs_never_informed", .int(Int64(uninformed))),
            ("latency_p50_s", .number(lat.quantile(0.5) / 1000)), ("latency_p95_s", .number(lat.quantile(0.95) / 1000)),
            ("latency_max_s", .number(lat.count > 0 ? Double(lat.max) / 1000 : .nan)),
        ])))
    }
    section.append(("key_grants", keyGrantsJSON(sim, keyCheck(sim))))
    if !a.durability.normal.isEmpty {  // (absent with every store FULL, the default: those outputs are unchanged)
        let world = sim.context.world
        let notBack = (0..<world.count).reduce(0) { $0 + a.changesLostToPower(at: NodeIndex($1)).count }
        section.append(("store_durability", .object([
            ("normal_sync_classes", .array(a.durability.normal.map { .string($0.description) })),
            ("checkpoint_every_commits", .int(Int64(a.durability.checkpointEveryCommits))),
            ("crashes", .int(Int64(a.crashes))), ("power_losses", .int(Int64(a.powerLosses))),
            ("commits_lost", .int(Int64(a.commitsLost))), ("changes_lost_by_a_store", .int(Int64(a.changesLost))),
            ("changes_lost_not_held_again", .int(Int64(notBack))),
            ("revocations_forgotten", .int(Int64(a.revocationsForgotten))),
            ("trust_syncs", .int(Int64(a.trustSyncs))),
        ])))
    }
    section.append(("relay_stores_and_infra_crashes", infraFaultsJSON(sim)))
    if let c = a.verificationCache {
        section.append(("verification_cache", .object([("changes", .int(Int64(c.count))), ("hits", .int(Int64(c.hits))),
                                                        ("misses", .int(Int64(c.misses))), ("payloads_opened", .int(Int64(c.payloadsOpened))),
                                                        ("payloads_reused", .int(Int64(c.payloadsReused))),
                                                        ("forgotten", .int(Int64(c.forgotten))), ("limit", .int(Int64(c.limit)))])))
    }
    if case var .object(fields) = r.summary {
        fields.append(("fieldsync", .object(section)))
        r.summary = .object(fields)
    }
    let total = max(1, a.bytesByKind.reduce(0, +))
    r.charts.append(("bytes_by_message_type.csv", "type,bytes,fraction\n" + SessionFrameKind.allCases.map {
        "\($0),\(a.bytesByKind[$0.rawValue]),\(JSON.format(Double(a.bytesByKind[$0.rawValue]) / Double(total)))"
    }.joined(separator: "\n") + "\n"))
    return r
}


/// `fieldsync.batch_bytes_breakdown`: the parts of the batch bytes (summing to `total`), the counts behind
/// them, and the modelled sizes the ideal epidemic would charge for the same deliveries.
func batchBreakdownJSON(_ b: BatchBytes, total: Int64) -> JSON {
    .object([("total", .int(total))] + b.parts.map { ($0.0, .int($0.1)) } + [
        ("frames", .int(Int64(b.frames))), ("certificates_sent", .int(Int64(b.certificateCount))),
        ("certificates_receiver_already_held", .int(Int64(b.certificatesPeerHeld))),
        ("certificate_bytes_receiver_already_held", .int(b.certificatesPeerHeldBytes)),
        ("change_copies", .object([("to_readers", .int(Int64(b.readerChanges))), ("to_relays", .int(Int64(b.relayChanges))),
                                   ("to_non_carriers", .int(Int64(b.nonCarrierChanges))),
                                   ("peer_already_held", .int(Int64(b.peerHeldChanges))),
                                   ("refused_by_receiver", .int(Int64(b.refusedChanges))),
                                   ("of_which_dated_ahead", .int(Int64(b.refusedDatedAhead))),
                                   ("control", .int(Int64(b.controlChangeCount)))])),
        ("modelled_size_of_changes_to_readers", .int(b.modelBytesToReaders)),
        ("modelled_size_of_changes_to_relays", .int(b.modelBytesToRelays)),
    ])
}

/// The end-of-run divergence check of a `fieldsync` run: for every station, the live readers that hold
/// every change of that station any live reader holds must hold identical record state (compared by
/// `FieldSyncAgent.recordDigests`). Returns the stations checked, the replicas compared and the
/// stations whose complete replicas disagree (the CLI fails the run on any).
public func divergence(_ sim: Simulation<FieldSyncAgent>) -> (domainsChecked: Int, replicasCompared: Int, diverged: [Int32]) {
    let world = sim.context.world
    let a = sim.agent
    var digests: [NodeIndex: [Int32: (count: Int, sum: UInt64)]] = [:]
    var checked = 0, compared = 0
    var diverged: [Int32] = []
    for d in 0..<world.domainCount {
        // Adversaries (docs/simulator.md, "Issue 14: adversaries"): their nodes are not compared, nor nodes that
        // hold changes of the revoked device they will drop once they learn the revocation, nor the station of an
        // equivocator once it forked (nodes keep the branch they held first, so its readers may differ by design).
        if a.equivocation != nil, let node = a.equivocatorNode, world.reads(Int32(d), at: node) { continue }
        let readers = world.readers[d].filter { !sim.isLost($0) && !a.isAdversary($0) && !a.holdsRevokedChanges($0) }
        guard readers.count > 1 else { continue }
        var complete = Array(repeating: true, count: readers.count)
        for c in sim.context.changes.byDomain[d] where !a.isAdversarialChange(c) {
            let held = readers.map { a.holds(c, at: $0) }
            if held.contains(true) { for (i, h) in held.enumerated() where !h { complete[i] = false } }
        }
        let nodes = zip(readers, complete).filter(\.1).map(\.0)
        guard nodes.count > 1 else { continue }
        checked += 1
        compared += nodes.count
        var first: (count: Int, sum: UInt64)?
        for n in nodes {
            if digests[n] == nil { digests[n] = a.recordDigests(at: n) }
            let v = digests[n]![Int32(d)] ?? (0, 0)
            if let f = first {
                if f != v { diverged.append(Int32(d)); break }
            } else {
                first = v
            }
        }
    }
    return (checked, compared, diverged)
}
