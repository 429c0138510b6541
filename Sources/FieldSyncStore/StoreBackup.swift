// The store's side of `fieldsync backup` and `fieldsync restore` (docs/backup.md): an online,
// consistent copy of a store file through SQLite's backup API, and the checks a copy passes before it
// is archived or put back in place. The copy is as sensitive as the store itself (records sealed with
// the storage key, change headers in clear: docs/store.md); the archive that carries it is encrypted
// (FieldSyncNode's `BackupArchive`).

import FieldSyncCore
import FieldSyncProtocol
import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

extension SQLiteStore {
    /// The store schema version this build writes: the number of migrations (`migrator`), each
    /// append-only. A store whose schema has a migration this build does not know is refused on open.
    public static var schemaVersion: Int { migrator.migrations.count }

    /// The name of the newest migration (`v7-quarantine-cause`, ...), printed by `fieldsync --version`.
    public static var schemaMigration: String { migrator.migrations.last ?? "" }

    /// Copies the store at `path` to a new file `destination` while other processes (a running
    /// `fieldsync serve`) keep reading and writing it: SQLite's online backup API (GRDB's `backup(to:)`),
    /// all pages in one step inside one read transaction, so the copy is the store as of one commit. In
    /// WAL mode the copy blocks no writer. The copy is created with mode 0600, checked
    /// (`checkCopy(at:)`), and left in rollback-journal mode as one self-contained file.
    ///
    /// This opens the file as plain SQLite: it needs no storage key and writes nothing to the source.
    /// - Parameters:
    ///   - path: the store (a regular file, never a symbolic link).
    ///   - destination: where the copy goes; it must not exist.
    ///   - busyTimeout: seconds to wait for a lock (a checkpoint in progress).
    /// - Returns: what the copy holds.
    /// - Throws: `StoreError` (`.ioError` for a missing source or an existing destination, `.badDatabase`
    ///   for a file that is not a FieldSync store, or a copy that does not pass the check).
    @discardableResult
    public static func onlineCopy(from path: String, to destination: String, busyTimeout: Double = 30) throws -> StoreCopyCheck {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw StoreError(.ioError, "no store at \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw StoreError(.ioError, "\(path) is not a regular file; give the store's real path (FieldSync does not follow links for its store)")
        }
        let fd = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError(.ioError, "cannot create \(destination): \(String(cString: strerror(errno)))") }
        close(fd)
        do {
            var config = Configuration()
            config.label = "fieldsync.backup.source"
            config.busyMode = .timeout(busyTimeout)
            config.prepareDatabase { db in try db.execute(sql: "PRAGMA query_only = 1") }
            let source = try DatabaseQueue(path: path, configuration: config)
            let ours = try source.read { db in try Bool.fetchOne(db, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'grdb_migrations'") }
            guard ours == true else { throw StoreError(.badDatabase, "\(path) is not a FieldSync store") }
            let target = try DatabaseQueue(path: destination)
            try source.backup(to: target)
            // One file, no companions: the copy travels alone.
            try target.writeWithoutTransaction { db in _ = try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE") }
            try target.close()
            try source.close()
        } catch let e as DatabaseError {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(destination + suffix) }
            throw translate(e, path: path)
        } catch {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(destination + suffix) }
            throw error
        }
        do { return try checkCopy(at: destination) } catch {
            unlink(destination)
            throw error
        }
    }

    /// Checks a store file that is not in use (a copy about to be archived, or one just restored):
    /// SQLite's `PRAGMA integrity_check` finds nothing, it is a FieldSync store (its migrations table), and
    /// its schema is not newer than this build's. It does not open sealed rows (no storage key here);
    /// opening the store with the device's keystore checks that key.
    /// - Returns: what the copy holds.
    /// - Throws: `StoreError(.badDatabase)` naming what is wrong.
    public static func checkCopy(at path: String) throws -> StoreCopyCheck {
        do {
            var config = Configuration()
            config.readonly = true
            let q = try DatabaseQueue(path: path, configuration: config)
            defer { try? q.close() }
            return try q.read { db in
                let problems = try String.fetchAll(db, sql: "PRAGMA integrity_check")
                guard problems == ["ok"] else {
                    throw StoreError(.badDatabase, "\(path) fails SQLite's integrity check: \(problems.prefix(3).joined(separator: "; "))")
                }
                guard try Bool.fetchOne(db, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'grdb_migrations'") == true else {
                    throw StoreError(.badDatabase, "\(path) is not a FieldSync store")
                }
                let applied = try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
                let known = Set(migrator.migrations)
                if let unknown = applied.first(where: { !known.contains($0) }) {
                    throw StoreError(.badDatabase, "\(path) was written by a newer FieldSync (migration \(unknown)); restore it with that version")
                }
                let changes = try Int.fetchOne(db, sql: "SELECT count(*) FROM changes") ?? 0
                let records = try Int.fetchOne(db, sql: "SELECT count(*) FROM records") ?? 0
                return StoreCopyCheck(schemaVersion: applied.count, changes: changes, records: records)
            }
        } catch let e as DatabaseError {
            throw translate(e, path: path)
        }
    }
}

/// What a checked store copy holds (`SQLiteStore.checkCopy(at:)`).
public struct StoreCopyCheck: Sendable, Equatable {
    /// Migrations applied (`SQLiteStore.schemaVersion` of the build that wrote it).
    public var schemaVersion: Int
    /// Changes stored.
    public var changes: Int
    /// Records materialized.
    public var records: Int
}
