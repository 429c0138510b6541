import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

/// Issue 12 item 7 with real `fieldsync` processes: a stopped station's store file is damaged on disk
/// (one stored change, one sealed record); `doctor` finds both, `list` shows the other records and names
/// the damaged one, `serve` quarantines the change at start and keeps serving, a peer that lacks the
/// change is not harmed, the change comes back from a peer that holds it, and `doctor --repair`
/// rebuilds the record from its signed changes.
@Suite(.ownThread, .serialized)
struct StoreDamageProcessTests {
    @Test(.timeLimit(.minutes(2))) func damagedStoreIsFoundQuarantinedRefetchedAndRepaired() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let st2 = try w.device("station2", .station, [ProcessTests.station.path])
        try w.fill(bp, count: 6)
        try w.serve(st)
        #expect(try w.sync(bp, st)["finished"] as? Bool == true)
        try w.stopAll()

        let log = LogID(author: bp.id, scope: ProcessTests.village)
        let records = try w.open(st).records(RecordQuery()).map(\.id).sorted()
        #expect(records.count == 6)
        let victim = records[2]
        try DiskDamage.flipChange(st.store, log, seq: 3)
        try DiskDamage.flipRecord(st.store, victim)

        // doctor finds both (exit 65) and changes nothing.
        let doctor = try w.run(["doctor"] + w.args(st))
        #expect(doctor.status == 65, "\(doctor)")
        #expect(doctor.out.contains("PROBLEM change \(bp.id)/\(ProcessTests.village.path)#3"), "\(doctor.out)")
        #expect(doctor.out.contains("PROBLEM record incident \(victim)"), "\(doctor.out)")
        // list shows the five others and names the damaged one.
        let list = try w.run(["list"] + w.args(st))
        #expect(list.status == 65, "\(list)")
        #expect(list.out.contains("5 records, 1 damaged"), "\(list.out)")
        #expect(list.err.contains("damaged: incident \(victim)"), "\(list.err)")
        for id in records where id != victim { #expect(list.out.contains(String(id.description.prefix(12))), "\(list.out)") }
        // show names the damage, by full id or by prefix (not "no record").
        for idText in [victim.description, String(victim.description.prefix(12))] {
            let show = try w.run(["show", idText] + w.args(st))
            #expect(show.status == 1 && show.err.contains("record \(victim) is damaged"), "\(show)")
        }

        // serve checks the store at start: the change is quarantined and reported.
        try w.serve(st)
        let started = Date().addingTimeInterval(10)
        var log2 = ""
        while !log2.contains("store checked"), Date() < started {
            usleep(50_000)
            log2 = try w.serverLog(st)
        }
        #expect(log2.contains("stored change damaged on disk: quarantined"), "\(log2)")
        // Reported in the daemon's status file and by `fieldsync status`.
        var statusJSON: [String: Any]?
        let written = Date().addingTimeInterval(10)
        repeat {
            usleep(100_000)
            let status = try w.run(["status", "--json", "--dir", st.dir, "--key-file", st.keyFile, "--store", st.store])
            statusJSON = try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any]
        } while (statusJSON?["daemon"] as? [String: Any])?["quarantinedChanges"] as? Int != 1 && Date() < written
        #expect((statusJSON?["store"] as? [String: Any])?["quarantined"] as? Int == 1, "\(String(describing: statusJSON))")
        #expect((statusJSON?["daemon"] as? [String: Any])?["quarantinedChanges"] as? Int == 1, "\(String(describing: statusJSON))")

        // A peer that lacks the change is not harmed: it gets the other five, the session finishes.
        try w.serve(st2)
        let fromSt = try w.run(["sync", "127.0.0.1:\(st.port)"] + w.args(st2) + ["--json", "--idle-timeout", "10"])
        let r2 = try JSONSerialization.jsonObject(with: Data(fromSt.out.utf8)) as? [String: Any]
        #expect(r2?["finished"] as? Bool == true && r2?["changesReceived"] as? Int == 5, "\(fromSt)")
        // The backpack holds it intact: the station fetches it again.
        let refetch = try w.sync(bp, st)
        #expect(refetch["finished"] as? Bool == true && refetch["changesSent"] as? Int == 1, "\(refetch)")

        // doctor --repair rebuilds the damaged record from its signed change; the store is healthy again.
        let repair = try w.run(["doctor", "--repair"] + w.args(st))
        #expect(repair.status == 0, "\(repair)")
        #expect(repair.out.contains("1 damaged record(s) rebuilt"), "\(repair.out)")
        try w.stopAll()
        #expect(try w.run(["doctor"] + w.args(st)).status == 0)
        let after = try w.run(["list", "--json"] + w.args(st))
        #expect(after.status == 0 && after.out.split(separator: "\n").count == 6, "\(after)")
        let a = try w.open(st).records(RecordQuery()).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) }
        let b = try w.open(bp).records(RecordQuery()).map(\.canonicalBytes).sorted { $0.lexicographicallyPrecedes($1) }
        #expect(a == b, "the rebuilt record equals the backpack's")
    }
}
