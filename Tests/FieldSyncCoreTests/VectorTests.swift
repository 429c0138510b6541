import Foundation
import Testing
@testable import FieldSyncCore

/// The canonical-encoding test vectors of `Protocols/vectors/encoding.json`.
///
/// Each valid vector names a value built below; the test checks that the value encodes to exactly the
/// vector's hex and that decoding the hex gives back the same bytes. Each invalid vector must fail to
/// decode with the named error code. Set `FIELDSYNC_WRITE_VECTORS=1` to rewrite the file after a
/// deliberate, versioned format change.
@Suite struct VectorTests {
    struct Valid {
        var name: String
        var type: String
        var value: String
        var bytes: [UInt8]
    }

    static let author = DeviceID(hex: "a1a2a3a4a5a6a7a8a9aaabacadaeaf00")!
    static let record = RecordID(hex: "0123456789abcdef0123456789abcdef")!
    static let scope = try! Scope("longnan/wudu/station-017/village-0412")
    static let hlc = HLCTimestamp(milliseconds: 1_700_000_000_000, counter: 3)
    static let op = OpID(hlc: hlc, author: author, index: 2)

    static func w(_ body: (inout ByteWriter) -> Void) -> [UInt8] {
        var writer = ByteWriter()
        body(&writer)
        return writer.bytes
    }

    static var valid: [Valid] {
        var v: [Valid] = []
        func add(_ name: String, _ type: String, _ value: String, _ bytes: [UInt8]) {
            v.append(Valid(name: name, type: type, value: value, bytes: bytes))
        }
        for n: UInt64 in [0, 1, 127, 128, 300, 16_383, 16_384, UInt64(UInt32.max), UInt64.max] {
            add("varint \(n)", "varint", "\(n)", w { $0.writeVarint(n) })
        }
        for n: Int64 in [0, -1, 1, -64, 64, Int64.min, Int64.max] {
            add("svarint \(n)", "svarint", "\(n)", w { $0.writeSignedVarint(n) })
        }
        add("bool true", "bool", "true", w { $0.writeBool(true) })
        add("double 33.39", "double", "33.39", w { $0.writeDouble(33.39) })
        add("double -0.0 written as 0.0", "double", "0.0", w { $0.writeDouble(-0.0) })
        add("string empty", "string", "\"\"", "".canonicalBytes)
        add("string utf8", "string", "\"武都 é\"", "武都 é".canonicalBytes)
        add("id128", "id128", record.description, record.canonicalBytes)
        add("scope", "scope", scope.path, scope.canonicalBytes)
        add("hlc", "hlc", "{\"ms\":1700000000000,\"counter\":3}", hlc.canonicalBytes)
        add("opid", "opid", "{\"hlc\":\"1700000000000.3\",\"author\":\"\(author)\",\"index\":2}", op.canonicalBytes)
        add("value null", "fieldValue", "null", FieldValue.null.canonicalBytes)
        add("value string", "fieldValue", "{\"string\":\"Boundary dispute\"}", FieldValue.string("Boundary dispute").canonicalBytes)
        add("value int -2", "fieldValue", "{\"int\":-2}", FieldValue.int(-2).canonicalBytes)
        add("value double", "fieldValue", "{\"double\":-104.93}", FieldValue.double(-104.93).canonicalBytes)
        add("value bool", "fieldValue", "{\"bool\":false}", FieldValue.bool(false).canonicalBytes)
        add("value time", "fieldValue", "{\"time\":1700000000000}", FieldValue.time(1_700_000_000_000).canonicalBytes)
        let loc = Location(latitude: 33.39, longitude: 104.93, placeName: "武都")
        add("value location", "fieldValue", "{\"location\":[33.39,104.93,\"武都\"]}", FieldValue.location(loc).canonicalBytes)
        add("value record", "fieldValue", "{\"record\":\"\(record)\"}", FieldValue.record(record).canonicalBytes)
        add("value device", "fieldValue", "{\"device\":\"\(author)\"}", FieldValue.device(author).canonicalBytes)
        add("value symbol", "fieldValue", "{\"symbol\":\"urgent\"}", FieldValue.symbol("urgent").canonicalBytes)
        add("action set", "action", "set priority = symbol urgent",
            Action.set(field: Incident.Field.priority, value: .symbol("urgent")).canonicalBytes)
        add("action raise", "action", "raise status to (generation 1, level 0)",
            Action.raise(field: Incident.Field.status, to: LatticePoint(generation: 1, level: 0)).canonicalBytes)
        add("action add", "action", "add assignedUnits \"unit-7\"", Action.add(field: Incident.Field.assignedUnits, element: "unit-7").canonicalBytes)
        add("action remove", "action", "remove assignedUnits \"unit-7\" observed [opid vector]",
            Action.remove(field: Incident.Field.assignedUnits, element: "unit-7", observed: [op]).canonicalBytes)
        add("action append", "action", "append notes \"到达现场\"", Action.append(field: Incident.Field.notes, text: "到达现场").canonicalBytes)
        add("action delete", "action", "delete", Action.delete.canonicalBytes)
        let edit = Incident.create(
            id: record, scope: scope, author: author, hlc: hlc, category: .dispute, priority: .high, location: loc,
            summary: "Boundary dispute", reportedAt: 1_700_000_000_000, reporter: "caller-118", notes: ["two households"])
        add("edit create incident", "recordEdit", "Incident.create(dispute, high, Wudu, ...) with one note", edit.canonicalBytes)
        add("change body", "changeBody", "one edit: the incident above", ChangeBody(edits: [edit]).canonicalBytes)
        var r = Record(id: record, kind: .incident, scope: scope)
        try! r.apply(edit)
        add("record incident", "record", "the record after applying the edit above", r.canonicalBytes)
        var s = ORSet<Token>()
        s.add("unit-7", tag: op)
        s.add("unit-9", tag: OpID(hlc: hlc, author: author, index: 3))
        s.remove("unit-9", observed: [OpID(hlc: hlc, author: author, index: 3)])
        add("orset", "orset", "unit-7 live; unit-9 added then removed", s.canonicalBytes)
        return v
    }

