import Foundation
import Logging

/// Every record logged through the loggers made with it, kept for a test to read: the level, the message,
/// and the record's own metadata (what the call site passed). Shared by the test targets that check what a
/// node or the command center logs (it used to be written twice).
///
/// ```swift
/// let log = CapturedLog()
/// let logger = Logger(label: "t", factory: { _ in CapturedLog.Handler(log: log) })
/// ```
public final class CapturedLog: @unchecked Sendable {
    /// One logged record.
    public struct Record: Sendable {
        public let level: Logger.Level
        public let message: String
        public let metadata: Logger.Metadata
        /// The message and the record's metadata as one line.
        public var line: String { "\(message) \(metadata)" }
    }

    private let lock = NSLock()
    private var records: [Record] = []

    public init() {}

    /// Every record so far, in the order logged.
    public var all: [Record] { lock.withLock { records } }
    /// Every record so far as one line each (message and metadata).
    public var lines: [String] { all.map(\.line) }

    func add(_ record: Record) { lock.withLock { records.append(record) } }

    /// The handler that keeps every record at every level in `log`.
    public struct Handler: LogHandler {
        public let log: CapturedLog
        public var metadata: Logger.Metadata = [:]
        public var logLevel: Logger.Level = .trace

        public init(log: CapturedLog) { self.log = log }

        public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        public func log(event: LogEvent) {
            log.add(Record(level: event.level, message: event.message.description, metadata: event.metadata ?? [:]))
        }
    }
}
