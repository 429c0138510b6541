// The feed loop: woken after every commit that moved the store's heads (`NodeDaemon` hook), it reads the
// changes past its cursor in batches on a thread of its own (never the node's event loop), turns them into
// rows and writes each batch with its cursor in one PostgreSQL transaction. The database being down stops
// only this loop: it retries with exponential backoff (1 s doubling to 60 s), logs each failure, counts it,
// and catches up once the database answers.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What the feed is doing, for `fieldsync feed status` and the status file.
public struct FeedState: Sendable, Equatable, Codable {
    /// `starting`, `feeding`, `caught-up`, `retrying` or `stopped`.
    public var state: String
    /// The last rowid fed and the store's last rowid.
    public var fedRowid: Int64
    public var storeRowid: Int64
    /// Changes in the store not fed yet.
    public var lagChanges: Int64
    /// Seconds since the feed was last caught up (0 when it is).
    public var lagSeconds: Int64
    /// Changes fed by this process.
    public var changesFed: Int64
    /// The last failure (nil after a success) and when the next attempt is (Unix ms).
    public var lastError: String?
    public var retryAt: Int64?
    /// When this state was taken (Unix ms).
    public var updatedAt: Int64
    /// `up` (the last batch or check went through), `down` (the last attempt failed), `unknown` (no attempt
    /// yet); nil in files of feeds before the field.
    public var database: String? = nil
    /// Whether `lagChanges` is known: false until the database, which holds the cursor, first answered.
    public var lagKnown: Bool? = nil
    /// While behind: since when (the feed was last caught up, or this process started), Unix ms.
    public var behindSince: Int64? = nil

    /// The lag in seconds at `now` (Unix ms): it grows while the feed is behind, between the runner's updates.
    public func lagSeconds(at now: Int64) -> Int64 {
        guard lagChanges > 0 || lagKnown == false, let since = behindSince else { return lagSeconds }
        return max(0, (now - since) / 1000)
    }
}

/// Drives a `PostgresFeedSink` from a `SQLiteStore`.
///
/// ```swift
/// let runner = try FeedRunner(store: store, sink: sink, device: id, role: "hq", logger: logger)
/// runner.wake(verifier: replicator.verifier())   // after each commit
/// let task = Task { await runner.run() }
/// ```
public final class FeedRunner: Sendable {
    /// The store fed.
    public let store: SQLiteStore
    /// The database.
    public let sink: PostgresFeedSink
    /// The source's id (the store's random id) and the device and role it is named by.
    public let source: [UInt8]
    public let device: String
    public let role: String
    /// Backoff bounds (ms).
    public let backoffMin: Int64, backoffMax: Int64
    /// Where the state is written after each step (nil: nowhere).
    public let statePath: String?
    /// Verify each change's signature again when fed instead of trusting the store's check at ingest
    /// (`FeedRows`; `fieldsync feed rebuild --recheck-signatures`).
    public let recheckSignatures: Bool
    private let startedAt: Int64
    private let logger: Logger
    private let pool: NIOThreadPool
    private let loop: any EventLoop
    private let changesFed: Counter, failures: Counter, lagChanges: Gauge, lagSeconds: Gauge, batchSeconds: Metrics.Timer

    private struct Shared {
        var verifier: ChangeVerifier?
        var woken = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Whether a wake ends the current sleep (not during a backoff: commits must not hammer a database that is down).
        var waiterWakeable = true
        var stopped = false
        var state: FeedState
        /// The cursor's rowid as last read or moved by this process (nil before the database first answered),
        /// and when the feed was last caught up (Unix ms): the lag while the database is down.
        var knownRowid: Int64?
        var caughtUpAt: Int64?
    }
    private let shared: NIOLockedValueBox<Shared>