    struct Invalid {
        var name: String
        var type: String
        var hex: String
        var error: DecodingError.Code
    }

    static let invalid: [Invalid] = [
        Invalid(name: "varint truncated", type: "varint", hex: "80", error: .truncated),
        Invalid(name: "varint non-minimal zero", type: "varint", hex: "8000", error: .nonCanonicalVarint),
        Invalid(name: "varint unterminated", type: "varint", hex: "8180", error: .truncated),
        Invalid(name: "varint non-minimal trailing zero group", type: "varint", hex: "ff00", error: .nonCanonicalVarint),
        Invalid(name: "varint overflow 65 bits", type: "varint", hex: "ffffffffffffffffff02", error: .varintOverflow),
        Invalid(name: "varint eleven bytes", type: "varint", hex: "ffffffffffffffffff8100", error: .varintOverflow),
        Invalid(name: "bool 2", type: "bool", hex: "02", error: .invalidValue),
        Invalid(name: "double NaN", type: "double", hex: "7ff8000000000000", error: .invalidValue),
        Invalid(name: "double negative zero", type: "double", hex: "8000000000000000", error: .invalidValue),
        Invalid(name: "string length beyond input", type: "string", hex: "0561", error: .lengthTooLarge),
        Invalid(name: "string claims 4 GB", type: "string", hex: "ffffffff0f", error: .lengthTooLarge),
        Invalid(name: "string invalid utf8", type: "string", hex: "02c328", error: .invalidUTF8),
        Invalid(name: "scope uppercase", type: "scope", hex: "074c6f6e676e616e", error: .invalidValue),
        Invalid(name: "scope empty segment", type: "scope", hex: "03612f2f", error: .invalidValue),
        Invalid(name: "field value unknown tag", type: "fieldValue", hex: "0a", error: .unknownTag),
        Invalid(name: "location latitude 200", type: "fieldValue",
                hex: "06" + "4069000000000000" + "405a3b851eb851ec" + "00", error: .invalidValue),
        Invalid(name: "action unknown tag", type: "action", hex: "07", error: .unknownTag),
        Invalid(name: "action field id 0 (reserved)", type: "action", hex: "010000", error: .invalidValue),
        Invalid(name: "record unsupported version", type: "record", hex: "02", error: .unsupportedVersion),
        Invalid(name: "orset elements out of order", type: "orset",
                hex: "02" + "0162" + "01" + "010000000000000000000000000000000000" + "0161" + "01"
                    + "010000000000000000000000000000000000" + "00",
                error: .nonCanonicalOrder),
        Invalid(name: "varint trailing bytes", type: "varint", hex: "0000", error: .trailingBytes),
    ]

