import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The attack harness (issue 13, "Prove it"). The node under test is a real `fieldsync serve` process (a
/// station with a SQLite store, discovery on, default limits) on 127.0.0.1; an honest backpack node in
/// this process syncs with it again and again (one new change each time), first with no attacker, then
/// under each attack alone, all together, and with no attacker again. The attackers run in this process
/// too, never in the node's: they connect from other loopback addresses (127.0.1.x and up, as hosts of
/// their own on a LAN) with plain sockets. Figures: honest success rate, p50 and p95 latency against the
/// quiet phase of the same run, and the node process's CPU time, resident memory and open descriptors
/// (read from `/proc/<pid>`).
func attackBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "attack", summary: "a fieldsync serve process under slowloris (200 conns), handshake flood, garbage, forged beacons, symbol flood, maximal frames, all together: honest syncs vs quiet") { scale in
            try attackHarness(rounds: max(10, Int(60 * scale)), limitUnprovenHandshakes: true,
                              phases: [(Attack.busyRig.rawValue, [.busyRig])] + Attack.attacks.map { ($0.rawValue, [$0]) }
                                + [("all together", Attack.attacks)])
        },
        Benchmark(name: "attack-unlimited", summary: "the handshake flood and all attacks together against a node with no handshake rate limit for unproven sources (before that fix)") { scale in
            try attackHarness(rounds: max(10, Int(60 * scale)), limitUnprovenHandshakes: false,
                              phases: [(Attack.handshakeFlood.rawValue, [.handshakeFlood]), ("all together", Attack.attacks)])
        },
    ]
}

/// How many nice steps the attackers' threads run below this process (the node and the honest peer):
/// `FIELDSYNC_ATTACK_NICE`, default 0. On a shared 2-core machine run the bench as root under a real-time
/// policy, `chrt -f 10 nice -n -20 fieldsync-bench attack`: the node and the honest peer then get a core
/// whenever they are ready (as if the attackers were hosts of their own on the LAN) and the attackers,
/// which leave the real-time policy, still get the CPU the other processes on the machine leave (docs/benchmarks.md).
private let attackerNice: Int32 = ProcessInfo.processInfo.environment["FIELDSYNC_ATTACK_NICE"].flatMap { Int32($0) } ?? 0

/// One attacker: loops on threads of its own until stopped, counting what it did.
private final class Attacker: @unchecked Sendable {
    /// The count under which each thread adds the CPU time it used, in microseconds.
    static let cpuMicroseconds = "attacker CPU us"
    private let lock = NSLock()
    private var running = true
    private var threads: [Thread] = []
    private var counts: [String: Int] = [:]

    var isRunning: Bool { lock.withLock { running } }
    /// Counts one `what` (e.g. a connection opened).
    func count(_ what: String = "connections", _ n: Int = 1) { lock.withLock { counts[what, default: 0] += n } }
    subscript(what: String) -> Int { lock.withLock { counts[what] ?? 0 } }
    var all: [String: Int] { lock.withLock { counts } }

    func spawn(_ body: @escaping @Sendable (Attacker) -> Void) {
        let t = Thread {
            // An attacker on the LAN runs on a machine of its own, not on the node's cores: here its
            // threads yield the CPU to the node and the honest peer by `attackerNice` steps.
            // (On Linux the nice value is per thread, and `who` 0 is the calling thread.) When the bench
            // runs under a real-time policy (`chrt -f`, docs/benchmarks.md), the attackers leave it, so
            // the node and the honest peer get a core whenever they are ready, as with a LAN attacker.
            var param = sched_param()
            if sched_getscheduler(0) != SCHED_OTHER { sched_setscheduler(0, Int32(SCHED_OTHER), &param) }
            let which = __priority_which_t(PRIO_PROCESS.rawValue)
            if attackerNice != 0 { setpriority(which, 0, getpriority(which, 0) + attackerNice) }
            body(self)
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            self.count(Attacker.cpuMicroseconds, ts.tv_sec * 1_000_000 + ts.tv_nsec / 1_000)
        }
        t.stackSize = 1 << 20
        lock.withLock { threads.append(t) }
        t.start()
    }

