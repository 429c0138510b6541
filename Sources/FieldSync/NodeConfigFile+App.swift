// From a node's JSON config file (`fieldsync config example`) to what the app API opens and runs: the
// device (its keystore unlocked by the passphrase or key file the config names), the node's
// configuration, and background sync's options and discovery. `fieldsync serve`, `status` and the feed
// commands read their config through these; an app that ships a node config does the same.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension FieldSyncDevice {
    /// The device a node config describes: its directory and unlock (the passphrase file is read now),
    /// its store (path, durability, size bound), its epoch key files and a relay's quota.
    ///
    /// ```swift
    /// let config = try NodeConfigFile.load(path: "/etc/fieldsync/node.json")
    /// let app = try await FieldSyncApp.open(device: try FieldSyncDevice(configuration: config),
    ///                                       configuration: config.nodeConfiguration)
    /// ```
    /// - Parameter c: the config.
    /// - Throws: `FieldSyncError` (`.failed`): neither or both of `passphraseFile` and `keyFile`, or an
    ///   unreadable passphrase file.
    public init(configuration c: NodeConfigFile) throws(FieldSyncError) {
        let unlock: KeystoreUnlock
        if let k = c.device.keyFile {
            unlock = .keyFile(path: k)
        } else if let p = c.device.passphraseFile {
            unlock = .passphrase(try PassphraseFile.read(p))
        } else {
            throw FieldSyncError(.failed, "`device`: give exactly one of `passphraseFile` and `keyFile`")
        }
        self.init(directory: c.device.dir, key: unlock, storePath: c.store.path, epochKeyFiles: c.epochKeyFiles,
                  quotaBytes: c.relay.quotaBytes, syncMode: SyncMode(rawValue: c.store.syncMode) ?? .full, maxFileBytes: c.store.maxFileBytes)
    }
}

extension DaemonOptions {
    /// Background sync as a node config describes it: where to listen, the static peers, the schedule,
    /// the store poll, the status file and the stale-key threshold.
    /// - Parameter c: the config (checked: `NodeConfigFile.check()` found no problem).
    /// - Throws: `FieldSyncError` (`.usage`): `listen` is not `HOST:PORT`.
    public init(configuration c: NodeConfigFile) throws(FieldSyncError) {
        let (host, port) = try HostPort.parse(c.listen)
        self.init(listenHost: host, listenPort: port)
        policy = c.schedulePolicy
        staticPeers = c.peers.compactMap(PeerAddress.init)
        pollInterval = Int64(c.schedule.pollIntervalMilliseconds)
        statusPath = c.statusPath
        epochStaleAfter = c.epochs.staleAfterMilliseconds
    }
}

/// `HOST:PORT` text.
public enum HostPort {
    /// Splits `HOST:PORT` at its last colon.
    /// - Parameter text: the endpoint.
    /// - Returns: the host and the port (0 to 65,535).
    /// - Throws: `FieldSyncError` (`.usage`) when it is not `HOST:PORT`.
    public static func parse(_ text: String) throws(FieldSyncError) -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw FieldSyncError(.usage, "\(text) is not HOST:PORT")
        }
        return (String(text[..<colon]), port)
    }
}

/// Passphrase files: the keystore's passphrase is the file's first line.
public enum PassphraseFile {
    /// The first line of a passphrase file. Like a key file, a passphrase file that group or others may
    /// access is refused (a pipe, such as `<(pass show fieldsync)`, is accepted: nothing stores it).
    /// - Parameter path: the file.
    /// - Returns: the passphrase's bytes.
    /// - Throws: `FieldSyncError` (`.failed`): unreadable, readable by others, or empty.
    public static func read(_ path: String) throws(FieldSyncError) -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FieldSyncError(.failed, "cannot read passphrase file \(path)") }
        if (st.st_mode & S_IFMT) == S_IFREG, st.st_mode & 0o077 != 0 {
            throw FieldSyncError(.failed, String(format: "passphrase file %@ has mode %o; it must not be accessible by group or others: run `chmod 600 %@`",
                                                 path, Int(st.st_mode & 0o777), path))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw FieldSyncError(.failed, "cannot read passphrase file \(path)") }
        let line = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first ?? ""
        guard !line.isEmpty else { throw FieldSyncError(.failed, "passphrase file \(path) is empty") }
        return Array(line.utf8)
    }
}

/// The shared LAN discovery secret (Protocols/discovery.md): the file's bytes (one trailing newline
/// ignored), 1 to 64 of them, in a file of mode 0600.
public enum DiscoverySecretFile {
    /// Reads a discovery secret file.
    /// - Parameter path: the file.
    /// - Returns: the secret.
    /// - Throws: `FieldSyncError` (`.failed`): unreadable, readable by others, empty or too long.
    public static func read(_ path: String) throws(FieldSyncError) -> SecretBytes {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FieldSyncError(.failed, "cannot read discovery secret file \(path)") }
        guard st.st_mode & 0o077 == 0 else {
            throw FieldSyncError(.failed, String(format: "discovery secret file %@ has mode %o; run `chmod 600 %@`", path, Int(st.st_mode & 0o777), path))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw FieldSyncError(.failed, "cannot read discovery secret file \(path)") }
        var bytes = [UInt8](data)
        if bytes.last == 0x0A { bytes.removeLast() }
        defer { for i in bytes.indices { bytes[i] = 0 } }
        guard (1...64).contains(bytes.count) else {
            throw FieldSyncError(.failed, "discovery secret file \(path) must hold 1 to 64 bytes, not \(bytes.count)")
        }
        return SecretBytes(copying: bytes)
    }
}
