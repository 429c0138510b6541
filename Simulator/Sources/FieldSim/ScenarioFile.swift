// Scenario files: the JSON schema (documented in Simulator/README.md), loading and validation.

import FieldSyncCore
import FieldSyncGeo
import Foundation

/// A problem with a scenario or trace file: names the file and what is wrong.
public struct ScenarioError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file (or "<inline>").
    public var file: String
    /// What is wrong, naming the key or line.
    public var problem: String
    /// Creates an error.
    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }
    /// `file: problem`.
    public var description: String { "\(file): \(problem)" }
}

/// A link's speed in a scenario file.
public struct LinkParameters: Codable, Sendable, Equatable {
    /// Bytes per second each way (0 = unlimited).
    public var bytesPerSecond: Int64
    /// One-way latency in milliseconds.
    public var latencyMs: Int64
    /// Creates parameters.
    public init(bytesPerSecond: Int64, latencyMs: Int64) {
        self.bytesPerSecond = bytesPerSecond
        self.latencyMs = latencyMs
    }
}

/// A county seat.
public struct CountySeat: Codable, Sendable, Equatable {
    /// Scope segment (pinyin, lower case), e.g. `wudu`.
    public var name: String
    /// Latitude (degrees).
    public var lat: Double
    /// Longitude (degrees).
    public var lon: Double
}

