import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing
@testable import FieldSyncProtocol

/// Live mode (Protocols/sync.md §4.1): a session both sides asked to keep open carries later changes
/// through `push`, without a new handshake or reconciliation.
@Suite struct LiveSessionTests {
    /// A session pair asking for live mode on both sides unless told otherwise.
    static func connect(_ x: Replicator, _ y: Replicator, liveA: Bool = true, liveB: Bool = true, seed: UInt64 = 1) -> SessionTests.Link {
        SessionTests.connect(x, y, seed: seed, live: (liveA, liveB))
    }

    @Test func liveSessionCarriesLaterChangesBothWays() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(4) { _ = try SessionTests.write(bp, n) }
        var link = Self.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive && link.a.isIdle && link.b.isIdle)
        #expect(SessionTests.events(link.a).contains(.live) && SessionTests.events(link.b).contains(.live))
        #expect(try SessionTests.state(st).count == 4)
        let setupA = link.a.bytesSent, setupB = link.b.bytesSent

        // The backpack writes; one push carries it. No handshake or reconciliation bytes follow.
        for n in UInt64(5)...UInt64(7) { _ = try SessionTests.write(bp, n) }
        link.a.push(logs: [LogID(author: bp.identity.id, scope: TestPKI.village)], now: SessionTests.now)
        SessionTests.run(&link)
        #expect(try SessionTests.state(st).count == 7)
        // The station writes and pushes every log (nil): the backpack gets it, nothing is echoed back.
        _ = try SessionTests.write(st, 101)
        link.b.push(now: SessionTests.now)
        SessionTests.run(&link)
        #expect(try SessionTests.state(bp) == SessionTests.state(st) && SessionTests.state(bp).count == 8)
        for kind in [SessionFrameKind.handshake, .reconciliation, .done] {
            #expect(link.a.bytesSent[kind.rawValue] == setupA[kind.rawValue], "\(kind) bytes after going live")
            #expect(link.b.bytesSent[kind.rawValue] == setupB[kind.rawValue], "\(kind) bytes after going live")
        }
        #expect(link.a.changesSent == 7 && link.b.changesSent == 1, "nothing sent twice, nothing echoed")
        // Nothing new: a push sends nothing.
        let before = link.a.bytesSent.reduce(0, +)
        link.a.push(now: SessionTests.now)
        #expect(link.a.pollTransmit() == nil && link.a.bytesSent.reduce(0, +) == before)
        // Closing an idle live session is a normal end.
        link.a.connectionClosed()
        link.b.connectionClosed()
        #expect(link.a.isFinished && link.b.isFinished)
        #expect(SessionTests.events(link.a).last == .closed(.finished))
    }

    /// Keep-alive (Protocols/sync.md §4.1, issue 14): a live side with nothing to send sends `keepAlive`
    /// (tag 9, one sealed frame of 19 bytes); the peer takes it as traffic only (no event, no state
    /// change) and the session goes on carrying changes. Before the session is live it sends nothing.
    @Test func aKeepAliveIsTrafficOnlyAndKeepsTheSessionLive() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        _ = try SessionTests.write(bp, 1)
        var link = Self.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive)
        _ = SessionTests.events(link.b)  // drained: what the keep-alive causes is what comes after
        let later = SessionTests.now + 600_000
        let out = link.a.keepAlive(now: later)
        #expect(out.frames.count == 1 && out.frames.first?.kind == .keepAlive && out.frames.first?.bytes.count == 19, "\(out.frames)")
        #expect(out.events.isEmpty && link.a.bytesSent[SessionFrameKind.keepAlive.rawValue] == 19)
        SessionTests.run(&link, now: later)
        #expect(link.a.isLive && link.b.isLive && link.a.isIdle && link.b.isIdle && !link.b.hasFailed)
        #expect(SessionTests.events(link.b).isEmpty, "nothing happened at the peer but traffic")
        _ = try SessionTests.write(bp, 2)
        link.a.push(now: later + 1)
        SessionTests.run(&link, now: later + 1)
        #expect(try SessionTests.state(st).count == 2, "the kept-alive session still carries changes")

        // Not live yet: nothing to send. The message is the tag alone; a body after it does not decode.
        let early = Self.connect(bp, st, seed: 2)
        #expect(early.a.keepAlive(now: later).frames.isEmpty)
        guard case .keepAlive = try SessionMessage.decode([9]) else { Issue.record("tag 9 is not keepAlive"); return }
        #expect(throws: DecodingError.self) { _ = try SessionMessage.decode([9, 0]) }
    }

    @Test func pushRespectsEntitlement() throws {
        var pki = TestPKI()
        let other = try Scope("longnan/cheng/station-101")
        let hq = pki.replicator(try pki.device(.hq, scopes: [TestPKI.root]))
        hq.addKey(EpochKey.generate(scope: other, epoch: 1))
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        var link = Self.connect(hq, bp)
        SessionTests.run(&link)
        #expect(link.a.isLive && link.b.isLive)
        for n in UInt64(1)...UInt64(3) { _ = try SessionTests.write(hq, n, scope: TestPKI.village) }
        for n in UInt64(4)...UInt64(6) { _ = try SessionTests.write(hq, n, scope: other) }
        link.a.push(now: SessionTests.now)  // every log: only those the backpack may hold travel
        link.a.push(logs: [LogID(author: hq.identity.id, scope: other)], now: SessionTests.now)  // named outright: still not sent
        SessionTests.run(&link)
        #expect(try bp.store.status().changes == 3)
        #expect(try bp.store.holdings().keys.allSatisfy { TestPKI.station.contains($0.scope) })
        #expect(link.a.changesSent == 3)
    }

    @Test func liveNeedsBothSides() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(3) { _ = try SessionTests.write(bp, n) }
        for (liveA, liveB) in [(true, false), (false, true)] {
            var link = Self.connect(bp, st, liveA: liveA, liveB: liveB)
            #expect(SessionTests.run(&link), "a session with one side not asking for live mode finishes normally")
            #expect(!SessionTests.events(link.a).contains(.live) && !SessionTests.events(link.b).contains(.live))
        }
        #expect(try SessionTests.state(st).count == 3)
    }

    /// Changes the node gets while the first exchange runs are pushed as soon as the session is live.
    @Test func changesWrittenDuringTheFirstExchangeArePushedWhenLive() throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        for n in UInt64(1)...UInt64(2) { _ = try SessionTests.write(bp, n) }
        let link = Self.connect(bp, st)
        var wrote = false
        while true {  // one frame at a time; write once the backpack's side has reconciled
            var progress = false
            for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                guard let bytes = from.pollTransmit() else { continue }
                progress = true
                to.receive(bytes, now: SessionTests.now)
                if !wrote, SessionTests.events(link.a).contains(where: { if case .reconciled = $0 { true } else { false } }) {
                    _ = try SessionTests.write(bp, 3)
                    link.a.push(now: SessionTests.now)  // not live yet: does nothing now
                    wrote = true
                }
            }
            if !progress { break }
        }
        #expect(wrote && link.a.isLive && link.b.isLive)
        #expect(try SessionTests.state(st) == SessionTests.state(bp) && SessionTests.state(st).count == 3)
    }

    /// A cut while a push is in flight loses only unacknowledged batches; a fresh session delivers them.
    @Test(arguments: [40, 700, 3_000, 9_000] as [Int])
    func cutWhileLiveResumes(cut: Int) throws {
        var pki = TestPKI()
        let bp = pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station]))
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        var link = Self.connect(bp, st)
        SessionTests.run(&link)
        #expect(link.a.isLive)
        for n in UInt64(1)...UInt64(60) { _ = try SessionTests.write(bp, n) }
        link.a.push(now: SessionTests.now)
        #expect(!SessionTests.run(&link, cutAfter: cut))
        #expect(link.a.hasFailed, "batches were in flight at the cut")
        let got = try SessionTests.state(st).count
        #expect(got < 60)
        var again = SessionTests.connect(bp, st, seed: 9)
        #expect(SessionTests.run(&again))
        #expect(try SessionTests.state(st) == SessionTests.state(bp) && SessionTests.state(st).count == 60)
        #expect(again.a.changesSent <= 60 - got + 16, "resends at most the batches in flight")
    }

    /// A station with live sessions to many backpacks relays each one's writes to the others as a driver
    /// would: after applying a batch, push on every other live session. Everything converges without a
    /// second session, and no change crosses any session twice.
    @Test func hubRelaysPushesToEveryLiveSpoke() throws {
        var pki = TestPKI()
        let st = pki.replicator(try pki.device(.station, scopes: [TestPKI.station]))
        let spokes = try (0..<6).map { _ in pki.replicator(try pki.device(.backpack, scopes: [TestPKI.station])) }
        var links = spokes.enumerated().map { Self.connect($0.element, st, seed: UInt64($0.offset)) }
        for i in links.indices { SessionTests.run(&links[i]) }
        #expect(links.allSatisfy { $0.a.isLive && $0.b.isLive })
        var g = SplitMix64(seed: 11)
        var n: UInt64 = 0
        for _ in 0..<40 {
            let i = Int.random(in: 0..<spokes.count, using: &g)
            n += 1
            _ = try SessionTests.write(spokes[i], n)
            links[i].a.push(now: SessionTests.now)
            // Deliver; whenever the station applied something, it pushes on every other spoke's session.
            var moved = true
            while moved {
                moved = false
                for j in links.indices {
                    let bytes = links[j].a.bytesSent.reduce(0, +) + links[j].b.bytesSent.reduce(0, +)
                    let received = links[j].b.changesReceived
                    SessionTests.run(&links[j])
                    if links[j].b.changesReceived != received { for k in links.indices where k != j { links[k].b.push(now: SessionTests.now) } }
                    if links[j].a.bytesSent.reduce(0, +) + links[j].b.bytesSent.reduce(0, +) != bytes { moved = true }
                }
            }
        }
        let states = try ([st] + spokes).map(SessionTests.state)
        #expect(Set(states.map { $0.flatMap { $0 } }).count == 1 && states[0].count == 40)
        #expect(links.allSatisfy { $0.a.isLive && $0.b.isLive && !$0.a.hasFailed })
        for (i, l) in links.enumerated() {
            let own = try spokes[i].store.holdings(of: LogID(author: spokes[i].identity.id, scope: TestPKI.village)).count
            #expect(l.b.changesSent == 40 - Int(own), "spoke \(i): the station sent each change it lacked once")
            #expect(l.a.changesSent == Int(own), "spoke \(i): sent only its own")
        }
    }
}

