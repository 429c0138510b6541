import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncProtocol
import FieldSyncCrypto
import Foundation
import Testing
@testable import FieldSyncStore

/// Durability: a child process (`fieldsync crash-writer`) commits batches while this test kills it with
/// SIGKILL at random moments; after every kill the store reopens and its invariants hold.
/// 20 kills by default; `FIELDSYNC_CRASH_KILLS=500` for the long run.
@Suite(.ownThread, .serialized) struct CrashTests {
    static let sealer = try! StorageKeySealer(key: SecretBytes(copying: [UInt8](repeating: 0x5a, count: 32)))

    @Test(.timeLimit(.minutes(5))) func killAtRandomMomentsLosesNothingAcknowledged() throws {
        let kills = Int(ProcessInfo.processInfo.environment["FIELDSYNC_CRASH_KILLS"] ?? "") ?? 20
        let binary = URL(fileURLWithPath: try FieldSyncBinary.required())
        let path = TestFiles.tempPath("crash")
        var rng = SplitMix64(seed: 2024)
        var highestAck = -1
        var killsDone = 0
        var sawProgress = 0
        while killsDone < kills {
            let p = Process()
            p.executableURL = binary
            p.arguments = ["crash-writer", "--path", path, "--seed", "1"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Every other kill comes at a random moment after the writer's first commit; the others at a
            // random moment after its start, which on a loaded machine may still be while it opens the
            // store (a moment worth killing at too).
            var output = Data()
            if killsDone % 2 == 1 { output = out.fileHandleForReading.availableData }
            usleep(UInt32.random(in: 30_000...250_000, using: &rng))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            killsDone += 1
            output += out.fileHandleForReading.readDataToEndOfFile()
            let acks = String(decoding: output, as: UTF8.self)
                .split(separator: "\n").compactMap { $0.hasPrefix("ack ") ? Int($0.dropFirst(4)) : nil }
            if let last = acks.last {
                highestAck = max(highestAck, last)
                sawProgress += 1
            }
            try Self.checkInvariants(path: path, acknowledged: highestAck, kill: killsDone)
        }
        #expect(sawProgress >= kills / 2, "the writer made progress between at least half the kills")
        #expect(highestAck > 10)
    }

    /// The invariants after a crash: no partial batch, no lost acknowledged batch, frontiers equal the
    /// highest contiguous change held, and the materialized records equal a fresh fold of the changes.
    static func checkInvariants(path: String, acknowledged: Int, kill: Int) throws {
        let store = try SQLiteStore(path: path, sealer: sealer, checksChanges: false)  // synthetic changes
        let holdings = try store.holdings()
        let frontiers = holdings.values.map(\.frontier)
        // Each batch appends seq i+1 to all three logs: all-or-nothing means equal frontiers.
        #expect(holdings.count == 3 || (holdings.isEmpty && acknowledged < 0), "kill \(kill): logs \(holdings.count)")
        #expect(Set(frontiers).count <= 1, "kill \(kill): partial batch, frontiers \(frontiers)")
        let committed = Int(frontiers.first ?? 0)
        #expect(committed >= acknowledged + 1, "kill \(kill): acknowledged batch \(acknowledged) lost (held \(committed))")
        var fold = Replica()
        for (log, iv) in holdings.sorted(by: { $0.key < $1.key }) {
            #expect(iv.ranges == (iv.frontier > 0 ? [1...iv.frontier] : []), "kill \(kill): gaps in \(log)")
            let changes = try store.changes(log, in: 1...max(1, iv.frontier))
            #expect(changes.map(\.seq) == Array(1...iv.frontier), "kill \(kill): rows ≠ intervals for \(log)")
            for c in changes {
                for e in try ChangeBody(canonicalBytes: c.bytes).edits { try fold.apply(e) }
            }
        }
        for (id, r) in fold.records {
            #expect(try store.record(id)?.canonicalBytes == r.canonicalBytes, "kill \(kill): record \(id) ≠ fold")
        }
        #expect(try store.status().records == fold.records.count)
    }
}
