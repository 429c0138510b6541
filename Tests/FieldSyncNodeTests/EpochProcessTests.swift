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
}
