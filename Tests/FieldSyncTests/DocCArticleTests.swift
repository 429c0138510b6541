import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// The getting-started article of the DocC catalog (Sources/FieldSync/FieldSync.docc/GettingStarted.md),
/// compiled and run: keep the two the same.
@Suite(.ownThread) struct DocCArticleTests {
    // GettingStarted.md: begin
    /// A duty board for one unit: the open incidents of its station, live, acknowledged and closed from
    /// here, and which of this device's edits HQ holds.
    func dutyBoard(device: FieldSyncDevice, station: Scope, unit: String, relay: PeerAddress) async throws -> [String] {
        // 1. Open the device: its keystore, its store, and a node of its own.
        let app = try await FieldSyncApp.open(device: device,
                                              configuration: NodeConfiguration(network: NetworkParameters(networkID: "longnan-police")))
        var board: [String] = []

        // 2. Show the station's open incidents, newest first; a star marks those assigned to this unit.
        let open = RecordQuery.openIncidents(in: station)
        for record in try await app.records(open) {
            let incident = try Incident(record)
            let mark = incident.assignedUnits.contains(unit) ? "*" : " "
            board.append("\(mark) \(record.id.description.prefix(8)) \(incident.status) \(incident.summary)")
        }

        // 3. Watch every change to an open incident, written here or arriving by sync.
        let changes = app.recordChanges(matching: open)
        async let updates: [String] = {
            var seen: [String] = []
            for await change in changes {
                let summary = (try? Incident(change.record))?.summary ?? "?"
                seen.append("\(change.origin == .local ? "written here" : "arrived"): \(summary)")
            }
            return seen
        }()

        // 4. Act: acknowledge the first incident assigned to this unit, then close it with feedback.
        let assigned = try await app.records(open).first { (try? Incident($0))?.assignedUnits.contains(unit) == true }
        if let id = assigned?.id.description {
            _ = try await app.addNote(id, "\(unit) acknowledged")
            _ = try await app.close(id, feedback: "Road cleared; the reporter was told")
        }

        // 5. Sync in the background with the relay box, and show which of this device's edits HQ holds.
        var options = DaemonOptions(listenHost: "127.0.0.1", listenPort: 0)
        options.staticPeers = [relay]
        try await app.startSync(options)
        for receipt in try await app.ownRecordReceipts() {
            board.append("\(receipt.id.description.prefix(8)) \(receipt.reachedHQ ? "reached HQ" : "waiting for HQ")")
        }

        // 6. Stop syncing (the app stays open), then close: every observation stream ends.
        await app.stopSync(grace: .seconds(1))
        await app.close()
        return board + (await updates)
    }
    // GettingStarted.md: end

    @Test(.timeLimit(.minutes(2))) func theArticlesAppRuns() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let device = try f.device("bp17")
        let setup = try await FieldSyncApp.open(device: device, configuration: AppFixtures.configuration)
        let mine = try await setup.createIncident(AppFixtures.draft("Rockfall on the county road"))
        _ = try await setup.assign(mine.record.id.description, units: ["car-2"], dispatch: true)
        _ = try await setup.createIncident(AppFixtures.draft("Lost sheep"))
        await setup.close(grace: .zero)

        // No relay listens on this port: sync only schedules retries until the app stops it.
        let board = try await dutyBoard(device: device, station: AppFixtures.station, unit: "car-2",
                                        relay: PeerAddress(host: "127.0.0.1", port: 1))
        print(board.joined(separator: "\n"))
        let id = String(mine.record.id.description.prefix(8))
        #expect(board.contains("* \(id) dispatched Rockfall on the county road"))
        #expect(board.contains { $0.hasPrefix("  ") && $0.hasSuffix("reported Lost sheep") })
        #expect(board.contains("\(id) waiting for HQ"))
        // The note kept it open (seen); the close took it out of "open incidents" (not seen).
        #expect(board.filter { $0.hasPrefix("written here") } == ["written here: Rockfall on the county road"])
    }

    /// The article shows this file's code, line for line.
    @Test func theArticleShowsThisCode() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let article = try String(contentsOf: root.appendingPathComponent("Sources/FieldSync/FieldSync.docc/GettingStarted.md"), encoding: .utf8)
        let lines = source.components(separatedBy: "\n")
        let begin = try #require(lines.firstIndex { $0.hasSuffix("// GettingStarted.md: begin") })
        let end = try #require(lines.firstIndex { $0.hasSuffix("// GettingStarted.md: end") })
        let code = lines[(begin + 1)..<end].map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : $0 }.joined(separator: "\n")
        #expect(article.contains("```swift\n" + code + "\n```"), "GettingStarted.md must show the code of DocCArticleTests.swift as it is")
    }
}
