// The `longnan` scenario: 1 HQ, 9 counties, 202 stations, ~3,200 synthetic villages, patrols, vehicles,
// relay boxes, wired links with outages, the article's yearly workload, and seeded faults.

import FieldSyncCore
import FieldSyncGeo
import Foundation

/// Connectivity class of a village.
public enum Connectivity: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// 4G usable.
    case usable4G = 0
    /// Intermittent coverage.
    case intermittent
    /// No coverage.
    case none
    /// Key used in scenario files.
    public var description: String { ["4g", "intermittent", "none"][rawValue] }
}

/// A synthetic village.
public struct Village: Sendable {
    /// Station index.
    public var station: Int32
    /// Latitude.
    public var lat: Double
    /// Longitude.
    public var lon: Double
    /// Connectivity.
    public var connectivity: Connectivity
    /// Relay box node at the village, or -1.
    public var relay: NodeIndex
}

/// Wire sizes of the workload's changes, measured by encoding representative edits with FieldSyncCore's
/// canonical encoding, plus a modelled envelope (header, key slot, nonce, tag, signature).
public struct ChangeSizes: Sendable, Equatable {
    /// Creating edit of an incident.
    public var incidentCreate: Int32
    /// Status change.
    public var status: Int32
    /// Feedback.
    public var feedback: Int32
    /// Creating edit of a visit.
    public var visit: Int32
    /// The envelope bytes included in each.
    public var envelope: Int32

    /// Measures the payloads. Text lengths are assumptions: a 60-character Chinese summary (180 bytes),
    /// a 40-character note, a 50-character feedback, a 50-character visit outcome.
    public static func measured(envelope: Int32) -> ChangeSizes {
        var rng = SplitMix64(seed: 7)
        let author = DeviceID(.random(using: &rng))
        let scope = try! Scope("longnan/wudu/station-017/village-0412")
        let hlc = HLCTimestamp(milliseconds: 1_717_200_000_000, counter: 0)
        let zh = { (n: Int) in String(repeating: "警", count: n) }
        let loc = Location(latitude: 33.412345, longitude: 104.951234, placeName: "village-0412")
        func size(_ e: RecordEdit) -> Int32 {
            var w = ByteWriter()
            e.encode(to: &w)
            return Int32(w.bytes.count)
        }
        let id = RecordID.random(using: &rng)
        let create = Incident.create(id: id, scope: scope, author: author, hlc: hlc, category: .dispute, priority: .high,
                                     location: loc, summary: zh(60), reportedAt: 1_717_200_000_000, reporter: zh(4),
                                     feedbackDeadline: 1_717_286_400_000, notes: [zh(40)])
        let status = RecordEdit(record: id, kind: .incident, scope: scope, author: author, hlc: hlc, creates: false,
                                actions: [Incident.statusAction(generation: 0, .onScene)])
        let feedback = RecordEdit(record: id, kind: .incident, scope: scope, author: author, hlc: hlc, creates: false,
                                  actions: [.set(field: Incident.Field.feedback, value: .string(zh(50))),
                                            Incident.statusAction(generation: 0, .closed)])
        let visit = Visit.create(id: .random(using: &rng), scope: scope, author: author, hlc: hlc, subject: zh(3),
                                 visitor: zh(3), visitType: .returningMigrantWorker, visitedAt: 1_717_200_000_000,
                                 location: loc, outcome: zh(50))
        return ChangeSizes(incidentCreate: size(create) + envelope, status: size(status) + envelope,
                           feedback: size(feedback) + envelope, visit: size(visit) + envelope, envelope: envelope)
    }
}

/// One stop of a patrol.
struct PatrolStop {
    var village: Int32
    var arrive: SimTime
    var leave: SimTime
    /// `nearest` dispatch: the intermittent cellular window `[wStart, wEnd)` of the stop (none if `wEnd <= wStart`),
    /// drawn with the plan so that the dispatcher's model of when the unit can be reached and the contacts agree.
    var wStart: SimTime = 0
    var wEnd: SimTime = 0
    /// An incident the unit was dispatched to (no visits are written there).
    var incident = false
    /// Reactive `nearest` dispatch: the visits written at the stop, as offsets from `arrive` (drawn with the plan,
    /// so that a stop moved later by a detour keeps its visits).
    var visits: [SimTime] = []
}

/// A backpack unit's plan for one day: a pure function of (seed, unit, day).
struct PatrolPlan {
    var rest: Bool
    var depart: SimTime
    var stops: [PatrolStop]
    var back: SimTime
    /// `nearest` dispatch: the unit was back at its station at `.0` and left it again at `.1` for an incident
    /// (its last stop).
    var homeBreak: (SimTime, SimTime)? = nil
    /// The day of the plan.
    var day = 0
    /// Reactive `nearest` dispatch: the plan's tag in the engine (`ScenarioSchedule.withdraw`); a detour gives
    /// the plan a new one.
    var tag: UInt64 = 0
}

/// Which kind of unit handles an incident under `nearest` dispatch.
public enum DispatchUnit: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// A backpack officer of the incident's station on patrol, walking.
    case backpack = 0
    /// A county car (a `vehicle` node), driving from the county seat.
    case vehicle
    /// The station's duty officers, driving from the station; they write on the station's node on return.
    case station
    /// Name used in outputs.
    public var description: String { ["backpack", "vehicle", "station"][rawValue] }
}

/// One incident's dispatch under `nearest` dispatch (`nearest-planned`: kept for the day being generated,
/// `dispatchesToday`; `nearest`: for the whole run, `dispatchLog`, completed when the unit's store first holds
/// the dispatch).
public struct DispatchRecord: Sendable {
    /// The incident (`ChangeSpec.subject`).
    public var subject: Int64
    /// The village.
    public var village: Int32
    /// When it was reported (the station writes the incident).
    public var reported: SimTime
    /// When the station wrote the dispatch.
    public var dispatched: SimTime
    /// When the unit acts on the dispatch. `nearest`: when a backpack's store first held the dispatch change
    /// (-1 while it has not); `nearest-planned`: the first direct contact with its station from `dispatched` on
    /// that its plan gives (a 4G stop, an intermittent window, the station's Wi-Fi). Cars and the station at once.
    public var received: SimTime
    /// The unit.
    public var unit: NodeIndex
    /// Its kind.
    public var kind: DispatchUnit
    /// Straight-line distance from the unit to the village when the dispatch was written, km.
    public var distanceKm: Double
    /// Backpack units of the station that were available (on patrol, not busy) at `dispatched`, with their
    /// distance in km, in station order.
    public var available: [(NodeIndex, Double)]
    /// When the unit reached the scene (on-scene status); -1 while a backpack has not received the dispatch.
    public var onScene: SimTime
    /// When the feedback was written; -1 while a backpack has not received the dispatch.
    public var feedback: SimTime
    /// `nearest`: the class of the contact over which a backpack's store first held the dispatch.
    public var via: LinkClass? = nil
    /// `nearest`: when the officer turned round (`received` plus the reaction time; -1 before).
    public var left: SimTime = -1
}

/// An incident waiting for its dispatch (reactive `nearest` dispatch).
struct PendingIncident {
    var reported: SimTime
    var village: Int32
    var priority: Int
    var deadline: SimTime
    var day: Int
    var ordinal: Int
}

/// The Longnan scenario generator.
public struct LongnanScenario: Scenario {
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
    public private(set) var clockSkew: [SimTime] = []
    /// Parameters derived from the seed, printed at the start of the run.
    public private(set) var derivedParameters: [(String, String)] = []

    /// The seed.
    public let seed: UInt64
    /// Villages (synthetic).
    public private(set) var villages: [Village] = []
    /// Change sizes in use.
    public let sizes: ChangeSizes

    let cfg: LongnanConfig
    private var hq: NodeIndex = 0
    private var countyNode: [NodeIndex] = []
    private var stationNode: [NodeIndex] = []
    private var stationCounty: [Int32] = []
    private var stationVillages: [[Int32]] = []
    private(set) var backpacks: [[NodeIndex]] = []  // by station
    private var vehicles: [[NodeIndex]] = []  // by county
    private var vehicleFree: [SimTime] = []  // by vehicle ordinal
    private var vehicleOrdinal: [NodeIndex: Int] = [:]  // lookup only
    private(set) var links: [LinkClass: ContactSpec] = [:]  // lookup only: template (a, b unset)
    private var wiredSegments: [(SimTime, SimTime, ContactSpec)] = []  // sorted by start
    private var wiredCursor = 0
    private var faults: [(SimTime, EventKind, NodeIndex)] = []  // sorted
    private var faultCursor = 0
    private var visitMean = 0.0
    private(set) var plansToday: [PatrolPlan] = []  // by backpack ordinal
    private(set) var backpackList: [NodeIndex] = []
    private(set) var backpackOrdinal: [Int] = []  // by station: ordinal of its first backpack
    private var incidentsByCategory = Array(repeating: 0, count: Incident.Category.allCases.count)
    private var busyUntil: [SimTime] = []  // by backpack ordinal (`nearest` dispatch)
    /// The dispatches of the day last generated (`nearest` dispatch), in report order.
    public private(set) var dispatchesToday: [DispatchRecord] = []
    /// Incidents handled so far by each kind of unit (`DispatchUnit` order).
    public private(set) var dispatchCounts = Array(repeating: 0, count: DispatchUnit.allCases.count)
    /// Whether the `legacy` incident model is in use (`LongnanConfig.dispatch`).
    public var legacyDispatch: Bool { cfg.dispatch == "legacy" }
    /// Whether a backpack officer acts on a dispatch at the moment a plan computed in advance says the device
    /// can hold it (`nearest-planned`) rather than when its store really holds it (`nearest`, the default).
    public var plannedDispatch: Bool { cfg.dispatch == "nearest-planned" }
    /// Reactive `nearest` dispatch: every dispatch of the run so far, in the order they were written.
    public private(set) var dispatchLog: [DispatchRecord] = []
    private(set) var lastPatrol: [PatrolPlan?] = []  // by backpack ordinal: its latest patrol of an earlier day
    private var planCount: [UInt32] = []  // by backpack ordinal: plans tagged so far
    private var pendingIncidents: [Int64: PendingIncident] = [:]  // by subject; lookup only, never iterated
    private var awaiting: [Int64: (log: Int, priority: SimPriority, deadline: SimTime)] = [:]  // by subject; lookup only, never iterated

