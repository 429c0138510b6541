import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// A log of real signed changes (control changes, whose payload is clear), so the store's check on read
/// has real bytes and hashes to check.
struct SignedLog {
    let key = Ed25519.SecretKey.generate()
    var scope = ChangeFactory.village
    var log: LogID { LogID(author: key.keyID, scope: scope) }

    /// Changes 1...n, chained; `brokenAt` gets a prevHash that does not name its predecessor.
    func changes(_ n: Int, brokenAt: UInt64? = nil) throws -> [StoredChange] {
        var prev = Change.zeroHash
        var out: [StoredChange] = []
        for seq in 1...UInt64(n) {
            let p = seq == brokenAt ? [UInt8](repeating: 0xab, count: 32) : prev
            let c = try Change.control(author: key, scope: scope, seq: seq, prevHash: p, hlc: HLCTimestamp(milliseconds: 1_000 + seq, counter: 0),
                                       contentType: .receipt, priority: .urgent, payload: Array("receipt \(seq) with some padding text".utf8))
            out.append(StoredChange(log: log, seq: seq, hash: c.id, prevHash: p, hlc: c.header.hlc, contentType: .receipt,
                                    priority: .urgent, bytes: c.encodedBytes))
            prev = c.id
        }
        return out
    }
}

/// What an attacker with the disk (or a failing disk) does: a second SQLite connection that flips one
/// byte of a stored blob while the node's own connection may be open.
enum Disk {
    /// `offset` counts from the end when negative; the middle by default.
    static func flipByte(_ path: String, table: String, column: String, rowWhere: String, _ arguments: StatementArguments,
                         offset: Int? = nil) throws {
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            guard let data = try Data.fetchOne(db, sql: "SELECT \(column) FROM \(table) WHERE \(rowWhere)", arguments: arguments) else {
                throw StoreError(.ioError, "no row to damage")
            }
            var bytes = [UInt8](data)
            let at = offset.map { $0 < 0 ? bytes.count + $0 : $0 } ?? bytes.count / 2
            bytes[at] ^= 0x20
            try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(rowWhere)", arguments: [Data(bytes)] + arguments)
        }
    }

    static func flipChange(_ path: String, _ log: LogID, seq: UInt64) throws {
        try flipByte(path, table: "changes", column: "bytes", rowWhere: "author = ? AND scope = ? AND seq = ?",
                     [Data(log.author.raw.bytes), log.scope.path, Int64(seq)], offset: -10)  // in the signature: still decodes
    }

    static func flipRecord(_ path: String, _ id: RecordID) throws {
        try flipByte(path, table: "records", column: "sealed", rowWhere: "id = ?", [Data(id.raw.bytes)])
    }
}

/// Tells what the store reported through `damageHandler`.
final class DamageLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [StoreDamage] = []
    var all: [StoreDamage] { lock.withLock { items } }
    func add(_ d: StoreDamage) { lock.withLock { items.append(d) } }
}

@Suite struct StoreDamageTests {
    /// Issue 12 item 7: a flipped byte in a stored change is caught on read; the change is quarantined
    /// (not served, not claimed in holdings, so reconciliation asks a peer for it) and an intact copy
    /// takes its place when it comes back.
    @Test func damagedChangeIsQuarantinedOnReadAndTakenBackIntact() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let seen = DamageLog()
        store.damageHandler = { seen.add($0) }
        let chain = SignedLog()
        let cs = try chain.changes(5)
        #expect(try store.commit(CommitBatch(changes: cs)).inserted == 5)
        try Disk.flipChange(path, chain.log, seq: 3)

        #expect(try store.changes(chain.log, in: 1...5).map(\.seq) == [1, 2, 4, 5], "the damaged change is not served")
        #expect(try store.holdings(of: chain.log).ranges == [1...2, 4...5], "nor claimed: reconciliation fetches it again")
        #expect(try store.change(chain.log, seq: 3) == nil)
        let q = try store.quarantined()
        #expect(q.count == 1 && q[0].seq == 3 && q[0].log == chain.log && !q[0].repaired && q[0].hash == cs[2].hash)
        #expect(q.first?.reason.contains("hash") == true, "\(q.first?.reason ?? "")")
        #expect(try store.status().quarantined == 1 && store.status().changes == 4)
        #expect(seen.all.count == 1)
        if case let .change(c)? = seen.all.first { #expect(c.seq == 3) } else { Issue.record("no damage reported: \(seen.all)") }

        // A peer sends it again: stored, the quarantine entry is repaired, the log whole again.
        let back = try store.commit(CommitBatch(changes: [cs[2]]))
        #expect(back.inserted == 1 && back.duplicates == 0)
        #expect(try store.holdings(of: chain.log).ranges == [1...5])
        #expect(try store.changes(chain.log, in: 1...5) == cs)
        #expect(try store.status().quarantined == 0 && store.quarantined().first?.repaired == true)
        #expect(try store.status().changeBytes == cs.reduce(0) { $0 + $1.bytes.count }, "byte counter stays exact")
    }

