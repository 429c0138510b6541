import FieldSyncCore
import FieldSyncCrypto

/// Behaviour the certificate's role imposes on a node.
public enum RolePolicy {
    /// Checks that a node of `role` may start with this many epoch keys, this relay quota and this store
    /// durability (`normalSync`: `store.syncMode = normal`).
    /// - Throws: `NodeError` saying what to remove: a relay must hold no epoch keys (it forwards
    ///   ciphertext it cannot read), only a relay takes a quota, and HQ runs its store `full`: its receipts
    ///   let relay boxes evict what they name (`evictReceipted`), so a receipt must never name a commit a
    ///   power loss can take back (with `normal` the commits since the last WAL checkpoint are lost; the
    ///   receipts already sent are not: docs/simulator.md, "Power loss").
    public static func check(role: Role, epochKeys: Int, quotaBytes: Int?, normalSync: Bool = false) throws {
        if role == .hq, normalSync {
            throw NodeError("this device is HQ and its store must run `store.syncMode` \"full\": with \"normal\" a power loss can "
                + "take back changes its receipts already told relay boxes they may evict; set \"syncMode\": \"full\"")
        }
        if role == .relay, epochKeys > 0 {
            throw NodeError("this device is a relay and must not hold epoch keys, but \(epochKeys) are configured; "
                + "remove `epochKeyFiles` from the config (a relay stores and forwards ciphertext only)")
        }
        if role != .relay, quotaBytes != nil {
            throw NodeError("`relay.quotaBytes` is set but this device is a \(role), not a relay; remove it "
                + "(only relay boxes drop or refuse changes for quota)")
        }
    }
}
