// `fieldsync sync`, `epoch-key new`, and what every node command shares (the device, its store, epoch key
// files). `serve` is in ServeCommand.swift; the record commands (incident, visit, list, show, export,
// import) are in RecordCommands.swift. Storage and key handling: docs/node.md.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What every node command needs: the device directory and its unlock, the store, epoch keys.
struct NodeOptions: ParsableArguments {
    @Option(help: "The device's directory (holds device.keystore from `fieldsync device init/import`).") var dir: String
    @OptionGroup var keystore: KeystoreOptions
    @Option(help: "The SQLite store file (created, mode 0600, if missing by a command that writes; never a symbolic link).") var store: String
    @Option(help: ArgumentHelp("Epoch key file (`SCOPE EPOCH HEX` per line, mode 0600), in addition to the keystore's keys; repeatable.",
                               valueName: "file"))
    var epochKeyFile: [String] = []

    /// The plain values needed to open the replicator (Sendable, for the node's loop).
    func spec() throws -> ReplicatorSpec {
        ReplicatorSpec(dir: dir, unlock: try keystore.unlock(), store: store, epochKeyFiles: epochKeyFile)
    }

    /// Opens the keystore, the trust store and the store, and builds the replicator.
    /// - Parameter create: whether a missing store file may be created; false for commands that only read.
    func openReplicator(create: Bool = true) throws -> Replicator {
        var s = try spec()
        s.createStore = create
        return try s.open()
    }
}

/// Where a device's keystore and store are, and how to unlock them.
struct ReplicatorSpec: Sendable {
    var dir: String
    var unlock: KeystoreUnlock
    var store: String
    var epochKeyFiles: [String]
    /// Relay quota (bytes of stored changes); only a relay may have one.
    var quotaBytes: Int? = nil
    var syncMode: SyncMode = .full
    var maxFileBytes: Int? = nil
    /// Whether a missing store file may be created (false for commands that only read).
    var createStore = true

    /// Opens the keystore, the trust store and the store, and builds the replicator.
    func open() throws -> Replicator {
        let contents = try Keystore.read(from: dir + "/" + DeviceCommand.keystoreName, unlock: unlock)
        guard let certificate = contents.certificate, let root = contents.root else {
            throw CLIError("\(dir) is not enrolled yet: run `fieldsync device import CERT --dir \(dir) --root root.pub`")
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
        try RolePolicy.check(role: certificate.role, epochKeys: contents.epochKeys.count + fileKeys.count, quotaBytes: quotaBytes)
        let sealer = try StorageKeySealer(deviceSigningKey: contents.signingKey)
        // The rollback checkpoint lives in the device directory, beside the keystore, not beside the store
        // (docs/store.md, "Rollback").
        let sqlite = try SQLiteStore(path: store, sealer: sealer, limits: StoreLimits(quotaBytes: quotaBytes), syncMode: syncMode,
                                     maxFileBytes: maxFileBytes, checkpointDirectory: dir, create: createStore)
        if let rollback = try sqlite.rollbackReport() {
            logLine("warning: \(rollback); after checking the device run `fieldsync doctor --accept-rollback`")
        }
        // Damage found while a command reads the store is never silent (`serve` logs it instead).
        sqlite.damageHandler = { damage in
            switch damage {
            case let .change(q):
                logLine("warning: stored change \(q.log.author)/\(q.log.scope)#\(q.seq) is damaged on disk (\(q.reason)): quarantined, "
                        + "the next sync with a peer that holds it fetches it again")
            case let .record(d):
                logLine("warning: record \(d.idText) (\(d.kind) in \(d.scope)) is damaged on disk and left out: \(d.reason)")
            }
        }
        let replicator = Replicator(identity: identity, trust: trust, store: sqlite)
        for k in contents.epochKeys + fileKeys { replicator.addKey(k) }
        // A restart must not forget what sync taught: the certificates of the authors of what the node
        // holds (it forwards them with their changes), and the keys granted and revocations learned.
        try replicator.restoreCertificates(now: wallClockMilliseconds())
        try replicator.restoreControlState(now: wallClockMilliseconds())
        // The seq guard (attack case 48) lives with the keystore, apart from the store: a store restored
        // from an older copy then continues this device's logs instead of reusing seqs.
        replicator.headGuard = SeqGuardFile(path: dir + "/" + SeqGuardFile.defaultName, device: identity.id)
        try replicator.syncHeadGuard()
        for (log, heads) in try replicator.logsBehindGuard().sorted(by: { $0.key < $1.key }) {
            FileHandle.standardError.write(Data(("warning: this store holds this device's \(log.scope) log up to seq \(heads.store), "
                + "but the device wrote up to seq \(heads.guard) (seq guard): the store was restored from an older copy; "
                + "new changes continue after seq \(heads.guard) and a sync brings the rest back (docs/node.md, \"Restoring a device\")\n").utf8))
        }
        return replicator
    }
}

/// Epoch key files for the demo, until key grants are distributed as changes: one key per line,
/// `SCOPE EPOCH HEX64`; the file must be mode 0600.
enum EpochKeyFile {
    static func read(_ path: String) throws -> [EpochKey] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw CLIError("cannot read epoch key file \(path)") }
        guard st.st_mode & 0o077 == 0 else {
            throw CLIError(String(format: "epoch key file %@ has mode %o; run `chmod 600 %@`", path, Int(st.st_mode & 0o777), path))
        }
        let text = String(decoding: try Files.read(path, what: "epoch key file"), as: UTF8.self)
        var keys: [EpochKey] = []
        for (n, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let epoch = UInt32(parts[1]), let raw = Hex.decode(String(parts[2])), raw.count == 32,
                  let scope = try? Scope(String(parts[0])) else {
                throw CLIError("\(path) line \(n + 1): expected `SCOPE EPOCH HEX64`")
            }
            keys.append(try EpochKey(scope: scope, epoch: epoch, key: SecretBytes(copying: raw)))
        }
        return keys
    }

    static func write(_ key: EpochKey, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw CLIError("cannot create \(path): \(String(cString: strerror(errno))) (it must not exist yet)") }
        defer { close(fd) }
        let hex = key.key.withUnsafeBytes { Hex.encode(Array($0)) }
        let line = Array("\(key.scope) \(key.epoch) \(hex)\n".utf8)
        guard line.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == line.count, fsync(fd) == 0 else {
            throw CLIError("cannot write \(path)")
        }
    }
}

