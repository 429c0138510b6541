import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct PartnerInferenceTests {
    static let hasher = SipHashElementHasher(key: Array(100..<116))

    /// k logs at different heights (2k differing elements), symbol by symbol, with and without inference.
    static func symbolsNeeded(k: Int, common: Int, infer: Bool, seed: UInt64) throws -> (Int, RatelessDecoder) {
        var rng = SplitMix64(seed: seed)
        var a: [HeadElement] = [], b: [HeadElement] = []
        for i in 0..<(common + k) {
            let tag = rng.next()
            let p = UInt32(truncatingIfNeeded: rng.next())
            let h = UInt32(1 + rng.next() % 1000)
            a.append(HeadElement(tag: tag, position: h, hashPrefix: p))
            b.append(i < k ? HeadElement(tag: tag, position: h + 5, hashPrefix: p ^ 1) : HeadElement(tag: tag, position: h, hashPrefix: p))
        }
        // The peer (encoder) is ahead: b holds the newer elements.
        var enc = RatelessEncoder(elements: b, hasher: hasher)
        var dec = RatelessDecoder(localElements: a, hasher: hasher)
        dec.infersPartners = infer
        while !dec.isDecoded { try dec.add(enc.nextSymbols(1)) }
        #expect(dec.remoteOnly.count == k && dec.localOnly.count == k)
        return (enc.produced, dec)
    }

    @Test(arguments: [10, 60, 300]) func inferenceSavesSymbols(k: Int) throws {
        var with = 0, without = 0
        let trials = k >= 300 ? 3 : 10
        for t in 0..<trials {
            with += try Self.symbolsNeeded(k: k, common: 200, infer: true, seed: UInt64(t)).0
            without += try Self.symbolsNeeded(k: k, common: 200, infer: false, seed: UInt64(t)).0
        }
        print("k=\(k): \(Double(with) / Double(trials)) symbols with inference, \(Double(without) / Double(trials)) without")
        #expect(with < without)
    }

    /// Wrong inferences (the peer also holds our element) are cancelled and decoding stays exact.
    @Test func wrongInferenceIsCorrected() throws {
        var rng = SplitMix64(seed: 77)
        for _ in 0..<200 {
            let tag = rng.next()
            let mine = HeadElement(tag: tag, position: 5, hashPrefix: 1)
            let extra = [HeadElement(tag: tag, position: 12, hashPrefix: 2), HeadElement(tag: tag, position: 0x8000_0009, hashPrefix: 0)]
            let common = (0..<Int(rng.next() % 50)).map { _ in HeadElement(high: rng.next(), low: rng.next()) }
            var enc = RatelessEncoder(elements: common + [mine] + extra, hasher: Self.hasher)
            var dec = RatelessDecoder(localElements: common + [mine], hasher: Self.hasher)
            while !dec.isDecoded { try dec.add(enc.nextSymbols(1)) }
            #expect(dec.remoteOnly == extra.sorted())
            #expect(dec.localOnly.isEmpty)
        }
    }
}
