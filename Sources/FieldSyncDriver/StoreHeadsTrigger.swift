// The store-heads trigger of the driver policy: the node reads its store's heads (one row per log) after
// sessions apply changes and on a poll (another process may write the store); when they moved, the logs
// that moved are pushed on every live session, every other peer is scheduled (debounced,
// `DriverEvent.storeChanged`), and control state is reloaded when the move may come from another process.

import FieldSyncCore
import FieldSyncProtocol

/// What a move of the store's heads calls for.
public struct StoreHeadsChange: Sendable, Equatable {
    /// The logs that moved, sorted: push them on the live sessions.
    public var moved: [LogID]
    /// Whether certificates, revocations and keys must be reloaded from the store (another process may
    /// have written them: `fieldsync publish` or `revoke` under this device's identity), and the peers
    /// re-checked, before anything is pushed.
    public var reload: Bool
    /// The device the changes came from (not pushed to, not scheduled).
    public var except: DeviceID?

    /// Creates one.
    public init(moved: [LogID], reload: Bool, except: DeviceID?) {
        self.moved = moved
        self.reload = reload
        self.except = except
    }
}

/// Remembers the store's heads and says what a new reading calls for.
public struct StoreHeadsTrigger: Sendable {
    /// The heads last read (nil before the first reading).
    public private(set) var heads: [LogID: HeldIntervals]?
    /// The fork proofs recorded when the heads were last read (`Replicator.forksRecorded`).
    public private(set) var forks = 0

    /// Creates the trigger (no reading yet).
    public init() {}

    /// A new reading of the heads. The first one only sets the baseline.
    /// - Parameters:
    ///   - except: the device whose session's changes caused this reading (nil: a poll, or changes from
    ///     several devices).
    ///   - me: this device (a move of its own logs after a session means another process wrote).
    ///   - forks: the fork proofs this node recorded so far (`Replicator.forksRecorded`). A new proof is a
    ///     change even when no head moved (the conflicting change is refused, not stored): it is pushed on
    ///     the live sessions (`SyncSession.push` sends proofs the peer has not had) and the other peers are
    ///     scheduled, so that it reaches every reader at once rather than with the next change.
    /// - Returns: nil if nothing moved and no proof is new.
    public mutating func observe(_ new: [LogID: HeldIntervals], forks: Int = 0, except: DeviceID?, me: DeviceID?) -> StoreHeadsChange? {
        guard let before = heads else {
            heads = new
            self.forks = forks
            return nil
        }
        let newProof = forks > self.forks
        self.forks = forks
        guard before != new || newProof else { return nil }
        heads = new
        let moved = new.filter { before[$0.key] != $0.value }.map(\.key).sorted()
        // A session brings no changes of this device's own logs, so a move of them means the CLI wrote.
        let reload = except == nil || moved.contains { $0.author == me }
        return StoreHeadsChange(moved: moved, reload: reload, except: except)
    }
}
