import FieldSyncCore
import FieldSyncCrypto

/// A device's own identity: its keys and certificate.
public struct DeviceIdentity: Sendable {
    /// Ed25519 signing key (authors changes).
    public let signingKey: Ed25519.SecretKey
    /// X25519 key (Noise static key; epoch keys are sealed to it).
    public let agreementKey: X25519.SecretKey
    /// The certificate an authority issued for these keys: the newest one (after a renewal, the renewed
    /// one). It is the certificate presented in handshakes.
    public let certificate: Certificate
    /// The issuing county authority's certificate(s) when the issuer is not the root (the keystore's
    /// chain, Protocols/identity.md §6); empty for a root-issued device. The handshake presents the
    /// newest one whose key issued `certificate`.
    public let chain: [Certificate]

    /// Bundles an identity.
    public init(signingKey: Ed25519.SecretKey, agreementKey: X25519.SecretKey, certificate: Certificate, chain: [Certificate] = []) {
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.certificate = certificate
        self.chain = chain
    }

    /// The chain presented with `certificate` in a handshake: the newest authority certificate of its
    /// issuer, or nothing for a root-issued certificate.
    public var presentedChain: [Certificate] {
        let issuers = chain.filter { $0.kind == .authority && $0.subject == certificate.issuer }
        guard let newest = issuers.max(by: { $1.isNewer(than: $0) }) else { return [] }
        return [newest]
    }

