import FieldSyncCore

extension MemoryStore {
    /// A record's entry in a store: the materialized record (nil once removed: no held change touches it any
    /// more) and the hashes of the changes that touched it, in the order they came (`history(of:)`). Immutable,
    /// so that stores sharing a `RecordInterner` share one entry for equal contents: a store's table then holds
    /// one reference per record.
    final class RecordEntry {
        let id: RecordID
        let box: RecordBox?
        let touched: [[UInt8]]

        init(id: RecordID, box: RecordBox?, touched: [[UInt8]]) {
            self.id = id
            self.box = box
            self.touched = touched
        }
    }

    /// A store's records by id: an open-addressing table of entry references, probed linearly from a slot
    /// the id's hash picks, each entry carrying its id. 8 bytes a slot, at most three-quarters full, grown by
    /// half: about 13 bytes a record on average, where a `Dictionary` keyed by the 16-byte id with a 16-byte
    /// value took about 59 (32 bytes a bucket, at most three-quarters full, grown by doubling), in every
    /// replica of a simulator (docs/simulator.md, "Issue 14: the records table (session 21)").
    /// Records are never taken out (a removed record keeps its entry for its history), so the table needs no
    /// deletion marks. Iteration goes in slot order: no particular order, the same for the same inserts.
    struct RecordTable {
        private var slots: ContiguousArray<RecordEntry?> = []
        /// Entries held.
        private(set) var count = 0

        /// The smallest table allocated.
        static let minimumSlots = 8

        /// The entry of `id`, nil if none.
        subscript(id: RecordID) -> RecordEntry? {
            guard !slots.isEmpty else { return nil }
            var i = Self.start(id, slots.count)
            while let e = slots[i] {
                if e.id == id { return e }
                i = i + 1 == slots.count ? 0 : i + 1
            }
            return nil
        }

        /// Adds `entry`, or replaces the entry with its id.
        mutating func set(_ entry: RecordEntry) {
            if (count + 1) * 4 > slots.count * 3 { grow() }
            var i = Self.start(entry.id, slots.count)
            while let e = slots[i] {
                if e.id == entry.id {
                    slots[i] = entry
                    return
                }
                i = i + 1 == slots.count ? 0 : i + 1
            }
            slots[i] = entry
            count += 1
        }

        /// Calls `body` with every entry, in slot order.
        func forEach(_ body: (RecordEntry) throws -> Void) rethrows {
            for case let e? in slots { try body(e) }
        }

        /// Slots allocated (tests).
        var capacity: Int { slots.count }

        /// Rebuilds the table half as large again (at least `minimumSlots`).
        private mutating func grow() {
            let old = slots
            let n = max(Self.minimumSlots, old.count + old.count / 2)
            slots = ContiguousArray(repeating: nil, count: n)
            for case let e? in old {
                var i = Self.start(e.id, n)
                while slots[i] != nil { i = i + 1 == n ? 0 : i + 1 }
                slots[i] = e
            }
        }

        /// The first slot to look at for `id` among `n`: a fixed mix of its bits (no per-process seed, so a
        /// run's iteration order does not depend on one), scaled to `n` by a multiply.
        private static func start(_ id: RecordID, _ n: Int) -> Int {
            var h = id.raw.high ^ (id.raw.low &* 0x9E37_79B9_7F4A_7C15)
            h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
            h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
            h ^= h >> 31
            return Int(h.multipliedFullWidth(by: UInt64(n)).high)
        }
    }
}