    /// Bulk writes (`write(groups:)`, what `fieldsync import` uses) refuse to write after one of this
    /// device's own changes that is quarantined, as single writes do: before, only single writes checked,
    /// so an import reused the quarantined change's seq (a fork of the device's own log).
    @Test func bulkWriteAfterAQuarantinedOwnChangeIsRefusedLikeASingleWrite() throws {
        let now: UInt64 = 1_717_200_000_000
        let root = Authority(root: .generate())
        let station = try Scope("longnan/wudu/station-017"), village = try Scope("longnan/wudu/station-017/village-0412")
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .station, requestedScopes: [station],
                                        createdAt: now, label: "st")
        let cert = try root.enroll(req, role: .station, scopes: [station], notBefore: now - 86_400_000, notAfter: now + 86_400_000, serial: 1)
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let r = Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert),
                           trust: TrustStore(root: root.signingKey.publicKey), store: store)
        r.addKey(EpochKey.generate(scope: station, epoch: 1))
        func edit(_ n: UInt64) -> RecordEdit {
            Visit.create(id: RecordID(ID128(high: 77, low: n)), scope: village, author: r.identity.id,
                         hlc: HLCTimestamp(milliseconds: now + n, counter: 0), subject: "household-\(n)", visitor: "officer",
                         visitType: .returningMigrantWorker, visitedAt: Int64(now))
        }
        for n in 1...3 as ClosedRange<UInt64> { try r.write([edit(n)], scope: village, priority: .normal, now: now + n) }
        let log = LogID(author: r.identity.id, scope: village)
        try Disk.flipChange(path, log, seq: 3)
        #expect(try store.changes(log, in: 1...3).map(\.seq) == [1, 2], "seq 3 is quarantined on read")

        let single = #expect(throws: WriteError.self) { try r.write([edit(4)], scope: village, priority: .normal, now: now + 4) }
        #expect(single?.reason.contains("quarantined") == true, "\(String(describing: single))")
        let bulk = #expect(throws: WriteError.self) {
            try r.write(groups: [Replicator.WriteGroup(scope: village, priority: .normal, edits: [edit(5)])], now: now + 5)
        }
        #expect(bulk?.reason.contains("quarantined") == true, "\(String(describing: bulk))")
        #expect(try store.holdings(of: log).ranges == [1...2], "nothing was written at the quarantined seq")
        #expect(try store.quarantined().map(\.seq) == [3])
    }

    /// A damaged held copy is neither a duplicate of the intact change arriving nor fork evidence: the
    /// intact one replaces it.
    @Test func damagedHeldCopyIsReplacedByTheIntactOne() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let chain = SignedLog()
        let cs = try chain.changes(4)
        _ = try store.commit(CommitBatch(changes: cs))
        try Disk.flipChange(path, chain.log, seq: 4)
        let again = try store.commit(CommitBatch(changes: cs))
        #expect(again.inserted == 1 && again.duplicates == 3, "\(again)")
        #expect(try store.change(chain.log, seq: 4) == cs[3])
        #expect(try store.forks().isEmpty)
        #expect(try store.holdings(of: chain.log).ranges == [1...4])
        #expect(try store.quarantined().map(\.repaired) == [true])
    }

    /// Issue 12 item 7: one damaged sealed record used to make every query fail with a misleading
    /// `wrongKey`; now the others are returned and the damaged one is named.
    @Test func damagedRecordDoesNotHideTheOthers() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, checksChanges: false)
        var f = ChangeFactory()
        let log = ChangeFactory.log()
        let cs = (1...3).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: cs, edits: (1...3).map { (StoreConformanceTests.incident(UInt64($0)), cs[$0 - 1].hash) }))
        let damagedID = RecordID(ID128(high: 7, low: 2))
        try Disk.flipRecord(path, damagedID)

        let all = try store.records(RecordQuery(includeDeleted: true))
        #expect(all.map(\.id).sorted() == [RecordID(ID128(high: 7, low: 1)), RecordID(ID128(high: 7, low: 3))])
        let scan = try store.recordScan(RecordQuery(includeDeleted: true))
        #expect(scan.records.count == 2 && scan.damaged.map(\.id) == [damagedID])
        #expect(scan.damaged.first?.kind == "incident" && scan.damaged.first?.scope == ChangeFactory.village.path)
        do {
            _ = try store.record(damagedID)
            Issue.record("a damaged record opened")
        } catch let e as StoreError {
            #expect(e.code == .damaged && e.detail.contains(damagedID.description), "\(e)")
        }
        #expect(try store.record(RecordID(ID128(high: 7, low: 3))) != nil)
        let report = try store.check()
        #expect(report.problems.map(\.kind) == [.record] && report.problems.first?.subject.contains(damagedID.description) == true,
                "\(report.problems)")
    }

    /// `check` (behind `fieldsync doctor`) finds a damaged change, a damaged record and a broken chain,
    /// and with `quarantine` takes the damaged change out so peers send it again.
    @Test func checkFindsDamagedChangesRecordsAndChains() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let good = SignedLog(), broken = SignedLog()
        let cs = try good.changes(3)
        // Commit refuses a change that does not chain onto its held neighbours (fork detection), so the
        // broken link is written straight into the file, as by a buggy older version or a tool.
        let bad = try broken.changes(3, brokenAt: 2)
        _ = try store.commit(CommitBatch(changes: cs + [bad[0], bad[2]], edits: [(StoreConformanceTests.incident(9), cs[0].hash)]))
        try DatabaseQueue(path: path).write { db in
            let c = bad[1]
            try db.execute(sql: """
                INSERT INTO changes(hash, author, scope, seq, prev_hash, hlc, content_type, priority, size, opened, bytes)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
                """, arguments: [Data(c.hash), Data(c.log.author.raw.bytes), c.log.scope.path, Int64(c.seq), Data(c.prevHash),
                                 Int64(bitPattern: c.hlc.raw), Int(c.contentType.rawValue), Int(c.priority.rawValue), c.bytes.count, Data(c.bytes)])
            try db.execute(sql: "UPDATE logs SET intervals = ?, held_back = 0 WHERE author = ? AND scope = ?",
                           arguments: [Data(HeldIntervals([1...3]).canonicalBytes), Data(c.log.author.raw.bytes), c.log.scope.path])
        }
        #expect(try store.check().problems.map(\.kind) == [.chain], "only the broken chain before any damage")
        try Disk.flipChange(path, good.log, seq: 2)
        try Disk.flipRecord(path, RecordID(ID128(high: 7, low: 9)))
        let found = try store.check()
        #expect(Set(found.problems.map(\.kind)) == [.chain, .change, .record], "\(found.problems)")
        #expect(found.changesChecked == 6 && found.recordsChecked == 1 && found.logsChecked == 2)
        #expect(try store.holdings(of: good.log).ranges == [1...3], "check alone changes nothing")
        let repaired = try store.check(quarantine: true)
        #expect(repaired.quarantinedNow == 1)
        #expect(try store.holdings(of: good.log).ranges == [1...1, 3...3])
        let after = try store.check()
        #expect(Set(after.problems.map(\.kind)) == [.chain, .record, .quarantined], "\(after.problems)")
    }

    /// Attack case 43: an older copy of the whole store file put back is detected when the store opens,
    /// by the checkpoint kept outside the store file (a missing or altered checkpoint too). The store
    /// still opens (the seq guard keeps the device's own logs from forking, peers return what the copy
    /// lacks); the finding stays reported until an operator accepts it.
    @Test func olderCopyOfTheStoreIsDetected() throws {
        let path = TestFiles.tempPath()
        let dir = (path as NSString).deletingLastPathComponent + "/device"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let chain = SignedLog()
        let cs = try chain.changes(6)
        func open() throws -> SQLiteStore { try SQLiteStore(path: path, sealer: TestKeys.sealer, checkpointDirectory: dir) }
        _ = try open().commit(CommitBatch(changes: Array(cs[0..<2])))
        let backup = path + ".backup"
        try FileManager.default.copyItem(atPath: path, toPath: backup)
        _ = try open().commit(CommitBatch(changes: Array(cs[2..<4])))
        #expect(try open().rollbackReport() == nil, "the current store is not a rollback")
        // The attacker puts the older copy back.
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        try FileManager.default.copyItem(atPath: backup, toPath: path)
        let restored = try open()
        #expect(try restored.holdings(of: chain.log).ranges == [1...2])
        let report = try restored.rollbackReport()
        #expect(report?.contains("older copy") == true, "\(String(describing: report))")
        #expect(try restored.check().problems.map(\.kind) == [.rollback])
        // It stays reported (also after more commits overtake the old counter) until accepted.
        _ = try restored.commit(CommitBatch(changes: Array(cs[2..<6])))
        #expect(try open().rollbackReport() != nil)
        #expect(try SQLiteStore.acceptRollback(path: path, sealer: TestKeys.sealer, checkpointDirectory: dir) > 0)
        #expect(try open().rollbackReport() == nil && open().check().healthy)
        // Deleting the checkpoint does not hide a rollback: the store remembers it was checkpointed.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".checkpoint") }
        #expect(files.count == 1)
        let checkpoint = dir + "/" + files[0]
        try FileManager.default.removeItem(atPath: checkpoint)
        #expect(try open().rollbackReport()?.contains("missing") == true)
        _ = try SQLiteStore.acceptRollback(path: path, sealer: TestKeys.sealer, checkpointDirectory: dir)
        // Nor does forging one (it is sealed with the storage key).
        var forged = [UInt8](try Data(contentsOf: URL(fileURLWithPath: checkpoint)))
        forged[forged.count - 1] ^= 1
        try Data(forged).write(to: URL(fileURLWithPath: checkpoint))
        #expect(try open().rollbackReport()?.contains("does not open") == true)
    }

    /// Attack cases 42 and 44: records are sealed at rest, so no plaintext exists on disk to begin with;
    /// after a record is overwritten and the store compacted, not even its old sealed bytes are left in
    /// the database, the WAL or a journal (secure_delete zeroes freed cells; the WAL is truncated).
    @Test func overwrittenRecordLeavesNothingAfterCompaction() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, checksChanges: false)
        var f = ChangeFactory()
        let log = ChangeFactory.log()
        let marker = "DELETE-ME-MARKER-4471"
        let first = f.next(log)
        _ = try store.commit(CommitBatch(changes: [first], edits: [(StoreConformanceTests.incident(1, note: marker), first.hash)]))
        let id = RecordID(ID128(high: 7, low: 1))
        let q = try DatabaseQueue(path: path)
        let oldSealed = try q.read { db in try Data.fetchOne(db, sql: "SELECT sealed FROM records WHERE id = ?", arguments: [Data(id.raw.bytes)]) }
        let probe = try #require(oldSealed).subdata(in: 24..<56)  // 32 bytes of ciphertext after the nonce
        func files() -> [(String, Data)] {
            ["", "-wal", "-journal", "-shm"].compactMap { s in FileManager.default.contents(atPath: path + s).map { (path + s, $0) } }
        }
        for (name, data) in files() {
            #expect(data.range(of: Data(marker.utf8)) == nil, "plaintext in \(name) even before deletion")
        }
        #expect(files().contains { $0.1.range(of: probe) != nil }, "the probe finds the sealed row while it exists")
        // Delete the record (a tombstone replaces its content) and compact.
        var delete = StoreConformanceTests.incident(1)
        delete.actions = [.delete]
        delete.hlc = HLCTimestamp(milliseconds: 9_000, counter: 0)
        let second = f.next(log)
        _ = try store.commit(CommitBatch(changes: [second], edits: [(delete, second.hash)]))
        try store.compact()
        for (name, data) in files() {
            #expect(data.range(of: Data(marker.utf8)) == nil, "plaintext in \(name)")
            #expect(data.range(of: probe) == nil, "the old sealed row survives in \(name)")
        }
    }
}

