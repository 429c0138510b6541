import FieldSyncCore
import FieldSyncCrypto
import Testing

@testable import FieldSyncProtocol

/// The restore fence (issue 16, docs/backup.md): a device restored from a backup of its store *and* its
/// seq guard writes nothing until a sync shows it its own logs' heads, then continues after the highest.
@Suite struct RestoreFenceTests {
    typealias S = SessionTests
    static func log(_ r: Replicator) -> LogID { LogID(author: r.identity.id, scope: TestPKI.village) }
    static let fence = RestoreFence(backupTime: TestPKI.now + 3, restoredTime: TestPKI.now + 10_000)

    /// A backpack that wrote 1...3 (synced to the station), was backed up (store and guard), then wrote
    /// 4...5 and synced them to the station; and its restore from the backup: the guard goes back too.
    struct World {
        var pki = TestPKI()
        let bp: Replicator
        let st: Replicator
        let restored: Replicator
        let restoredGuard: MemoryHeadGuard

        init(fenced: Bool) throws {
            bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
            let live = MemoryHeadGuard()
            bp.headGuard = live
            st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
            for n in UInt64(1)...3 { _ = try S.write(bp, n) }
            var l1 = S.connect(bp, st)
            #expect(S.run(&l1))
            // The backup: the guard as it was then (seq 3); the store copy is `ForkTests.restored(upTo: 3)`.
            let backupGuard = MemoryHeadGuard()
            try backupGuard.advance(try live.heads())
            for n in UInt64(4)...5 { _ = try S.write(bp, n) }
            var l2 = S.connect(bp, st, seed: 2)
            #expect(S.run(&l2))
            if fenced { backupGuard.restoreFence = RestoreFence.init(backupTime: TestPKI.now + 3, restoredTime: TestPKI.now + 10_000) }
            restoredGuard = backupGuard
            restored = try ForkTests.restored(pki, bp, upTo: 3, guard: backupGuard)
        }
    }

    /// What the fence prevents: a restore of store and guard together writes seq 4 again, and the station
    /// proves the fork.
    @Test func withoutTheFenceARestoreOfStoreAndGuardForks() throws {
        let w = try World(fenced: false)
        #expect(try S.write(w.restored, 44).header.seq == 4, "the guard went back with the store: seq 4 is used again")
        var link = S.connect(w.restored, w.st, seed: 3)
        #expect(S.run(&link))
        #expect(try w.st.store.forks().count == 1, "a fork")
    }

    @Test func fencedDeviceRefusesWritesUntilAPeerShowsItsHeadsThenContinuesAfterThem() throws {
        let w = try World(fenced: true)
        #expect(throws: WriteError.self) { try S.write(w.restored, 44) }
        do { _ = try S.write(w.restored, 44) } catch let e as WriteError {
            #expect(e.reason.contains("restored from a backup taken 2024-06-01"), "names the backup's time: \(e.reason)")
            #expect(e.reason.contains("fieldsync fence --lift --accept-fork-risk"))
        }
        #expect(try w.restored.store.holdings(of: Self.log(w.bp)) == HeldIntervals([1...3]), "nothing written")
        var link = S.connect(w.restored, w.st, seed: 4)
        #expect(S.run(&link))
        #expect(link.a.session.liftedRestoreFence, "the station held the device's log beyond the backup")
        #expect(try w.restored.restoreFence() == nil)
        #expect(try w.restored.store.holdings(of: Self.log(w.bp)) == HeldIntervals([1...5]), "the changes after the backup came back")
        let next = try S.write(w.restored, 66)
        #expect(try next.header.seq == 6 && next.header.prevHash == w.bp.store.hash(Self.log(w.bp), seq: 5))
        var again = S.connect(w.restored, w.st, seed: 5)
        #expect(S.run(&again))
        #expect(try w.st.store.forks().isEmpty && w.restored.store.forks().isEmpty, "no fork")
        #expect(try w.st.store.holdings(of: Self.log(w.bp)) == HeldIntervals([1...6]), "nothing lost")
    }

    /// A peer that never held any of the device's changes vouches for nothing; nor does one behind the backup.
    @Test func aPeerThatDoesNotKnowTheDeviceOrIsBehindTheBackupLeavesTheFence() throws {
        var w = try World(fenced: true)
        let stranger = w.pki.replicator(try w.pki.device(.station, scopes: [TestPKI.station]))
        var l1 = S.connect(w.restored, stranger, seed: 6)
        #expect(S.run(&l1))
        #expect(!l1.a.session.liftedRestoreFence)
        #expect(try w.restored.restoreFence() == Self.fence)
        // A station that met the device before the backup (it holds 1...2 only): behind the backup.
        let stale = w.pki.replicator(try w.pki.device(.station, scopes: [TestPKI.station]))
        _ = try stale.ingest(try w.bp.store.changes(Self.log(w.bp), in: 1...2).map { try Change(canonicalBytes: $0.bytes) },
                             certificates: [w.bp.identity.certificate], now: TestPKI.now + 1_000)
        var l2 = S.connect(stale, w.restored, seed: 7)
        #expect(S.run(&l2))
        #expect(!l2.b.session.liftedRestoreFence)
        #expect(try w.restored.restoreFence() != nil)
        #expect(throws: WriteError.self) { try S.write(w.restored, 44) }
    }

    /// An HQ receipt naming an own seq the store lacks keeps the fence even after a peer as current as
    /// the backup: HQ saw a later change that has not come back yet.
    @Test func aReceiptNamingALaterOwnSeqKeepsTheFence() throws {
        var w = try World(fenced: true)
        let hq = w.pki.replicator(try w.pki.device(.hq, scopes: [TestPKI.root]))
        var l0 = S.connect(w.st, hq, seed: 8)
        #expect(S.run(&l0))
        let receipt = try hq.writeReceipt(scope: TestPKI.root, now: TestPKI.now + 20_000)
        _ = try w.restored.ingest([receipt], certificates: [hq.identity.certificate], now: TestPKI.now + 20_000)
        #expect(try w.restored.store.receipted(Self.log(w.bp)) == 5)
        // A peer that holds 1...3 (as current as the backup, not more).
        let peer = w.pki.replicator(try w.pki.device(.station, scopes: [TestPKI.station]))
        _ = try peer.ingest(try w.bp.store.changes(Self.log(w.bp), in: 1...3).map { try Change(canonicalBytes: $0.bytes) },
                            certificates: [w.bp.identity.certificate], now: TestPKI.now + 1_000)
        var l1 = S.connect(w.restored, peer, seed: 9)
        #expect(S.run(&l1))
        #expect(!l1.a.session.liftedRestoreFence, "HQ receipted seq 5, which this store lacks")
        var l2 = S.connect(w.restored, w.st, seed: 10)
        #expect(S.run(&l2))
        #expect(l2.a.session.liftedRestoreFence)
        #expect(try S.write(w.restored, 77).header.seq == 6)
    }
}
