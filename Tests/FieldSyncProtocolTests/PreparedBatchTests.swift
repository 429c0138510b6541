import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// Batches verified and opened elsewhere (`SessionConfiguration.preparesBatchesElsewhere`, the node's
/// pipeline off its event loop): the outcome is that of verifying at commit time, in arrival order,
/// whatever order the preparations come back in and whatever the replicator learned meanwhile.
@Suite struct PreparedBatchTests {
    static let now = TestPKI.now

    /// A session pair, `x` initiating; `y` prepares its batches elsewhere (and `x` too if `both`).
    static func connect(_ x: Replicator, _ y: Replicator, both: Bool = false) -> SessionTests.Link {
        func config(_ seed: UInt8, elsewhere: Bool) -> SessionConfiguration {
            var c = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: seed, count: 16))
            c.preparesBatchesElsewhere = elsewhere
            return c
        }
        return SessionTests.Link(a: TestSession(initiator: true, replicator: x, configuration: config(1, elsewhere: both), now: now),
                                 b: TestSession(initiator: false, replicator: y, configuration: config(2, elsewhere: true), now: now))
    }

    /// Moves bytes until both sides are quiet. Whenever the pipes are empty, each side's handed-out
    /// batches are prepared (as a worker would), then `meanwhile` runs (what the loop does while the
    /// worker works), then the results are returned newest first (workers finish in any order).
    /// - Returns: whether both sessions finished; the most batches one side held at once.
    @discardableResult
    static func run(_ link: inout SessionTests.Link, now: UInt64 = now, meanwhile: () throws -> Void = {}) throws -> (finished: Bool, mostHeld: Int) {
        var mostHeld = 0
        while true {
            var progress = false
            for dir in 0..<2 {
                let (from, to) = dir == 0 ? (link.a, link.b) : (link.b, link.a)
                while let bytes = from.pollTransmit() {
                    progress = true
                    to.receive(bytes, now: now)
                    mostHeld = max(mostHeld, to.batchesPreparing)
                }
            }
            for s in [link.a, link.b] {
                var handed: [BatchPreparation] = []
                while let p = s.pollBatchPreparation() { handed.append(p) }
                guard !handed.isEmpty else { continue }
                progress = true
                let results = handed.map { ($0.ticket, $0.prepare()) }
                try meanwhile()
                for (ticket, prepared) in results.reversed() { s.completeBatchPreparation(ticket: ticket, prepared, now: now) }
            }
            if !progress { return (link.a.isFinished && link.b.isFinished, mostHeld) }
        }
    }

    static func failure(_ s: TestSession) -> SessionError.Code? {
        SessionTests.events(s).lazy.compactMap { if case let .closed(.failed(e)) = $0 { e.code } else { nil } }.first
    }

    @Test func batchesPreparedElsewhereConvergeLikeBatchesVerifiedInline() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let inline = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let piped = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...400 { _ = try SessionTests.write(bp, n) }
        for n in UInt64(1)...30 { _ = try SessionTests.write(piped, 1_000 + n) }  // the other direction too
        var a = SessionTests.connect(bp, inline)
        #expect(SessionTests.run(&a))
        var b = Self.connect(bp, piped, both: true)
        let (finished, mostHeld) = try Self.run(&b)
        #expect(finished)
        #expect(mostHeld > 1, "several batches were held at once (a pipeline, not a round trip per batch)")
        #expect(mostHeld <= SyncSession.maxBatchesPreparing)
        #expect(b.b.changesReceived == 400)
        #expect(b.a.changesReceived == 30)
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        #expect(try piped.store.holdings(of: log) == inline.store.holdings(of: log))
        #expect(Set(try SessionTests.state(inline)).isSubset(of: Set(try SessionTests.state(piped))))
        #expect(try SessionTests.state(piped).count == 430)
        #expect(try SessionTests.state(bp).count == 430)
    }

    /// A node sends as many batches ahead as a receiving node prepares ahead (FieldSyncNode sets its
    /// window to `maxBatchesPreparing`), and the receiver holds that many while its worker is busy: eight,
    /// so that its worker still has batches queued while the loop commits (issue 13: with four the
    /// receiver's pipeline ran dry every four batches and its loop waited a batch's verification).
    @Test func receiverHoldsAWindowOfEightWhileItsWorkerIsBusy() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...1_200 { _ = try SessionTests.write(bp, n) }
        var sender = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 1, count: 16))
        sender.window = SyncSession.maxBatchesPreparing
        var receiver = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 2, count: 16))
        receiver.preparesBatchesElsewhere = true
        var link = SessionTests.Link(a: TestSession(initiator: true, replicator: bp, configuration: sender, now: Self.now),
                                     b: TestSession(initiator: false, replicator: st, configuration: receiver, now: Self.now))
        // Nothing is prepared yet (the worker is busy elsewhere): move bytes until the pipes are quiet.
        var handed: [BatchPreparation] = []
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                while let bytes = from.pollTransmit() { moved = true; to.receive(bytes, now: Self.now) }
            }
            while let p = link.b.pollBatchPreparation() { handed.append(p) }
        }
        #expect(SyncSession.maxBatchesPreparing == 8)
        #expect(link.b.batchesPreparing == 8 && handed.count == 8, "held \(link.b.batchesPreparing), handed out \(handed.count)")
        for p in handed { link.b.completeBatchPreparation(ticket: p.ticket, p.prepare(), now: Self.now) }
        let (finished, mostHeld) = try Self.run(&link)
        #expect(finished && mostHeld <= SyncSession.maxBatchesPreparing)
        #expect(link.b.changesReceived == 1_200)
    }

    /// Batches that are back from the worker together are committed in one store transaction, then
    /// acknowledged one by one (issue 13: a transaction per batch of about 80 changes cost the station's
    /// loop more than the ingest's 500 per transaction); a batch back on its own is committed and
    /// acknowledged at once, never held to wait for the batches still being prepared behind it (the wait
    /// of session 12 left the cores idle). Out of the first 8: the first back alone (1 transaction), the
    /// 2nd and 3rd back together, in any order (1), the 5th back before the 4th (nothing yet), then the
    /// 4th (the 4th and 5th, 1), then the last three together (1): 4 transactions where one per batch
    /// made 8. Same store, records and acknowledgements as a station that verifies inline.
    @Test func batchesBackTogetherCommitInOneTransactionAndNoneWaits() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let inlineStore = FailingStore(), pipedStore = FailingStore()
        let inline = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]), store: inlineStore)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]), store: pipedStore)
        for n in UInt64(1)...1_200 { _ = try SessionTests.write(bp, n) }
        var a = SessionTests.connect(bp, inline)
        #expect(SessionTests.run(&a))
        var sender = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 1, count: 16))
        sender.window = SyncSession.maxBatchesPreparing
        var receiver = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 2, count: 16))
        receiver.preparesBatchesElsewhere = true
        var link = SessionTests.Link(a: TestSession(initiator: true, replicator: bp, configuration: sender, now: Self.now),
                                     b: TestSession(initiator: false, replicator: st, configuration: receiver, now: Self.now))
        var handed: [BatchPreparation] = []
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                while let bytes = from.pollTransmit() { moved = true; to.receive(bytes, now: Self.now) }
            }
            while let p = link.b.pollBatchPreparation() { handed.append(p) }
        }
        #expect(handed.count == 8)
        let acks = { (out: SessionOutput) in out.frames.filter { $0.kind == .ack }.count }
        let back = { (i: Int) in (ticket: handed[i].ticket, batch: handed[i].prepare()) }
        var acked: [Int] = []
        for group in [[0], [2, 1], [4], [3], [5, 6, 7]] {
            acked.append(acks(link.b.completeBatchPreparations(group.map(back), now: Self.now)))
        }
        #expect(acked == [1, 2, 0, 2, 3], "acknowledged as they came back: \(acked)")
        #expect(pipedStore.transactions == 4 && link.b.groupCommits == 3 && link.b.batchesCommittedTogether == 7,
                "\(pipedStore.transactions) transactions, \(link.b.groupCommits) groups")
        #expect(try Self.run(&link).finished)
        #expect(link.b.changesReceived == 1_200 && link.a.changesAcknowledged == 1_200, "every change committed and acknowledged")
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        #expect(try st.store.holdings(of: log) == inline.store.holdings(of: log))
        #expect(try SessionTests.state(st) == SessionTests.state(inline))
    }

    /// A group whose transaction fails (here the store refuses one batch of it, as a disk-full or an
    /// inconsistent edit would) is applied again batch by batch: the batches before the failing one are
    /// committed, nothing is lost of them or refused, and the failing one ends the session with the
    /// store's error as it would alone; nothing is acknowledged that is not committed.
    @Test func aFailedGroupCommitLosesNothingOfTheOtherBatches() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        for n in UInt64(1)...400 { _ = try SessionTests.write(bp, n) }
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        func station() throws -> (Replicator, FailingStore) {
            let store = FailingStore()
            store.poison = { b in b.changes.contains { $0.seq == 300 } ? StoreError(.ioError, "disk full (test)") : nil }
            return (pki.replicator(try pki.device(.station, scopes: [TestPKI.station]), store: store), store)
        }
        // Verified inline, one transaction per batch: the reference.
        let (inline, _) = try station()
        var a = SessionTests.connect(bp, inline)
        #expect(!SessionTests.run(&a))
        let reference = try inline.store.holdings(of: log)
        #expect(reference.ranges.count == 1 && reference.frontier > 1 && reference.frontier < 300, "\(reference.ranges)")

        let (st, store) = try station()
        var link = Self.connect(bp, st)
        #expect(try !Self.run(&link).finished)
        let events = SessionTests.events(link.b)
        let failure = events.lazy.compactMap { if case let .closed(.failed(e)) = $0 { e.code } else { nil } }.first
        #expect(failure == .storeFailed)
        #expect(store.groupCommits > 0, "batches were committed together")
        #expect(try st.store.holdings(of: log) == reference, "every batch before the failing one is stored, as inline")
        let applied = events.reduce(0) { if case let .applied(b) = $1 { $0 + b.accepted } else { $0 } }
        #expect(applied == Int(reference.frontier) && link.b.changesReceived == Int(reference.frontier), "reported applied: \(applied)")
        #expect(link.a.changesAcknowledged <= Int(reference.frontier), "nothing acknowledged that is not committed")
    }

    /// A broken signature found by the worker ends the session with the same typed error as inline
    /// verification, and nothing of it is stored.
    @Test func forgedChangePreparedElsewhereEndsTheSessionAndIsNotStored() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(bp, 1)
        let c2 = try SessionTests.write(bp, 2)
        let evil = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        var bytes = c2.encodedBytes
        bytes[bytes.count - 1] ^= 1
        let forged = try Change(canonicalBytes: bytes)
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        let honest = try #require(try bp.store.change(log, seq: 1))
        _ = try evil.store.commit(CommitBatch(changes: [honest, StoredChange(log: log, seq: 2, hash: forged.id, prevHash: honest.hash,
                                                                             hlc: forged.header.hlc, contentType: .records, priority: .normal, bytes: bytes)]))
        evil.learn(certificates: [bp.identity.certificate], now: Self.now)
        var link = Self.connect(evil, st)
        #expect(try !Self.run(&link).finished)
        #expect(Self.failure(link.b) == .badChange)
        #expect(try st.store.change(log, seq: 2) == nil, "the forgery is not stored")
        #expect(try st.store.change(log, seq: 1) != nil, "what verified in the same batch is kept, as inline")
    }

    /// A batch prepared elsewhere is decoded by the preparation (the node's worker), not on arrival: a
    /// change that does not decode fails the session in the batch's turn, after the batches before it
    /// are applied and acknowledged, exactly as a session that verifies inline fails when the batch
    /// arrives; nothing of the bad batch is stored. (Before issue 13's last step the batch was decoded on
    /// arrival, so the session failed with the batches before it still held and never applied.)
    @Test func undecodableBatchPreparedElsewhereFailsInItsTurnLikeInline() throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let bp = pki.replicator(bpID)
        let c1 = try SessionTests.write(bp, 1)
        let c2 = try SessionTests.write(bp, 2)
        let log = LogID(author: bp.identity.id, scope: TestPKI.village)
        // A carrier that holds change 1 and, as change 2, bytes that do not decode (one byte short).
        let broken = Array(c2.encodedBytes.dropLast())
        #expect(throws: (any Error).self) { try Change(canonicalBytes: broken) }
        func carrier() throws -> Replicator {
            let r = pki.replicator(try pki.device(.relay, scopes: [TestPKI.station]))
            r.learn(certificates: [bpID.certificate], now: Self.now)
            _ = try r.store.commit(CommitBatch(changes: [
                StoredChange(log: log, seq: 1, hash: c1.id, prevHash: Change.zeroHash, hlc: c1.header.hlc, contentType: .records,
                             priority: .normal, bytes: c1.encodedBytes),
                StoredChange(log: log, seq: 2, hash: c2.id, prevHash: c1.id, hlc: c2.header.hlc, contentType: .records,
                             priority: .normal, bytes: broken),
            ]))
            return r
        }
        // One change per batch (the first batch's limit is below one change; the limit doubles from there).
        func link(_ station: Replicator, elsewhere: Bool) throws -> SessionTests.Link {
            var sender = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 1, count: 16))
            sender.firstBatchBytes = 1
            var receiver = SessionConfiguration(network: SessionTests.net, salt: [UInt8](repeating: 2, count: 16))
            receiver.preparesBatchesElsewhere = elsewhere
            return SessionTests.Link(a: TestSession(initiator: true, replicator: try carrier(), configuration: sender, now: Self.now),
                                     b: TestSession(initiator: false, replicator: station, configuration: receiver, now: Self.now))
        }
        let inlineStation = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var inline = try link(inlineStation, elsewhere: false)
        #expect(!SessionTests.run(&inline))
        let pipedStation = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var piped = try link(pipedStation, elsewhere: true)
        let (finished, mostHeld) = try Self.run(&piped)
        #expect(!finished)
        #expect(mostHeld == 2, "both batches arrived before either was prepared (each change is a batch of its own)")
        #expect(Self.failure(inline.b) == .protocolViolation)
        #expect(Self.failure(piped.b) == .protocolViolation)
        #expect(try inlineStation.store.holdings(of: log).frontier == 1)
        #expect(try pipedStation.store.holdings(of: log).frontier == 1, "the batch before the bad one is applied, as inline")
        #expect(piped.b.changesReceived == 1)
    }

    /// The preparation decodes and validates the edits of the changes it opens, so the committing thread
    /// only merges them; what is merged is what the committing thread would have decoded itself.
    @Test func preparationDecodesTheEditsTheCommitMerges() throws {
        var pki = TestPKI()
        let bpID = try pki.device(.backpack, scopes: [TestPKI.station])
        let bp = pki.replicator(bpID)
        let changes = try (UInt64(1)...3).map { try SessionTests.write(bp, $0) }
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        st.learn(certificates: [bpID.certificate], now: Self.now)
        let v = st.verifier()
        let onWorker = v.prepare(changes, now: Self.now + 10, decodingEdits: true)
        let forCommit = v.prepare(changes, now: Self.now + 10)
        for (w, c) in zip(onWorker, forCommit) {
            #expect(w.outcome == .accepted && w.payload != nil)
            let decoded = try #require(w.edits)
            #expect(c.edits == nil, "the store's own ingest leaves the edits to its committing thread")
            #expect(decoded == ChangeVerifier.edits(of: c.change, payload: try #require(c.payload), schemas: st.schemas))
        }
        let report = try st.ingest(prepared: onWorker, by: v, now: Self.now + 10).report
        #expect(report.editsMerged == 3 && report.heldSealed == 0)
        #expect(try SessionTests.state(st) == SessionTests.state(bp))
        // A change signed by its author whose edits claim another author is not valid: the preparation
        // decodes no edits for it, and the commit holds it sealed, as inline.
        let other = try pki.device(.backpack, scopes: [TestPKI.station])
        let e = Incident.create(id: RecordID(ID128(high: 9, low: 9)), scope: TestPKI.village, author: other.id,
                                hlc: HLCTimestamp(milliseconds: Self.now + 5, counter: 0), category: .dispute, priority: .normal,
                                location: Location(latitude: 33.4, longitude: 104.9), summary: "smuggled",
                                reportedAt: Int64(Self.now), reporter: "r")
        let keys = st.allKeys
        let head = try #require(try bp.store.change(LogID(author: bpID.id, scope: TestPKI.village), seq: 3))
        let smuggled = try Change.seal(author: bpID.signingKey, scope: TestPKI.village, seq: 4, prevHash: head.hash,
                                       hlc: HLCTimestamp(milliseconds: Self.now + 5, counter: 1), priority: .normal,
                                       payload: ChangeBody(edits: [e]).canonicalBytes, readers: keys)
        let p = st.verifier().prepare(smuggled, now: Self.now + 10, decodingEdits: true)
        #expect(p.outcome == .accepted && p.payload != nil && p.edits == nil)
        let r2 = try st.ingest(prepared: [p], by: st.verifier(), now: Self.now + 10).report
        #expect(r2.editsMerged == 0 && r2.heldSealed == 1)
    }

    /// The author's revocation is learned while its changes are being verified elsewhere (they verified
    /// against the snapshot): at commit they are judged again, refused as revoked, and not stored.
    @Test func revocationLearnedDuringPreparationIsAppliedBeforeCommit() throws {
        var pki = TestPKI()
        let authorID = try pki.device(.backpack, scopes: [TestPKI.station], label: "lost unit")
        let author = pki.replicator(authorID)
        let carrier = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...5 { _ = try SessionTests.write(author, 10 + n) }
        var first = SessionTests.connect(author, carrier)
        #expect(SessionTests.run(&first))
        let rev = try Revocation(device: authorID.id, serial: authorID.certificate.serial,
                                 revokedAt: HLCTimestamp(milliseconds: Self.now + 1, counter: 0), reason: .stolen, note: "", by: pki.hq)
        var link = Self.connect(carrier, st)
        var revoked = false
        let (finished, _) = try Self.run(&link) {
            guard !revoked else { return }
            revoked = true
            _ = try st.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.station, now: Self.now + 2)
        }
        #expect(revoked)
        #expect(finished, "changes refused as revoked are excused: the carrier may have stored them before the revocation")
        #expect(link.b.changesReceived == 0)
        #expect(try st.store.holdings(of: LogID(author: authorID.id, scope: TestPKI.village)).frontier == 0,
                "nothing the snapshot accepted is stored once its author is revoked")
    }

    /// The peer itself is revoked while its batch is being verified elsewhere: its standing is checked
    /// before the batch is applied, so the session is refused and nothing of the batch is stored.
    @Test func peerRevokedDuringPreparationIsRefusedBeforeCommit() throws {
        var pki = TestPKI()
        let peerID = try pki.device(.backpack, scopes: [TestPKI.station], label: "lost unit")
        let peer = pki.replicator(peerID)
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...5 { _ = try SessionTests.write(peer, 10 + n) }
        let rev = try Revocation(device: peerID.id, serial: peerID.certificate.serial,
                                 revokedAt: HLCTimestamp(milliseconds: Self.now + 1, counter: 0), reason: .stolen, note: "", by: pki.hq)
        var link = Self.connect(peer, st)
        var revoked = false
        let (finished, _) = try Self.run(&link) {
            guard !revoked else { return }
            revoked = true
            _ = try st.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.station, now: Self.now + 2)
        }
        #expect(revoked && !finished)
        #expect(Self.failure(link.b) == .revoked)
        #expect(try st.store.holdings(of: LogID(author: peerID.id, scope: TestPKI.village)).frontier == 0)
    }

    /// `Replicator.ingest(prepared:by:now:)` uses a snapshot's outcomes only while the replicator knows
    /// exactly what the snapshot knew; otherwise it prepares the changes again.
    @Test func staleOrForeignSnapshotsArePreparedAgain() throws {
        var pki = TestPKI()
        let authorID = try pki.device(.backpack, scopes: [TestPKI.station])
        let author = pki.replicator(authorID)
        let changes = try (UInt64(1)...3).map { try SessionTests.write(author, 10 + $0) }
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        st.learn(certificates: [authorID.certificate], now: Self.now)

        // Current snapshot: used as is.
        let v = st.verifier()
        let fresh = try st.ingest(prepared: v.prepare(Array(changes.prefix(1)), now: Self.now + 20), by: v, now: Self.now + 20)
        #expect(!fresh.reprepared && fresh.report.outcomes == [.accepted] && fresh.report.commit.inserted == 1)

        // A snapshot of another replicator (which accepts anything it was told to): prepared again.
        let other = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        other.learn(certificates: [authorID.certificate], now: Self.now)
        let foreign = other.verifier()
        var bytes = changes[1].encodedBytes
        bytes[bytes.count - 1] ^= 1
        let forged = try Change(canonicalBytes: bytes)
        let lie = PreparedChange(change: forged, outcome: .accepted, hash: forged.id, payload: nil)
        let r1 = try st.ingest(prepared: [lie], by: foreign, now: Self.now + 20)
        #expect(r1.reprepared)
        #expect(r1.report.commit.inserted == 0)
        if case .rejected(.badSignature, _) = r1.report.outcomes[0] {} else { Issue.record("forgery judged \(r1.report.outcomes[0])") }

        // A snapshot taken before a revocation: prepared again, refused.
        let before = st.verifier()
        let prepared = before.prepare(Array(changes.dropFirst()), now: Self.now + 20)
        #expect(prepared.allSatisfy { $0.outcome == .accepted })
        // The cut-off falls between change 1 (HLC now + 11) and changes 2 and 3: change 1 stays held (a
        // change after the cut-off would be quarantined when the revocation arrives, attack case 35).
        let rev = try Revocation(device: authorID.id, serial: authorID.certificate.serial,
                                 revokedAt: HLCTimestamp(milliseconds: Self.now + 11, counter: 1), reason: .stolen, note: "", by: pki.hq)
        _ = try st.writeControl(.revocation, payload: rev.canonicalBytes, scope: TestPKI.station, now: Self.now + 20)
        let r2 = try st.ingest(prepared: prepared, by: before, now: Self.now + 20)
        #expect(r2.reprepared)
        #expect(r2.report.commit.inserted == 0)
        #expect(r2.report.outcomes.allSatisfy { if case .rejected(.revoked, _) = $0 { true } else { false } })
        #expect(try st.store.holdings(of: LogID(author: authorID.id, scope: TestPKI.village)).frontier == 1)
    }
}