/// Live sessions among many nodes under link faults: meetings go live, a node writes during the meeting
/// and pushes, frames are cut, corrupted, duplicated or swapped; at the end a round of plain sessions
/// through the relays must leave every station's readers identical, with only entitled logs anywhere.
@Suite struct LiveSessionFaultTests {
    @Test func manyNodesLiveMeetingsWithFaultsConverge() throws {
        let seed: UInt64 = UInt64(ProcessInfo.processInfo.environment["FIELDSYNC_SESSION_SEED"] ?? "") ?? 11
        var g = SplitMix64(seed: seed)
        var pki = TestPKI()
        let stations = [TestPKI.station, try Scope("longnan/wudu/station-018")]
        let keys = [pki.stationKey, EpochKey.generate(scope: stations[1], epoch: 1)]
        var nodes: [Replicator] = []
        for i in 0..<30 {
            let role: Role = i < 3 ? .relay : (i < 5 ? .station : .backpack)
            let r = pki.replicator(try pki.device(role, scopes: role == .relay ? [TestPKI.root] : [stations[i % 2]]), withKey: false)
            if role != .relay { r.addKey(keys[i % 2]) }
            nodes.append(r)
        }
        var n: UInt64 = 0
        var written = [Int](repeating: 0, count: 2)
        func write(_ i: Int) throws {
            n += 1
            _ = try SessionTests.write(nodes[i], n, scope: try Scope(stations[i % 2].path + "/village-\(n % 3)"))
            written[i % 2] += 1
        }
        for i in 3..<30 { try write(i) }
        var live = 0
        for meeting in 0..<300 {
            let i = Int.random(in: 0..<30, using: &g), j = Int.random(in: 0..<30, using: &g)
            if i == j { continue }
            var link = LiveSessionTests.connect(nodes[i], nodes[j], seed: UInt64(meeting))
            SessionTests.run(&link, split: Int.random(in: 1...2_000, using: &g))
            guard link.a.isLive && link.b.isLive else { continue }
            live += 1
            // Someone writes during the meeting and pushes it on the open session.
            let writer = [i, j].filter { $0 >= 3 }.randomElement(using: &g)
            if let w = writer {
                try write(w)
                (w == i ? link.a : link.b).push(now: SessionTests.now)
            }
            switch Int.random(in: 0..<5, using: &g) {
            case 0: _ = SessionTests.run(&link, cutAfter: Int.random(in: 1...3_000, using: &g))
            case 1: _ = SessionTests.run(&link, fault: .corrupt(at: Int.random(in: 0...3_000, using: &g)))
            case 2: _ = SessionTests.run(&link, fault: .duplicate(at: Int.random(in: 0...4, using: &g)))
            case 3: _ = SessionTests.run(&link, fault: .swap(at: Int.random(in: 0...4, using: &g)))
            default: SessionTests.run(&link)
            }
            link.a.connectionClosed()
            link.b.connectionClosed()
        }
        #expect(live > 100, "most meetings went live")
        var failures: [String] = []
        for _ in 0..<2 {
            for r in 0..<3 {
                for k in 0..<30 where k != r {
                    var l = SessionTests.connect(nodes[r], nodes[k])
                    if !SessionTests.run(&l) { failures.append("\(r)-\(k)") }
                }
            }
        }
        #expect(failures.isEmpty, "seed \(seed): uncut sessions failed: \(failures.prefix(3))")
        for station in 0..<2 {
            let members = nodes.enumerated().filter { $0.offset >= 3 && $0.offset % 2 == station }.map(\.element)
            let states = try members.map(SessionTests.state)
            #expect(Set(states.map { $0.flatMap { $0 } }).count == 1, "seed \(seed): station \(station) replicas diverged")
            #expect(states[0].count == written[station], "seed \(seed): station \(station) has \(states[0].count) of \(written[station])")
        }
        for (i, r) in nodes.enumerated() {
            for log in try r.store.holdings().keys {
                #expect(Entitlement.mayHold(r.identity.certificate, log), "seed \(seed): node \(i) holds \(log)")
            }
        }
        for r in nodes[0..<3] { #expect(try r.store.records(RecordQuery()).isEmpty, "relays read nothing") }
    }
}