    /// A runner (not started).
    /// - Parameters:
    ///   - factory: the metrics factory (the node's Prometheus registry); nil: the global one.
    ///   - recheckSignatures: verify every change's signature again when fed (see `FeedRows`).
    public init(store: SQLiteStore, sink: PostgresFeedSink, device: String, role: String, logger: Logger,
                factory: (any MetricsFactory)? = nil, statePath: String? = nil, recheckSignatures: Bool = false,
                backoffMin: Int64 = 1_000, backoffMax: Int64 = 60_000) throws {
        self.recheckSignatures = recheckSignatures
        self.store = store
        self.sink = sink
        self.device = device
        self.role = role
        self.logger = logger
        self.statePath = statePath
        self.backoffMin = backoffMin
        self.backoffMax = backoffMax
        source = try store.feedSourceID()
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        loop = MultiThreadedEventLoopGroup.singleton.any()
        let f = factory ?? MetricsSystem.factory
        changesFed = Counter(label: "fieldsync_feed_changes_total", factory: f)
        failures = Counter(label: "fieldsync_feed_failures_total", factory: f)
        lagChanges = Gauge(label: "fieldsync_feed_lag_changes", factory: f)
        lagSeconds = Gauge(label: "fieldsync_feed_lag_seconds", factory: f)
        batchSeconds = Metrics.Timer(label: "fieldsync_feed_batch_seconds", factory: f)
        let now = wallMilliseconds()
        startedAt = now
        shared = NIOLockedValueBox(Shared(state: FeedState(state: "starting", fedRowid: 0, storeRowid: 0, lagChanges: 0, lagSeconds: 0,
                                                           changesFed: 0, lastError: nil, retryAt: nil, updatedAt: now,
                                                           database: "unknown", lagKnown: false, behindSince: now)))
    }

    /// The state now.
    public var state: FeedState { shared.withLockedValue { $0.state } }

    /// Hands the runner the replicator's current keys and trust and asks it to feed what is new. Cheap,
    /// from any thread (the node calls it on its loop after each commit).
    public func wake(verifier: ChangeVerifier) {
        let w = shared.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.verifier = verifier
            s.woken = true
            guard s.waiterWakeable else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume()
    }

    /// Stops `run()` after the batch in flight.
    public func stop() {
        let w = shared.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.stopped = true
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume()
    }

    /// Feeds until `stop()`: after each wake, and every `pollSeconds` in case a wake was missed.
    public func run(pollSeconds: Int64 = 5) async {
        var backoff = backoffMin
        while !shared.withLockedValue({ $0.stopped }) {
            guard let verifier = shared.withLockedValue({ s -> ChangeVerifier? in s.woken = false; return s.verifier }) else {
                await sleep(ms: pollSeconds * 1000)
                continue
            }
            do {
                _ = try await catchUp(verifier: verifier)
                backoff = backoffMin
                await sleep(ms: pollSeconds * 1000)
            } catch {
                failures.increment()
                let text = FeedError.describe(error)
                let retryAt = wallMilliseconds() + backoff
                // The store keeps moving while the database is down: the lag from the cursor last known.
                let last = try? await onPool { [store] in try store.feedLastRowid() }
                let (known, caughtUpAt) = shared.withLockedValue { ($0.knownRowid, $0.caughtUpAt) }
                update { s in
                    s.state = "retrying"; s.database = "down"; s.lastError = text; s.retryAt = retryAt
                    if let last { s.storeRowid = last }
                    if let known, let last {
                        s.lagChanges = max(0, last - known)
                        s.lagKnown = true
                    }
                    s.behindSince = caughtUpAt ?? startedAt
                    s.lagSeconds = s.lagSeconds(at: wallMilliseconds())
                }
                logger.error("feed: the database did not take the batch; the node keeps syncing, the feed retries",
                             metadata: ["feed.error": .string(text), "feed.retry_ms": .stringConvertible(backoff),
                                        "feed.target": .string(sink.configuration.target)])
                await sleep(ms: backoff, wakeable: false)
                backoff = min(backoff * 2, backoffMax)
            }
        }
        update { $0.state = "stopped" }
        await sink.close()
        try? await pool.shutdownGracefully()
    }

