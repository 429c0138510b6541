// The `random-contacts` and `trace` scenarios, and the ONE connection-event trace format.

import Foundation

/// N nodes; every pair meets at the events of an independent Poisson process of rate λ; contacts have
/// unlimited bandwidth and no latency. Every node reads every message (one domain).
public struct RandomContactsScenario: Scenario {
    /// Scenario name.
    public let name: String
    /// Nodes and entitlement.
    public let world: World
    /// Simulated duration.
    public let duration: SimTime
    /// End of the workload.
    public let workloadEnd: SimTime
    /// Warm-up.
    public let warmup: SimTime
    /// Clock skew per node.
    public let clockSkew: [SimTime]
    /// Parameters derived from the seed, printed at the start of the run.
    public private(set) var derivedParameters: [(String, String)] = []

    /// Pairwise contact rate per millisecond.
    public let ratePerMs: Double
    private let contactLength: SimTime
    private let messages: Int
    private let spacing: SimTime
    private let messageBytes: Int32
    private var nextContact: [Double]  // by pair index
    private var pairRandom: [SimRandom]  // by pair index: one stream per pair, so slicing never changes the draws
    private let seed: UInt64
    /// Slices of about one contact per pair (the mean gap of a pair), between a second and a day: a run
    /// holds at most about one slice of contacts, whatever its length and rate.
    public let generationStep: SimTime

    /// Builds the scenario.
    /// - Throws: `ScenarioError` if the section is missing.
    public init(file: ScenarioFile, seed: UInt64, source: String = "<inline>") throws(ScenarioError) {
        guard let c = file.randomContacts else { throw ScenarioError(file: source, "no \"randomContacts\" section") }
        name = file.name
        self.seed = seed
        let w = World(domainCount: 1, domainNames: ["all"])
        for i in 0..<c.nodes { w.add(SimNode(nodeClass: .peer, name: "n\(i)", scope: "all"), domains: [0]) }
        world = w
        duration = SimTime(file.days * Double(Duration.day))
        workloadEnd = SimTime((file.workloadStopDays ?? file.days) * Double(Duration.day))
        warmup = SimTime((file.warmupDays ?? 0) * Double(Duration.day))
        clockSkew = Array(repeating: 0, count: c.nodes)
        ratePerMs = c.ratePerPairPerHour / Double(Duration.hour)
        contactLength = SimTime((c.contactSeconds ?? 1) * 1_000)
        messages = c.messages ?? 1
        spacing = SimTime((c.messageSpacingSeconds ?? 0) * 1_000)
        messageBytes = c.messageBytes ?? 1_000
        let pairs = c.nodes * (c.nodes - 1) / 2
        nextContact = []
        pairRandom = []
        nextContact.reserveCapacity(pairs)
        pairRandom.reserveCapacity(pairs)
        for p in 0..<pairs {
            var r = SimRandom(seed: seed, 10, UInt64(p))
            nextContact.append(r.exponential(mean: 1 / ratePerMs))
            pairRandom.append(r)
        }
        generationStep = ratePerMs > 0 ? min(max(SimTime(1 / ratePerMs), 1_000), Duration.day) : Duration.day
        derivedParameters = [
            ("seed", "\(seed)"), ("nodes", "\(c.nodes)"), ("rate per pair", "\(c.ratePerPairPerHour)/h"),
            ("contact length", "\(contactLength) ms, unlimited bandwidth, no latency"),
            ("messages", "\(messages) of \(messageBytes) bytes, every \(spacing) ms"),
        ]
    }

