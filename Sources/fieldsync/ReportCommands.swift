// `fieldsync report ...`: the command center's reports from the command line (docs/reports.md): the daily
// report (situation report and duty logs) as HTML, CSV or JSON; suspected duplicates (and marking one);
// units and stations; the map of Longnan as SVG. And the daily report `serve` writes every morning when the
// config asks for it (`"reports": {"daily": {...}}`). The reports themselves are FieldSyncReports'.

import ArgumentParser
import FieldSync
import FieldSyncCore
import FieldSyncGeo
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `fieldsync report`.
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "The command center's reports: daily report, suspected duplicates, units, map (docs/reports.md).",
        subcommands: [ReportDaily.self, ReportDuplicates.self, ReportUnits.self, ReportMap.self])
}

/// Writes `text` to `path` atomically (a temporary file in the same folder, then rename), mode 0600: a report
/// holds record text in clear.
func writeReportFile(_ text: String, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw CLIError("cannot write \(tmp): \(String(cString: strerror(errno))); check the folder") }
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            let e = String(cString: strerror(errno))
            close(fd)
            unlink(tmp)
            throw CLIError("cannot write \(tmp): \(e)")
        }
        written += n
    }
    let synced = fsync(fd) == 0
    close(fd)
    guard synced, rename(tmp, path) == 0 else {
        let e = String(cString: strerror(errno))
        unlink(tmp)
        throw CLIError("cannot write \(path): \(e)")
    }
}

/// Prints `text` or writes it to `out`.
func emitReport(_ text: String, out: String?) throws {
    if let out { try writeReportFile(text, to: out) } else { FileHandle.standardOutput.write(Data(text.utf8)) }
}

/// A report's error as the CLI's.
func reportCLIError(_ error: ReportError) -> CLIError { CLIError(error.description) }

/// `fieldsync report daily`.
struct ReportDaily: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daily",
        abstract: "The daily report of a day: per county incidents, closures, overdue feedback, duplicates, visits; each station's duty log.",
        discussion: "Days are calendar days of China Standard Time (UTC+8). The report shows what this node's store holds; "
            + "record text is escaped in HTML and formula-neutralised in CSV (docs/reports.md).")

    @OptionGroup var node: NodeOptions
    @Option(help: ArgumentHelp("The day, YYYY-MM-DD (UTC+8).", valueName: "date")) var date: String
    @Option(help: "html, csv or json.") var format: String = "html"
    @Option(help: ArgumentHelp("Only this county (its scope segment, e.g. wudu).", valueName: "county")) var county: String?
    @Option(help: ArgumentHelp("Write to this file (mode 0600) instead of standard output.", valueName: "file")) var out: String?
    @Option(help: "Suspected duplicates: most distance, metres.") var duplicateMetres: Double = DuplicateRule.standard.distanceMetres
    @Option(help: "Suspected duplicates: most time apart, minutes.") var duplicateMinutes: Int = Int(DuplicateRule.standard.windowMilliseconds / 60_000)
    @Option(help: "Days before the report's day an incident may have been reported and still count for a closure or a deadline.")
    var lookbackDays: Int = DailyReportOptions().lookbackDays

    func validate() throws {
        guard ReportFormat(rawValue: format) != nil else { throw ValidationError("--format must be html, csv or json, not \(format)") }
        do { _ = try ReportDay(parsing: date) } catch { throw ValidationError(error.description) }
        if let county, county.isEmpty || county.contains("/") { throw ValidationError("--county takes a county's scope segment, e.g. wudu") }
        do { try rule.validate() } catch { throw ValidationError(error.description) }
    }

    var rule: DuplicateRule { DuplicateRule(distanceMetres: duplicateMetres, windowMilliseconds: Int64(duplicateMinutes) * 60_000) }

    func run() async throws {
        try reportingErrors(json: false) {
            let ctx = try RecordContext(node, readOnly: true)
            let day = try ReportDay(parsing: date)
            let options = DailyReportOptions(county: county, duplicates: rule, lookbackDays: lookbackDays)
            let report: DailyReport
            do { report = try DailyReport.make(ctx.book, day: day, options: options, now: Int64(ctx.now)) } catch let e as ReportError {
                throw reportCLIError(e)
            }
            try emitReport(report.rendered(ReportFormat(rawValue: format)!), out: out)
        }
    }
}

