import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The attack harness (issue 13, "Prove it"): an in-process station node on 127.0.0.1 serves an honest
/// backpack node that syncs again and again (one new change each time), first with no attacker, then
/// under each attack and all together. Attackers connect from other loopback addresses (127.0.1.x and
/// up, as hosts of their own on a LAN) with plain sockets. Figures: honest success rate, and p95 latency
/// against the quiet phase of the same run; the process's resident memory.
func attackBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "attack", summary: "honest syncs under slowloris (200 conns), handshake flood, garbage, maximal frames, all together vs quiet") { scale in
            try attackHarness(rounds: max(5, Int(30 * scale)))
        },
    ]
}

/// One attacker: a loop on its own thread until stopped.
private final class Attacker: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var threads: [Thread] = []
    private(set) var connections = 0

    var isRunning: Bool { lock.withLock { running } }
    func count() { lock.withLock { connections += 1 } }

    func spawn(_ body: @escaping @Sendable (Attacker) -> Void) {
        let t = Thread { body(self) }
        t.stackSize = 1 << 20
        lock.withLock { threads.append(t) }
        t.start()
    }

    func stop() {
        lock.withLock { running = false }
        while lock.withLock({ threads.contains { !$0.isFinished } }) { usleep(10_000) }
    }
}

private enum Raw {
    static func connect(_ port: Int, from source: String) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_addr.s_addr = inet_addr("127.0.0.1")
        remote.sin_port = UInt16(port).bigEndian
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let ok = withUnsafePointer(to: &local) { l in
            l.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        } && withUnsafePointer(to: &remote) { r in
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

    static func closed(_ fd: Int32) -> Bool {
        var b: UInt8 = 0
        let n = recv(fd, &b, 1, Int32(MSG_DONTWAIT) | Int32(MSG_PEEK))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    static func random(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }
}

/// The attacks, each started on threads of its own against `port`.
private enum Attack: String, CaseIterable {
    case slowloris, handshakeFlood = "handshake flood", garbage, maximalFrames = "maximal frames"

    func start(port: Int) -> Attacker {
        let a = Attacker()
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
                    usleep(1_000_000)
                }
                fds.forEach { close($0.0) }
            }
        case .handshakeFlood:
            // Valid-looking handshake message 1 (an ephemeral key, version 1) from 50 addresses, as fast as
            // the node takes them: each costs the node a key agreement and a message 2.
            for t in 0..<2 {
                a.spawn { a in
                    var i = 0
                    while a.isRunning {
                        i += 1
                        guard let fd = Raw.connect(port, from: "127.0.2.\(1 + (i * 2 + t) % 50)") else { continue }
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
        }
        return a
    }
}

/// Resident memory of this process (VmRSS), bytes.
private func residentBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}

/// Runs `body` (async) to completion from synchronous code.
private func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, any Error>?
    Task {
        do { result = .success(try await body()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try result!.get()
}

private func attackHarness(rounds: Int) throws -> [BenchResult] {
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
    let stationID = try device(.station), backpackID = try device(.backpack)
    let config = NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))
    let node = try FieldSyncNode(configuration: config) {
        let r = Replicator(identity: stationID, trust: trust, store: MemoryStore())
        r.addKey(key)
        return r
    }
    let backpack = try FieldSyncNode(configuration: config) {
        let r = Replicator(identity: backpackID, trust: trust, store: MemoryStore())
        r.addKey(key)
        return r
    }
    let listener = try blocking { try await node.listen(host: "127.0.0.1", port: 0) }
    guard let port = listener.localAddress?.port else { throw ValidationErrorMessage("the station node has no listening port") }
    let rssBefore = residentBytes()

    /// `rounds` honest syncs, each bringing one new change; latencies in ms of those that finished.
    func honest() throws -> (ok: Int, latencies: [Double]) {
        var ok = 0
        var latencies: [Double] = []
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
            let result = try? blocking { try await backpack.sync(host: "127.0.0.1", port: port) }
            let d = ContinuousClock.now - start
            if result?.isFinished == true {
                ok += 1
                latencies.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) * 1e-15)
            }
            usleep(50_000)
        }
        return (ok, latencies)
    }
    func p95(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return .infinity }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count) * 0.95).rounded(.up)) - 1)]
    }

    let quiet = try honest()
    let quietP95 = p95(quiet.latencies)
    var results = [BenchResult(name: "quiet: honest syncs finished", value: Double(quiet.ok), baseline: Double(rounds), unit: "syncs",
                               baselineName: "attempted", goal: ">= 1")]
    var peakRSS = residentBytes()
    let phases: [(String, [Attack])] = Attack.allCases.map { ($0.rawValue, [$0]) } + [("all together", Attack.allCases)]
    for (name, attacks) in phases {
        let attackers = attacks.map { $0.start(port: port) }
        usleep(1_000_000)  // let the attack settle
        let run = try honest()
        peakRSS = max(peakRSS, residentBytes())
        attackers.forEach { $0.stop() }
        let opened = attackers.map(\.connections).reduce(0, +)
        results.append(BenchResult(name: "\(name): honest syncs finished (\(opened) attacker connections)", value: Double(run.ok),
                                   baseline: Double(rounds), unit: "syncs", baselineName: "attempted", goal: ">= 1"))
        results.append(BenchResult(name: "\(name): honest sync p95 latency", value: p95(run.latencies), baseline: quietP95, unit: "ms",
                                   baselineName: "quiet p95", goal: "<= 2"))
        usleep(500_000)
    }
    let counters = try blocking { try await node.loop.submit { node.connectionCounters }.get() }
    print("  node counters: refused \(counters.refused.sorted { $0.key < $1.key }), cut \(counters.cut.sorted { $0.key < $1.key })")
    results.append(BenchResult(name: "resident memory, peak during the attacks (node, honest peer and attackers in one process)",
                               value: peakRSS / 1_048_576, baseline: rssBefore / 1_048_576, unit: "MiB", baselineName: "before the attacks"))
    try blocking {
        try await listener.close()
        try await node.shutdown()
        try await backpack.shutdown()
    }
    return results
}
