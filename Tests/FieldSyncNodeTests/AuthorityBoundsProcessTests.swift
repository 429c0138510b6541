import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import Testing

@testable import FieldSyncCrypto

/// Issue 12 items 2 and 5 with real `fieldsync` processes on 127.0.0.1: a county authority made with
/// the CLI cannot revoke the HQ root or an HQ-enrolled station, a forged revocation never spreads, and
/// a device whose county authority has expired still reads its store.
@Suite(.ownThread, .serialized)
struct AuthorityBoundsProcessTests {
    static let wudu = try! Scope("longnan/wudu")

    /// The world's root as a CLI authority directory (`authority init` would make a new key).
    static func rootAuthorityDir(_ w: ProcessWorld) throws -> String {
        let d = w.dir + "/hq-auth"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try Keystore.createKeyFile(at: d + "/authority.key")
        try Keystore.write(KeystoreContents(signingKey: w.rootKey, agreementKey: X25519.SecretKey.generate(), root: w.rootKey.publicKey),
                           to: d + "/authority.keystore", protection: .keyFile(path: d + "/authority.key"))
        _ = FileManager.default.createFile(atPath: d + "/root.pub", contents: Data((w.rootKey.publicKey.description + "\n").utf8))
        return d
    }

    @Test(.timeLimit(.minutes(2))) func aCountyCannotRevokeHQOrAnHQStationAndAForgeryDoesNotSpread() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let hq = try w.device("hq", .hq, ["longnan"])
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let courier = try w.device("courier", .backpack, [ProcessTests.station.path])
        try w.fill(st, count: 2)

        // A county authority for longnan/wudu, made and delegated with the CLI.
        let hqAuth = try Self.rootAuthorityDir(w)
        let c = w.dir + "/county"
        let countyKey = ["--key-file", c + "/authority.key"]
        try w.expectOK(["authority", "init", "--county", "--dir", c, "--scope", Self.wudu.path] + countyKey)
        try w.expectOK(["authority", "delegate", c + "/authority.req", "--dir", hqAuth, "--key-file", hqAuth + "/authority.key",
                        "--scope", Self.wudu.path, "--out", c + "/county.cert"])
        try w.expectOK(["authority", "import", c + "/county.cert", "--dir", c, "--root", hqAuth + "/root.pub"] + countyKey)
        let stationCert = w.dir + "/station.cert"
        _ = FileManager.default.createFile(atPath: stationCert, contents: Data(st.identity.certificate.canonicalBytes))

        // The CLI refuses to sign: the root by id, the HQ-enrolled station by id and by certificate.
        let attempts: [(String, [String])] = [
            ("the HQ root", [DeviceID(signingKey: w.rootKey.publicKey).description]),
            ("the station by id", [st.id.description]),
            ("the station by certificate", ["--certificate", stationCert]),
        ]
        for (i, (what, target)) in attempts.enumerated() {
            let out = w.dir + "/attempt\(i).rev"
            let r = try w.run(["authority", "revoke"] + target + ["--dir", c, "--reason", "compromised", "--out", out] + countyKey)
            #expect(r.status != 0 && r.err.contains("outsideDelegation"), "\(what): \(r.status) \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(what): nothing written")
        }

        // What the county may do: revoke a backpack it enrolled, naming its certificate. The HQ-enrolled
        // station checks it with the root key alone (the revocation carries the county's certificate).
        let bp = w.dir + "/county-bp"
        try w.expectOK(["device", "init", "--dir", bp, "--key-file", bp + "/device.key", "--scope", ProcessTests.station.path, "--label", "bp"])
        try w.expectOK(["authority", "enroll", bp + "/enrollment.req", "--dir", c, "--role", "backpack", "--scope", ProcessTests.station.path,
                        "--out", bp + "/bp.cert"] + countyKey)
        try w.expectOK(["authority", "revoke", "--certificate", bp + "/bp.cert", "--dir", c, "--reason", "lost", "--out", bp + "/bp.rev"] + countyKey)
        let legit = try Revocation(canonicalBytes: [UInt8](FileManager.default.contents(atPath: bp + "/bp.rev")!))
        #expect(try w.expectOK(["publish", bp + "/bp.rev"] + w.args(st)).contains("revocation of \(legit.device)"))

        // Forged in-process with the county's key, as a rogue county would: `publish` refuses both.
        let contents = try Keystore.read(from: c + "/authority.keystore", unlock: .keyFile(path: c + "/authority.key"))
        let county = try Authority(delegated: contents.signingKey, certificate: contents.certificate!)
        let now = HLCTimestamp(milliseconds: ProcessWorld.now(), counter: 0)
        let forRoot = try Certificate(kind: .device, signingKey: w.rootKey.publicKey, agreementKey: X25519.SecretKey.generate().publicKey,
                                      role: .backpack, scopes: [Self.wudu], notBefore: ProcessWorld.now(),
                                      notAfter: ProcessWorld.now() + 86_400_000, serial: 1, issuer: county.signingKey)
        let forgeries = [
            try Revocation(unchecked: DeviceID(signingKey: w.rootKey.publicKey), serial: 1, revokedAt: now, reason: .compromised, note: "",
                           by: county, issuerCertificate: county.certificate, revokedCertificate: forRoot),
            try Revocation(unchecked: st.id, serial: st.identity.certificate.serial, revokedAt: now, reason: .compromised, note: "",
                           by: county, issuerCertificate: county.certificate, revokedCertificate: st.identity.certificate),
        ]
        for (i, forged) in forgeries.enumerated() {
            let file = w.dir + "/forged\(i).rev"
            _ = FileManager.default.createFile(atPath: file, contents: Data(forged.canonicalBytes))
            let r = try w.run(["publish", file] + w.args(courier))
            #expect(r.status != 0 && r.err.contains("outsideDelegation"), "\(r.err)")
        }
        #expect(try w.open(courier).status().changes == 0, "publish wrote nothing")