/// The `longnan` section. Every field is optional in the file; `nil` takes the default documented in
/// Simulator/README.md.
public struct LongnanConfig: Codable, Sendable {
    /// The county seats (required).
    public var counties: [CountySeat]
    /// Which county's seat hosts HQ.
    public var hqCounty: String?
    /// Number of police stations.
    public var stations: Int?
    /// Number of villages (synthetic placement).
    public var villages: Int?
    /// Stations lie within this distance of their county seat (km).
    public var stationRadiusKm: Double?
    /// Villages lie between these distances of their station (km).
    public var villageRadiusKm: [Double]?
    /// Shares of villages by connectivity class: keys `4g`, `intermittent`, `none`.
    public var connectivityShares: [String: Double]?
    /// Probability that a village of a class has a relay box: keys `4g`, `intermittent`, `none`.
    public var relayProbability: [String: Double]?
    /// Backpack units per station.
    public var backpacksPerStation: Int?
    /// Mobile command vehicles per county.
    public var vehiclesPerCounty: Int?
    /// Villages visited per patrol day: [min, max].
    public var villagesPerPatrol: [Int]?
    /// Hour of departure from the station.
    public var departHour: Double?
    /// Random extra delay of departure, minutes.
    public var departJitterMinutes: Double?
    /// Time spent at each village: [min, max] minutes.
    public var dwellMinutes: [Double]?
    /// Walking speed on flat ground, km/h.
    public var walkKmPerHour: Double?
    /// Path length over straight-line distance (mountain paths).
    public var terrainFactor: Double?
    /// Days per week a backpack unit stays at its station.
    public var restDaysPerWeek: Double?
    /// Probability that an intermittent village gives a cellular window during a stop.
    public var intermittentWindowProbability: Double?
    /// Length of that window: [min, max] minutes.
    public var intermittentWindowMinutes: [Double]?
    /// Uplink windows per day of a relay box at an intermittent village.
    public var relayUplinkWindowsPerDay: Int?
    /// Length of a relay uplink window, minutes.
    public var relayUplinkMinutes: Double?
    /// Vehicle speed, km/h.
    public var driveKmPerHour: Double?
    /// Road length over straight-line distance.
    public var roadFactor: Double?
    /// Time a vehicle spends on scene: [min, max] minutes.
    public var onSceneMinutes: [Double]?
    /// Wired link outages per link per 30 days.
    public var wiredOutagesPer30Days: Double?
    /// Mean wired outage, hours.
    public var wiredOutageMeanHours: Double?
    /// Link speeds by link class name (see `LinkClass`).
    public var links: [String: LinkParameters]?
    /// Incidents per year, whole city.
    public var incidentsPerYear: Double?
    /// Visits written in a year, whole city (default 650,000). An assumption, not a figure of the source: the
    /// article's about 650,000 visits to returning migrant workers are counted "to date" (cumulative, start
    /// not given), and reading them as one year's visits (about 1,780 a day) is this model's choice
    /// (`shared/seed/FACTS.md`; the shipped scenarios say so in their `notes`).
    public var visitsPerYear: Double?
    /// Shares of the 11 incident categories (keys: `Incident.Category` raw values).
    public var categoryShares: [String: Double]?
    /// Shares of incident priorities (keys `urgent`, `high`, `normal`, `low`).
    public var priorityShares: [String: Double]?
    /// Feedback deadline after the report by priority, hours.
    public var feedbackDeadlineHours: [String: Double]?
    /// Who handles an incident (`docs/simulator.md`, "Issue 14: dispatch"): `nearest` (default) — the station
    /// writes the incident and a dispatch, the nearest available unit (a backpack officer of the station on
    /// patrol within `maxWalkMinutes`, else a free county car, else the station's duty officers) goes there and
    /// writes on-scene status and feedback on its own device at the scene, a backpack officer from the moment
    /// its device's store holds the dispatch; `nearest-planned` — the same, but the officer acts at the moment
    /// the patrol plan says the device can first hold it (direct paths only: the model before the reactive
    /// dispatch, kept for comparison); `legacy` — the model before
    /// 2026-12-05 (a backpack only if one is in the village at that moment, else the station with a county car
    /// for urgent/high, else the station writes everything), incidents uniform over the day unless
    /// `incidentHourWeights` is given.
    public var dispatch: String?
    /// Relative incident rate of each hour of the day, 24 weights (hour 0 first). Default for `nearest`:
    /// `LongnanScenario.defaultIncidentHourWeights` (an assumption: the article gives no hourly figures);
    /// for `legacy`: uniform. 24 equal weights give the uniform day.
    public var incidentHourWeights: [Double]?
    /// A backpack officer is dispatched only if the walk from where the patrol plan has them is at most this
    /// long (minutes, default 120); farther incidents need a car.
    public var maxWalkMinutes: Double?
    /// Minutes from the report to the dispatch the station writes: [min, max] (default [1, 5]).
    public var dispatchMinutes: [Double]?
    /// Minutes from the moment a dispatched backpack officer's device holds the dispatch to the officer's
    /// departure for the scene: [min, max] (default [1, 5]; `dispatch: nearest` only).
    public var reactionMinutes: [Double]?
    /// Two backpack officers of one station at one village at overlapping times (patrol stops, incident scenes)
    /// get a `backpack-direct` contact (Wi-Fi Direct or Bluetooth) for the overlap, tagged with both officers'
    /// plans (default true; `dispatch: nearest` only: docs/simulator.md, "Officers meeting; village-scope logs").
    public var backpackMeetings: Bool?
    /// The log a change is written to: `village` (default; what a real node does: the record's scope, e.g.
    /// `longnan/wudu/station-017/village-0412`, one log per author and village) or `station` (one log per
    /// author and station, the model before 2026-12-05).
    public var logScope: String?
}

/// The `randomContacts` section.
public struct RandomContactsConfig: Codable, Sendable {
    /// Number of nodes.
    public var nodes: Int
    /// Contact rate per pair per hour (λ).
    public var ratePerPairPerHour: Double
    /// Duration of each contact, seconds.
    public var contactSeconds: Double?
    /// Messages to create; message `i` is created at node `i mod nodes` at `i * messageSpacingSeconds`.
    public var messages: Int?
    /// Spacing between messages, seconds.
    public var messageSpacingSeconds: Double?
    /// Message size, bytes.
    public var messageBytes: Int32?
}

