// Bounded parsing of what a browser sends: query strings, forms and cookies. Hostile input gets a clear
// 400, never a crash or an unbounded read.

import Foundation
import HTTPTypes
import Hummingbird

/// A refusal with a status and a message shown to the operator (escaped).
struct WebFailure: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
    static func notFound() -> WebFailure { WebFailure(.notFound, "No such page or record.") }
}

enum Limits {
    static let uriBytes = 2_048
    static let parameters = 24
    static let keyBytes = 32
    static let valueBytes = 256
    static let bodyBytes = 16 * 1024
}

/// Decoded `application/x-www-form-urlencoded` pairs (query strings and form bodies).
struct FormPairs {
    private(set) var pairs: [(String, String)] = []

    /// Parses `text`; refuses too many pairs, long keys or values, bad percent-encoding or invalid UTF-8.
    init(_ text: Substring, maxValueBytes: Int = Limits.valueBytes) throws(WebFailure) {
        guard !text.isEmpty else { return }
        let parts = text.split(separator: "&", omittingEmptySubsequences: true)
        guard parts.count <= Limits.parameters else {
            throw WebFailure(.badRequest, "Too many parameters (at most \(Limits.parameters)).")
        }
        for part in parts {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = try Self.decode(kv[0])
            let value = kv.count > 1 ? try Self.decode(kv[1]) : ""
            guard key.utf8.count <= Limits.keyBytes else { throw WebFailure(.badRequest, "A parameter name is too long.") }
            guard value.utf8.count <= maxValueBytes else {
                throw WebFailure(.badRequest, "The value of \(key) is too long (at most \(maxValueBytes) bytes).")
            }
            pairs.append((key, value))
        }
    }

    /// The first value of `key`, trimmed (nil when absent or empty).
    subscript(_ key: String) -> String? {
        guard let v = pairs.first(where: { $0.0 == key })?.1.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }

    static func decode(_ s: Substring) throws(WebFailure) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            switch b {
            case UInt8(ascii: "+"): bytes.append(0x20)
            case UInt8(ascii: "%"):
                guard let h = it.next(), let l = it.next(), let hv = hex(h), let lv = hex(l) else {
                    throw WebFailure(.badRequest, "Malformed percent-encoding in the request.")
                }
                bytes.append(hv << 4 | lv)
            default: bytes.append(b)
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw WebFailure(.badRequest, "The request is not valid UTF-8.") }
        return text
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - 48
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - 87
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - 55
        default: nil
        }
    }
}

extension Request {
    /// The query string's pairs, bounded.
    func queryPairs() throws(WebFailure) -> FormPairs {
        guard uri.description.utf8.count <= Limits.uriBytes else {
            throw WebFailure(.badRequest, "The address is too long (at most \(Limits.uriBytes) bytes).")
        }
        return try FormPairs(Substring(uri.query ?? ""))
    }

    /// The form body's pairs, bounded (16 KiB; note text may be up to 4 KiB).
    func formPairs() async throws -> FormPairs {
        guard headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true else {
            throw WebFailure(.unsupportedMediaType, "Expected a form (application/x-www-form-urlencoded).")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: Limits.bodyBytes)
        } catch {
            throw WebFailure(.contentTooLarge, "The form is too large (at most \(Limits.bodyBytes) bytes).")
        }
        return try FormPairs(Substring(String(buffer: buffer)), maxValueBytes: 4_096 * 3)
    }

    /// A cookie's value.
    func cookie(_ name: String) -> String? {
        for field in headers[values: .cookie] {
            for part in field.split(separator: ";") {
                let kv = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if kv.count == 2, kv[0] == name { return String(kv[1]) }
            }
        }
        return nil
    }
}
