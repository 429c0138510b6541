// `fieldsync serve`: the node daemon (docs/node.md). Settings come from `--config FILE` (JSON, see
// `fieldsync config example`); flags override the file; without a file, the flags alone describe the node.

import ArgumentParser
@_spi(CLI) import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncWeb
import Foundation
import Logging
import NIOCore
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// `fieldsync serve`.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run this device's node: accept sessions, sync with peers on contact, push changes, until SIGINT/SIGTERM.",
        discussion: """
            Settings come from --config FILE (`fieldsync config example` prints one with every default); each flag \
            overrides the file. Without --config, --dir, --store and one of --passphrase-file/--key-file are required. \
            On SIGTERM or SIGINT the node stops accepting and scheduling, lets running sessions finish for \
            sessions.shutdownGraceSeconds, then exits 0.
            """)

    @Option(help: ArgumentHelp("JSON config file (see `fieldsync config example`).", valueName: "file")) var config: String?
    @Option(help: "The device's directory (holds device.keystore).") var dir: String?
    @Option(help: ArgumentHelp("File holding the keystore passphrase (first line).", valueName: "file")) var passphraseFile: String?
    @Option(help: ArgumentHelp("32-byte key file that unlocks the keystore.", valueName: "file")) var keyFile: String?
    @Option(help: "The SQLite store file (created if missing).") var store: String?
    @Option(help: ArgumentHelp("Epoch key file (`SCOPE EPOCH HEX` per line, mode 0600); repeatable; replaces the config's list.",
                               valueName: "file"))
    var epochKeyFile: [String] = []
    @Option(help: "Address to listen on, HOST:PORT. (default: the config's listen, else 127.0.0.1:7000)") var listen: String?
    @Option(help: "Network name; peers of other networks cannot connect. (default: the config's network, else longnan-police)") var network: String?
    @Option(help: ArgumentHelp("A peer to sync with, HOST:PORT; repeatable; added to the config's peers.", valueName: "host:port"))
    var peer: [String] = []
    @Option(help: "Most concurrent sessions. (default: the config's sessions.max, else 8)") var maxSessions: Int?
    @Option(help: "Seconds without bytes before a session is cut (not an idle live session: see --live-idle-timeout). (default: the config's sessions.idleTimeoutSeconds, else 30)") var idleTimeout: Int?
    @Option(help: "Seconds without bytes before an idle live session is closed and reopened, only with keep-alive off (sessions.keepAliveSeconds 0; 0: never). (default: the config's sessions.liveIdleTimeoutSeconds, else 600)")
    var liveIdleTimeout: Int?
    @Flag(inversion: .prefixedNo, help: "Keep sessions open and push later changes on them (default: the config's sessions.live, true).")
    var liveSessions: Bool?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. (default: the config's logLevel, else info)") var logLevel: String?
    @Option(help: ArgumentHelp("Serve Prometheus metrics on HOST:PORT (enables metrics).", valueName: "host:port")) var metricsListen: String?
    @Option(help: ArgumentHelp("The status file `fieldsync status` reads. (default: the config's statusFile, else STORE.status.json)", valueName: "file")) var statusFile: String?
    @Flag(help: "Enable LAN discovery (beacons on UDP; Protocols/discovery.md).") var discovery = false
    @Option(help: ArgumentHelp("UDP port of the discovery beacons (enables discovery). (default: the config's discovery.port, else 7946)", valueName: "port")) var discoveryPort: Int?
    @Option(help: ArgumentHelp("Where beacons go: broadcast, multicast group or address (enables discovery). (default: the config's, else 255.255.255.255)", valueName: "ipv4"))
    var discoveryDestination: String?

    /// The config in force: the file (or the flags alone), then the flags on top.
    func effectiveConfig() throws -> NodeConfigFile {
        var c: NodeConfigFile
        if let config {
            do { c = try NodeConfigFile.load(path: config) } catch let e as ConfigError { throw CLIError(e.description) }
        } else {
            guard let dir, let store else {
                throw ValidationError("give --config FILE, or --dir, --store and one of --passphrase-file/--key-file")
            }
            c = NodeConfigFile(device: .init(dir: dir), store: .init(path: store))
            c.listen = "127.0.0.1:7000"
        }
        if let dir { c.device.dir = dir }
        if passphraseFile != nil || keyFile != nil {
            c.device.passphraseFile = passphraseFile
            c.device.keyFile = keyFile
        }
        if let store { c.store.path = store }
        if !epochKeyFile.isEmpty { c.epochKeyFiles = epochKeyFile }
        if let listen { c.listen = listen }
        if let network { c.network = network }
        c.peers += peer
        if let maxSessions { c.sessions.max = maxSessions }
        if let idleTimeout { c.sessions.idleTimeoutSeconds = idleTimeout }
        if let liveIdleTimeout { c.sessions.liveIdleTimeoutSeconds = liveIdleTimeout }
        if let liveSessions { c.sessions.live = liveSessions }
        if let logLevel { c.logLevel = logLevel }
        if let metricsListen {
            c.metrics.enabled = true
            c.metrics.listen = metricsListen
        }
        if let statusFile { c.statusFile = statusFile }
        if discovery || discoveryPort != nil || discoveryDestination != nil { c.discovery.enabled = true }
        if let discoveryPort { c.discovery.port = discoveryPort }
        if let discoveryDestination { c.discovery.destination = discoveryDestination }
        return c
    }

    func run() async throws {
        let c = try effectiveConfig()
        let problems = c.check()
        guard problems.isEmpty else {
            throw CLIError("the configuration has \(problems.count) problem(s):\n" + problems.map { "  - \($0)" }.joined(separator: "\n"))
        }
        let level = Logger.Level(rawValue: c.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "fieldsync.node")
        let (host, _) = try parseEndpoint(c.listen)
        let options = try DaemonOptions(configuration: c)
        let app = try await FieldSyncApp.openForCLI(try ReplicatorSpec.from(c), configuration: c.nodeConfiguration, logger: logger)
        do {
            try await Self.checkStore(app, logger: logger)
        } catch {
            await app.close(grace: .zero)
            throw error
        }
        let registry = PrometheusCollectorRegistry()
        let feed: FeedService.Handle?
        do { feed = try await FeedService.start(c, node: app.node, factory: PrometheusMetricsFactory(registry: registry), logger: logger) } catch {
            await app.close(grace: .zero)
            throw error
        }
        // Signals first, so a SIGTERM during start-up is not lost.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let (signals, cont) = AsyncStream.makeStream(of: Int32.self)
        var sources: [any DispatchSourceSignal] = []
        // A queue of its own, not `.global()`, whose threads are Swift's cooperative pool on Linux.
        let signalQueue = DispatchQueue(label: "fieldsync.serve.signals")
        for sig in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: signalQueue)
            source.setEventHandler { cont.yield(sig) }
            source.resume()
            sources.append(source)
        }
        var metricsEndpoint: MetricsEndpoint?
        var web: CommandCenter?
        do {
            var discovery: DiscoveryConfiguration?
            var secret: SecretBytes?
            if c.discovery.enabled {
                secret = try c.discovery.secretFile.map(DiscoverySecretFile.read)
                if host.hasPrefix("127."), !c.discovery.destination.hasPrefix("127."), c.discovery.announce {
                    logger.warning("discovery announces a listener bound to \(host): peers on the LAN cannot reach it; listen on 0.0.0.0")
                }
                discovery = c.discovery.configuration
            }
            try await app.startSync(options, discovery: discovery, discoverySecret: secret, announce: c.discovery.announce,
                                    hooks: feed?.hooks ?? DaemonHooks(), metrics: NodeMetrics(factory: PrometheusMetricsFactory(registry: registry)))
            if c.discovery.enabled {
                logger.info("discovery on", metadata: ["sync.discovery.port": .stringConvertible(c.discovery.port),
                                                       "sync.discovery.destination": .string(c.discovery.destination),
                                                       "sync.discovery.announce": .stringConvertible(c.discovery.announce)])
            }
            web = try await WebService.start(c, node: app.node, logger: logger)  // the command center (docs/command-center.md)
            if c.metrics.enabled {
                let (mh, mp) = try parseEndpoint(c.metrics.listen)
                metricsEndpoint = try await MetricsEndpoint.start(registry: registry, host: mh, port: mp,
                                                                  maxConnections: c.metrics.maxConnections,
                                                                  idleTimeout: .seconds(Int64(c.metrics.idleTimeoutSeconds)))
                logger.info("metrics", metadata: ["sync.metrics": .string("http://\(c.metrics.listen)/metrics")])
            }
        } catch {
            await web?.stop()
            await feed?.stop()
            await metricsEndpoint?.stop()
            await app.close(grace: .zero)
            throw error
        }
        let id = "\(app.identity.id) (\(app.identity.certificate.role))"
        logger.info("node up", metadata: ["sync.device": .string(id), "sync.network": .string(c.network),
                                          "sync.store": .string(c.store.path), "sync.status": .string(c.statusPath)])
        let dailyReports = DailyReportService.start(c, node: app.node, logger: logger)  // docs/reports.md; nil unless configured
        // First signal: drain for the grace period. A second one during the drain cuts the sessions now.
        var draining: Task<Void, Never>?
        for await sig in signals {
            if draining == nil {
                logger.info("signal received: draining", metadata: ["sync.signal": .stringConvertible(sig),
                                                                    "sync.grace_s": .stringConvertible(c.sessions.shutdownGraceSeconds)])
                let grace = Int64(c.sessions.shutdownGraceSeconds), endpoint = metricsEndpoint, center = web
                draining = Task {
                    defer { cont.finish() }
                    dailyReports?.cancel()
                    await center?.stop()
                    await endpoint?.stop()
                    await app.close(grace: .seconds(grace))
                    await feed?.stop()
                }
            } else {
                logger.warning("second signal: cutting the running sessions now", metadata: ["sync.signal": .stringConvertible(sig)])
                await app.cutSessions()
            }
        }
        await draining?.value
        sources.forEach { $0.cancel() }
    }
}

