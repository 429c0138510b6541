import FieldSyncCore
import FieldSyncCrypto

/// The newest epoch key held of one scope and when its grant was signed (`Replicator.newestEpochKeys`).
public struct EpochKeyAge: Sendable, Equatable {
    /// The scope.
    public var scope: Scope
    /// The newest epoch held.
    public var epoch: UInt32
    /// When its grant was signed (ms since the Unix epoch); nil if the key did not come from a grant.
    public var issuedAt: UInt64?

    /// Creates a value.
    public init(scope: Scope, epoch: UInt32, issuedAt: UInt64?) {
        self.scope = scope
        self.epoch = epoch
        self.issuedAt = issuedAt
    }

    /// Its age at `now` in whole days (nil if unknown).
    public func ageDays(now: UInt64) -> UInt64? { issuedAt.map { now > $0 ? (now - $0) / 86_400_000 : 0 } }
}

/// What `Replicator.quarantineRevokedChanges` did (attack case 35).
public struct RevokedQuarantineReport: Sendable, Equatable {
    /// Held changes newly quarantined.
    public var changes = 0
    /// Records folded again without them.
    public var recordsRebuilt = 0
    /// Records removed: only quarantined changes had touched them.
    public var recordsRemoved = 0
    /// Records left as they were because their remaining history could not be opened in full (evicted
    /// changes, or changes sealed to a key this node lacks).
    public var recordsNotRebuilt: [RecordID] = []

    /// Nothing done.
    public init() {}
}

/// The pure heart of a node: it authors changes, verifies and ingests changes from peers into its
/// store, keeps the certificates, epoch keys and revocations it has learned, and answers what it can
/// send. No I/O, no clock: `now` (ms since the Unix epoch) is passed in. The node daemon, the simulator
/// and the tests drive the same code.
///
/// This file holds its state, certificates and keys; writing is in `Replicator+Write.swift`, ingesting
/// (and the one place control changes take effect, `applyControl`) in `Replicator+Ingest.swift`, the
/// audit trail in `Replicator+Audit.swift`.
public final class Replicator {
    /// This device.
    public let identity: DeviceIdentity
    /// Trust anchors and the revocations learned so far.
    public internal(set) var trust: TrustStore {
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
    /// Where sealing draws its data keys and nonces: nil (the default, what nodes use) draws from
    /// libsodium; a simulator sets a seeded generator so that same-seed runs seal the same bytes.
    /// Seeded randomness is not secret: never set one on a node.
    public var sealingRandomness: (any RandomNumberGenerator)?
    /// The hybrid logical clock.
    public internal(set) var clock: HybridLogicalClock
    /// Certificates the store already keeps (so each is written once).
    var keptCertificates: Set<Certificate> = []
    /// How many authority certificates the store keeps (compared with the trust store's per ingest).
    var keptAuthorityCount = 0
    /// Authors whose every known certificate (and issuing authority's) the store keeps.
    var fullyKept: Set<DeviceID> = []
    /// `allCertificates` of the devices with more than one (what `ChangeVerifier.renewals` needs).
    var renewed: [DeviceID: [VerifiedCertificate]] = [:] {
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
    /// What the last `restoreControlState(now:)` quarantined (changes by revoked devices after their cut-off).
    public internal(set) var lastRestoreQuarantine = RevokedQuarantineReport()
    /// Fork evidence this replicator's commits recorded since it was created (from changes or proofs):
    /// a session compares it to know when to send newly learned proofs on a live session.
    public internal(set) var forksRecorded = 0
    /// Called after every store commit that merged edits, rebuilt records or learned receipts or
    /// revocations (local writes and changes ingested from peers alike), on the thread that owns the
    /// replicator, before the call that committed returns. The app library (`FieldSync`) builds its
    /// observers on it; nil (the default) costs nothing.
    public var commitObserver: ((CommitNotice) -> Void)?
    /// What sessions reconcile, kept per kind of peer between sessions (`ReconciliationViews`).
    let reconciliationViews = ReconciliationViews()

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
    /// - Returns: whether the key was new (false: this device already held it).
    @discardableResult
    public func addKey(_ key: EpochKey) -> Bool {
        if keys[key.scope]?.contains(where: { $0.isSameKey(as: key) }) == true { return false }
        keys[key.scope, default: []].append(key)
        keys[key.scope]!.sort { $0.epoch != $1.epoch ? $0.epoch < $1.epoch : $0.orderingDigest.lexicographicallyPrecedes($1.orderingDigest) }
        return true
    }

    /// All epoch keys held.
    public var allKeys: [EpochKey] {
        if let k = sortedKeys { return k }
        let k = keys.keys.sorted().flatMap { keys[$0]! }
        sortedKeys = k
        return k
    }

    /// When the grant of each held key was signed (`KeyGrant.issuedAt`, ms since the Unix epoch), by
    /// scope and epoch: the earliest grant of that key this node holds. Keys from the keystore or a key
    /// file, never granted through a control change, have no entry (their age is unknown).
    public private(set) var keyIssuedAt: [Scope: [UInt32: UInt64]] = [:]

    /// Notes the signing time of a grant of `key` (the earliest grant of a key is its issue time).
    func noteIssued(_ key: EpochKey, at issuedAt: UInt64) {
        keyIssuedAt[key.scope, default: [:]][key.epoch] = min(keyIssuedAt[key.scope]?[key.epoch] ?? issuedAt, issuedAt)
    }

    /// The newest epoch key held of every scope, with the time its grant was signed (nil if unknown: a
    /// key from the keystore or a key file), in scope order.
    public func newestEpochKeys() -> [EpochKeyAge] {
        keys.keys.sorted().compactMap { scope in
            guard let newest = keys[scope]?.last?.epoch else { return nil }
            return EpochKeyAge(scope: scope, epoch: newest, issuedAt: keyIssuedAt[scope]?[newest])
        }
    }

    /// The scopes whose newest held epoch key was granted more than `threshold` ms before `now` (attack
    /// case 27, freeze): a node cut off from rotations keeps sealing under a key that devices removed
    /// since may hold. Keys of unknown age are not judged. Pure: `now` is passed in.
    public func staleEpochKeys(now: UInt64, threshold: UInt64) -> [EpochKeyAge] {
        newestEpochKeys().filter { k in k.issuedAt.map { now > $0 && now - $0 > threshold } ?? false }
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
}
