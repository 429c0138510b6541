// Suspected duplicate incidents (重复警情 screening): the same category, within a distance (haversine, metres)
// and a time window of each other, created by different devices. Found by a sweep in time order over a grid
// of cells at least the distance wide, so each incident is compared only with the incidents of its own and
// the 8 neighbouring cells that are inside the window: O(n log n + pairs), not O(n²).

import FieldSync
import FieldSyncCore
import FieldSyncGeo
import FieldSyncProtocol
import Foundation

/// The duplicates rule.
public struct DuplicateRule: Sendable, Equatable, Codable {
    /// Most distance between the two incidents' locations, metres (inclusive).
    public var distanceMetres: Double
    /// Most time between their reported times, milliseconds (inclusive).
    public var windowMilliseconds: Int64

    /// The default: 500 m and 30 minutes.
    public static let standard = DuplicateRule(distanceMetres: 500, windowMilliseconds: 30 * 60_000)

    /// Creates a rule.
    public init(distanceMetres: Double, windowMilliseconds: Int64) {
        self.distanceMetres = distanceMetres
        self.windowMilliseconds = windowMilliseconds
    }

    /// Checks the values.
    /// - Throws: `ReportError`.
    public func validate() throws(ReportError) {
        guard distanceMetres.isFinite, distanceMetres >= 0, distanceMetres <= 100_000 else {
            throw ReportError("the duplicates distance must be 0 to 100000 metres, not \(distanceMetres)")
        }
        guard windowMilliseconds >= 0, windowMilliseconds <= 7 * 86_400_000 else {
            throw ReportError("the duplicates time window must be 0 to 7 days, not \(windowMilliseconds) ms")
        }
    }
}

/// What the rule needs of an incident.
public struct IncidentPoint: Sendable, Equatable {
    /// The record.
    public var id: RecordID
    /// Its category.
    public var category: Incident.Category
    /// When it was reported (ms since the Unix epoch).
    public var reportedAt: Int64
    /// Where.
    public var location: GeoPoint
    /// The device that created it (the author of its creating edit; nil if that edit has not arrived).
    public var creator: DeviceID?
    /// The incident it is already marked a duplicate of, if any.
    public var duplicateOf: RecordID?

    /// Creates a point.
    public init(id: RecordID, category: Incident.Category, reportedAt: Int64, location: GeoPoint, creator: DeviceID?,
                duplicateOf: RecordID? = nil) {
        self.id = id
        self.category = category
        self.reportedAt = reportedAt
        self.location = location
        self.creator = creator
        self.duplicateOf = duplicateOf
    }

    /// The point of an incident.
    public init(_ incident: Incident) {
        self.init(id: incident.id, category: incident.category, reportedAt: incident.reportedAt,
                  location: GeoPoint(latitude: incident.location.latitude, longitude: incident.location.longitude),
                  creator: incident.record.created.value?.author, duplicateOf: incident.duplicateOf)
    }
}

/// A suspected pair: `later` may duplicate `earlier`.
public struct SuspectedDuplicate: Sendable, Equatable, Codable {
    /// The incident reported first (ties: the smaller id).
    public var earlier: RecordID
    /// The incident reported after it.
    public var later: RecordID
    /// Their category.
    public var category: String
    /// Distance between them, metres.
    public var distanceMetres: Double
    /// Time between their reports, milliseconds.
    public var intervalMilliseconds: Int64
    /// Whether one is already marked a duplicate of the other (`duplicateOf`).
    public var marked: Bool

    enum CodingKeys: String, CodingKey { case earlier, later, category, distanceMetres, intervalMilliseconds, marked }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(earlier.description, forKey: .earlier)
        try c.encode(later.description, forKey: .later)
        try c.encode(category, forKey: .category)
        try c.encode((distanceMetres * 10).rounded() / 10, forKey: .distanceMetres)
        try c.encode(intervalMilliseconds, forKey: .intervalMilliseconds)
        try c.encode(marked, forKey: .marked)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func id(_ k: CodingKeys) throws -> RecordID {
            let s = try c.decode(String.self, forKey: k)
            guard let r = RecordID(hex: s) else { throw Swift.DecodingError.dataCorruptedError(forKey: k, in: c, debugDescription: "not a record id") }
            return r
        }
        earlier = try id(.earlier)
        later = try id(.later)
        category = try c.decode(String.self, forKey: .category)
        distanceMetres = try c.decode(Double.self, forKey: .distanceMetres)
        intervalMilliseconds = try c.decode(Int64.self, forKey: .intervalMilliseconds)
        marked = try c.decode(Bool.self, forKey: .marked)
    }

    /// Creates a pair.
    public init(earlier: RecordID, later: RecordID, category: String, distanceMetres: Double, intervalMilliseconds: Int64, marked: Bool) {
        self.earlier = earlier
        self.later = later
        self.category = category
        self.distanceMetres = distanceMetres
        self.intervalMilliseconds = intervalMilliseconds
        self.marked = marked
    }
}

