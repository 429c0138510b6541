import FieldSyncCore
import FieldSyncCrypto
import Testing
@testable import FieldSyncProtocol

/// Equivocation and the hash chain (issue 12 item 3, attack cases 22 and 48): forks found at ingest
/// and in reconciliation, proofs that travel, and the seq guard of a restored device.
@Suite struct ForkTests {
    typealias S = SessionTests
    static func log(_ r: Replicator) -> LogID { LogID(author: r.identity.id, scope: TestPKI.village) }

    /// A copy of `original`'s device restored from an older store: same identity, holding only the
    /// first `upTo` changes of its own log.
    static func restored(_ pki: TestPKI, _ original: Replicator, upTo: UInt64, guard g: (any OwnHeadGuard)? = nil) throws -> Replicator {
        let copy = pki.replicator(original.identity)
        copy.headGuard = g
        let own = try original.store.changes(log(original), in: 1...upTo).map { try Change(canonicalBytes: $0.bytes) }
        let report = try copy.ingest(own, now: TestPKI.now + 1_000)
        #expect(report.commit.inserted == Int(upTo))
        return copy
    }

    /// Signs a change of `author`'s log at `seq` with the given prevHash (what a buggy or hostile author does).
    static func forged(_ author: DeviceIdentity, seq: UInt64, prevHash: [UInt8], n: UInt64) throws -> Change {
        try Change.seal(author: author.signingKey, scope: TestPKI.village, seq: seq, prevHash: prevHash,
                        hlc: HLCTimestamp(milliseconds: TestPKI.now + 500 + n, counter: 0), priority: .normal,
                        payload: ChangeBody(edits: []).canonicalBytes, readers: [TestPKI().stationKey])
    }

