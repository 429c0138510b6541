import FieldSync
import FieldSyncCore
import FieldSyncProtocol
import FieldSyncReports
import FieldSyncTestSupport
@testable import FieldSyncWeb
import Foundation
import Testing

/// The overview's figures against the way they were computed before it was made fast (docs/command-center.md,
/// "Performance"): visits counted by county from the store's index instead of opening every visit of the week,
/// and counties cut from a scope's bytes instead of splitting it into segments.
@Suite(.ownThread) struct OverviewReadTests {
    @Test func scopePathSegmentsAreTheScopesSegments() throws {
        for p in ["longnan", "longnan/wudu", "longnan/wudu/station-017", "longnan/wudu/station-017/village-0412", "a/b-c/d_e/f/g/h", "x1/y"] {
            let seg = try Scope(p).segments
            for n in 0..<8 { #expect(ScopePath.segment(p, n) == (n < seg.count ? seg[n] : ""), "\(p) segment \(n)") }
            #expect(ScopePath.county(p) == (seg.count > 1 ? seg[1] : ""))
        }
    }

    /// Visits and incidents in two counties, in the week, before it and after today; for HQ's operator and a
    /// county operator, the overview's visits by county, its freshness per county and its week by county are
    /// those of every record of the week opened and its scope split into segments.
    @Test(.timeLimit(.minutes(2))) func visitsAndCountiesAreThoseOfTheOpenedRecords() async throws {
        var f = try WebFixtures()
        defer { f.remove() }
        let app = try await f.stationApp()
        let now = Int64(FieldSyncApp.wallClock())
        let day = Int64(WebFixtures.day)
        let chengVillage = try Scope("longnan/cheng/station-101/village-2003")
        let visits: [(Scope, Int64)] = [
            (WebFixtures.wuduVillage, now - 3_600_000), (WebFixtures.wuduVillage, now - 2 * day), (WebFixtures.wuduVillage, now - 5 * day),
            (WebFixtures.wudu, now - 60_000), (WebFixtures.wudu, now - 8 * day),
            (WebFixtures.cheng, now - day), (chengVillage, now - 4 * day), (chengVillage, now - 30 * day), (WebFixtures.cheng, now + 2 * day),
        ]
        for (i, (scope, at)) in visits.enumerated() {
            _ = try await app.createVisit(VisitDraft(scope: scope, subject: "household \(i)", visitor: "officer", visitType: .routine, visitedAt: at))
        }
        for (summary, scope) in [("a", WebFixtures.wuduVillage), ("b", WebFixtures.wudu), ("c", chengVillage)] {
            _ = try await app.createIncident(WebFixtures.draft(summary, scope: scope))
        }
        let operators = [WebOperator(name: "alice", scopes: [], csrf: "", token: ""),
                         WebOperator(name: "wudu", scopes: [try Scope("longnan/wudu")], csrf: "", token: "")]
        for op in operators {
            let (m, visits, newest, week) = try await app.perform { book in
                let offset = 480
                let m = try OverviewModel.read(book, op: op, now: now, offsetMinutes: offset)
                // The way it was computed before.
                let today = TimeText.startOfDay(now, offsetMinutes: offset)
                var visits: [String: Int] = [:], newest: [String: Int64] = [:], week: [String: Int] = [:]
                for s in op.scopes.isEmpty ? [nil] : op.scopes.map(Optional.some) {
                    for kind in [RecordKind.visit, .incident] {
                        for r in try book.records(RecordQuery(kind: kind, scope: s, since: today - 6 * 86_400_000, until: today + 86_400_000))
                        where op.mayRead(r.scope) {
                            let seg = r.scope.segments
                            let county = seg.count > 1 ? seg[1] : ""
                            if kind == .visit { visits[county, default: 0] += 1 } else { week[county, default: 0] += 1 }
                            newest[county] = max(newest[county] ?? 0, Int64(r.lastModified.value?.hlc.milliseconds ?? 0))
                        }
                    }
                }
                return (m, visits, newest, week)
            }
            #expect(m.visits == visits, "\(op.name)")
            #expect(m.newest == newest, "\(op.name)")
            #expect(m.week == week, "\(op.name)")
            #expect(visits == (op.scopes.isEmpty ? ["wudu": 4, "cheng": 2] : ["wudu": 4]), "\(op.name): the week's visits, none ahead or before")
        }
        await app.close(grace: .zero)
    }
}

/// `TimeText.format` writes what `String(format: "%04d-%02d-%02d %02lld:%02lld")` wrote (it was a fifth of the
/// overview's time), and any `Int64` a device sends (the arithmetic on the extremes trapped: a hostile
/// `feedbackDeadline` of `Int64.min` in the overdue table, or a `reportedAt` of `Int64.max` at the top of
/// the list, took the node down).
@Suite struct TimeTextTests {
    static func printf(_ ms: Int64, offsetMinutes: Int) -> String {
        let local = ms + Int64(offsetMinutes) * 60_000
        let days = local >= 0 ? local / 86_400_000 : (local - 86_399_999) / 86_400_000
        let (y, m, d) = FieldSyncReports.ReportDay(daysSinceEpoch: days).components
        let minutes = (local - days * 86_400_000) / 60_000
        return String(format: "%04d-%02d-%02d %02lld:%02lld", y, m, d, minutes / 60, minutes % 60)
    }

    @Test func formatIsWhatPrintfWrote() {
        var rng = SplitMix64(seed: 15)
        var values: [Int64] = [0, -1, 1, 86_399_999, 86_400_000, -86_400_000, -86_400_001, 1_784_505_600_000, -62_135_596_800_000,
                               -62_198_755_200_000, -70_000_000_000_000, 253_402_300_799_999, 253_402_300_800_000, 8_000_000_000_000_000]
        for _ in 0..<20_000 { values.append(Int64(bitPattern: rng.next()) % 8_000_000_000_000_000) }
        for _ in 0..<20_000 { values.append(Int64(bitPattern: rng.next()) % 4_000_000_000_000) }
        for v in values {
            for offset in [0, 480, -300, 345] {
                #expect(TimeText.format(v, offsetMinutes: offset) == Self.printf(v, offsetMinutes: offset), "\(v) \(offset)")
            }
        }
    }

    @Test func anyDeviceTimeIsShown() {
        for v in [Int64.min, Int64.min + 1, Int64.max, Int64.max - 1, -8_640_000_000_000_001, 8_640_000_000_000_001] {
            for offset in [480, -720, Int.max, Int.min] {
                #expect(!TimeText.format(v, offsetMinutes: offset).isEmpty)
            }
        }
        #expect(TimeText.format(.max, offsetMinutes: 0) == TimeText.format(8_640_000_000_000_000, offsetMinutes: 0))
        #expect(TimeText.format(.min, offsetMinutes: 0) == TimeText.format(-8_640_000_000_000_000, offsetMinutes: 0))
    }
}
