import FieldSyncCore
import FieldSyncCrypto

/// Why the replicator refused a local write.
public struct WriteError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason, for people.
    public var reason: String
    /// Creates an error.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

extension Replicator {
    // MARK: Writing

    /// Authors one change carrying `edits` in `scope`, seals it for the scope's reader group, commits it
    /// locally and returns it.
    /// - Parameters:
    ///   - edits: record edits; each must target `scope`, be authored by this device and pass the schema.
    ///   - priority: delivery priority (urgent incidents first).
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Throws: `WriteError` (no key for the scope, scope outside the certificate), `RecordError`
    ///   (schema), `ChangeError` (sealing).
    @discardableResult
    public func write(_ edits: [RecordEdit], scope: Scope, priority: Priority, now: UInt64) throws -> Change {
        let group = WriteGroup(scope: scope, priority: priority, edits: edits)
        let readers = try checkWrite(group)
        let hlc = try clock.now(wall: now)
        return try append(contentType: .records, scope: scope, priority: priority, hlc: hlc, now: now) { seq, prev in
            try seal(group, seq: seq, prevHash: prev, hlc: hlc, readers: readers)
        }
    }

    /// The checks every local write passes before anything is sealed: the scope is within this device's
    /// certificate, each edit is in that scope, authored by this device and valid for the schema, and
    /// this device holds a key for the scope.
    /// - Returns: the keys to seal the change with (`writingKeys(for:)`).
    /// - Throws: `WriteError`, `RecordError`.
    private func checkWrite(_ group: WriteGroup) throws -> [EpochKey] {
        guard Scope.all([group.scope], within: identity.certificate.scopes) else {
            throw WriteError("this device may not write in \(group.scope) (certificate scopes: \(identity.certificate.scopes.map(\.path)))")
        }
        for e in group.edits {
            guard e.scope == group.scope, e.author == identity.id else {
                throw WriteError("edit of \(e.record) must be in \(group.scope) and authored by \(identity.id)")
            }
            try schemas.validate(e)
        }
        let readers = writingKeys(for: group.scope)
        guard !readers.isEmpty else { throw WriteError("no epoch key for \(group.scope); this device needs a key grant") }
        return readers
    }

    /// Seals one group's edits as the change at `seq` of this device's log in the group's scope.
    /// Draws from `sealingRandomness` when set, from libsodium otherwise.
    private func seal(_ group: WriteGroup, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp, readers: [EpochKey]) throws -> Change {
        try Self.checkSyncable(try sealUnchecked(group, seq: seq, prevHash: prevHash, hlc: hlc, readers: readers), edits: group.edits.count)
    }

    /// `change` if it is small enough to sync (`Change.maxSyncBytes`); a clear error otherwise.
    static func checkSyncable(_ change: Change, edits: Int? = nil) throws -> Change {
        let size = change.encodedBytes.count
        guard size > Change.maxSyncBytes else { return change }
        let what = edits.map { "\($0) edit(s) in one change" } ?? "this change"
        throw WriteError("\(what) would be \(size) bytes, over the \(Change.maxSyncBytes) bytes a change may have to sync; "
                         + "write fewer edits at once or shorter text")
    }

    private func sealUnchecked(_ group: WriteGroup, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp, readers: [EpochKey]) throws -> Change {
        let payload = ChangeBody(edits: group.edits).canonicalBytes
        guard let source = sealingRandomness else {
            return try Change.seal(author: identity.signingKey, scope: group.scope, seq: seq, prevHash: prevHash, hlc: hlc,
                                   priority: group.priority, payload: payload, readers: readers, archive: archiveKey)
        }
        var generator = ErasedGenerator(base: source)
        defer { sealingRandomness = generator.base }
        return try Change.seal(author: identity.signingKey, scope: group.scope, seq: seq, prevHash: prevHash, hlc: hlc,
                               priority: group.priority, payload: payload, readers: readers, archive: archiveKey,
                               using: &generator)
    }

    /// One change's worth of edits for `write(groups:now:)`.
    public struct WriteGroup: Sendable {
        /// The scope every edit of the group is in.
        public var scope: Scope
        /// Delivery priority of the change.
        public var priority: Priority
        /// The edits.
        public var edits: [RecordEdit]

        /// Creates a group.
        public init(scope: Scope, priority: Priority, edits: [RecordEdit]) {
            self.scope = scope
            self.priority = priority
            self.edits = edits
        }
    }