    /// The device id.
    public var id: DeviceID { certificate.subject }
}

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
    /// Its opened payload, when it is a records change this node could open. Decoding and validating
    /// the edits is left to the committing thread, which balances the two cores (docs/benchmarks.md).
    public let payload: [UInt8]?
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

    /// `prepare(_:now:)` for every change of a batch, in order: what a driver runs on another thread.
    public func prepare(_ changes: [Change], now: UInt64) -> [PreparedChange] {
        changes.map { prepare($0, now: now) }
    }

    /// Verifies `change` and, if accepted and readable, opens and validates its edits.
    public func prepare(_ change: Change, now: UInt64) -> PreparedChange {
        let outcome = verify(change, now: now)
        guard outcome == .accepted else { return PreparedChange(change: change, outcome: outcome, hash: [], payload: nil) }
        let payload = change.header.contentType == .records && !keys.isEmpty ? try? change.open(with: keys) : nil
        return PreparedChange(change: change, outcome: outcome, hash: change.id, payload: payload)
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

/// Why the replicator refused a local write.
public struct WriteError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason, for people.
    public var reason: String
    /// Creates an error.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The pure heart of a node: it authors changes, verifies and ingests changes from peers into its
/// store, keeps the certificates, epoch keys and revocations it has learned, and answers what it can
/// send. No I/O, no clock: `now` (ms since the Unix epoch) is passed in. The node daemon, the simulator
/// and the tests drive the same code.
public final class Replicator {
    /// This device.
    public let identity: DeviceIdentity
    /// Trust anchors and the revocations learned so far.
    public private(set) var trust: TrustStore {
        didSet { verifierGeneration &+= 1 }
    }
    /// The store.
    public let store: any SyncStore
    /// Schemas for validating decrypted edits.
    public let schemas: SchemaRegistry
    /// Known certificates by device (own, peers', authors of changes held), signatures checked once
    /// when learned (`TrustStore.certified`); validity is checked per change at its HLC. The newest
    /// certificate of each device (``Certificate/isNewer(than:)``); all of them are in `allCertificates`.
    public private(set) var certificates: [DeviceID: VerifiedCertificate] = [:] {
        didSet { verifierGeneration &+= 1 }
    }
    /// Every known certificate of each device (renewals and re-enrollments of the same key), each with
    /// its issuing authority's certificate (one entry per known authority certificate).
    public private(set) var allCertificates: [DeviceID: [VerifiedCertificate]] = [:]
    /// The device certificates learned, by device, in the order learned.
    private var deviceCertificates: [DeviceID: [Certificate]] = [:]
    /// Most certificates kept per device (renewals); further ones are not learned.
    public static let maxCertificatesPerDevice = 32
    /// Epoch keys this device holds, by scope, newest last.
    public private(set) var keys: [Scope: [EpochKey]] = [:] {
        didSet {
            sortedKeys = nil
            verifierGeneration &+= 1
        }
    }
    private var sortedKeys: [EpochKey]?  // `allKeys`, computed once per change of `keys`
    /// The HQ archive public key, if changes should carry an archive slot.
    public var archiveKey: X25519.PublicKey?
    /// The hybrid logical clock.
    public private(set) var clock: HybridLogicalClock
    /// Certificates the store already keeps (so each is written once).
    private var keptCertificates: Set<Certificate> = []
    /// How many authority certificates the store keeps (compared with the trust store's per ingest).
    private var keptAuthorityCount = 0
    /// Authors whose every known certificate (and issuing authority's) the store keeps.
    private var fullyKept: Set<DeviceID> = []
    /// `allCertificates` of the devices with more than one (what `ChangeVerifier.renewals` needs).
    private var renewed: [DeviceID: [VerifiedCertificate]] = [:] {
        didSet { verifierGeneration &+= 1 }
    }
    /// Counts the changes to what a `ChangeVerifier` snapshots (trust anchors and revocations, certificates,
    /// keys; it may count a mutation that changed nothing): a snapshot taken at the same count verifies
    /// exactly as this replicator does now.
    public private(set) var verifierGeneration: UInt64 = 0
    /// A verification cache shared with other replicators in the same process (simulators only; nil,
    /// the default, verifies everything here). Outcomes are the same either way (`VerificationCache`).
    public var verificationCache: VerificationCache?
    /// Where this device's own log heads are kept outside the store, so that a store restored from an
    /// older copy never makes it reuse a seq (attack case 48; `OwnHeadGuard`). Nil: the store alone.
    public var headGuard: (any OwnHeadGuard)?
    /// Fork evidence this replicator's commits recorded since it was created (from changes or proofs):
    /// a session compares it to know when to send newly learned proofs on a live session.
    public private(set) var forksRecorded = 0

    /// Creates a replicator.
    public init(identity: DeviceIdentity, trust: TrustStore, store: any SyncStore, schemas: SchemaRegistry = .standard,
                clock: HybridLogicalClock = HybridLogicalClock()) {
        self.identity = identity
        self.trust = trust
        self.store = store
        self.schemas = schemas
        self.clock = clock
        learn(certificates: identity.chain + [identity.certificate], now: 0)
    }

    // MARK: Certificates and keys

    /// Re-learns, from the store, the epoch keys granted to this device and the revocations it holds. A
    /// node calls this once after opening its store: keys and revocations learned from changes live in
    /// memory, the changes that carried them live in the store, and a restart must not forget either
    /// (a forgotten revocation would let a revoked device back in). Each grant and revocation is verified
    /// again against the trust anchors, so a tampered store cannot add one, and judged at its signing
    /// time (a grant's `issuedAt`, a revocation's `revokedAt`), never at `now`: what was valid when
    /// stored stays valid after its county authority's certificate expires, so a restart restores the
    /// same state as the node had before it (`now` does not change the result).
    /// - Returns: how many keys and revocations were restored.
    @discardableResult
    public func restoreControlState(now: UInt64) throws -> (keys: Int, revocations: Int) {
        var restored = (keys: 0, revocations: 0)
        for stored in try store.controlChanges() {
            guard let change = try? Change(canonicalBytes: stored.bytes) else { continue }
            switch change.header.contentType {
            case .keyGrant:
                // Grants and revocations are judged at their signing time, so one stays valid after its
                // county authority's certificate expires (Protocols/identity.md §4, §5).
                guard let grant = try? KeyGrant(canonicalBytes: change.payload), (try? grant.verify(trust: trust)) != nil,
                      grant.members.contains(where: { $0.device == identity.id }),
                      let key = try? grant.open(as: identity.id, agreementKey: identity.agreementKey),
                      !(keys[key.scope]?.contains { $0.isSameKey(as: key) } ?? false) else { continue }
                addKey(key)
                restored.keys += 1
            case .revocation:
                // Every revocation is kept (a set): the cut-off in force is the earliest, whatever the order.
                guard let r = try? Revocation(canonicalBytes: change.payload), (try? trust.addRevocation(r)) == true else { continue }
                restored.revocations += 1
            default:
                continue
            }
        }
        return restored
    }

    /// Adds certificates received from a peer (or read back from the store): delegated authority
    /// certificates first (checked against the root, `TrustStore.learnAuthority`), then device
    /// certificates, keeping those whose signatures and issuer bounds check. Validity is not judged here:
    /// a change is checked against a certificate of its author valid at its write time, so an expired
    /// certificate is kept for the changes signed under it, and a renewal of a known device is added next
    /// to the certificates it already has.
    /// - Parameter now: unused (validity is checked per change); kept for source compatibility.
    /// - Returns: how many device certificates were new.
    @discardableResult
    public func learn(certificates incoming: [Certificate], now: UInt64) -> Int {
        var newIssuers: Set<DeviceID> = []
        for a in incoming where a.kind == .authority {
            if (try? trust.learnAuthority(a)) == true { newIssuers.insert(a.subject) }
        }
        if !newIssuers.isEmpty {
            // A newly learned authority certificate may certify devices already known (or refused before).
            for (subject, certs) in deviceCertificates where certs.contains(where: { newIssuers.contains($0.issuer) }) {
                recertify(subject)
            }
        }
        var added = 0
        for c in incoming where c.kind == .device {
            if deviceCertificates[c.subject]?.contains(c) == true { continue }
            guard (deviceCertificates[c.subject]?.count ?? 0) < Self.maxCertificatesPerDevice else { continue }
            // Signatures and issuer bounds are checked once here; validity is checked at each change's time.
            let checked: [VerifiedCertificate]
            if let cache = verificationCache, c.issuer == trust.rootID {
                checked = (try? cache.certified(c, trust: trust)).map { [$0] } ?? []
            } else {
                checked = (try? trust.certifiedAll(c)) ?? []
            }
            guard !checked.isEmpty else { continue }
            deviceCertificates[c.subject, default: []].append(c)
            if allCertificates[c.subject] == nil && checked.count == 1 {
                allCertificates[c.subject] = checked
                certificates[c.subject] = checked[0]
            } else {
                recertify(c.subject)
            }
            fullyKept.remove(c.subject)
            added += 1
        }
        return added
    }

    /// Recomputes the verified certificates of `subject` from its device certificates and the authority
    /// certificates known now.
    private func recertify(_ subject: DeviceID) {
        var all: [VerifiedCertificate] = []
        for c in deviceCertificates[subject] ?? [] { all += (try? trust.certifiedAll(c)) ?? [] }
        guard !all.isEmpty else { return }
        all.sort { a, b in
            if a.certificate != b.certificate { return a.certificate.isNewer(than: b.certificate) }
            if let x = a.authority, let y = b.authority { return x.isNewer(than: y) }
            return false
        }
        allCertificates[subject] = all
        certificates[subject] = all[0]
        renewed[subject] = all.count > 1 ? all : nil
        fullyKept.remove(subject)
    }

    /// The certificates a peer needs to verify changes of `author`: the authority certificates of their
    /// issuers (first), then every known certificate of the author, newest first.
    public func certificateChain(of author: DeviceID) -> [Certificate] {
        guard let all = allCertificates[author] else { return [] }
        var out: [Certificate] = []
        for v in all { if let a = v.authority, !out.contains(a) { out.append(a) } }
        for v in all where !out.contains(v.certificate) { out.append(v.certificate) }
        return out
    }

    /// Adds an epoch key this device holds (from its keystore, or opened from a grant). Two different
    /// keys with the same scope and epoch (authorities that rotated concurrently) are both kept, in an
    /// order that does not depend on which arrived first.
    public func addKey(_ key: EpochKey) {
        if keys[key.scope]?.contains(where: { $0.isSameKey(as: key) }) == true { return }
        keys[key.scope, default: []].append(key)
        keys[key.scope]!.sort { $0.epoch != $1.epoch ? $0.epoch < $1.epoch : $0.orderingDigest.lexicographicallyPrecedes($1.orderingDigest) }
    }

    /// All epoch keys held.
    public var allKeys: [EpochKey] {
        if let k = sortedKeys { return k }
        let k = keys.keys.sorted().flatMap { keys[$0]! }
        sortedKeys = k
        return k
    }

    /// The key to seal a change in `scope` with: the newest epoch of the narrowest held scope containing
    /// it (the first of `writingKeys(for:)`).
    public func writingKey(for scope: Scope) -> EpochKey? { writingKeys(for: scope).first }

    /// The keys to seal a change in `scope` with: every held key of the newest epoch of the narrowest held
    /// scope containing it. Usually one; several when authorities issued that epoch concurrently with
    /// different keys (security-notes §11 case 28). A change then carries one slot per key, so each
    /// member reads it whichever grant it got, and no tie-break exists that a key grinder could win.
    /// At most 15 (a change has at most 16 slots, one kept for the archive).
    public func writingKeys(for scope: Scope) -> [EpochKey] {
        var s: Scope? = scope
        while let current = s {
            if let held = keys[current], let newest = held.last?.epoch {
                return Array(held.filter { $0.epoch == newest }.prefix(Change.maxSlots - 1))
            }
            s = current.parent
        }
        return []
    }

    // MARK: Writing

    /// Authors one change carrying `edits` in `scope`, seals it for the scope's reader group, commits it
    /// locally and returns it.
    /// - Parameters:
    ///   - edits: record edits; each must target `scope`, be authored by this device and pass the schema.
    ///   - priority: delivery priority (urgent incidents first).
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Throws: `WriteError` (no key for the scope, scope outside the certificate), `RecordError`
    ///   (schema), `ChangeError` (sealing).
    @discardableResult
    public func write(_ edits: [RecordEdit], scope: Scope, priority: Priority, now: UInt64) throws -> Change {
        guard Scope.all([scope], within: identity.certificate.scopes) else {
            throw WriteError("this device may not write in \(scope) (certificate scopes: \(identity.certificate.scopes.map(\.path)))")
        }
        for e in edits {
            guard e.scope == scope, e.author == identity.id else {
                throw WriteError("edit of \(e.record) must be in \(scope) and authored by \(identity.id)")
            }
            try schemas.validate(e)
        }
        let readers = writingKeys(for: scope)
        guard !readers.isEmpty else { throw WriteError("no epoch key for \(scope); this device needs a key grant") }
        let hlc = try clock.now(wall: now)
        return try append(contentType: .records, scope: scope, priority: priority, hlc: hlc, now: now) { seq, prev in
            try Change.seal(author: identity.signingKey, scope: scope, seq: seq, prevHash: prev, hlc: hlc,
                            priority: priority, payload: ChangeBody(edits: edits).canonicalBytes, readers: readers,
                            archive: archiveKey)
        }
    }

    /// One change's worth of edits for `write(groups:now:)`.
    public struct WriteGroup: Sendable {
        /// The scope every edit of the group is in.
        public var scope: Scope
        /// Delivery priority of the change.
        public var priority: Priority
        /// The edits.
        public var edits: [RecordEdit]

        /// Creates a group.
        public init(scope: Scope, priority: Priority, edits: [RecordEdit]) {
            self.scope = scope
            self.priority = priority
            self.edits = edits
        }
    }

    /// Authors one change per group, in order, and commits all of them in one atomic store commit:
    /// either every change is stored and merged, or none is (a bulk import).
    /// - Parameters:
    ///   - groups: the changes to author; each group's edits obey the rules of `write(_:scope:priority:now:)`.
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Returns: the changes, in group order.
    /// - Throws: `WriteError`, `RecordError`, `ChangeError` before anything is stored; store errors
    ///   (nothing stored).
    @discardableResult
    public func write(groups: [WriteGroup], now: UInt64) throws -> [Change] {
        var keysByGroup: [[EpochKey]] = []
        for g in groups {
            guard Scope.all([g.scope], within: identity.certificate.scopes) else {
                throw WriteError("this device may not write in \(g.scope) (certificate scopes: \(identity.certificate.scopes.map(\.path)))")
            }
            for e in g.edits {
                guard e.scope == g.scope, e.author == identity.id else {
                    throw WriteError("edit of \(e.record) must be in \(g.scope) and authored by \(identity.id)")
                }
                try schemas.validate(e)
            }
            let readers = writingKeys(for: g.scope)
            guard !readers.isEmpty else { throw WriteError("no epoch key for \(g.scope); this device needs a key grant") }
            keysByGroup.append(readers)
        }
        let saved = clock
        var heads: [LogID: (seq: UInt64, hash: [UInt8])] = [:]
        var changes: [Change] = []
        do {
            for (g, readers) in zip(groups, keysByGroup) {
                let log = LogID(author: identity.id, scope: g.scope)
                let head: (seq: UInt64, hash: [UInt8])
                if let h = heads[log] { head = h } else { head = try ownHead(log, now: now) }
                let hlc = try clock.now(wall: now)
                let change = try Change.seal(author: identity.signingKey, scope: g.scope, seq: head.seq + 1, prevHash: head.hash, hlc: hlc,
                                             priority: g.priority, payload: ChangeBody(edits: g.edits).canonicalBytes, readers: readers,
                                             archive: archiveKey)
                heads[log] = (head.seq + 1, change.id)
                changes.append(change)
            }
        } catch {
            clock = saved
            throw error
        }
        let report = try ingest(changes, now: now)
        guard report.outcomes.allSatisfy({ $0 == .accepted }), report.commit.inserted == changes.count else {
            throw WriteError("own changes not stored: \(report.outcomes), \(report.commit)")
        }
        try advanceGuard(changes)
        return changes
    }

    /// Advances the clock to at least `timestamp` (a record's last edit read back from the store, or
    /// this device's own last write after a restart), so the next local write orders after it. A
    /// timestamp further ahead of `now` than the clock's drift bound is not adopted.
    /// - Returns: whether the clock now reads at or above `timestamp`.
    @discardableResult
    public func observe(_ timestamp: HLCTimestamp, now: UInt64) -> Bool {
        (try? clock.receive(remote: timestamp, wall: now)) != nil
    }

    /// Advances the clock past this device's own latest change in the store, so a restarted process
    /// (each CLI command is one) never writes a timestamp below one it wrote before, even if the wall
    /// clock went backwards. (A wall clock more than the trust store's skew behind its own last write
    /// cannot write at all: verification refuses a change from that far in its future.)
    /// - Throws: store errors.
    public func restoreClock() throws {
        for (log, held) in try store.holdings() where log.author == identity.id {
            guard let last = held.ranges.last?.upperBound, let c = try store.change(log, seq: last), c.hlc > clock.last else { continue }
            // Our own writes are adopted whatever the drift: going below them would reorder our own edits.
            clock = HybridLogicalClock(maxDriftMilliseconds: clock.maxDriftMilliseconds, last: c.hlc)
        }
        // So are those the guard remembers beyond an older store copy.
        for head in try headGuard?.heads() ?? [:] where head.key.author == identity.id && head.value.hlc > clock.last {
            clock = HybridLogicalClock(maxDriftMilliseconds: clock.maxDriftMilliseconds, last: head.value.hlc)
        }
    }

    /// Authors a control change (key grant, revocation, receipt) with a clear payload.
    @discardableResult
    public func writeControl(_ contentType: ContentType, payload: [UInt8], scope: Scope, now: UInt64) throws -> Change {
        let hlc = try clock.now(wall: now)
        return try append(contentType: contentType, scope: scope, priority: .urgent, hlc: hlc, now: now) { seq, prev in
            try Change.control(author: identity.signingKey, scope: scope, seq: seq, prevHash: prev, hlc: hlc,
                               contentType: contentType, priority: .urgent, payload: payload)
        }
    }

    private func append(contentType: ContentType, scope: Scope, priority: Priority, hlc: HLCTimestamp, now: UInt64,
                        _ make: (UInt64, [UInt8]) throws -> Change) throws -> Change {
        let log = LogID(author: identity.id, scope: scope)
        let head = try ownHead(log, now: now)
        // One of this device's own changes found corrupt on disk is quarantined (out of the holdings) until
        // a peer returns it. Its seq stays used: if the seq guard does not vouch for a head at or beyond it,
        // writing would reuse that seq (a fork) or chain onto a hash this node cannot vouch for.
        if let top = try store.quarantined().filter({ $0.log == log && !$0.repaired }).map(\.seq).max(), top > head.seq {
            throw WriteError("this device's own change \(log.scope)#\(top) is quarantined (corrupt on disk, `fieldsync doctor` "
                             + "shows it); sync with a peer that holds it before writing in \(log.scope) again")
        }
        let change = try make(head.seq + 1, head.hash)
        let report = try ingest([change], now: now)
        guard report.outcomes == [.accepted], report.commit.inserted == 1 else {
            throw WriteError("own change not stored: \(report.outcomes), \(report.commit)")
        }
        try advanceGuard([change])
        return change
    }

    /// The head the next own change of `log` follows: the store's highest held change, or the guard's
    /// when the guard is ahead (the store is an older copy: the next change continues the chain after
    /// the guard's head, and the seqs in between come back from peers).
    /// - Throws: `WriteError` when the store and the guard disagree on a change at the same seq (this
    ///   device's log is already forked, or the store or guard belongs to another history).
    private func ownHead(_ log: LogID, now: UInt64) throws -> (seq: UInt64, hash: [UInt8]) {
        let seq = try store.holdings(of: log).ranges.last?.upperBound ?? 0
        let hash = seq == 0 ? Change.zeroHash : try store.hash(log, seq: seq) ?? Change.zeroHash
        guard let guardHead = try headGuard?.head(of: log) else { return (seq, hash) }
        if guardHead.seq > seq {
            observe(guardHead.hlc, now: now)  // never write a timestamp below one written before the restore
            return (guardHead.seq, guardHead.hash)
        }
        if let held = try store.hash(log, seq: guardHead.seq), held != guardHead.hash {
            throw WriteError("""
                this store's change \(log.scope)#\(guardHead.seq) is not the one this device wrote there (seq guard); \
                writing would fork this device's log. The store or the guard was replaced: see docs/node.md, "Restoring a device"
                """)
        }
        return (seq, hash)
    }

    /// Records the new heads in the guard. Runs after the store commit: if the process dies in
    /// between, the guard is one change behind a store that is ahead of it, which `ownHead` handles.
    private func advanceGuard(_ changes: [Change]) throws {
        guard let headGuard else { return }
        var heads: [LogID: OwnHead] = [:]
        for c in changes {
            let log = LogID(author: c.header.author, scope: c.header.scope)
            if (heads[log]?.seq ?? 0) < c.header.seq { heads[log] = OwnHead(seq: c.header.seq, hash: c.id, hlc: c.header.hlc) }
        }
        do { try headGuard.advance(heads) } catch {
            throw WriteError("the change is stored but the seq guard could not be updated (\(error)); fix the guard file before writing again")
        }
    }

    /// This device's own logs whose store head is below the guard's: the store lost changes this device
    /// wrote (it was restored from an older copy, attack cases 43 and 48). The next write continues after
    /// the guard's head; the lost changes come back from peers.
    /// - Returns: per such log, the store's head and the guard's.
    /// - Throws: store errors, the guard's errors.
    public func logsBehindGuard() throws -> [LogID: (store: UInt64, guard: UInt64)] {
        guard let headGuard else { return [:] }
        var out: [LogID: (store: UInt64, guard: UInt64)] = [:]
        for (log, head) in try headGuard.heads() where log.author == identity.id {
            let held = try store.holdings(of: log).ranges.last?.upperBound ?? 0
            if held < head.seq { out[log] = (held, head.seq) }
        }
        return out
    }

    /// Brings the guard up to the store's own heads where the store is ahead of it (a guard created after
    /// the store, or a process that died between a commit and the guard update). Call once after
    /// opening a store, with the restore calls; the write path does the same check per log.
    /// - Returns: how many log heads were raised.
    /// - Throws: store errors, the guard's errors.
    @discardableResult
    public func syncHeadGuard() throws -> Int {
        guard let headGuard else { return 0 }
        var heads: [LogID: OwnHead] = [:]
        for (log, held) in try store.holdings() where log.author == identity.id {
            guard let top = held.ranges.last?.upperBound, let c = try store.change(log, seq: top) else { continue }
            if (try headGuard.head(of: log)?.seq ?? 0) < top { heads[log] = OwnHead(seq: top, hash: c.hash, hlc: c.hlc) }
        }
        if !heads.isEmpty { try headGuard.advance(heads) }
        return heads.count
    }

    // MARK: Ingesting

    /// Verifies `changes` (public material only), opens what this node may read, validates the edits,
    /// and commits everything that verified in one atomic store commit. Changes that fail are reported,
    /// never stored; nothing else of the batch is affected by them.
    /// - Parameters:
    ///   - changes: changes from a peer (or this device).
    ///   - certificates: certificates the peer sent along (authors of the changes).
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Throws: only store errors (the batch is then not applied at all).
    public func ingest(_ changes: [Change], certificates incoming: [Certificate] = [], now: UInt64) throws -> IngestReport {
        if !incoming.isEmpty { learn(certificates: incoming, now: now) }
        let v = verifier()
        if let cache = verificationCache {
            return try ingest(prepared: changes.map { cache.prepare($0, verifier: v, now: now) }, now: now)
        }
        return try ingest(prepared: changes.map { v.prepare($0, now: now) }, now: now)
    }

    /// A snapshot of what verification and opening need (trust anchors, revocations, certificates,
    /// keys, schemas), safe to use from other threads.
    public func verifier() -> ChangeVerifier {
        var v = ChangeVerifier(trust: trust, certificates: certificates, keys: allKeys, schemas: schemas,
                               renewals: renewed)
        v.origin = (ObjectIdentifier(self), verifierGeneration)
        return v
    }

    /// Commits changes that `verifier` (a snapshot of this replicator, `verifier()`) prepared, maybe on
    /// another thread while this one committed earlier batches. If this replicator learned anything since
    /// the snapshot (a certificate, a key, a revocation, an authority), the changes are prepared again
    /// here with what it knows now, so that the outcome is always that of `ingest(_:now:)` at commit
    /// time: nothing verified against a stale trust store (a revocation learned in the meantime) is
    /// stored. A verifier that is not a snapshot of this replicator is never trusted.
    /// - Returns: the report, and whether the snapshot was stale (the changes were prepared again here).
    /// - Throws: only store errors (the batch is then not applied at all).
    public func ingest(prepared: [PreparedChange], by verifier: ChangeVerifier, now: UInt64) throws -> (report: IngestReport, reprepared: Bool) {
        if let origin = verifier.origin, origin.replicator == ObjectIdentifier(self), origin.generation == verifierGeneration {
            return (try ingest(prepared: prepared, now: now), false)
        }
        let current = self.verifier()
        return (try ingest(prepared: prepared.map { current.prepare($0.change, now: now) }, now: now), true)
    }

    /// Ingests changes prepared by a `ChangeVerifier` (in order), committing them in one atomic step.
    /// - Throws: only store errors (the batch is then not applied at all).
    public func ingest(prepared: [PreparedChange], now: UInt64) throws -> IngestReport {
        var report = IngestReport()
        var batch = CommitBatch()
        var keptAuthors: Set<DeviceID> = []
        var newKeys: [EpochKey] = []
        for p in prepared {
            let change = p.change
            let h = change.header
            report.outcomes.append(p.outcome)
            guard p.outcome == .accepted, let cert = certificates[h.author]?.certificate else { continue }
            let hash = p.hash
            let stored = StoredChange(log: LogID(author: h.author, scope: h.scope), seq: h.seq, hash: hash,
                                      prevHash: h.prevHash, hlc: h.hlc, contentType: h.contentType.rawValue,
                                      priority: h.priority.rawValue, bytes: change.encodedBytes)
            batch.changes.append(stored)
            if !fullyKept.contains(h.author) {
                for c in certificateChain(of: h.author) where !keptCertificates.contains(c) && !batch.certificates.contains(c) {
                    batch.certificates.append(c)
                }
                keptAuthors.insert(h.author)
            }
            _ = try? clock.receive(remote: h.hlc, wall: now)  // a far-ahead clock is reported by verify, not adopted
            switch h.contentType {
            case .records:
                if let payload = p.payload, let edits = ChangeVerifier.edits(of: change, payload: payload, schemas: schemas) {
                    batch.edits += edits.map { ($0, hash) }
                    batch.opened.append(hash)
                    report.editsMerged += edits.count
                } else {
                    report.heldSealed += 1
                }
            case .keyGrant:
                if let grant = try? KeyGrant(canonicalBytes: change.payload), (try? grant.verify(trust: trust)) != nil,
                   let key = try? grant.open(as: identity.id, agreementKey: identity.agreementKey) {
                    newKeys.append(key)
                }
                batch.opened.append(hash)
            case .revocation:
                // Verified with the change (`verifyControlPayload`); every new one joins the set.
                if let r = try? Revocation(canonicalBytes: change.payload), (try? trust.addRevocation(r)) == true {
                    report.revocationsLearned += 1
                }
                batch.opened.append(hash)
            case .receipt:
                if cert.role == .hq, let receipt = try? Receipt(canonicalBytes: change.payload) {
                    for (log, seq) in receipt.heads { batch.receipts[log] = max(batch.receipts[log] ?? 0, seq) }
                }
                batch.opened.append(hash)
            default:
                report.heldSealed += 1  // unknown types are carried, not interpreted
            }
        }
        // Authority certificates learned (from chains, batches or control changes) are kept too, so that
        // a restarted node still verifies county-signed grants and revocations and forwards them.
        let authorityCount = trust.authorityCertificates.values.reduce(0) { $0 + $1.count }
        if authorityCount > keptAuthorityCount {
            for a in trust.authorityCertificates.values.joined() where !keptCertificates.contains(a) && !batch.certificates.contains(a) {
                batch.certificates.append(a)
            }
        }
        report.commit = try store.commit(batch)
        forksRecorded += report.commit.forksRecorded
        keptAuthorityCount = authorityCount
        keptCertificates.formUnion(batch.certificates)
        fullyKept.formUnion(keptAuthors)
        for k in newKeys where !(keys[k.scope]?.contains { $0.isSameKey(as: k) } ?? false) {
            addKey(k)
            report.keysLearned += 1
        }
        if report.keysLearned > 0 { report.editsMerged += try openHeldChanges(now: now) }
        return report
    }

    /// Re-learns, from the store, the certificates of the authors of held changes (kept by `ingest`),
    /// so that a restarted node still verifies what it holds and forwards each change with its author's
    /// certificate: a relay box that reboots must not strand what it carries. Each certificate is
    /// verified again against the trust anchors. Call once after opening a store that holds changes,
    /// with `restoreControlState(now:)`.
    /// - Returns: how many certificates were restored.
    /// - Throws: store errors.
    @discardableResult
    public func restoreCertificates(now: UInt64) throws -> Int {
        let kept = try store.certificates()
        keptCertificates.formUnion(kept)
        return learn(certificates: kept, now: now)
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
        for stored in try store.history(of: id) where stored.contentType == ContentType.records.rawValue {
            guard let change = try? Change(canonicalBytes: stored.bytes), let edits = v.openEdits(change) else { return nil }
            for e in edits where e.record == id { try record.apply(e) }
        }
        return record
    }

    /// Opens held changes that a newly learned key can read, and merges them.
    /// - Returns: edits merged.
    public func openHeldChanges(now: UInt64) throws -> Int {
        var batch = CommitBatch()
        var merged = 0
        let v = verifier()
        for stored in try store.unopened(in: nil) where stored.contentType == ContentType.records.rawValue {
            guard let change = try? Change(canonicalBytes: stored.bytes), let edits = v.openEdits(change) else { continue }
            batch.edits += edits.map { ($0, stored.hash) }
            batch.opened.append(stored.hash)
            merged += edits.count
        }
        if !batch.opened.isEmpty { _ = try store.commit(batch) }
        return merged
    }

    // MARK: Forks

    /// Verifies a fork proof a peer sent (both changes against the author's certificate; revocation is
    /// not applied, a fork stays provable) and records it. The evidence names the change this store
    /// holds, if it holds one of the two, as kept.
    /// - Parameters:
    ///   - proof: the proof.
    ///   - certificates: certificates the peer sent along (the author's).
    ///   - now: the wall clock, ms since the Unix epoch.
    /// - Returns: `.accepted` if it verified (recorded, or already known or over the per-log bound: see
    ///   `forksRecorded`), `.unknownAuthor`, or `.rejected`.
    /// - Throws: only store errors.
    public func ingest(forkProof proof: ForkProof, certificates incoming: [Certificate] = [], now: UInt64) throws -> IngestOutcome {
        if !incoming.isEmpty { learn(certificates: incoming, now: now) }
        guard let newest = certificates[proof.author]?.certificate else { return .unknownAuthor }
        // A renewed author: the proof verifies if both changes verify under one of its certificates.
        var candidates = [newest]
        for v in allCertificates[proof.author] ?? [] where !candidates.contains(v.certificate) { candidates.append(v.certificate) }
        var firstError: ChangeError?
        for cert in candidates {
            do {
                try proof.verify(authorCertificate: cert, trust: trust, now: now)
                firstError = nil
                break
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { return .rejected(firstError.code, firstError.description) }
        let a = StoredChange(proof.first), b = StoredChange(proof.second)
        let heldB = try store.hash(b.log, seq: b.seq) == b.hash
        let evidence = heldB ? ForkEvidence(kept: b, conflicting: a) : ForkEvidence(kept: a, conflicting: b)
        var batch = CommitBatch(forks: [evidence])
        batch.certificates = certificateChain(of: proof.author).filter { !keptCertificates.contains($0) }
        let report = try store.commit(batch)
        keptCertificates.formUnion(batch.certificates)
        forksRecorded += report.forksRecorded
        return .accepted
    }

    // MARK: Audit

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

    // MARK: Receipts

    /// HQ only: receipts for the logs held beyond what HQ has receipted so far (its own receipts and
    /// those of other HQ devices, as this store knows them), at most `maxLogsPerReceipt` logs per
    /// receipt so that each fits a session batch (at about 57 bytes per log, a receipt of every log
    /// outgrows the 60,000-byte batch and the transport's 65,519-byte message at about a thousand logs).
    /// Receipts only raise what they state, so partial receipts are enough.
    /// - Returns: the receipts written, in order (empty when nothing is behind).
    /// - Throws: store errors.
    @discardableResult
    public func writeIncrementalReceipts(scope: Scope, now: UInt64, maxLogsPerReceipt: Int = 500) throws -> [Change] {
        precondition(maxLogsPerReceipt > 0)
        var behind: [(LogID, UInt64)] = []
        for (log, held) in try store.holdings().sorted(by: { $0.key < $1.key }) where log.author != identity.id || log.scope != scope {
            if held.frontier > (try store.receipted(log)) { behind.append((log, held.frontier)) }
        }
        return try stride(from: 0, to: behind.count, by: maxLogsPerReceipt).map { start in
            let heads = Array(behind[start..<min(start + maxLogsPerReceipt, behind.count)])
            return try writeControl(.receipt, payload: Receipt(heads: heads).canonicalBytes, scope: scope, now: now)
        }
    }

    /// HQ only: a receipt for every log held, signed as a control change in the root scope.
    @discardableResult
    public func writeReceipt(scope: Scope, now: UInt64) throws -> Change {
        let heads = try store.holdings().filter { $0.key.author != identity.id || $0.key.scope != scope }
            .map { ($0.key, $0.value.frontier) }.filter { $0.1 > 0 }.sorted { $0.0 < $1.0 }
        return try writeControl(.receipt, payload: Receipt(heads: heads).canonicalBytes, scope: scope, now: now)
    }
}

/// HQ's statement "I hold these logs up to these seqs", carried in a receipt control change. Relays
/// may drop receipted changes under quota; officers see "reached HQ". Wire format (normative, with
/// vectors in `Protocols/vectors/change.json`): Protocols/change.md §2.1 — `varint count`, then per log
/// `LogID ‖ varint seq`, logs strictly increasing.
public struct Receipt: Sendable, Equatable, CanonicalCodable {
    /// Per log, the frontier HQ holds.
    public var heads: [(LogID, UInt64)]

    /// Creates a receipt.
    public init(heads: [(LogID, UInt64)]) { self.heads = heads }

    public static func == (a: Receipt, b: Receipt) -> Bool { a.canonicalBytes == b.canonicalBytes }

    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(heads.count))
        for (log, seq) in heads {
            log.encode(to: &writer)
            writer.writeVarint(seq)
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 19)
        var out: [(LogID, UInt64)] = []
        var last: LogID?
        for _ in 0..<n {
            let at = reader.offset
            let log = try LogID(from: &reader)
            if let last, !(last < log) { throw DecodingError(.nonCanonicalOrder, at: at, "receipt logs") }
            last = log
            out.append((log, try reader.readVarint()))
        }
        heads = out
    }
}