    /// Writes the contacts and changes of slice `step` (`generationStep` long).
    public mutating func generate(step: Int, into out: inout ScenarioSchedule) {
        let start = SimTime(step) * generationStep
        let end = min(start + generationStep, duration + 1)
        let n = world.count
        var p = 0
        for a in 0..<n {
            for b in (a + 1)..<max(a + 1, n) {
                while nextContact[p] < Double(end) {
                    let t = max(SimTime(nextContact[p]), start)
                    out.contact(ContactSpec(a: NodeIndex(a), b: NodeIndex(b), linkClass: .random, bytesPerSecond: 0, latency: 0),
                                from: t, to: t + contactLength)
                    nextContact[p] += pairRandom[p].exponential(mean: 1 / ratePerMs)
                }
                p += 1
            }
        }
        // Messages i with start <= i × spacing < end only (all at 0 when the spacing is 0).
        let first = spacing == 0 ? (step == 0 ? 0 : messages) : Int((start + spacing - 1) / spacing)
        for i in min(first, messages)..<messages {
            let t = SimTime(i) * spacing
            if t >= end { break }
            if t >= start && t < end && t < workloadEnd {
                out.changes.append((t, ChangeSpec(author: NodeIndex(i % n), domain: 0, place: -1, changeClass: .message,
                                                  priority: .none, size: messageBytes)))
            }
        }
    }

    /// Expected time for one message to reach all N nodes under epidemic spreading with pairwise rate λ:
    /// the sum over i = 1..N-1 of 1 / (λ i (N - i)), and its variance (sum of the squares).
    public static func expectedFloodingTime(nodes n: Int, ratePerMs: Double) -> (mean: Double, variance: Double) {
        var m = 0.0, v = 0.0
        for i in 1..<n {
            let r = ratePerMs * Double(i) * Double(n - i)
            m += 1 / r
            v += 1 / (r * r)
        }
        return (m, v)
    }
}