/// Parses `HOST:PORT`.
func parseEndpoint(_ s: String) throws -> (host: String, port: Int) {
    guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65_535).contains(port) else {
        throw ValidationError("\(s) is not HOST:PORT")
    }
    return (String(s[..<colon]), port)
}

/// One log line on standard error, with the time.
@Sendable func logLine(_ text: String) {
    let stamp = ISO8601DateFormatter().string(from: Date())
    FileHandle.standardError.write(Data("\(stamp) \(text)\n".utf8))
}

func resultJSON(_ r: SessionResult) -> [String: Any] {
    var o: [String: Any] = [
        "finished": r.isFinished, "initiator": r.initiator, "changesSent": r.changesSent,
        "changesAcknowledged": r.changesAcknowledged, "changesReceived": r.changesReceived, "changesRejected": r.changesRejected,
        "bytesIn": r.bytesIn, "bytesOut": r.bytesOut, "durationMs": r.durationMilliseconds,
    ]
    if let p = r.peer { o["peer"] = p.description }
    if let role = r.peerRole { o["peerRole"] = role.description }
    if case let .failed(why) = r.outcome { o["error"] = why }
    return o
}

/// `fieldsync sync HOST:PORT`: one session as initiator.
struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sync once with the node at HOST:PORT, then exit (status 1 if the session failed).")

    @Argument(help: "The peer, HOST:PORT.") var peer: String
    @OptionGroup var node: NodeOptions
    @Option(help: "Network name.") var network: String = "longnan-police"
    @Option(help: "Seconds without bytes before the session is cut.") var idleTimeout: Int64 = 30
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        let (host, port) = try parseEndpoint(peer)
        var config = NodeConfiguration(network: NetworkParameters(networkID: network))
        config.idleTimeout = .seconds(idleTimeout)
        config.liveSessions = false  // one session: it finishes and the command exits, even against a daemon
        let spec = try node.spec()
        let quiet = json
        // On a terminal, a catch-up of thousands of changes shows a live line; piped, nothing.
        let line = SyncProgressLine(enabled: !json && isatty(STDERR_FILENO) == 1)
        let log: @Sendable (String) -> Void = { text in
            line.clear()
            if !quiet { logLine(text) }
        }
        let n = try FieldSyncNode(configuration: config, log: log) { try spec.open() }
        let result: SessionResult
        do { result = try await n.sync(host: host, port: port, progress: line.enabled ? line.draw : nil) } catch {
            line.clear()
            try? await n.shutdown()
            throw error
        }
        line.clear()
        try await n.shutdown()
        if json { try printJSON(resultJSON(result)) } else { print("sync with \(peer): \(result)") }
        if !result.isFinished { throw ExitCode.failure }
    }
}

/// The live line of a long `sync` on a terminal: changes received, sent and acknowledged, bytes, rate;
/// redrawn at most every 100 ms, cleared before anything else is printed.
final class SyncProgressLine: @unchecked Sendable {
    let enabled: Bool
    private let lock = NSLock()
    private var lastDraw: UInt64 = 0
    private var drawn = false

    init(enabled: Bool) { self.enabled = enabled }

    @Sendable func draw(_ r: SessionResult) {
        lock.withLock {
            let now = wallClockMilliseconds()
            guard now - lastDraw >= 100 else { return }
            lastDraw = now
            let seconds = max(Double(r.durationMilliseconds) / 1000, 0.001)
            let rate = Int(Double(r.changesReceived + r.changesAcknowledged) / seconds)
            let text = "\rsync: received \(r.changesReceived), sent \(r.changesSent) (acked \(r.changesAcknowledged)); "
                + "\(r.bytesIn / 1024) KiB in, \(r.bytesOut / 1024) KiB out; \(rate) changes/s\u{1B}[K"
            FileHandle.standardError.write(Data(text.utf8))
            drawn = true
        }
    }

    func clear() {
        lock.withLock {
            if drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            drawn = false
        }
    }
}

/// `fieldsync epoch-key new`: a random epoch key file, for the demo until grants travel as changes.
struct EpochKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "epoch-key", abstract: "Create epoch key files (demo; see docs/node.md).",
                                                    subcommands: [New.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new random epoch key for SCOPE to a 0600 file.")
        @Option(help: "The scope the key reads and writes.") var scope: String
        @Option(help: "The epoch number.") var epoch: UInt32 = 1
        @Option(help: "Output file (must not exist).") var out: String
        @Flag(help: "Print the result as JSON.") var json = false

        func run() async throws {
            let scope: Scope
            do { scope = try Scope(self.scope) } catch { throw ValidationError("\(error)") }
            try EpochKeyFile.write(EpochKey.generate(scope: scope, epoch: epoch), to: out)
            if json {
                try printJSON(["scope": scope.path, "epoch": epoch, "out": out])
            } else {
                print("epoch key \(scope)#\(epoch) written to \(out) (mode 0600); grant it to the devices that read \(scope) "
                    + "(`fieldsync authority grant`), or for a test give them the file")
            }
        }
    }
}
