import FieldSyncCore
import FieldSyncGeo
import FieldSyncReports
import Foundation
import Testing

/// The duplicates rule at its edges and against brute force; days and the schedule in UTC+8.
@Suite struct DuplicateAndDayTests {
    static let a = DeviceID(ID128(high: 1, low: 1)), b = DeviceID(ID128(high: 2, low: 2))

    static func point(_ n: UInt64, _ category: Incident.Category = .traffic, at t: Int64, lat: Double = 33.39, lon: Double = 104.93,
                      by creator: DeviceID? = b) -> IncidentPoint {
        IncidentPoint(id: RecordID(ID128(high: 0, low: n)), category: category, reportedAt: t, location: GeoPoint(latitude: lat, longitude: lon),
                      creator: creator)
    }

    /// The point `metres` north of (33.39, 104.93), by the haversine's own inverse.
    static func north(_ metres: Double) -> Double { 33.39 + metres / Geo.earthRadiusMetres * 180 / .pi }

    @Test func theRuleAtItsEdges() {
        let rule = DuplicateRule(distanceMetres: 500, windowMilliseconds: 30 * 60_000)
        let base = Self.point(1, at: 0, by: Self.a)
        func flagged(_ p: IncidentPoint) -> Bool { !DuplicateFinder.pairs([base, p], rule: rule).isEmpty }
        #expect(flagged(Self.point(2, at: 30 * 60_000, lat: Self.north(499.9))), "inside both limits")
        #expect(flagged(Self.point(2, at: 30 * 60_000, lat: Self.north(499.999))), "a millimetre inside the distance")
        #expect(!flagged(Self.point(2, at: 0, lat: Self.north(500.5))), "half a metre too far")
        #expect(flagged(Self.point(2, at: 30 * 60_000)), "at the window's end (inclusive)")
        #expect(!flagged(Self.point(2, at: 30 * 60_000 + 1)), "one millisecond too late")
        #expect(!flagged(Self.point(2, at: -30 * 60_000 - 1)), "one millisecond too early")
        #expect(!flagged(Self.point(2, .fire, at: 0)), "another category")
        #expect(!flagged(Self.point(2, at: 0, by: Self.a)), "the same device")
        #expect(flagged(Self.point(2, at: 0, by: nil)), "creator unknown: flagged")
        // East-west at Longnan's latitude: longitude degrees are shorter; the grid must not miss it.
        let east = 104.93 + 499 / (Geo.earthRadiusMetres * cos(33.39 * .pi / 180)) * 180 / .pi
        #expect(flagged(Self.point(2, at: 0, lon: east)))
        let p = DuplicateFinder.pairs([Self.point(2, at: 60_000), base], rule: rule)
        #expect(p.count == 1 && p[0].earlier == base.id && p[0].intervalMilliseconds == 60_000)
    }

    /// Seeded random incidents in a small area: the grid sweep finds exactly the pairs a brute-force
    /// comparison of every pair finds.
    @Test func theSweepFindsWhatBruteForceFinds() {
        var r = SeededRandom(seed: 42)
        let devices = (1...5).map { DeviceID(ID128(high: UInt64($0), low: 0)) }
        let cats: [Incident.Category] = [.traffic, .dispute, .fire]
        var points: [IncidentPoint] = []
        for n in 0..<1_500 {
            points.append(IncidentPoint(id: RecordID(ID128(high: 0, low: UInt64(n))), category: cats[r.int(cats.count)],
                                        reportedAt: Int64(r.int(86_400_000)), location: GeoPoint(latitude: 33.3 + r.unit() * 0.1, longitude: 104.9 + r.unit() * 0.1),
                                        creator: devices[r.int(devices.count)]))
        }
        let rule = DuplicateRule(distanceMetres: 800, windowMilliseconds: 3_600_000)
        var brute = Set<[UInt64]>()
        for i in points.indices {
            for j in points.indices where j > i {
                let p = points[i], q = points[j]
                guard p.category == q.category, p.creator != q.creator, abs(p.reportedAt - q.reportedAt) <= rule.windowMilliseconds,
                      Geo.haversineMetres(p.location, q.location) <= rule.distanceMetres else { continue }
                brute.insert([p.id.raw.low, q.id.raw.low].sorted())
            }
        }
        let found = DuplicateFinder.pairs(points, rule: rule)
        #expect(brute.count > 50, "the sample has pairs to find")
        #expect(Set(found.map { [$0.earlier.raw.low, $0.later.raw.low].sorted() }) == brute)
        #expect(found.count == brute.count, "each pair once")
    }