/// A contact trace in the ONE simulator's connection-event format: one event per line,
/// `TIME CONN A B up|down`, TIME in seconds (decimals allowed), A and B integer node ids. Blank lines and
/// lines starting with `#` are ignored.
public enum ONETrace {
    /// Parses a trace into closed contacts (sorted by start, then nodes). Contacts still up at the end
    /// close at the last event's time. A zero-length contact may be written either way round: `up` then
    /// `down` at one instant (as `export` writes it), or `down` then `up` (as `export` wrote it before
    /// issue 14): a `down` of a pair that is not up waits for an `up` of that pair at the same instant.
    /// - Throws: `ScenarioError` naming the line.
    public static func parse(_ text: String, file: String = "<trace>") throws(ScenarioError) -> (contacts: [(SimTime, SimTime, NodeIndex, NodeIndex)], nodes: Int) {
        var open: [UInt64: SimTime] = [:]  // lookup only
        var downFirst: [UInt64: Int] = [:]  // pair -> line of a `down` at `last` before its `up`; lookup only
        var out: [(SimTime, SimTime, NodeIndex, NodeIndex)] = []
        var maxNode: Int32 = -1
        var last: SimTime = 0
        var lineNo = 0
        func unmatchedDown() -> ScenarioError? {
            guard let (key, line) = downFirst.min(by: { $0.value < $1.value }) else { return nil }
            return ScenarioError(file: file, "line \(line): \(key >> 32)-\(key & 0xFFFF_FFFF) goes down without being up")
        }
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count == 5 else { throw ScenarioError(file: file, "line \(lineNo): expected \"TIME CONN A B up|down\", got \"\(line)\"") }
            guard let secs = Double(f[0]), secs >= 0, secs.isFinite else { throw ScenarioError(file: file, "line \(lineNo): bad time \"\(f[0])\"") }
            guard f[1] == "CONN" else { throw ScenarioError(file: file, "line \(lineNo): expected CONN, got \"\(f[1])\"") }
            guard let a = Int32(f[2]), let b = Int32(f[3]), a >= 0, b >= 0, a != b else {
                throw ScenarioError(file: file, "line \(lineNo): node ids must be two different non-negative integers")
            }
            let t = SimTime((secs * 1_000).rounded())
            guard t >= last else { throw ScenarioError(file: file, "line \(lineNo): time goes backwards") }
            if t > last, let e = unmatchedDown() { throw e }
            last = t
            maxNode = max(maxNode, a, b)
            let key = ContactSpec.pairKey(a, b)
            switch f[4] {
            case "up":
                guard open[key] == nil else { throw ScenarioError(file: file, "line \(lineNo): \(a)-\(b) is already up") }
                if downFirst.removeValue(forKey: key) != nil {
                    out.append((t, t, min(a, b), max(a, b)))  // a zero-length contact written down first
                } else {
                    open[key] = t
                }
            case "down":
                if let s = open.removeValue(forKey: key) {
                    out.append((s, t, min(a, b), max(a, b)))
                } else {
                    guard downFirst[key] == nil else { throw ScenarioError(file: file, "line \(lineNo): \(a)-\(b) goes down without being up") }
                    downFirst[key] = lineNo
                }
            default:
                throw ScenarioError(file: file, "line \(lineNo): expected up or down, got \"\(f[4])\"")
            }
        }
        if let e = unmatchedDown() { throw e }
        for (key, s) in open.sorted(by: { $0.key < $1.key }) {
            out.append((s, last, NodeIndex(truncatingIfNeeded: key >> 32), NodeIndex(truncatingIfNeeded: key & 0xFFFF_FFFF)))
        }
        out.sort { ($0.0, $0.2, $0.3, $0.1) < ($1.0, $1.2, $1.3, $1.1) }
        return (out, Int(maxNode) + 1)
    }

    /// Writes contacts in the ONE format, events sorted by time, with millisecond precision. At equal
    /// times the downs of contacts that lasted come first, then zero-length contacts (each `up` directly
    /// followed by its `down`, so `parse` reads them back), then the ups.
    public static func export(_ contacts: [ContactRecord]) -> String {
        // (time, order: 0 down, 1 zero-length up, 2 zero-length down, 3 up, a, b, contact index)
        var events: [(SimTime, Int, NodeIndex, NodeIndex, Int)] = []
        events.reserveCapacity(contacts.count * 2)
        for (i, c) in contacts.enumerated() {
            let zero = c.start == c.end
            events.append((c.start, zero ? 1 : 3, c.spec.a, c.spec.b, i))
            events.append((c.end, zero ? 2 : 0, c.spec.a, c.spec.b, i))
        }
        // A zero-length contact's up and down sort next to each other (the contact index before the order).
        func key(_ e: (SimTime, Int, NodeIndex, NodeIndex, Int)) -> (SimTime, Int, NodeIndex, NodeIndex, Int, Int) {
            e.1 == 1 || e.1 == 2 ? (e.0, 1, e.2, e.3, e.4, e.1) : (e.0, e.1, e.2, e.3, 0, 0)
        }
        events.sort { key($0) < key($1) }
        var s = ""
        s.reserveCapacity(events.count * 24)
        for (t, order, a, b, _) in events {
            s += "\(t / 1_000).\(String(format: "%03d", Int(t % 1_000))) CONN \(a) \(b) \(order == 1 || order == 3 ? "up" : "down")\n"
        }
        return s
    }
}

/// Replays a ONE connection trace; every node reads every message; messages are created at random
/// nodes at a fixed rate.
public struct TraceScenario: Scenario {
    /// Scenario name.
    public let name: String
    /// Nodes and entitlement.
    public let world: World
    /// Simulated duration.
    public let duration: SimTime
    /// End of the workload.
    public let workloadEnd: SimTime
    /// Warm-up.
    public let warmup: SimTime
    /// Clock skew per node.
    public let clockSkew: [SimTime]
    /// Parameters derived from the seed, printed at the start of the run.
    public private(set) var derivedParameters: [(String, String)] = []

    private let contacts: [(SimTime, SimTime, NodeIndex, NodeIndex)]
    private var cursor = 0
    private let link: LinkParameters
    private let perDay: Double
    private let messageBytes: Int32
    private let seed: UInt64