    @Test func prevHashMismatchIsRefusedAsEvidence() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let own = try (1...3).map { try S.write(bp, UInt64($0)) }
        let bad = try Self.forged(bp.identity, seq: 4, prevHash: own[1].id, n: 4)  // seq 4 claiming seq 2 before it
        let r = try st.ingest(own + [bad], certificates: [bp.identity.certificate], now: TestPKI.now + 1_000)
        #expect(r.outcomes.allSatisfy { $0 == .accepted }, "each change verifies on its own")
        #expect(r.commit.inserted == 3 && r.commit.refusedForked == [bad.id])
        #expect(try st.store.holdings(of: Self.log(bp)) == HeldIntervals([1...3]))
        let proof = try #require(try st.store.forks().first).proof()
        #expect(proof.kind == .chain && proof.seq == 3 && proof.second == bad)
        try proof.verify(authorCertificate: bp.identity.certificate, trust: pki.trust, now: TestPKI.now + 1_000)
    }

    @Test func equivocationIsDetectedAtIngest() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...3 { _ = try S.write(bp, n) }
        var link = S.connect(bp, st)
        #expect(S.run(&link))
        let restored = try Self.restored(pki, bp, upTo: 2)
        let second3 = try S.write(restored, 33)  // seq 3 again: a fork
        #expect(second3.header.seq == 3)
        let r = try st.ingest([second3], now: TestPKI.now + 1_000)
        #expect(r.commit.refusedForked == [second3.id] && r.commit.forksRecorded == 1)
        let proof = try #require(try st.store.forks().first).proof()
        #expect(proof.kind == .position && proof.seq == 3)
        #expect(try st.store.hash(Self.log(bp), seq: 3) == bp.store.hash(Self.log(bp), seq: 3), "the first change held is kept")
    }

    /// Before: both sides reported "finished" and disagreed forever with no fork record.
    @Test(arguments: [2, 5] as [UInt64])
    func forkIsDetectedInReconciliationAndProvenToBothSides(stationHeight: UInt64) throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...stationHeight + 1 { _ = try S.write(bp, n) }
        var first = S.connect(bp, st)
        #expect(S.run(&first))
        // The device is restored from a copy holding seqs 1...2 and writes again: seq 3 on another branch.
        let restored = try Self.restored(pki, bp, upTo: 2)
        _ = try S.write(restored, 77)
        var link = S.connect(restored, st, seed: 5)
        #expect(S.run(&link), "a fork is no reason to fail the session")
        #expect(try st.store.forks().count == 1 && restored.store.forks().count == 1)
        #expect(link.a.forksDetected == 1 && link.b.forksDetected == 1)
        let proof = try #require(try st.store.forks().first).proof()
        #expect(proof.kind == .position && proof.seq == 3)
        // The station keeps its branch; nothing of the other branch got in.
        #expect(try st.store.hash(Self.log(bp), seq: 3) == bp.store.hash(Self.log(bp), seq: 3))
        #expect(try st.store.holdings(of: Self.log(bp)) == HeldIntervals([1...(stationHeight + 1)]))
        // Another session proves nothing new and sends no proof back and forth forever.
        var again = S.connect(restored, st, seed: 6)
        #expect(S.run(&again))
        #expect(again.a.forksDetected == 0 && again.b.forksDetected == 0)
        #expect(try st.store.forks().count == 1)
    }

    @Test func forkProofTravelsThroughAThirdNode() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let relay = pki.replicator(try pki.device(.relay, scopes: [TestPKI.root]), withKey: false)
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        for n in UInt64(1)...4 { _ = try S.write(bp, n) }
        for (x, y) in [(bp, st), (st, relay), (relay, hq)] {
            var l = S.connect(x, y)
            #expect(S.run(&l))
        }
        #expect(try hq.store.holdings(of: Self.log(bp)).frontier == 4)
        let restored = try Self.restored(pki, bp, upTo: 3)
        _ = try S.write(restored, 44)
        var l1 = S.connect(restored, st, seed: 7)
        #expect(S.run(&l1))
        #expect(try st.store.forks().count == 1)
        // The relay and HQ hold the same branch as the station: their logs do not differ, only the proof travels.
        var l2 = S.connect(st, relay, seed: 8)
        #expect(S.run(&l2))
        #expect(l2.a.forkProofsSent == 1 && l2.b.forkProofsReceived == 1)
        var l3 = S.connect(relay, hq, seed: 9)
        #expect(S.run(&l3))
        let atHQ = try hq.store.forks()
        #expect(atHQ.count == 1)
        let proof = try #require(atHQ.first).proof()
        try proof.verify(authorCertificate: bp.identity.certificate, trust: pki.trust, now: TestPKI.now + 1_000)
        #expect(proof.author == bp.identity.id && proof.seq == 4)
        // HQ kept its branch and holds the other change only inside the proof.
        #expect(try hq.store.hash(Self.log(bp), seq: 4) == bp.store.hash(Self.log(bp), seq: 4))
    }

    /// A peer that sends a "proof" whose second change is not signed by the author is cut off, and
    /// nothing is recorded.
    @Test func aForgedProofEndsTheSession() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let liar = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let other = try pki.device(.backpack, scopes: [TestPKI.station])
        let a = try S.write(bp, 1)
        let impostor = try Self.forged(other, seq: 1, prevHash: Change.zeroHash, n: 2)
        var bytes = impostor.canonicalBytes
        bytes.replaceSubrange(2..<18, with: bp.identity.id.raw.bytes)  // claims bp as its author
        let claimed = try Change(canonicalBytes: bytes)
        let proof = try ForkProof(a, claimed)
        if case .rejected(.badSignature, _) = st.ingest(forkProofOutcome: proof, bp) {} else { Issue.record("forged proof accepted") }
        #expect(try st.store.forks().isEmpty)
        // The liar holds the forged "evidence" and offers it in a session.
        _ = try liar.ingest([a], certificates: [bp.identity.certificate], now: TestPKI.now + 1_000)
        _ = try liar.store.commit(CommitBatch(forks: [ForkEvidence(kept: StoredChange(a), conflicting: StoredChange(claimed))]))
        var link = S.connect(liar, st)
        S.run(&link)
        #expect(link.b.failure?.code == .badChange)
        #expect(try st.store.forks().isEmpty)
    }

    /// A backpack with three changes, its station and the county, the changes synced backpack → station → county.
    static func backpackStationCounty() throws -> (TestPKI, Replicator, Replicator, Replicator) {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let county = pki.replicator(try pki.device(.county, scopes: [try Scope("longnan/wudu")]))
        for n in UInt64(1)...3 { _ = try S.write(bp, n) }
        for (x, y) in [(bp, st), (st, county)] {
            var l = S.connect(x, y)
            #expect(S.run(&l))
        }
        return (pki, bp, st, county)
    }

    /// A proof learned from another session while a live session is open goes out at the next push.
    @Test func aLiveSessionPushesNewProofs() throws {
        let (pki, bp, st, county) = try Self.backpackStationCounty()
        var live = S.connect(st, county, seed: 12, live: (true, true))
        S.run(&live)
        #expect(live.a.isLive && live.b.isLive)
        let restored = try Self.restored(pki, bp, upTo: 2)
        _ = try S.write(restored, 55)
        var l = S.connect(restored, st, seed: 13)
        #expect(S.run(&l))
        #expect(try county.store.forks().isEmpty)
        live.a.push(now: S.now)
        S.run(&live)
        #expect(live.a.forkProofsSent == 1 && live.b.forkProofsReceived == 1 && live.a.isLive && live.b.isLive)
        #expect(try county.store.forks().count == 1)
        live.a.push(now: S.now)
        #expect(live.a.pollTransmit() == nil, "sent once")
    }

    /// Swarm seed 882 with adversaries (docs/simulator.md, "Seed 882: a fork proof dated ahead of the peer's clock"):
    /// a proof whose newer change is dated beyond the peer's clock plus the tolerance was sent, refused by the peer
    /// (`timestampInFuture`, silently: no evidence against the sender) and, as sent, never sent again on that live
    /// session; a county car whose clock ran 2 h behind learned of the fork on none of the 1.6 days its live session
    /// lasted. Now it is held back as such a change is (Protocols/sync.md §4.3) and the timer pushes it when the
    /// peer's clock reaches it, on the same session.
    @Test func aProofDatedAheadOfThePeersClockIsHeldBackThenPushed() throws {
        let (pki, bp, st, county) = try Self.backpackStationCounty()
        let t = S.now, skew = 2 * ClockHoldBackTests.hour
        var live = S.connect(st, county, seed: 12, live: (true, true))
        ClockHoldBackTests.run(&live, nowA: t, nowB: t - skew)
        #expect(live.a.isLive && live.b.isLive)
        let restored = try Self.restored(pki, bp, upTo: 2)
        _ = try S.write(restored, 55)  // seq 3 again: the fork
        var l = S.connect(restored, st, seed: 13)
        #expect(S.run(&l))
        #expect(try st.store.forks().count == 1)
        live.a.push(now: t)
        ClockHoldBackTests.run(&live, nowA: t, nowB: t - skew)
        #expect(live.a.forkProofsSent == 0 && live.a.session.forkProofsHeldBack == 1)
        #expect(try county.store.forks().isEmpty)
        let proof = try #require(try st.store.forks().first?.proof())
        let dated = max(proof.first.header.hlc.milliseconds, proof.second.header.hlc.milliseconds)
        #expect(dated > t - skew + ClockHoldBackTests.tolerance, "ahead of the county's clock by more than the tolerance")
        let due = dated - ClockHoldBackTests.tolerance + skew
        #expect(live.a.session.heldBackUntil == due)
        live.a.timerFired(now: due - 1_000)
        ClockHoldBackTests.run(&live, nowA: due - 1_000, nowB: due - 1_000 - skew)
        #expect(try county.store.forks().isEmpty, "a moment early: nothing goes")
        live.a.timerFired(now: due)
        ClockHoldBackTests.run(&live, nowA: due, nowB: due - skew)
        #expect(live.a.forkProofsSent == 1 && live.b.forkProofsReceived == 1)
        #expect(try county.store.forks().count == 1)
        #expect(live.a.isLive && live.b.isLive, "no new session needed")
    }

    /// Malformed fork messages are typed decoding errors (the session then fails with protocolViolation).
    @Test func malformedForkMessagesDoNotDecode() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let a = try S.write(bp, 1)
        #expect(throws: DecodingError.self) { _ = try SessionMessage.decode([6, 0, 3, 1, 2, 3]) }
        // Two copies of one change are no proof.
        var w = ByteWriter()
        w.writeByte(6)
        w.writeVarint(0)
        var p = ByteWriter()
        p.writeByte(1); p.writeByte(1)
        p.writeBytes(a.canonicalBytes); p.writeBytes(a.canonicalBytes)
        w.writeBytes(p.bytes)
        #expect(throws: DecodingError.self) { _ = try SessionMessage.decode(w.bytes) }
    }

    @Test func restoreGuardContinuesTheChainInsteadOfReusingSeqs() throws {
        var pki = TestPKI()
        let guardFile = MemoryHeadGuard()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        bp.headGuard = guardFile
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...5 { _ = try S.write(bp, n) }
        var l1 = S.connect(bp, st)
        #expect(S.run(&l1))
        // Restored from a copy holding 1...3; the guard (kept apart from the store) remembers seq 5.
        let restored = try Self.restored(pki, bp, upTo: 3, guard: guardFile)
        let behind = try restored.logsBehindGuard()
        #expect(behind.count == 1 && behind[Self.log(bp)]?.store == 3 && behind[Self.log(bp)]?.guard == 5, "the restore is detected")
        let next = try S.write(restored, 66)
        #expect(try next.header.seq == 6 && next.header.prevHash == bp.store.hash(Self.log(bp), seq: 5))
        var l2 = S.connect(restored, st, seed: 11)
        #expect(S.run(&l2))
        #expect(try st.store.forks().isEmpty && restored.store.forks().isEmpty)
        #expect(try st.store.holdings(of: Self.log(bp)) == HeldIntervals([1...6]))
        #expect(try restored.store.holdings(of: Self.log(bp)) == HeldIntervals([1...6]), "the lost seqs came back from the station")
        // Without the guard the same restore forks the log (what the guard prevents).
        let unguarded = try Self.restored(pki, bp, upTo: 3)
        #expect(try S.write(unguarded, 67).header.seq == 4)
    }

    @Test func restoreGuardRefusesAStoreFromAnotherHistory() throws {
        var pki = TestPKI()
        let g = MemoryHeadGuard()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        for n in UInt64(1)...3 { _ = try S.write(bp, n) }
        // A copy restored at 2 wrote its own seq 3 (a fork) before the guard existed; the guard follows bp.
        let other = try Self.restored(pki, bp, upTo: 2)
        _ = try S.write(other, 9)
        try g.advance([Self.log(bp): OwnHead(seq: 3, hash: try #require(try bp.store.hash(Self.log(bp), seq: 3)),
                                            hlc: HLCTimestamp(milliseconds: TestPKI.now, counter: 0))])
        other.headGuard = g
        #expect(throws: WriteError.self) { try S.write(other, 10) }
        // The guard is raised to a store that is ahead of it.
        let fresh = MemoryHeadGuard()
        bp.headGuard = fresh
        #expect(try bp.syncHeadGuard() == 1 && fresh.head(of: Self.log(bp))?.seq == 3)
    }
}

extension Replicator {
    /// Test helper: the outcome of ingesting `proof` with the author's certificate.
    func ingest(forkProofOutcome proof: ForkProof, _ author: Replicator) -> IngestOutcome {
        (try? ingest(forkProof: proof, certificates: [author.identity.certificate], now: TestPKI.now + 1_000)) ?? .unknownAuthor
    }
}
