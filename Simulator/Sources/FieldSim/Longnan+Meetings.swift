// Issue 14: officers meeting on patrol. Two backpack units of one station at one village at overlapping times
// (patrol stops, incident scenes) get a short-range contact (`backpack-direct`) for the overlap, generated from
// the plans and tagged with both plans, so that it follows the reactive dispatch's withdrawals.

extension LongnanScenario {
    /// The default `backpack-direct` link: an ASSUMPTION (docs/simulator.md, "Officers meeting; village-scope
    /// logs"): Wi-Fi Direct or Bluetooth between two handheld devices a few tens of metres apart at one village,
    /// 250 kB/s (2 Mbit/s: Bluetooth 5 LE 2M PHY's best, far below what Wi-Fi Direct reaches near by) each way,
    /// 20 ms one way.
    static let defaultBackpackDirect = LinkParameters(bytesPerSecond: 250_000, latencyMs: 20)

    /// Whether officers who meet get a contact (`LongnanConfig.backpackMeetings`, default true; reactive
    /// `nearest` dispatch only: the other models write their contacts untagged and are left as they were).
    var meetings: Bool { (cfg.backpackMeetings ?? true) && !legacyDispatch && !plannedDispatch }

    /// Schedules, for `stops` of backpack `o`'s plan `p`, a `backpack-direct` contact with every other backpack
    /// unit of its station whose plan in force (today's, or its latest patrol of an earlier day) has it at the
    /// same village at an overlapping time: for the overlap (from `now` on), tagged with both plans, so that it
    /// never comes up, or ends then, when either officer's plan is withdrawn. Called when `p` is scheduled, after
    /// the other plans it may meet: each meeting is scheduled once, with the later of its two plans.
    func planMeetings(_ o: Int, _ p: PatrolPlan, stops: ArraySlice<PatrolStop>, now: SimTime, into out: inout ScenarioSchedule) {
        guard p.tag != 0, !stops.isEmpty else { return }
        let s = Int(world.nodes[Int(backpackList[o])].station)
        let first = backpackOrdinal[s]
        for o2 in first..<(first + backpacks[s].count) where o2 != o {
            let today = plansToday.indices.contains(o2) ? plansToday[o2] : nil
            for q in [today, lastPatrol[o2]] {
                guard let q, !q.rest, q.tag != 0, q.tag != p.tag else { continue }
                meet(o, p.tag, stops, o2, q.tag, q.stops[...], now: now, into: &out)
            }
        }
    }

    /// The meetings of the day's new plans (`plansToday`, just scheduled): each pair of one station's units,
    /// today's plans with each other and with the other's latest patrol of an earlier day (a detour that ran
    /// past midnight; meetings of two earlier plans were scheduled with them).
    func dayMeetings(now: SimTime, into out: inout ScenarioSchedule) {
        for s in backpacks.indices {
            let first = backpackOrdinal[s]
            let n = backpacks[s].count
            for o in first..<(first + n) {
                let p = plansToday[o]
                guard !p.rest, p.tag != 0 else { continue }
                for o2 in first..<(first + n) where o2 != o {
                    let q = plansToday[o2]
                    if o2 > o, !q.rest, q.tag != 0 { meet(o, p.tag, p.stops[...], o2, q.tag, q.stops[...], now: now, into: &out) }
                    if let l = lastPatrol[o2], !l.rest, l.tag != 0, l.back > now {
                        meet(o, p.tag, p.stops[...], o2, l.tag, l.stops[...], now: now, into: &out)
                    }
                }
            }
        }
    }

    /// A `backpack-direct` contact for every overlap, from `now` on, of a stop of `a` with a stop of `b` at the
    /// same village.
    private func meet(_ o: Int, _ pa: UInt64, _ a: ArraySlice<PatrolStop>, _ o2: Int, _ pb: UInt64, _ b: ArraySlice<PatrolStop>,
                      now: SimTime, into out: inout ScenarioSchedule) {
        for x in a where x.leave > now {
            for y in b where y.village == x.village {
                let start = Swift.max(x.arrive, y.arrive, now)
                let end = Swift.min(x.leave, y.leave)
                if end > start {
                    out.contact(spec(.backpackDirect, backpackList[o], backpackList[o2]), from: start, to: end, plans: pa, pb)
                }
            }
        }
    }
}

extension Simulation {
    /// One line on the paths of a `longnan` run under reactive dispatch (nil for other runs): the dispatches by
    /// the class of the contact over which the officer's device first held them, the `backpack-direct` contacts
    /// that came up and the (change, node) deliveries over them, and the changes by class that some node first
    /// held from a meeting.
    public func pathsLine() -> String? {
        guard let scen = scenarioNow as? LongnanScenario, !scen.dispatchLog.isEmpty else { return nil }
        var via = Array(repeating: 0, count: LinkClass.allCases.count)
        var none = 0
        for d in scen.dispatchLog where d.kind == .backpack && d.received >= 0 {
            if let v = d.via { via[Int(v.rawValue)] += 1 } else { none += 1 }
        }
        let ch = context.changes
        var crossed = Array(repeating: 0, count: ChangeClass.allCases.count)
        for i in crossedMeeting.indices where crossedMeeting[i] { crossed[Int(ch.changeClass[i].rawValue)] += 1 }
        let receipts = LinkClass.allCases.filter { via[Int($0.rawValue)] > 0 }.map { "\($0) \(via[Int($0.rawValue)])" } + (none > 0 ? ["not from a frame \(none)"] : [])
        return "dispatches received by backpack officers, by link: \(receipts.joined(separator: ", ")); "
            + "backpack-direct contacts \(metrics.contactsByLink[Int(LinkClass.backpackDirect.rawValue)]), deliveries over them \(meetingDeliveries); "
            + "changes some node first held from a meeting: " + ChangeClass.allCases.map { "\($0) \(crossed[Int($0.rawValue)])" }.joined(separator: ", ")
    }
}
