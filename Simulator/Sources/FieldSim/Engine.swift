import FieldSyncCore

// The discrete-event engine: one queue, a virtual clock, contacts as links with bandwidth and latency.

/// A closed contact, as recorded for the oracle and the ONE trace export.
public struct ContactRecord: Sendable, Equatable {
    /// When it came up.
    public var start: SimTime
    /// When it went down.
    public var end: SimTime
    /// Its spec.
    public var spec: ContactSpec

    /// A contact of `spec` from `start` to `end`.
    public init(start: SimTime, end: SimTime, spec: ContactSpec) {
        self.start = start
        self.end = end
        self.spec = spec
    }
}

/// Options of a run that are not part of the scenario.
/// Faults on every link, per frame that arrives: it is delivered twice, delivered behind the frame sent
/// after it, or corrupted (`SyncAgent.corrupted`: one bit flipped for agents with real bytes; models
/// get it intact, as TCP would resend it). Draws come from their own stream (seeded from `seed`), so a
/// run without link faults is unchanged by them.
public struct LinkFaults: Sendable, Equatable {
    /// Probability that a frame is delivered twice.
    public var duplicate = 0.0
    /// Probability that a frame is delivered after the next frame on the same link direction.
    public var reorder = 0.0
    /// Probability that a frame arrives with one bit flipped.
    public var corrupt = 0.0
    /// Seed of the fault draws (the run's seed).
    public var seed: UInt64 = 0

    /// No link faults.
    public init() {}

    /// The link faults of a scenario file's `faults` section, for a run with `seed`.
    public init(_ config: FaultConfig?, seed: UInt64) {
        duplicate = config?.linkDuplicate ?? 0
        reorder = config?.linkReorder ?? 0
        corrupt = config?.linkCorrupt ?? 0
        self.seed = seed
    }

    /// Whether any fault is on.
    public var isEmpty: Bool { duplicate == 0 && reorder == 0 && corrupt == 0 }

    /// `duplicate 0.001, reorder 0, corrupt 0.0005 per frame`.
    public var description: String {
        "duplicate \(JSON.format(duplicate)), reorder \(JSON.format(reorder)), corrupt \(JSON.format(corrupt)) per frame"
    }
}

public struct RunOptions: Sendable {
    /// Interval between time-series samples.
    public var sampleInterval: SimTime
    /// When to take the staleness snapshot for the map (nil: at the end of the workload).
    public var snapshotAt: SimTime?
    /// Keep every contact for the oracle and the trace export.
    public var recordContacts: Bool
    /// Keep per-replica arrival times of every change whose index is a multiple of this, for the
    /// oracle comparison (0: none).
    public var oracleSampleEvery: Int
    /// Per-frame faults on every link: duplication, reordering, corruption (none by default).
    public var linkFaults = LinkFaults()

    /// Creates options.
    public init(sampleInterval: SimTime = Duration.hour, snapshotAt: SimTime? = nil, recordContacts: Bool = true,
                oracleSampleEvery: Int = 1) {
        self.sampleInterval = sampleInterval
        self.snapshotAt = snapshotAt
        self.recordContacts = recordContacts
        self.oracleSampleEvery = oracleSampleEvery
    }
}

/// A deterministic simulation of `scenario` with `agent` on every node.
///
/// Single-threaded, no wall clock: the same scenario (same seed) and agent give the same `traceHash`
/// and byte-identical outputs. Events due at the same millisecond run in insertion order, except that
/// contact ends run after everything else due then.
public final class Simulation<Agent: SyncAgent> {
    /// What the agent may consult.
    public let context: SimContext
    /// The agent (its state is the nodes' state).
    public private(set) var agent: Agent
    /// Measurements.
    public private(set) var metrics = Metrics()
    /// Every contact that ran, in order of ending (if `recordContacts`).
    public private(set) var contacts: [ContactRecord] = []
    /// Events processed.
    public private(set) var eventsProcessed: UInt64 = 0
    /// FNV-1a hash over every processed event and every delivery: equal hashes mean equal runs.
    public private(set) var traceHash: UInt64 = 0xCBF2_9CE4_8422_2325
    /// Current virtual time.
    public private(set) var now: SimTime = 0
    /// Arrival time per (sampled change << 32 | replica), for the oracle comparison. Lookup only.
    public private(set) var sampledArrivals: [UInt64: SimTime] = [:]
    /// The oracle sampling modulus in use.
    public var sampleEvery: Int { options.oracleSampleEvery }

