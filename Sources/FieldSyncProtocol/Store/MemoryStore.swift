import FieldSyncCore
import FieldSyncCrypto

/// Shares equal values between the `MemoryStore`s of one process (a simulator holding thousands of
/// replicas of the same records and changes): a saved record equal to the last version seen of it is
/// replaced by that version, and a stored change by the one other stores hold under the same id, so
/// converged replicas share one copy. Values are unchanged; real nodes do not use it.
public final class RecordInterner {
    /// The last entry interned for each record: its record version and list of changes are what the next
    /// replica to save the record most likely holds too.
    private var latest = MemoryStore.RecordTable()
    /// The first box interned for each change hash (a table of references: the simulator holds one per change).
    private var changes = ReferenceTable<MemoryStore.ChangeBox>()
    /// Every log id seen, so that the stores' tables keyed by a log share one copy of its scope's path (each
    /// replica decodes its own copy of a change, and with it a path string of its own).
    private var logs: Set<LogID> = []
    /// Every record scope seen, for the same reason: a village's records share one copy of its path.
    private var scopes: Set<Scope> = []
    /// Saves answered with an already held equal value.
    public private(set) var shared = 0

    /// An empty interner.
    public init() {}

    /// The entry of record `r` touched by the changes `list`: the last one interned for the record if both are
    /// equal to it (replicas of a record mostly learn the same edits in the same order), else a new one that
    /// shares whichever of the two is equal.
    func intern(_ r: Record, touched list: [[UInt8]]) -> MemoryStore.RecordEntry {
        let l = latest[r.id]
        let box: MemoryStore.RecordBox
        if let held = l?.box, held.value == r {
            shared += 1
            box = held
        } else {
            var r = r
            r.shareScope(scopes.insert(r.scope).memberAfterInsert)  // each replica decodes a path of its own
            r.shrinkToFit()  // kept for the run: no spare room from the edits that built it
            box = MemoryStore.RecordBox(r)
        }
        let touched = l.map { $0.touched == list ? $0.touched : list } ?? list
        if let l, l.box === box, l.touched == touched { return l }
        let entry = MemoryStore.RecordEntry(id: r.id, box: box, touched: touched)
        latest.set(entry)
        return entry
    }

    /// The log id equal to `log` seen first: the same value, its path's storage shared (also for the
    /// simulator's own tables keyed by log).
    public func intern(log: LogID) -> LogID { logs.insert(log).memberAfterInsert }

    /// The box of the change with this hash that a store interned first: it names the change's position, which
    /// a store's hash index looks at instead of keeping an entry per change (`MemoryStore.HashIndex`).
    func box(hash key: ChangeHashKey) -> MemoryStore.ChangeBox? { changes[key.bytes] }

    func intern(_ c: StoredChange) -> MemoryStore.ChangeBox {
        var c = c
        c.log = intern(log: c.log)
        guard !c.bytes.isEmpty else { return MemoryStore.ChangeBox(c) }  // an evicted copy is this store's own
        if let held = changes[c.hash], held.value.bytes == c.bytes { return held }
        let box = MemoryStore.ChangeBox(c)
        changes.set(box)
        return box
    }
}

