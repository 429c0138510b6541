import FieldSyncCore

// The simulated world: nodes, entitlement domains, links, changes. Compact, array-based state.

/// Index of a node in `World.nodes`.
public typealias NodeIndex = Int32
/// Index of a change in `ChangeTable` (assigned in creation order).
public typealias ChangeIndex = Int32
/// Links a change crossed from its author to a replica. 16 bits (a chain of more than 255 nodes is
/// possible in a 300-node run); `nextHop` saturates at 65,535 rather than wrapping.
public typealias HopCount = UInt16

extension HopCount {
    /// One more hop, saturating at `max`.
    @inline(__always) public var nextHop: HopCount { self == .max ? self : self + 1 }
}

/// The kind of a node (device role), as in the certificate roles of ARCHITECTURE.md.
public enum NodeClass: UInt8, CaseIterable, Sendable, Comparable, CustomStringConvertible {
    /// City headquarters (command centre).
    case hq = 0
    /// County-level bureau.
    case county
    /// Police station.
    case station
    /// Backpack unit carried by a patrolling officer.
    case backpack
    /// Mobile command vehicle.
    case vehicle
    /// Field relay box at a village: stores and forwards, cannot read.
    case relay
    /// A generic node (random-contacts and trace scenarios).
    case peer
    /// Class name used in outputs.
    public var description: String {
        switch self {
        case .hq: "hq"
        case .county: "county"
        case .station: "station"
        case .backpack: "backpack"
        case .vehicle: "vehicle"
        case .relay: "relay"
        case .peer: "peer"
        }
    }
    /// Orders by raw value.
    public static func < (a: NodeClass, b: NodeClass) -> Bool { a.rawValue < b.rawValue }
}

/// The kind of a link, for bandwidth accounting by link class.
public enum LinkClass: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Wired station–county link.
    case wiredStationCounty = 0
    /// Wired county–HQ link.
    case wiredCountyHQ
    /// Backpack–station over usable 4G.
    case cellular4G
    /// Backpack–station over an intermittent cellular window.
    case cellularIntermittent
    /// Backpack–station over the station's Wi-Fi (overnight).
    case stationWiFi
    /// Backpack–relay box over Wi-Fi at a village.
    case relayWiFi
    /// Relay box uplink window to its station.
    case relayUplink
    /// Mobile command vehicle–county.
    case vehicleCellular
    /// A synthetic contact (random-contacts scenario).
    case random
    /// A contact replayed from a trace.
    case trace
    /// Two backpack units at one village at the same time, over Wi-Fi Direct or Bluetooth (`longnan`,
    /// `backpackMeetings`).
    case backpackDirect
    /// Name used in outputs.
    public var description: String {
        switch self {
        case .wiredStationCounty: "wired-station-county"
        case .wiredCountyHQ: "wired-county-hq"
        case .cellular4G: "cellular-4g"
        case .cellularIntermittent: "cellular-intermittent"
        case .stationWiFi: "station-wifi"
        case .relayWiFi: "relay-wifi"
        case .relayUplink: "relay-uplink"
        case .vehicleCellular: "vehicle-cellular"
        case .random: "random"
        case .trace: "trace"
        case .backpackDirect: "backpack-direct"
        }
    }
}

/// The class of a change, for latency breakdowns.
public enum ChangeClass: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// The creating edit of an incident.
    case incidentCreate = 0
    /// A status change of an incident (dispatched, on-scene, resolved).
    case incidentStatus
    /// The feedback of an incident (has a deadline).
    case incidentFeedback
    /// The creating edit of a visit.
    case visit
    /// A generic message (random-contacts and trace scenarios).
    case message
    /// Name used in outputs.
    public var description: String {
        switch self {
        case .incidentCreate: "incident-create"
        case .incidentStatus: "incident-status"
        case .incidentFeedback: "incident-feedback"
        case .visit: "visit"
        case .message: "message"
        }
    }
}

