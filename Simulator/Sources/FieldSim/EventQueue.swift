// The event queue: a binary min-heap of small plain structs, ordered by (time, phase, insertion counter).

/// Virtual time in milliseconds since the start of a run. The simulator never reads the wall clock.
public typealias SimTime = Int64

/// Milliseconds in common units, for readable scenario code.
public enum Duration {
    /// One second in milliseconds.
    public static let second: SimTime = 1_000
    /// One minute in milliseconds.
    public static let minute: SimTime = 60_000
    /// One hour in milliseconds.
    public static let hour: SimTime = 3_600_000
    /// One day in milliseconds.
    public static let day: SimTime = 86_400_000

    /// The unit in which to show a span of `length`: the largest of day, hour, minute, second that it
    /// lasts at least once (so a sub-day run is not shown as "day 0.0/0").
    public static func displayUnit(for length: SimTime) -> (name: String, ms: SimTime) {
        for (name, ms) in [("day", day), ("hour", hour), ("min", minute)] where length >= ms { return (name, ms) }
        return ("s", second)
    }
}

/// What an event does. Raw values are stable; they feed the trace hash.
public enum EventKind: UInt8, Sendable {
    /// A scenario slice begins (`a` = its number; a day unless `Scenario.generationStep` says otherwise):
    /// the scenario generates that slice's contacts and workload.
    case dayTick = 0
    /// A contact comes up (`a` = index of the pending contact spec).
    case contactUp
    /// A contact goes down (`a`, `b` = the node pair).
    case contactDown
    /// A message finished transmission on a link direction (`a` = slot, `b` = generation, `c` = side).
    case txDone
    /// A message arrives at the far side of a link direction (`a` = slot, `b` = generation, `c` = side).
    case arrival
    /// A change is written at its author (`a` = index of the pending change spec).
    case changeCreated
    /// A node crashes (`a` = node); its contacts are cut.
    case crash
    /// A node restarts (`a` = node).
    case restart
    /// A node is lost for good (`a` = node).
    case lose
    /// Metrics sample for the time series.
    case sample
    /// Staleness snapshot for the map chart.
    case snapshot
    /// A timer an agent set on a live contact (`a` = slot, `b` = generation).
    case agentTimer
    /// A contact window of a plan comes up (`a` = window), unless its plan was withdrawn.
    case windowUp
    /// A contact window of a plan goes down (`a` = window), unless it never came up or its plan's withdrawal
    /// ended it.
    case windowDown
    /// A call the scenario scheduled (`a`, `b` = low and high 32 bits of its token).
    case scenarioCall
    /// A watched node first holds a change (`a` = change, `b` = node): the scenario is told.
    case holdNotice
}

/// One scheduled event: 32 bytes, no references, so the heap never allocates per event.
public struct Event: Sendable, Equatable {
    /// When it fires.
    public var time: SimTime
    /// Orders events due at the same millisecond: 0 for everything, 1 for contact ends, so that a message
    /// arriving exactly when its contact ends is still delivered.
    public var phase: UInt8
    /// What it does.
    public var kind: EventKind
    /// Insertion counter: the stable tie-breaker among equal (time, phase).
    public var seq: UInt64
    /// First operand (meaning depends on `kind`).
    public var a: Int32
    /// Second operand.
    public var b: Int32
    /// Third operand.
    public var c: Int32

    /// Creates an event; `seq` is assigned by the queue.
    public init(time: SimTime, phase: UInt8 = 0, kind: EventKind, a: Int32 = 0, b: Int32 = 0, c: Int32 = 0) {
        self.time = time
        self.phase = phase
        self.kind = kind
        self.seq = 0
        self.a = a
        self.b = b
        self.c = c
    }

    @inline(__always) static func precedes(_ x: Event, _ y: Event) -> Bool {
        if x.time != y.time { return x.time < y.time }
        if x.phase != y.phase { return x.phase < y.phase }
        return x.seq < y.seq
    }
}

/// What the engine needs from an event queue; two implementations exist so the benchmark can compare them.
public protocol EventQueueProtocol {
    /// Inserts an event, stamping it with the next insertion counter.
    mutating func push(_ event: Event)
    /// Removes and returns the earliest event, or nil when empty.
    mutating func pop() -> Event?
    /// Number of pending events.
    var count: Int { get }
}

/// A binary min-heap keyed by (time, phase, insertion counter). O(log n) push and pop, no allocation once
/// its array has grown to the largest queue length of the run.
public struct EventQueue: EventQueueProtocol, Sendable {
    private var heap: [Event] = []
    private var counter: UInt64 = 0

    /// Creates an empty queue with room for `capacity` events.
    public init(capacity: Int = 1 << 12) { heap.reserveCapacity(capacity) }

    /// Number of pending events.
    public var count: Int { heap.count }

    /// Inserts an event.
    public mutating func push(_ event: Event) {
        var e = event
        e.seq = counter
        counter &+= 1
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) >> 1
            if Event.precedes(e, heap[parent]) {
                heap[i] = heap[parent]
                i = parent
            } else { break }
        }
        heap[i] = e
    }

    /// Removes and returns the earliest event.
    public mutating func pop() -> Event? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return top }
        let n = heap.count
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            let r = l + 1
            let child = (r < n && Event.precedes(heap[r], heap[l])) ? r : l
            if Event.precedes(heap[child], last) {
                heap[i] = heap[child]
                i = child
            } else { break }
        }
        heap[i] = last
        return top
    }
}

/// A naive queue: a sorted array with linear insertion. Same ordering as `EventQueue`; exists only as the
/// baseline of the `sim-queue` benchmark.
public struct NaiveEventList: EventQueueProtocol, Sendable {
    private var items: [Event] = []  // sorted descending, so pop is removeLast
    private var counter: UInt64 = 0

    /// Creates an empty list.
    public init() {}

    /// Number of pending events.
    public var count: Int { items.count }

    /// Inserts an event by linear scan.
    public mutating func push(_ event: Event) {
        var e = event
        e.seq = counter
        counter &+= 1
        var i = items.count
        while i > 0 && Event.precedes(items[i - 1], e) { i -= 1 }
        items.insert(e, at: i)
    }

    /// Removes and returns the earliest event.
    public mutating func pop() -> Event? { items.popLast() }
}
