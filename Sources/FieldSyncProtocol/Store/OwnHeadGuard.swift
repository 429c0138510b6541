import FieldSyncCore
import FieldSyncCrypto

/// The head of one of this device's own logs: the seq, id and HLC of the last change it wrote there.
public struct OwnHead: Sendable, Equatable {
    /// The seq of the last own change.
    public var seq: UInt64
    /// Its id (the next change's `prevHash`), 32 bytes.
    public var hash: [UInt8]
    /// Its HLC (the clock never goes below it).
    public var hlc: HLCTimestamp

    /// Creates a head.
    public init(seq: UInt64, hash: [UInt8], hlc: HLCTimestamp) {
        precondition(hash.count == 32, "change ids are 32 bytes")
        self.seq = seq
        self.hash = hash
        self.hlc = hlc
    }
}

/// A monotonic record of this device's own log heads, kept apart from the store (attack case 48,
/// docs/node.md "Restoring a device"). A store restored from an older copy has lost the device's last
/// changes, which peers already hold: writing the next seq from the store alone would sign a second
/// change at a used position, a fork. With a guard, `Replicator` continues each own log after the
/// higher of the store's head and the guard's (the chain stays intact; the lost seqs come back from
/// peers), and refuses to write when the two name different changes at the same seq.
///
/// Implementations persist durably before `advance` returns and never lower a head. The guard only
/// helps if it does not go back with the store: keep it on other media than the store (the CLI keeps
/// it in the keystore directory, `SeqGuardFile`); a whole-device image restore takes both back, and
/// then fork detection is the backstop.
public protocol OwnHeadGuard: AnyObject {
    /// The head recorded for `log`, if any.
    func head(of log: LogID) throws -> OwnHead?
    /// Every head recorded.
    func heads() throws -> [LogID: OwnHead]
    /// Raises the recorded heads (a head at or below the recorded seq is ignored).
    func advance(_ heads: [LogID: OwnHead]) throws
    /// The restore fence in force, if any (`RestoreFence`): while there is one, `Replicator` refuses
    /// every own write. Guards that are never restored return nil (the default).
    func fence() throws -> RestoreFence?
    /// Removes the fence, durably before returning (the default does nothing).
    func liftFence() throws
}

extension OwnHeadGuard {
    public func fence() throws -> RestoreFence? { nil }
    public func liftFence() throws {}
}

/// A device restored from a backup (docs/backup.md) brings back its store *and* its guard as they were
/// when the backup was taken: if it wrote after that, both are behind its own logs, and writing would
/// sign a second change at a seq it already used (a fork, attack case 48). So a restore leaves a fence
/// in the guard, and the device writes nothing until a sync has shown it its own logs' heads: a
/// session's first exchange with a peer that held at least one of this device's own changes and was
/// not behind this store on any own log both may hold, after which this store holds everything that
/// peer held of them (`Replicator.confirmOwnHeads`), and no HQ receipt names an own seq this store
/// lacks. The operator may lift it by hand for a device whose peers are all gone, at the risk of a fork.
public struct RestoreFence: Sendable, Equatable {
    /// When the backup was taken, ms since the Unix epoch.
    public var backupTime: UInt64
    /// When it was restored, ms since the Unix epoch.
    public var restoredTime: UInt64

    /// Creates a fence.
    public init(backupTime: UInt64, restoredTime: UInt64) {
        self.backupTime = backupTime
        self.restoredTime = restoredTime
    }
}

/// An in-memory guard (tests, the simulator): it survives what the test keeps it across.
public final class MemoryHeadGuard: OwnHeadGuard {
    private var recorded: [LogID: OwnHead] = [:]
    /// The restore fence (set it to fence the device, as a restore does).
    public var restoreFence: RestoreFence?

    /// An empty guard.
    public init() {}

    public func head(of log: LogID) throws -> OwnHead? { recorded[log] }
    public func heads() throws -> [LogID: OwnHead] { recorded }
    public func advance(_ heads: [LogID: OwnHead]) throws {
        for (log, h) in heads where (recorded[log]?.seq ?? 0) < h.seq { recorded[log] = h }
    }
    public func fence() throws -> RestoreFence? { restoreFence }
    public func liftFence() throws { restoreFence = nil }
}