    /// The default daily profile of incidents for `nearest` dispatch, relative rate per hour from 0 h. An
    /// assumption (the article gives no hourly figures): few calls from 1 to 5 h, a rise through the morning,
    /// a plateau over the working day and a peak in the evening (17-21 h), the evening rate 5 x the night's.
    public static let defaultIncidentHourWeights: [Double] = [
        0.6, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2, 1.3, 1.3,
        1.2, 1.2, 1.3, 1.3, 1.4, 1.5, 1.5, 1.6, 1.6, 1.4, 1.1, 0.8,
    ]

    /// The hourly weights in use: the file's, else the default of the dispatch model (`nil`: legacy's uniform draw).
    public var incidentHourWeights: [Double]? { cfg.incidentHourWeights ?? (legacyDispatch ? nil : Self.defaultIncidentHourWeights) }

    /// An incident time within the day starting at `dayStart`: an hour drawn by `weights`, uniform within it.
    static func incidentTime(dayStart: SimTime, weights: [Double], using r: inout SimRandom) -> SimTime {
        let h = r.weighted(weights)
        return dayStart + SimTime((Double(h) + r.unit()) * Double(Duration.hour))
    }

    private func param(_ key: String, _ d: Double, _ v: Double?) -> Double { v ?? d }

    /// Builds the world from the file and the seed.
    /// - Throws: `ScenarioError` if the configuration cannot be realised.
    public init(file: ScenarioFile, seed: UInt64, source: String = "<inline>") throws(ScenarioError) {
        guard let cfg = file.longnan else { throw ScenarioError(file: source, "no \"longnan\" section") }
        self.cfg = cfg
        self.seed = seed
        name = file.name
        duration = SimTime(file.days * Double(Duration.day))
        workloadEnd = SimTime((file.workloadStopDays ?? max(file.days - 2, file.days / 2)) * Double(Duration.day))
        warmup = SimTime((file.warmupDays ?? 0) * Double(Duration.day))
        sizes = ChangeSizes.measured(envelope: file.changeEnvelopeBytes ?? 228)

        let counties = cfg.counties
        let nStations = cfg.stations ?? 202
        let nVillages = cfg.villages ?? 3_200
        var r = SimRandom(seed: seed, 1)

        // Stations: one per county first, the rest spread uniformly at random among counties (FieldSyncGeo's
        // `StationLayout`, which the reports' map of Longnan draws with seed 1).
        let placed = StationLayout.place(counties: counties.map { ($0.name, $0.lat, $0.lon) }, count: nStations,
                                         radiusKm: cfg.stationRadiusKm ?? 35, using: &r)
        let sc = placed.map { $0.county }
        stationCounty = sc
        let stationPos = placed.map { $0.position }
        let domainNames = (0..<nStations).map { s in StationLayout.scope(county: counties[Int(sc[s])].name, index: s) }
        let w = World(domainCount: nStations, domainNames: domainNames)
        world = w

        // Villages: one per station first, the rest uniformly among stations; connectivity and relays by share.
        let shares = cfg.connectivityShares ?? ["4g": 0.55, "intermittent": 0.30, "none": 0.15]
        let shareW = Connectivity.allCases.map { shares[$0.description] ?? 0 }
        let relayP = cfg.relayProbability ?? ["4g": 0, "intermittent": 0.25, "none": 0.5]
        let vR = cfg.villageRadiusKm ?? [2, 12]
        var vs: [Int32] = (0..<nStations).map { Int32($0) }
        while vs.count < nVillages { vs.append(Int32(r.int(nStations))) }
        vs.sort()
        stationVillages = Array(repeating: [], count: nStations)
        var villageList: [Village] = []
        for (i, s) in vs.enumerated() {
            let p = stationPos[Int(s)]
            let (lat, lon) = Self.offset(p.0, p.1, km: r.uniform(vR[0], vR[1]), angle: r.uniform(0, 2 * .pi))
            let conn = Connectivity(rawValue: r.weighted(shareW))!
            let hasRelay = r.unit() < (relayP[conn.description] ?? 0)
            villageList.append(Village(station: s, lat: lat, lon: lon, connectivity: conn, relay: hasRelay ? -2 : -1))
            stationVillages[Int(s)].append(Int32(i))
        }

        // Nodes: HQ, counties, stations, backpacks, vehicles, relays.
        let hqName = cfg.hqCounty ?? counties[0].name
        let hqSeat = counties.first { $0.name == hqName }!
        let all = (0..<nStations).map { Int32($0) }
        hq = w.add(SimNode(nodeClass: .hq, name: "hq", scope: "longnan", latitude: hqSeat.lat, longitude: hqSeat.lon), domains: all)
        for (c, seat) in counties.enumerated() {
            let mine = all.filter { sc[Int($0)] == c }
            countyNode.append(w.add(SimNode(nodeClass: .county, name: seat.name, scope: "longnan/\(seat.name)",
                                            latitude: seat.lat, longitude: seat.lon, county: Int32(c)), domains: mine))
        }
        for s in 0..<nStations {
            stationNode.append(w.add(SimNode(nodeClass: .station, name: "station-\(String(format: "%03d", s + 1))",
                                             scope: domainNames[s], latitude: stationPos[s].0, longitude: stationPos[s].1,
                                             county: sc[s], station: Int32(s)), domains: [Int32(s)]))
        }
        let perStation = cfg.backpacksPerStation ?? 3
        backpacks = Array(repeating: [], count: nStations)
        for s in 0..<nStations {
            backpackOrdinal.append(backpackList.count)
            for k in 0..<perStation {
                let n = w.add(SimNode(nodeClass: .backpack, name: "station-\(String(format: "%03d", s + 1))-bp\(k + 1)",
                                      scope: domainNames[s], latitude: stationPos[s].0, longitude: stationPos[s].1,
                                      county: sc[s], station: Int32(s)), domains: [Int32(s)])
                backpacks[s].append(n)
                backpackList.append(n)
            }
        }
        let perCounty = cfg.vehiclesPerCounty ?? 2
        vehicles = Array(repeating: [], count: counties.count)
        for (c, seat) in counties.enumerated() {
            let mine = all.filter { sc[Int($0)] == c }
            for k in 0..<perCounty {
                let n = w.add(SimNode(nodeClass: .vehicle, name: "\(seat.name)-car\(k + 1)", scope: "longnan/\(seat.name)",
                                      latitude: seat.lat, longitude: seat.lon, county: Int32(c)), domains: mine)
                vehicleOrdinal[n] = vehicleFree.count
                vehicleFree.append(0)
                vehicles[c].append(n)
            }
        }
        for i in 0..<villageList.count where villageList[i].relay == -2 {
            let v = villageList[i]
            villageList[i].relay = w.add(SimNode(nodeClass: .relay, name: "relay-v\(String(format: "%04d", i + 1))",
                                                 scope: "\(domainNames[Int(v.station)])/village-\(String(format: "%04d", i + 1))",
                                                 latitude: v.lat, longitude: v.lon, county: sc[Int(v.station)], station: v.station),
                                         domains: [v.station])
        }
        villages = villageList
        w.places = villageList.map { ($0.lat, $0.lon) }
        if (cfg.logScope ?? "village") == "village" {
            w.placeScopes = villageList.indices.map { "\(domainNames[Int(villageList[$0].station)])/village-\(String(format: "%04d", $0 + 1))" }
        }
        busyUntil = Array(repeating: 0, count: backpackList.count)
        lastPatrol = Array(repeating: nil, count: backpackList.count)
        planCount = Array(repeating: 0, count: backpackList.count)

        // Links.
        let defaults: [LinkClass: LinkParameters] = [
            .wiredStationCounty: .init(bytesPerSecond: 1_250_000, latencyMs: 15),
            .wiredCountyHQ: .init(bytesPerSecond: 12_500_000, latencyMs: 10),
            .cellular4G: .init(bytesPerSecond: 125_000, latencyMs: 100),
            .cellularIntermittent: .init(bytesPerSecond: 32_000, latencyMs: 400),
            .stationWiFi: .init(bytesPerSecond: 2_500_000, latencyMs: 5),
            .relayWiFi: .init(bytesPerSecond: 2_500_000, latencyMs: 5),
            .relayUplink: .init(bytesPerSecond: 64_000, latencyMs: 300),
            .vehicleCellular: .init(bytesPerSecond: 125_000, latencyMs: 100),
            .backpackDirect: Self.defaultBackpackDirect,
        ]
        for (k, v) in defaults {
            let p = cfg.links?[k.description] ?? v
            links[k] = ContactSpec(a: 0, b: 0, linkClass: k, bytesPerSecond: p.bytesPerSecond, latency: p.latencyMs)
        }

        // Faults and wired outages, all derived from the seed.
        let f = file.faults ?? FaultConfig()
        let years = Double(duration) / Double(Duration.day) / 365
        var fr = SimRandom(seed: seed, 2)
        var wiredDown: [[(SimTime, SimTime)]] = []
        var wiredSpecs: [ContactSpec] = []
        for s in 0..<nStations { wiredSpecs.append(spec(.wiredStationCounty, stationNode[s], countyNode[Int(sc[s])])) }
        for c in 0..<counties.count { wiredSpecs.append(spec(.wiredCountyHQ, countyNode[c], hq)) }
        let outRate = (cfg.wiredOutagesPer30Days ?? 1) / (30 * Double(Duration.day))
        let outMean = (cfg.wiredOutageMeanHours ?? 3) * Double(Duration.hour)
        var outageCount = 0
        for _ in wiredSpecs {
            var list: [(SimTime, SimTime)] = []
            var t = outRate > 0 ? fr.exponential(mean: 1 / outRate) : .infinity
            while t < Double(duration) {
                let d = fr.exponential(mean: outMean)
                list.append((SimTime(t), SimTime(t + d)))
                outageCount += 1
                t += d + fr.exponential(mean: 1 / outRate)
            }
            wiredDown.append(list)
        }
        var partitionText = "off"
        if f.partition ?? true {
            let c = fr.int(counties.count)
            let pd = f.partitionDays ?? [2, 4]
            let len = min(fr.uniform(pd[0], pd[1]) * Double(Duration.day), 0.3 * Double(duration))
            let start = fr.uniform(0.2, 0.5) * Double(duration)
            wiredDown[nStations + c].append((SimTime(start), SimTime(start + len)))
            partitionText = "county \(counties[c].name) cut off from HQ at day \(String(format: "%.2f", start / Double(Duration.day))) for \(String(format: "%.2f", len / Double(Duration.day))) days"
        }
        for (i, spec) in wiredSpecs.enumerated() {
            // Up segments = complement of the merged outages within [0, duration].
            let downs = wiredDown[i].sorted { $0.0 < $1.0 }
            var t: SimTime = 0
            for (a, b) in downs {
                if a > t { wiredSegments.append((t, a, spec)) }
                t = max(t, b)
            }
            if t < duration { wiredSegments.append((t, duration + 1, spec)) }
        }
        wiredSegments.sort { ($0.0, $0.2.a, $0.2.b) < ($1.0, $1.2.a, $1.2.b) }

        let field: [NodeIndex] = (0..<w.count).map { NodeIndex($0) }.filter {
            [.backpack, .vehicle, .relay].contains(w.nodes[Int($0)].nodeClass)
        }
        let crashRate = f.crashesPerDeviceYear ?? 2
        let down = f.crashDowntimeMinutes ?? [10, 360]
        var crashCount = 0
        for n in field {
            let k = fr.poisson(crashRate * years)
            for _ in 0..<k {
                let t = SimTime(fr.uniform(0, Double(duration)))
                faults.append((t, .crash, n))
                faults.append((t + SimTime(fr.uniform(down[0], down[1]) * Double(Duration.minute)), .restart, n))
                crashCount += 1
            }
        }
        let losses = min(fr.poisson((f.deviceLossPerYear ?? 6) * years), backpackList.count)
        var lostNames: [String] = []
        var lostSet = Set<NodeIndex>()
        while lostSet.count < losses {
            let n = backpackList[fr.int(backpackList.count)]
            if lostSet.insert(n).inserted {
                let t = SimTime(fr.uniform(0, Double(workloadEnd)))
                faults.append((t, .lose, n))
                lostNames.append("\(w.nodes[Int(n)].name)@day\(String(format: "%.2f", Double(t) / Double(Duration.day)))")
            }
        }
        let infraCrashes = InfraCrashes.draw(world: w, faults: f, seed: seed, duration: duration, into: &faults)
        faults.sort { ($0.0, $0.1.rawValue, $0.2) < ($1.0, $1.1.rawValue, $1.2) }
        clockSkew = Array(repeating: 0, count: w.count)
        let skewShare = f.clockSkewShare ?? 0.05
        let skewMax = (f.clockSkewMaxHours ?? 6) * Double(Duration.hour)
        var skewed = 0
        for n in field where w.nodes[Int(n)].nodeClass != .relay && fr.unit() < skewShare {
            clockSkew[Int(n)] = SimTime(fr.uniform(-skewMax, skewMax))
            skewed += 1
        }

        // Visits per stop, from the yearly rate and the expected number of stops per day.
        let vpp = cfg.villagesPerPatrol ?? [3, 5]
        let restShare = (cfg.restDaysPerWeek ?? 2) / 7
        var stopsPerDay = 0.0
        for s in 0..<nStations {
            let nv = stationVillages[s].count
            var e = 0.0
            for k in vpp[0]...vpp[1] { e += Double(min(k, nv)) }
            e /= Double(vpp[1] - vpp[0] + 1)
            stopsPerDay += Double(backpacks[s].count) * (1 - restShare) * e
        }
        visitMean = stopsPerDay > 0 ? (cfg.visitsPerYear ?? 650_000) / 365 / stopsPerDay : 0

        var byClass = [0, 0, 0]
        for v in villages { byClass[v.connectivity.rawValue] += 1 }
        var byNode = Array(repeating: 0, count: NodeClass.allCases.count)
        for n in w.nodes { byNode[Int(n.nodeClass.rawValue)] += 1 }
        derivedParameters = [
            ("seed", "\(seed)"),
            ("nodes", NodeClass.allCases.filter { byNode[Int($0.rawValue)] > 0 }.map { "\($0)=\(byNode[Int($0.rawValue)])" }.joined(separator: " ")),
            ("villages (synthetic)", "\(villages.count): 4g=\(byClass[0]) intermittent=\(byClass[1]) none=\(byClass[2]) relays=\(byNode[Int(NodeClass.relay.rawValue)])"),
            ("days", "\(file.days), workload stops at day \(Double(workloadEnd) / Double(Duration.day)), warm-up \(Double(warmup) / Double(Duration.day)) days"),
            ("incidents/day", String(format: "%.1f", (cfg.incidentsPerYear ?? 190_000) / 365)),
            ("incident model", cfg.dispatch == "legacy"
                ? "legacy (a backpack in the village writes it, else the station, a county car for urgent/high)"
                : String(format: "nearest dispatch (backpack within %.0f min walk, else a free county car, else the station's duty officers); %@",
                         cfg.maxWalkMinutes ?? 120,
                         cfg.dispatch == "nearest-planned" ? "an officer acts when the plan says the device can hold the dispatch"
                             : "an officer acts when the device's store holds the dispatch")),
            ("incidents by hour", cfg.incidentHourWeights != nil ? "the file's 24 weights"
                : cfg.dispatch == "legacy" ? "uniform" : "default profile (night 0.3, evening 1.6 relative)"),
            ("visits/day", String(format: "%.1f (%.3f per village stop, %.0f stops/day expected)", (cfg.visitsPerYear ?? 650_000) / 365, visitMean, stopsPerDay)),
            ("change sizes (bytes, incl. \(sizes.envelope) envelope)", "incident-create=\(sizes.incidentCreate) status=\(sizes.status) feedback=\(sizes.feedback) visit=\(sizes.visit)"),
            ("wired outages", "\(outageCount) over \(wiredSpecs.count) links"),
            ("partition", partitionText),
            ("crashes", "\(crashCount) (field devices, downtime \(down[0])-\(down[1]) min)"),
            ("devices lost", lostNames.isEmpty ? "none" : lostNames.joined(separator: " ")),
            ("clock skew", "\(skewed) devices within ±\(skewMax / Double(Duration.hour)) h"),
            ("officers meeting", (cfg.backpackMeetings ?? true) && (cfg.dispatch ?? "nearest") == "nearest"
                ? "backpack-direct contacts for the overlap (\(links[.backpackDirect]!.bytesPerSecond) B/s, \(links[.backpackDirect]!.latency) ms)" : "off"),
            ("logs", w.placeScopes.isEmpty ? "per author and station" : "per author and village (the record's scope)"),
        ]
        if let infra = infraCrashes { derivedParameters.append(("crashes of hq, counties, stations", infra.text)) }
        if let q = f.relayQuotaBytes, q > 0 { derivedParameters.append(("relay quota", "\(q) bytes per relay box")) }
    }