/// Priority of a change, most urgent first; `none` for records without one (visits, messages).
public enum SimPriority: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Urgent incident.
    case urgent = 0
    /// High-priority incident.
    case high
    /// Normal incident.
    case normal
    /// Low-priority incident.
    case low
    /// No priority (visits, generic messages); sent after `low`.
    case none
    /// Name used in outputs.
    public var description: String {
        switch self {
        case .urgent: "urgent"
        case .high: "high"
        case .normal: "normal"
        case .low: "low"
        case .none: "none"
        }
    }
}

/// A node of the world.
public struct SimNode: Sendable {
    /// Role.
    public var nodeClass: NodeClass
    /// Name used in outputs, e.g. `station-017`.
    public var name: String
    /// Scope path the node's certificate would carry, e.g. `longnan/wudu/station-017`.
    public var scope: String
    /// Latitude for the map (degrees).
    public var latitude: Double
    /// Longitude for the map (degrees).
    public var longitude: Double
    /// The county index (-1 for HQ and generic peers).
    public var county: Int32
    /// The station index (-1 above station level).
    public var station: Int32

    /// Creates a node.
    public init(nodeClass: NodeClass, name: String, scope: String, latitude: Double = 0, longitude: Double = 0,
                county: Int32 = -1, station: Int32 = -1) {
        self.nodeClass = nodeClass
        self.name = name
        self.scope = scope
        self.latitude = latitude
        self.longitude = longitude
        self.county = county
        self.station = station
    }
}

/// The nodes and who may hold and read what.
///
/// Entitlement is by scope. Every change belongs to one *domain*: a station's subtree
/// (`longnan/<county>/<station>/…`), or the single root domain in generic scenarios. A node *carries*
/// the domains its scope covers (HQ: all; a county: its stations; a station and its backpacks: that
/// station; a vehicle: its county's stations; a relay box: its station). It *reads* (is entitled to)
/// them unless it is a relay box, which carries sealed changes it cannot open.
public final class World {
    /// All nodes; `NodeIndex` indexes this array.
    public private(set) var nodes: [SimNode] = []
    /// Number of domains (stations, or 1 in generic scenarios).
    public let domainCount: Int
    /// Names of the domains (station scopes), for outputs.
    public var domainNames: [String]
    /// Domains each node carries, sorted.
    public private(set) var carried: [[Int32]] = []
    /// Nodes entitled to read each domain, sorted.
    public private(set) var readers: [[NodeIndex]]
    /// Nodes that carry each domain (readers and relay boxes), sorted.
    public private(set) var carriers: [[NodeIndex]]
    private var slotTable: [Int32] = []  // node * domainCount + domain -> slot in carried[node], or -1
    /// Places drawn on the staleness map that are not nodes (longnan: the synthetic villages).
    public var places: [(latitude: Double, longitude: Double)] = []
    /// The scope of each place's log, when changes are written per village as real nodes write them (the
    /// record's scope, e.g. `longnan/wudu/station-017/village-0412`: `longnan`'s `logScope: "village"`); empty:
    /// every change goes to its author's log in the station (domain) scope.
    public var placeScopes: [String] = []

    /// Creates an empty world with `domainCount` domains.
    public init(domainCount: Int, domainNames: [String]) {
        precondition(domainCount > 0 && domainNames.count == domainCount)
        self.domainCount = domainCount
        self.domainNames = domainNames
        readers = Array(repeating: [], count: domainCount)
        carriers = Array(repeating: [], count: domainCount)
    }

    /// Adds a node carrying `domains`; returns its index. Nodes must be added before the run starts.
    @discardableResult
    public func add(_ node: SimNode, domains: [Int32]) -> NodeIndex {
        let index = NodeIndex(nodes.count)
        nodes.append(node)
        let sorted = domains.sorted()
        carried.append(sorted)
        slotTable.append(contentsOf: repeatElement(-1, count: domainCount))
        for (slot, d) in sorted.enumerated() {
            precondition(d >= 0 && Int(d) < domainCount, "domain out of range")
            slotTable[Int(index) * domainCount + Int(d)] = Int32(slot)
            carriers[Int(d)].append(index)
            if node.nodeClass != .relay { readers[Int(d)].append(index) }
        }
        return index
    }

