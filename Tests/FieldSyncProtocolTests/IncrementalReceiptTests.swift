import FieldSyncCore
import FieldSyncCrypto
import Testing

@testable import FieldSyncProtocol

/// HQ's automatic receipts stay small: only logs held beyond what is receipted, split so each fits a
/// session batch, and nothing when nothing is behind.
@Suite struct IncrementalReceiptTests {
    @Test func receiptsCoverOnlyWhatIsBehindAndFitABatch() throws {
        var pki = TestPKI()
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        // 1,200 logs: HQ itself writes one change in each of 1,200 villages of the station.
        for v in 0..<1_200 {
            let scope = try Scope("longnan/wudu/station-017/village-\(String(format: "%04d", v))")
            _ = try SessionTests.write(hq, UInt64(v + 1), scope: scope)
        }
        let receipts = try hq.writeIncrementalReceipts(scope: TestPKI.root, now: TestPKI.now + 10_000)
        #expect(receipts.count == 3, "500 + 500 + 200 logs")
        for r in receipts {
            #expect(r.encodedBytes.count < 60_000, "fits one batch (SessionConfiguration.maxBatchBytes)")
            #expect(try Receipt(canonicalBytes: r.payload).heads.count <= 500)
        }
        for (log, held) in try hq.store.holdings() where log.scope != TestPKI.root {
            #expect(try hq.store.receipted(log) == held.frontier)
        }
        #expect(try hq.writeIncrementalReceipts(scope: TestPKI.root, now: TestPKI.now + 11_000).isEmpty, "nothing behind")
        // One more change: the next receipt names that log alone.
        _ = try SessionTests.write(hq, 20_000, scope: TestPKI.village)
        let next = try hq.writeIncrementalReceipts(scope: TestPKI.root, now: TestPKI.now + 21_000)
        #expect(next.count == 1)
        let heads = try Receipt(canonicalBytes: next[0].payload).heads
        #expect(heads.count == 1 && heads[0].0 == LogID(author: hq.identity.id, scope: TestPKI.village) && heads[0].1 == 2)
    }
}
