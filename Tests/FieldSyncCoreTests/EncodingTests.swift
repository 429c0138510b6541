import Foundation
import Testing
@testable import FieldSyncCore

@Suite struct EncodingTests {
    @Test func varintRoundTripsAndIsMinimal() throws {
        var rng = SplitMix64(seed: 5)
        for i in 0..<20_000 {
            let v: UInt64 = i < 70 ? (i < 64 ? 1 << UInt64(i) : UInt64.max - UInt64(i - 64)) : rng.next() >> (rng.next() % 64)
            var w = ByteWriter()
            w.writeVarint(v)
            #expect(w.bytes.count == max(1, (64 - v.leadingZeroBitCount + 6) / 7))
            var r = ByteReader(w.bytes)
            #expect(try r.readVarint() == v)
            let s = Int64(bitPattern: rng.next())
            var ws = ByteWriter()
            ws.writeSignedVarint(s)
            var rs = ByteReader(ws.bytes)
            #expect(try rs.readSignedVarint() == s)
        }
    }

    @Test func randomValuesRoundTrip() throws {
        var g = Gen(seed: 21)
        for _ in 0..<2_000 {
            let v = g.fieldValue()
            #expect(try FieldValue(canonicalBytes: v.canonicalBytes).canonicalBytes == v.canonicalBytes)
            let a = g.action()
            #expect(try Action(canonicalBytes: a.canonicalBytes).canonicalBytes == a.canonicalBytes)
        }
        for e in g.edits(count: 500) {
            #expect(try RecordEdit(canonicalBytes: e.canonicalBytes).canonicalBytes == e.canonicalBytes)
            let body = ChangeBody(edits: [e, e])
            #expect(try ChangeBody(canonicalBytes: body.canonicalBytes).canonicalBytes == body.canonicalBytes)
        }
        for _ in 0..<300 {
            let r = g.record()
            #expect(try Record(canonicalBytes: r.canonicalBytes).canonicalBytes == r.canonicalBytes)
        }
    }

    @Test func equalValuesGiveEqualBytes() throws {
        // Insertion order of map keys and set elements must not show in the encoding.
        var g = Gen(seed: 8)
        let edits = g.edits(count: 30)
        var r1 = Replica(), r2 = Replica()
        for e in edits { try r1.apply(e, schemas: nil) }
        for e in edits.reversed() { try r2.apply(e, schemas: nil) }
        #expect(r1.canonicalBytes == r2.canonicalBytes)
    }

    /// Feeds 100,000 random and mutated inputs to every decoder: each must decode or throw a
    /// `DecodingError`, never trap, and never allocate beyond what the input justifies.
    @Test func decodersAreTotal() throws {
        let count = Int(ProcessInfo.processInfo.environment["FIELDSYNC_FUZZ_ITERATIONS"] ?? "") ?? 100_000
        var g = Gen(seed: 77)
        var seeds: [[UInt8]] = VectorTests.valid.map(\.bytes)
        for e in g.edits(count: 20) { seeds.append(ChangeBody(edits: [e]).canonicalBytes) }
        for _ in 0..<20 { seeds.append(g.record().canonicalBytes) }
        var decoded = 0, rejected = 0
        for i in 0..<count {
            var input: [UInt8]
            if i % 4 == 0 {
                input = (0..<g.int(0...64)).map { _ in UInt8.random(in: 0...255, using: &g.rng) }
            } else {
                input = g.pick(seeds)
                for _ in 0..<g.int(1...4) {
                    switch g.int(0...4) {
                    case 0 where !input.isEmpty: input[g.int(0...input.count - 1)] ^= UInt8(1 << g.int(0...7))
                    case 1 where !input.isEmpty: input.removeLast(g.int(1...input.count))
                    case 2: input.insert(UInt8.random(in: 0...255, using: &g.rng), at: g.int(0...input.count))
                    case 3 where !input.isEmpty: input[g.int(0...input.count - 1)] = g.pick([0x00, 0x7f, 0x80, 0xff])
                    default: input += [0xff, 0xff, 0xff, 0xff, 0x0f]
                    }
                }
            }
            for type in ["fieldValue", "action", "recordEdit", "changeBody", "record", "orset", "scope", "string"] {
                do {
                    _ = try VectorTests.roundTrip(type, input)
                    decoded += 1
                } catch is DecodingError {
                    rejected += 1
                }
            }
        }
        #expect(decoded + rejected == count * 8)
        #expect(decoded > 0 && rejected > 0)
    }
}

@Suite struct SchemaTests {
    static let me = DeviceID(hex: "000102030405060708090a0b0c0d0e0f")!
    static let scope = try! Scope("longnan/wudu/station-017")