    func spec(_ k: LinkClass, _ x: NodeIndex, _ y: NodeIndex) -> ContactSpec {
        var s = links[k]!
        s.a = min(x, y)
        s.b = max(x, y)
        return s
    }

    static func offset(_ lat: Double, _ lon: Double, km: Double, angle: Double) -> (Double, Double) { Geo.offset(lat, lon, km: km, angle: angle) }

    static func distanceKm(_ a: (Double, Double), _ b: (Double, Double)) -> Double { Geo.flatDistanceKm(a, b) }

    /// Node index of HQ.
    public var hqNode: NodeIndex { hq }

    /// Incidents generated so far by category (`Incident.Category.allCases` order).
    public var incidentCategories: [Int] { incidentsByCategory }

    // MARK: Patrols

    /// Officer `ordinal`'s plan for `day` with the intermittent windows of its stops drawn (at an intermittent
    /// village, a window with probability `intermittentWindowProbability`), as the `nearest` models use it.
    func planWithWindows(_ ordinal: Int, day: Int) -> PatrolPlan {
        let iw = cfg.intermittentWindowMinutes ?? [5, 20]
        let iwp = cfg.intermittentWindowProbability ?? 0.5
        var p = plan(ordinal, day: day)
        var r = SimRandom(seed: seed, 4, UInt64(ordinal), UInt64(day))
        for i in p.stops.indices where villages[Int(p.stops[i].village)].connectivity == .intermittent {
            let stop = p.stops[i]
            if r.unit() < iwp {
                let len = min(SimTime(r.uniform(iw[0], iw[1]) * Double(Duration.minute)), stop.leave - stop.arrive)
                let start = stop.arrive + SimTime(r.unit() * Double(stop.leave - stop.arrive - len))
                p.stops[i].wStart = start
                p.stops[i].wEnd = start + len
            }
        }
        return p
    }

