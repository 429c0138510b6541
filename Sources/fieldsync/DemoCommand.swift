// `fieldsync demo`: four real `fieldsync` processes on loopback (HQ, a station, a relay box, a backpack
// unit). The backpack records while cut off, its records travel backpack -> relay -> station -> HQ, and
// HQ's receipt travels back the same way; the relay carries everything and reads nothing.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `fieldsync demo`: the four-process demo by default, `demo crdt` for the in-memory CRDT demo.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a demo: four real fieldsync processes converging (default), or `demo crdt` (in memory).",
        subcommands: [ProcessDemo.self, CRDTDemo.self],
        defaultSubcommand: ProcessDemo.self
    )
}

/// The four-process demo. Every sync is a real `fieldsync` process talking TCP on 127.0.0.1.
struct ProcessDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "processes",
        abstract: "HQ, a station, a relay box and a backpack unit as real processes on loopback (the default demo).",
        discussion: """
            Enrolls four devices under a fresh HQ root in a temporary directory, starts `fieldsync serve` for HQ, the \
            station and the relay box, and runs `fieldsync sync` for every contact. Prints each step; exits 0 only if \
            the relay read nothing and every node ends with the same records and HQ's receipt.
            """
    )

    @Flag(help: "Run the in-memory CRDT demo instead (same as `fieldsync demo crdt`).") var crdt = false
    @Option(help: "Seed for the CRDT demo (with --crdt).") var seed: UInt64 = 2024
    @Option(help: "Keep the demo's files here instead of a temporary directory that is removed at the end.") var keep: String?

    mutating func run() throws {
        if crdt {
            var d = CRDTDemo()
            d.seed = seed
            try d.run()
            return
        }
        let base = keep ?? (NSTemporaryDirectory() + "fieldsync-demo-\(Hex.encode(SecureRandom.bytes(4)))")
        var world = try DemoWorld(base: base)
        defer {
            world.stopAll()
            if keep == nil { try? FileManager.default.removeItem(atPath: base) }
        }
        try world.run()
    }
}

/// One demo device: its files and how to address it.
private struct DemoDevice {
    let name: String
    let dir: String
    let role: Role
    let scopes: [Scope]
    let readsRecords: Bool
    var id = DeviceID(ID128(high: 0, low: 0))
    var port = 0

    var keyFile: String { dir + "/device.key" }
    var store: String { dir + "/store.sqlite" }
    func nodeArgs(epochKeyFile: String) -> [String] {
        ["--dir", dir, "--key-file", keyFile, "--store", store] + (readsRecords ? ["--epoch-key-file", epochKeyFile] : [])
    }
    var spec: ReplicatorSpec { ReplicatorSpec(dir: dir, unlock: .keyFile(path: keyFile), store: store, epochKeyFiles: []) }
}

private struct DemoWorld {
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")
    static let summary = "Boundary dispute between two households"
    static let visitOutcome = "returned from Xinjiang, seeking work"

    let base: String
    let exe: String
    let epochKeyFile: String
    var hq, station, relay, backpack: DemoDevice
    var servers: [String: Process] = [:]
    let started = Date()

    init(base: String) throws {
        self.base = base
        exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        epochKeyFile = base + "/station-017.epochkey"
        func device(_ name: String, _ role: Role, _ scope: String, reads: Bool) throws -> DemoDevice {
            DemoDevice(name: name, dir: base + "/" + name, role: role, scopes: [try Scope(scope)], readsRecords: reads)
        }
        hq = try device("hq", .hq, "longnan", reads: true)
        station = try device("station-017", .station, "longnan/wudu/station-017", reads: true)
        relay = try device("relay-box", .relay, "longnan/wudu", reads: false)
        backpack = try device("backpack-017-a", .backpack, "longnan/wudu/station-017", reads: true)
    }

