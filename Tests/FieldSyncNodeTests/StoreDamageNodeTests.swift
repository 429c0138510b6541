import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import GRDB
import NIOCore
import Testing

/// What an attacker with the disk (or a failing disk) does to a store file: one byte flipped in a blob,
/// through a second SQLite connection.
enum DiskDamage {
    /// Flips a byte of a stored change's bytes (near the end, in the signature: it still decodes).
    static func flipChange(_ path: String, _ log: LogID, seq: UInt64) throws {
        try flip(path, "SELECT bytes FROM changes WHERE author = ? AND scope = ? AND seq = ?",
                 "UPDATE changes SET bytes = ? WHERE author = ? AND scope = ? AND seq = ?",
                 [Data(log.author.raw.bytes), log.scope.path, Int64(seq)], at: -10)
    }

    /// Flips a byte in the middle of a record's sealed row.
    static func flipRecord(_ path: String, _ id: RecordID) throws {
        try flip(path, "SELECT sealed FROM records WHERE id = ?", "UPDATE records SET sealed = ? WHERE id = ?", [Data(id.raw.bytes)], at: nil)
    }

    private static func flip(_ path: String, _ select: String, _ update: String, _ args: StatementArguments, at: Int?) throws {
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            guard let data = try Data.fetchOne(db, sql: select, arguments: args) else { throw NodeTestError("no row to damage in \(path)") }
            var bytes = [UInt8](data)
            bytes[at.map { bytes.count + $0 } ?? bytes.count / 2] ^= 0x20
            try db.execute(sql: update, arguments: [Data(bytes)] + args)
        }
    }
}

/// Issue 12 item 7 over real TCP in one process: a change damaged in one node's store does not harm the
/// peer that lacks it; it is quarantined, fetched again from a peer that holds it, and passed on.
@Suite(.ownThread) struct StoreDamageNodeTests {
    @Test(.timeLimit(.minutes(1))) func damagedChangeDoesNotHarmThePeerAndIsFetchedAgain() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let aID = try pki.device(.station, scopes: [NodeTests.station])
        let a = try NodeTests.node(aID, trust: pki.trust, dir: dir, name: "a")  // its copy gets damaged
        let b = try NodeTests.node(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "b")  // lacks it
        let c = try NodeTests.node(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "c")  // holds it
        try await NodeTests.write(a, count: 5, tag: "station")
        let la = try await a.listen(host: "127.0.0.1", port: 0) { _ in }
        let lc = try await c.listen(host: "127.0.0.1", port: 0) { _ in }
        let first = try await c.sync(host: "127.0.0.1", port: try NodeTests.port(la))
        #expect(first.isFinished && first.changesReceived == 5, "\(first)")

        let log = LogID(author: aID.certificate.subject, scope: NodeTests.village)
        try DiskDamage.flipChange("\(dir)/a.sqlite", log, seq: 3)

        // B lacks the change: it gets the rest and the session finishes (it used to fail on the damaged
        // change, every time, for every peer that lacked it).
        let hurt = try await b.sync(host: "127.0.0.1", port: try NodeTests.port(la))
        #expect(hurt.isFinished, "\(hurt)")
        #expect(hurt.changesReceived == 4 && hurt.changesRejected == 0, "\(hurt)")
        let (quarantined, held) = try await a.withReplicator { r in (try r.store.quarantined(), try r.store.holdings(of: log)) }
        #expect(quarantined.map(\.seq) == [3] && quarantined.allSatisfy { !$0.repaired })
        #expect(held.ranges == [1...2, 4...5], "A no longer claims it")

        // A meets C, which holds it: fetched again, intact.
        let back = try await a.sync(host: "127.0.0.1", port: try NodeTests.port(lc))
        #expect(back.isFinished && back.changesReceived == 1, "\(back)")
        #expect(try await a.withReplicator { r in try r.store.status().quarantined } == 0)
        // And B gets it from A.
        let last = try await b.sync(host: "127.0.0.1", port: try NodeTests.port(la))
        #expect(last.isFinished && last.changesReceived == 1, "\(last)")
        let sa = try await NodeTests.state(a), sb = try await NodeTests.state(b), sc = try await NodeTests.state(c)
        #expect(sa.count == 5 && sa == sb && sb == sc)
        try await la.close()
        try await lc.close()
        for n in [a, b, c] { try await n.shutdown() }
    }
}
