import FieldSyncCore
import FieldSyncCrypto

/// What happened to one incoming change.
public enum IngestOutcome: Equatable, Sendable {
    /// Verified and handed to the store (which may still report it a duplicate or refuse it for quota).
    case accepted
    /// Failed verification; not stored. The peer that sent it is misbehaving or relaying junk.
    case rejected(ChangeError.Code, String)
    /// The author's certificate is unknown; not stored (the peer should send it with the change).
    case unknownAuthor
}

/// The result of ingesting a batch.
public struct IngestReport: Sendable, Equatable {
    /// Per change, in input order.
    public var outcomes: [IngestOutcome] = []
    /// What the store did.
    public var commit = CommitReport()
    /// Edits merged (payloads this node could open).
    public var editsMerged = 0
    /// Changes held without being opened (no key: a relay, or a key not granted yet).
    public var heldSealed = 0
    /// Epoch keys newly learned from grants in the batch.
    public var keysLearned = 0
    /// Revocations newly learned.
    public var revocationsLearned = 0
    /// Held changes quarantined because a revocation learned in this batch dates them after their
    /// author's cut-off (`Replicator.quarantineRevokedChanges`).
    public var quarantinedRevoked = RevokedQuarantineReport()

    /// An empty report.
    public init() {}

    /// Number of changes rejected by verification.
    public var rejected: Int { outcomes.filter { if case .rejected = $0 { true } else { false } }.count }
}

/// A change checked and, where this node may read it, opened: everything of ingestion that does not
/// touch the store. Preparing is pure and `Sendable`, so a driver can prepare the next batch on another
/// core while the replicator commits the current one.
public struct PreparedChange: Sendable {
    /// The change.
    public let change: Change
    /// The verification outcome.
    public let outcome: IngestOutcome
    /// The change id (hash), when accepted.
    public let hash: [UInt8]
    /// Its opened payload, when it is a records change this node could open.
    public let payload: [UInt8]?
    /// The payload's edits, decoded and validated for the change's author and scope, when the preparer
    /// did that too (`prepare(_:now:decodingEdits:)`, the node's worker); nil otherwise, and for a
    /// payload whose edits are not valid, and then the committing thread decodes `payload` (the store's
    /// own ingest leaves it to its committing thread, which balances its two threads; docs/benchmarks.md).
    public var edits: [RecordEdit]? = nil

    init(change: Change, outcome: IngestOutcome, hash: [UInt8], payload: [UInt8]?, edits: [RecordEdit]? = nil) {
        self.change = change; self.outcome = outcome; self.hash = hash; self.payload = payload; self.edits = edits
    }

    /// The edits to merge: `edits` if the preparer decoded them, else those of `payload` if it opened and
    /// every edit is valid (`ChangeVerifier.edits(of:payload:schemas:)`), else nil (held sealed).
    func editsToMerge(schemas: SchemaRegistry) -> [RecordEdit]? {
        if let edits { return edits }
        guard let payload else { return nil }
        return ChangeVerifier.edits(of: change, payload: payload, schemas: schemas)
    }
}

/// Verifies changes with public material only and opens those its keys can read. A value snapshot of
/// the replicator's trust, certificates, keys and schemas: `Sendable`, usable from any thread.
public struct ChangeVerifier: Sendable {
    /// Trust anchors and revocations.
    public let trust: TrustStore
    /// Known certificates by device, their signatures already checked: the newest of each device.
    public let certificates: [DeviceID: VerifiedCertificate]
    /// Epoch keys to open payloads with (empty for a relay).
    public let keys: [EpochKey]
    /// Schemas to validate edits with.
    public let schemas: SchemaRegistry
    /// Every known certificate of the devices that have more than one (renewed or re-enrolled: same key,
    /// other validity, role or scopes), each with its issuing authority's certificate.
    public var renewals: [DeviceID: [VerifiedCertificate]] = [:]
    /// The replicator this snapshot was taken from and what it knew then (`Replicator.verifierGeneration`);
    /// nil for a verifier built by hand. `Replicator.ingest(prepared:by:now:)` compares it with what the
    /// replicator knows at commit time.
    public var origin: (replicator: ObjectIdentifier, generation: UInt64)?

