// What one batch of stored changes becomes in PostgreSQL: pure, no I/O (the store is read before, the
// database written after), so it is tested without either.

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import Foundation

/// An incident's current state: one row per record (table `incidents`).
public struct IncidentRow: Sendable, Equatable {
    public var recordID: String
    public var scope: String
    public var county: String?
    public var station: String?
    public var category: String?
    public var priority: String?
    public var status: String?
    public var statusGeneration: Int32?
    public var summary: String?
    public var reporter: String?
    public var reportedAt: Int64?
    public var latitude: Double?
    public var longitude: Double?
    public var placeName: String?
    public var assignedUnits: [String]
    public var feedback: String?
    /// When the feedback was written (the HLC of the write that set it), ms.
    public var feedbackAt: Int64?
    public var feedbackDeadline: Int64?
    /// The deadline passed without feedback, or the feedback came after it (as of `fedAt`).
    public var overdue: Bool
    public var duplicateOf: String?
    public var notes: Int32
    public var deleted: Bool
    /// The record's last-modified HLC (raw): a row is only replaced by a state at least as new.
    public var updatedHLC: Int64
}

/// A visit's current state (table `visits`).
public struct VisitRow: Sendable, Equatable {
    public var recordID: String
    public var scope: String
    public var county: String?
    public var station: String?
    public var subject: String?
    public var visitor: String?
    public var visitType: String?
    public var visitedAt: Int64?
    public var latitude: Double?
    public var longitude: Double?
    public var placeName: String?
    public var outcome: String?
    public var followUpNeeded: Bool
    public var followUpBy: Int64?
    public var tags: [String]
    public var notes: Int32
    public var deleted: Bool
    public var updatedHLC: Int64
}

/// One status move or note (table `record_history`): keyed by change hash, record and the action's place.
public struct HistoryRow: Sendable, Equatable {
    public var changeHash: [UInt8]
    public var recordID: String
    public var ordinal: Int32
    public var kind: String
    /// `status` (level name; `generation` set) or `note` (text), or `created` / `deleted`.
    public var value: String?
    public var generation: Int32?
    public var author: String
    public var hlc: Int64
    public var signatureVerified: Bool
}

/// A device whose changes were fed (table `devices`), from its certificate.
public struct DeviceRow: Sendable, Equatable {
    public var deviceID: String
    public var role: String
    public var scopes: [String]
    public var issuer: String
    public var notBefore: Int64
    public var notAfter: Int64
    public var serial: Int64
}

/// HQ's receipt of one log (table `receipts`): the highest seq receipted.
public struct ReceiptRow: Sendable, Equatable {
    public var author: String
    public var scope: String
    public var seq: Int64
    public var hq: String
    public var hlc: Int64
}

/// The rows one batch writes, and the cursor it moves to.
public struct FeedBatch: Sendable {
    public var incidents: [IncidentRow] = []
    public var visits: [VisitRow] = []
    public var history: [HistoryRow] = []
    public var devices: [DeviceRow] = []
    public var receipts: [ReceiptRow] = []
    /// The last change read (rowid and hash): the new cursor.
    public var lastRowid: Int64 = 0
    public var lastHash: [UInt8] = []
    /// Changes read in this batch.
    public var changes = 0
    /// Records changes not opened yet by the store (no key): fed again once they are.
    public var unopened: [Int64] = []
    /// Records the store holds sealed but cannot unseal (damage): named in the log, fed once repaired.
    public var damagedRecords: [RecordID] = []
    /// Rowids of changes damaged on disk (their bytes no longer hash to their id): left out and named in
    /// the log; the store quarantines them on its next read and the intact copy a peer sends is a new row.
    public var damagedChanges: [Int64] = []

    public init() {}

    /// Rows in all tables.
    public var rows: Int { incidents.count + visits.count + history.count + devices.count + receipts.count }
}

