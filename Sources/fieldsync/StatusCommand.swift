// `fieldsync status --config FILE`: what the daemon reports (peers, last sync with each) and what the store
// says (frontiers, held back, what HQ has receipted of this node's own logs).

import ArgumentParser
@_spi(CLI) import FieldSync
import FieldSyncCore
import FieldSyncNode
import FieldSyncProtocol
import Foundation

/// `fieldsync status`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the node's peers, last sync with each, log frontiers, held-back changes and HQ receipts.",
        discussion: "Reads the status file the running daemon keeps (if any) and opens the store (safe while the daemon runs: SQLite WAL, and a writer's transaction is waited for).")

    @Option(help: ArgumentHelp("The node's JSON config file.", valueName: "file")) var config: String?
    @Option(help: "Without --config: the device's directory.") var dir: String?
    @Option(help: ArgumentHelp("Without --config: file holding the keystore passphrase.", valueName: "file")) var passphraseFile: String?
    @Option(help: ArgumentHelp("Without --config: 32-byte key file that unlocks the keystore.", valueName: "file")) var keyFile: String?
    @Option(help: "Without --config: the SQLite store (the daemon's status file is STORE.status.json).") var store: String?
    @Flag(help: "Also list each record this device wrote to and whether HQ has receipted it.") var records = false
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        var c: NodeConfigFile
        if let config {
            do { c = try NodeConfigFile.load(path: config) } catch let e as ConfigError { throw CLIError(e.description) }
        } else {
            guard let dir, let store, (passphraseFile == nil) != (keyFile == nil) else {
                throw ValidationError("give --config FILE, or --dir, --store and one of --passphrase-file/--key-file")
            }
            c = NodeConfigFile(device: .init(dir: dir), store: .init(path: store))
            c.device.passphraseFile = passphraseFile
            c.device.keyFile = keyFile
        }
        let daemon = try? DaemonStatus.read(from: c.statusPath)
        var spec = try ReplicatorSpec.from(c)
        spec.createStore = false  // status only reads: a wrong path is an error, not a new store
        var nodeConfiguration = c.nodeConfiguration
        nodeConfiguration.liveSessions = false
        let app = try await FieldSyncApp.openForCLI(spec, configuration: nodeConfiguration)
        let status: DeviceStatus
        do {
            // Freeze (attack case 27): the newest epoch key of a scope is older than the threshold.
            let staleAfter = c.epochs.staleAfterMilliseconds, records = self.records
            status = try await app.performRaw { book in
                try DeviceStatus.read(book.replicator, now: wallClockMilliseconds(), staleAfter: staleAfter, ownRecords: records)
            }
        } catch {
            await app.close(grace: .zero)
            throw error
        }
        await app.close(grace: .zero)
        try show(status, daemon: daemon, config: c)
    }

    /// Prints the status (text, or one JSON object with `--json`).
    private func show(_ status: DeviceStatus, daemon: DaemonStatus?, config c: NodeConfigFile) throws {
        let report = status.report, identity = status.identity, now = status.now
        let own = status.ownRecords ?? []
        let stale = status.staleKeys
        if json {
            var o: [String: Any] = [
                "device": identity.id.description, "role": identity.certificate.role.description,
                "store": ["path": c.store.path, "changes": report.store.changes, "bytes": report.store.changeBytes,
                          "heldBack": report.store.heldBack, "unopened": report.store.unopened, "records": report.store.records,
                          "quotaBytes": report.store.limits.quotaBytes as Any, "receiptedChanges": report.store.receipted,
                          "forks": report.store.forks, "quarantined": report.store.quarantined,
                          "revokedQuarantined": report.store.revokedQuarantined],
                "pendingToHQ": report.pendingToHQ,
                "epochKeys": status.epochKeys.map { k in
                    ["scope": k.age.scope.path, "epoch": k.age.epoch, "issuedAt": k.age.issuedAt as Any,
                     "stale": k.stale] as [String: Any]
                },
                "epochStaleAfterDays": c.epochs.staleDays,
                "logs": report.logs.map { l in
                    ["author": l.log.author.description, "scope": l.log.scope.path, "frontier": l.frontier, "heldBack": l.heldBack,
                     "receipted": l.receipted, "own": l.own] as [String: Any]
                },
            ]
            if records {
                o["ownRecords"] = own.map { ["id": $0.id.description, "kind": $0.kind.name, "scope": $0.scope.path,
                                             "ownChanges": $0.ownChanges, "receipted": $0.receipted, "reachedHQ": $0.reachedHQ] as [String: Any] }
            }
            let cert = identity.certificate
            o["certificate"] = ["notBefore": TimeText.format(Int64(cert.notBefore)), "notAfter": TimeText.format(Int64(cert.notAfter)),
                                "daysLeft": CertificateLifetime.daysLeft(cert.notAfter, now: now),
                                "expiresSoon": CertificateLifetime.warning(cert.notAfter, now: now) != nil]
            // A county-issued device stops when its authority's certificate ends too (peers check both).
            let chain = status.chain
            if let issuer = chain.issuer {
                o["issuerCertificate"] = ["authority": issuer.subject.description, "notAfter": TimeText.format(Int64(issuer.notAfter)),
                                          "daysLeft": CertificateChainLifetime.daysLeft(issuer.notAfter, now: now),
                                          "expiresSoon": CertificateChainLifetime.warning(issuer, now: now, format: { TimeText.format(Int64($0)) }) != nil]
            }
            o["warnings"] = chain.warnings(now: now, format: { TimeText.format(Int64($0)) })
            if let d = daemon {
                let data = try JSONEncoder().encode(d)
                var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
                // The file says what the daemon last wrote; `alive` says whether that process still exists.
                object["alive"] = DaemonLiveness.alive(d)
                o["daemon"] = object
            } else {
                o["daemon"] = NSNull()
            }
            try printJSON(o)
            return
        }
        print("device \(identity.id) (\(identity.certificate.role)), store \(c.store.path)")
        let cert = identity.certificate
        print("certificate: valid until \(TimeText.format(Int64(cert.notAfter))) (\(CertificateLifetime.daysLeft(cert.notAfter, now: now)) days left)")
        let chain = status.chain
        if let issuer = chain.issuer {
            print("issuer: county authority \(issuer.subject), certificate valid until \(TimeText.format(Int64(issuer.notAfter))) "
                  + "(\(CertificateChainLifetime.daysLeft(issuer.notAfter, now: now)) days left)")
        }
        for warning in chain.warnings(now: now, format: { TimeText.format(Int64($0)) }) { print("WARNING: \(warning)") }
        let conflicts = status.keyConflicts
        if !conflicts.isEmpty {
            print("WARNING: two different keys under one scope and epoch: \(conflicts.joined(separator: ", ")); records sealed under one "
                  + "cannot be opened with the other (`fieldsync keys list` shows where each came from)")
        }
        if let d = daemon {
            let age = now > d.updatedAt ? (now - d.updatedAt) / 1000 : 0
            let live = d.sessionsLive.map { ", \($0) live" } ?? ""
            if d.state == "stopped" || DaemonLiveness.alive(d) {
                print("daemon: \(d.state), pid \(d.pid), listening on \(d.listen), \(d.sessionsActive) session(s) running\(live) (status \(age) s old)")
            } else {
                print("daemon: not running (its status file, \(age) s old, says \(d.state), pid \(d.pid), but no such process runs: "
                      + "it ended without stopping cleanly, killed or crashed; the peers below are as it last saw them)")
            }
            if let c = d.connections, c.refusedTotal + c.cutTotal + (d.handshakesPending ?? 0) > 0 {
                func list(_ m: [String: Int]) -> String { m.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") }
                print("connections: \(d.handshakesPending ?? 0) handshake(s) pending; refused \(c.refusedTotal)"
                      + (c.refused.isEmpty ? "" : " (\(list(c.refused)))") + "; cut \(c.cutTotal)" + (c.cut.isEmpty ? "" : " (\(list(c.cut)))"))
            }
            if d.peers.isEmpty { print("peers: none yet") } else { print("peers:") }
            for p in d.peers {
                let who = p.device.map { "\($0)\(p.role.map { " \($0)" } ?? "")" } ?? "not yet authenticated"
                var line = "  \(p.address) [\(p.source)] \(who)"
                if let since = p.liveSince {
                    // A live session is the peer's state now; a failure before it is history, not a second state.
                    line += "; live since \(ago(now, since)), \(p.livePushes ?? 0) push(es)"
                    if p.lastOutcome == "failed", let at = p.lastSyncAt, at < since {
                        line += " (a session before it failed \(ago(now, at))\(p.lastError.map { ": \($0)" } ?? ""))"
                    }
                } else if let at = p.lastSyncAt {
                    line += "; last sync \(ago(now, at)) \(p.lastOutcome ?? "?")"
                    if let e = p.lastError { line += " (\(e))" }
                } else {
                    line += "; never synced"
                }
                line += "; sent \(p.changesSent)"
                if let r = p.refusedByPeer, !r.isEmpty { line += " (refused \(r.values.reduce(0, +)) by the peer: \(SessionResult.reasons(r)))" }
                line += ", received \(p.changesReceived)"
                if p.failures > 0 { line += "; \(p.failures) failure(s)" }
                if let next = p.nextAttemptAt, DaemonLiveness.alive(d) { line += next > now ? "; next in \((next - now + 999) / 1000) s" : "; due now" }
                print(line)
            }
            if let f = d.feed { print(Self.feedLine(f, now: now, alive: DaemonLiveness.alive(d))) }
        } else {
            print("daemon: no status file at \(c.statusPath) (not running with this config, or not started yet)")
        }
        let s = report.store
        let quota = s.limits.quotaBytes.map { q in " of quota \(q) (\(q > 0 ? Int((Double(s.changeBytes) * 100 / Double(q)).rounded(.down)) : 100) % used)" } ?? ""
        if let r = daemon?.refusedByPeers, !r.isEmpty {
            print("REFUSED BY PEERS: peers turned away \(r.values.reduce(0, +)) of this node's changes since the daemon started "
                  + "(\(SessionResult.reasons(r))); this node keeps them and offers them again (docs/relay-ops.md, \"Quota\")")
        }
        if let refused = daemon?.changesRefused, refused > 0 {
            print("REFUSED: the store turned away \(refused) change(s) since the daemon started (quota full or held-back limit); "
                  + "the senders keep them and offer them again (docs/relay-ops.md, \"Quota\")")
        }
        print("store: \(s.changes) change(s), \(s.changeBytes) bytes\(quota), "
            + "\(s.records) record(s), \(s.unopened) unopened, \(s.heldBack) held back behind gaps")
        if s.forks > 0 { print("FORKS: \(s.forks) fork proof(s): `fieldsync forks` lists the flagged authors (docs/node.md, \"Forks\")") }
        if s.quarantined > 0 {
            print("store damage: \(s.quarantined) change(s) corrupt on disk, quarantined until a peer sends them again "
                  + "(`fieldsync doctor` lists them)")
        }
        for k in stale {
            print("STALE EPOCH KEY: \(k.scope.path)#\(k.epoch) was granted \(k.ageDays(now: now) ?? 0) days ago (threshold "
                  + "\(c.epochs.staleDays) days): no rotation has reached this node; it still seals under a key that devices removed "
                  + "since may hold. Sync with HQ or a peer that has the newer grant (docs/enrollment.md, \"Scheduled rotation\")")
        }
        if s.revokedQuarantined > 0 {
            print("revoked authors: \(s.revokedQuarantined) change(s) by revoked devices, dated after their revocation's cut-off, "
                  + "quarantined (out of the records, kept for audit, not offered to peers; `fieldsync doctor` lists them)")
        }
        print("logs (frontier = highest seq held from 1; HQ receipted):")
        for l in report.logs {
            let held = l.heldBack > 0 ? ", \(l.heldBack) held back" : ""
            print("  \(l.own ? "*" : " ") \(l.log.author) \(l.log.scope.path): \(l.frontier)\(held), receipted \(l.receipted)")
        }
        let ownLogs = report.logs.filter(\.own)
        if ownLogs.isEmpty {
            print("own records: none written by this device")
        } else {
            let total = ownLogs.reduce(0) { $0 + $1.frontier }
            print("own changes: \(total), receipted by HQ \(total - report.pendingToHQ), waiting for HQ \(report.pendingToHQ)")
        }
        if records {
            print("own records (\(own.filter(\.reachedHQ).count) of \(own.count) reached HQ):")
            for o in own {
                print("  \(o.id)  \(o.kind.name)  \(o.scope.path)  \(o.reachedHQ ? "reached HQ" : "waiting (\(o.receipted)/\(o.ownChanges) changes receipted)")")
            }
        }
    }

    /// The running feed's line, from the `feed` section of the daemon's status file (docs/postgres-feed.md,
    /// "Status and metrics"): its state and target, the database, the lag in changes and seconds, the changes fed
    /// since start, and the last error with the next attempt (that only while the daemon runs).
    static func feedLine(_ f: DaemonStatus.Feed, now: UInt64, alive: Bool) -> String {
        let changes = f.lagChanges.map { "\($0) change(s)" } ?? "unknown change(s) (the database has not answered since the daemon started)"
        var line = "feed: \(f.state) into \(f.target); database \(f.database); lag \(changes), \(f.lagSeconds) s; "
            + "\(f.changesFed) change(s) fed since the daemon started"
        if let e = f.lastError { line += "; last error: \(e)" }
        if alive, f.state != "stopped", let at = f.retryAt {
            line += at > now ? "; next attempt in \((at - now + 999) / 1000) s" : "; next attempt due now"
        }
        return line
    }

    private func ago(_ now: UInt64, _ at: UInt64) -> String {
        let s = now > at ? (now - at) / 1000 : 0
        return s < 120 ? "\(s) s ago" : s < 7200 ? "\(s / 60) min ago" : "\(s / 3600) h ago"
    }
}

