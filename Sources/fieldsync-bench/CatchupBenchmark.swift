import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The catch-up benchmark: two real `fieldsync` processes on loopback. A backpack unit's store holding
/// `changes` incidents (built in-process) is served by `fieldsync serve`; an empty station runs
/// `fieldsync sync` against it and receives everything. Baseline: the same number of bytes copied over
/// a plain TCP socket on loopback in the same run.
func catchupBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "catchup", summary: "100,000 changes between two fieldsync processes on loopback vs a plain TCP copy of the same bytes") { scale in
            try catchup(changes: max(100, Int(100_000 * scale)))
        },
    ]
}

private func catchup(changes n: Int) throws -> [BenchResult] {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("fieldsync").path
    guard FileManager.default.isExecutableFile(atPath: exe) else {
        throw BenchError("catchup needs the fieldsync binary next to fieldsync-bench (\(exe)); build it: swift build -c release --product fieldsync")
    }
    let base = NSTemporaryDirectory() + "fieldsync-catchup-\(Hex.encode(SecureRandom.bytes(4)))"
    defer { try? FileManager.default.removeItem(atPath: base) }
    try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
    let station = try Scope("longnan/wudu/station-017"), village = try Scope("longnan/wudu/station-017/village-0412")
    let root = Ed25519.SecretKey.generate()
    let authority = Authority(root: root)
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    func enroll(_ name: String, _ role: Role) throws -> (dir: String, identity: DeviceIdentity) {
        let dir = base + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [station],
                                        createdAt: now, label: name)
        let cert = try authority.enroll(req, role: role, scopes: [station], notBefore: now - 60_000, notAfter: now + 86_400_000, serial: 1)
        try Keystore.createKeyFile(at: dir + "/device.key")
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: root.publicKey),
                           to: dir + "/device.keystore", protection: .keyFile(path: dir + "/device.key"))
        return (dir, DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert))
    }
    let source = try enroll("backpack", .backpack)
    let sink = try enroll("station", .station)
    let key = EpochKey.generate(scope: station, epoch: 1)
    let keyFile = base + "/station.epochkey"
    let hex = key.key.withUnsafeBytes { Hex.encode(Array($0)) }
    guard FileManager.default.createFile(atPath: keyFile, contents: Data("\(station) 1 \(hex)\n".utf8), attributes: [.posixPermissions: 0o600]) else {
        throw ValidationErrorMessage("cannot write \(keyFile)")
    }

    // The source store: authored through a memory replicator, ingested into SQLite in batches.
    let built = ContinuousClock.now
    let writer = Replicator(identity: source.identity, trust: TrustStore(root: root.publicKey), store: MemoryStore())
    writer.addKey(key)
    let store = try SQLiteStore(path: source.dir + "/store.sqlite", sealer: try StorageKeySealer(deviceSigningKey: source.identity.signingKey),
                                syncMode: .normal)
    let reader = Replicator(identity: source.identity, trust: TrustStore(root: root.publicKey), store: store)
    reader.addKey(key)
    var payloadBytes = 0, changeBytes = 0
    var pending: [Change] = []
    for i in 0..<n {
        let e = typicalIncidentEdit(seed: UInt64(i))
        let hlc = HLCTimestamp(milliseconds: now - UInt64(n - i), counter: 0)
        let edit = RecordEdit(record: e.record, kind: e.kind, scope: village, author: source.identity.id, hlc: hlc, creates: true,
                              actions: e.actions)
        payloadBytes += ChangeBody(edits: [edit]).canonicalBytes.count
        let c = try writer.write([edit], scope: village, priority: .normal, now: now)
        changeBytes += c.encodedBytes.count
        pending.append(c)
        if pending.count == 2_000 || i == n - 1 {
            let report = try reader.ingest(pending, now: now)
            guard report.rejected == 0 else { throw BenchError("source store: \(report.rejected) changes rejected") }
            pending.removeAll(keepingCapacity: true)
        }
    }
    print(String(format: "  (source store of %d changes built in %.1f s)", n, seconds(ContinuousClock.now - built)))

    // Two processes: the backpack serves, the station syncs once and receives everything.
    let port = try benchFreePort()
    let serve = Process()
    serve.executableURL = URL(fileURLWithPath: exe)
    serve.arguments = ["serve", "--dir", source.dir, "--key-file", source.dir + "/device.key", "--store", source.dir + "/store.sqlite",
                       "--epoch-key-file", keyFile, "--listen", "127.0.0.1:\(port)"]
    serve.standardError = FileHandle.nullDevice
    serve.standardOutput = FileHandle.nullDevice
    try serve.run()
    defer { if serve.isRunning { serve.terminate(); serve.waitUntilExit() } }
    let deadline = Date().addingTimeInterval(60)
    while !benchCanConnect(port) {
        guard serve.isRunning, Date() < deadline else { throw BenchError("fieldsync serve did not start") }
        usleep(20_000)
    }
    let sync = Process()
    sync.executableURL = URL(fileURLWithPath: exe)
    sync.arguments = ["sync", "127.0.0.1:\(port)", "--dir", sink.dir, "--key-file", sink.dir + "/device.key", "--store", sink.dir + "/store.sqlite",
                      "--epoch-key-file", keyFile, "--json"]
    let out = Pipe()
    sync.standardOutput = out
    sync.standardError = FileHandle.nullDevice
    let started = ContinuousClock.now
    try sync.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    sync.waitUntilExit()
    let processSeconds = seconds(ContinuousClock.now - started)
    guard let r = try JSONSerialization.jsonObject(with: data) as? [String: Any], r["finished"] as? Bool == true,
          let received = r["changesReceived"] as? Int, let bytesIn = r["bytesIn"] as? Int, let bytesOut = r["bytesOut"] as? Int,
          let ms = r["durationMs"] as? Int else {
        throw BenchError("the sync did not finish: \(String(decoding: data, as: UTF8.self))")
    }
    guard received == n else { throw BenchError("received \(received) of \(n) changes") }
    let sessionSeconds = Double(ms) / 1000
    let wire = bytesIn + bytesOut

    // Baseline: the same bytes over a plain TCP socket on loopback, now.
    let plain = try plainTCPCopy(bytes: wire)
    return [
        BenchResult(name: "catch-up of \(n) changes, session time", value: sessionSeconds, baseline: plain, unit: "s",
                    baselineName: "plain TCP copy of the same \(wire) bytes"),
        BenchResult(name: "changes per second (session; the sync process took \(String(format: "%.2f", processSeconds)) s in all)",
                    value: Double(n) / sessionSeconds, baseline: Double(n) / plain, unit: "changes/s",
                    baselineName: "plain TCP copy"),
        BenchResult(name: "wire bytes per change (both directions)", value: Double(wire) / Double(n), baseline: Double(payloadBytes) / Double(n),
                    unit: "B", baselineName: "plaintext payload per change"),
        BenchResult(name: "wire bytes per change (both directions)", value: Double(wire) / Double(n), baseline: Double(changeBytes) / Double(n),
                    unit: "B", baselineName: "signed sealed change as stored"),
    ]
}

private struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

private func loopbackAddress(_ port: Int) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return addr
}

private func withSockaddr<T>(_ addr: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>) -> T) -> T {
    withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
}

private func benchFreePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = loopbackAddress(0)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    guard withSockaddr(&addr, { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }) else { throw BenchError("cannot bind") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

private func benchCanConnect(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = loopbackAddress(port)
    return withSockaddr(&addr) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
}

/// Seconds to send `bytes` from one thread to another over a loopback TCP connection (writes of
/// 64 KiB, like the node's largest frames), best of three.
private func plainTCPCopy(bytes: Int) throws -> Double {
    var best = Double.infinity
    for _ in 0..<3 {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = loopbackAddress(0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withSockaddr(&addr, { bind(listener, $0, len) == 0 && getsockname(listener, $0, &len) == 0 }), listen(listener, 1) == 0 else {
            throw BenchError("cannot listen for the plain TCP baseline")
        }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let sender = Thread {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var to = loopbackAddress(port)
            guard withSockaddr(&to, { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }) else { return }
            let chunk = [UInt8](repeating: 0x5A, count: 65_536)
            var left = bytes
            while left > 0 {
                let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, min(left, $0.count), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
                left -= n
            }
            close(fd)
        }
        let started = ContinuousClock.now
        sender.start()
        let conn = accept(listener, nil, nil)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var got = 0
        while got < bytes {
            let n = recv(conn, &buffer, buffer.count, 0)
            if n <= 0 { break }
            got += n
        }
        let t = seconds(ContinuousClock.now - started)
        close(conn)
        close(listener)
        guard got == bytes else { throw BenchError("plain TCP copy received \(got) of \(bytes) bytes") }
        best = min(best, t)
    }
    return best
}