    private var scenario: any Scenario
    /// The scenario as it stands now (a copy: the engine keeps its own; for tests and reports).
    public var scenarioNow: any Scenario { scenario }
    // Copied out of the existential once: reading a property of `any Scenario` copies the whole value.
    /// The scenario's duration.
    public let duration: SimTime
    /// The scenario's end of workload.
    public let workloadEnd: SimTime
    /// The scenario's warm-up.
    public let warmup: SimTime
    private let generationStep: SimTime
    private let options: RunOptions
    private var queue = EventQueue()
    private var schedule = ScenarioSchedule()
    private var effects = AgentEffects()

    private var pendingContacts: [ContactSpec] = []
    private var freePendingContacts: [Int32] = []
    private var pendingChanges: [ChangeSpec] = []
    private var freePendingChanges: [Int32] = []

    // Contact windows of plans (`ScenarioSchedule.planned`): spec, plan, state (0 not yet up, 1 up, 2 over, 3 ended by
    // a withdrawal, its own down event still to come).
    private var windowSpec: [ContactSpec] = []
    private var windowPlan: [UInt64] = []
    private var windowPlan2: [UInt64] = []  // a second plan the window belongs to (a meeting of two officers), or 0
    private var windowState: [UInt8] = []
    private var freeWindows: [Int32] = []
    private var windowsUp: [UInt64: [Int32]] = [:]  // by plan, windows up now; lookup only, never iterated
    private var withdrawnPlans: Set<UInt64> = []  // membership only, never iterated
    private var watched: [ChangeIndex: NodeIndex] = [:]  // `ChangeSpec.notify`; lookup only, never iterated
    /// Contact windows of withdrawn plans that never came up, and those a withdrawal ended early.
    public private(set) var withdrawnWindows = (neverUp: 0, endedEarly: 0)
    /// Of those, the windows of two plans (officers meeting, `ScenarioSchedule.contact(_:from:to:plans:_:)`).
    public private(set) var withdrawnMeetings = (neverUp: 0, endedEarly: 0)
    /// Writes of withdrawn plans that were never made.
    public private(set) var withdrawnWrites = 0
    /// Notices given to the scenario: a watched node first held its change (`Scenario.nodeHolds`).
    public private(set) var holdNotices = 0
    /// Writes due at an HQ, county or station node while it was down, made when it restarted (in order).
    public private(set) var writesDeferred = 0
    private var writesWhileDown: [NodeIndex: [ChangeSpec]] = [:]  // lookup only, never iterated
    private var arrivingOn: Int32 = -1  // link class of the frame being delivered (`arrival`), else -1
    /// Per change: whether some node first held it from a frame of a `backpack-direct` contact (two officers who
    /// met; `LongnanConfig.backpackMeetings`).
    public private(set) var crossedMeeting: [Bool] = []
    /// (change, node) deliveries over `backpack-direct` contacts.
    public private(set) var meetingDeliveries = 0

    // Contact slots.
    private var slotSpec: [ContactSpec] = []
    private var slotGen: [UInt32] = []
    private var slotStart: [SimTime] = []
    private var slotEffective: [Bool] = []
    private var slotDesired: [Int32] = []
    private var freeSlots: [Int32] = []
    private var pairSlot: [UInt64: Int32] = [:]  // lookup only, never iterated
    private var pairLastEnd: [UInt64: SimTime] = [:]  // lookup only, never iterated

    // Link directions (slot * 2 + side): messages on the link, oldest first from `dirHead`.
    private struct InFlight {
        var message: Agent.Message
        var size: Int
        var txStart: SimTime
        var txEnd: SimTime
    }
    private var dirQueue: [[InFlight]] = []
    private var dirHead: [Int] = []
    private var dirBusy: [Bool] = []

    private var nodeUp: [Bool]
    private var faultRandom: SimRandom
    private var nodeLost: [Bool]
    private var lostReaders: [Int32]
    private var cutBuffer: [CutTransfer<Agent.Message>] = []

    // Running counts for the time series.
    private var changesAfterWarmup = 0
    private var hqCount = 0

