// `fieldsync feed status` and `fieldsync feed rebuild`, and the feed `serve` runs when its config has
// `"feed": {"postgres": ...}` (docs/postgres-feed.md).

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncFeed
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Logging
import Metrics

/// `fieldsync feed`.
struct FeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "feed",
        abstract: "The HQ feed into PostgreSQL: status (lag) and rebuild (docs/postgres-feed.md).",
        subcommands: [FeedStatus.self, FeedRebuild.self])
}

/// What the feed commands and `serve` share.
enum FeedService {
    /// The feed writes plaintext: refused on the roles that carry or hold records in the field.
    static func refuse(role: Role) throws {
        guard role == .relay || role == .backpack else { return }
        throw CLIError("the PostgreSQL feed writes the records it decrypts in plaintext: it is refused on a \(role) device; "
                       + "run it on the HQ aggregator (or a station or county node that may read them), see docs/postgres-feed.md")
    }

    /// The feed settings of a config (nil: no feed).
    static func configuration(_ c: NodeConfigFile, schema: String? = nil) throws -> FeedConfiguration? {
        guard let pg = c.feed.postgres else { return nil }
        do {
            return try FeedConfiguration(url: pg.url, schema: schema ?? pg.schema, passwordFile: pg.passwordFile, batchSize: pg.batchSize)
        } catch let e as FeedError { throw CLIError(e.description) }
    }

    /// Where a running feed keeps its state (beside the daemon's status file).
    static func statePath(_ c: NodeConfigFile) -> String { c.statusPath + ".feed.json" }

    /// The feed's section of the daemon's status file, from the runner's state at `now` (Unix ms).
    static func section(_ s: FeedState, target: String, now: Int64) -> DaemonStatus.Feed {
        DaemonStatus.Feed(target: target, state: s.state, database: s.database ?? "unknown", lagChanges: s.lagKnown == false ? nil : s.lagChanges,
                          lagSeconds: s.lagSeconds(at: now), lastError: s.lastError, retryAt: s.retryAt.map { UInt64(clamping: $0) },
                          changesFed: s.changesFed)
    }

    /// A running feed: the runner, its task, and the daemon hook that wakes it after each commit.
    struct Handle: Sendable {
        let runner: FeedRunner
        let task: Task<Void, Never>
        /// Where it writes (`FeedConfiguration.target`), for the status file.
        let target: String
        var hooks: DaemonHooks {
            var h = DaemonHooks()
            h.storeChanged = { [runner] r in runner.wake(verifier: r.verifier()) }
            h.feedStatus = { [runner, target] in FeedService.section(runner.state, target: target, now: Int64(wallClockMilliseconds())) }
            return h
        }

        func stop() async {
            runner.stop()
            await task.value
        }
    }

    /// Starts the feed of `c` on `node`'s store, if the config has one. The database need not be up: the
    /// feed migrates and catches up when it answers.
    static func start(_ c: NodeConfigFile, node: FieldSyncNode, factory: any MetricsFactory, logger: Logger) async throws -> Handle? {
        guard let fc = try configuration(c) else { return nil }
        _ = try fc.password()  // a missing or too open password file is a start-up error, not a retry loop
        let (device, role, verifier, store) = try await node.withReplicator { r in
            (r.identity.id.description, r.identity.certificate.role, r.verifier(), r.store as? SQLiteStore)
        }
        try refuse(role: role)
        guard let store else { throw CLIError("the feed needs a SQLite store") }
        var log = logger
        log[metadataKey: "feed.schema"] = .string(fc.schema)
        let runner = try FeedRunner(store: store, sink: PostgresFeedSink(configuration: fc, logger: Logger(label: "fieldsync.feed.pg")),
                                    device: device, role: role.description, logger: log, factory: factory, statePath: statePath(c))
        runner.wake(verifier: verifier)
        let task = Task.detached { await runner.run() }
        log.info("feed on", metadata: ["feed.target": .string(fc.target)])
        return Handle(runner: runner, task: task, target: fc.target)
    }
}

/// Options both feed commands take.
struct FeedOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The node's JSON config file (its `feed.postgres` section).", valueName: "file")) var config: String
    @Option(help: "Use this schema instead of the config's feed.postgres.schema.") var schema: String?

    func load() throws -> (NodeConfigFile, FeedConfiguration) {
        let c: NodeConfigFile
        do { c = try NodeConfigFile.load(path: config) } catch let e as ConfigError { throw CLIError(e.description) }
        guard let fc = try FeedService.configuration(c, schema: schema) else {
            throw CLIError("\(config) has no feed: add \"feed\": {\"postgres\": {\"url\": ...}} (docs/postgres-feed.md)")
        }
        return (c, fc)
    }
}

