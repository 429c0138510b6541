import FieldSyncCore
import FieldSyncCrypto

/// Who may hold which logs. Relay boxes and HQ carry everything (relays as ciphertext); every other
/// device holds the logs on its jurisdiction path: scopes that contain one of its scopes (HQ and county
/// control logs: revocations, grants, receipts) or lie within one (its station's and villages' records).
public enum Entitlement {
    /// Whether the holder of `certificate` may receive and store changes of `log`.
    public static func mayHold(_ certificate: Certificate, _ log: LogID) -> Bool {
        if certificate.role == .relay || certificate.role == .hq { return true }
        return certificate.scopes.contains { $0.contains(log.scope) || log.scope.contains($0) }
    }
}
