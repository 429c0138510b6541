// `fieldsync doctor`: checks a whole store (SQLite integrity, every change's hash and signature, chains,
// intervals, every sealed record, the rollback checkpoint) and, with --repair, quarantines damaged changes
// and rebuilds damaged records from their signed history. docs/cli.md, docs/store.md.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

/// `fieldsync doctor`.
struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a whole store: SQLite integrity, every change (hash, signature, chain), every sealed record, the rollback checkpoint.",
        discussion: "Exit 0 when nothing is wrong, 65 when damage was found (or, after --repair, remains: changes in quarantine "
            + "until a peer sends them again, records that could not be rebuilt), 1 when the store cannot be checked at all. "
            + "Safe while the daemon runs. docs/cli.md has the details.")

    @OptionGroup var node: NodeOptions
    @Flag(help: "Quarantine damaged changes (peers send them again at the next sync), rewrite altered record index columns, and rebuild damaged records from their signed changes.")
    var repair = false
    @Flag(help: "After a rollback was reported and the device checked: start a new checkpoint at the store's current state.")
    var acceptRollback = false
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Days after which the newest epoch key of a scope counts as stale (a warning; default 14, twice the default rotation period; the node config's `epochs.staleAfterDays`).")
    var epochStaleDays: Int = NodeConfigFile.Epochs().staleDays

    func run() async throws {
        let spec = try node.spec()
        let contents = try Keystore.read(from: spec.dir + "/" + DeviceCommand.keystoreName, unlock: spec.unlock)
        let sealer = try StorageKeySealer(deviceSigningKey: contents.signingKey)
        var problems: [StoreProblem] = []
        var notes: [String] = []
        if acceptRollback {
            let n = try SQLiteStore.acceptRollback(path: spec.store, sealer: sealer, checkpointDirectory: spec.dir)
            notes.append("rollback accepted: new checkpoint at commit \(n)")
        }
        // Opened as a node opens it: the rollback check runs (its finding is reported by `check`).
        let store: SQLiteStore
        do { store = try SQLiteStore(path: spec.store, sealer: sealer, checkpointDirectory: spec.dir) } catch let e as StoreError {
            throw CLIError("cannot check \(spec.store): \(e)")
        }
        var trust: TrustStore?
        if let root = contents.root {
            var t = TrustStore(root: root)
            for a in contents.chain { try? t.addAuthority(a, now: wallClockMilliseconds()) }
            trust = t
        }
        let certificates = Dictionary(try store.certificates().map { ($0.subject, $0) }, uniquingKeysWith: { a, _ in a })
        let own = contents.certificate
        let now = wallClockMilliseconds()
        // Signatures: only a signature that does not verify (or a certificate not the author's) is damage;
        // a change from an author this device cannot place (another authority) is not checked.
        var verify: ((Change) -> String?)?
        if let trust {
            verify = { change in
                guard let cert = change.header.author == own?.subject ? own : certificates[change.header.author] else { return nil }
                do {
                    try change.verify(authorCertificate: cert, trust: trust, now: now)
                    return nil
                } catch let e as ChangeError {
                    return e.code == .badSignature || e.code == .impersonation ? "\(e)" : nil
                } catch {
                    return nil
                }
            }
        }
        var report = try store.check(verify: verify, quarantine: repair)
        var rebuilt = 0
        if repair {
            if report.quarantinedNow > 0 {
                notes.append("\(report.quarantinedNow) damaged change(s) quarantined: peers send them again at the next sync")
            }
            if report.reindexedNow > 0 {
                notes.append("\(report.reindexedNow) record(s) whose index columns were altered rewritten from their sealed content")
            }
            let damaged = try store.recordScan(RecordQuery(includeDeleted: true)).damaged
            if !damaged.isEmpty {
                let replicator = try spec.open()
                for d in damaged {
                    guard let id = d.id, let scope = try? Scope(d.scope),
                          let record = try replicator.rebuildRecord(id, kind: RecordKind(d.kind), scope: scope) else {
                        notes.append("record \(d.idText) could not be rebuilt here (a change of its history is missing or this "
                                     + "device holds no key for it); it is left out of list until then")
                        continue
                    }
                    try store.replaceRecord(record)
                    rebuilt += 1
                }
                notes.append("\(rebuilt) damaged record(s) rebuilt from their signed changes")
            }
            report = try store.check(verify: verify)
        }
        problems += report.problems
        // Freeze (attack case 27): no rotation has reached this node for longer than the threshold.
        do {
            let keyHolder = try spec.open()
            for k in keyHolder.staleEpochKeys(now: now, threshold: UInt64(max(0, epochStaleDays)) * 86_400_000) {
                problems.append(StoreProblem(.epochKey, "\(k.scope.path)#\(k.epoch)",
                                             "the newest epoch key held of this scope was granted \(k.ageDays(now: now) ?? 0) days ago (threshold "
                                             + "\(epochStaleDays) days): no rotation has reached this node; sync with HQ or a peer that has the newer grant"))
            }
        } catch {
            notes.append("epoch keys not checked for staleness: \(error)")
        }
        // Changes by revoked devices dated after their cut-off (attack case 35): not damage, reported for audit.
        let revoked = try store.quarantined().filter { $0.cause == .revoked }
        if !revoked.isEmpty {
            notes.append("\(revoked.count) change(s) by revoked devices, dated after their revocation's cut-off, are quarantined "
                         + "(out of the records, kept for audit, not offered to peers):")
            for q in revoked.prefix(20) { notes.append("  \(q.log.author)/\(q.log.scope)#\(q.seq): \(q.reason)") }
            if revoked.count > 20 { notes.append("  ... and \(revoked.count - 20) more") }
        }
        if json {
            let o: [String: Any] = [
                "store": spec.store, "healthy": problems.isEmpty, "changesChecked": report.changesChecked,
                "signaturesChecked": report.signaturesChecked, "recordsChecked": report.recordsChecked, "logsChecked": report.logsChecked,
                "recordsRebuilt": rebuilt, "notes": notes, "revokedQuarantined": revoked.count,
                "problems": problems.map { ["kind": $0.kind.rawValue, "subject": $0.subject, "detail": $0.detail] },
            ]
            let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("store \(spec.store): \(report.logsChecked) logs, \(report.changesChecked) changes (\(report.signaturesChecked) signatures), "
                  + "\(report.recordsChecked) records checked")
            for n in notes { print(n) }
            for p in problems { print("PROBLEM \(p)") }
            print(problems.isEmpty ? "healthy" : "\(problems.count) problem\(problems.count == 1 ? "" : "s") found")
        }
        if !problems.isEmpty { throw ExitCode(65) }
    }
}