/// Turns stored changes into rows: opens each with the verifier's keys (the replicator's snapshot) and reads
/// the current state of every record it touched from the store.
///
/// The signature is not checked again by default: the store holds only changes `Replicator.ingest` verified
/// (signature, certificate chain, scope, revocation) or this device wrote, and every change the feed reads is
/// checked to be those bytes (`FeedChange.intact`: they hash to the id verified at ingest). `signature_verified`
/// then says "verified at ingest, bytes unchanged since". With `recheckSignatures` (`fieldsync feed rebuild
/// --recheck-signatures`) each change is verified again against the verifier's trust, as `fieldsync show`
/// does: defence in depth against a store file rewritten consistently (bytes and hash) by someone who can
/// write it, or an ingest bug (its cost: `fieldsync-bench feed`, docs/postgres-feed.md, "Figures").
public enum FeedRows {
    /// The batch for `changes` (in rowid order), with `records(ids)` reading the materialized records.
    /// - Parameter recheckSignatures: verify each change's signature and its author's certificate chain again
    ///   (`signature_verified` is then that check's outcome) instead of trusting the store's ingest check.
    public static func batch(_ changes: [FeedChange], verifier: ChangeVerifier, now: UInt64, recheckSignatures: Bool = false,
                             records: ([RecordID]) throws -> (records: [RecordID: Record], damaged: [RecordID])) rethrows -> FeedBatch {
        var out = FeedBatch()
        var touched: [RecordID] = [], seenRecords = Set<RecordID>(), seenDevices = Set<DeviceID>()
        var receipts: [String: ReceiptRow] = [:]
        for fc in changes {
            out.changes += 1
            out.lastRowid = fc.rowid
            out.lastHash = fc.change.hash
            guard fc.intact else {
                out.damagedChanges.append(fc.rowid)
                continue
            }
            guard let change = try? Change(canonicalBytes: fc.change.bytes) else { continue }
            let h = change.header
            if seenDevices.insert(h.author).inserted, let cert = verifier.certificates[h.author]?.certificate {
                out.devices.append(deviceRow(cert))
            }
            switch h.contentType {
            case .records:
                guard fc.opened else {
                    out.unopened.append(fc.rowid)
                    continue
                }
                guard let plain = try? change.open(with: verifier.keys),
                      let body = try? ChangeBody(canonicalBytes: plain) else { continue }
                let verified = recheckSignatures ? verifier.verify(change, now: now) == .accepted : true
                for edit in body.edits {
                    if seenRecords.insert(edit.record).inserted { touched.append(edit.record) }
                    out.history += historyRows(edit, change: fc.change.hash, verified: verified)
                }
            case .receipt:
                guard verifier.certificates[h.author]?.certificate.role == .hq,
                      let receipt = try? Receipt(canonicalBytes: change.payload) else { continue }
                for (log, seq) in receipt.heads {
                    let key = "\(log.author)/\(log.scope.path)"
                    let row = ReceiptRow(author: log.author.description, scope: log.scope.path, seq: Int64(clamping: seq),
                                         hq: h.author.description, hlc: Int64(bitPattern: h.hlc.raw))
                    if (receipts[key]?.seq ?? -1) < row.seq { receipts[key] = row }
                }
            default:
                continue
            }
        }
        out.receipts = receipts.keys.sorted().map { receipts[$0]! }
        let (held, damaged) = try records(touched)
        out.damagedRecords = damaged
        let nowMs = Int64(clamping: now)
        for id in touched {
            guard let r = held[id] else { continue }
            if r.kind == .incident { out.incidents.append(incidentRow(r, now: nowMs)) }
            else if r.kind == .visit { out.visits.append(visitRow(r)) }
        }
        return out
    }

    static func deviceRow(_ c: Certificate) -> DeviceRow {
        DeviceRow(deviceID: c.subject.description, role: c.role.description, scopes: c.scopes.map(\.path), issuer: c.issuer.description,
                  notBefore: Int64(clamping: c.notBefore), notAfter: Int64(clamping: c.notAfter), serial: Int64(bitPattern: c.serial))
    }

    /// Status moves and notes of one edit, one row each, plus `created` and `deleted`.
    static func historyRows(_ edit: RecordEdit, change: [UInt8], verified: Bool) -> [HistoryRow] {
        var rows: [HistoryRow] = []
        func row(_ ordinal: Int, _ kind: String, _ value: String?, _ generation: Int32? = nil) {
            rows.append(HistoryRow(changeHash: change, recordID: edit.record.description, ordinal: Int32(ordinal), kind: kind, value: value,
                                   generation: generation, author: edit.author.description, hlc: Int64(bitPattern: edit.hlc.raw),
                                   signatureVerified: verified))
        }
        // Ordinals are the action's index in the edit; `created` takes -1. Several edits of one record in one
        // change are not made by this version's writers, and would collide on (hash, record, ordinal): the
        // key keeps the first.
        if edit.creates { row(-1, "created", edit.kind.name) }
        let statusField = SchemaRegistry.standard.schemas[edit.kind]?.statusField
        let schema = SchemaRegistry.standard.schemas[edit.kind]
        for (i, action) in edit.actions.enumerated() {
            switch action {
            case let .raise(field, point) where field == statusField:
                let levels = edit.kind == .incident ? Incident.statusLevels : []
                row(i, "status", Int(point.level) < levels.count ? levels[Int(point.level)] : "level \(point.level)", Int32(clamping: point.generation))
            case let .append(field, text):
                row(i, schema?.name(of: field) == "notes" ? "note" : (schema?.name(of: field) ?? field.description), Self.text(text))
            case .delete:
                row(i, "deleted", nil)
            default:
                continue
            }
        }
        return rows
    }

