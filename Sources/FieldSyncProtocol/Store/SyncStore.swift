import FieldSyncCore
import FieldSyncCrypto

/// A change as a store keeps it: exactly the bytes received (signed, payload still sealed), plus the
/// clear header fields the store indexes. A relay box stores what it forwards and can read none of it.
public struct StoredChange: Sendable, Equatable {
    /// The log (author, scope) it belongs to.
    public var log: LogID
    /// Its sequence number in the log (from 1).
    public var seq: UInt64
    /// Its hash (the id the next change's `prevHash` names), 32 bytes.
    public var hash: [UInt8]
    /// The hash of the previous change in the log (32 zero bytes for seq 1).
    public var prevHash: [UInt8]
    /// The author's HLC.
    public var hlc: HLCTimestamp
    /// Content type (records, key grant, revocation, receipt, or one this version does not know), from
    /// the clear header.
    public var contentType: ContentType
    /// Priority (control changes are urgent), from the clear header.
    public var priority: Priority
    /// The encoded change exactly as received.
    public var bytes: [UInt8]

    /// Creates a stored change.
    public init(log: LogID, seq: UInt64, hash: [UInt8], prevHash: [UInt8], hlc: HLCTimestamp, contentType: ContentType,
                priority: Priority, bytes: [UInt8]) {
        self.log = log
        self.seq = seq
        self.hash = hash
        self.prevHash = prevHash
        self.hlc = hlc
        self.contentType = contentType
        self.priority = priority
        self.bytes = bytes
    }
}

/// What a session's sending order needs of a held change, without its bytes: its position and the clear
/// header fields the order sorts by (`SyncStore.changeKeys`). A sender sorts these and reads the bytes a
/// page at a time as its batches go out, so its first batch leaves after one page of reading, not after
/// the whole backlog (Protocols/sync.md, "Sending order").
public struct StoredChangeKey: Sendable, Equatable {
    /// The log (author, scope).
    public var log: LogID
    /// Its sequence number in the log.
    public var seq: UInt64
    /// The author's HLC.
    public var hlc: HLCTimestamp
    /// Content type, from the clear header.
    public var contentType: ContentType
    /// Priority, from the clear header.
    public var priority: Priority

    /// Creates a key.
    public init(log: LogID, seq: UInt64, hlc: HLCTimestamp, contentType: ContentType, priority: Priority) {
        self.log = log
        self.seq = seq
        self.hlc = hlc
        self.contentType = contentType
        self.priority = priority
    }

    /// The key of a stored change.
    public init(_ c: StoredChange) {
        self.init(log: c.log, seq: c.seq, hlc: c.hlc, contentType: c.contentType, priority: c.priority)
    }
}

/// Evidence that an author equivocated in one log: two changes it signed that no single chain can hold,
/// either at the same position (same seq, different hashes) or across one link (a change at `n + 1`
/// whose `prevHash` is not the hash of the change at `n`). Both changes verify on their own; together
/// they convict the author (`ForkProof`, Protocols/change.md §6).
public struct ForkEvidence: Sendable, Equatable {
    /// The log.
    public var log: LogID
    /// The lowest seq at which the two branches provably differ (the contested seq of a position fork,
    /// the predecessor's seq of a chain fork).
    public var seq: UInt64
    /// The change the store holds (kept), or for a proof learned from a peer about changes this store
    /// holds neither of, the proof's first change.
    public var kept: StoredChange
    /// The other change: refused when it arrived, or the proof's second change.
    public var conflicting: StoredChange

    /// Creates fork evidence.
    public init(log: LogID, seq: UInt64, kept: StoredChange, conflicting: StoredChange) {
        self.log = log
        self.seq = seq
        self.kept = kept
        self.conflicting = conflicting
    }

    /// Evidence of two stored changes (either order), with `seq` the lower of their seqs.
    public init(kept: StoredChange, conflicting: StoredChange) {
        self.init(log: kept.log, seq: min(kept.seq, conflicting.seq), kept: kept, conflicting: conflicting)
    }

    /// Whether the evidence names exactly these two changes (in either role).
    public func names(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        (kept.hash == a && conflicting.hash == b) || (kept.hash == b && conflicting.hash == a)
    }

