// Days as the command centre counts them: calendar days of China Standard Time (UTC+8, no daylight saving
// time), whatever the node's system time zone. Pure: the caller passes the wall clock in.

import Foundation

/// The time zone reports count days in: China Standard Time, UTC+8 (no daylight saving time since 1991).
public enum ReportTimeZone {
    /// The offset from UTC, milliseconds.
    public static let offsetMilliseconds: Int64 = 8 * 3_600_000
    /// How reports name it.
    public static let name = "China Standard Time (UTC+8)"
    /// The ISO 8601 suffix of local times.
    public static let isoSuffix = "+08:00"

    /// `YYYY-MM-DD HH:MM` in UTC+8.
    public static func minute(_ ms: Int64) -> String {
        let (d, m) = split(ms)
        return "\(d.text) \(two(Int(m / 60_000) / 60)):\(two(Int(m / 60_000) % 60))"
    }

    /// `HH:MM` in UTC+8.
    public static func clock(_ ms: Int64) -> String {
        let (_, m) = split(ms)
        return "\(two(Int(m / 60_000) / 60)):\(two(Int(m / 60_000) % 60))"
    }

    /// `YYYY-MM-DDTHH:MM:SS+08:00`.
    public static func iso(_ ms: Int64) -> String {
        let (d, m) = split(ms)
        let s = Int(m / 1000)
        return "\(d.text)T\(two(s / 3600)):\(two(s / 60 % 60)):\(two(s % 60))\(isoSuffix)"
    }

    /// The latest and earliest time shown (ms): ±8.64e15, the range of a JavaScript `Date` (about ±275,000
    /// years). Times come from field devices as any Int64; one beyond this is shown as this, so that
    /// formatting it cannot overflow (an incident dated `Int64.max` or with a deadline of `Int64.min` made the
    /// daily report trap and took the node down).
    public static let timeLimit: Int64 = 8_640_000_000_000_000

    /// The local day of `ms` and the milliseconds since its midnight (`ms` clamped to ±`timeLimit`).
    static func split(_ ms: Int64) -> (ReportDay, Int64) {
        let local = min(max(ms, -timeLimit), timeLimit) + offsetMilliseconds
        let days = local >= 0 ? local / 86_400_000 : (local - 86_399_999) / 86_400_000
        return (ReportDay(daysSinceEpoch: days), local - days * 86_400_000)
    }

    static func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
}

/// A calendar day in UTC+8.
///
/// ```swift
/// let day = try ReportDay(parsing: "2026-12-03")
/// day.start  // 2026-12-02T16:00:00Z in ms
/// ```
public struct ReportDay: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Days since 1970-01-01 (local).
    public let daysSinceEpoch: Int64

    /// The day `daysSinceEpoch` days after 1970-01-01.
    public init(daysSinceEpoch: Int64) { self.daysSinceEpoch = daysSinceEpoch }

    /// Parses `YYYY-MM-DD`.
    /// - Throws: `ReportError` naming the expected form.
    public init(parsing text: String) throws(ReportError) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]), parts.allSatisfy({ $0.allSatisfy(\.isASCII) }),
              (1...12).contains(m), d >= 1, d <= Self.daysIn(month: m, year: y), y >= 1970, y <= 9999 else {
            throw ReportError("\"\(text)\" is not a date: give YYYY-MM-DD, e.g. 2026-12-03 (a calendar day of \(ReportTimeZone.name))")
        }
        daysSinceEpoch = Self.days(year: y, month: m, day: d)
    }

    /// The day holding `ms` (ms since the Unix epoch) in UTC+8.
    public init(containing ms: Int64) { self = ReportTimeZone.split(ms).0 }

    /// Its first millisecond (local midnight), ms since the Unix epoch.
    public var start: Int64 { daysSinceEpoch * 86_400_000 - ReportTimeZone.offsetMilliseconds }
    /// The next day's midnight (exclusive end).
    public var end: Int64 { start + 86_400_000 }
    /// The day before.
    public var previous: ReportDay { ReportDay(daysSinceEpoch: daysSinceEpoch - 1) }

    /// Year, month, day (civil-from-days, Howard Hinnant's algorithm).
    public var components: (year: Int, month: Int, day: Int) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), Int(m), Int(d))
    }

    /// `YYYY-MM-DD`.
    public var text: String {
        let c = components
        return "\(c.year)-\(ReportTimeZone.two(c.month))-\(ReportTimeZone.two(c.day))"
    }
    public var description: String { text }
    public static func < (a: ReportDay, b: ReportDay) -> Bool { a.daysSinceEpoch < b.daysSinceEpoch }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days-from-civil).
    public static func days(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(month > 2 ? month - 3 : month + 9)
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}

/// A time of day `HH:MM` in UTC+8 (the daily report's schedule).
public struct ReportClockTime: Sendable, Equatable, CustomStringConvertible {
    /// Minutes after local midnight.
    public let minutes: Int

    /// Parses `HH:MM` (00:00 ... 23:59).
    /// - Throws: `ReportError`.
    public init(parsing text: String) throws(ReportError) {
        let p = text.split(separator: ":", omittingEmptySubsequences: false)
        guard p.count == 2, p[0].count == 2, p[1].count == 2, let h = Int(p[0]), let m = Int(p[1]), (0...23).contains(h), (0...59).contains(m) else {
            throw ReportError("\"\(text)\" is not a time of day: give HH:MM (24-hour, \(ReportTimeZone.name)), e.g. 07:00")
        }
        minutes = h * 60 + m
    }

    public var description: String { "\(ReportTimeZone.two(minutes / 60)):\(ReportTimeZone.two(minutes % 60))" }

    /// The first moment strictly after `now` (ms) at this time of day in UTC+8, and the day whose report
    /// is due then (the day before it).
    public func nextRun(after now: Int64) -> (at: Int64, reportDay: ReportDay) {
        var day = ReportDay(containing: now)
        var at = day.start + Int64(minutes) * 60_000
        if at <= now {
            day = ReportDay(daysSinceEpoch: day.daysSinceEpoch + 1)
            at = day.start + Int64(minutes) * 60_000
        }
        return (at, day.previous)
    }
}

/// A report that cannot be made: what is wrong and what to do.
public struct ReportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The message.
    public var description: String
    /// Creates an error.
    public init(_ description: String) { self.description = description }
}