    @Test func haversineMatchesAKnownDistance() {
        // One degree of latitude along a meridian: 111.195 km on the mean-radius sphere.
        let d = Geo.haversineMetres(GeoPoint(latitude: 33, longitude: 105), GeoPoint(latitude: 34, longitude: 105))
        #expect(abs(d - 111_195) < 1)
    }

    /// Times from field devices are any Int64 (the schema has no range): an incident reported at `Int64.max`
    /// beside one at -1, or a deadline of `Int64.min`, made the duplicates screen and the report's time text
    /// overflow and trap, taking the node (and its daily report) down. Now they are shown clamped to ±8.64e15
    /// ms and never paired.
    @Test func anyDeviceTimeIsFormattedAndScreened() {
        for t in [Int64.min, Int64.min + 1, -ReportTimeZone.timeLimit - 1, -1, 0, ReportTimeZone.timeLimit + 1, Int64.max - 1, Int64.max] {
            #expect(!ReportTimeZone.iso(t).isEmpty && !ReportTimeZone.clock(t).isEmpty && !ReportDay(containing: t).text.isEmpty)
        }
        #expect(ReportTimeZone.iso(Int64.max) == ReportTimeZone.iso(ReportTimeZone.timeLimit))
        let rule = DuplicateRule(distanceMetres: 500, windowMilliseconds: 30 * 60_000)
        let far = [Self.point(1, at: -1, by: Self.a), Self.point(2, at: .max, by: Self.b), Self.point(3, at: .min, by: Self.b),
                   Self.point(4, at: .max - 1, by: Self.a)]
        let pairs = DuplicateFinder.pairs(far, rule: rule)
        #expect(pairs.count == 1 && pairs[0].intervalMilliseconds == 1, "only the two a millisecond apart: \(pairs)")
    }

    @Test func daysAreUTC8() throws {
        let day = try ReportDay(parsing: "2026-12-03")
        #expect(day.start == 1_796_227_200_000, "2026-12-02T16:00:00Z")
        #expect(day.end - day.start == 86_400_000)
        #expect(ReportDay(containing: day.start) == day && ReportDay(containing: day.start - 1) == day.previous)
        #expect(ReportDay(containing: day.end - 1) == day)
        #expect(ReportTimeZone.iso(day.start) == "2026-12-03T00:00:00+08:00" && ReportTimeZone.iso(day.start - 1) == "2026-12-02T23:59:59+08:00")
        #expect(try ReportDay(parsing: "1970-01-01").start == -28_800_000)
        #expect(try ReportDay(parsing: "2000-02-29").text == "2000-02-29" && ReportDay(daysSinceEpoch: 0).text == "1970-01-01")
    }

    @Test func theScheduleRunsAtItsTimeForTheDayBefore() throws {
        let at = try ReportClockTime(parsing: "07:00")
        let day = try ReportDay(parsing: "2026-12-03")
        let sevenAM = day.start + 7 * 3_600_000
        var next = at.nextRun(after: sevenAM - 1)
        #expect(next.at == sevenAM && next.reportDay == day.previous)
        next = at.nextRun(after: sevenAM)
        #expect(next.at == sevenAM + 86_400_000 && next.reportDay == day, "at 07:00 sharp the next run is tomorrow's")
        // 23:30 UTC is 07:30 UTC+8 of the next day: the run is the day after's 07:00.
        next = at.nextRun(after: day.start - 30 * 60_000)
        #expect(next.at == sevenAM)
        for bad in ["7:00", "24:00", "07:60", "0700", ""] { #expect(throws: ReportError.self) { try ReportClockTime(parsing: bad) } }
    }
}
