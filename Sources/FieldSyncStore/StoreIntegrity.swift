// Stored-data checks on read, quarantine of damaged changes, and the whole-store check behind
// `fieldsync doctor` (docs/store.md, "Damage on disk").

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import GRDB

/// A materialized record whose sealed row does not open or decode although the storage key is right:
/// damaged on disk. Its clear index columns still say which record it is.
public struct DamagedRecord: Sendable, Equatable {
    /// The record id (nil if the id column itself is damaged; `rawID` then holds its bytes).
    public var id: RecordID?
    /// The id column as stored.
    public var rawID: [UInt8]
    /// The kind column (clear).
    public var kind: String
    /// The scope column (clear).
    public var scope: String
    /// What the check found.
    public var reason: String

    /// Creates a damaged-record entry.
    public init(id: RecordID?, rawID: [UInt8], kind: String, scope: String, reason: String) {
        self.id = id
        self.rawID = rawID
        self.kind = kind
        self.scope = scope
        self.reason = reason
    }

    /// The id as people see it (32 hex digits).
    public var idText: String { id?.description ?? Hex.encode(rawID) }
}

/// The records a query matched and the matching rows that are damaged.
public struct RecordScan: Sendable {
    /// Records that opened, newest event first.
    public var records: [FieldSyncCore.Record] = []
    /// Matching rows that did not open.
    public var damaged: [DamagedRecord] = []

    /// An empty scan.
    public init() {}
}

/// Damage found while reading, as told to `SQLiteStore.damageHandler`.
public enum StoreDamage: Sendable, Equatable {
    /// A change was quarantined.
    case change(QuarantinedChange)
    /// A record's sealed row does not open.
    case record(DamagedRecord)
}

/// One problem found by `SQLiteStore.check`.
public struct StoreProblem: Sendable, Equatable, CustomStringConvertible {
    /// What kind of problem.
    public enum Kind: String, Sendable {
        /// `PRAGMA integrity_check` reported something (the SQLite file itself).
        case sqlite
        /// A change's bytes fail the hash/decoding/column check.
        case change
        /// A change does not verify against its author's certificate (bad signature, impersonation).
        case signature
        /// A change's prevHash does not name the change held before it.
        case chain
        /// A record's sealed row does not open or decode.
        case record
        /// A log's held intervals and its rows disagree.
        case intervals
        /// A change quarantined earlier has not been received again intact yet.
        case quarantined
        /// The store is older than its rollback checkpoint (or the checkpoint is missing or altered).
        case rollback
        /// The newest epoch key held of a scope is older than the staleness threshold (no rotation has
        /// reached the node: attack case 27). Found by `fieldsync doctor`, not by the store check.
        case epochKey
    }

    /// The kind.
    public var kind: Kind
    /// Where (log and seq, record id, ...).
    public var subject: String
    /// What was found.
    public var detail: String

    /// Creates a problem.
    public init(_ kind: Kind, _ subject: String, _ detail: String) {
        self.kind = kind
        self.subject = subject
        self.detail = detail
    }

    public var description: String { "\(kind.rawValue) \(subject): \(detail)" }
}

/// What `SQLiteStore.check` looked at and found.
public struct StoreCheckReport: Sendable {
    /// Changes whose bytes were checked (evicted ones have no bytes left).
    public var changesChecked = 0
    /// Changes whose signature was checked.
    public var signaturesChecked = 0
    /// Records opened.
    public var recordsChecked = 0
    /// Logs whose chain and intervals were checked.
    public var logsChecked = 0
    /// Changes quarantined by this check (with `quarantine: true`).
    public var quarantinedNow = 0
    /// Records whose clear index columns were rewritten from their sealed content (with `quarantine: true`).
    public var reindexedNow = 0
    /// Everything found, in check order.
    public var problems: [StoreProblem] = []

    /// Creates an empty report.
    public init() {}

    /// Whether nothing was found.
    public var healthy: Bool { problems.isEmpty }
}

extension SQLiteStore {
    // MARK: checks on read

