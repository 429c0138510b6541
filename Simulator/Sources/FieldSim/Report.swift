// Reports: a deterministic JSON summary, CSV series and SVG charts written by the simulator itself.

import FieldSyncGeo
import Foundation

/// A JSON value with ordered keys, rendered deterministically (NaN and infinities become null).
public indirect enum JSON: Sendable {
    /// A number.
    case number(Double)
    /// An integer.
    case int(Int64)
    /// A string.
    case string(String)
    /// A boolean.
    case bool(Bool)
    /// An array.
    case array([JSON])
    /// An object with keys in the given order.
    case object([(String, JSON)])
    /// null.
    case null

    /// Renders with two-space indentation.
    public func render(indent: Int = 0) -> String {
        let pad = String(repeating: "  ", count: indent)
        let inner = String(repeating: "  ", count: indent + 1)
        switch self {
        case let .number(d): return d.isFinite ? JSON.format(d) : "null"
        case let .int(i): return "\(i)"
        case let .string(s): return JSON.quote(s)
        case let .bool(b): return b ? "true" : "false"
        case .null: return "null"
        case let .array(a):
            if a.isEmpty { return "[]" }
            return "[\n" + a.map { inner + $0.render(indent: indent + 1) }.joined(separator: ",\n") + "\n\(pad)]"
        case let .object(o):
            if o.isEmpty { return "{}" }
            return "{\n" + o.map { inner + JSON.quote($0.0) + ": " + $0.1.render(indent: indent + 1) }.joined(separator: ",\n") + "\n\(pad)}"
        }
    }

    public static func format(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
        return String(format: "%.6g", d)
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Everything a finished run reports, ready to write.
public struct RunReport {
    /// The JSON summary.
    public var summary: JSON
    /// Time series CSV.
    public var seriesCSV: String
    /// Latency CDF CSV (class, seconds, fraction).
    public var latencyCSV: String
    /// SVG charts by file name.
    public var charts: [(String, String)]
    /// Headline numbers for tests and the console.
    public var headline: Headline

    /// Headline numbers.
    public struct Headline: Sendable {
        /// ONE delivery probability.
        public var deliveryProb: Double
        /// ONE overhead ratio.
        public var overheadRatio: Double
        /// (change, live replica) pairs missing at the end.
        public var missing: Int
        /// Convergence time after the end of the workload (ms), if converged.
        public var convergence: SimTime?
        /// Total bytes.
        public var bytes: Int64
        /// Median latency to HQ over all changes (ms).
        public var hqLatencyMedian: Double
        /// Feedback overdue rate at HQ.
        public var overdueRate: Double
        /// Oracle figures.
        public var oracle: OracleReport
        /// Entitlement invariant held.
        public var entitlementOK: Bool
        /// Changes written.
        public var changes: Int
        /// Contacts that ran.
        public var contacts: Int
        /// Stations whose complete replicas hold different record state at the end (agents with
        /// record state only: the `fieldsync` agent; 0 otherwise).
        public var divergedStations = 0
        /// 95th percentile of the feedback's latency to HQ over every priority (ms; NaN if none arrived).
        public var feedbackHQLatencyP95 = Double.nan
        /// Share of the feedback with a deadline in the run that reached every entitled replica by its deadline.
        public var feedbackAllEntitledByDeadline = Double.nan
        /// Dispatch-to-scene delay over the incidents (`dispatchToScene`): median and 90th percentile (ms; NaN if
        /// none).
        public var dispatchToSceneP50 = Double.nan
        /// See `dispatchToSceneP50`.
        public var dispatchToSceneP90 = Double.nan
    }
}

extension Simulation {
    /// Dispatch-to-scene delays (ms) of the incidents written after the warm-up, by the class of the node that
    /// wrote the on-scene status: for each incident (`ChangeTable.subject`), from its first `incident-status`
    /// change (the dispatch, written by the station) to its second (on-scene, written by the unit), both as
    /// written in this run. Under `legacy` the first status is the on-scene one of a backpack in the village.
    public func dispatchToScene() -> [(NodeClass, [SimTime])] {
        let ch = context.changes
        var first: [Int64: SimTime] = [:]  // lookup only, never iterated
        var out: [NodeClass: [SimTime]] = [:]  // read in `NodeClass` order below
        for i in 0..<ch.count where ch.changeClass[i] == .incidentStatus && ch.subject[i] >= 0 {
            let subject = ch.subject[i]
            if let t = first[subject] {
                if t >= 0 && t >= warmup { out[context.world.nodes[Int(ch.author[i])].nodeClass, default: []].append(ch.createdAt[i] - t) }
                first[subject] = -1
            } else {
                first[subject] = ch.createdAt[i]
            }
        }
        return NodeClass.allCases.compactMap { c in out[c].map { (c, $0.sorted()) } }
    }

    /// Builds the report of a finished run.
    public func report(scenarioName: String, seed: UInt64, derived: [(String, String)], mapTitle: String = "") -> RunReport {
        let m = metrics
        let ch = context.changes
        let world = context.world
        let sec = { (ms: Double) -> JSON in .number(ms / 1_000) }
        // ONE MessageStatsReport.
        let deliveryProb = m.created > 0 ? Double(m.delivered) / Double(m.created) : .nan
        let overhead = m.delivered > 0 ? Double(m.relayed - m.delivered) / Double(m.delivered) : .nan
        let oneStats: JSON = .object([
            ("sim_time", .number(Double(now) / 1_000)), ("created", .int(Int64(m.created))), ("started", .int(Int64(m.started))),
            ("relayed", .int(Int64(m.relayed))), ("aborted", .int(Int64(m.aborted))), ("dropped", .int(Int64(m.dropped))),
            ("removed", .int(Int64(m.removed))), ("delivered", .int(Int64(m.delivered))), ("delivery_prob", .number(deliveryProb)),
            ("response_prob", .null), ("overhead_ratio", .number(overhead)),
            ("latency_avg", sec(m.latency.mean)), ("latency_med", sec(m.latency.quantile(0.5))),
            ("hopcount_avg", .number(m.hops.mean)), ("hopcount_med", .number(m.hops.quantile(0.5))),
            ("buffertime_avg", .null), ("buffertime_med", .null), ("rtt_avg", .null), ("rtt_med", .null),
        ])
        func latencyTable(_ h: [[Histogram]]) -> JSON {
            var rows: [JSON] = []
            for c in ChangeClass.allCases {
                for p in SimPriority.allCases {
                    let x = h[Int(c.rawValue)][Int(p.rawValue)]
                    if x.count == 0 { continue }
                    rows.append(.object([("class", .string(c.description)), ("priority", .string(p.description)),
                                         ("count", .int(Int64(x.count))), ("p50_s", sec(x.quantile(0.5))), ("p95_s", sec(x.quantile(0.95))),
                                         ("p99_s", sec(x.quantile(0.99))), ("max_s", sec(Double(x.max)))]))
                }
            }
            return .array(rows)
        }
        // Feedback deadlines at HQ.
        var withDeadline = 0, byDeadline = 0, never = 0, deliveredByDeadlineAll = 0
        for i in 0..<ch.count where ch.deadline[i] >= 0 && ch.deadline[i] <= now && ch.createdAt[i] >= warmup {
            withDeadline += 1
            let a = m.hqArrival[i]
            if a < 0 { never += 1 } else if a <= ch.deadline[i] { byDeadline += 1 }
            if m.reached[i] == m.targets[i] && m.lastArrival[i] <= ch.deadline[i] { deliveredByDeadlineAll += 1 }
        }
        let overdue = withDeadline > 0 ? Double(withDeadline - byDeadline) / Double(withDeadline) : .nan
        let conv = convergence()
        let oracle = oracleReport()
        let entitlementOK = checkEntitlement()
        // Storage per node class.
        var storage: [(String, JSON)] = []
        for cls in NodeClass.allCases {
            var total = 0, mx = 0, n = 0
            for i in 0..<world.count where world.nodes[i].nodeClass == cls && !isLost(NodeIndex(i)) {
                let b = agent.storedBytes(at: NodeIndex(i))
                total += b
                mx = max(mx, b)
                n += 1
            }
            if n > 0 { storage.append((cls.description, .object([("nodes", .int(Int64(n))), ("mean_bytes", .number(Double(total) / Double(n))), ("max_bytes", .int(Int64(mx)))]))) }
        }
        let totalBytes = m.bytesByLink.reduce(0, +)
        let payload = m.bytesByType[Int(MessageType.change.rawValue)] + m.bytesByType[Int(MessageType.stateDump.rawValue)]
        var hqAll = Histogram()
        for row in m.latencyToHQ { for h in row { hqAll.merge(h) } }
        let part0: [(String, JSON)] = [
            ("scenario", .string(scenarioName)), ("agent", .string(agent.name)), ("seed", .string("\(seed)")),
        ]
        let part1: [(String, JSON)] = [
            ("derived", .object(derived.map { ($0.0, .string($0.1)) })),
        ]
        let part2: [(String, JSON)] = [
            ("run", .object([("sim_days", .number(Double(now) / Double(Duration.day))), ("events", .int(Int64(eventsProcessed))),
                             ("trace_hash", .string(String(traceHash, radix: 16))), ("nodes", .int(Int64(world.count))),
                             ("changes", .int(Int64(ch.count))), ("skipped_writes", .int(Int64(m.skippedWrites))),
                             ("warmup_days", .number(Double(warmup) / Double(Duration.day))),
                             ("workload_end_days", .number(Double(workloadEnd) / Double(Duration.day)))])),
        ]
        let part3: [(String, JSON)] = [
            ("message_stats", oneStats),
        ]
        let part4: [(String, JSON)] = [
            ("contacts", .object([
                ("count", .int(Int64(m.contactsByLink.reduce(0, +)))),
                ("by_link_class", .object(LinkClass.allCases.filter { m.contactsByLink[Int($0.rawValue)] > 0 }.map { ($0.description, .int(Int64(m.contactsByLink[Int($0.rawValue)]))) })),
                ("duration_avg_s", sec(m.contactDuration.mean)), ("duration_med_s", sec(m.contactDuration.quantile(0.5))),
                ("duration_p95_s", sec(m.contactDuration.quantile(0.95))),
                ("intercontact_count", .int(Int64(m.interContact.count))),
                ("intercontact_avg_s", sec(m.interContact.mean)), ("intercontact_med_s", sec(m.interContact.quantile(0.5))),
                ("intercontact_p95_s", sec(m.interContact.quantile(0.95))),
                ("ended_mid_transfer", .int(Int64(m.contactsCut))),
                ("frames_duplicated", .int(Int64(m.linkDuplicated))), ("frames_reordered", .int(Int64(m.linkReordered))),
                ("frames_corrupted", .int(Int64(m.linkCorrupted))),
            ])),
        ]
        let part5: [(String, JSON)] = [
            ("latency_to_hq", latencyTable(m.latencyToHQ)),
        ]
        let part6: [(String, JSON)] = [
            ("latency_to_entitled", latencyTable(m.latencyToAll)),
        ]
        let part7: [(String, JSON)] = [
            ("feedback", .object([("with_deadline_in_run", .int(Int64(withDeadline))), ("at_hq_by_deadline", .int(Int64(byDeadline))),
                                  ("never_at_hq", .int(Int64(never))), ("overdue_rate", .number(overdue)),
                                  ("all_entitled_by_deadline_fraction", .number(withDeadline > 0 ? Double(deliveredByDeadlineAll) / Double(withDeadline) : .nan))])),
        ]
        let scene = dispatchToScene()
        let sceneAll = scene.flatMap(\.1).sorted()
        func exact(_ xs: [SimTime], _ q: Double) -> Double { xs.isEmpty ? .nan : Double(xs[min(xs.count - 1, Int(q * Double(xs.count)))]) }
        func sceneJSON(_ xs: [SimTime]) -> JSON {
            .object([("count", .int(Int64(xs.count))), ("p50_s", sec(exact(xs, 0.5))), ("p90_s", sec(exact(xs, 0.9))),
                     ("mean_s", sec(xs.isEmpty ? .nan : Double(xs.reduce(0, +)) / Double(xs.count)))])
        }
        let part7b: [(String, JSON)] = [
            ("dispatch_to_scene", .object([("all", sceneJSON(sceneAll))] + scene.map { ($0.0.description, sceneJSON($0.1)) })),
        ]
        let part8: [(String, JSON)] = [
            ("convergence", .object([("missing_pairs", .int(Int64(conv.missing))), ("converged", .bool(conv.missing == 0)),
                                     ("time_after_workload_s", conv.time.map { sec(Double($0)) } ?? .null)])),
        ]
        let part9: [(String, JSON)] = [
            ("bytes", .object([
                ("total", .int(totalBytes)),
                ("by_link_class", .object(LinkClass.allCases.filter { m.bytesByLink[Int($0.rawValue)] > 0 }.map { ($0.description, .int(m.bytesByLink[Int($0.rawValue)])) })),
                ("by_message_type", .object(MessageType.allCases.map { ($0.description, .int(m.bytesByType[Int($0.rawValue)])) })),
                ("aborted", .int(m.abortedBytes)), ("duplicates_received", .int(Int64(m.duplicates))),
                ("overhead_over_payload", .number(payload > 0 ? Double(totalBytes - payload) / Double(payload) : .nan)),
                ("per_delivered_change", .number(m.delivered > 0 ? Double(totalBytes) / Double(m.delivered) : .nan)),
            ])),
        ]
        let part10: [(String, JSON)] = [
            ("storage_by_node_class", .object(storage)),
        ]
        let part11: [(String, JSON)] = [
            ("oracle", .object([
                ("sampled_changes", .int(Int64(oracle.sampled))), ("pairs", .int(Int64(oracle.pairs))),
                ("agent_missed", .int(Int64(oracle.agentMissed))), ("violations", .int(Int64(oracle.violations))),
                ("oracle_latency_p50_s", sec(oracle.oracleLatency.quantile(0.5))), ("oracle_latency_p95_s", sec(oracle.oracleLatency.quantile(0.95))),
                ("latency_ratio", .number(oracle.latencyRatio)), ("minimal_bytes", .int(oracle.minimalBytes)),
                ("bytes_ratio", .number(oracle.bytesRatio)),
            ])),
        ]
        let part12: [(String, JSON)] = [
            ("entitlement_ok", .bool(entitlementOK)),
        ]
        let summary: JSON = .object(part0 + part1 + part2 + part3 + part4 + part5 + part6 + part7 + part7b + part8 + part9 + part10 + part11 + part12)
        // CSV series.
        var csv = "time_h,changes,targets,delivered,delivered_fraction,at_hq," + LinkClass.allCases.map { "bytes_\($0)" }.joined(separator: ",") + "\n"
        for r in m.series {
            let frac = r.targets > 0 ? Double(r.delivered) / Double(r.targets) : 1
            csv += "\(JSON.format(Double(r.time) / Double(Duration.hour))),\(r.changes),\(r.targets),\(r.delivered),\(String(format: "%.6f", frac)),\(r.atHQ),"
            csv += r.bytesByLink.map(String.init).joined(separator: ",") + "\n"
        }
        var lcsv = "class,seconds,fraction\n"
        var curves: [(String, [(Double, Double)])] = []
        for c in ChangeClass.allCases {
            var h = Histogram()
            for p in SimPriority.allCases { h.merge(m.latencyToAll[Int(c.rawValue)][Int(p.rawValue)]) }
            let pts = h.cdf().map { ($0.0 / 1_000, $0.1) }
            if pts.isEmpty { continue }
            curves.append((c.description, pts))
            for (x, y) in pts { lcsv += "\(c),\(String(format: "%.3f", x)),\(String(format: "%.6f", y))\n" }
        }
        let xUnit = Duration.displayUnit(for: now)
        let charts: [(String, String)] = [
            ("latency_cdf.svg", SVG.cdfChart(title: "Latency to entitled replicas by class (\(agent.name))", curves: curves)),
            ("delivered_fraction.svg", SVG.lineChart(title: "Delivered fraction of (change, entitled replica) targets (\(agent.name))",
                                                     points: m.series.map { (Double($0.time) / Double(xUnit.ms), $0.targets > 0 ? Double($0.delivered) / Double($0.targets) : 1) },
                                                     xLabel: xUnit.name, yLabel: "delivered fraction")),
            ("bytes_by_link.svg", SVG.barChart(title: "Bytes by link class (\(agent.name))",
                                               bars: LinkClass.allCases.filter { m.bytesByLink[Int($0.rawValue)] > 0 }.map { ($0.description, Double(m.bytesByLink[Int($0.rawValue)])) })),
            ("staleness_map.svg", SVG.stalenessMap(world: world, staleness: m.staleness, at: m.stalenessAt, title: mapTitle.isEmpty ? "Staleness (\(agent.name))" : mapTitle)),
        ]
        var headline = RunReport.Headline(deliveryProb: deliveryProb, overheadRatio: overhead, missing: conv.missing, convergence: conv.time,
                                          bytes: totalBytes, hqLatencyMedian: hqAll.quantile(0.5), overdueRate: overdue, oracle: oracle,
                                          entitlementOK: entitlementOK, changes: ch.count, contacts: m.contactsByLink.reduce(0, +))
        var feedbackAtHQ = Histogram()
        for h in m.latencyToHQ[Int(ChangeClass.incidentFeedback.rawValue)] { feedbackAtHQ.merge(h) }
        headline.feedbackHQLatencyP95 = feedbackAtHQ.count > 0 ? feedbackAtHQ.quantile(0.95) : .nan
        headline.feedbackAllEntitledByDeadline = withDeadline > 0 ? Double(deliveredByDeadlineAll) / Double(withDeadline) : .nan
        headline.dispatchToSceneP50 = exact(sceneAll, 0.5)
        headline.dispatchToSceneP90 = exact(sceneAll, 0.9)
        return RunReport(summary: summary, seriesCSV: csv, latencyCSV: lcsv, charts: charts, headline: headline)
    }
}

/// Minimal SVG charts with fixed number formatting (deterministic output).
public enum SVG {
    static let w = 720.0, h = 440.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    static func f(_ x: Double) -> String { String(format: "%.1f", x) }
    static func header(_ title: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
            + "<text x=\"\(f(w / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
    }
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
    static func axes(xLabel: String, yLabel: String) -> String {
        "<line x1=\"\(f(left))\" y1=\"\(f(h - bottom))\" x2=\"\(f(w - right))\" y2=\"\(f(h - bottom))\" stroke=\"black\"/>\n"
            + "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(h - bottom))\" stroke=\"black\"/>\n"
            + "<text x=\"\(f((left + w - right) / 2))\" y=\"\(f(h - 12))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
            + "<text x=\"16\" y=\"\(f((top + h - bottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(f((top + h - bottom) / 2)))\">\(escape(yLabel))</text>\n"
    }

    /// CDF curves on a log10 x axis (seconds).
    public static func cdfChart(title: String, curves: [(String, [(Double, Double)])]) -> String {
        var s = header(title) + axes(xLabel: "latency (s, log scale)", yLabel: "fraction delivered")
        let xs = curves.flatMap { $0.1.map { max($0.0, 0.001) } }
        let lo = floor(log10(xs.min() ?? 1)), hi = max(ceil(log10(xs.max() ?? 10)), lo + 1)
        let px = { (x: Double) in left + (log10(max(x, 0.001)) - lo) / (hi - lo) * (w - left - right) }
        let py = { (y: Double) in h - bottom - y * (h - top - bottom) }
        var e = lo
        while e <= hi {
            s += "<line x1=\"\(f(px(pow(10, e))))\" y1=\"\(f(h - bottom))\" x2=\"\(f(px(pow(10, e))))\" y2=\"\(f(top))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(f(px(pow(10, e))))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">1e\(Int(e))</text>\n"
            e += 1
        }
        for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(q) + 4))\" text-anchor=\"end\">\(String(format: "%.2f", q))</text>\n"
        }
        for (i, (name, pts)) in curves.enumerated() {
            let color = palette[i % palette.count]
            let d = pts.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(f(px($0.element.0))),\(f(py($0.element.1)))" }.joined(separator: " ")
            s += "<path d=\"\(d)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            s += "<text x=\"\(f(left + 10))\" y=\"\(f(top + 16 + Double(i) * 16))\" fill=\"\(color)\">\(escape(name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// Ticks at multiples of a round step (1, 2 or 5 × 10^k) covering `[lo, hi]` with about `count`
    /// intervals, and the decimals that tell them apart.
    static func niceTicks(_ lo: Double, _ hi: Double, count: Int = 4) -> (ticks: [Double], decimals: Int) {
        let span = max(hi - lo, 1e-12)
        let raw = span / Double(count)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw * (1 - 1e-9) } ?? 10 * mag
        var ticks: [Double] = []
        var k = ceil(lo / step - 1e-9)
        while k * step <= hi + step * 1e-9 {
            ticks.append(k * step + 0)  // + 0 turns -0 (k = ceil(-tiny)) into 0, which prints without a sign
            k += 1
        }
        return (ticks, max(0, Int(-floor(log10(step) + 1e-9))))
    }

    /// The y range of a fraction chart: up to 1, and from 0 unless every value is above one half, then
    /// from a round value just below the smallest (0.93 to 1 is drawn from 0.9, not from 0).
    static func fractionRange(_ ys: [Double]) -> (Double, Double) {
        guard let lo = ys.min(), lo > 0.5, lo < 1 else { return (0, 1) }
        let (ticks, _) = niceTicks(lo, 1)
        let step = ticks.count > 1 ? ticks[1] - ticks[0] : 0.1
        return (max(0, floor(lo / step - 1e-9) * step), 1)
    }

    /// One line over a linear x axis; y is a fraction (at most 1), the axis spans `fractionRange`; when that
    /// does not start at 0 the chart says so above the plot ("y axis from 0.90, fitted to the data").
    public static func lineChart(title: String, points: [(Double, Double)], xLabel: String, yLabel: String) -> String {
        var s = header(title) + axes(xLabel: xLabel, yLabel: yLabel)
        let xmax = max(points.map(\.0).max() ?? 1, 1e-9)
        let (ylo, yhi) = fractionRange(points.map(\.1))
        let px = { (x: Double) in left + x / xmax * (w - left - right) }
        let py = { (y: Double) in h - bottom - (y - ylo) / (yhi - ylo) * (h - top - bottom) }
        let (yt, yd) = niceTicks(ylo, yhi)
        if ylo > 0 {
            // Said on the chart: the axis is fitted to the data, not drawn from 0.
            s += "<text class=\"axis-note\" x=\"\(f(left + 8))\" y=\"\(f(top - 6))\" font-size=\"10\">y axis from \(String(format: "%.\(max(yd, 2))f", ylo)), fitted to the data (not from 0)</text>\n"
        }
        for q in yt {
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(q) + 4))\" text-anchor=\"end\">\(String(format: "%.\(max(yd, 2))f", q))</text>\n"
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py(q)))\" x2=\"\(f(w - right))\" y2=\"\(f(py(q)))\" stroke=\"#eee\"/>\n"
        }
        let (xt, xd) = niceTicks(0, xmax)
        for x in xt where x <= xmax * (1 + 1e-9) {
            s += "<text x=\"\(f(px(x)))\" y=\"\(f(h - bottom + 16))\" text-anchor=\"middle\">\(String(format: "%.\(xd)f", x))</text>\n"
        }
        let d = points.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(f(px($0.element.0))),\(f(py($0.element.1)))" }.joined(separator: " ")
        if !d.isEmpty { s += "<path d=\"\(d)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n" }
        // Few samples (a short run of a file sampled daily has two): mark them, so a straight segment is not
        // read as measured in between.
        if points.count <= 60 {
            for (x, y) in points { s += "<circle class=\"sample\" cx=\"\(f(px(x)))\" cy=\"\(f(py(y)))\" r=\"3\" fill=\"#1f77b4\"/>\n" }
        }
        return s + "</svg>\n"
    }

    /// Horizontal bars with values in human units.
    public static func barChart(title: String, bars: [(String, Double)]) -> String {
        var s = header(title)
        let mx = max(bars.map(\.1).max() ?? 1, 1)
        let barH = min(30.0, (h - top - bottom) / Double(max(bars.count, 1)) - 6)
        let x0 = 180.0
        for (i, (name, v)) in bars.enumerated() {
            let y = top + 10 + Double(i) * (barH + 6)
            let len = v / mx * (w - x0 - 120)
            s += "<text x=\"\(f(x0 - 6))\" y=\"\(f(y + barH / 2 + 4))\" text-anchor=\"end\">\(escape(name))</text>\n"
            s += "<rect x=\"\(f(x0))\" y=\"\(f(y))\" width=\"\(f(max(len, 1)))\" height=\"\(f(barH))\" fill=\"\(palette[i % palette.count])\"/>\n"
            s += "<text x=\"\(f(x0 + len + 6))\" y=\"\(f(y + barH / 2 + 4))\">\(humanBytes(v))</text>\n"
        }
        return s + "</svg>\n"
    }

    static func humanBytes(_ v: Double) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var x = v, u = 0
        while x >= 1000 && u < units.count - 1 { x /= 1000; u += 1 }
        return String(format: "%.1f %@", x, units[u])
    }

    /// Clips the convex polygon `poly` to the half-plane of points nearer `p` than `q` (FieldSyncGeo's `Voronoi.clip`).
    static func clip(_ poly: [(Double, Double)], nearer p: (Double, Double), than q: (Double, Double)) -> [(Double, Double)] {
        Voronoi.clip(poly, nearer: p, than: q)
    }

    /// Nodes at their coordinates, coloured by staleness: green = up to date, yellow = hours, red >= 1
    /// day, grey = lost or not applicable (relay boxes). Longitude is scaled by the cosine of the mean
    /// latitude (equirectangular), so distances are true in both directions and the scale bar holds.
    /// When the world has stations, approximate county areas are drawn under them (the Voronoi cells of
    /// the stations, coloured by county, with a grey line where cells of two counties meet), and the
    /// world's `places` (villages) as small dots.
    public static func stalenessMap(world: World, staleness: [SimTime], at time: SimTime, title: String) -> String {
        let fullTitle = time >= 0 ? "\(title) at day \(String(format: "%.2f", Double(time) / Double(Duration.day)))" : title
        var s = header(fullTitle)
        let located = world.nodes.filter { $0.latitude != 0 || $0.longitude != 0 }
        guard !located.isEmpty else { return s + "<text x=\"360\" y=\"220\" text-anchor=\"middle\">no coordinates in this scenario</text>\n</svg>\n" }
        // Kilometres east and north of the south-west corner (FieldSyncGeo's projection, shared with the reports' map).
        let projection = MapProjection(latitudes: located.map(\.latitude) + world.places.map(\.latitude),
                                       longitudes: located.map(\.longitude) + world.places.map(\.longitude))
        let kx = { (lon: Double) in projection.x(lon) }
        let ky = { (lat: Double) in projection.y(lat) }
        let widthKm = projection.widthKm, heightKm = projection.heightKm
        let scale = min((w - left - 160) / widthKm, (h - top - bottom) / heightKm)  // pixels per km
        let px = { (lon: Double) in left + kx(lon) * scale }
        let py = { (lat: Double) in h - bottom - ky(lat) * scale }
        func color(_ st: SimTime) -> String {
            if st < 0 { return "#bbbbbb" }
            let hours = Double(st) / Double(Duration.hour)
            if hours < 0.01 { return "#2ca02c" }
            if hours < 6 { return "#bcbd22" }
            if hours < 24 { return "#ff7f0e" }
            return "#d62728"
        }
        // Approximate county areas: each station's Voronoi cell (within the map's box plus a margin),
        // filled with its county's tint; neighbouring cells of one county merge visually.
        let stations = world.nodes.filter { $0.nodeClass == .station && ($0.latitude != 0 || $0.longitude != 0) }
        var hasBorders = false
        if stations.count >= 2 {
            let tints = ["#dce6f4", "#f6e0da", "#dcf0d8", "#f5ecd2", "#e6ddf2", "#eadfd6", "#f4dcec", "#e4e4e4", "#ecf0d2", "#d6eef2"]
            let margin = 6 / scale  // 6 pixels around the data (in km), whatever the map's scale: the cells stay off the title
            let box = [(-margin, -margin), (widthKm + margin, -margin), (widthKm + margin, heightKm + margin), (-margin, heightKm + margin)]
            let pts = stations.map { (kx($0.longitude), ky($0.latitude)) }
            var borders = ""
            for (i, st) in stations.enumerated() {
                let cell = Voronoi.cell(of: i, sites: pts, box: box)
                guard cell.count >= 3 else { continue }
                let tint = tints[Int(max(st.county, 0)) % tints.count]
                let d = cell.map { "\(f(left + $0.0 * scale)),\(f(h - bottom - $0.1 * scale))" }.joined(separator: " ")
                s += "<polygon class=\"county-area\" points=\"\(d)\" fill=\"\(tint)\" stroke=\"\(tint)\"/>\n"
                // A county border: an edge of the cell shared with a station of another county (the edge lies on
                // the bisector of the two; drawn once, from the lower index).
                for k in cell.indices {
                    let a = cell[k], b = cell[(k + 1) % cell.count]
                    guard let near = Voronoi.neighbour(across: a, b, of: i, sites: pts), near > i, stations[near].county != st.county else { continue }
                    borders += "<line class=\"county-border\" x1=\"\(f(left + a.0 * scale))\" y1=\"\(f(h - bottom - a.1 * scale))\" x2=\"\(f(left + b.0 * scale))\" y2=\"\(f(h - bottom - b.1 * scale))\" stroke=\"#8c8c8c\" stroke-width=\"0.8\"/>\n"
                }
            }
            s += borders
            hasBorders = !borders.isEmpty
        }
        for p in world.places {
            s += "<circle class=\"village\" cx=\"\(f(px(p.longitude)))\" cy=\"\(f(py(p.latitude)))\" r=\"0.8\" fill=\"#999999\"/>\n"
        }
        let order: [NodeClass] = [.relay, .backpack, .vehicle, .station, .county, .hq, .peer]
        let radius: [NodeClass: Double] = [.relay: 1.5, .backpack: 2, .vehicle: 3, .station: 3, .county: 6, .hq: 8, .peer: 3]
        var labels: [(String, Double, Double, NodeClass)] = []
        for cls in order {
            for (i, n) in world.nodes.enumerated() where n.nodeClass == cls && (n.latitude != 0 || n.longitude != 0) {
                let st = i < staleness.count ? staleness[i] : -1
                s += "<circle cx=\"\(f(px(n.longitude)))\" cy=\"\(f(py(n.latitude)))\" r=\"\(f(radius[cls]!))\" fill=\"\(color(cls == .relay ? -1 : st))\" stroke=\"\(cls == .county || cls == .hq ? "black" : "none")\"/>\n"
                if cls == .county || cls == .hq { labels.append((n.name, px(n.longitude), py(n.latitude), cls)) }
            }
        }
        // Labels last, on top: counties above right of their seat, HQ below right (it sits at a county's
        // seat, so the two would print over each other).
        for (name, x, y, cls) in labels {
            s += "<text x=\"\(f(x + 9))\" y=\"\(f(cls == .hq ? y + 18 : y - 6))\" font-weight=\"\(cls == .hq ? "bold" : "normal")\">\(escape(name))</text>\n"
        }
        let legend: [(String, String)] = [("#2ca02c", "up to date"), ("#bcbd22", "< 6 h stale"), ("#ff7f0e", "6-24 h"), ("#d62728", ">= 1 day"), ("#bbbbbb", "lost / relay")]
        for (i, (c, label)) in legend.enumerated() {
            let y = top + 20 + Double(i) * 18
            s += "<circle cx=\"\(f(w - 140))\" cy=\"\(f(y))\" r=\"5\" fill=\"\(c)\"/><text x=\"\(f(w - 128))\" y=\"\(f(y + 4))\">\(escape(label))</text>\n"
        }
        var note = top + 130
        if !world.places.isEmpty {
            s += "<circle cx=\"\(f(w - 140))\" cy=\"\(f(note - 4))\" r=\"1.5\" fill=\"#999999\"/><text x=\"\(f(w - 128))\" y=\"\(f(note))\" font-size=\"10\">village (synthetic</text>\n"
            s += "<text x=\"\(f(w - 128))\" y=\"\(f(note + 12))\" font-size=\"10\">positions, seeded)</text>\n"
            note += 28
        }
        if stations.count >= 2 {  // lines of at most 25 characters: they end inside the picture
            s += "<text x=\"\(f(w - 150))\" y=\"\(f(note))\" font-size=\"10\">county areas approximate:</text>\n"
            s += "<text x=\"\(f(w - 150))\" y=\"\(f(note + 12))\" font-size=\"10\">stations' Voronoi cells\(hasBorders ? "," : "")</text>\n"
            if hasBorders { s += "<text x=\"\(f(w - 150))\" y=\"\(f(note + 24))\" font-size=\"10\">grey line: county border</text>\n" }
        }
        // Scale bar: a round length near a fifth of the map's width.
        let barKm = projection.scaleBarKm
        let bx = left, by = h - bottom + 30
        s += "<line class=\"scale-bar\" x1=\"\(f(bx))\" y1=\"\(f(by))\" x2=\"\(f(bx + barKm * scale))\" y2=\"\(f(by))\" stroke=\"black\" stroke-width=\"2\"/>\n"
        s += "<text x=\"\(f(bx + barKm * scale + 6))\" y=\"\(f(by + 4))\">\(JSON.format(barKm)) km</text>\n"
        return s + "</svg>\n"
    }
}
