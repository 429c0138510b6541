import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

/// Benchmarks of whole sync sessions over in-memory pipes.
func sessionBenchmarks() -> [Benchmark] {
    [
        Benchmark(name: "session-overhead", summary: "bytes on the wire to transfer m missing changes vs their own bytes") { scale in
            try sessionOverhead(m: max(100, Int(1_000 * scale)))
        },
        Benchmark(name: "session-cut", summary: "contact cut at random on a 64 kbit/s, 500 ms link: changes delivered vs link capacity") { scale in
            try sessionCut(trials: max(5, Int(30 * scale)))
        },
        Benchmark(name: "session-cpu", summary: "handshake + in-sync reconciliation CPU vs the bare libsodium operations they perform") { _ in
            try sessionCPU()
        },
    ]
}

/// A small PKI and two replicas of one station.
private struct Pair {
    let a: Replicator
    let b: Replicator
    static let now: UInt64 = 1_717_200_000_000
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")

    init() throws {
        let root = Ed25519.SecretKey.generate()
        let hq = Authority(root: root)
        let trust = TrustStore(root: root.publicKey)
        func node(_ role: Role) throws -> Replicator {
            let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role,
                                            requestedScopes: [Self.station], createdAt: Self.now, label: "bench")
            let cert = try hq.enroll(req, role: role, scopes: [Self.station], notBefore: Self.now - 86_400_000,
                                     notAfter: Self.now + 30 * 86_400_000, serial: 1)
            return Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert), trust: trust,
                              store: MemoryStore())
        }
        a = try node(.backpack)
        b = try node(.station)
        let key = EpochKey.generate(scope: Self.station, epoch: 1)
        a.addKey(key)
        b.addKey(key)
    }

    func write(_ n: Int) throws -> Int {
        var payloadBytes = 0
        for i in 0..<n {
            let e = typicalIncidentEdit(seed: UInt64(i))
            let edit = RecordEdit(record: e.record, kind: e.kind, scope: Self.village, author: a.identity.id, hlc: e.hlc,
                                  creates: true, actions: e.actions)
            payloadBytes += try a.write([edit], scope: Self.village, priority: .normal, now: Self.now + UInt64(i)).encodedBytes.count
        }
        return payloadBytes
    }

    func sessions(seed: UInt64) -> (SyncSession, SyncSession) {
        var g = SplitMix64(seed: seed)
        let salt = { (g: inout SplitMix64) in (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) } }
        let net = NetworkParameters(networkID: "longnan-police")
        return (SyncSession(initiator: true, replicator: a, configuration: SessionConfiguration(network: net, salt: salt(&g)), now: Self.now),
                SyncSession(initiator: false, replicator: b, configuration: SessionConfiguration(network: net, salt: salt(&g)), now: Self.now))
    }
}

/// Runs two sessions to completion; returns the bytes each way.
private func drive(_ x: SyncSession, _ y: SyncSession) -> (Int, Int) {
    var ab = 0, ba = 0
    var toY = x.start().frames, toX = y.start().frames
    while !toY.isEmpty || !toX.isEmpty {
        let (forY, forX) = (toY, toX)
        (toY, toX) = ([], [])
        for f in forY { ab += f.bytes.count; toX += y.receive(f.bytes, now: Pair.now).frames }
        for f in forX { ba += f.bytes.count; toY += x.receive(f.bytes, now: Pair.now).frames }
    }
    return (ab, ba)
}

private func sessionOverhead(m: Int) throws -> [BenchResult] {
    let pair = try Pair()
    let payload = try pair.write(m)
    let (x, y) = pair.sessions(seed: 1)
    let (ab, ba) = drive(x, y)
    let received = try pair.b.store.status().changes
    precondition(x.isFinished && y.isFinished && received == m)
    return [BenchResult(name: "transfer \(m) changes (handshake, reconciliation, batches, acks, framing, AEAD)",
                        value: Double(ab + ba), baseline: Double(payload), unit: "bytes",
                        baselineName: "the changes' own bytes", goal: "<= 1.10")]
}

/// A 64 kbit/s link with 500 ms one-way latency, cut at a random moment: a change counts as delivered
/// when the batch carrying it is applied. The baseline is what the link could carry in that time.
private func sessionCut(trials: Int) throws -> [BenchResult] {
    let bytesPerSecond = 8_000.0, latency = 0.5
    var delivered = 0.0, capacity = 0.0
    var rng = SplitMix64(seed: 5)
    for t in 0..<trials {
        let pair = try Pair()
        let changeBytes = try pair.write(300)
        let perChange = Double(changeBytes) / 300
        let (x, y) = pair.sessions(seed: UInt64(t))
        let cutAt = Double.random(in: 5...60, using: &rng)  // seconds into the contact
        // Simulate time: each side's bytes are serialized at the link rate and arrive `latency` later.
        var clock = [0.0, 0.0]  // when each direction's link is next free
        var queue: [(arrival: Double, to: Int, bytes: [UInt8])] = []
        var now = 0.0
        func flush(_ out: SessionOutput, _ dir: Int) {
            for b in out.frames.map(\.bytes) {
                let start = max(clock[dir], now)
                let end = start + Double(b.count) / bytesPerSecond
                clock[dir] = end
                queue.append((end + latency, 1 - dir, b))
            }
        }
        flush(x.start(), 0)
        flush(y.start(), 1)
        while !queue.isEmpty {
            queue.sort { $0.arrival < $1.arrival }
            let next = queue.removeFirst()
            if next.arrival > cutAt { break }
            now = next.arrival
            flush((next.to == 1 ? y : x).receive(next.bytes, now: Pair.now), next.to == 1 ? 1 : 0)
        }
        delivered += Double(try pair.b.store.status().changes)
        capacity += min(300, max(0, (cutAt - 3 * latency) * bytesPerSecond / perChange))  // minus handshake and reconciliation; at most all
    }
    return [BenchResult(name: "changes delivered before random cuts (\(trials) contacts, 5-60 s)", value: delivered / Double(trials),
                        baseline: capacity / Double(trials), unit: "changes/contact",
                        baselineName: "link capacity after three one-way latencies, in changes")]
}

private func sessionCPU() throws -> [BenchResult] {
    let pair = try Pair()
    _ = try pair.write(200)
    let (x0, y0) = pair.sessions(seed: 9)
    _ = drive(x0, y0)  // now in sync
    let session = secondsPerIteration(minimumSeconds: 0.5) {
        let (x, y) = pair.sessions(seed: 10)
        _ = drive(x, y)
        precondition(x.isFinished)
    }
    // The same public-key work done bare: 4 X25519 (two per side for XX: ee plus es/se, and key gen),
    // 2 certificate signature checks.
    let k1 = X25519.SecretKey.generate(), k2 = X25519.SecretKey.generate()
    let cert = pair.a.identity.certificate
    let rootKey = pair.a.trust.root
    let bare = secondsPerIteration(minimumSeconds: 0.5) {
        for _ in 0..<2 {
            blackHole(try! k1.sharedSecret(with: k2.publicKey))
            blackHole(try! k2.sharedSecret(with: k1.publicKey))
            blackHole(try! k1.sharedSecret(with: k2.publicKey))
            blackHole(X25519.SecretKey.generate())
            try? cert.verifySignature(issuerKey: rootKey)
        }
    }
    return [BenchResult(name: "one in-sync session, both sides (handshake + reconciliation + done)", value: session * 1e3,
                        baseline: bare * 1e3, unit: "ms", baselineName: "bare X25519 and Ed25519 operations")]
}