    /// The signed proof, decoded from the two changes' bytes.
    /// - Throws: `DecodingError` if either change's bytes are gone (evicted) or do not decode,
    ///   `ChangeError.notAFork` if they do not form a fork.
    public func proof() throws -> ForkProof {
        try ForkProof(try Change(canonicalBytes: kept.bytes), try Change(canonicalBytes: conflicting.bytes))
    }
}

extension StoredChange {
    /// The stored form of a verified change (its header fields, its id and its bytes as received).
    public init(_ change: Change) {
        let h = change.header
        self.init(log: LogID(author: h.author, scope: h.scope), seq: h.seq, hash: change.id, prevHash: h.prevHash, hlc: h.hlc,
                  contentType: h.contentType, priority: h.priority, bytes: change.encodedBytes)
    }
}

/// Everything one incoming batch changes, decided by the sync layer after verification, and applied by
/// a store in one atomic step: either all of it is durable or none of it is.
public struct CommitBatch: Sendable {
    /// Verified changes to store (duplicates of held changes are ignored by the store).
    public var changes: [StoredChange]
    /// Decrypted, validated edits to merge into records, each with the hash of the change carrying it.
    public var edits: [(edit: RecordEdit, change: [UInt8])]
    /// Hashes of changes whose payload this node has now opened and merged (so it is not retried).
    public var opened: [[UInt8]]
    /// Fork evidence learned outside the batch's changes (proofs a peer sent). The store records each
    /// once (whatever the roles of its two changes), at most `StoreLimits.maxForkProofsPerLog` per log.
    public var forks: [ForkEvidence]
    /// HQ receipts learned: per log, HQ holds 1...seq.
    public var receipts: [LogID: UInt64]
    /// Certificates of the authors of the batch's changes (every known one: renewals) and of their
    /// issuing county authorities, kept so that a restarted node can still verify what it holds and
    /// forward each change with its author's certificates (a relay box that reboots must not strand what
    /// it carries).
    public var certificates: [Certificate]
    /// Held changes to quarantine because their author was revoked with a cut-off before their HLC
    /// (attack case 35, `Replicator.quarantineRevokedChanges`): each is taken out of the held changes
    /// and its log's intervals (so it is neither served nor offered), and kept with its bytes in the
    /// quarantine for audit (`SyncStore.quarantined()`, cause `.revoked`).
    public var revoked: [RevokedQuarantine] = []
    /// Records folded again without the changes of `revoked`, written over the held ones in the same
    /// step; nil for a record that no remaining change touches (it is removed).
    public var rebuilt: [RecordID: Record?] = [:]
    /// The node's wall clock when the batch is committed (ms since the Unix epoch; passed in, never read
    /// by a store): kept as the **arrival time** of every change the batch newly stores, the time the change
    /// first reached this node (`SyncStore.arrivals(of:)`). A change already held keeps the time it arrived
    /// first. nil: unknown (stored without an arrival time, as changes stored before stores kept one).
    public var now: UInt64?
    /// Hashes of the batch's changes this node's trust store learned from as it verified them (a revocation
    /// the authority signed, now in force in memory). The store keeps them whatever its quota or held-back
    /// limit: a relay box whose full quota refused the revocation's change would forget the revocation at its
    /// next start (`restoreControlState` reads the store) and let the revoked device back in. Only changes
    /// the replicator verified and applied are named here, so nothing a peer sends bypasses the quota by its
    /// content type alone.
    public var trustLearned: [[UInt8]] = []

    /// An empty batch.
    public init(changes: [StoredChange] = [], edits: [(edit: RecordEdit, change: [UInt8])] = [], opened: [[UInt8]] = [],
                forks: [ForkEvidence] = [], receipts: [LogID: UInt64] = [:], certificates: [Certificate] = []) {
        self.changes = changes
        self.edits = edits
        self.opened = opened
        self.forks = forks
        self.receipts = receipts
        self.certificates = certificates
    }
}

extension CommitBatch {
    /// Whether this commit must be on disk before it is acknowledged, whatever the store's sync mode: it
    /// changes what the node trusts. It carries a key grant or a revocation (`ContentType.carriesTrust`),
    /// fork proofs from a peer, or changes quarantined for a revocation; or the store recorded fork evidence
    /// found in its changes (`report`). A store that may lose its last commits on power loss (SQLite with
    /// `synchronous = NORMAL`) syncs after such a commit, so that a node never forgets a revocation it
    /// learned and goes back to accepting the revoked device (docs/store.md, "Durability").
    public func mustBeDurable(after report: CommitReport) -> Bool {
        !forks.isEmpty || !revoked.isEmpty || report.forksRecorded > 0 || report.quarantinedRevoked > 0
            || changes.contains { $0.contentType.carriesTrust }
    }
}