    /// Creates a simulation; `makeAgent` builds the agent over the run's context.
    public init(scenario: any Scenario, options: RunOptions = RunOptions(), makeAgent: (SimContext) -> Agent) {
        let world = scenario.world
        context = SimContext(world: world, changes: ChangeTable(domainCount: world.domainCount), clockSkew: scenario.clockSkew)
        agent = makeAgent(context)
        self.scenario = scenario
        self.options = options
        duration = scenario.duration
        workloadEnd = scenario.workloadEnd
        warmup = scenario.warmup
        nodeUp = Array(repeating: true, count: world.count)
        faultRandom = SimRandom(seed: options.linkFaults.seed, 0x11F4_A017)
        nodeLost = Array(repeating: false, count: world.count)
        lostReaders = Array(repeating: 0, count: world.domainCount)
        generationStep = scenario.generationStep
        precondition(generationStep > 0, "generation step must be positive")
        queue.push(Event(time: 0, kind: .dayTick, a: 0))
        queue.push(Event(time: 0, kind: .sample))
        let snap = options.snapshotAt ?? scenario.workloadEnd
        if snap <= scenario.duration { queue.push(Event(time: snap, kind: .snapshot)) }
    }

    /// Number of pending events.
    public var pendingEvents: Int { queue.count }
    /// The first invariant found broken (checked after every event: no node holds a change of a station it
    /// may not carry; what the agent checks, e.g. every held change is the one its author wrote). The run
    /// stops at that event.
    public private(set) var invariantViolation: String?


    /// Runs to the end of the scenario. `progress` is called every `progressEvery` events (256 by default)
    /// with the virtual time and the events processed. The engine never reads the wall clock: the hook does
    /// (the CLI redraws its progress line at most 4 times a wall second), so it must be cheap; 256 events keep
    /// it well under a second apart even in a debug build of the `fieldsync` agent, and cost nothing
    /// measurable in a release baseline run.
    public func run(progressEvery: UInt64 = 1 << 8, progress: ((SimTime, UInt64) -> Void)? = nil) {
        let end = duration
        while let e = queue.pop() {
            if e.time > end { break }
            precondition(e.time >= now, "event in the past")
            now = e.time
            eventsProcessed &+= 1
            mix(UInt64(bitPattern: e.time))
            mix(UInt64(e.kind.rawValue) << 48 ^ UInt64(UInt32(bitPattern: e.a)) << 16 ^ UInt64(UInt32(bitPattern: e.b)))
            dispatch(e)
            if let progress, eventsProcessed % progressEvery == 0 { progress(now, eventsProcessed) }
            if invariantViolation != nil { break }
        }
        if invariantViolation != nil {
            progress?(now, eventsProcessed)
            return
        }
        now = end
        // Close contacts still up (recorded, not cut: the run simply stops).
        for s in 0..<slotEffective.count where slotEffective[s] {
            recordContactEnd(Int32(s))
        }
        sample()
        progress?(now, eventsProcessed)
    }

    @inline(__always) private func mix(_ x: UInt64) {
        traceHash = (traceHash ^ x) &* 0x0000_0100_0000_01B3
    }

    private func dispatch(_ e: Event) {
        switch e.kind {
        case .dayTick: dayTick(Int(e.a))
        case .contactUp:
            let spec = pendingContacts[Int(e.a)]
            freePendingContacts.append(e.a)
            contactUp(spec)
        case .contactDown: contactDown(e.a, e.b)
        case .txDone: txDone(slot: e.a, gen: UInt32(bitPattern: e.b), side: LinkSide(rawValue: e.c)!)
        case .arrival: arrival(slot: e.a, gen: UInt32(bitPattern: e.b), side: LinkSide(rawValue: e.c)!)
        case .changeCreated:
            let spec = pendingChanges[Int(e.a)]
            freePendingChanges.append(e.a)
            changeCreated(spec)
        case .crash: crash(e.a, lose: false)
        case .lose: crash(e.a, lose: true)
        case .restart: restart(e.a)
        case .sample:
            sample()
            if now + options.sampleInterval <= duration {
                queue.push(Event(time: now + options.sampleInterval, kind: .sample))
            }
        case .snapshot: snapshot()
        case .agentTimer:
            let i = Int(e.a)
            guard slotEffective[i], slotGen[i] == UInt32(bitPattern: e.b) else { return }  // the contact ended meanwhile
            agent.timerFired(handle(e.a), now: now, effects: &effects)
            applyEffects()
        case .windowUp: windowUp(e.a)
        case .windowDown: windowDown(e.a, early: e.b == 1)
        case .scenarioCall:
            schedule.clear()
            scenario.call(Int64(bitPattern: UInt64(UInt32(bitPattern: e.b)) << 32 | UInt64(UInt32(bitPattern: e.a))), now: now, into: &schedule)
            drainSchedule()
        case .holdNotice:
            holdNotices += 1
            schedule.clear()
            scenario.nodeHolds(e.a, subject: context.changes.subject[Int(e.a)], at: e.b, via: e.c < 0 ? nil : LinkClass(rawValue: UInt8(e.c)),
                               now: now, into: &schedule)
            drainSchedule()
        }
    }

