import FieldSyncCore
import FieldSyncCrypto

/// One entry of a record's audit trail.
public struct AuditEntry: Sendable {
    /// The author's log.
    public let log: LogID
    /// Position in the log.
    public let seq: UInt64
    /// When the author wrote it (HLC).
    public let hlc: HLCTimestamp
    /// The change id.
    public let changeHash: [UInt8]
    /// The author's certificate, if known (role, scopes, issuer).
    public let author: Certificate?
    /// The signature and certificate check, done again now.
    public let verification: IngestOutcome
    /// The revocation in force against the author's certificate, if any (`TrustStore.revocation(of:)`).
    /// A change that still verifies was written at or before its cut-off: it is kept, and flagged with
    /// this so that a reader knows its author was later revoked (attack case 35).
    public let authorRevocation: Revocation?
    /// What the change did to this record, if this node can open it.
    public let actions: [Action]?
    /// The change exactly as signed and received: the evidence.
    public let signedChange: [UInt8]
}

extension Replicator {
    /// The signed edit history of one record: every held change that touched it, in HLC order, each
    /// re-verified against its author's certificate and opened to show exactly what it did to this
    /// record. What a court needs: who (device and certificate), when (HLC), what (actions), and proof
    /// (the signed change bytes, verifiable by anyone holding the authority's public key).
    /// - Throws: store errors.
    public func auditTrail(of id: RecordID, now: UInt64) throws -> [AuditEntry] {
        let v = verifier()
        return try store.history(of: id).compactMap { stored in
            guard let change = try? Change(canonicalBytes: stored.bytes) else { return nil }
            let actions = v.openEdits(change)?.filter { $0.record == id }.flatMap(\.actions)
            let author = certificates[stored.log.author]?.certificate
            return AuditEntry(log: stored.log, seq: stored.seq, hlc: stored.hlc, changeHash: stored.hash, author: author,
                              verification: v.verify(change, now: now), authorRevocation: author.flatMap { trust.revocation(of: $0) },
                              actions: actions, signedChange: stored.bytes)
        }
    }

    /// Folds a record again from its signed history (every held change that touched it, opened with this
    /// node's keys and merged in HLC order): what `fieldsync doctor --repair` writes over a sealed row
    /// damaged on disk. The CRDT merge makes the result the record the store had.
    /// - Returns: the rebuilt record, or nil if a change of its history is not held (evicted), does not
    ///   decode, or cannot be opened with this node's keys.
    /// - Throws: store errors, or a `RecordError` if a held edit no longer applies.
    public func rebuildRecord(_ id: RecordID, kind: RecordKind, scope: Scope) throws -> Record? {
        let v = verifier()
        var record = Record(id: id, kind: kind, scope: scope)
        for stored in try store.history(of: id) where stored.contentType == .records {
            guard let change = try? Change(canonicalBytes: stored.bytes), let edits = v.openEdits(change) else { return nil }
            for e in edits where e.record == id { try record.apply(e) }
        }
        return record
    }
}