    /// The outcome of verifying `change` at `now` (ms since the Unix epoch). A change is checked against
    /// a certificate of its author valid at its write time (HLC): with several, those valid then are tried
    /// first (newest first), and it is accepted if one passes every check.
    public func verify(_ change: Change, now: UInt64) -> IngestOutcome {
        guard let cert = certificates[change.header.author] else { return .unknownAuthor }
        guard let all = renewals[change.header.author], all.count > 1 else {
            do {
                try change.verify(author: cert, trust: trust, now: now)
                return .accepted
            } catch {
                return Self.outcome(of: error, change)
            }
        }
        let at = change.header.hlc.milliseconds, skew = trust.clockSkewMilliseconds
        let validThen = all.filter { (try? $0.checkValidity(at: at, skew: skew)) != nil }
        var firstError: ChangeError?
        for candidate in validThen.isEmpty ? [cert] : validThen {
            do {
                try change.verify(author: candidate, trust: trust, now: now)
                return .accepted
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        return Self.outcome(of: firstError!, change)
    }

    /// The outcome for a verification failure. A key grant signed by a county authority this node does
    /// not know yet is not evidence of forgery (authority certificates travel separately): it is not
    /// stored, like a change whose author is unknown, and may come again once the authority is known.
    static func outcome(of error: ChangeError, _ change: Change) -> IngestOutcome {
        if error.code == .unauthorizedControl, error.identityCode == .unknownAuthority, change.header.contentType == .keyGrant {
            return .unknownAuthor
        }
        return .rejected(error.code, error.description)
    }

    /// `prepare(_:now:decodingEdits:)` for every change of a batch, in order: what a driver runs on
    /// another thread.
    public func prepare(_ changes: [Change], now: UInt64, decodingEdits: Bool = false) -> [PreparedChange] {
        changes.map { prepare($0, now: now, decodingEdits: decodingEdits) }
    }

    /// Verifies `change` and, if accepted and readable, opens it; with `decodingEdits`, also decodes and
    /// validates its edits (`PreparedChange.edits`), which the committing thread does otherwise. The
    /// schemas are the replicator's, which never change, so edits validated here are valid at commit.
    public func prepare(_ change: Change, now: UInt64, decodingEdits: Bool = false) -> PreparedChange {
        let outcome = verify(change, now: now)
        guard outcome == .accepted else { return PreparedChange(change: change, outcome: outcome, hash: [], payload: nil) }
        let payload = change.header.contentType == .records && !keys.isEmpty ? try? change.open(with: keys) : nil
        let edits = decodingEdits ? payload.flatMap { Self.edits(of: change, payload: $0, schemas: schemas) } : nil
        return PreparedChange(change: change, outcome: outcome, hash: change.id, payload: payload, edits: edits)
    }

    /// The edits of a records change these keys can open and that pass validation, or nil.
    func openEdits(_ change: Change) -> [RecordEdit]? {
        guard !keys.isEmpty, let plain = try? change.open(with: keys) else { return nil }
        return Self.edits(of: change, payload: plain, schemas: schemas)
    }

    /// The edits of an opened records payload, if every one is valid for the change's author and scope.
    static func edits(of change: Change, payload: [UInt8], schemas: SchemaRegistry) -> [RecordEdit]? {
        guard let body = try? ChangeBody(canonicalBytes: payload) else { return nil }
        let h = change.header
        // An edit must belong to the change's scope and author, or a member could smuggle writes into
        // another scope inside a validly signed change.
        for e in body.edits {
            guard e.scope == h.scope, e.author == h.author, (try? schemas.validate(e)) != nil else { return nil }
        }
        return body.edits
    }
}
