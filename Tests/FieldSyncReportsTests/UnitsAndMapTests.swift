import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncGeo
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncReports
import Foundation
import Testing
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The units list and the map of Longnan.
@Suite struct UnitsAndMapTests {
    typealias F = ReportFixtures

    @Test func unitsListEveryDeviceWithItsChangesAndSilence() throws {
        var f = ReportFixtures()
        let hq = try f.replicator(.hq, scopes: [F.root], label: "hq")
        let bp1 = try f.replicator(.backpack, scopes: [F.wudu17], label: "bp1")
        let bp2 = try f.replicator(.backpack, scopes: [F.cheng50], label: "bp2")
        let b1 = try RecordBook(replicator: bp1, now: UInt64(F.dayStart)), b2 = try RecordBook(replicator: bp2, now: UInt64(F.dayStart))
        for i in 0..<3 { _ = try F.incident(b1, at: F.dayStart + Int64(i) * F.hour, summary: "a\(i)") }
        _ = try F.incident(b2, at: F.dayStart + 20 * F.hour, scope: F.cheng50, summary: "b")
        try F.deliver(bp1, to: hq)
        try F.deliver(bp2, to: hq)
        let now = F.dayStart + 26 * F.hour
        let statusJSON = """
            {"pid": 1, "device": "\(hq.identity.id)", "role": "hq", "listen": "", "state": "running", "startedAt": 0, "updatedAt": 0,
             "sessionsActive": 0, "peers": [{"address": "10.0.0.2:7000", "source": "incoming", "device": "\(bp2.identity.id)",
             "role": "backpack", "lastSeen": 0, "lastSyncAt": \(F.dayStart + 21 * F.hour), "changesSent": 0, "changesReceived": 1,
             "failures": 0}]}
            """
        let status = try JSONDecoder().decode(DaemonStatus.self, from: Data(statusJSON.utf8))
        let report = try UnitsReport.make(hq, now: now, silentAfterMinutes: 12 * 60, status: status)
        #expect(report.units.count == 2, "the two backpack units; HQ itself is left out")
        let u1 = try #require(report.units.first { $0.device == bp1.identity.id.description })
        let u2 = try #require(report.units.first { $0.device == bp2.identity.id.description })
        #expect(u1.changesHeld == 3 && u1.unreceipted == 3 && u1.role == "backpack" && u1.scopes == [F.wudu17.path])
        #expect(u1.lastChange == ReportTimeZone.iso(F.dayStart + 2 * F.hour) && u1.silentMinutes == 24 * 60)
        #expect(u1.alarm, "silent 24 h > 12 h")
        #expect(!u2.alarm && u2.silentMinutes == 6 * 60 && u2.lastSession == ReportTimeZone.iso(F.dayStart + 21 * F.hour))
        #expect(u1.lastSession == nil, "never a direct peer")
        #expect(report.alarms == 1 && report.units.first?.alarm == true, "alarms first")
        // A receipt of bp1's first two changes leaves one not receipted.
        let log = LogID(author: bp1.identity.id, scope: F.wudu17)
        _ = try hq.store.commit(CommitBatch(receipts: [log: 2]))
        let after = try UnitsReport.make(hq, now: now, silentAfterMinutes: 12 * 60)
        #expect(after.units.first { $0.device == bp1.identity.id.description }?.unreceipted == 1)
    }

