// Store durability in the `fieldsync` agent (issue 14, "store crashes that lose unflushed state as SQLite
// would"): which node classes run their store with `syncMode = normal`, and the power-loss model of such a
// store (docs/simulator.md, "Power loss").

import FieldSyncProtocol

/// Store durability per node class (`faults.normalSyncClasses`, `faults.walCheckpointCommits`).
///
/// A node's `SQLiteStore` runs in WAL mode with `synchronous = FULL` by default (`SyncMode.full`): a
/// committed batch survives power loss, so a crash loses no commit. With `synchronous = NORMAL`
/// (`SyncMode.normal`, config `store.syncMode`) SQLite syncs the WAL only before a checkpoint, and a
/// checkpoint runs when a commit leaves the WAL at `wal_autocheckpoint` pages or more (1,000 by default; the
/// store does not change it). A power loss then loses the commits since the last checkpoint (the frames
/// appended after the last sync; SQLite's recovery keeps a prefix of the commits, never a part of one). The
/// model: every crash of a node of a `normal` class is a power loss, and its store goes back to its state
/// after the last checkpoint, one every `checkpointEveryCommits` commits (the worst case: the kernel may
/// have written some later frames, which would keep more).
public struct StoreDurability: Sendable, Equatable {
    /// Node classes whose store runs `synchronous = NORMAL` (empty: every store `FULL`, the default).
    public var normal: [NodeClass] = []
    /// Commits between two checkpoints (durable points) of a `normal` store. 74 by default: the real store
    /// appended 13.4 WAL frames per commit of `fieldsync crash-writer` (3 changes with records: 672
    /// frames after 50 acknowledged commits), so the 1,000-page autocheckpoint runs about every 74 commits.
    public var checkpointEveryCommits: Int = 74
    /// Bytes of stored changes a relay box keeps (`faults.relayQuotaBytes`, the node's `relay.quotaBytes`; nil: no
    /// quota), enforced by the store itself (`StoreLimits.quotaBytes`, `CommitLogic`).
    public var relayQuotaBytes: Int?

    /// Every store `FULL` (the real default).
    public init() {}

    /// `normal` stores for `classes`, a checkpoint every `checkpointEveryCommits` commits.
    public init(normal classes: [NodeClass], checkpointEveryCommits: Int = 74) {
        normal = classes.sorted()
        self.checkpointEveryCommits = max(1, checkpointEveryCommits)
    }

    /// The scenario's setting (`faults.normalSyncClasses`, class names; `faults.walCheckpointCommits`).
    public init(_ faults: FaultConfig?) {
        let names = faults?.normalSyncClasses ?? []
        self.init(normal: NodeClass.allCases.filter { names.contains($0.description) },
                  checkpointEveryCommits: faults?.walCheckpointCommits ?? 74)
        if let q = faults?.relayQuotaBytes, q > 0 { relayQuotaBytes = q }
    }

    /// Whether `nodeClass` runs `normal`.
    public func isNormal(_ nodeClass: NodeClass) -> Bool { normal.contains(nodeClass) }

    /// One line for outputs.
    public var description: String {
        (normal.isEmpty ? "all stores synchronous=FULL"
            : "synchronous=NORMAL at \(normal.map(\.description).joined(separator: ", ")) (checkpoint every \(checkpointEveryCommits) commits)")
            + (relayQuotaBytes.map { ", relay quota \($0) bytes" } ?? "")
    }
}

/// The last durable point of one `normal` store: a `MemoryStore.Snapshot` taken after every
/// `every`-th commit (the commit that fills the WAL to its autocheckpoint is synced with it) and after every
/// commit that must be durable at once (`CommitBatch.mustBeDurable(after:)`: a revocation, a key grant, fork
/// evidence, a quarantine for a revocation), which the real store syncs whatever its mode.
final class DurablePoint {
    let every: Int
    /// Commits since the last checkpoint (the autocheckpoint's cadence, which a sync does not reset).
    private(set) var sinceCheckpoint = 0
    /// Commits since the last durable point (checkpoint or sync): what a power loss takes back.
    private(set) var sinceDurable = 0
    private(set) var snapshot: MemoryStore.Snapshot
    /// Checkpoints taken.
    private(set) var checkpoints = 0
    /// Commits synced at once because they changed what the node trusts.
    private(set) var trustSyncs = 0

    init(_ store: MemoryStore, every: Int) {
        self.every = every
        snapshot = store.snapshot()
        store.didCommit = { [unowned self] s, durable in self.committed(s, durable: durable) }
    }

    private func committed(_ store: MemoryStore, durable: Bool) {
        sinceCheckpoint += 1
        sinceDurable += 1
        if sinceCheckpoint >= every {
            sinceCheckpoint = 0
            checkpoints += 1
        } else if durable {
            // A commit that changes what the node trusts is synced at once (SQLiteStore's sync barrier), and
            // syncing the WAL makes every earlier commit durable too.
            trustSyncs += 1
        } else {
            return
        }
        snapshot = store.snapshot()
        sinceDurable = 0
    }

    /// The power loss: the store goes back to the last durable point. Returns the commits lost.
    func powerLoss(_ store: MemoryStore) -> Int {
        let lost = sinceDurable
        store.restore(snapshot)
        sinceCheckpoint = 0
        sinceDurable = 0
        return lost
    }
}
