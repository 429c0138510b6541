import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct MessageTests {
    static var samples: [ReconMessage] {
        let e = [HeadEntry(tag: 1, intervals: [IntervalSummary(start: 1, end: 300, endHashPrefix: 0xDEAD_BEEF)]),
                 HeadEntry(tag: 0xFFFF_0000_0000_0001, intervals: [IntervalSummary(start: 1, end: 2, endHashPrefix: 1),
                                                                  IntervalSummary(start: 9, end: 1 << 30, endHashPrefix: 2)])]
        return [
            .hello(Hello(elementCount: 1000, digest: Array(0..<16), salt: Array(16..<32))),
            .estimate(Estimate(log2Buckets: 4, cells: (0..<16).map { UInt8($0) })),
            .symbols(SymbolBatch(firstIndex: 7, symbols: [
                CodedSymbol(sum: HeadElement(high: 1, low: 2), checksum: 3, count: -1),
                CodedSymbol(sum: .zero, checksum: 0, count: 1000),
                CodedSymbol(sum: HeadElement(high: .max, low: .max), checksum: .max, count: .min)])),
            .more(received: 12),
            .fullHeads(e),
            .decoded(e + [HeadEntry(tag: 0xFFFF_FFFF_FFFF_FFFF, intervals: [])]),
            .names([LogName(tag: 5, log: makeLog(1)), LogName(tag: 6, log: makeLog(2))]),
            .fullHeadsPart(e),
            .decodedPart([HeadEntry(tag: 3, intervals: [])]),
            .namesPart([LogName(tag: 5, log: makeLog(1))]),
        ]
    }

    @Test func everyMessageRoundTrips() throws {
        for m in Self.samples {
            #expect(try ReconMessage(canonicalBytes: m.canonicalBytes) == m)
        }
    }

    @Test func typedErrorsForBadInput() {
        func code(_ bytes: [UInt8]) -> DecodingError.Code? {
            do { _ = try ReconMessage(canonicalBytes: bytes); return nil } catch { return error.code }
        }
        #expect(code([]) == .truncated)
        #expect(code([0x0B]) == .unknownTag)
        #expect(code([0x09]) == .truncated)                                       // decodedPart, no count
        #expect(code([0x09, 0x00]) == .invalidValue)                             // an empty part
        #expect(code([0x01, 0x02]) == .unsupportedVersion)
        #expect(code([0x02, 0x03]) == .invalidValue)                              // 8 buckets: below minimum
        #expect(code([0x03, 0x00, 0xFF, 0xFF, 0x03]) == .lengthTooLarge)         // symbol count beyond input
        #expect(code([0x05, 0x02] + [UInt8](repeating: 0, count: 8) + [0x01, 0x01, 0x01, 0, 0, 0, 0]
                     + [UInt8](repeating: 0, count: 8) + [0x01, 0x01, 0x01, 0, 0, 0, 0]) == .nonCanonicalOrder)
        #expect(code([0x05, 0x01] + [UInt8](repeating: 0, count: 8) + [0x01, 0x05, 0x01, 0, 0, 0, 0]) == .invalidValue) // start > end
        #expect(code([0x05, 0x01] + [UInt8](repeating: 0, count: 8) + [0x00]) == .invalidValue)  // no intervals
        #expect(code([0x04, 0x80, 0x00]) == .nonCanonicalVarint)
        #expect(code([0x04, 0x01, 0x00]) == .trailingBytes)
        // An oversized count must not allocate: 2^62 entries claimed with 10 bytes of input.
        #expect(code([0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]) == .lengthTooLarge)
    }

    /// 10,000 seeded mutations of valid messages: every one decodes or throws `DecodingError`; whatever
    /// decodes re-encodes to the same bytes (canonical), and feeding it to a live reconciler never traps.
    @Test func fuzzMutatedMessages() throws {
        var rng = SplitMix64(seed: 0xF022)
        let seeds = Self.samples.map(\.canonicalBytes)
        var decoded = 0
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        let holdings = Holdings(randomHoldings(logs: 40, changes: 400, seed: 3))
        for i in 0..<10_000 {
            var b = seeds[i % seeds.count]
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                switch rng.next() % 6 {
                case 0 where !b.isEmpty: b[Int(rng.next() % UInt64(b.count))] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
                case 1 where !b.isEmpty: b.removeLast(Int(rng.next() % UInt64(b.count)))
                case 2: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: Int(rng.next() % UInt64(b.count + 1)))
                case 3 where !b.isEmpty: b[Int(rng.next() % UInt64(b.count))] = 0xFF
                case 4: b += (0..<Int(rng.next() % 10)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                default: if b.count > 1 { b[1] = UInt8(truncatingIfNeeded: rng.next()) }
                }
            }
            do {
                let m = try ReconMessage(canonicalBytes: b)
                decoded += 1
                #expect(m.canonicalBytes == b)
                for role in [ReconciliationRole.initiator, .responder] {
                    var r = Reconciler(role: role, holdings: holdings, hashing: keys, salt: salt(UInt64(i)))
                    _ = r.start()
                    _ = try? r.receive(.hello(Hello(elementCount: 40, digest: Array(repeating: 0, count: 16), salt: salt(9))))
                    _ = try? r.receive(m)
                }
            } catch {
                _ = error as DecodingError
            }
        }
        #expect(decoded > 100)
    }
}

