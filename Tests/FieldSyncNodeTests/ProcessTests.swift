import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Integration tests with real `fieldsync` processes on 127.0.0.1: every node is the built binary
/// (`serve` or `sync`), every store a SQLite file, every contact a TCP session. Devices are enrolled
/// in-process (keystores with key files, as `fieldsync device import` writes them); stores are read
/// in-process only while their node's process is stopped.
@Suite(.ownThread, .serialized)
struct ProcessTests {
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")

    @Test(.timeLimit(.minutes(3))) func sixNodesConvergeThroughRelayAndStation() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        let st = try w.device("station", .station, [Self.station.path])
        let relay = try w.device("relay", .relay, ["longnan/wudu"], readsRecords: false)
        let bps = try (1...3).map { try w.device("bp\($0)", .backpack, [Self.station.path]) }
        for (i, bp) in bps.enumerated() {
            try w.fill(bp, count: 5 * (i + 1))
            try w.expectOK(["incident", "new"] + w.args(bp) + ["--scope", Self.village.path, "--category", "dispute",
                                                              "--summary", "incident of bp\(i + 1)", "--lat", "33.4", "--lon", "104.9"])
        }
        try w.serve(hq)
        try w.serve(st)
        // Backpacks 1 and 2 meet the station, backpack 3 reaches HQ directly; the relay carries between
        // the station and HQ (twice each way: HQ's receipt is written after the session that brought changes).
        for (from, to) in [(bps[0], st), (bps[1], st), (bps[2], hq), (relay, st), (relay, hq), (relay, hq), (relay, st),
                           (bps[0], st), (bps[1], st), (bps[2], hq)] {
            let r = try w.sync(from, to)
            #expect(r["finished"] as? Bool == true, "\(from.name) -> \(to.name): \(r)")
        }
        try w.stopAll()
        let total = 3 + 5 + 10 + 15
        var states: [[[UInt8]]] = []
        for d in [hq, st] + bps {
            let records = try w.open(d).records(RecordQuery(includeDeleted: true)).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) }
            #expect(records.count == total, "\(d.name) holds \(records.count) of \(total) records")
            states.append(records)
        }
        #expect(Set(states).count == 1, "HQ, the station and the three backpacks hold identical records")
        let relayStore = try w.open(relay)
        #expect(try relayStore.records(RecordQuery()).isEmpty, "the relay read nothing")
        #expect(try relayStore.status().changes >= total, "the relay carries every change")
        for bp in bps {
            let log = LogID(author: bp.id, scope: Self.village)
            let store = try w.open(bp)
            #expect(try store.receipted(log) == store.holdings(of: log).frontier, "\(bp.name): everything reached HQ")
        }
    }

    @Test(.timeLimit(.minutes(3))) func killedPeerMidTransferResumesWithNothingLost() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [Self.station.path])
        let st = try w.device("station", .station, [Self.station.path])
        let n = 6_000
        try w.fill(bp, count: n)
        try w.serve(st)
        let server = w.servers[st.name]!
        let client = try w.start(["sync", "127.0.0.1:\(st.port)"] + w.args(bp) + ["--json"])
        // SIGKILL the station once its WAL shows that batches are being committed.
        let wal = st.store + "-wal"
        let deadline = Date().addingTimeInterval(30)
        while ProcessWorld.fileSize(wal) < 300_000 {
            guard Date() < deadline, client.isRunning else { break }
            usleep(2_000)
        }
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        w.servers[st.name] = nil
        client.waitUntilExit()
        #expect(client.terminationStatus == 1, "the cut session failed")
        let held = try w.open(st).status().changes
        #expect(held > 0 && held < n, "cut mid-transfer: \(held) of \(n) committed")
        // Restart and resync: the rest arrives, nothing is lost or duplicated.
        try w.serve(st)
        let again = try w.sync(bp, st)
        #expect(again["finished"] as? Bool == true, "\(again)")
        #expect(again["changesSent"] as? Int == n - held, "only what was missing is sent: \(again)")
        try w.stopAll()
        let store = try w.open(st)
        #expect(try store.status().changes == n)
        #expect(try store.records(RecordQuery()).count == n)
        #expect(try store.holdings(of: LogID(author: bp.id, scope: Self.village)).frontier == UInt64(n))
    }

    /// A catch-up `sync` on a terminal (`script` gives it one) draws a live progress line; piped (every
    /// other test) it prints only its result.
    @Test(.timeLimit(.minutes(1)), .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script")))
    func catchUpShowsProgressOnlyOnATerminal() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [Self.station.path])
        let bp = try w.device("bp", .backpack, [Self.station.path])
        try w.fill(bp, count: 3_000)
        try w.serve(bp)
        let command = ([try ProcessWorld.binary, "sync", "127.0.0.1:\(bp.port)"] + w.args(st)).joined(separator: " ")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        p.arguments = ["-qfec", command, "/dev/null"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && text.contains("sync: received ") && text.contains("received 3000"), "\(text)")
        try w.stopAll()
        try w.serve(bp)
        let piped = try w.run(["sync", "127.0.0.1:\(bp.port)"] + w.args(st))
        #expect(piped.status == 0 && !piped.err.contains("sync: received") && !piped.out.contains("sync: received"))
        try w.stopAll()
    }

    @Test(.timeLimit(.minutes(1))) func revokedDeviceIsRefusedAndTheRevocationSpreads() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [Self.station.path])
        let lost = try w.device("lost", .backpack, [Self.station.path])
        let good = try w.device("good", .backpack, [Self.station.path])
        try w.fill(lost, count: 3)
        try w.fill(good, count: 2)
        let revocation = try Revocation(device: lost.id, serial: 0, revokedAt: HLCTimestamp(milliseconds: ProcessWorld.now(), counter: 0),
                                        reason: .lost, note: "reported by radio", by: w.authority)
        let file = w.dir + "/lost.rev"
        _ = FileManager.default.createFile(atPath: file, contents: Data(revocation.canonicalBytes))
        let imported = try w.expectOK(["publish", file] + w.args(st))
        #expect(imported.contains("revocation of \(lost.id)") && imported.contains("refuses the revoked device"), "\(imported)")
        #expect(try w.expectOK(["publish", file] + w.args(st)).contains("already held"))
        // A revocation signed under another root is refused with a clear error.
        let forged = try Revocation(device: good.id, serial: 0, revokedAt: HLCTimestamp(milliseconds: ProcessWorld.now(), counter: 0),
                                    reason: .stolen, note: "", by: Authority(root: Ed25519.SecretKey.generate()))
        _ = FileManager.default.createFile(atPath: w.dir + "/forged.rev", contents: Data(forged.canonicalBytes))
        let refused = try w.run(["publish", w.dir + "/forged.rev"] + w.args(st))
        #expect(refused.status != 0 && refused.err.contains("does not verify"), "\(refused.err)")

        try w.serve(st)
        let r = try w.sync(lost, st)
        #expect(r["finished"] as? Bool == false && (r["changesSent"] as? Int ?? 0) == 0, "\(r)")
        let ok = try w.sync(good, st)
        #expect(ok["finished"] as? Bool == true && (ok["changesReceived"] as? Int ?? 0) >= 1, "the revocation travels: \(ok)")
        try w.stopAll()
        #expect(try w.serverLog(st).contains("revoked"), "the station says why")
        let store = try w.open(st)
        #expect(try store.holdings(of: LogID(author: lost.id, scope: Self.village)).frontier == 0, "nothing of the lost device stored")
        #expect(try store.records(RecordQuery()).count == 2)
        // The good backpack now refuses the lost device too (restored from its store at open).
        let goodReplicator = try w.replicator(good)
        #expect(goodReplicator.trust.revocation(of: lost.identity.certificate) != nil)
    }

    /// Issue 12 item 1, attack case 34 on a live session, with real processes: a backpack's `serve` holds a
    /// live session with the station's `serve`; the operator publishes the backpack's revocation into the
    /// station's store with the CLI and writes a record at once: the record never reaches the backpack,
    /// the session is cut, and the backpack is told it was refused as revoked.
    @Test(.timeLimit(.minutes(1))) func revocationPublishedDuringALiveSessionCutsItAndNothingLaterArrives() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [Self.station.path])
        let bp = try w.device("bp", .backpack, [Self.station.path])
        try w.serve(st)
        try w.serve(bp, extra: ["--peer", "127.0.0.1:\(st.port)"])
        func eventually(_ what: String, _ condition: () throws -> Bool) throws {
            let deadline = Date().addingTimeInterval(20)
            while try !condition() {
                guard Date() < deadline else { throw NodeTestError("timed out waiting for \(what)") }
                usleep(50_000)
            }
        }
        try eventually("live sessions") { try w.serverLog(st).contains("session live") && w.serverLog(bp).contains("session live") }
        func incident(_ summary: String) throws {
            try w.expectOK(["incident", "new"] + w.args(st) + ["--scope", Self.village.path, "--category", "dispute", "--summary", summary,
                                                              "--lat", "33.4", "--lon", "104.9"])
        }
        try incident("before the revocation")
        try eventually("the first record at the backpack") {
            try w.run(["list"] + w.args(bp) + ["--json"]).out.contains("before the revocation")
        }
        let revocation = try Revocation(device: bp.id, serial: bp.identity.certificate.serial,
                                        revokedAt: HLCTimestamp(milliseconds: ProcessWorld.now(), counter: 0), reason: .stolen,
                                        note: "stolen from a vehicle", by: w.authority)
        let file = w.dir + "/bp.rev"
        _ = FileManager.default.createFile(atPath: file, contents: Data(revocation.canonicalBytes))
        try w.expectOK(["publish", file] + w.args(st))
        let published = Date()
        try incident("after the revocation")
        let cut = (try? eventually("the station to cut the session") { try w.serverLog(st).contains("revoked") }) != nil
        print("live revocation: publish returned to the station's log showing the cut in \(Int(Date().timeIntervalSince(published) * 1000)) ms")
        let told = (try? eventually("the backpack to hear why") { try w.serverLog(bp).contains("refused this device") }) != nil
        #expect(cut, "the station's log says why it cut the session")
        #expect(told, "the backpack's log says it was refused as revoked")
        usleep(1_500_000)  // any push would have arrived by now (the station polls its store every 500 ms)
        try w.stopAll()
        let held = try w.open(bp).records(RecordQuery()).count
        #expect(held == 1, "the backpack holds \(held) records; only the one written before the revocation may reach it")
        var after = RecordQuery()
        after.text = "after the revocation"
        #expect(try w.open(bp).records(after).isEmpty, "a record written after the revocation reached the revoked device")
        #expect(try w.open(st).records(after).count == 1)
    }

    @Test(.timeLimit(.minutes(1))) func deviceOfAnotherAuthorityIsRefused() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [Self.station.path])
        // Same role and scope, certified by another root, pinning the real root (public material).
        let intruder = try w.device("intruder", .backpack, [Self.station.path],
                                    issuer: ProcessWorld.issued(by: Authority(root: Ed25519.SecretKey.generate())))
        try w.fill(st, count: 2)
        try w.serve(st)
        let r = try w.sync(intruder, st)
        #expect(r["finished"] as? Bool == false && (r["changesReceived"] as? Int ?? 0) == 0, "\(r)")
        try w.stopAll()
        #expect(try w.serverLog(st).contains("badCertificate"))
        #expect(try w.open(st).holdings().keys.allSatisfy { $0.author == st.id }, "nothing of the intruder stored")
    }

    @Test(.timeLimit(.minutes(1))) func garbageAndOversizedFramesGetTheConnectionClosed() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [Self.station.path])
        let bp = try w.device("bp", .backpack, [Self.station.path])
        try w.fill(bp, count: 2)
        try w.serve(st, extra: ["--idle-timeout", "2"])
        var random = SystemRandomNumberGenerator()
        func noise(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &random) } }
        let cases: [(String, [UInt8])] = [
            ("a random 256-byte frame", [0x01, 0x00] + noise(256)),
            ("an empty frame", [0x00, 0x00]),
            ("a maximal frame then 256 KiB more", [0xFF, 0xFF] + noise(65_535 + 262_144)),
            ("a fragment promising 65,535 bytes, then silence", [0xFF, 0xFF, 0x42]),
        ]
        for (what, bytes) in cases {
            let started = Date()
            let closed = try RawSocket.sendAndAwaitClose(port: st.port, bytes: bytes, timeout: 20)
            #expect(closed, "\(what): the node closed the connection")
            #expect(Date().timeIntervalSince(started) < 20, "\(what)")
        }
        // The node still serves a real peer afterwards, and stored only that peer's changes.
        let r = try w.sync(bp, st)
        #expect(r["finished"] as? Bool == true, "\(r)")
        try w.stopAll()
        let held = try w.open(st).holdings()
        #expect(Set(held.keys) == [LogID(author: bp.id, scope: Self.village)], "\(held.keys)")
    }

    @Test(.timeLimit(.minutes(1))) func demoRunsAndConverges() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let demo = try w.expectOK(["demo"])
        #expect(demo.contains("noMatchingSlot") && demo.contains("CONVERGED: HQ, station and backpack"), "\(demo)")
        #expect(demo.contains("HQ has receipted 2 of its 2 changes"))
        let crdt = try w.expectOK(["demo", "crdt"])
        #expect(crdt.contains("CONVERGED: all 3 replicas hold byte-identical state."))
    }
}

