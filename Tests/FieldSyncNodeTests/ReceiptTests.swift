import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import NIOCore
import Testing

/// HQ's receipts over real TCP (in one process): HQ writes a receipt after a session in which it
/// ingested changes, and the receipt travels back to the author through a station. The station is
/// restarted (a new node over the same SQLite file) between its sessions, so it must restore the
/// backpack's certificate from its store to forward the backpack's changes.
@Suite(.ownThread) struct ReceiptTests {
    static let root = try! Scope("longnan")

    /// A node over a SQLite file with a fixed storage key (so it can be reopened), restoring what the
    /// store holds.
    static func node(_ id: DeviceIdentity, trust: TrustStore, path: String, storageKey: [UInt8]) throws -> FieldSyncNode {
        try FieldSyncNode(configuration: NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))) {
            let store = try SQLiteStore(path: path, sealer: try StorageKeySealer(key: SecretBytes(copying: storageKey)))
            let r = Replicator(identity: id, trust: trust, store: store)
            r.addKey(NodeTests.stationKey)
            try r.restoreControlState(now: UInt64(Date().timeIntervalSince1970 * 1000))
            try r.restoreCertificates(now: UInt64(Date().timeIntervalSince1970 * 1000))
            return r
        }
    }

    @Test(.timeLimit(.minutes(1))) func hqReceiptTravelsBackToTheBackpack() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bpID = try pki.device(.backpack, scopes: [NodeTests.station])
        let stID = try pki.device(.station, scopes: [NodeTests.station])
        let hqID = try pki.device(.hq, scopes: [Self.root])
        let keys = (0..<3).map { _ in SecureRandom.bytes(32) }
        let bp = try Self.node(bpID, trust: pki.trust, path: "\(dir)/bp.sqlite", storageKey: keys[0])
        var st = try Self.node(stID, trust: pki.trust, path: "\(dir)/st.sqlite", storageKey: keys[1])
        let hq = try Self.node(hqID, trust: pki.trust, path: "\(dir)/hq.sqlite", storageKey: keys[2])
        try await NodeTests.write(bp, count: 3, tag: "backpack")
        let log = LogID(author: bpID.id, scope: NodeTests.village)

        let hqListener = try await hq.listen(host: "127.0.0.1", port: 0)
        let hqPort = try NodeTests.port(hqListener)
        var stListener = try await st.listen(host: "127.0.0.1", port: 0)
        // The backpack meets the station; the station restarts (its certificates now come from its store).
        #expect(try await bp.sync(host: "127.0.0.1", port: try NodeTests.port(stListener)).changesSent == 3)
        try await stListener.close()
        try await st.shutdown()
        st = try Self.node(stID, trust: pki.trust, path: "\(dir)/st.sqlite", storageKey: keys[1])
        #expect(try await st.withReplicator { $0.certificates[bpID.id] != nil }, "restored from the store")
        // The station reaches HQ; HQ receipts after the session, and nothing is receipted before.
        let up = try await st.sync(host: "127.0.0.1", port: hqPort)
        #expect(up.isFinished && up.changesSent == 3, "\(up)")
        #expect(try await hq.withReplicator { try $0.store.records(RecordQuery()).count } == 3)
        #expect(try await st.withReplicator { try $0.store.receipted(log) } == 0)
        // Next contact: the receipt comes back to the station, then to the backpack.
        let down = try await st.sync(host: "127.0.0.1", port: hqPort)
        #expect(down.isFinished && down.changesReceived == 1, "the receipt: \(down)")
        #expect(try await st.withReplicator { try $0.store.receipted(log) } == 3)
        stListener = try await st.listen(host: "127.0.0.1", port: 0)
        let last = try await bp.sync(host: "127.0.0.1", port: try NodeTests.port(stListener))
        #expect(last.isFinished && last.changesReceived == 1, "\(last)")
        #expect(try await bp.withReplicator { try $0.store.receipted(log) } == 3, "the officer sees: reached HQ")
        // A session in which HQ received nothing writes no new receipt.
        let hqLog = LogID(author: hqID.id, scope: Self.root)
        let before = try await hq.withReplicator { try $0.store.holdings(of: hqLog).frontier }
        _ = try await st.sync(host: "127.0.0.1", port: hqPort)
        #expect(try await hq.withReplicator { try $0.store.holdings(of: hqLog).frontier } == before)
        // A second HQ device catches up from the first: what it received is already receipted, so it
        // writes no receipt of its own (two HQ devices do not answer receipts with receipts).
        let hq2ID = try pki.device(.hq, scopes: [Self.root])
        let hq2 = try Self.node(hq2ID, trust: pki.trust, path: "\(dir)/hq2.sqlite", storageKey: SecureRandom.bytes(32))
        let caughtUp = try await hq2.sync(host: "127.0.0.1", port: hqPort)
        #expect(caughtUp.isFinished && caughtUp.changesReceived == 4, "\(caughtUp)")
        #expect(try await hq2.withReplicator { try $0.store.receipted(log) } == 3)
        #expect(try await hq2.withReplicator { try $0.store.holdings(of: LogID(author: hq2ID.id, scope: Self.root)).frontier } == 0)
        try await stListener.close()
        try await hqListener.close()
        for n in [bp, st, hq, hq2] { try await n.shutdown() }
    }
}