extension StoreDamageTests {
    /// A batch that edits a damaged record still commits (the peer and the other records do not pay for
    /// it): the damaged row is left for `doctor --repair`, not overwritten with a partial fold, and the new
    /// change joins its history so the rebuild includes it.
    @Test func batchTouchingADamagedRecordStillCommits() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, checksChanges: false)
        var f = ChangeFactory()
        let log = ChangeFactory.log()
        let cs = (1...2).map { _ in f.next(log) }
        _ = try store.commit(CommitBatch(changes: cs, edits: [(StoreConformanceTests.incident(1), cs[0].hash),
                                                              (StoreConformanceTests.incident(2), cs[1].hash)]))
        let damagedID = RecordID(ID128(high: 7, low: 1))
        try Disk.flipRecord(path, damagedID)
        let next = f.next(log)
        let report = try store.commit(CommitBatch(changes: [next], edits: [(StoreConformanceTests.incident(1, status: .dispatched), next.hash),
                                                                           (StoreConformanceTests.incident(2, status: .dispatched), next.hash)]))
        #expect(report.inserted == 1)
        #expect(try store.records(RecordQuery()).count == 1, "the healthy record merged its edit")
        #expect(try store.recordScan(RecordQuery()).damaged.map(\.id) == [damagedID], "the damaged row is still reported, not replaced")
        #expect(try store.history(of: damagedID).map(\.hash) == [cs[0].hash, next.hash])
    }
}

