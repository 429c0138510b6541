import FieldSyncTestSupport
import Foundation
import Testing

/// Runs the built `fieldsync` binary for the record commands (incident, visit, list, show, export,
/// import): two devices enrolled once by one HQ, each test with its own store files.
private struct RecordCLI {
    /// The built executable; a test that needs it fails (never skips) when it is not built.
    static var binary: String { get throws { try FieldSyncBinary.required() } }

    static let station = "longnan/wudu/station-017"
    static let village = "longnan/wudu/station-017/village-0412"

    /// The enrolled devices, made once: HQ, a backpack unit `bp` and a station `st` of station-017,
    /// and one epoch key file for the station's scope.
    static let pki: Result<String, any Error> = Result {
        let dir = NSTemporaryDirectory() + "fieldsync-cli-records-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let steps: [[String]] = [
            ["authority", "init", "--dir", "hq", "--key-file", "hq.key"],
            ["device", "init", "--dir", "bp", "--key-file", "bp.key", "--scope", station, "--label", "bp"],
            ["device", "init", "--dir", "st", "--key-file", "st.key", "--scope", station, "--label", "st"],
            ["authority", "enroll", "bp/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "backpack", "--scope", station,
             "--out", "bp.cert"],
            ["authority", "enroll", "st/enrollment.req", "--dir", "hq", "--key-file", "hq.key", "--role", "station", "--scope", station,
             "--out", "st.cert"],
            ["device", "import", "bp.cert", "--dir", "bp", "--key-file", "bp.key", "--root", "hq/root.pub"],
            ["device", "import", "st.cert", "--dir", "st", "--key-file", "st.key", "--root", "hq/root.pub"],
            ["epoch-key", "new", "--scope", station, "--out", "station.epochkey"],
        ]
        for s in steps {
            let r = try run(s, in: dir)
            guard r.status == 0 else { throw SetupFailed(step: s, stderr: r.err) }
        }
        return dir
    }

    let dir: String
    let device: String
    let store: String
    /// A copy of the device's directory for this store: one device directory (its seq guard) belongs to
    /// one store, or writes from two stores would fork the device's logs (docs/node.md, "Restoring a device").
    let deviceDir: String

    /// A CLI for `device` ("bp" or "st") on a store file of its own.
    init(_ device: String = "bp", store: String = #function) throws {
        dir = try Self.pki.get()
        self.device = device
        let tag = UUID().uuidString.prefix(6)
        self.store = "\(store.filter { $0.isLetter || $0.isNumber })-\(device)-\(tag).sqlite"
        deviceDir = "\(device)-\(tag)"
        try FileManager.default.copyItem(atPath: dir + "/" + device, toPath: dir + "/" + deviceDir)
    }

    /// The options naming this device, its store and the epoch key.
    var node: [String] { ["--dir", deviceDir, "--key-file", "\(device).key", "--store", store, "--epoch-key-file", "station.epochkey"] }

    static func run(_ args: [String], in dir: String, executable: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try FieldSyncBinary.run(args, in: dir, executable: executable)
    }

    /// Runs a record command with this device's options appended.
    @discardableResult
    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try Self.run(args + node, in: dir) }

    /// Runs with `--json` and parses standard output as one JSON object; expects exit 0.
    func json(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        let r = try run(args + ["--json"])
        #expect(r.status == 0, "\(args): \(r.err)", sourceLocation: sourceLocation)
        return try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] ?? [:]
    }

    /// The record a write command printed.
    func write(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        let o = try json(args, sourceLocation: sourceLocation)
        let record = o["record"] as? [String: Any] ?? [:]
        #expect(o["written"] as? Bool == true && o["seq"] is Int && o["id"] as? String == record["id"] as? String, "\(args)",
                sourceLocation: sourceLocation)
        return record
    }

    /// `list --json` lines, each parsed.
    func list(_ filters: [String] = []) throws -> [[String: Any]] {
        let r = try run(["list", "--json"] + filters)
        #expect(r.status == 0, "\(r.err)")
        return try r.out.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    func newIncident(summary: String = "Boundary dispute", scope: String = village, extra: [String] = []) throws -> String {
        let rec = try write(["incident", "new", "--scope", scope, "--category", "dispute", "--priority", "high", "--summary", summary,
                             "--lat", "33.412", "--lon", "104.951", "--place", "village hall"] + extra)
        return try #require(rec["id"] as? String)
    }

    func path(_ name: String) -> String { dir + "/" + name }
}

