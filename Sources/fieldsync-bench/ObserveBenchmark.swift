import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation

/// Issue 17's observation cost: a store receiving changes by sync (ingest) with 100 record observers
/// registered on it, against the same ingest with none, in the same run; and whether the observers keep
/// up with 1,000 changes per second.
func observeBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "observe", summary: "ingest with 100 record observers vs none; 100 observers at 1,000 changes/s keep up") { scale in
            try runBlocking { try await observeBenchmark(changes: Int(5_000 * scale), observers: 100) }
        },
        Benchmark(name: "app-cycles", summary: "1,000 FieldSyncApp open/close cycles with an observer: memory and descriptors after 100 vs 1,000") { scale in
            try runBlocking { try await appCyclesBenchmark(cycles: Int(1_000 * scale)) }
        },
    ]
}

/// Resident memory of this process in bytes (/proc/self/statm).
private func residentBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return .nan }
    let pages = text.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? .nan
    return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
}

/// Open file descriptors of this process.
private func openDescriptors() -> Double {
    Double((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1)
}

/// Opens and closes an app `cycles` times (each with a record observer iterated by a task, a query and a
/// write): resident memory and open descriptors after all cycles against after the first tenth.
private func appCyclesBenchmark(cycles: Int) async throws -> [BenchResult] {
    let (device, dir) = try benchDevice(name: "cycles")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let config = NodeConfiguration(network: NetworkParameters(networkID: "bench"))
    let village = try Scope("longnan/wudu/station-017/village-0412")
    var early: (rss: Double, fds: Double) = (0, 0)
    for n in 0..<cycles {
        let app = try await FieldSyncApp.open(device: device, configuration: config)
        let stream = app.recordChanges()
        let watcher = Task { for await _ in stream {} }
        _ = try await app.createIncident(IncidentDraft(scope: village, category: .traffic, summary: "cycle \(n)",
                                                        location: Location(latitude: 33.4, longitude: 104.9)))
        _ = try await app.records(RecordQuery(limit: 1))
        await app.close(grace: .zero)
        await watcher.value
        if n + 1 == max(1, cycles / 10) { early = (residentBytes(), openDescriptors()) }
    }
    let late = (rss: residentBytes(), fds: openDescriptors())
    return [
        BenchResult(name: "resident memory after \(cycles) open/close cycles", value: late.rss / 1_048_576, baseline: early.rss / 1_048_576,
                    unit: "MiB", baselineName: "after \(max(1, cycles / 10))"),
        BenchResult(name: "open descriptors after \(cycles) open/close cycles", value: late.fds, baseline: early.fds,
                    unit: "fds", baselineName: "after \(max(1, cycles / 10))"),
    ]
}

/// An enrolled station device in a new temporary directory (key-file keystore, the station's epoch key).
private func benchDevice(name: String) throws -> (FieldSyncDevice, String) {
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    let rootKey = Ed25519.SecretKey.generate()
    let station = try Scope("longnan/wudu/station-017")
    let dir = NSTemporaryDirectory() + "fieldsync-\(name)-\(UInt64.random(in: 0...UInt64.max))"
    try FileManager.default.createDirectory(atPath: dir + "/device", withIntermediateDirectories: true)
    let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
    let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .station, requestedScopes: [station],
                                    createdAt: now, label: name)
    let cert = try Authority(root: rootKey).enroll(req, role: .station, scopes: [station], notBefore: now - 86_400_000,
                                                   notAfter: now + 30 * 86_400_000, serial: 1)
    try Keystore.createKeyFile(at: dir + "/device.key")
    try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: rootKey.publicKey,
                                        epochKeys: [EpochKey.generate(scope: station, epoch: 1)]),
                       to: dir + "/device/" + FieldSyncDevice.keystoreName, protection: .keyFile(path: dir + "/device.key"))
    return (FieldSyncDevice(directory: dir + "/device", key: .keyFile(path: dir + "/device.key"), storePath: dir + "/store.sqlite",
                            syncMode: .normal), dir)
}

/// Runs an async body from the synchronous benchmark entry point.
private final class ResultBox<T>: @unchecked Sendable {  // written once by the task, read after the semaphore
    var result: Result<T, any Error>?
}

private func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

