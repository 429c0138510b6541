import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The catch-up benchmark: real `fieldsync` processes on loopback. A backpack unit's store holding
/// `changes` incidents (built in-process) is pushed by `fieldsync sync` to a station running
/// `fieldsync serve` with an empty store, which receives everything. Baselines measured in the same run:
/// the store's own ingest of the same changes (`ingest` benchmark's method: `Replicator.ingest` into a
/// fresh `SQLiteStore`, 500 per batch, verification on a second thread; issue 13 asks catch-up for at
/// least 0.7 of it) and the same number of bytes copied over a plain TCP socket. A second catch-up to a
/// fresh station measures how fast the busy station answers `fieldsync status` and another peer's
/// session, against the same probes on the quiet station.
func catchupBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "catchup", summary: "100,000 changes between two fieldsync processes on loopback vs the store's ingest, a TCP copy; status and session latency while busy") { scale in
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
    func enroll(_ name: String, _ role: Role, scope: Scope) throws -> (dir: String, identity: DeviceIdentity) {
        let dir = base + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [scope],
                                        createdAt: now, label: name)
        let cert = try authority.enroll(req, role: role, scopes: [scope], notBefore: now - 60_000, notAfter: now + 86_400_000, serial: 1)
        try Keystore.createKeyFile(at: dir + "/device.key")
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: root.publicKey),
                           to: dir + "/device.keystore", protection: .keyFile(path: dir + "/device.key"))
        return (dir, DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert))
    }
    let source = try enroll("backpack", .backpack, scope: station)
    let sinks = try [enroll("station", .station, scope: station), enroll("station-probed", .station, scope: station)]
    // Another station's backpack: it shares no records with this station, so its sessions are a
    // handshake and a reconciliation (another peer being answered), not a second catch-up.
    let probe = try enroll("probe", .backpack, scope: try Scope("longnan/wudu/station-018"))
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
    var produced: [Change] = []
    produced.reserveCapacity(n)
    for i in 0..<n {
        let e = typicalIncidentEdit(seed: UInt64(i))
        let hlc = HLCTimestamp(milliseconds: now - UInt64(n - i), counter: 0)
        let edit = RecordEdit(record: e.record, kind: e.kind, scope: village, author: source.identity.id, hlc: hlc, creates: true,
                              actions: e.actions)
        payloadBytes += ChangeBody(edits: [edit]).canonicalBytes.count
        let c = try writer.write([edit], scope: village, priority: .normal, now: now)
        changeBytes += c.encodedBytes.count
        produced.append(c)
        if produced.count % 2_000 == 0 || i == n - 1 {
            let report = try reader.ingest(Array(produced[(produced.count - 1) / 2_000 * 2_000..<produced.count]), now: now)
            guard report.rejected == 0 else { throw BenchError("source store: \(report.rejected) changes rejected") }
        }
    }
    print(String(format: "  (source store of %d changes built in %.1f s)", n, seconds(ContinuousClock.now - built)))

    // Baseline: the store's own ingest of the same changes, in this process, now.
    let ingest = try ingestRate(produced, certificate: source.identity.certificate, root: root.publicKey, key: key,
                                identity: sinks[0].identity, dir: base)

    // The station serves; the backpack pushes its backlog with one `sync`.
    func serve(_ sink: (dir: String, identity: DeviceIdentity)) throws -> (Process, Int) {
        let port = try benchFreePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["serve", "--dir", sink.dir, "--key-file", sink.dir + "/device.key", "--store", sink.dir + "/store.sqlite",
                       "--epoch-key-file", keyFile, "--listen", "127.0.0.1:\(port)"]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while !benchCanConnect(port) {
            guard p.isRunning, Date() < deadline else { throw BenchError("fieldsync serve did not start") }
            usleep(20_000)
        }
        return (p, port)
    }
    func startPush(_ port: Int) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["sync", "127.0.0.1:\(port)", "--dir", source.dir, "--key-file", source.dir + "/device.key",
                       "--store", source.dir + "/store.sqlite", "--epoch-key-file", keyFile, "--json"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        return (p, out)
    }
    func finishPush(_ p: Process, _ out: Pipe) throws -> (seconds: Double, wire: Int) {
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard let r = try JSONSerialization.jsonObject(with: data) as? [String: Any], r["finished"] as? Bool == true,
              let sent = r["changesSent"] as? Int, let bytesIn = r["bytesIn"] as? Int, let bytesOut = r["bytesOut"] as? Int,
              let ms = r["durationMs"] as? Int else {
            throw BenchError("the sync did not finish: \(String(decoding: data, as: UTF8.self))")
        }
        guard sent == n else { throw BenchError("sent \(sent) of \(n) changes") }
        return (Double(ms) / 1000, bytesIn + bytesOut)
    }

    // 1. The catch-up alone. CPU: both processes' user and system time (reaped children's rusage).
    let cpu0 = childCPUSeconds()
    let (station1, port1) = try serve(sinks[0])
    defer { if station1.isRunning { station1.terminate(); station1.waitUntilExit() } }
    let (push1, out1) = try startPush(port1)
    let (sessionSeconds, wire) = try finishPush(push1, out1)
    let cpuPush = childCPUSeconds() - cpu0
    station1.terminate()
    station1.waitUntilExit()
    let cpuStation = childCPUSeconds() - cpu0 - cpuPush
    // The station's store transactions: a batch holds at most 60,000 bytes (about 80 of these changes);
    // batches verified and ready together are committed in one (docs/node.md, "Threading").
    let stationCommits = try SQLiteStore(path: sinks[0].dir + "/store.sqlite",
                                         sealer: try StorageKeySealer(deviceSigningKey: sinks[0].identity.signingKey)).commitCount()
    print(String(format: "  the station's store: %llu write transactions for %d changes (%.1f changes each)",
                 stationCommits, n, Double(n) / Double(max(1, stationCommits))))
    let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
    print(String(format: "  catch-up: %d changes in %.2f s, %.0f changes/s; the store's ingest of the same changes: %.0f changes/s; ratio %.3f",
                 n, sessionSeconds, Double(n) / sessionSeconds, ingest.rate, Double(n) / sessionSeconds / ingest.rate))
    print(String(format: "  CPU per change: receiving station %.0f us, sending backpack %.0f us (processes' whole lives), ingest %.0f us; "
                 + "on %.0f cores the catch-up can reach at most %.0f changes/s", 1e6 * cpuStation / Double(n), 1e6 * cpuPush / Double(n),
                 1e6 * ingest.cpuPerChange, cores, cores * Double(n) / (cpuStation + cpuPush)))

    // 2. Probes of a station, quiet, then during a catch-up: `fieldsync status` and another peer's session.
    let (station2, port2) = try serve(sinks[1])
    defer { if station2.isRunning { station2.terminate(); station2.waitUntilExit() } }
    let statusArgs = ["status", "--dir", sinks[1].dir, "--key-file", sinks[1].dir + "/device.key", "--store", sinks[1].dir + "/store.sqlite", "--json"]
    let sessionArgs = ["sync", "127.0.0.1:\(port2)", "--dir", probe.dir, "--key-file", probe.dir + "/device.key",
                       "--store", probe.dir + "/store.sqlite", "--json"]
    func probeOnce(_ args: [String]) throws -> Double {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        let t = ContinuousClock.now
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw BenchError("`fieldsync \(args[0])` failed (\(p.terminationStatus)) while probing") }
        return seconds(ContinuousClock.now - t)
    }
    var quiet: (status: [Double], session: [Double]) = ([], [])
    for _ in 0..<10 {
        quiet.status.append(try probeOnce(statusArgs))
        quiet.session.append(try probeOnce(sessionArgs))
    }
    let (push2, out2) = try startPush(port2)
    var busy: (status: [Double], session: [Double]) = ([], [])
    usleep(300_000)  // past the handshake and reconciliation: the batches are flowing
    while push2.isRunning {
        busy.status.append(try probeOnce(statusArgs))
        guard push2.isRunning else { break }
        busy.session.append(try probeOnce(sessionArgs))
    }
    let (probedSeconds, _) = try finishPush(push2, out2)
    print(String(format: "  with probes: catch-up took %.2f s (%.0f changes/s); %d status and %d session probes during it",
                 probedSeconds, Double(n) / probedSeconds, busy.status.count, busy.session.count))
    guard !busy.status.isEmpty, !busy.session.isEmpty else { throw BenchError("the catch-up ended before any probe ran: use more changes") }

    // Baseline: the same bytes over a plain TCP socket on loopback, now.
    let plain = try plainTCPCopy(bytes: wire)
    let rate = Double(n) / sessionSeconds
    return [
        BenchResult(name: "catch-up of \(n) changes, changes per second (session time \(String(format: "%.2f", sessionSeconds)) s)", value: rate,
                    baseline: ingest.rate, unit: "changes/s", baselineName: "the store's ingest of the same changes, this run", goal: ">= 0.7"),
        BenchResult(name: "CPU per change, both processes (receiving station + sending backpack)", value: 1e6 * (cpuStation + cpuPush) / Double(n),
                    baseline: 1e6 * ingest.cpuPerChange, unit: "us", baselineName: "the store's ingest (both threads)"),
        BenchResult(name: "catch-up of \(n) changes, session time", value: sessionSeconds, baseline: plain, unit: "s",
                    baselineName: "plain TCP copy of the same \(wire) bytes"),
        BenchResult(name: "`fieldsync status` during a catch-up, p50", value: percentile(busy.status, 0.5), baseline: percentile(quiet.status, 0.5),
                    unit: "s", baselineName: "quiet station"),
        BenchResult(name: "`fieldsync status` during a catch-up, p95", value: percentile(busy.status, 0.95), baseline: percentile(quiet.status, 0.95),
                    unit: "s", baselineName: "quiet station"),
        BenchResult(name: "another peer's whole `sync` during a catch-up, p50", value: percentile(busy.session, 0.5),
                    baseline: percentile(quiet.session, 0.5), unit: "s", baselineName: "quiet station"),
        BenchResult(name: "another peer's whole `sync` during a catch-up, p95", value: percentile(busy.session, 0.95),
                    baseline: percentile(quiet.session, 0.95), unit: "s", baselineName: "quiet station"),
        BenchResult(name: "wire bytes per change (both directions)", value: Double(wire) / Double(n), baseline: Double(payloadBytes) / Double(n),
                    unit: "B", baselineName: "plaintext payload per change"),
        BenchResult(name: "wire bytes per change (both directions)", value: Double(wire) / Double(n), baseline: Double(changeBytes) / Double(n),
                    unit: "B", baselineName: "signed sealed change as stored"),
    ]
}