    // MARK: Scenario days

    private func dayTick(_ step: Int) {
        schedule.clear()
        scenario.generate(step: step, into: &schedule)
        drainSchedule()
        let next = SimTime(step + 1) * generationStep
        if next < duration { queue.push(Event(time: next, kind: .dayTick, a: Int32(step + 1))) }
    }

    /// Moves what the scenario just wrote into `schedule` into the queue (withdrawals first).
    private func drainSchedule() {
        for plan in schedule.withdrawn { withdraw(plan) }
        for (t, spec) in schedule.ups {
            precondition(t >= now, "scenario scheduled a contact in the past")
            let i: Int32
            if let f = freePendingContacts.popLast() { i = f; pendingContacts[Int(f)] = spec.normalized() } else {
                i = Int32(pendingContacts.count)
                pendingContacts.append(spec.normalized())
            }
            queue.push(Event(time: t, kind: .contactUp, a: i))
        }
        for (t, a, b) in schedule.downs {
            precondition(t >= now, "scenario scheduled a contact end in the past")
            queue.push(Event(time: t, phase: 1, kind: .contactDown, a: min(a, b), b: max(a, b)))
        }
        for (t, spec) in schedule.changes {
            precondition(t >= now, "scenario scheduled a change in the past")
            let i: Int32
            if let f = freePendingChanges.popLast() { i = f; pendingChanges[Int(f)] = spec } else {
                i = Int32(pendingChanges.count)
                pendingChanges.append(spec)
            }
            queue.push(Event(time: t, kind: .changeCreated, a: i))
        }
        for (t, kind, node) in schedule.faults {
            precondition(t >= now, "scenario scheduled a fault in the past")
            queue.push(Event(time: t, kind: kind, a: node))
        }
        for (start, end, spec, plan, plan2) in schedule.planned {
            precondition(start >= now && end >= start, "scenario scheduled a contact in the past")
            let w: Int32
            if let f = freeWindows.popLast() {
                w = f
                windowSpec[Int(w)] = spec.normalized()
                windowPlan[Int(w)] = plan
                windowPlan2[Int(w)] = plan2
                windowState[Int(w)] = 0
            } else {
                w = Int32(windowSpec.count)
                windowSpec.append(spec.normalized())
                windowPlan.append(plan)
                windowPlan2.append(plan2)
                windowState.append(0)
            }
            queue.push(Event(time: start, kind: .windowUp, a: w))
            queue.push(Event(time: end, phase: 1, kind: .windowDown, a: w))
        }
        for (t, token) in schedule.calls {
            precondition(t >= now, "scenario scheduled a call in the past")
            let u = UInt64(bitPattern: token)
            queue.push(Event(time: t, kind: .scenarioCall, a: Int32(bitPattern: UInt32(truncatingIfNeeded: u)),
                             b: Int32(bitPattern: UInt32(truncatingIfNeeded: u >> 32))))
        }
    }

    // MARK: Plans

    private func windowUp(_ w: Int32) {
        let plan = windowPlan[Int(w)], plan2 = windowPlan2[Int(w)]
        if withdrawnPlans.contains(plan) || (plan2 != 0 && withdrawnPlans.contains(plan2)) {
            windowState[Int(w)] = 2
            withdrawnWindows.neverUp += 1
            if plan2 != 0 { withdrawnMeetings.neverUp += 1 }
            return
        }
        windowState[Int(w)] = 1
        windowsUp[plan, default: []].append(w)
        if plan2 != 0 { windowsUp[plan2, default: []].append(w) }
        contactUp(windowSpec[Int(w)])
    }

    /// A window's down event: its own (`early` false, the last event of the window: its index is then free), or
    /// the one its plan's withdrawal scheduled (`early`: state 3 afterwards, waiting for its own).
    private func windowDown(_ w: Int32, early: Bool) {
        let i = Int(w)
        if windowState[i] == 1 {
            for plan in [windowPlan[i], windowPlan2[i]] where plan != 0 {
                windowsUp[plan]!.removeAll { $0 == w }
                if windowsUp[plan]!.isEmpty { windowsUp[plan] = nil }
            }
            windowState[i] = 3
            contactDown(windowSpec[i].a, windowSpec[i].b)
        }
        if !early {
            windowState[i] = 2
            freeWindows.append(w)
        }
    }

