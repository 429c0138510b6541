import Testing
@testable import FieldSyncCore

@Suite struct HLCTests {
    @Test func monotonicUnderBackwardJumps() throws {
        var c = HybridLogicalClock()
        var last = HLCTimestamp.zero
        for wall: UInt64 in [1_000, 2_000, 500, 500, 500, 2_000, 1, 3_000, 2_999] {
            let t = try c.now(wall: wall)
            #expect(t > last)
            last = t
        }
        #expect(last == HLCTimestamp(milliseconds: 3_000, counter: 1))
    }

    @Test func counterOverflowBorrowsNextMillisecond() throws {
        var c = HybridLogicalClock(last: HLCTimestamp(milliseconds: 10, counter: .max))
        let t = try c.now(wall: 5)
        #expect(t == HLCTimestamp(milliseconds: 11, counter: 0))
    }

    @Test func receiveAdvancesPastRemote() throws {
        var c = HybridLogicalClock(maxDriftMilliseconds: 1_000)
        let remote = HLCTimestamp(milliseconds: 10_500, counter: 7)
        let t = try c.receive(remote: remote, wall: 10_000)
        #expect(t > remote)
        #expect(t == HLCTimestamp(milliseconds: 10_500, counter: 8))
        #expect(try c.now(wall: 10_001) > t)
    }

    @Test func remoteBeyondDriftIsReportedNotAdopted() throws {
        var c = HybridLogicalClock(maxDriftMilliseconds: 60_000)
        _ = try c.now(wall: 1_000_000)
        let before = c
        let far = HLCTimestamp(milliseconds: 1_000_000 + 3_600_000, counter: 0)  // an hour ahead
        #expect(throws: HLCError.remoteTooFarAhead(remote: far, wallMilliseconds: 1_000_100, maxDriftMilliseconds: 60_000)) {
            try c.receive(remote: far, wall: 1_000_100)
        }
        #expect(c == before, "the clock must not move when it refuses a reading")
        // Exactly at the limit is accepted.
        let edge = HLCTimestamp(milliseconds: 1_000_100 + 60_000, counter: 0)
        #expect(try c.receive(remote: edge, wall: 1_000_100) > edge)
    }

    @Test func wallClockOutOfRange() {
        var c = HybridLogicalClock()
        #expect(throws: HLCError.wallClockOutOfRange(1 << 48)) { try c.now(wall: 1 << 48) }
    }

    /// Three replicas with skewed clocks exchanging messages: every event's timestamp exceeds the
    /// timestamps of the events it has seen (causality), whatever the skew.
    @Test func orderingAcrossReplicasWithSkew() throws {
        var rng = SplitMix64(seed: 99)
        let skew: [Int64] = [0, -3_600_000, 7_200_000]  // hours wrong, within a generous drift limit
        var clocks = (0..<3).map { _ in HybridLogicalClock(maxDriftMilliseconds: 12 * 3_600_000) }
        var seen = [HLCTimestamp](repeating: .zero, count: 3)  // greatest timestamp each replica has seen
        var real: Int64 = 10_000_000_000
        for _ in 0..<2_000 {
            real += Int64.random(in: 0...50, using: &rng)
            let i = Int.random(in: 0...2, using: &rng)
            let wall = UInt64(real + skew[i])
            if Bool.random(using: &rng) {
                let t = try clocks[i].now(wall: wall)
                #expect(t > seen[i])
                seen[i] = t
            } else {
                let j = Int.random(in: 0...2, using: &rng)
                let t = try clocks[i].receive(remote: seen[j], wall: wall)
                #expect(t > seen[i] && t > seen[j])
                seen[i] = t
            }
        }
    }
}
