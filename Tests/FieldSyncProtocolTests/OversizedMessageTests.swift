import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// A message longer than the transport allows ends the session with a typed error instead of stopping
/// the process (it was a `precondition`): a reconciliation reply naming every log the two nodes share
/// outgrows 65,519 bytes at a few thousand logs, and an empty peer (a new device, a relay box after a
/// reset) asks for exactly that reply (Protocols/sync-reconciliation.md §9).
@Suite struct OversizedMessageTests {
    @Test func transportRefusesAnOversizedMessageWithATypedError() throws {
        var pki = TestPKI()
        let a = try pki.device(.station, scopes: [TestPKI.station]), b = try pki.device(.station, scopes: [TestPKI.station])
        let (i, _) = try HandshakeTests.run(a, b, trustA: pki.trust, trustB: pki.trust)
        var t = try i.transport()
        #expect(throws: SessionError.self) { _ = try t.seal([UInt8](repeating: 0, count: NoiseTransport.maxPlaintext + 1) ) }
        let ok = try t.seal([UInt8](repeating: 0, count: NoiseTransport.maxPlaintext))
        #expect(ok.count == NoiseTransport.maxPlaintext + Noise.tagLength)
    }

    /// `count` incidents of about 650 bytes each (a 500-character summary).
    static func bulky(_ r: Replicator, _ count: Int, from: UInt64 = 0) -> [RecordEdit] {
        (0..<count).map { n in
            Incident.create(id: RecordID(ID128(high: 9, low: from + UInt64(n))), scope: TestPKI.village, author: r.identity.id,
                            hlc: HLCTimestamp(milliseconds: TestPKI.now, counter: UInt16(n)), category: .fire, priority: .normal,
                            location: Location(latitude: 33.41, longitude: 104.95),
                            summary: String(repeating: "landslide on the county road ", count: 20).prefix(500).description,
                            reportedAt: Int64(TestPKI.now), reporter: "import")
        }
    }

    /// A change larger than a batch message can carry with its certificates could never be sent: a write
    /// of 100 bulky edits in one change (66 KB) was accepted, and every later session offering it failed
    /// with `limitExceeded` (found by a live-session test: the push failed), stopping all sync between the
    /// two nodes for good. Now the write is refused with an error that says what to do (Protocols/change.md
    /// §4, Size), and a change that size from elsewhere is rejected by verification, never stored.
    @Test func aChangeTooLargeToSyncIsRefusedAtWriteAndAtVerification() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        do {
            _ = try bp.write(Self.bulky(bp, 100), scope: TestPKI.village, priority: .normal, now: TestPKI.now)
            Issue.record("a 100-edit change of about 66 KB was written")
        } catch let e as WriteError {
            #expect(e.description.contains("\(Change.maxSyncBytes) bytes") && e.description.contains("fewer edits"), "\(e)")
        }
        #expect(try bp.store.status().changes == 0, "nothing stored")
        // 60 of them (about 40 KB) are one change that syncs.
        let fits = try bp.write(Self.bulky(bp, 60), scope: TestPKI.village, priority: .normal, now: TestPKI.now)
        #expect(fits.encodedBytes.count > 32_768 && fits.encodedBytes.count <= Change.maxSyncBytes)
        var link = SessionTests.connect(bp, station)
        #expect(SessionTests.run(&link))
        #expect(link.a.isFinished && link.b.isFinished, "\(String(describing: link.a.failure ?? link.b.failure))")
        #expect(try station.store.records(RecordQuery()).count == 60)
        // Sealed by hand past the limit (another implementation, a hostile device): not verified, not stored.
        let big = try Change.seal(author: bp.identity.signingKey, scope: TestPKI.village, seq: 2, prevHash: fits.id,
                                  hlc: HLCTimestamp(milliseconds: TestPKI.now, counter: 100), priority: .normal,
                                  payload: ChangeBody(edits: Self.bulky(bp, 100, from: 1_000)).canonicalBytes,
                                  readers: bp.writingKeys(for: TestPKI.village), archive: nil)
        #expect(big.encodedBytes.count > Change.maxSyncBytes)
        let report = try station.ingest([big], now: TestPKI.now)
        guard case let .rejected(code, why)? = report.outcomes.first else {
            Issue.record("an oversized change was \(report.outcomes)")
            return
        }
        #expect(code == .invalid && why.contains("\(Change.maxSyncBytes)"), "\(why)")
        #expect(try station.store.records(RecordQuery()).count == 60)
    }

    @Test func emptyPeerMeetingANodeWithThousandsOfLogsGetsThemAll() throws {
        var pki = TestPKI()
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let fresh = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        // 2,000 logs, one change in each village scope: the station's `decoded` reply names them all.
        for v in 0..<2_000 {
            let scope = try Scope("longnan/wudu/station-017/village-\(v)")
            _ = try SessionTests.write(station, UInt64(v + 1), scope: scope)
        }
        var link = SessionTests.connect(fresh, station)
        SessionTests.run(&link)
        // First the station's process stopped on a precondition here; then the session failed with
        // `limitExceeded` (its `decoded` and `names` replies did not fit one transport message); now they go
        // in parts and the fresh node gets every log.
        let failure = link.a.failure ?? link.b.failure
        #expect(link.a.isFinished && link.b.isFinished, "\(String(describing: failure))")
        #expect(try fresh.store.holdings().count == 2_000)
    }
}
