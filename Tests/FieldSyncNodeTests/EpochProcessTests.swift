import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncTestSupport
import Foundation
import Testing

/// Epoch keys with real processes: the freeze warning (attack case 27) and scheduled rotation (case 31).
@Suite(.ownThread) struct EpochProcessTests {
    static let day: UInt64 = 86_400_000

    /// Writes `grant` to a file and publishes it into `d`'s store with the CLI.
    static func publish(_ grant: KeyGrant, _ name: String, into d: ProcessWorld.Device, _ w: ProcessWorld) throws {
        let file = w.dir + "/\(name).grant"
        _ = FileManager.default.createFile(atPath: file, contents: Data(grant.canonicalBytes))
        try w.expectOK(["publish", file] + w.args(d))
    }

    /// Case 27, freeze: a station whose newest epoch key was granted 20 days ago (no rotation reached it)
    /// is warned about by `status`, `doctor` (exit 65) and the `serve` log with the default threshold
    /// (14 days: twice the default 7-day rotation period); once a rotation's grant arrives, nothing warns.
    @Test(.timeLimit(.minutes(1))) func aNodeCutOffFromRotationsIsWarnedAbout() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [ProcessTests.station.path], readsRecords: false)
        let old = try KeyGrant.issue(epochKey: w.stationKey, members: [st.identity.certificate], issuedAt: ProcessWorld.now() - 20 * Self.day,
                                     by: w.authority)
        try Self.publish(old, "epoch1", into: st, w)
        let statusArgs = ["status", "--dir", st.dir, "--key-file", st.keyFile, "--store", st.store]
        let status = try w.expectOK(statusArgs)
        #expect(status.contains("STALE EPOCH KEY: \(ProcessTests.station.path)#1 was granted 20 days ago"), "\(status)")
        let doctor = try w.run(["doctor"] + w.args(st))
        #expect(doctor.status == 65 && doctor.out.contains("epochKey \(ProcessTests.station.path)#1"), "\(doctor.out) \(doctor.err)")
        #expect(try w.run(["doctor", "--epoch-stale-days", "30"] + w.args(st)).status == 0, "a longer threshold: healthy")
        try w.serve(st)
        let deadline = Date().addingTimeInterval(20)
        while try !w.serverLog(st).contains("stale epoch keys"), Date() < deadline { usleep(50_000) }
        let log = try w.serverLog(st)
        #expect(log.contains("stale epoch keys") && log.contains("\(ProcessTests.station.path)#1 granted 20 days ago"), "\(log)")
        try w.stopAll()
        // The rotation arrives: nothing is stale any more.
        let (_, fresh) = try EpochRotation.rotate(current: w.stationKey, members: [st.identity.certificate], removing: [],
                                                  issuedAt: ProcessWorld.now(), by: w.authority)
        try Self.publish(fresh, "epoch2", into: st, w)
        let after = try w.expectOK(statusArgs)
        #expect(!after.contains("STALE EPOCH KEY"), "\(after)")
        let healthy = try w.run(["doctor"] + w.args(st))
        #expect(healthy.status == 0, "\(healthy.out) \(healthy.err)")
    }

    /// Case 31, scheduled rotation with no membership change, with real processes: HQ's node holds the
    /// epoch-1 grant (8 days old) of a station and two members; `epoch-key rotate --if-older-than 30`
    /// does nothing, `--if-older-than 7` (the default period) issues epoch 2 to the same members and
    /// publishes it into HQ's log while HQ serves; the members learn it by ordinary sync, a change
    /// written next is sealed under epoch 2, and the other member reads it. A second run is not due.
    @Test(.timeLimit(.minutes(2))) func scheduledRotationKeepsEveryMemberReading() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"], readsRecords: false)
        let st = try w.device("station", .station, [ProcessTests.station.path], readsRecords: false)
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path], readsRecords: false)
        // The HQ authority's keystore, as `authority init` leaves it.
        let authorityDir = w.dir + "/hq-authority"
        try FileManager.default.createDirectory(atPath: authorityDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Keystore.createKeyFile(at: authorityDir + "/hq.key")
        try Keystore.write(KeystoreContents(signingKey: w.rootKey, agreementKey: X25519.SecretKey.generate(), root: w.rootKey.publicKey),
                           to: authorityDir + "/authority.keystore", protection: .keyFile(path: authorityDir + "/hq.key"))
        let g1 = try KeyGrant.issue(epochKey: w.stationKey, members: [st.identity.certificate, bp.identity.certificate],
                                    issuedAt: ProcessWorld.now() - 8 * Self.day, by: w.authority)
        try Self.publish(g1, "epoch1", into: hq, w)
        try w.serve(hq)
        func incident(_ d: ProcessWorld.Device, _ summary: String) throws {
            try w.expectOK(["incident", "new"] + w.args(d) + ["--scope", ProcessTests.village.path, "--category", "dispute",
                                                              "--summary", summary, "--lat", "33.4", "--lon", "104.9"])
        }
        func syncBoth() throws {
            for d in [st, bp] {
                let r = try w.sync(d, hq)
                #expect(r["finished"] as? Bool == true, "\(d.name): \(r)")
            }
        }
        try syncBoth()  // both learn epoch 1
        try incident(st, "station before the rotation")
        try incident(bp, "backpack before the rotation")
        try syncBoth()  // HQ now holds both members' certificates (authors of held changes)
        let rotate = ["epoch-key", "rotate", "--scope", ProcessTests.station.path, "--authority-dir", authorityDir,
                      "--authority-key-file", authorityDir + "/hq.key"] + w.args(hq)
        let notDue = try w.expectOK(rotate + ["--if-older-than", "30"])
        #expect(notDue.contains("not due"), "\(notDue)")
        let rotated = try w.expectOK(rotate + ["--if-older-than", "7", "--out-key", w.dir + "/epoch2.key"])
        #expect(rotated.contains("rotated \(ProcessTests.station.path) to epoch 2") && rotated.contains("2 member(s)"), "\(rotated)")
        #expect(try w.expectOK(rotate + ["--if-older-than", "7"]).contains("not due"), "a second run right after is not due")
        // Both learn epoch 2 by ordinary sync (HQ's serve reads the grant from its store; a loaded machine may
        // need a second round).
        let deadline = Date().addingTimeInterval(20)
        repeat {
            try syncBoth()
        } while try [st, bp].contains(where: { try w.replicator($0).writingKey(for: ProcessTests.village)?.epoch != 2 }) && Date() < deadline
        try incident(st, "station after the rotation")
        _ = try w.sync(st, hq)
        _ = try w.sync(bp, hq)
        let listed = try w.expectOK(["list"] + w.args(bp) + ["--json"])
        #expect(listed.contains("station after the rotation") && listed.contains("station before the rotation"), "\(listed)")
        try w.stopAll()
        let station = try w.replicator(st)
        #expect(station.writingKey(for: ProcessTests.village)?.epoch == 2)
        let log = LogID(author: st.id, scope: ProcessTests.village)
        let newest = try #require(try station.store.change(log, seq: try station.store.holdings(of: log).frontier))
        #expect(try Change(canonicalBytes: newest.bytes).header.keyEpoch == 2, "the change written after the rotation is sealed under epoch 2")
        let backpack = try w.replicator(bp)
        #expect(backpack.writingKey(for: ProcessTests.village)?.epoch == 2)
    }
}