    /// Why a stored change row is damaged, or nil if it is intact: its bytes must hash (the change id,
    /// BLAKE2b-256 of the whole encoding) to the recorded hash, and their header must be the one the
    /// index columns say. Bytes that hash to the id verified at ingest are those bytes, so the rest of the
    /// change is not decoded again. Evicted rows (bytes deleted on purpose) are not checked.
    static func damage(of row: Row) -> String? {
        let evicted: Int?
        do { evicted = try row.decode(Int?.self, forColumn: "evicted") } catch { return "its evicted flag does not decode" }
        if (evicted ?? 0) != 0 { return nil }
        let stored: StoredChange
        do { stored = try change(row) } catch { return "its index columns do not decode (\(error))" }
        return damage(of: stored)
    }

    /// The check of `damage(of:)` on a decoded row (not evicted).
    static func damage(of stored: StoredChange) -> String? {
        guard (try? BLAKE2b.hash(stored.bytes, outputLength: 32)) == stored.hash else { return "its bytes do not hash to the recorded hash" }
        var reader = ByteReader(stored.bytes)
        guard let h = try? ChangeHeader(from: &reader) else { return "its header does not decode" }
        guard h.author == stored.log.author, h.scope == stored.log.scope, h.seq == stored.seq, h.prevHash == stored.prevHash,
              h.hlc == stored.hlc, h.contentType == stored.contentType, h.priority == stored.priority else {
            return "its index columns disagree with the change's signed header"
        }
        return nil
    }

    /// Runs a read of change rows (each selected as `rowid, *`), returns the intact ones and quarantines
    /// the damaged ones (in a write transaction after the read), telling `damageHandler`.
    /// - Parameter log: the log of every row, when the query selects by author and scope.
    func checkedChanges(of log: LogID? = nil, _ fetch: (Database) throws -> [Row]) throws -> [StoredChange] {
        let (good, bad) = try io {
            try db.read { db -> ([StoredChange], [(Int64, String)]) in
                var good: [StoredChange] = [], bad: [(Int64, String)] = []
                for row in try fetch(db) {
                    let stored: StoredChange
                    do { stored = try Self.change(row, log: log) } catch {
                        guard checksChanges else { throw error }
                        bad.append((try row.decode(Int64.self, forColumn: "rowid"), "its index columns do not decode (\(error))"))
                        continue
                    }
                    if checksChanges, !stored.bytes.isEmpty, let why = Self.damage(of: stored) {
                        bad.append((try row.decode(Int64.self, forColumn: "rowid"), why))
                    } else {
                        good.append(stored)
                    }
                }
                return (good, bad)
            }
        }
        if !bad.isEmpty {
            let done = try io {
                try db.write { db in try bad.compactMap { try self.quarantine(rowid: $0.0, reason: $0.1, in: db) } }
            }
            for q in done { damageHandler?(.change(q)) }
        }
        return good
    }

    /// Takes one damaged change row out of the store inside a write transaction: deletes it (its bytes
    /// go to the quarantine table), removes its seq from the log's held intervals (so reconciliation
    /// shows it missing and a peer sends it again) and fixes the counters. Checks the row again first
    /// (another process may have replaced it); returns nil if there is nothing to quarantine.
    func quarantine(rowid: Int64, reason: String, in db: Database) throws -> QuarantinedChange? {
        guard let row = try Row.fetchOne(db, sql: "SELECT rowid, * FROM changes WHERE rowid = ?", arguments: [rowid]),
              Self.damage(of: row) != nil else { return nil }
        // The row is damaged: its columns are copied to the quarantine as stored (DatabaseValue never fails to
        // decode), whatever their type; only what decodes is used to update the log's intervals.
        let copy = { (column: String) -> DatabaseValue in row[column] }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try db.execute(sql: "DELETE FROM changes WHERE rowid = ?", arguments: [rowid])
        try db.execute(sql: "UPDATE store_meta SET value = value - ? WHERE key = 'bytes_total'",
                       arguments: [(try? row.decode(Int64.self, forColumn: "size")) ?? 0])
        try db.execute(sql: """
            INSERT INTO quarantine(author, scope, seq, hash, reason, detected, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)
            """, arguments: [copy("author"), copy("scope"), copy("seq"), copy("hash"), reason, now, copy("bytes")])
        // A seq column that does not decode: the seq is taken from the change's own header if its bytes still
        // decode, so the log's intervals stop claiming it and peers send it again.
        let header: ChangeHeader? = (try? row.decode(Data.self, forColumn: "bytes")).flatMap { data in
            var reader = ByteReader([UInt8](data))
            return try? ChangeHeader(from: &reader)
        }
        guard let seq = (try? row.decode(Int64.self, forColumn: "seq")) ?? header.map({ Int64(bitPattern: $0.seq) }),
              let log = try? Self.log(row) else { return nil }
        let hash = (try? row.decode(Data.self, forColumn: "hash")) ?? Data()  // the report only; the intervals need seq and log
        var tx = Tx(db: db, store: self)
        var iv = try tx.intervals(log)
        iv.remove(UInt64(bitPattern: seq))
        try tx.setIntervals(log, iv)
        try tx.flush()
        return QuarantinedChange(log: log, seq: UInt64(bitPattern: seq), hash: [UInt8](hash), reason: reason, detectedAt: now,
                                 repaired: false)
    }

