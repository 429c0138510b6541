import FieldSim
import FieldSyncGeo
import FieldSyncTestSupport
import Foundation
import Testing

/// The station layout is one function (FieldSyncGeo's `StationLayout`), used by the `longnan` scenario and by
/// the reports' map of Longnan (docs/reports.md): the map's 202 stations are where `fieldsim --scenario
/// longnan --seed 1` puts them, with the same scopes and counties.
@Suite struct SharedGeographyTests {
    @Test func theReportsMapPlacesStationsWhereTheSimulatorDoes() throws {
        let (f, path) = try shippedScenario("longnan", days: 1)
        let scen = try makeScenario(f, seed: 1, path: path) as! LongnanScenario
        let stations = scen.world.nodes.filter { $0.nodeClass == .station }
        let map = LongnanGeography.standard
        #expect(stations.count == 202 && map.stations.count == 202)
        #expect(stations.map(\.scope) == map.stations.map(\.scope))
        #expect(stations.map { Int($0.county) } == map.stations.map(\.county))
        #expect(stations.map(\.latitude) == map.stations.map(\.position.latitude))
        #expect(stations.map(\.longitude) == map.stations.map(\.position.longitude))
        let seats = scen.world.nodes.filter { $0.nodeClass == .county }
        #expect(seats.map(\.name) == map.counties.map(\.name))
        #expect(seats.map(\.latitude) == map.counties.map(\.seat.latitude) && seats.map(\.longitude) == map.counties.map(\.seat.longitude),
                "the seats of Simulator/Scenarios/longnan.json are FACTS.md's, as the map has them")
    }
}
