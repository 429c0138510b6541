import FieldSyncCore

/// An in-memory `SyncStore` for the simulator and tests. Same rules as `SQLiteStore` (both apply
/// batches through `CommitLogic`), no durability: a simulated crash drops it whole or keeps it whole,
/// as a committed SQLite transaction would.
public final class MemoryStore: SyncStore {
    struct State: StoreTransaction {
        var changes: [LogID: [UInt64: StoredChange]] = [:]
        var byHash: [[UInt8]: (LogID, UInt64)] = [:]
        var evicted: Set<[UInt8]> = []
        var intervalsByLog: [LogID: HeldIntervals] = [:]
        var recordsByID: [RecordID: Record] = [:]
        var touched: [RecordID: [[UInt8]]] = [:]
        var openedHashes: Set<[UInt8]> = []
        var forkList: [ForkEvidence] = []
        var receipts: [LogID: UInt64] = [:]
        var totalBytes = 0

        func existing(_ log: LogID, seq: UInt64) throws -> StoredChange? { changes[log]?[seq] }
        func holds(hash: [UInt8]) throws -> Bool { byHash[hash] != nil }
        func intervals(_ log: LogID) throws -> HeldIntervals { intervalsByLog[log] ?? HeldIntervals() }
        mutating func setIntervals(_ log: LogID, _ intervals: HeldIntervals) throws { intervalsByLog[log] = intervals }

        mutating func insert(_ change: StoredChange) throws {
            changes[change.log, default: [:]][change.seq] = change
            byHash[change.hash] = (change.log, change.seq)
            totalBytes += change.bytes.count
        }

        func heldBackTotal() throws -> Int { intervalsByLog.values.reduce(0) { $0 + Int($1.heldBack) } }
        func bytesTotal() throws -> Int { totalBytes }

        mutating func evictReceipted(bytes needed: Int) throws -> (count: Int, freed: Int) {
            var candidates: [StoredChange] = []
            for (log, upTo) in receipts {
                for (seq, c) in changes[log] ?? [:] where seq <= upTo && !evicted.contains(c.hash) && !c.bytes.isEmpty {
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
                changes[c.log]![c.seq] = kept
                evicted.insert(c.hash)
                freed += c.bytes.count
                count += 1
            }
            totalBytes -= freed
            return (count, freed)
        }

        func loadRecord(_ id: RecordID) throws -> Record? { recordsByID[id] }
        mutating func saveRecord(_ record: Record, touchedBy hashes: [[UInt8]]) throws {
            recordsByID[record.id] = record
            for h in hashes where !(touched[record.id]?.contains(h) ?? false) { touched[record.id, default: []].append(h) }
        }
        mutating func markOpened(_ hash: [UInt8]) throws { openedHashes.insert(hash) }
        mutating func addFork(_ fork: ForkEvidence) throws {
            if !forkList.contains(where: { $0.conflicting.hash == fork.conflicting.hash }) { forkList.append(fork) }
        }
        mutating func raiseReceipt(_ log: LogID, to seq: UInt64) throws { receipts[log] = max(receipts[log] ?? 0, seq) }
    }

    private var state = State()
    /// Limits in force.
    public var limits: StoreLimits
    /// Schemas used to index records.
    public let schemas: SchemaRegistry

    /// An empty store.
    public init(limits: StoreLimits = StoreLimits(), schemas: SchemaRegistry = .standard) {
        self.limits = limits
        self.schemas = schemas
    }

    public func holdings() throws -> [LogID: HeldIntervals] { state.intervalsByLog }
    public func holdings(of log: LogID) throws -> HeldIntervals { try state.intervals(log) }
    public func change(_ log: LogID, seq: UInt64) throws -> StoredChange? {
        guard let c = state.changes[log]?[seq], !c.bytes.isEmpty else { return nil }
        return c
    }

    public func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange] {
        guard let m = state.changes[log] else { return [] }
        if UInt64(m.count) < seqs.upperBound - seqs.lowerBound {
            return m.filter { seqs.contains($0.key) && !$0.value.bytes.isEmpty }.sorted { $0.key < $1.key }.map(\.value)
        }
        return seqs.compactMap { m[$0] }.filter { !$0.bytes.isEmpty }
    }

    public func commit(_ batch: CommitBatch) throws -> CommitReport {
        var tx = state  // copy-on-write: the commit is all or nothing
        let report = try CommitLogic.commit(batch, in: &tx, limits: limits)
        state = tx
        return report
    }

    public func record(_ id: RecordID) throws -> Record? { state.recordsByID[id] }

    public func records(_ query: RecordQuery) throws -> [Record] {
        var hits = state.recordsByID.values.map { ($0, RecordIndexEntry($0, schemas: schemas)) }
            .filter { query.matches($0.0, index: $0.1) }
        hits.sort { ($0.1.eventTime ?? .min, $0.0.id) > ($1.1.eventTime ?? .min, $1.0.id) }
        return hits.prefix(query.limit ?? Int.max).map(\.0)
    }

    public func history(of id: RecordID) throws -> [StoredChange] {
        (state.touched[id] ?? []).compactMap { h in state.byHash[h].flatMap { state.changes[$0.0]?[$0.1] } }
            .sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) }
    }

    public func unopened(in scope: Scope?) throws -> [StoredChange] {
        state.changes.keys.sorted().filter { scope?.contains($0.scope) ?? true }.flatMap { log in
            state.changes[log]!.keys.sorted().compactMap { seq -> StoredChange? in
                let c = state.changes[log]![seq]!
                return state.openedHashes.contains(c.hash) || c.bytes.isEmpty ? nil : c
            }
        }
    }

    public func forks() throws -> [ForkEvidence] { state.forkList }
    public func receipted(_ log: LogID) throws -> UInt64 { state.receipts[log] ?? 0 }

    public func status() throws -> StoreStatus {
        var s = StoreStatus()
        s.logs = state.intervalsByLog.count
        s.changes = state.byHash.count - state.evicted.count
        s.changeBytes = state.totalBytes
        s.heldBack = try state.heldBackTotal()
        s.unopened = try unopened(in: nil).count
        s.records = state.recordsByID.count
        s.forks = state.forkList.count
        s.receipted = state.receipts.reduce(0) { acc, kv in
            acc + (state.changes[kv.key]?.keys.filter { $0 <= kv.value }.count ?? 0)
        }
        s.limits = limits
        return s
    }
}
