import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct RatelessIBLTTests {
    static let hasher = SipHashElementHasher(key: Array(100..<116))

    static func randomElements(_ n: Int, _ rng: inout SplitMix64) -> [HeadElement] {
        (0..<n).map { _ in HeadElement(high: rng.next(), low: rng.next()) }
    }

    /// Streams symbols of `a` to a decoder holding `b`, `step` at a time; returns the symbols used.
    static func reconcile(_ a: [HeadElement], _ b: [HeadElement], step: (Int) -> Int) throws -> (Int, RatelessDecoder) {
        var enc = RatelessEncoder(elements: a, hasher: hasher)
        var dec = RatelessDecoder(localElements: b, hasher: hasher)
        while !dec.isDecoded {
            try dec.add(enc.nextSymbols(step(enc.produced)))
            precondition(enc.produced < 100_000)
        }
        return (enc.produced, dec)
    }

    @Test func mappingStartsAtZeroAndIsIncreasing() {
        var m = SymbolIndexMapping(seed: 0x1234_5678_9abc_def0)
        #expect(m.index == 0)
        var last: UInt64 = 0
        for _ in 0..<50 {
            let next = m.advance()
            #expect(next > last)
            last = next
        }
    }

    /// Empirical density of the mapping: index i is hit with probability close to 1/(1 + i/2).
    @Test func mappingDensity() {
        var hits = [Int](repeating: 0, count: 64)
        var rng = SplitMix64(seed: 3)
        let trials = 20_000
        for _ in 0..<trials {
            var m = SymbolIndexMapping(seed: rng.next())
            while m.index < 64 {
                hits[Int(m.index)] += 1
                _ = m.advance()
            }
        }
        for i in [1, 2, 10, 40, 63] {
            let expected = 1 / (1 + Double(i) / 2)
            let observed = Double(hits[i]) / Double(trials)
            #expect(abs(observed - expected) < 0.15 * expected, "index \(i): \(observed) vs \(expected)")
        }
        #expect(hits[0] == trials)
    }

    /// Every difference size from 0 to 1000 decodes exactly (batches growing by 10%).
    @Test func decodesEveryDifferenceUpTo1000() throws {
        var rng = SplitMix64(seed: 11)
        let common = Self.randomElements(40, &rng)
        for d in 0...1000 {
            let diff = Self.randomElements(d, &rng)
            let split = Int(rng.next() % UInt64(d + 1))
            let a = common + diff[..<split], b = common + diff[split...]
            let (_, dec) = try Self.reconcile(Array(a), Array(b)) { max(4, $0 / 10) }
            #expect(dec.remoteOnly == Array(diff[..<split]).sorted(), "d = \(d)")
            #expect(dec.localOnly == Array(diff[split...]).sorted(), "d = \(d)")
        }
    }

    /// Symbol by symbol, the mean overhead matches the paper: ≤ 1.8 for small d, ~1.35–1.5 for large d.
    @Test(arguments: [(2, 200), (10, 100), (20, 60), (100, 20), (300, 8), (1000, 4)])
    func overheadMatchesPaper(d: Int, trials: Int) throws {
        var rng = SplitMix64(seed: UInt64(d))
        var total = 0
        for _ in 0..<trials {
            let diff = Self.randomElements(d, &rng)
            let (m, dec) = try Self.reconcile(diff, []) { _ in 1 }
            #expect(dec.remoteOnly.count == d)
            total += m
        }
        let overhead = Double(total) / Double(d * trials)
        if d <= 20 { #expect(overhead <= 1.85 && overhead >= 1.0, "d=\(d): \(overhead)") }
        else { #expect(overhead >= 1.25 && overhead <= 1.6, "d=\(d): \(overhead)") }
    }

    @Test func randomSetsProperty() throws {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<60 {
            let shared = Self.randomElements(Int(rng.next() % 300), &rng)
            let onlyA = Self.randomElements(Int(rng.next() % 50), &rng)
            let onlyB = Self.randomElements(Int(rng.next() % 50), &rng)
            let (_, dec) = try Self.reconcile(shared + onlyA, (onlyB + shared).shuffled(using: &rng)) { max(1, $0 / 2) }
            #expect(dec.remoteOnly == onlyA.sorted())
            #expect(dec.localOnly == onlyB.sorted())
        }
    }

    /// Crafted symbols (pure-looking garbage) are rejected with a typed error or simply never decode.
    @Test func craftedSymbolsDoNotCrash() {
        var rng = SplitMix64(seed: 5)
        let mine = Self.randomElements(30, &rng)
        for _ in 0..<200 {
            var dec = RatelessDecoder(localElements: mine, hasher: Self.hasher)
            let symbols = (0..<Int(rng.next() % 40)).map { _ -> CodedSymbol in
                let e = rng.next() % 2 == 0 ? mine[Int(rng.next() % 30)] : HeadElement(high: rng.next(), low: rng.next())
                let sign: Int64 = rng.next() % 2 == 0 ? 1 : -1
                return CodedSymbol(sum: e, checksum: Self.hasher.checksum(e), count: sign)
            }
            do { try dec.add(symbols) } catch { _ = error as RatelessDecodingFailure }
        }
    }
}
