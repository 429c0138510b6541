import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation

/// Enrolled devices on disk (keystore unlocked by a key file) under one HQ root, for the app API tests.
struct AppFixtures {
    static let station = try! Scope("longnan/wudu/station-017")
    static let village = try! Scope("longnan/wudu/station-017/village-0412")
    static let otherStation = try! Scope("longnan/wudu/station-018")
    static let stationKey = EpochKey.generate(scope: station, epoch: 1)
    static let day: UInt64 = 86_400_000

    let dir: String
    let rootKey = Ed25519.SecretKey.generate()
    var serial: UInt64 = 0

    init() throws {
        dir = NSTemporaryDirectory() + "fieldsync-app-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }

    /// A device directory `name` with an enrolled keystore (and the station's epoch key unless `keys` says otherwise).
    /// With `passphrase`, the keystore is protected by Argon2id (`kdf` cost) instead of a key file.
    mutating func device(_ name: String, role: Role = .backpack, scopes: [Scope] = [station],
                         keys: [EpochKey] = [stationKey], passphrase: [UInt8]? = nil,
                         kdf: Argon2id.Parameters = .interactive) throws -> FieldSyncDevice {
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let sk = Ed25519.SecretKey.generate()
        let xk = X25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: now, label: name)
        serial += 1
        let cert = try Authority(root: rootKey).enroll(req, role: role, scopes: scopes, notBefore: now - Self.day,
                                                       notAfter: now + 30 * Self.day, serial: serial)
        let deviceDir = "\(dir)/\(name)"
        try FileManager.default.createDirectory(atPath: deviceDir, withIntermediateDirectories: true)
        let contents = KeystoreContents(signingKey: sk, agreementKey: xk, certificate: cert, root: rootKey.publicKey, epochKeys: keys)
        if let passphrase {
            try Keystore.write(contents, to: "\(deviceDir)/\(FieldSyncDevice.keystoreName)", protection: .passphrase(passphrase, kdf))
            return FieldSyncDevice(directory: deviceDir, key: .passphrase(passphrase), storePath: "\(dir)/\(name).sqlite")
        }
        let keyFile = "\(dir)/\(name).key"
        try Keystore.createKeyFile(at: keyFile)
        try Keystore.write(contents, to: "\(deviceDir)/\(FieldSyncDevice.keystoreName)", protection: .keyFile(path: keyFile))
        return FieldSyncDevice(directory: deviceDir, key: .keyFile(path: keyFile), storePath: "\(dir)/\(name).sqlite")
    }

    static var configuration: NodeConfiguration {
        var c = NodeConfiguration(network: NetworkParameters(networkID: "longnan-police"))
        c.liveSessions = true
        c.idleTimeout = .seconds(5)
        return c
    }

    /// Background sync for a test: loopback, an ephemeral port, quick pushes and backoff.
    static func syncOptions(peers: [PeerAddress] = []) -> DaemonOptions {
        var o = DaemonOptions(listenHost: "127.0.0.1", listenPort: 0)
        o.policy.resyncInterval = 600_000
        o.policy.pushDebounce = 50
        o.policy.backoffMin = 100
        o.policy.backoffMax = 1_000
        o.pollInterval = 100
        o.tick = 20
        o.staticPeers = peers
        o.seed = 1
        return o
    }

    static func draft(_ summary: String, scope: Scope = village, priority: Priority = .normal) -> IncidentDraft {
        IncidentDraft(scope: scope, category: .traffic, priority: priority, summary: summary,
                      location: Location(latitude: 33.39, longitude: 104.92, placeName: "Wudu"))
    }

    /// Open file descriptors of this process on files under `dir` (the stores, their journals, the seq
    /// guards): other tests running in parallel do not count.
    static func openFileDescriptors(under dir: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"))?.hasPrefix(dir) == true
        }.count
    }
}
