import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation

/// `fieldsync crash-writer`: a hidden helper for the durability test. It commits deterministic batches
/// to a store forever and prints `ack N` after each commit returns; the test kills it with SIGKILL at
/// random moments and checks the store's invariants after each kill (Tests/FieldSyncStoreTests).
struct CrashWriter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-writer", abstract: "Durability test helper (not for operators).", shouldDisplay: false)

    @Option(help: "Store path.") var path: String
    @Option(help: "Seed of the batches.") var seed: UInt64 = 1
    @Option(help: "Stop after this many batches (0: never).") var batches: Int = 0

    func run() throws {
        let store = try SQLiteStore(path: path, sealer: CrashWorkload.sealer, checksChanges: false)  // synthetic changes
        var next = try store.status().changes / CrashWorkload.changesPerBatch
        while batches == 0 || next < batches {
            _ = try store.commit(CrashWorkload.batch(next, seed: seed))
            FileHandle.standardOutput.write(Data("ack \(next)\n".utf8))  // unbuffered: the ack is out once written
            next += 1
        }
    }
}

/// The deterministic workload of the durability test: batch `i` appends one change to each of three
/// logs; each change carries a plaintext `ChangeBody` (the test folds them again to check the
/// materialized records).
enum CrashWorkload {
    /// Changes per batch.
    static let changesPerBatch = 3
    /// The storage key used by writer and checker.
    static let sealer = try! StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 0x5a, count: 32)))

    static let authors = (1...3).map { DeviceID(ID128(high: 0xC0, low: UInt64($0))) }
    static let scope = try! Scope("longnan/wudu/station-017/village-0412")

    /// The hash of change `seq` of log `l` (deterministic, so a reopened store can be checked).
    static func hash(log l: Int, seq: UInt64, seed: UInt64) -> [UInt8] {
        var g = SplitMix64(seed: seed ^ UInt64(l) << 48 ^ seq)
        return (0..<32).map { _ in UInt8(truncatingIfNeeded: g.next()) }
    }

    /// Batch `i`.
    static func batch(_ i: Int, seed: UInt64) -> CommitBatch {
        var b = CommitBatch()
        for l in 0..<3 {
            let seq = UInt64(i + 1)
            let log = LogID(author: authors[l], scope: scope)
            let rid = RecordID(ID128(high: UInt64(l), low: UInt64(i % 7)))
            let hlc = HLCTimestamp(milliseconds: 1_000_000 + UInt64(i), counter: UInt16(l))
            var actions: [Action] = [.append(field: Incident.Field.notes, text: "batch \(i) log \(l)")]
            if i % 7 == i {  // first edit of each record creates it
                actions = Incident.create(id: rid, scope: scope, author: authors[l], hlc: hlc, category: .other,
                                          priority: .normal, location: Location(latitude: 33, longitude: 105),
                                          summary: "record \(l)/\(i)", reportedAt: 0, reporter: "crash-test").actions + actions
            }
            let edit = RecordEdit(record: rid, kind: .incident, scope: scope, author: authors[l], hlc: hlc,
                                  creates: i % 7 == i, actions: actions)
            let h = hash(log: l, seq: seq, seed: seed)
            let c = StoredChange(log: log, seq: seq, hash: h, prevHash: seq == 1 ? [UInt8](repeating: 0, count: 32) : hash(log: l, seq: seq - 1, seed: seed),
                                 hlc: hlc, contentType: .records, priority: .normal, bytes: ChangeBody(edits: [edit]).canonicalBytes)
            b.changes.append(c)
            b.edits.append((edit, h))
            b.opened.append(h)
        }
        return b
    }
}
