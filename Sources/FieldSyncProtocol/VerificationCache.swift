import FieldSyncCore
import FieldSyncCrypto

/// Shares the node-independent work of verifying changes among many replicators in one process: a
/// simulator runs thousands of nodes that each receive the same change, and without this each of
/// them repeats the same Ed25519 verification and payload decryption. Real nodes never use it (a
/// `Replicator`'s `verificationCache` is nil unless a driver sets it).
///
/// What is cached, keyed by the change id (the BLAKE2b hash of the complete encoding, signature
/// included, confirmed by comparing the bytes on a hit):
/// - that the change passed the checks that depend only on the change and its author's certificate
///   (signature, certificate validity at the change's HLC, scope, role), for that exact certificate;
/// - the decoded change itself, so every replicator stores the same buffers (one copy of each change
///   body per process, not one per replica);
/// - its opened payload, with the key slot it was opened through.
///
/// What is still checked per replicator, as `ChangeVerifier.verify` does: that it knows the author's
/// certificate (the same one), that the change's HLC is not ahead of its own clock beyond the
/// tolerance, revocation of the author and issuer, and the payload of a grant or revocation change.
/// A payload is reused only for a replicator holding a key for the same slot; the cache assumes one
/// key per (scope, epoch) in the process, as in the simulator. Certificates checked with
/// `TrustStore.certified` are cached by their bytes for trust stores of the same root.
///
/// The cache holds at most `limit` changes, forgetting the oldest entry first: a change reaches most of
/// its replicas within days of being written, and an unbounded table kept every opened payload of a
/// simulated year (about 0.5 KB a change). A change met again after it was forgotten is verified and
/// opened again, with the same outcome: only the counters below and the CPU time differ.
public final class VerificationCache {
    /// A class, so that the table holds a reference a change (an inline value of about 200 bytes, in a
    /// table that grows by doubling, cost about twice that per cached change).
    final class Entry {
        let change: Change
        let hash: [UInt8]
        let certificateSignature: [UInt8]
        var payload: [UInt8]?
        var payloadSlot: KeySlot.Recipient?

        init(change: Change, hash: [UInt8], certificateSignature: [UInt8], payload: [UInt8]?, payloadSlot: KeySlot.Recipient?) {
            self.change = change
            self.hash = hash
            self.certificateSignature = certificateSignature
            self.payload = payload
            self.payloadSlot = payloadSlot
        }
    }

    private var entries: [ChangeHashKey: Entry] = [:]
    /// The keys of `entries` in the order they were added (a ring: `oldest` is the next to forget).
    private var order: [ChangeHashKey] = []
    private var oldest = 0
    /// The most changes held (at least 1).
    public let limit: Int
    private var certified: [[UInt8]: VerifiedCertificate] = [:]  // certificate signature -> checked
    private var certifiedRoot: Ed25519.PublicKey?

    /// Lookups answered from the cache, and changes verified for real (then cached if accepted).
    public private(set) var hits = 0, misses = 0
    /// Entries forgotten to stay within `limit`.
    public private(set) var forgotten = 0
    /// Payloads opened for real, and reused.
    public private(set) var payloadsOpened = 0, payloadsReused = 0

    /// An empty cache holding at most `limit` changes (the default, 65,536, is about 17 days of
    /// `longnan`'s writes).
    public init(limit: Int = 65_536) { self.limit = max(1, limit) }

    /// Changes cached.
    public var count: Int { entries.count }

