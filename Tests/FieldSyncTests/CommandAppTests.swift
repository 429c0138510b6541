import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncTestSupport
import Foundation
import Testing

/// The example app (docs/examples/command-app), driven through its standard input and output: it finds
/// the station by LAN discovery on loopback, shows what is assigned to its unit as it arrives, and its
/// acknowledgement, note, feedback and close reach the station and, through it, HQ, whose receipts come
/// back and show as "reached HQ".
@Suite(.ownThread) struct CommandAppTests {
    /// The built `command-app` (the main package builds the example's source as its target `command-app`).
    static var binary: String? {
        guard let fieldsync = FieldSyncBinary.path else { return nil }
        let path = (fieldsync as NSString).deletingLastPathComponent + "/command-app"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// A running command-app: its output lines as they come, and a way to type a line.
    final class Running: @unchecked Sendable {
        let process = Process()
        private let input = Pipe(), output = Pipe()
        private let lock = NSLock()
        private var lines: [String] = []
        private var partial = ""

        init(_ binary: String, _ args: [String]) throws {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = args
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.standardError
            output.fileHandleForReading.readabilityHandler = { [self] h in
                let text = String(decoding: h.availableData, as: UTF8.self)
                lock.withLock {
                    partial += text
                    while let nl = partial.firstIndex(of: "\n") {
                        lines.append(String(partial[..<nl]))
                        partial = String(partial[partial.index(after: nl)...])
                    }
                }
            }
            try process.run()
        }

        var all: [String] { lock.withLock { lines } }

        func type(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

        /// The first line from `after` on that `match` accepts, within `seconds`.
        func wait(from after: Int = 0, within seconds: Double = 30, _ match: (String) -> Bool) async throws -> (index: Int, line: String)? {
            // `TestClock`, not `Task.sleep`, whose wake-up waits for a free thread of the cooperative pool:
            // in a CI run, with the pool held by CPU-bound tests, one 20 ms sleep outlasted the whole
            // 30 s and the wait gave up with the line it waited for already printed. A last look after
            // the deadline, for the same reason.
            let deadline = Date().addingTimeInterval(seconds)
            while true {
                let now = all
                if after < now.count, let i = now[after...].firstIndex(where: match) { return (i, now[i]) }
                if Date() >= deadline { return nil }
                try await TestClock.sleep(for: .milliseconds(20))
            }
        }

        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            output.fileHandleForReading.readabilityHandler = nil
        }
    }

    @Test(.timeLimit(.minutes(3))) func theCommandAppShowsActsAndSeesReceipts() async throws {
        let binary = try #require(Self.binary, "command-app is not built next to fieldsync: run `swift build --build-tests`")
        var f = try AppFixtures()
        defer { f.remove() }
        let hq = try await FieldSyncApp.open(device: try f.device("hq", role: .hq, scopes: [try Scope("longnan")]),
                                             configuration: AppFixtures.configuration)
        let station = try await FieldSyncApp.open(device: try f.device("st17", role: .station), configuration: AppFixtures.configuration)
        let officer = try f.device("cmd17", role: .command)
        guard case let .keyFile(keyFile) = officer.key else { Issue.record("the fixture uses key files"); return }
        try await hq.startSync(AppFixtures.syncOptions())
        let hqPort = try #require(await hq.listeningPort)
        var discovery = DiscoveryConfiguration()
        discovery.port = Int.random(in: 40_000...60_000)
        discovery.destination = "127.255.255.255"
        discovery.interval = .milliseconds(200)
        try await station.startSync(AppFixtures.syncOptions(peers: [PeerAddress(host: "127.0.0.1", port: hqPort)]), discovery: discovery)
        let mine = try await station.createIncident(AppFixtures.draft("Rockfall on the county road", priority: .urgent))
        _ = try await station.assign(mine.record.id.description, units: ["car-2"], dispatch: true)
        _ = try await station.createIncident(AppFixtures.draft("Lost sheep"))
        let arrived = station.recordChanges(matching: RecordQuery(kind: .incident))

        let app = try Running(binary, ["--dir", officer.directory, "--key-file", keyFile, "--store", officer.storePath,
                                       "--unit", "car-2", "--station", AppFixtures.station.path, "--listen", "127.0.0.1:0",
                                       "--discovery-port", "\(discovery.port)", "--discovery-destination", "127.255.255.255"])
        defer { app.stop() }
        let id = String(mine.record.id.description.prefix(8))
        #expect(try await app.wait { $0.hasPrefix("ready:") } != nil, "\(app.all)")
        // The station is found by discovery and synced: the incidents arrive, live.
        #expect(try await app.wait { $0.hasPrefix("peer: ") && $0.hasSuffix("(discovered)") } != nil, "\(app.all)")
        #expect(try await app.wait { $0.hasPrefix("update: [assigned] \(id) dispatched urgent Rockfall") } != nil, "\(app.all)")
        #expect(try await app.wait { $0.hasPrefix("update: [station]") && $0.contains("Lost sheep") } != nil, "\(app.all)")
        let shown = app.all.count
        app.type("board")
        let board = try #require(try await app.wait(from: shown) { $0.hasPrefix("board: ") }, "\(app.all)")
        #expect(board.line == "board: 1 assigned to car-2, 1 other open in \(AppFixtures.station)")
        #expect(try await app.wait(from: board.index) { $0.hasPrefix("assigned: \(id) dispatched") } != nil)

        // The officer acts; each edit reaches the station (authored by the officer's device).
        let officerID = try #require(try await app.wait { $0.hasPrefix("device: ") }).line.dropFirst("device: ".count).prefix(8)
        for command in ["ack \(id)", "note \(id) Two lanes blocked, diverting traffic", "feedback \(id) Reporter called back"] {
            let before = app.all.count
            app.type(command)
            #expect(try await app.wait(from: before) { $0.hasPrefix("ok: ") } != nil, "\(command): \(app.all[before...])")
        }
        let before = app.all.count
        app.type("close \(id) Road cleared")
        #expect(try await app.wait(from: before) { $0 == "ok: closed \(id)" } != nil, "\(app.all[before...])")
        let closed = await AppSyncTests.first(arrived, within: 30) { c in
            (try? Incident(c.record))?.status == .closed && c.record.id == mine.record.id
        }
        #expect(closed != nil, "the close reached the station")
        if case let .remote(author)? = closed?.origin {
            #expect(author?.description.hasPrefix(String(officerID)) == true, "authored by the officer's device")
        } else {
            Issue.record("the close arrived by sync: \(String(describing: closed?.origin))")
        }
        let atStation = try await station.record(id)
        #expect(try Incident(atStation).notes.map(\.text).contains("acknowledged by car-2"))
        #expect(try Incident(atStation).notes.map(\.text).contains("Two lanes blocked, diverting traffic"))

        // HQ receipts come back through the station: every edit of the officer reached HQ.
        var reached = false
        let deadline = Date().addingTimeInterval(60)
        while !reached, Date() < deadline {
            let from = app.all.count
            app.type("receipts")
            _ = try await app.wait(from: from) { $0 == "end: receipts" }
            reached = app.all[from...].contains { $0.hasPrefix("receipt: \(id) reached HQ") }
            if !reached { try await TestClock.sleep(for: .milliseconds(300)) }
        }
        #expect(reached, "\(app.all.suffix(12))")
        #expect(app.all.contains { $0.hasPrefix("pending: 0 ") }, "the pending count went down to 0 as the receipts arrived")

        app.type("quit")
        #expect(try await app.wait { $0 == "bye: closed" } != nil)
        app.process.waitUntilExit()  // it printed its last line and exits by itself
        app.stop()
        #expect(app.process.terminationStatus == 0)
        await station.close(grace: .zero)
        await hq.close(grace: .zero)
    }
}
