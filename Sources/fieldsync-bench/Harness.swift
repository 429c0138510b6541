import Foundation

/// One measured figure of a benchmark, as a ratio against a baseline measured in the same run.
struct BenchResult {
    /// What was measured.
    var name: String
    /// The measured figure (e.g. operations per second, bytes).
    var value: Double
    /// The baseline figure measured in the same run.
    var baseline: Double
    /// Unit of `value` and `baseline`.
    var unit: String
    /// What the baseline is.
    var baselineName: String
    /// A goal on `value / baseline`, if the issue sets one, written like ">= 10" or "<= 1.10".
    var goal: String?

    var ratio: Double { baseline == 0 ? .nan : value / baseline }
}

/// A registered benchmark: a name, a one-line description and a body that returns its figures.
struct Benchmark {
    var name: String
    var summary: String
    /// Run only when named (it needs something from outside, e.g. a previous build to compare with).
    var byNameOnly = false
    var run: (_ scale: Double) throws -> [BenchResult]
}

/// Times `body` repeatedly until at least `minimumSeconds` have passed; returns seconds per iteration.
/// The best of three rounds is kept, which filters out scheduler noise on a shared 2-core machine.
func secondsPerIteration(minimumSeconds: Double = 0.2, _ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    var best = Double.infinity
    for _ in 0..<3 {
        var iterations = 0
        let start = clock.now
        var elapsed = 0.0
        repeat {
            body()
            iterations += 1
            let d = clock.now - start
            elapsed = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        } while elapsed < minimumSeconds
        best = min(best, elapsed / Double(iterations))
    }
    return best
}

/// Prevents the optimizer from discarding a computed value.
@inline(never) func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }
