import Testing
@testable import FieldSyncCore

#if canImport(Glibc)
import Glibc
#endif

/// A record's field tables: compact, and read as the dictionaries they replaced (docs/simulator.md,
/// "Issue 14: memory (session 16)"). The CRDT laws and encodings are covered by `CRDTLawTests` and
/// `EncodingTests`, which run over the same type unchanged.
@Suite struct RecordMemoryTests {
    static let me = DeviceID(hex: "000102030405060708090a0b0c0d0e0f")!
    static let other = DeviceID(hex: "ff0102030405060708090a0b0c0d0e0f")!
    static let scope = try! Scope("longnan/wudu/station-017")

    /// An incident as the simulator's stores hold one after its life: created, dispatched with a unit,
    /// a note, feedback and its deadline, closed.
    static func servedIncident() throws -> Record {
        var r = Record(id: RecordID(ID128(high: 1, low: 2)), kind: .incident, scope: scope)
        try r.apply(Incident.create(
            id: r.id, scope: scope, author: me, hlc: HLCTimestamp(raw: 1 << 16),
            category: .traffic, priority: .urgent, location: Location(latitude: 33.39, longitude: 104.93),
            summary: "Truck off the road", reportedAt: 1_700_000_000_000, reporter: "caller"))
        var inc = try Incident(r)
        try r.apply(r.edit(author: other, hlc: HLCTimestamp(raw: 2 << 16), [
            inc.advance(to: .dispatched), .add(field: Incident.Field.assignedUnits, element: Token("car-17")),
            .set(field: Incident.Field.feedbackDeadline, value: .time(1_700_000_600_000)),
        ]))
        try r.apply(r.edit(author: other, hlc: HLCTimestamp(raw: 3 << 16), [.append(field: Incident.Field.notes, text: "on my way")]))
        inc = try Incident(r)
        try r.apply(r.edit(author: me, hlc: HLCTimestamp(raw: 4 << 16), [
            .set(field: Incident.Field.feedback, value: .string("towed")), inc.advance(to: .closed),
        ]))
        return r
    }

    /// The heap block behind a collection that is one reference to its storage (a `Dictionary`, a
    /// `ContiguousArray`, a `FieldTable`), 0 for an empty one (which points at a shared static buffer).
    static func heapBytes<T>(_ table: T, isEmpty: Bool) -> Int {
        precondition(MemoryLayout<T>.size == MemoryLayout<UnsafeRawPointer>.size, "\(T.self) is not one reference")
        guard !isEmpty, let usableSize else { return 0 }
        return usableSize(unsafeBitCast(table, to: UnsafeMutableRawPointer.self))
    }

    /// glibc's `malloc_usable_size` (declared in `malloc.h`, which the `Glibc` module does not import).
    static let usableSize: (@convention(c) (UnsafeMutableRawPointer?) -> Int)? = {
        #if canImport(Glibc)
        guard let f = dlsym(dlopen(nil, RTLD_NOW), "malloc_usable_size") else { return nil }
        return unsafeBitCast(f, to: (@convention(c) (UnsafeMutableRawPointer?) -> Int).self)
        #else
        return nil
        #endif
    }()

    static func fieldTableBytes(_ r: Record) -> Int {
        heapBytes(r.registers, isEmpty: r.registers.isEmpty) + heapBytes(r.lattices, isEmpty: r.lattices.isEmpty)
            + heapBytes(r.sets, isEmpty: r.sets.isEmpty) + heapBytes(r.logs, isEmpty: r.logs.isEmpty)
    }

    /// A served incident's four field tables take at most 1,000 bytes of heap, built by edits or by a
    /// merge of replicas: 800 (four dictionaries took 1,680, measured in session 16 with this code). Their contents
    /// (the CRDT states, strings) are not counted: they are the same either way.
    @Test(.enabled(if: canMeasureHeap)) func fieldTablesAreCompact() throws {
        let r = try Self.servedIncident()
        #expect(r.registers.count == 8 && r.lattices.count == 1 && r.sets.count == 1 && r.logs.count == 1)
        let built = Self.fieldTableBytes(r)
        var merged = Record(id: r.id, kind: r.kind, scope: r.scope)
        merged.merge(r)
        let joined = Self.fieldTableBytes(merged)
        let decoded = Self.fieldTableBytes(try Record(canonicalBytes: r.canonicalBytes))
        #expect(built <= 1_000 && joined <= 1_000 && decoded <= 1_000, "built \(built), merged \(joined), decoded \(decoded) bytes")
    }