    /// Number of nodes.
    public var count: Int { nodes.count }

    /// The slot of `domain` in `carried[node]`, or -1 if the node does not carry it.
    @inline(__always) public func slot(of domain: Int32, at node: NodeIndex) -> Int32 {
        slotTable[Int(node) * domainCount + Int(domain)]
    }

    /// Whether `node` may read changes of `domain`.
    @inline(__always) public func reads(_ domain: Int32, at node: NodeIndex) -> Bool {
        slot(of: domain, at: node) >= 0 && nodes[Int(node)].nodeClass != .relay
    }

    /// Whether `node` may store and forward changes of `domain`.
    @inline(__always) public func carries(_ domain: Int32, at node: NodeIndex) -> Bool {
        slot(of: domain, at: node) >= 0
    }
}

/// A change to be written: what the scenario's workload generator produces.
public struct ChangeSpec: Sendable, Equatable {
    /// The device that writes it.
    public var author: NodeIndex
    /// Its entitlement domain (station).
    public var domain: Int32
    /// The village (or other leaf scope) index, for log accounting; -1 if none.
    public var place: Int32
    /// Class.
    public var changeClass: ChangeClass
    /// Priority.
    public var priority: SimPriority
    /// Size on the wire in bytes (payload plus envelope).
    public var size: Int32
    /// Deadline for reaching HQ (feedback), or -1.
    public var deadline: SimTime
    /// The incident a create, status or feedback change belongs to (unique per run), or -1. Lets a real
    /// protocol agent write the follow-ups as edits of the same record.
    public var subject: Int64
    /// A node whose store the scenario watches for this change: when that node first holds it (the same point at
    /// which every agent reports a delivery, `AgentEffects.accept`), the engine calls `Scenario.nodeHolds`.
    /// -1: none.
    public var notify: NodeIndex
    /// The plan this write belongs to (`ScenarioSchedule.withdraw`): 0 for none. A write of a withdrawn plan
    /// that has not happened yet never happens.
    public var plan: UInt64

    /// Creates a spec.
    public init(author: NodeIndex, domain: Int32, place: Int32 = -1, changeClass: ChangeClass,
                priority: SimPriority, size: Int32, deadline: SimTime = -1, subject: Int64 = -1,
                notify: NodeIndex = -1, plan: UInt64 = 0) {
        self.subject = subject
        self.notify = notify
        self.plan = plan
        self.author = author
        self.domain = domain
        self.place = place
        self.changeClass = changeClass
        self.priority = priority
        self.size = size
        self.deadline = deadline
    }
}

/// Every change written so far, as parallel arrays (structure of arrays: compact and cache-friendly).
public final class ChangeTable {
    /// Creation time.
    public private(set) var createdAt: [SimTime] = []
    /// Author node.
    public private(set) var author: [NodeIndex] = []
    /// Domain.
    public private(set) var domain: [Int32] = []
    /// Index of the change within its domain's list.
    public private(set) var localIndex: [Int32] = []
    /// Class.
    public private(set) var changeClass: [ChangeClass] = []
    /// Priority.
    public private(set) var priority: [SimPriority] = []
    /// Size on the wire.
    public private(set) var size: [Int32] = []
    /// Deadline for reaching HQ, or -1.
    public private(set) var deadline: [SimTime] = []
    /// The incident each change belongs to, or -1 (`ChangeSpec.subject`).
    public private(set) var subject: [Int64] = []
    /// The village (leaf scope) of each change, or -1 (`ChangeSpec.place`).
    public private(set) var place: [Int32] = []
    /// Changes of each domain, in creation order (local index -> change).
    public private(set) var byDomain: [[ChangeIndex]]
    /// Number of distinct (author, place) logs per domain, for version-vector sizes.
    public private(set) var logsPerDomain: [Int32]
    private var knownLogs: Set<UInt64> = []  // membership only, never iterated

    /// Creates an empty table for `domainCount` domains.
    public init(domainCount: Int) {
        byDomain = Array(repeating: [], count: domainCount)
        logsPerDomain = Array(repeating: 0, count: domainCount)
    }

