import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// Issue 13 item 4: a peer's symbol stream is bounded by what the two sides' sizes allow, in symbols
/// and in messages, and a peer that exceeds the bound is cut with `limitExceeded`; honest sessions of
/// large sets with real differences are never cut (Protocols/sync-reconciliation.md 6.3).
@Suite struct ReconciliationLimitTests {
    static let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)

    /// Random symbols: never pure, so they never peel; the decoder must hold every one of them.
    static func garbage(_ n: Int, _ rng: inout SplitMix64) -> [CodedSymbol] {
        (0..<n).map { _ in CodedSymbol(sum: HeadElement(high: rng.next(), low: rng.next()), checksum: rng.next(), count: 7) }
    }

    /// A responder holding `logs` logs that has received the hostile hello announcing `count` elements.
    static func responder(logs: Int, peerCount: UInt64) throws -> Reconciler {
        var r = Reconciler(role: .responder, holdings: Holdings(randomHoldings(logs: logs, changes: logs * 10, seed: 5)),
                           hashing: keys, salt: salt(1))
        _ = r.start()
        _ = try r.receive(.hello(Hello(elementCount: peerCount, digest: Array(repeating: 0, count: 16), salt: salt(2))))
        return r
    }

    /// Feeds batches of `size` garbage symbols until the responder throws; returns the error and the
    /// symbols it accepted before.
    static func flood(_ r: inout Reconciler, size: Int, maxSymbols: Int) -> (ReconciliationError?, accepted: Int) {
        var rng = SplitMix64(seed: 99)
        var sent = 0
        while sent < maxSymbols {
            do {
                _ = try r.receive(.symbols(SymbolBatch(firstIndex: UInt64(sent), symbols: garbage(size, &rng))))
            } catch {
                return (error, sent)
            }
            sent += size
        }
        return (nil, sent)
    }

    /// The attack of the audit: a peer announces 2^24 elements, which forces the fallback by counts, and
    /// then streams symbols anyway. Before the fix the responder accepted about 4 × 2^24 of them.
    @Test func symbolsAfterTheFallbackByCountsAreCut() throws {
        var r = try Self.responder(logs: 1_000, peerCount: 1 << 24)
        let (error, accepted) = Self.flood(&r, size: 2_000, maxSymbols: 200_000)
        #expect(error?.code == .limitExceeded)
        #expect(accepted == 0, "no symbol is accepted after the fallback by counts")
        #expect(r.hasFailed)
    }

    /// Without the fallback (the peer announces as many elements as the responder holds), the stream is
    /// cut at `min(n_I, 2 n_R) + 16` symbols: memory held for the peer stays proportional to our own size.
    @Test func symbolFloodIsCutAtTheSizeBound() throws {
        var r = try Self.responder(logs: 1_000, peerCount: 1_000)
        let cap = Reconciler.symbolLimit(initiatorCount: 1_000, responderCount: 1_000)
        #expect(cap == 1_016)
        let (error, accepted) = Self.flood(&r, size: 100, maxSymbols: 50_000)
        #expect(error?.code == .limitExceeded)
        #expect(accepted <= cap && accepted >= cap - 100)
    }

    /// A peer that sends one symbol per message makes the responder pass over its elements per message:
    /// the number of symbol messages is capped on its own.
    @Test func tinySymbolMessagesAreCut() throws {
        var r = try Self.responder(logs: 1_000, peerCount: 1_000)
        let limit = Reconciler.symbolMessageLimit(symbolLimit: Reconciler.symbolLimit(initiatorCount: 1_000, responderCount: 1_000))
        #expect(limit == 65)
        let (error, accepted) = Self.flood(&r, size: 1, maxSymbols: 1_000)
        #expect(error?.code == .limitExceeded)
        #expect(accepted == limit)
    }

    /// An empty symbol batch carries nothing and cannot come from an honest initiator.
    @Test func emptySymbolBatchIsRefused() throws {
        var r = try Self.responder(logs: 1_000, peerCount: 1_000)
        #expect(throws: ReconciliationError(.badSymbolStream, "empty symbol batch")) {
            try r.receive(.symbols(SymbolBatch(firstIndex: 0, symbols: [])))
        }
    }

    /// The bound is computed from the responder's own count: whatever the peer announces.
    @Test func boundDependsOnOwnSize() {
        #expect(Reconciler.symbolLimit(initiatorCount: .max, responderCount: 10) == 36)
        #expect(Reconciler.symbolLimit(initiatorCount: 5, responderCount: 1_000_000) == 21)
        #expect(Reconciler.symbolLimit(initiatorCount: .max, responderCount: .max) > 0)
    }

    /// Honest sessions of large sets with real differences complete, whether they end by symbols or
    /// switch to the full head vector, and never come near the cut: symbols sent stay within the bound.
    @Test(arguments: [(20_000, 600, false), (20_000, 6_000, true), (3_000, 1_400, true)])
    func honestLargeSetsAreNeverCut(logs: Int, differing: Int, bothSides: Bool) throws {
        let base = randomHoldings(logs: logs, changes: logs * 20, seed: UInt64(logs + differing))
        var a: [LogHoldings] = [], b: [LogHoldings] = []
        var rng = SplitMix64(seed: 3)
        for (i, l) in base.enumerated() {
            let h = l.intervals[0].end
            if i < differing {
                // Each differing log is ahead on one side (alternating when `bothSides`), or forked.
                if bothSides && i % 3 == 2 {
                    a.append(l); b.append(prefix(l.log, h, fork: 9))
                } else if bothSides && i % 3 == 1 {
                    a.append(prefix(l.log, h + UInt32(1 + rng.next() % 5))); b.append(l)
                } else {
                    a.append(l); b.append(prefix(l.log, h + UInt32(1 + rng.next() % 5)))
                }
            } else {
                a.append(l); b.append(l)
            }
        }
        let ha = Holdings(a), hb = Holdings(b)
        let run = try runPair(ha, hb)
        let truth = groundTruth(ha, hb)
        #expect(run.initiator?.differences == truth)
        #expect(run.responder?.differences.count == truth.count)
        var symbols = 0, symbolMessages = 0
        for m in run.messages { if case let .symbols(s) = m { symbols += s.symbols.count; symbolMessages += 1 } }
        let cap = Reconciler.symbolLimit(initiatorCount: UInt64(ha.elementCount), responderCount: UInt64(hb.elementCount))
        #expect(symbols <= cap)
        #expect(symbolMessages <= Reconciler.symbolMessageLimit(symbolLimit: cap))
        // The honest initiator's own ceiling: its head vector costs at most 19 bytes per element.
        #expect(symbols * 25 <= 19 * ha.elementCount + 6)
    }

    /// End to end through a real session: an enrolled peer completes the Noise handshake, announces 2^24
    /// elements and streams symbols; the honest node cuts it with `limitExceeded` at the first batch.
    @Test func enrolledPeerSymbolFloodEndsTheSession() throws {
        var pki = TestPKI()
        let station = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(station, 1)
        let evil = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let now = TestPKI.now
        let session = TestSession(initiator: false, replicator: station,
                                  configuration: SessionConfiguration(network: SessionTests.net, salt: salt(4)), now: now)
        var hs = SessionHandshake(initiator: true, identity: evil.identity, trust: evil.trust, network: SessionTests.net)
        var frames = FrameDecoder()
        func fromStation() throws -> [[UInt8]] {
            var out: [[UInt8]] = []
            while let bytes = session.pollTransmit() {
                frames.append(bytes)
                while let f = try frames.next() { out.append(f) }
            }
            return out
        }
        session.receive(FrameDecoder.frame(try hs.write()), now: now)
        try hs.read(try #require(try fromStation().first), now: now)
        session.receive(FrameDecoder.frame(try hs.write()), now: now)
        #expect(hs.isComplete)
        var t = try hs.transport()
        let opening = try fromStation()
        // The station's clock (Protocols/sync.md §4.3), then its hello.
        let clock = try SessionMessage.decode(try t.open(try #require(opening.first)))
        guard case .clock = clock else { Issue.record("expected the station's clock, got \(clock)"); return }
        let hello = try SessionMessage.decode(try t.open(try #require(opening.dropFirst().first)))
        guard case .recon(.hello) = hello else { Issue.record("expected the station's hello, got \(hello)"); return }
        func send(_ m: SessionMessage) throws {
            var w = ByteWriter()
            m.encode(to: &w)
            session.receive(FrameDecoder.frame(try t.seal(w.bytes)), now: now)
        }
        try send(.recon(.hello(Hello(elementCount: 1 << 24, digest: Array(repeating: 0, count: 16), salt: salt(5)))))
        #expect(!session.hasFailed)
        var rng = SplitMix64(seed: 7)
        var sent = 0
        while !session.hasFailed && sent < 100_000 {
            try send(.recon(.symbols(SymbolBatch(firstIndex: UInt64(sent), symbols: Self.garbage(2_000, &rng)))))
            sent += 2_000
        }
        #expect(session.failure?.code == .limitExceeded)
        #expect(sent == 2_000, "cut at the first symbol batch")
    }
}
