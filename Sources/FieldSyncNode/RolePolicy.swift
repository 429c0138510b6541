import FieldSyncCore
import FieldSyncCrypto

/// Behaviour the certificate's role imposes on a node.
public enum RolePolicy {
    /// Checks that a node of `role` may start with this many epoch keys and this relay quota.
    /// - Throws: `NodeError` saying what to remove: a relay must hold no epoch keys (it forwards
    ///   ciphertext it cannot read), and only a relay takes a quota.
    public static func check(role: Role, epochKeys: Int, quotaBytes: Int?) throws {
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
