import FieldSyncCore
import FieldSyncProtocol
import Foundation

/// Reconciliation benchmarks (issue 5): bytes and round trips until both sides know exactly which
/// change ranges to send, for the rateless-IBLT head reconciliation against two baselines computed in
/// the same run on the same data:
/// (a) the full compact head vector, both directions at once (Yjs state vector / cr-sqlite style):
///     varint count, then per log an 8-byte log tag and a varint height;
/// (b) range-based set reconciliation over (author, seq) record ids in the style of negentropy V1:
///     items sorted by (timestamp = logIndex·2^32 + seq, 32-byte id); 16 buckets per split; ranges
///     of fewer than 32 items sent as an IdList of 32-byte ids; 16-byte fingerprints; bounds as
///     varint timestamp deltas plus an id-prefix length (always 0 here: timestamps are unique);
///     version byte 0x61; trailing skips omitted; no frame-size limit. The fingerprint function is a
///     sum of 64-bit item hashes padded to 16 bytes instead of SHA-256 (same size on the wire).
func reconcileBenchmarks() -> [Benchmark] {
    [
        Benchmark(
            name: "riblt-cpu",
            summary: "rateless IBLT CPU: encode n elements and peel d differences vs one keyed-checksum pass over the set"
        ) { scale in
            ribltCPUBenchmark(scale: scale)
        },
        Benchmark(
            name: "reconcile",
            summary: "log-head RIBLT reconciliation bytes/round trips vs full head vector and negentropy-style RBSR"
        ) { scale in
            try reconcileBenchmark(scale: scale)
        },
    ]
}

// MARK: - Scenario

private struct Scenario {
    var changes: Int
    var logs: Int
    var differing: Int
    /// Records each differing log is ahead by on side A.
    var ahead: UInt32 = 5

    var label: String { "n=\(changes) A=\(logs) k=\(differing)" }
}

private func logID(_ i: Int) -> LogID {
    let scopes = ["longnan/wudu/station-017", "longnan/cheng/station-002", "longnan/wenxian"]
    return LogID(author: DeviceID(ID128(high: 0xB000_0000_0000_0000 | UInt64(i / 3), low: UInt64(i) &* 0x9E37_79B9_7F4A_7C15)),
                 scope: try! Scope(scopes[i % 3]))
}

private func changeHash(_ log: Int, _ seq: UInt32) -> [UInt8] {
    var rng = SplitMix64(seed: UInt64(log) << 32 | UInt64(seq))
    return (0..<4).flatMap { _ -> [UInt8] in
        let v = rng.next()
        return (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(8 * $0)) }
    }
}

/// Heights of side B (the base) and side A (k logs ahead), procedurally, summing to about `changes`.
private func heights(_ s: Scenario, seed: UInt64) -> (a: [UInt32], b: [UInt32]) {
    var rng = SplitMix64(seed: seed)
    let mean = max(1, s.changes / s.logs)
    let b = (0..<s.logs).map { _ in UInt32(1 + Int(rng.next() % UInt64(2 * mean - 1))) }
    var a = b
    var order = Array(0..<s.logs)
    order.shuffle(using: &rng)
    for i in order.prefix(s.differing) { a[i] += s.ahead }
    return (a, b)
}

private func holdings(_ h: [UInt32]) -> Holdings {
    Holdings(h.enumerated().map { LogHoldings(log: logID($0.offset), height: $0.element, headHash: changeHash($0.offset, $0.element)) })
}

// MARK: - Our protocol, two reconcilers in memory

private struct SessionFigures {
    var bytes: Int
    var halfTrips: Int
    var differences: Int
    var symbols: Int
}

