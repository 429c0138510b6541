import FieldSyncCore
import FieldSyncCrypto
@testable import FieldSyncProtocol

/// A small Longnan PKI for tests: an HQ root authority and enrolled devices with epoch keys.
struct TestPKI {
    static let now: UInt64 = 1_717_200_000_000
    static let day: UInt64 = 86_400_000
    let rootKey = Ed25519.SecretKey.generate()
    let hq: Authority
    let trust: TrustStore
    var serial: UInt64 = 0
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")
    static let root = try! Scope("longnan")
    let stationKey = EpochKey.generate(scope: station, epoch: 1)

    init() {
        hq = Authority(root: rootKey)
        trust = TrustStore(root: rootKey.publicKey)
    }

    mutating func device(_ role: Role, scopes: [Scope], label: String = "d", validDays: UInt64 = 30) throws -> DeviceIdentity {
        let sk = Ed25519.SecretKey.generate()
        let xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: Self.now, label: label)
        serial += 1
        let cert = try hq.enroll(req, role: role, scopes: scopes, notBefore: Self.now - Self.day,
                                 notAfter: Self.now + validDays * Self.day, serial: serial)
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }

    /// A replicator over a memory store, holding the station key unless `withKey` is false.
    func replicator(_ id: DeviceIdentity, withKey: Bool = true, store: any SyncStore = MemoryStore()) -> Replicator {
        let r = Replicator(identity: id, trust: trust, store: store)
        if withKey { r.addKey(stationKey) }
        return r
    }
}
