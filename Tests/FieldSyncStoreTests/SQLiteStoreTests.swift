import FieldSyncCore
import FieldSyncProtocol
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// A sealer for tests: XOR with a key stream derived from the key and id, plus a keyed checksum.
/// Production nodes use `StorageKeySealer` (XChaCha20-Poly1305); these tests are about SQLite behaviour.
struct TestSealer: RecordSealer {
    static let shared = TestSealer(key: 42)
    var key: UInt64
    struct Mismatch: Error {}
    private func stream(_ id: RecordID, _ n: Int) -> [UInt8] {
        var g = SplitMix64(seed: key ^ id.raw.low ^ id.raw.high)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }
    func seal(_ p: [UInt8], id: RecordID) throws -> [UInt8] {
        let s = stream(id, p.count + 8)
        return zip(p + [UInt8](repeating: 0, count: 8), s).map { $0 ^ $1 }
    }
    func open(_ c: [UInt8], id: RecordID) throws -> [UInt8] {
        let s = stream(id, c.count)
        let p = zip(c, s).map { $0 ^ $1 }
        guard p.count >= 8, p.suffix(8).allSatisfy({ $0 == 0 }) else { throw Mismatch() }
        return Array(p.dropLast(8))
    }
}

@Suite struct SQLiteStoreTests {
    let log = ChangeFactory.log()

    @Test func reopenKeepsEverything() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let c = f.next(log)
        do {
            let s = try SQLiteStore(path: path, sealer: TestSealer.shared)
            _ = try s.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(1), c.hash)]))
        }
        let s = try SQLiteStore(path: path, sealer: TestSealer.shared)
        #expect(try s.holdings(of: log).frontier == 1)
        #expect(try s.record(RecordID(ID128(high: 7, low: 1))) != nil)
    }

    @Test func wrongKeyIsAClearError() throws {
        let path = TestFiles.tempPath()
        _ = try SQLiteStore(path: path, sealer: TestSealer.shared)
        #expect(throws: StoreError.self) { try SQLiteStore(path: path, sealer: TestSealer(key: 7)) }
        do { _ = try SQLiteStore(path: path, sealer: TestSealer(key: 7)) } catch let e as StoreError {
            #expect(e.code == .wrongKey)
        }
    }

    @Test func newerSchemaIsRefused() throws {
        let path = TestFiles.tempPath()
        _ = try SQLiteStore(path: path, sealer: TestSealer.shared)
        let q = try DatabaseQueue(path: path)
        try q.write { db in try db.execute(sql: "INSERT INTO grdb_migrations(identifier) VALUES ('v99-from-the-future')") }
        do {
            _ = try SQLiteStore(path: path, sealer: TestSealer.shared)
            Issue.record("opened a store written by a newer version")
        } catch let e as StoreError {
            #expect(e.code == .badDatabase && e.detail.contains("newer"))
        }
    }

    @Test func garbageFileIsAClearError() throws {
        let path = TestFiles.tempPath()
        try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: path))
        do {
            _ = try SQLiteStore(path: path, sealer: TestSealer.shared)
            Issue.record("opened garbage")
        } catch let e as StoreError {
            #expect(e.code == .badDatabase)
        }
    }

    @Test func openIncidentsQueryUsesTheIndex() throws {
        let s = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestSealer.shared)
        let plan = try s.queryPlan(.openIncidents(in: ChangeFactory.station)).joined(separator: "\n")
        #expect(plan.contains("records_kind_status_scope"), "plan: \(plan)")
        #expect(!plan.contains("SCAN records"), "plan: \(plan)")
    }

    @Test func recordsAreNotStoredInClear() throws {
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let c = f.next(log)
        do {
            let s = try SQLiteStore(path: path, sealer: TestSealer.shared)
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