    /// Withdraws `plan`: its windows up now end at this millisecond (after everything else due then, like any
    /// contact end, so that a window of the same pair the scenario starts now continues the contact, as a
    /// replay of the recorded contacts would), the rest never come up, its writes not yet made are dropped
    /// when due.
    /// A window of two plans (a meeting) withdrawn with both at one millisecond gets two early down events; the
    /// second finds it ended (state 3) and does nothing.
    private func withdraw(_ plan: UInt64) {
        guard withdrawnPlans.insert(plan).inserted else { return }
        for w in windowsUp[plan] ?? [] {
            withdrawnWindows.endedEarly += 1
            if windowPlan2[Int(w)] != 0 { withdrawnMeetings.endedEarly += 1 }
            queue.push(Event(time: now, phase: 1, kind: .windowDown, a: w, b: 1))
        }
    }

    // MARK: Contacts

    private func contactUp(_ spec: ContactSpec) {
        let key = ContactSpec.pairKey(spec.a, spec.b)
        if let s = pairSlot[key] {
            slotDesired[Int(s)] += 1  // overlapping windows of one pair merge into one contact
            return
        }
        let s: Int32
        if let f = freeSlots.popLast() { s = f } else {
            s = Int32(slotSpec.count)
            slotSpec.append(spec)
            slotGen.append(0)
            slotStart.append(0)
            slotEffective.append(false)
            slotDesired.append(0)
            for _ in 0..<2 {
                dirQueue.append([])
                dirHead.append(0)
                dirBusy.append(false)
            }
        }
        slotSpec[Int(s)] = spec
        slotDesired[Int(s)] = 1
        pairSlot[key] = s
        if nodeUp[Int(spec.a)] && nodeUp[Int(spec.b)] { startEffective(s) }
    }

    private func contactDown(_ a: NodeIndex, _ b: NodeIndex) {
        let key = ContactSpec.pairKey(a, b)
        guard let s = pairSlot[key] else { preconditionFailure("contact down without up") }
        slotDesired[Int(s)] -= 1
        if slotDesired[Int(s)] > 0 { return }
        if slotEffective[Int(s)] { endEffective(s) }
        pairSlot[key] = nil
        freeSlots.append(s)
    }

    private func handle(_ s: Int32) -> LinkHandle {
        LinkHandle(slot: s, generation: slotGen[Int(s)], spec: slotSpec[Int(s)], start: slotStart[Int(s)])
    }

    private func startEffective(_ s: Int32) {
        let i = Int(s)
        slotGen[i] &+= 1
        slotStart[i] = now
        slotEffective[i] = true
        for d in [i * 2, i * 2 + 1] {
            dirQueue[d].removeAll(keepingCapacity: true)
            dirHead[d] = 0
            dirBusy[d] = false
        }
        let spec = slotSpec[i]
        let key = ContactSpec.pairKey(spec.a, spec.b)
        if let last = pairLastEnd[key] { metrics.interContact.record(now - last) }
        metrics.contactsByLink[Int(spec.linkClass.rawValue)] += 1
        let h = handle(s)
        agent.contactStarted(h, now: now, effects: &effects)
        applyEffects()
        poll(s, .a)
        poll(s, .b)
    }

    private func recordContactEnd(_ s: Int32) {
        let i = Int(s)
        let spec = slotSpec[i]
        metrics.contactDuration.record(now - slotStart[i])
        pairLastEnd[ContactSpec.pairKey(spec.a, spec.b)] = now
        if options.recordContacts { contacts.appendGrowingByAnEighth(ContactRecord(start: slotStart[i], end: now, spec: spec)) }
        slotEffective[i] = false
    }

    private func endEffective(_ s: Int32) {
        let i = Int(s)
        let spec = slotSpec[i]
        cutBuffer.removeAll(keepingCapacity: true)
        var cutHere = false
        for side in [LinkSide.a, .b] {
            let d = i * 2 + Int(side.rawValue)
            var k = dirHead[d]
            while k < dirQueue[d].count {
                let f = dirQueue[d][k]
                var sent = f.size
                if f.txEnd > now {
                    // Still transmitting: only the bytes that left by now count.
                    // A held frame (`SyncAgent.holdTime`) starts to leave only after its hold.
                    let leaving = now - f.txStart - Agent.holdTime(of: f.message)
                    sent = leaving < 0 ? 0 : spec.bytesPerSecond == 0 ? f.size
                        : Int(min(Int64(f.size), leaving * spec.bytesPerSecond / 1_000))
                    metrics.bytesByLink[Int(spec.linkClass.rawValue)] += Int64(sent)
                    metrics.bytesByType[Int(Agent.messageType(of: f.message).rawValue)] += Int64(sent)
                }
                metrics.abortedBytes += Int64(sent)
                if Agent.change(in: f.message) != nil || Agent.messageType(of: f.message) == .stateDump { metrics.aborted += 1 }
                cutBuffer.append(CutTransfer(message: f.message, from: side, bytesSent: sent))
                cutHere = true
                k += 1
            }
            dirQueue[d].removeAll(keepingCapacity: true)
            dirHead[d] = 0
            dirBusy[d] = false
        }
        if cutHere { metrics.contactsCut += 1 }
        let h = handle(s)
        recordContactEnd(s)
        agent.contactEnded(h, now: now, cut: cutBuffer, effects: &effects)
        applyEffects()
    }