/// An in-memory `SyncStore` for the simulator and tests. Same rules as `SQLiteStore` (both apply
/// batches through `CommitLogic`), no durability: a simulated crash drops it whole or keeps it whole,
/// as a committed SQLite transaction would, or goes back to a `Snapshot` (a power loss of a store whose
/// last commits were not durable).
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

    /// One log's held changes by seq, with whether each is opened and when it was first committed here: dense
    /// arrays from the lowest held seq, growing by an eighth. A box a slot (8 bytes); an opened mark a slot (1
    /// byte) once any change of the log is opened; an arrival a slot (8 bytes) once any is said, which a store
    /// that keeps no arrivals (`MemoryStore.keepsArrivals`, a simulator's) never does. Logs are received mostly
    /// in order, so this costs a fraction of a dictionary per log and a set of opened hashes, held by every
    /// replica of a simulator. A seq far from the dense window (more than `maxSpan` slots from it and more than
    /// the changes held) goes to a dictionary instead, so that a signed change with a huge seq costs one entry.
    struct LogChanges {
        /// A change held far from the dense window, with its opened mark and its arrival in one word.
        struct Slot {
            var box: ChangeBox?
            /// Bit 63: opened. Bits 0-62: when the change was first committed here (`CommitBatch.now`, ms
            /// since the Unix epoch), `unknownArrival` if not said.
            private var word: UInt64 = Slot.unknownArrival

            /// The arrival meaning "not said". A time at or after it (2^63 - 1 ms, about 292 million years
            /// after 1970) is kept as the millisecond before it.
            static let unknownArrival: UInt64 = (1 << 63) - 1

            init(_ box: ChangeBox?) { self.box = box }

            var opened: Bool {
                get { word >> 63 == 1 }
                set { word = (word & Slot.unknownArrival) | (newValue ? 1 << 63 : 0) }
            }

            var arrived: UInt64? {
                get { let t = word & Slot.unknownArrival; return t == Slot.unknownArrival ? nil : t }
                set {
                    let t = newValue.map { min($0, Slot.unknownArrival - 1) } ?? Slot.unknownArrival
                    word = (word & (1 << 63)) | t
                }
            }
        }

        /// The seq of `boxes[0]` (meaningless while `boxes` is empty).
        private var base: UInt64 = 0
        /// The dense window's held changes (nil: not held).
        private var boxes: ContiguousArray<ChangeBox?> = []
        /// Whether each of the window's changes is opened: empty while none is, else as long as `boxes`.
        private var opened: ContiguousArray<Bool> = []
        /// When each of the window's changes was first committed here (`Slot.unknownArrival`: not said): empty
        /// while none is said, else as long as `boxes`.
        private var arrivals: ContiguousArray<UInt64> = []
        /// Changes held far from the dense window, with their opened marks and arrivals.
        private var far: [UInt64: Slot] = [:]
        /// Held changes (window slots that are not nil, and far ones).
        private(set) var count = 0
        /// Slots the dense window may grow by beyond twice the changes held.
        static let maxSpan: UInt64 = 4096

        subscript(seq: UInt64) -> ChangeBox? {
            if let i = index(seq) { return boxes[i] }
            return far.isEmpty ? nil : far[seq]?.box
        }

        /// Stores `box` at `seq` (nil removes it, its opened mark and its arrival).
        mutating func set(_ seq: UInt64, _ box: ChangeBox?) {
            guard let box else {
                if let i = index(seq), boxes[i] != nil {
                    boxes[i] = nil
                    if !opened.isEmpty { opened[i] = false }
                    if !arrivals.isEmpty { arrivals[i] = Slot.unknownArrival }
                    count -= 1
                } else if far.removeValue(forKey: seq) != nil {
                    count -= 1
                }
                return
            }
            var slot = index(seq)
            if slot == nil { slot = makeSlot(seq) }
            if let i = slot {
                if boxes[i] == nil { count += 1 }
                boxes[i] = box
            } else {
                if far[seq] == nil { count += 1 }
                far[seq, default: Slot(nil)].box = box
            }
        }

        func isOpened(_ seq: UInt64) -> Bool {
            if let i = index(seq) { return !opened.isEmpty && opened[i] }
            return far[seq]?.opened ?? false
        }

        /// When the held change at `seq` was first committed here (nil: not said, or not held).
        func arrival(_ seq: UInt64) -> UInt64? {
            if let i = index(seq) {
                guard !arrivals.isEmpty, arrivals[i] != Slot.unknownArrival else { return nil }
                return arrivals[i]
            }
            return far[seq]?.arrived
        }

        /// Notes when the held change at `seq` was first committed here.
        mutating func setArrival(_ seq: UInt64, _ t: UInt64) {
            if let i = index(seq) {
                if boxes[i] != nil { setArrival(at: i, t) }
            } else if far[seq] != nil {
                far[seq]!.arrived = t
            }
        }

        /// Marks the held change at `seq` opened.
        mutating func markOpened(_ seq: UInt64) {
            if let i = index(seq) {
                if boxes[i] != nil { markOpened(at: i) }
            } else if far[seq] != nil {
                far[seq]!.opened = true
            }
        }

        /// The held seqs in order.
        var seqs: [UInt64] {
            let dense = boxes.indices.compactMap { boxes[$0] == nil ? nil : base + UInt64($0) }
            return far.isEmpty ? dense : (dense + far.keys).sorted()
        }

        /// The held changes in seq order.
        var values: [ChangeBox] { far.isEmpty ? boxes.compactMap { $0 } : seqs.map { self[$0]! } }

        /// Bytes of the window's arrays (their capacities; tests).
        var windowBytes: Int {
            boxes.capacity * MemoryLayout<ChangeBox?>.stride + opened.capacity + arrivals.capacity * MemoryLayout<UInt64>.stride
        }

        private func index(_ seq: UInt64) -> Int? {
            guard !boxes.isEmpty, seq >= base, seq - base < UInt64(boxes.count) else { return nil }
            return Int(seq - base)
        }

        /// Extends the dense window to `seq` and returns its slot, or nil if that would add more than
        /// `maxSpan` slots beyond twice the changes held.
        private mutating func makeSlot(_ seq: UInt64) -> Int? {
            if boxes.isEmpty {
                base = seq
                boxes.append(nil)
                return 0
            }
            let limit = UInt64(2 * count) + Self.maxSpan
            if seq < base {
                guard base - seq <= limit else { return nil }
                widen(by: Int(base - seq), at: 0)
                base = seq
                absorbFar()
                return 0
            }
            let end = base + UInt64(boxes.count)  // seq >= end here
            guard seq - end < limit else { return nil }
            widen(by: Int(seq - end) + 1, at: boxes.count)
            absorbFar()
            return boxes.count - 1
        }

        /// Adds `n` empty slots to the window at `position` (its start or its end), in each of its arrays.
        private mutating func widen(by n: Int, at position: Int) {
            Self.insert(n, nil, at: position, into: &boxes)
            if !opened.isEmpty { Self.insert(n, false, at: position, into: &opened) }
            if !arrivals.isEmpty { Self.insert(n, Slot.unknownArrival, at: position, into: &arrivals) }
        }

        /// Inserts `n` copies of `empty` into `a` at `position`, growing its room by an eighth when it must grow:
        /// appending doubles, and a log's window grows a slot at a time for the whole run, in every replica.
        private static func insert<T>(_ n: Int, _ empty: T, at position: Int, into a: inout ContiguousArray<T>) {
            if a.capacity < a.count + n { a.reserveCapacity((a.count + n) + (a.count + n) / 8) }
            a.insert(contentsOf: repeatElement(empty, count: n), at: position)
        }

        /// Marks the window's slot `i` opened, making the marks' array at the first mark.
        private mutating func markOpened(at i: Int) {
            if opened.isEmpty { opened = ContiguousArray(repeating: false, count: boxes.count) }
            opened[i] = true
        }

        /// Notes the arrival of the window's slot `i`, making the arrivals' array at the first one said.
        private mutating func setArrival(at i: Int, _ t: UInt64) {
            if arrivals.isEmpty { arrivals = ContiguousArray(repeating: Slot.unknownArrival, count: boxes.count) }
            arrivals[i] = min(t, Slot.unknownArrival - 1)
        }

        /// Moves far changes the dense window now covers into it (each seq is held in one place).
        private mutating func absorbFar() {
            guard !far.isEmpty else { return }
            for (seq, entry) in far {
                guard let i = index(seq) else { continue }
                boxes[i] = entry.box
                if entry.opened { markOpened(at: i) }
                if let t = entry.arrived { setArrival(at: i, t) }
                far[seq] = nil
            }
        }
    }

    /// The held changes by hash. For a store alone, a set of the boxes themselves, hashed and compared by the
    /// hash each holds, looked up with a probe (8 bytes a held change, and the set's slack). With a
    /// `RecordInterner` (the simulator's stores), nothing per change: a hash names its change's log and seq, so
    /// the interner's process-wide table of boxes gives the position, and the store's box at that position is
    /// the held one exactly when its hash is this hash (every change a store holds went through the interner
    /// with its bytes, in this store or another, before any eviction emptied them).
    struct HashIndex {
        private enum Entry: Hashable {
            case held(ChangeBox)
            case probe([UInt8])

            var hash: [UInt8] {
                switch self {
                case let .held(box): box.value.hash
                case let .probe(hash): hash
                }
            }

            // As `ChangeHashKey`: hashes are uniformly random, so their first 8 bytes are enough.
            func hash(into hasher: inout Hasher) {
                var head: UInt64 = 0
                for b in hash.prefix(8) { head = head << 8 | UInt64(b) }
                hasher.combine(head)
            }

            static func == (a: Entry, b: Entry) -> Bool { a.hash == b.hash }
        }

        private var entries: Set<Entry> = []
        /// Positions come from here instead of `entries` when set.
        private let shared: RecordInterner?

        /// Changes held.
        private(set) var count = 0
        /// Entries kept (0 with a `RecordInterner`; tests).
        var entryCount: Int { entries.count }

        init(shared: RecordInterner?) { self.shared = shared }

        /// The held change with this hash (`changes` is the store's table the index goes with).
        func box(_ key: ChangeHashKey, in changes: [LogID: LogChanges]) -> ChangeBox? {
            if let shared {
                guard let named = shared.box(hash: key), let held = changes[named.value.log]?[named.value.seq],
                      held.value.hash == key.bytes else { return nil }
                return held
            }
            guard let i = entries.firstIndex(of: .probe(key.bytes)), case let .held(box) = entries[i] else { return nil }
            return box
        }

        /// Notes that `box`, now at its position in `changes`, is held: a new change, or one whose box was
        /// replaced in place (`new` false: an evicted copy).
        mutating func index(_ box: ChangeBox, new: Bool) {
            if new { count += 1 }
            if shared == nil { entries.update(with: .held(box)) }
        }

        /// Notes that the held change with this hash is no longer held (its position is emptied).
        mutating func remove(_ key: ChangeHashKey) {
            count -= 1
            if shared == nil { entries.remove(.probe(key.bytes)) }
        }
    }

    struct State {
        var changes: [LogID: LogChanges] = [:]
        var byHash: HashIndex
        var evicted: Set<ChangeHashKey> = []
        var intervalsByLog: [LogID: HeldIntervals] = [:]
        /// Records by id, each with the changes that touched it: one reference per record (`RecordTable`).
        var records = RecordTable()
        /// Entries of `records` with a record (a removed record keeps its entry for its history).
        var recordCount = 0
        /// Hashes marked opened that were not held when marked (kept so that the change counts as opened
        /// if it is stored later, as a set of opened hashes would); the held ones are marked in `changes`.
        var openedUnheld: Set<ChangeHashKey> = []

        init(interner: RecordInterner?) { byHash = HashIndex(shared: interner) }

        /// The held change with this hash.
        func held(_ key: ChangeHashKey) -> ChangeBox? { byHash.box(key, in: changes) }

        func isOpened(_ c: StoredChange) -> Bool {
            changes[c.log]?.isOpened(c.seq) == true || (!openedUnheld.isEmpty && openedUnheld.contains(ChangeHashKey(c.hash)))
        }
        var forksByLog: [LogID: [ForkEvidence]] = [:]
        var forkCount = 0
        var receipts: [LogID: UInt64] = [:]
        var certificates: [DeviceID: [Certificate]] = [:]  // every one kept, by subject (renewals)
        var totalBytes = 0
        var heldBackTotal = 0
        /// Changes quarantined because their author was revoked before their HLC, oldest first, with their bytes.
        var quarantine: [QuarantinedChange] = []
        // When each held change was first committed here: in `changes` (`LogChanges.arrival`).
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
        func presence(of change: StoredChange) throws -> ChangePresence {
            // One lookup by position: a hash names its log and seq, so the change is held exactly when the
            // change at its position has its hash (what the default's lookup by hash answers).
            guard let kept = try existing(change.log, seq: change.seq) else { return .new }
            return kept.hash == change.hash ? .duplicate : .conflicting(kept)
        }
        func holds(hash: [UInt8]) throws -> Bool {
            let key = ChangeHashKey(hash)
            return byHash[key] != nil || base.held(key) != nil
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
                var held: [UInt64: StoredChange] = [:]
                for box in base.changes[log]?.values ?? [] { held[box.value.seq] = box.value }
                held.merge(changes[log] ?? [:]) { $1 }
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

        func loadRecord(_ id: RecordID) throws -> Record? { records[id]?.0 ?? base.records[id]?.box?.value }
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
            guard let held = base.held(key)?.value, !held.bytes.isEmpty, !revoked.contains(where: { $0.change.hash == held.hash }) else {
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
            store.state.apply(self, interner: store.recordInterner, keepsArrivals: store.keepsArrivals)
        }
    }

    private var state: State
    /// Every held log in order, kept by `commit` (logs are never removed; a new one is inserted in place).
    private var sortedLogs: [LogID] = []
    /// Limits in force.
    public var limits: StoreLimits
    /// Schemas used to index records.
    public let schemas: SchemaRegistry
    /// Shares equal records with other stores (simulator only; nil by default).
    public let recordInterner: RecordInterner?
    /// Whether the store notes when each change first arrived (`arrivals(of:)`, what a node's reports read).
    /// A store that does not answers nil ("not said") there and saves 8 bytes per held change: a simulator,
    /// which reads no arrivals from its thousands of replicas. True by default, as `SQLiteStore` always does.
    public let keepsArrivals: Bool

    /// An empty store.
    public init(limits: StoreLimits = StoreLimits(), schemas: SchemaRegistry = .standard, recordInterner: RecordInterner? = nil,
                keepsArrivals: Bool = true) {
        self.limits = limits
        self.schemas = schemas
        self.recordInterner = recordInterner
        self.keepsArrivals = keepsArrivals
        state = State(interner: recordInterner)
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
            return m.values.map(\.value).filter { seqs.contains($0.seq) && !$0.bytes.isEmpty }
        }
        return seqs.compactMap { m[$0]?.value }.filter { !$0.bytes.isEmpty }
    }

    public func commit(_ batch: CommitBatch) throws -> CommitReport {
        var tx = Tx(store: self)
        tx.now = batch.now
        let report = try CommitLogic.commit(batch, in: &tx, limits: limits)
        let newLogs = tx.intervals.keys.filter { state.intervalsByLog[$0] == nil }.map { recordInterner?.intern(log: $0) ?? $0 }
        // Every log whose holdings, or the changes `changes(_:in:)` returns of them, this commit moves.
        var moved = Set(tx.intervals.keys).union(tx.changes.keys)
        for q in tx.revoked { moved.insert(q.change.log) }
        journal.record(moved.map { recordInterner?.intern(log: $0) ?? $0 })
        tx.apply()
        defer { didCommit?(self, batch.mustBeDurable(after: report)) }
        for log in newLogs.sorted() {
            let at = firstPosition(notBelow: log)
            sortedLogs.insert(log, at: at)
            logViews.insert(nil, at: at)
        }
        // The only logs whose holdings moved: their views are built again when next asked for.
        for log in tx.intervals.keys {
            let at = firstPosition(notBelow: log)
            if at < sortedLogs.count, sortedLogs[at] == log { logViews[at] = nil }
        }
        return report
    }

    // MARK: Durable points (the simulator's power-loss model)

    /// The store's contents at one moment (`snapshot()`), to go back to with `restore(_:)`: what the
    /// simulator keeps as the last durable point of a store whose later commits a power loss may lose
    /// (an SQLite store in WAL mode with `synchronous = NORMAL`: docs/simulator.md, "Power loss").
    /// Copy-on-write: taking one copies nothing; the first commit after it copies the tables it writes
    /// (the change bodies and records themselves are shared, never copied).
    public struct Snapshot {
        fileprivate let state: State
        fileprivate let sortedLogs: [LogID]
        /// Changes held at that moment.
        public var changes: Int { state.byHash.count - state.evicted.count }
    }

    /// The contents now, as a `Snapshot`.
    public func snapshot() -> Snapshot { Snapshot(state: state, sortedLogs: sortedLogs) }

    /// Puts the store back to `snapshot` (every commit since it is gone), as a power loss does to a store
    /// whose commits since its last durable point were not on disk.
    public func restore(_ snapshot: Snapshot) {
        state = snapshot.state
        sortedLogs = snapshot.sortedLogs
        logViews = Array(repeating: nil, count: sortedLogs.count)
        journal.forget()
    }

    /// The logs each recent commit changed the holdings of (`logsChanged(since:)`): a ring of the last
    /// `capacity` (generation, log) entries, allocated at the first commit (48 bytes an entry, in every
    /// replica of a simulator).
    struct HoldingsJournal {
        /// Entries kept; a session asking about older commits looks at every log.
        static let capacity = 128
        /// Commits that changed some log's holdings.
        private(set) var generation: UInt64 = 0
        /// `logsChanged(since: g)` can answer for every `g` from this one on.
        private var complete: UInt64 = 0
        private var ring: [(generation: UInt64, log: LogID)] = []
        /// Once the ring is full: the position of its oldest entry, the next one written over.
        private var oldest = 0

        mutating func record(_ logs: [LogID]) {
            guard !logs.isEmpty else { return }
            generation += 1
            if ring.isEmpty { ring.reserveCapacity(Self.capacity) }
            for log in logs {
                if ring.count < Self.capacity {
                    ring.append((generation, log))
                } else {
                    complete = max(complete, ring[oldest].generation)  // what it said is gone
                    ring[oldest] = (generation, log)
                    oldest = (oldest + 1) % Self.capacity
                }
            }
        }

        /// After a `restore`: holdings went back, which no entry says, so no earlier generation is answered.
        mutating func forget() {
            generation += 1
            complete = generation
            ring = []
            oldest = 0
        }

        func logs(since g: UInt64) -> [LogID]? {
            guard g >= complete, g <= generation else { return nil }
            var out: [LogID] = []
            var seen = Set<LogID>()
            for i in 0..<ring.count {  // newest first
                let e = ring[(oldest + ring.count - 1 - i) % ring.count]
                if e.generation <= g { break }
                if seen.insert(e.log).inserted { out.append(e.log) }
            }
            return out
        }
    }

    private var journal = HoldingsJournal()
    public var holdingsGeneration: UInt64? { journal.generation }
    public func logsChanged(since generation: UInt64) -> [LogID]? { journal.logs(since: generation) }

    /// Called after every successful commit, with the store and whether the commit must be durable at once
    /// (`CommitBatch.mustBeDurable(after:)`: a `normal` SQLite store syncs after it). Simulator only: the
    /// power-loss model places its durable points with it; nil, the default, costs nothing.
    public var didCommit: ((MemoryStore, _ mustBeDurable: Bool) -> Void)?

    /// Reconciliation views of the held logs, kept between commits (a hub answers many sessions per commit):
    /// `logViews[i]` is the view of `sortedLogs[i]`, its intervals (empty for a log with none: `logHoldings`
    /// nil), or nil while not built since the log last moved. An array beside the ordered logs, not a table
    /// keyed by log: a session reads the views in order without a lookup per log (`orderedLogHoldings`), and
    /// an entry is 8 bytes where a table's bucket repeated the 40-byte `LogID`, in every store.
    private var logViews: [[HeldInterval]?] = []

    /// The first position in `sortedLogs` whose log is not below `log` (`sortedLogs.count` if none).
    private func firstPosition(notBelow log: LogID) -> Int { sortedLogs.firstIndex(notBelow: log) { $0 } }

    /// The view of `sortedLogs[i]`, from `logViews` or built (and kept, if it covers what is held: the others
    /// are rare, and rebuilt).
    private func view(at i: Int) throws -> LogHoldings? {
        let log = sortedLogs[i]
        if let cached = logViews[i] { return cached.isEmpty ? nil : LogHoldings(log: log, checkedIntervals: cached) }
        let built = try Self.buildLogHoldings(log, in: self)
        if built?.coversHeld ?? true { logViews[i] = built?.intervals ?? [] }
        return built
    }

    public func logHoldings(_ log: LogID) throws -> LogHoldings? {
        let at = firstPosition(notBelow: log)
        guard at < sortedLogs.count, sortedLogs[at] == log else { return nil }  // not held
        return try view(at: at)
    }

    public func orderedLogHoldings(where include: (LogID) throws -> Bool) throws -> [(log: LogID, holdings: LogHoldings?)] {
        var out: [(log: LogID, holdings: LogHoldings?)] = []
        for i in sortedLogs.indices where try include(sortedLogs[i]) { out.append((sortedLogs[i], try view(at: i))) }
        return out
    }

    /// Entries of the hash index (0 for a store with a `RecordInterner`; tests).
    var hashIndexEntries: Int { state.byHash.entryCount }

    public func record(_ id: RecordID) throws -> Record? { state.records[id]?.box?.value }

    /// Bytes of the dense window of `log`'s held changes (tests).
    func logWindowBytes(_ log: LogID) -> Int? { state.changes[log]?.windowBytes }

    /// The entry of record `id` in the records table (tests).
    func recordEntry(_ id: RecordID) -> RecordEntry? { state.records[id] }

    /// Calls `body` with every materialized record, deleted ones included, in no particular order: what
    /// `records(RecordQuery(includeDeleted: true))` returns, without building the array (a simulator's
    /// end-of-run digest of thousands of stores).
    public func forEachRecord(_ body: (Record) throws -> Void) rethrows {
        try state.records.forEach { entry in if let box = entry.box { try body(box.value) } }
    }

    public func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID] {
        var ids: [RecordID] = []
        state.records.forEach { if $0.box != nil, range.contains($0.id) { ids.append($0.id) } }
        return ids.sorted()
    }

    public func records(_ query: RecordQuery) throws -> [Record] {
        var hits: [(Record, RecordIndexEntry)] = []
        forEachRecord { r in
            let index = RecordIndexEntry(r, schemas: schemas)
            if query.matches(r, index: index) { hits.append((r, index)) }
        }
        hits.sort { ($0.1.eventTime ?? .min, $0.0.id) > ($1.1.eventTime ?? .min, $1.0.id) }
        return hits.prefix(query.limit ?? Int.max).map(\.0)
    }

    public func history(of id: RecordID) throws -> [StoredChange] {
        (state.records[id]?.touched ?? []).compactMap { h in state.held(ChangeHashKey(h))?.value }
            .sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) }
    }

    public func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]] {
        var out: [RecordID: [ChangeArrival]] = [:]
        for id in records {
            let held = (state.records[id]?.touched ?? []).compactMap { h -> ChangeArrival? in
                let key = ChangeHashKey(h)
                guard let c = state.held(key)?.value else { return nil }
                return ChangeArrival(log: c.log, seq: c.seq, hlc: c.hlc, arrivedAt: state.changes[c.log]?.arrival(c.seq))
            }
            if !held.isEmpty { out[id] = held.sorted { ($0.hlc, $0.log, $0.seq) < ($1.hlc, $1.log, $1.seq) } }
        }
        return out
    }

    public func unopened(in scope: Scope?) throws -> [StoredChange] {
        state.changes.keys.sorted().filter { scope?.contains($0.scope) ?? true }.flatMap { log in
            state.changes[log]!.values.compactMap { box -> StoredChange? in
                let c = box.value
                return state.isOpened(c) || c.bytes.isEmpty ? nil : c
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
            state.changes[log]!.values.map(\.value).filter { $0.hlc > hlc && !$0.bytes.isEmpty }
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
        s.records = state.recordCount
        s.forks = state.forkCount
        s.receipted = state.receipts.reduce(0) { acc, kv in
            acc + (state.changes[kv.key]?.seqs.filter { $0 <= kv.value }.count ?? 0)
        }
        s.limits = limits
        return s
    }
}

extension MemoryStore.State {
    mutating func apply(_ tx: MemoryStore.Tx, interner: RecordInterner?, keepsArrivals: Bool) {
        for (decoded, m) in tx.changes {
            let log = interner?.intern(log: decoded) ?? decoded  // the key a new entry keeps
            for (seq, c) in m {
                let box = interner?.intern(c) ?? MemoryStore.ChangeBox(c)
                changes[log, default: MemoryStore.LogChanges()].set(seq, box)
                let key = ChangeHashKey(c.hash)
                if tx.byHash[key] != nil {  // new
                    byHash.index(box, new: true)
                    if keepsArrivals, let now = tx.now { changes[log]!.setArrival(seq, now) }
                } else if held(key) != nil {  // evicted in place
                    byHash.index(box, new: false)
                }
                if !openedUnheld.isEmpty, openedUnheld.remove(key) != nil { changes[log]!.markOpened(seq) }
            }
        }
        evicted.formUnion(tx.evicted.map(ChangeHashKey.init))
        for (log, iv) in tx.intervals { intervalsByLog[interner?.intern(log: log) ?? log] = iv }
        for (id, (r, hashes)) in tx.records {
            let old = records[id]
            if old?.box == nil { recordCount += 1 }
            var list = old?.touched ?? []
            // The held box's copy of each hash: the one every store shares through an interner, not this
            // commit's decoded copy (a 32-byte array of its own in every replica).
            for h in hashes where !list.contains(h) { list.append(held(ChangeHashKey(h))?.value.hash ?? h) }
            records.set(interner?.intern(r, touched: list) ?? MemoryStore.RecordEntry(id: id, box: MemoryStore.RecordBox(r), touched: list))
        }
        for h in tx.opened {
            let key = ChangeHashKey(h)
            if let held = held(key)?.value, held.hash == h {
                changes[held.log]!.markOpened(held.seq)
            } else {
                openedUnheld.insert(key)
            }
        }
        for f in tx.forks {  // CommitLogic recorded each once
            forksByLog[f.log, default: []].append(f)
            forksByLog[f.log]!.sort { $0.seq != $1.seq ? $0.seq < $1.seq : $0.conflicting.hash.lexicographicallyPrecedes($1.conflicting.hash) }
            forkCount += 1
        }
        for (log, seq) in tx.receipts { receipts[log] = max(receipts[log] ?? 0, seq) }
        for c in tx.certificates where !(certificates[c.subject]?.contains(c) ?? false) { certificates[c.subject, default: []].append(c) }
        for q in tx.revoked {
            let c = q.change, key = ChangeHashKey(c.hash)
            if held(key) != nil { byHash.remove(key) }
            changes[c.log]?.set(c.seq, nil)  // and its opened mark
            openedUnheld.remove(key)
            quarantine.append(QuarantinedChange(log: c.log, seq: c.seq, hash: c.hash, reason: q.reason, detectedAt: q.detectedAt,
                                                repaired: false, cause: .revoked, bytes: c.bytes))
        }
        for id in tx.removedRecords where tx.records[id] == nil {
            guard let old = records[id], old.box != nil else { continue }
            records.set(MemoryStore.RecordEntry(id: id, box: nil, touched: old.touched))
            recordCount -= 1
        }
        totalBytes += tx.bytesDelta
        heldBackTotal += tx.heldBackDelta
    }
}