/// Whether the daemon a status file describes still runs. A daemon killed with SIGKILL (or crashed) leaves
/// its last `running` behind; `status` must not repeat it.
enum DaemonLiveness {
    /// True when the file says `stopped` is false and a process with its pid exists and runs `fieldsync`
    /// (a pid reused by another program after a reboot does not count).
    static func alive(_ d: DaemonStatus) -> Bool {
        guard d.state != "stopped", d.pid > 0 else { return false }
        if kill(d.pid, 0) != 0, errno == ESRCH { return false }
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(d.pid)/cmdline") else { return true }
        return String(decoding: cmdline, as: UTF8.self).contains("fieldsync")
    }
}

/// A certificate's remaining lifetime, for `status` and the commands that print certificates (the days and
/// the warning threshold are `CertificateChainLifetime`'s, which the daemon's log and metrics use).
enum CertificateLifetime {
    /// Whole days from `now` to `notAfter` (negative once expired).
    static func daysLeft(_ notAfter: UInt64, now: UInt64) -> Int64 { CertificateChainLifetime.daysLeft(notAfter, now: now) }

    /// The warning to show, or nil when more than `CertificateChainLifetime.warnDays` days are left.
    static func warning(_ notAfter: UInt64, now: UInt64) -> String? {
        let days = daysLeft(notAfter, now: now)
        if notAfter <= now {
            return "this device's certificate expired at \(TimeText.format(Int64(notAfter))); peers refuse its sessions: renew it "
                + "(fieldsync authority renew, then device import; docs/enrollment.md)"
        }
        guard days < CertificateChainLifetime.warnDays else { return nil }
        return "this device's certificate expires at \(TimeText.format(Int64(notAfter))), in \(days) day(s): renew it "
            + "(fieldsync authority renew, then device import; docs/enrollment.md)"
    }
}
