import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// The getting-started sample of docs/app-api.md, compiled and run: keep the two the same.
@Suite(.ownThread) struct GettingStartedTests {
    // docs/app-api.md: begin
    func gettingStarted(device: FieldSyncDevice, station: Scope, village: Scope, hq: PeerAddress) async throws -> Int {
        // Open: the device directory and its key, the store, and the node's configuration.
        let app = try await FieldSyncApp.open(device: device,
                                              configuration: NodeConfiguration(network: NetworkParameters(networkID: "longnan-police")))

        // Observe: the open incidents of the station, whoever writes them (this app or a peer by sync).
        let openIncidents = app.recordChanges(matching: .openIncidents(in: station))
        // A child task (`async let`): it runs beside the code below on the caller's executor, and ends
        // when the stream does.
        async let watched: Int = {
            var seen = 0
            for await change in openIncidents {
                seen += 1
                print("\(change.origin == .local ? "written here" : "arrived"): \(change.record.id)")
            }
            return seen
        }()

        // Write: a new incident, then dispatch a unit (the same checks as `fieldsync incident ...`).
        let written = try await app.createIncident(IncidentDraft(
            scope: village, category: .traffic, priority: .high, summary: "Car in the ditch at the bridge",
            location: Location(latitude: 33.39, longitude: 104.92, placeName: "Wudu bridge")))
        let id = String(written.record.id.description.prefix(8))  // a unique prefix is enough
        _ = try await app.assign(id, units: ["station-017-car-2"], dispatch: true)

        // Query: what `fieldsync list --status open` lists, and what `fieldsync show` prints.
        let open = try await app.records(RecordQuery(kind: .incident, statusLevels: try RecordText.statusLevels("open")))
        let history = try await app.history(of: written.record.id)
        print("\(open.count) open; \(history.count) signed changes, all verified: \(history.allSatisfy { $0.verification == .accepted })")

        // Sync in the background: listen, sync with HQ (or whatever discovery finds), push every write.
        var options = DaemonOptions(listenHost: "127.0.0.1", listenPort: 0)
        options.staticPeers = [hq]
        try await app.startSync(options)

        // Close: sessions drain, the store closes, every observation stream ends.
        await app.close(grace: .seconds(1))
        return await watched
    }
    // docs/app-api.md: end

    @Test(.timeLimit(.minutes(2))) func theGettingStartedSampleRuns() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        // No HQ listens on this port: the sample's sync only schedules retries until the app closes.
        let seen = try await gettingStarted(device: try f.device("bp17"), station: AppFixtures.station, village: AppFixtures.village,
                                            hq: PeerAddress(host: "127.0.0.1", port: 1))
        #expect(seen == 2, "the observer saw the new incident and its dispatch")
    }

    /// The sample in docs/app-api.md is this file's, line for line.
    @Test func theDocShowsThisSample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let doc = try String(contentsOf: root.appendingPathComponent("docs/app-api.md"), encoding: .utf8)
        let lines = source.components(separatedBy: "\n")
        let begin = try #require(lines.firstIndex { $0.hasSuffix("// docs/app-api.md: begin") })
        let end = try #require(lines.firstIndex { $0.hasSuffix("// docs/app-api.md: end") })
        let sample = lines[(begin + 1)..<end].map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : $0 }.joined(separator: "\n")
        #expect(doc.contains("```swift\n" + sample + "\n```"), "docs/app-api.md must show the sample of GettingStartedTests.swift as it is")
    }
}