private struct SetupFailed: Error {
    var step: [String]
    var stderr: String
}

@Suite(.ownThread)
struct CLIRecordTests {
    @Test func incidentLifecycle() throws {
        let cli = try RecordCLI()
        let id = try cli.newIncident(extra: ["--note", "first note", "--deadline", "2026-12-01T08:00:00Z"])
        #expect(id.count == 32)
        var rec = try cli.write(["incident", "update", id, "--summary", "Boundary dispute, two households", "--priority", "urgent", "--place", "hall"])
        #expect(rec["summary"] as? String == "Boundary dispute, two households" && rec["priority"] as? String == "urgent")
        #expect((rec["location"] as? [String: Any])?["place"] as? String == "hall" && (rec["location"] as? [String: Any])?["lat"] as? Double == 33.412)
        rec = try cli.write(["incident", "status", id, "dispatched"])
        #expect(rec["status"] as? String == "dispatched")
        rec = try cli.write(["incident", "assign", String(id.prefix(10)), "car-2", "officer-li"])  // a unique prefix works
        #expect(rec["assignedUnits"] as? [String] == ["car-2", "officer-li"])
        rec = try cli.write(["incident", "assign", id, "--remove", "car-2"])
        #expect(rec["assignedUnits"] as? [String] == ["officer-li"])
        rec = try cli.write(["incident", "note", id, "on scene, parties calm"])
        #expect(rec["notes"] as? [String] == ["first note", "on scene, parties calm"])
        rec = try cli.write(["incident", "close", id, "--feedback", "mediated"])
        #expect(rec["status"] as? String == "closed" && rec["feedback"] as? String == "mediated")
        let again = try cli.json(["incident", "close", id])  // already closed: nothing written, exit 0
        #expect(again["written"] as? Bool == false)
        rec = try cli.write(["incident", "reopen", id, "--note", "new complaint"])
        #expect(rec["status"] as? String == "reported" && rec["statusGeneration"] as? Int == 1)

        let shown = try cli.json(["show", id])
        #expect(shown["feedbackDeadline"] as? String == "2026-12-01T08:00:00.000Z")
        let history = try #require(shown["history"] as? [[String: Any]])
        #expect(history.count == 8)  // new, update, status, assign, unassign, note, close, reopen
        #expect(history.allSatisfy { $0["verified"] as? Bool == true && $0["role"] as? String == "backpack" })
        #expect((history.last?["actions"] as? [String])?.first == "status → reported (generation 1)")
        #expect((shown["notesLog"] as? [[String: Any]])?.count == 3)
        let human = try cli.run(["show", id])
        #expect(human.status == 0 && human.out.contains("history (8 changes") && human.out.contains("verified")
            && human.out.contains("reported (generation 1, reopened)"))
    }

    @Test func visitLifecycle() throws {
        let cli = try RecordCLI()
        var rec = try cli.write(["visit", "new", "--scope", RecordCLI.village, "--subject", "household-0412-17", "--visitor", "officer-li",
                                 "--type", "returning-migrant-worker", "--visited-at", "2026-11-28", "--tag", "elderly", "--tag", "alone"])
        let id = try #require(rec["id"] as? String)
        #expect(rec["visitedAt"] as? String == "2026-11-28T00:00:00.000Z" && rec["tags"] as? [String] == ["alone", "elderly"])
        rec = try cli.write(["visit", "update", id, "--outcome", "seeking work", "--follow-up-by", "2026-12-05T09:00:00+08:00",
                             "--tag", "job-seeker", "--untag", "alone", "--lat", "33.4", "--lon", "104.9"])
        #expect(rec["outcome"] as? String == "seeking work" && rec["followUpNeeded"] as? Bool == true)
        #expect(rec["followUpBy"] as? String == "2026-12-05T01:00:00.000Z" && rec["tags"] as? [String] == ["elderly", "job-seeker"])
        rec = try cli.write(["visit", "note", id, "家访 home visit"])
        #expect(rec["notes"] as? [String] == ["家访 home visit"])
        rec = try cli.write(["visit", "update", id, "--no-follow-up"])
        #expect(rec["followUpNeeded"] as? Bool == false && rec["followUpBy"] == nil)
        let table = try cli.run(["list"])
        #expect(table.out.contains("returning-migrant-worker: household-0412-17") && table.out.hasSuffix("1 record\n"))
    }

    @Test func errorsSayWhatToDoWithDocumentedExitCodes() throws {
        let cli = try RecordCLI()
        let id = try cli.newIncident()
        let missing = try cli.run(["show", "0123456789abcdef0123456789abcdef"])
        #expect(missing.status == 66 && missing.err.contains("fieldsync list") && missing.out.isEmpty)
        let missingJSON = try cli.run(["incident", "note", "0123456789abcdef0123456789abcdef", "x", "--json"])
        let err = try JSONSerialization.jsonObject(with: Data(missingJSON.err.utf8)) as? [String: Any]
        #expect(missingJSON.status == 66 && err?["exitCode"] as? Int == 66 && (err?["error"] as? String)?.contains("no incident") == true)
        let badStatus = try cli.run(["incident", "status", id, "finished"])
        #expect(badStatus.status == 64 && badStatus.err.contains("unknown status finished; one of reported, dispatched, on-scene, resolved, closed"))
        #expect(try cli.run(["incident", "status", id, "on-scene"]).status == 0)
        let backwards = try cli.run(["incident", "status", id, "dispatched"])
        #expect(backwards.status == 65 && backwards.err.contains("already on-scene") && backwards.err.contains("reopen"))
        let reopenOpen = try cli.run(["incident", "reopen", id])
        #expect(reopenOpen.status == 65 && reopenOpen.err.contains("only a resolved or closed incident can be reopened"))
        let wrongKind = try cli.run(["visit", "note", id, "x"])
        #expect(wrongKind.status == 64 && wrongKind.err.contains("is an incident, not a visit; use `fieldsync incident ...`"))
        let badID = try cli.run(["show", "xyz"])
        #expect(badID.status == 64 && badID.err.contains("32 hex digits"))
        let outside = try cli.run(["incident", "new", "--scope", "longnan/wudu/station-018", "--category", "fire", "--summary", "s",
                                   "--lat", "1", "--lon", "1"])
        #expect(outside.status == 77 && outside.err.contains("may not write in longnan/wudu/station-018"))
        let noKey = try RecordCLI.run(["incident", "note", id, "x", "--dir", cli.deviceDir, "--key-file", "bp.key", "--store", cli.store], in: cli.dir)
        #expect(noKey.status == 77 && noKey.err.contains("--epoch-key-file"))
        let tooLong = try cli.run(["incident", "update", id, "--summary", String(repeating: "x", count: 600)])
        #expect(tooLong.status == 64 && tooLong.err.contains("--summary is 600 bytes; at most 512 allowed"))
        let nothing = try cli.run(["incident", "update", id])
        #expect(nothing.status == 64 && nothing.err.contains("nothing to update"))
        let badTime = try cli.run(["list", "--since", "yesterday"])
        #expect(badTime.status == 64 && badTime.err.contains("is not a time"))
        // The record is unchanged by all of it: one status move and its creation.
        #expect((try cli.json(["show", id])["history"] as? [Any])?.count == 2)
    }

    @Test func listFilters() throws {
        let cli = try RecordCLI()
        let a = try cli.newIncident(summary: "Market collision", extra: ["--reported-at", "2026-11-01T10:00:00Z"])
        let b = try cli.newIncident(summary: "Stolen tractor", scope: RecordCLI.station, extra: ["--reported-at", "2026-11-20T10:00:00Z"])
        let c = try cli.newIncident(summary: "Noise complaint", extra: ["--reported-at", "2026-11-25T10:00:00Z"])
        _ = try cli.write(["incident", "close", c])
        _ = try cli.write(["visit", "new", "--scope", RecordCLI.village, "--subject", "h-1", "--visitor", "li", "--type", "routine",
                           "--visited-at", "2026-11-26T10:00:00Z"])
        func ids(_ f: [String]) throws -> [String] { try cli.list(f).compactMap { $0["id"] as? String } }
        #expect(try ids([]).count == 4)
        #expect(try ids(["--kind", "incident"]) == [c, b, a])  // newest event first
        #expect(try ids(["--kind", "incident", "--scope", RecordCLI.village]) == [c, a])
        #expect(try ids(["--status", "open"]) == [b, a])
        #expect(try ids(["--status", "closed"]) == [c])
        #expect(try ids(["--status", "reported..dispatched", "--since", "2026-11-10"]) == [b])
        #expect(try ids(["--kind", "incident", "--until", "2026-11-21T00:00:00Z", "--since", "1761955200000"]) == [b, a])
        #expect(try ids(["--text", "tractor"]) == [b])
        #expect(try ids(["--kind", "incident", "--limit", "1"]) == [c])
        let table = try cli.run(["list", "--status", "open"])
        #expect(table.status == 0 && table.out.contains("Stolen tractor") && table.out.contains(String(a.prefix(12))) && table.out.hasSuffix("2 records\n"))
    }

    @Test func exportImportRoundTripIntoAnotherDevice() throws {
        let bp = try RecordCLI("bp")
        let id = try bp.newIncident(summary: "Dispute, \"east\" field\nsecond line", extra: ["--note", "first, with comma", "--note", "第二 note"])
        _ = try bp.write(["incident", "assign", id, "car-2", "officer-li", "--dispatch"])
        _ = try bp.write(["incident", "close", id])
        _ = try bp.write(["incident", "reopen", id])
        _ = try bp.write(["incident", "update", id, "--feedback", "called back", "--deadline", "2026-12-01T00:00:00.001Z"])
        let other = try bp.newIncident(summary: "Second")
        _ = try bp.write(["incident", "update", other, "--duplicate-of", id, "--priority", "low"])
        _ = try bp.write(["visit", "new", "--scope", RecordCLI.village, "--subject", "h-9", "--visitor", "li", "--type", "key-person",
                          "--tag", "a", "--outcome", "ok", "--follow-up-by", "+7d", "--lat", "-33.123456789", "--lon", "151.5"])
        let json = try bp.json(["export", "--format", "json", "--out", "\(bp.store).json"])
        #expect(json["exported"] as? Int == 3)
        #expect(try bp.run(["export", "--format", "csv", "--out", "\(bp.store).csv"]).status == 0)
        let original = try String(contentsOfFile: bp.path("\(bp.store).json"), encoding: .utf8)

        // JSON into the station's store, CSV into another: each export is byte-identical to the original.
        for (format, file) in [("json", "\(bp.store).json"), ("csv", "\(bp.store).csv")] {
            let st = try RecordCLI("st", store: "roundtrip\(format)")
            let result = try st.json(["import", file])
            #expect(result["imported"] as? Int == 3 && result["changes"] as? Int == 3, "\(format): \(result)")  // one per priority
            #expect(try st.run(["export", "--format", "json", "--out", "\(st.store).json"]).status == 0)
            #expect(try String(contentsOfFile: st.path("\(st.store).json"), encoding: .utf8) == original, "\(format)")
            // The history shows the importing device as the author, verified.
            let history = try #require(try st.json(["show", id])["history"] as? [[String: Any]])
            #expect(history.count == 1 && history[0]["role"] as? String == "station" && history[0]["verified"] as? Bool == true)
            // Importing again: every row is already held.
            let again = try st.run(["import", file])
            #expect(again.status == 65 && again.err.contains("already in the store") && again.err.contains("--skip-existing"))
            #expect(try st.json(["import", file, "--skip-existing"])["skipped"] as? Int == 3)
        }
        // list --json lines import too (JSON Lines).
        let lines = try bp.run(["list", "--json"]).out
        _ = FileManager.default.createFile(atPath: bp.path("\(bp.store).jsonl"), contents: Data(lines.utf8))
        let st = try RecordCLI("st", store: "jsonl")
        #expect(try st.json(["import", "\(bp.store).jsonl", "--format", "json"])["imported"] as? Int == 3)
    }

    @Test func badRowsLeaveTheStoreUnchanged() throws {
        let cli = try RecordCLI("st")
        _ = try cli.newIncident(summary: "Already here")
        let before = try cli.run(["export"]).out
        var csv = "kind,scope,category,priority,location.lat,location.lon,summary,reportedAt,reporter,status\r\n"
        for i in 0..<600 {
            let category = i == 300 ? "trafic" : "traffic"
            let lat = i == 450 ? "95" : "33.4"
            csv += "incident,\(RecordCLI.village),\(category),normal,\(lat),104.9,\"collision \(i), \"\"quoted\"\"\",2026-11-01T10:00:00Z,caller,reported\r\n"
        }
        _ = FileManager.default.createFile(atPath: cli.path("\(cli.store)-bad.csv"), contents: Data(csv.utf8))
        let bad = try cli.run(["import", "\(cli.store)-bad.csv"])
        #expect(bad.status == 65 && bad.out.isEmpty)
        #expect(bad.err.contains("2 bad rows; nothing was imported"))
        #expect(bad.err.contains("line 302 (row 301), column category: \"trafic\" is not one of"))
        #expect(bad.err.contains("line 452 (row 451), column location: latitude 95.0 is outside -90...90"))
        #expect(!bad.err.contains("\r"))  // stderr is a pipe: no progress line
        #expect(try cli.run(["export"]).out == before)
        let badJSON = try cli.run(["import", "\(cli.store)-bad.csv", "--json"])
        let badJSONError = try JSONSerialization.jsonObject(with: Data(badJSON.err.utf8)) as? [String: Any]
        #expect(badJSON.status == 65 && badJSONError?["exitCode"] as? Int == 65)

        // Structural errors: an unclosed quote, a short row, an unknown column, a file that is not there.
        let broken = ["kind,scope,summary\nincident,\(RecordCLI.village),\"never closed\n": "a quoted cell is never closed",
                      "kind,scope,summary\nincident,\(RecordCLI.village)\n": "2 cells, the header has 3",
                      "kind,scope,colour\nincident,\(RecordCLI.village),red\n": "incident has no field \"colour\""]
        for (n, (text, message)) in broken.enumerated() {
            _ = FileManager.default.createFile(atPath: cli.path("\(cli.store)-\(n).csv"), contents: Data(text.utf8))
            let r = try cli.run(["import", "\(cli.store)-\(n).csv"])
            #expect(r.status == 65 && r.err.contains(message), "\(r.err)")
        }
        #expect(try cli.run(["import", "no-such-file.csv"]).status == 66)
        #expect(try cli.run(["export"]).out == before)

        // Fixed, the file imports in one go; a dry run first writes nothing.
        let good = csv.replacingOccurrences(of: "trafic", with: "traffic").replacingOccurrences(of: ",95,", with: ",33.4,")
        _ = FileManager.default.createFile(atPath: cli.path("\(cli.store)-good.csv"), contents: Data(good.utf8))
        let dry = try cli.json(["import", "\(cli.store)-good.csv", "--dry-run"])
        #expect(dry["valid"] as? Int == 600 && dry["imported"] as? Int == 0)
        #expect(try cli.run(["export"]).out == before)
        let ok = try cli.run(["import", "\(cli.store)-good.csv"])
        #expect(ok.status == 0 && ok.out.contains("imported 600 records") && ok.err.isEmpty)
        #expect(try cli.list(["--text", "\"quoted\""]).count == 600)
    }

    /// A long import draws a progress line when standard error is a terminal (`script` gives it one)
    /// and stays quiet in a pipe (the other tests).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "util-linux script provides a terminal"))
    func progressOnlyOnATerminal() throws {
        let cli = try RecordCLI("st")
        var csv = "kind,scope,category,location.lat,location.lon,summary,reportedAt,reporter,status,priority\n"
        for i in 0..<600 { csv += "incident,\(RecordCLI.village),fire,33.4,104.9,fire \(i),2026-11-01T10:00:00Z,caller,reported,normal\n" }
        _ = FileManager.default.createFile(atPath: cli.path("\(cli.store).csv"), contents: Data(csv.utf8))
        let command = ([try RecordCLI.binary, "import", "\(cli.store).csv"] + cli.node).joined(separator: " ")
        let r = try RecordCLI.run(["-qfec", command, "/dev/null"], in: cli.dir, executable: "/usr/bin/script")
        #expect(r.status == 0 && r.out.contains("checking rows 600/600 (100%)") && r.out.contains("imported 600 records"), "\(r.out)")
        let piped = try cli.run(["export", "--format", "csv"])
        #expect(piped.status == 0 && piped.err.isEmpty && piped.out.split(separator: "\r\n").count == 601)
    }
}