    /// Builds the scenario from parsed trace contacts.
    public init(file: ScenarioFile, seed: UInt64, traceText: String, source: String = "<trace>") throws(ScenarioError) {
        guard let c = file.trace else { throw ScenarioError(file: source, "no \"trace\" section") }
        let parsed = try ONETrace.parse(traceText, file: source)
        guard parsed.nodes >= 2 else { throw ScenarioError(file: source, "the trace has fewer than two nodes") }
        name = file.name
        self.seed = seed
        contacts = parsed.contacts
        let w = World(domainCount: 1, domainNames: ["all"])
        for i in 0..<parsed.nodes { w.add(SimNode(nodeClass: .peer, name: "n\(i)", scope: "all"), domains: [0]) }
        world = w
        duration = SimTime(file.days * Double(Duration.day))
        workloadEnd = SimTime((file.workloadStopDays ?? file.days) * Double(Duration.day))
        warmup = SimTime((file.warmupDays ?? 0) * Double(Duration.day))
        clockSkew = Array(repeating: 0, count: parsed.nodes)
        link = c.link ?? LinkParameters(bytesPerSecond: 250_000, latencyMs: 0)
        perDay = c.messagesPerNodePerDay ?? 4
        messageBytes = c.messageBytes ?? 1_000
        derivedParameters = [
            ("seed", "\(seed)"), ("trace", "\(c.file): \(contacts.count) contacts, \(parsed.nodes) nodes"),
            ("link", "\(link.bytesPerSecond) B/s, \(link.latencyMs) ms"),
            ("messages", "\(perDay) per node per day, \(messageBytes) bytes"),
        ]
    }

    /// Writes the contacts, changes and faults of `day` (the generation step is a day).
    public mutating func generate(step day: Int, into out: inout ScenarioSchedule) {
        let start = SimTime(day) * Duration.day
        let end = start + Duration.day
        while cursor < contacts.count && contacts[cursor].0 < end {
            let (s, e, a, b) = contacts[cursor]
            out.contact(ContactSpec(a: a, b: b, linkClass: .trace, bytesPerSecond: link.bytesPerSecond, latency: link.latencyMs),
                        from: max(s, start), to: max(e, s))
            cursor += 1
        }
        guard start < workloadEnd else { return }
        var r = SimRandom(seed: seed, 20, UInt64(day))
        let n = r.poisson(perDay * Double(world.count))
        for _ in 0..<n {
            let t = start + SimTime(r.unit() * Double(Duration.day))
            let author = NodeIndex(r.int(world.count))
            if t < workloadEnd {
                out.changes.append((t, ChangeSpec(author: author, domain: 0, place: author, changeClass: .message, priority: .none,
                                                  size: messageBytes)))
            }
        }
    }
}

/// Builds the scenario a file describes.
/// - Throws: `ScenarioError` for a bad file or trace.
public func makeScenario(_ file: ScenarioFile, seed: UInt64, path: String) throws(ScenarioError) -> any Scenario {
    switch file.kind {
    case "longnan": return try LongnanScenario(file: file, seed: seed, source: path)
    case "random-contacts": return try RandomContactsScenario(file: file, seed: seed, source: path)
    case "trace":
        let rel = file.trace!.file
        let dir = (path as NSString).deletingLastPathComponent
        let tracePath = rel.hasPrefix("/") ? rel : (dir as NSString).appendingPathComponent(rel)
        guard let data = FileManager.default.contents(atPath: tracePath) else {
            throw ScenarioError(file: path, "cannot read trace file \"\(tracePath)\"")
        }
        return try TraceScenario(file: file, seed: seed, traceText: String(decoding: data, as: UTF8.self), source: tracePath)
    default: throw ScenarioError(file: path, "unknown kind \"\(file.kind)\"")
    }
}
