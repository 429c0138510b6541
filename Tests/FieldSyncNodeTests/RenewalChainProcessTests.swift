import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

/// Issue 12 items 4 and 6 with real `fieldsync` processes on 127.0.0.1: a device renewed after its first
/// certificate expired keeps syncing (CLI `authority renew` and `device import`), and devices enrolled by
/// two county authorities and by the root sync with each other directly and through a relay.
@Suite(.ownThread, .serialized)
struct RenewalChainProcessTests {
    static let station = ProcessTests.station
    static let village = ProcessTests.village
    static let day: UInt64 = 86_400_000

    /// Writes the world's root authority as `fieldsync authority init` would (keystore, key file, root.pub).
    static func rootAuthorityDir(_ w: ProcessWorld) throws -> (dir: String, keyFile: String, rootPub: String) {
        let dir = w.dir + "/hq-authority"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Keystore.createKeyFile(at: dir + "/authority.key")
        try Keystore.write(KeystoreContents(signingKey: w.rootKey, agreementKey: X25519.SecretKey.generate(), root: w.rootKey.publicKey),
                           to: dir + "/authority.keystore", protection: .keyFile(path: dir + "/authority.key"))
        let rootPub = dir + "/root.pub"
        _ = FileManager.default.createFile(atPath: rootPub, contents: Data((w.rootKey.publicKey.description + "\n").utf8))
        return (dir, dir + "/authority.key", rootPub)
    }

    static func incident(_ w: ProcessWorld, _ d: ProcessWorld.Device, _ summary: String, scope: Scope = village, extra: [String] = []) throws {
        try w.expectOK(["incident", "new"] + w.args(d) + extra + ["--scope", scope.path, "--category", "dispute", "--summary", summary,
                                                                 "--lat", "33.4", "--lon", "104.9"])
    }

    @Test(.timeLimit(.minutes(2))) func deviceRenewedAfterExpiryKeepsSyncingAndItsOldChangesVerifyEverywhere() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let now = ProcessWorld.now()
        let st = try w.device("station", .station, [Self.station.path])
        // The backpack's first certificate ran from 30 to 20 days ago: expired long before today.
        let oldFrom = now - 30 * Self.day, oldTo = now - 20 * Self.day
        let bp = try w.device("bp", .backpack, [Self.station.path], issuer: { req, role, scopes in
            try w.authority.enroll(req, role: role, scopes: scopes, notBefore: oldFrom, notAfter: oldTo, serial: 900)
        })
        // While it was valid the backpack wrote two incidents, and the station got them (with the old
        // certificate, the only one it knows of the backpack).
        let written = now - 25 * Self.day
        let bpReplicator = try w.replicator(bp)
        var old: [Change] = []
        for i in 0..<2 {
            let at = written + UInt64(i) * 1000
            let e = Incident.create(id: RecordID(ID128(high: 77, low: UInt64(i))), scope: Self.village, author: bp.id,
                                    hlc: HLCTimestamp(milliseconds: at, counter: 0), category: .dispute, priority: .normal,
                                    location: Location(latitude: 33.4, longitude: 104.9), summary: "before expiry \(i)",
                                    reportedAt: Int64(at), reporter: "walk-in")
            old.append(try bpReplicator.write([e], scope: Self.village, priority: .normal, now: at))
        }
        let stReplicator = try w.replicator(st)
        let report = try stReplicator.ingest(old, certificates: [bp.identity.certificate], now: now)
        #expect(report.outcomes == [.accepted, .accepted] && report.commit.inserted == 2, "\(report.outcomes)")

