import ArgumentParser
import FieldSyncCore
import Foundation

/// `fieldsync demo crdt` (or `demo --crdt`): three in-memory replicas (a backpack unit, its station, HQ) record an incident
/// and a visit, edit the incident concurrently while cut off from each other, then exchange their
/// edits in different orders, with duplicates, and converge to byte-identical state.
struct CRDTDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crdt",
        abstract: "Show three replicas editing concurrently and converging (in memory).",
        discussion: "Deterministic for a given --seed; prints each step and the final state of every replica."
    )

    @Option(help: "Seed for record ids and delivery orders.")
    var seed: UInt64 = 2024

    mutating func run() throws {
        var rng = SplitMix64(seed: seed)
        let backpack = Node(name: "backpack-wudu-017-a", id: DeviceID(.random(using: &rng)), skewMs: 0)
        let station = Node(name: "station-017", id: DeviceID(.random(using: &rng)), skewMs: -7_200_000)  // clock 2 h slow:
        // its edits still order after what it has seen, because the HLC never goes below a received stamp
        let hq = Node(name: "hq", id: DeviceID(.random(using: &rng)), skewMs: 1_500)
        var nodes = [backpack, station, hq]
        var t: UInt64 = 1_717_200_000_000  // 2024-06-01 00:00 UTC; the demo uses a virtual wall clock
        let village = try Scope("longnan/wudu/station-017/village-0412")

        step("1. Officer (backpack unit) records an incident and a visit in village-0412, no coverage")
        let incidentID = RecordID.random(using: &rng)
        let visitID = RecordID.random(using: &rng)
        t += 60_000
        let create = Incident.create(
            id: incidentID, scope: village, author: nodes[0].id, hlc: try nodes[0].tick(t), category: .dispute,
            priority: .high, location: Location(latitude: 33.412, longitude: 104.951, placeName: "村委会 village hall"),
            summary: "Boundary dispute between two households", reportedAt: Int64(t), reporter: "walk-in",
            feedbackDeadline: Int64(t + 24 * 3_600_000), notes: ["两户宅基地边界纠纷 (homestead boundary)"])
        let visit = Visit.create(
            id: visitID, scope: village, author: nodes[0].id, hlc: try nodes[0].tick(t + 5_000),
            subject: "household-0412-17", visitor: "officer-li", visitType: .returningMigrantWorker,
            visitedAt: Int64(t), outcome: "returned from Xinjiang, seeking work", followUpBy: Int64(t + 7 * 86_400_000))
        try nodes[0].local(create)
        try nodes[0].local(visit)
        print("   backpack holds \(nodes[0].replica.records.count) records; station and HQ hold none")

        step("2. The backpack reaches a relay; station and HQ receive the incident")
        for i in 1...2 { try nodes[i].receive([create], wall: t + 30_000) }

        step("3. Cut off again, all three edit the incident concurrently")
        t += 600_000
        var view = try Incident(nodes[0].replica.records[incidentID]!)
        let e0 = nodes[0].edit(incidentID, try nodes[0].tick(t), [
            view.advance(to: .onScene), .add(field: Incident.Field.assignedUnits, element: "officer-li"),
            .append(field: Incident.Field.notes, text: "到达现场 on scene, parties calm"),
        ])
        view = try Incident(nodes[1].replica.records[incidentID]!)
        let e1 = nodes[1].edit(incidentID, try nodes[1].tick(t + 1_000), [
            .set(field: Incident.Field.priority, value: .symbol("urgent")), .add(field: Incident.Field.assignedUnits, element: "station-017-car-2"),
            view.advance(to: .dispatched),
        ])
        view = try Incident(nodes[2].replica.records[incidentID]!)
        let e2 = nodes[2].edit(incidentID, try nodes[2].tick(t + 2_000), [
            view.advance(to: .dispatched), .append(field: Incident.Field.notes, text: "HQ: mediator from the justice office notified"),
        ])
        try nodes[0].local(e0)
        try nodes[1].local(e1)
        try nodes[2].local(e2)
        for n in nodes { print("   \(n.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(try n.summary(incidentID))") }

        step("4. The officer resolves and closes it; HQ's stale 'dispatched' is still in flight")
        view = try Incident(nodes[0].replica.records[incidentID]!)
        let e3 = nodes[0].edit(incidentID, try nodes[0].tick(t + 3_600_000), [
            view.advance(to: .closed), .set(field: Incident.Field.feedback, value: .string("调解成功 mediated, agreement signed")),
        ])
        try nodes[0].local(e3)

        step("5. Edits are exchanged in a different order at each node, with duplicates")
        let all = nodes.map(\.log)
        for i in nodes.indices {
            var order = all.enumerated().filter { $0.offset != i }.flatMap(\.element)
            order.shuffle(using: &rng)
            order += order.prefix(2)  // a retransmission
            try nodes[i].receive(order, wall: t + 4_000_000)
            let names = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0.name) })
            print("   \(nodes[i].name) applied \(order.count) edits from: \(order.map { names[$0.author]! }.joined(separator: ", "))")
        }

        step("6. Result")
        for n in nodes {
            print("   \(n.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(try n.summary(incidentID))  state \(n.digest)")
        }
        let converged = Set(nodes.map(\.digest)).count == 1
        let inc = try Incident(nodes[2].replica.records[incidentID]!)
        let v = try Visit(nodes[2].replica.records[visitID]!)
        print("""
           HQ sees the visit: \(v.visitType.rawValue) to \(v.subject), follow-up needed: \(v.followUpNeeded)
           HQ sees the incident: \(inc.category.rawValue), \(inc.priority.name), \(inc.status), units \(inc.assignedUnits)
           notes: \(inc.notes.map(\.text))
           The stale 'dispatched' writes did not move the closed incident backwards (status lattice).
        """)
        print(converged ? "\nCONVERGED: all 3 replicas hold byte-identical state." : "\nDIVERGED")
        if !converged { throw ExitCode.failure }
    }

    private func step(_ text: String) { print("\n" + text) }
}

