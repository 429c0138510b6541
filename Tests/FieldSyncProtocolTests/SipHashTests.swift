import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct SipHashTests {
    /// Appendix A of the SipHash paper: key 00..0f, message 00..0e.
    @Test func paperVector() {
        let sip = SipHash24(key: Array(0..<16))
        #expect(sip.hash(Array(0..<15)) == 0xa129_ca61_49be_45e5)
    }

    /// First entries of the reference `vectors.h` (key 00..0f, messages 00..(n-1)), read little-endian.
    @Test func referenceVectors() {
        let sip = SipHash24(key: Array(0..<16))
        #expect(sip.hash([]) == 0x726f_db47_dd0e_0e31)
        #expect(sip.hash([0]) == 0x74f8_39c5_93dc_67fd)
    }

    @Test func wordsFormMatchesBytes() {
        let sip = SipHash24(k0: 0x0123_4567_89ab_cdef, k1: 0xfedc_ba98_7654_3210)
        var rng = SplitMix64(seed: 7)
        for _ in 0..<100 {
            let a = rng.next(), b = rng.next()
            let e = HeadElement(high: a, low: b)
            #expect(sip.hash(bigEndianWords: a, b, prefix: 0x02) == sip.hash([0x02] + e.bytes))
        }
    }

    @Test func allLengthsDiffer() {
        let sip = SipHash24(key: Array(0..<16))
        let hashes = (0..<64).map { sip.hash(Array(0..<UInt8($0))) }
        #expect(Set(hashes).count == 64)
    }
}