    func stop() {
        lock.withLock { running = false }
        while lock.withLock({ threads.contains { !$0.isFinished } }) { usleep(10_000) }
    }
}

/// Plain POSIX sockets: what an attacker on the LAN uses.
private enum Raw {
    static func address(_ host: String, _ port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr(host)
        a.sin_port = UInt16(port).bigEndian
        return a
    }

    static func bind(_ fd: Int32, _ host: String, _ port: Int = 0) -> Bool {
        var local = address(host, port)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return withUnsafePointer(to: &local) { l in
            l.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A TCP connection from `source` to 127.0.0.1:`port` (sends and receives time out after 1 s).
    static func connect(_ port: Int, from source: String) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var remote = address("127.0.0.1", port)
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let ok = bind(fd, source) && withUnsafePointer(to: &remote) { r in
            r.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        if !ok { close(fd) }
        return ok ? fd : nil
    }

    @discardableResult
    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    /// The next frame from `fd` (nil if the peer closed or nothing came within the receive timeout).
    static func frame(_ fd: Int32, _ decoder: inout FrameDecoder) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let f = try? decoder.next() { return f }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return nil }
            decoder.append(buffer[0..<n])
        }
    }

    static func closed(_ fd: Int32) -> Bool {
        var b: UInt8 = 0
        let n = recv(fd, &b, 1, Int32(MSG_DONTWAIT) | Int32(MSG_PEEK))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    /// A UDP datagram from `source` to 127.0.0.1:`port`.
    static func datagram(_ bytes: [UInt8], to port: Int, from fd: Int32) {
        var remote = address("127.0.0.1", port)
        _ = withUnsafePointer(to: &remote) { r in
            r.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
    }

    static func random(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }
}

/// What the attackers know: the node's address and discovery port, the network's public parameters (its
/// name and root public key: enough to forge beacons, as without a discovery secret), and, for the
/// symbol flood, an enrolled device gone hostile.
private struct Target: @unchecked Sendable {
    var port: Int
    var discoveryPort: Int
    var beacons: BeaconCodec
    var insider: DeviceIdentity
    var trust: TrustStore
    var network: NetworkParameters
}

/// The attacks, each started on threads of its own against the node.
private enum Attack: String, CaseIterable {
    case slowloris, handshakeFlood = "handshake flood", garbage, forgedBeacons = "forged beacons", symbolFlood = "symbol flood"
    case maximalFrames = "maximal frames"
    /// A control, not an attack: one attacker thread that only burns CPU (at the attackers' priority) and
    /// never touches the node. What it costs the honest syncs is what the test rig's own CPU use costs on
    /// this machine, not the node's handling of anything.
    case busyRig = "control: busy attacker thread without traffic"

    /// The real attacks (all but the control).
    static let attacks = allCases.filter { $0 != .busyRig }

    func start(_ t: Target) -> Attacker {
        let a = Attacker()
        let port = t.port
        switch self {
        case .slowloris:
            // 200 connections from 50 addresses (4 each): `ff ff`, then a byte a second; reopened when cut.
            a.spawn { a in
                var fds: [(Int32, String)] = (0..<200).compactMap { i in
                    let src = "127.0.1.\(1 + i % 50)"
                    guard let fd = Raw.connect(port, from: src) else { return nil }
                    a.count()
                    Raw.send(fd, [0xFF, 0xFF])
                    return (fd, src)
                }
                while a.isRunning {
                    for i in fds.indices {
                        let (fd, src) = fds[i]
                        if Raw.closed(fd) || !Raw.send(fd, [0x42]) {
                            close(fd)
                            if let n = Raw.connect(port, from: src) {
                                a.count()
                                Raw.send(n, [0xFF, 0xFF])
                                fds[i] = (n, src)
                            }
                        }
                    }
                    for _ in 0..<10 where a.isRunning { usleep(100_000) }
                }
                fds.forEach { close($0.0) }
            }
        case .handshakeFlood:
            // Valid-looking handshake message 1 (an ephemeral key, version 1) from 50 addresses, as fast as
            // the node takes them: each costs the node a key agreement and a message 2.
            for th in 0..<2 {
                a.spawn { a in
                    var i = 0
                    while a.isRunning {
                        i += 1
                        guard let fd = Raw.connect(port, from: "127.0.2.\(1 + (i * 2 + th) % 50)") else { continue }
                        a.count()
                        let e = X25519.SecretKey.generate().publicKey.bytes
                        Raw.send(fd, FrameDecoder.frame(e + [NetworkParameters.protocolVersion]))
                        close(fd)
                    }
                }
            }
        case .garbage:
            a.spawn { a in
                var i = 0
                while a.isRunning {
                    i += 1
                    guard let fd = Raw.connect(port, from: "127.0.3.\(1 + i % 50)") else { continue }
                    a.count()
                    Raw.send(fd, [0x01, 0x00] + Raw.random(256))
                    close(fd)
                }
            }
        case .forgedBeacons:
            // Ten tarpits (listeners that accept and never answer), each announced every 200 ms by forged
            // beacons from its own address; and every second 256 beacons from one more host, each naming
            // another port, to fill the node's peer table.
            a.spawn { a in
                var pits: [(listener: Int32, udp: Int32, port: Int)] = []
                for i in 0..<10 {
                    let host = "127.0.5.\(10 + i)"
                    let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), u = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
                    var addr = Raw.address(host, 0)
                    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
                    guard Raw.bind(l, host), Raw.bind(u, host), listen(l, 64) == 0,
                          withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(l, $0, &len) } }) == 0
                    else { close(l); close(u); continue }
                    _ = fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK)
                    pits.append((l, u, Int(UInt16(bigEndian: addr.sin_port))))
                }
                let spam = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
                _ = Raw.bind(spam, "127.0.5.200")
                var held: [Int32] = []
                var tick = 0
                while a.isRunning {
                    for pit in pits {
                        Raw.datagram(t.beacons.encode(Beacon(port: UInt16(pit.port), nonce: SecureRandom.bytes(16))), to: t.discoveryPort, from: pit.udp)
                        a.count("beacons")
                    }
                    if tick % 5 == 0 {
                        for p in 0..<256 {
                            Raw.datagram(t.beacons.encode(Beacon(port: UInt16(20_000 + p), nonce: SecureRandom.bytes(16))), to: t.discoveryPort, from: spam)
                        }
                        a.count("beacons", 256)
                    }
                    tick += 1
                    for pit in pits {
                        while true {
                            let fd = accept(pit.listener, nil, nil)
                            guard fd >= 0 else { break }
                            held.append(fd)
                            a.count("probes")
                        }
                    }
                    held.removeAll { fd in
                        guard Raw.closed(fd) else { return false }
                        close(fd)
                        return true
                    }
                    usleep(200_000)
                }
                held.forEach { close($0) }
                pits.forEach { close($0.listener); close($0.udp) }
                close(spam)
            }
        case .symbolFlood:
            // An enrolled backpack gone hostile: a real handshake, a hello announcing 100,000 elements, then
            // batches of 2,000 random coded symbols until the node cuts it; again and again.
            a.spawn { a in
                var i = 0
                var rng = SystemRandomNumberGenerator()
                while a.isRunning {
                    i += 1
                    guard let fd = Raw.connect(port, from: "127.0.6.\(1 + i % 50)") else { continue }
                    defer { close(fd) }
                    a.count()
                    do {
                        var hs = SessionHandshake(initiator: true, identity: t.insider, trust: t.trust, network: t.network)
                        guard Raw.send(fd, FrameDecoder.frame(try hs.write())) else { continue }
                        var frames = FrameDecoder()
                        guard let m2 = Raw.frame(fd, &frames) else { continue }
                        try hs.read(m2, now: UInt64(Date().timeIntervalSince1970 * 1000))
                        guard Raw.send(fd, FrameDecoder.frame(try hs.write())) else { continue }
                        var transport = try hs.transport()
                        a.count("handshakes")
                        func message(_ m: ReconMessage) throws -> [UInt8] {
                            var w = ByteWriter()
                            w.writeByte(1)  // SessionMessage.recon (Protocols/sync.md)
                            m.encode(to: &w)
                            return FrameDecoder.frame(try transport.seal(w.bytes))
                        }
                        let salt = SecureRandom.bytes(16)
                        guard Raw.send(fd, try message(.hello(Hello(elementCount: 100_000, digest: Array(repeating: 0, count: 16), salt: salt))))
                        else { continue }
                        var index: UInt64 = 0
                        while a.isRunning, !Raw.closed(fd) {
                            let symbols = (0..<2_000).map { _ in
                                CodedSymbol(sum: HeadElement(high: rng.next(), low: rng.next()), checksum: rng.next(), count: 7)
                            }
                            guard Raw.send(fd, try message(.symbols(SymbolBatch(firstIndex: index, symbols: symbols)))) else { break }
                            a.count("symbols", 2_000)
                            index += 2_000
                        }
                    } catch {
                        a.count("handshake errors")
                    }
                }
            }
        case .maximalFrames:
            // A maximal frame (65,535 bytes) and 64 KiB more, again and again.
            let payload = [0xFF, 0xFF] + Raw.random(65_535 + 65_536)
            a.spawn { a in
                var i = 0
                while a.isRunning {
                    i += 1
                    guard let fd = Raw.connect(port, from: "127.0.4.\(1 + i % 50)") else { continue }
                    a.count()
                    Raw.send(fd, payload)
                    close(fd)
                }
            }
        case .busyRig:
            a.spawn { a in
                var x: UInt64 = 1
                while a.isRunning {
                    for _ in 0..<100_000 { x = x &* 6_364_136_223_846_793_005 &+ 1 }
                    a.count("busy loops")
                }
                if x == 0 { print("") }  // keeps the loop from being optimised away
            }
        }
        return a
    }
}

