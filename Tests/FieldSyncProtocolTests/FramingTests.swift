import FieldSyncCore
import Testing
@testable import FieldSyncProtocol

/// The frame decoder gives the same frames whether bytes come one at a time, all at once or in random
/// chunks (the NIO ByteToMessageDecoderVerifier idea).
@Suite struct FramingTests {
    static func frames(seed: UInt64) -> [[UInt8]] {
        var g = SplitMix64(seed: seed)
        return (0..<40).map { i in
            let n = i == 0 ? FrameDecoder.maxFrame : Int.random(in: 1...700, using: &g)
            return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
        }
    }

    func decode(_ stream: [UInt8], chunks: [Int]) throws -> [[UInt8]] {
        var d = FrameDecoder()
        var out: [[UInt8]] = []
        var i = 0
        var k = 0
        while i < stream.count {
            let n = min(chunks[k % chunks.count], stream.count - i)
            d.append(stream[i..<(i + n)])
            while let f = try d.next() { out.append(f) }
            i += n
            k += 1
        }
        #expect(d.pending == 0)
        return out
    }

    @Test func dripFeedAllAtOnceAndRandomChunks() throws {
        let frames = Self.frames(seed: 3)
        let stream = frames.flatMap(FrameDecoder.frame)
        #expect(try decode(stream, chunks: [1]) == frames)
        #expect(try decode(stream, chunks: [stream.count]) == frames)
        var g = SplitMix64(seed: 9)
        #expect(try decode(stream, chunks: (0..<50).map { _ in Int.random(in: 1...3000, using: &g) }) == frames)
    }

    @Test func zeroLengthFrameIsRefused() {
        var d = FrameDecoder()
        d.append([0, 0, 1, 2])
        #expect(throws: FrameError.empty) { try d.next() }
    }

    @Test func memoryIsBoundedByOneFrame() throws {
        var d = FrameDecoder()
        d.append([0xFF, 0xFF])  // claims 65,535 bytes
        d.append([UInt8](repeating: 1, count: 1000))
        #expect(try d.next() == nil)
        #expect(d.pending == 1002)
    }

    /// `holdsPartialFrame`: bytes of a frame not yet whole are held (one byte of a prefix, a prefix, part
    /// of a body), not whole frames left unread.
    @Test func holdsPartialFrameOnlyForAFrameNotYetWhole() throws {
        var d = FrameDecoder()
        #expect(!d.holdsPartialFrame)
        d.append([0])
        #expect(d.holdsPartialFrame)
        d.append([3, 1, 2])
        #expect(d.holdsPartialFrame)
        d.append([3] + FrameDecoder.frame([9]))
        #expect(!d.holdsPartialFrame, "two whole frames held, unread")
        #expect(try d.next() == [1, 2, 3])
        #expect(!d.holdsPartialFrame)
        #expect(try d.next() == [9])
        d.append([0x7F])
        #expect(d.holdsPartialFrame)
    }
}
