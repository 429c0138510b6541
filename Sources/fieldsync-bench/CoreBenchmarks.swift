import FieldSyncCore
import Foundation

/// Benchmarks of the pure data model.
func coreBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "encoding", summary: "typical incident edit: canonical binary vs JSONEncoder (same data, same run)") { _ in
            try encodingBenchmark()
        },
        Benchmark(name: "merge", summary: "merge two 10,000-record replicas vs a plain dictionary union") { scale in
            mergeBenchmark(records: Int(10_000 * scale))
        },
    ]
}

/// A typical incident as it travels: the creating edit with 12 fields and 2 notes.
func typicalIncidentEdit(seed: UInt64 = 1) -> RecordEdit {
    var rng = SplitMix64(seed: seed)
    let author = DeviceID(.random(using: &rng))
    var e = Incident.create(
        id: .random(using: &rng), scope: try! Scope("longnan/wudu/station-017/village-0412"), author: author,
        hlc: HLCTimestamp(milliseconds: 1_717_200_000_000 + (rng.next() % 1_000_000), counter: 0),
        category: .dispute, priority: .high,
        location: Location(latitude: 33.412, longitude: 104.951, placeName: "Village hall, village-0412"),
        summary: "Boundary dispute between two households over a homestead wall", reportedAt: 1_717_200_000_000,
        reporter: "walk-in caller", feedbackDeadline: 1_717_286_400_000,
        notes: ["Both parties present; no injuries.", "Mediator from the justice office requested for tomorrow."])
    e.actions += [
        .add(field: Incident.Field.assignedUnits, element: "station-017-car-2"),
        .set(field: Incident.Field.feedback, value: .string("Mediation scheduled")),
        .set(field: Incident.Field.duplicateOf, value: .record(.random(using: &rng))),
    ]
    return e
}

// MARK: - JSON mirror of an edit (the baseline: the same data through Codable + JSONEncoder)

private struct JSONLocation: Codable { var lat: Double, lon: Double, name: String }
private struct JSONValue: Codable {
    var type: String
    var string: String?
    var int: Int64?
    var double: Double?
    var bool: Bool?
    var location: JSONLocation?
}
private struct JSONAction: Codable {
    var op: String
    var field: String?
    var value: JSONValue?
    var generation: UInt32?
    var level: UInt8?
    var element: String?
    var observed: [String]?
    var text: String?
}
private struct JSONEdit: Codable {
    var record: String, kind: String, scope: String, author: String
    var hlc: UInt64
    var creates: Bool
    var actions: [JSONAction]
}

private func jsonValue(_ v: FieldValue) -> JSONValue {
    switch v {
    case .null: JSONValue(type: "null")
    case let .string(s): JSONValue(type: "string", string: s)
    case let .int(i): JSONValue(type: "int", int: i)
    case let .double(d): JSONValue(type: "double", double: d)
    case let .bool(b): JSONValue(type: "bool", bool: b)
    case let .time(t): JSONValue(type: "time", int: t)
    case let .location(l): JSONValue(type: "location", location: JSONLocation(lat: l.latitude, lon: l.longitude, name: l.placeName))
    case let .record(r): JSONValue(type: "record", string: r.description)
    case let .device(d): JSONValue(type: "device", string: d.description)
    case let .symbol(s): JSONValue(type: "symbol", string: s)
    }
}

private func jsonEdit(_ e: RecordEdit) -> JSONEdit {
    // JSON carries field names, as a JSON document would.
    func name(_ f: FieldID) -> String { SchemaRegistry.standard.schemas[e.kind]?.name(of: f) ?? f.description }
    return JSONEdit(record: e.record.description, kind: e.kind.name, scope: e.scope.path, author: e.author.description,
             hlc: e.hlc.raw, creates: e.creates, actions: e.actions.map { a in
        switch a {
        case let .set(f, v): JSONAction(op: "set", field: name(f), value: jsonValue(v))
        case let .raise(f, p): JSONAction(op: "raise", field: name(f), generation: p.generation, level: p.level)
        case let .add(f, el): JSONAction(op: "add", field: name(f), element: el.string)
        case let .remove(f, el, o): JSONAction(op: "remove", field: name(f), element: el.string, observed: o.map(\.description))
        case let .append(f, t): JSONAction(op: "append", field: name(f), text: t)
        case .delete: JSONAction(op: "delete")
        }
    })
}

private func encodingBenchmark() throws -> [BenchResult] {
    let edit = typicalIncidentEdit()
    let mirror = jsonEdit(edit)
    let encoder = JSONEncoder()
    let decoder = JSONDecoder()
    let binary = edit.canonicalBytes
    let json = try encoder.encode(mirror)
    precondition((try? RecordEdit(canonicalBytes: binary)) == edit)

    let binEncode = secondsPerIteration { blackHole(edit.canonicalBytes) }
    let jsonEncode = secondsPerIteration { blackHole(try! encoder.encode(mirror)) }
    let binDecode = secondsPerIteration { blackHole(try! RecordEdit(canonicalBytes: binary)) }
    let jsonDecode = secondsPerIteration { blackHole(try! decoder.decode(JSONEdit.self, from: json)) }
    return [
        BenchResult(name: "encode speed", value: 1 / binEncode, baseline: 1 / jsonEncode, unit: "edits/s",
                    baselineName: "JSONEncoder", goal: ">= 10"),
        BenchResult(name: "decode speed", value: 1 / binDecode, baseline: 1 / jsonDecode, unit: "edits/s",
                    baselineName: "JSONDecoder", goal: ">= 10"),
        BenchResult(name: "size", value: Double(binary.count), baseline: Double(json.count), unit: "bytes",
                    baselineName: "JSON", goal: "<= 0.33"),
    ]
}

private func mergeBenchmark(records: Int) -> [BenchResult] {
    // Two replicas of `records` records each; half of each replica's records are shared, and the shared
    // ones were edited concurrently on the second replica.
    var rng = SplitMix64(seed: 7)
    var a = Replica(), b = Replica()
    let other = DeviceID(.random(using: &rng))
    for i in 0..<(records + records / 2) {
        let e = typicalIncidentEdit(seed: UInt64(i))
        if i < records { try! a.apply(e) }
        if i >= records / 2 { try! b.apply(e) }
        if i >= records / 2 && i < records {
            try! b.apply(b.records[e.record]!.edit(author: other, hlc: HLCTimestamp(raw: e.hlc.raw + 1), [
                .set(field: Incident.Field.priority, value: .symbol("urgent")), .append(field: Incident.Field.notes, text: "update \(i)"),
                .add(field: Incident.Field.assignedUnits, element: Token("unit-\(i % 50)")),
            ]))
        }
    }
    let merge = secondsPerIteration(minimumSeconds: 0.5) { blackHole(a.merging(b)) }
    let union = secondsPerIteration(minimumSeconds: 0.5) {
        blackHole(a.records.merging(b.records) { x, _ in x })
    }
    let total = Double(a.records.count + b.records.count)
    return [
        BenchResult(name: "merge rate (\(records) + \(records) records, half shared)", value: total / merge,
                    baseline: total / union, unit: "records/s", baselineName: "dictionary union (no CRDT join)"),
    ]
}