/// Issue 13 items 5 and 6 through the binary: CSV formula neutralisation, hostile store paths, a CSV
/// import whose memory does not grow with the file.
@Suite(.ownThread)
struct CLIHostileInputTests {
    /// The cells of RFC 4180 CSV text (quoted cells, doubled quotes, CRLF rows).
    static func cells(_ csv: String) -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], cell = "", quoted = false
        var it = Array(csv).makeIterator()
        var pending: Character?
        while let c = pending ?? it.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let n = it.next() { if n == "\"" { cell.append("\"") } else { quoted = false; pending = n } } else { quoted = false }
                } else { cell.append(c) }
            } else if c == "\"" { quoted = true } else if c == "," { row.append(cell); cell = "" } else if c == "\r\n" || c == "\n" {
                row.append(cell); rows.append(row); row = []; cell = ""
            } else { cell.append(c) }
        }
        return rows
    }

    /// OWASP CSV injection: a cell starting with = + - @ tab or CR is a formula to a spreadsheet. The
    /// export puts a single quote in front (numbers excepted); the import takes it off again.
    @Test func csvExportNeutralisesFormulasAndImportRestoresThem() throws {
        let bp = try RecordCLI("bp")
        let hostile = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tTab first",
                       "'=already quoted", "''@two quotes", "'plain apostrophe", "-5", "12.5e-3"]
        for (i, s) in hostile.enumerated() {
            _ = try bp.write(["incident", "new", "--scope", RecordCLI.village, "--category", "dispute", "--priority", "high", "--summary=\(s)",
                              "--lat", "33.4", "--lon", "104.9", "--place=\(i.isMultiple(of: 2) ? "=place" : "-3 km north")", "--note=-note \(i)"])
        }
        _ = try bp.write(["visit", "new", "--scope", RecordCLI.village, "--subject", "@h-9", "--visitor", "li", "--type", "key-person",
                          "--outcome", "=ok", "--lat", "-33.5", "--lon", "-151.25"])
        let csvFile = "\(bp.store).csv"
        #expect(try bp.run(["export", "--format", "csv", "--out", csvFile]).status == 0)
        let rows = Self.cells(try String(contentsOfFile: bp.path(csvFile), encoding: .utf8))
        #expect(rows.count == hostile.count + 2)
        for row in rows {
            for c in row {
                guard let f = c.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(f) else { continue }
                #expect(Double(c) != nil, "a formula-like cell left as is: \(c)")
            }
        }
        #expect(rows.contains { $0.contains("'=HYPERLINK(\"http://evil.example\",\"click\")") })
        #expect(rows.contains { $0.contains("''=already quoted") } && rows.contains { $0.contains("'''@two quotes") })
        #expect(rows.contains { $0.contains("'plain apostrophe") } && rows.contains { $0.contains("-5") })
        #expect(rows.contains { $0.contains("-33.5") && $0.contains("-151.25") }, "negative numbers stay numbers")
        // Import restores every value: the station's JSON export equals the backpack's.
        #expect(try bp.run(["export", "--format", "json", "--out", "\(bp.store).json"]).status == 0)
        let st = try RecordCLI("st", store: "formulas")
        let result = try st.json(["import", csvFile])
        #expect(result["imported"] as? Int == hostile.count + 1, "\(result)")
        #expect(try st.run(["export", "--format", "json", "--out", "\(st.store).json"]).status == 0)
        #expect(try String(contentsOfFile: st.path("\(st.store).json"), encoding: .utf8)
                == String(contentsOfFile: bp.path("\(bp.store).json"), encoding: .utf8))
    }

    /// A symbolic link as the store is refused (before: a dangling link created its target); `list`
    /// on an empty file or a missing path does not make a store (before: it did); new stores are 0600.
    @Test func hostileStorePaths() throws {
        let cli = try RecordCLI("bp")
        let fm = FileManager.default
        // Dangling link: refused, target not created.
        try fm.createSymbolicLink(atPath: cli.path("dangling.sqlite"), withDestinationPath: cli.path("\(cli.store).target"))
        var r = try RecordCLI.run(["incident", "new", "--scope", RecordCLI.village, "--category", "fire", "--summary", "s", "--lat", "33.4", "--lon", "104.9",
                                   "--dir", "bp", "--key-file", "bp.key", "--store", "dangling.sqlite", "--epoch-key-file", "station.epochkey"],
                                  in: cli.dir)
        #expect(r.status != 0 && r.err.contains("symbolic link"), "\(r.err)")
        #expect(!fm.fileExists(atPath: cli.path("\(cli.store).target")))
        // Empty file: list refuses it and leaves it empty.
        #expect(fm.createFile(atPath: cli.path("empty.sqlite"), contents: Data()))
        r = try RecordCLI.run(["list", "--dir", "bp", "--key-file", "bp.key", "--store", "empty.sqlite"], in: cli.dir)
        #expect(r.status != 0 && r.err.contains("empty file"), "\(r.err)")
        #expect((try fm.attributesOfItem(atPath: cli.path("empty.sqlite"))[.size] as? Int) == 0)
        // Missing store: a read-only command does not create it.
        r = try RecordCLI.run(["list", "--dir", "bp", "--key-file", "bp.key", "--store", "missing.sqlite"], in: cli.dir)
        #expect(r.status != 0 && r.err.contains("no store"), "\(r.err)")
        #expect(!fm.fileExists(atPath: cli.path("missing.sqlite")))
        // A store made by a writing command is 0600.
        _ = try cli.newIncident()
        let mode = try fm.attributesOfItem(atPath: cli.path(cli.store))[.posixPermissions] as? Int
        #expect(mode == 0o600, "mode \(String(mode ?? 0, radix: 8))")
    }

    /// Runs the binary and returns its exit status and peak resident memory (KiB): the child's own
    /// `VmHWM` (/proc/PID/status), read every 10 ms until it exits. (`wait4`'s `ru_maxrss` is no good
    /// here: Linux carries the spawning process's high-water mark into the child at exec.)
    static func peakMemory(_ args: [String]) throws -> (status: Int32, maxRSSKiB: Int) {
        var pid: pid_t = 0
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        Spawn.closeInheritedDescriptors(&actions)  // not the other tests' connections
        let full = [try RecordCLI.binary] + args
        var argv: [UnsafeMutablePointer<CChar>?] = full.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        // Absolute paths only: changing this process's directory would race with the other tests.
        let rc = posix_spawn(&pid, try RecordCLI.binary, &actions, nil, &argv, environ)
        guard rc == 0 else { throw SetupFailed(step: full, stderr: "posix_spawn: \(rc)") }
        var status: Int32 = 0
        var peak = 0
        while true {
            if let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
               let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
                peak = max(peak, kib)
            }
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { break }
            usleep(10_000)
        }
        return ((status >> 8) & 0xff, peak)
    }

    /// Before the fix the import held every row, every edit and every change at once (100,000 rows:
    /// 605 MB). Now the CSV is read row by row and written as changes fill: importing ten times the
    /// rows takes about the same memory.
    @Test func csvImportMemoryDoesNotGrowWithTheFile() throws {
        let cli = try RecordCLI("st")
        func file(_ n: Int) -> String {
            var csv = "kind,scope,category,priority,location.lat,location.lon,summary,reportedAt,reporter,status\r\n"
            let priorities = ["low", "normal", "high", "urgent"]
            for i in 0..<n {
                csv += "incident,\(RecordCLI.village),fire,\(priorities[i % 4]),33.\(i % 1000),104.9,\"report \(i) of \(n), text\",2026-11-01T10:00:00Z,caller,reported\r\n"
            }
            let name = "\(cli.store)-\(n).csv"
            _ = FileManager.default.createFile(atPath: cli.path(name), contents: Data(csv.utf8))
            return name
        }
        // Both files are larger than one transaction (8 changes of about 265 of these rows each), so the
        // difference is what grows with the file.
        let small = file(3_000), large = file(15_000)
        let node = ["--dir", cli.path(cli.device), "--key-file", cli.path("\(cli.device).key"), "--store", cli.path(cli.store),
                    "--epoch-key-file", cli.path("station.epochkey")]
        let a = try Self.peakMemory(["import", cli.path(small)] + node)
        let b = try Self.peakMemory(["import", cli.path(large)] + node)
        #expect(a.status == 0 && b.status == 0)
        print("csv import peak RSS: 3,000 rows \(a.maxRSSKiB) KiB, 15,000 rows \(b.maxRSSKiB) KiB")
        // Before: about 5.5 KB a row (12,000 more rows: +64 MB). Now: SQLite's page cache (at most 16 MiB) and the ids seen.
        #expect(b.maxRSSKiB - a.maxRSSKiB < 24 * 1024, "3,000 rows: \(a.maxRSSKiB) KiB, 15,000 rows: \(b.maxRSSKiB) KiB")
        #expect(try cli.list().count == 18_000)
        // Rows without an id get ids derived from the row: the same file again is already imported.
        let again = try cli.run(["import", small])
        #expect(again.status == 65 && again.err.contains("already in the store"), "\(again.err)")
        #expect(try cli.json(["import", small, "--skip-existing"])["skipped"] as? Int == 3_000)
    }
}
