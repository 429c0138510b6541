// Opening a device: its keystore (unlocked by passphrase or key file), its trust store, its epoch keys,
// its SQLite store and the seq guard, exactly as every `fieldsync` command that touches a store does.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where a device's keystore and store are, and how to unlock them.
///
/// ```swift
/// let device = FieldSyncDevice(directory: "bp17", key: .keyFile(path: "bp17.key"), storePath: "bp17.sqlite")
/// let replicator = try device.openReplicator(now: wallClock())
/// ```
public struct FieldSyncDevice: Sendable {
    /// The keystore's file name in the device directory (`fieldsync device init` writes it).
    public static let keystoreName = "device.keystore"

    /// The device directory (`fieldsync device init --dir`): the keystore, the seq guard and the
    /// store's rollback checkpoint live there.
    public var directory: String
    /// How the keystore is unlocked: a passphrase, or a 32-byte key file (mode 0600).
    public var key: KeystoreUnlock
    /// The SQLite store file (created, mode 0600, if missing and `createStore`; never a symbolic link).
    public var storePath: String
    /// Epoch key files (`SCOPE EPOCH HEX` per line, mode 0600), in addition to the keystore's keys.
    public var epochKeyFiles: [String]
    /// Relay quota (bytes of stored changes); only a relay may have one.
    public var quotaBytes: Int?
    /// SQLite durability.
    public var syncMode: SyncMode
    /// Largest store file, if bounded.
    public var maxFileBytes: Int?
    /// Whether a missing store file may be created (false for read-only use).
    public var createStore: Bool

    /// A device.
    public init(directory: String, key: KeystoreUnlock, storePath: String, epochKeyFiles: [String] = [], quotaBytes: Int? = nil,
                syncMode: SyncMode = .full, maxFileBytes: Int? = nil, createStore: Bool = true) {
        self.directory = directory
        self.key = key
        self.storePath = storePath
        self.epochKeyFiles = epochKeyFiles
        self.quotaBytes = quotaBytes
        self.syncMode = syncMode
        self.maxFileBytes = maxFileBytes
        self.createStore = createStore
    }

    /// Opens the keystore, the trust store and the store, and builds the replicator: the certificates,
    /// keys and revocations it learned are restored, and the seq guard is checked.
    /// - Parameters:
    ///   - now: the wall clock (ms since the Unix epoch).
    ///   - warn: receives one line per warning (a rolled-back store, damage found while reading, a store
    ///     behind the seq guard).
    /// - Throws: `FieldSyncError` (`.failed`) with what to do.
    public func openReplicator(now: UInt64, warn: @escaping @Sendable (String) -> Void = { _ in }) throws(FieldSyncError) -> Replicator {
        try mappingErrors { try openRaw(now: now, warn: warn) }
    }

