import FieldSyncCore
import Testing

/// The array helpers for what a simulator keeps for a whole run (Sources/FieldSyncCore/SpareRoom.swift).
@Suite struct SpareRoomTests {
    /// An array grown an element at a time by `appendGrowingByAnEighth` holds the same elements as one grown by
    /// `append`, in at most an eighth more room (at least 16 elements, and the allocator's rounding) at every count,
    /// where `append` doubles (at 2^k + 1 elements it holds nearly twice the room).
    @Test func appendingGrowsTheRoomByAnEighth() {
        var eighth: [Int64] = [], doubled: [Int64] = []
        var worstDoubled = 1.0
        for i in 0..<20_000 {
            eighth.appendGrowingByAnEighth(Int64(i) * 3)
            doubled.append(Int64(i) * 3)
            #expect(Self.beyondAnEighth(eighth) <= 32, "at \(eighth.count): \(eighth.capacity)")
            worstDoubled = max(worstDoubled, Double(doubled.capacity) / Double(doubled.count))
        }
        #expect(eighth == doubled)
        #expect(worstDoubled > 1.9, "the plain append doubles")
    }

    /// Bytes of `a`'s room beyond an eighth more than its count (and 16 elements): the allocator's rounding.
    static func beyondAnEighth<T>(_ a: [T]) -> Int { (a.capacity - a.count - max(a.count / 8, 16)) * MemoryLayout<T>.stride }

    /// Appending a run of elements grows to what is needed and an eighth more.
    @Test func appendingContentsGrowsTheRoomByAnEighth() {
        var a: [UInt16] = []
        var expected: [UInt16] = []
        for n in [1, 7, 300, 1, 5_000, 2, 40_000] {
            a.appendGrowingByAnEighth(contentsOf: repeatElement(UInt16(n % 65_536), count: n))
            expected += repeatElement(UInt16(n % 65_536), count: n)
            #expect(Self.beyondAnEighth(a) <= 32, "at \(a.count): \(a.capacity)")
        }
        #expect(a == expected)
    }
}