/// The node process seen from outside: CPU time, resident memory and open descriptors, from `/proc`.
private final class NodeProcess: @unchecked Sendable {
    let pid: Int32
    private let lock = NSLock()
    private var peak = (rss: 0.0, fds: 0)
    private var sampling = true
    private var thread: Thread?

    init(pid: Int32) {
        self.pid = pid
        let t = Thread { [self] in
            while lock.withLock({ sampling }) {
                let (rss, fds) = (self.statusBytes("VmRSS"), self.openDescriptors)
                lock.withLock { peak = (max(peak.rss, rss), max(peak.fds, fds)) }
                usleep(50_000)
            }
        }
        t.start()
        thread = t
    }

    /// The peaks since the last call (and resets them).
    func takePeaks() -> (rss: Double, fds: Int) {
        lock.withLock {
            defer { peak = (0, 0) }
            return peak
        }
    }

    func stop() {
        lock.withLock { sampling = false }
        while thread?.isFinished == false { usleep(10_000) }
    }

    /// A `/proc/<pid>/status` field in kB, as bytes (`VmRSS`, `VmHWM`).
    func statusBytes(_ field: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }

    var openDescriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0 }

    /// User and system CPU seconds of the process so far.
    var cpuSeconds: Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

private struct AttackError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

private func freeLoopbackPort(udp: Bool = false) throws -> Int {
    let fd = socket(AF_INET, Int32((udp ? SOCK_DGRAM : SOCK_STREAM).rawValue), 0)
    defer { close(fd) }
    var addr = Raw.address("127.0.0.1", 0)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw AttackError("cannot bind a loopback port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The node's Prometheus text, or "" if the endpoint does not answer.
private func scrape(_ port: Int) -> String {
    guard let fd = Raw.connect(port, from: "127.0.0.1") else { return "" }
    defer { close(fd) }
    guard Raw.send(fd, Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)) else { return "" }
    var text = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        text += buffer[0..<n]
    }
    return String(decoding: text, as: UTF8.self)
}

