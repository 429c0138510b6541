import FieldSyncCore

/// Splits a byte stream into frames of `u16 big-endian length || body` (Protocols/sync.md §2).
///
/// A single-step, pure decoder: feed it whatever bytes arrived (one at a time, all at once, or cut at
/// any point) and pull complete frames out. It holds at most one partial frame (≤ 65,537 bytes), so a
/// peer cannot make it buffer more, whatever it sends.
///
/// ```swift
/// var decoder = FrameDecoder()
/// decoder.append(bytesFromSocket)
/// while let frame = try decoder.next() { handle(frame) }
/// ```
public struct FrameDecoder: Sendable {
    /// The largest frame body (a Noise message).
    public static let maxFrame = 65_535

    private var buffer: [UInt8] = []
    private var start = 0

    /// An empty decoder.
    public init() {}

    /// Bytes received but not yet returned as frames.
    public var pending: Int { buffer.count - start }

    /// Whether the bytes held end in a frame not yet whole (a length prefix, or part of one, with less
    /// than its body behind it): more bytes of the peer are awaited. False when nothing is held or only
    /// whole frames are (left unread while a session holds its maximum of batches in preparation).
    public var holdsPartialFrame: Bool {
        var at = start
        while buffer.count - at >= 2 {
            let length = Int(buffer[at]) << 8 | Int(buffer[at + 1])
            if buffer.count - at < 2 + length { return true }
            at += 2 + length
        }
        return buffer.count > at
    }

    /// Appends received bytes.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil if more bytes are needed.
    /// - Throws: `FrameError.empty` for a zero-length frame (never valid: every Noise message has a
    ///   payload or a tag), so garbage is refused at the first two bytes.
    public mutating func next() throws(FrameError) -> [UInt8]? {
        guard pending >= 2 else { return nil }
        let length = Int(buffer[start]) << 8 | Int(buffer[start + 1])
        guard length > 0 else { throw FrameError.empty }
        guard pending >= 2 + length else { return nil }
        let frame = Array(buffer[(start + 2)..<(start + 2 + length)])
        start += 2 + length
        if start > 65_536 {  // compact occasionally; amortised O(1)
            buffer.removeFirst(start)
            start = 0
        }
        return frame
    }

    /// Frames `body` for sending.
    /// - Precondition: `1 <= body.count <= 65,535` (callers split larger payloads).
    public static func frame(_ body: [UInt8]) -> [UInt8] {
        precondition(!body.isEmpty && body.count <= maxFrame, "frame body of \(body.count) bytes")
        return [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }
}

/// A framing error: the connection must be closed.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A zero-length frame.
    case empty

    public var description: String { "empty frame" }
}
