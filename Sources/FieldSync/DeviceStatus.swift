// What a device says about itself: its certificate chain, its store's sync progress (frontiers, held
// back, HQ receipts), its epoch keys and whether they went stale, its own records and whether they
// reached HQ. `fieldsync status` prints it; an app shows it (`FieldSyncApp.status`).

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol

/// A snapshot of one device's state, read on the node's loop in one go.
///
/// ```swift
/// let status = try await app.status(staleAfter: 14 * 86_400_000, ownRecords: true)
/// print("\(status.report.pendingToHQ) change(s) waiting for HQ")
/// for r in status.ownRecords ?? [] where !r.reachedHQ { print("\(r.id) not at HQ yet") }
/// ```
public struct DeviceStatus: Sendable {
    /// An epoch key this device holds, the newest of its scope.
    public struct Key: Sendable, Equatable {
        /// The key's scope, epoch and when its grant was issued.
        public var age: EpochKeyAge
        /// Whether it is older than the threshold (attack case 27: no rotation has reached this device).
        public var stale: Bool
    }

    /// The device.
    public var identity: DeviceIdentity
    /// When the snapshot was taken (ms since the Unix epoch).
    public var now: UInt64
    /// Frontiers, held back, receipts per log, and the store's counters.
    public var report: StoreReport
    /// The newest key of each scope held, with its staleness.
    public var epochKeys: [Key]
    /// `SCOPE#EPOCH` slots holding two different keys (records sealed under one cannot be opened with the other).
    public var keyConflicts: [String]
    /// The certificates this device's sessions depend on (its own, and its county issuer's).
    public var chain: CertificateChainLifetime
    /// The records this device wrote to, each with whether HQ holds all of its changes (nil unless asked for).
    public var ownRecords: [OwnRecordReceipt]?

    /// The stale keys among `epochKeys`.
    public var staleKeys: [EpochKeyAge] { epochKeys.filter(\.stale).map(\.age) }

    /// Reads the snapshot from a replicator (on the thread that owns it).
    /// - Parameters:
    ///   - replicator: the device's replicator.
    ///   - now: the wall clock (ms since the Unix epoch).
    ///   - staleAfter: age (ms) past which a scope's newest epoch key counts as stale.
    ///   - ownRecords: whether to list this device's own records with their receipt state (one history
    ///     query per record).
    /// - Returns: the snapshot.
    /// - Throws: store errors, as they are.
    public static func read(_ replicator: Replicator, now: UInt64, staleAfter: UInt64, ownRecords: Bool) throws -> DeviceStatus {
        let report = try StoreReport.read(replicator)
        let own = ownRecords ? try OwnRecordReceipt.read(replicator) : nil
        let stale = replicator.staleEpochKeys(now: now, threshold: staleAfter)
        let keys = replicator.newestEpochKeys().map { Key(age: $0, stale: stale.contains($0)) }
        var slots: [String: Int] = [:]
        for k in replicator.allKeys { slots["\(k.scope.path)#\(k.epoch)", default: 0] += 1 }
        return DeviceStatus(identity: replicator.identity, now: now, report: report, epochKeys: keys,
                            keyConflicts: slots.filter { $0.value > 1 }.keys.sorted(),
                            chain: CertificateChainLifetime(identity: replicator.identity, trust: replicator.trust), ownRecords: own)
    }
}

/// What `FieldSyncApp.checkStore(damage:)` found: every change the store holds read back and checked.
public struct StoreCheck: Sendable, Equatable {
    /// Changes checked.
    public var checked: Int
    /// Changes found damaged now and quarantined (the first peer that holds one sends it again).
    public var quarantinedNow: Int
    /// All changes in quarantine, waiting for a peer.
    public var quarantined: Int
    /// The store's rollback report, when it was rolled back to an older copy (run `fieldsync doctor
    /// --accept-rollback` after checking the device).
    public var rollback: String?

    /// A check's result.
    public init(checked: Int, quarantinedNow: Int, quarantined: Int, rollback: String? = nil) {
        self.checked = checked
        self.quarantinedNow = quarantinedNow
        self.quarantined = quarantined
        self.rollback = rollback
    }
}
