import Testing
@testable import FieldSyncCore
@testable import FieldSyncProtocol

/// The in-memory store's per-log and per-record entries, which a simulator holds in every replica
/// (docs/simulator.md, "Issue 14: memory (session 16)"). What they hold is covered by
/// `StoreConformanceTests` (both stores): sparse and far seqs, opened marks, arrivals, histories.
@Suite struct MemoryStoreLayoutTests {
    /// A log's entry is at most 32 bytes inline (it was 48 with three slot arrays, one each for the
    /// boxes, the opened marks and the arrivals), a slot 16 bytes, and a record's entry (the record and
    /// the changes that touched it, in one table) 16 bytes.
    @Test func entriesAreCompact() {
        #expect(MemoryLayout<MemoryStore.LogChanges>.stride <= 32)
        #expect(MemoryLayout<MemoryStore.LogChanges.Slot>.stride == 16)
        #expect(MemoryLayout<MemoryStore.RecordEntry>.stride == 16)
    }

    /// A slot's opened mark and arrival share one word without touching each other; an arrival too
    /// large for 63 bits (292 million years after 1970) is kept as the largest one the slot can say.
    @Test func slotKeepsOpenedMarkAndArrivalApart() {
        var s = MemoryStore.LogChanges.Slot(nil)
        #expect(!s.opened && s.arrived == nil)
        s.arrived = 1_733_400_000_000
        s.opened = true
        #expect(s.opened && s.arrived == 1_733_400_000_000)
        s.arrived = nil
        #expect(s.opened && s.arrived == nil)
        s.arrived = UInt64.max
        #expect(s.opened && s.arrived == (1 << 63) - 2)
        s.opened = false
        #expect(!s.opened && s.arrived == (1 << 63) - 2)
        s.arrived = 0
        #expect(!s.opened && s.arrived == 0)
    }
}