    func plan(_ ordinal: Int, day: Int) -> PatrolPlan {
        let node = backpackList[ordinal]
        let s = Int(world.nodes[Int(node)].station)
        var r = SimRandom(seed: seed, 3, UInt64(ordinal), UInt64(day))
        let dayStart = SimTime(day) * Duration.day
        let rest = r.unit() < (cfg.restDaysPerWeek ?? 2) / 7
        let depart = dayStart + SimTime(((cfg.departHour ?? 8) * 60 + r.uniform(0, cfg.departJitterMinutes ?? 60)) * Double(Duration.minute))
        if rest { return PatrolPlan(rest: true, depart: depart, stops: [], back: depart) }
        let vpp = cfg.villagesPerPatrol ?? [3, 5]
        var pool = stationVillages[s]
        let k = min(vpp[0] + r.int(vpp[1] - vpp[0] + 1), pool.count)
        var chosen: [Int32] = []
        for i in 0..<k {
            let j = i + r.int(pool.count - i)
            pool.swapAt(i, j)
            chosen.append(pool[i])
        }
        let speed = (cfg.walkKmPerHour ?? 4) / (cfg.terrainFactor ?? 1.5)
        let dwell = cfg.dwellMinutes ?? [30, 90]
        var here = (world.nodes[Int(node)].latitude, world.nodes[Int(node)].longitude)
        let home = here
        var t = depart
        var stops: [PatrolStop] = []
        while !chosen.isEmpty {
            // Nearest village next (ties: lowest index).
            var best = 0
            var bestD = Double.infinity
            for (i, v) in chosen.enumerated() {
                let d = Self.distanceKm(here, (villages[Int(v)].lat, villages[Int(v)].lon))
                if d < bestD { bestD = d; best = i }
            }
            let v = chosen.remove(at: best)
            t += SimTime(bestD / speed * Double(Duration.hour))
            let leave = t + SimTime(r.uniform(dwell[0], dwell[1]) * Double(Duration.minute))
            stops.append(PatrolStop(village: v, arrive: t, leave: leave))
            t = leave
            here = (villages[Int(v)].lat, villages[Int(v)].lon)
        }
        t += SimTime(Self.distanceKm(here, home) / speed * Double(Duration.hour))
        return PatrolPlan(rest: false, depart: depart, stops: stops, back: max(t, depart + 1))
    }

    /// First departure on a day after `day` (searching up to 30 days ahead).
    func nextDeparture(_ ordinal: Int, after day: Int) -> SimTime {
        for d in (day + 1)...(day + 30) {
            let p = plan(ordinal, day: d)
            if !p.rest { return p.depart }
        }
        return SimTime(day + 31) * Duration.day
    }

    // MARK: Days

    /// Writes the contacts, changes and faults of `day` (the generation step is a day).
    public mutating func generate(step day: Int, into out: inout ScenarioSchedule) {
        let dayStart = SimTime(day) * Duration.day
        let dayEnd = dayStart + Duration.day
        // Wired link segments starting today.
        while wiredCursor < wiredSegments.count && wiredSegments[wiredCursor].0 < dayEnd {
            let (a, b, s) = wiredSegments[wiredCursor]
            out.contact(s, from: a, to: b)
            wiredCursor += 1
        }
        while faultCursor < faults.count && faults[faultCursor].0 < dayEnd {
            out.faults.append(faults[faultCursor])
            faultCursor += 1
        }
        if day == 0 {
            for list in vehicles {
                for v in list { out.ups.append((0, spec(.vehicleCellular, v, countyNode[Int(world.nodes[Int(v)].county)]))) }
            }
        }
        if plannedDispatch {
            generateNearest(day: day, dayStart: dayStart, into: &out)
            return
        }
        if !legacyDispatch {
            generateReactive(day: day, dayStart: dayStart, into: &out)
            return
        }
        // Patrols and their contacts.
        plansToday.removeAll(keepingCapacity: true)
        let iw = cfg.intermittentWindowMinutes ?? [5, 20]
        let iwp = cfg.intermittentWindowProbability ?? 0.5
        for (o, node) in backpackList.enumerated() {
            let p = plan(o, day: day)
            plansToday.append(p)
            let st = stationNode[Int(world.nodes[Int(node)].station)]
            if day == 0 {
                let end = p.rest ? nextDeparture(o, after: 0) : p.depart
                out.contact(spec(.stationWiFi, node, st), from: 0, to: end)
            }
            if p.rest { continue }
            var r = SimRandom(seed: seed, 4, UInt64(o), UInt64(day))
            for stop in p.stops {
                let v = villages[Int(stop.village)]
                switch v.connectivity {
                case .usable4G: out.contact(spec(.cellular4G, node, st), from: stop.arrive, to: stop.leave)
                case .intermittent:
                    if r.unit() < iwp {
                        let len = min(SimTime(r.uniform(iw[0], iw[1]) * Double(Duration.minute)), stop.leave - stop.arrive)
                        let start = stop.arrive + SimTime(r.unit() * Double(stop.leave - stop.arrive - len))
                        out.contact(spec(.cellularIntermittent, node, st), from: start, to: start + len)
                    }
                case .none: break
                }
                if v.relay >= 0 { out.contact(spec(.relayWiFi, node, v.relay), from: stop.arrive, to: stop.leave) }
            }
            out.contact(spec(.stationWiFi, node, st), from: p.back, to: max(p.back, nextDeparture(o, after: day)))
        }
        relayUplinks(day: day, dayStart: dayStart, into: &out)
        guard dayStart < workloadEnd else { return }
        generateWorkload(day: day, dayStart: dayStart, into: &out)
    }

    /// Relay uplinks at intermittent villages.
    private func relayUplinks(day: Int, dayStart: SimTime, into out: inout ScenarioSchedule) {
        for (i, v) in villages.enumerated() where v.relay >= 0 && v.connectivity == .intermittent {
            for (start, end) in relayUplinkWindows(village: i, day: day) {
                out.contact(spec(.relayUplink, v.relay, stationNode[Int(v.station)]), from: start, to: end)
            }
        }
    }

    /// The uplink windows of the relay box of village `i` (at an intermittent village) on `day`.
    func relayUplinkWindows(village i: Int, day: Int) -> [(SimTime, SimTime)] {
        let windows = cfg.relayUplinkWindowsPerDay ?? 2
        guard windows > 0 else { return [] }
        let wlen = SimTime((cfg.relayUplinkMinutes ?? 30) * Double(Duration.minute))
        let dayStart = SimTime(day) * Duration.day
        var r = SimRandom(seed: seed, 5, UInt64(i), UInt64(day))
        let slot = Duration.day / SimTime(windows)
        return (0..<windows).map { k in
            let start = dayStart + SimTime(k) * slot + SimTime(r.unit() * Double(max(slot - wlen, 0)))
            return (start, start + min(wlen, slot))
        }
    }