private func observeBenchmark(changes n: Int, observers: Int) async throws -> [BenchResult] {
    let now = UInt64(Date().timeIntervalSince1970 * 1000)
    let rootKey = Ed25519.SecretKey.generate()
    let station = try Scope("longnan/wudu/station-017")
    let village = try Scope("longnan/wudu/station-017/village-0412")
    let key = EpochKey.generate(scope: station, epoch: 1)
    let dir = NSTemporaryDirectory() + "fieldsync-observe-\(UInt64.random(in: 0...UInt64.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var serial: UInt64 = 0
    func enroll(_ role: Role, name: String) throws -> (DeviceIdentity, FieldSyncDevice) {
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [station],
                                        createdAt: now, label: name)
        serial += 1
        let cert = try Authority(root: rootKey).enroll(req, role: role, scopes: [station], notBefore: now - 86_400_000,
                                                       notAfter: now + 30 * 86_400_000, serial: serial)
        let deviceDir = "\(dir)/\(name)", keyFile = "\(dir)/\(name).key"
        try FileManager.default.createDirectory(atPath: deviceDir, withIntermediateDirectories: true)
        try Keystore.createKeyFile(at: keyFile)
        try Keystore.write(KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: rootKey.publicKey, epochKeys: [key]),
                           to: "\(deviceDir)/\(FieldSyncDevice.keystoreName)", protection: .keyFile(path: keyFile))
        return (DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert),
                FieldSyncDevice(directory: deviceDir, key: .keyFile(path: keyFile), storePath: "\(dir)/\(name).sqlite", syncMode: .normal))
    }
    // The changes a station receives: one new incident each, sealed by a backpack.
    let (backpack, _) = try enroll(.backpack, name: "bp")
    let author = Replicator(identity: backpack, trust: TrustStore(root: rootKey.publicKey), store: MemoryStore())
    author.addKey(key)
    var produced: [Change] = []
    for i in 0..<(3 * n) {
        let e = typicalIncidentEdit(seed: UInt64(i))
        let edit = RecordEdit(record: e.record, kind: e.kind, scope: village, author: backpack.id, hlc: e.hlc, creates: true, actions: e.actions)
        produced.append(try author.write([edit], scope: village, priority: .normal, now: now + UInt64(i)))
    }
    let certificate = backpack.certificate
    let batch = 10
    let config = NodeConfiguration(network: NetworkParameters(networkID: "bench"))
    let clock = ContinuousClock()
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

    /// Ingests `changes` into a fresh station store in batches of 10 (as sync would), with `watching`
    /// observers consuming every record change; returns the seconds until every observer saw every change.
    func run(_ name: String, _ changes: ArraySlice<Change>, watching: Int, pacedPerSecond: Int? = nil) async throws -> (seconds: Double, lagMs: Double) {
        let (_, device) = try enroll(.station, name: name)
        let app = try await FieldSyncApp.open(device: device, configuration: config)
        let expected = changes.count
        var counters: [Task<Int, Never>] = []
        for _ in 0..<watching {
            let stream = app.recordChanges(bufferingNewest: expected)
            counters.append(Task {
                var seen = 0
                for await _ in stream {
                    seen += 1
                    if seen == expected { break }
                }
                return seen
            })
        }
        let start = clock.now
        var i = changes.startIndex
        var sent = 0
        while i < changes.endIndex {
            let slice = Array(changes[i..<min(i + batch, changes.endIndex)])
            let t = Double(UInt64(Date().timeIntervalSince1970 * 1000))
            _ = try await app.perform { book in try book.replicator.ingest(slice, certificates: [certificate], now: UInt64(t)) }
            i += slice.count
            sent += slice.count
            if let rate = pacedPerSecond {
                let due = start + .milliseconds(sent * 1000 / rate)
                if clock.now < due { try await Task.sleep(until: due, clock: clock) }
            }
        }
        let written = clock.now
        var total = 0
        for c in counters { total += await c.value }
        let end = clock.now
        precondition(total == watching * expected, "observers saw \(total) of \(watching * expected) changes")
        await app.close()
        return (seconds(end - start), seconds(end - written) * 1000)
    }

    // Unpaced: the cost of observation against ingest alone, interleaved rounds, medians.
    var bare: [Double] = [], observed: [Double] = []
    for round in 0..<3 {
        let slice = produced[(round * n)..<((round + 1) * n)]
        bare.append(try await run("bare\(round)", slice, watching: 0).seconds)
        observed.append(try await run("observed\(round)", slice, watching: observers).seconds)
    }
    func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
    // Paced at 1,000 changes per second for n changes: how long after the last commit the observers have seen all.
    let paced = try await run("paced", produced[0..<n], watching: observers, pacedPerSecond: 1_000)
    let pacedBare = try await run("pacedbare", produced[0..<n], watching: 0, pacedPerSecond: 1_000)
    return [
        BenchResult(name: "ingest of \(n) changes with \(observers) record observers", value: Double(n) / median(observed),
                    baseline: Double(n) / median(bare), unit: "changes/s", baselineName: "no observer"),
        BenchResult(name: "\(observers) observers at 1,000 changes/s: seconds to deliver \(n) changes", value: paced.seconds,
                    baseline: pacedBare.seconds, unit: "s", baselineName: "no observer"),
        BenchResult(name: "\(observers) observers at 1,000 changes/s: lag after the last commit", value: paced.lagMs,
                    baseline: pacedBare.lagMs, unit: "ms", baselineName: "no observer"),
    ]
}
