/// A record's fields of one CRDT kind (registers, lattices, sets or logs), by field id: a small array
/// sorted by field id.
///
/// A record has a handful of fields, so a lookup walks the array; a Swift `Dictionary` per kind cost
/// about twice the bytes (its table is at most three-quarters full and has a larger header), and a
/// simulator holds a record per replica (docs/simulator.md, "Issue 14: memory (session 16)"). Reads
/// behave as a dictionary's: `table[field]` is the value or nil, and iteration, `keys` and `values` go
/// in field-id order (a dictionary's went in no particular order).
public struct FieldTable<Value: Equatable & Sendable>: Equatable, Sendable, Sequence {
    /// One field. The value comes first so that the id fills the value's tail padding.
    fileprivate struct Slot: Equatable, Sendable {
        var value: Value
        let field: FieldID
    }

    fileprivate var slots: ContiguousArray<Slot> = []

    /// An empty table.
    public init() {}

    /// The number of fields.
    public var count: Int { slots.count }
    /// Whether the table has no field.
    public var isEmpty: Bool { slots.isEmpty }
    /// The field ids, ascending.
    public var keys: [FieldID] { slots.map(\.field) }
    /// The values, in field-id order.
    public var values: [Value] { slots.map(\.value) }

    /// Drops the spare room inserting one field at a time left in the table's array (an array grown by
    /// inserts doubles): for a record kept for long, as a simulator's interner keeps one copy of each
    /// version for thousands of replicas. The table is unchanged.
    public mutating func shrinkToFit() { slots = slots.withoutSpareRoom() }

    /// Bytes of the table's array (its capacity; tests).
    var arrayBytes: Int { slots.capacity * Self.slotStride }
    /// Bytes of one field in the array (tests).
    static var slotStride: Int { MemoryLayout<Slot>.stride }

    /// The value of `field`, nil if the table has none.
    public subscript(field: FieldID) -> Value? {
        guard let i = slots.firstIndex(where: { $0.field == field }) else { return nil }
        return slots[i].value
    }

    /// Changes the value of `field` in place with `update`, or adds `new()` if the table has none.
    mutating func upsert(_ field: FieldID, new: () -> Value, update: (inout Value) -> Void) {
        var i = 0
        while i < slots.count, slots[i].field < field { i += 1 }
        if i < slots.count, slots[i].field == field {
            update(&slots[i].value)
        } else {
            slots.insert(Slot(value: new(), field: field), at: i)
        }
    }

    /// Changes the value of `field` in place, adding `empty` first if the table has none (a dictionary's
    /// `table[field, default: empty]` mutated).
    mutating func modify(_ field: FieldID, default empty: Value, _ body: (inout Value) -> Void) {
        upsert(field, new: {
            var v = empty
            body(&v)
            return v
        }, update: body)
    }

    /// Adds `value` after every field held (decoding reads fields in strictly increasing order).
    mutating func append(_ field: FieldID, _ value: Value) {
        precondition(slots.last.map { $0.field < field } ?? true, "fields are appended in increasing order")
        slots.append(Slot(value: value, field: field))
    }

    /// Iterates `(key: field, value:)` pairs in field-id order.
    public struct Iterator: IteratorProtocol {
        private var base: ContiguousArray<Slot>.Iterator
        fileprivate init(_ base: ContiguousArray<Slot>.Iterator) { self.base = base }
        public mutating func next() -> (key: FieldID, value: Value)? {
            guard let s = base.next() else { return nil }
            return (s.field, s.value)
        }
    }

    public func makeIterator() -> Iterator { Iterator(slots.makeIterator()) }
    public var underestimatedCount: Int { slots.count }
}