/// Whole sessions whose messages are corrupted in transit (a quarter of them get one bit flipped):
/// every session ends with a typed error or with no more messages to send; nothing traps or loops.
/// (A corrupted hello count can leave both sides waiting; the session layer's timeout handles that.)
@Suite struct SessionFuzzTests {
    @Test func corruptedSessionsFailCleanly() throws {
        var rng = SplitMix64(seed: 0xC0FFEE)
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        var outcomes = (completed: 0, decodeErrors: 0, protocolErrors: 0)
        for trial in 0..<200 {
            let base = randomHoldings(logs: 40 + Int(rng.next() % 150), changes: 3_000, seed: rng.next())
            var other = base
            for i in 0..<Int(rng.next() % 20) { other[i] = prefix(other[i].log, other[i].intervals[0].end + 2) }
            var i = Reconciler(role: .initiator, holdings: Holdings(base), hashing: keys, salt: salt(UInt64(trial)))
            var r = Reconciler(role: .responder, holdings: Holdings(other), hashing: keys, salt: salt(UInt64(trial) + 9))
            var toR = i.start().compactMap { if case let .send(m) = $0 { m } else { nil } }
            var toI = r.start().compactMap { if case let .send(m) = $0 { m } else { nil } }
            var steps = 0
            do {
                while (!toR.isEmpty || !toI.isEmpty) && steps < 40 {
                    steps += 1
                    var nextI: [ReconMessage] = [], nextR: [ReconMessage] = []
                    for (msgs, toResponder) in [(toR, true), (toI, false)] {
                        for m in msgs {
                            var wire = m.canonicalBytes
                            if rng.next() % 4 == 0, !wire.isEmpty {
                                wire[Int(rng.next() % UInt64(wire.count))] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
                            }
                            let back = try ReconMessage(canonicalBytes: wire)
                            let outs = toResponder ? try r.receive(back) : try i.receive(back)
                            let sends = outs.compactMap { o -> ReconMessage? in if case let .send(x) = o { x } else { nil } }
                            if toResponder { nextI += sends } else { nextR += sends }
                        }
                    }
                    toR = nextR
                    toI = nextI
                }
                outcomes.completed += 1
            } catch is DecodingError {
                outcomes.decodeErrors += 1
            } catch is ReconciliationError {
                outcomes.protocolErrors += 1
            }
            #expect(steps < 40, "session \(trial) did not terminate")
        }
        print("corrupted sessions: \(outcomes)")
        #expect(outcomes.completed + outcomes.decodeErrors + outcomes.protocolErrors == 200)
    }

    /// Same inputs, same bytes: the protocol output does not depend on hashing seeds or Set order.
    @Test func deterministic() throws {
        let a = randomHoldings(logs: 500, changes: 20_000, seed: 1)
        var b = a
        for i in stride(from: 0, to: 500, by: 17) { b[i] = prefix(b[i].log, b[i].intervals[0].end + 1) }
        let one = try runPair(Holdings(a), Holdings(b), seed: 5)
        let two = try runPair(Holdings(a), Holdings(b), seed: 5)
        #expect(one.messages == two.messages)
    }
}