        // A tampered (or old) courier store carries the forgeries anyway, written in without verification.
        let store = try SQLiteStore(path: courier.store, sealer: try StorageKeySealer(deviceSigningKey: courier.identity.signingKey))
        var batch = CommitBatch()
        for (i, forged) in forgeries.enumerated() {
            let scope = i == 0 ? ProcessTests.station : ProcessTests.village
            let ch = try Change.control(author: courier.identity.signingKey, scope: scope, seq: 1, prevHash: Change.zeroHash,
                                        hlc: HLCTimestamp(milliseconds: ProcessWorld.now(), counter: UInt16(i)), contentType: .revocation,
                                        priority: .urgent, payload: forged.canonicalBytes)
            let h = ch.header
            batch.changes.append(StoredChange(log: LogID(author: h.author, scope: h.scope), seq: h.seq, hash: ch.id, prevHash: h.prevHash,
                                              hlc: h.hlc, contentType: h.contentType, priority: h.priority,
                                              bytes: ch.encodedBytes))
        }
        batch.certificates = [courier.identity.certificate]
        #expect(try store.commit(batch).inserted == 2)

        try w.serve(st)
        try w.serve(hq)
        let pushed = try w.sync(courier, st)
        #expect(pushed["finished"] as? Bool == false, "the station cuts the session: \(pushed)")
        let honest = try w.sync(st, hq)
        #expect(honest["finished"] as? Bool == true && (honest["changesSent"] as? Int ?? 0) >= 3, "HQ and the station keep syncing: \(honest)")
        let again = try w.sync(st, hq)
        #expect(again["finished"] as? Bool == true, "\(again)")
        try w.stopAll()
        #expect(try w.serverLog(st).contains("badChange"), "the station says why")
        for node in [st, hq] {
            let r = try w.replicator(node)
            #expect(r.trust.revocations.all == [legit], "\(node.name) learned the county's own revocation only")
            #expect(try r.store.holdings().keys.allSatisfy { $0.author != courier.id }, "\(node.name) stored nothing of the forgeries")
            try r.trust.verify(st.identity.certificate, now: ProcessWorld.now())
        }
        #expect(try w.open(hq).records(RecordQuery()).count == 2, "HQ holds the station's records")
    }

    /// Issue 12 item 5: `list` and `show` work for a device whose county authority has expired (they
    /// need no currently valid chain); a session with it would not (the chain is checked at now).
    @Test(.timeLimit(.minutes(1))) func listAndShowWorkAfterTheIssuingCountyExpired() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let day: UInt64 = 86_400_000
        let now = ProcessWorld.now()
        let countyKey = Ed25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: countyKey, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .county,
                                        requestedScopes: [Self.wudu], createdAt: now - 30 * day, label: "wudu")
        let countyCert = try w.authority.delegate(req, scopes: [Self.wudu], notBefore: now - 30 * day, notAfter: now - day, serial: 9)
        let county = try Authority(delegated: countyKey, certificate: countyCert)
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path], issuer: { req, role, scopes in
            try county.enroll(req, role: role, scopes: scopes, notBefore: now - 20 * day, notAfter: now + 20 * day, serial: 5)
        })
        // Its keystore names the county, as `device import --authority` writes it.
        try Keystore.write(KeystoreContents(signingKey: bp.identity.signingKey, agreementKey: bp.identity.agreementKey,
                                            certificate: bp.identity.certificate, chain: [countyCert], root: w.rootKey.publicKey),
                           to: bp.dir + "/device.keystore", protection: .keyFile(path: bp.keyFile), overwrite: true)
        // An incident it wrote ten days ago, while the county was valid.
        var trust = TrustStore(root: w.rootKey.publicKey)
        try trust.learnAuthority(countyCert)
        let writer = Replicator(identity: bp.identity, trust: trust, store: MemoryStore())
        writer.addKey(w.stationKey)
        let then = now - 10 * day
        var clock = writer.clock
        let id = RecordID(ID128(high: 12, low: 5))
        let e = Incident.create(id: id, scope: ProcessTests.village, author: bp.id, hlc: try clock.now(wall: then), category: .dispute,
                                priority: .normal, location: Location(latitude: 33.4, longitude: 104.9), summary: "written before expiry",
                                reportedAt: Int64(then), reporter: "walk-in")
        let change = try writer.write([e], scope: ProcessTests.village, priority: .normal, now: then)
        let sqlite = Replicator(identity: bp.identity, trust: trust, store: try SQLiteStore(
            path: bp.store, sealer: try StorageKeySealer(deviceSigningKey: bp.identity.signingKey)))
        sqlite.addKey(w.stationKey)
        #expect(try sqlite.ingest([change], now: now).outcomes == [.accepted])

        let listed = try w.run(["list"] + w.args(bp))
        #expect(listed.status == 0 && listed.out.contains("written before expiry"), "\(listed.err)")
        let shown = try w.run(["show", id.description] + w.args(bp))
        #expect(shown.status == 0 && shown.out.contains("verified"), "\(shown.err)")
        #expect(throws: IdentityError.self, "a session needs a chain valid now") { try trust.verify(bp.identity.certificate, now: now) }
    }
}
