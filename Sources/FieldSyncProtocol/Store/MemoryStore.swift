import FieldSyncCore
import FieldSyncCrypto

/// Shares equal values between the `MemoryStore`s of one process (a simulator holding thousands of
/// replicas of the same records and changes): a saved record equal to the last version seen of it is
/// replaced by that version, and a stored change by the one other stores hold under the same id, so
/// converged replicas share one copy. Values are unchanged; real nodes do not use it.
public final class RecordInterner {
    private var latest: [RecordID: MemoryStore.RecordBox] = [:]
    private var changes: [ChangeHashKey: MemoryStore.ChangeBox] = [:]
    /// Saves answered with an already held equal value.
    public private(set) var shared = 0

    /// An empty interner.
    public init() {}

    func intern(_ r: Record) -> MemoryStore.RecordBox {
        if let l = latest[r.id], l.value == r {
            shared += 1
            return l
        }
        let box = MemoryStore.RecordBox(r)
        latest[r.id] = box
        return box
    }

    func intern(_ c: StoredChange) -> MemoryStore.ChangeBox {
        guard !c.bytes.isEmpty else { return MemoryStore.ChangeBox(c) }  // an evicted copy is this store's own
        let key = ChangeHashKey(c.hash)
        if let held = changes[key], held.value.bytes == c.bytes { return held }
        let box = MemoryStore.ChangeBox(c)
        changes[key] = box
        return box
    }
}

/// An in-memory `SyncStore` for the simulator and tests. Same rules as `SQLiteStore` (both apply
/// batches through `CommitLogic`), no durability: a simulated crash drops it whole or keeps it whole,
/// as a committed SQLite transaction would.
public final class MemoryStore: SyncStore {
    /// A stored change, referenced from the store's indices (one reference per index entry instead of a
    /// copy of the whole value; shared between stores through a `RecordInterner`).
    final class ChangeBox {
        let value: StoredChange
        init(_ value: StoredChange) { self.value = value }
    }

    /// A record, referenced from the store's table (shared between stores through a `RecordInterner`).
    final class RecordBox {
        let value: Record
        init(_ value: Record) { self.value = value }
    }

    struct State {
        var changes: [LogID: [UInt64: ChangeBox]] = [:]
        // Keyed by `ChangeHashKey` (hashes 8 bytes of the id; hashing a [UInt8] goes byte by byte).
        var byHash: [ChangeHashKey: ChangeBox] = [:]
        var evicted: Set<ChangeHashKey> = []
        var intervalsByLog: [LogID: HeldIntervals] = [:]
        var recordsByID: [RecordID: RecordBox] = [:]
        var touched: [RecordID: [[UInt8]]] = [:]
        var openedHashes: Set<ChangeHashKey> = []
        var forksByLog: [LogID: [ForkEvidence]] = [:]
        var forkCount = 0
        var receipts: [LogID: UInt64] = [:]
        var certificates: [DeviceID: [Certificate]] = [:]  // every one kept, by subject (renewals)
        var totalBytes = 0
        var heldBackTotal = 0
        /// Changes quarantined because their author was revoked before their HLC, oldest first, with their bytes.
        var quarantine: [QuarantinedChange] = []
        /// When each held change was first committed here (`CommitBatch.now`); absent: unknown. Kept beside
        /// the change, not in its box: boxes are shared between stores (`RecordInterner`), arrivals are not.
        var arrivals: [ChangeHashKey: UInt64] = [:]
    }

    /// A transaction: reads see the store's state overlaid with this transaction's writes; nothing
    /// touches the state until `apply()`, so a failed commit leaves the store exactly as it was, and a
    /// successful one costs only what it writes (no copy of the whole store).
    struct Tx: StoreTransaction {
        unowned let store: MemoryStore
        var changes: [LogID: [UInt64: StoredChange]] = [:]
        var byHash: [ChangeHashKey: (LogID, UInt64)] = [:]
        var evicted: [[UInt8]] = []
        var intervals: [LogID: HeldIntervals] = [:]
        var records: [RecordID: (Record, [[UInt8]])] = [:]
        var opened: [[UInt8]] = []
        var forks: [ForkEvidence] = []
        var receipts: [LogID: UInt64] = [:]
        var certificates: [Certificate] = []
        var revoked: [RevokedQuarantine] = []
        var removedRecords: Set<RecordID> = []
        var bytesDelta = 0
        var heldBackDelta = 0
        /// The batch's `now`: the arrival time of the changes it newly stores.
        var now: UInt64?

