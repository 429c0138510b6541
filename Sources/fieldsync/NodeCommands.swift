// `fieldsync sync`, `epoch-key new`, and what every node command shares (the device, its store, epoch key
// files). `serve` is in ServeCommand.swift; the record commands (incident, visit, list, show, export,
// import) are in RecordCommands.swift. Storage and key handling: docs/node.md.

import ArgumentParser
@_spi(CLI) import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Logging

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

    /// Opens the keystore, the trust store and the store, and builds the replicator (the app API's
    /// `FieldSyncDevice`, with its warnings on standard error).
    func open() throws -> Replicator {
        let device = FieldSyncDevice(directory: dir, key: unlock, storePath: store, epochKeyFiles: epochKeyFiles, quotaBytes: quotaBytes,
                                     syncMode: syncMode, maxFileBytes: maxFileBytes, createStore: createStore)
        let replicator = try device.openRaw(now: wallClockMilliseconds(), warn: logLine)
        for line in try FieldSyncDevice.behindGuardWarnings(replicator) {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        if let fence = try replicator.restoreFence() {  // docs/backup.md
            logLine("warning: this device was restored from a backup taken \(TimeText.format(Int64(fence.backupTime))) and is fenced: "
                    + "it writes nothing until a sync with a peer that holds its own logs (`fieldsync fence --dir \(dir)`)")
        }
        return replicator
    }
}