    private mutating func generateWorkload(day: Int, dayStart: SimTime, into out: inout ScenarioSchedule) {
        var r = SimRandom(seed: seed, 6, UInt64(day))
        let limit = workloadEnd
        func emit(_ t: SimTime, _ spec: ChangeSpec, _ out: inout ScenarioSchedule) {
            if t < limit { out.changes.append((t, spec)) }
        }
        // Visits at every stop.
        for (o, p) in plansToday.enumerated() where !p.rest {
            let node = backpackList[o]
            for stop in p.stops {
                let n = r.poisson(visitMean)
                for _ in 0..<n {
                    let t = stop.arrive + SimTime(r.unit() * Double(stop.leave - stop.arrive))
                    emit(t, ChangeSpec(author: node, domain: villages[Int(stop.village)].station, place: stop.village,
                                       changeClass: .visit, priority: .none, size: sizes.visit), &out)
                }
            }
        }
        // Incidents.
        let catShares = Incident.Category.allCases.map { cfg.categoryShares?[$0.rawValue] ?? 1 }
        let prShares = ["urgent", "high", "normal", "low"].enumerated().map { cfg.priorityShares?[$0.element] ?? [0.05, 0.15, 0.6, 0.2][$0.offset] }
        let deadlineH = ["urgent", "high", "normal", "low"].enumerated().map { cfg.feedbackDeadlineHours?[$0.element] ?? [6, 12, 24, 72][$0.offset] }
        let n = r.poisson((cfg.incidentsPerYear ?? 190_000) / 365)
        var incidents: [(SimTime, Int32, Int, Int)] = []  // time, village, priority, ordinal
        let hourWeights = cfg.incidentHourWeights
        for i in 0..<n {
            let t = hourWeights.map { Self.incidentTime(dayStart: dayStart, weights: $0, using: &r) } ?? dayStart + SimTime(r.unit() * Double(Duration.day))
            let v = Int32(r.int(villages.count))
            incidentsByCategory[r.weighted(catShares)] += 1
            incidents.append((t, v, r.weighted(prShares), i))
        }
        incidents.sort { ($0.0, $0.3) < ($1.0, $1.3) }
        let onScene = cfg.onSceneMinutes ?? [30, 120]
        let driveSpeed = (cfg.driveKmPerHour ?? 40) / (cfg.roadFactor ?? 1.3)
        let min = Duration.minute
        for (t, v, pr, ordinal) in incidents {
            let village = villages[Int(v)]
            let s = Int(village.station)
            let st = stationNode[s]
            let prio = SimPriority(rawValue: UInt8(pr))!
            let deadline = t + SimTime(deadlineH[pr] * Double(Duration.hour))
            func change(_ author: NodeIndex, _ cls: ChangeClass, _ size: Int32, deadline d: SimTime = -1) -> ChangeSpec {
                ChangeSpec(author: author, domain: Int32(s), place: v, changeClass: cls, priority: prio, size: size, deadline: d,
                           subject: Int64(day) << 24 | Int64(ordinal))
            }
            // Is one of the station's backpack units in that village right now?
            var present: NodeIndex = -1
            for (k, node) in backpacks[s].enumerated() {
                let o = backpackOrdinal[s] + k
                if plansToday[o].stops.contains(where: { $0.village == v && $0.arrive <= t && t < $0.leave }) { present = node; break }
            }
            if present >= 0 {
                emit(t, change(present, .incidentCreate, sizes.incidentCreate), &out)
                let on = t + SimTime(r.uniform(0, 5) * Double(min))
                emit(on, change(present, .incidentStatus, sizes.status), &out)
                let res = on + SimTime(r.uniform(20, 120) * Double(min))
                emit(res, change(present, .incidentStatus, sizes.status), &out)
                emit(res + SimTime(r.uniform(10, 60) * Double(min)), change(present, .incidentFeedback, sizes.feedback, deadline: deadline), &out)
            } else if prio <= .high, let cars = Optional(vehicles[Int(stationCounty[s])]), !cars.isEmpty {
                emit(t, change(st, .incidentCreate, sizes.incidentCreate), &out)
                emit(t + SimTime(r.uniform(1, 5) * Double(min)), change(st, .incidentStatus, sizes.status), &out)
                var car = cars[0]
                for c in cars where vehicleFree[vehicleOrdinal[c]!] < vehicleFree[vehicleOrdinal[car]!] { car = c }
                let ord = vehicleOrdinal[car]!
                let seat = cfg.counties[Int(stationCounty[s])]
                let drive = SimTime(Self.distanceKm((seat.lat, seat.lon), (village.lat, village.lon)) / driveSpeed * Double(Duration.hour))
                let depart = Swift.max(t + 5 * min, vehicleFree[ord])
                let arrive = depart + drive
                let leave = arrive + SimTime(r.uniform(onScene[0], onScene[1]) * Double(min))
                vehicleFree[ord] = leave + drive
                emit(arrive, change(car, .incidentStatus, sizes.status), &out)
                emit(leave, change(car, .incidentStatus, sizes.status), &out)
                emit(leave + SimTime(r.uniform(10, 60) * Double(min)), change(car, .incidentFeedback, sizes.feedback, deadline: deadline), &out)
                if village.connectivity != .usable4G {
                    let county = countyNode[Int(stationCounty[s])]
                    out.downs.append((arrive, car, county))
                    out.ups.append((leave, spec(.vehicleCellular, car, county)))
                }
            } else {
                emit(t, change(st, .incidentCreate, sizes.incidentCreate), &out)
                let disp = t + SimTime(r.uniform(5, 30) * Double(min))
                emit(disp, change(st, .incidentStatus, sizes.status), &out)
                let res = disp + SimTime(r.uniform(60, 480) * Double(min))
                emit(res, change(st, .incidentStatus, sizes.status), &out)
                emit(res + SimTime(r.uniform(10, 120) * Double(min)), change(st, .incidentFeedback, sizes.feedback, deadline: deadline), &out)
            }
        }
    }
}

// MARK: Nearest dispatch (issue 14, "Model gaps")

extension LongnanScenario {
    /// A day under `nearest` dispatch: the patrol plans (with their intermittent windows), the incidents and
    /// their dispatches (which change the plans of the backpack officers sent), then the contacts of the
    /// final plans, relay uplinks and visits.
    fileprivate mutating func generateNearest(day: Int, dayStart: SimTime, into out: inout ScenarioSchedule) {
        plansToday.removeAll(keepingCapacity: true)
        for o in backpackList.indices {
            let p = planWithWindows(o, day: day)
            plansToday.append(p)
        }
        dispatchesToday.removeAll(keepingCapacity: true)
        let writing = dayStart < workloadEnd
        if writing { dispatchIncidents(day: day, dayStart: dayStart, into: &out) }
        // Contacts of the plans as they now are.
        for (o, node) in backpackList.enumerated() {
            let p = plansToday[o]
            let st = stationNode[Int(world.nodes[Int(node)].station)]
            if day == 0 {
                let end = p.rest ? nextDeparture(o, after: 0) : p.depart
                out.contact(spec(.stationWiFi, node, st), from: 0, to: end)
            }
            if p.rest { continue }
            for stop in p.stops {
                let v = villages[Int(stop.village)]
                switch v.connectivity {
                case .usable4G: out.contact(spec(.cellular4G, node, st), from: stop.arrive, to: stop.leave)
                case .intermittent:
                    if stop.wEnd > stop.wStart { out.contact(spec(.cellularIntermittent, node, st), from: stop.wStart, to: stop.wEnd) }
                case .none: break
                }
                if v.relay >= 0 && stop.leave > stop.arrive { out.contact(spec(.relayWiFi, node, v.relay), from: stop.arrive, to: stop.leave) }
            }
            if let b = p.homeBreak { out.contact(spec(.stationWiFi, node, st), from: b.0, to: b.1) }
            out.contact(spec(.stationWiFi, node, st), from: p.back, to: Swift.max(p.back, nextDeparture(o, after: day)))
        }
        relayUplinks(day: day, dayStart: dayStart, into: &out)
        guard writing else { return }
        // Visits at every patrol stop (not at incidents), as the legacy model writes them.
        var r = SimRandom(seed: seed, 6, UInt64(day))
        for (o, p) in plansToday.enumerated() where !p.rest {
            let node = backpackList[o]
            for stop in p.stops where !stop.incident {
                let n = r.poisson(visitMean)
                for _ in 0..<n {
                    let t = stop.arrive + SimTime(r.unit() * Double(stop.leave - stop.arrive))
                    if t < workloadEnd {
                        out.changes.append((t, ChangeSpec(author: node, domain: villages[Int(stop.village)].station, place: stop.village,
                                                          changeClass: .visit, priority: .none, size: sizes.visit)))
                    }
                }
            }
        }
    }

    /// Where backpack `o`'s plan has the officer at `x`: at the station before departure and after return, at
    /// the village during a stop, on the straight line between two places while walking.
    func position(_ o: Int, at x: SimTime) -> (Double, Double) { position(plansToday[o], o, at: x) }

    /// Where plan `p` of backpack `o` has the officer at `x`.
    func position(_ p: PatrolPlan, _ o: Int, at x: SimTime) -> (Double, Double) {
        let node = world.nodes[Int(backpackList[o])]
        let home = (node.latitude, node.longitude)
        if p.rest || x <= p.depart { return home }
        if let b = p.homeBreak, x >= b.0 { return home }  // not asked: such a unit is not available again
        var here = home
        var leftAt = p.depart
        func between(_ a: (Double, Double), _ b: (Double, Double), _ t0: SimTime, _ t1: SimTime) -> (Double, Double) {
            let f = t1 > t0 ? Double(x - t0) / Double(t1 - t0) : 1
            return (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f)
        }
        for s in p.stops {
            let v = (villages[Int(s.village)].lat, villages[Int(s.village)].lon)
            if x < s.arrive { return between(here, v, leftAt, s.arrive) }
            if x < s.leave { return v }
            here = v
            leftAt = s.leave
        }
        return x < p.back ? between(here, home, leftAt, p.back) : home
    }

    /// Where backpack `node`'s plan of the day last generated has the officer at `x` (nil for another node).
    func backpackPosition(_ node: NodeIndex, at x: SimTime) -> (Double, Double)? {
        backpackList.firstIndex(of: node).map { position($0, at: x) }
    }

