// The oracle: lower bounds from the same contact schedule.

/// Earliest-arrival paths in the time-varying contact graph, with unlimited bandwidth and each link's
/// latency, through any node (no entitlement or storage limits): a lower bound for every agent.
///
/// A change written at node `u` at time `t` can cross a contact `[s, e)` of `u` and `v` with latency `l`
/// arriving at `max(t, s) + l` if that is `<= e` (the engine's delivery rule). Label-setting (Dijkstra)
/// over nodes; O(C log N) per change for C contacts.
public struct Oracle {
    private let starts: [SimTime]
    private let ends: [SimTime]
    private let latency: [SimTime]
    private let peer: [NodeIndex]
    private let offsets: [Int]  // CSR adjacency: node -> range in the arrays above
    private let nodes: Int

    /// Builds the contact graph from a run's recorded contacts.
    public init(contacts: [ContactRecord], nodes: Int) {
        self.nodes = nodes
        var degree = Array(repeating: 0, count: nodes + 1)
        for c in contacts {
            degree[Int(c.spec.a) + 1] += 1
            degree[Int(c.spec.b) + 1] += 1
        }
        for i in 0..<nodes { degree[i + 1] += degree[i] }
        offsets = degree
        var fill = degree
        var s = Array(repeating: SimTime(0), count: degree[nodes])
        var e = s, l = s
        var p = Array(repeating: NodeIndex(0), count: degree[nodes])
        for c in contacts {
            for (x, y) in [(c.spec.a, c.spec.b), (c.spec.b, c.spec.a)] {
                let k = fill[Int(x)]
                fill[Int(x)] += 1
                s[k] = c.start
                e[k] = c.end
                l[k] = c.spec.latency
                p[k] = y
            }
        }
        starts = s
        ends = e
        latency = l
        peer = p
    }

    /// Earliest arrival at every node of something present at `source` from `time`; `Int64.max` = never.
    /// - Parameter notBefore: per node, the earliest time it accepts the thing (nil: any time). A change
    ///   dated ahead of a receiver's clock by more than the skew tolerance is refused
    ///   (`timestampInFuture`) and offered again later: it can arrive at that node only once its clock
    ///   has caught up, and can be carried on from there only after that (swarm finding 3).
    /// - Parameter notAfter: per node, the time from which it no longer takes or passes on the thing (nil: never):
    ///   a node that learned the revocation of the change's author quarantines and refuses it; a relay box whose
    ///   store refused it for room (quota) did not take it. A contact carries it from `u` to `v` only if it
    ///   leaves `u` before `notAfter[u]` and arrives at `v` before `notAfter[v]`.
    public func earliestArrival(from source: NodeIndex, at time: SimTime, notBefore: [SimTime]? = nil, notAfter: [SimTime]? = nil) -> [SimTime] {
        var arr = Array(repeating: SimTime.max, count: nodes)
        var done = Array(repeating: false, count: nodes)
        arr[Int(source)] = time
        var heap: [(SimTime, NodeIndex)] = [(time, source)]
        func less(_ x: (SimTime, NodeIndex), _ y: (SimTime, NodeIndex)) -> Bool { x.0 != y.0 ? x.0 < y.0 : x.1 < y.1 }
        while !heap.isEmpty {
            // pop
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                var i = 0
                let n = heap.count
                while true {
                    let l = 2 * i + 1
                    if l >= n { break }
                    let r = l + 1
                    let c = (r < n && less(heap[r], heap[l])) ? r : l
                    if !less(heap[c], last) { break }
                    heap[i] = heap[c]
                    i = c
                }
                heap[i] = last
            }
            let (t, u) = top
            if done[Int(u)] { continue }
            done[Int(u)] = true
            for k in offsets[Int(u)]..<offsets[Int(u) + 1] where ends[k] >= t {
                let v = peer[k]
                let a = max(t, starts[k], (notBefore?[Int(v)] ?? 0) - latency[k]) + latency[k]
                if let na = notAfter, a - latency[k] >= na[Int(u)] || a >= na[Int(v)] { continue }
                if a <= ends[k] && a < arr[Int(v)] {
                    arr[Int(v)] = a
                    heap.append((a, v))
                    var i = heap.count - 1
                    let x = heap[i]
                    while i > 0 {
                        let p = (i - 1) >> 1
                        if !less(x, heap[p]) { break }
                        heap[i] = heap[p]
                        i = p
                    }
                    heap[i] = x
                }
            }
        }
        return arr
    }
}

/// Oracle figures for a run: latency ratios on a seeded sample of changes and the minimal bytes.
public struct OracleReport: Sendable {
    /// Changes sampled.
    public var sampled = 0
    /// (change, entitled replica) pairs compared (both oracle and agent delivered).
    public var pairs = 0
    /// Pairs the oracle reaches but the agent never delivered.
    public var agentMissed = 0
    /// Pairs where the agent beat the oracle (must be 0: a bug otherwise).
    public var violations = 0
    /// Sum of agent latencies over compared pairs (ms).
    public var agentLatencySum: Double = 0
    /// Sum of oracle latencies over compared pairs (ms).
    public var oracleLatencySum: Double = 0
    /// Oracle latency to entitled replicas (ms).
    public var oracleLatency = Histogram()
    /// Minimal bytes: each entitled replica receives each change once.
    public var minimalBytes: Int64 = 0
    /// Bytes the agent moved in total.
    public var agentBytes: Int64 = 0

    /// Agent latency over oracle latency, summed over compared pairs.
    public var latencyRatio: Double { oracleLatencySum > 0 ? agentLatencySum / oracleLatencySum : .nan }
    /// Agent bytes over minimal bytes.
    public var bytesRatio: Double { minimalBytes > 0 ? Double(agentBytes) / Double(minimalBytes) : .nan }
}

extension Simulation {
    /// Compares the run with the oracle on the sampled changes (every change whose index is a multiple of
    /// `RunOptions.oracleSampleEvery`; the engine kept their per-replica arrival times), and computes
    /// the minimal bytes over all changes.
    public func oracleReport() -> OracleReport {
        var rep = OracleReport()
        let ch = context.changes
        let world = context.world
        for i in 0..<ch.count { rep.minimalBytes += Int64(metrics.targets[i]) * Int64(ch.size[i]) }
        rep.agentBytes = metrics.bytesByLink.reduce(0, +)
        guard ch.count > 0, sampleEvery > 0 else { return rep }
        let oracle = Oracle(contacts: contacts, nodes: world.count)
        for i in stride(from: 0, to: ch.count, by: sampleEvery) {
            rep.sampled += 1
            let arr = oracle.earliestArrival(from: ch.author[i], at: ch.createdAt[i])
            for n in world.readers[Int(ch.domain[i])] where n != ch.author[i] {
                let o = arr[Int(n)]
                if o == SimTime.max { continue }
                rep.oracleLatency.record(o - ch.createdAt[i])
                guard let a = sampledArrivals[UInt64(i) << 32 | UInt64(UInt32(bitPattern: n))] else {
                    rep.agentMissed += 1
                    continue
                }
                rep.pairs += 1
                if a < o { rep.violations += 1 }
                rep.agentLatencySum += Double(a - ch.createdAt[i])
                rep.oracleLatencySum += Double(o - ch.createdAt[i])
            }
        }
        return rep
    }
}