        // Renewal with the CLI, as docs/enrollment.md says.
        let hq = try Self.rootAuthorityDir(w)
        let oldCert = w.dir + "/bp-old.cert", newCert = w.dir + "/bp-new.cert"
        _ = FileManager.default.createFile(atPath: oldCert, contents: Data(bp.identity.certificate.canonicalBytes))
        let renewed = try w.expectOK(["authority", "renew", oldCert, "--dir", hq.dir, "--key-file", hq.keyFile, "--days", "30",
                                      "--out", newCert])
        #expect(renewed.contains("renewed device \(bp.id)"), "\(renewed)")
        let imported = try w.expectOK(["device", "import", newCert, "--dir", bp.dir, "--key-file", bp.keyFile, "--root", hq.rootPub])
        #expect(imported.contains("certificate renewed"), "\(imported)")
        // Importing the old certificate again is refused; another authority cannot renew it.
        let back = try w.run(["device", "import", oldCert, "--dir", bp.dir, "--key-file", bp.keyFile, "--root", hq.rootPub])
        #expect(back.status != 0, "\(back.out)")
        let otherDir = w.dir + "/other-root"
        try w.expectOK(["authority", "init", "--dir", otherDir, "--key-file", otherDir + ".key"])
        let foreign = try w.run(["authority", "renew", oldCert, "--dir", otherDir, "--key-file", otherDir + ".key", "--out", w.dir + "/x.cert"])
        #expect(foreign.status != 0 && foreign.err.contains("unknownAuthority"), "\(foreign.err)")

        // Today: the renewed backpack writes and syncs with the station that holds only its old certificate.
        try Self.incident(w, bp, "after renewal")
        try w.serve(st)
        let r = try w.sync(bp, st)
        #expect(r["finished"] as? Bool == true, "renewed backpack -> station: \(r)")
        // A second station that never met the backpack gets its whole log from the first.
        let st2 = try w.device("station2", .station, [Self.station.path])
        let r2 = try w.sync(st2, st)
        #expect(r2["finished"] as? Bool == true, "new station -> station: \(r2)")
        try w.stopAll()

