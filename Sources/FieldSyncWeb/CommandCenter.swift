// The command center (docs/command-center.md): a Hummingbird server inside a reading node's process. Every
// read goes through the FieldSync library (`FieldSyncApp.perform` with a `RecordBook`: the store's index for
// lists, the replicator's keys to open records); every action is a signed change written by the node's
// device through `RecordBook`, attributed to the operator in a note of the same change. Live updates are
// Server-Sent Events over `FieldSyncApp.recordChanges`.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Settings of a command center.
public struct CommandCenterOptions: Sendable {
    /// Listen host (loopback only: `start` refuses anything else).
    public var host = "127.0.0.1"
    /// Listen port (0: any free port; `CommandCenter.port` tells which).
    public var port = 8080
    /// The operator accounts file.
    public var usersPath: String
    /// The access log file (one JSON line per page view and action).
    public var accessLogPath: String
    /// How long a login lasts (ms).
    public var sessionLifetime: UInt64 = 8 * 3_600_000
    /// Set `Secure` on cookies (served over HTTPS through a reverse proxy).
    public var secureCookies = false
    /// Offset of local time from UTC in minutes, for "today" and the displayed times (China: +480).
    public var utcOffsetMinutes = 480
    /// The root scope county and station filters are below (`longnan`).
    public var rootScope = "longnan"
    /// Login rate limits.
    public var limits = WebSecurity.Limits()
    /// The clock (ms since the Unix epoch): sessions, "today", overdue feedback.
    public var clock: @Sendable () -> UInt64 = FieldSyncApp.wallClock
    /// The task executor the server's tasks prefer (SE-0417), nil for Swift's default pool. The server's
    /// connection handlers are child tasks of its run task and inherit it; so do the live streams' tasks.
    /// A process whose cooperative pool may be held by blocking work (a test run) gives it threads of its own.
    public var executor: (any TaskExecutor)?
    /// The folder `serve` writes the daily reports to (`"reports": {"daily": {"dir": ...}}`), listed at
    /// /reports; nil: none stored (reports can still be made on demand).
    public var reportsDirectory: String?
    /// The county the stored reports are limited to (`reports.daily.county`), nil: every county. Only
    /// operators who may read all of it see them.
    public var reportsCounty: String?
    /// The daemon's status file (`fieldsync status`), for the units page's last sessions; nil: not recorded.
    public var statusPath: String?
    /// Units silent longer than this raise an alarm on the units page (minutes; default 24 h).
    public var unitSilentMinutes: Int64 = 24 * 60
    /// The suspected-duplicates rule of the list and detail pages.
    public var duplicateRule: DuplicateRule = .standard

    /// Options with the files the server needs.
    public init(usersPath: String, accessLogPath: String) {
        self.usersPath = usersPath
        self.accessLogPath = accessLogPath
    }
}

/// Why the command center cannot start.
public struct CommandCenterError: Error, Sendable, CustomStringConvertible {
    /// What is wrong and what to do.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Per-request state: the source address.
public struct WebContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's address (the reverse proxy's, behind one).
    public var source: String

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        self.source = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Request bodies are forms: 16 KiB is plenty.
    public var maxUploadSize: Int { 16 * 1024 }
}

/// The command center web server.
public final class CommandCenter: Sendable {
    /// The app it reads and writes through.
    public let app: FieldSyncApp
    /// Its settings.
    public let options: CommandCenterOptions
    /// Accounts, sessions and login limits.
    public let security: WebSecurity
    let accessLog: AccessLog
    let role: Role
    private struct Running {
        var task: Task<Void, any Error>?
        var port: Int?
        var streams = 0
    }
    private let running = NIOLockedValueBox(Running())

    /// A server over `app` (not started). Refused on a relay (it holds no keys to read with) and on a
    /// non-loopback host.
    public init(app: FieldSyncApp, options: CommandCenterOptions) async throws {
        let role = try await app.perform { $0.replicator.identity.certificate.role }
        guard role != .relay else {
            throw CommandCenterError("the command center is refused on a relay: a relay holds no epoch keys and cannot read the records "
                                     + "it carries; serve it from an HQ, county or station node (docs/command-center.md)")
        }
        guard Self.isLoopback(options.host) else {
            throw CommandCenterError("the command center listens on loopback only, not \(options.host); put a TLS reverse proxy in front "
                                     + "(docs/command-center.md, \"Reverse proxy\")")
        }
        self.app = app
        self.options = options
        self.role = role
        security = WebSecurity(usersPath: options.usersPath, sessionLifetime: options.sessionLifetime, limits: options.limits,
                               clock: options.clock)
        accessLog = try AccessLog(path: options.accessLogPath)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || (host.hasPrefix("127.") && host.split(separator: ".").count == 4)
    }

    /// Whether this node's role may dispatch (write actions from the web).
    public var mayDispatch: Bool { [.hq, .county, .command, .station].contains(role) }

    /// The bound port once started.
    public var port: Int? { running.withLockedValue { $0.port } }

    /// Live streams open now.
    public var openStreams: Int { running.withLockedValue { $0.streams } }

    /// Starts listening; returns the bound port.
    @discardableResult
    public func start(logger: Logger = Logger(label: "fieldsync.web")) async throws -> Int {
        let router = buildRouter()
        let (bound, cont) = AsyncStream.makeStream(of: Int.self)
        var serverLogger = logger
        serverLogger.handler = StopLineLogHandler(base: logger.handler)
        let app = Application(router: router, configuration: .init(address: .hostname(options.host, port: options.port)),
                              onServerRunning: { channel in cont.yield(channel.localAddress?.port ?? 0); cont.finish() },
                              logger: serverLogger)
        let task = Task(executorPreference: options.executor) {
            defer { cont.finish() }  // a failed bind ends the wait below
            try await app.run()
        }
        running.withLockedValue { $0.task = task }
        var port: Int?
        for await p in bound { port = p }
        guard let port, port > 0 else {
            task.cancel()
            _ = try? await task.value
            throw CommandCenterError("the command center could not listen on \(options.host):\(options.port)")
        }
        running.withLockedValue { $0.port = port }
        return port
    }

    /// Stops the server (open live streams end): cancels its task, at once. The line Hummingbird's server logs
    /// at error level when its task is cancelled ("Waiting on child channel: CancellationError()") is the stop,
    /// not a failure: `StopLineLogHandler` logs it at debug level. (A graceful shutdown through a ServiceGroup
    /// took up to 352 s to return under load, e9aebb2.)
    public func stop() async {
        guard let task = running.withLockedValue({ r -> Task<Void, any Error>? in defer { r.task = nil }; return r.task }) else { return }
        task.cancel()
        _ = try? await task.value
    }

    func streamOpened() { running.withLockedValue { $0.streams += 1 } }
    func streamClosed() { running.withLockedValue { $0.streams -= 1 } }
}

/// The command center's log handler around the caller's: the one line Hummingbird's server writes at error
/// level when `stop()` cancels it, "Waiting on child channel: CancellationError()" (its accept loop ended by
/// the cancellation the stop asked for), goes at debug level; everything else passes unchanged.
struct StopLineLogHandler: LogHandler {
    var base: any LogHandler

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }
    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }
    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    /// Whether `message` at `level` is the line a cancelled server logs at stop.
    static func isStopLine(_ level: Logger.Level, _ message: Logger.Message) -> Bool {
        level == .error && message.description == "Waiting on child channel: \(CancellationError())"
    }

    func log(event: LogEvent) {
        var event = event
        if Self.isStopLine(event.level, event.message) {
            event.level = .debug
            guard base.logLevel <= .debug else { return }
        }
        base.log(event: event)
    }
}