    /// Authors one change per group, in order, and commits all of them in one atomic store commit:
    /// either every change is stored and merged, or none is (a bulk import).
    /// - Parameters:
    ///   - groups: the changes to author; each group's edits obey the rules of `write(_:scope:priority:now:)`.
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Returns: the changes, in group order.
    /// - Throws: `WriteError`, `RecordError`, `ChangeError` before anything is stored; store errors
    ///   (nothing stored).
    @discardableResult
    public func write(groups: [WriteGroup], now: UInt64) throws -> [Change] {
        let keysByGroup = try groups.map(checkWrite)
        let saved = clock
        var heads: [LogID: (seq: UInt64, hash: [UInt8])] = [:]
        var changes: [Change] = []
        do {
            for (g, readers) in zip(groups, keysByGroup) {
                let log = LogID(author: identity.id, scope: g.scope)
                let head: (seq: UInt64, hash: [UInt8])
                if let h = heads[log] { head = h } else { head = try ownHead(log, now: now) }
                let hlc = try clock.now(wall: now)
                let change = try seal(g, seq: head.seq + 1, prevHash: head.hash, hlc: hlc, readers: readers)
                heads[log] = (head.seq + 1, change.id)
                changes.append(change)
            }
        } catch {
            clock = saved
            throw error
        }
        let report = try ingest(changes, now: now)
        guard report.outcomes.allSatisfy({ $0 == .accepted }), report.commit.inserted == changes.count else {
            throw WriteError("own changes not stored: \(report.outcomes), \(report.commit)")
        }
        try advanceGuard(changes)
        return changes
    }

    /// Advances the clock to at least `timestamp` (a record's last edit read back from the store, or
    /// this device's own last write after a restart), so the next local write orders after it. A
    /// timestamp further ahead of `now` than the clock's drift bound is not adopted.
    /// - Returns: whether the clock now reads at or above `timestamp`.
    @discardableResult
    public func observe(_ timestamp: HLCTimestamp, now: UInt64) -> Bool {
        (try? clock.receive(remote: timestamp, wall: now)) != nil
    }

    /// Advances the clock past this device's own latest change in the store, so a restarted process
    /// (each CLI command is one) never writes a timestamp below one it wrote before, even if the wall
    /// clock went backwards. (A wall clock more than the trust store's skew behind its own last write
    /// cannot write at all: verification refuses a change from that far in its future.)
    /// - Throws: store errors.
    public func restoreClock() throws {
        for (log, held) in try store.holdings() where log.author == identity.id {
            guard let last = held.ranges.last?.upperBound, let c = try store.change(log, seq: last), c.hlc > clock.last else { continue }
            // Our own writes are adopted whatever the drift: going below them would reorder our own edits.
            clock = HybridLogicalClock(maxDriftMilliseconds: clock.maxDriftMilliseconds, last: c.hlc)
        }
        // So are those the guard remembers beyond an older store copy.
        for head in try headGuard?.heads() ?? [:] where head.key.author == identity.id && head.value.hlc > clock.last {
            clock = HybridLogicalClock(maxDriftMilliseconds: clock.maxDriftMilliseconds, last: head.value.hlc)
        }
    }

    /// Authors a control change (key grant, revocation, receipt) with a clear payload.
    @discardableResult
    public func writeControl(_ contentType: ContentType, payload: [UInt8], scope: Scope, now: UInt64) throws -> Change {
        let hlc = try clock.now(wall: now)
        return try append(contentType: contentType, scope: scope, priority: .urgent, hlc: hlc, now: now) { seq, prev in
            try Change.control(author: identity.signingKey, scope: scope, seq: seq, prevHash: prev, hlc: hlc,
                               contentType: contentType, priority: .urgent, payload: payload)
        }
    }

    private func append(contentType: ContentType, scope: Scope, priority: Priority, hlc: HLCTimestamp, now: UInt64,
                        _ make: (UInt64, [UInt8]) throws -> Change) throws -> Change {
        let log = LogID(author: identity.id, scope: scope)
        let head = try ownHead(log, now: now)
        let change = try Self.checkSyncable(try make(head.seq + 1, head.hash))
        let report = try ingest([change], now: now)
        guard report.outcomes == [.accepted], report.commit.inserted == 1 else {
            throw WriteError("own change not stored: \(report.outcomes), \(report.commit)")
        }
        try advanceGuard([change])
        return change
    }

