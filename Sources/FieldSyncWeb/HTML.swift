// Escaping for everything the command center renders. Record text comes from field devices and is hostile:
// every value goes through one of these before it reaches a page, an attribute, a URL or a CSV cell.
import FieldSyncReports
import Foundation


/// HTML escaping and small builders.
public enum HTML {
    /// Text for an element's content or a quoted attribute: the reports' escaping (`HTMLText.escape`), one rule
    /// for every page and report: `& < > " '` become entities, control characters other than tab, line feed
    /// and carriage return become U+FFFD.
    public static func escape(_ text: String) -> String { HTMLText.escape(text) }

    /// A query-string component: everything but unreserved characters percent-encoded (RFC 3986), so
    /// a value cannot end the parameter, start a fragment or smuggle a `javascript:` scheme.
    public static func urlComponent(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    /// A query string from pairs (empty values left out), starting with `?` (or empty).
    public static func query(_ pairs: [(String, String)]) -> String {
        let kept = pairs.filter { !$0.1.isEmpty }
        guard !kept.isEmpty else { return "" }
        return "?" + kept.map { urlComponent($0.0) + "=" + urlComponent($0.1) }.joined(separator: "&")
    }

    /// A CSV cell: formula starts neutralised (as `fieldsync export` does: a leading `= + - @ TAB CR`
    /// that is not a number gets a single quote), then quoted when it holds a comma, quote or newline.
    public static func csvCell(_ cell: String) -> String {
        var c = cell
        if let first = c.unicodeScalars.first, ["=", "+", "-", "@", "\t", "\r"].contains(first), Double(c) == nil {
            c = "'" + c
        }
        if c.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            c = "\"" + c.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return c
    }
}

extension String {
    /// Shorthand for `HTML.escape(self)`.
    var html: String { HTML.escape(self) }
}
