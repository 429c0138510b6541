import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncGeo
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import Testing

/// The daily report over a store with known records: the figures, the lists, the duty logs, the midnight
/// edge of UTC+8, and hostile text in every field in every form.
@Suite struct DailyReportTests {
    typealias F = ReportFixtures
    static let hostile = "<script>alert(1)</script>"

    /// HQ's book after three backpack units wrote the scenario's records (see docs/reports.md's definitions).
    /// Returns the book and the ids by name.
    static func scenario() throws -> (RecordBook, [String: RecordID]) {
        var f = ReportFixtures()
        let hq = try f.replicator(.hq, scopes: [F.root], label: "hq")
        let bp1 = try f.replicator(.backpack, scopes: [F.wudu17], label: "bp1")
        let bp2 = try f.replicator(.backpack, scopes: [F.wudu17], label: "bp2")
        let bp3 = try f.replicator(.backpack, scopes: [F.cheng50], label: "bp3")
        let b1 = try RecordBook(replicator: bp1, now: UInt64(F.dayStart)), b2 = try RecordBook(replicator: bp2, now: UInt64(F.dayStart))
        let b3 = try RecordBook(replicator: bp3, now: UInt64(F.dayStart))
        let d = F.dayStart, h = F.hour, m = F.minute
        var ids: [String: RecordID] = [:]
        // The day before: F (no feedback: overdue, missing) and G (feedback late, closed in the day).
        ids["F"] = try F.incident(b1, at: d - 2 * h, category: .fire, priority: .urgent, summary: "-F " + hostile, deadline: d + 2 * h).id
        ids["G"] = try F.incident(b2, at: d - 14 * h, category: .criminal, summary: "G", lat: 33.5, lon: 105.0, deadline: d + 8 * h).id
        // The day: A at 09:00 (feedback in time at 11:00, closed 13:00), B 10 min later 200 m away by another unit.
        ids["A"] = try F.incident(b1, at: d + 9 * h, priority: .high, summary: "A", reporter: hostile, deadline: d + 12 * h).id
        ids["B"] = try F.incident(b2, at: d + 9 * h + 10 * m, summary: hostile, reporter: "=HYPERLINK(\"http://x\")", lat: 33.39 + 0.0018).id
        b2.now = UInt64(d + 9 * h + 30 * m)
        _ = try b2.giveFeedback(ids["G"]!.description, "-late " + hostile)
        b2.now = UInt64(d + 10 * h)
        _ = try b2.close(ids["G"]!.description)
        b1.now = UInt64(d + 11 * h)
        _ = try b1.giveFeedback(ids["A"]!.description, "in time")
        try F.deliver(bp1, to: hq, now: d + 11 * h + 5 * m)  // A's feedback reaches HQ before its deadline (12:00)
        b1.now = UInt64(d + 12 * h + 30 * m)
        _ = try b1.addNote(ids["A"]!.description, "</td>" + hostile)
        b1.now = UInt64(d + 13 * h)
        _ = try b1.close(ids["A"]!.description)
        b1.now = UInt64(d + 15 * h)
        _ = try b1.createVisit(VisitDraft(scope: F.wudu17, subject: hostile, visitor: "@officer", visitType: .keyPerson, visitedAt: d + 15 * h,
                                          outcome: "+1 " + hostile))
        // Cheng: C at 23:59:59.999 (in the day), E at midnight (the next day), a visit the evening before.
        ids["C"] = try F.incident(b3, at: d + 24 * h - 1, scope: F.cheng50, category: .dispute, priority: .urgent, summary: "C", lat: 33.75,
                                  lon: 105.74, deadline: d + 25 * h).id
        ids["E"] = try F.incident(b3, at: d + 24 * h, scope: F.cheng50, category: .dispute, priority: .low, summary: "E", lat: 33.75, lon: 105.74).id
        b3.now = UInt64(d + 24 * h + 1)
        _ = try b3.createVisit(VisitDraft(scope: F.cheng50, subject: "v", visitor: "o", visitType: .routine, visitedAt: d - 1 * h))
        for r in [bp1, bp2, bp3] { try F.deliver(r, to: hq) }
        return (try RecordBook(replicator: hq, now: UInt64(d + 31 * h)), ids)
    }