/// What a store did with a batch.
public struct CommitReport: Sendable, Equatable {
    /// Changes newly stored.
    public var inserted = 0
    /// Changes already held (same hash): ignored, replays are harmless.
    public var duplicates = 0
    /// Changes refused because the relay quota is full of changes HQ has not receipted (never silent).
    public var refusedForQuota: [[UInt8]] = []
    /// Changes refused because too many changes are already held back behind gaps.
    public var refusedHeldBack: [[UInt8]] = []
    /// Receipted changes evicted to make room (HQ already holds them).
    public var evicted = 0
    /// Records whose state changed.
    public var recordsChanged = 0
    /// Changes refused because they contradict the held log (a fork: another change at their position,
    /// a `prevHash` that is not the held predecessor's hash, a hash that is not the held successor's
    /// `prevHash`, a descendant of such a change in the same batch, or a change of a forked log that
    /// cannot be linked to a held predecessor). Never stored; the first branch held is kept.
    public var refusedForked: [[UInt8]] = []
    /// Fork evidence newly recorded (from the batch's changes or its `forks`).
    public var forksRecorded = 0
    /// Changes of the batch's `revoked` newly quarantined (already quarantined ones are not counted).
    public var quarantinedRevoked = 0

    /// An empty report.
    public init() {}
}

/// Limits a store enforces.
public struct StoreLimits: Sendable, Equatable {
    /// Maximum bytes of stored changes (relay boxes); nil for no quota.
    public var quotaBytes: Int?
    /// Maximum changes held back behind gaps, over all logs.
    public var maxHeldBack: Int
    /// Most fork proofs kept per log: one convicts the author; a few more show how far the branches go.
    /// Bounds what an equivocating author can make every node store.
    public var maxForkProofsPerLog: Int

    /// Creates limits.
    public init(quotaBytes: Int? = nil, maxHeldBack: Int = 100_000, maxForkProofsPerLog: Int = 4) {
        self.quotaBytes = quotaBytes
        self.maxHeldBack = maxHeldBack
        self.maxForkProofsPerLog = maxForkProofsPerLog
    }
}

/// A store's health, for `fieldsync status` and the simulator.
public struct StoreStatus: Sendable, Equatable {
    /// Number of logs held.
    public var logs = 0
    /// Number of changes held.
    public var changes = 0
    /// Bytes of changes held.
    public var changeBytes = 0
    /// Changes held back behind gaps.
    public var heldBack = 0
    /// Changes held whose payload this node has not opened (no key yet, or a relay).
    public var unopened = 0
    /// Materialized records.
    public var records = 0
    /// Fork proofs recorded.
    public var forks = 0
    /// Changes HQ has receipted.
    public var receipted = 0
    /// Changes found corrupt on disk and quarantined, not yet received again intact from a peer
    /// (`SyncStore.quarantined()`).
    public var quarantined = 0
    /// Changes by revoked devices dated after their revocation's cut-off, stored before the revocation
    /// was known and quarantined when it arrived (kept for audit, out of the records; attack case 35).
    public var revokedQuarantined = 0
    /// The limits in force.
    public var limits = StoreLimits()

    /// An empty status.
    public init() {}
}

/// When one change of a record's history first reached this node (`SyncStore.arrivals(of:)`).
public struct ChangeArrival: Sendable, Equatable {
    /// Its log (author, scope).
    public var log: LogID
    /// Its seq.
    public var seq: UInt64
    /// Its author's HLC (when it was written).
    public var hlc: HLCTimestamp
    /// When it was first committed on this node (the node's wall clock, ms since the Unix epoch: the
    /// commit's `CommitBatch.now`); nil when unknown: stored before the store kept arrival times (an
    /// SQLite store migrated from schema version 7 or older), or by a batch without `now`.
    public var arrivedAt: UInt64?

    /// Creates an arrival.
    public init(log: LogID, seq: UInt64, hlc: HLCTimestamp, arrivedAt: UInt64?) {
        self.log = log
        self.seq = seq
        self.hlc = hlc
        self.arrivedAt = arrivedAt
    }
}