private func runSession(_ a: Holdings, _ b: Holdings, seed: UInt64) throws -> SessionFigures {
    var rng = SplitMix64(seed: seed)
    let key = (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    let keys = SipHashReconciliationHashing(sessionKey: key)
    var i = Reconciler(role: .initiator, holdings: a, hashing: keys, salt: (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    var r = Reconciler(role: .responder, holdings: b, hashing: keys, salt: (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
    var figures = SessionFigures(bytes: 0, halfTrips: 0, differences: 0, symbols: 0)
    var results: [ReconciliationResult] = []
    func sends(_ outs: [ReconOutput]) -> [ReconMessage] {
        outs.compactMap { o in
            switch o {
            case let .send(m): return m
            case let .finished(res):
                results.append(res)
                return nil
            }
        }
    }
    var toR = sends(i.start())
    var toI = sends(r.start())
    while !toR.isEmpty || !toI.isEmpty {
        figures.halfTrips += 1
        var nextI: [ReconMessage] = []
        var nextR: [ReconMessage] = []
        for m in toR {
            let wire = m.canonicalBytes
            figures.bytes += wire.count
            if case let .symbols(batch) = m { figures.symbols += batch.symbols.count }
            nextI += sends(try r.receive(try ReconMessage(canonicalBytes: wire)))
        }
        for m in toI {
            let wire = m.canonicalBytes
            figures.bytes += wire.count
            nextR += sends(try i.receive(try ReconMessage(canonicalBytes: wire)))
        }
        toR = nextR
        toI = nextI
    }
    precondition(results.count == 2 && results[0].differences.count == results[1].differences.count)
    figures.differences = results[0].differences.count
    return figures
}

// MARK: - Baseline (a): full compact head vector

private func fullVectorBytes(_ h: [UInt32]) -> Int {
    var w = ByteWriter()
    w.writeVarint(UInt64(h.count))
    for (i, height) in h.enumerated() {
        w.writeUInt64BE(UInt64(i) &* 0x9E37_79B9_7F4A_7C15)  // 8-byte log tag
        w.writeVarint(UInt64(height))
    }
    return w.bytes.count
}

// MARK: - Baseline (b): negentropy-style range-based set reconciliation

private struct RBSRStore {
    var timestamps: [UInt64] = []
    var hashes: [UInt64] = []
    /// fingerprintPrefix[i] = sum of hashes[0..<i] mod 2^64.
    var prefix: [UInt64] = [0]

    init(heights: [UInt32]) {
        let n = heights.reduce(0) { $0 + Int($1) }
        timestamps.reserveCapacity(n)
        hashes.reserveCapacity(n)
        prefix.reserveCapacity(n + 1)
        for (log, h) in heights.enumerated() where h > 0 {
            for seq in 1...h {
                let ts = UInt64(log) << 32 | UInt64(seq)
                var z = ts &+ 0x9E37_79B9_7F4A_7C15
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                timestamps.append(ts)
                hashes.append(z)
                prefix.append(prefix.last! &+ z)
            }
        }
    }

    var count: Int { timestamps.count }

    /// First index in `from..<count` whose timestamp is at least `bound`.
    func lowerBound(_ bound: UInt64, from: Int) -> Int {
        var lo = from, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if timestamps[mid] < bound { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    func fingerprint(_ lo: Int, _ hi: Int) -> UInt64 { (prefix[hi] &- prefix[lo]) ^ UInt64(hi - lo) &* 0x1000_0000_01B3 }
}

private enum RBSRMode: UInt64 { case skip = 0, fingerprint = 1, idList = 2 }

private struct RBSRMessageWriter {
    var w = ByteWriter()
    var lastTimestamp: UInt64 = 0

    mutating func bound(_ ts: UInt64) {
        if ts == .max {
            w.writeVarint(0)
            lastTimestamp = .max
        } else {
            w.writeVarint(ts - lastTimestamp + 1)
            lastTimestamp = ts
        }
        w.writeVarint(0)  // id prefix length: timestamps are unique
    }
}

private struct RBSRParty {
    let store: RBSRStore
    let isInitiator: Bool
    var have = 0
    var need = 0

    func splitRange(_ lo: Int, _ hi: Int, upper: UInt64, _ out: inout RBSRMessageWriter) {
        let n = hi - lo
        let buckets = 16
        if n < buckets * 2 {
            out.bound(upper)
            out.w.writeVarint(RBSRMode.idList.rawValue)
            out.w.writeVarint(UInt64(n))
            for i in lo..<hi {
                out.w.writeUInt64BE(store.hashes[i])
                out.w.writeRaw([UInt8](repeating: 0, count: 24))  // 32-byte ids
            }
            return
        }
        let per = n / buckets, extra = n % buckets
        var curr = lo
        for b in 0..<buckets {
            let size = per + (b < extra ? 1 : 0)
            let fp = store.fingerprint(curr, curr + size)
            curr += size
            out.bound(curr == hi ? upper : store.timestamps[curr])
            out.w.writeVarint(RBSRMode.fingerprint.rawValue)
            out.w.writeUInt64BE(fp)
            out.w.writeUInt64BE(0)  // 16-byte fingerprint
        }
    }

    func initiate() -> [UInt8] {
        var out = RBSRMessageWriter()
        out.w.writeByte(0x61)
        splitRange(0, store.count, upper: .max, &out)
        return out.w.bytes
    }

    /// Processes a message; returns the reply (just the version byte when the initiator is done).
    mutating func reconcile(_ message: [UInt8]) throws -> [UInt8] {
        var r = ByteReader(message)
        let version = try r.readByte()
        precondition(version == 0x61)
        var out = RBSRMessageWriter()
        out.w.writeByte(0x61)
        var lastIn: UInt64 = 0
        var prevIndex = 0
        var prevBound: UInt64 = 0
        var skip = false
        func doSkip(_ out: inout RBSRMessageWriter) {
            if skip {
                skip = false
                out.bound(prevBound)
                out.w.writeVarint(RBSRMode.skip.rawValue)
            }
        }
        while !r.isAtEnd {
            let encoded = try r.readVarint()
            let bound: UInt64
            if encoded == 0 { bound = .max; lastIn = .max } else { bound = lastIn &+ encoded - 1; lastIn = bound }
            _ = try r.readVarint()  // prefix length (0)
            let mode = try r.readVarint()
            let lower = prevIndex
            let upper = store.lowerBound(bound, from: prevIndex)
            switch mode {
            case RBSRMode.skip.rawValue:
                skip = true
            case RBSRMode.fingerprint.rawValue:
                let theirs = try r.readUInt64BE()
                _ = try r.readUInt64BE()
                if theirs == store.fingerprint(lower, upper) {
                    skip = true
                } else {
                    doSkip(&out)
                    splitRange(lower, upper, upper: bound, &out)
                }
            default:
                let n = try r.readVarint()
                var theirs = Set<UInt64>()
                for _ in 0..<n {
                    theirs.insert(try r.readUInt64BE())
                    _ = try r.readRaw(24)
                }
                var mine = Set<UInt64>()
                for i in lower..<upper { mine.insert(store.hashes[i]) }
                if isInitiator {
                    have += mine.subtracting(theirs).count
                    need += theirs.subtracting(mine).count
                    skip = true
                } else {
                    doSkip(&out)
                    out.bound(bound)
                    out.w.writeVarint(RBSRMode.idList.rawValue)
                    out.w.writeVarint(UInt64(upper - lower))
                    for i in lower..<upper {
                        out.w.writeUInt64BE(store.hashes[i])
                        out.w.writeRaw([UInt8](repeating: 0, count: 24))
                    }
                }
            }
            prevIndex = upper
            prevBound = bound
        }
        return out.w.bytes
    }
}

private struct RBSRFigures {
    var bytes: Int
    var roundTrips: Int
    var recordsFound: Int
}

private func runRBSR(_ a: [UInt32], _ b: [UInt32]) throws -> RBSRFigures {
    var client = RBSRParty(store: RBSRStore(heights: a), isInitiator: true)
    var server = RBSRParty(store: RBSRStore(heights: b), isInitiator: false)
    var msg = client.initiate()
    var bytes = msg.count
    var trips = 0
    while true {
        let reply = try server.reconcile(msg)
        bytes += reply.count
        trips += 1
        msg = try client.reconcile(reply)
        if msg.count <= 1 { break }
        bytes += msg.count
        precondition(trips < 50)
    }
    return RBSRFigures(bytes: bytes, roundTrips: trips, recordsFound: client.have + client.need)
}

// MARK: - The benchmark

private func reconcileBenchmark(scale: Double) throws -> [BenchResult] {
    var results: [BenchResult] = []
    let clock = ContinuousClock()
    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
    var table = ["| n | A | k | ours B | ours RTT | symbols | full vector B | RBSR B | RBSR RTT | ours CPU ms | RBSR CPU ms |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in [10_000, 100_000, 1_000_000] {
        let changes = max(1_000, Int(Double(n) * scale))
        for logs in [1_000, 5_000] {
            for k in [0, 10, 60, 300] {
                let s = Scenario(changes: changes, logs: logs, differing: k)
                let (ha, hb) = heights(s, seed: UInt64(n + logs + k))
                let a = holdings(ha), b = holdings(hb)
                // Ours: median bytes over 5 session keys (salts and keys change every session).
                var runs: [SessionFigures] = []
                let start = clock.now
                for seed in 1...5 { runs.append(try runSession(a, b, seed: UInt64(seed))) }
                let ours = seconds(clock.now - start) / 5
                precondition(runs.allSatisfy { $0.differences == k }, "wrong difference for \(s.label)")
                runs.sort { $0.bytes < $1.bytes }
                let median = runs[2]
                let worstHalfTrips = runs.map(\.halfTrips).max()!
                let vector = 2 * fullVectorBytes(hb)  // both directions
                let rbsrStart = clock.now
                let rbsr = try runRBSR(ha, hb)
                let rbsrTime = seconds(clock.now - rbsrStart)
                precondition(rbsr.recordsFound == k * Int(s.ahead), "RBSR found \(rbsr.recordsFound) records for \(s.label)")
                let goal: String? = k == 0 ? "ours <= 100 B" : (k == 60 && logs == 1_000 ? "ours <= 5000 B, <= 2 RTT" : nil)
                results.append(BenchResult(name: "\(s.label) bytes", value: Double(median.bytes), baseline: Double(rbsr.bytes),
                                           unit: "B", baselineName: "negentropy-style RBSR", goal: goal))
                results.append(BenchResult(name: "\(s.label) bytes", value: Double(median.bytes), baseline: Double(vector),
                                           unit: "B", baselineName: "full head vector", goal: nil))
                results.append(BenchResult(name: "\(s.label) round trips (worst of 5)", value: Double(worstHalfTrips) / 2,
                                           baseline: Double(rbsr.roundTrips), unit: "RTT", baselineName: "RBSR", goal: nil))
                results.append(BenchResult(name: "\(s.label) CPU per session, both sides", value: ours * 1000,
                                           baseline: rbsrTime * 1000, unit: "ms", baselineName: "RBSR", goal: nil))
                table.append(String(format: "| %d | %d | %d | %d | %.1f | %d | %d | %d | %d | %.2f | %.1f |",
                                    changes, logs, k, median.bytes, Double(worstHalfTrips) / 2, median.symbols, vector,
                                    rbsr.bytes, rbsr.roundTrips, ours * 1000, rbsrTime * 1000))
            }
        }
    }
    FileHandle.standardError.write(Data((table.joined(separator: "\n") + "\n").utf8))
    return results
}

// MARK: - Rateless IBLT CPU

/// Encoding cost (symbols for a difference of `d`, produced in one batch as the initiator does) and
/// decoding cost (the responder's own symbols, subtraction and peeling), against one keyed checksum
/// pass over the set (the least any keyed scheme must do).
private func ribltCPUBenchmark(scale: Double) -> [BenchResult] {
    var results: [BenchResult] = []
    let hasher = SipHashElementHasher(key: Array(0..<16))
    for n in [1_000, 5_000, 100_000].map({ max(100, Int(Double($0) * scale)) }) {
        for d in [120, 300, 1_000] {
            var rng = SplitMix64(seed: UInt64(n + d))
            let common = (0..<n).map { _ in HeadElement(high: rng.next(), low: rng.next()) }
            let extraA = (0..<d / 2).map { _ in HeadElement(high: rng.next(), low: rng.next()) }
            let extraB = (0..<(d - d / 2)).map { _ in HeadElement(high: rng.next(), low: rng.next()) }
            let a = common + extraA, b = common + extraB
            // Symbols actually needed (batches of 1% so the count is tight).
            var enc = RatelessEncoder(elements: a, hasher: hasher)
            var dec = RatelessDecoder(localElements: b, hasher: hasher)
            while !dec.isDecoded { try! dec.add(enc.nextSymbols(max(1, d / 100))) }
            let m = enc.produced
            let encode = secondsPerIteration(minimumSeconds: 0.05) {
                var e = RatelessEncoder(elements: a, hasher: hasher)
                blackHole(e.nextSymbols(m))
            }
            var source = RatelessEncoder(elements: a, hasher: hasher)
            let symbols = source.nextSymbols(m)
            let decode = secondsPerIteration(minimumSeconds: 0.05) {
                var x = RatelessDecoder(localElements: b, hasher: hasher)
                try! x.add(symbols)
                precondition(x.isDecoded)
                blackHole(x.remoteOnly.count)
            }
            let floor = secondsPerIteration(minimumSeconds: 0.05) {
                var acc: UInt64 = 0
                for e in a { acc ^= hasher.checksum(e) }
                blackHole(acc)
            }
            results.append(BenchResult(name: "n=\(n) d=\(d) encode \(m) symbols (\(String(format: "%.2f", Double(m) / Double(d)))/diff)",
                                       value: encode * 1000, baseline: floor * 1000, unit: "ms", baselineName: "checksum pass", goal: nil))
            results.append(BenchResult(name: "n=\(n) d=\(d) decode (own symbols + subtract + peel)",
                                       value: decode * 1000, baseline: floor * 1000, unit: "ms", baselineName: "checksum pass", goal: nil))
        }
    }
    return results
}