    /// Number of changes.
    public var count: Int { createdAt.count }

    /// Appends a change written at `time`; returns its index.
    public func append(_ spec: ChangeSpec, at time: SimTime) -> ChangeIndex {
        let index = ChangeIndex(createdAt.count)
        createdAt.appendGrowingByAnEighth(time)
        author.appendGrowingByAnEighth(spec.author)
        domain.appendGrowingByAnEighth(spec.domain)
        localIndex.appendGrowingByAnEighth(Int32(byDomain[Int(spec.domain)].count))
        byDomain[Int(spec.domain)].appendGrowingByAnEighth(index)
        changeClass.appendGrowingByAnEighth(spec.changeClass)
        priority.appendGrowingByAnEighth(spec.priority)
        size.appendGrowingByAnEighth(spec.size)
        deadline.appendGrowingByAnEighth(spec.deadline)
        subject.appendGrowingByAnEighth(spec.subject)
        place.appendGrowingByAnEighth(spec.place)
        let logKey = UInt64(UInt32(bitPattern: spec.author)) << 32 | UInt64(UInt32(bitPattern: spec.place))
        if knownLogs.insert(logKey).inserted { logsPerDomain[Int(spec.domain)] += 1 }
        return index
    }
}

/// Static properties of a contact: which nodes, over which link class, how fast.
public struct ContactSpec: Sendable, Equatable {
    /// One end (the lower index, by convention of `normalized()`).
    public var a: NodeIndex
    /// The other end.
    public var b: NodeIndex
    /// Link class.
    public var linkClass: LinkClass
    /// Bytes per second each way; 0 means unlimited.
    public var bytesPerSecond: Int64
    /// One-way latency in milliseconds.
    public var latency: SimTime

    /// Creates a spec.
    public init(a: NodeIndex, b: NodeIndex, linkClass: LinkClass, bytesPerSecond: Int64, latency: SimTime) {
        self.a = a
        self.b = b
        self.linkClass = linkClass
        self.bytesPerSecond = bytesPerSecond
        self.latency = latency
    }

    /// The same spec with `a < b`.
    public func normalized() -> ContactSpec {
        a <= b ? self : ContactSpec(a: b, b: a, linkClass: linkClass, bytesPerSecond: bytesPerSecond, latency: latency)
    }

    /// Key identifying the unordered pair.
    @inline(__always) public static func pairKey(_ x: NodeIndex, _ y: NodeIndex) -> UInt64 {
        let lo = min(x, y), hi = max(x, y)
        return UInt64(UInt32(bitPattern: lo)) << 32 | UInt64(UInt32(bitPattern: hi))
    }
}

/// A buffer into which a scenario writes the events of one day; the engine drains it into its queue.
public struct ScenarioSchedule: Sendable {
    /// Contacts coming up: (time, spec).
    public var ups: [(SimTime, ContactSpec)] = []
    /// Contacts going down: (time, a, b).
    public var downs: [(SimTime, NodeIndex, NodeIndex)] = []
    /// Changes to write: (time, spec).
    public var changes: [(SimTime, ChangeSpec)] = []
    /// Faults: (time, kind, node) with kind one of `.crash`, `.restart`, `.lose`.
    public var faults: [(SimTime, EventKind, NodeIndex)] = []
    /// Contact windows of a plan: (start, end, spec, plan, second plan or 0), withdrawn with either plan
    /// (`withdraw`): a meeting of two officers belongs to both their plans.
    public var planned: [(SimTime, SimTime, ContactSpec, UInt64, UInt64)] = []
    /// Calls back into the scenario: (time, token): the engine calls `Scenario.call(_:now:into:)` then.
    public var calls: [(SimTime, Int64)] = []
    /// Plans withdrawn now: their windows not yet up never come up, those up end now, their writes not yet
    /// made are never made.
    public var withdrawn: [UInt64] = []

    /// Creates an empty schedule.
    public init() {}

