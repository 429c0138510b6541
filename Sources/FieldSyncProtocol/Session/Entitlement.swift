import FieldSyncCore
import FieldSyncCrypto

/// Who may hold which logs. Relay boxes and HQ carry everything (relays as ciphertext); every other
/// device holds the logs on its jurisdiction path: scopes that contain one of its scopes (HQ and county
/// control logs: revocations, grants, receipts) or lie within one (its station's and villages' records).
public enum Entitlement {
    /// Whether the holder of `certificate` may receive and store changes of `log`.
    public static func mayHold(_ certificate: Certificate, _ log: LogID) -> Bool {
        if holdsEverything(certificate.role) { return true }
        return certificate.scopes.contains { $0.contains(log.scope) || log.scope.contains($0) }
    }

    private static func holdsEverything(_ role: Role) -> Bool { role == .relay || role == .hq }

    /// What `mayHold` reads of a certificate: two certificates with equal keys may hold exactly the same
    /// logs (a station and its backpacks, every relay box). Kept beside `mayHold`, which it must follow.
    struct Key: Equatable {
        let holdsEverything: Bool
        let scopes: [Scope]
    }

    static func key(_ certificate: Certificate) -> Key {
        let all = holdsEverything(certificate.role)
        return Key(holdsEverything: all, scopes: all ? [] : certificate.scopes)
    }
}