    public func quarantined() throws -> [QuarantinedChange] {
        try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM quarantine ORDER BY detected, rowid").compactMap { row in
                    // A quarantined row is a copy of a damaged one: what does not decode is left out, never trapped on.
                    guard let log = try? Self.log(row), let seq = try? row.decode(Int64.self, forColumn: "seq") else { return nil }
                    return QuarantinedChange(log: log, seq: UInt64(bitPattern: seq), hash: [UInt8]((try? row.decode(Data.self, forColumn: "hash")) ?? Data()),
                                             reason: (try? row.decode(String.self, forColumn: "reason")) ?? "(undecodable)",
                                             detectedAt: (try? row.decode(Int64.self, forColumn: "detected")) ?? 0,
                                             repaired: ((try? row.decode(Int.self, forColumn: "repaired")) ?? 0) != 0,
                                             cause: QuarantinedChange.Cause(rawValue: (try? row.decode(String.self, forColumn: "cause")) ?? "") ?? .damaged,
                                             bytes: [UInt8]((try? row.decode(Data.self, forColumn: "bytes")) ?? Data()))
                }
            }
        }
    }

    /// Checks the bytes of every held change (as on read), in chunks so a large store does not hold the
    /// database for long, and quarantines the damaged ones: what a node runs when it starts serving, so a
    /// change damaged while the node was down is fetched again at the next contact instead of waiting for
    /// someone to ask for it.
    /// - Returns: how many changes were checked and the ones quarantined.
    @discardableResult
    public func scrubChanges() throws -> (checked: Int, quarantined: [QuarantinedChange]) {
        var last: Int64 = 0, checked = 0
        var found: [QuarantinedChange] = []
        while true {
            let rows = try io {
                try db.read { db in
                    try Row.fetchAll(db, sql: "SELECT rowid, * FROM changes WHERE rowid > ? AND evicted = 0 ORDER BY rowid LIMIT 512",
                                     arguments: [last])
                }
            }
            guard let end = rows.last else { break }
            last = try end.decode(Int64.self, forColumn: "rowid")
            checked += rows.count
            let bad = try rows.compactMap { row in try Self.damage(of: row).map { (try row.decode(Int64.self, forColumn: "rowid"), $0) } }
            if !bad.isEmpty {
                let done = try io {
                    try db.write { db in try bad.compactMap { try self.quarantine(rowid: $0.0, reason: $0.1, in: db) } }
                }
                for q in done { damageHandler?(.change(q)) }
                found += done
            }
        }
        return (checked, found)
    }

    // MARK: the whole-store check

    /// How a record row's clear index columns differ from its sealed content, or nil.
    func indexDisagreement(_ row: Row, _ r: FieldSyncCore.Record) -> String? {
        let ix = RecordIndexEntry(r, schemas: schemas)
        var diffs: [String] = []
        // A column that does not decode (a hostile or damaged byte) differs from whatever the record says.
        func column<T: DatabaseValueConvertible & Equatable>(_ name: String, _ expected: T) -> Bool {
            do { return try row.decode(T.self, forColumn: name) == expected } catch { return false }
        }
        if !column("kind", r.kind.name) { diffs.append("kind") }
        if !column("scope", r.scope.path) { diffs.append("scope") }
        if !column("status", ix.statusLevel.map(Int.init)) { diffs.append("status") }
        if !column("event_time", ix.eventTime) { diffs.append("event time") }
        if !column("deleted", ix.deleted) { diffs.append("deleted") }
        if !column("updated", Int64(bitPattern: ix.updated)) { diffs.append("updated") }
        return diffs.isEmpty ? nil : diffs.joined(separator: ", ")
    }

    /// Checks the whole store: SQLite's `PRAGMA integrity_check`; every held change's bytes (decoding,
    /// hash, index columns) and, with `verify`, its signature; every log's chain (each held change's
    /// prevHash names the change held before it) and intervals (every held seq has a row, every row is
    /// in the intervals); every sealed record opens and decodes; changes still in quarantine. A store
    /// opened with `checksChanges: false` (synthetic changes) skips the byte, signature and chain checks.
    /// - Parameters:
    ///   - verify: checks one decoded change against its author's certificate (nil to skip signatures);
    ///     returns a problem description or nil.
    ///   - quarantine: repair what the store alone can: quarantine the damaged changes found (so peers
    ///     send them again) and rewrite altered record index columns from the sealed records.
    /// - Throws: `StoreError` if the store cannot be read at all.
    public func check(verify: ((Change) -> String?)? = nil, quarantine: Bool = false) throws -> StoreCheckReport {
        var report = StoreCheckReport()
        let lines = try io { try db.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") } }
        if lines != ["ok"] { for l in lines { report.problems.append(StoreProblem(.sqlite, "integrity_check", l)) } }
        var damagedRows: [(Int64, String)] = []
        var reindex: [FieldSyncCore.Record] = []
        // Changes, log by log, in seq order: bytes, signature, chain, intervals.
        for (log, held) in try holdings().sorted(by: { $0.key < $1.key }) {
            report.logsChecked += 1
            let subject = "\(log.author)/\(log.scope)"
            let rows = try io {
                try db.read { db in
                    try Row.fetchAll(db, sql: "SELECT rowid, * FROM changes WHERE author = ? AND scope = ? ORDER BY seq",
                                     arguments: [Data(log.author.raw.bytes), log.scope.path])
                }
            }
            var rowSeqs = HeldIntervals()
            var previous: (seq: UInt64, hash: [UInt8])?
            for row in rows {
                let rowid = try row.decode(Int64.self, forColumn: "rowid")  // SQLite's own: always an integer
                let seq: UInt64, evicted: Bool
                do {
                    seq = UInt64(bitPattern: try row.decode(Int64.self, forColumn: "seq"))
                    evicted = try row.decode(Int.self, forColumn: "evicted") != 0
                } catch {
                    let why = "its index columns do not decode (\(error))"
                    report.problems.append(StoreProblem(.change, "\(subject) row \(rowid)", why))
                    damagedRows.append((rowid, why))
                    previous = nil
                    continue
                }
                rowSeqs.insert(seq)
                if !evicted { report.changesChecked += 1 }
                if checksChanges, let why = Self.damage(of: row) {
                    report.problems.append(StoreProblem(.change, "\(subject)#\(seq)", why))
                    damagedRows.append((rowid, why))
                    previous = nil
                    continue
                }
                guard checksChanges else { continue }
                let stored = try Self.change(row)
                if let verify, !evicted, let c = try? Change(canonicalBytes: stored.bytes) {
                    report.signaturesChecked += 1
                    if let why = verify(c) { report.problems.append(StoreProblem(.signature, "\(subject)#\(seq)", why)) }
                }
                if let p = previous, p.seq + 1 == seq, stored.prevHash != p.hash {
                    report.problems.append(StoreProblem(.chain, "\(subject)#\(seq)", "prevHash does not name the held change #\(p.seq)"))
                }
                previous = (seq, stored.hash)
            }
            if rowSeqs != held {
                report.problems.append(StoreProblem(.intervals, subject, "held intervals \(held.ranges) but rows for \(rowSeqs.ranges)"))
            }
        }
        // Records: every sealed row opens.
        var lastRecord: Int64 = 0
        while true {
            let rows = try io {
                try db.read { db in
                    try Row.fetchAll(db, sql: "SELECT rowid, * FROM records WHERE rowid > ? ORDER BY rowid LIMIT 512", arguments: [lastRecord])
                }
            }
            guard let end = rows.last else { break }
            lastRecord = try end.decode(Int64.self, forColumn: "rowid")
            for row in rows {
                report.recordsChecked += 1
                let r: FieldSyncCore.Record
                do { r = try unseal(row) } catch let e as StoreError {
                    let d = Self.damagedRecord(row, reason: e.detail)
                    report.problems.append(StoreProblem(.record, "\(d.kind) \(d.idText) in \(d.scope)", e.detail))
                    continue
                }
                // The clear index columns are not authenticated: they must say what the sealed record says,
                // or queries (status, scope, time) would answer wrongly.
                if let why = indexDisagreement(row, r) {
                    report.problems.append(StoreProblem(.record, "\(r.kind) \(r.id) in \(r.scope)", "index columns altered: \(why)"))
                    if quarantine { reindex.append(r) }
                }
            }
        }
        for r in reindex {
            try replaceRecord(r)
            report.reindexedNow += 1
        }
        if quarantine, !damagedRows.isEmpty {
            let done = try io {
                try db.write { db in try damagedRows.compactMap { try self.quarantine(rowid: $0.0, reason: $0.1, in: db) } }
            }
            report.quarantinedNow = done.count
            for q in done { damageHandler?(.change(q)) }
        }
        if let r = try rollbackReport() {
            report.problems.append(StoreProblem(.rollback, "store", r + "; after checking the device: `fieldsync doctor --accept-rollback`"))
        }
        for q in try quarantined() where !q.repaired && q.cause == .damaged {
            report.problems.append(StoreProblem(.quarantined, "\(q.log.author)/\(q.log.scope)#\(q.seq)",
                                                "quarantined since \(q.detectedAt) ms (\(q.reason)); not yet received again from a peer"))
        }
        return report
    }

    /// Writes a record rebuilt elsewhere (from its signed history, by `fieldsync doctor --repair`) over
    /// a damaged row, sealed again with the storage key.
    public func replaceRecord(_ record: FieldSyncCore.Record) throws {
        try io {
            try db.write { db in
                var tx = Tx(db: db, store: self)
                try tx.saveRecord(record, touchedBy: [])
            }
        }
    }
}

