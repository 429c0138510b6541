import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation
import NIOCore
import Testing

/// Issue 13, "a node that is busy stays responsive": batches are verified and opened off the node's
/// event loop (`NodeConfiguration.prepareBatchesOffLoop`), so a catch-up leaves the loop free for other
/// sessions and status, and what fails verification in the pipeline is refused as before. Real TCP on
/// 127.0.0.1, SQLite stores.
@Suite(.ownThread) struct BusyNodeTests {
    /// Writes `count` changes in one atomic commit per 500 (bulk: a catch-up's worth, quickly), on the
    /// node's loop.
    static func bulkWrite(_ node: FieldSyncNode, count: Int) async throws {
        try await node.withReplicator { r in
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            var g = SystemRandomNumberGenerator()
            var clock = r.clock
            for start in stride(from: 0, to: count, by: 500) {
                let groups = try (start..<min(start + 500, count)).map { n in
                    let e = Incident.create(id: RecordID.random(using: &g), scope: NodeTests.village, author: r.identity.id,
                                            hlc: try clock.now(wall: now), category: .dispute, priority: .normal,
                                            location: Location(latitude: 33.4, longitude: 104.9), summary: "backlog \(n)",
                                            reportedAt: Int64(now), reporter: "walk-in")
                    return Replicator.WriteGroup(scope: NodeTests.village, priority: .normal, edits: [e])
                }
                try r.write(groups: groups, now: now)
            }
        }
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

    /// While a station catches up a backpack's backlog (an incoming session applying thousands of
    /// changes), another peer's session and a status request (a task on the node's loop, as
    /// `NodeDaemon.status` is) are answered, well within a generous bound, and the catch-up completes.
    @Test(.timeLimit(.minutes(3))) func catchUpInProgressLeavesOtherSessionsAndStatusAnswered() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let station = try NodeTests.node(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "station")
        let backpack = try NodeTests.node(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "backpack")
        let other = try NodeTests.node(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "other")
        // Large enough that the other session (a handshake and 3 changes) ends well before the catch-up
        // does, even on a loaded machine: with 2,000 the catch-up sometimes finished first.
        let backlog = 6_000
        try await Self.bulkWrite(backpack, count: backlog)
        try await NodeTests.write(other, count: 3, tag: "other")
        let listener = try await station.listen(host: "127.0.0.1", port: 0) { _ in }
        let port = try NodeTests.port(listener)
        let held = { @Sendable () async throws -> Int in try await station.withReplicator { try $0.store.status().changes } }

        let catchUp = Task.onOwnThread { try await backpack.sync(host: "127.0.0.1", port: port) }
        let clock = ContinuousClock()
        let waitStart = clock.now
        while try await held() == 0 {  // the catch-up is under way once the first batch is stored
            guard clock.now - waitStart < .seconds(60) else { Issue.record("the catch-up did not start"); return }
            try await TestClock.sleep(for: .milliseconds(20))
        }
        let t0 = clock.now
        let status = try await station.loop.submit { 1 }.get()  // what `NodeDaemon.status` waits for: a turn on the loop
        let statusSeconds = Self.seconds(clock.now - t0)
        let t1 = clock.now
        let side = try await other.sync(host: "127.0.0.1", port: port)
        let sideSeconds = Self.seconds(clock.now - t1)
        let heldAfter = try await held()
        let main = try await catchUp.value

        #expect(status == 1)
        #expect(side.isFinished && side.changesSent == 3, "\(side)")
        #expect(heldAfter < backlog, "the other session ran during the catch-up (\(heldAfter) of \(backlog) changes stored when it ended)")
        #expect(statusSeconds < 20, "status answered in \(statusSeconds) s during the catch-up")
        #expect(sideSeconds < 20, "the other session took \(sideSeconds) s during the catch-up")
        #expect(main.isFinished && main.changesSent == backlog, "\(main)")
        #expect(try await held() == backlog + 3)
        try await listener.close()
        for n in [station, backpack, other] { try await n.shutdown() }
    }

    /// A change whose signature was broken after signing, sent by a peer over TCP: the worker that
    /// verifies the batch finds it, the session ends with `badChange` as with verification on the loop,
    /// the forgery is not stored, and what verified before it is.
    @Test(.timeLimit(.minutes(1))) func forgedChangeVerifiedOffTheLoopEndsTheSession() async throws {
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let authorID = try pki.device(.backpack, scopes: [NodeTests.station])
        let author = try NodeTests.node(authorID, trust: pki.trust, dir: dir, name: "author")
        let station = try NodeTests.node(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "station")
        let evil = try NodeTests.node(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "evil")
        #expect(station.configuration.prepareBatchesOffLoop, "on by default")
        try await NodeTests.write(author, count: 2, tag: "honest")
        let log = LogID(author: authorID.id, scope: NodeTests.village)
        let (first, second) = try await author.withReplicator { r in
            (try r.store.change(log, seq: 1)!, try r.store.change(log, seq: 2)!)
        }
        var broken = second.bytes
        broken[broken.count - 1] ^= 1
        let bytes = broken
        let forged = try Change(canonicalBytes: bytes)
        let certificate = authorID.certificate
        try await evil.withReplicator { r in
            // Straight into the store, bypassing verification: a malicious peer's store.
            _ = try r.store.commit(CommitBatch(changes: [first, StoredChange(log: log, seq: 2, hash: forged.id, prevHash: first.hash, hlc: forged.header.hlc,
                                                                             contentType: second.contentType, priority: second.priority, bytes: bytes)]))
            r.learn(certificates: [certificate], now: 0)
        }
        let (served, cont) = AsyncStream.makeStream(of: SessionResult.self)
        let listener = try await station.listen(host: "127.0.0.1", port: 0) { cont.yield($0) }
        _ = try await evil.sync(host: "127.0.0.1", port: try NodeTests.port(listener))
        var it = served.makeAsyncIterator()
        let result = try #require(await it.next())
        guard case let .failed(why) = result.outcome else { Issue.record("the session did not fail: \(result)"); return }
        #expect(why.hasPrefix("badChange"), "\(why)")
        #expect(result.error?.code == .badChange, "the session's typed reason, from its closed event")
        let (kept, forgery) = try await station.withReplicator { r in (try r.store.change(log, seq: 1), try r.store.change(log, seq: 2)) }
        #expect(kept != nil, "what verified in the same batch is kept")
        #expect(forgery == nil, "the forgery is not stored")
        try await listener.close()
        for n in [author, station, evil] { try await n.shutdown() }
    }
}