/// `fieldsync report duplicates`.
struct ReportDuplicates: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "duplicates",
        abstract: "Suspected duplicate incidents of a day (same category, near in place and time, different devices); --mark marks one.",
        discussion: "With --mark ID --of ID, writes the first incident's duplicateOf (a signed change by this device, as "
            + "`incident update --duplicate-of`) instead of listing.")

    @OptionGroup var node: NodeOptions
    @Option(help: ArgumentHelp("The day, YYYY-MM-DD (UTC+8).", valueName: "date")) var date: String?
    @Option(help: "Most distance, metres.") var metres: Double = DuplicateRule.standard.distanceMetres
    @Option(help: "Most time apart, minutes.") var minutes: Int = Int(DuplicateRule.standard.windowMilliseconds / 60_000)
    @Option(help: ArgumentHelp("Mark this incident (id or unique prefix) as a duplicate ...", valueName: "id")) var mark: String?
    @Option(help: ArgumentHelp("... of this one.", valueName: "id")) var of: String?
    @Flag(help: "Print one JSON object per pair, one per line.") var json = false

    func validate() throws {
        if (mark == nil) != (of == nil) { throw ValidationError("give both --mark ID and --of ID") }
        if mark == nil, date == nil { throw ValidationError("give --date YYYY-MM-DD to list, or --mark ID --of ID to mark") }
        if let date { do { _ = try ReportDay(parsing: date) } catch { throw ValidationError(error.description) } }
        do { try DuplicateRule(distanceMetres: metres, windowMilliseconds: Int64(minutes) * 60_000).validate() } catch {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node, readOnly: mark == nil)
            if let mark, let of {
                let written = try DuplicateFinder.mark(ctx.book, duplicate: mark, of: of)
                ctx.printWritten("marked a duplicate of \(of)", written, json: json)
                return
            }
            let day = try ReportDay(parsing: date!)
            let pairs = try DuplicateFinder.list(ctx.book, since: day.start, until: day.end,
                                                 rule: DuplicateRule(distanceMetres: metres, windowMilliseconds: Int64(minutes) * 60_000))
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            for p in pairs {
                if json { print(String(decoding: try e.encode(p), as: UTF8.self)) } else {
                    print("\(p.later) may duplicate \(p.earlier): \(p.category), \(String(format: "%.0f", p.distanceMetres)) m, "
                          + "\(p.intervalMilliseconds / 60_000) min apart\(p.marked ? " (marked)" : "")")
                }
            }
            if !json { print("\(plural(pairs.count, "suspected pair")) on \(day) (UTC+8)") }
        }
    }
}

/// `fieldsync report units`.
struct ReportUnits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "units",
        abstract: "Every device this node has seen: role, scopes, newest change, last session, changes not receipted by HQ; silent ones flagged.")

    @OptionGroup var node: NodeOptions
    @Option(help: "Flag units whose newest change here is older than this many hours.") var silentHours: Int = 24
    @Option(help: ArgumentHelp("The running daemon's status file, for last sessions (default: the store path + .status.json if present).",
                               valueName: "file"))
    var statusFile: String?
    @Flag(help: "Print the list as one JSON object.") var json = false

    func run() async throws {
        try reportingErrors(json: json) {
            let ctx = try RecordContext(node, readOnly: true)
            let path = statusFile ?? node.store + ".status.json"
            let status = FileManager.default.fileExists(atPath: path) ? try DaemonStatus.read(from: path) : nil
            let report = try UnitsReport.make(ctx.replicator, now: Int64(ctx.now), silentAfterMinutes: Int64(silentHours) * 60, status: status)
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try e.encode(report), as: UTF8.self))
                return
            }
            print("DEVICE            ROLE      NEWEST CHANGE (UTC+8)       LAST SESSION (UTC+8)        HELD   NOT AT HQ  ALARM")
            for u in report.units {
                let cols = [String(u.device.prefix(16)), (u.role ?? "?").padding(toLength: 8, withPad: " ", startingAt: 0),
                            (u.lastChange ?? "none").padding(toLength: 26, withPad: " ", startingAt: 0),
                            (u.lastSession ?? "not recorded").padding(toLength: 26, withPad: " ", startingAt: 0),
                            String(u.changesHeld).padding(toLength: 6, withPad: " ", startingAt: 0),
                            String(u.unreceipted).padding(toLength: 10, withPad: " ", startingAt: 0), u.alarm ? "SILENT" : ""]
                print(cols.joined(separator: "  "))
            }
            print("\(plural(report.units.count, "device")), \(report.alarms) silent for more than \(silentHours) h")
        }
    }
}