/// The `trace` section.
public struct TraceConfig: Codable, Sendable {
    /// Path of a ONE connection-event trace (`TIME CONN A B up|down`), relative to the scenario file.
    public var file: String
    /// Link speed of every contact.
    public var link: LinkParameters?
    /// Messages per node per day.
    public var messagesPerNodePerDay: Double?
    /// Message size, bytes.
    public var messageBytes: Int32?
}

/// The `faults` section. Every concrete value is derived from the run's seed.
public struct FaultConfig: Codable, Sendable {
    /// Crashes per field device (backpack, vehicle, relay) per year.
    public var crashesPerDeviceYear: Double?
    /// Downtime after a crash: [min, max] minutes.
    public var crashDowntimeMinutes: [Double]?
    /// Backpack units lost for good per year.
    public var deviceLossPerYear: Double?
    /// Cut one county off from HQ for a while.
    public var partition: Bool?
    /// Length of the partition: [min, max] days (capped at 30% of the run).
    public var partitionDays: [Double]?
    /// Share of field devices with a skewed clock.
    public var clockSkewShare: Double?
    /// Largest skew, hours (either direction).
    public var clockSkewMaxHours: Double?
    /// Probability that a frame arriving on any link is delivered twice (default 0).
    public var linkDuplicate: Double?
    /// Probability that a frame arrives after the frame sent after it (default 0).
    public var linkReorder: Double?
    /// Probability that a frame arrives with one bit flipped (default 0).
    public var linkCorrupt: Double?
    /// Node classes whose store runs `synchronous = NORMAL` (`store.syncMode = normal`; default none: every
    /// store `FULL`, as the real default). A crash of such a node is a power loss that loses its commits
    /// since the last WAL checkpoint (`StoreDurability`).
    public var normalSyncClasses: [String]?
    /// Commits between two WAL checkpoints (durable points) of a `normal` store (default 74).
    public var walCheckpointCommits: Int?
    /// Crashes per HQ, county and station node per year (default 0: they never crash). Each is a process or
    /// power loss, a restart or an upgrade: the node's sessions end at once, it is unreachable for the downtime,
    /// and it restarts from what its store kept (docs/simulator.md, "Crashes of HQ, counties and stations").
    public var crashesPerInfraYear: Double?
    /// Downtime after a crash of an HQ, county or station node: [min, max] minutes (default [30, 240]).
    public var infraCrashDowntimeMinutes: [Double]?
    /// Bytes of stored changes each relay box keeps (`relay.quotaBytes` of the node's config, through the
    /// store's `StoreLimits.quotaBytes`; default 0: no quota). Past it the relay evicts changes HQ receipted and
    /// refuses the least urgent incoming ones.
    public var relayQuotaBytes: Int?
}

/// A scenario file.
public struct ScenarioFile: Codable, Sendable {
    /// Name printed in outputs.
    public var name: String
    /// `longnan`, `random-contacts` or `trace`.
    public var kind: String
    /// Free text for the reader (JSON has no comments): assumptions and sources of the file's figures.
    /// `fieldsim` prints each at the start of a run; nothing else reads them.
    public var notes: [String]?
    /// Simulated days.
    public var days: Double
    /// Changes created before this many days are excluded from message statistics.
    public var warmupDays: Double?
    /// No changes are written after this many days (default: `days - 2` for longnan, `days` otherwise).
    public var workloadStopDays: Double?
    /// Time-series sampling interval, minutes.
    public var sampleIntervalMinutes: Double?
    /// Bytes of the signed, encrypted envelope around each change's payload.
    public var changeEnvelopeBytes: Int32?
    /// The longnan section.
    public var longnan: LongnanConfig?
    /// The random-contacts section.
    public var randomContacts: RandomContactsConfig?
    /// The trace section.
    public var trace: TraceConfig?
    /// Faults.
    public var faults: FaultConfig?
    /// Epoch key rotation (`KeyRotation`; docs/simulator.md, "Key grants and epoch rotation").
    public var keys: KeysConfig?

