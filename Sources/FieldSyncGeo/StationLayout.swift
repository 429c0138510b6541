// The synthetic layout of Longnan's 202 stations around the 9 county seats: the simulator's (one function,
// called by the `longnan` scenario with its seed's stream) and the command center's map (seed 1, as
// `fieldsim --scenario longnan` places them by default). Station positions are synthetic; the county seats
// are approximate (../shared/seed/FACTS.md).

import FieldSyncCore
import Foundation

/// Seeded random helpers over `SplitMix64`. Independent streams are derived from (seed, tag, entity,
/// day), so a scenario can generate any day of any entity lazily and still be reproducible.
public struct SeededRandom: Sendable {
    /// The generator.
    public var rng: SplitMix64

    /// A stream for `(seed, tags...)`.
    public init(seed: UInt64, _ tags: UInt64...) {
        var h = seed
        for t in tags {
            var m = SplitMix64(seed: h ^ (t &* 0x9E37_79B9_7F4A_7C15))
            h = m.next()
        }
        rng = SplitMix64(seed: h)
    }

    /// A uniform double in [0, 1).
    public mutating func unit() -> Double { Double(rng.next() >> 11) * 0x1.0p-53 }
    /// A uniform double in [lo, hi).
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }
    /// A uniform integer in [0, n).
    public mutating func int(_ n: Int) -> Int {
        precondition(n > 0)
        return Int(rng.next() % UInt64(n))
    }
    /// An exponential variate with `mean`.
    public mutating func exponential(mean: Double) -> Double { -mean * log(1 - unit()) }
    /// A Poisson variate with `mean` (Knuth's method, in chunks of at most 30 for large means).
    public mutating func poisson(_ mean: Double) -> Int {
        var remaining = mean
        var total = 0
        while remaining > 0 {
            let m = min(remaining, 30)
            remaining -= m
            let l = exp(-m)
            var k = 0
            var p = 1.0
            repeat {
                k += 1
                p *= unit()
            } while p > l
            total += k - 1
        }
        return total
    }
    /// An index drawn with the given weights.
    public mutating func weighted(_ weights: [Double]) -> Int {
        let total = weights.reduce(0, +)
        var x = unit() * total
        for (i, w) in weights.enumerated() {
            if x < w { return i }
            x -= w
        }
        return weights.count - 1
    }
}

/// A county: its scope segment (pinyin, lower case), its Chinese name and its seat.
public struct County: Sendable, Equatable {
    /// Scope segment, e.g. `wudu` (`longnan/wudu/...`).
    public var name: String
    /// The name in Chinese, e.g. 武都区.
    public var chineseName: String
    /// The seat (approximate).
    public var seat: GeoPoint

    /// Creates a county.
    public init(name: String, chineseName: String, seat: GeoPoint) {
        self.name = name
        self.chineseName = chineseName
        self.seat = seat
    }
}

/// A station on the map.
public struct StationSite: Sendable, Equatable {
    /// Its scope, `longnan/COUNTY/station-NNN`.
    public var scope: String
    /// Index of its county in the layout's counties.
    public var county: Int
    /// Its (synthetic) position.
    public var position: GeoPoint
}

/// Station placement: one station per county first, the rest spread uniformly at random among the
/// counties, sorted by county, each placed uniformly over a disc of `radiusKm` around its county seat
/// and named `station-NNN` in that order.
public enum StationLayout {
    /// Places `count` stations, drawing from `r` (which the caller goes on using: the simulator places its
    /// villages from the same stream after the stations).
    /// - Parameters:
    ///   - counties: scope segment and seat (lat, lon) of each county.
    ///   - count: number of stations (at least one per county).
    ///   - radiusKm: radius of the disc around the seat.
    /// - Returns: each station's county index and position (lat, lon), in station order.
    public static func place(counties: [(name: String, lat: Double, lon: Double)], count: Int, radiusKm: Double,
                             using r: inout SeededRandom) -> [(county: Int32, position: (Double, Double))] {
        var sc: [Int32] = (0..<counties.count).map { Int32($0) }
        while sc.count < count { sc.append(Int32(r.int(counties.count))) }
        sc.sort()
        var out: [(county: Int32, position: (Double, Double))] = []
        out.reserveCapacity(count)
        for s in 0..<count {
            let c = counties[Int(sc[s])]
            out.append((sc[s], Geo.offset(c.lat, c.lon, km: radiusKm * sqrt(r.unit()), angle: r.uniform(0, 2 * .pi))))
        }
        return out
    }

    /// The scope of station `index` (from 0) in `county`: `longnan/COUNTY/station-NNN`.
    public static func scope(county: String, index: Int) -> String {
        "longnan/\(county)/station-\(String(format: "%03d", index + 1))"
    }
}

/// Longnan as the map draws it: the 9 county seats of ../shared/seed/FACTS.md and 202 stations laid out
/// as `fieldsim --scenario longnan --seed 1` places them (synthetic positions).
public struct LongnanGeography: Sendable {
    /// The counties, in the simulator's order.
    public let counties: [County]
    /// The stations, in order (`station-001` ... `station-202`).
    public let stations: [StationSite]

    /// The 9 counties (FACTS.md: approximate seats; the order and names of Simulator/Scenarios/longnan.json).
    public static let counties: [County] = [
        County(name: "wudu", chineseName: "武都区", seat: GeoPoint(latitude: 33.39, longitude: 104.93)),
        County(name: "cheng", chineseName: "成县", seat: GeoPoint(latitude: 33.75, longitude: 105.74)),
        County(name: "wen", chineseName: "文县", seat: GeoPoint(latitude: 32.94, longitude: 104.68)),
        County(name: "dangchang", chineseName: "宕昌县", seat: GeoPoint(latitude: 34.05, longitude: 104.39)),
        County(name: "kang", chineseName: "康县", seat: GeoPoint(latitude: 33.33, longitude: 105.61)),
        County(name: "xihe", chineseName: "西和县", seat: GeoPoint(latitude: 34.01, longitude: 105.30)),
        County(name: "li", chineseName: "礼县", seat: GeoPoint(latitude: 34.19, longitude: 105.18)),
        County(name: "hui", chineseName: "徽县", seat: GeoPoint(latitude: 33.77, longitude: 106.09)),
        County(name: "liangdang", chineseName: "两当县", seat: GeoPoint(latitude: 33.91, longitude: 106.30)),
    ]

    /// The stream tag the `longnan` scenario draws its stations (and villages) from.
    public static let layoutStreamTag: UInt64 = 1

    /// The layout of `stationCount` stations within `radiusKm` of their seats, from `seed`'s stream (the
    /// `longnan` scenario's defaults: 202 stations, 35 km, seed 1).
    public init(seed: UInt64 = 1, stationCount: Int = 202, radiusKm: Double = 35) {
        counties = Self.counties
        var r = SeededRandom(seed: seed, Self.layoutStreamTag)
        let placed = StationLayout.place(counties: Self.counties.map { ($0.name, $0.seat.latitude, $0.seat.longitude) },
                                         count: stationCount, radiusKm: radiusKm, using: &r)
        stations = placed.enumerated().map { i, p in
            StationSite(scope: StationLayout.scope(county: Self.counties[Int(p.county)].name, index: i), county: Int(p.county),
                        position: GeoPoint(latitude: p.position.0, longitude: p.position.1))
        }
    }

    /// The default map: seed 1, 202 stations, 35 km.
    public static let standard = LongnanGeography()
}