extension Serve {
    /// Checks every held change once at start (chunked): a change damaged while the node was down is
    /// quarantined now, so the first peer that holds it sends it again, instead of waiting for someone to
    /// ask this node for it. Every damaged row the store finds on read from now on is logged.
    static func checkStore(_ app: FieldSyncApp, logger: Logger) async throws {
        let check = try await app.checkStoreRaw { damage in
            switch damage {
            case let .change(q):
                logger.error("stored change damaged on disk: quarantined, a peer will send it again", metadata: [
                    "sync.log": .string("\(q.log.author)/\(q.log.scope)"), "sync.seq": .stringConvertible(q.seq),
                    "sync.error": .string(q.reason)])
            case let .record(d):
                logger.error("stored record damaged on disk: run `fieldsync doctor --repair`", metadata: [
                    "sync.record": .string(d.idText), "sync.error": .string(d.reason)])
            }
        }
        if let rollback = check.rollback {
            logger.error("store rolled back: \(rollback); after checking the device run `fieldsync doctor --accept-rollback`")
        }
        logger.info("store checked", metadata: ["sync.store.changes": .stringConvertible(check.checked),
                                                "sync.store.quarantined": .stringConvertible(check.quarantinedNow),
                                                "sync.store.quarantinePending": .stringConvertible(check.quarantined)])
    }
}

extension ReplicatorSpec {
    /// The replicator a config describes (role rules are checked when it is opened).
    static func from(_ c: NodeConfigFile) throws -> ReplicatorSpec {
        let d = try FieldSyncDevice(configuration: c)
        return ReplicatorSpec(dir: d.directory, unlock: d.key, store: d.storePath, epochKeyFiles: d.epochKeyFiles,
                              quotaBytes: d.quotaBytes, syncMode: d.syncMode, maxFileBytes: d.maxFileBytes)
    }
}