/// The duplicates screen.
///
/// ```swift
/// let pairs = DuplicateFinder.pairs(points, rule: .standard)
/// ```
public enum DuplicateFinder {
    /// Every pair of `points` the rule flags: same category, reported within the window, within the
    /// distance, created by different devices (or either creator unknown). Sorted by the later incident's
    /// report time, then ids.
    public static func pairs(_ points: [IncidentPoint], rule: DuplicateRule) -> [SuspectedDuplicate] {
        let sorted = points.sorted { ($0.reportedAt, $0.id) < ($1.reportedAt, $1.id) }
        // Cells of at least the distance in both directions (a degree of latitude is 110.6 to 111.7 km, so a
        // cell of distance / 110 km is wide enough; a degree of longitude shrinks with the cosine of the
        // latitude, so each row of cells has its own width).
        let cellDegreesLatitude = max(rule.distanceMetres / 110_000, 1e-6)
        struct CellKey: Hashable { var category: Incident.Category; var row: Int; var column: Int }
        func row(_ p: GeoPoint) -> Int { Int((p.latitude / cellDegreesLatitude).rounded(.down)) }
        func cellWidth(row: Int) -> Double {
            // Wide enough at the latitude furthest from the equator that a point of this row or of a
            // neighbouring row (whose neighbours are searched here) can have.
            let lat = min(89.0, max(abs(Double(row - 1) * cellDegreesLatitude), abs(Double(row + 2) * cellDegreesLatitude)))
            return max(cellDegreesLatitude / max(cos(lat * .pi / 180), 1e-3), 1e-6)
        }
        func column(_ p: GeoPoint, row: Int) -> Int { Int(((p.longitude + 180) / cellWidth(row: row)).rounded(.down)) }
        // Each cell's points in report order; `start[cell]` skips those already older than the window.
        var cells: [CellKey: [Int]] = [:]
        var start: [CellKey: Int] = [:]
        var out: [SuspectedDuplicate] = []
        for (i, p) in sorted.enumerated() {
            let r = row(p.location)
            for dr in -1...1 {
                let rr = r + dr
                // Columns of the neighbouring row: its own width; look one cell either side of where p falls.
                let c = column(p.location, row: rr)
                for dc in -1...1 {
                    let key = CellKey(category: p.category, row: rr, column: c + dc)
                    guard let list = cells[key] else { continue }
                    var s = start[key] ?? 0
                    // Report times are any Int64 a device sent: a difference that overflows is beyond any window.
                    while s < list.count, Self.apart(p.reportedAt, sorted[list[s]].reportedAt) > rule.windowMilliseconds { s += 1 }
                    start[key] = s
                    for j in list[s...] {
                        let q = sorted[j]
                        if let a = p.creator, let b = q.creator, a == b { continue }
                        let d = Geo.haversineMetres(p.location, q.location)
                        guard d <= rule.distanceMetres else { continue }
                        out.append(SuspectedDuplicate(earlier: q.id, later: p.id, category: p.category.rawValue, distanceMetres: d,
                                                      intervalMilliseconds: p.reportedAt - q.reportedAt,
                                                      marked: p.duplicateOf == q.id || q.duplicateOf == p.id))
                    }
                }
            }
            cells[CellKey(category: p.category, row: r, column: column(p.location, row: r)), default: []].append(i)
        }
        return out
    }

    /// `later - earlier` (`later >= earlier`), or `Int64.max` where that does not fit (report times are any
    /// Int64 a device sent).
    static func apart(_ later: Int64, _ earlier: Int64) -> Int64 {
        let (d, overflow) = later.subtractingReportingOverflow(earlier)
        return overflow ? .max : d
    }

    /// The suspected pairs whose later incident was reported in [`since`, `until`), read from the store
    /// through its event-time index (incidents reported from `since` minus the window on).
    /// - Throws: `FieldSyncError` (store errors).
    public static func list(_ book: RecordBook, since: Int64, until: Int64, rule: DuplicateRule) throws(FieldSyncError) -> [SuspectedDuplicate] {
        let records = try book.records(RecordQuery(kind: .incident, since: since - rule.windowMilliseconds, until: until))
        let points = records.compactMap { try? Incident($0) }.map(IncidentPoint.init)
        let reported = Dictionary(points.map { ($0.id, $0.reportedAt) }, uniquingKeysWith: { a, _ in a })
        return pairs(points, rule: rule).filter { (reported[$0.later] ?? .min) >= since }
    }

    /// Marks `duplicate` as a duplicate of `original` (the incident's `duplicateOf`, a signed change written
    /// by this device through `RecordBook.markDuplicate`).
    /// - Parameters:
    ///   - duplicate: the id (or unique prefix) of the incident that duplicates.
    ///   - original: the id (or unique prefix) of the incident it duplicates.
    /// - Throws: `FieldSyncError`: the book's refusals (no such incident, itself, a scope this device may not write).
    @discardableResult
    public static func mark(_ book: RecordBook, duplicate: String, of original: String) throws(FieldSyncError) -> RecordWrite {
        try book.markDuplicate(duplicate, of: original)
    }
}
