// What the record commands share: exit codes and error reporting, times, the JSON and CSV forms of a
// record (export, import, `--json`), and a progress line for long operations. Formats: docs/cli.md.

import ArgumentParser
import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Exit codes and errors

/// The exit codes of the record commands (docs/cli.md, "Exit codes"): the classes of the app API's
/// errors (`FieldSyncError.Code`, BSD sysexits).
typealias RecordExit = FieldSyncError.Code

/// An error of a record command: the app API's error (what was wrong, what to do, and its class).
typealias RecordCommandError = FieldSyncError

/// Runs a record command's body and turns every error into one message on standard error (a JSON
/// object with `--json`) and the exit code of `RecordExit`. Usage errors found by the parser
/// (`ValidationError`, and the library's `.invalidArgument`) keep ArgumentParser's text and exit 64.
func reportingErrors(json: Bool, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ValidationError {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch let e as FieldSyncError where e.code == .invalidArgument {
        throw ValidationError(e.message)
    } catch {
        let e = classify(error)
        if json {
            var o: [(String, JSONValue)] = [("error", .string(e.message)), ("exitCode", .int(Int64(e.code.exitCode)))]
            if let f = e.field { o.append(("field", .string(f))) }
            FileHandle.standardError.write(Data((JSONValue.object(o).serialized + "\n").utf8))
        } else {
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
        }
        throw ExitCode(e.code.exitCode)
    }
}

/// Maps library errors to a message that says what to do and an exit code (`FieldSyncError.init(_:)`
/// holds the mapping of the layers below).
func classify(_ error: any Error) -> RecordCommandError {
    if let e = error as? CLIError { return RecordCommandError(.failed, e.description) }
    return FieldSyncError(error)
}

/// Runs a check of the app API while parsing the command line: its error becomes a `ValidationError`
/// (ArgumentParser prints it with the usage, exit 64).
func checkingArgument<T>(_ body: () throws(FieldSyncError) -> T) throws -> T {
    do { return try body() } catch { throw ValidationError(error.message) }
}

// MARK: - Time

/// Times on the command line and in exports: ISO 8601 in UTC with milliseconds
/// (`2026-11-29T06:30:18.123Z`). Input also takes a date (`2026-11-29`, midnight UTC), an offset
/// (`+02:00`), milliseconds since the Unix epoch, `now`, and durations from now (`+24h`, `-30m`, `-7d`).
enum TimeText {
    /// `ms` (since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    static func format(_ ms: Int64) -> String {
        let (secs, milli) = ms.quotientAndRemainder(dividingBy: 1000)
        var s = time_t(milli < 0 ? secs - 1 : secs)
        var tm = Glibc.tm()
        gmtime_r(&s, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(milli < 0 ? milli + 1000 : milli))
    }

    /// `ms` as `YYYY-MM-DD HH:MM` (UTC), for tables.
    static func short(_ ms: Int64) -> String {
        let f = format(ms)
        return String(f.prefix(10)) + " " + String(f.dropFirst(11).prefix(5))
    }

    /// Parses a time; nil if the text is none of the accepted forms.
    static func parse(_ text: String, now: UInt64) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t == "now" { return Int64(now) }
        if let d = duration(t) { return Int64(now) + d }
        if t.allSatisfy(\.isNumber), t.count >= 4, let ms = Int64(t) { return ms }
        return iso(t)
    }

    /// `+24h`, `-30m`, `-7d`, `+90s` in ms (signed); nil otherwise.
    static func duration(_ t: String) -> Int64? {
        guard let sign = t.first, sign == "+" || sign == "-", let unit = t.last, let n = Int64(t.dropFirst().dropLast()), n >= 0 else {
            return nil
        }
        let scale: Int64
        switch unit {
        case "s": scale = 1000
        case "m": scale = 60_000
        case "h": scale = 3_600_000
        case "d": scale = 86_400_000
        default: return nil
        }
        let (v, o) = n.multipliedReportingOverflow(by: scale)
        return o ? nil : (sign == "-" ? -v : v)
    }

    /// `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or `±HH:MM` (`RecordImport.isoTime`).
    static func iso(_ t: String) -> Int64? { RecordImport.isoTime(t) }
}

/// Parses a time option, or throws a usage error naming the option and the accepted forms.
func parseTimeOption(_ text: String, option: String, now: UInt64) throws -> Int64 {
    guard let t = TimeText.parse(text, now: now) else {
        throw ValidationError("\(option) \(text) is not a time; use 2026-11-29T06:30:00Z, 2026-11-29, +24h, -30m, now or ms since 1970")
    }
    return t
}

// MARK: - JSON

/// A JSON value with ordered object keys, so records print their fields in schema order and numbers
/// print exactly (doubles in their shortest round-trip form).
indirect enum JSONValue {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// Compact JSON text.
    var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d): out += d.isFinite ? (d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)") : "null"
        case let .string(s): Self.quote(s, into: &out)
        case let .array(a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.write(to: &out)
            }
            out += "]"
        case let .object(o):
            out += "{"
            for (i, (k, v)) in o.enumerated() {
                if i > 0 { out += "," }
                Self.quote(k, into: &out)
                out += ":"
                v.write(to: &out)
            }
            out += "}"
        }
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(c)
            }
        }
        out += "\""
    }
}

// MARK: - Records as JSON objects (export, import, --json)

