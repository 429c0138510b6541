// Reading records to import (`fieldsync record import`, docs/cli.md): the CSV reader and the checks that
// turn one row (a JSON object, or CSV cells by column name) into the creating edit of a record. These
// read files a user was handed, so they are fuzzed like the decoders of peer bytes (docs/fuzzing.md).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A bad value in one import row, or bad CSV.
public struct ImportRowError: Error, Sendable {
    /// The column (or `line N`) the problem is in.
    public var column: String
    /// What is wrong, for the user.
    public var reason: String

    /// Creates an error.
    public init(_ column: String, _ reason: String) {
        self.column = column
        self.reason = reason
    }
}

/// The rules of an import row.
public enum RecordImport {
    /// The keys a record object may hold besides the schema's own.
    public static let identityKeys: Set<String> = ["id", "kind", "scope"]

    /// Builds the creating edit of one import row (a JSON object, or a CSV row as text cells).
    /// - Throws: `ImportRowError` naming the column and what is wrong with it.
    public static func creatingEdit(_ row: [String: Any], schemas: SchemaRegistry, author: DeviceID, hlc: HLCTimestamp,
                             newID: () -> RecordID) throws(ImportRowError) -> (edit: RecordEdit, priority: Priority) {
        guard let kindText = text(row["kind"]), !kindText.isEmpty else { throw ImportRowError("kind", "missing; use incident or visit") }
        let kind = RecordKind(kindText)
        guard let schema = schemas.schemas[kind] else {
            throw ImportRowError("kind", "unknown kind \"\(kindText)\"; use one of \(schemas.schemas.keys.sorted().map(\.name).joined(separator: ", "))")
        }
        guard let scopeText = text(row["scope"]), !scopeText.isEmpty else { throw ImportRowError("scope", "missing") }
        let scope: Scope
        do { scope = try Scope(scopeText) } catch { throw ImportRowError("scope", error.reason) }
        let id: RecordID
        if let idText = text(row["id"]), !idText.isEmpty {
            guard let r = RecordID(hex: idText.lowercased()) else {
                throw ImportRowError("id", "\"\(idText)\" is not 32 hex digits (leave it empty for a new id)")
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
                if let why = type.mismatch(v) { throw ImportRowError(spec.name, why) }
                if spec.id == Incident.Field.priority, kind == .incident, case let .symbol(s) = v,
                   let p = Priority(name: s) { priority = p }
                actions.append(.set(field: spec.id, value: v))
            case let .lattice(levels):
                let genKey = spec.name + "Generation"
                known.insert(genKey)
                guard let raw = present(row[spec.name]) else {
                    if present(row[genKey]) != nil { throw ImportRowError(genKey, "given without \(spec.name)") }
                    continue
                }
                guard let name = text(raw), let level = levels.firstIndex(of: name) else {
                    throw ImportRowError(spec.name, "\"\(raw)\" is not one of \(levels.joined(separator: ", "))")
                }
                var generation: UInt32 = 0
                if let g = present(row[genKey]) {
                    guard let t = text(g) ?? (g as? NSNumber).map({ "\($0)" }), let n = UInt32(t) else {
                        throw ImportRowError(genKey, "\"\(g)\" is not a whole number")
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
            throw ImportRowError(key, "\(kind) has no field \"\(key)\"; its fields are \(schema.fields.map(\.name).joined(separator: ", "))")
        }
        let edit = RecordEdit(record: id, kind: kind, scope: scope, author: author, hlc: hlc, creates: true, actions: actions)
        do { try schema.validate(edit) } catch { throw ImportRowError(error.field ?? "", error.detail) }
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

    /// The value as text, if it is text.
    static func text(_ v: Any?) -> String? { v as? String }

    /// The value as a number: a JSON number, or text holding one.
    static func number(_ v: Any) -> Double? {
        if let s = v as? String { return Double(s.trimmingCharacters(in: .whitespaces)) }
        if v is Bool { return nil }
        return (v as? NSNumber)?.doubleValue
    }

    /// The field value of `type` that `raw` (JSON value or CSV text) holds.
    static func value(_ raw: Any, type: ValueType, field: String) throws(ImportRowError) -> FieldValue {
        switch type {
        case .string:
            guard let s = raw as? String else { throw ImportRowError(field, "expected text") }
            return .string(s)
        case .symbol:
            guard let s = raw as? String else { throw ImportRowError(field, "expected text") }
            return .symbol(s)
        case .int:
            if let s = raw as? String, let i = Int64(s.trimmingCharacters(in: .whitespaces)) { return .int(i) }
            if let n = raw as? NSNumber, !(raw is Bool), let i = Int64(exactly: n.doubleValue) { return .int(i) }
            throw ImportRowError(field, "\"\(raw)\" is not a whole number")
        case .double:
            guard let d = number(raw), d.isFinite else { throw ImportRowError(field, "\"\(raw)\" is not a number") }
            return .double(d)
        case .bool:
            if let b = raw as? Bool { return .bool(b) }
            if let s = raw as? String, ["true", "false"].contains(s.lowercased()) { return .bool(s.lowercased() == "true") }
            throw ImportRowError(field, "\"\(raw)\" is not true or false")
        case .time:
            if let s = raw as? String, let t = isoTime(s) ?? (s.allSatisfy(\.isNumber) ? Int64(s) : nil) { return .time(t) }
            if let n = raw as? NSNumber, !(raw is Bool), let t = Int64(exactly: n.doubleValue) { return .time(t) }
            throw ImportRowError(field, "\"\(raw)\" is not a time; use ISO 8601 like 2026-11-29T06:30:00.000Z or ms since 1970")
        case .record:
            guard let s = raw as? String, let r = RecordID(hex: s.lowercased()) else {
                throw ImportRowError(field, "\"\(raw)\" is not a record id (32 hex digits)")
            }
            return .record(r)
        case .device:
            guard let s = raw as? String, let d = DeviceID(hex: s.lowercased()) else {
                throw ImportRowError(field, "\"\(raw)\" is not a device id (32 hex digits)")
            }
            return .device(d)
        case .location:
            throw ImportRowError(field, "a location is an object {lat, lon, place}")
        }
    }

    /// A location from a JSON object `{lat, lon, place}` or CSV cells `NAME.lat`, `NAME.lon`, `NAME.place`.
    static func location(_ row: [String: Any], _ name: String) throws(ImportRowError) -> Location? {
        var lat = present(row["\(name).lat"]), lon = present(row["\(name).lon"]), place = present(row["\(name).place"])
        if let o = present(row[name]) {
            guard let d = o as? [String: Any] else { throw ImportRowError(name, "expected an object {\"lat\": 33.4, \"lon\": 104.9, \"place\": \"...\"}") }
            lat = present(d["lat"])
            lon = present(d["lon"])
            place = present(d["place"])
        }
        if lat == nil, lon == nil, place == nil { return nil }
        guard let la = lat.flatMap(number) else { throw ImportRowError("\(name).lat", "missing or not a number") }
        guard let lo = lon.flatMap(number) else { throw ImportRowError("\(name).lon", "missing or not a number") }
        let l = Location(latitude: la, longitude: lo, placeName: (place as? String) ?? "")
        if let why = l.invalidReason() { throw ImportRowError(name, why) }
        return l
    }

    /// A set or log column: a JSON array of text (in CSV, the array as text in one cell).
    static func list(_ raw: Any?, field: String) throws(ImportRowError) -> [String] {
        guard let raw = present(raw) else { return [] }
        var value = raw
        if let s = raw as? String {
            guard let data = s.data(using: .utf8), let parsed = try? JSONSerialization.jsonObject(with: data) else {
                throw ImportRowError(field, "expected a JSON array of text like [\"a\",\"b\"]")
            }
            value = parsed
        }
        guard let a = value as? [Any], let strings = a as? [String] else { throw ImportRowError(field, "expected an array of text") }
        return strings
    }

    /// Milliseconds since the Unix epoch of `YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z` or `±HH:MM`.
    /// nil if the text is not one of these forms.
    public static func isoTime(_ t: String) -> Int64? {
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

/// Reads RFC 4180 CSV one row at a time from a file (64 KiB at a time) or from bytes in memory: the
/// memory it holds is one row and one read buffer, whatever the size of the file.
public struct CSVReader {
    private let fd: Int32?
    private var buffer: [UInt8]
    private var i = 0
    private var atEnd: Bool
    private var started = false
    private var line = 1

    /// A reader of bytes in memory.
    public init(bytes: [UInt8]) {
        fd = nil
        buffer = bytes
        atEnd = true
    }

    /// A reader of the open file `fd` (not closed by the reader).
    public init(fileDescriptor: Int32) {
        fd = fileDescriptor
        buffer = []
        atEnd = false
    }

    /// The next byte without consuming it, refilling the buffer from the file when needed.
    private mutating func peek() throws(ImportRowError) -> UInt8? {
        if i < buffer.count { return buffer[i] }
        guard !atEnd, let fd else { return nil }
        buffer = [UInt8](repeating: 0, count: 65_536)
        var n: Int
        repeat {
            n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        } while n < 0 && errno == EINTR
        guard n >= 0 else { throw ImportRowError("line \(line)", "cannot read the file: \(String(cString: strerror(errno)))") }
        buffer.removeSubrange(n...)
        i = 0
        if n == 0 { atEnd = true; return nil }
        return buffer[0]
    }

    /// The next row and the line it starts on; nil at the end of the input.
    /// - Throws: `ImportRowError` for an unterminated quote or text after a closing quote.
    public mutating func next() throws(ImportRowError) -> (line: Int, cells: [String])? {
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
                if afterQuote { throw ImportRowError("line \(line)", "text after a closing quote; quote the whole cell and double inner quotes") }
                cell.append(c)
                rowHasContent = true
            }
        }
        if inQuotes { throw ImportRowError("line \(rowLine)", "a quoted cell is never closed") }
        if rowHasContent || !cell.isEmpty || afterQuote {
            endCell()
            return (rowLine, row)
        }
        return nil
    }
}

