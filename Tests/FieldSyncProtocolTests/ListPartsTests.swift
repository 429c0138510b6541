import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

/// `fullHeads`, `decoded` and `names` lists too large for one message go in parts
/// (Protocols/sync-reconciliation.md §6.4). Before, one such reply had to fit one transport message: a node
/// sharing a few thousand logs with an empty or far-behind peer could not sync with it at all
/// (`limitExceeded`).
@Suite struct ListPartsTests {
    /// A small message limit, so that lists of a few dozen logs go in parts.
    static func small(_ bytes: Int) -> ReconciliationConfiguration {
        var c = ReconciliationConfiguration()
        c.maximumMessageBytes = bytes
        return c
    }

    static func parts(_ run: PairRun) -> (heads: Int, decoded: Int, names: Int) {
        var out = (heads: 0, decoded: 0, names: 0)
        for m in run.messages {
            switch m {
            case .fullHeadsPart: out.heads += 1
            case .decodedPart: out.decoded += 1
            case .namesPart: out.names += 1
            default: break
            }
        }
        return out
    }

    /// Every case of the fallback, with a limit of 300 bytes: the same differences as in one message, and
    /// every message within the limit.
    @Test(arguments: [1, 2, 3, 4, 5]) func anyListSplitGivesTheSameDifferences(seed: UInt64) throws {
        let all = randomHoldings(logs: 190, changes: 3_000, seed: seed)
        let shared = Array(all[0..<120]), onlyA = Array(all[120..<160]), onlyB = Array(all[160..<190])
        for (a, b) in [(shared + onlyA, onlyB), (onlyA, shared + onlyB), ([], shared), (shared, []), (shared + onlyA, shared + onlyB)] {
            let (ha, hb) = (Holdings(a), Holdings(b))
            let whole = try runPair(ha, hb, seed: seed)
            let split = try runPair(ha, hb, seed: seed, configuration: Self.small(300))
            #expect(split.initiator?.differences == groundTruth(ha, hb))
            #expect(split.responder?.differences == groundTruth(hb, ha))
            #expect(split.initiator?.differences == whole.initiator?.differences)
            #expect(split.messages.allSatisfy { $0.canonicalBytes.count <= 300 })
        }
    }

    @Test func eachKindOfListGoesInParts() throws {
        // A has 150 logs B lacks, B has 120 A lacks: fullHeads (A's), decoded (B's) and both names lists
        // are over 300 bytes.
        let all = randomHoldings(logs: 270, changes: 2_700, seed: 7)
        let a = Holdings(Array(all[0..<150])), b = Holdings(Array(all[150..<270]))
        let run = try runPair(a, b, configuration: Self.small(300))
        let p = Self.parts(run)
        #expect(p.heads > 0 && p.decoded > 0 && p.names > 0, "\(p)")
        #expect(run.initiator?.differences.count == 270)
        // A list that fits is one message, as before parts existed.
        let whole = try runPair(a, b)
        #expect(Self.parts(whole) == (0, 0, 0))
    }

    /// A responder that received part of a list.
    static func responderMidList(_ entries: [HeadEntry], announced: UInt64 = 10_000) throws -> Reconciler {
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        var r = Reconciler(role: .responder, holdings: Holdings(randomHoldings(logs: 5, changes: 50, seed: 1)), hashing: keys, salt: salt(1))
        _ = r.start()
        _ = try r.receive(.hello(Hello(elementCount: announced, digest: Array(repeating: 0, count: 16), salt: salt(2))))
        if !entries.isEmpty { #expect(try r.receive(.fullHeadsPart(entries)).isEmpty) }
        return r
    }

    static func entry(_ tag: UInt64) -> HeadEntry { HeadEntry(tag: tag, intervals: [IntervalSummary(start: 1, end: 2, endHashPrefix: 7)]) }

    /// The code of the reconciliation error `body` throws, nil if it throws none.
    static func code(_ body: () throws -> Void) -> ReconciliationError.Code? {
        do { try body() } catch let e as ReconciliationError { return e.code } catch {
            Issue.record("not a reconciliation error: \(error)")
        }
        return nil
    }

    @Test func hostilePartsAreRefused() throws {
        // Tags must increase across parts, and into the final message.
        var r = try Self.responderMidList([Self.entry(10), Self.entry(20)])
        #expect(Self.code { _ = try r.receive(.fullHeadsPart([Self.entry(20)])) } == .inconsistentDifference)
        r = try Self.responderMidList([Self.entry(10), Self.entry(20)])
        #expect(Self.code { _ = try r.receive(.fullHeads([Self.entry(15)])) } == .inconsistentDifference)
        // Another message before the list's end.
        r = try Self.responderMidList([Self.entry(10)])
        #expect(Self.code { _ = try r.receive(.symbols(SymbolBatch(firstIndex: 0, symbols: []))) } == .unexpectedMessage)
        r = try Self.responderMidList([Self.entry(10)])
        #expect(Self.code { _ = try r.receive(.names([])) } == .unexpectedMessage)
        // A part of a list this side does not expect: `decoded` goes to the initiator only.
        r = try Self.responderMidList([])
        #expect(Self.code { _ = try r.receive(.decodedPart([Self.entry(1)])) } == .unexpectedMessage)
        // More entries than the peer announced elements (each entry holds at least one).
        r = try Self.responderMidList([], announced: 3)
        #expect(Self.code { _ = try r.receive(.fullHeadsPart([Self.entry(1), Self.entry(2)])) } == nil)
        #expect(Self.code { _ = try r.receive(.fullHeadsPart([Self.entry(3), Self.entry(4)])) } == .limitExceeded)
        // At most `maximumListEntries` over all parts, whatever was announced.
        r = try Self.responderMidList([], announced: 1 << 40)
        let many = (0..<UInt64(maximumListEntries)).map { Self.entry($0 * 2) }
        #expect(Self.code { _ = try r.receive(.fullHeadsPart(many)) } == nil)
        #expect(Self.code { _ = try r.receive(.fullHeadsPart([Self.entry(UInt64(maximumListEntries) * 2)])) } == .limitExceeded)
    }

    /// The list bound is the responder's: a final `fullHeads` after parts is checked over the whole list.
    @Test func aFinalMessageCompletesTheList() throws {
        var r = try Self.responderMidList([Self.entry(10), Self.entry(20)])
        let outs = try r.receive(.fullHeads([Self.entry(30)]))
        // The three logs it lacks, and its own five, are the difference.
        let decoded = outs.compactMap { if case let .send(.decoded(e)) = $0 { e } else { nil } }.first
        #expect(decoded?.count == 8)
    }

    /// The constant is what a session carries: the transport's largest plaintext minus the message tag.
    @Test func theMessageLimitIsTheTransports() {
        #expect(maximumReconMessageBytes == NoiseTransport.maxPlaintext - 1)
    }
}
