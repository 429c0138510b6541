import FieldSyncCore

@testable import FieldSyncCrypto

/// A small deterministic world: an HQ root, a delegated county authority for longnan/wudu, and devices.
struct World {
    static let day: UInt64 = 86_400_000
    static let t0: UInt64 = 1_790_000_000_000  // a fixed "now" in ms

    let root: Authority
    let county: Authority
    var trust: TrustStore

    static func seed(_ b: UInt8) -> SecretBytes { SecretBytes(copying: [UInt8](repeating: b, count: 32)) }
    static func scope(_ s: String) -> Scope { try! Scope(s) }

    init() throws {
        root = Authority(root: try Ed25519.SecretKey(seed: World.seed(1)))
        trust = TrustStore(root: root.signingKey.publicKey)
        let countyKey = try Ed25519.SecretKey(seed: World.seed(2))
        let countyX = try X25519.SecretKey(secret: World.seed(3))
        let req = try EnrollmentRequest(signingKey: countyKey, agreementKey: countyX.publicKey, requestedRole: .county,
                                        requestedScopes: [World.scope("longnan/wudu")], createdAt: World.t0, label: "wudu county")
        let cert = try root.delegate(req, scopes: [World.scope("longnan/wudu")], notBefore: World.t0 - World.day,
                                     notAfter: World.t0 + 365 * World.day, serial: 100)
        county = try Authority(delegated: countyKey, certificate: cert)
        try trust.addAuthority(cert, now: World.t0)
    }
}

/// A device: keys and certificate.
struct Device {
    let signing: Ed25519.SecretKey
    let agreement: X25519.SecretKey
    let certificate: Certificate
    var id: DeviceID { certificate.subject }

    init(_ n: UInt8, role: Role, scopes: [String], by authority: Authority, notBefore: UInt64 = World.t0 - World.day,
         notAfter: UInt64 = World.t0 + 30 * World.day) throws {
        signing = try Ed25519.SecretKey(seed: World.seed(n))
        agreement = try X25519.SecretKey(secret: World.seed(n &+ 100))
        let req = try EnrollmentRequest(signingKey: signing, agreementKey: agreement.publicKey, requestedRole: role,
                                        requestedScopes: scopes.map(World.scope), createdAt: World.t0, label: "device \(n)")
        certificate = try authority.enroll(req, role: role, scopes: scopes.map(World.scope), notBefore: notBefore,
                                           notAfter: notAfter, serial: UInt64(n))
    }
}

func identityCode(_ body: () throws -> Void) -> IdentityError.Code? {
    do { try body() } catch let e as IdentityError { return e.code } catch { return nil }
    return nil
}

func changeError(_ body: () throws -> Void) -> ChangeError? {
    do { try body() } catch let e as ChangeError { return e } catch { return nil }
    return nil
}