extension FieldSyncApp {
    /// Opens the app a `serve`, `sync` or `status` runs on: the device's warnings go to standard error as
    /// `ReplicatorSpec.open` prints them, and errors are thrown as they are.
    static func openForCLI(_ spec: ReplicatorSpec, configuration: NodeConfiguration, logger: Logger? = nil,
                           log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> FieldSyncApp {
        let device = FieldSyncDevice(directory: spec.dir, key: spec.unlock, storePath: spec.store, epochKeyFiles: spec.epochKeyFiles,
                                     quotaBytes: spec.quotaBytes, syncMode: spec.syncMode, maxFileBytes: spec.maxFileBytes,
                                     createStore: spec.createStore)
        let app: FieldSyncApp
        if let logger {
            app = try await openRaw(device: device, configuration: configuration, clock: { wallClockMilliseconds() }, logger: logger, log: log, warn: logLine)
        } else {
            app = try await openRaw(device: device, configuration: configuration, clock: { wallClockMilliseconds() }, log: log, warn: logLine)
        }
        do {
            if let fence = try await app.performRaw({ try $0.replicator.restoreFence() }) {  // docs/backup.md
                logLine("warning: this device was restored from a backup taken \(TimeText.format(Int64(fence.backupTime))) and is fenced: "
                        + "it writes nothing until a sync with a peer that holds its own logs (`fieldsync fence --dir \(spec.dir)`)")
            }
        } catch {
            await app.close(grace: .zero)
            throw error
        }
        return app
    }
}

/// Epoch key files (`SCOPE EPOCH HEX` per line, mode 0600): the app API's.
typealias EpochKeyFile = FieldSync.EpochKeyFile

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
        // Sent changes the peer applied but did not store (a full relay: "quota"); not in changesAcknowledged.
        "changesRefusedByPeer": r.changesRefusedByPeer, "refusedByPeer": r.refusedByPeer,
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
        // The session's own line is the result printed below on standard output; the node's other lines
        // (receipts, a peer cut for its revocation) go to standard error as they happen.
        let log: @Sendable (String) -> Void = { text in
            line.clear()
            if !quiet, !text.hasPrefix("session ") { logLine(text) }
        }
        let app = try await FieldSyncApp.openForCLI(spec, configuration: config, log: log)
        let result: SessionResult
        do { result = try await app.sync(host: host, port: port, progress: line.enabled ? line.draw : nil) } catch {
            line.clear()
            await app.close(grace: .zero)
            throw error
        }
        line.clear()
        await app.close(grace: .zero)
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

/// `fieldsync epoch-key new` (a random epoch key file, granted with `authority grant`) and `epoch-key rotate`.
struct EpochKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "epoch-key", abstract: "Make an epoch key (new) or rotate a scope's key (rotate); keys reach members as grants (docs/enrollment.md).",
                                                    subcommands: [New.self, Rotate.self])

    /// `epoch-key rotate`: the scheduled rotation of one scope's epoch key (attack case 31), meant for a
    /// systemd timer on the HQ machine that holds the authority keystore and an HQ node's store
    /// (docs/enrollment.md, "Scheduled rotation"; docs/systemd/fieldsync-rotate.timer).
    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate SCOPE's epoch key: a new key of the next epoch, granted to the current members and published into this node's log.",
            discussion: """
                Members are those of the grants of the current epoch held in this node's store, by their certificates held                 here (add or complete with --member); revoked, expired and relay members are left out. With                 --if-older-than DAYS nothing happens (exit 0) unless the current epoch's grant is at least that old, so a                 timer may run it often. The authority's keystore is opened only while the command runs.
                """)

        @OptionGroup var node: NodeOptions
        @Option(help: "The scope whose epoch key to rotate.") var scope: String
        @Option(help: "The authority's directory (holds authority.keystore).") var authorityDir: String
        @Option(help: ArgumentHelp("File holding the authority keystore's passphrase.", valueName: "file")) var authorityPassphraseFile: String?
        @Option(help: ArgumentHelp("Key file of the authority keystore.", valueName: "file")) var authorityKeyFile: String?
        @Option(help: "Rotate only if the current epoch's grant is at least this many days old (the node config's epochs.rotationEveryDays). (default: rotate now, whatever its age)")
        var ifOlderThan: Double?
        @Option(help: ArgumentHelp("A member's certificate file (repeat): added to, or replacing, the members found in the store.", valueName: "cert"))
        var member: [String] = []
        @Option(help: "Also write the new key to this epoch key file (mode 0600; HQ's archive).") var outKey: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func validate() throws {
            guard (authorityPassphraseFile == nil) != (authorityKeyFile == nil) else {
                throw ValidationError("give exactly one of --authority-passphrase-file or --authority-key-file")
            }
            if let d = ifOlderThan, !(d >= 0) { throw ValidationError("--if-older-than must be a number of days, 0 or more") }
        }

        func run() async throws {
            let scope: Scope
            do { scope = try Scope(self.scope) } catch { throw ValidationError("\(error)") }
            let r = try node.openReplicator()
            let now = wallClockMilliseconds()
            let limit = ifOlderThan.map { UInt64($0 * 86_400_000) }
            let plan = try r.rotationPlan(for: scope, now: now, olderThan: limit)
            let age = plan.lastIssuedAt.map { now > $0 ? Double(now - $0) / 86_400_000 : 0 }
            guard plan.due else {
                let text = "not due: \(scope)#\(plan.currentEpoch) was granted \(String(format: "%.1f", age ?? 0)) days ago (rotation every \(ifOlderThan ?? 0) days)"
                if json { try printJSON(["rotated": false, "scope": scope.path, "epoch": plan.currentEpoch, "ageDays": age ?? 0]) } else { print(text) }
                return
            }
            let unlock: KeystoreUnlock = try authorityKeyFile.map { .keyFile(path: $0) }
                ?? .passphrase(try KeystoreOptions.readPassphrase(authorityPassphraseFile!))
            let (authority, _) = try AuthorityCommand.load(dir: authorityDir, unlock: unlock)
            var members = plan.members
            for path in member {
                let c: Certificate
                do { c = try Certificate(canonicalBytes: try Files.read(path, what: "certificate")) } catch let e as CLIError { throw e } catch {
                    throw CLIError("\(path) is not a FieldSync certificate: \(error)")
                }
                members.removeAll { $0.subject == c.subject }
                members.append(c)
            }
            let given = Set(members.map(\.subject))
            let leftOut = plan.leftOut.filter { !given.contains($0.device) }
            guard !members.isEmpty else {
                throw CLIError("no member to grant \(scope)#\(plan.currentEpoch + 1) to: this node holds no grant of \(scope) with a member it "
                               + "can place\(leftOut.isEmpty ? "" : " (" + leftOut.map { "\($0.device): \($0.reason)" }.joined(separator: "; ") + ")"); give --member CERT")
            }
            guard plan.currentEpoch < UInt32.max else { throw CLIError("\(scope): epoch counter exhausted") }
            let key = EpochKey.generate(scope: scope, epoch: plan.currentEpoch + 1)
            let grant: KeyGrant
            do { grant = try KeyGrant.issue(epochKey: key, members: members, issuedAt: now, by: authority) } catch {
                throw CLIError("cannot grant \(scope)#\(key.epoch): \(error)")
            }
            let own = r.identity.certificate
            guard let logScope = own.scopes.first(where: { $0.contains(scope) }) else {
                throw CLIError("this node's scopes (\(own.scopes.map(\.path).joined(separator: ", "))) do not cover \(scope); run it on an HQ node or one of that scope")
            }
            if let outKey { try EpochKeyFile.write(key, to: outKey) }
            let change = try r.writeControl(.keyGrant, payload: grant.canonicalBytes, scope: logScope, now: now)
            let names = grant.members.map(\.device.description)
            if json {
                try printJSON(["rotated": true, "scope": scope.path, "epoch": key.epoch, "members": names, "seq": change.header.seq,
                               "leftOut": leftOut.map { ["device": $0.device.description, "reason": $0.reason] }])
            } else {
                print("rotated \(scope) to epoch \(key.epoch): granted to \(names.count) member(s) (\(names.joined(separator: ", "))), "
                      + "published as \(logScope)#\(change.header.seq); sync carries it to them")
                for l in leftOut { print("left out \(l.device): \(l.reason)") }
            }
        }
    }

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
