import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

/// Security-notes §11 case 41: what a relay can infer matches the documented leakage and nothing more.
/// A relay (on the real SQLite store) carries a backpack's changes; its store must then hold exactly
/// what docs/threat-model.md ("Metadata in clear", "At rest") says a relay sees: the change headers in
/// clear and the sealed change bytes, the authors' certificates, log intervals; no record, no opened
/// payload, no plaintext, no epoch key.
@Suite struct RelayMetadataTests {
    static let now: UInt64 = 1_717_200_000_000

    @Test func case41RelayStoreHoldsOnlyTheDocumentedMetadata() throws {
        let root = Authority(root: .generate())
        let trust = TrustStore(root: root.signingKey.publicKey)
        let station = try Scope("longnan/wudu/station-017"), village = try Scope("longnan/wudu/station-017/village-0412")
        func identity(_ role: Role, _ scope: Scope, serial: UInt64) throws -> DeviceIdentity {
            let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
            let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [scope],
                                            createdAt: Self.now, label: "\(role)")
            let cert = try root.enroll(req, role: role, scopes: [scope], notBefore: Self.now - 86_400_000, notAfter: Self.now + 86_400_000,
                                       serial: serial)
            return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
        }
        let epochKey = EpochKey.generate(scope: station, epoch: 1)
        let backpack = Replicator(identity: try identity(.backpack, station, serial: 1), trust: trust, store: MemoryStore())
        backpack.addKey(epochKey)
        let path = TestFiles.tempPath("relay")
        let relayStore = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        let relay = Replicator(identity: try identity(.relay, try Scope("longnan"), serial: 2), trust: trust, store: relayStore)

        let marker = "PLAINTEXT-MARKER-5521"
        var written: [Change] = []
        for n in 1...3 {
            let e = Incident.create(id: RecordID(ID128(high: 41, low: UInt64(n))), scope: village, author: backpack.identity.id,
                                    hlc: HLCTimestamp(milliseconds: Self.now + UInt64(n), counter: 0), category: .dispute,
                                    priority: n == 1 ? .urgent : .normal, location: Location(latitude: 33.4, longitude: 104.9, placeName: "\(marker)-place"),
                                    summary: "\(marker)-summary-\(n)", reportedAt: Int64(Self.now), reporter: "\(marker)-reporter",
                                    notes: ["\(marker)-note"])
            written.append(try backpack.write([e], scope: village, priority: n == 1 ? .urgent : .normal, now: Self.now + UInt64(n)))
        }
        let report = try relay.ingest(written, certificates: [backpack.identity.certificate], now: Self.now + 10)
        #expect(report.outcomes.allSatisfy { $0 == .accepted } && report.editsMerged == 0 && report.heldSealed == 3)

        // No record, nothing opened, and every clear column is a header field the docs list.
        let db = try DatabaseQueue(path: path)
        try db.read { db in
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM records") == 0, "a relay materializes no record")
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM record_changes") == 0)
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM changes WHERE opened != 0") == 0, "a relay opens nothing")
            let rows = try Row.fetchAll(db, sql: "SELECT author, scope, seq, prev_hash, hlc, content_type, priority, size, bytes FROM changes ORDER BY seq")
            #expect(rows.count == 3)
            for (row, c) in zip(rows, written) {
                let h = c.header
                #expect((row["author"] as Data) == Data(h.author.canonicalBytes))
                #expect((row["scope"] as String) == h.scope.path)
                #expect((row["seq"] as Int64) == Int64(h.seq))
                #expect((row["prev_hash"] as Data) == Data(h.prevHash))
                #expect((row["hlc"] as Int64) == Int64(h.hlc.raw))
                #expect((row["content_type"] as Int) == Int(h.contentType.rawValue))
                #expect((row["priority"] as Int) == Int(h.priority.rawValue))
                #expect((row["bytes"] as Data) == Data(c.canonicalBytes), "the change exactly as signed (sealed payload)")
            }
            let certs = try Data.fetchAll(db, sql: "SELECT bytes FROM certificates")
            #expect(certs == [Data(backpack.identity.certificate.canonicalBytes)], "public certificates of the authors it carries")
        }
        #expect(relay.allKeys.isEmpty, "a relay holds no epoch key")

        // The files hold none of the plaintext and not the epoch key.
        let keyBytes = epochKey.key.withUnsafeBytes { Data($0) }
        for suffix in ["", "-wal", "-shm"] {
            guard let data = FileManager.default.contents(atPath: path + suffix) else { continue }
            #expect(data.range(of: Data(marker.utf8)) == nil, "plaintext in \(path + suffix)")
            #expect(data.range(of: keyBytes) == nil, "epoch key in \(path + suffix)")
        }
    }
}