/// A held change taken out of what the store holds: it is no longer served to peers nor counted in
/// `holdings`. Two causes:
/// - `.damaged`: found corrupt on disk (its bytes no longer hash to its recorded hash, do not decode,
///   or disagree with its indexed header columns); reconciliation fetches it again from a peer, and the
///   damaged bytes are kept beside it for forensics.
/// - `.revoked`: signed by a device whose revocation (learned after the change was stored) has a cut-off
///   before the change's HLC (attack case 35). Its edits are taken out of the records; its bytes are
///   kept, intact, for audit. Peers that know the revocation refuse it, so it never comes back.
public struct QuarantinedChange: Sendable, Equatable {
    /// Why a change is in quarantine.
    public enum Cause: String, Sendable {
        /// Corrupt on disk; waiting for an intact copy from a peer (`repaired` once received).
        case damaged
        /// Dated after its author's revocation cut-off; kept for audit, never repaired.
        case revoked
    }

    /// Why it is in quarantine.
    public var cause: Cause = .damaged
    /// The log it was held in.
    public var log: LogID
    /// Its seq.
    public var seq: UInt64
    /// The hash the store had recorded for it (itself possibly the damaged part).
    public var hash: [UInt8]
    /// What the check found.
    public var reason: String
    /// When it was found (wall clock, ms since the Unix epoch).
    public var detectedAt: Int64
    /// Whether an intact copy has since been received from a peer and stored again.
    public var repaired: Bool
    /// The change's bytes as they were held (damaged ones as found; revoked ones intact, the evidence).
    public var bytes: [UInt8] = []

    /// Creates a quarantine entry.
    public init(log: LogID, seq: UInt64, hash: [UInt8], reason: String, detectedAt: Int64, repaired: Bool, cause: Cause = .damaged,
                bytes: [UInt8] = []) {
        self.cause = cause
        self.bytes = bytes
        self.log = log
        self.seq = seq
        self.hash = hash
        self.reason = reason
        self.detectedAt = detectedAt
        self.repaired = repaired
    }
}

/// A held change to quarantine because its author's revocation cut-off precedes its HLC (a
/// `CommitBatch.revoked` entry, decided by `Replicator.quarantineRevokedChanges`).
public struct RevokedQuarantine: Sendable, Equatable {
    /// The change as held.
    public var change: StoredChange
    /// Which revocation, for people (issuer, cut-off).
    public var reason: String
    /// When the node found it (wall clock, ms since the Unix epoch; passed in, not read here).
    public var detectedAt: Int64

    /// Creates an entry.
    public init(change: StoredChange, reason: String, detectedAt: Int64) {
        self.change = change
        self.reason = reason
        self.detectedAt = detectedAt
    }
}

/// The contract the sync logic needs from storage, expressed in FieldSync's types. Two implementations
/// pass one conformance suite: `MemoryStore` (tests, simulator) and `SQLiteStore` (nodes).
///
/// Stores are used from one place at a time (a node's store executor, the simulator's event loop);
/// `commit` is atomic and durable when it returns.
extension SyncStore {
    /// Default: one `commit(_:)` per batch, in order (a failure leaves the batches before it applied).
    public func commit(_ batches: [CommitBatch]) throws -> [CommitReport] { try batches.map { try commit($0) } }

    /// Default: `forks()` filtered.
    public func forks(of log: LogID) throws -> [ForkEvidence] { try forks().filter { $0.log == log } }

    /// Default: the keys of `changes(_:in:)` (which reads the bytes; stores that can skip them override it).
    public func changeKeys(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChangeKey] {
        try changes(log, in: seqs).map(StoredChangeKey.init)
    }

    /// Default: the keys of `holdings()`, sorted.
    public func orderedLogs() throws -> [LogID] { try holdings().keys.sorted() }

    /// Default: `holdings()`, then `changeKeys(_:in:)` of each log's last held seq and `receipted(_:)`.
    public func logSummaries() throws -> [LogSummary] {
        var out: [LogSummary] = []
        for (log, held) in try holdings().sorted(by: { $0.key < $1.key }) {
            guard let top = held.ranges.last?.upperBound else { continue }
            out.append(LogSummary(log: log, held: held, newest: try changeKeys(log, in: top...top).first, receipted: try receipted(log)))
        }
        return out
    }

