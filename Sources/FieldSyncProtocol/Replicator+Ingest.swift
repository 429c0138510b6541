import FieldSyncCore
import FieldSyncCrypto

extension Replicator {
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
        var staging = Staging()
        var staged = stage(prepared, now: now, &staging)
        staged.report.commit = try store.commit(staged.batch)
        return try finish([staged], staging, now: now)[0]
    }

    /// Whether a batch prepared by `verifier` may be committed together with others
    /// (`ingest(preparedTogether:now:)`): `verifier` is a snapshot of this replicator as it is now, every
    /// change verified, and none is a control change. Committing such a batch changes nothing a snapshot
    /// holds (it teaches no key, revocation or certificate), so the batches after it are judged exactly as
    /// if it had been committed on its own first.
    public func canCommitTogether(_ prepared: [PreparedChange], by verifier: ChangeVerifier) -> Bool {
        guard let origin = verifier.origin, origin.replicator == ObjectIdentifier(self), origin.generation == verifierGeneration else {
            return false
        }
        return prepared.allSatisfy { $0.outcome == .accepted && $0.change.header.contentType == .records }
    }

    /// Commits several batches, each prepared by a snapshot of this replicator, in one store transaction
    /// (`SyncStore.commit(_: [CommitBatch])`): what a node does with verified batches that are ready
    /// together, so that it pays for one transaction instead of one per batch. Each batch's report is the
    /// one `ingest(prepared:by:now:)` would give committing them one after the other. Nothing is learned
    /// here before the store committed (a failed commit leaves the replicator as it was, but for its
    /// hybrid clock having seen the changes' timestamps, as a failed `ingest` does).
    /// - Precondition: `canCommitTogether` holds for every batch.
    /// - Throws: only store errors (none of the batches is applied then, in a store with transactions).
    public func ingest(preparedTogether batches: [(prepared: [PreparedChange], verifier: ChangeVerifier)], now: UInt64) throws -> [IngestReport] {
        var staging = Staging()
        var staged: [Staged] = []
        staged.reserveCapacity(batches.count)
        for b in batches {
            precondition(canCommitTogether(b.prepared, by: b.verifier), "ingest(preparedTogether:) with a batch that canCommitTogether refuses")
            staged.append(stage(b.prepared, now: now, &staging))
        }
        let reports = try store.commit(staged.map(\.batch))
        for i in staged.indices { staged[i].report.commit = reports[i] }
        return try finish(staged, staging, now: now)
    }

    /// One batch made ready for the store, and what to learn once it is committed.
    private struct Staged {
        var batch = CommitBatch()
        var report = IngestReport()
        var newKeys: [EpochKey] = []
    }

    /// What the batches staged for one store commit add to what the store keeps, learned once it is
    /// committed (so that a commit that fails changes nothing here).
    private struct Staging {
        var certificates: Set<Certificate> = []
        var authors: Set<DeviceID> = []
        var authorityCount: Int?
    }

    /// Builds the store batch of `prepared`: changes, edits of what opened, the certificates the store
    /// does not keep yet (none twice in one commit), control changes applied.
    private func stage(_ prepared: [PreparedChange], now: UInt64, _ staging: inout Staging) -> Staged {
        var out = Staged()
        out.batch.now = now  // the arrival time of every change this commit newly stores
        for p in prepared {
            let change = p.change
            let h = change.header
            out.report.outcomes.append(p.outcome)
            guard p.outcome == .accepted, let cert = certificates[h.author]?.certificate else { continue }
            let hash = p.hash
            let stored = StoredChange(log: LogID(author: h.author, scope: h.scope), seq: h.seq, hash: hash,
                                      prevHash: h.prevHash, hlc: h.hlc, contentType: h.contentType,
                                      priority: h.priority, bytes: change.encodedBytes)
            out.batch.changes.append(stored)
            if !fullyKept.contains(h.author) && !staging.authors.contains(h.author) {
                for c in certificateChain(of: h.author) where !keptCertificates.contains(c) && !staging.certificates.contains(c) {
                    out.batch.certificates.append(c)
                    staging.certificates.insert(c)
                }
                staging.authors.insert(h.author)
            }
            _ = try? clock.receive(remote: h.hlc, wall: now)  // a far-ahead clock is reported by verify, not adopted
            if h.contentType == .records {
                if let edits = p.editsToMerge(schemas: schemas) {
                    out.batch.edits += edits.map { ($0, hash) }
                    out.batch.opened.append(hash)
                    out.report.editsMerged += edits.count
                } else {
                    out.report.heldSealed += 1
                }
                continue
            }
            switch applyControl(change, author: cert) {
            case .key(let key, let issuedAt):
                out.newKeys.append(key)  // learned once the batch is committed
                noteIssued(key, at: issuedAt)
                out.batch.trustLearned.append(hash)  // read again at every start: kept whatever the quota
            case .revocation(let new):
                if new { out.report.revocationsLearned += 1 }
                out.batch.trustLearned.append(hash)  // in force in memory now: the store must keep it (quota)
            case .grantForOthers:
                // An authority's grant for other devices (a relay box carrying a rotation): kept over the quota
                // as a revocation is, or the members behind a full box keep writing under the old epoch,
                // which after a revocation the revoked device holds.
                out.batch.trustLearned.append(hash)
            case .receipt(let heads):
                for (log, seq) in heads { out.batch.receipts[log] = max(out.batch.receipts[log] ?? 0, seq) }
            case .none:
                break
            case .notControl:
                out.report.heldSealed += 1  // unknown types are carried, not interpreted
                continue
            }
            out.batch.opened.append(hash)
        }
        // Authority certificates learned (from chains, batches or control changes) are kept too, so that
        // a restarted node still verifies county-signed grants and revocations and forwards them.
        let authorityCount = trust.authorityCertificates.values.reduce(0) { $0 + $1.count }
        if authorityCount > keptAuthorityCount {
            for a in trust.authorityCertificates.values.joined() where !keptCertificates.contains(a) && !staging.certificates.contains(a) {
                out.batch.certificates.append(a)
                staging.certificates.insert(a)
            }
        }
        staging.authorityCount = authorityCount
        return out
    }

    /// After the store committed the staged batches: what they taught this replicator (certificates
    /// kept, forks, keys, revocations), batch by batch, and the commit observer told; returns their reports.
    private func finish(_ staged: [Staged], _ staging: Staging, now: UInt64) throws -> [IngestReport] {
        if let count = staging.authorityCount { keptAuthorityCount = count }
        keptCertificates.formUnion(staging.certificates)
        fullyKept.formUnion(staging.authors)
        var reports: [IngestReport] = []
        reports.reserveCapacity(staged.count)
        for s in staged {
            var report = s.report
            forksRecorded += report.commit.forksRecorded
            for k in s.newKeys where addKey(k) { report.keysLearned += 1 }
            if report.keysLearned > 0 { report.editsMerged += try openHeldChanges(now: now) }
            // A revocation learned here may date changes this node stored earlier after their author's cut-off.
            if report.revocationsLearned > 0 { report.quarantinedRevoked = try quarantineRevokedChanges(now: now) }
            notifyCommit(s.batch, revocationsLearned: report.revocationsLearned)
            reports.append(report)
        }
        return reports
    }

    /// Tells `commitObserver` what a commit changed (nothing when no one observes or nothing changed).
    func notifyCommit(_ batch: CommitBatch, revocationsLearned: Int = 0) {
        guard let observer = commitObserver else { return }
        var notice = CommitNotice()
        var seen = Set<RecordID>()
        for (edit, _) in batch.edits.reversed() where seen.insert(edit.record).inserted {
            notice.records.append((edit.record, edit.author))
        }
        notice.records.reverse()
        for id in batch.rebuilt.keys.sorted() where seen.insert(id).inserted { notice.records.append((id, nil)) }
        notice.receipts = batch.receipts
        notice.revocationsLearned = revocationsLearned
        guard !notice.isEmpty else { return }
        observer(notice)
    }

    /// Quarantines every held change that the revocations known now date after its author's cut-off
    /// (attack case 35): changes stored before the revocation arrived (a back-dated cut-off, or a
    /// revocation that travelled slower than the thief's changes). A change is quarantined exactly when
    /// ingesting it now would refuse it as `revoked` (it is judged at its own HLC, so the wall clock
    /// plays no part): it leaves the held changes and its log's intervals (not served, not offered), its
    /// bytes are kept in the store's quarantine for audit (`SyncStore.quarantined()`, cause `.revoked`),
    /// and every record it touched is folded again from its remaining signed history, all in one
    /// commit. A node that learned the revocation first never stored those changes; both end with the
    /// same records and holdings. Changes before the cut-off stay merged (the audit trail flags them,
    /// `AuditEntry.authorRevocation`). Idempotent; cheap when nothing is revoked.
    ///
    /// A record whose remaining history this node cannot open in full (a change evicted under a relay
    /// quota, or sealed to a key it lacks) cannot be folded again: it is left as it is and counted in
    /// `recordsNotRebuilt`.
    /// - Parameter now: the wall clock (ms since the Unix epoch), recorded as when the change was found.
    /// - Returns: what was quarantined and rebuilt.
    /// - Throws: store errors (nothing is applied then).
    @discardableResult
    public func quarantineRevokedChanges(now: UInt64) throws -> RevokedQuarantineReport {
        var out = RevokedQuarantineReport()
        guard trust.revocations.count > 0 else { return out }
        // The earliest cut-off in force against any certificate of each known device (its own revocations
        // and its issuer's): changes after it are the candidates, judged one by one below.
        var earliest: [DeviceID: HLCTimestamp] = [:]
        for (device, all) in allCertificates {
            for v in all {
                guard let r = trust.revocation(of: v.certificate) else { continue }
                earliest[device] = min(earliest[device] ?? r.revokedAt, r.revokedAt)
            }
        }
        guard !earliest.isEmpty else { return out }
        let v = verifier()
        var batch = CommitBatch()
        var quarantined = Set<[UInt8]>()
        var touched: [RecordID: (kind: RecordKind, scope: Scope)] = [:]
        for (device, cutoff) in earliest.sorted(by: { $0.key < $1.key }) {
            for stored in try store.changes(by: device, after: cutoff) {
                guard let change = try? Change(canonicalBytes: stored.bytes),
                      case .rejected(.revoked, let why) = v.verify(change, now: change.header.hlc.milliseconds) else { continue }
                batch.revoked.append(RevokedQuarantine(change: stored, reason: why, detectedAt: Int64(clamping: now)))
                quarantined.insert(stored.hash)
                if stored.contentType == .records, let edits = v.openEdits(change) {
                    for e in edits { touched[e.record] = (e.kind, e.scope) }
                }
            }
        }
        guard !batch.revoked.isEmpty else { return out }
        // Records are folded again from their signed history (not read: a row damaged on disk is rebuilt too).
        for (id, what) in touched.sorted(by: { $0.key < $1.key }) {
            var record = Record(id: id, kind: what.kind, scope: what.scope)
            var any = false, complete = true
            for stored in try store.history(of: id) where stored.contentType == .records && !quarantined.contains(stored.hash) {
                guard let change = try? Change(canonicalBytes: stored.bytes), let edits = v.openEdits(change) else {
                    complete = false
                    break
                }
                for e in edits where e.record == id { try record.apply(e) }
                any = true
            }
            guard complete else {
                out.recordsNotRebuilt.append(id)
                continue
            }
            batch.rebuilt.updateValue(any ? record : nil, forKey: id)  // nil: removed (a subscript set of nil would drop the entry)
            if any { out.recordsRebuilt += 1 } else { out.recordsRemoved += 1 }
        }
        out.changes = try store.commit(batch).quarantinedRevoked
        notifyCommit(batch)
        return out
    }

    /// What a node re-reads from its store when it starts, in one place for every way a node starts
    /// (`FieldSyncDevice.openRaw`, the simulator's restart after a crash): the certificates of the authors of
    /// what it holds, the keys granted and revocations learned, then its seq guard (`headGuard`, kept apart from
    /// the store) brought level with the store's own logs.
    /// - Throws: store errors, or what the guard throws.
    public func restoreFromStore(now: UInt64, headGuard: (any OwnHeadGuard)?) throws {
        try restoreCertificates(now: now)
        try restoreControlState(now: now)
        self.headGuard = headGuard
        try syncHeadGuard()
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
        let learned = learn(certificates: kept, now: now)
        // Authors now known may have held changes dated after a revocation already restored.
        if learned > 0 && trust.revocations.count > 0 { lastRestoreQuarantine = try quarantineRevokedChanges(now: now) }
        return learned
    }

    /// Opens held changes that a newly learned key can read, and merges them.
    /// - Returns: edits merged.
    public func openHeldChanges(now: UInt64) throws -> Int {
        var batch = CommitBatch()
        var merged = 0
        let v = verifier()
        for stored in try store.unopened(in: nil) where stored.contentType == .records {
            guard let change = try? Change(canonicalBytes: stored.bytes), let edits = v.openEdits(change) else { continue }
            batch.edits += edits.map { ($0, stored.hash) }
            batch.opened.append(stored.hash)
            merged += edits.count
        }
        if !batch.opened.isEmpty {
            _ = try store.commit(batch)
            notifyCommit(batch)
        }
        return merged
    }

    /// Re-learns, from the store, the epoch keys granted to this device and the revocations it holds. A
    /// node calls this once after opening its store: keys and revocations learned from changes live in
    /// memory, the changes that carried them live in the store, and a restart must not forget either
    /// (a forgotten revocation would let a revoked device back in). Then quarantines the held changes the
    /// revocations date after their author's cut-off (`quarantineRevokedChanges`: a store written by
    /// another process or an older version, or a crash between a revocation's commit and the quarantine,
    /// is caught up here); call `restoreCertificates(now:)` first. Each grant and revocation is verified
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
            switch applyControl(change, author: nil) {
            case .key(let key, let issuedAt):
                noteIssued(key, at: issuedAt)
                if addKey(key) { restored.keys += 1 }
            case .revocation(let new):
                if new { restored.revocations += 1 }
            case .grantForOthers, .receipt, .none, .notControl:
                continue
            }
        }
        lastRestoreQuarantine = try quarantineRevokedChanges(now: now)
        return restored
    }

    /// What one control change taught this node (`applyControl`).
    enum ControlEffect {
        /// A key grant this device is a member of, verified and opened: the epoch key (not added yet) and
        /// the grant's signing time.
        case key(EpochKey, issuedAt: UInt64)
        /// A revocation, verified and added to the trust store; `new` if it was not held before.
        case revocation(new: Bool)
        /// A key grant an authority signed (verified against the trust store) for other devices.
        case grantForOthers
        /// An HQ receipt: per log, the seq HQ holds.
        case receipt([(LogID, UInt64)])
        /// A control change that teaches nothing here (a receipt not from HQ, a payload that does not
        /// decode or verify).
        case none
        /// Not a known control type (records, or a type this version does not interpret).
        case notControl
    }

    /// The one place a key grant, revocation or receipt takes effect, for changes ingested from peers
    /// and for those read back from the store at start-up. A revocation is added to the trust store
    /// here; an opened grant's key is returned for the caller to add (ingest adds it after the store
    /// commit). Grants and revocations are judged at their signing time, so one stays valid after its
    /// county authority's certificate expires (Protocols/identity.md §4, §5); every revocation is kept (a
    /// set): the cut-off in force is the earliest, whatever the order.
    /// - Parameters:
    ///   - change: a change that verified (or was verified when stored).
    ///   - author: the author's certificate, which receipts need (only HQ's count); nil ignores receipts.
    func applyControl(_ change: Change, author: Certificate?) -> ControlEffect {
        switch change.header.contentType {
        case .keyGrant:
            guard let grant = try? KeyGrant(canonicalBytes: change.payload), (try? grant.verify(trust: trust)) != nil else { return .none }
            guard grant.members.contains(where: { $0.device == identity.id }),
                  let key = try? grant.open(as: identity.id, agreementKey: identity.agreementKey) else { return .grantForOthers }
            return .key(key, issuedAt: grant.issuedAt)
        case .revocation:
            guard let r = try? Revocation(canonicalBytes: change.payload), let new = try? trust.addRevocation(r) else { return .none }
            return .revocation(new: new)
        case .receipt:
            guard author?.role == .hq, let receipt = try? Receipt(canonicalBytes: change.payload) else { return .none }
            return .receipt(receipt.heads)
        default:
            return .notControl
        }
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
}