    /// The county cars (`vehicle` nodes) of each county.
    public var countyCars: [[NodeIndex]] { vehicles }

    /// When backpack `o`'s device can first hold a change its station writes at `t` (on `day`): from `t` on,
    /// the first moment of its plan at which it is in a 4G village, in an intermittent window, at a village
    /// whose relay box has had an uplink window since `t` (the box got the change then and passes it on over
    /// Wi-Fi), or back at the station's Wi-Fi. Other paths (a relay box fed by another officer, a unit met on
    /// the way) are not counted: an under-estimate of reachability (docs/simulator.md, "Issue 14: dispatch").
    func receipt(_ o: Int, after t: SimTime, day: Int) -> SimTime {
        let p = plansToday[o]
        for s in p.stops where s.leave > t {
            let v = villages[Int(s.village)]
            var first = SimTime.max
            switch v.connectivity {
            case .usable4G: first = Swift.max(t, s.arrive)
            case .intermittent: if s.wEnd > s.wStart && s.wEnd > t { first = Swift.max(t, s.wStart) }
            case .none: break
            }
            if v.relay >= 0 && v.connectivity == .intermittent {
                for (start, end) in relayUplinkWindows(village: Int(s.village), day: day) + relayUplinkWindows(village: Int(s.village), day: day + 1)
                where end > t {
                    let at = Swift.max(t, s.arrive, start)
                    if at < s.leave { first = Swift.min(first, at) }
                }
            }
            if first < s.leave { return first }
        }
        return Swift.max(t, p.back)
    }

    /// Sends backpack `o`, who holds the dispatch from `tr`, to village `v`: it leaves where it is (cutting a
    /// stop short), walks there, handles the incident, writes the feedback at the scene, then walks on to the
    /// stops of its plan it has not begun (same dwell, later) and home. Returns (on scene, feedback written).
    private mutating func detour(_ o: Int, at tr: SimTime, to v: Int32, using r: inout SimRandom) -> (SimTime, SimTime) {
        var p = plansToday[o]
        let (arrive, feedback, _) = detour(&p, o, at: tr, to: v, using: &r)
        plansToday[o] = p
        return (arrive, feedback)
    }

    /// `detour` on plan `p`; also returns the index of the scene's stop in the new plan (the stops from it on are
    /// the new ones). Visits of a stop moved later move with it; one due at `tr` or before is dropped.
    private func detour(_ p: inout PatrolPlan, _ o: Int, at tr: SimTime, to v: Int32, using r: inout SimRandom) -> (SimTime, SimTime, Int) {
        let node = world.nodes[Int(backpackList[o])]
        let home = (node.latitude, node.longitude)
        let speed = (cfg.walkKmPerHour ?? 4) / (cfg.terrainFactor ?? 1.5)
        func walk(_ a: (Double, Double), _ b: (Double, Double)) -> SimTime { SimTime(Self.distanceKm(a, b) / speed * Double(Duration.hour)) }
        var here: (Double, Double)
        var stops: [PatrolStop] = []
        var later: [PatrolStop] = []
        if tr >= p.back {
            here = home
            stops = p.stops
            p.homeBreak = (p.back, tr)
        } else {
            here = position(p, o, at: tr)
            for var s in p.stops {
                if s.leave <= tr {
                    stops.append(s)
                } else if s.arrive < tr {
                    s.leave = tr
                    s.wEnd = Swift.min(s.wEnd, tr)
                    stops.append(s)
                } else {
                    later.append(s)
                }
            }
        }
        let place = villages[Int(v)]
        let at = (place.lat, place.lon)
        let onSceneRange = cfg.onSceneMinutes ?? [30, 120]
        let arrive = tr + walk(here, at)
        let feedback = arrive + SimTime((r.uniform(onSceneRange[0], onSceneRange[1]) + r.uniform(10, 60)) * Double(Duration.minute))
        var scene = PatrolStop(village: v, arrive: arrive, leave: feedback + Duration.minute, incident: true)
        if place.connectivity == .intermittent {
            let iw = cfg.intermittentWindowMinutes ?? [5, 20]
            if r.unit() < (cfg.intermittentWindowProbability ?? 0.5) {
                let len = Swift.min(SimTime(r.uniform(iw[0], iw[1]) * Double(Duration.minute)), scene.leave - scene.arrive)
                scene.wStart = scene.arrive + SimTime(r.unit() * Double(scene.leave - scene.arrive - len))
                scene.wEnd = scene.wStart + len
            }
        }
        let sceneIndex = stops.count
        stops.append(scene)
        var t = scene.leave
        here = at
        for var s in later {
            let next = (villages[Int(s.village)].lat, villages[Int(s.village)].lon)
            s.visits.removeAll { s.arrive + $0 <= tr }
            let shift = t + walk(here, next) - s.arrive
            s.arrive += shift
            s.leave += shift
            s.wStart += shift
            s.wEnd += shift
            stops.append(s)
            t = s.leave
            here = next
        }
        p.stops = stops
        p.back = Swift.max(t + walk(here, home), t + 1)
        return (arrive, feedback, sceneIndex)
    }

    /// The incidents of a day, drawn from `r` (seed, 8, day): (time, village, priority, ordinal), by time.
    private mutating func drawIncidents(dayStart: SimTime, using r: inout SimRandom) -> [(SimTime, Int32, Int, Int)] {
        let catShares = Incident.Category.allCases.map { cfg.categoryShares?[$0.rawValue] ?? 1 }
        let prShares = ["urgent", "high", "normal", "low"].enumerated().map { cfg.priorityShares?[$0.element] ?? [0.05, 0.15, 0.6, 0.2][$0.offset] }
        let weights = incidentHourWeights ?? Self.defaultIncidentHourWeights
        let n = r.poisson((cfg.incidentsPerYear ?? 190_000) / 365)
        var incidents: [(SimTime, Int32, Int, Int)] = []  // time, village, priority, ordinal
        for i in 0..<n {
            let t = Self.incidentTime(dayStart: dayStart, weights: weights, using: &r)
            let v = Int32(r.int(villages.count))
            incidentsByCategory[r.weighted(catShares)] += 1
            incidents.append((t, v, r.weighted(prShares), i))
        }
        incidents.sort { ($0.0, $0.3) < ($1.0, $1.3) }
        return incidents
    }

    /// The feedback deadline of an incident reported at `t` with priority `pr`.
    private func feedbackDeadline(_ t: SimTime, priority pr: Int) -> SimTime {
        let deadlineH = ["urgent", "high", "normal", "low"].enumerated().map { cfg.feedbackDeadlineHours?[$0.element] ?? [6, 12, 24, 72][$0.offset] }
        return t + SimTime(deadlineH[pr] * Double(Duration.hour))
    }

    /// The backpack officers of station `s` available at `td` (on patrol by `plan`, not at home after a detour,
    /// not busy), with their distance to `at` from where `plan` has them, in station order; and the nearest
    /// (ordinal, km; ties: the first in station order; -1 if none).
    private func availableOfficers(station s: Int, at td: SimTime, to at: (Double, Double), plan: (Int) -> PatrolPlan)
        -> (available: [(NodeIndex, Double)], best: Int, bestKm: Double) {
        var available: [(NodeIndex, Double)] = []
        var best = -1
        var bestKm = Double.infinity
        for k in backpacks[s].indices {
            let o = backpackOrdinal[s] + k
            let p = plan(o)
            guard !p.rest, p.homeBreak == nil, p.depart <= td, td < p.back, busyUntil[o] <= td else { continue }
            let km = Self.distanceKm(position(p, o, at: td), at)
            available.append((backpackList[o], km))
            if km < bestKm { best = o; bestKm = km }  // ties: the first in station order
        }
        return (available, best, bestKm)
    }

    /// A county car drives from its seat to village `v` on a dispatch at `td`, writes on-scene status and feedback
    /// on its device there, and has no county link while at a village without 4G (an intermittent window with
    /// the backpacks' probability). Returns (km, on scene, feedback).
    private mutating func sendCar(_ car: NodeIndex, station s: Int, village v: Int32, at td: SimTime,
                                  change: (NodeIndex, ChangeClass, Int32, SimTime) -> ChangeSpec,
                                  using r: inout SimRandom, into out: inout ScenarioSchedule) -> (Double, SimTime, SimTime) {
        let village = villages[Int(v)]
        let onScene = cfg.onSceneMinutes ?? [30, 120]
        let driveSpeed = (cfg.driveKmPerHour ?? 40) / (cfg.roadFactor ?? 1.3)
        let minute = Duration.minute
        let iw = cfg.intermittentWindowMinutes ?? [5, 20]
        let iwp = cfg.intermittentWindowProbability ?? 0.5
        let ord = vehicleOrdinal[car]!
        let county = countyNode[Int(stationCounty[s])]
        let seat = cfg.counties[Int(stationCounty[s])]
        let km = Self.distanceKm((seat.lat, seat.lon), (village.lat, village.lon))
        let drive = SimTime(km / driveSpeed * Double(Duration.hour))
        let arrive = td + SimTime(r.uniform(1, 5) * Double(minute)) + drive
        let feedback = arrive + SimTime((r.uniform(onScene[0], onScene[1]) + r.uniform(10, 60)) * Double(minute))
        let leave = feedback + minute
        vehicleFree[ord] = leave + drive
        emit(arrive, change(car, .incidentStatus, sizes.status, -1), &out)
        emit(feedback, change(car, .incidentFeedback, sizes.feedback, -2), &out)
        if village.connectivity != .usable4G {
            // Out of 4G at the scene: the car's modem has no link (an intermittent window with the
            // backpacks' probability) until it leaves.
            out.downs.append((arrive, car, county))
            if village.connectivity == .intermittent && r.unit() < iwp {
                let len = Swift.min(SimTime(r.uniform(iw[0], iw[1]) * Double(minute)), feedback - arrive)
                let start = arrive + SimTime(r.unit() * Double(feedback - arrive - len))
                out.contact(spec(.cellularIntermittent, car, county), from: start, to: start + len)
            }
            out.ups.append((leave, spec(.vehicleCellular, car, county)))
        }
        return (km, arrive, feedback)
    }

