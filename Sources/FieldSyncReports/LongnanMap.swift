// The map of Longnan as SVG, drawn by the node (no tiles, no CDN, no script): the 9 counties as the
// Voronoi cells of their stations (approximate areas, as the simulator's staleness map draws them, with the
// same geometry code, FieldSyncGeo), the 202 stations coloured by staleness (time since the newest change
// from the station's scope reached this node: the newest change's HLC time, see docs/reports.md), open
// incidents as points by priority, a legend and a scale bar; longitude scaled by the cosine of the
// latitude. Every label is escaped.

import FieldSync
import FieldSyncCore
import FieldSyncGeo
import FieldSyncProtocol
import Foundation

/// An open incident on the map.
public struct MapIncident: Sendable, Equatable {
    /// The record.
    public var id: RecordID
    /// Its priority.
    public var priority: Priority
    /// Where.
    public var location: GeoPoint
    /// Its summary (untrusted; shown as the point's tooltip).
    public var summary: String

    /// Creates a point.
    public init(id: RecordID, priority: Priority, location: GeoPoint, summary: String) {
        self.id = id
        self.priority = priority
        self.location = location
        self.summary = summary
    }
}

/// What the map shows.
public struct LongnanMapInput: Sendable {
    /// The newest change's time (ms) held from each station scope (a station's own devices and everything
    /// below it); a station absent has none.
    public var newestChange: [String: Int64]
    /// Open incidents.
    public var incidents: [MapIncident]
    /// Open incidents left off (past `LongnanMap.maxIncidents`).
    public var incidentsLeftOff: Int
    /// Station scopes this node holds changes of that are not on the map (not in the layout).
    public var offMap: [String]
    /// The wall clock (ms).
    public var now: Int64
    /// The title (escaped when drawn).
    public var title: String
    /// The station scopes drawn (nil: every station of the layout). A reader limited to scopes (a county
    /// operator) is shown only its own stations: another county's station is not drawn, named or coloured.
    public var shownStations: Set<String>?

    /// Creates an input.
    public init(newestChange: [String: Int64], incidents: [MapIncident], incidentsLeftOff: Int = 0, offMap: [String] = [],
                now: Int64, title: String, shownStations: Set<String>? = nil) {
        self.newestChange = newestChange
        self.incidents = incidents
        self.incidentsLeftOff = incidentsLeftOff
        self.offMap = offMap
        self.now = now
        self.title = title
        self.shownStations = shownStations
    }
}

/// The SVG map.
public enum LongnanMap {
    /// Most open incidents drawn (the newest).
    public static let maxIncidents = 5_000
    /// Width and height, pixels.
    public static let width = 1000.0, height = 760.0
    static let left = 20.0, top = 40.0, bottom = 60.0, legendWidth = 200.0

    /// Staleness classes: colour, label, upper bound (minutes; nil: none).
    public static let stalenessClasses: [(color: String, label: String, belowMinutes: Int64?)] = [
        ("#2ca02c", "< 1 h", 60), ("#bcbd22", "1-6 h", 360), ("#ff7f0e", "6-24 h", 1440), ("#d62728", ">= 1 day", nil),
    ]
    /// The colour of a station with nothing held.
    public static let noneColor = "#bbbbbb"
    /// Incident colours by priority.
    public static let priorityColors: [Priority: String] = [.urgent: "#b00020", .high: "#e6550d", .normal: "#3182bd", .low: "#756bb1"]

    /// The colour of a staleness (minutes; nil: nothing held).
    public static func color(staleMinutes: Int64?) -> String {
        guard let m = staleMinutes else { return noneColor }
        for c in stalenessClasses { if let b = c.belowMinutes, m < b { return c.color } }
        return stalenessClasses.last!.color
    }

