// `fieldsync-bench feed`: the PostgreSQL feed (docs/postgres-feed.md, "Figures") against `COPY` of the same
// rows into the same tables in the same run, on a throwaway local cluster (`ScratchPostgres`, durable:
// fsync and synchronous_commit on, as a real server).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncFeed
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Logging

/// Benchmarks of the feed (run by name: they need PostgreSQL installed).
func feedBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "feed", summary: "HQ feed into local PostgreSQL (records/s, rebuild time) vs COPY of the same rows", byNameOnly: true) { scale in
            try feedBenchmark(changes: Int(100_000 * scale))
        },
    ]
}

/// Runs an async body from the synchronous benchmark harness (every entry that needs one uses this).
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

private final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }

/// A real HQ store of `changes` changes (each creates an incident, signed and sealed under an epoch key),
/// built through the replicator like any write.
private func buildFeedStore(changes: Int, path: String) throws -> Replicator {
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    let root = Ed25519.SecretKey.generate()
    let longnan = try Scope("longnan")
    let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
    let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .hq, requestedScopes: [longnan],
                                    createdAt: now, label: "bench-hq")
    let cert = try Authority(root: root).enroll(req, role: .hq, scopes: [longnan], notBefore: now - 60_000, notAfter: now + 30 * 86_400_000, serial: 1)
    let store = try SQLiteStore(path: path, sealer: try StorageKeySealer(deviceSigningKey: sk), syncMode: .normal)
    let r = Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert), trust: TrustStore(root: root.publicKey), store: store)
    r.addKey(EpochKey.generate(scope: longnan, epoch: 1))
    let counties = ["wudu", "cheng", "wen", "dangchang", "kang", "xihe", "li", "hui", "liangdang"]
    var rng = SplitMix64(seed: 16)
    var groups: [Replicator.WriteGroup] = []
    for i in 0..<changes {
        let station = i % 202
        let scope = try Scope("longnan/\(counties[station % 9])/station-\(String(format: "%03d", station))")
        var clock = r.clock
        let e = Incident.create(id: RecordID(ID128(high: rng.next(), low: rng.next())), scope: scope, author: r.identity.id,
                                hlc: try clock.now(wall: now), category: Incident.Category.allCases[i % 11], priority: .normal,
                                location: Location(latitude: 33.4, longitude: 104.9, placeName: "village \(i % 16)"),
                                summary: "incident \(i): dispute over a boundary", reportedAt: Int64(now) - Int64(i) * 1000, reporter: "bench",
                                feedbackDeadline: Int64(now) + 86_400_000)
        groups.append(Replicator.WriteGroup(scope: scope, priority: .normal, edits: [e]))
        if groups.count == 1_000 {
            try r.write(groups: groups, now: now)
            groups = []
        }
    }
    if !groups.isEmpty { try r.write(groups: groups, now: now) }
    return r
}