    func incident(_ mutate: (inout RecordEdit) -> Void = { _ in }) -> RecordEdit {
        var e = Incident.create(
            id: RecordID(ID128(high: 1, low: 2)), scope: Self.scope, author: Self.me, hlc: HLCTimestamp(raw: 1 << 16),
            category: .traffic, priority: .urgent, location: Location(latitude: 33.39, longitude: 104.93),
            summary: "Truck off the road", reportedAt: 1_700_000_000_000, reporter: "caller")
        mutate(&e)
        return e
    }

    func error(_ edit: RecordEdit) -> RecordError? {
        do {
            try SchemaRegistry.standard.validate(edit)
            return nil
        } catch { return error }
    }

    @Test func validIncidentPasses() { #expect(error(incident()) == nil) }

    @Test func unknownCategoryNamesTheField() {
        let e = error(incident { $0.actions[0] = .set(field: Incident.Field.category, value: .symbol("arson")) })
        #expect(e?.code == .invalidValue && e?.field == "category")
        #expect(e?.description.contains("arson") == true)
    }

    @Test func latitude200NamesTheField() {
        let e = error(incident { $0.actions[2] = .set(field: Incident.Field.location, value: .location(Location(latitude: 200, longitude: 0))) })
        #expect(e?.code == .invalidValue && e?.field == "location")
    }

    @Test func emptyRequiredFieldNamesTheField() {
        let e = error(incident { $0.actions.remove(at: 3) })
        #expect(e?.code == .missingRequiredField && e?.field == "summary")
        let cleared = error(incident { $0.actions[3] = .set(field: Incident.Field.summary, value: .null) })
        #expect(cleared?.code == .missingRequiredField && cleared?.field == "summary")
    }

    @Test func wrongCRDTAndUnknownField() {
        #expect(error(incident { $0.actions.append(.add(field: Incident.Field.summary, element: "x")) })?.code == .wrongFieldKind)
        #expect(error(incident { $0.actions.append(.set(field: 99, value: .string("rain"))) })?.field == "#99")
        #expect(error(incident { $0.actions.append(.raise(field: Incident.Field.status, to: LatticePoint(generation: 0, level: 9))) })?.code == .invalidValue)
        #expect(error(incident { $0.kind = "patrol" })?.code == .unknownKind)
    }

    @Test func visitNeedsItsFields() {
        let v = Visit.create(id: RecordID(ID128(high: 3, low: 4)), scope: Self.scope, author: Self.me, hlc: HLCTimestamp(raw: 1),
                             subject: "household-0412-17", visitor: "officer-9", visitType: .returningMigrantWorker,
                             visitedAt: 1_700_000_000_000, followUpBy: 1_700_086_400_000)
        #expect(error(v) == nil)
        var bad = v
        bad.actions[2] = .set(field: Visit.Field.visitType, value: .symbol("party"))
        #expect(error(bad)?.field == "visitType")
    }

    /// Why a stale write cannot reopen a closed incident, and an explicit reopen can.
    @Test func staleStatusCannotMoveBackwards() throws {
        var r = Record(id: RecordID(ID128(high: 1, low: 2)), kind: .incident, scope: Self.scope)
        try r.apply(incident())
        let closer = DeviceID(hex: "ff0102030405060708090a0b0c0d0e0f")!
        var inc = try Incident(r)
        try r.apply(r.edit(author: closer, hlc: HLCTimestamp(raw: 5 << 16), [inc.advance(to: .closed)]))
        // A device with a clock hours ahead sends a stale "dispatched" from before the close.
        try r.apply(r.edit(author: Self.me, hlc: HLCTimestamp(raw: 999 << 16), [inc.advance(to: .dispatched)]))
        inc = try Incident(r)
        #expect(inc.status == .closed && inc.generation == 0)
        try r.apply(r.edit(author: closer, hlc: HLCTimestamp(raw: 6 << 16), [inc.reopen()]))
        inc = try Incident(r)
        #expect(inc.status == .reported && inc.generation == 1)
        // The stale close of generation 0 arrives again (duplicate): no effect.
        try r.apply(r.edit(author: closer, hlc: HLCTimestamp(raw: 5 << 16), [Incident.statusAction(generation: 0, .closed)]))
        #expect(try Incident(r).status == .reported)
    }

    @Test func typedViewReportsMissingFieldsOfPartialRecords() throws {
        var r = Record(id: RecordID(ID128(high: 1, low: 2)), kind: .incident, scope: Self.scope)
        // An update arrived before the creating edit (urgent-first delivery): the view names what is missing.
        try r.apply(r.edit(author: Self.me, hlc: HLCTimestamp(raw: 9 << 16), [.append(field: Incident.Field.notes, text: "on my way")]))
        #expect(throws: RecordError.self) { try Incident(r) }
        do { _ = try Incident(r) } catch { #expect(error.field == "category") }
        try r.apply(incident())
        let inc = try Incident(r)
        #expect(inc.notes.map(\.text) == ["on my way"] && inc.priority == .urgent)
    }
}
