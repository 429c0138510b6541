import FieldSyncCore
import FieldSyncCrypto
@testable import FieldSyncProtocol
import Testing

/// Reconciliation views kept between sessions (`ReconciliationViews`): every view served is what a fresh walk
/// of the store gives (the logs both sides may hold, their digest input, element count and the logs whose
/// view leaves something out), across commits that grow logs, add logs anywhere in the order, open gaps,
/// overflow the store's journal, and a restore; per kind of peer; and kept views are used.
@Suite struct ReconciliationViewTests {
    private static let author = DeviceID(ID128(high: 3, low: 3))
    private static let other = DeviceID(ID128(high: 1, low: 1))

    private static func hash(_ log: Int, _ seq: UInt64) -> [UInt8] {
        seq == 0 ? [UInt8](repeating: 0, count: 32)
            : withUnsafeBytes(of: seq.bigEndian, Array.init) + [UInt8](repeating: 0x5A, count: 22) + withUnsafeBytes(of: UInt16(log).bigEndian, Array.init)
    }

    /// The logs: villages of two stations of two counties, by two authors, and the county's own log.
    private static let logs: [LogID] = {
        var out: [LogID] = []
        for (i, path) in ["longnan/wudu/station-017/village-3", "longnan/wudu/station-017/village-1", "longnan/wudu/station-018/village-2",
                          "longnan/kang/station-090/village-7", "longnan/wudu", "longnan/wudu/station-017/village-2"].enumerated() {
            out.append(LogID(author: i % 2 == 0 ? author : other, scope: try! Scope(path)))
        }
        return out
    }()

    private func write(_ store: MemoryStore, _ log: Int, _ seq: UInt64) throws {
        let l = Self.logs[log]
        let c = StoredChange(log: l, seq: seq, hash: Self.hash(log, seq), prevHash: Self.hash(log, seq - 1),
                             hlc: HLCTimestamp(milliseconds: seq, counter: 0), contentType: .records, priority: .normal, bytes: [9, 9])
        _ = try store.commit(CommitBatch(changes: [c]))
    }

    @Test func keptViewsAreWhatTheStoreHolds() throws {
        var pki = TestPKI()
        let county = try pki.device(.county, scopes: [try Scope("longnan/wudu")]).certificate
        let peers = [
            try pki.device(.backpack, scopes: [TestPKI.station]).certificate,  // station-017 of wudu
            try pki.device(.relay, scopes: [TestPKI.station]).certificate,  // every log
            try pki.device(.station, scopes: [try Scope("longnan/wudu/station-018")]).certificate,
            try pki.device(.county, scopes: [try Scope("longnan/kang")]).certificate,  // only the root's control logs: none here
        ]
        let store = MemoryStore()
        let kinds = peers.map { _ in ReconciliationViews() }  // one each: every view kept, and patched
        func check(_ what: Comment) throws {
            for (peer, views) in zip(peers, kinds) {
                let include = { (log: LogID) in Entitlement.mayHold(county, log) && Entitlement.mayHold(peer, log) }
                let kept = try views.view(own: county, peer: peer, store: store)
                let fresh = try ReconciliationViews.build(store, include)
                #expect(kept.holdings == fresh.holdings, what)
                #expect(kept.holdings.canonicalDigestInput == Holdings(fresh.holdings.logs).canonicalDigestInput, what)
                #expect(kept.holdings.elementCount == Holdings(fresh.holdings.logs).elementCount, what)
                #expect(kept.uncovered == fresh.uncovered, what)
            }
        }
        try check("empty store")
        try write(store, 0, 1)
        try check("one log")
        try write(store, 1, 1)
        try write(store, 5, 1)
        try write(store, 2, 1)
        try write(store, 3, 1)
        try check("logs added before, between and after")
        let snapshot = store.snapshot()
        try write(store, 0, 2)
        try write(store, 4, 1)
        try check("a log grown, the county's own log")
        try write(store, 1, 4)
        try check("a gap: two intervals")
        #expect(try kinds[0].view(own: county, peer: peers[0], store: store).holdings.logs.first { $0.log == Self.logs[1] }?.intervals.count == 2)
        for seq in UInt64(3)...UInt64(3 + MemoryStore.HoldingsJournal.capacity) { try write(store, 0, seq) }
        try check("past the journal's reach: built again")
        store.restore(snapshot)
        try check("restored: logs gone, a log shorter")
        try write(store, 4, 1)
        try check("after the restore")
        #expect(kinds.map(\.built) == [1, 1, 1, 1], "each kind's view built once")
        #expect(kinds.map(\.kept) == [8, 7, 7, 7], "then kept for every check after (the first kind asked once more)")
    }

    /// Peers whose certificates let them hold the same logs (`Entitlement.key`: a station and its backpacks;
    /// relay boxes of any scope) share one kept view; the least recently used kind goes past `capacity`.
    @Test func peersThatMayHoldTheSameLogsShareAView() throws {
        var pki = TestPKI()
        let county = try pki.device(.county, scopes: [try Scope("longnan/wudu")]).certificate
        let station = try pki.device(.station, scopes: [TestPKI.station]).certificate
        let backpack = try pki.device(.backpack, scopes: [TestPKI.station]).certificate
        let relays = try [TestPKI.station, try Scope("longnan/kang")].map { try pki.device(.relay, scopes: [$0]).certificate }
        let store = MemoryStore()
        try write(store, 0, 1)
        let views = ReconciliationViews()
        _ = try views.view(own: county, peer: station, store: store)
        _ = try views.view(own: county, peer: backpack, store: store)
        _ = try views.view(own: county, peer: relays[0], store: store)
        _ = try views.view(own: county, peer: relays[1], store: store)
        #expect(views.built == 2 && views.kept == 2)
        let others = try (2..<2 + ReconciliationViews.capacity).map { try pki.device(.station, scopes: [try Scope("longnan/wudu/station-0\($0)")]).certificate }
        for peer in others { _ = try views.view(own: county, peer: peer, store: store) }
        _ = try views.view(own: county, peer: station, store: store)
        #expect(views.built == 2 + ReconciliationViews.capacity + 1, "the station's view was let go")
    }

    /// A store without a journal (`holdingsGeneration` nil, as `SQLiteStore`) gets a fresh walk every time.
    @Test func aStoreWithoutAJournalIsWalkedEachTime() throws {
        var pki = TestPKI()
        let county = try pki.device(.county, scopes: [try Scope("longnan/wudu")]).certificate
        let relay = try pki.device(.relay, scopes: [TestPKI.station]).certificate
        let store = FailingStore()  // forwards to a `MemoryStore`, keeps no journal
        let views = ReconciliationViews()
        for seq in UInt64(1)...3 {
            let c = StoredChange(log: Self.logs[0], seq: seq, hash: Self.hash(0, seq), prevHash: Self.hash(0, seq - 1),
                                 hlc: HLCTimestamp(milliseconds: seq, counter: 0), contentType: .records, priority: .normal, bytes: [1])
            _ = try store.commit(CommitBatch(changes: [c]))
            let v = try views.view(own: county, peer: relay, store: store)
            #expect(v.holdings.logs.map { $0.intervals.map(\.end) } == [[UInt32(seq)]])
        }
        #expect(views.kept == 0 && views.built == 0)
    }
}