extension StoreDamageTests {
    /// The clear index columns are not authenticated: an altered status column would make "open incidents"
    /// answer wrongly. `check` compares them with the sealed record and, repairing, rewrites them.
    @Test func alteredIndexColumnsAreFoundAndRewritten() throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer, checksChanges: false)
        var f = ChangeFactory()
        let c = f.next(ChangeFactory.log())
        _ = try store.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(1, status: .dispatched), c.hash)]))
        #expect(try store.records(.openIncidents(in: ChangeFactory.station)).count == 1)
        let q = try DatabaseQueue(path: path)
        try q.write { db in try db.execute(sql: "UPDATE records SET status = ?", arguments: [Int(Incident.Status.closed.rawValue)]) }
        #expect(try store.records(.openIncidents(in: ChangeFactory.station)).isEmpty, "the altered column misleads the query")
        let found = try store.check()
        #expect(found.problems.count == 1 && found.problems.first?.detail.contains("status") == true, "\(found.problems)")
        let repaired = try store.check(quarantine: true)
        #expect(repaired.reindexedNow == 1)
        #expect(try store.check().healthy)
        #expect(try store.records(.openIncidents(in: ChangeFactory.station)).count == 1)
    }
}

extension StoreDamageTests {
    /// A stored value of the wrong type (a hostile or failing disk: SQLite keeps any type in any column) is a
    /// typed error, a problem the check reports, or a quarantined change: never a trap. Before, GRDB's
    /// non-throwing row subscripts (`row["seq"] as Int64`) were a `try!`, and `fieldsync doctor` (the tool
    /// meant for a damaged store) crashed on a text `seq`.
    @Test(arguments: ["seq = 'abc'", "hlc = 'zz'", "content_type = 'q'", "priority = 'p'", "evicted = 'x'",
                      "prev_hash = 5", "hash = 7", "bytes = 'text'", "size = 'big'", "author = 'zz'", "scope = x'00ff'"])
    func wrongTypedChangeColumnIsAnErrorOrAProblemNeverATrap(_ assignment: String) throws {
        let path = TestFiles.tempPath()
        let store = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let chain = SignedLog()
        let cs = try chain.changes(4)
        _ = try store.commit(CommitBatch(changes: cs))
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            try db.execute(sql: "UPDATE changes SET \(assignment) WHERE author = ? AND scope = ? AND seq = 3",
                           arguments: [Data(chain.log.author.raw.bytes), chain.log.scope.path])
        }
        // Every read a node makes answers with values or a typed error.
        func typed<T>(_ what: String, _ body: () throws -> T) {
            do { _ = try body() } catch is StoreError {} catch { Issue.record("\(assignment): \(what) threw an untyped \(type(of: error)): \(error)") }
        }
        typed("changes") { try store.changes(chain.log, in: 1...4) }
        typed("change keys") { try store.changeKeys(chain.log, in: 1...4) }
        typed("holdings") { try store.holdings() }
        typed("status") { try store.status() }
        typed("quarantined") { try store.quarantined() }
        // The check reports it (or finds the store healthy when the column is never read, as `size`).
        let found = try store.check()
        if assignment.hasPrefix("size") { #expect(found.healthy) } else { #expect(!found.problems.isEmpty, "\(assignment): nothing found") }
        typed("repair") { try store.check(quarantine: true) }
        typed("scrub") { try store.scrubChanges() }
        // What decodes is still served, and after the repair the log claims no seq it has no row for (so
        // reconciliation asks a peer for it), except for a row of no decodable log (an undecodable author or scope).
        let served = try store.changes(chain.log, in: 1...4).map(\.seq)
        #expect(served.starts(with: [1, 2]), "\(assignment): \(served)")
        if !assignment.hasPrefix("author"), !assignment.hasPrefix("scope") {
            #expect(try store.holdings(of: chain.log).ranges.flatMap { Array($0) } == served, "\(assignment)")
        }
    }
}