        private var base: State { store.state }

        func existing(_ log: LogID, seq: UInt64) throws -> StoredChange? { changes[log]?[seq] ?? base.changes[log]?[seq]?.value }
        func holds(hash: [UInt8]) throws -> Bool {
            let key = ChangeHashKey(hash)
            return byHash[key] != nil || base.byHash[key] != nil
        }
        func intervals(_ log: LogID) throws -> HeldIntervals { intervals[log] ?? base.intervalsByLog[log] ?? HeldIntervals() }
        mutating func setIntervals(_ log: LogID, _ new: HeldIntervals) throws {
            heldBackDelta += Int(new.heldBack) - Int(try self.intervals(log).heldBack)
            intervals[log] = new
        }

        mutating func insert(_ change: StoredChange, opened isOpened: Bool) throws {
            if isOpened { opened.append(change.hash) }
            changes[change.log, default: [:]][change.seq] = change
            byHash[ChangeHashKey(change.hash)] = (change.log, change.seq)
            bytesDelta += change.bytes.count
        }

        func heldBackTotal() throws -> Int { base.heldBackTotal + heldBackDelta }
        func bytesTotal() throws -> Int { base.totalBytes + bytesDelta }

        mutating func evictReceipted(bytes needed: Int) throws -> (count: Int, freed: Int) {
            var candidates: [StoredChange] = []
            let receiptLogs = Set(base.receipts.keys).union(receipts.keys)
            for log in receiptLogs.sorted() {
                let upTo = max(base.receipts[log] ?? 0, receipts[log] ?? 0)
                let held = (base.changes[log] ?? [:]).mapValues(\.value).merging(changes[log] ?? [:]) { $1 }
                // Control changes (grants, revocations, receipts: content type >= 0x80) are small and must
                // outlive a restart, so they are never evicted.
                for (seq, c) in held where seq <= upTo && !c.contentType.isControl && !c.bytes.isEmpty && !evicted.contains(c.hash) {
                    candidates.append(c)
                }
            }
            candidates.sort { a, b in
                if a.priority != b.priority { return a.priority > b.priority }  // least urgent first
                if a.hlc != b.hlc { return a.hlc < b.hlc }  // then oldest
                return (a.log, a.seq) < (b.log, b.seq)
            }
            var count = 0, freed = 0
            for c in candidates where freed < needed {
                var kept = c
                kept.bytes = []
                changes[c.log, default: [:]][c.seq] = kept
                evicted.append(c.hash)
                freed += c.bytes.count
                count += 1
            }
            bytesDelta -= freed
            return (count, freed)
        }

        func loadRecord(_ id: RecordID) throws -> Record? { records[id]?.0 ?? base.recordsByID[id]?.value }
        mutating func saveRecord(_ record: Record, touchedBy hashes: [[UInt8]]) throws {
            records[record.id] = (record, (records[record.id]?.1 ?? []) + hashes)
        }
        mutating func markOpened(_ hash: [UInt8]) throws { opened.append(hash) }
        mutating func addFork(_ fork: ForkEvidence) throws { forks.append(fork) }
        func forks(of log: LogID) throws -> [ForkEvidence] { (base.forksByLog[log] ?? []) + forks.filter { $0.log == log } }
        mutating func raiseReceipt(_ log: LogID, to seq: UInt64) throws { receipts[log] = max(receipts[log] ?? 0, seq) }
        mutating func keepCertificate(_ certificate: Certificate) throws { certificates.append(certificate) }
        mutating func quarantineRevoked(_ entry: RevokedQuarantine) throws -> Bool {
            let key = ChangeHashKey(entry.change.hash)
            guard let held = base.byHash[key]?.value, !held.bytes.isEmpty, !revoked.contains(where: { $0.change.hash == held.hash }) else {
                return false
            }
            revoked.append(RevokedQuarantine(change: held, reason: entry.reason, detectedAt: entry.detectedAt))
            bytesDelta -= held.bytes.count
            return true
        }
        mutating func removeRecord(_ id: RecordID) throws {
            records[id] = nil
            removedRecords.insert(id)
        }

        /// Writes the transaction into the store's state, in place.
        func apply() {
            store.state.apply(self, interner: store.recordInterner)
        }
    }

