import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

@testable import FieldSyncNode

/// `fieldsync --version`, `backup`, `restore` and `fence` with real processes on 127.0.0.1 (issue 16;
/// docs/backup.md). The binary is required: a missing binary fails, it does not skip.
@Suite(.ownThread, .serialized) struct BackupProcessTests {
    static let village = ProcessTests.village.path

    func incident(_ w: ProcessWorld, _ d: ProcessWorld.Device, _ summary: String) throws -> (status: Int32, out: String, err: String) {
        try w.run(["incident", "new"] + w.args(d) + ["--scope", Self.village, "--category", "dispute", "--summary", summary,
                                                    "--lat", "33.4", "--lon", "104.9"])
    }

    func forks(_ w: ProcessWorld, _ d: ProcessWorld.Device) throws -> (status: Int32, count: Int) {
        let r = try w.run(["forks"] + w.args(d) + ["--json"])
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "forks: \(r.err)")
        return (r.status, (obj["forks"] as? [Any])?.count ?? -1)
    }

    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }

    /// The device as restored at `dir` (same identity, its key file restored with the directory).
    func restored(_ d: ProcessWorld.Device, at dir: String) throws -> ProcessWorld.Device {
        ProcessWorld.Device(name: (dir as NSString).lastPathComponent, dir: dir, id: d.id,
                            identity: d.identity, readsRecords: d.readsRecords, port: try ProcessWorld.freePort())
    }

    @Test func versionPrintsTheReleaseTheProtocolAndTheStoreSchema() throws {
        let r = try FieldSyncBinary.run(["--version"])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.first == "fieldsync \(FieldSyncVersion.release)")
        #expect(lines.contains("protocol \(NetworkParameters.protocolVersion) (Protocols/handshake.md)"))
        #expect(lines.contains("store schema \(SQLiteStore.schemaVersion) (\(SQLiteStore.schemaMigration))"))
        #expect(SQLiteStore.schemaVersion == 9 && SQLiteStore.schemaMigration == "v9-record-status-index")
        #expect(lines.contains("backup format 1 (Protocols/backup.md)"))
    }

    /// The issue's test: a backup taken while `serve` runs, writes and syncs; the device writes more after
    /// it and syncs that to its station; the backup is restored on new hardware; the restored device is
    /// fenced until it has synced, then writes after the highest change: no fork, nothing lost. Lifting
    /// the fence by hand on a second restore shows what the fence prevents: a fork.
    @Test(.timeLimit(.minutes(4))) func restoredBackupWritesAfterItsLaterChangesWithoutAFork() throws {
        _ = try ProcessWorld.binary
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let log = LogID(author: bp.id, scope: ProcessTests.village)
        for n in 1...3 { #expect(try incident(w, bp, "before \(n)").status == 0) }
        try w.serve(bp)
        let pass = w.dir + "/backup.pass"
        _ = FileManager.default.createFile(atPath: pass, contents: Data("backup passphrase\n".utf8), attributes: [.posixPermissions: 0o600])

        // While the backup runs: the station writes and syncs to the backpack's serve (which writes its
        // store), and the backpack writes through the CLI; a shell loop of real processes, before, during
        // and after the backup (at least three rounds).
        let stopFile = w.dir + "/stop", errFile = w.dir + "/busy.err", rounds = w.dir + "/rounds"
        let bin = try ProcessWorld.binary
        func cmd(_ args: [String]) -> String { ([bin] + args).joined(separator: " ") }
        let write = ["--scope", Self.village, "--category", "dispute", "--lat", "33.4", "--lon", "104.9", "--summary"]
        let loop = """
            n=0; while [ ! -e \(stopFile) ] || [ $n -lt 3 ]; do n=$((n+1)); echo $n > \(rounds)
            \(cmd(["incident", "new"] + w.args(st) + write)) station-$n > /dev/null || echo "station write $n" >> \(errFile)
            \(cmd(["sync", "127.0.0.1:\(bp.port)"] + w.args(st) + ["--idle-timeout", "10"])) > /dev/null 2>&1 || echo "sync $n" >> \(errFile)
            \(cmd(["incident", "new"] + w.args(bp) + write)) during-$n > /dev/null 2>&1 || echo "backpack write $n" >> \(errFile)
            done
            """
        let busy = Process()
        busy.executableURL = URL(fileURLWithPath: "/bin/sh")
        busy.arguments = ["-c", loop]
        try busy.run()
        while !FileManager.default.fileExists(atPath: rounds) { usleep(50_000) }
        let file = w.dir + "/bp.fsbk"
        let backup = try w.run(["backup", "--dir", bp.dir, "--store", bp.store, "--out", file, "--backup-passphrase-file", pass,
                                "--kdf", "interactive", "--json"])
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        busy.waitUntilExit()
        #expect(backup.status == 0, "\(backup.err)")
        let busyErrors = String(decoding: FileManager.default.contents(atPath: errFile) ?? Data(), as: UTF8.self)
        #expect(busyErrors.isEmpty, "the node kept writing and syncing during the backup: \(busyErrors)")
        #expect(Self.mode(file) == 0o600)
        let taken = try #require(try JSONSerialization.jsonObject(with: Data(backup.out.utf8)) as? [String: Any])
        #expect((taken["deviceFiles"] as? [String])?.contains("device.keystore") == true)
        #expect((taken["deviceFiles"] as? [String])?.contains("seq-guard") == true)
        #expect((taken["deviceFiles"] as? [String])?.contains("store.sqlite") == false, "the store travels as its online copy, not as a file")
        let inBackup = try #require(taken["changes"] as? Int)

        // After the backup: two more changes, synced to the station.
        for n in 1...2 { #expect(try incident(w, bp, "after \(n)").status == 0) }
        try w.stopAll()
        try w.serve(st)
        #expect(try w.sync(bp, st)["finished"] as? Bool == true)
        let before = try w.replicator(bp).store.holdings(of: log)
        let lastSeq = try #require(before.ranges.last?.upperBound)
        #expect(before == HeldIntervals([1...lastSeq]) && lastSeq >= 8, "3 before, 3 or more during, 2 after: \(before)")

        // New hardware: the backup checks, then restores (0600 files, 0700 directory).
        #expect(try w.run(["restore", file, "--dir", w.dir + "/x", "--store", w.dir + "/x.sqlite", "--backup-passphrase-file", pass,
                           "--check-only"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: w.dir + "/x") && !FileManager.default.fileExists(atPath: w.dir + "/x.sqlite"))
        let nb = try restored(bp, at: w.dir + "/bp-new")
        let r = try w.run(["restore", file, "--dir", nb.dir, "--store", nb.store, "--backup-passphrase-file", pass])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("FENCED"))
        #expect(Self.mode(nb.dir) == 0o700 && Self.mode(nb.store) == 0o600 && Self.mode(nb.dir + "/device.keystore") == 0o600
                && Self.mode(nb.dir + "/restore-fence") == 0o600)
        let restoredHeld = try w.replicator(nb).store.holdings(of: log)
        #expect(restoredHeld.ranges.last?.upperBound ?? 0 < lastSeq, "the backup is older than the last changes: \(restoredHeld)")
        #expect(try w.replicator(nb).store.status().changes == inBackup)

        // Fenced: no write, a clear message naming the backup's time and what to do.
        let refused = try incident(w, nb, "too early")
        #expect(refused.status != 0 && refused.err.contains("restored from a backup taken") && refused.err.contains("fieldsync sync"), "\(refused.err)")
        #expect(try w.run(["fence", "--dir", nb.dir]).status == 3)
        #expect(try w.replicator(nb).store.holdings(of: log) == restoredHeld, "nothing was written")

        // A sync with the station brings back what the device wrote after the backup and lifts the fence.
        let first = try w.run(["sync", "127.0.0.1:\(st.port)"] + w.args(nb))
        #expect(first.status == 0 && first.out.contains("finished") && first.out.contains("(restore fence lifted)"), "\(first.out) \(first.err)")
        let lifted = try w.run(["fence", "--dir", nb.dir])
        #expect(lifted.status == 0 && lifted.out.contains("not fenced"), "\(lifted.out)")
        #expect(try w.replicator(nb).store.holdings(of: log) == HeldIntervals([1...lastSeq]))
        #expect(try incident(w, nb, "after the restore").status == 0)
        #expect(try w.replicator(nb).store.holdings(of: log) == HeldIntervals([1...(lastSeq + 1)]), "the next change follows seq \(lastSeq)")
        #expect(try w.sync(nb, st)["finished"] as? Bool == true)
        #expect(try forks(w, st) == (0, 0) && forks(w, nb) == (0, 0), "no fork")
        try w.stopAll()
        let atStation = try w.open(st).records(RecordQuery(includeDeleted: true)).count
        let atDevice = try w.open(nb).records(RecordQuery(includeDeleted: true)).count
        let stationOwn = Int(try w.open(st).holdings(of: LogID(author: st.id, scope: ProcessTests.village)).frontier)
        #expect(atStation == atDevice && atStation == Int(lastSeq) + 1 + stationOwn,
                "nothing lost: \(atStation) records at the station, \(atDevice) on the restored device, \(lastSeq + 1) + \(stationOwn) written")

        // What the fence prevents: the same backup restored again and lifted by hand writes a seq the
        // station already holds, and the station proves the fork.
        let again = try restored(bp, at: w.dir + "/bp-again")
        #expect(try w.run(["restore", file, "--dir", again.dir, "--store", again.store, "--backup-passphrase-file", pass]).status == 0)
        let noRisk = try w.run(["fence", "--dir", again.dir, "--lift"])
        #expect(noRisk.status == 64 && noRisk.err.contains("--accept-fork-risk"), "\(noRisk.err)")
        let forced = try w.run(["fence", "--dir", again.dir, "--lift", "--accept-fork-risk"])
        #expect(forced.status == 0 && forced.err.contains("WARNING"), "\(forced.err)")
        #expect(try incident(w, again, "a fork").status == 0)
        try w.serve(st)
        #expect(try w.sync(again, st)["finished"] as? Bool == true)
        #expect(try forks(w, st).count == 1, "without the fence the restored device forks its log")
    }

    @Test func restoreRefusesToOverwriteAndTellsFailuresApart() throws {
        _ = try ProcessWorld.binary
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        #expect(try incident(w, bp, "one").status == 0)
        let key = w.dir + "/backup.key"
        let file = w.dir + "/bp.fsbk"
        let made = try w.run(["backup", "--dir", bp.dir, "--store", bp.store, "--out", file, "--backup-key-file", key])
        #expect(made.status == 0 && made.out.contains("created the key file"), "\(made.err)")
        #expect(Self.mode(key) == 0o600)
        #expect(try w.run(["backup", "--dir", bp.dir, "--store", bp.store, "--out", file, "--backup-key-file", key]).err.contains("already exists"))
        func restore(_ f: String, dir: String = "new", store: String = "new.sqlite", key k: String? = nil) throws -> (Int32, String) {
            let r = try w.run(["restore", f, "--dir", w.dir + "/" + dir, "--store", w.dir + "/" + store, "--backup-key-file", k ?? key])
            return (r.status, r.err)
        }
        // Existing targets are never overwritten.
        #expect(try restore(file, dir: "bp").1.contains("exists: "))
        #expect(try restore(file, store: "bp/store.sqlite").1.contains("exists: "))
        // Wrong key, truncated, tampered: each says which.
        let other = w.dir + "/other.key"
        try Keystore.createKeyFile(at: other)
        #expect(try restore(file, key: other).1.contains("wrongPassphraseOrKey"))
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        _ = FileManager.default.createFile(atPath: w.dir + "/cut.fsbk", contents: Data(good.prefix(good.count / 2)))
        #expect(try restore(w.dir + "/cut.fsbk").1.contains("truncated"))
        var bad = good
        bad[good.count - 100] ^= 0x20
        _ = FileManager.default.createFile(atPath: w.dir + "/bad.fsbk", contents: Data(bad))
        #expect(try restore(w.dir + "/bad.fsbk").1.contains("damaged"))
        #expect(!FileManager.default.fileExists(atPath: w.dir + "/new") && !FileManager.default.fileExists(atPath: w.dir + "/new.sqlite"),
                "a failed restore leaves nothing behind")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: w.dir).filter { $0.hasPrefix(".fieldsync-") || $0.contains(".restore-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        // And the good one restores into an empty directory that exists.
        try FileManager.default.createDirectory(atPath: w.dir + "/empty", withIntermediateDirectories: false)
        #expect(try restore(file, dir: "empty", store: "empty.sqlite").0 == 0)
    }
}
