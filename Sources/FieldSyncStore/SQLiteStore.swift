import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import GRDB
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Seals materialized records at rest. The SQLite store never writes a record's content in clear; only
/// the index columns of `RecordIndexEntry` are (docs/threat-model.md lists them).
public protocol RecordSealer: Sendable {
    /// Encrypts a record's canonical bytes, binding `id` so sealed rows cannot be swapped.
    func seal(_ plaintext: [UInt8], id: RecordID) throws -> [UInt8]
    /// Decrypts what `seal` produced.
    /// - Throws: if the key is wrong or the row was tampered with.
    func open(_ sealed: [UInt8], id: RecordID) throws -> [UInt8]
}

/// How hard SQLite syncs to disk.
public enum SyncMode: String, Sendable, CaseIterable {
    /// `PRAGMA synchronous = FULL` (default): a committed batch survives power loss.
    case full
    /// `PRAGMA synchronous = NORMAL`: in WAL mode, survives a process crash but the last commits may
    /// be lost on power loss. Faster; for relay boxes on a UPS.
    case normal
}

/// The SQLite implementation of `SyncStore`, on GRDB.
///
/// - Changes are stored as received (header columns for indexing, the sealed bytes as they came).
/// - Materialized records are sealed with the node's storage key (`RecordSealer`); only the index
///   columns a query needs are clear.
/// - Every `commit` is one transaction in WAL mode; `synchronous` is FULL unless configured otherwise.
/// - The schema is versioned by named, append-only migrations; a store written by a newer version is
///   refused with a clear error.
///
/// ```swift
/// let store = try SQLiteStore(path: "/var/lib/fieldsync/store.sqlite", sealer: sealer)
/// let report = try store.commit(batch)
/// let open = try store.records(.openIncidents(in: try Scope("longnan/wudu/station-017")))
/// ```
public final class SQLiteStore: SyncStore, @unchecked Sendable {
    // Sendable: all access goes through the DatabaseQueue, which serializes it.
    let db: DatabaseQueue
    let sealer: any RecordSealer
    /// Limits in force.
    public let limits: StoreLimits
    /// Schemas used to index records.
    public let schemas: SchemaRegistry
    /// The file path.
    public let path: String
    /// Told about every damaged row found on read (a change quarantined, a record that does not open),
    /// for the node's log, status and metrics. Set it before the store is shared; it is called on the
    /// thread that read the row.
    public var damageHandler: (@Sendable (StoreDamage) -> Void)?
    /// Whether changes read are checked against their hash (see `init`).
    public let checksChanges: Bool
    /// How hard SQLite syncs to disk (see `init`).
    public let syncMode: SyncMode
    /// Where the rollback checkpoint is kept (nil: none).
    public let checkpointDirectory: String?
    /// The store id, read once (`storeID()`).
    let storeIDCache = Mutex<[UInt8]?>(nil)

    /// Opens (creating if needed) a store.
    /// - Parameters:
    ///   - path: the database file.
    ///   - sealer: seals records with the node's storage key.
    ///   - limits: quota and held-back bound.
    ///   - syncMode: durability (default `.full`).
    /// - Throws: `StoreError` with `.badDatabase` (not a FieldSync store, corrupted, or newer version),
    ///   `.wrongKey` (the sealer cannot open this store), `.busy` (another writer holds the lock), or
    ///   `.ioError`.
    ///   - maxFileBytes: a hard cap on the database file (SQLite `max_page_count`), for a node whose disk
    ///     is small: reaching it fails the batch with a "disk full" `StoreError.ioError` and loses nothing
    ///     committed before.
    ///   - checksChanges: check every change read against its hash and quarantine the damaged ones
    ///     (default; off only for stores of synthetic changes that are not real signed changes: the store
    ///     conformance tests, the crash writer, benchmarks).
    ///   - checkpointDirectory: where to keep the rollback checkpoint (outside the store file: the device
    ///     directory, beside the keystore); nil for none. With it, opening a store older than the last
    ///     commit checkpointed is noticed and kept for `rollbackReport()` (docs/store.md, "Rollback").
    ///   - create: whether a missing file may be created (a new, empty store). Commands that only read
    ///     pass false, so that a mistyped path is an error instead of a new store.
    ///   - busyTimeout: how long, in seconds, to wait for another connection's write lock before failing
    ///     with `StoreError.busy` (default 10).
    ///
    /// The file (and its `-wal`, `-shm` and `-journal` companions) must not be a symbolic link: SQLite
    /// would follow it, and a dangling link would create its target. A new store is created with mode
    /// 0600 (SQLite gives its companions the same mode), schema included, under a temporary name and
    /// then linked into place, so that a crash never leaves an empty file at `path`; group and other permissions found on an
    /// existing store's files are removed. An existing file that is empty or an SQLite database without
    /// FieldSync's schema is refused (`.badDatabase`) and left untouched: it is never initialised.
    public init(path: String, sealer: any RecordSealer, limits: StoreLimits = StoreLimits(), syncMode: SyncMode = .full,
                maxFileBytes: Int? = nil, schemas: SchemaRegistry = .standard, checksChanges: Bool = true,
                checkpointDirectory: String? = nil, create: Bool = true, busyTimeout: Double = 10) throws {
        let created = try Self.prepareFile(path, create: create)
        self.path = path
        self.checksChanges = checksChanges
        self.syncMode = syncMode
        self.checkpointDirectory = checkpointDirectory
        self.sealer = sealer
        self.limits = limits
        self.schemas = schemas
        var config = Configuration()
        config.label = "fieldsync.store"
        // A node's daemon and a CLI command (another process) may write the same store: wait for the other
        // writer's transaction (they are short) instead of failing at once with "database is locked".
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(syncMode == .full ? "FULL" : "NORMAL")")
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
            try db.execute(sql: "PRAGMA cache_size = -16384")  // 16 MiB
            if let maxFileBytes {
                let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
                _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(max(1, maxFileBytes / pageSize))")
            }
        }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            if !created {
                // Before anything writes to it: a database of another program is not turned into a store.
                let ours = try db.read { db in try Bool.fetchOne(db, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'grdb_migrations'") }
                guard ours == true else {
                    throw StoreError(.badDatabase, "\(path) is an SQLite database but not a FieldSync store; it was left untouched: "
                                     + "give the path of a store, or a path where none exists yet")
                }
            }
            try db.writeWithoutTransaction { db in
                let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
                if mode?.lowercased() != "wal" { throw StoreError(.ioError, "could not enable WAL (got \(mode ?? "nil"))") }
            }
            let migrator = Self.migrator
            try db.read { db in
                if try migrator.hasBeenSuperseded(db) {
                    throw StoreError(.badDatabase, "\(path) was written by a newer FieldSync; upgrade this node before opening it")
                }
            }
            try migrator.migrate(db)
        } catch let e as StoreError {
            throw e
        } catch let e as DatabaseError {
            throw Self.translate(e, path: path)
        }
        try checkKey()
        if checkpointDirectory != nil { try checkCheckpoint() }
    }

