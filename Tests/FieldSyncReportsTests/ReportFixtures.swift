import FieldSync
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncReports
import Foundation

/// A small PKI and in-memory replicators: backpack units write, HQ (the report's node) ingests.
struct ReportFixtures {
    static let wudu17 = try! Scope("longnan/wudu/station-017")
    static let cheng50 = try! Scope("longnan/cheng/station-050")
    static let root = try! Scope("longnan")
    /// 2026-12-03 in UTC+8 (2026-12-02T16:00:00Z).
    static let day = try! ReportDay(parsing: "2026-12-03")
    static let dayStart: Int64 = 1_796_227_200_000
    static let hour: Int64 = 3_600_000
    static let minute: Int64 = 60_000

    let rootKey = Ed25519.SecretKey.generate()
    let trust: TrustStore
    var serial: UInt64 = 0
    let keys = [EpochKey.generate(scope: wudu17, epoch: 1), EpochKey.generate(scope: cheng50, epoch: 1)]

    init() { trust = TrustStore(root: rootKey.publicKey) }

    /// A replicator of a new device of `role` in `scopes`, over a memory store, holding every station key.
    mutating func replicator(_ role: Role, scopes: [Scope], label: String, store: any SyncStore = MemoryStore()) throws -> Replicator {
        let sk = Ed25519.SecretKey.generate(), xk = X25519.SecretKey.generate()
        let now = UInt64(Self.dayStart) - 30 * 86_400_000
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: scopes,
                                        createdAt: now, label: label)
        serial += 1
        let cert = try Authority(root: rootKey).enroll(req, role: role, scopes: scopes, notBefore: now, notAfter: now + 400 * 86_400_000,
                                                       serial: serial)
        let r = Replicator(identity: DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert), trust: trust, store: store)
        for k in keys { r.addKey(k) }
        return r
    }

    /// Every change `from` wrote, ingested by `to` at `now`: by default 07:00 the morning after the day (the
    /// time of the report: the receiver's clock moves to it). What `to` already holds keeps its first arrival.
    static func deliver(_ from: Replicator, to: Replicator, now: Int64 = dayStart + 31 * hour) throws {
        var changes: [StoredChange] = []
        for log in try from.store.orderedLogs() where log.author == from.identity.id {
            let held = try from.store.holdings(of: log)
            for r in held.ranges { changes += try from.store.changes(log, in: r) }
        }
        let decoded = try changes.map { try Change(canonicalBytes: $0.bytes) }
        _ = try to.ingest(decoded, certificates: [from.identity.certificate], now: UInt64(now))
    }

    static func incident(_ book: RecordBook, at: Int64, scope: Scope = wudu17, category: Incident.Category = .traffic,
                         priority: Priority = .normal, summary: String, reporter: String = "caller", lat: Double = 33.39,
                         lon: Double = 104.93, deadline: Int64? = nil) throws -> Record {
        book.now = UInt64(at)
        return try book.createIncident(IncidentDraft(scope: scope, category: category, priority: priority, summary: summary,
                                                     location: Location(latitude: lat, longitude: lon, placeName: "place"),
                                                     reporter: reporter, reportedAt: at, feedbackDeadline: deadline)).record
    }
}
