import FieldSim
import FieldSyncCore
import Testing

@Suite struct EngineTests {
    @Test func heapAndNaiveListPopInTheSameStableOrder() {
        var rng = SplitMix64(seed: 9)
        var heap = EventQueue()
        var naive = NaiveEventList()
        for i in 0..<2_000 {
            let e = Event(time: SimTime(rng.next() % 50), phase: UInt8(rng.next() % 2), kind: .sample, a: Int32(i))
            heap.push(e)
            naive.push(e)
        }
        var last: (SimTime, UInt8, Int32)? = nil
        while let x = heap.pop() {
            let y = naive.pop()
            #expect(x == y)
            if let l = last {
                // Equal (time, phase) keep insertion order.
                #expect((l.0, l.1) < (x.time, x.phase) || ((l.0, l.1) == (x.time, x.phase) && l.2 < x.a))
            }
            last = (x.time, x.phase, x.a)
        }
        #expect(naive.pop() == nil)
    }

    @Test func sameSeedGivesByteIdenticalOutputs() throws {
        let (a, ra) = try run("longnan", days: 1, seed: 42)
        let (b, rb) = try run("longnan", days: 1, seed: 42)
        #expect(a.traceHash == b.traceHash)
        #expect(a.eventsProcessed == b.eventsProcessed)
        #expect(ra.summary.render() == rb.summary.render())
        #expect(ra.seriesCSV == rb.seriesCSV)
        #expect(ra.charts.map(\.1) == rb.charts.map(\.1))
        let (c, _) = try run("longnan", days: 1, seed: 43)
        #expect(c.traceHash != a.traceHash)
    }

    @Test func histogramQuantilesAreWithinBucketError() {
        var h = Histogram()
        for v in 1...10_000 { h.record(Int64(v)) }
        #expect(abs(h.quantile(0.5) - 5_000) / 5_000 < 0.035)
        #expect(abs(h.quantile(0.99) - 9_900) / 9_900 < 0.035)
        #expect(h.max == 10_000)
        #expect(h.mean == 5_000.5)
    }
}