    /// Default: `records(_:)` (every match, `limit` not applied) counted per scope.
    public func recordTallies(_ query: RecordQuery) throws -> [RecordTally] {
        var all = query
        all.limit = nil
        return RecordTally.tally(try records(all))
    }

    /// Default: the changes of each record's `history(of:)`, arrival times unknown (a store that keeps
    /// them overrides it).
    public func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]] {
        var out: [RecordID: [ChangeArrival]] = [:]
        for id in records {
            let held = try history(of: id)
            if !held.isEmpty { out[id] = held.map { ChangeArrival(log: $0.log, seq: $0.seq, hlc: $0.hlc, arrivedAt: nil) } }
        }
        return out
    }

    /// Default: no count; every log counts as changed.
    public var holdingsGeneration: UInt64? { nil }
    /// Default: cannot say.
    public func logsChanged(since generation: UInt64) -> [LogID]? { nil }

    /// Default: built from `holdings(of:)` and `hash(_:seq:)`.
    public func logHoldings(_ log: LogID) throws -> LogHoldings? { try Self.buildLogHoldings(log, in: self) }

    /// Default: `orderedLogs()`, then `logHoldings(_:)` of each log `include` accepts.
    public func orderedLogHoldings(where include: (LogID) throws -> Bool) throws -> [(log: LogID, holdings: LogHoldings?)] {
        var out: [(log: LogID, holdings: LogHoldings?)] = []
        for log in try orderedLogs() where try include(log) { out.append((log, try logHoldings(log))) }
        return out
    }

    /// What one log offers to reconciliation: its held intervals (up to `maximumLogHeight`) with the
    /// hash of the change at each interval's end; nil if nothing is held.
    static func buildLogHoldings(_ log: LogID, in store: any SyncStore) throws -> LogHoldings? {
        var intervals: [HeldInterval] = []
        var coversHeld = true
        for r in try store.holdings(of: log).ranges {
            guard r.upperBound <= UInt64(maximumLogHeight), let h = try store.hash(log, seq: r.upperBound) else {
                coversHeld = false
                continue
            }
            intervals.append(HeldInterval(start: UInt32(r.lowerBound), end: UInt32(r.upperBound), endHash: h))
        }
        guard !intervals.isEmpty else { return nil }
        var held = LogHoldings(log: log, intervals: intervals)
        held.coversHeld = coversHeld
        return held
    }
}

/// How many records of one scope match a query, and the newest of their last-modified HLCs
/// (`SyncStore.recordTallies(_:)`): what a page that only counts records asks (the command center's visits
/// by county), from the clear index columns.
public struct RecordTally: Sendable, Equatable {
    /// The records' scope.
    public var scope: Scope
    /// How many match.
    public var count: Int
    /// The greatest `lastModified` HLC among them (raw 0 for records with none).
    public var newest: HLCTimestamp

    /// Creates a tally.
    public init(scope: Scope, count: Int, newest: HLCTimestamp) {
        self.scope = scope
        self.count = count
        self.newest = newest
    }

    /// `records` counted per scope (in scope order), as a store answers from its index columns.
    public static func tally(_ records: [Record]) -> [RecordTally] {
        var by: [Scope: RecordTally] = [:]
        for r in records {
            let updated = r.lastModified.value?.hlc ?? HLCTimestamp(raw: 0)
            by[r.scope, default: RecordTally(scope: r.scope, count: 0, newest: HLCTimestamp(raw: 0))].count += 1
            if updated.raw > by[r.scope]!.newest.raw { by[r.scope]!.newest = updated }
        }
        return by.values.sorted { $0.scope.path < $1.scope.path }
    }
}

/// One log as a reading node's pages show it (`LogActivity`: the command center's map and units page): what
/// is held, the key of the newest held change, HQ's receipt.
public struct LogSummary: Sendable, Equatable {
    /// The log.
    public var log: LogID
    /// What is held of it (never empty).
    public var held: HeldIntervals
    /// The key of the change at the end of `held` (nil if its bytes were evicted).
    public var newest: StoredChangeKey?
    /// The highest seq HQ has receipted (0 if none).
    public var receipted: UInt64

    /// Creates a summary.
    public init(log: LogID, held: HeldIntervals, newest: StoredChangeKey?, receipted: UInt64) {
        self.log = log
        self.held = held
        self.newest = newest
        self.receipted = receipted
    }
}

