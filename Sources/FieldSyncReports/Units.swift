// Units and stations: every device this node has seen (an author of changes it holds, or a device whose
// certificate it knows), with its role and scopes, the time of its newest change held here, its last
// session with this node (from the daemon's status file, when the node runs one), and how many of its
// changes held here HQ has not receipted; an alarm for units silent longer than a threshold. Read from
// the store's log table and one indexed read per log (no change is opened).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol

/// What the store holds of one log: the base of the units list and of the map's staleness.
public struct LogActivity: Sendable, Equatable {
    /// The log.
    public var log: LogID
    /// Changes held.
    public var held: UInt64
    /// The highest seq held and its change's HLC time (ms): the newest change of the log here.
    public var newestSeq: UInt64, newestAt: Int64?
    /// The highest seq HQ has receipted.
    public var receipted: UInt64
    /// Held changes above `receipted`: not receipted by HQ yet.
    public var unreceipted: UInt64

    /// Every log the store holds, in log order (`SyncStore.logSummaries()`: one read on a SQLite store).
    /// - Throws: store errors.
    public static func read(_ store: any SyncStore) throws -> [LogActivity] {
        try store.logSummaries().map { l in
            let receipted = l.receipted
            var above: UInt64 = 0
            for r in l.held.ranges where r.upperBound > receipted { above += r.upperBound - max(r.lowerBound, receipted + 1) + 1 }
            return LogActivity(log: l.log, held: l.held.count, newestSeq: l.held.ranges.last?.upperBound ?? 0,
                               newestAt: l.newest.map { Int64(clamping: $0.hlc.milliseconds) }, receipted: receipted, unreceipted: above)
        }
    }
}

/// One device in the units list.
public struct UnitStatus: Sendable, Equatable, Codable {
    /// Its device id (64 hex digits).
    public var device: String
    /// Its role and scopes from its certificate (nil role: no certificate known here).
    public var role: String?, scopes: [String]
    /// The newest of its changes held here: when it was written (ISO 8601, UTC+8), nil if none held.
    public var lastChange: String?
    /// Minutes since then (nil if none held).
    public var silentMinutes: Int64?
    /// The end of its last session with this node (ISO 8601, UTC+8), from the daemon's status file; nil if
    /// not recorded (no running daemon, or never a direct peer: its changes came through others).
    public var lastSession: String?
    /// Its changes held here, and those of them HQ has not receipted.
    public var changesHeld: UInt64, unreceipted: UInt64
    /// Silent longer than the threshold (or nothing of it held): the alarm.
    public var alarm: Bool
}

/// The units and stations list.
public struct UnitsReport: Sendable, Equatable, Codable {
    /// When it was made (ISO 8601, UTC+8) and the silence threshold (minutes).
    public var generatedAt: String, silentAfterMinutes: Int64
    /// The devices, alarms first, then by role and id.
    public var units: [UnitStatus]
    /// How many raise the alarm.
    public var alarms: Int

    /// Makes the list from the replicator's store and certificates.
    /// - Parameters:
    ///   - replicator: the node's replicator (on its thread).
    ///   - now: the wall clock, ms since the Unix epoch.
    ///   - silentAfterMinutes: the alarm threshold (default 24 h).
    ///   - status: the daemon's status file, for last sessions (nil: not recorded).
    ///   - includeSelf: list this node's own device too (default false).
    ///   - visible: the scopes the reader may see (nil: everything). With it, a device is listed only if one of
    ///     its logs held here or one of its certificate's scopes is visible, and only its visible logs and
    ///     scopes are counted and shown (a county operator does not learn another county's devices).
    /// - Throws: store errors.
    public static func make(_ replicator: Replicator, now: Int64, silentAfterMinutes: Int64 = 24 * 60, status: DaemonStatus? = nil,
                            includeSelf: Bool = false, visible: ((Scope) -> Bool)? = nil) throws -> UnitsReport {
        let shows = visible ?? { _ in true }
        let activity = try LogActivity.read(replicator.store).filter { shows($0.log.scope) }
        var byDevice: [DeviceID: [LogActivity]] = [:]
        for a in activity { byDevice[a.log.author, default: []].append(a) }
        let certified = replicator.certificates.filter { $0.value.certificate.scopes.contains(where: shows) }.keys
        var devices = Set(byDevice.keys).union(certified)
        if !includeSelf { devices.remove(replicator.identity.id) }
        var sessions: [String: UInt64] = [:]
        for p in status?.peers ?? [] {
            if let d = p.device, let t = p.lastSyncAt { sessions[d] = max(sessions[d] ?? 0, t) }
        }
        var units: [UnitStatus] = []
        for d in devices {
            let logs = byDevice[d] ?? []
            let newest = logs.compactMap(\.newestAt).max()
            let cert = replicator.certificates[d]?.certificate
            let silent = newest.map { (now - $0) / 60_000 }
            units.append(UnitStatus(
                device: d.description, role: cert?.role.description, scopes: cert?.scopes.filter(shows).map(\.path) ?? [],
                lastChange: newest.map(ReportTimeZone.iso), silentMinutes: silent,
                lastSession: sessions[d.description].map { ReportTimeZone.iso(Int64(clamping: $0)) },
                changesHeld: logs.reduce(0) { $0 + $1.held }, unreceipted: logs.reduce(0) { $0 + $1.unreceipted },
                alarm: silent.map { $0 > silentAfterMinutes } ?? true))
        }
        units.sort { a, b in (a.alarm ? 0 : 1, a.role ?? "~", a.device) < (b.alarm ? 0 : 1, b.role ?? "~", b.device) }
        return UnitsReport(generatedAt: ReportTimeZone.iso(now), silentAfterMinutes: silentAfterMinutes, units: units,
                           alarms: units.filter(\.alarm).count)
    }
}
