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

    /// A store's records by id (`ReferenceTable`): one reference per record, about 13 bytes a record on average,
    /// where a `Dictionary` keyed by the 16-byte id with a 16-byte value took about 59 (32 bytes a bucket, at
    /// most three-quarters full, grown by doubling), in every replica of a simulator (docs/simulator.md,
    /// "Issue 14: the records table (session 21)"). Records are never taken out (a removed record keeps its
    /// entry for its history).
    typealias RecordTable = ReferenceTable<RecordEntry>
}

extension MemoryStore.RecordEntry: ReferenceTableEntry {
    var tableKey: RecordID { id }
    static func tableHash(_ key: RecordID, into hasher: inout Hasher) { hasher.combine(key) }
}

extension MemoryStore.ChangeBox: ReferenceTableEntry {
    var tableKey: [UInt8] { value.hash }
    // As `ChangeHashKey`: hashes are uniformly random, so their first 8 bytes are enough.
    static func tableHash(_ key: [UInt8], into hasher: inout Hasher) {
        var head: UInt64 = 0
        for b in key.prefix(8) { head = head << 8 | UInt64(b) }
        hasher.combine(head)
    }
}

/// An entry of a `ReferenceTable`: a reference that carries its own key.
protocol ReferenceTableEntry: AnyObject {
    associatedtype Key: Equatable
    var tableKey: Key { get }
    /// Feeds `key` to `hasher` (equal keys alike).
    static func tableHash(_ key: Key, into hasher: inout Hasher)
}

/// A table of references by the key each carries, for tables that only grow and that a simulator keeps in
/// every replica or for every change: open addressing, probed linearly from a slot the key's hash picks, 8
/// bytes a slot, at most three-quarters full, grown by half (about 13 bytes an entry on average, against a
/// `Dictionary`'s 8 bytes a bucket for each of key and value, at most three-quarters full and grown by
/// doubling). Nothing is taken out, so it needs no deletion marks. Keys are hashed with Swift's `Hasher`, as a
/// `Dictionary` hashes them: seeded per process, so that a peer cannot choose keys that pile up on one slot.
/// Iteration goes in slot order: no particular order.
struct ReferenceTable<Entry: ReferenceTableEntry> {
    private var slots: ContiguousArray<Entry?> = []
    /// Entries held.
    private(set) var count = 0

    /// The smallest table allocated.
    static var minimumSlots: Int { 8 }

    /// The entry with key `key`, nil if none.
    subscript(key: Entry.Key) -> Entry? {
        guard !slots.isEmpty else { return nil }
        var i = Self.start(key, slots.count)
        while let e = slots[i] {
            if e.tableKey == key { return e }
            i = i + 1 == slots.count ? 0 : i + 1
        }
        return nil
    }

    /// Adds `entry`, or replaces the entry with its key.
    mutating func set(_ entry: Entry) {
        if (count + 1) * 4 > slots.count * 3 { grow() }
        let key = entry.tableKey
        var i = Self.start(key, slots.count)
        while let e = slots[i] {
            if e.tableKey == key {
                slots[i] = entry
                return
            }
            i = i + 1 == slots.count ? 0 : i + 1
        }
        slots[i] = entry
        count += 1
    }

    /// Calls `body` with every entry, in slot order.
    func forEach(_ body: (Entry) throws -> Void) rethrows {
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
            var i = Self.start(e.tableKey, n)
            while slots[i] != nil { i = i + 1 == n ? 0 : i + 1 }
            slots[i] = e
        }
    }

    /// The first slot to look at for `key` among `n`: its hash scaled to `n` by a multiply.
    private static func start(_ key: Entry.Key, _ n: Int) -> Int {
        var hasher = Hasher()
        Entry.tableHash(key, into: &hasher)
        return Int(UInt64(UInt(bitPattern: hasher.finalize())).multipliedFullWidth(by: UInt64(n)).high)
    }
}