    private var state = State()
    /// Every held log in order, kept by `commit` (logs are never removed; a new one is inserted in place).
    private var sortedLogs: [LogID] = []
    /// Limits in force.
    public var limits: StoreLimits
    /// Schemas used to index records.
    public let schemas: SchemaRegistry
    /// Shares equal records with other stores (simulator only; nil by default).
    public let recordInterner: RecordInterner?

    /// An empty store.
    public init(limits: StoreLimits = StoreLimits(), schemas: SchemaRegistry = .standard, recordInterner: RecordInterner? = nil) {
        self.limits = limits
        self.schemas = schemas
        self.recordInterner = recordInterner
    }

    public func holdings() throws -> [LogID: HeldIntervals] { state.intervalsByLog }
    public func holdings(of log: LogID) throws -> HeldIntervals { state.intervalsByLog[log] ?? HeldIntervals() }
    public func orderedLogs() throws -> [LogID] { sortedLogs }
    public func change(_ log: LogID, seq: UInt64) throws -> StoredChange? {
        guard let c = state.changes[log]?[seq]?.value, !c.bytes.isEmpty else { return nil }
        return c
    }

    public func hash(_ log: LogID, seq: UInt64) throws -> [UInt8]? { state.changes[log]?[seq]?.value.hash }

    public func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange] {
        guard let m = state.changes[log] else { return [] }
        if UInt64(m.count) < seqs.upperBound - seqs.lowerBound {
            return m.filter { seqs.contains($0.key) && !$0.value.value.bytes.isEmpty }.sorted { $0.key < $1.key }.map(\.value.value)
        }
        return seqs.compactMap { m[$0]?.value }.filter { !$0.bytes.isEmpty }
    }

    public func commit(_ batch: CommitBatch) throws -> CommitReport {
        var tx = Tx(store: self)
        tx.now = batch.now
        let report = try CommitLogic.commit(batch, in: &tx, limits: limits)
        let newLogs = tx.intervals.keys.filter { state.intervalsByLog[$0] == nil }
        for log in tx.intervals.keys { logHoldingsCache[log] = nil }  // the only logs whose holdings moved
        tx.apply()
        for log in newLogs.sorted() {
            var lo = 0, hi = sortedLogs.count  // first position whose log is not smaller
            while lo < hi {
                let mid = (lo + hi) / 2
                if sortedLogs[mid] < log { lo = mid + 1 } else { hi = mid }
            }
            sortedLogs.insert(log, at: lo)
        }
        return report
    }

    /// Reconciliation views of logs, kept between commits (a hub answers many sessions per commit).
    private var logHoldingsCache: [LogID: LogHoldings?] = [:]

    public func logHoldings(_ log: LogID) throws -> LogHoldings? {
        if let cached = logHoldingsCache[log] { return cached }
        let built = try Self.buildLogHoldings(log, in: self)
        logHoldingsCache[log] = .some(built)
        return built
    }

    public func record(_ id: RecordID) throws -> Record? { state.recordsByID[id]?.value }

    public func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID] {
        state.recordsByID.keys.filter(range.contains).sorted()
    }

    public func records(_ query: RecordQuery) throws -> [Record] {
        var hits = state.recordsByID.values.map { ($0.value, RecordIndexEntry($0.value, schemas: schemas)) }
            .filter { query.matches($0.0, index: $0.1) }
        hits.sort { ($0.1.eventTime ?? .min, $0.0.id) > ($1.1.eventTime ?? .min, $1.0.id) }
        return hits.prefix(query.limit ?? Int.max).map(\.0)
    }

    public func history(of id: RecordID) throws -> [StoredChange] {
        (state.touched[id] ?? []).compactMap { h in state.byHash[ChangeHashKey(h)].flatMap { state.changes[$0.value.log]?[$0.value.seq]?.value } }
            .sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) }
    }

    public func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]] {
        var out: [RecordID: [ChangeArrival]] = [:]
        for id in records {
            let held = (state.touched[id] ?? []).compactMap { h -> ChangeArrival? in
                let key = ChangeHashKey(h)
                guard let c = state.byHash[key]?.value else { return nil }
                return ChangeArrival(log: c.log, seq: c.seq, hlc: c.hlc, arrivedAt: state.arrivals[key])
            }
            if !held.isEmpty { out[id] = held.sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) } }
        }
        return out
    }

    public func unopened(in scope: Scope?) throws -> [StoredChange] {
        state.changes.keys.sorted().filter { scope?.contains($0.scope) ?? true }.flatMap { log in
            state.changes[log]!.keys.sorted().compactMap { seq -> StoredChange? in
                let c = state.changes[log]![seq]!.value
                return state.openedHashes.contains(ChangeHashKey(c.hash)) || c.bytes.isEmpty ? nil : c
            }
        }
    }

    public func controlChanges() throws -> [StoredChange] {
        state.changes.values.flatMap { $0.values.map(\.value) }
            .filter { $0.contentType.carriesTrust && !$0.bytes.isEmpty }
            .sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) }
    }

    public func forks() throws -> [ForkEvidence] { state.forksByLog.keys.sorted().flatMap { state.forksByLog[$0]! } }
    public func forks(of log: LogID) throws -> [ForkEvidence] { state.forksByLog[log] ?? [] }
    public func receipted(_ log: LogID) throws -> UInt64 { state.receipts[log] ?? 0 }
    public func certificates() throws -> [Certificate] { state.certificates.values.flatMap { $0 } }

    public func quarantined() throws -> [QuarantinedChange] { state.quarantine }

    public func changes(by author: DeviceID, after hlc: HLCTimestamp) throws -> [StoredChange] {
        state.changes.keys.filter { $0.author == author }.sorted().flatMap { log in
            state.changes[log]!.values.map(\.value).filter { $0.hlc > hlc && !$0.bytes.isEmpty }.sorted { $0.seq < $1.seq }
        }
    }

    public func status() throws -> StoreStatus {
        var s = StoreStatus()
        s.revokedQuarantined = state.quarantine.filter { $0.cause == .revoked }.count
        s.logs = state.intervalsByLog.count
        s.changes = state.byHash.count - state.evicted.count
        s.changeBytes = state.totalBytes
        s.heldBack = state.heldBackTotal
        s.unopened = try unopened(in: nil).count
        s.records = state.recordsByID.count
        s.forks = state.forkCount
        s.receipted = state.receipts.reduce(0) { acc, kv in
            acc + (state.changes[kv.key]?.keys.filter { $0 <= kv.value }.count ?? 0)
        }
        s.limits = limits
        return s
    }
}