    @inline(__always) private func poll(_ s: Int32, _ side: LinkSide) {
        let i = Int(s)
        let d = i * 2 + Int(side.rawValue)
        guard slotEffective[i], !dirBusy[d] else { return }
        let h = handle(s)
        guard let m = agent.pollTransmit(h, from: side, now: now) else { return }
        let size = Agent.wireSize(of: m)
        precondition(size >= 0, "negative message size")
        let bw = h.spec.bytesPerSecond
        let tx: SimTime = (bw == 0 ? 0 : (Int64(size) * 1_000 + bw - 1) / bw) + Agent.holdTime(of: m)
        dirQueue[d].append(InFlight(message: m, size: size, txStart: now, txEnd: now + tx))
        dirBusy[d] = true
        if Agent.change(in: m) != nil || Agent.messageType(of: m) == .stateDump { metrics.started += 1 }
        queue.push(Event(time: now + tx, kind: .txDone, a: s, b: Int32(bitPattern: h.generation), c: side.rawValue))
    }

    private func txDone(slot s: Int32, gen: UInt32, side: LinkSide) {
        let i = Int(s)
        guard slotEffective[i], slotGen[i] == gen else { return }  // the contact ended meanwhile
        let d = i * 2 + Int(side.rawValue)
        let f = dirQueue[d][dirQueue[d].count - 1]
        let spec = slotSpec[i]
        metrics.bytesByLink[Int(spec.linkClass.rawValue)] += Int64(f.size)
        metrics.bytesByType[Int(Agent.messageType(of: f.message).rawValue)] += Int64(f.size)
        dirBusy[d] = false
        queue.push(Event(time: now + spec.latency, kind: .arrival, a: s, b: Int32(bitPattern: gen), c: side.rawValue))
        poll(s, side)
    }

    private func arrival(slot s: Int32, gen: UInt32, side: LinkSide) {
        let i = Int(s)
        guard slotEffective[i], slotGen[i] == gen else { return }
        let d = i * 2 + Int(side.rawValue)
        let lf = options.linkFaults
        // Reordering: this frame goes behind the next one, if that one has left the sender already (strictly
        // before now, so its `txDone` ran and its arrival is scheduled); this event then delivers nothing
        // and one more arrival follows the next's. Frames are only ever delayed, never delivered early.
        if lf.reorder > 0, dirHead[d] + 1 < dirQueue[d].count, dirQueue[d][dirHead[d] + 1].txEnd < now,
           faultRandom.unit() < lf.reorder {
            dirQueue[d].swapAt(dirHead[d], dirHead[d] + 1)
            metrics.linkReordered += 1
            agent.linkFault(dirQueue[d][dirHead[d] + 1].message, on: handle(s), now: now)
            let next = dirQueue[d][dirHead[d]].txEnd + slotSpec[i].latency
            queue.push(Event(time: max(now, next), kind: .arrival, a: s, b: Int32(bitPattern: gen), c: side.rawValue))
            return
        }
        let f = dirQueue[d][dirHead[d]]
        dirHead[d] += 1
        if dirHead[d] == dirQueue[d].count {
            dirQueue[d].removeAll(keepingCapacity: true)
            dirHead[d] = 0
        }
        var message: Agent.Message? = f.message
        var copies = 1
        if lf.duplicate > 0, faultRandom.unit() < lf.duplicate {
            copies = 2
            metrics.linkDuplicated += 1
            agent.linkFault(f.message, on: handle(s), now: now)
        }
        if lf.corrupt > 0, faultRandom.unit() < lf.corrupt {
            metrics.linkCorrupted += 1
            message = Agent.corrupted(f.message, random: &faultRandom)
            agent.linkFault(f.message, on: handle(s), now: now)
        }
        if let message {
            arrivingOn = Int32(slotSpec[i].linkClass.rawValue)
            for _ in 0..<copies {
                agent.received(message, on: handle(s), at: side.other, now: now, effects: &effects)
                applyEffects()
            }
            arrivingOn = -1
        }
        poll(s, .a)
        poll(s, .b)
    }

