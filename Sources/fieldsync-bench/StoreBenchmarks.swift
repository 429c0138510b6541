import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation

/// Benchmarks of the SQLite store.
func storeBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "store-query", summary: "open a 1,000,000-change store; open incidents of one station via index vs full scan") { scale in
            try storeQueryBenchmark(changes: Int(1_000_000 * scale))
        },
    ]
}

/// Builds (once, cached under /tmp) a store with `changes` changes: each creates or updates an
/// incident or visit spread over Longnan's 9 counties, 202 stations and their villages.
private func buildStore(changes: Int, path: String, sealer: StorageKeySealer) throws {
    if FileManager.default.fileExists(atPath: path) { return }
    let store = try SQLiteStore(path: path + ".tmp", sealer: sealer, syncMode: .normal)
    let counties = ["wudu", "cheng", "wen", "dangchang", "kang", "xihe", "li", "hui", "liangdang"]
    var rng = SplitMix64(seed: 11)
    var seqs: [LogID: UInt64] = [:]
    var batch = CommitBatch()
    let author = DeviceID(ID128(high: 0xB0, low: 1))
    for i in 0..<changes {
        let station = i % 202
        let scope = try Scope("longnan/\(counties[station % 9])/station-\(String(format: "%03d", station))/village-\(String(format: "%04d", (i / 202) % 16))")
        let log = LogID(author: author, scope: scope)
        let seq = (seqs[log] ?? 0) + 1
        seqs[log] = seq
        let rid = RecordID(ID128(high: UInt64(station), low: UInt64(i / 2)))
        let hlc = HLCTimestamp(milliseconds: 1_700_000_000_000 + UInt64(i) * 1000, counter: 0)
        let edit: RecordEdit
        if i % 2 == 0 {
            let status = Incident.Status(rawValue: UInt8(rng.next() % 5))!
            var e = Incident.create(id: rid, scope: scope, author: author, hlc: hlc, category: .dispute, priority: .normal,
                                    location: Location(latitude: 33.4, longitude: 104.9), summary: "incident \(i)",
                                    reportedAt: Int64(1_700_000_000_000 + i * 1000), reporter: "bench")
            e.actions.append(Incident.statusAction(generation: 0, status))
            edit = e
        } else {
            edit = RecordEdit(record: RecordID(ID128(high: UInt64(station), low: UInt64(i / 2 - (i / 2) % 2))), kind: .incident,
                              scope: scope, author: author, hlc: hlc, actions: [.append(field: Incident.Field.notes, text: "note \(i)")])
        }
        let hash = (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let bytes = ChangeBody(edits: [edit]).canonicalBytes + [UInt8](repeating: 0, count: 120)  // ~ sealed size
        batch.changes.append(StoredChange(log: log, seq: seq, hash: hash, prevHash: [UInt8](repeating: 0, count: 32),
                                          hlc: hlc, contentType: 1, priority: 2, bytes: bytes))
        batch.edits.append((edit, hash))
        if batch.changes.count == 5_000 {
            _ = try store.commit(batch)
            batch = CommitBatch()
        }
    }
    if !batch.changes.isEmpty { _ = try store.commit(batch) }
    try FileManager.default.moveItem(atPath: path + ".tmp", toPath: path)
    try? FileManager.default.moveItem(atPath: path + ".tmp-wal", toPath: path + "-wal")
}

private func storeQueryBenchmark(changes: Int) throws -> [BenchResult] {
    let sealer = try StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 1, count: 32)))
    let path = NSTemporaryDirectory() + "fieldsync-bench-store-\(changes).sqlite"
    let clock = ContinuousClock()
    let buildStart = clock.now
    try buildStore(changes: changes, path: path, sealer: sealer)
    let buildTime = clock.now - buildStart
    let openStart = clock.now
    let store = try SQLiteStore(path: path, sealer: sealer)
    let openTime = clock.now - openStart
    let station = try Scope("longnan/dangchang/station-012")
    let query = RecordQuery.openIncidents(in: station)
    var hits = 0
    let indexed = secondsPerIteration { hits = (try? store.records(query).count) ?? -1 }
    // Baseline: what a store without clear index columns must do: decrypt every record and filter.
    var scanHits = 0
    let scan = secondsPerIteration(minimumSeconds: 0.01) {
        scanHits = ((try? store.records(RecordQuery(includeDeleted: true))) ?? []).filter { r in
            query.matches(r, index: RecordIndexEntry(r))
        }.count
    }
    precondition(hits == scanHits, "indexed query and scan disagree: \(hits) vs \(scanHits)")
    let plan = try store.queryPlan(query).joined(separator: "; ")
    let status = try store.status()
    print("  store: \(status.changes) changes, \(status.records) records; built in \(buildTime), opened in \(openTime)")
    print("  query plan: \(plan)")
    print("  open incidents in \(station): \(hits)")
    return [
        BenchResult(name: "open incidents of one station (\(hits) hits)", value: 1 / indexed, baseline: 1 / scan,
                    unit: "queries/s", baselineName: "decrypt-and-filter scan of all \(status.records) records"),
        BenchResult(name: "open the store", value: Double(openTime.components.attoseconds) * 1e-15 + Double(openTime.components.seconds) * 1e3,
                    baseline: indexed * 1e3, unit: "ms", baselineName: "one indexed query"),
    ]
}
