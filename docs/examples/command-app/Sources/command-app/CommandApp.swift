// command-app: the officers' mobile command app, as a terminal program (docs/examples/command-app/README.md).
//
// It opens the device, shows the open incidents of its station with those assigned to this officer's
// unit first, prints each change as it is written here or arrives by sync, syncs in the background
// (with the peers given, and the relay boxes LAN discovery finds), and takes one command per line on
// standard input: ack, note, feedback, close, receipts, board, sync, quit. Every line it prints starts
// with a word and a colon, so a test (or a script) can drive it through stdin and stdout.

import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncDriver
import FieldSyncNode
import FieldSyncProtocol
import Foundation

@main
struct CommandApp {
    static func main() async {
        let options: Options
        do { options = try Options(CommandLine.arguments.dropFirst()) } catch {
            say("error: \(error)")
            say("usage: command-app --dir DIR (--key-file FILE | --passphrase-file FILE) --store FILE --unit UNIT --station SCOPE "
                + "[--listen HOST:PORT] [--peer HOST:PORT]... [--discovery-port PORT [--discovery-destination IPV4]]")
            exit(64)
        }
        do {
            try await run(options)
        } catch {
            say("error: \(error)")
            exit(1)
        }
    }

    static func run(_ o: Options) async throws {
        let app = try await FieldSyncApp.open(device: o.device, configuration: NodeConfiguration(network: NetworkParameters(networkID: o.network)),
                                              warn: { say("warning: \($0)") })
        let board = Board(app: app, unit: o.unit, station: o.station)
        say("device: \(app.identity.id) (\(app.identity.certificate.role)), unit \(o.unit), station \(o.station)")
        try await board.show()

        // Live: every change to a record of the station, written here or arriving by sync.
        let changes = app.recordChanges(matching: RecordQuery(kind: .incident, scope: o.station))
        let events = app.syncEvents()
        let watchers = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { for await change in changes { await board.changed(change) } }
                group.addTask { for await event in events { await board.event(event) } }
            }
        }

        var sync = DaemonOptions(listenHost: o.listen.host, listenPort: o.listen.port)
        sync.staticPeers = o.peers
        var discovery: DiscoveryConfiguration?
        if let port = o.discoveryPort {
            var d = DiscoveryConfiguration()
            d.port = port
            d.destination = o.discoveryDestination
            discovery = d
        }
        try await app.startSync(sync, discovery: discovery)
        say("sync: listening on \(o.listen.host):\(await app.listeningPort ?? 0)\(discovery == nil ? "" : ", discovery on UDP \(o.discoveryPort!)")")
        say("ready: commands: board, ack ID, note ID TEXT, feedback ID TEXT, close ID [FEEDBACK], receipts, sync stop|start, quit")

        for await line in StandardInput.lines() {
            let words = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard let command = words.first else { continue }
            do {
                switch command {
                case "board": try await board.show()
                case "ack":
                    let id = try arg(words, 1, "ack ID")
                    let w = try await app.addNote(id, "acknowledged by \(o.unit)", kind: .incident)
                    say("ok: acknowledged \(short(w.record.id))")
                case "note":
                    let w = try await app.addNote(try arg(words, 1, "note ID TEXT"), try arg(words, 2, "note ID TEXT"), kind: .incident)
                    say("ok: note added to \(short(w.record.id))")
                case "feedback":
                    let w = try await app.giveFeedback(try arg(words, 1, "feedback ID TEXT"), try arg(words, 2, "feedback ID TEXT"))
                    say("ok: feedback given on \(short(w.record.id))")
                case "close":
                    let w = try await app.close(try arg(words, 1, "close ID [FEEDBACK]"), feedback: words.count > 2 ? words[2] : nil)
                    say("ok: closed \(short(w.record.id))")
                case "receipts": try await board.receipts()
                case "sync":
                    if words.count > 1, words[1] == "stop" {
                        await app.stopSync()
                        say("ok: sync stopped")
                    } else if words.count > 1, words[1] == "start" {
                        try await app.startSync(sync, discovery: discovery)
                        say("ok: sync started, listening on port \(await app.listeningPort ?? 0)")
                    } else {
                        say("sync: \(app.isSyncing ? "running" : "stopped")")
                    }
                case "quit": break
                default: say("error: unknown command \(command)")
                }
            } catch {
                say("error: \(error)")
            }
            if command == "quit" { break }
        }
        await app.close()
        _ = await watchers.result
        say("bye: closed")
    }

    static func arg(_ words: [String], _ i: Int, _ usage: String) throws -> String {
        guard words.count > i, !words[i].isEmpty else { throw FieldSyncError(.usage, "usage: \(usage)") }
        return words[i]
    }
}

