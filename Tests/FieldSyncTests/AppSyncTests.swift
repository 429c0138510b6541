import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import NIOCore
import Testing

/// Two apps in one process syncing in the background over loopback; observers of record changes and
/// sync events; cancellation and closing leak nothing.
@Suite(.ownThread) struct AppSyncTests {
    /// Waits for the first element of `stream` that `match` accepts, or nil after `seconds`.
    static func first<S: AsyncSequence & Sendable>(_ stream: S, within seconds: Double,
                                                   where match: @escaping @Sendable (S.Element) -> Bool) async -> S.Element?
        where S.Element: Sendable {
        await withTaskGroup(of: S.Element?.self) { group in
            group.addTask {
                do {
                    for try await e in stream where match(e) { return e }
                } catch {}
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let result = await group.next() ?? nil
            group.cancelAll()
            return result
        }
    }

    @Test(.timeLimit(.minutes(2))) func anObserverSeesARemoteEditArriveByBackgroundSync() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let station = try await FieldSyncApp.open(device: try f.device("st17", role: .station), configuration: AppFixtures.configuration)
        let backpack = try await FieldSyncApp.open(device: try f.device("bp17"), configuration: AppFixtures.configuration)
        let openHere = station.recordChanges(matching: .openIncidents(in: AppFixtures.station))
        let visits = station.recordChanges(matching: RecordQuery(kind: .visit))
        let events = station.syncEvents()
        let mine = backpack.recordChanges()
        try await station.startSync(AppFixtures.syncOptions())
        let port = try #require(await station.listeningPort)
        try await backpack.startSync(AppFixtures.syncOptions(peers: [PeerAddress(host: "127.0.0.1", port: port)]))

        // A peer the app adds at run time (as discovery would) is a sync event.
        let peers = backpack.syncEvents()
        backpack.addPeer(host: "127.0.0.1", port: 1)
        let added = await Self.first(peers, within: 10) { e in
            if case let .peerAdded(address, source) = e { return address.port == 1 && source == .static }
            return false
        }
        #expect(added != nil)

        let written = try await backpack.createIncident(AppFixtures.draft("Landslide on the village road", priority: .urgent))
        let id = written.record.id
        // The writer's own observer sees its local write.
        let local = await Self.first(mine, within: 10) { $0.record.id == id }
        #expect(local?.origin == .local)
        // The station's observer sees it arrive by sync, authored by the backpack.
        let start = ContinuousClock.now
        let remote = await Self.first(openHere, within: 20) { $0.record.id == id }
        let took = ContinuousClock.now - start
        #expect(remote?.origin == .remote(backpack.identity.id))
        #expect(remote.map { try? Incident($0.record).summary } == "Landslide on the village road")
        print("remote edit observed after \(took)")
        // The station saw the backpack's session start (authenticated, with its role).
        let backpackID = backpack.identity.id
        let session = await Self.first(events, within: 10) { e in
            if case let .sessionStarted(s) = e { return s.peer == backpackID && s.peerRole == .backpack && !s.initiator }
            return false
        }
        #expect(session != nil)
        // A closed incident no longer matches "open incidents": the filtered observer does not see the close.
        _ = try await station.close(id.description)
        let visit = try await backpack.createVisit(VisitDraft(scope: AppFixtures.village, subject: "household 3", visitor: "Li",
                                                              visitType: .routine))
        let seenVisit = await Self.first(visits, within: 20) { $0.record.id == visit.record.id }
        #expect(seenVisit != nil)
        #expect(try await backpack.record(id.description, kind: .incident).elements(Incident.Field.assignedUnits).isEmpty)
        await backpack.close(grace: .seconds(1))
        await station.close(grace: .seconds(1))
        #expect(station.observerCounts == (0, 0) && backpack.observerCounts == (0, 0))
    }

    /// Cancelling the task that iterates an observer unregisters it; closing an app ends every stream and
    /// refuses later calls; open/close cycles leave no file descriptor behind.
    @Test(.timeLimit(.minutes(3))) func cancellationAndCloseLeakNothing() async throws {
        var f = try AppFixtures()
        defer { f.remove() }
        let device = try f.device("bp17")
        let app = try await FieldSyncApp.open(device: device, configuration: AppFixtures.configuration)
        let stream = app.recordChanges()
        let watcher = Task.onOwnThread { for await _ in stream {} }
        _ = app.syncEvents()  // dropped at once: unregistered
        #expect(app.observerCounts.records == 1)
        watcher.cancel()
        try await watcher.value
        var gone = false
        for _ in 0..<100 where !gone {
            gone = app.observerCounts == (0, 0)
            if !gone { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(gone, "\(app.observerCounts)")

        let kept = app.recordChanges()
        let ended = Task.onOwnThread { () -> Int in
            var n = 0
            for await _ in kept { n += 1 }
            return n
        }
        _ = try await app.createIncident(AppFixtures.draft("one"))
        await app.close()
        #expect(try await ended.value == 1, "the stream ends when the app closes, after the change it saw")
        do {
            _ = try await app.records(RecordQuery())
            Issue.record("a closed app must refuse calls")
        } catch {
            #expect(error.code == .failed)
        }

        // Open/close cycles (with background sync and an observer each time): no descriptor on the
        // device's files left open, and no observer left registered.
        let cycles = 50
        var openWhileOpen = 0
        for n in 0..<cycles {
            let a = try await FieldSyncApp.open(device: device, configuration: AppFixtures.configuration)
            let s = a.recordChanges()
            let t = Task.onOwnThread { for await _ in s {} }
            if n % 10 == 0 { try await a.startSync(AppFixtures.syncOptions()) }
            _ = try await a.records(RecordQuery(limit: 1))
            openWhileOpen = max(openWhileOpen, AppFixtures.openFileDescriptors(under: f.dir))
            await a.close(grace: .zero)
            try await t.value
            #expect(a.observerCounts == (0, 0))
        }
        let after = AppFixtures.openFileDescriptors(under: f.dir)
        print("descriptors on the device's files: \(openWhileOpen) while an app is open, \(after) after \(cycles) open/close cycles")
        #expect(openWhileOpen > 0, "the check sees the store while it is open")
        #expect(after == 0)
    }
}