public protocol SyncStore: AnyObject {
    /// What is held of every log.
    func holdings() throws -> [LogID: HeldIntervals]
    /// What is held of one log (empty if nothing).
    func holdings(of log: LogID) throws -> HeldIntervals
    /// The logs held, in `LogID` order (what sessions reconcile; stores may keep the order).
    func orderedLogs() throws -> [LogID]
    /// What one log offers to reconciliation (held intervals with their end hashes), nil if nothing is
    /// held; a store may keep it between commits (every session asks for every log it reconciles).
    func logHoldings(_ log: LogID) throws -> LogHoldings?
    /// Every held log that `include` accepts, in `LogID` order, each with `logHoldings` of it (nil where that
    /// is nil): what a session reconciles, read in one pass (a store that keeps its logs in order and their
    /// views beside them answers without a lookup per log).
    func orderedLogHoldings(where include: (LogID) throws -> Bool) throws -> [(log: LogID, holdings: LogHoldings?)]
    /// A count of the commits so far that changed what some log holds, for `logsChanged(since:)`; nil if
    /// the store keeps no such count (then every log counts as changed).
    var holdingsGeneration: UInt64? { get }
    /// The logs whose holdings (`holdings(of:)`) commits after `generation` (a `holdingsGeneration` read
    /// before) may have changed, each once, in no particular order; a superset is allowed. Nil if the store
    /// cannot say (it keeps no record back that far, or went back to an earlier state since): the caller
    /// must then treat every log as changed. What lets a session that reconciled every log look again only
    /// at the logs that moved while it ran.
    func logsChanged(since generation: UInt64) -> [LogID]?
    /// One change, if held.
    func change(_ log: LogID, seq: UInt64) throws -> StoredChange?
    /// The hash of the change at a position, even if its bytes were evicted (reconciliation heads).
    func hash(_ log: LogID, seq: UInt64) throws -> [UInt8]?
    /// The held changes of `log` within `seqs`, in seq order.
    func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange]
    /// The keys of the held changes of `log` within `seqs` (those `changes(_:in:)` returns), in seq order,
    /// without reading their bytes: what a session sorts into its sending order before it reads the
    /// changes a page at a time. Not checked for damage (that happens when the bytes are read).
    func changeKeys(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChangeKey]
    /// Applies a batch atomically (changes, record merges, forks, receipts).
    func commit(_ batch: CommitBatch) throws -> CommitReport
    /// Applies several batches in order, each exactly as `commit(_:)` would after the ones before it,
    /// with one report per batch. A store with transactions applies them all in one (`SQLiteStore`: one
    /// write transaction, one sync to disk; all of them or, if it throws, none), so that a node committing
    /// several verified batches that are ready together pays for one; the default commits them one by one
    /// (a failure leaves the batches before it applied). Nothing of any of them may be acknowledged to a
    /// peer before this returns.
    func commit(_ batches: [CommitBatch]) throws -> [CommitReport]
    /// One materialized record.
    func record(_ id: RecordID) throws -> Record?
    /// Which of `ids` the store holds a record of (deleted ones included): one query for many ids,
    /// for checks that would otherwise look records up one by one (`fieldsync import`).
    func heldRecordIDs(_ ids: [RecordID]) throws -> Set<RecordID>
    /// Records matching a query, newest event first.
    func records(_ query: RecordQuery) throws -> [Record]
    /// Per scope, how many records match `query` and the newest of their last-modified HLCs, in scope order
    /// (`limit` not applied): what a page that only counts records asks (the command center's visits by
    /// county). A store answers it from its clear index columns without opening a record where it can.
    func recordTallies(_ query: RecordQuery) throws -> [RecordTally]
    /// The ids of the records (deleted and damaged ones included) whose id lies in `range`, in id order:
    /// what a lookup by id prefix asks (`RecordID.prefixRange(_:)`). A store answers it from an index on
    /// the id, not by reading records.
    func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID]
    /// Every held change whose edits touched the record, in HLC order: its signed edit history.
    func history(of id: RecordID) throws -> [StoredChange]
    /// For each of `records`, the changes of its history (as `history(of:)`, evicted ones included, without
    /// their bytes) with the time each first reached this node (`CommitBatch.now` of the commit that
    /// stored it). What "feedback that reached this node after its deadline" is judged by
    /// (docs/reports.md). Records with no held change are absent.
    func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]]
    /// Held changes whose payload this node has not opened, in `scope` or below (nil: all).
    func unopened(in scope: Scope?) throws -> [StoredChange]
    /// Held key grants and revocations (content types 0x80 and 0x81), in HLC order: what a node re-reads
    /// on start to restore the keys and revocations it learned (`Replicator.restoreControlState`).
    /// Control changes are never evicted under a relay quota.
    func controlChanges() throws -> [StoredChange]
    /// Fork proofs recorded, by log then seq.
    func forks() throws -> [ForkEvidence]
    /// Fork proofs recorded for one log, by seq (empty for a log with no fork).
    func forks(of log: LogID) throws -> [ForkEvidence]
    /// The highest seq of `log` HQ has receipted (0 if none).
    func receipted(_ log: LogID) throws -> UInt64
    /// Every log that holds something, in `LogID` order: its held intervals, the key of its newest held change
    /// and HQ's receipt (what `holdings()`, `changeKeys(_:in:)` of each log's last seq and `receipted(_:)`
    /// give, in one read: a year's store at HQ has about 10,000 logs, and a page that asks it log by log
    /// spends seconds).
    func logSummaries() throws -> [LogSummary]
    /// Every certificate kept by `commit` (authors of held changes), in no particular order: what a
    /// node re-reads on start (`Replicator.restoreCertificates`) to keep forwarding what it holds.
    func certificates() throws -> [Certificate]
    /// Counters and limits.
    func status() throws -> StoreStatus
    /// Changes in quarantine, oldest first: found corrupt on disk (pending and repaired; stores that
    /// check what they read, `SQLiteStore`, quarantine a damaged change instead of serving it), and
    /// changes by revoked devices dated after their cut-off (cause `.revoked`).
    func quarantined() throws -> [QuarantinedChange]
    /// The held changes (not evicted) of `author`, in every scope, whose HLC is after `hlc`: the
    /// candidates for quarantine when a revocation of `author` with that cut-off is learned.
    func changes(by author: DeviceID, after hlc: HLCTimestamp) throws -> [StoredChange]
}