        let log = LogID(author: bp.id, scope: Self.village)
        for d in [st, st2] {
            let rep = try w.replicator(d)
            #expect(try rep.store.holdings(of: log).frontier == 3, "\(d.name) holds the backpack's three changes")
            #expect(try rep.store.records(RecordQuery()).count == 3, "\(d.name) merged them")
            let v = rep.verifier()
            for stored in try rep.store.changes(log, in: 1...3) {
                let change = try Change(canonicalBytes: stored.bytes)
                #expect(v.verify(change, now: ProcessWorld.now()) == .accepted, "\(d.name): change \(stored.seq) verifies")
            }
            #expect(Set(try rep.store.certificates().filter { $0.subject == bp.id }.map(\.notAfter)).count == 2,
                    "\(d.name) keeps both certificates of the backpack")
        }
    }

    @Test(.timeLimit(.minutes(2))) func countyAndRootEnrolledNodesSyncDirectlyAndThroughARelay() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let now = ProcessWorld.now()
        func county(_ scope: String, serial: UInt64) throws -> Authority {
            let sk = Ed25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                            requestedScopes: [try Scope(scope)], createdAt: now, label: "county")
            let cert = try w.authority.delegate(req, scopes: [try Scope(scope)], notBefore: now - 60_000, notAfter: now + 365 * Self.day,
                                                serial: serial)
            return try Authority(delegated: sk, certificate: cert)
        }
        let wudu = try county("longnan/wudu", serial: 501), cheng = try county("longnan/cheng", serial: 502)
        /// A device enrolled by a county authority, its keystore holding the authority certificate as chain
        /// (what `fieldsync device import --authority` writes).
        func countyDevice(_ name: String, _ role: Role, _ scope: String, by ca: Authority, readsRecords: Bool = true) throws -> ProcessWorld.Device {
            let d = try w.device(name, role, [scope], readsRecords: readsRecords, issuer: { req, role, scopes in
                try ca.enroll(req, role: role, scopes: scopes, notBefore: now - 60_000, notAfter: now + Self.day, serial: 600)
            })
            try Keystore.write(KeystoreContents(signingKey: d.identity.signingKey, agreementKey: d.identity.agreementKey,
                                                certificate: d.identity.certificate, chain: [ca.certificate!], root: w.rootKey.publicKey),
                               to: d.dir + "/device.keystore", protection: .keyFile(path: d.keyFile), overwrite: true)
            return d
        }
        let chengScope = try Scope("longnan/cheng/station-003")
        let chengKey = EpochKey.generate(scope: chengScope, epoch: 1)
        let chengKeyFile = w.dir + "/cheng.epochkey"
        let hex = chengKey.key.withUnsafeBytes { Hex.encode(Array($0)) }
        _ = FileManager.default.createFile(atPath: chengKeyFile, contents: Data("\(chengScope) 1 \(hex)\n".utf8),
                                           attributes: [.posixPermissions: 0o600])

        let bpWudu = try countyDevice("bp-wudu", .backpack, Self.station.path, by: wudu)
        let bpWudu2 = try countyDevice("bp-wudu2", .backpack, Self.station.path, by: wudu)
        let bpCheng = try countyDevice("bp-cheng", .backpack, chengScope.path, by: cheng, readsRecords: false)
        let stRoot = try w.device("station", .station, [Self.station.path])
        let relay = try w.device("relay", .relay, ["longnan"], readsRecords: false)
        let hq = try w.device("hq", .hq, ["longnan"])
        let chengArgs = ["--epoch-key-file", chengKeyFile]
        try Self.incident(w, bpWudu, "wudu backpack")
        try Self.incident(w, stRoot, "root station")
        try Self.incident(w, bpCheng, "cheng backpack", scope: chengScope, extra: chengArgs)

        func sync(_ from: ProcessWorld.Device, _ to: ProcessWorld.Device, extra: [String] = []) throws {
            let r = try w.run(["sync", "127.0.0.1:\(to.port)"] + w.args(from) + extra + ["--json", "--idle-timeout", "10"])
            let obj = (try? JSONSerialization.jsonObject(with: Data(r.out.utf8))) as? [String: Any]
            #expect(obj?["finished"] as? Bool == true, "\(from.name) -> \(to.name): \(r.out) \(r.err)")
        }
        try w.serve(stRoot)
        try w.serve(relay)
        try sync(bpWudu, stRoot)                    // county Wudu <-> root, directly
        try sync(bpCheng, stRoot, extra: chengArgs) // county Cheng <-> root, directly
        try sync(bpCheng, relay, extra: chengArgs)  // the relay never met either county before
        try sync(bpWudu, relay)
        try sync(hq, relay)                         // HQ learns both counties from the relay's batches
        try sync(hq, stRoot)
        try sync(bpWudu2, relay)
        try w.stopAll()
        try w.serve(bpCheng, extra: chengArgs)
        try sync(bpWudu, bpCheng)                   // two counties, directly
        try w.stopAll()
        let stLog = try w.serverLog(stRoot)
        #expect(!stLog.contains("unknownAuthority"), "\(stLog)")

        func held(_ d: ProcessWorld.Device, _ author: ProcessWorld.Device, _ scope: Scope) throws -> UInt64 {
            try w.open(d).holdings(of: LogID(author: author.id, scope: scope)).frontier
        }
        #expect(try held(stRoot, bpWudu, Self.village) == 1)
        #expect(try held(relay, bpWudu, Self.village) == 1)
        #expect(try held(relay, bpCheng, chengScope) == 1)
        #expect(try held(hq, bpWudu, Self.village) == 1)
        #expect(try held(hq, bpCheng, chengScope) == 1)
        #expect(try held(hq, stRoot, Self.village) == 1)
        #expect(try held(bpWudu2, bpWudu, Self.village) == 1)
        let hqReplicator = try w.replicator(hq)
        hqReplicator.addKey(chengKey)
        _ = try hqReplicator.openHeldChanges(now: ProcessWorld.now())
        #expect(try hqReplicator.store.records(RecordQuery()).count == 3, "HQ reads all three incidents")
    }
}