/// One demo replica: its device id, a skewed virtual clock, its records and the edits it authored.
private struct Node {
    let name: String
    let id: DeviceID
    let skewMs: Int64
    var clock = HybridLogicalClock(maxDriftMilliseconds: 12 * 3_600_000)
    var replica = Replica()
    var log: [RecordEdit] = []

    init(name: String, id: DeviceID, skewMs: Int64) {
        self.name = name
        self.id = id
        self.skewMs = skewMs
    }

    mutating func tick(_ wall: UInt64) throws -> HLCTimestamp { try clock.now(wall: UInt64(Int64(wall) + skewMs)) }

    func edit(_ record: RecordID, _ hlc: HLCTimestamp, _ actions: [Action]) -> RecordEdit {
        replica.records[record]!.edit(author: id, hlc: hlc, actions)
    }

    mutating func local(_ edit: RecordEdit) throws {
        try replica.apply(edit)
        log.append(edit)
    }

    /// Applies edits from peers and advances the clock past them (`wall` is the true time; this node's
    /// clock reads it with its skew).
    mutating func receive(_ edits: [RecordEdit], wall: UInt64) throws {
        for e in edits {
            try replica.apply(e)
            _ = try clock.receive(remote: e.hlc, wall: UInt64(Int64(wall) + skewMs))
        }
    }

    func summary(_ id: RecordID) throws -> String {
        let i = try Incident(replica.records[id]!)
        return "\(i.status) (gen \(i.generation)), \(i.priority.name), units \(i.assignedUnits), \(i.notes.count) notes"
    }

    /// FNV-1a 64 of the canonical encoding: equal digests, equal state (for display only).
    var digest: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in replica.canonicalBytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }
}