/// `fieldsync report map`.
struct ReportMap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map",
        abstract: "The map of Longnan as SVG: stations coloured by staleness, open incidents by priority.")

    @OptionGroup var node: NodeOptions
    @Option(help: ArgumentHelp("Write to this file (mode 0600) instead of standard output.", valueName: "file")) var out: String?

    func run() async throws {
        try reportingErrors(json: false) {
            let ctx = try RecordContext(node, readOnly: true)
            try emitReport(LongnanMap.svg(try LongnanMap.input(ctx.book, now: Int64(ctx.now))), out: out)
        }
    }
}

// MARK: - The daily report in `serve`

/// The daily report `fieldsync serve` writes when the config has `"reports": {"daily": {...}}`: at `at`
/// (UTC+8) every day, the report of the day before, into `dir`, in each form asked for. A node started
/// after `at` whose folder lacks the day before's report writes it at once.
enum DailyReportService {
    /// The file of `day`'s report in `format`.
    static func path(_ d: NodeConfigFile.Reports.Daily, day: ReportDay, format: ReportFormat) -> String {
        d.dir + "/daily-\(day.text).\(format.fileExtension)"
    }

    /// Writes `day`'s report from the node's store.
    static func write(_ d: NodeConfigFile.Reports.Daily, day: ReportDay, node: FieldSyncNode, now: Int64) async throws {
        let options = DailyReportOptions(county: d.county)
        let report = try await node.withReplicator { r in
            try DailyReport.make(try RecordBook(replicator: r, now: UInt64(now), restoringClock: false), day: day, options: options, now: now)
        }
        for f in d.formats.compactMap(ReportFormat.init(rawValue:)) {
            try writeReportFile(report.rendered(f), to: path(d, day: day, format: f))
        }
    }

    /// Starts the schedule if the config has one; the task ends when cancelled.
    static func start(_ c: NodeConfigFile, node: FieldSyncNode, logger: Logger) -> Task<Void, Never>? {
        guard let d = c.reports.daily, let at = try? ReportClockTime(parsing: d.at) else { return nil }  // `check()` refused a bad `at`
        return Task {
            func run(_ day: ReportDay) async {
                let now = Int64(wallClockMilliseconds())
                do {
                    try await write(d, day: day, node: node, now: now)
                    logger.info("daily report written", metadata: ["report.day": .string(day.text), "report.dir": .string(d.dir)])
                } catch {
                    logger.error("daily report failed", metadata: ["report.day": .string(day.text), "report.error": .string("\(error)")])
                }
            }
            // Catch up: started after today's time without the day before's report.
            let now = Int64(wallClockMilliseconds())
            let today = ReportDay(containing: now)
            let first = d.formats.first.flatMap(ReportFormat.init(rawValue:)) ?? .json
            if now >= today.start + Int64(at.minutes) * 60_000, !FileManager.default.fileExists(atPath: path(d, day: today.previous, format: first)) {
                await run(today.previous)
            }
            while !Task.isCancelled {
                let now = Int64(wallClockMilliseconds())
                let next = at.nextRun(after: now)
                do { try await Task.sleep(for: .milliseconds(next.at - now)) } catch { return }
                await run(next.reportDay)
            }
        }
    }
}
