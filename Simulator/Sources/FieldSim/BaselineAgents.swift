// Baseline agents: model protocols with exact byte accounting by a simple model. They are baselines,
// not FieldSync: they know what the peer holds (global knowledge) and charge a modelled size for it.

/// A message of a baseline agent: 16 bytes, no references.
public struct BaselineMessage: Sendable, Equatable {
    /// Type.
    public var type: MessageType
    /// Hops of the carried change from its author (the receiver's hop count is this + 1).
    public var hops: HopCount
    /// The change carried (for `.change`), else -1.
    public var change: ChangeIndex
    /// Modelled size in bytes (64 bits: a full-state dump of a long run can pass 2 GiB).
    public var bytes: Int64
}

/// Which baseline a `BaselineAgent` runs.
public enum BaselineKind: String, CaseIterable, Sendable {
    /// Ideal epidemic (anti-entropy by summary vector): each side sends a fixed-size summary, then
    /// every change the peer lacks and may carry, most urgent first, one change per message. New
    /// changes are pushed to peers in contact as soon as they arrive.
    case idealEpidemic = "ideal-epidemic"
    /// Full-state exchange: each side sends everything it holds in the scopes the peer may carry as one
    /// dump, applied only when it arrives complete; later writes are pushed one by one.
    case fullState = "full-state"
    /// Full version-vector exchange: like ideal epidemic, but the summary is a full version vector of
    /// (author, log, seq) entries over every log of the shared scopes (24 bytes each), no reconciliation.
    case fullVersionVector = "full-version-vector"
}

/// The baseline agents, one struct parameterised by `BaselineKind` (all three share their state layout).
///
/// Per node it keeps one bitset per carried domain (bit `i` = holds the domain's `i`-th change) and a hop
/// count per held change; per contact direction a small heap of pending change keys. No per-event
/// allocation once arrays have grown.
///
/// A final class rather than a struct: the engine keeps its agent in a class property, and calling a
/// method on a struct stored there copies it (retaining every array) in the hot path.
public final class BaselineAgent: SyncAgent {
    /// Which baseline.
    public let kind: BaselineKind
    /// Modelled size of an epidemic summary (per direction per contact), bytes.
    public let summaryBytes: Int32
    /// Modelled size of one version-vector entry (author 16 + log 4 + seq 4), bytes.
    public let vectorEntryBytes: Int32
    /// Modelled fixed header of a summary or dump, bytes.
    public let headerBytes: Int32

    private let ctx: SimContext
    private var base: [Int32] = []  // node -> first bitset index
    private var bits: [[UInt64]] = []
    private var hops: [[HopCount]] = []
    private var stored: [Int] = []
    private var lost: [Bool] = []
    private var active: [[Int32]] = []  // node -> [slot * 2 + side]
    // Per contact direction (slot * 2 + side).
    private var pending: [[UInt64]] = []
    private var summaryDue: [Bool] = []
    private var peerSummarySeen: [Bool] = []
    private var dump: [[ChangeIndex]] = []
    private var dumpDue: [Bool] = []
    private var links: [LinkHandle] = []

    /// Name used in outputs.
    public var name: String { kind.rawValue }

    /// Creates the agent over `context`.
    public init(_ kind: BaselineKind, context: SimContext, summaryBytes: Int32 = 64, vectorEntryBytes: Int32 = 24,
                headerBytes: Int32 = 16) {
        self.kind = kind
        self.summaryBytes = summaryBytes
        self.vectorEntryBytes = vectorEntryBytes
        self.headerBytes = headerBytes
        ctx = context
        let w = context.world
        var next: Int32 = 0
        for n in 0..<w.count {
            base.append(next)
            next += Int32(w.carried[n].count)
        }
        bits = Array(repeating: [], count: Int(next))
        hops = Array(repeating: [], count: Int(next))
        stored = Array(repeating: 0, count: w.count)
        lost = Array(repeating: false, count: w.count)
        active = Array(repeating: [], count: w.count)
    }

    /// The modelled size of the message.
    public static func wireSize(of message: BaselineMessage) -> Int { Int(message.bytes) }
    /// The message type.
    public static func messageType(of message: BaselineMessage) -> MessageType { message.type }
    /// The change a `.change` message carries.
    public static func change(in message: BaselineMessage) -> ChangeIndex? { message.type == .change ? message.change : nil }

