import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncTestSupport
import Foundation
import Testing

/// Attack case 35 on SQLite stores and with real processes: changes by a device dated after its
/// revocation's cut-off, stored before the revocation arrived, are quarantined when it arrives (out of
/// the records and holdings, kept for audit), and stay so across a reopen.
@Suite(.ownThread) struct RevokedQuarantineNodeTests {
    static let village = NodeTests.village
    static let shared = RecordID(ID128(high: 0x35, low: 0x51))
    static let late = RecordID(ID128(high: 0x35, low: 0x52))

    /// An honest record, the thief's record before the cut-off, the thief's change after it (editing the
    /// honest record and creating another), and the root's revocation published by an HQ device.
    struct Scenario {
        var pki = NodeTests.PKI()
        let thiefID: DeviceIdentity, honestID: DeviceIdentity, hqID: DeviceIdentity
        let honest: Change, pre: Change, post: Change, revocation: Change
        let t0: UInt64
        var certificates: [Certificate] { [thiefID.certificate, honestID.certificate, hqID.certificate] }

        init() throws {
            thiefID = try pki.device(.backpack, scopes: [NodeTests.station])
            honestID = try pki.device(.backpack, scopes: [NodeTests.station])
            hqID = try pki.device(.hq, scopes: [try Scope("longnan")])
            t0 = UInt64(Date().timeIntervalSince1970 * 1000) - 10_000
            let trust = pki.trust
            func replicator(_ id: DeviceIdentity) -> Replicator {
                let r = Replicator(identity: id, trust: trust, store: MemoryStore())
                r.addKey(NodeTests.stationKey)
                return r
            }
            let thief = replicator(thiefID), honestR = replicator(honestID), hq = replicator(hqID)
            let t0 = self.t0
            func create(_ r: Replicator, _ id: RecordID, _ ms: UInt64, _ summary: String) -> RecordEdit {
                Incident.create(id: id, scope: village, author: r.identity.id, hlc: HLCTimestamp(milliseconds: t0 + ms, counter: 0),
                                category: .dispute, priority: .normal, location: Location(latitude: 33.4, longitude: 104.9), summary: summary,
                                reportedAt: Int64(t0), reporter: "walk-in")
            }
            honest = try honestR.write([create(honestR, shared, 0, "honest report")], scope: village, priority: .normal, now: t0)
            pre = try thief.write([create(thief, RecordID(ID128(high: 0x35, low: 0x50)), 100, "thief before")], scope: village,
                                  priority: .normal, now: t0 + 100)
            _ = try thief.ingest([honest], certificates: [honestID.certificate], now: t0 + 200)
            let rec = try #require(try thief.store.record(shared))
            post = try thief.write([rec.edit(author: thiefID.id, hlc: HLCTimestamp(milliseconds: t0 + 5_000, counter: 0),
                                             [.set(field: Incident.Field.summary, value: .string("thief rewrote this"))]),
                                    create(thief, late, 5_000, "thief after")], scope: village, priority: .normal, now: t0 + 5_000)
            let r = try Revocation(device: thiefID.id, serial: thiefID.certificate.serial, revokedAt: HLCTimestamp(milliseconds: t0 + 1_000, counter: 0),
                                   reason: .stolen, note: "last check-in", by: Authority(root: pki.rootKey))
            revocation = try hq.writeControl(.revocation, payload: r.canonicalBytes, scope: try Scope("longnan"), now: t0 + 6_000)
        }

        /// A replicator over a SQLite store as a node opens it (certificates and control state restored).
        func open(_ id: DeviceIdentity, path: String, sealer: StorageKeySealer) throws -> Replicator {
            let r = Replicator(identity: id, trust: pki.trust, store: try SQLiteStore(path: path, sealer: sealer))
            r.addKey(NodeTests.stationKey)
            try r.restoreCertificates(now: t0 + 10_000)
            try r.restoreControlState(now: t0 + 10_000)
            return r
        }
    }

