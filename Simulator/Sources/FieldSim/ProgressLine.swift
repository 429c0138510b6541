// The console's progress line: what `fieldsim` shows on a terminal while a run goes.

import Foundation

/// Formats the progress line and says how to draw and erase it. The engine calls its progress hook every
/// `progressEvery` events (2^8 by default: often enough in wall time for any agent and build); the CLI
/// decides by the wall clock, redrawing at most 4 times a second, and erases the line before printing
/// anything else, so output never runs into it.
public enum ProgressLine {
    /// Moves to the start of the line and erases it (ANSI "erase in line").
    public static let erase = "\r\u{1B}[K"

    /// `[agent] day 12.3/365  1.52M events/s  ETA 240s` (`4.7k events/s` for a slow run): virtual time over the run's length in the unit
    /// that fits it, the event rate, and the time left at that pace.
    public static func text(agent: String, now: SimTime, duration: SimTime, events: UInt64, elapsed: Double) -> String {
        let (name, ms) = Duration.displayUnit(for: duration)
        let rate = elapsed > 0 ? Double(events) / elapsed : 0
        let frac = duration > 0 ? Double(now) / Double(duration) : 1
        let eta = frac > 0 ? elapsed / frac - elapsed : 0
        return String(format: "[%@] %@ %.1f/%@  %@ events/s  ETA %.0fs", agent, name, Double(now) / Double(ms),
                      total(Double(duration) / Double(ms)), ProgressLine.rate(rate), eta)
    }

    /// A rate with a unit that keeps its digits: `1.52M`, `4.7k`, `950` (a debug `fieldsync` run at a few
    /// thousand events a second printed `0.00M`).
    public static func rate(_ perSecond: Double) -> String {
        if perSecond >= 999_500 { return String(format: "%.2fM", perSecond / 1e6) }
        if perSecond >= 999.5 { return String(format: "%.1fk", perSecond / 1e3) }
        return String(format: "%.0f", perSecond)
    }

    /// Simulated days per wall second with three significant digits (`14.8`, `0.105`, `0.00123`; a short
    /// or slow run printed `0.0`), whole from 1,000 on (`1328`, not `1.33e+03`).
    public static func simDaysPerSecond(_ x: Double) -> String { x >= 999.5 ? String(format: "%.0f", x) : String(format: "%.3g", x) }

    /// The run's length with at most two decimals and no trailing zeros: `365`, `2.5`, `1.44`.
    static func total(_ x: Double) -> String {
        var s = String(format: "%.2f", x)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
}