/// COPY text of a value (NULL as \N; backslash, tab, newline, carriage return escaped).
private func copyText(_ v: String?) -> String {
    guard let v else { return "\\N" }
    var out = ""
    for ch in v.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\t": out += "\\t"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}

nonisolated(unsafe) private let isoFormatter: ISO8601DateFormatter = {  // used from one thread
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return f
}()

/// COPY text of a time (ms since the Unix epoch) as ISO 8601 UTC.
private func copyTime(_ ms: Int64?) -> String? {
    ms.map { isoFormatter.string(from: Date(timeIntervalSince1970: Double($0) / 1000)) }
}

private func copyArray(_ a: [String]) -> String {
    "{" + a.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
}

private func feedBenchmark(changes: Int) throws -> [BenchResult] {
    guard let pg = try ScratchPostgres.start(durable: true) else {
        throw BenchError("PostgreSQL is not installed (apt-get install postgresql): the feed benchmark needs a local server")
    }
    defer { pg.destroy() }
    try pg.createDatabase("bench")
    let path = NSTemporaryDirectory() + "fieldsync-bench-feed-\(UInt32.random(in: 0...UInt32.max)).sqlite"
    defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
    let clock = ContinuousClock()
    let buildStart = clock.now
    let replicator = try buildFeedStore(changes: changes, path: path)
    let build = seconds(clock.now - buildStart)
    guard let store = replicator.store as? SQLiteStore else { throw BenchError("not a SQLite store") }
    let verifier = replicator.verifier()
    let device = replicator.identity.id.description
    print(String(format: "  store of %d changes built in %.1f s", changes, build))
    var logger = Logger(label: "bench.feed")
    logger.logLevel = .warning

    // The feed: rebuild of the whole store into an empty schema (what `fieldsync feed rebuild` runs, and what a
    // node does when it catches up after an outage), batches of 1,000 changes.
    let feedConfig = try FeedConfiguration(url: pg.url(database: "bench"), schema: "feed", batchSize: 1000)
    let feedSink = PostgresFeedSink(configuration: feedConfig, logger: logger)
    let runner = try FeedRunner(store: store, sink: feedSink, device: device, role: "hq", logger: logger)
    let feedStart = clock.now
    let fed = try blocking { () -> Int64 in
        do { return try await runner.catchUp(verifier: verifier) } catch {
            await runner.shutdown()
            throw BenchError("feed: \(FeedError.describe(error))")
        }
    }
    let feedSeconds = seconds(clock.now - feedStart)
    try blocking { await runner.shutdown() }
    guard fed == Int64(changes) else { throw BenchError("fed \(fed) of \(changes) changes") }
    let incidents = try pg.psql("bench", "SELECT count(*) FROM feed.incidents").trimmingCharacters(in: .whitespacesAndNewlines)
    let history = Int(try pg.psql("bench", "SELECT count(*) FROM feed.record_history").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    guard Int(incidents) == changes else { throw BenchError("\(incidents) incident rows for \(changes) changes") }

    // The same feed verifying every signature again (`feed rebuild --recheck-signatures`), into a third schema:
    // what trusting the store's check at ingest saves. Skipped above 200,000 changes (the million's run is
    // about the rebuild time).
    var recheckSeconds: Double?
    if changes <= 200_000 {
        let recheckConfig = try FeedConfiguration(url: pg.url(database: "bench"), schema: "rechecked", batchSize: 1000)
        let recheckRunner = try FeedRunner(store: store, sink: PostgresFeedSink(configuration: recheckConfig, logger: logger), device: device,
                                           role: "hq", logger: logger, recheckSignatures: true)
        let recheckStart = clock.now
        let refed = try blocking { () -> Int64 in
            do { return try await recheckRunner.catchUp(verifier: verifier) } catch {
                await recheckRunner.shutdown()
                throw BenchError("feed with signatures checked again: \(FeedError.describe(error))")
            }
        }
        recheckSeconds = seconds(clock.now - recheckStart)
        try blocking { await recheckRunner.shutdown() }
        guard refed == Int64(changes) else { throw BenchError("re-verifying feed fed \(refed) of \(changes) changes") }
    }

    // Baseline: the same rows (made by the feed's own code, outside the timing) by COPY into the same tables of a
    // second schema migrated the same way, in the same run.
    let rows = try FeedRows.batch(try store.feedChanges(after: 0, limit: changes), verifier: verifier, now: UInt64(Date().timeIntervalSince1970 * 1000),
                                  records: store.feedRecords)
    let copyConfig = try FeedConfiguration(url: pg.url(database: "bench"), schema: "copied")
    let copySink = PostgresFeedSink(configuration: copyConfig, logger: logger)
    try blocking { try await copySink.migrate() }
    let incidentLines = rows.incidents.map { r -> String in
        [r.recordID, r.scope, r.county, r.station, r.category, r.priority, r.status, r.statusGeneration.map(String.init), r.summary, r.reporter,
         copyTime(r.reportedAt), r.latitude.map { "\($0)" }, r.longitude.map { "\($0)" }, r.placeName, copyArray(r.assignedUnits), r.feedback,
         copyTime(r.feedbackAt), copyTime(r.feedbackDeadline), r.overdue ? "t" : "f", r.duplicateOf, String(r.notes), r.deleted ? "t" : "f",
         String(r.updatedHLC), device].map(copyText).joined(separator: "\t")
    }
    let historyLines = rows.history.map { r -> String in
        ["\\\\x" + Hex.encode(r.changeHash), r.recordID, String(r.ordinal), r.kind, r.value, r.generation.map(String.init), r.author, String(r.hlc),
         copyTime(Int64(UInt64(bitPattern: r.hlc) >> 16)), r.signatureVerified ? "t" : "f"].map { $0 == nil ? "\\N" : ($0!.hasPrefix("\\\\x") ? $0! : copyText($0)) }
            .joined(separator: "\t")
    }
    let copyStart = clock.now
    try blocking {
      do {
        try await copySink.copy(table: "incidents", columns: ["record_id", "scope", "county", "station", "category", "priority", "status",
                                                             "status_generation", "summary", "reporter", "reported_at", "latitude", "longitude",
                                                             "place_name", "assigned_units", "feedback", "feedback_at", "feedback_deadline",
                                                             "overdue", "duplicate_of", "notes", "deleted", "updated_hlc", "fed_by"], lines: incidentLines)
        try await copySink.copy(table: "record_history", columns: ["change_hash", "record_id", "ordinal", "kind", "value", "generation",
                                                                  "author_device", "hlc", "at", "signature_verified"], lines: historyLines)
        await copySink.close()
      } catch {
        await copySink.close()
        throw BenchError("COPY: \(FeedError.describe(error))")
      }
    }
    let copySeconds = seconds(clock.now - copyStart)
    let copied = try pg.psql("bench", "SELECT (SELECT count(*) FROM copied.incidents) || '|' || (SELECT count(*) FROM copied.record_history)")
        .trimmingCharacters(in: .whitespacesAndNewlines)
    guard copied == "\(changes)|\(history)" else { throw BenchError("COPY wrote \(copied), the feed \(changes)|\(history)") }
    let same = try pg.psql("bench", """
        SELECT count(*) FROM feed.incidents f JOIN copied.incidents c USING (record_id)
        WHERE f.summary = c.summary AND f.status = c.status AND f.reported_at = c.reported_at AND f.place_name = c.place_name
        """).trimmingCharacters(in: .whitespacesAndNewlines)
    guard Int(same) == changes else { throw BenchError("only \(same) of \(changes) COPY rows equal the feed's") }
    print(String(format: "  feed: %d changes -> %d incident rows + %d history rows in %.2f s; COPY of the same rows %.2f s", changes, changes, history,
                 feedSeconds, copySeconds))
    if let recheckSeconds { print(String(format: "  feed verifying every signature again: %.2f s", recheckSeconds)) }
    let perMillion = feedSeconds * 1_000_000 / Double(changes)
    let recheck = recheckSeconds.map { s in
        [BenchResult(name: "feed records/s verifying signatures again (--recheck-signatures)", value: Double(changes) / s,
                     baseline: Double(changes) / copySeconds, unit: "records/s", baselineName: "COPY of the same rows", goal: nil)]
    } ?? []
    return recheck + [
        BenchResult(name: "feed records/s (batches of 1,000, in one run)", value: Double(changes) / feedSeconds,
                    baseline: Double(changes) / copySeconds, unit: "records/s", baselineName: "COPY of the same rows", goal: "value >= 5000"),
        BenchResult(name: "rebuild of \(changes) changes (s)", value: feedSeconds, baseline: copySeconds, unit: "s",
                    baselineName: "COPY of the same rows", goal: nil),
        BenchResult(name: "rebuild of 1,000,000 changes at this rate (s)", value: perMillion, baseline: copySeconds * 1_000_000 / Double(changes),
                    unit: "s", baselineName: "COPY at its rate", goal: changes >= 1_000_000 ? "value <= 300 (measured)" : "value <= 300 (extrapolated)"),
    ]
}

private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

private struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