    /// The largest duration in minutes a `[min, max]` key of minutes may give (a year): larger values would
    /// overflow the simulated clock's milliseconds when converted.
    static let maxMinutes: Double = 525_600

    /// Loads and validates a scenario file.
    /// - Throws: `ScenarioError` naming the file and the problem.
    public static func load(path: String) throws(ScenarioError) -> ScenarioFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError(file: path, "cannot read the file")
        }
        return try parse(data, file: path)
    }

    /// Parses and validates scenario JSON.
    /// - Throws: `ScenarioError` naming the key that is wrong.
    public static func parse(_ data: Data, file: String = "<inline>") throws(ScenarioError) -> ScenarioFile {
        let s: ScenarioFile
        do { s = try JSONDecoder().decode(ScenarioFile.self, from: data) } catch let e as Swift.DecodingError {
            throw ScenarioError(file: file, describe(e))
        } catch { throw ScenarioError(file: file, "\(error)") }
        try s.validate(file: file)
        return s
    }

    private static func describe(_ e: Swift.DecodingError) -> String {
        func path(_ c: [any CodingKey]) -> String { c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
        switch e {
        case let .keyNotFound(k, ctx): return "missing key \"\(path(ctx.codingPath + [k]))\""
        case let .typeMismatch(t, ctx): return "\"\(path(ctx.codingPath))\" should be \(t)"
        case let .valueNotFound(t, ctx): return "\"\(path(ctx.codingPath))\" is null, expected \(t)"
        case let .dataCorrupted(ctx): return "invalid JSON at \"\(path(ctx.codingPath))\": \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }

    func validate(file: String) throws(ScenarioError) {
        func fail(_ m: String) -> ScenarioError { ScenarioError(file: file, m) }
        guard days > 0, days <= 3_660 else { throw fail("\"days\" must be in (0, 3660], got \(days)") }
        if let w = warmupDays, w < 0 || w >= days { throw fail("\"warmupDays\" must be in [0, days)") }
        if let w = workloadStopDays, w <= 0 || w > days { throw fail("\"workloadStopDays\" must be in (0, days]") }
        if let s = sampleIntervalMinutes, s <= 0 { throw fail("\"sampleIntervalMinutes\" must be positive") }
        switch kind {
        case "longnan":
            guard let l = longnan else { throw fail("kind \"longnan\" needs a \"longnan\" section") }
            guard !l.counties.isEmpty else { throw fail("\"longnan.counties\" is empty") }
            for c in l.counties {
                guard (try? Scope(c.name)) != nil, !c.name.contains("/") else { throw fail("county name \"\(c.name)\" is not a scope segment") }
                guard (-90...90).contains(c.lat), (-180...180).contains(c.lon) else { throw fail("county \"\(c.name)\" has coordinates out of range") }
            }
            if let h = l.hqCounty, !l.counties.contains(where: { $0.name == h }) { throw fail("\"longnan.hqCounty\" \"\(h)\" is not a county") }
            if let n = l.stations, n < l.counties.count { throw fail("\"longnan.stations\" must be at least the number of counties") }
            if let n = l.villages, n < (l.stations ?? 202) { throw fail("\"longnan.villages\" must be at least the number of stations") }
            if let sh = l.connectivityShares {
                for k in sh.keys.sorted() where !["4g", "intermittent", "none"].contains(k) {
                    throw fail("\"longnan.connectivityShares\" has unknown class \"\(k)\" (use 4g, intermittent, none)")
                }
                let total = sh.values.reduce(0, +)
                guard abs(total - 1) < 0.001 else { throw fail("\"longnan.connectivityShares\" must sum to 1, got \(total)") }
            }
            if let d = l.dispatch, !["nearest", "nearest-planned", "legacy"].contains(d) {
                throw fail("\"longnan.dispatch\" must be \"nearest\", \"nearest-planned\" or \"legacy\", got \"\(d)\"")
            }
            if let w = l.incidentHourWeights {
                guard w.count == 24, w.allSatisfy({ $0 >= 0 && $0.isFinite }), w.reduce(0, +) > 0 else {
                    throw fail("\"longnan.incidentHourWeights\" needs 24 finite non-negative weights, not all 0")
                }
            }
            // Travel times divide by these: 0, negative or non-finite values would trap in the conversion to SimTime.
            for (key, v) in [("walkKmPerHour", l.walkKmPerHour), ("terrainFactor", l.terrainFactor),
                             ("driveKmPerHour", l.driveKmPerHour), ("roadFactor", l.roadFactor)] {
                if let v, !(v > 0 && v.isFinite) { throw fail("\"longnan.\(key)\" must be a finite number > 0") }
            }
            if let m = l.maxWalkMinutes, !(m >= 0 && m.isFinite) { throw fail("\"longnan.maxWalkMinutes\" must be a finite number >= 0") }
            if let d = l.dispatchMinutes, d.count != 2 || !(d[0] >= 0 && d[0] <= d[1] && d[1].isFinite) {
                throw fail("\"longnan.dispatchMinutes\" needs [min, max] with 0 <= min <= max")
            }
            // Converted to ms: a value too large for the simulated clock would trap in the conversion to SimTime.
            if let d = l.reactionMinutes, d.count != 2 || !(d[0] >= 0 && d[0] <= d[1] && d[1] <= Self.maxMinutes) {
                throw fail("\"longnan.reactionMinutes\" needs [min, max] with 0 <= min <= max <= \(Int(Self.maxMinutes)) (a year)")
            }
            if let k = l.logScope, !["village", "station"].contains(k) {
                throw fail("\"longnan.logScope\" must be \"village\" or \"station\", got \"\(k)\"")
            }
            if l.backpackMeetings == true, let d = l.dispatch, d != "nearest" {
                throw fail("\"longnan.backpackMeetings\" needs \"dispatch\": \"nearest\" (the meetings follow the reactive plans)")
            }
            if let sh = l.priorityShares {
                for k in sh.keys.sorted() where !["urgent", "high", "normal", "low"].contains(k) {
                    throw fail("\"longnan.priorityShares\" has unknown priority \"\(k)\"")
                }
                guard abs(sh.values.reduce(0, +) - 1) < 0.001 else { throw fail("\"longnan.priorityShares\" must sum to 1") }
            }
            if let sh = l.categoryShares {
                for k in sh.keys.sorted() where Incident.Category(rawValue: k) == nil {
                    throw fail("\"longnan.categoryShares\" has unknown category \"\(k)\"")
                }
            }
            if let links = l.links {
                for k in links.keys.sorted() where !LinkClass.allCases.contains(where: { $0.description == k }) {
                    throw fail("\"longnan.links\" has unknown link class \"\(k)\"")
                }
                for (k, v) in links.sorted(by: { $0.key < $1.key }) where v.bytesPerSecond < 0 || v.latencyMs < 0 {
                    throw fail("\"longnan.links.\(k)\" has a negative value")
                }
            }
            for (key, r) in [("villagesPerPatrol", l.villagesPerPatrol.map { $0.map(Double.init) }), ("dwellMinutes", l.dwellMinutes),
                             ("villageRadiusKm", l.villageRadiusKm), ("onSceneMinutes", l.onSceneMinutes),
                             ("intermittentWindowMinutes", l.intermittentWindowMinutes)] {
                if let r, r.count != 2 || r[0] > r[1] || r[0] < 0 || !(r[1] <= Self.maxMinutes) {
                    throw fail("\"longnan.\(key)\" must be [min, max] with 0 <= min <= max <= \(Int(Self.maxMinutes))")
                }
            }
        case "random-contacts":
            guard let r = randomContacts else { throw fail("kind \"random-contacts\" needs a \"randomContacts\" section") }
            guard r.nodes >= 2 else { throw fail("\"randomContacts.nodes\" must be at least 2") }
            guard r.ratePerPairPerHour > 0 else { throw fail("\"randomContacts.ratePerPairPerHour\" must be positive") }
        case "trace":
            guard trace != nil else { throw fail("kind \"trace\" needs a \"trace\" section") }
        default:
            throw fail("unknown kind \"\(kind)\" (use longnan, random-contacts or trace)")
        }
        if let f = faults {
            if let r = f.crashDowntimeMinutes, r.count != 2 || r[0] > r[1] || r[0] < 0 || !(r[1] <= Self.maxMinutes) {
                throw fail("\"faults.crashDowntimeMinutes\" must be [min, max] with 0 <= min <= max <= \(Int(Self.maxMinutes))")
            }
            if let r = f.partitionDays, r.count != 2 || r[0] > r[1] || r[0] < 0 { throw fail("\"faults.partitionDays\" must be [min, max]") }
            if let s = f.clockSkewShare, !(0...1).contains(s) { throw fail("\"faults.clockSkewShare\" must be in [0, 1]") }
            for (key, p) in [("linkDuplicate", f.linkDuplicate), ("linkReorder", f.linkReorder), ("linkCorrupt", f.linkCorrupt)] {
                if let p, !(0...0.5).contains(p) { throw fail("\"faults.\(key)\" must be a probability in [0, 0.5]") }
            }
            for c in f.normalSyncClasses ?? [] where !NodeClass.allCases.contains(where: { $0.description == c }) {
                throw fail("\"faults.normalSyncClasses\" has an unknown node class \"\(c)\" (use \(NodeClass.allCases.map(\.description).joined(separator: ", ")))")
            }
            if let k = f.walCheckpointCommits, k < 1 { throw fail("\"faults.walCheckpointCommits\" must be at least 1") }
            // The node refuses HQ with `store.syncMode = normal` (`RolePolicy.check`): its receipts let relays evict.
            if (f.normalSyncClasses ?? []).contains(NodeClass.hq.description) {
                throw fail("\"faults.normalSyncClasses\" may not name \"hq\": HQ's store must run synchronous=FULL (the node refuses \"normal\" for HQ: a power loss could take back changes its receipts let relay boxes evict)")
            }
            // A Poisson draw per node: a negative, non-finite or huge rate would trap or never end.
            if let c = f.crashesPerInfraYear, !(c >= 0 && c <= 100_000) {
                throw fail("\"faults.crashesPerInfraYear\" must be a number of crashes per node-year in [0, 100000]")
            }
            if let r = f.infraCrashDowntimeMinutes, r.count != 2 || !(r[0] >= 0 && r[0] <= r[1] && r[1] <= Self.maxMinutes) {
                throw fail("\"faults.infraCrashDowntimeMinutes\" must be [min, max] with 0 <= min <= max <= \(Int(Self.maxMinutes)) (a year)")
            }
            if let q = f.relayQuotaBytes, q < 0 { throw fail("\"faults.relayQuotaBytes\" must be a number of bytes >= 0 (0: no quota)") }
        }
        if let k = keys {
            // Converted to ms: a negative, non-finite or huge value would trap in the conversion to SimTime.
            if let s = k.rotateAfterRevocationSeconds, !(s >= 0 && s <= 3.2e8) { throw fail("\"keys.rotateAfterRevocationSeconds\" must be a number of seconds in [0, 3.2e8]") }
            if let d = k.rotateEveryDays, !(d >= 0.001 && d <= 3_660) { throw fail("\"keys.rotateEveryDays\" must be a number of days in [0.001, 3660]") }
        }
    }
}

/// Seeded random helpers over `SplitMix64` (FieldSyncGeo's `SeededRandom`, shared with the reports' map, which
/// places Longnan's stations from the same stream). Independent streams are derived from (seed, tag, entity,
/// day), so a scenario can generate any day of any entity lazily and still be reproducible.
public typealias SimRandom = SeededRandom