extension StoredChange: CanonicalCodable {
    public func encode(to writer: inout ByteWriter) {
        log.encode(to: &writer)
        writer.writeVarint(seq)
        writer.writeBytes(hash)
        writer.writeBytes(prevHash)
        hlc.encode(to: &writer)
        writer.writeByte(contentType.rawValue)
        writer.writeByte(priority.rawValue)
        writer.writeBytes(bytes)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        log = try LogID(from: &reader)
        seq = try reader.readVarint()
        hash = try reader.readBytes()
        prevHash = try reader.readBytes()
        hlc = try HLCTimestamp(from: &reader)
        contentType = ContentType(rawValue: try reader.readByte())
        let at = reader.offset
        let p = try reader.readByte()
        guard let priority = Priority(rawValue: p) else { throw DecodingError(.invalidValue, at: at, "priority \(p)") }
        self.priority = priority
        bytes = try reader.readBytes()
    }
}

/// What one commit changed, as `Replicator.commitObserver` reports it.
public struct CommitNotice: Sendable {
    /// The records the commit merged edits into or rebuilt, each once, with the author of the last
    /// edit merged (nil for a record rebuilt after a revocation).
    public var records: [(id: RecordID, author: DeviceID?)] = []
    /// HQ receipts learned: per log, HQ holds 1...seq.
    public var receipts: [LogID: UInt64] = [:]
    /// Revocations newly learned.
    public var revocationsLearned = 0

    /// An empty notice.
    public init() {}

    /// Whether the commit changed nothing an observer is told about.
    public var isEmpty: Bool { records.isEmpty && receipts.isEmpty && revocationsLearned == 0 }
}

extension SyncStore {
    /// Default: a scan of every record (deleted ones included); stores with an id index answer it there.
    public func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID] {
        try records(RecordQuery(includeDeleted: true)).map(\.id).filter(range.contains).sorted()
    }

    /// Default: one `record(_:)` lookup per id.
    public func heldRecordIDs(_ ids: [RecordID]) throws -> Set<RecordID> {
        var out = Set<RecordID>()
        for id in ids where try record(id) != nil { out.insert(id) }
        return out
    }
}