/// Enrolled devices in a temporary directory, and the `fieldsync` processes that run them.
final class ProcessWorld {
    /// The built `fieldsync` binary (next to the tests, or in a known scratch folder).
    /// The built executable; a test that needs it fails (never skips) when it is not built.
    static var binary: String { get throws { try FieldSyncBinary.required() } }

    static func now() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Enrollment by another authority (for devices of a foreign PKI).
    static func issued(by authority: Authority) -> (EnrollmentRequest, Role, [Scope]) throws -> Certificate {
        { req, role, scopes in
            try authority.enroll(req, role: role, scopes: scopes, notBefore: now() - 60_000, notAfter: now() + 86_400_000, serial: 1)
        }
    }

    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    }

    struct Device {
        let name: String
        let dir: String
        let id: DeviceID
        let identity: DeviceIdentity
        let readsRecords: Bool
        let port: Int
        var keyFile: String { dir + "/device.key" }
        var store: String { dir + "/store.sqlite" }
    }

    let dir: String
    let rootKey = Ed25519.SecretKey.generate()
    let authority: Authority
    let stationKey = EpochKey.generate(scope: ProcessTests.station, epoch: 1)
    let epochKeyFile: String
    var servers: [String: Process] = [:]
    private var serial: UInt64 = 0

    init() throws {
        dir = NSTemporaryDirectory() + "fieldsync-proc-\(Hex.encode(SecureRandom.bytes(6)))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        authority = Authority(root: rootKey)
        epochKeyFile = dir + "/station.epochkey"
        let hex = stationKey.key.withUnsafeBytes { Hex.encode(Array($0)) }
        _ = FileManager.default.createFile(atPath: epochKeyFile, contents: Data("\(stationKey.scope) 1 \(hex)\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
    }

    func cleanUp() {
        try? stopAll()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Enrolls a device (by this world's root unless `issuer` is given) and writes its keystore.
    func device(_ name: String, _ role: Role, _ scopes: [String], readsRecords: Bool = true,
                issuer: ((EnrollmentRequest, Role, [Scope]) throws -> Certificate)? = nil) throws -> Device {
        let scopes = try scopes.map { try Scope($0) }
        let d = dir + "/" + name
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: Self.now(), label: name)
        serial += 1
        let cert = try issuer?(req, role, scopes)
            ?? authority.enroll(req, role: role, scopes: scopes, notBefore: Self.now() - 60_000, notAfter: Self.now() + 86_400_000, serial: serial)
        try Keystore.createKeyFile(at: d + "/device.key")
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: rootKey.publicKey),
                           to: d + "/device.keystore", protection: .keyFile(path: d + "/device.key"))
        return Device(name: name, dir: d, id: cert.subject, identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert),
                      readsRecords: readsRecords, port: try Self.freePort())
    }

    /// The node options of `d` for any `fieldsync` node command.
    func args(_ d: Device) -> [String] {
        ["--dir", d.dir, "--key-file", d.keyFile, "--store", d.store] + (d.readsRecords ? ["--epoch-key-file", epochKeyFile] : [])
    }

    /// A replicator over `d`'s store, as the CLI opens it (the node's process must be stopped).
    func replicator(_ d: Device) throws -> Replicator {
        let store = try SQLiteStore(path: d.store, sealer: try StorageKeySealer(deviceSigningKey: d.identity.signingKey))
        let r = Replicator(identity: d.identity, trust: TrustStore(root: rootKey.publicKey), store: store)
        if d.readsRecords { r.addKey(stationKey) }
        try r.restoreControlState(now: Self.now())
        try r.restoreCertificates(now: Self.now())
        return r
    }

    func open(_ d: Device) throws -> any SyncStore { try replicator(d).store }

    /// Writes `count` small incidents into `d`'s store in-process: authored through a memory replicator,
    /// then ingested into the SQLite store in batches of 1,000 (fast, same bytes as `incident new`).
    func fill(_ d: Device, count: Int) throws {
        let writer = Replicator(identity: d.identity, trust: TrustStore(root: rootKey.publicKey), store: MemoryStore())
        writer.addKey(stationKey)
        let sqlite = try replicator(d)
        let start = try sqlite.store.holdings(of: LogID(author: d.id, scope: ProcessTests.village)).frontier
        guard start == 0 else { throw NodeTestError("fill writes a fresh log; \(d.name) already holds \(start) changes") }
        var changes: [Change] = []
        var g = SystemRandomNumberGenerator()
        for i in 0..<count {
            let now = Self.now()
            var clock = writer.clock
            let e = Incident.create(id: RecordID.random(using: &g), scope: ProcessTests.village, author: d.id, hlc: try clock.now(wall: now),
                                    category: .dispute, priority: .normal, location: Location(latitude: 33.4, longitude: 104.9),
                                    summary: "\(d.name) incident \(i)", reportedAt: Int64(now), reporter: "walk-in")
            changes.append(try writer.write([e], scope: ProcessTests.village, priority: .normal, now: now))
        }
        for chunk in stride(from: 0, to: changes.count, by: 1_000) {
            let report = try sqlite.ingest(Array(changes[chunk..<min(chunk + 1_000, changes.count)]), now: Self.now())
            guard report.rejected == 0, report.commit.inserted == min(1_000, changes.count - chunk) else {
                throw NodeTestError("fill of \(d.name): \(report.outcomes.filter { $0 != .accepted }.prefix(3)), \(report.commit)")
            }
        }
    }

    // MARK: processes

    func start(_ args: [String], log: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.binary)
        p.arguments = args
        if let log {
            if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            h.seekToEndOfFile()
            p.standardOutput = h
            p.standardError = h
        } else {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        return p
    }

    @discardableResult
    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try FieldSyncBinary.run(args) }

    @discardableResult
    func expectOK(_ args: [String]) throws -> String {
        let r = try run(args)
        #expect(r.status == 0, "fieldsync \(args.prefix(2).joined(separator: " ")): \(r.err)")
        return r.out
    }

    /// One `fieldsync sync` process from `from` to `to`'s server; its JSON result.
    func sync(_ from: Device, _ to: Device) throws -> [String: Any] {
        let r = try run(["sync", "127.0.0.1:\(to.port)"] + args(from) + ["--json", "--idle-timeout", "10"])
        guard let obj = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] else {
            return ["finished": false, "error": r.err]
        }
        return obj
    }

    func serverLog(_ d: Device) throws -> String {
        String(decoding: FileManager.default.contents(atPath: d.dir + "/serve.log") ?? Data(), as: UTF8.self)
    }

    /// Starts `fieldsync serve` for `d` on its port and waits until it accepts connections.
    func serve(_ d: Device, extra: [String] = []) throws {
        let p = try start(["serve"] + args(d) + ["--listen", "127.0.0.1:\(d.port)"] + extra, log: d.dir + "/serve.log")
        servers[d.name] = p
        let deadline = Date().addingTimeInterval(15)
        while !RawSocket.canConnect(d.port) {
            guard p.isRunning, Date() < deadline else { throw NodeTestError("\(d.name) did not start serving: \(try serverLog(d))") }
            usleep(20_000)
        }
    }

    /// SIGTERM to every server; each must exit 0.
    func stopAll() throws {
        for name in servers.keys.sorted() {
            let p = servers.removeValue(forKey: name)!
            p.terminate()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(name) exit status \(p.terminationStatus)")
        }
    }

    /// A loopback port that was free a moment ago, for a `fieldsync serve` started next: see
    /// `LoopbackPort` (one sequence per test process, below the ephemeral range, apart from PostgreSQL's).
    static func freePort() throws -> Int { try LoopbackPort.next() }
}