    /// Feeds everything past the cursor, batch after batch, and returns the changes fed (stopping early, after
    /// the batch in flight, once `stop()` is called). `rebuild` and tests call it directly, then `shutdown()`.
    ///
    /// Pipelined: while batch k is written to PostgreSQL (one transaction: rows and cursor), batch k+1 is read
    /// from the store, opened and turned into rows on the runner's thread, so the two halves overlap on two
    /// cores (docs/postgres-feed.md, "Figures"). Batch k+1 is read from where batch k ends, whatever becomes of
    /// batch k: if its write fails, the prepared batch is dropped and the next catch-up starts again from the
    /// cursor in the database.
    @discardableResult
    public func catchUp(verifier: ChangeVerifier, batchSize: Int? = nil) async throws -> Int64 {
        let size = batchSize ?? sink.configuration.batchSize
        let recheck = recheckSignatures
        try await sink.ensureMigrated()
        var cursor = try await sink.cursor(source: source)
        // A quarantine deleted the last row fed and SQLite gave its rowid to a later change: rescan (every
        // write is idempotent).
        if cursor.lastRowid > 0, let h = cursor.lastHash {
            let at = cursor.lastRowid
            let here = try await onPool { [store] in try store.feedHash(at: at) }
            if here != h {
                logger.warning("feed: the last change fed is no longer at its place in the store (quarantined); feeding the store again from the start")
                try await sink.rewind(source: source, to: 0)
                cursor = try await sink.cursor(source: source)
            }
        }
        shared.withLockedValue { $0.knownRowid = cursor.lastRowid }
        var fed: Int64 = 0
        // Changes passed while sealed that the store has opened since.
        if !cursor.unopened.isEmpty {
            let pending = cursor
            let opened = try await onPool { [store] in try store.feedOpened(pending.unopened) }
            if !opened.isEmpty {
                let (batch, lastRowid) = try await onPool { [store] () -> (FeedBatch, Int64) in
                    let rows = try opened.flatMap { rowid in try store.feedChanges(after: rowid - 1, limit: 1).filter { $0.rowid == rowid } }
                    var b = try FeedRows.batch(rows, verifier: verifier, now: UInt64(wallMilliseconds()), recheckSignatures: recheck,
                                               records: store.feedRecords)
                    b.lastRowid = pending.lastRowid
                    b.lastHash = pending.lastHash ?? []
                    b.changes = 0
                    return (b, try store.feedLastRowid())
                }
                try await sink.apply(batch, source: source, device: device, role: role, from: cursor, reopened: opened, storeLastRowid: lastRowid)
                cursor = try await sink.cursor(source: source)
            }
        }
        // Reads, opens and turns into rows the batch after `rowid`, on the pool thread; with the store's last
        // rowid then (one step down the b-tree: a count of the changes left would read the rest of the table
        // for every batch, quadratic over a rebuild).
        let prepare = { [store, pool, loop] (after: Int64) -> EventLoopFuture<(FeedBatch, Int64)> in
            pool.runIfActive(eventLoop: loop) {
                let rows = try store.feedChanges(after: after, limit: size)
                let b = try FeedRows.batch(rows, verifier: verifier, now: UInt64(wallMilliseconds()), recheckSignatures: recheck,
                                           records: store.feedRecords)
                return (b, try store.feedLastRowid())
            }
        }
        var next = prepare(cursor.lastRowid)
        while true {
            let start = wallMilliseconds()
            let from = cursor
            let (batch, lastRowid) = try await next.get()
            if batch.changes == 0 {
                try await sink.markCaughtUp(source: source, storeLastRowid: lastRowid)
                let now = wallMilliseconds()
                shared.withLockedValue { $0.caughtUpAt = now }
                update { s in
                    s.state = "caught-up"; s.storeRowid = lastRowid; s.fedRowid = from.lastRowid; s.lagChanges = 0; s.lagSeconds = 0
                    s.lastError = nil; s.retryAt = nil; s.database = "up"; s.lagKnown = true; s.behindSince = nil
                }
                lagChanges.record(0)
                lagSeconds.record(0)
                return fed
            }
            // The next batch is read while this one is written.
            next = prepare(batch.lastRowid)
            if !batch.damagedRecords.isEmpty {
                logger.error("feed: records damaged in the store are left out until `fieldsync doctor --repair`",
                             metadata: ["feed.records": .string(batch.damagedRecords.map(\.description).joined(separator: ","))])
            }
            if !batch.damagedChanges.isEmpty {
                logger.error("feed: changes damaged on disk are left out; the store quarantines them and a peer sends them again",
                             metadata: ["feed.rowids": .string(batch.damagedChanges.map(\.description).joined(separator: ","))])
            }
            try await sink.apply(batch, source: source, device: device, role: role, from: from, reopened: [], storeLastRowid: lastRowid)
            cursor.lastRowid = batch.lastRowid
            cursor.lastHash = batch.lastHash
            cursor.unopened = (from.unopened + batch.unopened).sorted()
            cursor.changesFed += Int64(batch.changes)
            fed += Int64(batch.changes)
            changesFed.increment(by: batch.changes)
            batchSeconds.recordMilliseconds(wallMilliseconds() - start)
            // Rowids past the cursor: the changes left, exact unless a quarantine left a hole there (then an
            // upper bound); 0 when caught up. `fieldsync feed status` counts them exactly.
            let lag = max(0, lastRowid - batch.lastRowid)
            let caughtUpAt = shared.withLockedValue { s -> Int64 in
                s.knownRowid = batch.lastRowid
                return s.caughtUpAt ?? from.caughtUpAt ?? start
            }
            update { s in
                s.state = "feeding"; s.fedRowid = batch.lastRowid; s.storeRowid = lastRowid; s.lagChanges = lag
                s.lagSeconds = lag == 0 ? 0 : max(0, (wallMilliseconds() - caughtUpAt) / 1000); s.changesFed += Int64(batch.changes)
                s.lastError = nil; s.retryAt = nil; s.database = "up"; s.lagKnown = true; s.behindSince = lag == 0 ? nil : caughtUpAt
            }
            lagChanges.record(lag)
            lagSeconds.record(state.lagSeconds)
            if shared.withLockedValue({ $0.stopped }) {
                // Shutting down: the batch in flight is written (with its cursor), the prepared one is dropped.
                _ = try? await next.get()
                return fed
            }
        }
    }