    /// Schedules a contact window `[start, end)`.
    public mutating func contact(_ spec: ContactSpec, from start: SimTime, to end: SimTime) {
        precondition(end >= start, "contact ends before it starts")
        ups.append((start, spec))
        downs.append((end, spec.a, spec.b))
    }

    /// Schedules a contact window `[start, end)` of `plan` (non-zero): withdrawn with it.
    public mutating func contact(_ spec: ContactSpec, from start: SimTime, to end: SimTime, plan: UInt64) {
        precondition(end >= start, "contact ends before it starts")
        precondition(plan != 0, "plan 0 is no plan")
        planned.append((start, end, spec, plan, 0))
    }

    /// Schedules a contact window `[start, end)` of two plans (both non-zero, e.g. two officers who meet): it
    /// never comes up, or ends, when either is withdrawn.
    public mutating func contact(_ spec: ContactSpec, from start: SimTime, to end: SimTime, plans p: UInt64, _ q: UInt64) {
        precondition(end >= start, "contact ends before it starts")
        precondition(p != 0 && q != 0, "plan 0 is no plan")
        planned.append((start, end, spec, p, q))
    }

    /// Withdraws `plan`: what of it has not happened yet never happens, its contacts up now end now.
    public mutating func withdraw(_ plan: UInt64) { withdrawn.append(plan) }

    mutating func clear() {
        ups.removeAll(keepingCapacity: true)
        downs.removeAll(keepingCapacity: true)
        changes.removeAll(keepingCapacity: true)
        faults.removeAll(keepingCapacity: true)
        planned.removeAll(keepingCapacity: true)
        calls.removeAll(keepingCapacity: true)
        withdrawn.removeAll(keepingCapacity: true)
    }
}

/// A scenario: builds its world, then produces contacts, workload and faults day by day (lazily, so a
/// year never sits in memory as events).
public protocol Scenario {
    /// Scenario name (`longnan`, `random-contacts`, `trace`).
    var name: String { get }
    /// The world (nodes and entitlement).
    var world: World { get }
    /// Simulated duration.
    var duration: SimTime { get }
    /// Time after which no new changes are written (convergence is measured from here).
    var workloadEnd: SimTime { get }
    /// Changes created before this are excluded from message statistics (`Report.warmup` in the ONE).
    var warmup: SimTime { get }
    /// Clock skew of each node in milliseconds (a fault parameter; 0 for most).
    var clockSkew: [SimTime] { get }
    /// Derived parameters, as (name, value) lines, printed at the start of every run.
    var derivedParameters: [(String, String)] { get }
    /// Length of the slices in which the engine asks for events (`generate(step:into:)`): a day unless the
    /// scenario's event rate makes a day too much to hold at once (random-contacts).
    var generationStep: SimTime { get }
    /// Writes the events of slice `step`: ups and changes with times in `[step, step + 1) × generationStep`
    /// (downs may be later).
    mutating func generate(step: Int, into schedule: inout ScenarioSchedule)
    /// A call the scenario scheduled (`ScenarioSchedule.calls`) is due: it may schedule more from `now` on.
    mutating func call(_ token: Int64, now: SimTime, into schedule: inout ScenarioSchedule)
    /// `node` first holds `change` (written with `ChangeSpec.notify == node`), received over a contact of class
    /// `via` (nil: not from a frame): the scenario may react, from `now` on (the notice runs as its own event at
    /// the delivery's millisecond, after the delivery's event).
    mutating func nodeHolds(_ change: ChangeIndex, subject: Int64, at node: NodeIndex, via: LinkClass?, now: SimTime,
                            into schedule: inout ScenarioSchedule)
}

extension Scenario {
    /// A day.
    public var generationStep: SimTime { Duration.day }
    /// Default: no calls.
    public mutating func call(_ token: Int64, now: SimTime, into schedule: inout ScenarioSchedule) {}
    /// Default: no reaction.
    public mutating func nodeHolds(_ change: ChangeIndex, subject: Int64, at node: NodeIndex, via: LinkClass?, now: SimTime,
                                   into schedule: inout ScenarioSchedule) {}
}