/// `fieldsync feed status`.
struct FeedStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "How far the PostgreSQL feed is behind this node's store: lag in changes and seconds.",
        discussion: "Reads the store and the feed's cursor in the database. Exits 0 when the database answers, 1 when it does not "
            + "(the store side and the running feed's last error are still printed).")

    @OptionGroup var options: FeedOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        let (c, fc) = try options.load()
        var spec = try ReplicatorSpec.from(c)
        spec.createStore = false
        let replicator = try spec.open()
        guard let store = replicator.store as? SQLiteStore else { throw CLIError("the feed needs a SQLite store") }
        let head = try store.feedHead()
        let source = try store.feedSourceID()
        let running = (try? Data(contentsOf: URL(fileURLWithPath: FeedService.statePath(c)))).flatMap { try? JSONDecoder().decode(FeedState.self, from: $0) }
        let sink = PostgresFeedSink(configuration: fc, logger: Logger(label: "fieldsync.feed.pg"))
        var out: [(String, JSONValue)] = [("target", .string(fc.target)), ("source", .string(Hex.encode(source))),
                                          ("device", .string(replicator.identity.id.description)),
                                          ("storeChanges", .int(Int64(head.changes))), ("storeRowid", .int(Int64(head.lastRowid)))]
        var failure: String?
        do {
            let cursor = try await sink.cursor(source: source)
            let lag = try store.feedCount(after: cursor.lastRowid)
            let now = Int64(wallClockMilliseconds())
            let since = cursor.caughtUpAt ?? cursor.updatedAt
            let lagSeconds = lag == 0 ? 0 : since.map { max(0, (now - $0) / 1000) }
            out += [("fedRowid", .int(Int64(cursor.lastRowid))), ("changesFed", .int(Int64(cursor.changesFed))), ("lagChanges", .int(Int64(lag))),
                    ("lagSeconds", lagSeconds.map { .int(Int64($0)) } ?? .null), ("unopened", .int(Int64(cursor.unopened.count)))]
        } catch {
            failure = FeedError.describe(error)
            out.append(("databaseError", .string(failure!)))
        }
        await sink.close()
        if let running {
            out.append(("running", .object([("state", .string(running.state)), ("lastError", running.lastError.map(JSONValue.string) ?? .null),
                                            ("updatedAt", .int(Int64(running.updatedAt)))])))
        }
        if json {
            print(JSONValue.object(out).serialized)
        } else {
            print("feed: \(fc.target)")
            print("store: \(head.changes) changes (last rowid \(head.lastRowid)), source \(Hex.encode(source))")
            if let failure {
                print("database: unreachable: \(failure)")
            } else {
                let get = { (k: String) in out.first { $0.0 == k }?.1 }
                if case let .int(lag)? = get("lagChanges"), case let .int(fedRowid)? = get("fedRowid") {
                    var seconds = "unknown"
                    if case let .int(s)? = get("lagSeconds") { seconds = "\(s) s" }
                    print("fed: up to rowid \(fedRowid); lag: \(lag) changes, \(seconds)")
                }
                if case let .int(u)? = get("unopened"), u > 0 { print("unopened: \(u) changes held sealed (no key yet), fed once opened") }
            }
            if let running {
                print("running feed: \(running.state)" + (running.lastError.map { ", last error: \($0)" } ?? ""))
            }
        }
        if failure != nil { throw ExitCode(1) }
    }
}

/// `fieldsync feed rebuild`.
struct FeedRebuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Replay this node's whole store into an empty PostgreSQL schema.",
        discussion: "The schema (the config's, or --schema) must not exist or hold no table: drop it first (`DROP SCHEMA name CASCADE`) "
            + "or give another one. The running node may keep serving meanwhile; point its config at the new schema afterwards.")

    @OptionGroup var options: FeedOptions
    @Flag(help: ArgumentHelp("Verify every change's signature and its author's certificate chain again instead of trusting the store's check at ingest (slower; docs/postgres-feed.md)."))
    var recheckSignatures = false

    func run() async throws {
        let (c, fc) = try options.load()
        var spec = try ReplicatorSpec.from(c)
        spec.createStore = false
        let replicator = try spec.open()
        try FeedService.refuse(role: replicator.identity.certificate.role)
        guard let store = replicator.store as? SQLiteStore else { throw CLIError("the feed needs a SQLite store") }
        let sink = PostgresFeedSink(configuration: fc, logger: Logger(label: "fieldsync.feed.pg"))
        do {
            let tables = try await sink.tableCount()
            guard tables == 0 else {
                throw CLIError("schema \(fc.schema) already holds \(tables) table(s): rebuild writes into an empty schema; "
                               + "drop it (`DROP SCHEMA \(fc.schema) CASCADE`) or give --schema NEW")
            }
            let runner = try FeedRunner(store: store, sink: sink, device: replicator.identity.id.description,
                                        role: replicator.identity.certificate.role.description, logger: Logger(label: "fieldsync.feed"),
                                        recheckSignatures: recheckSignatures)
            let start = Date()
            let fed: Int64
            do { fed = try await runner.catchUp(verifier: replicator.verifier()) } catch {
                await runner.shutdown()
                throw error
            }
            let seconds = Date().timeIntervalSince(start)
            await runner.shutdown()  // the connection and the thread
            print(String(format: "rebuilt schema %@: %lld changes fed in %.1f s (%.0f changes/s)", fc.schema, fed, seconds,
                         seconds > 0 ? Double(fed) / seconds : 0))
        } catch let e as CLIError {
            await sink.close()
            throw e
        } catch {
            await sink.close()
            throw CLIError("feed rebuild: \(FeedError.describe(error))")
        }
    }
}