    /// Closes the database connection and the runner's thread: for callers of `catchUp` that do not `run()`
    /// (`run()` does it itself once stopped). Call once, after `catchUp` returned or threw.
    public func shutdown() async {
        stop()
        await sink.close()
        try? await pool.shutdownGracefully()
    }

    private func update(_ body: (inout FeedState) -> Void) {
        let s = shared.withLockedValue { s -> FeedState in
            body(&s.state)
            s.state.updatedAt = wallMilliseconds()
            return s.state
        }
        guard let statePath else { return }
        let tmp = statePath + ".tmp"
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        guard let data = try? enc.encode(s) else { return }
        if FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]) {
            _ = rename(tmp, statePath)
        }
    }

    private func onPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(eventLoop: loop, body).get()
    }

    /// Sleeps `ms`, or until woken (or stopped) when `wakeable`.
    private func sleep(ms: Int64, wakeable: Bool = true) async {
        let timer = NIOLockedValueBox(false)
        let deadline = loop.scheduleTask(in: .milliseconds(ms)) { [shared] in
            let w = shared.withLockedValue { s -> CheckedContinuation<Void, Never>? in
                timer.withLockedValue { $0 = true }
                defer { s.waiter = nil }
                return s.waiter
            }
            w?.resume()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = shared.withLockedValue { s -> Bool in
                if (wakeable && s.woken) || s.stopped || timer.withLockedValue({ $0 }) { return true }
                s.waiter = c
                s.waiterWakeable = wakeable
                return false
            }
            if now { c.resume() }
        }
        deadline.cancel()
    }
}

/// Wall-clock milliseconds since the Unix epoch (the feed is I/O: it may read the clock).
func wallMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