/// The nearest-rank percentile `p` (0...1) of `xs`.
private func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s[min(s.count - 1, max(0, Int((p * Double(s.count)).rounded(.up)) - 1))]
}

/// The `ingest` benchmark's method on `changes`: `Replicator.ingest` into a fresh `SQLiteStore`
/// (`synchronous = FULL`, as the station's), 500 changes per atomic batch, a second thread verifying and
/// opening batch k+1 while this one commits batch k; median of three rounds, changes per second.
private func ingestRate(_ changes: [Change], certificate: Certificate, root: Ed25519.PublicKey, key: EpochKey,
                        identity: DeviceIdentity, dir: String) throws -> (rate: Double, cpuPerChange: Double) {
    let chunks = stride(from: 0, to: changes.count, by: 500).map { Array(changes[$0..<min($0 + 500, changes.count)]) }
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    var rates: [Double] = [], cpu: [Double] = []
    for round in 0..<3 {
        let path = dir + "/ingest-\(round).sqlite"
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let r = Replicator(identity: identity, trust: TrustStore(root: root),
                           store: try SQLiteStore(path: path, sealer: try StorageKeySealer(key: SecretBytes.random(count: 32))))
        r.addKey(key)
        r.learn(certificates: [certificate], now: now)
        let verifier = r.verifier()
        let pipeline = VerifiedPipeline(chunks: chunks) { chunk in verifier.prepare(chunk, now: now) }
        let t = ContinuousClock.now, c0 = selfCPUSeconds()
        var merged = 0
        for i in chunks.indices { merged += try r.ingest(prepared: pipeline.outcomes(i), now: now).editsMerged }
        guard merged == changes.count else { throw BenchError("ingested \(merged) of \(changes.count)") }
        rates.append(Double(changes.count) / seconds(ContinuousClock.now - t))
        cpu.append((selfCPUSeconds() - c0) / Double(changes.count))
    }
    let median = rates.sorted()[1]
    print(String(format: "  the store's ingest of the same changes: %@ changes/s (median %.0f)",
                 rates.map { String(format: "%.0f", $0) }.joined(separator: ", "), median))
    return (median, cpu.sorted()[1])
}

/// User and system CPU seconds of this process (every thread).
private func selfCPUSeconds() -> Double { cpuSeconds(Int32(truncatingIfNeeded: RUSAGE_SELF.rawValue)) }

/// User and system CPU seconds of the child processes waited for so far.
private func childCPUSeconds() -> Double { cpuSeconds(Int32(truncatingIfNeeded: RUSAGE_CHILDREN.rawValue)) }

private func cpuSeconds(_ who: Int32) -> Double {
    var u = rusage()
    getrusage(who, &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
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