    /// SQLite, across a reopen: the quarantine is durable, the rebuilt records too, the store checks
    /// healthy; and a store that holds the revocation and the post-cutoff change but was not quarantined
    /// (written by an older version, or a crash between the two commits) is caught up when it is opened.
    @Test func quarantineIsDurableAcrossAReopenAndCaughtUpAtOpen() throws {
        var s = try Scenario()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sealer = try StorageKeySealer(key: SecretBytes.random(count: 32))
        let stationID = try s.pki.device(.station, scopes: [NodeTests.station])
        let now = s.t0 + 10_000
        let reference = Replicator(identity: stationID, trust: s.pki.trust, store: MemoryStore())
        reference.addKey(NodeTests.stationKey)
        _ = try reference.ingest([s.revocation, s.honest, s.pre, s.post], certificates: s.certificates, now: now)
        let expected = try reference.store.records(RecordQuery(includeDeleted: true))
        #expect(expected.count == 2)

        let path = dir + "/station.sqlite"
        do {
            let station = try s.open(stationID, path: path, sealer: sealer)
            #expect(try station.ingest([s.honest, s.pre, s.post], certificates: s.certificates, now: now).commit.inserted == 3)
            #expect(try station.store.record(Self.late) != nil)
            let learned = try station.ingest([s.revocation], certificates: s.certificates, now: now)
            #expect(learned.quarantinedRevoked.changes == 1 && learned.quarantinedRevoked.recordsRemoved == 1)
        }
        let reopened = try s.open(stationID, path: path, sealer: sealer)
        #expect(reopened.lastRestoreQuarantine.changes == 0, "nothing left to do after the reopen")
        #expect(try reopened.store.records(RecordQuery(includeDeleted: true)) == expected)
        let thiefLog = LogID(author: s.thiefID.id, scope: Self.village)
        #expect(try reopened.store.holdings(of: thiefLog).ranges == [1...1])
        #expect(try reopened.store.change(thiefLog, seq: 2) == nil)
        let q = try reopened.store.quarantined()
        #expect(q.count == 1 && q[0].cause == .revoked && q[0].bytes == s.post.encodedBytes && !q[0].repaired)
        #expect(try reopened.store.status().revokedQuarantined == 1 && reopened.store.status().quarantined == 0)
        let sqlite = try #require(reopened.store as? SQLiteStore)
        let check = try sqlite.check()
        #expect(check.healthy, "\(check.problems)")

        // Caught up at open: the revocation is stored under the replicator's feet (another process, or an
        // older version), so nothing quarantined it; opening the store does.
        let path2 = dir + "/station2.sqlite"
        do {
            let station = try s.open(stationID, path: path2, sealer: sealer)
            _ = try station.ingest([s.honest, s.pre, s.post], certificates: s.certificates, now: now)
            _ = try station.store.commit(CommitBatch(changes: [StoredChange(s.revocation)], certificates: [s.hqID.certificate]))
            #expect(try station.store.record(Self.late) != nil)
        }
        let caughtUp = try s.open(stationID, path: path2, sealer: sealer)
        #expect(caughtUp.lastRestoreQuarantine.changes == 1)
        #expect(try caughtUp.store.records(RecordQuery(includeDeleted: true)) == expected)
    }

