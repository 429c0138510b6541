import FieldSyncCore

/// Seeded random generators of model values for property tests. Small domains on purpose, so that
/// random operations collide on the same fields, elements and clocks often.
struct Gen {
    var rng: SplitMix64

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func bool() -> Bool { Bool.random(using: &rng) }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...items.count - 1)] }

    static let authors = (1...4).map { DeviceID(ID128(high: 0xA0, low: UInt64($0))) }
    static let scope = try! Scope("longnan/wudu/station-017/village-0412")

    mutating func author() -> DeviceID { pick(Gen.authors) }
    mutating func hlc() -> HLCTimestamp { HLCTimestamp(milliseconds: UInt64(int(1...6)), counter: UInt16(int(0...2))) }
    mutating func opID() -> OpID { OpID(hlc: hlc(), author: author(), index: UInt32(int(0...2))) }
    mutating func token() -> Token { Token(pick(["a", "b", "c", "unit-7", "é", "e\u{301}"])) }

    mutating func string() -> String {
        pick(["", "x", "户主", "dispute at the bridge", "e\u{301}", "é", String(repeating: "z", count: 200)])
    }

    mutating func fieldValue() -> FieldValue {
        switch int(0...9) {
        case 0: return .null
        case 1: return .string(string())
        case 2: return .int(pick([0, 1, -1, Int64.max, Int64.min, 300]))
        case 3: return .double(pick([0.0, -1.5, 1e300, 33.39, -104.93]))
        case 4: return .bool(bool())
        case 5: return .time(pick([0, 1_700_000_000_000, -5]))
        case 6: return .location(Location(latitude: pick([-90, 0, 33.39]), longitude: pick([180, -180, 104.93]),
                                          placeName: string()))
        case 7: return .record(RecordID(ID128(high: UInt64(int(0...3)), low: 9)))
        case 8: return .device(author())
        default: return .symbol(pick(["urgent", "high", "dispute"]))
        }
    }

    mutating func lww() -> LWWRegister<FieldValue> { LWWRegister(fieldValue(), stamp: opID()) }
    mutating func lattice() -> LatticeRegister {
        LatticeRegister(LatticePoint(generation: UInt32(int(0...2)), level: UInt8(int(0...4))), stamp: opID())
    }

    mutating func orSet() -> ORSet<Token> {
        var s = ORSet<Token>()
        for _ in 0..<int(0...6) {
            if bool() { s.add(token(), tag: opID()) } else {
                let e = token()
                var observed = s.observedTags(of: e)
                if bool() { observed.append(opID()) }
                s.remove(e, observed: observed)
            }
        }
        return s
    }

    mutating func log() -> AddOnlyLog<String> {
        var l = AddOnlyLog<String>()
        for _ in 0..<int(0...4) { l.append(string(), id: opID()) }
        return l
    }

    mutating func action() -> Action {
        switch int(0...9) {
        case 0...2: return .set(field: pick([Incident.Field.category, Incident.Field.summary, Incident.Field.priority]), value: fieldValue())
        case 3, 4: return .raise(field: Incident.Field.status, to: LatticePoint(generation: UInt32(int(0...2)), level: UInt8(int(0...4))))
        case 5, 6: return .add(field: Incident.Field.assignedUnits, element: token())
        case 7: return .remove(field: Incident.Field.assignedUnits, element: token(), observed: (0..<int(0...2)).map { _ in opID() })
        case 8: return .append(field: Incident.Field.notes, text: string())
        default: return int(0...3) == 0 ? .delete : .append(field: Incident.Field.notes, text: string())
        }
    }

    /// A random edit of one of two records; op ids are unique per (hlc, author) because each edit gets a
    /// fresh clock reading from a per-author counter.
    mutating func edits(count: Int) -> [RecordEdit] {
        var clocks: [DeviceID: UInt64] = [:]
        return (0..<count).map { _ in
            let a = author()
            clocks[a, default: 0] += UInt64(int(1...3))
            let ms = clocks[a]!
            let rid = RecordID(ID128(high: 1, low: UInt64(int(1...2))))
            return RecordEdit(record: rid, kind: .incident, scope: Gen.scope, author: a,
                              hlc: HLCTimestamp(milliseconds: ms, counter: 0), creates: bool(),
                              actions: (0..<int(1...4)).map { _ in action() })
        }
    }

    mutating func record() -> Record {
        var r = Record(id: RecordID(ID128(high: 1, low: 1)), kind: .incident, scope: Gen.scope)
        for e in edits(count: int(0...6)) where e.record == r.id { try! r.apply(e) }
        return r
    }

    mutating func shuffled<T>(_ a: [T]) -> [T] { a.shuffled(using: &rng) }
}

/// Checks the semilattice laws of a CRDT on random triples, comparing canonical encodings.
func checkMergeLaws<T: CRDT>(seed: UInt64, iterations: Int = 300, _ make: (inout Gen) -> T) -> [String] {
    var g = Gen(seed: seed)
    var failures: [String] = []
    for i in 0..<iterations {
        let a = make(&g), b = make(&g), c = make(&g)
        let ab = a.merging(b), ba = b.merging(a)
        if ab.canonicalBytes != ba.canonicalBytes { failures.append("commutativity, iteration \(i)") }
        if a.merging(b).merging(c).canonicalBytes != a.merging(b.merging(c)).canonicalBytes {
            failures.append("associativity, iteration \(i)")
        }
        if a.merging(a).canonicalBytes != a.canonicalBytes { failures.append("idempotence, iteration \(i)") }
        if ab.merging(b).canonicalBytes != ab.canonicalBytes { failures.append("absorption, iteration \(i)") }
        if (try? T(canonicalBytes: a.canonicalBytes))?.canonicalBytes != a.canonicalBytes {
            failures.append("round trip, iteration \(i)")
        }
    }
    return failures
}