    private func applyEffects() {
        if let v = effects.violation, invariantViolation == nil {
            invariantViolation = "at \(now) ms (event \(eventsProcessed)): \(v)"
        }
        if !effects.accepted.isEmpty {
            for (node, change, hops) in effects.accepted { delivered(change, at: node, hops: hops) }
            metrics.relayed += effects.accepted.count
        }
        metrics.relayed += effects.duplicates
        metrics.duplicates += effects.duplicates
        metrics.dropped += effects.dropped
        for t in effects.timers where t.at <= duration {
            queue.push(Event(time: max(now, t.at), kind: .agentTimer, a: t.slot, b: Int32(bitPattern: t.generation)))
        }
        if !effects.wakes.isEmpty {
            let wakes = effects.wakes
            effects.clear()
            for (s, side) in wakes { poll(s, side) }
        } else {
            effects.clear()
        }
    }

    // MARK: Changes and deliveries

    private func changeCreated(_ spec: ChangeSpec) {
        if spec.plan != 0 && withdrawnPlans.contains(spec.plan) {
            withdrawnWrites += 1
            return
        }
        guard nodeUp[Int(spec.author)] else {
            if InfraCrashes.classes.contains(context.world.nodes[Int(spec.author)].nodeClass) {
                // A fixed node that is down (`faults.crashesPerInfraYear`): its duty officers write the incident,
                // dispatch or status when it is back (a dispatch is not dropped: its unit would wait for it for ever).
                writesWhileDown[spec.author, default: []].append(spec)
                writesDeferred += 1
            } else {
                metrics.skippedWrites += 1
            }
            return
        }
        let c = context.changes.append(spec, at: now)
        let world = context.world
        var t = Int32(world.readers[Int(spec.domain)].count) - lostReaders[Int(spec.domain)]
        if world.reads(spec.domain, at: spec.author) { t -= 1 }
        metrics.targets.appendGrowingByAnEighth(max(t, 0))
        metrics.reached.appendGrowingByAnEighth(0)
        metrics.hqArrival.appendGrowingByAnEighth(world.nodes[Int(spec.author)].nodeClass == .hq ? now : -1)
        metrics.lastArrival.appendGrowingByAnEighth(-1)
        if now >= warmup {
            metrics.created += Int(max(t, 0))
            changesAfterWarmup += 1
            if world.nodes[Int(spec.author)].nodeClass == .hq { hqCount += 1 }
        }
        mix(0xC4A9 ^ UInt64(c))
        crossedMeeting.append(false)
        if spec.notify >= 0 { watched[c] = spec.notify }
        agent.changeCreated(c, at: spec.author, now: now, effects: &effects)
        applyEffects()
    }

    private func delivered(_ c: ChangeIndex, at node: NodeIndex, hops: HopCount) {
        mix(UInt64(UInt32(bitPattern: c)) << 32 | UInt64(UInt32(bitPattern: node)))
        let ch = context.changes
        let i = Int(c)
        let d = ch.domain[i]
        let world = context.world
        if !world.carries(d, at: node), invariantViolation == nil {
            invariantViolation = "at \(now) ms (event \(eventsProcessed)): \(world.nodes[Int(node)].name) holds change \(c) of \(world.domainNames[Int(d)]), which it may not carry"
        }
        if !watched.isEmpty, watched[c] == node {
            // The scenario reacts in an event of its own at this millisecond, after this one: it may end contacts,
            // which must not happen inside the agent call that reported the delivery.
            watched[c] = nil
            queue.push(Event(time: now, kind: .holdNotice, a: c, b: node, c: arrivingOn))
        }
        if arrivingOn == Int32(LinkClass.backpackDirect.rawValue), i < crossedMeeting.count {
            meetingDeliveries += 1
            crossedMeeting[i] = true
        }
        guard world.reads(d, at: node), node != ch.author[i] else { return }
        let lat = now - ch.createdAt[i]
        if options.oracleSampleEvery > 0 && i % options.oracleSampleEvery == 0 {
            sampledArrivals[UInt64(i) << 32 | UInt64(UInt32(bitPattern: node))] = now
        }
        metrics.reached[i] += 1
        metrics.lastArrival[i] = now
        let post = ch.createdAt[i] >= warmup
        let cls = Int(ch.changeClass[i].rawValue), pr = Int(ch.priority[i].rawValue)
        if post {
            metrics.delivered += 1
            metrics.latency.record(lat)
            metrics.hops.record(Int64(hops))
            metrics.latencyToAll[cls][pr].record(lat)
        }
        if world.nodes[Int(node)].nodeClass == .hq && metrics.hqArrival[i] < 0 {
            metrics.hqArrival[i] = now
            if post {
                metrics.latencyToHQ[cls][pr].record(lat)
                hqCount += 1
            }
        }
    }

