import FieldSyncCore
@testable import FieldSyncProtocol
import Testing

@Suite struct HeadElementTests {
    @Test func layout() {
        let e = HeadElement(tag: 0x0102_0304_0506_0708, position: 42, hashPrefix: 0xA0B0_C0D0)
        #expect(Hex.encode(e.bytes) == "01020304050607080000002aa0b0c0d0")
        #expect(e.tag == 0x0102_0304_0506_0708 && e.position == 42 && e.hashPrefix == 0xA0B0_C0D0)
    }

    @Test func intervalsRoundTripThroughElements() {
        let cases: [[IntervalSummary]] = [
            [IntervalSummary(start: 1, end: 10, endHashPrefix: 7)],
            [IntervalSummary(start: 5, end: 10, endHashPrefix: 7)],
            [IntervalSummary(start: 1, end: 3, endHashPrefix: 1), IntervalSummary(start: 9, end: 9, endHashPrefix: 2),
             IntervalSummary(start: 20, end: 31, endHashPrefix: 3)],
            [IntervalSummary(start: 2, end: 2, endHashPrefix: 0), IntervalSummary(start: 4, end: maximumLogHeight, endHashPrefix: 9)],
        ]
        for c in cases {
            let els = HeadElement.elements(tag: 77, intervals: c)
            #expect(els.count == c.count + c.filter { $0.start > 1 }.count)
            #expect(HeadElement.intervals(from: els.shuffled()) == c)
        }
    }

    /// The session's tags of every log at once (`SipHashElementHasher.tags(of:)`, one reused buffer) are
    /// each log's `tag(_:)`, which the spec vectors pin (`VectorTests`), for paths of every length.
    @Test func tagsOfEveryLogAreEachLogsTag() throws {
        let hasher = SipHashElementHasher(key: (0..<16).map { UInt8($0) })
        var logs: [LogHoldings] = []
        for i in 0..<40 {
            let path = i % 2 == 0 ? "longnan" : "longnan/wudu/station-\(i)/village-" + String(repeating: "x", count: i)
            let log = LogID(author: DeviceID(ID128(high: UInt64(i % 3), low: UInt64(i))), scope: try Scope(path))
            logs.append(LogHoldings(log: log, height: UInt32(i + 1), headHash: [UInt8](repeating: UInt8(i), count: 32)))
        }
        #expect(hasher.tags(of: logs) == logs.map { hasher.tag($0.log) })
        #expect(hasher.tags(of: logs) == logs.map { hasher.tag(encodedLogID: $0.log.canonicalBytes) })
        #expect(hasher.tags(of: []) == [])
    }

    @Test func invalidElementSetsAreRejected() {
        let t: UInt64 = 5
        // Two prefix ends, overlapping intervals, a marker at 1, a marker with a hash, adjacent intervals.
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 3, hashPrefix: 0), HeadElement(tag: t, position: 5, hashPrefix: 0)]) == nil)
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 5, hashPrefix: 0),
                                             HeadElement(tag: t, position: 0x8000_0003, hashPrefix: 0),
                                             HeadElement(tag: t, position: 9, hashPrefix: 0)]) == nil)
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 0x8000_0001, hashPrefix: 0), HeadElement(tag: t, position: 5, hashPrefix: 0)]) == nil)
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 0x8000_0003, hashPrefix: 1), HeadElement(tag: t, position: 5, hashPrefix: 0)]) == nil)
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 4, hashPrefix: 0),
                                             HeadElement(tag: t, position: 0x8000_0005, hashPrefix: 0),
                                             HeadElement(tag: t, position: 9, hashPrefix: 0)]) == nil)
        #expect(HeadElement.intervals(from: [HeadElement(tag: t, position: 0, hashPrefix: 0)]) == nil)
    }

    @Test func logIDCodecAndOrder() throws {
        let a = makeLog(1), b = makeLog(2)
        #expect(try LogID(canonicalBytes: a.canonicalBytes) == a)
        #expect((a < b) != (b < a))
    }

    @Test func differenceRanges() {
        let d = LogDifference(log: makeLog(0),
                              local: [IntervalSummary(start: 1, end: 10, endHashPrefix: 1)],
                              remote: [IntervalSummary(start: 1, end: 4, endHashPrefix: 2), IntervalSummary(start: 7, end: 12, endHashPrefix: 3)])
        #expect(d.missingAtRemote == [5...6])
        #expect(d.missingLocally == [11...12])
        #expect(d.forkedHeights == [])
    }
}
