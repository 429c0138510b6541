import FieldSyncCore
import FieldSyncCrypto

/// How an incoming change relates to what a store holds.
public enum ChangePresence: Sendable, Equatable {
    /// Neither the change nor its position is held.
    case new
    /// The same change (same hash) is held.
    case duplicate
    /// Another change is held at its position: a fork.
    case conflicting(StoredChange)
}

/// The primitive reads and writes a store offers inside one transaction. `CommitLogic` is written once
/// against this, so `MemoryStore` and `SQLiteStore` apply batches by exactly the same rules.
public protocol StoreTransaction {
    /// The held change at a position, if any.
    func existing(_ log: LogID, seq: UInt64) throws -> StoredChange?
    /// Whether a change with this hash is held.
    func holds(hash: [UInt8]) throws -> Bool
    /// Whether `change`, or another change at its position, is held (stores may answer in one lookup).
    func presence(of change: StoredChange) throws -> ChangePresence
    /// Held intervals of a log.
    func intervals(_ log: LogID) throws -> HeldIntervals
    /// Replaces a log's held intervals.
    mutating func setIntervals(_ log: LogID, _ intervals: HeldIntervals) throws
    /// Stores a change; `opened` says whether its payload is opened and merged in this same batch.
    mutating func insert(_ change: StoredChange, opened: Bool) throws
    /// Total changes held back behind gaps.
    func heldBackTotal() throws -> Int
    /// Total bytes of held changes.
    func bytesTotal() throws -> Int
    /// Deletes the bytes of receipted changes (lowest priority, then oldest, first) until `bytes` are
    /// freed or none is left; returns how many were evicted and the bytes freed. Evicted seqs stay in
    /// the log's held intervals: the node has seen them and HQ holds them, so peers get them elsewhere.
    mutating func evictReceipted(bytes: Int) throws -> (count: Int, freed: Int)
    /// A materialized record.
    func loadRecord(_ id: RecordID) throws -> Record?
    /// Several materialized records at once (stores may answer in one query).
    func loadRecords(_ ids: [RecordID]) throws -> [RecordID: Record]
    /// Saves a record and notes which changes touched it (for its history).
    mutating func saveRecord(_ record: Record, touchedBy hashes: [[UInt8]]) throws
    /// Marks a change's payload as opened and merged.
    mutating func markOpened(_ hash: [UInt8]) throws
    /// Records fork evidence (`CommitLogic` has checked it is new and within the per-log bound).
    mutating func addFork(_ fork: ForkEvidence) throws
    /// Fork evidence recorded for a log, including what this transaction added.
    func forks(of log: LogID) throws -> [ForkEvidence]
    /// Raises the receipt of a log (never lowers it).
    mutating func raiseReceipt(_ log: LogID, to seq: UInt64) throws
    /// Keeps a certificate (of an author of held changes, or of its issuing authority); several per
    /// subject are kept (renewals); the same certificate twice is kept once.
    mutating func keepCertificate(_ certificate: Certificate) throws
    /// Moves a held change (found by hash) to the quarantine with cause `.revoked`, bytes kept; its
    /// record links stay (audit). `CommitLogic` takes its seq out of the log's intervals.
    /// - Returns: false if the change is not held (already quarantined, or never stored).
    mutating func quarantineRevoked(_ entry: RevokedQuarantine) throws -> Bool
    /// Removes a materialized record (no held change touches it any more); its history links stay.
    mutating func removeRecord(_ id: RecordID) throws
}

/// Why a store refuses a batch outright (nothing of it is applied).
public struct StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Sendable {
        /// An edit contradicts the record it targets (another kind or scope): a verifier let it through.
        case inconsistentEdit
        /// The database file is not a FieldSync store, is corrupted, or was written by a newer version.
        case badDatabase
        /// The storage key does not open this store's records.
        case wrongKey
        /// The database could not be read or written: the disk is full, the file cannot be opened or
        /// written (permissions, read-only), or an I/O failure. `resultCode` says which, when SQLite
        /// reported it.
        case ioError
        /// Another connection (usually another process: a node's daemon and a CLI command on the same
        /// store) held the database's write lock for longer than the store waits (`SQLITE_BUSY`).
        /// Nothing of the batch was applied; retrying later is safe.
        case busy
        /// A stored row fails its integrity check (a sealed record that does not open although the
        /// storage key is right, a change whose bytes do not match its hash): damaged on disk.
        case damaged
    }

    /// The code.
    public var code: Code
    /// Detail for people: what to do.
    public var detail: String
    /// The SQLite result code behind the error (extended code, as GRDB's `ResultCode` raw value: 5 is
    /// `SQLITE_BUSY`, 13 `SQLITE_FULL`), or nil when the error did not come from SQLite.
    public var resultCode: Int32?

    /// Creates a store error.
    public init(_ code: Code, _ detail: String, resultCode: Int32? = nil) {
        self.code = code
        self.detail = detail
        self.resultCode = resultCode
    }

    public var description: String { "store: \(code.rawValue): \(detail)" }
}