    // MARK: State

    @inline(__always) private func bitset(_ change: ChangeIndex, _ node: NodeIndex) -> (Int, Int)? {
        let d = ctx.changes.domain[Int(change)]
        let s = ctx.world.slot(of: d, at: node)
        if s < 0 { return nil }
        return (Int(base[Int(node)] + s), Int(ctx.changes.localIndex[Int(change)]))
    }

    /// Whether `node` holds `change` (its bit is set).
    public func holds(_ change: ChangeIndex, at node: NodeIndex) -> Bool {
        guard let (b, i) = bitset(change, node) else { return false }
        let w = i >> 6
        return w < bits[b].count && bits[b][w] & (1 << UInt64(i & 63)) != 0
    }

    /// Bytes of changes held at `node`.
    public func storedBytes(at node: NodeIndex) -> Int { stored[Int(node)] }

    /// Marks `change` held at `node` with `h` hops; returns false if it was already held.
    private func set(_ change: ChangeIndex, at node: NodeIndex, hops h: HopCount) -> Bool {
        guard let (b, i) = bitset(change, node) else { preconditionFailure("node does not carry the change's domain") }
        let w = i >> 6
        if w >= bits[b].count {
            let grow = max(w + 1, bits[b].count * 2)
            bits[b].append(contentsOf: repeatElement(0, count: grow - bits[b].count))
        }
        if i >= hops[b].count { hops[b].append(contentsOf: repeatElement(0, count: max(i + 1, hops[b].count * 2) - hops[b].count)) }
        let m: UInt64 = 1 << UInt64(i & 63)
        if bits[b][w] & m != 0 { return false }
        bits[b][w] |= m
        hops[b][i] = h
        stored[Int(node)] += Int(ctx.changes.size[Int(change)])
        return true
    }

    private func hopCount(_ change: ChangeIndex, at node: NodeIndex) -> HopCount {
        guard let (b, i) = bitset(change, node), i < hops[b].count else { return 0 }
        return hops[b][i]
    }

    @inline(__always) private func key(_ change: ChangeIndex) -> UInt64 {
        UInt64(ctx.changes.priority[Int(change)].rawValue) << 56 | UInt64(UInt32(bitPattern: change))
    }

    private func ensureSlot(_ slot: Int32) {
        let need = Int(slot) * 2 + 2
        while pending.count < need {
            pending.append([])
            summaryDue.append(false)
            peerSummarySeen.append(false)
            dump.append([])
            dumpDue.append(false)
        }
        while links.count <= Int(slot) {
            links.append(LinkHandle(slot: -1, generation: 0, spec: ContactSpec(a: 0, b: 0, linkClass: .random, bytesPerSecond: 0, latency: 0), start: 0))
        }
    }

    /// Domains both ends carry, sorted (merge of two sorted lists).
    private func commonDomains(_ x: NodeIndex, _ y: NodeIndex) -> [Int32] {
        let p = ctx.world.carried[Int(x)], q = ctx.world.carried[Int(y)]
        var i = 0, j = 0
        var out: [Int32] = []
        while i < p.count && j < q.count {
            if p[i] == q[j] { out.append(p[i]); i += 1; j += 1 } else if p[i] < q[j] { i += 1 } else { j += 1 }
        }
        return out
    }

    /// Every change `from` holds and `to` lacks in their common domains (or everything `from` holds,
    /// when `all`), as priority keys.
    private func difference(from: NodeIndex, to: NodeIndex, all: Bool) -> [UInt64] {
        var out: [UInt64] = []
        for d in commonDomains(from, to) {
            let bf = Int(base[Int(from)] + ctx.world.slot(of: d, at: from))
            let bt = Int(base[Int(to)] + ctx.world.slot(of: d, at: to))
            let list = ctx.changes.byDomain[Int(d)]
            let src = bits[bf], dst = bits[bt]
            for w in 0..<src.count {
                var m = src[w]
                if !all && w < dst.count { m &= ~dst[w] }
                while m != 0 {
                    let bit = m.trailingZeroBitCount
                    m &= m - 1
                    out.append(key(list[w << 6 | bit]))
                }
            }
        }
        return out
    }

