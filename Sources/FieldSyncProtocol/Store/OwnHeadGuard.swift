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
}

/// An in-memory guard (tests, the simulator): it survives what the test keeps it across.
public final class MemoryHeadGuard: OwnHeadGuard {
    private var recorded: [LogID: OwnHead] = [:]

    /// An empty guard.
    public init() {}

    public func head(of log: LogID) throws -> OwnHead? { recorded[log] }
    public func heads() throws -> [LogID: OwnHead] { recorded }
    public func advance(_ heads: [LogID: OwnHead]) throws {
        for (log, h) in heads where (recorded[log]?.seq ?? 0) < h.seq { recorded[log] = h }
    }
}