struct NodeTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Plain POSIX sockets: what an attacker on the LAN would use.
enum RawSocket {
    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return addr
    }

    static func connectTo(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = loopback(port: port)
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        if !ok { close(fd) }
        return ok ? fd : nil
    }

    static func canConnect(_ port: Int) -> Bool {
        guard let fd = connectTo(port) else { return false }
        close(fd)
        return true
    }

    /// Sends `bytes` (stopping early if the peer closes) and waits up to `timeout` seconds for the peer
    /// to close. Returns whether it closed.
    static func sendAndAwaitClose(port: Int, bytes: [UInt8], timeout: Double) throws -> Bool {
        guard let fd = connectTo(port) else { throw NodeTestError("cannot connect to 127.0.0.1:\(port)") }
        defer { close(fd) }
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the node closed (EPIPE / ECONNRESET): what we expect for garbage
            sent += n
        }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { return true }  // orderly close
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { return true }  // reset
        }
        return false
    }
}

/// Behind FIELDSYNC_NETEM=1 (needs root): the backpack's catch-up and HQ's receipt across two Linux
/// network namespaces joined by a veth pair shaped like a rural 4G link (300 ms, 5% loss, 256 kbit/s
/// with `tc netem`). Where the kernel has no netem qdisc, only the rate is shaped (`tc tbf`), and the
/// test says so. Prints bytes and time of each session across the link.
@Suite(.ownThread, .serialized, .enabled(if: ProcessInfo.processInfo.environment["FIELDSYNC_NETEM"] == "1",
                             "set FIELDSYNC_NETEM=1 (root, ip netns and tc)"))
