// Geometry shared by the simulator's staleness map and the command center's map of Longnan: distances on
// the Earth, the equirectangular projection with longitude corrected for latitude, Voronoi cells (the
// approximate county areas), the seeded generator and the synthetic station layout. Pure: no I/O, no clock.

import FieldSyncCore
import Foundation

/// A point on the Earth (degrees).
public struct GeoPoint: Sendable, Equatable, Hashable {
    /// Latitude, degrees north.
    public var latitude: Double
    /// Longitude, degrees east.
    public var longitude: Double

    /// Creates a point.
    public init(latitude: Double, longitude: Double) {
        self.latitude = latitude
        self.longitude = longitude
    }
}

/// Distances and offsets on the Earth.
public enum Geo {
    /// The mean Earth radius (IUGG), metres.
    public static let earthRadiusMetres = 6_371_008.8
    /// Km per degree of latitude, and of longitude at the equator (the equirectangular projection's scale).
    public static let kmPerDegreeLatitude = 110.57, kmPerDegreeLongitude = 111.32

    /// The great-circle distance between two points (haversine), metres.
    ///
    /// ```swift
    /// Geo.haversineMetres(GeoPoint(latitude: 33.39, longitude: 104.93), GeoPoint(latitude: 33.39, longitude: 104.94))  // ≈ 929
    /// ```
    public static func haversineMetres(_ a: GeoPoint, _ b: GeoPoint) -> Double {
        let rad = Double.pi / 180
        let dLat = (b.latitude - a.latitude) * rad, dLon = (b.longitude - a.longitude) * rad
        let h = sin(dLat / 2) * sin(dLat / 2) + cos(a.latitude * rad) * cos(b.latitude * rad) * sin(dLon / 2) * sin(dLon / 2)
        return 2 * earthRadiusMetres * asin(min(1, h.squareRoot()))
    }

    /// The point `km` away from (`lat`, `lon`) in direction `angle` (radians from north), on a flat
    /// approximation with 111 km per degree (the simulator's placement of stations and villages).
    public static func offset(_ lat: Double, _ lon: Double, km: Double, angle: Double) -> (Double, Double) {
        let dlat = km * cos(angle) / 111.0
        let dlon = km * sin(angle) / (111.0 * cos(lat * .pi / 180))
        return (lat + dlat, lon + dlon)
    }

    /// The flat-approximation distance (111 km per degree, longitude scaled by the cosine of the mean
    /// latitude), km: the simulator's walking and driving distances.
    public static func flatDistanceKm(_ a: (Double, Double), _ b: (Double, Double)) -> Double {
        let dy = (a.0 - b.0) * 111.0
        let dx = (a.1 - b.1) * 111.0 * cos((a.0 + b.0) / 2 * .pi / 180)
        return (dx * dx + dy * dy).squareRoot()
    }
}

/// The equirectangular projection of a bounding box, in kilometres east and north of its south-west
/// corner, longitude scaled by the cosine of the box's middle latitude, so that distances are true in both
/// directions near the middle and a scale bar holds.
public struct MapProjection: Sendable {
    /// The south-west corner.
    public let minLatitude: Double, minLongitude: Double
    /// The north-east corner.
    public let maxLatitude: Double, maxLongitude: Double
    /// cos(middle latitude).
    public let cosLatitude: Double

    /// The projection of the box holding `latitudes` and `longitudes` (both non-empty).
    public init(latitudes: [Double], longitudes: [Double]) {
        precondition(!latitudes.isEmpty && !longitudes.isEmpty, "a projection needs at least one point")
        minLatitude = latitudes.min()!
        maxLatitude = latitudes.max()!
        minLongitude = longitudes.min()!
        maxLongitude = longitudes.max()!
        cosLatitude = cos((minLatitude + maxLatitude) / 2 * .pi / 180)
    }

    /// Km east of the west edge.
    public func x(_ longitude: Double) -> Double { (longitude - minLongitude) * Geo.kmPerDegreeLongitude * cosLatitude }
    /// Km north of the south edge.
    public func y(_ latitude: Double) -> Double { (latitude - minLatitude) * Geo.kmPerDegreeLatitude }
    /// The box's width, km (at least 1e-6).
    public var widthKm: Double { max(x(maxLongitude), 1e-6) }
    /// The box's height, km (at least 1e-6).
    public var heightKm: Double { max(y(maxLatitude), 1e-6) }

    /// A round scale-bar length (1, 2, 5 or 10 times a power of ten) near a fifth of the width, km.
    public var scaleBarKm: Double {
        let target = widthKm / 5
        let mag = pow(10, floor(log10(max(target, 1e-6))))
        return [1.0, 2, 5, 10].map { $0 * mag }.last { $0 <= target } ?? mag
    }
}

/// Voronoi cells on the plane, by clipping a box with one half-plane per other site (O(n²) for n sites: a
/// map's 202 stations, not a store's records).
public enum Voronoi {
    /// Clips the convex polygon `poly` to the half-plane of points nearer `p` than `q`.
    public static func clip(_ poly: [(Double, Double)], nearer p: (Double, Double), than q: (Double, Double)) -> [(Double, Double)] {
        // Kept where (x - m) · (q - p) <= 0, m the midpoint.
        let (dx, dy) = (q.0 - p.0, q.1 - p.1)
        let (mx, my) = ((p.0 + q.0) / 2, (p.1 + q.1) / 2)
        let side = { (v: (Double, Double)) in (v.0 - mx) * dx + (v.1 - my) * dy }
        var out: [(Double, Double)] = []
        for i in 0..<poly.count {
            let a = poly[i], b = poly[(i + 1) % poly.count]
            let sa = side(a), sb = side(b)
            if sa <= 0 { out.append(a) }
            if (sa < 0 && sb > 0) || (sa > 0 && sb < 0) {
                let t = sa / (sa - sb)
                out.append((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)))
            }
        }
        return out
    }

    /// The cell of site `i` within the convex polygon `box`.
    public static func cell(of i: Int, sites: [(Double, Double)], box: [(Double, Double)]) -> [(Double, Double)] {
        var cell = box
        for j in sites.indices where j != i && !cell.isEmpty { cell = clip(cell, nearer: sites[i], than: sites[j]) }
        return cell
    }

    /// The site nearest the middle of the edge `a`-`b` of site `i`'s cell other than `i`, if the edge
    /// lies on the bisector of the two (a shared edge, not the box's).
    public static func neighbour(across a: (Double, Double), _ b: (Double, Double), of i: Int, sites: [(Double, Double)]) -> Int? {
        let m = ((a.0 + b.0) / 2, (a.1 + b.1) / 2)
        let di = hypot(m.0 - sites[i].0, m.1 - sites[i].1)
        var near = -1, dn = Double.infinity
        for j in sites.indices where j != i {
            let dj = hypot(m.0 - sites[j].0, m.1 - sites[j].1)
            if dj < dn { (near, dn) = (j, dj) }
        }
        guard near >= 0, abs(dn - di) < 1e-6 * max(1, di) else { return nil }
        return near
    }
}