    // MARK: Faults

    private func crash(_ node: NodeIndex, lose: Bool) {
        guard !nodeLost[Int(node)] else { return }
        nodeUp[Int(node)] = false
        for s in 0..<slotEffective.count where slotEffective[s] {
            let spec = slotSpec[s]
            if spec.a == node || spec.b == node { endEffective(Int32(s)) }
        }
        if lose {
            nodeLost[Int(node)] = true
            let world = context.world
            for d in world.carried[Int(node)] where world.reads(d, at: node) { lostReaders[Int(d)] += 1 }
            agent.nodeLost(node, now: now, effects: &effects)
        } else {
            agent.nodeCrashed(node, now: now, effects: &effects)
        }
        applyEffects()
    }

    private func restart(_ node: NodeIndex) {
        guard !nodeLost[Int(node)], !nodeUp[Int(node)] else { return }
        nodeUp[Int(node)] = true
        agent.nodeRestarted(node, now: now, effects: &effects)
        applyEffects()
        for s in 0..<slotSpec.count where slotDesired[s] > 0 && !slotEffective[s] {
            let spec = slotSpec[s]
            if (spec.a == node || spec.b == node) && nodeUp[Int(spec.a)] && nodeUp[Int(spec.b)] { startEffective(Int32(s)) }
        }
        for spec in writesWhileDown.removeValue(forKey: node) ?? [] { changeCreated(spec) }
    }

    /// Whether `node` was lost during the run.
    public func isLost(_ node: NodeIndex) -> Bool { nodeLost[Int(node)] }

    // MARK: Sampling

    private func sample() {
        var targets = 0, reached = 0
        // Running sums would be cheaper; samples are rare (hourly or daily), so recompute exactly.
        let ch = context.changes
        var i = ch.count - 1
        while i >= 0 {
            if ch.createdAt[i] < warmup { break }
            targets += Int(metrics.targets[i])
            reached += Int(metrics.reached[i])
            i -= 1
        }
        metrics.series.append(SeriesRow(time: now, changes: changesAfterWarmup, targets: targets, delivered: reached,
                                         atHQ: hqCount, bytesByLink: metrics.bytesByLink))
    }

    private func snapshot() {
        let world = context.world
        let ch = context.changes
        var out = Array(repeating: SimTime(-1), count: world.count)
        for n in 0..<world.count where !nodeLost[n] && world.nodes[n].nodeClass != .relay {
            var oldest: SimTime = -1
            for d in world.carried[n] {
                for c in ch.byDomain[Int(d)] {
                    let t = ch.createdAt[Int(c)]
                    if oldest >= 0 && t >= oldest { break }
                    if !agent.holds(c, at: NodeIndex(n)) { oldest = t; break }
                }
            }
            out[n] = oldest < 0 ? 0 : now - oldest
        }
        metrics.staleness = out
        metrics.stalenessAt = now
    }

    // MARK: End-of-run checks

    /// Convergence at the end: (change, live entitled replica) pairs still missing, and the time after
    /// the end of the workload at which the last entitled replica received its last change (nil if
    /// some are missing).
    public func convergence() -> (missing: Int, time: SimTime?) {
        let world = context.world
        let ch = context.changes
        var missing = 0
        var last: SimTime = workloadEnd
        for i in 0..<ch.count {
            let d = ch.domain[i]
            for n in world.readers[Int(d)] where !nodeLost[Int(n)] {
                if !agent.holds(ChangeIndex(i), at: n) { missing += 1 }
            }
            if metrics.lastArrival[i] > last { last = metrics.lastArrival[i] }
        }
        return (missing, missing == 0 ? last - workloadEnd : nil)
    }

    /// Invariant check: no node holds a change of a domain it may not carry.
    public func checkEntitlement() -> Bool {
        let world = context.world
        let ch = context.changes
        for i in stride(from: 0, to: ch.count, by: max(1, ch.count / 2_000)) {
            for n in 0..<world.count where agent.holds(ChangeIndex(i), at: NodeIndex(n)) {
                if !world.carries(ch.domain[i], at: NodeIndex(n)) { return false }
            }
        }
        return true
    }
}