    /// `verifier.prepare(change, now:)`, with the node-independent part done once per process.
    func prepare(_ change: Change, verifier v: ChangeVerifier, now: UInt64) -> PreparedChange {
        let id = change.id
        let key = ChangeHashKey(id)
        let h = change.header
        // An author with several certificates (a renewal) is checked against the one valid at the change's
        // time: not cached.
        if v.renewals[h.author] != nil { return v.prepare(change, now: now) }
        guard let e = entries[key], e.change.encodedBytes == change.encodedBytes else {
            misses += 1
            let p = v.prepare(change, now: now)
            if p.outcome == .accepted, let cert = v.certificates[h.author] {
                let slot = p.payload == nil ? nil : Self.slot(of: change, keys: v.keys)
                remember(key, Entry(change: change, hash: p.hash, certificateSignature: cert.certificate.signature,
                                    payload: p.payload, payloadSlot: slot))
                if p.payload != nil { payloadsOpened += 1 }
            }
            return p
        }
        hits += 1
        let shared = e.change
        guard let cert = v.certificates[h.author] else {
            return PreparedChange(change: shared, outcome: .unknownAuthor, hash: [], payload: nil)
        }
        guard cert.certificate.signature == e.certificateSignature else {
            // Another certificate for the same author: verify for real, do not cache.
            return v.prepare(shared, now: now)
        }
        // The per-node checks of `Change.verify`, in its order (the cached ones come before them).
        guard h.hlc.milliseconds <= now &+ v.trust.clockSkewMilliseconds else {
            return PreparedChange(change: shared, outcome: .rejected(.timestampInFuture, "HLC \(h.hlc) is ahead of now \(now)"),
                                  hash: [], payload: nil)
        }
        if let r = v.trust.revocation(of: cert.certificate), h.hlc > r.revokedAt {
            return PreparedChange(change: shared, outcome: .rejected(.revoked, "\(r.device) revoked at \(r.revokedAt) by \(r.issuer); change HLC \(h.hlc)"),
                                  hash: [], payload: nil)
        }
        do { try shared.verifyControlPayload(trust: v.trust) } catch {
            return PreparedChange(change: shared, outcome: ChangeVerifier.outcome(of: error, shared), hash: [], payload: nil)
        }
        guard h.contentType == .records, !v.keys.isEmpty else {
            return PreparedChange(change: shared, outcome: .accepted, hash: e.hash, payload: nil)
        }
        let slot = Self.slot(of: shared, keys: v.keys)
        if let slot, slot == e.payloadSlot, let payload = e.payload {
            payloadsReused += 1
            return PreparedChange(change: shared, outcome: .accepted, hash: e.hash, payload: payload)
        }
        let payload = try? shared.open(with: v.keys)
        if let payload {
            payloadsOpened += 1
            if e.payload == nil {
                e.payload = payload
                e.payloadSlot = slot
            }
        }
        return PreparedChange(change: shared, outcome: .accepted, hash: e.hash, payload: payload)
    }

    /// Adds an entry for a key not held (a miss), forgetting the oldest one when the cache is full. A key
    /// held with other bytes (a hash collision, or a forgery under a known id) replaces that entry in place.
    private func remember(_ key: ChangeHashKey, _ entry: Entry) {
        if entries.updateValue(entry, forKey: key) != nil { return }
        if order.count < limit {
            order.append(key)
            return
        }
        entries[order[oldest]] = nil
        forgotten += 1
        order[oldest] = key
        oldest = (oldest + 1) % limit
    }

    /// The first epoch slot of `change` that one of `keys` matches (the slot `Change.open` uses).
    private static func slot(of change: Change, keys: [EpochKey]) -> KeySlot.Recipient? {
        for s in change.slots {
            if case let .epoch(scope, epoch) = s.recipient, keys.contains(where: { $0.scope == scope && $0.epoch == epoch }) {
                return s.recipient
            }
        }
        return nil
    }

    /// `trust.certified(c)`, checked once per certificate for trust stores pinning the same root.
    func certified(_ c: Certificate, trust: TrustStore) throws(IdentityError) -> VerifiedCertificate {
        if certifiedRoot == nil { certifiedRoot = trust.root }
        guard certifiedRoot == trust.root, trust.authorities.isEmpty else { return try trust.certified(c) }
        if let v = certified[c.signature], v.certificate == c { return v }
        let v = try trust.certified(c)
        certified[c.signature] = v
        return v
    }
}