    /// The station's duty officers drive out on a dispatch at `td` and write on the station's node (on-scene by
    /// radio, the feedback on return). Returns (km, on scene, feedback).
    private mutating func sendStation(station s: Int, village v: Int32, at td: SimTime,
                                      change: (NodeIndex, ChangeClass, Int32, SimTime) -> ChangeSpec,
                                      using r: inout SimRandom, into out: inout ScenarioSchedule) -> (Double, SimTime, SimTime) {
        let village = villages[Int(v)]
        let st = stationNode[s]
        let onScene = cfg.onSceneMinutes ?? [30, 120]
        let driveSpeed = (cfg.driveKmPerHour ?? 40) / (cfg.roadFactor ?? 1.3)
        let minute = Duration.minute
        let stPos = (world.nodes[Int(st)].latitude, world.nodes[Int(st)].longitude)
        let km = Self.distanceKm(stPos, (village.lat, village.lon))
        let drive = SimTime(km / driveSpeed * Double(Duration.hour))
        let arrive = td + SimTime(r.uniform(5, 15) * Double(minute)) + drive
        let feedback = arrive + SimTime(r.uniform(onScene[0], onScene[1]) * Double(minute)) + drive + SimTime(r.uniform(10, 60) * Double(minute))
        emit(arrive, change(st, .incidentStatus, sizes.status, -1), &out)
        emit(feedback, change(st, .incidentFeedback, sizes.feedback, -2), &out)
        return (km, arrive, feedback)
    }

    /// Writes `spec` at `t` if the workload is still running then.
    private func emit(_ t: SimTime, _ spec: ChangeSpec, _ out: inout ScenarioSchedule) {
        if t < workloadEnd { out.changes.append((t, spec)) }
    }

    /// The incidents of a day (`nearest-planned`): the station writes each and a dispatch; the nearest available
    /// unit goes, a backpack officer at the moment its plan says the device can hold the dispatch.
    private mutating func dispatchIncidents(day: Int, dayStart: SimTime, into out: inout ScenarioSchedule) {
        var r = SimRandom(seed: seed, 8, UInt64(day))
        let incidents = drawIncidents(dayStart: dayStart, using: &r)
        let dm = cfg.dispatchMinutes ?? [1, 5]
        let walkSpeed = (cfg.walkKmPerHour ?? 4) / (cfg.terrainFactor ?? 1.5)
        let maxWalkKm = (cfg.maxWalkMinutes ?? 120) / 60 * walkSpeed
        let minute = Duration.minute
        for (t, v, pr, ordinal) in incidents {
            let village = villages[Int(v)]
            let at = (village.lat, village.lon)
            let s = Int(village.station)
            let st = stationNode[s]
            let prio = SimPriority(rawValue: UInt8(pr))!
            let deadline = feedbackDeadline(t, priority: pr)
            let subject = Int64(day) << 24 | Int64(ordinal)
            // deadline -2: the incident's feedback deadline.
            let change = { (author: NodeIndex, cls: ChangeClass, size: Int32, d: SimTime) in
                ChangeSpec(author: author, domain: Int32(s), place: v, changeClass: cls, priority: prio, size: size,
                           deadline: d == -2 ? deadline : d, subject: subject)
            }
            let td = t + SimTime(r.uniform(dm[0], dm[1]) * Double(minute))
            emit(t, change(st, .incidentCreate, sizes.incidentCreate, -1), &out)
            emit(td, change(st, .incidentStatus, sizes.status, -1), &out)
            // The station's backpack officers on patrol and not busy, by distance from where their plans have them.
            let (available, best, bestKm) = availableOfficers(station: s, at: td, to: at) { plansToday[$0] }
            var record = DispatchRecord(subject: subject, village: v, reported: t, dispatched: td, received: td, unit: st, kind: .station,
                                        distanceKm: 0, available: available, onScene: 0, feedback: 0)
            let cars = vehicles[Int(stationCounty[s])]
            let freeCar = cars.first { vehicleFree[vehicleOrdinal[$0]!] <= td }
            if best >= 0 && bestKm <= maxWalkKm {
                let tr = receipt(best, after: td, day: day)
                let (arrive, feedback) = detour(best, at: tr, to: v, using: &r)
                busyUntil[best] = feedback
                let unit = backpackList[best]
                emit(arrive, change(unit, .incidentStatus, sizes.status, -1), &out)
                emit(feedback, change(unit, .incidentFeedback, sizes.feedback, -2), &out)
                (record.unit, record.kind, record.received, record.distanceKm, record.onScene, record.feedback) = (unit, .backpack, tr, bestKm, arrive, feedback)
            } else if let car = freeCar {
                let (km, arrive, feedback) = sendCar(car, station: s, village: v, at: td, change: change, using: &r, into: &out)
                (record.unit, record.kind, record.distanceKm, record.onScene, record.feedback) = (car, .vehicle, km, arrive, feedback)
            } else {
                let (km, arrive, feedback) = sendStation(station: s, village: v, at: td, change: change, using: &r, into: &out)
                (record.distanceKm, record.onScene, record.feedback) = (km, arrive, feedback)
            }
            dispatchCounts[record.kind.rawValue] += 1
            dispatchesToday.append(record)
        }
    }
}

// MARK: Reactive nearest dispatch (issue 14: the officer acts when the device holds the dispatch)

extension LongnanScenario {
    /// A new tag for backpack `o`'s next plan (unique in the run: node and a count).
    private mutating func nextTag(_ o: Int) -> UInt64 {
        planCount[o] += 1
        return UInt64(UInt32(bitPattern: backpackList[o])) << 32 | UInt64(planCount[o])
    }

    /// `p` moved `d` later, stops, windows and visits with it.
    private static func shift(_ p: inout PatrolPlan, by d: SimTime) {
        p.depart += d
        p.back += d
        for i in p.stops.indices {
            p.stops[i].arrive += d
            p.stops[i].leave += d
            p.stops[i].wStart += d
            p.stops[i].wEnd += d
        }
    }

    /// The plan backpack `o` is following at `x`: today's once it has departed on it, else its latest patrol
    /// of an earlier day (whose station Wi-Fi lasts until the next departure).
    private func planInForce(_ o: Int, at x: SimTime) -> (PatrolPlan, today: Bool) {
        let p = plansToday[o]
        if !p.rest && x >= p.depart { return (p, true) }
        if let q = lastPatrol[o] { return (q, false) }
        return (p, true)
    }

    /// Schedules the contacts and visits of `stops` of backpack `o`'s plan `p` (all tagged with the plan), and
    /// the station's Wi-Fi from its return to its next departure.
    private func emitPlan(_ o: Int, _ p: PatrolPlan, stops: ArraySlice<PatrolStop>, into out: inout ScenarioSchedule) {
        let node = backpackList[o]
        let st = stationNode[Int(world.nodes[Int(node)].station)]
        for stop in stops {
            let v = villages[Int(stop.village)]
            switch v.connectivity {
            case .usable4G: out.contact(spec(.cellular4G, node, st), from: stop.arrive, to: stop.leave, plan: p.tag)
            case .intermittent:
                if stop.wEnd > stop.wStart { out.contact(spec(.cellularIntermittent, node, st), from: stop.wStart, to: stop.wEnd, plan: p.tag) }
            case .none: break
            }
            if v.relay >= 0 && stop.leave > stop.arrive { out.contact(spec(.relayWiFi, node, v.relay), from: stop.arrive, to: stop.leave, plan: p.tag) }
            for offset in stop.visits where !stop.incident {
                emit(stop.arrive + offset, ChangeSpec(author: node, domain: v.station, place: stop.village, changeClass: .visit,
                                                      priority: .none, size: sizes.visit, plan: p.tag), &out)
            }
        }
        out.contact(spec(.stationWiFi, node, st), from: p.back, to: Swift.max(p.back, nextDeparture(o, after: p.day)), plan: p.tag)
    }

