import FieldSyncCore
import FieldSyncProtocol
import Foundation
import FieldSyncTestSupport
import GRDB
import FieldSyncCrypto
import Testing
@testable import FieldSyncStore

/// Storage keys for tests: the real sealer (XChaCha20-Poly1305) with fixed keys.
enum TestKeys {
    static let sealer = try! StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 42, count: 32)))
    static let otherSealer = try! StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 7, count: 32)))
}

@Suite struct SQLiteStoreTests {
    let log = ChangeFactory.log()

    @Test func reopenKeepsEverything() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let c = f.next(log)
        do {
            let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
            _ = try s.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(1), c.hash)]))
        }
        let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(try s.holdings(of: log).frontier == 1)
        #expect(try s.record(RecordID(ID128(high: 7, low: 1))) != nil)
    }

    @Test func wrongKeyIsAClearError() throws {
        let path = TestFiles.tempPath()
        _ = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(throws: StoreError.self) { try SQLiteStore(path: path, sealer: TestKeys.otherSealer) }
        do { _ = try SQLiteStore(path: path, sealer: TestKeys.otherSealer) } catch let e as StoreError {
            #expect(e.code == .wrongKey)
        }
    }

    @Test func newerSchemaIsRefused() throws {
        let path = TestFiles.tempPath()
        _ = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let q = try DatabaseQueue(path: path)
        try q.write { db in try db.execute(sql: "INSERT INTO grdb_migrations(identifier) VALUES ('v99-from-the-future')") }
        do {
            _ = try SQLiteStore(path: path, sealer: TestKeys.sealer)
            Issue.record("opened a store written by a newer version")
        } catch let e as StoreError {
            #expect(e.code == .badDatabase && e.detail.contains("newer"))
        }
    }

    @Test func garbageFileIsAClearError() throws {
        let path = TestFiles.tempPath()
        try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: path))
        do {
            _ = try SQLiteStore(path: path, sealer: TestKeys.sealer)
            Issue.record("opened garbage")
        } catch let e as StoreError {
            #expect(e.code == .badDatabase)
        }
    }

    @Test func openIncidentsQueryUsesTheIndex() throws {
        let s = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer)
        let plan = try s.queryPlan(.openIncidents(in: ChangeFactory.station)).joined(separator: "\n")
        #expect(plan.contains("records_kind_scope_status"), "plan: \(plan)")
        #expect(!plan.contains("SCAN records"), "plan: \(plan)")
    }

    /// Open incidents in every scope (HQ's overview and map) are seeks on `(kind, status, event_time)`; a status
    /// range holding `closed` (most of a year's records) keeps the time index, which a LIMIT stops early.
    @Test func openIncidentsInEveryScopeUseTheStatusIndex() throws {
        let s = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer)
        let open = try s.queryPlan(RecordQuery(kind: .incident, statusLevels: 0...Incident.Status.onScene.rawValue, limit: 5_000)).joined(separator: "\n")
        #expect(open.contains("records_kind_status_time"), "plan: \(open)")
        #expect(!open.contains("SCAN records"), "plan: \(open)")
        let resolved = try s.queryPlan(RecordQuery(kind: .incident, statusLevels: 3...3)).joined(separator: "\n")
        #expect(resolved.contains("records_kind_status_time"), "plan: \(resolved)")
        let closed = try s.queryPlan(RecordQuery(kind: .incident, statusLevels: 4...4, limit: 51)).joined(separator: "\n")
        #expect(closed.contains("records_kind_time"), "plan: \(closed)")
        let week = try s.queryPlan(RecordQuery(kind: .visit, since: 1_000, until: 2_000)).joined(separator: "\n")
        #expect(week.contains("records_kind_time"), "plan: \(week)")
        let station = try s.queryPlan(.openIncidents(in: ChangeFactory.station)).joined(separator: "\n")
        #expect(station.contains("records_kind_scope_status"), "plan: \(station)")
    }

    /// A store of schema version 8 (the previous release) gains the status index when it is opened, and answers
    /// the same records through it. The version-8 store is made by taking a store back to version 8 (its
    /// schema is then checked to be the one `v1` to `v8` make).
    @Test func aVersion8StoreIsMigratedOnOpen() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let open = RecordQuery(kind: .incident, statusLevels: 0...Incident.Status.onScene.rawValue)
        let want: [RecordID]
        do {
            let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
            _ = try s.commit(try StoreConformanceTests.openAndVisitBatch(&f))
            want = try s.records(open).map(\.id)
            #expect(want.count == 18)
        }
        func schema(_ q: DatabaseQueue) throws -> [String] {
            try q.read { try String.fetchAll($0, sql: "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'grdb%' ORDER BY name") }
        }
        func migrations() throws -> [String] {
            try DatabaseQueue(path: path).read { try String.fetchAll($0, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") }
        }
        try DatabaseQueue(path: path).write { db in
            try db.execute(sql: "DROP INDEX records_kind_status_time")
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v9-record-status-index'")
        }
        let v8 = try DatabaseQueue()
        try SQLiteStore.migrator.migrate(v8, upTo: "v8-change-arrival")
        #expect(try schema(DatabaseQueue(path: path)) == (try schema(v8)), "a version-8 store")
        #expect(try migrations().count == 8 && (try migrations()).last == "v8-change-arrival")
        #expect(try !SQLiteStore.sql(for: open).0.isEmpty)

        let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(try migrations().count == SQLiteStore.schemaVersion && SQLiteStore.schemaVersion == 9)
        #expect(try migrations().last == "v9-record-status-index")
        let indexed = try DatabaseQueue(path: path).read {
            try String.fetchOne($0, sql: "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'records_kind_status_time'")
        }
        #expect(indexed == "CREATE INDEX records_kind_status_time ON records(kind, status, event_time)")
        #expect(try s.queryPlan(open).joined().contains("records_kind_status_time"))
        #expect(try s.records(open).map(\.id) == want)
    }

    @Test func recordsAreNotStoredInClear() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let c = f.next(log)
        do {
            let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
            _ = try s.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(1, note: "SECRET-MARKER-7731"), c.hash)]))
        }
        for suffix in ["", "-wal"] {
            if let data = FileManager.default.contents(atPath: path + suffix) {
                #expect(data.range(of: Data("SECRET-MARKER-7731".utf8)) == nil, "plaintext found in \(path + suffix)")
                #expect(data.range(of: Data("dispute 1".utf8)) == nil)
            }
        }
    }
}

