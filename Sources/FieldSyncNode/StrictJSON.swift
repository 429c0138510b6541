// A strict JSON (RFC 8259) syntax check for config files: Foundation's decoder accepts a trailing comma and
// keeps the last of two equal keys, so `{"listen": "a", "listen": "b",}` would serve on b without a word.

import Foundation

/// Finds what RFC 8259 forbids but Foundation's `JSONDecoder` lets through, or what no JSON allows: trailing
/// commas, an object key given twice, comments, and every other syntax error, each with its line and column.
///
/// It only checks; decoding stays with `JSONDecoder`. Parsing stops at the first error that leaves the rest
/// unreadable (an unclosed string, a missing value); duplicate keys and trailing commas do not stop it, so
/// all of them are listed.
///
/// ```swift
/// let problems = StrictJSON.problems(in: Data(#"{"listen": "a", "listen": "b",}"#.utf8))
/// // ["line 1, column 17: the key `listen` is given twice (the first at line 1, column 2) ...", "line 1, column 30: a trailing comma ..."]
/// ```
public enum StrictJSON {
    /// The syntax problems of `data`, in file order; empty when it is strict JSON.
    public static func problems(in data: Data) -> [String] {
        var p = Parser(bytes: Array(data))
        p.skipSpace()
        if p.atEnd {
            p.report("the file is empty; a config is one JSON object")
            return p.problems
        }
        if p.parseValue(path: "") {
            p.skipSpace()
            if !p.atEnd { p.report("unexpected text after the JSON value") }
        }
        return p.problems
    }

    /// Deepest nesting of arrays and objects accepted. A config needs three or four levels; the bound
    /// keeps a hostile file of a million `[` from overflowing the stack of this recursive parser.
    public static let maxDepth = 64

    private struct Parser {
        let bytes: [UInt8]
        var i = 0
        var depth = 0
        var problems: [String] = []

        init(bytes: [UInt8]) {
            self.bytes = bytes
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
        }

        var atEnd: Bool { i >= bytes.count }
        var peek: UInt8? { atEnd ? nil : bytes[i] }

        /// Line and column (1-based, in bytes) of offset `at`.
        func position(_ at: Int) -> String {
            var line = 1, column = 1
            for b in bytes[..<min(at, bytes.count)] {
                if b == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
            }
            return "line \(line), column \(column)"
        }

        mutating func report(_ text: String, at: Int? = nil) { problems.append("\(position(at ?? i)): \(text)") }

        mutating func skipSpace() {
            while let b = peek {
                if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 {
                    i += 1
                } else if b == UInt8(ascii: "/"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "/") || bytes[i + 1] == UInt8(ascii: "*") {
                    report("a comment; JSON has none (remove it: `fieldsync config example --plain` prints the example without them)")
                    // Skip it so that the rest is still checked.
                    if bytes[i + 1] == UInt8(ascii: "/") {
                        while let c = peek, c != 0x0A { i += 1 }
                    } else {
                        i += 2
                        while i + 1 < bytes.count, !(bytes[i] == UInt8(ascii: "*") && bytes[i + 1] == UInt8(ascii: "/")) { i += 1 }
                        i = min(bytes.count, i + 2)
                    }
                } else {
                    return
                }
            }
        }

        /// Parses one value; false when the rest cannot be read.
        mutating func parseValue(path: String) -> Bool {
            skipSpace()
            guard let b = peek else {
                report("the file ends where a value was expected")
                return false
            }
            if b == UInt8(ascii: "{") || b == UInt8(ascii: "[") {
                guard depth < StrictJSON.maxDepth else {
                    report("arrays and objects nested more than \(StrictJSON.maxDepth) deep")
                    return false
                }
                depth += 1
                defer { depth -= 1 }
                return b == UInt8(ascii: "{") ? parseObject(path: path) : parseArray(path: path)
            }
            switch b {
            case UInt8(ascii: "\""): return parseString() != nil
            case UInt8(ascii: "t"): return literal("true")
            case UInt8(ascii: "f"): return literal("false")
            case UInt8(ascii: "n"): return literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return parseNumber()
            default:
                report("unexpected `\(Character(UnicodeScalar(b)))` where a value was expected")
                return false
            }
        }