    /// `openReplicator(now:warn:)` throwing the errors of the layers below as they are (the `fieldsync`
    /// commands print them unchanged).
    @_spi(CLI)
    public func openRaw(now: UInt64, warn: @escaping @Sendable (String) -> Void) throws -> Replicator {
        let dir = directory
        let contents = try Keystore.read(from: dir + "/" + Self.keystoreName, unlock: key)
        guard let certificate = contents.certificate, let root = contents.root else {
            throw FieldSyncError(.failed, "\(dir) is not enrolled yet: run `fieldsync device import CERT --dir \(dir) --root root.pub`")
        }
        var trust = TrustStore(root: root)
        // Time-independent checks only: validity is judged at the time of each act (a session checks the
        // chain at now; a stored change at its HLC), so a device whose issuer expired still reads.
        for a in contents.chain { try trust.learnAuthority(a) }
        let identity = DeviceIdentity(signingKey: contents.signingKey, agreementKey: contents.agreementKey, certificate: certificate,
                                      chain: contents.chain)
        var fileKeys: [EpochKey] = []
        for f in epochKeyFiles { fileKeys += try EpochKeyFile.read(f) }
        // A relay forwards ciphertext only: it must not start with keys; only a relay takes a quota.
        try RolePolicy.check(role: certificate.role, epochKeys: contents.epochKeys.count + fileKeys.count, quotaBytes: quotaBytes,
                             normalSync: syncMode == .normal)
        let sealer = try StorageKeySealer(deviceSigningKey: contents.signingKey)
        // The rollback checkpoint lives in the device directory, beside the keystore, not beside the store
        // (docs/store.md, "Rollback").
        let sqlite = try SQLiteStore(path: storePath, sealer: sealer, limits: StoreLimits(quotaBytes: quotaBytes), syncMode: syncMode,
                                     maxFileBytes: maxFileBytes, checkpointDirectory: dir, create: createStore)
        if let rollback = try sqlite.rollbackReport() {
            warn("warning: \(rollback); after checking the device run `fieldsync doctor --accept-rollback`")
        }
        // Damage found while reading the store is never silent.
        sqlite.damageHandler = { damage in
            switch damage {
            case let .change(q):
                warn("warning: stored change \(q.log.author)/\(q.log.scope)#\(q.seq) is damaged on disk (\(q.reason)): quarantined, "
                     + "the next sync with a peer that holds it fetches it again")
            case let .record(d):
                warn("warning: record \(d.idText) (\(d.kind) in \(d.scope)) is damaged on disk and left out: \(d.reason)")
            }
        }
        let replicator = Replicator(identity: identity, trust: trust, store: sqlite)
        for k in contents.epochKeys + fileKeys { replicator.addKey(k) }
        // A restart must not forget what sync taught: the certificates of the authors of what the node
        // holds (it forwards them with their changes), and the keys granted and revocations learned.
        // The seq guard (attack case 48) lives with the keystore, apart from the store: a store restored
        // from an older copy then continues this device's logs instead of reusing seqs.
        try replicator.restoreFromStore(now: now, headGuard: SeqGuardFile(path: dir + "/" + SeqGuardFile.defaultName, device: identity.id))
        return replicator
    }

    /// Logs of this device that the store holds less of than the seq guard says it wrote (a store
    /// restored from an older copy), each with a line saying what happens.
    public static func behindGuardWarnings(_ replicator: Replicator) throws(FieldSyncError) -> [String] {
        try mappingErrors {
            try replicator.logsBehindGuard().sorted(by: { $0.key < $1.key }).map { log, heads in
                "warning: this store holds this device's \(log.scope) log up to seq \(heads.store), "
                    + "but the device wrote up to seq \(heads.guard) (seq guard): the store was restored from an older copy; "
                    + "new changes continue after seq \(heads.guard) and a sync brings the rest back (docs/node.md, \"Restoring a device\")"
            }
        }
    }
}

/// Epoch key files: one key per line, `SCOPE EPOCH HEX64`; the file must be mode 0600.
public enum EpochKeyFile {
    /// Reads the keys of a file.
    /// - Throws: `FieldSyncError` (`.failed`): unreadable, readable by others, or malformed.
    public static func read(_ path: String) throws(FieldSyncError) -> [EpochKey] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FieldSyncError(.failed, "cannot read epoch key file \(path)") }
        guard st.st_mode & 0o077 == 0 else {
            throw FieldSyncError(.failed, String(format: "epoch key file %@ has mode %o; run `chmod 600 %@`", path, Int(st.st_mode & 0o777), path))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw FieldSyncError(.failed, "cannot read epoch key file \(path)") }
        let text = String(decoding: data, as: UTF8.self)
        var keys: [EpochKey] = []
        for (n, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let epoch = UInt32(parts[1]), let raw = Hex.decode(String(parts[2])), raw.count == 32,
                  let scope = try? Scope(String(parts[0])) else {
                throw FieldSyncError(.failed, "\(path) line \(n + 1): expected `SCOPE EPOCH HEX64`")
            }
            keys.append(try mappingErrors { try EpochKey(scope: scope, epoch: epoch, key: SecretBytes(copying: raw)) })
        }
        return keys
    }

    /// Writes one key to a new file (mode 0600, synced).
    /// - Throws: `FieldSyncError` (`.failed`) if the file exists or cannot be written.
    public static func write(_ key: EpochKey, to path: String) throws(FieldSyncError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw FieldSyncError(.failed, "cannot create \(path): \(String(cString: strerror(errno))) (it must not exist yet)") }
        defer { close(fd) }
        let hex = key.key.withUnsafeBytes { Hex.encode(Array($0)) }
        let line = Array("\(key.scope) \(key.epoch) \(hex)\n".utf8)
        guard line.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == line.count, fsync(fd) == 0 else {
            throw FieldSyncError(.failed, "cannot write \(path)")
        }
    }
}