/// The portable form of a record: `id`, `kind`, `scope`, then each schema field that has a value, by
/// name. Registers hold their value (times as ISO 8601 text, locations as `{lat, lon, place}`, record
/// and device references as hex); a lattice holds its level name, with `<name>Generation` when the
/// generation is above 0; sets and logs hold arrays of text. Import reads exactly this form back.
enum RecordForm {
    static func object(_ record: Record, schemas: SchemaRegistry) -> [(String, JSONValue)] {
        var o: [(String, JSONValue)] = [("id", .string(record.id.description)), ("kind", .string(record.kind.name)),
                                        ("scope", .string(record.scope.path))]
        guard let schema = schemas.schemas[record.kind] else { return o }
        for spec in schema.fields {
            switch spec.kind {
            case .register:
                if let v = record.value(spec.id) { o.append((spec.name, json(v))) }
            case let .lattice(levels):
                if let p = record.lattices[spec.id]?.point {
                    o.append((spec.name, .string(Int(p.level) < levels.count ? levels[Int(p.level)] : String(p.level))))
                    if p.generation > 0 { o.append((spec.name + "Generation", .int(Int64(p.generation)))) }
                }
            case .set:
                let e = record.elements(spec.id)
                if !e.isEmpty { o.append((spec.name, .array(e.map { .string($0) }))) }
            case .log:
                let n = record.notes(spec.id)
                if !n.isEmpty { o.append((spec.name, .array(n.map { .string($0.text) }))) }
            }
        }
        return o
    }

    static func json(_ v: FieldValue) -> JSONValue {
        switch v {
        case .null: .null
        case let .string(s): .string(s)
        case let .int(i): .int(i)
        case let .double(d): .double(d)
        case let .bool(b): .bool(b)
        case let .time(t): .string(TimeText.format(t))
        case let .location(l): .object([("lat", .double(l.latitude)), ("lon", .double(l.longitude)), ("place", .string(l.placeName))])
        case let .record(r): .string(r.description)
        case let .device(d): .string(d.description)
        case let .symbol(s): .string(s)
        }
    }

    /// A value for people: text as is, times in ISO 8601, locations with their place name.
    static func display(_ v: FieldValue) -> String {
        switch v {
        case .null: "(cleared)"
        case let .string(s): s
        case let .time(t): TimeText.format(t)
        case let .symbol(s): s
        default: v.description
        }
    }
}

/// A bad value in one import row (the rules of a row and the CSV reader live in FieldSyncNode's
/// RecordImport.swift, where they are fuzzed).
typealias RowError = ImportRowError

// MARK: - CSV (RFC 4180)

enum CSV {
    /// The columns of records of `kinds`: `id`, `kind`, `scope`, then every field name of each kind in
    /// schema order (a location is three columns `NAME.lat`, `NAME.lon`, `NAME.place`; a lattice adds
    /// `NAMEGeneration`), each name once.
    static func columns(kinds: [RecordKind], schemas: SchemaRegistry) -> [String] {
        var cols = ["id", "kind", "scope"]
        var seen = Set(cols)
        for kind in kinds {
            for spec in schemas.schemas[kind]?.fields ?? [] {
                let names: [String]
                switch spec.kind {
                case .register(.location): names = ["\(spec.name).lat", "\(spec.name).lon", "\(spec.name).place"]
                case .lattice: names = [spec.name, spec.name + "Generation"]
                default: names = [spec.name]
                }
                for n in names where seen.insert(n).inserted { cols.append(n) }
            }
        }
        return cols
    }

    /// The cells of one record (empty for a field without a value; sets and logs as a JSON array).
    static func cells(_ object: [(String, JSONValue)], columns: [String]) -> [String] {
        var flat: [String: String] = [:]
        for (k, v) in object {
            switch v {
            case let .object(parts): for (pk, pv) in parts { flat["\(k).\(pk)"] = cellText(pv) }
            default: flat[k] = cellText(v)
            }
        }
        return columns.map { neutralized(flat[$0] ?? "") }
    }

    /// The formula neutralisation and its inverse are `CSVText`'s (FieldSyncNode), shared with the reports.
    static func neutralized(_ cell: String) -> String { CSVText.neutralized(cell) }
    static func restored(_ cell: String) -> String { CSVText.restored(cell) }

    static func cellText(_ v: JSONValue) -> String {
        switch v {
        case .null: ""
        case let .string(s): s
        case .array: v.serialized
        default: v.serialized
        }
    }

    static func line(_ cells: [String]) -> String { CSVText.line(cells) }

    /// Parses CSV text into rows of cells, each with the line number it starts on.
    /// - Throws: `RowError` for an unterminated quote or text after a closing quote.
    static func parse(_ text: String) throws(RowError) -> [(line: Int, cells: [String])] {
        var reader = CSVReader(bytes: Array(text.utf8))
        var rows: [(line: Int, cells: [String])] = []
        while let row = try reader.next() { rows.append(row) }
        return rows
    }
}

// MARK: - Progress

/// A progress line on standard error for long operations, shown only when standard error is a
/// terminal (never in pipes, files or tests), redrawn at most ten times a second.
struct ProgressLine {
    let label: String
    let total: Int
    let enabled: Bool
    private var lastDraw: UInt64 = 0

    init(_ label: String, total: Int, minimum: Int = 500) {
        self.label = label
        self.total = total
        enabled = isatty(STDERR_FILENO) == 1 && total >= minimum
    }

    mutating func update(_ done: Int) {
        guard enabled else { return }
        let t = wallClockMilliseconds()
        guard t - lastDraw >= 100 || done == total else { return }
        lastDraw = t
        FileHandle.standardError.write(Data("\r\(label) \(done)/\(total) (\(total == 0 ? 100 : done * 100 / total)%)\u{1B}[K".utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