struct NetemTests {
    static func sh(_ args: [String]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        if args.first == "tc" { p.executableURL = URL(fileURLWithPath: "/usr/sbin/tc") }
        p.arguments = args.first == "tc" ? Array(args.dropFirst()) : args
        let e = Pipe()
        p.standardError = e
        p.standardOutput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return (-1, "cannot run \(args)") }
        let err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: err, as: UTF8.self))
    }

    @Test(.timeLimit(.minutes(5))) func catchUpAndReceiptOverARural4GLink() throws {
        let tag = String(getpid() % 100_000)
        let field = "fsfield\(tag)", town = "fstown\(tag)"
        defer {
            _ = Self.sh(["netns", "del", field])
            _ = Self.sh(["netns", "del", town])
        }
        for cmd in [["netns", "add", field], ["netns", "add", town],
                    ["link", "add", "fsf\(tag)", "type", "veth", "peer", "name", "fst\(tag)"],
                    ["link", "set", "fsf\(tag)", "netns", field], ["link", "set", "fst\(tag)", "netns", town],
                    ["-n", field, "addr", "add", "10.77.0.1/24", "dev", "fsf\(tag)"], ["-n", town, "addr", "add", "10.77.0.2/24", "dev", "fst\(tag)"],
                    ["-n", field, "link", "set", "fsf\(tag)", "up"], ["-n", town, "link", "set", "fst\(tag)", "up"],
                    ["-n", field, "link", "set", "lo", "up"], ["-n", town, "link", "set", "lo", "up"]] {
            let (status, err) = Self.sh(cmd)
            try #require(status == 0, "ip \(cmd.joined(separator: " ")): \(err)")
        }
        var shaping = "netem delay 300ms loss 5% rate 256kbit"
        for (ns, dev) in [(field, "fsf\(tag)"), (town, "fst\(tag)")] {
            var (status, err) = Self.sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "300ms", "loss", "5%", "rate", "256kbit"])
            if status != 0 {
                print("tc netem unavailable (\(err.trimmingCharacters(in: .whitespacesAndNewlines))): shaping the rate only with tbf")
                shaping = "tbf rate 256kbit (no delay, no loss: this kernel has no netem)"
                (status, err) = Self.sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", "256kbit", "burst", "4kb", "latency", "2s"])
            }
            try #require(status == 0, "tc on \(ns): \(err)")
        }
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let n = 100
        try w.fill(bp, count: n)
        // The station and HQ are in town; the backpack is in the field, across the shaped link.
        func inNS(_ ns: String, _ args: [String]) throws -> [String] { ["netns", "exec", ns, try ProcessWorld.binary] + args }
        func launch(_ ns: String, _ args: [String], log: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = try inNS(ns, args)
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            p.standardOutput = h
            p.standardError = h
            try p.run()
            return p
        }
        func syncAcross(_ ns: String, _ from: ProcessWorld.Device, _ host: String, _ to: ProcessWorld.Device) throws -> [String: Any] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = try inNS(ns, ["sync", "\(host):\(to.port)"] + w.args(from) + ["--json", "--idle-timeout", "60"])
            let o = Pipe()
            p.standardOutput = o
            p.standardError = FileHandle.nullDevice
            try p.run()
            let out = o.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (try? JSONSerialization.jsonObject(with: out) as? [String: Any]) ?? ["finished": false]
        }
        var servers = [try launch(town, ["serve"] + w.args(st) + ["--listen", "10.77.0.2:\(st.port)"], log: st.dir + "/serve.log"),
                       try launch(town, ["serve"] + w.args(hq) + ["--listen", "127.0.0.1:\(hq.port)"], log: hq.dir + "/serve.log")]
        defer { for s in servers where s.isRunning { s.terminate(); s.waitUntilExit() } }
        usleep(1_500_000)  // both listeners up (they cannot be probed from this namespace)
        func report(_ what: String, _ r: [String: Any]) {
            print("netem [\(shaping)] \(what): finished \(r["finished"] ?? "?"), sent \(r["changesSent"] ?? 0), received \(r["changesReceived"] ?? 0), "
                  + "\(r["bytesOut"] ?? 0) B out, \(r["bytesIn"] ?? 0) B in, \(r["durationMs"] ?? 0) ms")
        }
        let up = try syncAcross(field, bp, "10.77.0.2", st)
        report("backpack -> station, \(n) changes", up)
        #expect(up["finished"] as? Bool == true && up["changesSent"] as? Int == n, "\(up)")
        // One process per store: the station stops serving to connect out to HQ (twice: it brings the
        // changes, then picks up HQ's receipt), then serves again.
        servers[0].terminate()
        servers[0].waitUntilExit()
        for round in 1...2 {
            let r = try syncAcross(town, st, "127.0.0.1", hq)
            #expect(r["finished"] as? Bool == true, "station -> HQ \(round): \(r)")
        }
        servers[0] = try launch(town, ["serve"] + w.args(st) + ["--listen", "10.77.0.2:\(st.port)"], log: st.dir + "/serve.log")
        usleep(1_500_000)
        let down = try syncAcross(field, bp, "10.77.0.2", st)
        report("backpack <- station, HQ's receipt", down)
        #expect(down["finished"] as? Bool == true && down["changesReceived"] as? Int == 1, "\(down)")
        for s in servers { s.terminate(); s.waitUntilExit() }
        if down["changesReceived"] as? Int != 1 { print("HQ log:\n\(try w.serverLog(hq))\nstation log:\n\(try w.serverLog(st))") }
        let log = LogID(author: bp.id, scope: ProcessTests.village)
        #expect(try w.open(bp).receipted(log) == UInt64(n))
        #expect(try w.open(hq).records(RecordQuery()).count == n)
    }
}