    /// Gathers the input from the replicator: newest change per station scope (`LogActivity`) and the open
    /// incidents (the store's status index).
    /// - Parameters:
    ///   - visible: the scopes the reader may see (nil: everything this node holds). With it, only logs,
    ///     incidents and stations of scopes it admits are drawn (the command center's scope-limited operators).
    /// - Throws: store errors, `FieldSyncError`.
    public static func input(_ book: RecordBook, geography: LongnanGeography = .standard, now: Int64,
                             visible: ((Scope) -> Bool)? = nil) throws -> LongnanMapInput {
        let activity = try LogActivity.read(book.replicator.store)
        var newest: [String: Int64] = [:]
        for a in activity {
            guard let t = a.newestAt, visible?(a.log.scope) ?? true, let station = stationScope(a.log.scope) else { continue }
            newest[station] = max(newest[station] ?? .min, t)
        }
        let onMap = Set(geography.stations.map(\.scope))
        let offMap = newest.keys.filter { !onMap.contains($0) }.sorted()
        let open = try book.records(RecordQuery(kind: .incident, statusLevels: 0...Incident.Status.onScene.rawValue))
        var points: [MapIncident] = []
        for r in open where visible?(r.scope) ?? true {
            guard let i = try? Incident(r), i.location.latitude != 0 || i.location.longitude != 0 else { continue }
            points.append(MapIncident(id: i.id, priority: i.priority, location: GeoPoint(latitude: i.location.latitude, longitude: i.location.longitude),
                                      summary: i.summary))
        }
        let drawn = Array(points.prefix(maxIncidents))  // newest event first
        let shown = visible.map { v in Set(geography.stations.map(\.scope).filter { (try? Scope($0)).map(v) ?? false }) }
        return LongnanMapInput(newestChange: newest, incidents: drawn, incidentsLeftOff: points.count - drawn.count, offMap: offMap, now: now,
                               title: "Longnan: stations by staleness, open incidents, \(ReportTimeZone.minute(now)) (UTC+8)",
                               shownStations: shown)
    }

    /// The station a scope is in: its first three segments (`longnan/wudu/station-017` of
    /// `longnan/wudu/station-017/village-0412`), nil above a station. Cut from the path's bytes: splitting
    /// the paths of a year's 10,000 logs into segments was a sixth of the map's time.
    static func stationScope(_ scope: Scope) -> String? {
        guard scope.depth >= 3 else { return nil }
        let path = scope.path.utf8
        var slashes = 0
        for i in path.indices where path[i] == UInt8(ascii: "/") {
            slashes += 1
            if slashes == 3 { return String(scope.path[..<i]) }
        }
        return scope.path
    }

    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    /// Draws the map of another geography (its layout computed for this one map).
    public static func svg(_ input: LongnanMapInput, geography: LongnanGeography) -> String {
        svg(input, layout: LongnanMapLayout(geography: geography))
    }