    static var canMeasureHeap: Bool { usableSize != nil }

    /// A record built by edits keeps the spare room its tables grew by (an insert doubles an array); after
    /// `shrinkToFit` each table's array holds its fields and no more (but for malloc's rounding), and the record is equal, field for field and
    /// byte for byte. A simulator's interner keeps one such copy of each record version for every replica.
    @Test func shrinkToFitDropsTheSpareRoomAndChangesNothing() throws {
        var built = try Self.servedIncident()  // eight registers: an array of eight
        try built.apply(built.edit(author: Self.me, hlc: HLCTimestamp(raw: 5 << 16), [.set(field: 40, value: .int(1))]))  // nine in sixteen
        func bytes(_ r: Record) -> Int { r.registers.arrayBytes + r.lattices.arrayBytes + r.sets.arrayBytes + r.logs.arrayBytes }
        func exact(_ r: Record) -> Int {
            r.registers.count * FieldTable<LWWRegister<FieldValue>>.slotStride + r.lattices.count * FieldTable<LatticeRegister>.slotStride
                + r.sets.count * FieldTable<ORSet<Token>>.slotStride + r.logs.count * FieldTable<AddOnlyLog<String>>.slotStride
        }
        #expect(bytes(built) > exact(built), "built by edits: \(bytes(built)) bytes for \(exact(built))")
        var shrunk = built
        shrunk.shrinkToFit()
        // Exactly the fields, but for what malloc rounds a block up by (less than 24 bytes a table).
        #expect(bytes(shrunk) - exact(shrunk) < 4 * 24, "shrunk: \(bytes(shrunk)) bytes for \(exact(shrunk))")
        #expect(bytes(shrunk) < bytes(built))
        #expect(shrunk == built && shrunk.canonicalBytes == built.canonicalBytes)
        #expect(Array(shrunk.registers.keys) == Array(built.registers.keys) && shrunk.registers.values == built.registers.values)
        var again = shrunk
        try again.apply(again.edit(author: Self.me, hlc: HLCTimestamp(raw: 6 << 16), [.set(field: 41, value: .int(2))]))
        #expect(again.value(41) == .int(2) && again.registers.count == shrunk.registers.count + 1, "a shrunk record still takes edits")
    }

    /// Lookups, iteration, `keys` and `values` read as a dictionary's did, in field id order; a field
    /// written out of order lands in its place.
    @Test func fieldTableReadsAsADictionary() throws {
        let r = try Self.servedIncident()
        let ids = r.registers.keys
        #expect(ids == ids.sorted() && Set(ids).count == ids.count && ids.count == 8)
        #expect(r.registers.keys == r.registers.map(\.key) && r.registers.values.count == 8)
        for (f, reg) in r.registers { #expect(r.registers[f] == reg) }
        #expect(r.registers[Incident.Field.status] == nil && r.lattices[Incident.Field.status]?.point.level == 4)
        #expect(r.value(Incident.Field.feedback) == .string("towed") && r.value(Incident.Field.duplicateOf) == nil)
        #expect(try Incident(r).notes.map(\.text) == ["on my way"] && Incident(r).assignedUnits == ["car-17"])
        // Edits applied in another order (the later ones first) give an equal record with equal bytes.
        var late = Record(id: r.id, kind: r.kind, scope: r.scope)
        try late.apply(late.edit(author: Self.me, hlc: HLCTimestamp(raw: 4 << 16), [.set(field: Incident.Field.feedback, value: .string("towed"))]))
        try late.apply(late.edit(author: Self.me, hlc: HLCTimestamp(raw: 4 << 16), [.set(field: 1, value: .symbol("traffic"))]))
        #expect(late.registers.keys == [1, Incident.Field.feedback])
    }
}