// MARK: rollback checkpoint

extension SQLiteStore {
    private static let checkpointID = RecordID(ID128(high: 0, low: 1))

    /// Write transactions committed over the store's life (one per `commit` call, whether of one batch or
    /// of several together): with the changes held, how many changes a transaction carried on average.
    public func commitCount() throws -> UInt64 { try commitState().commits }

    /// The store's random id (made by the `v5-quarantine` migration) and its commit counter.
    func commitState() throws -> (id: [UInt8], commits: UInt64) {
        try io {
            try db.read { db in
                let id = try Data.fetchOne(db, sql: "SELECT value FROM store_meta WHERE key = 'store_id'").map { [UInt8]($0) } ?? []
                let n = try Int64.fetchOne(db, sql: "SELECT value FROM store_meta WHERE key = 'commits'") ?? 0
                return (id, UInt64(max(0, n)))
            }
        }
    }

    /// The checkpoint file of this store: `<checkpointDirectory>/store-<store id>.checkpoint`.
    func checkpointFile(in directory: String? = nil) throws -> String? {
        guard let dir = directory ?? checkpointDirectory else { return nil }
        return dir + "/store-" + Hex.encode(try storeID()) + ".checkpoint"
    }

    /// The store id (it never changes once the migration made it).
    func storeID() throws -> [UInt8] {
        if let id = storeIDCache.withLock({ $0 }) { return id }
        let id = try commitState().id
        storeIDCache.withLock { $0 = id }
        return id
    }

