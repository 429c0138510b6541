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

    @Test func emptyPeerMeetingANodeWithThousandsOfLogsDoesNotStopTheProcess() throws {
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
        // Before the fix the station's process stopped on a precondition here.
        let failure = link.a.failure ?? link.b.failure
        withKnownIssue("a decoded reply naming more than ~3,400 logs does not fit one transport message (sync-reconciliation.md §9)") {
            #expect(link.a.isFinished && link.b.isFinished, "\(String(describing: failure))")
        }
        #expect(link.b.failure?.code == .limitExceeded, "the station's session ends with a typed error: \(String(describing: link.b.failure))")
    }
}