    static var reportTime: Int64 { F.dayStart + 31 * F.hour }  // 07:00 the next morning

    @Test func figuresPerCountyAreTheKnownOnes() throws {
        let (book, ids) = try Self.scenario()
        let r = try DailyReport.make(book, day: F.day, now: Self.reportTime)
        #expect(r.date == "2026-12-03" && r.from == "2026-12-03T00:00:00+08:00" && r.until == "2026-12-04T00:00:00+08:00")
        #expect(r.timeZone == "China Standard Time (UTC+8)" && r.role == "hq")
        #expect(r.counties.map(\.county) == LongnanGeography.counties.map(\.name), "the 9 counties, in order, even when empty")
        let wudu = try #require(r.counties.first { $0.county == "wudu" })
        #expect(wudu.incidents == 2 && wudu.byCategory["traffic"] == 2 && wudu.byCategory["fire"] == 0)
        #expect(wudu.byPriority["high"] == 1 && wudu.byPriority["normal"] == 1 && wudu.byPriority["urgent"] == 0)
        #expect(wudu.stillOpen == 1, "A closed, B open")
        #expect(wudu.closures == 2, "A and G (reported the day before) closed in the day")
        #expect(wudu.feedbackDue == 3 && wudu.feedbackOverdue == 2, "A in time; F none; G late")
        #expect(wudu.overdueRate == 2.0 / 3.0)
        #expect(wudu.suspectedDuplicates == 1 && wudu.visits == 1 && wudu.visitsByType["key-person"] == 1)
        let cheng = try #require(r.counties.first { $0.county == "cheng" })
        #expect(cheng.incidents == 1 && cheng.byCategory["dispute"] == 1 && cheng.byPriority["urgent"] == 1 && cheng.byPriority["low"] == 0,
                "C at 23:59:59.999 counts, E at midnight does not")
        #expect(cheng.visits == 0, "the visit of the evening before does not count")
        #expect(cheng.feedbackDue == 0 && cheng.overdueRate == nil)
        #expect(r.total.incidents == 3 && r.total.closures == 2 && r.total.feedbackDue == 3 && r.total.feedbackOverdue == 2)
        #expect(r.overdue.map(\.id) == [ids["F"]!.description, ids["G"]!.description], "by deadline")
        #expect(r.overdue[0].feedbackAt == nil && r.overdue[0].lateMinutes == (Self.reportTime - (F.dayStart + 2 * F.hour)) / F.minute)
        #expect(r.overdue[1].feedbackAt == "2026-12-03T09:30:00+08:00" && r.overdue[1].feedbackArrivedAt == "2026-12-04T07:00:00+08:00")
        #expect(r.overdue[1].lateMinutes == 23 * 60, "late to its arrival at HQ (07:00 the next morning), not to its writing")
        #expect(r.total.feedbackJudgedByWriteTime == 0)
        #expect(r.duplicates.count == 1 && r.duplicates[0].pair.earlier == ids["A"]! && r.duplicates[0].pair.later == ids["B"]!)
        #expect(!r.duplicates[0].pair.marked)
        #expect(abs(r.duplicates[0].pair.distanceMetres - 200) < 1)
        #expect(r.dutyLogs.map(\.scope) == ["longnan/cheng/station-050", "longnan/wudu/station-017"])
        let log = r.dutyLogs[1]
        #expect(log.reported == 2 && log.closed == 2 && log.feedback == 2 && log.notes == 1 && log.visits == 1)
        #expect(log.entries.map(\.kind) == ["reported", "reported", "feedback", "closed", "feedback", "note", "closed", "visit"])
        #expect(log.entries.map { String($0.time.dropFirst(11).prefix(5)) } == ["09:00", "09:10", "09:30", "10:00", "11:00", "12:30", "13:00", "15:00"])
        #expect(r.incomplete == 0 && r.damaged == 0)
    }

    @Test func aCountyOnlyReportHasOnlyThatCounty() throws {
        let (book, _) = try Self.scenario()
        let r = try DailyReport.make(book, day: F.day, options: DailyReportOptions(county: "cheng"), now: Self.reportTime)
        #expect(r.counties.map(\.county) == ["cheng"] && r.total.incidents == 1 && r.dutyLogs.map(\.county) == ["cheng"])
        #expect(r.overdue.isEmpty && r.duplicates.isEmpty)
    }

    @Test func theNextDayStartsAtMidnightUTC8() throws {
        let (book, ids) = try Self.scenario()
        let next = try DailyReport.make(book, day: ReportDay(daysSinceEpoch: F.day.daysSinceEpoch + 1), now: Self.reportTime)
        let cheng = try #require(next.counties.first { $0.county == "cheng" })
        #expect(cheng.incidents == 1 && cheng.byPriority["low"] == 1, "E, reported at 00:00:00.000, is the next day's")
        #expect(next.dutyLogs.flatMap(\.entries).map(\.record) == [ids["E"]!.description])
    }

    @Test func markingADuplicateGoesThroughRecordBookAndShows() throws {
        let (book, ids) = try Self.scenario()
        let w = try DuplicateFinder.mark(book, duplicate: ids["B"]!.description, of: String(ids["A"]!.description.prefix(8)))
        let marked = try Incident(w.record)
        #expect(w.change != nil && marked.duplicateOf == ids["A"]!)
        let r = try DailyReport.make(book, day: F.day, now: Self.reportTime)
        #expect(r.duplicates.count == 1 && r.duplicates[0].pair.marked)
        #expect(r.counties.first { $0.county == "wudu" }?.markedDuplicates == 1)
        let listed = try DuplicateFinder.list(book, since: F.day.start, until: F.day.end, rule: .standard)
        #expect(listed.map(\.later) == [ids["B"]!] && listed[0].marked)
        #expect(throws: FieldSyncError.self) { try DuplicateFinder.mark(book, duplicate: ids["A"]!.description, of: ids["A"]!.description) }
    }

    @Test func hostileTextIsEscapedInHTMLAndNeutralisedInCSV() throws {
        let (book, _) = try Self.scenario()
        let r = try DailyReport.make(book, day: F.day, now: Self.reportTime)
        let html = r.html()
        #expect(!html.contains("<script"), "no raw script element from any field")
        #expect(!html.contains("<img") && !html.contains("</td><script"))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("@import"), "self-contained: no external asset")
        #expect(html.contains("@media print") && html.contains("UTC+8"))
        let csv = r.csv()
        #expect(csv.hasPrefix("section,county,station,time,record,item,value,text\r\n"))
        let cells = csv.split(separator: "\r\n").flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
        for c in cells {
            let cell = c.hasPrefix("\"") ? c.dropFirst() : c
            #expect(!CSVTextProbe.startsLikeFormula(String(cell)), "cell \(c) would run as a formula")
        }
        #expect(csv.contains("'-F "), "a summary starting with - is neutralised")
        let json = r.json()
        let back = try JSONDecoder().decode(DailyReport.self, from: Data(json.utf8))
        #expect(back.json() == json, "the JSON form holds the whole report: it decodes and encodes to the same text")
        #expect(back.total == r.total && back.overdue == r.overdue && back.dutyLogs == r.dutyLogs)
    }

    @Test func badDatesAndOptionsAreRefused() throws {
        for bad in ["2026-02-29", "2026-13-01", "2026-1-01", "26-01-01", "2026-12-03T00:00", "", "２０２６-01-01"] {
            #expect(throws: ReportError.self) { try ReportDay(parsing: bad) }
        }
        #expect(try ReportDay(parsing: "2028-02-29").text == "2028-02-29")
        let (book, _) = try Self.scenario()
        #expect(throws: ReportError.self) {
            try DailyReport.make(book, day: F.day, options: DailyReportOptions(duplicates: DuplicateRule(distanceMetres: -1, windowMilliseconds: 0)),
                                 now: 0)
        }
    }
}

/// The CSV formula test, as a spreadsheet reads a cell (mirrors `CSVText.startsLikeFormula`, written again
/// here so the test does not trust the code it checks).
enum CSVTextProbe {
    static func startsLikeFormula(_ cell: String) -> Bool {
        guard let first = cell.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) else { return false }
        return Double(cell) == nil
    }
}
