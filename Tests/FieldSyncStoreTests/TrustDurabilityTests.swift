@testable import FieldSyncStore
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import GRDB
import Testing

/// A store that runs `synchronous = NORMAL` (`SyncMode.normal`, for relay boxes on a UPS) may lose its last
/// commits on power loss, but never one that changed what the node trusts: a relay box that learned a
/// revocation and lost it would accept the revoked device again until a peer brought the revocation back
/// (found by the simulator's power-loss swarm: 132 revocations forgotten over 200 seeds). Such a commit is
/// synced before `commit` returns, so before it is acknowledged (docs/store.md, "Durability").
@Suite struct TrustDurabilityTests {
    let log = ChangeFactory.log()
    let other = ChangeFactory.log(ChangeFactory.station, author: DeviceID(hex: "1a1b1c1d1e1f10111213141516171819")!)

    func level(_ store: SQLiteStore) throws -> Int {
        try store.db.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    @Test func aNormalStoreSyncsEveryCommitThatChangesTrustAndOnlyThose() throws {
        let store = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, syncMode: .normal, checksChanges: false)
        #expect(try level(store) == 1, "NORMAL")
        var f = ChangeFactory()
        // Records, receipts and certificates only: left to the next checkpoint, as before.
        for _ in 0..<5 { _ = try store.commit(CommitBatch(changes: [f.next(log)])) }
        _ = try store.commit(CommitBatch(receipts: [log: 2]))
        _ = try store.commit(CommitBatch(changes: [f.next(log, contentType: .receipt)]))
        #expect(try store.trustSyncs() == 0)
        // A revocation, a key grant: synced at once, and the level goes back to NORMAL for the next commits.
        _ = try store.commit(CommitBatch(changes: [f.next(log), f.next(other, contentType: .revocation)]))
        #expect(try store.trustSyncs() == 1)
        #expect(try level(store) == 1)
        _ = try store.commit(CommitBatch(changes: [f.next(other, contentType: .keyGrant)]))
        #expect(try store.trustSyncs() == 2)
        // Fork evidence found in the batch's own changes (another change at a held position).
        var g = ChangeFactory(rng: SplitMix64(seed: 77))
        let rival = g.next(log)
        let report = try store.commit(CommitBatch(changes: [rival]))
        #expect(report.forksRecorded == 1)
        #expect(try store.trustSyncs() == 3)
        _ = try store.commit(CommitBatch(changes: [f.next(log)]))
        #expect(try store.trustSyncs() == 3)
        #expect(try level(store) == 1)
    }

    @Test func aFullStoreNeedsNoExtraSync() throws {
        let store = try SQLiteStore(path: TestFiles.tempPath(), sealer: TestKeys.sealer, checksChanges: false)
        #expect(store.syncMode == .full)
        #expect(try level(store) == 2, "FULL")
        var f = ChangeFactory()
        _ = try store.commit(CommitBatch(changes: [f.next(other, contentType: .revocation)]))
        #expect(try store.trustSyncs() == 0, "every commit of a FULL store is already synced")
    }

    /// The rule itself, shared with the simulator's power-loss model (`DurablePoint`).
    @Test func whatMustBeDurable() throws {
        var f = ChangeFactory()
        let plain = CommitBatch(changes: [f.next(log), f.next(log, contentType: .receipt)], receipts: [log: 1])
        #expect(!plain.mustBeDurable(after: CommitReport()))
        #expect(CommitBatch(changes: [f.next(other, contentType: .revocation)]).mustBeDurable(after: CommitReport()))
        #expect(CommitBatch(changes: [f.next(other, contentType: .keyGrant)]).mustBeDurable(after: CommitReport()))
        var found = CommitReport()
        found.forksRecorded = 1
        #expect(plain.mustBeDurable(after: found))
        var quarantined = CommitReport()
        quarantined.quarantinedRevoked = 2
        #expect(plain.mustBeDurable(after: quarantined))
    }
}