/// What the officer sees: the board, each change, sync events and receipts. An actor: its lines come
/// from the command loop and the watchers alike.
actor Board {
    let app: FieldSyncApp
    let unit: String
    let station: Scope
    /// This device's own changes HQ has not receipted yet, as last reported.
    var pending: UInt64?

    init(app: FieldSyncApp, unit: String, station: Scope) {
        self.app = app
        self.unit = unit
        self.station = station
    }

    /// The incidents assigned to this unit (open ones), then the other open incidents of the station.
    func show() async throws {
        let open = try await app.records(.openIncidents(in: station)).compactMap { try? Incident($0) }
        let mine = open.filter { $0.assignedUnits.contains(unit) }
        let others = open.filter { !$0.assignedUnits.contains(unit) }
        say("board: \(mine.count) assigned to \(unit), \(others.count) other open in \(station)")
        for i in mine { say("assigned: \(line(i))") }
        for i in others { say("open: \(line(i))") }
        say("end: board")
    }

    func changed(_ change: RecordChange) {
        guard let i = try? Incident(change.record) else { return }
        let origin: String
        switch change.origin {
        case .local: origin = "here"
        case let .remote(author): origin = author.map { "by \($0.description.prefix(8))" } ?? "rebuilt"
        }
        let tag = i.assignedUnits.contains(unit) ? "assigned" : "station"
        say("update: [\(tag)] \(line(i)) (\(origin))")
    }

    func event(_ event: SyncEvent) async {
        switch event {
        case let .peerAdded(address, source): say("peer: \(address) (\(source.rawValue))")
        case let .sessionStarted(s): say("session: with \(s.peer.description.prefix(8)) (\(s.peerRole.map { "\($0)" } ?? "role unknown"))")
        case let .receipts(logs): say("receipt: HQ receipted \(logs.count) log(s)")
        case let .pendingToHQ(n):
            if n != pending { say("pending: \(n) of this device's change(s) not yet at HQ") }
            pending = n
        case let .revocationsLearned(n): say("revocation: \(n) learned")
        case .liveSessionStarted, .sessionEnded: break
        }
    }

    /// Each record this device edited, and whether HQ holds all of its edits.
    func receipts() async throws {
        let own = try await app.ownRecordReceipts()
        say("receipts: \(own.filter(\.reachedHQ).count) of \(own.count) record(s) you edited reached HQ")
        for r in own {
            say("receipt: \(short(r.id)) \(r.reachedHQ ? "reached HQ" : "waiting for HQ") (\(r.receipted)/\(r.ownChanges) edits)")
        }
        say("end: receipts")
    }

    private func line(_ i: Incident) -> String {
        "\(short(i.id)) \(i.status) \(i.priority) \(i.summary)\(i.assignedUnits.isEmpty ? "" : " [\(i.assignedUnits.joined(separator: ", "))]")"
            + "\(i.notes.isEmpty ? "" : " notes \(i.notes.count)")\(i.feedback.map { " feedback \"\($0)\"" } ?? "")"
    }
}

/// The first 8 hex digits of a record id (a unique prefix in any store of this size).
func short(_ id: RecordID) -> String { String(id.description.prefix(8)) }

/// One line on standard output, written at once (stdout is a pipe when a test drives the app).
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// Lines of standard input, read on a thread of their own (a blocking read must not hold Swift's pool).
enum StandardInput {
    static func lines() -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        let reader = Thread {
            while let line = readLine() { continuation.yield(line.trimmingCharacters(in: .whitespaces)) }
            continuation.finish()
        }
        reader.start()
        return stream
    }
}

/// The command line.
struct Options {
    var device: FieldSyncDevice
    var unit: String
    var station: Scope
    var network = "longnan-police"
    var listen: (host: String, port: Int) = ("0.0.0.0", 7000)
    var peers: [PeerAddress] = []
    var discoveryPort: Int?
    var discoveryDestination = "255.255.255.255"

    init(_ args: ArraySlice<String>) throws {
        var values: [String: [String]] = [:]
        var rest = args
        while let flag = rest.popFirst() {
            guard flag.hasPrefix("--"), let value = rest.popFirst() else { throw FieldSyncError(.usage, "expected --FLAG VALUE, not \(flag)") }
            values[String(flag.dropFirst(2)), default: []].append(value)
        }
        func one(_ name: String) throws -> String {
            guard let v = values[name]?.last else { throw FieldSyncError(.usage, "--\(name) is required") }
            return v
        }
        let key: KeystoreUnlock
        if let file = values["key-file"]?.last {
            key = .keyFile(path: file)
        } else if let file = values["passphrase-file"]?.last {
            key = .passphrase(try PassphraseFile.read(file))
        } else {
            throw FieldSyncError(.usage, "give --key-file or --passphrase-file")
        }
        device = FieldSyncDevice(directory: try one("dir"), key: key, storePath: try one("store"))
        unit = try one("unit")
        station = try RecordText.scope(try one("station"))
        if let n = values["network"]?.last { network = n }
        if let l = values["listen"]?.last { listen = try HostPort.parse(l) }
        for p in values["peer"] ?? [] {
            let (host, port) = try HostPort.parse(p)
            peers.append(PeerAddress(host: host, port: port))
        }
        if let d = values["discovery-port"]?.last {
            guard let port = Int(d) else { throw FieldSyncError(.usage, "--discovery-port must be a port number") }
            discoveryPort = port
        }
        if let d = values["discovery-destination"]?.last { discoveryDestination = d }
    }
}