    /// The head the next own change of `log` follows: the store's highest held change, or the guard's
    /// when the guard is ahead (the store is an older copy: the next change continues the chain after
    /// the guard's head, and the seqs in between come back from peers).
    /// - Throws: `WriteError` when the store and the guard disagree on a change at the same seq (this
    ///   device's log is already forked, or the store or guard belongs to another history).
    ///   Also when one of this device's own changes of `log` beyond that head is quarantined.
    private func ownHead(_ log: LogID, now: UInt64) throws -> (seq: UInt64, hash: [UInt8]) {
        // A restored device writes nothing until a sync has shown it its own logs' heads (`RestoreFence`).
        if let fence = try headGuard?.fence() { throw WriteError(Self.fencedMessage(fence)) }
        let head = try unguardedOwnHead(log, now: now)
        // One of this device's own changes found corrupt on disk is quarantined (out of the holdings) until
        // a peer returns it. Its seq stays used: if the seq guard does not vouch for a head at or beyond it,
        // writing would reuse that seq (a fork) or chain onto a hash this node cannot vouch for. Checked
        // here so that single and bulk writes both refuse.
        if let top = try store.quarantined().filter({ $0.log == log && !$0.repaired && $0.cause == .damaged }).map(\.seq).max(), top > head.seq {
            throw WriteError("this device's own change \(log.scope)#\(top) is quarantined (corrupt on disk, `fieldsync doctor` "
                             + "shows it); sync with a peer that holds it before writing in \(log.scope) again")
        }
        return head
    }

    /// `ownHead` without the quarantine check.
    private func unguardedOwnHead(_ log: LogID, now: UInt64) throws -> (seq: UInt64, hash: [UInt8]) {
        let seq = try store.holdings(of: log).ranges.last?.upperBound ?? 0
        let hash = seq == 0 ? Change.zeroHash : try store.hash(log, seq: seq) ?? Change.zeroHash
        guard let guardHead = try headGuard?.head(of: log) else { return (seq, hash) }
        if guardHead.seq > seq {
            observe(guardHead.hlc, now: now)  // never write a timestamp below one written before the restore
            return (guardHead.seq, guardHead.hash)
        }
        if let held = try store.hash(log, seq: guardHead.seq), held != guardHead.hash {
            throw WriteError("""
                this store's change \(log.scope)#\(guardHead.seq) is not the one this device wrote there (seq guard); \
                writing would fork this device's log. The store or the guard was replaced: see docs/node.md, "Restoring a device"
                """)
        }
        return (seq, hash)
    }

    /// Records the new heads in the guard. Runs after the store commit: if the process dies in
    /// between, the guard is one change behind a store that is ahead of it, which `ownHead` handles.
    private func advanceGuard(_ changes: [Change]) throws {
        guard let headGuard else { return }
        var heads: [LogID: OwnHead] = [:]
        for c in changes {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            if (heads[log]?.seq ?? 0) < c.header.seq { heads[log] = OwnHead(seq: c.header.seq, hash: c.id, hlc: c.header.hlc) }
        }
        do { try headGuard.advance(heads) } catch {
            throw WriteError("the change is stored but the seq guard could not be updated (\(error)); fix the guard file before writing again")
        }
    }

    /// This device's own logs whose store head is below the guard's: the store lost changes this device
    /// wrote (it was restored from an older copy, attack cases 43 and 48). The next write continues after
    /// the guard's head; the lost changes come back from peers.
    /// - Returns: per such log, the store's head and the guard's.
    /// - Throws: store errors, the guard's errors.
    public func logsBehindGuard() throws -> [LogID: (store: UInt64, guard: UInt64)] {
        guard let headGuard else { return [:] }
        var out: [LogID: (store: UInt64, guard: UInt64)] = [:]
        for (log, head) in try headGuard.heads() where log.author == identity.id {
            let held = try store.holdings(of: log).ranges.last?.upperBound ?? 0
            if held < head.seq { out[log] = (held, head.seq) }
        }
        return out
    }

    /// Brings the guard up to the store's own heads where the store is ahead of it (a guard created after
    /// the store, or a process that died between a commit and the guard update). Call once after
    /// opening a store, with the restore calls; the write path does the same check per log.
    /// - Returns: how many log heads were raised.
    /// - Throws: store errors, the guard's errors.
    @discardableResult
    public func syncHeadGuard() throws -> Int {
        guard let headGuard else { return 0 }
        var heads: [LogID: OwnHead] = [:]
        for (log, held) in try store.holdings() where log.author == identity.id {
            guard let top = held.ranges.last?.upperBound, let c = try store.change(log, seq: top) else { continue }
            if (try headGuard.head(of: log)?.seq ?? 0) < top { heads[log] = OwnHead(seq: top, hash: c.hash, hlc: c.hlc) }
        }
        if !heads.isEmpty { try headGuard.advance(heads) }
        return heads.count
    }

    /// What a fenced device says when asked to write.
    static func fencedMessage(_ fence: RestoreFence) -> String {
        """
        this device was restored from a backup taken \(UTCText.format(fence.backupTime)) and writes nothing until it has synced \
        with a peer that holds its own logs (its station, relay box or HQ: `fieldsync sync HOST:PORT`, or let `fieldsync serve` \
        meet one): anything it wrote after the backup comes back first and its next change follows it. If every such peer \
        is gone: `fieldsync fence --lift --accept-fork-risk` (docs/backup.md)
        """
    }