    /// Checks the store's files before SQLite opens them (see `init`); creates a missing store (mode
    /// 0600, schema in place) when `create`.
    /// - Returns: whether SQLite may skip the check that the file holds FieldSync's schema (never, now:
    ///   a store created here has it).
    static func prepareFile(_ path: String, create: Bool) throws -> Bool {
        for suffix in ["-wal", "-shm", "-journal"] {
            var st = stat()
            guard lstat(path + suffix, &st) == 0 else { continue }
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                throw StoreError(.ioError, "\(path + suffix) is \(kind(st.st_mode)), not a file; FieldSync does not follow links "
                                 + "for its store: remove it (the store's own companion files are plain files)")
            }
            if st.st_mode & 0o077 != 0 { _ = chmod(path + suffix, st.st_mode & 0o700) }
        }
        var st = stat()
        guard lstat(path, &st) == 0 else {
            guard errno == ENOENT else { throw StoreError(.ioError, "cannot open \(path): \(String(cString: strerror(errno)))") }
            guard create else {
                throw StoreError(.ioError, "no store at \(path); this command only reads a store and does not create one: check --store")
            }
            try createAtomically(path)
            return try prepareFile(path, create: false)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw StoreError(.ioError, "\(path) is \(kind(st.st_mode)), not a store file; FieldSync does not follow symbolic links "
                             + "for its store: give the real path")
        }
        var wal = stat()
        // A store whose content is still all in its write-ahead log (a running daemon) has an empty main file.
        guard st.st_size > 0 || (lstat(path + "-wal", &wal) == 0 && wal.st_size > 0) else {
            throw StoreError(.badDatabase, "\(path) is an empty file, not a FieldSync store; it was left untouched: remove it, "
                             + "or give the path of a store")
        }
        if st.st_mode & 0o077 != 0 { _ = chmod(path, st.st_mode & 0o700) }
        return false
    }

    /// Creates an empty store at `path` all at once: the schema is written to a 0600 file beside it,
    /// which is then linked to `path` (never replacing a file that appeared meanwhile). A crash leaves
    /// either no store or a complete one, never an empty file at `path` (which would be refused), at
    /// worst a `PATH.new-PID` file to delete.
    private static func createAtomically(_ path: String) throws {
        let tmp = "\(path).new-\(getpid())"
        func removeTemporary() { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(tmp + suffix) } }
        removeTemporary()
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError(.ioError, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        close(fd)
        do {
            let q = try DatabaseQueue(path: tmp)
            try q.writeWithoutTransaction { db in _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL") }
            try migrator.migrate(q)
            try q.close()
        } catch let e as DatabaseError {
            removeTemporary()
            throw translate(e, path: path)
        } catch {
            removeTemporary()
            throw error
        }
        defer { removeTemporary() }
        guard link(tmp, path) == 0 || errno == EEXIST else {
            throw StoreError(.ioError, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFLNK: "a symbolic link"
        case S_IFDIR: "a directory"
        case S_IFREG: "a file"
        default: "a special file"
        }
    }

    /// The `StoreError` for an SQLite error, keeping SQLite's (extended) result code.
    static func translate(_ e: DatabaseError, path: String) -> StoreError {
        let code = e.extendedResultCode.rawValue
        switch e.resultCode {
        case .SQLITE_NOTADB, .SQLITE_CORRUPT:
            return StoreError(.badDatabase, "\(path) is not a FieldSync store or is corrupted (\(e.message ?? "")); restore it from a peer or a backup",
                              resultCode: code)
        case .SQLITE_FULL:
            return StoreError(.ioError, "disk full while writing \(path); free space and retry (nothing committed was lost)", resultCode: code)
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return StoreError(.busy, "\(path) is locked by another writer (another fieldsync process on the same store?) "
                              + "for longer than the wait; nothing was applied: retry (\(e.message ?? "\(e.resultCode)"))", resultCode: code)
        case .SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM:
            return StoreError(.ioError, "cannot write \(path): \(e.message ?? "\(e.resultCode)")", resultCode: code)
        default:
            return StoreError(.ioError, "\(path): \(e)", resultCode: code)
        }
    }

    func io<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as DatabaseError {
            throw Self.translate(e, path: path)
        } catch let e as RowDecodingError {
            // A stored value of the wrong type (a damaged or hostile file): a typed error, never a trap.
            throw StoreError(.badDatabase, "\(path) holds a value that does not decode (\(String(describing: e).prefix(300))); "
                             + "run `fieldsync doctor` or restore the store from a peer or a backup")
        }
    }

    /// Schema migrations, append-only: never edit a released one, add a new one.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE store_meta(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);
                CREATE TABLE changes(
                    hash BLOB NOT NULL UNIQUE,
                    author BLOB NOT NULL, scope TEXT NOT NULL, seq INTEGER NOT NULL,
                    prev_hash BLOB NOT NULL, hlc INTEGER NOT NULL,
                    content_type INTEGER NOT NULL, priority INTEGER NOT NULL,
                    size INTEGER NOT NULL, opened INTEGER NOT NULL DEFAULT 0, evicted INTEGER NOT NULL DEFAULT 0,
                    bytes BLOB NOT NULL
                );
                CREATE UNIQUE INDEX changes_position ON changes(author, scope, seq);
                CREATE INDEX changes_unopened ON changes(scope) WHERE opened = 0 AND evicted = 0;
                CREATE TABLE logs(
                    author BLOB NOT NULL, scope TEXT NOT NULL,
                    intervals BLOB NOT NULL, held_back INTEGER NOT NULL, receipted INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY(author, scope)
                ) WITHOUT ROWID;
                CREATE TABLE records(
                    id BLOB NOT NULL UNIQUE, kind TEXT NOT NULL, scope TEXT NOT NULL,
                    status INTEGER, event_time INTEGER, deleted INTEGER NOT NULL, updated INTEGER NOT NULL,
                    sealed BLOB NOT NULL
                );
                CREATE INDEX records_kind_scope_status ON records(kind, scope, status);
                CREATE INDEX records_kind_time ON records(kind, event_time);
                CREATE TABLE record_changes(
                    record_id BLOB NOT NULL, change_hash BLOB NOT NULL, PRIMARY KEY(record_id, change_hash)
                ) WITHOUT ROWID;
                CREATE TABLE forks(
                    conflicting_hash BLOB PRIMARY KEY NOT NULL, author BLOB NOT NULL, scope TEXT NOT NULL,
                    seq INTEGER NOT NULL, kept BLOB NOT NULL, conflicting BLOB NOT NULL
                ) WITHOUT ROWID;
                INSERT INTO store_meta(key, value) VALUES ('bytes_total', 0), ('held_back_total', 0);
                """)
        }
        // Key grants and revocations are re-read on every start (`controlChanges`): a partial index keeps
        // that a seek even in a store of millions of changes.
        m.registerMigration("v2-control-index") { db in
            try db.execute(sql: "CREATE INDEX changes_control ON changes(hlc) WHERE content_type >= 128")  // ContentType.firstControl; a released migration, never edited
        }
        // Certificates of the authors of held changes (public material, kept in clear like the changes),
        // so a restarted node still forwards each change with its author's certificate.
        m.registerMigration("v3-certificates") { db in
            try db.execute(sql: "CREATE TABLE certificates(subject BLOB PRIMARY KEY NOT NULL, bytes BLOB NOT NULL) WITHOUT ROWID")
        }
        // Fork proofs are looked up per log on ingest (is this log forked?) and by the CLI: index them by
        // position. The table itself is unchanged: a chain fork's two changes fit its columns too.
        m.registerMigration("v4-fork-index") { db in
            try db.execute(sql: "CREATE INDEX forks_log ON forks(author, scope, seq)")
        }
        // Changes found corrupt on disk, taken out of `changes` (and of their log's intervals, so a peer
        // sends them again), with the damaged bytes kept for forensics. `repaired` is set when an intact
        // copy is stored again.
        m.registerMigration("v5-quarantine") { db in
            try db.execute(sql: """
                CREATE TABLE quarantine(
                    author BLOB NOT NULL, scope TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
                    reason TEXT NOT NULL, detected INTEGER NOT NULL, repaired INTEGER NOT NULL DEFAULT 0, bytes BLOB NOT NULL
                );
                CREATE INDEX quarantine_pending ON quarantine(author, scope, seq) WHERE repaired = 0;
                INSERT OR IGNORE INTO store_meta(key, value) VALUES ('commits', 0);
                INSERT OR IGNORE INTO store_meta(key, value) VALUES ('store_id', randomblob(16));
                """)
        }
        // Several certificates per subject: a renewed device keeps the certificate its older changes were
        // signed under, and county authority certificates are kept next to the devices they issued.
        m.registerMigration("v6-certificate-renewals") { db in
            try db.execute(sql: """
                CREATE TABLE certificates_v6(subject BLOB NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY(subject, bytes)) WITHOUT ROWID;
                INSERT INTO certificates_v6(subject, bytes) SELECT subject, bytes FROM certificates;
                DROP TABLE certificates;
                ALTER TABLE certificates_v6 RENAME TO certificates;
                """)
        }
        // Changes by revoked devices dated after their cut-off (attack case 35) share the quarantine with
        // damaged ones; `cause` tells them apart (damaged rows wait for a peer; revoked ones are kept for audit).
        m.registerMigration("v7-quarantine-cause") { db in
            try db.execute(sql: "ALTER TABLE quarantine ADD COLUMN cause TEXT NOT NULL DEFAULT 'damaged'")
        }
        // When each change first reached this node: the wall clock (ms since the Unix epoch) of the commit
        // that stored it (`CommitBatch.now`). The command center judges "feedback that reached this node after
        // its deadline" by it (docs/reports.md). Changes stored before this migration keep NULL: unknown (the
        // reports then fall back to the time the change was written, and say so).
        m.registerMigration("v8-change-arrival") { db in
            try db.execute(sql: "ALTER TABLE changes ADD COLUMN arrived INTEGER")
        }
        // Open records of a kind in every scope (the command center's overview and map at HQ: incidents reported,
        // dispatched or on scene) by status, then time. With only `(kind, scope, status)` and `(kind, event_time)`
        // such a query walked every incident of the year and read each row to test its status (100 ms on a
        // 1,000,000-change store); the open ones are few, and this index finds them directly. Clear columns only.
        m.registerMigration("v9-record-status-index") { db in
            try db.execute(sql: "CREATE INDEX records_kind_status_time ON records(kind, status, event_time)")
        }
        return m
    }

    // MARK: key check

    private static let keyCheckID = RecordID(ID128(high: 0, low: 0))
    private static let keyCheckPlaintext = Array("fieldsync store key check v1".utf8)

    private func checkKey() throws {
        try io {
            try db.write { db in
                if let data = try Data.fetchOne(db, sql: "SELECT value FROM store_meta WHERE key = 'key_check'") {
                    let sealed = [UInt8](data)
                    guard (try? sealer.open(sealed, id: Self.keyCheckID)) == Self.keyCheckPlaintext else {
                        throw StoreError(.wrongKey, "the storage key does not open \(path); use this node's keystore")
                    }
                } else {
                    let sealed = try sealer.seal(Self.keyCheckPlaintext, id: Self.keyCheckID)
                    try db.execute(sql: "INSERT INTO store_meta(key, value) VALUES ('key_check', ?)", arguments: [Data(sealed)])
                }
            }
        }
    }

    // MARK: SyncStore

    public func holdings() throws -> [LogID: HeldIntervals] {
        try io {
            try db.read { db in
                var out: [LogID: HeldIntervals] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT author, scope, intervals FROM logs") {
                    out[try Self.log(row)] = try HeldIntervals(canonicalBytes: [UInt8](try row.decode(Data.self, forColumn: "intervals")))
                }
                return out
            }
        }
    }

    public func holdings(of log: LogID) throws -> HeldIntervals {
        try io { try db.read { db in try Tx(db: db, store: self).intervals(log) } }
    }

    public func change(_ log: LogID, seq: UInt64) throws -> StoredChange? {
        try checkedChanges(of: log) { db in
            try Row.fetchAll(db, sql: "SELECT rowid, * FROM changes WHERE author = ? AND scope = ? AND seq = ? AND evicted = 0",
                             arguments: [Data(log.author.raw.bytes), log.scope.path, Int64(bitPattern: seq)])
        }.first
    }

    public func hash(_ log: LogID, seq: UInt64) throws -> [UInt8]? {
        try io {
            try db.read { db in
                try Data.fetchOne(db, sql: "SELECT hash FROM changes WHERE author = ? AND scope = ? AND seq = ?",
                                  arguments: [Data(log.author.raw.bytes), log.scope.path, Int64(bitPattern: seq)]).map { [UInt8]($0) }
            }
        }
    }

    public func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange] {
        try checkedChanges(of: log) { db in
            try Row.fetchAll(db, sql: """
                SELECT rowid, * FROM changes WHERE author = ? AND scope = ? AND seq BETWEEN ? AND ? AND evicted = 0 ORDER BY seq
                """, arguments: [Data(log.author.raw.bytes), log.scope.path, Int64(seqs.lowerBound), Int64(min(seqs.upperBound, UInt64(Int64.max)))])
        }
    }

    /// One indexed read of the position and header columns (no bytes, no scope parsing: the log is given).
    public func changeKeys(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChangeKey] {
        try io {
            try db.read { db in
                var keys: [StoredChangeKey] = []
                let rows = try Row.fetchCursor(db, sql: """
                    SELECT seq, hlc, content_type, priority FROM changes
                    WHERE author = ? AND scope = ? AND seq BETWEEN ? AND ? AND evicted = 0 ORDER BY seq
                    """, arguments: [Data(log.author.raw.bytes), log.scope.path, Int64(seqs.lowerBound),
                                     Int64(min(seqs.upperBound, UInt64(Int64.max)))])
                while let row = try rows.next() {
                    let rawPriority = try row.decode(Int.self, atIndex: 3)
                    guard let priority = UInt8(exactly: rawPriority).flatMap(Priority.init(rawValue:)) else {
                        throw StoreError(.badDatabase, "priority column \(rawPriority) is not a priority")
                    }
                    keys.append(StoredChangeKey(log: log, seq: UInt64(try row.decode(Int64.self, atIndex: 0)), hlc: HLCTimestamp(raw: UInt64(bitPattern: (try row.decode(Int64.self, atIndex: 1)))),
                                                contentType: ContentType(rawValue: UInt8(try row.decode(Int.self, atIndex: 2))), priority: priority))
                }
                return keys
            }
        }
    }

    public func commit(_ batch: CommitBatch) throws -> CommitReport {
        let (report, commits) = try io {
            try db.write { db in
                var tx = Tx(db: db, store: self)
                tx.arrivedAt = batch.now.map { Int64(clamping: $0) }
                let report = try CommitLogic.commit(batch, in: &tx, limits: limits)
                try tx.flush()
                let commits = try Int64.fetchOne(db, sql: "UPDATE store_meta SET value = value + 1 WHERE key = 'commits' RETURNING value") ?? 0
                return (report, commits)
            }
        }
        if syncMode == .normal && batch.mustBeDurable(after: report) { try syncToDisk() }
        if checkpointDirectory != nil { try writeCheckpoint(commits) }
        return report
    }

    /// Applies the batches in order in one write transaction (one sync to disk, one commit counted): all
    /// of them or, if any throws, none. Each is applied exactly as `commit(_:)` would after the ones
    /// before it (`CommitLogic.commit` sees their rows), with its own report.
    public func commit(_ batches: [CommitBatch]) throws -> [CommitReport] {
        if batches.count <= 1 { return try batches.map { try commit($0) } }
        let (reports, commits) = try io {
            try db.write { db in
                var tx = Tx(db: db, store: self)
                var reports: [CommitReport] = []
                reports.reserveCapacity(batches.count)
                for batch in batches {
                    tx.arrivedAt = batch.now.map { Int64(clamping: $0) }
                    reports.append(try CommitLogic.commit(batch, in: &tx, limits: limits))
                }
                try tx.flush()
                let commits = try Int64.fetchOne(db, sql: "UPDATE store_meta SET value = value + 1 WHERE key = 'commits' RETURNING value") ?? 0
                return (reports, commits)
            }
        }
        if syncMode == .normal && zip(batches, reports).contains(where: { $0.mustBeDurable(after: $1) }) { try syncToDisk() }
        if checkpointDirectory != nil { try writeCheckpoint(commits) }
        return reports
    }

    /// Makes every commit so far durable on a `normal` store, before the one just made is acknowledged:
    /// a small write transaction committed with `synchronous = FULL` (SQLite refuses to change the level
    /// inside a transaction, and a commit at FULL syncs the WAL, which holds every earlier commit too). A
    /// `normal` store that learned a revocation and lost it to a power loss would accept the revoked device
    /// again until a peer brought the revocation back (found by the simulator's power-loss swarm).
    func syncToDisk() throws {
        try io {
            try db.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
                try db.inTransaction {
                    // A write that changes a row: SQLite writes nothing for an UPDATE that leaves a row as it was.
                    try db.execute(sql: "INSERT INTO store_meta(key, value) VALUES ('trust_syncs', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
                    return .commit
                }
            }
        }
    }

    /// Commits of this `normal` store synced at once because they changed what the node trusts
    /// (`CommitBatch.mustBeDurable(after:)`), as counted by the syncs themselves: docs/store.md, "Durability".
    public func trustSyncs() throws -> Int {
        try io { try db.read { db in try Int.fetchOne(db, sql: "SELECT value FROM store_meta WHERE key = 'trust_syncs'") ?? 0 } }
    }

    /// One materialized record.
    /// - Throws: `StoreError` `.damaged` naming the record if its sealed row does not open or decode
    ///   (the storage key was checked when the store opened, so this is damage, not a wrong key).
    public func record(_ id: RecordID) throws -> FieldSyncCore.Record? {
        try io { try db.read { db in try Tx(db: db, store: self).loadRecord(id) } }
    }

    /// Which of `ids` have a row in `records`: one read transaction, 256 ids per statement, nothing
    /// unsealed.
    public func heldRecordIDs(_ ids: [RecordID]) throws -> Set<RecordID> {
        try io {
            try db.read { db in
                var out = Set<RecordID>()
                for start in stride(from: 0, to: ids.count, by: 256) {
                    let chunk = ids[start..<min(start + 256, ids.count)]
                    let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                    for data in try Data.fetchAll(db, sql: "SELECT id FROM records WHERE id IN (\(marks))",
                                                  arguments: StatementArguments(chunk.map { Data($0.raw.bytes) })) {
                        if let raw = ID128(bytes: [UInt8](data)) { out.insert(RecordID(raw)) }
                    }
                }
                return out
            }
        }
    }

    /// The ids of the records in `range` (deleted and damaged ones included), in id order: a range search
    /// on the index of `records.id` (the column is UNIQUE); no record is read or unsealed.
    public func recordIDs(in range: ClosedRange<RecordID>) throws -> [RecordID] {
        try io {
            try db.read { db in
                try Data.fetchAll(db, sql: Self.recordIDRangeSQL,
                                  arguments: [Data(range.lowerBound.raw.bytes), Data(range.upperBound.raw.bytes)])
                    .compactMap { ID128(bytes: [UInt8]($0)).map(RecordID.init) }
            }
        }
    }

    /// The statement of `recordIDs(in:)`.
    static let recordIDRangeSQL = "SELECT id FROM records WHERE id BETWEEN ? AND ? ORDER BY id"

    /// SQLite's plan for `recordIDs(in:)` (tests check that it searches the id index).
    public func queryPlanRecordIDRange() throws -> [String] {
        try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + Self.recordIDRangeSQL, arguments: [Data(), Data()])
                    .map { $0["detail"] as String }
            }
        }
    }

    /// Records matching a query, newest event first. A damaged record (its sealed row does not open)
    /// does not hide the others: it is left out here and reported to `damageHandler`; `recordScan(_:)`
    /// returns it by name.
    public func records(_ query: RecordQuery) throws -> [FieldSyncCore.Record] {
        let scan = try recordScan(query)
        for d in scan.damaged { damageHandler?(.record(d)) }
        return scan.records
    }

    /// Records matching a query, newest event first, and the matching rows that are damaged (by the clear
    /// index columns; a text filter cannot be applied to a record that does not open, so with a text
    /// filter every damaged row the other filters select is reported).
    public func recordScan(_ query: RecordQuery) throws -> RecordScan {
        let (sql, args) = Self.sql(for: query, schemas: schemas)
        return try io {
            try db.read { db in
                var out = RecordScan()
                for row in try Row.fetchAll(db, sql: sql, arguments: args) {
                    let r: FieldSyncCore.Record
                    do { r = try self.unseal(row) } catch let e as StoreError where e.code == .damaged {
                        out.damaged.append(Self.damagedRecord(row, reason: e.detail))
                        continue
                    }
                    if query.text == nil || query.matches(r, index: RecordIndexEntry(r, schemas: schemas)) { out.records.append(r) }
                    if let limit = query.limit, out.records.count >= limit { break }
                }
                return out
            }
        }
    }

    /// The SQL a query runs (exposed so tests and `docs/benchmarks.md` can show its plan).
    public static func sql(for q: RecordQuery, schemas: SchemaRegistry = .standard) -> (String, StatementArguments) {
        let (from, clauses, args) = filter(for: q, schemas: schemas)
        var sql = "SELECT * FROM " + from
        if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
        sql += " ORDER BY event_time DESC, id DESC"
        if let limit = q.limit, q.text == nil { sql += " LIMIT \(limit)" }
        return (sql, args)
    }

    /// The table with the index a query is pinned to, its conditions on the clear columns (all but `text`)
    /// and their arguments.
    static func filter(for q: RecordQuery, schemas: SchemaRegistry) -> (from: String, clauses: [String], args: StatementArguments) {
        var clauses: [String] = []
        var args: [any DatabaseValueConvertible] = []
        if let k = q.kind {
            clauses.append("kind = ?")
            args.append(k.name)
        }
        if let s = q.statusLevels {
            clauses.append("status BETWEEN ? AND ?")
            args += [Int(s.lowerBound), Int(s.upperBound)]
        }
        if let scope = q.scope {
            // The scope itself or anything below it: a range on the index, no LIKE scan.
            clauses.append("(scope = ? OR (scope >= ? AND scope < ?))")
            args += [scope.path, scope.path + "/", scope.path + "0"]
        }
        if let since = q.since {
            clauses.append("event_time >= ?")
            args.append(since)
        }
        if let until = q.until {
            clauses.append("event_time < ?")
            args.append(until)
        }
        if !q.includeDeleted { clauses.append("deleted = 0") }
        // A station's records are a narrow range of (kind, scope): pin that index rather than let the
        // planner walk the time index for the ORDER BY on a store without statistics.
        if q.kind != nil && q.scope != nil { return ("records INDEXED BY records_kind_scope_status", clauses, StatementArguments(args)) }
        // Open records in every scope: statuses below the kind's last level (records end there: a year's store
        // holds few below it) are seeks by status, then sorted by time; the planner, without statistics, would
        // walk the time index and read every row of the kind. Any other query of a kind (a range holding the
        // last level, `closed`: most of the table) keeps the time index, which a LIMIT stops early: the planner
        // would take the status index for a status range of any width (found by
        // `SQLiteStoreTests.openIncidentsInEveryScopeUseTheStatusIndex`).
        if let k = q.kind {
            if let levels = q.statusLevels, let last = lastStatusLevel(of: k, schemas), levels.upperBound < last {
                return ("records INDEXED BY records_kind_status_time", clauses, StatementArguments(args))
            }
            return ("records INDEXED BY records_kind_time", clauses, StatementArguments(args))
        }
        return ("records", clauses, StatementArguments(args))
    }

    /// The highest level of `kind`'s status lattice, if its schema indexes one.
    static func lastStatusLevel(of kind: RecordKind, _ schemas: SchemaRegistry) -> UInt8? {
        guard let schema = schemas.schemas[kind], let field = schema.statusField.flatMap(schema.field),
              case let .lattice(levels) = field.kind, !levels.isEmpty else { return nil }
        return UInt8(exactly: levels.count - 1)
    }

    /// Per scope, the records matching `query` counted from the clear index columns (scope, and the greatest
    /// `updated` HLC) in one grouped read: no record is opened, so a damaged row is counted like the others.
    /// A query with `text` needs the records opened: it is answered from `records(_:)`. `limit` is not applied.
    public func recordTallies(_ query: RecordQuery) throws -> [RecordTally] {
        if query.text != nil {
            var all = query
            all.limit = nil
            return RecordTally.tally(try records(all))
        }
        let (from, clauses, args) = Self.filter(for: query, schemas: schemas)
        var sql = "SELECT scope, count(*), max(updated) FROM " + from
        if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
        sql += " GROUP BY scope ORDER BY scope"
        return try io {
            try db.read { db in
                try Row.fetchAll(db, sql: sql, arguments: args).map { row in
                    let path = try row.decode(String.self, atIndex: 0)
                    guard let scope = try? Scope(path) else { throw StoreError(.badDatabase, "records.scope \"\(path.prefix(80))\" is not a scope") }
                    return RecordTally(scope: scope, count: try row.decode(Int.self, atIndex: 1),
                                       newest: HLCTimestamp(raw: UInt64(bitPattern: try row.decode(Int64?.self, atIndex: 2) ?? 0)))
                }
            }
        }
    }

    /// SQLite's plan for a query (`EXPLAIN QUERY PLAN`), one line per step.
    public func queryPlan(_ query: RecordQuery) throws -> [String] {
        let (sql, args) = Self.sql(for: query, schemas: schemas)
        return try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: args).map { $0["detail"] as String }
            }
        }
    }

    public func history(of id: RecordID) throws -> [StoredChange] {
        try checkedChanges { db in
            try Row.fetchAll(db, sql: """
                SELECT c.rowid, c.* FROM record_changes rc JOIN changes c ON c.hash = rc.change_hash
                WHERE rc.record_id = ? ORDER BY c.hlc, c.author, c.scope, c.seq
                """, arguments: [Data(id.raw.bytes)])
        }
    }

    /// One read transaction, 256 records per statement: the `record_changes` links of each record joined
    /// to the `changes` rows by hash (both indexed), header columns and `arrived` only (no bytes read, so
    /// nothing to check for damage; evicted changes included).
    public func arrivals(of records: [RecordID]) throws -> [RecordID: [ChangeArrival]] {
        try io {
            try db.read { db in
                var out: [RecordID: [ChangeArrival]] = [:]
                for start in stride(from: 0, to: records.count, by: 256) {
                    let chunk = records[start..<min(start + 256, records.count)]
                    let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                    let rows = try Row.fetchCursor(db, sql: """
                        SELECT rc.record_id, c.author, c.scope, c.seq, c.hlc, c.arrived FROM record_changes rc
                        JOIN changes c ON c.hash = rc.change_hash WHERE rc.record_id IN (\(marks))
                        ORDER BY rc.record_id, c.hlc, c.author, c.scope, c.seq
                        """, arguments: StatementArguments(chunk.map { Data($0.raw.bytes) }))
                    while let row = try rows.next() {
                        guard let raw = ID128(bytes: [UInt8](try row.decode(Data.self, forColumn: "record_id"))) else { continue }
                        let arrived = try row.decode(Int64?.self, forColumn: "arrived")
                        out[RecordID(raw), default: []].append(ChangeArrival(
                            log: try Self.log(row), seq: UInt64(try row.decode(Int64.self, forColumn: "seq")),
                            hlc: HLCTimestamp(raw: UInt64(bitPattern: try row.decode(Int64.self, forColumn: "hlc"))),
                            arrivedAt: arrived.map { UInt64(clamping: $0) }))
                    }
                }
                return out
            }
        }
    }

    public func unopened(in scope: Scope?) throws -> [StoredChange] {
        try checkedChanges { db in
            var sql = "SELECT rowid, * FROM changes WHERE opened = 0 AND evicted = 0"
            var args: [any DatabaseValueConvertible] = []
            if let scope {
                sql += " AND (scope = ? OR (scope >= ? AND scope < ?))"
                args += [scope.path, scope.path + "/", scope.path + "0"]
            }
            sql += " ORDER BY author, scope, seq"
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args))
        }
    }

    public func controlChanges() throws -> [StoredChange] {
        try checkedChanges { db in
            try Row.fetchAll(db, sql: """
                SELECT rowid, * FROM changes WHERE content_type >= \(ContentType.firstControl) AND content_type IN (\(ContentType.keyGrant.rawValue), \(ContentType.revocation.rawValue)) AND evicted = 0
                ORDER BY hlc, author, scope, seq
                """)
        }
    }

    public func changes(by author: DeviceID, after hlc: HLCTimestamp) throws -> [StoredChange] {
        try checkedChanges { db in
            try Row.fetchAll(db, sql: """
                SELECT rowid, * FROM changes WHERE author = ? AND hlc > ? AND evicted = 0 ORDER BY scope, seq
                """, arguments: [Data(author.raw.bytes), Int64(bitPattern: hlc.raw)])
        }
    }

    public func forks() throws -> [ForkEvidence] {
        try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT seq, kept, conflicting FROM forks ORDER BY author, scope, seq, conflicting_hash")
                    .map(Self.fork)
            }
        }
    }

    public func forks(of log: LogID) throws -> [ForkEvidence] {
        try io { try db.read { db in try Tx(db: db, store: self).forks(of: log) } }
    }

    /// SQLite's plan for the per-log fork lookup of `forks(of:)` (tests check it uses the index).
    public func queryPlanForksOfLog() throws -> [String] {
        try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT seq, kept, conflicting FROM forks WHERE author = ? AND scope = ? ORDER BY seq, conflicting_hash",
                                 arguments: [Data(count: 16), "x"]).map { $0["detail"] as String }
            }
        }
    }

    static func fork(_ row: Row) throws -> ForkEvidence {
        do {
            let kept = try StoredChange(canonicalBytes: [UInt8](try row.decode(Data.self, forColumn: "kept")))
            let other = try StoredChange(canonicalBytes: [UInt8](try row.decode(Data.self, forColumn: "conflicting")))
            return ForkEvidence(log: kept.log, seq: UInt64(try row.decode(Int64.self, forColumn: "seq")), kept: kept, conflicting: other)
        } catch {
            throw StoreError(.badDatabase, "a fork proof does not decode (\(error)); restore the store from a peer or a backup")
        }
    }

    public func certificates() throws -> [Certificate] {
        try io {
            try db.read { db in
                try Data.fetchAll(db, sql: "SELECT bytes FROM certificates ORDER BY subject, bytes").map { data in
                    do { return try Certificate(canonicalBytes: [UInt8](data)) } catch {
                        throw StoreError(.badDatabase, "\(path) holds an undecodable certificate (\(error)); restore it from a peer or a backup")
                    }
                }
            }
        }
    }

    public func receipted(_ log: LogID) throws -> UInt64 {
        try io {
            try db.read { db in
                UInt64(try Int64.fetchOne(db, sql: "SELECT receipted FROM logs WHERE author = ? AND scope = ?",
                                          arguments: [Data(log.author.raw.bytes), log.scope.path]) ?? 0)
            }
        }
    }

    /// One read: the logs table, and one seek by `changes_position` (a prepared statement reused) per log for
    /// its newest change's key.
    public func logSummaries() throws -> [LogSummary] {
        try io {
            try db.read { db in
                let newest = try db.cachedStatement(sql: """
                    SELECT hlc, content_type, priority FROM changes WHERE author = ? AND scope = ? AND seq = ? AND evicted = 0
                    """)
                var out: [LogSummary] = []
                for row in try Row.fetchAll(db, sql: "SELECT author, scope, intervals, receipted FROM logs") {
                    let held = try HeldIntervals(canonicalBytes: [UInt8](try row.decode(Data.self, forColumn: "intervals")))
                    guard let top = held.ranges.last?.upperBound else { continue }
                    let log = try Self.log(row)
                    var key: StoredChangeKey?
                    if let k = try Row.fetchOne(newest, arguments: [row["author"] as Data, log.scope.path, Int64(bitPattern: top)]) {
                        let rawPriority = try k.decode(Int.self, atIndex: 2)
                        guard let priority = UInt8(exactly: rawPriority).flatMap(Priority.init(rawValue:)) else {
                            throw StoreError(.badDatabase, "priority column \(rawPriority) is not a priority")
                        }
                        key = StoredChangeKey(log: log, seq: top, hlc: HLCTimestamp(raw: UInt64(bitPattern: try k.decode(Int64.self, atIndex: 0))),
                                              contentType: ContentType(rawValue: UInt8(try k.decode(Int.self, atIndex: 1))), priority: priority)
                    }
                    out.append(LogSummary(log: log, held: held, newest: key,
                                          receipted: UInt64(try row.decode(Int64.self, forColumn: "receipted"))))
                }
                return out.sorted { $0.log < $1.log }
            }
        }
    }

    public func status() throws -> StoreStatus {
        try io {
            try db.read { db in
                var s = StoreStatus()
                s.logs = try Int.fetchOne(db, sql: "SELECT count(*) FROM logs") ?? 0
                s.changes = try Int.fetchOne(db, sql: "SELECT count(*) FROM changes WHERE evicted = 0") ?? 0
                s.changeBytes = try Tx(db: db, store: self).bytesTotal()
                s.heldBack = try Tx(db: db, store: self).heldBackTotal()
                s.unopened = try Int.fetchOne(db, sql: "SELECT count(*) FROM changes WHERE opened = 0 AND evicted = 0") ?? 0
                s.records = try Int.fetchOne(db, sql: "SELECT count(*) FROM records") ?? 0
                s.forks = try Int.fetchOne(db, sql: "SELECT count(*) FROM forks") ?? 0
                s.quarantined = try Int.fetchOne(db, sql: "SELECT count(*) FROM quarantine WHERE repaired = 0 AND cause = 'damaged'") ?? 0
                s.revokedQuarantined = try Int.fetchOne(db, sql: "SELECT count(*) FROM quarantine WHERE cause = 'revoked'") ?? 0
                s.receipted = try Int.fetchOne(db, sql: """
                    SELECT count(*) FROM changes c JOIN logs l ON l.author = c.author AND l.scope = c.scope
                    WHERE c.seq <= l.receipted
                    """) ?? 0
                s.limits = limits
                return s
            }
        }
    }

    // MARK: rows

    static func log(_ row: Row) throws -> LogID {
        guard let author = ID128(bytes: [UInt8](try row.decode(Data.self, forColumn: "author"))) else {
            throw StoreError(.badDatabase, "author column is not 16 bytes")
        }
        return LogID(author: DeviceID(author), scope: try Scope(try row.decode(String.self, forColumn: "scope")))
    }

    /// - Parameter known: the row's log when the query selected it by author and scope (spares parsing
    ///   the scope of every row).
    static func change(_ row: Row, log known: LogID? = nil) throws -> StoredChange {
        let rawPriority = (try row.decode(Int.self, forColumn: "priority"))
        guard let priority = UInt8(exactly: rawPriority).flatMap(Priority.init(rawValue:)) else {
            throw StoreError(.badDatabase, "priority column \(rawPriority) is not a priority")
        }
        return StoredChange(log: try known ?? log(row), seq: UInt64(try row.decode(Int64.self, forColumn: "seq")), hash: [UInt8](try row.decode(Data.self, forColumn: "hash")),
                            prevHash: [UInt8](try row.decode(Data.self, forColumn: "prev_hash")), hlc: HLCTimestamp(raw: UInt64(bitPattern: (try row.decode(Int64.self, forColumn: "hlc")))),
                            contentType: ContentType(rawValue: UInt8(try row.decode(Int.self, forColumn: "content_type"))), priority: priority,
                            bytes: [UInt8](try row.decode(Data.self, forColumn: "bytes")))
    }

    func unseal(_ row: Row) throws -> FieldSyncCore.Record {
        let rawID = [UInt8](try row.decode(Data.self, forColumn: "id"))
        guard let id = ID128(bytes: rawID) else {
            throw StoreError(.damaged, "record row \(Hex.encode(rawID)) is damaged: its id is not 16 bytes; \(Self.damageAdvice)")
        }
        let plain: [UInt8]
        // The storage key was verified when the store opened (`checkKey`): a row that does not open was
        // altered on disk (or moved onto another id), not read with a wrong key.
        do { plain = try sealer.open([UInt8](try row.decode(Data.self, forColumn: "sealed")), id: RecordID(id)) } catch {
            throw StoreError(.damaged, "record \(id) is damaged: its sealed row does not open (altered on disk); \(Self.damageAdvice)")
        }
        let record: FieldSyncCore.Record
        do { record = try FieldSyncCore.Record(canonicalBytes: plain) } catch {
            throw StoreError(.damaged, "record \(id) is damaged: it opens but does not decode (\(error)); \(Self.damageAdvice)")
        }
        guard record.id == RecordID(id) else {
            throw StoreError(.damaged, "record \(id) is damaged: its sealed content is record \(record.id); \(Self.damageAdvice)")
        }
        return record
    }

    static let damageAdvice = "`fieldsync doctor --repair` rebuilds it from its signed changes"

    static func damagedRecord(_ row: Row, reason: String) -> DamagedRecord {
        // The row is damaged already: what does not decode is reported as such, never trapped on.
        let raw = [UInt8]((try? row.decode(Data.self, forColumn: "id")) ?? Data())
        return DamagedRecord(id: ID128(bytes: raw).map(RecordID.init), rawID: raw,
                             kind: (try? row.decode(String.self, forColumn: "kind")) ?? "(undecodable)",
                             scope: (try? row.decode(String.self, forColumn: "scope")) ?? "(undecodable)",
                             reason: reason)
    }

    /// The transaction view `CommitLogic` works through. Statements are cached (prepared once per
    /// connection); the byte and held-back counters are kept in memory and written once by `flush()`.
    struct Tx: StoreTransaction {
        let db: Database
        let store: SQLiteStore
        private var bytesDelta: Int64 = 0
        private var heldBackDelta: Int64 = 0
        /// The batch's `now` (ms): the `arrived` of every change this transaction stores; nil leaves it NULL.
        var arrivedAt: Int64?
        /// Records found damaged while loading in this transaction (their rows are not overwritten).
        private let damaged = DamagedIDs()
        /// Whether the quarantine holds damaged changes not repaired yet: asked once per transaction (no
        /// other writer runs during it) and set when this transaction quarantines one. Without any, a
        /// change stored has no entry to repair, and its `UPDATE quarantine` (one statement per change) is
        /// skipped.
        private let repairs = PendingRepairs()

        final class PendingRepairs {
            var pending: Bool?
        }

        final class DamagedIDs {
            private var ids = Set<RecordID>()
            func insert(_ id: RecordID) { ids.insert(id) }
            func contains(_ id: RecordID) -> Bool { ids.contains(id) }
        }

        init(db: Database, store: SQLiteStore) {
            self.db = db
            self.store = store
        }

        private func statement(_ sql: String) throws -> Statement { try db.cachedStatement(sql: sql) }
        private func logArgs(_ log: LogID) -> StatementArguments { [Data(log.author.raw.bytes), log.scope.path] }

        func existing(_ log: LogID, seq: UInt64) throws -> StoredChange? {
            try Row.fetchOne(statement("SELECT * FROM changes WHERE author = ? AND scope = ? AND seq = ?"),
                             arguments: logArgs(log) + [Int64(bitPattern: seq)]).map { try SQLiteStore.change($0, log: log) }
        }

        func presence(of c: StoredChange) throws -> ChangePresence {
            // One statement: the row with this hash or at this position (both indexed).
            guard let row = try Row.fetchOne(statement("""
                SELECT rowid, * FROM changes WHERE hash = ?1 OR (author = ?2 AND scope = ?3 AND seq = ?4) LIMIT 1
                """), arguments: [Data(c.hash), Data(c.log.author.raw.bytes), c.log.scope.path, Int64(bitPattern: c.seq)]) else { return .new }
            // A held copy damaged on disk is neither a duplicate (the intact copy must replace it) nor fork
            // evidence (it no longer verifies): it is quarantined and the incoming change stored instead.
            if store.checksChanges, let damage = SQLiteStore.damage(of: row) {
                if let q = try store.quarantine(rowid: (try row.decode(Int64.self, forColumn: "rowid")), reason: damage, in: db) { store.damageHandler?(.change(q)) }
                repairs.pending = true
                return .new
            }
            let held = try SQLiteStore.change(row)
            return held.hash == c.hash ? .duplicate : .conflicting(held)
        }

        func holds(hash: [UInt8]) throws -> Bool {
            try Bool.fetchOne(statement("SELECT 1 FROM changes WHERE hash = ?"), arguments: [Data(hash)]) ?? false
        }

        func intervals(_ log: LogID) throws -> HeldIntervals {
            guard let data = try Data.fetchOne(statement("SELECT intervals FROM logs WHERE author = ? AND scope = ?"),
                                               arguments: logArgs(log)) else { return HeldIntervals() }
            return try HeldIntervals(canonicalBytes: [UInt8](data))
        }

        mutating func setIntervals(_ log: LogID, _ new: HeldIntervals) throws {
            let old = try self.intervals(log)
            try statement("""
                INSERT INTO logs(author, scope, intervals, held_back) VALUES (?, ?, ?, ?)
                ON CONFLICT(author, scope) DO UPDATE SET intervals = excluded.intervals, held_back = excluded.held_back
                """).execute(arguments: logArgs(log) + [Data(new.canonicalBytes), Int64(new.heldBack)])
            heldBackDelta += Int64(new.heldBack) - Int64(old.heldBack)
        }

        mutating func insert(_ c: StoredChange, opened: Bool) throws {
            try statement("""
                INSERT INTO changes(hash, author, scope, seq, prev_hash, hlc, content_type, priority, size, opened, bytes, arrived)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [Data(c.hash), Data(c.log.author.raw.bytes), c.log.scope.path, Int64(bitPattern: c.seq), Data(c.prevHash),
                    Int64(bitPattern: c.hlc.raw), Int(c.contentType.rawValue), Int(c.priority.rawValue), c.bytes.count, opened, Data(c.bytes),
                    arrivedAt])
            bytesDelta += Int64(c.bytes.count)
            // An intact copy of a quarantined change is back: the quarantine entry is repaired.
            if try repairsPending() {
                try statement("UPDATE quarantine SET repaired = 1 WHERE author = ? AND scope = ? AND seq = ? AND repaired = 0 AND cause = 'damaged'")
                    .execute(arguments: logArgs(c.log) + [Int64(bitPattern: c.seq)])
            }
        }

        /// See `repairs`.
        private func repairsPending() throws -> Bool {
            if let known = repairs.pending { return known }
            let known = try Bool.fetchOne(statement("SELECT EXISTS(SELECT 1 FROM quarantine WHERE repaired = 0 AND cause = 'damaged')")) ?? true
            repairs.pending = known
            return known
        }

        /// Writes the counters accumulated during the transaction.
        mutating func flush() throws {
            let update = try statement("UPDATE store_meta SET value = value + ? WHERE key = ?")
            if bytesDelta != 0 { try update.execute(arguments: [bytesDelta, "bytes_total"]) }
            if heldBackDelta != 0 { try update.execute(arguments: [heldBackDelta, "held_back_total"]) }
            bytesDelta = 0
            heldBackDelta = 0
        }

        func heldBackTotal() throws -> Int {
            (try Int.fetchOne(statement("SELECT value FROM store_meta WHERE key = 'held_back_total'")) ?? 0) + Int(heldBackDelta)
        }

        func bytesTotal() throws -> Int {
            (try Int.fetchOne(statement("SELECT value FROM store_meta WHERE key = 'bytes_total'")) ?? 0) + Int(bytesDelta)
        }

        mutating func evictReceipted(bytes needed: Int) throws -> (count: Int, freed: Int) {
            let rows = try Row.fetchAll(db, sql: """
                SELECT c.hash, c.size FROM changes c JOIN logs l ON l.author = c.author AND l.scope = c.scope
                WHERE c.seq <= l.receipted AND c.evicted = 0 AND c.content_type < \(ContentType.firstControl)
                ORDER BY c.priority DESC, c.hlc ASC, c.author, c.scope, c.seq
                """)
            var count = 0, freed = 0
            for row in rows where freed < needed {
                try statement("UPDATE changes SET evicted = 1, bytes = x'' WHERE hash = ?").execute(arguments: [(try row.decode(Data.self, forColumn: "hash"))])
                freed += (try row.decode(Int.self, forColumn: "size"))
                count += 1
            }
            bytesDelta -= Int64(freed)
            return (count, freed)
        }

        func loadRecords(_ ids: [RecordID]) throws -> [RecordID: FieldSyncCore.Record] {
            var out: [RecordID: FieldSyncCore.Record] = [:]
            for start in stride(from: 0, to: ids.count, by: 256) {
                let chunk = ids[start..<min(start + 256, ids.count)]
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                for row in try Row.fetchAll(statement("SELECT * FROM records WHERE id IN (\(marks))"),
                                            arguments: StatementArguments(chunk.map { Data($0.raw.bytes) })) {
                    // A damaged record does not fail the batch (the peer and every other record would pay):
                    // its edits are not merged, its history links are kept, and `doctor --repair` rebuilds it
                    // from that history, the new changes included.
                    do {
                        let r = try store.unseal(row)
                        out[r.id] = r
                    } catch let e as StoreError where e.code == .damaged {
                        let d = SQLiteStore.damagedRecord(row, reason: e.detail)
                        if let id = d.id { damaged.insert(id) }
                        store.damageHandler?(.record(d))
                    }
                }
            }
            return out
        }

        func loadRecord(_ id: RecordID) throws -> FieldSyncCore.Record? {
            try Row.fetchOne(statement("SELECT * FROM records WHERE id = ?"), arguments: [Data(id.raw.bytes)]).map(store.unseal)
        }

        mutating func saveRecord(_ record: FieldSyncCore.Record, touchedBy hashes: [[UInt8]]) throws {
            let link = try statement("INSERT OR IGNORE INTO record_changes(record_id, change_hash) VALUES (?, ?)")
            let id = Data(record.id.raw.bytes)
            for h in hashes { try link.execute(arguments: [id, Data(h)]) }
            if damaged.contains(record.id) { return }  // left for `doctor --repair`: never overwritten with a partial fold
            let ix = RecordIndexEntry(record, schemas: store.schemas)
            let sealed = try store.sealer.seal(record.canonicalBytes, id: record.id)
            try statement("""
                INSERT INTO records(id, kind, scope, status, event_time, deleted, updated, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET status = excluded.status, event_time = excluded.event_time,
                    deleted = excluded.deleted, updated = excluded.updated, sealed = excluded.sealed
                """).execute(arguments: [id, record.kind.name, record.scope.path, ix.statusLevel.map { Int($0) },
                                 ix.eventTime, ix.deleted, Int64(bitPattern: ix.updated), Data(sealed)])
        }

        mutating func markOpened(_ hash: [UInt8]) throws {
            try statement("UPDATE changes SET opened = 1 WHERE hash = ?").execute(arguments: [Data(hash)])
        }

        mutating func addFork(_ f: ForkEvidence) throws {
            try statement("""
                INSERT OR IGNORE INTO forks(conflicting_hash, author, scope, seq, kept, conflicting) VALUES (?, ?, ?, ?, ?, ?)
                """).execute(arguments: [Data(f.conflicting.hash)] + logArgs(f.log) + [Int64(bitPattern: f.seq),
                    Data(f.kept.canonicalBytes), Data(f.conflicting.canonicalBytes)])
        }

        func forks(of log: LogID) throws -> [ForkEvidence] {
            try Row.fetchAll(statement("SELECT seq, kept, conflicting FROM forks WHERE author = ? AND scope = ? ORDER BY seq, conflicting_hash"),
                             arguments: logArgs(log)).map(SQLiteStore.fork)
        }

        mutating func keepCertificate(_ certificate: Certificate) throws {
            try statement("INSERT OR IGNORE INTO certificates(subject, bytes) VALUES (?, ?)")
                .execute(arguments: [Data(certificate.subject.raw.bytes), Data(certificate.canonicalBytes)])
        }

        mutating func quarantineRevoked(_ entry: RevokedQuarantine) throws -> Bool {
            guard let row = try Row.fetchOne(statement("SELECT rowid, * FROM changes WHERE hash = ? AND evicted = 0"),
                                             arguments: [Data(entry.change.hash)]) else { return false }
            try statement("DELETE FROM changes WHERE rowid = ?").execute(arguments: [(try row.decode(Int64.self, forColumn: "rowid"))])
            try statement("""
                INSERT INTO quarantine(author, scope, seq, hash, reason, detected, bytes, cause) VALUES (?, ?, ?, ?, ?, ?, ?, 'revoked')
                """).execute(arguments: [(try row.decode(Data.self, forColumn: "author")), (try row.decode(String.self, forColumn: "scope")), (try row.decode(Int64.self, forColumn: "seq")), (try row.decode(Data.self, forColumn: "hash")),
                                        entry.reason, entry.detectedAt, (try row.decode(Data.self, forColumn: "bytes"))])
            bytesDelta -= (try row.decode(Int64.self, forColumn: "size"))
            return true
        }

        mutating func removeRecord(_ id: RecordID) throws {
            try statement("DELETE FROM records WHERE id = ?").execute(arguments: [Data(id.raw.bytes)])
        }

        mutating func raiseReceipt(_ log: LogID, to seq: UInt64) throws {
            try statement("""
                INSERT INTO logs(author, scope, intervals, held_back, receipted) VALUES (?, ?, ?, 0, ?)
                ON CONFLICT(author, scope) DO UPDATE SET receipted = max(receipted, excluded.receipted)
                """).execute(arguments: logArgs(log) + [Data(HeldIntervals().canonicalBytes), Int64(bitPattern: seq)])
        }
    }
}