extension MemoryStore.State {
    mutating func apply(_ tx: MemoryStore.Tx, interner: RecordInterner?) {
        for (log, m) in tx.changes {
            for (seq, c) in m {
                let box = interner?.intern(c) ?? MemoryStore.ChangeBox(c)
                changes[log, default: [:]][seq] = box
                let key = ChangeHashKey(c.hash)
                if tx.byHash[key] != nil {  // new
                    byHash[key] = box
                    if let now = tx.now { arrivals[key] = now }
                } else if byHash[key] != nil {  // evicted in place
                    byHash[key] = box
                }
            }
        }
        evicted.formUnion(tx.evicted.map(ChangeHashKey.init))
        for (log, iv) in tx.intervals { intervalsByLog[log] = iv }
        for (id, (r, hashes)) in tx.records {
            recordsByID[id] = interner?.intern(r) ?? MemoryStore.RecordBox(r)
            for h in hashes where !(touched[id]?.contains(h) ?? false) { touched[id, default: []].append(h) }
        }
        openedHashes.formUnion(tx.opened.map(ChangeHashKey.init))
        for f in tx.forks {  // CommitLogic recorded each once
            forksByLog[f.log, default: []].append(f)
            forksByLog[f.log]!.sort { $0.seq != $1.seq ? $0.seq < $1.seq : $0.conflicting.hash.lexicographicallyPrecedes($1.conflicting.hash) }
            forkCount += 1
        }
        for (log, seq) in tx.receipts { receipts[log] = max(receipts[log] ?? 0, seq) }
        for c in tx.certificates where !(certificates[c.subject]?.contains(c) ?? false) { certificates[c.subject, default: []].append(c) }
        for q in tx.revoked {
            let c = q.change, key = ChangeHashKey(c.hash)
            changes[c.log]?[c.seq] = nil
            byHash[key] = nil
            arrivals[key] = nil
            openedHashes.remove(key)
            quarantine.append(QuarantinedChange(log: c.log, seq: c.seq, hash: c.hash, reason: q.reason, detectedAt: q.detectedAt,
                                                repaired: false, cause: .revoked, bytes: c.bytes))
        }
        for id in tx.removedRecords where tx.records[id] == nil { recordsByID[id] = nil }
        totalBytes += tx.bytesDelta
        heldBackTotal += tx.heldBackDelta
    }
}