        mutating func literal(_ word: String) -> Bool {
            let w = Array(word.utf8)
            guard bytes.count - i >= w.count, Array(bytes[i..<i + w.count]) == w else {
                report("unexpected text where a value was expected (`true`, `false`, `null`, a number, a string, an array or an object)")
                return false
            }
            i += w.count
            return true
        }

        mutating func parseNumber() -> Bool {
            let start = i
            if peek == UInt8(ascii: "-") { i += 1 }
            func digits() -> Int {
                var n = 0
                while let d = peek, d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") { i += 1; n += 1 }
                return n
            }
            let intStart = i
            let n = digits()
            guard n > 0 else { report("a number needs digits", at: start); return false }
            if n > 1, bytes[intStart] == UInt8(ascii: "0") { report("a number must not start with 0", at: start) }
            if peek == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { report("a number needs digits after the decimal point", at: start); return false }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                i += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { report("a number needs digits in its exponent", at: start); return false }
            }
            return true
        }

        /// Parses a string and returns its text (escapes decoded), or nil after reporting.
        mutating func parseString() -> String? {
            let start = i
            i += 1
            var out: [UInt8] = []
            while let b = peek {
                i += 1
                switch b {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let e = peek else { break }
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        guard bytes.count - i >= 4, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else {
                            report("a \\u escape needs four hex digits", at: i - 2)
                            return nil
                        }
                        i += 4
                        out += Array(String(UnicodeScalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
                    default:
                        report("unknown escape `\\\(Character(UnicodeScalar(e)))` in a string", at: i - 2)
                        return nil
                    }
                case 0x00..<0x20:
                    report("a control character (a line break or tab) inside a string; write it as \\n or \\t", at: i - 1)
                    return nil
                default:
                    out.append(b)
                }
            }
            report("a string that is never closed", at: start)
            return nil
        }

        mutating func parseObject(path: String) -> Bool {
            i += 1
            var seen: [String: Int] = [:]
            skipSpace()
            if peek == UInt8(ascii: "}") { i += 1; return true }
            while true {
                skipSpace()
                let keyAt = i
                guard peek == UInt8(ascii: "\"") else {
                    if peek == UInt8(ascii: "}") {
                        report("a trailing comma before `}`; JSON allows none (remove it)", at: lastComma)
                        i += 1
                        return true
                    }
                    report(atEnd ? "the file ends inside an object" : "a key must be a string in double quotes")
                    return false
                }
                guard let key = parseString() else { return false }
                let full = path.isEmpty ? key : path + "." + key
                if let first = seen[key] {
                    report("the key `\(full)` is given twice (the first at \(position(first))); JSON readers keep only one of them: remove the other",
                           at: keyAt)
                } else {
                    seen[key] = keyAt
                }
                skipSpace()
                guard peek == UInt8(ascii: ":") else {
                    report("a `:` is missing after the key `\(full)`")
                    return false
                }
                i += 1
                guard parseValue(path: full) else { return false }
                skipSpace()
                if peek == UInt8(ascii: ",") {
                    lastComma = i
                    i += 1
                    continue
                }
                if peek == UInt8(ascii: "}") { i += 1; return true }
                report(atEnd ? "the file ends inside an object (a `}` is missing)" : "a `,` or `}` is missing after the value of `\(full)`")
                return false
            }
        }

        var lastComma = 0

        mutating func parseArray(path: String) -> Bool {
            i += 1
            skipSpace()
            if peek == UInt8(ascii: "]") { i += 1; return true }
            var index = 0
            while true {
                skipSpace()
                if peek == UInt8(ascii: "]"), index > 0 {
                    report("a trailing comma before `]`; JSON allows none (remove it)", at: lastComma)
                    i += 1
                    return true
                }
                guard parseValue(path: "\(path)[\(index)]") else { return false }
                index += 1
                skipSpace()
                if peek == UInt8(ascii: ",") {
                    lastComma = i
                    i += 1
                    continue
                }
                if peek == UInt8(ascii: "]") { i += 1; return true }
                report(atEnd ? "the file ends inside an array (a `]` is missing)" : "a `,` or `]` is missing in `\(path)`")
                return false
            }
        }
    }
}