    static func place(_ scope: Scope) -> (county: String?, station: String?) {
        let s = scope.segments
        return (s.count > 1 ? s[1] : nil, s.count > 2 ? s[2] : nil)
    }

    static func updated(_ r: Record) -> Int64 { Int64(bitPattern: r.lastModified.value?.hlc.raw ?? 0) }

    static func string(_ r: Record, _ f: FieldID) -> String? {
        switch r.value(f) {
        case let .string(s)?: text(s)
        case let .symbol(s)?: text(s)
        default: nil
        }
    }

    /// Text as PostgreSQL can hold it: every other character arrives as written (values are bind
    /// parameters), but a `text` value cannot hold U+0000, which a record may: it is written as U+FFFD.
    static func text(_ s: String) -> String {
        s.utf8.contains(0) ? s.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : s
    }

    static func time(_ r: Record, _ f: FieldID) -> Int64? {
        if case let .time(t)? = r.value(f) { return t }
        return nil
    }

    static func location(_ r: Record, _ f: FieldID) -> Location? {
        if case let .location(l)? = r.value(f) { return l }
        return nil
    }

    static func incidentRow(_ r: Record, now: Int64) -> IncidentRow {
        typealias F = Incident.Field
        let (county, station) = place(r.scope)
        let point = r.lattices[F.status]?.point
        let feedbackAt = r.registers[F.feedback].flatMap { reg -> Int64? in
            if case .null = reg.value { return nil }
            return Int64(clamping: reg.stamp.hlc.milliseconds)
        }
        let deadline = time(r, F.feedbackDeadline)
        let overdue = deadline.map { d in (feedbackAt ?? now) > d } ?? false
        var dup: String?
        if case let .record(id)? = r.value(F.duplicateOf) { dup = id.description }
        let loc = location(r, F.location)
        return IncidentRow(
            recordID: r.id.description, scope: r.scope.path, county: county, station: station,
            category: string(r, F.category), priority: string(r, F.priority),
            status: point.flatMap { Incident.Status(rawValue: $0.level)?.name }, statusGeneration: point.map { Int32(clamping: $0.generation) },
            summary: string(r, F.summary), reporter: string(r, F.reporter), reportedAt: time(r, F.reportedAt),
            latitude: loc?.latitude, longitude: loc?.longitude, placeName: loc.map { text($0.placeName) },
            assignedUnits: r.elements(F.assignedUnits).map(text), feedback: string(r, F.feedback), feedbackAt: feedbackAt,
            feedbackDeadline: deadline, overdue: overdue, duplicateOf: dup, notes: Int32(clamping: r.notes(F.notes).count),
            deleted: r.isDeleted, updatedHLC: updated(r))
    }

    static func visitRow(_ r: Record) -> VisitRow {
        typealias F = Visit.Field
        let (county, station) = place(r.scope)
        let loc = location(r, F.location)
        var follow = false
        if case let .bool(b)? = r.value(F.followUpNeeded) { follow = b }
        return VisitRow(
            recordID: r.id.description, scope: r.scope.path, county: county, station: station,
            subject: string(r, F.subject), visitor: string(r, F.visitor), visitType: string(r, F.visitType),
            visitedAt: time(r, F.visitedAt), latitude: loc?.latitude, longitude: loc?.longitude, placeName: loc.map { text($0.placeName) },
            outcome: string(r, F.outcome), followUpNeeded: follow, followUpBy: time(r, F.followUpBy), tags: r.elements(F.tags).map(text),
            notes: Int32(clamping: r.notes(F.notes).count), deleted: r.isDeleted, updatedHLC: updated(r))
    }
}