/// The rules of applying a batch, shared by every store.
public enum CommitLogic {
    /// Applies `batch` inside `tx`. The caller runs it in one transaction and rolls back if it throws.
    ///
    /// Rules: a change already held (same hash) is a harmless duplicate; a change that contradicts the
    /// held log is a fork, is refused and recorded as evidence (the first branch held is kept): another
    /// change at its position, a `prevHash` that is not the held predecessor's hash, or a hash that is
    /// not the held successor's `prevHash`; a descendant of a change refused so in the same batch is
    /// refused with it, and in a log with a recorded fork a change whose predecessor is not held is
    /// refused (it could not be checked, and would let the other branch in behind a gap; it is offered
    /// again once its predecessor is held). Changes are taken most urgent first and, under a quota,
    /// receipted changes are evicted to make room and the least urgent incoming changes are refused (and
    /// reported) when no room is left; changes beyond `maxHeldBack` waiting behind gaps are refused (and
    /// reported); edits merge into their records.
    public static func commit<T: StoreTransaction>(_ batch: CommitBatch, in tx: inout T, limits: StoreLimits) throws
        -> CommitReport
    {
        var report = CommitReport()
        var touchedLogs: [LogID: HeldIntervals] = [:]
        var refused = Set<ChangeHashKey>()
        var forkRefused = Set<ChangeHashKey>()  // refused as contradicting the held log: their descendants follow
        var heldBack = try tx.heldBackTotal()
        let openedNow = Set(batch.opened.map(ChangeHashKey.init))
        var markedAtInsert = Set<ChangeHashKey>()
        var bytes = try tx.bytesTotal()
        let trustLearned = Set(batch.trustLearned.map(ChangeHashKey.init))  // kept whatever the limits
        var lastInserted: [LogID: (seq: UInt64, hash: [UInt8])] = [:]
        var forkedLogs: [LogID: Bool] = [:]  // whether a log has fork evidence (asked only when it matters)
        func isForked(_ log: LogID) throws -> Bool {
            if let known = forkedLogs[log] { return known }
            let f = try !tx.forks(of: log).isEmpty
            forkedLogs[log] = f
            return f
        }
        func record(_ evidence: ForkEvidence) throws {
            forkedLogs[evidence.log] = true
            let known = try tx.forks(of: evidence.log)
            guard !known.contains(where: { $0.names(evidence.kept.hash, evidence.conflicting.hash) }),
                  known.count < limits.maxForkProofsPerLog else { return }
            try tx.addFork(evidence)
            report.forksRecorded += 1
        }
        func refuseForked(_ c: StoredChange) {
            report.refusedForked.append(c.hash)
            refused.insert(ChangeHashKey(c.hash))
            forkRefused.insert(ChangeHashKey(c.hash))
        }
        // Most urgent first, then oldest: under pressure the least urgent are the ones refused.
        let ordered = batch.changes.enumerated().sorted { a, b in
            (a.element.priority, a.element.hlc, a.offset) < (b.element.priority, b.element.hlc, b.offset)
        }.map(\.element)
        for c in ordered {
            if c.seq > 1, forkRefused.contains(ChangeHashKey(c.prevHash)) {  // continues a branch refused above
                refuseForked(c)
                continue
            }
            switch try tx.presence(of: c) {
            case .duplicate:
                report.duplicates += 1
                continue
            case let .conflicting(kept):
                try record(ForkEvidence(log: c.log, seq: c.seq, kept: kept, conflicting: c))
                refuseForked(c)
                continue
            case .new: break
            }
            var iv = try touchedLogs[c.log] ?? tx.intervals(c.log)
            // The hash chain, checked against the held neighbours (Protocols/sync.md, Batches).
            // In-order batches find the predecessor among the changes just inserted, without a lookup.
            let predecessorHash: [UInt8]?
            if c.seq > 1, let last = lastInserted[c.log], last.seq == c.seq - 1 {
                predecessorHash = last.hash
            } else {
                predecessorHash = c.seq > 1 && iv.contains(c.seq - 1) ? try tx.existing(c.log, seq: c.seq - 1)?.hash : nil
            }
            if let ph = predecessorHash, ph != c.prevHash, let p = try tx.existing(c.log, seq: c.seq - 1) {
                try record(ForkEvidence(kept: p, conflicting: c))
                refuseForked(c)
                continue
            }
            if iv.contains(c.seq + 1), let s = try tx.existing(c.log, seq: c.seq + 1), s.prevHash != c.hash {
                try record(ForkEvidence(kept: s, conflicting: c))
                refuseForked(c)
                continue
            }
            if c.seq > 1, predecessorHash == nil, try isForked(c.log) {
                refuseForked(c)
                continue
            }
            let wouldHoldBack = c.seq > iv.frontier + 1
            let mustKeep = !trustLearned.isEmpty && trustLearned.contains(ChangeHashKey(c.hash))
            if wouldHoldBack && heldBack >= limits.maxHeldBack && !mustKeep {
                report.refusedHeldBack.append(c.hash)
                refused.insert(ChangeHashKey(c.hash))
                continue
            }
            if let quota = limits.quotaBytes, bytes + c.bytes.count > quota, !mustKeep {
                let freed = try tx.evictReceipted(bytes: bytes + c.bytes.count - quota)
                report.evicted += freed.count
                bytes -= freed.freed
                if bytes + c.bytes.count > quota {
                    report.refusedForQuota.append(c.hash)
                    refused.insert(ChangeHashKey(c.hash))
                    continue
                }
            }
            let key = ChangeHashKey(c.hash)
            try tx.insert(c, opened: openedNow.contains(key))
            if openedNow.contains(key) { markedAtInsert.insert(key) }
            let heldBackBefore = iv.heldBack
            iv.insert(c.seq)  // filling a gap can release held-back changes: the delta may be negative
            heldBack += Int(iv.heldBack) - Int(heldBackBefore)
            touchedLogs[c.log] = iv
            lastInserted[c.log] = (c.seq, c.hash)
            bytes += c.bytes.count
            report.inserted += 1
        }
        for (log, iv) in touchedLogs.sorted(by: { $0.key < $1.key }) { try tx.setIntervals(log, iv) }
        // Merge edits of changes that are now held (refused changes' edits are dropped with them). Each
        // record is loaded, merged and saved once per batch.
        let edits = batch.edits.filter { !refused.contains(ChangeHashKey($0.change)) }
        var records = try tx.loadRecords(Array(Set(edits.map(\.edit.record))).sorted())
        var touchers: [RecordID: [[UInt8]]] = [:]
        for (edit, hash) in edits {
            var r = records[edit.record] ?? Record(id: edit.record, kind: edit.kind, scope: edit.scope)
            do { try r.apply(edit) } catch {
                throw StoreError(.inconsistentEdit, "\(error)")
            }
            records[edit.record] = r
            touchers[edit.record, default: []].append(hash)
        }
        for id in records.keys.sorted() { try tx.saveRecord(records[id]!, touchedBy: touchers[id]!) }
        report.recordsChanged = records.count
        for h in batch.opened where !refused.contains(ChangeHashKey(h)) && !markedAtInsert.contains(ChangeHashKey(h)) {
            try tx.markOpened(h)
        }
        for f in batch.forks { try record(f) }
        // Changes by revoked devices dated after the cut-off (attack case 35): out of the held changes and
        // intervals, into the quarantine; then the records they touched, folded again without them.
        for q in batch.revoked {
            guard try tx.quarantineRevoked(q) else { continue }
            var iv = try tx.intervals(q.change.log)
            iv.remove(q.change.seq)
            try tx.setIntervals(q.change.log, iv)
            report.quarantinedRevoked += 1
        }
        for (id, rebuilt) in batch.rebuilt.sorted(by: { $0.key < $1.key }) {
            if let r = rebuilt { try tx.saveRecord(r, touchedBy: []) } else { try tx.removeRecord(id) }
        }
        report.recordsChanged += batch.rebuilt.count
        for (log, seq) in batch.receipts.sorted(by: { $0.key < $1.key }) { try tx.raiseReceipt(log, to: seq) }
        for c in batch.certificates { try tx.keepCertificate(c) }
        return report
    }
}

extension StoreTransaction {
    /// Default: one lookup per record.
    public func loadRecords(_ ids: [RecordID]) throws -> [RecordID: Record] {
        var out: [RecordID: Record] = [:]
        for id in ids { if let r = try loadRecord(id) { out[id] = r } }
        return out
    }

    /// Default: two lookups.
    public func presence(of change: StoredChange) throws -> ChangePresence {
        if try holds(hash: change.hash) { return .duplicate }
        if let kept = try existing(change.log, seq: change.seq) { return kept.hash == change.hash ? .duplicate : .conflicting(kept) }
        return .new
    }
}

/// A change hash as a set or dictionary key. Change hashes are uniformly random (BLAKE2b), so hashing
/// their first 8 bytes is enough; `[UInt8]`'s own hashing feeds the hasher byte by byte, which showed
/// up at 2% of the ingest profile.
struct ChangeHashKey: Hashable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func hash(into hasher: inout Hasher) {
        var head: UInt64 = 0
        for b in bytes.prefix(8) { head = head << 8 | UInt64(b) }
        hasher.combine(head)
    }
    static func == (a: ChangeHashKey, b: ChangeHashKey) -> Bool { a.bytes == b.bytes }
}
