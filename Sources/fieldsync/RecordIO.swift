// What the record commands share: exit codes and error reporting, times, the JSON and CSV forms of a
// record (export, import, `--json`), and a progress line for long operations. Formats: docs/cli.md.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Exit codes and errors

/// The exit codes of the record commands (docs/cli.md, "Exit codes"). The values follow BSD sysexits.
enum RecordExit: Int32 {
    /// Done.
    case ok = 0
    /// The operation failed: the store, the keystore, or the disk refused it.
    case failed = 1
    /// The command line is wrong: an unknown option, a malformed value, an edit that means nothing.
    case usage = 64
    /// The data is wrong: the schema refuses a value, an import row is bad, a status cannot move that way.
    case data = 65
    /// The record (or the input file) does not exist.
    case notFound = 66
    /// This device may not do it: the scope is outside its certificate, or it holds no key for it.
    case permission = 77
}

/// An error of a record command: what was wrong, what to do, and the exit code.
struct RecordCommandError: Error, CustomStringConvertible {
    var exit: RecordExit
    var message: String
    /// The schema field concerned, if any.
    var field: String?

    init(_ exit: RecordExit, _ message: String, field: String? = nil) {
        self.exit = exit
        self.message = message
        self.field = field
    }

    var description: String { message }
}

/// Runs a record command's body and turns every error into one message on standard error (a JSON
/// object with `--json`) and the exit code of `RecordExit`. Usage errors found by the parser
/// (`ValidationError`) keep ArgumentParser's text and exit 64.
func reportingErrors(json: Bool, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ValidationError {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch {
        let e = classify(error)
        if json {
            var o: [(String, JSONValue)] = [("error", .string(e.message)), ("exitCode", .int(Int64(e.exit.rawValue)))]
            if let f = e.field { o.append(("field", .string(f))) }
            FileHandle.standardError.write(Data((JSONValue.object(o).serialized + "\n").utf8))
        } else {
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
        }
        throw ExitCode(e.exit.rawValue)
    }
}

/// Maps library errors to a message that says what to do and an exit code.
func classify(_ error: any Error) -> RecordCommandError {
    switch error {
    case let e as RecordCommandError:
        return e
    case let e as RecordError:
        let what = e.field.map { "field \"\($0)\": \(e.detail)" } ?? e.detail
        return RecordCommandError(.data, "the schema refuses the edit: \(what); fix the value and retry", field: e.field)
    case let e as WriteError:
        return RecordCommandError(.failed, "write refused: \(e.reason)")
    case let e as StoreError:
        return RecordCommandError(.failed, "store: \(e)")
    case let e as Scope.Invalid:
        return RecordCommandError(.usage, "\(e)")
    case let e as CLIError:
        return RecordCommandError(.failed, e.description)
    default:
        return RecordCommandError(.failed, "\(error)")
    }
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

    /// `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or `±HH:MM`.
    static func iso(_ t: String) -> Int64? {
        let u = Array(t.utf8)
        func num(_ a: Int, _ n: Int) -> Int? {
            guard a + n <= u.count else { return nil }
            var v = 0
            for c in u[a..<(a + n)] {
                guard (48...57).contains(c) else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard u.count >= 10, let y = num(0, 4), u[4] == 45, let mo = num(5, 2), u[7] == 45, let d = num(8, 2),
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        var h = 0, mi = 0, s = 0, ms = 0, offset = 0
        var i = 10
        if u.count > 10 {
            guard u[10] == 84 || u[10] == 32, let hh = num(11, 2), u.count > 13, u[13] == 58, let mm = num(14, 2) else { return nil }
            h = hh
            mi = mm
            i = 16
            if i < u.count, u[i] == 58 {
                guard let ss = num(i + 1, 2) else { return nil }
                s = ss
                i += 3
                if i < u.count, u[i] == 46 {
                    var digits = 0
                    i += 1
                    while i < u.count, (48...57).contains(u[i]) {
                        if digits < 3 { ms = ms * 10 + Int(u[i] - 48) }
                        digits += 1
                        i += 1
                    }
                    guard digits > 0 else { return nil }
                    if digits < 3 { for _ in digits..<3 { ms *= 10 } }
                }
            }
            guard i < u.count else { return nil }  // a time needs a zone: Z or ±HH:MM
            if u[i] == 90, i == u.count - 1 {
                offset = 0
            } else if u[i] == 43 || u[i] == 45, let oh = num(i + 1, 2), u.count == i + 6, u[i + 3] == 58, let om = num(i + 4, 2) {
                offset = (oh * 60 + om) * (u[i] == 43 ? 1 : -1)
            } else {
                return nil
            }
            guard h < 24, mi < 60, s < 61 else { return nil }
        }
        var tm = Glibc.tm()
        tm.tm_year = Int32(y - 1900)
        tm.tm_mon = Int32(mo - 1)
        tm.tm_mday = Int32(d)
        tm.tm_hour = Int32(h)
        tm.tm_min = Int32(mi)
        tm.tm_sec = Int32(s)
        let secs = Int64(timegm(&tm)) - Int64(offset) * 60
        return secs * 1000 + Int64(ms)
    }
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

    /// The keys a record object may hold besides the schema's own.
    static let identityKeys: Set<String> = ["id", "kind", "scope"]

    /// Builds the creating edit of one import row (a JSON object, or a CSV row as text cells).
    /// - Throws: `RowError` naming the column and what is wrong with it.
    static func creatingEdit(_ row: [String: Any], schemas: SchemaRegistry, author: DeviceID, hlc: HLCTimestamp,
                             newID: () -> RecordID) throws(RowError) -> (edit: RecordEdit, priority: Priority) {
        guard let kindText = text(row["kind"]), !kindText.isEmpty else { throw RowError("kind", "missing; use incident or visit") }
        let kind = RecordKind(kindText)
        guard let schema = schemas.schemas[kind] else {
            throw RowError("kind", "unknown kind \"\(kindText)\"; use one of \(schemas.schemas.keys.sorted().map(\.name).joined(separator: ", "))")
        }
        guard let scopeText = text(row["scope"]), !scopeText.isEmpty else { throw RowError("scope", "missing") }
        let scope: Scope
        do { scope = try Scope(scopeText) } catch { throw RowError("scope", error.reason) }
        let id: RecordID
        if let idText = text(row["id"]), !idText.isEmpty {
            guard let r = RecordID(hex: idText.lowercased()) else {
                throw RowError("id", "\"\(idText)\" is not 32 hex digits (leave it empty for a new id)")
            }
            id = r
        } else {
            id = newID()
        }
        var known = identityKeys
        var actions: [Action] = []
        var priority = Priority.normal
        for spec in schema.fields {
            known.insert(spec.name)
            switch spec.kind {
            case let .register(type):
                if type == .location {
                    known.formUnion(["\(spec.name).lat", "\(spec.name).lon", "\(spec.name).place"])
                    guard let l = try location(row, spec.name) else { continue }
                    actions.append(.set(field: spec.id, value: .location(l)))
                    continue
                }
                guard let raw = present(row[spec.name]) else { continue }
                let v = try value(raw, type: type, field: spec.name)
                if let why = type.mismatch(v) { throw RowError(spec.name, why) }
                if spec.id == Incident.Field.priority, kind == .incident, case let .symbol(s) = v,
                   let p = Priority(name: s) { priority = p }
                actions.append(.set(field: spec.id, value: v))
            case let .lattice(levels):
                let genKey = spec.name + "Generation"
                known.insert(genKey)
                guard let raw = present(row[spec.name]) else {
                    if present(row[genKey]) != nil { throw RowError(genKey, "given without \(spec.name)") }
                    continue
                }
                guard let name = text(raw), let level = levels.firstIndex(of: name) else {
                    throw RowError(spec.name, "\"\(raw)\" is not one of \(levels.joined(separator: ", "))")
                }
                var generation: UInt32 = 0
                if let g = present(row[genKey]) {
                    guard let t = text(g) ?? (g as? NSNumber).map({ "\($0)" }), let n = UInt32(t) else {
                        throw RowError(genKey, "\"\(g)\" is not a whole number")
                    }
                    generation = n
                }
                actions.append(.raise(field: spec.id, to: LatticePoint(generation: generation, level: UInt8(level))))
            case .set:
                for e in try list(row[spec.name], field: spec.name) { actions.append(.add(field: spec.id, element: Token(e))) }
            case .log:
                for e in try list(row[spec.name], field: spec.name) { actions.append(.append(field: spec.id, text: e)) }
            }
        }
        for key in row.keys.sorted() where !known.contains(key) && present(row[key]) != nil {
            throw RowError(key, "\(kind) has no field \"\(key)\"; its fields are \(schema.fields.map(\.name).joined(separator: ", "))")
        }
        let edit = RecordEdit(record: id, kind: kind, scope: scope, author: author, hlc: hlc, creates: true, actions: actions)
        do { try schema.validate(edit) } catch { throw RowError(error.field ?? "", error.detail) }
        return (edit, priority)
    }

    /// nil for an absent key, JSON null or an empty CSV cell.
    static func present(_ v: Any?) -> Any? {
        switch v {
        case nil, is NSNull: nil
        case let s as String where s.isEmpty: nil
        default: v
        }
    }

    static func text(_ v: Any?) -> String? { v as? String }

    static func number(_ v: Any) -> Double? {
        if let s = v as? String { return Double(s.trimmingCharacters(in: .whitespaces)) }
        if v is Bool { return nil }
        return (v as? NSNumber)?.doubleValue
    }

    static func value(_ raw: Any, type: ValueType, field: String) throws(RowError) -> FieldValue {
        switch type {
        case .string:
            guard let s = raw as? String else { throw RowError(field, "expected text") }
            return .string(s)
        case .symbol:
            guard let s = raw as? String else { throw RowError(field, "expected text") }
            return .symbol(s)
        case .int:
            if let s = raw as? String, let i = Int64(s.trimmingCharacters(in: .whitespaces)) { return .int(i) }
            if let n = raw as? NSNumber, !(raw is Bool), let i = Int64(exactly: n.doubleValue) { return .int(i) }
            throw RowError(field, "\"\(raw)\" is not a whole number")
        case .double:
            guard let d = number(raw), d.isFinite else { throw RowError(field, "\"\(raw)\" is not a number") }
            return .double(d)
        case .bool:
            if let b = raw as? Bool { return .bool(b) }
            if let s = raw as? String, ["true", "false"].contains(s.lowercased()) { return .bool(s.lowercased() == "true") }
            throw RowError(field, "\"\(raw)\" is not true or false")
        case .time:
            if let s = raw as? String, let t = TimeText.iso(s) ?? (s.allSatisfy(\.isNumber) ? Int64(s) : nil) { return .time(t) }
            if let n = raw as? NSNumber, !(raw is Bool), let t = Int64(exactly: n.doubleValue) { return .time(t) }
            throw RowError(field, "\"\(raw)\" is not a time; use ISO 8601 like 2026-11-29T06:30:00.000Z or ms since 1970")
        case .record:
            guard let s = raw as? String, let r = RecordID(hex: s.lowercased()) else {
                throw RowError(field, "\"\(raw)\" is not a record id (32 hex digits)")
            }
            return .record(r)
        case .device:
            guard let s = raw as? String, let d = DeviceID(hex: s.lowercased()) else {
                throw RowError(field, "\"\(raw)\" is not a device id (32 hex digits)")
            }
            return .device(d)
        case .location:
            throw RowError(field, "a location is an object {lat, lon, place}")
        }
    }

    /// A location from a JSON object `{lat, lon, place}` or CSV cells `NAME.lat`, `NAME.lon`, `NAME.place`.
    static func location(_ row: [String: Any], _ name: String) throws(RowError) -> Location? {
        var lat = present(row["\(name).lat"]), lon = present(row["\(name).lon"]), place = present(row["\(name).place"])
        if let o = present(row[name]) {
            guard let d = o as? [String: Any] else { throw RowError(name, "expected an object {\"lat\": 33.4, \"lon\": 104.9, \"place\": \"...\"}") }
            lat = present(d["lat"])
            lon = present(d["lon"])
            place = present(d["place"])
        }
        if lat == nil, lon == nil, place == nil { return nil }
        guard let la = lat.flatMap(number) else { throw RowError("\(name).lat", "missing or not a number") }
        guard let lo = lon.flatMap(number) else { throw RowError("\(name).lon", "missing or not a number") }
        let l = Location(latitude: la, longitude: lo, placeName: (place as? String) ?? "")
        if let why = l.invalidReason() { throw RowError(name, why) }
        return l
    }

    /// A set or log column: a JSON array of text (in CSV, the array as text in one cell).
    static func list(_ raw: Any?, field: String) throws(RowError) -> [String] {
        guard let raw = present(raw) else { return [] }
        var value = raw
        if let s = raw as? String {
            guard let data = s.data(using: .utf8), let parsed = try? JSONSerialization.jsonObject(with: data) else {
                throw RowError(field, "expected a JSON array of text like [\"a\",\"b\"]")
            }
            value = parsed
        }
        guard let a = value as? [Any], let strings = a as? [String] else { throw RowError(field, "expected an array of text") }
        return strings
    }
}

/// A bad value in one import row.
struct RowError: Error {
    var column: String
    var reason: String
    init(_ column: String, _ reason: String) {
        self.column = column
        self.reason = reason
    }
}

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

    /// Characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection"): `=`, `+`,
    /// `-`, `@`, tab and carriage return.
    static let formulaStarts: Set<Unicode.Scalar> = ["=", "+", "-", "@", "\t", "\r"]

    /// Whether `cell` is a plain decimal number (`-12`, `-0.5`, `1.5e-07`): a spreadsheet reads it as a
    /// number, never as a formula, so numeric cells keep their sign as is.
    static func isPlainNumber(_ cell: Substring) -> Bool {
        var u = cell.unicodeScalars[...]
        if u.first == "-" { u = u.dropFirst() }
        func digits() -> Int {
            let n = u.prefix { ("0"..."9").contains($0) }.count
            u = u.dropFirst(n)
            return n
        }
        guard digits() > 0 else { return false }
        if u.first == "." {
            u = u.dropFirst()
            guard digits() > 0 else { return false }
        }
        if u.first == "e" || u.first == "E" {
            u = u.dropFirst()
            if u.first == "-" || u.first == "+" { u = u.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return u.isEmpty
    }

    /// Whether the cell, after any leading single quotes, starts like a formula (and is not a number).
    static func startsLikeFormula(_ cell: Substring) -> Bool {
        let rest = cell.drop { $0 == "'" }
        guard let first = rest.unicodeScalars.first, formulaStarts.contains(first) else { return false }
        return !isPlainNumber(rest)
    }

    /// An exported cell, safe to open in a spreadsheet: a cell that would start a formula gets a single
    /// quote in front (OWASP's advice), and so does one that already starts with quotes before such a
    /// character, so that `restored` gives back the original exactly. Numbers are left as they are.
    static func neutralized(_ cell: String) -> String {
        startsLikeFormula(cell[...]) ? "'" + cell : cell
    }

    /// The inverse of `neutralized`, applied to every imported cell: one leading single quote is removed
    /// from a cell that starts with quotes and then a formula character. Other cells are unchanged.
    static func restored(_ cell: String) -> String {
        cell.first == "'" && startsLikeFormula(cell[...]) ? String(cell.dropFirst()) : cell
    }

    static func cellText(_ v: JSONValue) -> String {
        switch v {
        case .null: ""
        case let .string(s): s
        case .array: v.serialized
        default: v.serialized
        }
    }

    static func line(_ cells: [String]) -> String {
        cells.map { c in
            guard c.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) || c.first == " " || c.last == " " else { return c }
            return "\"" + c.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }.joined(separator: ",") + "\r\n"
    }

    /// Parses CSV text into rows of cells, each with the line number it starts on.
    /// - Throws: `RowError` for an unterminated quote or text after a closing quote.
    static func parse(_ text: String) throws(RowError) -> [(line: Int, cells: [String])] {
        var reader = CSVReader(bytes: Array(text.utf8))
        var rows: [(line: Int, cells: [String])] = []
        while let row = try reader.next() { rows.append(row) }
        return rows
    }
}

/// Reads RFC 4180 CSV one row at a time from a file (64 KiB at a time) or from bytes in memory: the
/// memory it holds is one row and one read buffer, whatever the size of the file.
struct CSVReader {
    private let fd: Int32?
    private var buffer: [UInt8]
    private var i = 0
    private var atEnd: Bool
    private var started = false
    private var line = 1

    /// A reader of bytes in memory.
    init(bytes: [UInt8]) {
        fd = nil
        buffer = bytes
        atEnd = true
    }

    /// A reader of the open file `fd` (not closed by the reader).
    init(fileDescriptor: Int32) {
        fd = fileDescriptor
        buffer = []
        atEnd = false
    }

    /// The next byte without consuming it, refilling the buffer from the file when needed.
    private mutating func peek() throws(RowError) -> UInt8? {
        if i < buffer.count { return buffer[i] }
        guard !atEnd, let fd else { return nil }
        buffer = [UInt8](repeating: 0, count: 65_536)
        var n: Int
        repeat {
            n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        } while n < 0 && errno == EINTR
        guard n >= 0 else { throw RowError("line \(line)", "cannot read the file: \(String(cString: strerror(errno)))") }
        buffer.removeSubrange(n...)
        i = 0
        if n == 0 { atEnd = true; return nil }
        return buffer[0]
    }

    /// The next row and the line it starts on; nil at the end of the input.
    /// - Throws: `RowError` for an unterminated quote or text after a closing quote.
    mutating func next() throws(RowError) -> (line: Int, cells: [String])? {
        if !started {
            started = true
            // A byte-order mark from a spreadsheet (the first read holds the whole mark unless the file is shorter).
            _ = try peek()
            if buffer[i...].starts(with: [0xEF, 0xBB, 0xBF]) { i += 3 }
        }
        var row: [String] = []
        var cell: [UInt8] = []
        var rowLine = line
        var inQuotes = false, afterQuote = false, rowHasContent = false
        func endCell() {
            row.append(String(decoding: cell, as: UTF8.self))
            cell.removeAll(keepingCapacity: true)
            afterQuote = false
        }
        while let c = try peek() {
            i += 1
            if inQuotes {
                if c == 34 {
                    if try peek() == 34 {
                        cell.append(34)
                        i += 1
                    } else {
                        inQuotes = false
                        afterQuote = true
                    }
                } else {
                    if c == 10 { line += 1 }
                    cell.append(c)
                }
            } else if c == 44 {
                endCell()
                rowHasContent = true
            } else if c == 10 || c == 13 {
                if c == 13, try peek() == 10 { i += 1 }
                line += 1
                if rowHasContent || !cell.isEmpty || afterQuote {
                    endCell()
                    return (rowLine, row)
                }
                row = []
                rowLine = line
            } else if c == 34, cell.isEmpty, !afterQuote {
                inQuotes = true
                rowHasContent = true
            } else {
                if afterQuote { throw RowError("line \(line)", "text after a closing quote; quote the whole cell and double inner quotes") }
                cell.append(c)
                rowHasContent = true
            }
        }
        if inQuotes { throw RowError("line \(rowLine)", "a quoted cell is never closed") }
        if rowHasContent || !cell.isEmpty || afterQuote {
            endCell()
            return (rowLine, row)
        }
        return nil
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