    @Test func theMapHas202StationsNineCountiesAndEscapesItsText() throws {
        let geo = LongnanGeography.standard
        #expect(geo.stations.count == 202 && geo.counties.count == 9)
        #expect(Set(geo.counties.indices).isSubset(of: Set(geo.stations.map(\.county))), "every county has a station")
        let hostile = "<script>alert(1)</script>"
        let s17 = try #require(geo.stations.first { $0.scope.hasSuffix("station-017") })
        let input = LongnanMapInput(
            newestChange: [s17.scope: 1_000_000 - 30 * 60_000, geo.stations[100].scope: 1_000_000 - 2 * 86_400_000],
            incidents: [MapIncident(id: RecordID(ID128(high: 0, low: 7)), priority: .urgent, location: s17.position, summary: hostile)],
            offMap: ["longnan/wudu/\"><script>x</script>"], now: 1_000_000, title: "Longnan " + hostile)
        let svg = LongnanMap.svg(input)
        #expect(svg.components(separatedBy: "<circle class=\"station\"").count - 1 == 202)
        #expect(svg.components(separatedBy: "<text class=\"county-label\"").count - 1 == 9)
        #expect(svg.components(separatedBy: "<rect class=\"incident\"").count - 1 == 1)
        #expect(!svg.contains("<script"), "no label unescaped")
        #expect(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(svg.contains("fill=\"#2ca02c\"") && svg.contains("fill=\"#d62728\"") && svg.contains("fill=\"\(LongnanMap.noneColor)\""),
                "fresh, a day stale and nothing held")
        #expect(svg.contains("class=\"scale-bar\"") && svg.contains(" km</text>"))
        #expect(svg.contains("武都区"))
        // Well-formed XML: it parses.
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
    }

    /// The map's fixed geometry (the county areas: 202 Voronoi cells, O(n²); the borders, seats and scale bar)
    /// is drawn once per process (`LongnanMapLayout.standard`); a map costs only what depends on the store.
    /// The output is byte for byte what the map drew when it computed everything on every request (the digest
    /// below; checked against that code, 5604a29), and five maps cost less than computing the layout once.
    @Test func theMapsFixedGeometryIsDrawnOnceAndItsOutputIsUnchanged() throws {
        let geo = LongnanGeography.standard
        let now: Int64 = 1_780_000_000_000
        var newest: [String: Int64] = [:]
        for (k, st) in geo.stations.enumerated() where k % 3 != 0 {
            newest[st.scope] = now - Int64(k) * 7 * 60_000  // from fresh to about a day stale
        }
        var incidents: [MapIncident] = []
        for k in 0..<40 {
            let st = geo.stations[(k * 37) % geo.stations.count]
            incidents.append(MapIncident(id: RecordID(ID128(high: 1, low: UInt64(k))), priority: Priority.allCases[k % Priority.allCases.count],
                                         location: GeoPoint(latitude: st.position.latitude + 0.01, longitude: st.position.longitude - 0.01),
                                         summary: "incident \(k) <b>&</b>"))
        }
        let all = LongnanMapInput(newestChange: newest, incidents: incidents, incidentsLeftOff: 3, offMap: ["longnan/wudu/station-999"],
                                  now: now, title: "Longnan: stations by staleness")
        var wudu = all
        wudu.shownStations = Set(geo.stations.map(\.scope).filter { $0.hasPrefix("longnan/wudu/") })
        let drawn = LongnanMap.svg(all) + LongnanMap.svg(wudu)
        let digest = try BLAKE2b.hash(Array(drawn.utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(digest == "df7d6791c32692550a2ed96f0125d64d3c913dcd35c064716ee36d25cea6256b", "the map's output changed")
        // Drawing again costs only the per-request part: five maps, less than one layout.
        let clock = ContinuousClock()
        let layoutStart = clock.now
        let layout = LongnanMapLayout(geography: .standard)
        let layoutTook = clock.now - layoutStart
        #expect(LongnanMap.svg(all, layout: layout) == LongnanMap.svg(all))
        let start = clock.now
        var bytes = 0
        for _ in 0..<5 { bytes += LongnanMap.svg(all).utf8.count }
        let took = clock.now - start
        #expect(bytes == 5 * LongnanMap.svg(all).utf8.count)
        #expect(took < layoutTook, "5 maps took \(took), one layout \(layoutTook)")
    }

    /// Longitude is scaled by the cosine of the latitude: a kilometre east is as long on the map as a
    /// kilometre north.
    @Test func theProjectionCorrectsLongitudeForLatitude() {
        let p = MapProjection(latitudes: [33, 34], longitudes: [104, 106])
        let kmEast = p.x(105) - p.x(104), kmNorth = p.y(34) - p.y(33)
        let trueEast = Geo.haversineMetres(GeoPoint(latitude: 33.5, longitude: 104), GeoPoint(latitude: 33.5, longitude: 105)) / 1000
        let trueNorth = Geo.haversineMetres(GeoPoint(latitude: 33, longitude: 105), GeoPoint(latitude: 34, longitude: 105)) / 1000
        #expect(abs(kmEast / trueEast - 1) < 0.01 && abs(kmNorth / trueNorth - 1) < 0.01)
    }
}
