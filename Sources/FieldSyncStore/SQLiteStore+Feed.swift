// What a feed (FieldSyncFeed, docs/postgres-feed.md) reads from the store: the changes in the order SQLite
// already keeps them (the `changes` table's rowid), the records they touched, and where the store stands.
// Read-only: nothing is written per change for a feed, so a node without one pays nothing.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import GRDB

/// A stored change with its place in the store's own order.
public struct FeedChange: Sendable, Equatable {
    /// The `changes` table's rowid: grows with every change stored. A row is deleted only by quarantine
    /// (damaged on disk, or a revoked author's change); SQLite then may give a later change the rowid of a
    /// deleted *last* row, which a feed notices by the hash it keeps with its cursor.
    public var rowid: Int64
    /// The change as stored.
    public var change: StoredChange
    /// Whether this node opened it (its edits are in the records). A change held sealed (no key yet) is
    /// opened later without a new row.
    public var opened: Bool
    /// Whether its bytes are the ones verified at ingest: they hash to the recorded hash and their header is
    /// the one the index columns say (the check every read of a change makes, docs/store.md "Damage on
    /// disk"). False for a row damaged on disk; always true in a store opened with `checksChanges: false`.
    public var intact: Bool

    /// A change read for a feed.
    public init(rowid: Int64, change: StoredChange, opened: Bool, intact: Bool = true) {
        self.rowid = rowid
        self.change = change
        self.opened = opened
        self.intact = intact
    }
}

/// Where the store stands for a feed.
public struct FeedHead: Sendable, Equatable {
    /// The highest rowid of `changes` (0: empty).
    public var lastRowid: Int64
    /// Changes held (evicted ones aside).
    public var changes: Int64
}

extension SQLiteStore {
    /// Up to `limit` changes with a rowid above `rowid`, in rowid order (the table's own b-tree: a seek,
    /// no index needed). Evicted changes (relay quota) are skipped: their bytes are gone.
    public func feedChanges(after rowid: Int64, limit: Int) throws -> [FeedChange] {
        try io {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT rowid, * FROM changes WHERE rowid > ? AND evicted = 0 ORDER BY rowid LIMIT ?",
                                 arguments: [rowid, limit]).map { row in
                    let stored = try Self.change(row)
                    return FeedChange(rowid: try row.decode(Int64.self, forColumn: "rowid"), change: stored,
                                      opened: try row.decode(Int64.self, forColumn: "opened") != 0,
                                      intact: !checksChanges || Self.damage(of: stored) == nil)
                }
            }
        }
    }

    /// The hash of the change at `rowid`, if a row is there.
    public func feedHash(at rowid: Int64) throws -> [UInt8]? {
        try io { try db.read { db in try Data.fetchOne(db, sql: "SELECT hash FROM changes WHERE rowid = ?", arguments: [rowid]).map { [UInt8]($0) } } }
    }

    /// Which of `rowids` are now opened (a key arrived after the feed passed them).
    public func feedOpened(_ rowids: [Int64]) throws -> [Int64] {
        guard !rowids.isEmpty else { return [] }
        return try io {
            try db.read { db in
                var out: [Int64] = []
                for start in stride(from: 0, to: rowids.count, by: 256) {
                    let chunk = rowids[start..<min(start + 256, rowids.count)]
                    let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                    out += try Int64.fetchAll(db, sql: "SELECT rowid FROM changes WHERE opened = 1 AND rowid IN (\(marks))",
                                              arguments: StatementArguments(Array(chunk)))
                }
                return out.sorted()
            }
        }
    }

    /// The highest rowid and the number of changes held.
    public func feedHead() throws -> FeedHead {
        try io {
            try db.read { db in
                FeedHead(lastRowid: try Int64.fetchOne(db, sql: "SELECT max(rowid) FROM changes") ?? 0,
                         changes: try Int64.fetchOne(db, sql: "SELECT count(*) FROM changes WHERE evicted = 0") ?? 0)
            }
        }
    }

    /// The highest rowid of `changes` (0: empty): one step down the rowid b-tree, unlike `feedHead()`,
    /// whose count reads the whole table.
    public func feedLastRowid() throws -> Int64 {
        try io { try db.read { db in try Int64.fetchOne(db, sql: "SELECT max(rowid) FROM changes") ?? 0 } }
    }

    /// Changes with a rowid above `rowid` (a range of the rowid b-tree).
    public func feedCount(after rowid: Int64) throws -> Int64 {
        try io { try db.read { db in try Int64.fetchOne(db, sql: "SELECT count(*) FROM changes WHERE rowid > ? AND evicted = 0", arguments: [rowid]) ?? 0 } }
    }

    /// The materialized records among `ids`, unsealed, in one read (256 ids per statement). A damaged row
    /// is left out and reported in `damaged`.
    public func feedRecords(_ ids: [RecordID]) throws -> (records: [RecordID: FieldSyncCore.Record], damaged: [RecordID]) {
        try io {
            try db.read { db in
                var out: [RecordID: FieldSyncCore.Record] = [:], damaged: [RecordID] = []
                for start in stride(from: 0, to: ids.count, by: 256) {
                    let chunk = ids[start..<min(start + 256, ids.count)]
                    let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                    for row in try Row.fetchAll(db, sql: "SELECT * FROM records WHERE id IN (\(marks))",
                                                arguments: StatementArguments(chunk.map { Data($0.raw.bytes) })) {
                        do {
                            let r = try unseal(row)
                            out[r.id] = r
                        } catch {
                            if let id = ID128(bytes: [UInt8](try row.decode(Data.self, forColumn: "id"))) { damaged.append(RecordID(id)) }
                        }
                    }
                }
                return (out, damaged)
            }
        }
    }

    /// The store's random id (16 bytes, made once): names this store as a feed's source, since rowids are
    /// only meaningful within one store.
    public func feedSourceID() throws -> [UInt8] { try storeID() }
}
