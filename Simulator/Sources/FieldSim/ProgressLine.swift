// The console's progress line: what `fieldsim` shows on a terminal while a run goes.

import Foundation

/// Formats the progress line and says how to draw and erase it. The engine calls its progress hook every
/// `progressEvery` events (2^14 by default, so a debug build still shows progress); the CLI redraws at
/// most a few times a second and erases the line before printing anything else, so output never runs
/// into it.
public enum ProgressLine {
    /// Moves to the start of the line and erases it (ANSI "erase in line").
    public static let erase = "\r\u{1B}[K"

    /// `[agent] day 12.3/365  1.52M events/s  ETA 240s`: virtual time over the run's length in the unit
    /// that fits it, the event rate, and the time left at that pace.
    public static func text(agent: String, now: SimTime, duration: SimTime, events: UInt64, elapsed: Double) -> String {
        let (name, ms) = Duration.displayUnit(for: duration)
        let rate = elapsed > 0 ? Double(events) / elapsed : 0
        let frac = duration > 0 ? Double(now) / Double(duration) : 1
        let eta = frac > 0 ? elapsed / frac - elapsed : 0
        return String(format: "[%@] %@ %.1f/%@  %.2fM events/s  ETA %.0fs", agent, name, Double(now) / Double(ms),
                      total(Double(duration) / Double(ms)), rate / 1e6, eta)
    }

    /// The run's length with at most two decimals and no trailing zeros: `365`, `2.5`, `1.44`.
    static func total(_ x: Double) -> String {
        var s = String(format: "%.2f", x)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
}