@Suite(.ownThread) struct SQLiteStoreFaultTests {
    let log = ChangeFactory.log()

    /// Another connection holding the write lock (as another fieldsync process would) makes a commit
    /// fail, after the store's wait, with `.busy` and SQLite's `SQLITE_BUSY` code, not an I/O error
    /// reported as a full disk; nothing of the batch is applied, and it goes through once the lock is
    /// released.
    @Test func aLockedDatabaseIsBusyNotAnIOError() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, busyTimeout: 0.2)
        _ = try store.commit(CommitBatch(changes: [f.next(log)]))
        let other = try DatabaseQueue(path: path)
        let batch = CommitBatch(changes: [f.next(log)])
        var failure: StoreError?
        try other.inTransaction(.immediate) { db in
            try db.execute(sql: "UPDATE changes SET priority = priority WHERE 0")  // holds the write lock
            do { _ = try store.commit(batch) } catch let e as StoreError { failure = e }
            return .rollback
        }
        let e = try #require(failure, "the commit went through although another connection held the write lock")
        #expect(e.code == .busy, "\(e)")
        #expect(e.resultCode.map { $0 & 0xFF } == ResultCode.SQLITE_BUSY.rawValue)
        #expect(!e.detail.contains("disk full"))
        #expect(try store.holdings(of: log).frontier == 1, "the refused batch left nothing behind")
        _ = try store.commit(batch)
        #expect(try store.holdings(of: log).frontier == 2)
    }

    @Test func fullDiskIsAClearErrorAndLosesNothingCommitted() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, maxFileBytes: 256 * 1024)
        var committed = 0
        var failure: StoreError?
        for _ in 0..<400 {
            let batch = CommitBatch(changes: (0..<10).map { _ in f.next(log, size: 2_000) })
            do {
                _ = try store.commit(batch)
                committed += 10
            } catch let e as StoreError {
                failure = e
                break
            }
        }
        let e = try #require(failure, "the cap was never reached")
        #expect(e.code == .ioError && e.detail.contains("disk full"))
        #expect(e.resultCode == ResultCode.SQLITE_FULL.rawValue, "SQLite's result code is kept")
        #expect(committed > 0)
        #expect(try store.holdings(of: log).frontier == UInt64(committed), "the failed batch left nothing behind")
        // With room again, the same store carries on from where it was.
        let roomy = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(try roomy.holdings(of: log).frontier == UInt64(committed))
        var g = ChangeFactory(rng: SplitMix64(seed: 99))
        g.nextSeq[log] = UInt64(committed)
        g.lastHash[log] = try roomy.change(log, seq: UInt64(committed))?.hash
        #expect(try roomy.commit(CommitBatch(changes: [g.next(log)])).inserted == 1)
    }

    /// `commit(_: [CommitBatch])` (a node's verified batches that are ready together): each batch is
    /// applied as one commit after another would apply it (same reports, same store), in one transaction
    /// (the commit counter moves by one), and all or nothing: a group that does not fit leaves nothing.
    @Test func severalBatchesCommitInOneTransaction() throws {
        var f = ChangeFactory()
        let a = f.next(log), b = f.next(log), c = f.next(log)
        let gap = f.next(log)
        _ = f.next(log)
        let after = f.next(log)  // seq 6: held back behind the missing 5
        let batches = [CommitBatch(changes: [a, b], edits: [(StoreConformanceTests.incident(1), a.hash)]),
                       CommitBatch(changes: [b, c]),  // b again: a duplicate of the batch before
                       CommitBatch(changes: [gap, after], edits: [(StoreConformanceTests.incident(2), gap.hash)])]
        let one = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, checksChanges: false)  // synthetic changes
        let each = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, checksChanges: false)
        let before = try one.commitState().commits
        let together = try one.commit(batches)
        #expect(try one.commitState().commits == before + 1, "one transaction")
        let separately = try batches.map { try each.commit($0) }
        #expect(together == separately)
        #expect(together.map(\.inserted) == [2, 1, 2] && together[1].duplicates == 1)
        #expect(try one.holdings(of: log) == each.holdings(of: log))
        #expect(try one.holdings(of: log).ranges == [1...4, 6...6])
        #expect(try one.records(RecordQuery(includeDeleted: true)).map(\.canonicalBytes)
                == each.records(RecordQuery(includeDeleted: true)).map(\.canonicalBytes))

        // All or nothing: groups of three batches until one does not fit on the disk.
        let small = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, maxFileBytes: 256 * 1024)
        var g = ChangeFactory(rng: SplitMix64(seed: 7))
        var committed = 0
        var failure: StoreError?
        for _ in 0..<200 {
            let group = (0..<3).map { _ in CommitBatch(changes: (0..<10).map { _ in g.next(log, size: 2_000) }) }
            do {
                _ = try small.commit(group)
                committed += 30
            } catch let e as StoreError {
                failure = e
                break
            }
        }
        #expect(failure?.detail.contains("disk full") == true, "the cap was reached")
        #expect(committed > 0)
        #expect(try small.holdings(of: log).frontier == UInt64(committed), "the group that failed left nothing behind")
    }

    /// Storing a change runs no `UPDATE quarantine` when no damaged change waits for its intact copy (one
    /// statement fewer per change stored; issue 13, the catch-up's store work), and still repairs the
    /// entry when one does (`StoreDamageTests` covers the repairs themselves).
    @Test func storingChangesSkipsTheQuarantineRepairWhenNoneIsPending() throws {
        let store = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, checksChanges: false)  // synthetic changes
        final class Statements: @unchecked Sendable {
            let lock = NSLock()
            var sql: [String] = []
        }
        let seen = Statements()
        try store.db.writeWithoutTransaction { db in
            db.trace { e in seen.lock.withLock { seen.sql.append(e.description) } }
        }
        var f = ChangeFactory()
        let batch = CommitBatch(changes: (0..<20).map { _ in f.next(log) })
        #expect(try store.commit(batch).inserted == 20)
        let updates = seen.lock.withLock { seen.sql.filter { $0.contains("UPDATE quarantine") }.count }
        #expect(updates == 0, "\(updates) quarantine updates for 20 changes stored with nothing to repair")
        // With an entry waiting for repair, each change stored is checked against it.
        try store.db.write { db in
            try db.execute(sql: "INSERT INTO quarantine(author, scope, seq, hash, reason, detected, bytes) VALUES (?, ?, 25, x'00', 'test', 0, x'')",
                           arguments: [Data(log.author.raw.bytes), log.scope.path])
        }
        seen.lock.withLock { seen.sql = [] }
        let next = CommitBatch(changes: (0..<10).map { _ in f.next(log) })
        #expect(try store.commit(next).inserted == 10)
        #expect(seen.lock.withLock { seen.sql.filter { $0.contains("UPDATE quarantine") }.count } == 10)
        #expect(try store.quarantined().first?.repaired == true, "seq 25 stored: its entry is repaired")
    }

    @Test func truncatedWALOpensConsistent() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, checksChanges: false)  // synthetic changes
        for i in 0..<20 {
            let c = f.next(log)
            _ = try store.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(UInt64(i)), c.hash)]))
        }
        // Copy the database and its WAL while the store is open (the WAL is not checkpointed yet),
        // then cut the WAL copy in the middle of a frame.
        let copy = TestFiles.tempPath("copy")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        let wal = try #require(FileManager.default.contents(atPath: path + "-wal"))
        #expect(wal.count > 10_000)
        try Data(wal.prefix(wal.count / 2 + 123)).write(to: URL(fileURLWithPath: copy + "-wal"))
        let reopened = try SQLiteStore(path: copy, sealer: TestKeys.sealer, checksChanges: false)
        let iv = try reopened.holdings(of: log)
        #expect(iv.frontier <= 20)
        #expect(try reopened.changes(log, in: 1...20).map(\.seq) == Array(1...iv.frontier).map { $0 }, "rows match intervals")
        for r in try reopened.records(RecordQuery()) { _ = try Incident(r) }  // every record decrypts and decodes
    }
}

/// Issue 12 item 4: a store keeps every certificate of a device (a renewal next to the certificate its
/// older changes were signed under) and county authority certificates, across a reopen.
@Suite struct CertificateRenewalStoreTests {
    static func certificates() throws -> (Certificate, Certificate, Certificate) {
        let root = Authority(root: Ed25519.SecretKey.generate())
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let scope = try Scope("longnan/wudu")
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .backpack, requestedScopes: [scope],
                                        createdAt: 1, label: "bp")
        let first = try root.enroll(req, role: .backpack, scopes: [scope], notBefore: 1_000, notAfter: 2_000, serial: 1)
        let renewed = try root.enroll(req, role: .backpack, scopes: [scope], notBefore: 3_000, notAfter: 9_000, serial: 2)
        let ck = Ed25519.SecretKey.generate()
        let countyReq = try EnrollmentRequest(signingKey: ck, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                              requestedScopes: [scope], createdAt: 1, label: "county")
        let county = try root.delegate(countyReq, scopes: [scope], notBefore: 1_000, notAfter: 9_000, serial: 3)
        return (first, renewed, county)
    }

    @Test(arguments: StoreKind.allCases) func everyCertificateOfADeviceIsKept(kind: StoreKind) throws {
        let (first, renewed, county) = try Self.certificates()
        let path = TestFiles.tempPath()
        let store = try kind.make(path: path)
        _ = try store.commit(CommitBatch(certificates: [first]))
        _ = try store.commit(CommitBatch(certificates: [renewed, county, first]))
        func kept(_ s: any SyncStore) throws -> Set<Certificate> { Set(try s.certificates()) }
        #expect(try kept(store) == [first, renewed, county])
        #expect(try store.certificates().count == 3)
        if kind == .sqlite {
            let reopened = try kind.make(path: path)
            #expect(try kept(reopened) == [first, renewed, county])
        }
    }

    /// A store created before certificate renewals (migration v3: one certificate per subject) keeps its
    /// certificate after the upgrade and then takes a second one for the same device.
    @Test func storeFromBeforeRenewalsIsMigrated() throws {
        let (first, renewed, _) = try Self.certificates()
        let path = TestFiles.tempPath()
        do {
            let q = try DatabaseQueue(path: path)
            var m = DatabaseMigrator()
            m.registerMigration("v3-only") { db in
                try db.execute(sql: "CREATE TABLE certificates(subject BLOB PRIMARY KEY NOT NULL, bytes BLOB NOT NULL) WITHOUT ROWID")
                try db.execute(sql: "INSERT INTO certificates(subject, bytes) VALUES (?, ?)",
                               arguments: [Data(first.subject.raw.bytes), Data(first.canonicalBytes)])
            }
            try m.migrate(q)
        }
        // Rebuild the store's migration history as v1...v3 with that table in place.
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            try db.execute(sql: "DROP TABLE grdb_migrations")
            try db.execute(sql: "ALTER TABLE certificates RENAME TO saved_certificates")
        }
        try SQLiteStore.migrator.migrate(q, upTo: "v3-certificates")
        try q.write { db in
            try db.execute(sql: "INSERT INTO certificates SELECT * FROM saved_certificates")
            try db.execute(sql: "DROP TABLE saved_certificates")
        }
        try q.close()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        #expect(try store.certificates() == [first])
        _ = try store.commit(CommitBatch(certificates: [renewed]))
        #expect(Set(try store.certificates()) == [first, renewed])
    }
}
