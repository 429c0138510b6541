// The PostgreSQL side of the feed: versioned migrations, one transaction per batch holding the rows and
// the source's cursor, and what `fieldsync feed status` reads. Every value travels as a bind parameter;
// only the schema name (checked to be a plain identifier) is part of the SQL text.

import Foundation
import Logging
import NIOCore
import PostgresNIO

/// A source's cursor as stored in `sources` (one row per store feeding this schema).
public struct FeedCursor: Sendable, Equatable {
    /// The last fed change's rowid in the source store (0: nothing yet).
    public var lastRowid: Int64
    /// Its hash (to notice a rowid SQLite gave again after a quarantine deleted the last row).
    public var lastHash: [UInt8]?
    /// Records changes passed while still sealed in the store; fed once the store opens them.
    public var unopened: [Int64]
    /// Changes fed in all.
    public var changesFed: Int64
    /// When the cursor last moved, and when the feed last had nothing left to feed (Unix ms).
    public var updatedAt: Int64?
    public var caughtUpAt: Int64?

    /// The cursor of a source never fed.
    public static let start = FeedCursor(lastRowid: 0, lastHash: nil, unopened: [], changesFed: 0, updatedAt: nil, caughtUpAt: nil)
}

/// The feed's schema in one PostgreSQL database, over one connection (reopened after a failure).
public actor PostgresFeedSink {
    /// The settings.
    public let configuration: FeedConfiguration
    private let logger: Logger
    private var connection: PostgresConnection?
    private var nextID = 1
    private var migrated = false
    private var s: String { configuration.schema }

    /// A sink (no connection until the first call).
    public init(configuration: FeedConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// A sink let go with its connection open (its owner never called `close()`: a `catchUp` without `run()`
    /// or `shutdown()`, a task that ended on an error) closes it here. postgres-nio asserts, in a debug build,
    /// that a connection is closed before it is released ("PostgresConnection deinitialized before being
    /// closed"); the close completes on the connection's event loop, and the callback keeps the connection
    /// until then.
    deinit {
        if let c = connection, !c.isClosed {
            c.close().whenComplete { _ in withExtendedLifetime(c) {} }
        }
    }

    /// The migrations, in order: never edited once released, only appended (docs/postgres-feed.md lists the
    /// tables they make).
    public static func migrations(schema s: String) -> [(version: Int32, name: String, sql: [String])] {
        [(1, "v1-tables", [
            """
            CREATE TABLE \(s).sources(
                source_id bytea PRIMARY KEY, device_id text NOT NULL, role text NOT NULL,
                last_rowid bigint NOT NULL DEFAULT 0, last_hash bytea, unopened bigint[] NOT NULL DEFAULT '{}',
                changes_fed bigint NOT NULL DEFAULT 0, store_last_rowid bigint NOT NULL DEFAULT 0,
                updated_at timestamptz NOT NULL DEFAULT now(), caught_up_at timestamptz)
            """,
            """
            CREATE TABLE \(s).incidents(
                record_id text PRIMARY KEY, scope text NOT NULL, county text, station text, category text, priority text,
                status text, status_generation int, summary text, reporter text, reported_at timestamptz,
                latitude double precision, longitude double precision, place_name text, assigned_units text[] NOT NULL,
                feedback text, feedback_at timestamptz, feedback_deadline timestamptz, overdue boolean NOT NULL,
                duplicate_of text, notes int NOT NULL, deleted boolean NOT NULL, updated_hlc bigint NOT NULL,
                fed_by text NOT NULL, fed_at timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE INDEX incidents_place ON \(s).incidents(county, station, status)",
            "CREATE INDEX incidents_reported ON \(s).incidents(reported_at)",
            """
            CREATE TABLE \(s).visits(
                record_id text PRIMARY KEY, scope text NOT NULL, county text, station text, subject text, visitor text,
                visit_type text, visited_at timestamptz, latitude double precision, longitude double precision, place_name text,
                outcome text, follow_up_needed boolean NOT NULL, follow_up_by timestamptz, tags text[] NOT NULL, notes int NOT NULL,
                deleted boolean NOT NULL, updated_hlc bigint NOT NULL, fed_by text NOT NULL, fed_at timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE INDEX visits_place ON \(s).visits(county, station, visited_at)",
            """
            CREATE TABLE \(s).record_history(
                change_hash bytea NOT NULL, record_id text NOT NULL, ordinal int NOT NULL, kind text NOT NULL, value text,
                generation int, author_device text NOT NULL, hlc bigint NOT NULL, at timestamptz NOT NULL,
                signature_verified boolean NOT NULL, PRIMARY KEY(change_hash, record_id, ordinal))
            """,
            "CREATE INDEX record_history_record ON \(s).record_history(record_id, hlc)",
            """
            CREATE TABLE \(s).devices(
                device_id text PRIMARY KEY, role text NOT NULL, scopes text[] NOT NULL, issuer text NOT NULL,
                not_before timestamptz NOT NULL, not_after timestamptz NOT NULL, serial bigint NOT NULL)
            """,
            """
            CREATE TABLE \(s).receipts(
                author_device text NOT NULL, scope text NOT NULL, receipted_seq bigint NOT NULL, hq_device text NOT NULL,
                receipt_hlc bigint NOT NULL, PRIMARY KEY(author_device, scope))
            """,
            """
            CREATE VIEW \(s).daily_situation_report AS
            SELECT (reported_at AT TIME ZONE 'Asia/Shanghai')::date AS day, county, station, category,
                   count(*) AS reported,
                   count(*) FILTER (WHERE status IN ('reported', 'dispatched', 'on-scene')) AS open,
                   count(*) FILTER (WHERE status IN ('resolved', 'closed')) AS resolved,
                   count(*) FILTER (WHERE priority IN ('urgent', 'high')) AS urgent_or_high,
                   count(*) FILTER (WHERE feedback_deadline IS NOT NULL
                                    AND coalesce(feedback_at, now()) > feedback_deadline) AS overdue,
                   count(*) FILTER (WHERE duplicate_of IS NOT NULL) AS duplicates
            FROM \(s).incidents WHERE NOT deleted
            GROUP BY 1, 2, 3, 4
            """,
        ])]
    }

    // MARK: connection

    func conn() async throws -> PostgresConnection {
        if let c = connection, !c.isClosed { return c }
        let c = try await PostgresConnection.connect(configuration: try configuration.connectionConfiguration(), id: nextID, logger: logger)
        nextID += 1
        connection = c
        return c
    }

    /// Runs `body` in one transaction; on any failure the connection is dropped (the next call reconnects).
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let c = try await conn()
        do {
            try await c.query("BEGIN", logger: logger)
            let value = try await body(c)
            try await c.query("COMMIT", logger: logger)
            return value
        } catch {
            _ = try? await c.query("ROLLBACK", logger: logger)
            if !(error is FeedError) { await drop() }
            throw error
        }
    }

    /// Closes the connection (if any).
    public func close() async {
        await drop()
    }

    private func drop() async {
        let c = connection
        connection = nil
        try? await c?.close()
    }

    // MARK: schema

    /// Creates the schema and applies the missing migrations, under an advisory lock so that two aggregators
    /// starting together do not race.
    /// - Returns: the versions applied now.
    @discardableResult
    public func migrate() async throws -> [Int32] {
        try await transaction { c in
            try await c.query(PostgresQuery(unsafeSQL: "SELECT pg_advisory_xact_lock(hashtext($1))", binds: binds("fieldsync.feed." + s)), logger: logger)
            try await c.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(s)"), logger: logger)
            try await c.query(PostgresQuery(unsafeSQL: """
                CREATE TABLE IF NOT EXISTS \(s).feed_migrations(version int PRIMARY KEY, name text NOT NULL,
                                                                 applied_at timestamptz NOT NULL DEFAULT now())
                """), logger: logger)
            var applied = Set<Int32>()
            for try await v in try await c.query(PostgresQuery(unsafeSQL: "SELECT version FROM \(s).feed_migrations"), logger: logger)
                .decode(Int32.self) { applied.insert(v) }
            var now: [Int32] = []
            for m in Self.migrations(schema: s) where !applied.contains(m.version) {
                for statement in m.sql { try await c.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await c.query(PostgresQuery(unsafeSQL: "INSERT INTO \(s).feed_migrations(version, name) VALUES ($1, $2)",
                                                binds: binds(m.version, m.name)), logger: logger)
                now.append(m.version)
            }
            return now
        }
    }

    /// `migrate()` once per sink (the feed calls it before each catch-up; a database that was down at start
    /// is migrated when it comes back).
    public func ensureMigrated() async throws {
        guard !migrated else { return }
        try await migrate()
        migrated = true
    }

    /// The tables in the schema (0: absent or empty, what `feed rebuild` needs).
    public func tableCount() async throws -> Int {
        try await transaction { c in
            var n = 0
            for try await v in try await c.query(PostgresQuery(unsafeSQL: "SELECT count(*)::int FROM information_schema.tables WHERE table_schema = $1",
                                                               binds: binds(s)), logger: logger).decode(Int32.self) { n = Int(v) }
            return n
        }
    }

    // MARK: cursor

    /// The cursor of `source` (`FeedCursor.start` if it never fed this schema).
    public func cursor(source: [UInt8]) async throws -> FeedCursor {
        try await transaction { c in try await readCursor(c, source: source, lock: false) ?? .start }
    }

    private func readCursor(_ c: PostgresConnection, source: [UInt8], lock: Bool) async throws -> FeedCursor? {
        let q = PostgresQuery(unsafeSQL: """
            SELECT last_rowid, last_hash, unopened, changes_fed,
                   (extract(epoch FROM updated_at) * 1000)::bigint, (extract(epoch FROM caught_up_at) * 1000)::bigint
            FROM \(s).sources WHERE source_id = $1\(lock ? " FOR UPDATE" : "")
            """, binds: binds(ByteBuffer(bytes: source)))
        for try await (rowid, hash, unopened, fed, updated, caught) in try await c.query(q, logger: logger)
            .decode((Int64, ByteBuffer?, [Int64], Int64, Int64?, Int64?).self) {
            return FeedCursor(lastRowid: rowid, lastHash: hash.map { Array($0.readableBytesView) }, unopened: unopened, changesFed: fed,
                              updatedAt: updated, caughtUpAt: caught)
        }
        return nil
    }

    /// Moves the cursor of `source` back (to rescan after the store reused a rowid), in its own transaction.
    public func rewind(source: [UInt8], to rowid: Int64) async throws {
        try await transaction { c in
            try await c.query(PostgresQuery(unsafeSQL: "UPDATE \(s).sources SET last_rowid = least(last_rowid, $2), last_hash = NULL WHERE source_id = $1",
                                            binds: binds(ByteBuffer(bytes: source), rowid)), logger: logger)
        }
    }

    // MARK: writing a batch

    /// Writes `batch` and moves the cursor of `source` from `from` to the batch's last change, in one
    /// transaction. If the stored cursor is not `from` (another process fed this source meanwhile) nothing
    /// is written and `FeedError.sourceMismatch` is thrown: the caller reads the cursor again.
    /// - Parameters:
    ///   - reopened: rowids of `from.unopened` the store has opened since (their rows are in `batch`).
    ///   - storeLastRowid: the store's last rowid when the batch was read (for lag queries in SQL).
    public func apply(_ batch: FeedBatch, source: [UInt8], device: String, role: String, from: FeedCursor, reopened: [Int64],
                      storeLastRowid: Int64) async throws {
        let fedBy = device
        try await transaction { c in
            try await c.query(PostgresQuery(unsafeSQL: """
                INSERT INTO \(s).sources(source_id, device_id, role) VALUES ($1, $2, $3) ON CONFLICT (source_id) DO NOTHING
                """, binds: binds(ByteBuffer(bytes: source), device, role)), logger: logger)
            let current = try await readCursor(c, source: source, lock: true) ?? .start
            guard current.lastRowid == from.lastRowid, current.unopened == from.unopened else {
                throw FeedError(.sourceMismatch, "the cursor of this source moved (\(from.lastRowid) -> \(current.lastRowid)): another feed of the same store?")
            }
            try await insertRows(c, batch: batch, fedBy: fedBy)
            let unopened = (from.unopened.filter { !reopened.contains($0) } + batch.unopened).sorted()
            let caughtUp = batch.lastRowid >= storeLastRowid
            try await c.query(PostgresQuery(unsafeSQL: """
                UPDATE \(s).sources SET last_rowid = greatest(last_rowid, $2), last_hash = coalesce($3, last_hash), unopened = $4,
                    changes_fed = changes_fed + $5, store_last_rowid = $6, updated_at = now(),
                    caught_up_at = CASE WHEN $7 THEN now() ELSE caught_up_at END, device_id = $8
                WHERE source_id = $1
                """, binds: binds(ByteBuffer(bytes: source), batch.lastRowid, batch.lastHash.isEmpty ? nil : ByteBuffer(bytes: batch.lastHash), unopened,
                                  Int64(batch.changes), storeLastRowid, caughtUp, device)), logger: logger)
        }
    }

    /// Marks a source caught up (nothing left to feed) without writing rows.
    public func markCaughtUp(source: [UInt8], storeLastRowid: Int64) async throws {
        try await transaction { c in
            try await c.query(PostgresQuery(unsafeSQL: """
                UPDATE \(s).sources SET caught_up_at = now(), store_last_rowid = $2 WHERE source_id = $1 AND last_rowid >= $2
                """, binds: binds(ByteBuffer(bytes: source), storeLastRowid)), logger: logger)
        }
    }

    private func insertRows(_ c: PostgresConnection, batch: FeedBatch, fedBy: String) async throws {
        func ts(_ ms: Int64?) -> Date? { ms.map { Date(timeIntervalSince1970: Double($0) / 1000) } }
        try await upsert(c, table: "incidents", columns: [
            "record_id", "scope", "county", "station", "category", "priority", "status", "status_generation", "summary", "reporter",
            "reported_at", "latitude", "longitude", "place_name", "assigned_units", "feedback", "feedback_at", "feedback_deadline",
            "overdue", "duplicate_of", "notes", "deleted", "updated_hlc", "fed_by"],
            conflict: "ON CONFLICT (record_id) DO UPDATE SET %SET%, fed_at = now() WHERE \(s).incidents.updated_hlc <= EXCLUDED.updated_hlc",
            keep: ["record_id"], rows: batch.incidents) { r, b in
            b.append(r.recordID); b.append(r.scope); b.append(r.county); b.append(r.station); b.append(r.category)
            b.append(r.priority); b.append(r.status); b.append(r.statusGeneration); b.append(r.summary); b.append(r.reporter)
            b.append(ts(r.reportedAt)); b.append(r.latitude); b.append(r.longitude); b.append(r.placeName); b.append(r.assignedUnits)
            b.append(r.feedback); b.append(ts(r.feedbackAt)); b.append(ts(r.feedbackDeadline)); b.append(r.overdue)
            b.append(r.duplicateOf); b.append(r.notes); b.append(r.deleted); b.append(r.updatedHLC); b.append(fedBy)
        }
        try await upsert(c, table: "visits", columns: [
            "record_id", "scope", "county", "station", "subject", "visitor", "visit_type", "visited_at", "latitude", "longitude",
            "place_name", "outcome", "follow_up_needed", "follow_up_by", "tags", "notes", "deleted", "updated_hlc", "fed_by"],
            conflict: "ON CONFLICT (record_id) DO UPDATE SET %SET%, fed_at = now() WHERE \(s).visits.updated_hlc <= EXCLUDED.updated_hlc",
            keep: ["record_id"], rows: batch.visits) { r, b in
            b.append(r.recordID); b.append(r.scope); b.append(r.county); b.append(r.station); b.append(r.subject); b.append(r.visitor)
            b.append(r.visitType); b.append(ts(r.visitedAt)); b.append(r.latitude); b.append(r.longitude); b.append(r.placeName)
            b.append(r.outcome); b.append(r.followUpNeeded); b.append(ts(r.followUpBy)); b.append(r.tags); b.append(r.notes)
            b.append(r.deleted); b.append(r.updatedHLC); b.append(fedBy)
        }
        try await upsert(c, table: "record_history", columns: [
            "change_hash", "record_id", "ordinal", "kind", "value", "generation", "author_device", "hlc", "at", "signature_verified"],
            conflict: "ON CONFLICT (change_hash, record_id, ordinal) DO NOTHING", keep: [], rows: batch.history) { r, b in
            b.append(ByteBuffer(bytes: r.changeHash)); b.append(r.recordID); b.append(r.ordinal); b.append(r.kind); b.append(r.value)
            b.append(r.generation); b.append(r.author); b.append(r.hlc)
            b.append(Date(timeIntervalSince1970: Double(UInt64(bitPattern: r.hlc) >> 16) / 1000)); b.append(r.signatureVerified)
        }
        try await upsert(c, table: "devices", columns: ["device_id", "role", "scopes", "issuer", "not_before", "not_after", "serial"],
                         conflict: "ON CONFLICT (device_id) DO UPDATE SET %SET% WHERE \(s).devices.not_after <= EXCLUDED.not_after",
                         keep: ["device_id"], rows: batch.devices) { r, b in
            b.append(r.deviceID); b.append(r.role); b.append(r.scopes); b.append(r.issuer); b.append(ts(r.notBefore)); b.append(ts(r.notAfter))
            b.append(r.serial)
        }
        try await upsert(c, table: "receipts", columns: ["author_device", "scope", "receipted_seq", "hq_device", "receipt_hlc"],
                         conflict: "ON CONFLICT (author_device, scope) DO UPDATE SET %SET% WHERE \(s).receipts.receipted_seq < EXCLUDED.receipted_seq",
                         keep: ["author_device", "scope"], rows: batch.receipts) { r, b in
            b.append(r.author); b.append(r.scope); b.append(r.seq); b.append(r.hq); b.append(r.hlc)
        }
    }

    /// One multi-row `INSERT ... ON CONFLICT` per chunk (at most 60,000 parameters a statement).
    private func upsert<Row>(_ c: PostgresConnection, table: String, columns: [String], conflict: String, keep: [String], rows: [Row],
                             bind: (Row, inout PostgresBindings) -> Void) async throws {
        guard !rows.isEmpty else { return }
        let set = columns.filter { !keep.contains($0) }.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
        let tail = conflict.replacingOccurrences(of: "%SET%", with: set)
        let perChunk = max(1, 60_000 / columns.count)
        for start in stride(from: 0, to: rows.count, by: perChunk) {
            let chunk = rows[start..<min(start + perChunk, rows.count)]
            var b = PostgresBindings(capacity: chunk.count * columns.count)
            var values: [String] = []
            values.reserveCapacity(chunk.count)
            var n = 0
            for r in chunk {
                bind(r, &b)
                values.append("(" + (1...columns.count).map { "$\(n + $0)" }.joined(separator: ",") + ")")
                n += columns.count
            }
            let sql = "INSERT INTO \(s).\(table)(\(columns.joined(separator: ", "))) VALUES \(values.joined(separator: ",")) \(tail)"
            try await c.query(PostgresQuery(unsafeSQL: sql, binds: b), logger: logger)
        }
    }

    // MARK: reading (status, tests)

    /// Runs a read-only query and returns every row as text cells (NULL as nil): for `feed status` and tests.
    public func rows(_ sql: String) async throws -> [[String?]] {
        try await transaction { c in
            var out: [[String?]] = []
            for try await row in try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger) {
                var cells: [String?] = []
                for cell in row {
                    cells.append(cell.bytes.map { String(buffer: $0) })
                }
                out.append(cells)
            }
            return out
        }
    }

    /// Runs statements outside the feed's own (tests and benchmarks: truncate, COPY baselines).
    public func execute(_ sql: String) async throws {
        try await transaction { c in try await c.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
    }

    /// `COPY table(columns) FROM STDIN` of text-format lines (the benchmark's baseline).
    public func copy(table: String, columns: [String], lines: [String]) async throws {
        let c = try await conn()
        // postgres-nio quotes the table name whole: name the schema through the search path.
        try await c.query(PostgresQuery(unsafeSQL: "SET search_path TO \(s)"), logger: logger)
        try await c.copyFrom(table: table, columns: columns, logger: logger) { writer in
            var buffer = ByteBuffer()
            for line in lines {
                buffer.writeString(line)
                buffer.writeInteger(UInt8(ascii: "\n"))
                if buffer.readableBytes > 1 << 20 {
                    try await writer.write(buffer)
                    buffer.clear()
                }
            }
            if buffer.readableBytes > 0 { try await writer.write(buffer) }
        }
    }
}

/// Bindings from a list of values (nil binds NULL).
func binds(_ values: (any PostgresDynamicTypeEncodable)?...) -> PostgresBindings {
    var b = PostgresBindings(capacity: values.count)
    for v in values {
        if let v { b.append(v) } else { b.appendNull() }
    }
    return b
}