    mutating func run() throws {
        print("FieldSync demo: four real processes on 127.0.0.1 (files in \(base))")

        step("1. HQ enrolls a station, a relay box and a backpack unit (offline; key files, no passphrases)")
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let root = Ed25519.SecretKey.generate()
        let authority = Authority(root: root)
        for d in [\DemoWorld.hq, \.station, \.relay, \.backpack] {
            self[keyPath: d].id = try enroll(self[keyPath: d], authority: authority, root: root.publicKey)
            self[keyPath: d].port = try freePort()
            let dev = self[keyPath: d]
            print("   \(dev.name.padded) \(dev.role.description.padding(toLength: 8, withPad: " ", startingAt: 0)) \(dev.id)  \(dev.scopes[0])")
        }
        try EpochKeyFile.write(EpochKey.generate(scope: Self.station, epoch: 1), to: epochKeyFile)
        print("   epoch key longnan/wudu/station-017#1 given to HQ, the station and the backpack; NOT to the relay box")

        step("2. HQ and the station start serving; the relay box serves at the village hall")
        for d in [hq, station, relay] { try startServer(d) }

        step("3. The backpack unit, with no coverage, records an incident and a household visit")
        let incident = try run(["incident", "new"] + backpack.nodeArgs(epochKeyFile: epochKeyFile) + [
            "--scope", Self.village.path, "--category", "dispute", "--priority", "high", "--summary", Self.summary,
            "--lat", "33.412", "--lon", "104.951", "--place", "village hall", "--json"])
        let incidentID = (try json(incident)["id"] as? String) ?? "?"
        print("   $ fieldsync incident new ... -> incident \(incidentID)")
        let visit = try run(["visit", "new"] + backpack.nodeArgs(epochKeyFile: epochKeyFile) + [
            "--scope", Self.village.path, "--subject", "household-0412-17", "--visitor", "officer-li",
            "--type", "returning-migrant-worker", "--outcome", Self.visitOutcome, "--follow-up-by", "+7d", "--json"])
        print("   $ fieldsync visit new ... -> visit \((try json(visit)["id"] as? String) ?? "?")")

        step("4. The backpack meets the relay box: fieldsync sync (backpack -> relay)")
        try sync(backpack, to: relay)

        step("5. The relay box leaves the village; what it carries, it cannot read")
        try stopServer(relay)
        let relayList = try run(["list", "--json"] + relay.nodeArgs(epochKeyFile: epochKeyFile))
        let relayRecords = relayList.split(separator: "\n").count
        print("   $ fieldsync list (relay) -> \(relayRecords) records")
        let carried = try relay.spec.open()
        let unopened = try carried.store.unopened(in: nil)
        print("   relay store: \(try carried.store.status().changes) changes held, \(unopened.count) of them sealed to it, " +
              "\(try carried.store.status().records) records")
        for stored in unopened {
            let change = try Change(canonicalBytes: stored.bytes)
            let attempt: String
            do { _ = try change.open(with: carried.allKeys); attempt = "OPENED (a leak!)" } catch { attempt = "\(error.code)" }
            print("   open \(stored.log.scope)#\(stored.seq) with the relay's keys: \(attempt)")
            if attempt.hasPrefix("OPENED") { throw CLIError("the relay opened a change it must not read") }
        }
        for needle in [Self.summary, Self.visitOutcome] {
            let found = try fileContains(relay.store, needle)
            print("   \"\(needle)\" in the relay's SQLite files: \(found ? "FOUND (a leak!)" : "no")")
            if found { throw CLIError("plaintext found in the relay's store") }
        }
        guard relayRecords == 0, unopened.count == 2 else { throw CLIError("the relay should hold 2 sealed changes and 0 records") }

        step("6. The relay box reaches the station: fieldsync sync (relay -> station)")
        try sync(relay, to: station)

        step("7. The station syncs to HQ; HQ writes a receipt after ingesting")
        try stopServer(station)
        try sync(station, to: hq)
        try waitForLog(hq, containing: "receipt ", seconds: 5)
        if let line = try serverLog(hq).split(separator: "\n").last(where: { $0.contains("receipt ") }) {
            print("   HQ log: \(line.split(separator: " ", maxSplits: 1).last ?? "")")
        }

        step("8. HQ's receipt travels back: HQ -> station -> relay -> backpack")
        try sync(station, to: hq)
        try startServer(station)
        try sync(relay, to: station)
        try startServer(relay)
        try sync(backpack, to: relay)
        let log = LogID(author: backpack.id, scope: Self.village)
        let officer = try backpack.spec.open()
        let receipted = try officer.store.receipted(log)
        let written = try officer.store.holdings(of: log).frontier
        print("   backpack: HQ has receipted \(receipted) of its \(written) changes in \(Self.village) -> \"reached HQ\"")

        step("9. All processes stop (SIGTERM); the stores are compared")
        stopAll()
        let states = try [hq, station, backpack].map { d -> (String, [[UInt8]]) in
            let r = try d.spec.open()
            return (d.name, try r.store.records(RecordQuery(includeDeleted: true)).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) })
        }
        for (name, records) in states { print("   \(name.padded) \(records.count) records, state \(digest(records))") }
        let relayNow = try relay.spec.open()
        let relayLogs = try relayNow.store.holdings().filter { $0.key.author == backpack.id }.mapValues(\.frontier)
        let relayReceipt = try relayNow.store.receipted(log)
        print("   \(relay.name.padded) \(try relayNow.store.status().records) records, carries the backpack's log up to #\(relayLogs[log] ?? 0), " +
              "knows HQ receipted #\(relayReceipt)")
        let converged = Set(states.map { digest($0.1) }).count == 1 && states[0].1.count == 2
        let ok = converged && receipted == written && written == 2 && relayReceipt == 2
        print(String(format: "\n%@ (%.1f s)", ok ? "CONVERGED: HQ, station and backpack hold the same 2 records; HQ's receipt reached the backpack; the relay read nothing."
                                                   : "DID NOT CONVERGE", Date().timeIntervalSince(started)))
        if !ok { throw ExitCode.failure }
    }

    // MARK: enrollment and records (in-process, through the library)

    func enroll(_ d: DemoDevice, authority: Authority, root: Ed25519.PublicKey) throws -> DeviceID {
        try FileManager.default.createDirectory(atPath: d.dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let now = wallClockMilliseconds()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: d.role, requestedScopes: d.scopes,
                                        createdAt: now, label: d.name)
        let cert = try authority.enroll(req, role: d.role, scopes: d.scopes, notBefore: now - 60_000, notAfter: now + 86_400_000,
                                        serial: SecureRandom.uint64() >> 1)
        try Keystore.createKeyFile(at: d.keyFile)
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: root),
                           to: d.dir + "/" + DeviceCommand.keystoreName, protection: .keyFile(path: d.keyFile))
        return cert.subject
    }

    // MARK: processes

    func run(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CLIError("`fieldsync \(args.prefix(2).joined(separator: " "))` failed (\(p.terminationStatus)): \(String(decoding: e, as: UTF8.self))")
        }
        return String(decoding: o, as: UTF8.self)
    }

    func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
    }

    func sync(_ from: DemoDevice, to peer: DemoDevice) throws {
        let r = try json(try run(["sync", "127.0.0.1:\(peer.port)"] + from.nodeArgs(epochKeyFile: epochKeyFile) + ["--json"]))
        let n = { (k: String) in (r[k] as? Int) ?? 0 }
        print("   $ fieldsync sync 127.0.0.1:\(peer.port) (\(from.name) -> \(peer.name)): sent \(n("changesSent")) (acked \(n("changesAcknowledged"))), " +
              "received \(n("changesReceived")); \(n("bytesOut")) B out, \(n("bytesIn")) B in, \(n("durationMs")) ms")
        guard r["finished"] as? Bool == true else { throw CLIError("the session did not finish: \(r["error"] ?? "?")") }
    }

    func logPath(_ d: DemoDevice) -> String { d.dir + "/serve.log" }
    func serverLog(_ d: DemoDevice) throws -> String { String(decoding: try Files.read(logPath(d), what: "log"), as: UTF8.self) }

    mutating func startServer(_ d: DemoDevice) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["serve"] + d.nodeArgs(epochKeyFile: epochKeyFile) + ["--listen", "127.0.0.1:\(d.port)"]
        if !FileManager.default.fileExists(atPath: logPath(d)) {
            guard FileManager.default.createFile(atPath: logPath(d), contents: nil) else {
                throw CLIError("cannot create \(logPath(d))")
            }
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath(d)))
        log.seekToEndOfFile()
        p.standardError = log
        p.standardOutput = log
        try p.run()
        servers[d.name] = p
        let deadline = Date().addingTimeInterval(15)
        while !canConnect(d.port) {
            guard p.isRunning, Date() < deadline else { throw CLIError("\(d.name) did not start serving; see \(logPath(d))") }
            usleep(20_000)
        }
        print("   $ fieldsync serve --listen 127.0.0.1:\(d.port)   (\(d.name), pid \(p.processIdentifier))")
    }

    mutating func stopServer(_ d: DemoDevice) throws {
        guard let p = servers.removeValue(forKey: d.name) else { return }
        p.terminate()  // SIGTERM
        p.waitUntilExit()
        print("   \(d.name) (pid \(p.processIdentifier)) stopped by SIGTERM, exit status \(p.terminationStatus)")
        guard p.terminationStatus == 0 else { throw CLIError("\(d.name) exited with \(p.terminationStatus); see \(logPath(d))") }
    }

    mutating func stopAll() {
        for name in servers.keys.sorted() {
            let p = servers.removeValue(forKey: name)!
            p.terminate()
            p.waitUntilExit()
            print("   \(name) (pid \(p.processIdentifier)) stopped, exit status \(p.terminationStatus)")
        }
    }

    func waitForLog(_ d: DemoDevice, containing text: String, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !(try serverLog(d).contains(text)) {
            guard Date() < deadline else { throw CLIError("\(d.name) did not log \"\(text)\" within \(seconds) s; see \(logPath(d))") }
            usleep(20_000)
        }
    }

    func step(_ text: String) { print("\n" + text) }
}

private extension String {
    var padded: String { padding(toLength: 16, withPad: " ", startingAt: 0) }
}

/// Whether `needle`'s UTF-8 bytes occur in the SQLite file or its WAL.
private func fileContains(_ path: String, _ needle: String) throws -> Bool {
    let n = Data(needle.utf8)
    for p in [path, path + "-wal"] where FileManager.default.fileExists(atPath: p) {
        if try Data(contentsOf: URL(fileURLWithPath: p)).range(of: n) != nil { return true }
    }
    return false
}

/// FNV-1a 64 over the sorted canonical records (for display; equality is checked on the bytes' digest).
private func digest(_ records: [[UInt8]]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for r in records {
        for b in r { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xff) &* 0x100_0000_01b3
    }
    return String(h, radix: 16)
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw CLIError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard bound else { throw CLIError("cannot bind a loopback port: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