    /// Draws the map: the geometry from `layout` (computed once per process for the standard geography), the
    /// stations' colours, the incidents and the legend from `input`.
    public static func svg(_ input: LongnanMapInput, layout: LongnanMapLayout = .standard) -> String {
        let h = HTMLText.escape
        let stations = layout.geography.stations
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">\n"
        s += "<title>\(h(input.title))</title>\n"
        s += "<text x=\"\(f(left))\" y=\"22\" font-size=\"15\" font-weight=\"bold\">\(h(input.title))</text>\n"
        s += layout.areas + "<g class=\"stations\">\n"
        for (k, st) in stations.enumerated() where input.shownStations?.contains(st.scope) ?? true {
            let stale = input.newestChange[st.scope].map { max(0, input.now - $0) / 60_000 }
            let tip = st.scope + ": " + (stale.map { "newest change \(ReportTimeZone.minute(input.now - $0 * 60_000)), \($0) min ago" } ?? "nothing held")
            let centre = layout.stationCentres[k]
            s += "<circle class=\"station\" cx=\"\(centre.x)\" cy=\"\(centre.y)\" r=\"4\" fill=\"\(color(staleMinutes: stale))\" stroke=\"#333\" stroke-width=\"0.5\"><title>\(h(tip))</title></circle>\n"
        }
        s += "</g>\n<g class=\"incidents\">\n"
        for i in input.incidents.reversed() {  // the newest on top
            let x = layout.x(i.location.longitude), y = layout.y(i.location.latitude)
            guard x.isFinite, y.isFinite else { continue }
            s += "<rect class=\"incident\" x=\"\(f(x - 2.5))\" y=\"\(f(y - 2.5))\" width=\"5\" height=\"5\" fill=\"\(priorityColors[i.priority] ?? "#000")\"><title>\(h("\(i.priority.name): \(i.summary) (\(i.id))"))</title></rect>\n"
        }
        s += "</g>\n"
        s += layout.seats
        // Legend.
        let lx = width - legendWidth + 20
        var y = top + 10
        s += "<g class=\"legend\">\n<text x=\"\(f(lx - 10))\" y=\"\(f(y))\" font-weight=\"bold\">Stations: newest change</text>\n"
        for c in stalenessClasses {
            y += 18
            s += "<circle cx=\"\(f(lx))\" cy=\"\(f(y - 4))\" r=\"5\" fill=\"\(c.color)\"/><text x=\"\(f(lx + 12))\" y=\"\(f(y))\">\(h(c.label))</text>\n"
        }
        y += 18
        s += "<circle cx=\"\(f(lx))\" cy=\"\(f(y - 4))\" r=\"5\" fill=\"\(noneColor)\"/><text x=\"\(f(lx + 12))\" y=\"\(f(y))\">nothing held</text>\n"
        y += 28
        s += "<text x=\"\(f(lx - 10))\" y=\"\(f(y))\" font-weight=\"bold\">Open incidents: \(input.incidents.count + input.incidentsLeftOff)</text>\n"
        for p in Priority.allCases {
            y += 18
            s += "<rect x=\"\(f(lx - 4))\" y=\"\(f(y - 9))\" width=\"8\" height=\"8\" fill=\"\(priorityColors[p]!)\"/><text x=\"\(f(lx + 12))\" y=\"\(f(y))\">\(h(p.name))</text>\n"
        }
        if input.incidentsLeftOff > 0 {
            y += 18
            s += "<text x=\"\(f(lx - 10))\" y=\"\(f(y))\" font-size=\"10\">(\(input.incidentsLeftOff) older not drawn)</text>\n"
        }
        y += 28
        for line in ["County areas approximate:", "stations' Voronoi cells,", "grey line: county border.", "Station positions synthetic",
                     "(fieldsim longnan, seed 1);", "seats approximate."] {
            s += "<text x=\"\(f(lx - 10))\" y=\"\(f(y))\" font-size=\"10\">\(h(line))</text>\n"
            y += 12
        }
        if !input.offMap.isEmpty {
            y += 6
            s += "<text class=\"off-map\" x=\"\(f(lx - 10))\" y=\"\(f(y))\" font-size=\"10\">\(input.offMap.count) station scope(s) not on the map<title>\(h(input.offMap.joined(separator: ", ")))</title></text>\n"
        }
        s += "</g>\n"
        s += layout.scaleBar
        return s + "</svg>\n"
    }
}

/// The parts of the map that depend only on the geography, drawn once: the projection and scale, the county
/// areas (the stations' Voronoi cells, O(n²) in the stations) and borders, the stations' positions, the
/// county seats and their labels, and the scale bar. `LongnanMap.svg` adds what depends on the store.
public struct LongnanMapLayout: Sendable {
    /// The geography drawn.
    public let geography: LongnanGeography
    let projection: MapProjection
    /// Pixels per km.
    let scale: Double
    /// The county areas and borders: the whole `counties` group.
    let areas: String
    /// Each station's centre (`cx`, `cy` attribute values), in station order.
    let stationCentres: [(x: String, y: String)]
    /// The county seats and their labels.
    let seats: String
    /// The scale bar and its label.
    let scaleBar: String

    /// The layout of the standard geography, computed once per process (at its first use).
    public static let standard = LongnanMapLayout(geography: .standard)

