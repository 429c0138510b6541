import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

/// A backpack restored from an older copy, with real `fieldsync` processes on 127.0.0.1 (issue 12
/// item 3, attack cases 22 and 48). The binary is required: a missing binary fails, it does not skip.
@Suite(.ownThread, .serialized) struct ForkProcessTests {
    static let village = ProcessTests.village.path

    func incident(_ w: ProcessWorld, _ d: ProcessWorld.Device, _ summary: String) throws {
        try w.expectOK(["incident", "new"] + w.args(d) + ["--scope", Self.village, "--category", "dispute", "--summary", summary,
                                                        "--lat", "33.4", "--lon", "104.9"])
    }

    /// Copies a device directory (keystore, key, seq guard, store and its WAL) as a backup would.
    func copyDir(_ from: String, _ to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    /// Puts back only the store files of `backup` into `dir` (the keystore directory's other files stay).
    func restoreStore(from backup: String, into dir: String) throws {
        for suffix in ["", "-wal", "-shm"] {
            let target = dir + "/store.sqlite" + suffix
            try? FileManager.default.removeItem(atPath: target)
            if FileManager.default.fileExists(atPath: backup + "/store.sqlite" + suffix) {
                try FileManager.default.copyItem(atPath: backup + "/store.sqlite" + suffix, toPath: target)
            }
        }
    }

    func forks(_ w: ProcessWorld, _ d: ProcessWorld.Device) throws -> (status: Int32, json: [String: Any]) {
        let r = try w.run(["forks"] + w.args(d) + ["--json"])
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "forks: \(r.err)")
        return (r.status, obj)
    }

    @Test(.timeLimit(.minutes(2))) func restoredBackpackIsGuardedAndAForkIsProvenEverywhere() throws {
        _ = try ProcessWorld.binary
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let hq = try w.device("hq", .hq, ["longnan"])
        let log = LogID(author: bp.id, scope: ProcessTests.village)
        try incident(w, bp, "one")
        try incident(w, bp, "two")
        let backup = w.dir + "/bp-backup"
        try copyDir(bp.dir, backup)  // last night's backup of the whole device: seqs 1...2
        try incident(w, bp, "three")
        try incident(w, bp, "four")
        try w.serve(st)
        #expect(try w.sync(bp, st)["finished"] as? Bool == true)

        // 1. Only the store is restored (the seq guard next to the keystore survives): the next write
        //    continues after seq 4 instead of reusing seq 3, and nothing forks.
        try restoreStore(from: backup, into: bp.dir)
        let warned = try w.run(["list"] + w.args(bp))
        #expect(warned.status == 0 && warned.err.contains("restored from an older copy"), "restore detected: \(warned.err)")
        try incident(w, bp, "five, after the store was restored")
        let afterStoreRestore = try w.replicator(bp)
        #expect(try afterStoreRestore.store.holdings(of: log) == HeldIntervals([1...2, 5...5]), "seq 5 follows the guard's seq 4")
        let r1 = try w.sync(bp, st)
        #expect(r1["finished"] as? Bool == true, "\(r1)")
        #expect((try forks(w, st).json["forks"] as? [Any])?.isEmpty == true, "no fork")
        #expect(try w.replicator(bp).store.holdings(of: log) == HeldIntervals([1...5]), "seqs 3 and 4 came back from the station")

        // 2. The whole device directory is restored (store and guard): the device cannot know, writes
        //    seq 3 again, and the fork is detected at the next sync, proven to both sides and to HQ.
        try copyDir(backup, bp.dir)
        try incident(w, bp, "three again: a fork")
        let r2 = try w.sync(bp, st)
        #expect(r2["finished"] as? Bool == true, "a fork does not fail the session: \(r2)")
        let atStation = try forks(w, st)
        #expect(atStation.status == 0)
        let stationForks = try #require(atStation.json["forks"] as? [[String: Any]])
        #expect(stationForks.count == 1 && stationForks.first?["seq"] as? Int == 3 && stationForks.first?["verifies"] as? Bool == true)
        #expect(atStation.json["flaggedAuthors"] as? [String] == [bp.id.description])
        let atBackpack = try forks(w, bp)
        #expect(atBackpack.status == 3 && atBackpack.json["thisDeviceForked"] as? Bool == true, "the device learns its own log forked")
        // The station kept its branch.
        let status = try w.run(["status", "--dir", st.dir, "--key-file", st.keyFile, "--store", st.store])
        #expect(status.out.contains("FORKS: 1 fork proof"), "\(status.out) \(status.err)")
        // HQ (a third node) holds the same branch as the station: only the proof travels, and HQ has it.
        try w.serve(hq)
        let r3 = try w.sync(st, hq)
        #expect(r3["finished"] as? Bool == true, "\(r3)")
        try w.stopAll()
        let atHQ = try forks(w, hq)
        #expect((atHQ.json["forks"] as? [[String: Any]])?.count == 1)
        #expect(atHQ.json["flaggedAuthors"] as? [String] == [bp.id.description])
        #expect(try w.open(hq).hash(log, seq: 3) == w.open(st).hash(log, seq: 3), "HQ kept the station's branch")
        #expect(try w.serverLog(st).contains("fork"), "the station's log says so")
    }
}
