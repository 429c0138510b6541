import FieldSim
import Foundation
import Testing

@Suite struct ScenarioTests {
    @Test func randomContactsFloodingMatchesTheAnalyticalMean() throws {
        // Epidemic spreading with pairwise rate λ: E[T_all] = Σ_{i=1}^{N-1} 1/(λ i (N-i)).
        var (f, path) = try shippedScenario("random-contacts")
        f.days = 0.25  // 6 h, against an expected 0.7 h to reach all 20 nodes
        f.workloadStopDays = 0.25
        let runs = 150
        var sum = 0.0
        var rate = 0.0
        for seed in 1...runs {
            let scen = try makeScenario(f, seed: UInt64(seed), path: path)
            rate = (scen as! RandomContactsScenario).ratePerMs
            let sim = runBaseline(.idealEpidemic, scenario: scen, options: RunOptions(sampleInterval: Duration.day, recordContacts: seed <= 5))
            #expect(sim.convergence().missing == 0)
            sum += Double(sim.metrics.lastArrival[0] - sim.context.changes.createdAt[0])
            if seed <= 5 {
                // With unlimited bandwidth and no latency the epidemic is the oracle.
                let o = sim.oracleReport()
                #expect(o.violations == 0)
                #expect(abs(o.latencyRatio - 1) < 1e-9)
            }
        }
        let (mean, variance) = RandomContactsScenario.expectedFloodingTime(nodes: f.randomContacts!.nodes, ratePerMs: rate)
        let observed = sum / Double(runs)
        let tolerance = 4 * (variance / Double(runs)).squareRoot() + 0.01 * mean
        #expect(abs(observed - mean) < tolerance, "observed \(observed) ms, expected \(mean) ms ± \(tolerance)")
    }

    @Test func oracleIsALowerBoundForEveryAgentAndBaselinesOrderAsExpected() throws {
        var bytes: [BaselineKind: Int64] = [:]
        var contacts: Set<Int> = []
        for kind in BaselineKind.allCases {
            let (_, r) = try run("longnan", days: 2, seed: 5, agent: kind, options: RunOptions(oracleSampleEvery: 40))
            let o = r.headline.oracle
            #expect(o.pairs > 100, "\(kind): \(o.pairs) pairs")
            #expect(o.violations == 0, "\(kind): agent beat the oracle")
            #expect(o.latencyRatio >= 1)
            #expect(o.bytesRatio >= 1)
            #expect(r.headline.entitlementOK)
            bytes[kind] = r.headline.bytes
            contacts.insert(r.headline.contacts)
        }
        // Same contacts for every agent; reconciliation by summary moves the fewest bytes.
        #expect(contacts.count == 1)
        #expect(bytes[.idealEpidemic]! < bytes[.fullVersionVector]!)
        #expect(bytes[.fullVersionVector]! < bytes[.fullState]!)
    }

    @Test func oneWeekOfLongnanConvergesWithPlausibleMetrics() throws {
        let (sim, r) = try run("longnan", days: 7, seed: 1, options: RunOptions(oracleSampleEvery: 200))
        let h = r.headline
        #expect(h.missing == 0)
        #expect(h.convergence != nil)
        #expect(h.entitlementOK)
        #expect(h.deliveryProb > 0.99)
        // 5 days of workload: ~520 incidents (~4 changes each) and ~1,780 visits a day.
        let expected = 5.0 * (520.5 * 4 + 1_780.8)
        #expect(abs(Double(h.changes) - expected) / expected < 0.1, "changes \(h.changes) vs \(expected)")
        #expect(h.overheadRatio >= 0 && h.overheadRatio < 2)
        #expect(h.hqLatencyMedian < Double(Duration.hour))
        #expect(h.overdueRate < 0.2)
        #expect(h.oracle.violations == 0 && h.oracle.bytesRatio >= 1)
        #expect(h.contacts > 10_000)
        #expect(sim.metrics.staleness.count == sim.context.world.count)
    }

    @Test func contactExportReplaysAsTheSameTrace() throws {
        let (sim, _) = try run("longnan", days: 1, seed: 3, options: RunOptions(oracleSampleEvery: 0))
        let text = ONETrace.export(sim.contacts)
        let parsed = try ONETrace.parse(text)
        let original = sim.contacts.map { ($0.start, $0.end, $0.spec.a, $0.spec.b) }
            .sorted { ($0.0, $0.2, $0.3, $0.1) < ($1.0, $1.2, $1.3, $1.1) }
        #expect(parsed.contacts.count == original.count)
        #expect(zip(parsed.contacts, original).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 && $0.3 == $1.3 })
        // Replaying it as a trace scenario runs the same contacts.
        var (f, path) = try shippedScenario("trace")
        f.days = 1
        f.trace!.messagesPerNodePerDay = 0  // only the contacts are compared here
        let scen = try TraceScenario(file: f, seed: 1, traceText: text, source: path)
        let replay = runBaseline(.idealEpidemic, scenario: scen, options: RunOptions(oracleSampleEvery: 0))
        let again = replay.contacts.map { ($0.start, $0.end, $0.spec.a, $0.spec.b) }
            .sorted { ($0.0, $0.2, $0.3, $0.1) < ($1.0, $1.2, $1.3, $1.1) }
        #expect(again.count == original.count)
        #expect(zip(again, original).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 && $0.2 == $1.2 && $0.3 == $1.3 })
    }

    @Test func shippedTraceScenarioRuns() throws {
        let (_, r) = try run("trace")
        #expect(r.headline.changes > 0)
        #expect(r.headline.oracle.violations == 0)
    }

    @Test func badFilesGiveErrorsNamingTheProblem() throws {
        func problem(_ json: String) -> String? {
            do {
                _ = try ScenarioFile.parse(Data(json.utf8), file: "x.json")
                return nil
            } catch { return error.problem }
        }
        #expect(problem(#"{"name":"a","kind":"moon","days":1}"#)?.contains("unknown kind \"moon\"") == true)
        #expect(problem(#"{"name":"a","kind":"longnan","days":1}"#)?.contains("needs a \"longnan\" section") == true)
        #expect(problem(#"{"name":"a","kind":"random-contacts"}"#)?.contains("missing key \"days\"") == true)
        #expect(problem(#"{"name":"a","kind":"random-contacts","days":"x"}"#)?.contains("\"days\"") == true)
        let shares = #"{"name":"a","kind":"longnan","days":1,"longnan":{"counties":[{"name":"wudu","lat":33,"lon":104}],"connectivityShares":{"4g":0.5}}}"#
        #expect(problem(shares)?.contains("must sum to 1") == true)
        let corrupt = #"{"name":"a","kind":"random-contacts","days":1,"randomContacts":{"nodes":3,"ratePerPairPerHour":1},"faults":{"linkCorrupt":0.9}}"#
        #expect(problem(corrupt)?.contains("\"faults.linkCorrupt\" must be a probability in [0, 0.5]") == true)
        #expect(throws: ScenarioError.self) { try ONETrace.parse("0 CONN 1 2 down\n") }
        do {
            _ = try ONETrace.parse("0 CONN 1 2 up\n5 CONN 1 2 sideways\n", file: "t.txt")
        } catch { #expect(error.description == "t.txt: line 2: expected up or down, got \"sideways\"") }
    }
}