    // MARK: Heap of pending keys per direction

    private func heapPush(_ dir: Int, _ k: UInt64) {
        pending[dir].append(k)
        var i = pending[dir].count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if pending[dir][p] <= k { break }
            pending[dir][i] = pending[dir][p]
            i = p
        }
        pending[dir][i] = k
    }

    private func heapPop(_ dir: Int) -> UInt64? {
        guard let top = pending[dir].first else { return nil }
        let last = pending[dir].removeLast()
        let n = pending[dir].count
        if n == 0 { return top }
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let c = (r < n && pending[dir][r] < pending[dir][l]) ? r : l
            if pending[dir][c] >= last { break }
            pending[dir][i] = pending[dir][c]
            i = c
        }
        pending[dir][i] = last
        return top
    }

    // MARK: SyncAgent

    /// Marks the change held at its author and pushes it to the author's peers in contact.
    public func changeCreated(_ change: ChangeIndex, at node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        guard !lost[Int(node)] else { return }
        _ = set(change, at: node, hops: 0)
        push(change, from: node, effects: &effects)
    }

    /// Offers a change a node just got to every peer it is in contact with that may carry it and lacks it.
    private func push(_ change: ChangeIndex, from node: NodeIndex, effects: inout AgentEffects) {
        let d = ctx.changes.domain[Int(change)]
        for packed in active[Int(node)] {
            let slot = packed >> 1
            let side = LinkSide(rawValue: packed & 1)!
            let dir = Int(packed)
            let peer = links[Int(slot)].node(side.other)
            guard ctx.world.carries(d, at: peer), !holds(change, at: peer) else { continue }
            if kind == .fullState || peerSummarySeen[dir] {
                heapPush(dir, key(change))
                effects.wake(slot, side)
            }
        }
    }

    /// Queues the summaries (or, for full state, snapshots the dumps) of both sides.
    public func contactStarted(_ link: LinkHandle, now: SimTime, effects: inout AgentEffects) {
        ensureSlot(link.slot)
        links[Int(link.slot)] = link
        for side in [LinkSide.a, .b] {
            let dir = Int(link.slot) * 2 + Int(side.rawValue)
            pending[dir].removeAll(keepingCapacity: true)
            peerSummarySeen[dir] = false
            dump[dir].removeAll(keepingCapacity: true)
            summaryDue[dir] = kind != .fullState
            dumpDue[dir] = kind == .fullState
            active[Int(link.node(side))].append(Int32(dir))
            if kind == .fullState {
                let keys = difference(from: link.node(side), to: link.node(side.other), all: true).sorted()
                dump[dir] = keys.map { ChangeIndex(truncatingIfNeeded: $0 & 0xFFFF_FFFF) }
                peerSummarySeen[dir] = true  // pushes of later writes go straight out
            }
        }
    }

    /// Summary or dump first, then the most urgent change the peer still lacks.
    public func pollTransmit(_ link: LinkHandle, from side: LinkSide, now: SimTime) -> BaselineMessage? {
        let dir = Int(link.slot) * 2 + Int(side.rawValue)
        let me = link.node(side), peer = link.node(side.other)
        if summaryDue[dir] {
            summaryDue[dir] = false
            var size = Int64(summaryBytes)
            if kind == .fullVersionVector {
                var logs: Int64 = 0
                for d in commonDomains(me, peer) { logs += Int64(ctx.changes.logsPerDomain[Int(d)]) }
                size = Int64(headerBytes) + Int64(vectorEntryBytes) * logs
            }
            return BaselineMessage(type: .summary, hops: 0, change: -1, bytes: size)
        }
        if dumpDue[dir] {
            dumpDue[dir] = false
            var size = Int64(headerBytes)
            for c in dump[dir] { size += Int64(ctx.changes.size[Int(c)]) }
            return BaselineMessage(type: .stateDump, hops: 0, change: -1, bytes: size)
        }
        while let k = heapPop(dir) {
            let c = ChangeIndex(truncatingIfNeeded: k & 0xFFFF_FFFF)
            if holds(c, at: peer) { continue }  // the peer got it meanwhile through another contact
            return BaselineMessage(type: .change, hops: hopCount(c, at: me), change: c, bytes: Int64(ctx.changes.size[Int(c)]))
        }
        return nil
    }

    /// Applies what arrived; a summary makes this side queue what the peer lacks.
    public func received(_ message: BaselineMessage, on link: LinkHandle, at side: LinkSide, now: SimTime,
                                  effects: inout AgentEffects) {
        let me = link.node(side)
        guard !lost[Int(me)] else { return }
        switch message.type {
        case .summary, .control:
            // The peer's summary tells this side what the peer lacks: queue it, most urgent first.
            let dir = Int(link.slot) * 2 + Int(side.rawValue)
            peerSummarySeen[dir] = true
            for k in difference(from: me, to: link.node(side.other), all: false) { heapPush(dir, k) }
            effects.wake(link.slot, side)
        case .change:
            accept(message.change, at: me, hops: message.hops.nextHop, effects: &effects)
        case .stateDump:
            let fromDir = Int(link.slot) * 2 + Int(side.other.rawValue)
            let list = dump[fromDir]
            let senderHops = link.node(side.other)
            for c in list { accept(c, at: me, hops: hopCount(c, at: senderHops).nextHop, effects: &effects) }
            dump[fromDir].removeAll(keepingCapacity: true)
        }
    }

    private func accept(_ c: ChangeIndex, at node: NodeIndex, hops h: HopCount, effects: inout AgentEffects) {
        if set(c, at: node, hops: h) {
            effects.accept(c, at: node, hops: h)
            push(c, from: node, effects: &effects)
        } else {
            effects.duplicate()
        }
    }

    /// Forgets the contact's pending work; cut messages are simply lost.
    public func contactEnded(_ link: LinkHandle, now: SimTime, cut: [CutTransfer<BaselineMessage>],
                                      effects: inout AgentEffects) {
        for side in [LinkSide.a, .b] {
            let dir = Int32(link.slot) * 2 + side.rawValue
            let n = Int(link.node(side))
            if let i = active[n].firstIndex(of: dir) { active[n].remove(at: i) }
            pending[Int(dir)].removeAll(keepingCapacity: true)
            dump[Int(dir)].removeAll(keepingCapacity: true)
            summaryDue[Int(dir)] = false
            dumpDue[Int(dir)] = false
            peerSummarySeen[Int(dir)] = false
        }
        // Cut messages are simply lost: nothing was applied from them (a dump applies only when complete).
    }

    /// Nothing: the model store is durable, and the engine already cut the contacts.
    public func nodeCrashed(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        // The model store is durable: a crash loses only what was on the link (already cut by the engine).
    }

    /// Nothing to recover.
    public func nodeRestarted(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {}

    /// Discards the node's store and reports its changes as dropped.
    public func nodeLost(_ node: NodeIndex, now: SimTime, effects: inout AgentEffects) {
        lost[Int(node)] = true
        let b = Int(base[Int(node)])
        var count = 0
        for s in 0..<ctx.world.carried[Int(node)].count {
            for w in bits[b + s] { count += w.nonzeroBitCount }
            bits[b + s] = []
            hops[b + s] = []
        }
        stored[Int(node)] = 0
        effects.drop(count)
    }
}

/// Runs `scenario` with a baseline agent to the end and returns the finished simulation.
///
/// Use this rather than building `Simulation<BaselineAgent>` in another module: called here, the
/// generic engine is specialised for the agent (cross-module generic code runs unspecialised, several
/// times slower). A real protocol agent should get a wrapper like this in its own module.
public func runBaseline(_ kind: BaselineKind, scenario: any Scenario, options: RunOptions = RunOptions(),
                        progressEvery: UInt64 = 1 << 8, progress: ((SimTime, UInt64) -> Void)? = nil) -> Simulation<BaselineAgent> {
    let sim = Simulation(scenario: scenario, options: options) { BaselineAgent(kind, context: $0) }
    sim.run(progressEvery: progressEvery, progress: progress)
    return sim
}

/// Builds the report of a finished baseline run (specialised here for speed; see `runBaseline`).
public func baselineReport(_ sim: Simulation<BaselineAgent>, scenarioName: String, seed: UInt64,
                           derived: [(String, String)]) -> RunReport {
    sim.report(scenarioName: scenarioName, seed: seed, derived: derived)
}