    /// Decodes `bytes` as `type` and re-encodes it.
    static func roundTrip(_ type: String, _ bytes: [UInt8]) throws -> [UInt8] {
        var r = ByteReader(bytes)
        var out = ByteWriter()
        switch type {
        case "varint": out.writeVarint(try r.readVarint())
        case "svarint": out.writeSignedVarint(try r.readSignedVarint())
        case "bool": out.writeBool(try r.readBool())
        case "double": out.writeDouble(try r.readDouble())
        case "string": out.writeString(try r.readString())
        case "id128": out.write(try r.read(RecordID.self))
        case "scope": out.write(try r.read(Scope.self))
        case "hlc": out.write(try r.read(HLCTimestamp.self))
        case "opid": out.write(try r.read(OpID.self))
        case "fieldValue": out.write(try r.read(FieldValue.self))
        case "action": out.write(try r.read(Action.self))
        case "recordEdit": out.write(try r.read(RecordEdit.self))
        case "changeBody": out.write(try r.read(ChangeBody.self))
        case "record": out.write(try r.read(Record.self))
        case "orset": out.write(try r.read(ORSet<Token>.self))
        default: Issue.record("unknown vector type \(type)")
        }
        try r.expectEnd()
        return out.bytes
    }

    static var vectorsURL: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/encoding.json")
    }

    @Test func vectorsMatchTheSpecFile() throws {
        if ProcessInfo.processInfo.environment["FIELDSYNC_WRITE_VECTORS"] == "1" { try Self.write() }
        let data = try Data(contentsOf: Self.vectorsURL)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let valid = try #require(json["valid"] as? [[String: String]])
        let invalid = try #require(json["invalid"] as? [[String: String]])
        #expect(valid.count + invalid.count >= 30)
        let mine = Dictionary(uniqueKeysWithValues: Self.valid.map { ($0.name, $0) })
        #expect(Set(valid.compactMap { $0["name"] }) == Set(mine.keys), "spec file and tests list the same vectors")
        for v in valid {
            let name = v["name"] ?? "?"
            let hex = try #require(v["hex"])
            let bytes = try #require(Hex.decode(hex))
            if let expected = mine[name] { #expect(Hex.encode(expected.bytes) == hex, "\(name): encoding changed") }
            #expect(try Self.roundTrip(v["type"] ?? "", bytes) == bytes, "\(name): decode/encode round trip")
        }
        for v in invalid {
            let name = v["name"] ?? "?"
            let bytes = try #require(Hex.decode(v["hex"] ?? ""))
            let code = try #require(DecodingError.Code(rawValue: v["error"] ?? ""), "\(name): unknown error code")
            do {
                _ = try Self.roundTrip(v["type"] ?? "", bytes)
                Issue.record("\(name): decoded but must fail with \(code)")
            } catch let e as DecodingError {
                #expect(e.code == code, "\(name): got \(e)")
            }
        }
    }

    static func write() throws {
        let obj: [String: Any] = [
            "description": "FieldSync canonical encoding test vectors (Protocols/encoding.md). Hex is lower case.",
            "valid": valid.map { ["name": $0.name, "type": $0.type, "value": $0.value, "hex": Hex.encode($0.bytes)] },
            "invalid": invalid.map { ["name": $0.name, "type": $0.type, "hex": $0.hex, "error": $0.error.rawValue] },
        ]
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try data.write(to: vectorsURL)
    }
}
