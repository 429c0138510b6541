import FieldSyncCore

// What each node holds of the workload's changes, with each one's hop count, for the `fieldsync` agent.

/// Numbers each workload change within its domain, in creation order (a change's `ChangeTable` index grows with
/// its creation, so the numbering is the same in every run of a seed), and lists each domain's changes.
final class ChangeDomainIndex {
    /// Change -> its position among its domain's changes.
    private(set) var position: [Int32] = []
    /// Domain -> its changes, by position.
    private(set) var changes: [[ChangeIndex]]
    private let domains: () -> [Int32]

    /// An index over the changes whose domains `domains` gives (the run's `ChangeTable.domain`, which grows).
    init(domainCount: Int, domains: @escaping () -> [Int32]) {
        changes = Array(repeating: [], count: domainCount)
        self.domains = domains
    }

    /// The position of `c` among its domain's changes (numbering every change created up to `c` first).
    func position(of c: ChangeIndex) -> Int {
        if Int(c) >= position.count {
            let d = domains()
            for i in position.count...Int(c) {
                position.appendGrowingByAnEighth(Int32(changes[Int(d[i])].count))
                changes[Int(d[i])].appendGrowingByAnEighth(ChangeIndex(i))
            }
        }
        return Int(position[Int(c)])
    }
}

/// One node's held workload changes and their hop counts: for each domain the node carries, a dense array over
/// the domain's changes by position (`ChangeDomainIndex`), 2 bytes a change (0: not held, else hops + 1); a table
/// for changes of domains it does not carry and for the saturated hop count. A node holds nearly every change of
/// the domains it carries, so this takes 2 bytes a change of those domains where a dictionary from change to hops
/// took about 11 bytes a held change (docs/simulator.md, "Issue 14: memory of the year (session 20)").
struct HeldChanges {
    /// Carried slot (`World.slot(of:at:)`) -> position -> hops + 1, or 0.
    private var dense: [[UInt16]]
    /// Changes of domains the node does not carry.
    private var other: [ChangeIndex: HopCount] = [:]
    /// Changes held.
    private(set) var count = 0

    /// Nothing held, for a node carrying `carried` domains.
    init(carried: Int) { dense = Array(repeating: [], count: carried) }

    /// The hop count of `c` if held; `slot` is the slot of its domain at this node (-1 if not carried).
    func hops(_ c: ChangeIndex, slot: Int32, _ index: ChangeDomainIndex) -> HopCount? {
        if slot >= 0 {
            let p = index.position(of: c), row = dense[Int(slot)]
            if p < row.count, row[p] != 0 { return row[p] - 1 }
        }
        return other.isEmpty ? nil : other[c]
    }

    /// Sets the hop count of `c` (nil: no longer held). A hop count of `HopCount.max` (`nextHop` saturates there)
    /// does not fit a row's `hops + 1`: it goes to the table, as a change of a domain not carried does.
    mutating func set(_ c: ChangeIndex, _ hops: HopCount?, slot: Int32, _ index: ChangeDomainIndex) {
        var was = false
        let p = slot >= 0 ? index.position(of: c) : 0
        if slot >= 0, p < dense[Int(slot)].count, dense[Int(slot)][p] != 0 {
            was = true
            dense[Int(slot)][p] = 0
        }
        if !other.isEmpty, other.removeValue(forKey: c) != nil { was = true }
        if let hops {
            if slot >= 0, hops < HopCount.max {
                if dense[Int(slot)].count <= p {
                    let n = p + 1
                    if dense[Int(slot)].capacity < n { dense[Int(slot)].reserveCapacity(n + n / 8) }
                    dense[Int(slot)].append(contentsOf: repeatElement(0, count: n - dense[Int(slot)].count))
                }
                dense[Int(slot)][p] = hops + 1
            } else {
                other[c] = hops
            }
        }
        count += (hops != nil ? 1 : 0) - (was ? 1 : 0)
    }

    /// Bytes the dense rows take (their capacity; tests).
    var denseBytes: Int { dense.reduce(0) { $0 + $1.capacity * MemoryLayout<UInt16>.stride } }

    /// Calls `body` with every held change (the order is not meaningful).
    func forEach(carried: [Int32], _ index: ChangeDomainIndex, _ body: (ChangeIndex) -> Void) {
        for (slot, d) in carried.enumerated() {
            let list = index.changes[Int(d)]
            for (p, h) in dense[slot].enumerated() where h != 0 { body(list[p]) }
        }
        for c in other.keys { body(c) }
    }
}
