import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct ReconcilerTests {
    static func check(_ a: [LogHoldings], _ b: [LogHoldings], seed: UInt64 = 1) throws -> PairRun {
        let ha = Holdings(a), hb = Holdings(b)
        let run = try runPair(ha, hb, seed: seed)
        let ri = try #require(run.initiator, "initiator did not finish")
        let rr = try #require(run.responder, "responder did not finish")
        #expect(ri.differences == groundTruth(ha, hb))
        #expect(rr.differences == groundTruth(hb, ha))
        return run
    }

    @Test(arguments: [0, 1, 10, 1000]) func inSyncConfirmsInHalfRoundTripUnder100Bytes(logs: Int) throws {
        let a = randomHoldings(logs: logs, changes: logs * 100, seed: 4)
        let run = try Self.check(a, a)
        #expect(run.bytes <= 100)
        #expect(run.halfTrips == 1)
        #expect(run.initiator?.method == .digest)
    }

    @Test(arguments: [1, 3, 10, 60, 150]) func kLogsAhead(k: Int) throws {
        let b = randomHoldings(logs: 1000, changes: 100_000, seed: 9)
        var a = b
        var rng = SplitMix64(seed: UInt64(k))
        for i in Array(0..<1000).shuffled(using: &rng).prefix(k) {
            let h = a[i].intervals[0].end
            a[i] = rng.next() % 2 == 0 || h <= 3 ? prefix(a[i].log, h + 5) : prefix(a[i].log, h - 3)
        }
        let run = try Self.check(a, b, seed: UInt64(k))
        #expect(run.initiator?.differences.count == k)
    }

    /// k = 60 differing logs of A = 1,000 (each 5 changes ahead on one side), 20 session keys.
    ///
    /// What this design achieves is asserted; the design-note goal of ≤ 5,000 bytes is not reached
    /// (with partner inference the symbols alone need ≈ 1.14 × 120 × 25 B ≈ 3.4 KB, plus the batch
    /// margin, the 920-byte `decoded` list and the estimate) and is kept as a known issue.
    @Test func k60OfThousandBudget() throws {
        var bytes: [Int] = []
        var withinTwoRoundTrips = 0
        for seed: UInt64 in 1...20 {
            let b = randomHoldings(logs: 1000, changes: 100_000, seed: seed)
            var a = b
            var rng = SplitMix64(seed: seed)
            for i in Array(0..<1000).shuffled(using: &rng).prefix(60) { a[i] = prefix(a[i].log, a[i].intervals[0].end + 5) }
            let run = try Self.check(a, b, seed: seed)
            bytes.append(run.bytes)
            if run.roundTrips <= 2 { withinTwoRoundTrips += 1 }
        }
        bytes.sort()
        print("k=60 of 1000 over 20 keys: median \(bytes[10]) B, max \(bytes[19]) B, \(withinTwoRoundTrips)/20 within 2 RTT")
        #expect(bytes[10] <= 6_200)
        #expect(bytes[19] <= 7_500)
        #expect(withinTwoRoundTrips >= 19)
        withKnownIssue("design-note goal of 5 KB for k = 60 is not met by 16-byte elements (see sync-reconciliation.md §8)") {
            #expect(bytes[10] <= 5_000)
        }
    }

    @Test func forksAreDifferences() throws {
        let b = randomHoldings(logs: 200, changes: 5_000, seed: 2)
        var a = b
        for i in [3, 50, 199] { a[i] = prefix(a[i].log, a[i].intervals[0].end, fork: 1) }
        let run = try Self.check(a, b)
        let diffs = try #require(run.initiator).differences
        #expect(diffs.count == 3)
        #expect(diffs.allSatisfy { $0.forkedHeights == [$0.local[0].end] })
    }

    @Test func gapsAndExtraIntervals() throws {
        let b = randomHoldings(logs: 300, changes: 10_000, seed: 21)
        var a = b
        func iv(_ log: LogID, _ s: UInt32, _ e: UInt32) -> HeldInterval { HeldInterval(start: s, end: e, endHash: hashOf(log, e)) }
        let l0 = a[0].log, l1 = a[1].log, l2 = a[2].log
        let h0 = a[0].intervals[0].end
        a[0] = LogHoldings(log: l0, intervals: [iv(l0, 1, h0), iv(l0, h0 + 3, h0 + 7)])        // urgent changes out of order
        a[1] = LogHoldings(log: l1, intervals: [iv(l1, 4, 9)])                                   // no prefix at all
        a[2] = LogHoldings(log: l2, intervals: [iv(l2, 1, 2), iv(l2, 5, 6), iv(l2, 8, 40)])
        var bb = b
        bb[2] = LogHoldings(log: l2, intervals: [iv(l2, 1, 2), iv(l2, 5, 6), iv(l2, 8, 30)])     // shares two intervals
        let run = try Self.check(a, bb)
        #expect(run.initiator?.differences.count == 3)
    }

    @Test func oneSideEmpty() throws {
        let a = randomHoldings(logs: 50, changes: 500, seed: 5)
        let r1 = try Self.check(a, [])
        #expect(r1.initiator?.method == .fullHeads)
        let r2 = try Self.check([], a)
        #expect(r2.responder?.differences.count == 50)
    }

    @Test func logsOnlyOnOneSideAreNamed() throws {
        let all = randomHoldings(logs: 1010, changes: 50_000, seed: 8)
        let a = Array(all[0..<1000]) + [all[1005]]
        let b = Array(all[3..<1004])    // lacks 0,1,2,1005; has 1000...1003
        let run = try Self.check(a, b)
        #expect(run.initiator?.differences.count == 8)
        #expect(run.messages.contains { if case .names = $0 { true } else { false } })
    }

    @Test func randomHoldingsProperty() throws {
        var rng = SplitMix64(seed: 1234)
        for trial in 0..<40 {
            let n = Int(rng.next() % 400)
            let base = randomHoldings(logs: n, changes: n * 20, seed: rng.next())
            var a: [LogHoldings] = [], b: [LogHoldings] = []
            for l in base {
                let h = l.intervals[0].end
                switch rng.next() % 10 {
                case 0: a.append(l)
                case 1: b.append(l)
                case 2: a.append(l); b.append(prefix(l.log, h + UInt32(1 + rng.next() % 9)))
                case 3: a.append(l); b.append(prefix(l.log, h, fork: 7))
                default: a.append(l); b.append(l)
                }
            }
            _ = try Self.check(a, b, seed: UInt64(trial))
        }
    }

    /// A different session key or salt gives different tags (so precomputed collisions do not carry over).
    @Test func tagsDependOnSessionAndSalts() {
        let log = makeLog(3)
        let k1 = SipHashReconciliationHashing(sessionKey: testSessionKey)
        let k2 = SipHashReconciliationHashing(sessionKey: Array(testSessionKey.reversed()))
        let t1 = k1.elementHasher(initiatorSalt: salt(1), responderSalt: salt(2)).tag(log)
        #expect(t1 != k2.elementHasher(initiatorSalt: salt(1), responderSalt: salt(2)).tag(log))
        #expect(t1 != k1.elementHasher(initiatorSalt: salt(1), responderSalt: salt(3)).tag(log))
        #expect(t1 != k1.elementHasher(initiatorSalt: salt(2), responderSalt: salt(1)).tag(log))
    }

    @Test func unexpectedMessagesThrowTypedErrors() {
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        var r = Reconciler(role: .responder, holdings: Holdings(randomHoldings(logs: 30, changes: 300, seed: 1)), hashing: keys, salt: salt(1))
        _ = r.start()
        #expect(throws: ReconciliationError.self) { try r.receive(.more(received: 3)) }
        #expect(r.hasFailed && !r.isFinished)
        #expect(throws: ReconciliationError.self) { try r.receive(.hello(Hello(elementCount: 1, digest: Array(repeating: 0, count: 16), salt: salt(2)))) }
    }

    /// A names message that does not match the tag it claims is rejected.
    @Test func forgedNamesAreRejected() throws {
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        let mine = Holdings(randomHoldings(logs: 40, changes: 400, seed: 1))
        var r = Reconciler(role: .responder, holdings: mine, hashing: keys, salt: salt(1))
        _ = r.start()
        // A peer that holds one extra log sends its full vector (fallback by counts is forced: 1 vs 40).
        _ = try r.receive(.hello(Hello(elementCount: 1, digest: Array(repeating: 0, count: 16), salt: salt(2))))
        let outs = try r.receive(.fullHeads([HeadEntry(tag: 42, intervals: [IntervalSummary(start: 1, end: 3, endHashPrefix: 9)])]))
        #expect(outs.contains { if case .send(.decoded) = $0 { true } else { false } })
        #expect(!r.isFinished)
        #expect(throws: ReconciliationError.self) { try r.receive(.names([LogName(tag: 42, log: makeLog(999))])) }
    }
}