    /// With real processes: a `fieldsync serve` station holds a backpack's change written after the
    /// cut-off of a revocation it does not know yet (`list` shows it); another backpack that holds the
    /// revocation syncs with it; the serving process quarantines the change at once (its log says so),
    /// and `list`, `show`, `status` and `doctor` agree: the edit is gone from the records, counted, kept.
    @Test(.timeLimit(.minutes(1))) func aServingStationQuarantinesAHeldPostCutoffChangeWhenTheRevocationArrives() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let thief = try w.device("thief", .backpack, [ProcessTests.station.path])
        let courier = try w.device("courier", .backpack, [ProcessTests.station.path])
        // The thief writes one record, then (after the cut-off to come) a second one and a note on the first.
        let t0 = ProcessWorld.now() - 10_000
        let writer = Replicator(identity: thief.identity, trust: TrustStore(root: w.rootKey.publicKey), store: MemoryStore())
        writer.addKey(w.stationKey)
        let first = RecordID(ID128(high: 0x35, low: 0x61)), second = RecordID(ID128(high: 0x35, low: 0x62))
        func create(_ id: RecordID, _ ms: UInt64, _ summary: String) -> RecordEdit {
            Incident.create(id: id, scope: ProcessTests.village, author: thief.id, hlc: HLCTimestamp(milliseconds: t0 + ms, counter: 0),
                            category: .dispute, priority: .normal, location: Location(latitude: 33.4, longitude: 104.9), summary: summary,
                            reportedAt: Int64(t0), reporter: "walk-in")
        }
        let pre = try writer.write([create(first, 0, "written before the theft")], scope: ProcessTests.village, priority: .normal, now: t0)
        let rec = try #require(try writer.store.record(first))
        let post = try writer.write([create(second, 5_000, "written by the thief"),
                                     rec.edit(author: thief.id, hlc: HLCTimestamp(milliseconds: t0 + 5_000, counter: 1),
                                              [.append(field: Incident.Field.notes, text: "note by the thief")])],
                                    scope: ProcessTests.village, priority: .normal, now: t0 + 5_000)
        do {
            let station = try w.replicator(st)
            #expect(try station.ingest([pre, post], certificates: [thief.identity.certificate], now: ProcessWorld.now()).commit.inserted == 2)
        }
        try w.serve(st)
        let before = try w.expectOK(["list"] + w.args(st) + ["--json"])
        #expect(before.contains("written by the thief"), "the station shows the thief's change before the revocation: \(before)")
        // The revocation, cut-off between the two changes, reaches the courier's store, then the station by a session.
        let revocation = try Revocation(device: thief.id, serial: thief.identity.certificate.serial,
                                        revokedAt: HLCTimestamp(milliseconds: t0 + 1_000, counter: 0), reason: .stolen,
                                        note: "last check-in before the theft", by: w.authority)
        let file = w.dir + "/thief.rev"
        _ = FileManager.default.createFile(atPath: file, contents: Data(revocation.canonicalBytes))
        try w.expectOK(["publish", file] + w.args(courier))
        let synced = try w.sync(courier, st)
        #expect(synced["finished"] as? Bool == true, "\(synced)")
        // The serving process quarantines it (before any CLI command opens the store).
        let deadline = Date().addingTimeInterval(20)
        while try !w.serverLog(st).contains("revoked devices dated after"), Date() < deadline { usleep(50_000) }
        let log = try w.serverLog(st)
        #expect(log.contains("revoked devices dated after"), "the station's log reports the quarantine: \(log)")
        let after = try w.expectOK(["list"] + w.args(st) + ["--json"])
        #expect(!after.contains("written by the thief") && after.contains("written before the theft"), "\(after)")
        let shown = try w.expectOK(["show", first.description] + w.args(st))
        #expect(!shown.contains("note by the thief") && !shown.contains("NOT VERIFIED"), "\(shown)")
        #expect(shown.contains("FLAGGED: author revoked"), "the pre-cutoff change is kept and flagged: \(shown)")
        let status = try w.expectOK(["status", "--dir", st.dir, "--key-file", st.keyFile, "--store", st.store])
        #expect(status.contains("1 change(s) by revoked devices"), "\(status)")
        let doctor = try w.run(["doctor"] + w.args(st))
        #expect(doctor.status == 0 && doctor.out.contains("quarantined"), "\(doctor.out) \(doctor.err)")
        try w.stopAll()
        let store = try w.open(st)
        #expect(try store.holdings(of: LogID(author: thief.id, scope: ProcessTests.village)).ranges == [1...1])
        #expect(try store.quarantined().map(\.bytes) == [post.encodedBytes])
    }
}