    /// Computes the layout of `geography`.
    public init(geography: LongnanGeography) {
        typealias M = LongnanMap
        let f = M.f, h = HTMLText.escape
        let (width, height, left, top, bottom, legendWidth) = (M.width, M.height, M.left, M.top, M.bottom, M.legendWidth)
        self.geography = geography
        let stations = geography.stations
        let lats = stations.map(\.position.latitude) + geography.counties.map(\.seat.latitude)
        let lons = stations.map(\.position.longitude) + geography.counties.map(\.seat.longitude)
        let proj = MapProjection(latitudes: lats, longitudes: lons)
        let scale = min((width - left - legendWidth) / proj.widthKm, (height - top - bottom) / proj.heightKm)  // px per km
        projection = proj
        self.scale = scale
        // County areas: the stations' Voronoi cells within the box plus a margin, tinted by county, a grey
        // line where cells of two counties meet.
        let tints = ["#dce6f4", "#f6e0da", "#dcf0d8", "#f5ecd2", "#e6ddf2", "#eadfd6", "#f4dcec", "#e4e4e4", "#ecf0d2", "#d6eef2"]
        let margin = 6 / scale
        let box = [(-margin, -margin), (proj.widthKm + margin, -margin), (proj.widthKm + margin, proj.heightKm + margin), (-margin, proj.heightKm + margin)]
        let sites = stations.map { (proj.x($0.position.longitude), proj.y($0.position.latitude)) }
        var s = "<g class=\"counties\">\n", borders = ""
        for (i, st) in stations.enumerated() {
            let cell = Voronoi.cell(of: i, sites: sites, box: box)
            guard cell.count >= 3 else { continue }
            let tint = tints[st.county % tints.count]
            s += "<polygon class=\"county-area\" points=\"\(cell.map { "\(f(left + $0.0 * scale)),\(f(height - bottom - $0.1 * scale))" }.joined(separator: " "))\" fill=\"\(tint)\" stroke=\"\(tint)\"/>\n"
            for k in cell.indices {
                let a = cell[k], b = cell[(k + 1) % cell.count]
                guard let n = Voronoi.neighbour(across: a, b, of: i, sites: sites), n > i, stations[n].county != st.county else { continue }
                borders += "<line class=\"county-border\" x1=\"\(f(left + a.0 * scale))\" y1=\"\(f(height - bottom - a.1 * scale))\" x2=\"\(f(left + b.0 * scale))\" y2=\"\(f(height - bottom - b.1 * scale))\" stroke=\"#8c8c8c\" stroke-width=\"0.8\"/>\n"
            }
        }
        areas = s + borders + "</g>\n"
        let px = { (lon: Double) in left + proj.x(lon) * scale }
        let py = { (lat: Double) in height - bottom - proj.y(lat) * scale }
        stationCentres = stations.map { (f(px($0.position.longitude)), f(py($0.position.latitude))) }
        var seats = ""
        for c in geography.counties {
            let x = px(c.seat.longitude), y = py(c.seat.latitude)
            seats += "<circle class=\"seat\" cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"6\" fill=\"none\" stroke=\"black\"/>"
            seats += "<text class=\"county-label\" x=\"\(f(x + 9))\" y=\"\(f(y - 6))\">\(h("\(c.name) \(c.chineseName)"))</text>\n"
        }
        self.seats = seats
        let bar = proj.scaleBarKm
        let bx = left, by = height - bottom + 30
        scaleBar = "<line class=\"scale-bar\" x1=\"\(f(bx))\" y1=\"\(f(by))\" x2=\"\(f(bx + bar * scale))\" y2=\"\(f(by))\" stroke=\"black\" stroke-width=\"2\"/>\n"
            + "<text x=\"\(f(bx + bar * scale + 6))\" y=\"\(f(by + 4))\">\(String(format: "%g", bar)) km</text>\n"
    }

    /// The map's x of a longitude, pixels.
    func x(_ longitude: Double) -> Double { LongnanMap.left + projection.x(longitude) * scale }
    /// The map's y of a latitude, pixels.
    func y(_ latitude: Double) -> Double { LongnanMap.height - LongnanMap.bottom - projection.y(latitude) * scale }
}