    /// Whether a restore fence is in force (`RestoreFence`): own writes are refused until a sync
    /// confirms this device's own logs' heads (`confirmOwnHeads`).
    /// - Throws: the guard's errors (a fence file that does not parse).
    public func restoreFence() throws -> RestoreFence? { try headGuard?.fence() }

    /// After a session's first exchange (`SyncSession`): lifts the restore fence when the peer vouched
    /// for this device's own logs. For each own log both sides may hold, `peer` is the highest seq the
    /// peer held when reconciliation ran and `own` the highest this store held then. The fence is lifted
    /// when the peer held at least one own change, was behind this store on none of these logs (it is
    /// at least as current as the backup), this store now holds each log at least as far as the peer did
    /// (what the peer had, the session brought back), and no HQ receipt this store holds names an own
    /// seq beyond what it holds (HQ saw a later change no peer has returned yet). The guard is then
    /// raised to the store's heads, so the next write follows the highest change seen.
    /// - Returns: whether the fence was lifted by this call.
    /// - Throws: store errors, the guard's errors.
    @discardableResult
    public func confirmOwnHeads(_ seen: [LogID: (peer: UInt64, own: UInt64)]) throws -> Bool {
        guard let headGuard, try headGuard.fence() != nil else { return false }
        guard seen.values.contains(where: { $0.peer >= 1 }) else { return false }
        for (log, heads) in seen {
            guard log.author == identity.id, heads.peer >= heads.own else { return false }
            let held = try store.holdings(of: log).ranges.last?.upperBound ?? 0
            guard held >= heads.peer else { return false }
        }
        for (log, held) in try store.holdings() where log.author == identity.id {
            if try store.receipted(log) > (held.ranges.last?.upperBound ?? 0) { return false }
        }
        try syncHeadGuard()
        try headGuard.liftFence()
        return true
    }

    // MARK: Receipts

    /// HQ only: receipts for the logs held beyond what HQ has receipted so far (its own receipts and
    /// those of other HQ devices, as this store knows them), at most `maxLogsPerReceipt` logs per
    /// receipt so that each fits a session batch (at about 57 bytes per log, a receipt of every log
    /// outgrows the 60,000-byte batch and the transport's 65,519-byte message at about a thousand logs).
    /// Receipts only raise what they state, so partial receipts are enough.
    /// - Returns: the receipts written, in order (empty when nothing is behind).
    /// - Throws: store errors.
    @discardableResult
    public func writeIncrementalReceipts(scope: Scope, now: UInt64, maxLogsPerReceipt: Int = 500) throws -> [Change] {
        precondition(maxLogsPerReceipt > 0)
        var behind: [(LogID, UInt64)] = []
        for (log, held) in try store.holdings().sorted(by: { $0.key < $1.key }) where log.author != identity.id || log.scope != scope {
            if held.frontier > (try store.receipted(log)) { behind.append((log, held.frontier)) }
        }
        return try stride(from: 0, to: behind.count, by: maxLogsPerReceipt).map { start in
            let heads = Array(behind[start..<min(start + maxLogsPerReceipt, behind.count)])
            return try writeControl(.receipt, payload: Receipt(heads: heads).canonicalBytes, scope: scope, now: now)
        }
    }

    /// HQ only: a receipt for every log held, signed as a control change in the root scope.
    @discardableResult
    public func writeReceipt(scope: Scope, now: UInt64) throws -> Change {
        let heads = try store.holdings().filter { $0.key.author != identity.id || $0.key.scope != scope }
            .map { ($0.key, $0.value.frontier) }.filter { $0.1 > 0 }.sorted { $0.0 < $1.0 }
        return try writeControl(.receipt, payload: Receipt(heads: heads).canonicalBytes, scope: scope, now: now)
    }
}

/// A concrete generator around an existential one (passing the existential itself as `inout some
/// RandomNumberGenerator` crashes the Swift 6.3.1 compiler here).
private struct ErasedGenerator: RandomNumberGenerator {
    var base: any RandomNumberGenerator
    mutating func next() -> UInt64 { base.next() }
}

/// A UTC time for messages, without the C library (this module reads no clock and calls no libc).
enum UTCText {
    /// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian, H. Hinnant's civil_from_days).
    static func format(_ ms: UInt64) -> String {
        let secs = Int64(ms / 1000)
        let days = secs / 86_400
        let rest = secs % 86_400
        let z = days + 719_468
        let era = z / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(rest / 3600)):\(two(rest % 3600 / 60)):\(two(rest % 60)) UTC"
    }
}