    /// Writes the checkpoint: the commit counter and store id, sealed with the storage key (so it cannot
    /// be forged or moved to another store), through a temporary file and a rename. Not synced: after a
    /// power loss the checkpoint can only be behind the store (which is synced), never ahead of it.
    func writeCheckpoint(_ commits: Int64, in directory: String? = nil) throws {
        guard let file = try checkpointFile(in: directory) else { return }
        let id = try storeID()
        var plain = id
        for i in (0..<8).reversed() { plain.append(UInt8(truncatingIfNeeded: UInt64(commits) >> (UInt64(i) * 8))) }
        let sealed = try sealer.seal(plain, id: Self.checkpointID)
        let tmp = file + ".tmp-\(getpid())"
        do {
            try Data(sealed).write(to: URL(fileURLWithPath: tmp))
            _ = chmod(tmp, 0o600)
            guard rename(tmp, file) == 0 else { throw StoreError(.ioError, "cannot rename \(tmp) to \(file)") }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError(.ioError, "cannot write the store checkpoint \(file): \(error)")
        }
    }

    /// The commit counter the checkpoint file holds (nil if there is none).
    /// - Throws: a description if the file does not open with the storage key.
    func readCheckpoint() throws -> Result<UInt64, RollbackFinding>? {
        guard let file = try checkpointFile(), FileManager.default.fileExists(atPath: file) else { return nil }
        let id = try storeID()
        guard let data = FileManager.default.contents(atPath: file),
              let plain = try? sealer.open([UInt8](data), id: Self.checkpointID), plain.count == id.count + 8,
              Array(plain.prefix(id.count)) == id else {
            return .failure(RollbackFinding("the store checkpoint \(file) does not open with this node's storage key (altered or not this store's)"))
        }
        return .success(plain.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// What the rollback check found (a description for people).
    struct RollbackFinding: Error {
        let text: String
        init(_ text: String) { self.text = text }
    }

    /// On open: the store must be at least as new as its checkpoint. A store older than its checkpoint (or
    /// whose checkpoint is missing although it was checkpointed, or altered) is not refused: the seq guard
    /// keeps this device's own logs from forking and peers return what the older copy lacks. The finding
    /// is kept in the store (`rollbackReport()`: doctor, status, logs) until an operator accepts it, and the
    /// checkpoint starts again from the store's state, so a second rollback is detected too.
    func checkCheckpoint() throws {
        let commits = try commitState().commits
        var finding: String?
        let existing = try readCheckpoint()
        switch existing {
        case let .success(checkpointed)?:
            if commits < checkpointed {
                finding = "\(path) is at commit \(commits) but this node had checkpointed commit \(checkpointed): an older copy of the "
                    + "store was put back; what it lacks comes back from peers"
            }
        case let .failure(f)?:
            finding = f.text
        case nil:
            // No checkpoint: either this store was never opened with one (start now, and mark the store so
            // that a later missing checkpoint is noticed), or the checkpoint was deleted.
            let marked = try io { try db.read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM store_meta WHERE key = 'checkpointed'") } }
            if marked == true {
                finding = "the checkpoint of \(path) (\(try checkpointFile() ?? "")) is missing although this store was checkpointed: "
                    + "the store may be an older copy"
            }
        }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try io {
            try db.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('checkpointed', 1)")
                if let finding {
                    try db.execute(sql: "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('rollback', ?)",
                                   arguments: ["\(finding) (found at \(now) ms)"])
                }
            }
        }
        if finding != nil || existing == nil { try writeCheckpoint(Int64(commits)) }
    }

    /// The rollback found when this store was opened (or earlier) and not yet accepted, or nil.
    public func rollbackReport() throws -> String? {
        try io { try db.read { db in try String.fetchOne(db, sql: "SELECT CAST(value AS TEXT) FROM store_meta WHERE key = 'rollback'") } }
    }

    /// Accepts a reported rollback (an operator's decision after checking the device: `fieldsync doctor
    /// --accept-rollback`): forgets the finding and starts a new checkpoint at the store's state.
    /// - Returns: the commit counter the new checkpoint holds.
    public static func acceptRollback(path: String, sealer: any RecordSealer, checkpointDirectory: String) throws -> UInt64 {
        let store = try SQLiteStore(path: path, sealer: sealer)  // no checkpoint: not checked
        try store.io {
            try store.db.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO store_meta(key, value) VALUES ('checkpointed', 1)")
                try db.execute(sql: "DELETE FROM store_meta WHERE key = 'rollback'")
            }
        }
        let commits = try store.commitState().commits
        try store.writeCheckpoint(Int64(commits), in: checkpointDirectory)
        return commits
    }
}

// MARK: compaction

extension SQLiteStore {
    /// Folds the WAL into the database file and truncates it (`wal_checkpoint(TRUNCATE)`), then rebuilds
    /// the file without free pages (`VACUUM`). With `secure_delete` on (always), the bytes of overwritten
    /// and deleted rows are zeroed when they are freed; after `compact` no copy of them is left in the
    /// WAL either (docs/store.md, "What a deleted record leaves on disk").
    public func compact() throws {
        try io {
            try db.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
                try db.execute(sql: "VACUUM")
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            }
        }
    }
}