    /// A day under reactive `nearest` dispatch: the patrol plans (with their intermittent windows and visits),
    /// their contacts tagged per plan, relay uplinks, and the incidents: the station writes each when reported,
    /// and at the dispatch (`call`) the nearest available unit is chosen on the plans as they then stand.
    fileprivate mutating func generateReactive(day: Int, dayStart: SimTime, into out: inout ScenarioSchedule) {
        for o in plansToday.indices where !plansToday[o].rest { lastPatrol[o] = plansToday[o] }
        plansToday.removeAll(keepingCapacity: true)
        let writing = dayStart < workloadEnd
        var rv = SimRandom(seed: seed, 6, UInt64(day))
        for o in backpackList.indices {
            var p = planWithWindows(o, day: day)
            p.day = day
            // An officer still out on an earlier patrol (a detour ran late) leaves on today's when back.
            if !p.rest, let q = lastPatrol[o], q.back > p.depart { Self.shift(&p, by: q.back - p.depart) }
            if writing {
                for i in p.stops.indices {
                    let dwell = Double(p.stops[i].leave - p.stops[i].arrive)
                    p.stops[i].visits = (0..<rv.poisson(visitMean)).map { _ in SimTime(rv.unit() * dwell) }
                }
            }
            let node = backpackList[o]
            if day == 0 {
                let st = stationNode[Int(world.nodes[Int(node)].station)]
                out.contact(spec(.stationWiFi, node, st), from: 0, to: p.rest ? nextDeparture(o, after: 0) : p.depart)
            }
            if !p.rest {
                p.tag = nextTag(o)
                emitPlan(o, p, stops: p.stops[...], into: &out)
            }
            plansToday.append(p)
        }
        if meetings { dayMeetings(now: dayStart, into: &out) }
        relayUplinks(day: day, dayStart: dayStart, into: &out)
        guard writing else { return }
        var r = SimRandom(seed: seed, 8, UInt64(day))
        let dm = cfg.dispatchMinutes ?? [1, 5]
        for (t, v, pr, ordinal) in drawIncidents(dayStart: dayStart, using: &r) {
            let s = Int(villages[Int(v)].station)
            let subject = Int64(day) << 24 | Int64(ordinal)
            emit(t, ChangeSpec(author: stationNode[s], domain: Int32(s), place: v, changeClass: .incidentCreate,
                               priority: SimPriority(rawValue: UInt8(pr))!, size: sizes.incidentCreate, subject: subject), &out)
            var ri = SimRandom(seed: seed, 8, UInt64(day), UInt64(ordinal))
            let td = t + SimTime(ri.uniform(dm[0], dm[1]) * Double(Duration.minute))
            guard td < workloadEnd else { continue }  // no dispatch is written: nobody acts
            pendingIncidents[subject] = PendingIncident(reported: t, village: v, priority: pr, deadline: feedbackDeadline(t, priority: pr),
                                                        day: day, ordinal: ordinal)
            out.calls.append((td, subject))
        }
    }

    /// The dispatch of incident `token` (its subject) is due: the station writes it and sends the nearest
    /// available unit on the plans as they stand now. A backpack officer acts when its store holds the
    /// dispatch (`nodeHolds`); a car or the station's duty officers at once, as under `nearest-planned`.
    public mutating func call(_ token: Int64, now td: SimTime, into out: inout ScenarioSchedule) {
        if token < 0 {
            turnRound(subject: -1 - token, now: td, into: &out)
            return
        }
        guard let inc = pendingIncidents.removeValue(forKey: token) else { return }
        var r = SimRandom(seed: seed, 8, UInt64(inc.day), UInt64(inc.ordinal), 1)
        let v = inc.village
        let village = villages[Int(v)]
        let s = Int(village.station)
        let st = stationNode[s]
        let prio = SimPriority(rawValue: UInt8(inc.priority))!
        let change = { (author: NodeIndex, cls: ChangeClass, size: Int32, d: SimTime) in
            ChangeSpec(author: author, domain: Int32(s), place: v, changeClass: cls, priority: prio, size: size,
                       deadline: d == -2 ? inc.deadline : d, subject: token)
        }
        let walkSpeed = (cfg.walkKmPerHour ?? 4) / (cfg.terrainFactor ?? 1.5)
        let maxWalkKm = (cfg.maxWalkMinutes ?? 120) / 60 * walkSpeed
        let (available, best, bestKm) = availableOfficers(station: s, at: td, to: (village.lat, village.lon)) { planInForce($0, at: td).0 }
        var record = DispatchRecord(subject: token, village: v, reported: inc.reported, dispatched: td, received: td, unit: st, kind: .station,
                                    distanceKm: 0, available: available, onScene: 0, feedback: 0)
        let cars = vehicles[Int(stationCounty[s])]
        let freeCar = cars.first { vehicleFree[vehicleOrdinal[$0]!] <= td }
        if best >= 0 && bestKm <= maxWalkKm {
            let unit = backpackList[best]
            var dispatch = change(st, .incidentStatus, sizes.status, -1)
            dispatch.notify = unit
            out.changes.append((td, dispatch))
            busyUntil[best] = .max  // until it has handled this one
            (record.unit, record.kind, record.received, record.distanceKm, record.onScene, record.feedback) = (unit, .backpack, -1, bestKm, -1, -1)
            awaiting[token] = (dispatchLog.count, prio, inc.deadline)
        } else {
            out.changes.append((td, change(st, .incidentStatus, sizes.status, -1)))
            if let car = freeCar {
                let (km, arrive, feedback) = sendCar(car, station: s, village: v, at: td, change: change, using: &r, into: &out)
                (record.unit, record.kind, record.distanceKm, record.onScene, record.feedback) = (car, .vehicle, km, arrive, feedback)
            } else {
                let (km, arrive, feedback) = sendStation(station: s, village: v, at: td, change: change, using: &r, into: &out)
                (record.distanceKm, record.onScene, record.feedback) = (km, arrive, feedback)
            }
        }
        dispatchCounts[record.kind.rawValue] += 1
        dispatchLog.append(record)
    }

    /// The dispatched officer's store first holds the dispatch of `subject`, over whatever path brought it (its
    /// station over 4G, an intermittent window or the station's Wi-Fi, a relay box, a peer): the officer turns
    /// round `reactionMinutes` later (`turnRound`). The plan's windows still to come are withdrawn (those up now end now: a stop is cut short)
    /// and the detour (walk to the scene, the stop there with that village's coverage, on-scene status and
    /// feedback on the device, then the stops not yet begun, later, and home) is scheduled from now.
    public mutating func nodeHolds(_ change: ChangeIndex, subject: Int64, at node: NodeIndex, via: LinkClass?, now: SimTime,
                                   into out: inout ScenarioSchedule) {
        guard let (k, _, _) = awaiting[subject], dispatchLog[k].unit == node, dispatchLog[k].received < 0 else { return }
        (dispatchLog[k].received, dispatchLog[k].via) = (now, via)
        // The officer reads the dispatch and sets off a few minutes later; the device stays where it is meanwhile
        // (and keeps syncing: its backlog to the station, over Wi-Fi, is not cut off by an instant departure).
        var r = SimRandom(seed: seed, 8, UInt64(subject >> 24), UInt64(subject & 0xFF_FFFF), 3)
        let react = cfg.reactionMinutes ?? [1, 5]
        out.calls.append((now + SimTime(r.uniform(react[0], react[1]) * Double(Duration.minute)), -1 - subject))
    }

    /// The officer dispatched to `subject`, who holds the dispatch, turns round now (see `nodeHolds`).
    private mutating func turnRound(subject: Int64, now tr: SimTime, into out: inout ScenarioSchedule) {
        guard let (k, prio, deadline) = awaiting[subject], let o = backpackList.firstIndex(of: dispatchLog[k].unit) else { return }
        awaiting[subject] = nil
        let node = dispatchLog[k].unit
        let record = dispatchLog[k]
        var r = SimRandom(seed: seed, 8, UInt64(subject >> 24), UInt64(subject & 0xFF_FFFF), 2)
        var (p, today) = planInForce(o, at: tr)
        out.withdraw(p.tag)
        p.tag = nextTag(o)
        let (arrive, feedback, scene) = detour(&p, o, at: tr, to: record.village, using: &r)
        emitPlan(o, p, stops: p.stops[scene...], into: &out)
        if meetings { planMeetings(o, p, stops: p.stops[scene...], now: tr, into: &out) }
        if today {
            plansToday[o] = p
        } else {
            lastPatrol[o] = p
            // Turned round on an earlier day's patrol that now ends after today's departure: today's patrol
            // (not begun) leaves when the officer is back.
            var q = plansToday[o]
            if !q.rest && p.back > q.depart {
                out.withdraw(q.tag)
                Self.shift(&q, by: p.back - q.depart)
                q.tag = nextTag(o)
                emitPlan(o, q, stops: q.stops[...], into: &out)
                if meetings { planMeetings(o, q, stops: q.stops[...], now: tr, into: &out) }
                plansToday[o] = q
            }
        }
        busyUntil[o] = feedback
        let s = villages[Int(record.village)].station
        emit(arrive, ChangeSpec(author: node, domain: s, place: record.village, changeClass: .incidentStatus, priority: prio,
                                size: sizes.status, subject: subject), &out)
        emit(feedback, ChangeSpec(author: node, domain: s, place: record.village, changeClass: .incidentFeedback, priority: prio,
                                  size: sizes.feedback, deadline: deadline, subject: subject), &out)
        (dispatchLog[k].left, dispatchLog[k].onScene, dispatchLog[k].feedback) = (tr, arrive, feedback)
    }
}

extension SimPriority: Comparable {
    /// Orders by raw value.
    public static func < (a: SimPriority, b: SimPriority) -> Bool { a.rawValue < b.rawValue }
}
