// The access log of the command center: one JSON line per page view and action (who, from where, which
// route, which record, the outcome), appended to a file of mode 0600.

import Foundation
import NIOConcurrencyHelpers

/// One access log line.
public struct AccessLogEntry: Sendable, Codable, Equatable {
    /// When (ms since the Unix epoch).
    public var at: UInt64
    /// The operator (nil before login).
    public var operatorName: String?
    /// The source address.
    public var source: String
    /// HTTP method.
    public var method: String
    /// The route's path (no query string: search text is not logged).
    public var path: String
    /// The record viewed or acted on.
    public var record: String?
    /// The action taken (assign, route, status, note, duplicate, login, logout, export).
    public var action: String?
    /// The HTTP status answered.
    public var status: Int

    enum CodingKeys: String, CodingKey { case at, operatorName = "operator", source, method, path, record, action, status }
}

final class AccessLog: Sendable {
    private let handle: NIOLockedValueBox<FileHandle>
    let path: String

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { throw CommandCenterError("cannot open the access log \(path)") }
        handle = NIOLockedValueBox(FileHandle(fileDescriptor: fd, closeOnDealloc: true))
    }

    func write(_ entry: AccessLogEntry) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard var data = try? encoder.encode(entry) else { return }
        data.append(0x0A)
        handle.withLockedValue { $0.write(data) }
    }
}