/// - Parameters:
///   - limitUnprovenHandshakes: false: the node runs with `sessions.unprovenHandshakesPerSource` 0 (no
///     rate limit for sources that never authenticated), as before that limit existed.
///   - phases: the attack phases, run after a quiet one and followed by "quiet again".
private func attackHarness(rounds: Int, limitUnprovenHandshakes: Bool, phases attackPhases: [(String, [Attack])]) throws -> [BenchResult] {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("fieldsync").path
    guard FileManager.default.isExecutableFile(atPath: exe) else {
        throw AttackError("attack needs the fieldsync binary next to fieldsync-bench (\(exe)); build it: swift build -c release --product fieldsync")
    }
    let base = NSTemporaryDirectory() + "fieldsync-attack-\(Hex.encode(SecureRandom.bytes(4)))"
    defer { try? FileManager.default.removeItem(atPath: base) }
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let station = try Scope("longnan/wudu/station-017"), village = try Scope("longnan/wudu/station-017/village-0412")
    let root = Ed25519.SecretKey.generate()
    let authority = Authority(root: root)
    let trust = TrustStore(root: root.publicKey)
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    var serial: UInt64 = 0
    func device(_ role: Role) throws -> DeviceIdentity {
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [station],
                                        createdAt: now, label: "\(role)")
        serial += 1
        let cert = try authority.enroll(req, role: role, scopes: [station], notBefore: now - 60_000, notAfter: now + 86_400_000, serial: serial)
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }
    let key = EpochKey.generate(scope: station, epoch: 1)
    let stationID = try device(.station), backpackID = try device(.backpack), insider = try device(.backpack)

    // The node under test: `fieldsync serve` with its keystore, an epoch key file and discovery on loopback.
    let dir = base + "/station"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    try Keystore.createKeyFile(at: dir + "/device.key")
    try Keystore.write(KeystoreContents(signingKey: stationID.signingKey, agreementKey: stationID.agreementKey,
                                        certificate: stationID.certificate, root: root.publicKey),
                       to: dir + "/device.keystore", protection: .keyFile(path: dir + "/device.key"))
    let keyFile = base + "/station.epochkey"
    let hex = key.key.withUnsafeBytes { Hex.encode(Array($0)) }
    guard FileManager.default.createFile(atPath: keyFile, contents: Data("\(station) 1 \(hex)\n".utf8), attributes: [.posixPermissions: 0o600]) else {
        throw AttackError("cannot write \(keyFile)")
    }
    let port = try freeLoopbackPort(), discoveryPort = try freeLoopbackPort(udp: true), metricsPort = try freeLoopbackPort()
    let logFile = base + "/serve.log"
    _ = FileManager.default.createFile(atPath: logFile, contents: nil)
    let serve = Process()
    serve.executableURL = URL(fileURLWithPath: exe)
    var configArgs: [String] = []
    if !limitUnprovenHandshakes {
        let config = base + "/serve.json"
        let json = #"{ "device": { "dir": "\#(dir)" }, "store": { "path": "\#(dir)/store.sqlite" }, "sessions": { "unprovenHandshakesPerSource": 0 } }"#
        guard FileManager.default.createFile(atPath: config, contents: Data(json.utf8)) else { throw AttackError("cannot write \(config)") }
        configArgs = ["--config", config]
    }
    serve.arguments = ["serve"] + configArgs + ["--dir", dir, "--key-file", dir + "/device.key", "--store", dir + "/store.sqlite", "--epoch-key-file", keyFile,
                       "--listen", "127.0.0.1:\(port)", "--discovery-port", "\(discoveryPort)", "--discovery-destination", "127.0.0.1",
                       "--metrics-listen", "127.0.0.1:\(metricsPort)"]
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
    serve.standardOutput = log
    serve.standardError = log
    try serve.run()
    defer { if serve.isRunning { serve.terminate(); serve.waitUntilExit() } }
    let started = Date()
    while !(Raw.connect(port, from: "127.0.0.1").map { close($0); return true } ?? false) {
        guard serve.isRunning, Date().timeIntervalSince(started) < 60 else { throw AttackError("fieldsync serve did not start (\(logFile))") }
        usleep(20_000)
    }
    let node = NodeProcess(pid: serve.processIdentifier)
    defer { node.stop() }

    let network = NetworkParameters(networkID: "longnan-police")
    let backpack = try FieldSyncNode(configuration: NodeConfiguration(network: network)) {
        let r = Replicator(identity: backpackID, trust: trust, store: MemoryStore())
        r.addKey(key)
        return r
    }
    defer { try? blocking { try await backpack.shutdown() } }
    let target = Target(port: port, discoveryPort: discoveryPort, beacons: try BeaconCodec(networkID: network.networkID, root: root.publicKey),
                        insider: insider, trust: trust, network: network)

    /// `rounds` honest syncs, each bringing one new change; latencies in ms of those that finished.
    func honest() throws -> (ok: Int, latencies: [Double], failures: [String]) {
        var ok = 0
        var latencies: [Double] = []
        var failures: [String] = []
        for i in 0..<rounds {
            try blocking {
                try await backpack.withReplicator { r in
                    let t = UInt64(Date().timeIntervalSince1970 * 1000)
                    var clock = r.clock
                    var g = SystemRandomNumberGenerator()
                    let e = Incident.create(id: RecordID.random(using: &g), scope: village, author: r.identity.id, hlc: try clock.now(wall: t),
                                            category: .dispute, priority: .normal, location: Location(latitude: 33.4, longitude: 104.9),
                                            summary: "honest \(i)", reportedAt: Int64(t), reporter: "walk-in")
                    _ = try r.write([e], scope: village, priority: .normal, now: t)
                }
            }
            let start = ContinuousClock.now
            let result = Result { try blocking { try await backpack.sync(host: "127.0.0.1", port: port) } }
            let d = ContinuousClock.now - start
            if case let .success(r) = result, r.isFinished, r.changesSent == 1 {
                ok += 1
                latencies.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) * 1e-15)
            } else {
                failures.append("\(result)")
            }
            usleep(50_000)
        }
        return (ok, latencies, failures)
    }
    func percentile(_ xs: [Double], _ p: Double) -> Double {
        guard !xs.isEmpty else { return .infinity }
        let s = xs.sorted()
        return s[min(s.count - 1, max(0, Int((Double(s.count) * p).rounded(.up)) - 1))]
    }
    /// Waits (at most 10 s) until the node holds no more descriptors than it did when quiet.
    func settle(to quietFDs: Int) {
        let deadline = Date().addingTimeInterval(10)
        while node.openDescriptors > quietFDs, Date() < deadline { usleep(100_000) }
    }

    struct Phase {
        var name: String
        var ok: Int, p50: Double, p95: Double
        var cpu: Double, rss: Double, fds: Int
        var seconds: Double
        var attackers: [String: Int]
        var attackerCPU: Double
    }
    func run(_ name: String, _ attacks: [Attack]) throws -> Phase {
        let attackers = attacks.map { $0.start(target) }
        if !attacks.isEmpty { usleep(1_000_000) }  // let the attack settle
        _ = node.takePeaks()
        let cpu0 = node.cpuSeconds, t0 = Date()
        let h = try honest()
        let cpu = node.cpuSeconds - cpu0, seconds = Date().timeIntervalSince(t0)
        let peaks = node.takePeaks()
        attackers.forEach { $0.stop() }
        var counts: [String: Int] = [:]
        for a in attackers { for (k, v) in a.all { counts[k, default: 0] += v } }
        let attackerCPU = Double(counts.removeValue(forKey: Attacker.cpuMicroseconds) ?? 0) / 1e6
        if !h.failures.isEmpty { print("  \(name): \(h.failures.count) honest sync(s) failed: \(h.failures.prefix(3))") }
        return Phase(name: name, ok: h.ok, p50: percentile(h.latencies, 0.5), p95: percentile(h.latencies, 0.95), cpu: cpu,
                     rss: peaks.rss, fds: peaks.fds, seconds: seconds, attackers: counts, attackerCPU: attackerCPU)
    }

    _ = try run("warm-up", [])
    let quietFDs = node.openDescriptors
    let quiet = try run("quiet", [])
    var phases = [quiet]
    // FIELDSYNC_ATTACK_ONLY="symbol flood,all together" runs only the named phases (to profile one).
    let only = ProcessInfo.processInfo.environment["FIELDSYNC_ATTACK_ONLY"].map { Set($0.split(separator: ",").map(String.init)) }
    for (name, attacks) in attackPhases.filter({ only?.contains($0.0) ?? true }) + [("quiet again", [])] {
        settle(to: quietFDs)
        phases.append(try run(name, attacks))
    }
    let hwm = node.statusBytes("VmHWM")
    let metrics = scrape(metricsPort).split(separator: "\n").filter {
        ($0.hasPrefix("fieldsync_connections_refused_total") || $0.hasPrefix("fieldsync_connections_cut_total")) && !$0.hasSuffix(" 0")
    }
    node.stop()
    serve.terminate()
    serve.waitUntilExit()
    let logBytes = (try? FileManager.default.attributesOfItem(atPath: logFile)[.size] as? Int) ?? 0

    let policy = sched_getscheduler(0) == SCHED_OTHER ? "the normal policy" : "a real-time policy (chrt), attackers the normal one"
    print("  node and honest peer under \(policy); attackers \(attackerNice) nice steps below them (FIELDSYNC_ATTACK_NICE)")
    print("  | phase | attacker activity | attacker CPU | honest syncs | p50 | p95 | p95 vs quiet | node CPU | node peak RSS | node peak fds |")
    print("  |---|---|---|---|---|---|---|---|---|---|")
    for p in phases {
        let activity = p.attackers.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print(String(format: "  | %@ | %@ | %.2f s | %d/%d | %.1f ms | %.1f ms | %.2f | %.2f s in %.1f s | %.1f MiB | %d |", p.name, activity.isEmpty ? "none" : activity, p.attackerCPU,
                     p.ok, rounds, p.p50, p.p95, p.p95 / quiet.p95, p.cpu, p.seconds, p.rss / 1_048_576, p.fds))
    }
    print(String(format: "  node: peak resident memory (VmHWM) %.1f MiB; %d B of log; descriptors when quiet %d", hwm / 1_048_576, logBytes, quietFDs))
    for line in metrics { print("  node metric: \(line)") }

    var results: [BenchResult] = []
    for p in phases.dropFirst() {
        results.append(BenchResult(name: "\(p.name): honest syncs finished", value: Double(p.ok), baseline: Double(rounds), unit: "syncs",
                                   baselineName: "attempted", goal: ">= 1"))
        results.append(BenchResult(name: "\(p.name): honest sync p50 latency", value: p.p50, baseline: quiet.p50, unit: "ms", baselineName: "quiet p50"))
        results.append(BenchResult(name: "\(p.name): honest sync p95 latency", value: p.p95, baseline: quiet.p95, unit: "ms",
                                   baselineName: "quiet p95", goal: "<= 2"))
        results.append(BenchResult(name: "\(p.name): node peak resident memory", value: p.rss / 1_048_576, baseline: quiet.rss / 1_048_576,
                                   unit: "MiB", baselineName: "quiet"))
    }
    results.append(BenchResult(name: "node peak resident memory over the run (VmHWM)", value: hwm / 1_048_576, baseline: quiet.rss / 1_048_576,
                               unit: "MiB", baselineName: "quiet phase peak"))
    return results
}
