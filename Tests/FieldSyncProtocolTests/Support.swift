import FieldSyncCore
import FieldSyncCrypto
@testable import FieldSyncProtocol
import Testing

/// Fixed 32-byte session key 00 01 ... 1f used by tests and vectors.
let testSessionKey: [UInt8] = Array(0..<32)

func hashOf(_ log: LogID, _ height: UInt32, variant: UInt64 = 0) -> [UInt8] {
    // A deterministic stand-in for the change hash at `height` (variant > 0 models a fork).
    var rng = SplitMix64(seed: UInt64(height) &* 0x9E37_79B9 ^ log.author.raw.low ^ variant &* 0x1234_5678_9ABC)
    return (0..<4).flatMap { _ -> [UInt8] in
        let v = rng.next()
        return (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(8 * $0)) }
    }
}

let scopes: [Scope] = ["longnan/wudu/station-017", "longnan/wudu/station-018/village-0412", "longnan/cheng"].map { try! Scope($0) }

func makeLog(_ i: Int) -> LogID {
    LogID(author: DeviceID(ID128(high: 0xA1A2_0000_0000_0000 | UInt64(i / 3), low: UInt64(i) &* 0x9E37_79B9_7F4A_7C15)),
          scope: scopes[i % 3])
}

func prefix(_ log: LogID, _ h: UInt32, fork: UInt64 = 0) -> LogHoldings {
    LogHoldings(log: log, height: h, headHash: hashOf(log, h, variant: fork))
}

func salt(_ seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

/// The exact expected result for `mine` against `theirs`.
func groundTruth(_ mine: Holdings, _ theirs: Holdings) -> [LogDifference] {
    var a: [LogID: [IntervalSummary]] = [:]
    var b: [LogID: [IntervalSummary]] = [:]
    for l in mine.logs { a[l.log] = l.intervals.map(\.summary) }
    for l in theirs.logs { b[l.log] = l.intervals.map(\.summary) }
    let all = Set(a.keys).union(b.keys).sorted()
    return all.compactMap { log in
        let x = a[log] ?? [], y = b[log] ?? []
        return x == y ? nil : LogDifference(log: log, local: x, remote: y)
    }
}

/// Outcome of running two reconcilers against each other in memory.
struct PairRun {
    var initiator: ReconciliationResult?
    var responder: ReconciliationResult?
    /// Total encoded message bytes, both directions.
    var bytes: Int
    /// Half round trips until both sides finished (both hellos cross in the first).
    var halfTrips: Int
    var messages: [ReconMessage]
    var roundTrips: Double { Double(halfTrips) / 2 }
}

/// Runs a session: every message goes through its canonical encoding and back. Messages sent in the
/// same step travel together (one flight per direction per half round trip).
func runPair(_ a: Holdings, _ b: Holdings, seed: UInt64 = 1,
             configuration: ReconciliationConfiguration = ReconciliationConfiguration()) throws -> PairRun {
    let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
    var i = Reconciler(role: .initiator, holdings: a, hashing: keys, salt: salt(seed), configuration: configuration)
    var r = Reconciler(role: .responder, holdings: b, hashing: keys, salt: salt(seed &+ 1), configuration: configuration)
    var run = PairRun(bytes: 0, halfTrips: 0, messages: [])
    func split(_ outs: [ReconOutput], _ finished: inout ReconciliationResult?) -> [ReconMessage] {
        var msgs: [ReconMessage] = []
        for o in outs {
            switch o {
            case let .send(m): msgs.append(m)
            case let .finished(res):
                precondition(finished == nil)
                finished = res
            }
        }
        return msgs
    }
    var toR = split(i.start(), &run.initiator)
    var toI = split(r.start(), &run.responder)
    while !toR.isEmpty || !toI.isEmpty {
        run.halfTrips += 1
        precondition(run.halfTrips < 200, "no progress")
        var nextToR: [ReconMessage] = []
        var nextToI: [ReconMessage] = []
        for m in toR {
            let wire = m.canonicalBytes
            run.bytes += wire.count
            run.messages.append(m)
            let back = try ReconMessage(canonicalBytes: wire)
            #expect(back == m)
            nextToI += split(try r.receive(back), &run.responder)
        }
        for m in toI {
            let wire = m.canonicalBytes
            run.bytes += wire.count
            run.messages.append(m)
            let back = try ReconMessage(canonicalBytes: wire)
            #expect(back == m)
            nextToR += split(try i.receive(back), &run.initiator)
        }
        toR = nextToR
        toI = nextToI
    }
    return run
}

/// Random holdings: `logs` logs with prefix heights summing to about `changes`.
func randomHoldings(logs: Int, changes: Int, seed: UInt64) -> [LogHoldings] {
    var rng = SplitMix64(seed: seed)
    let mean = max(2, changes / max(logs, 1))
    return (0..<logs).map { i in
        let h = UInt32(1 + Int(rng.next() % UInt64(2 * mean - 1)))
        return prefix(makeLog(i), h)
    }
}

/// A `SyncSession` driven the way the tests drive it: every input's output is queued, frames are pulled
/// one at a time (`pollTransmit`) and events drained (`pollEvent`), as a driver that reads a socket
/// would. Everything else reads through to the session.
@dynamicMemberLookup
final class TestSession {
    let session: SyncSession
    private var frames: [SessionFrame] = []
    private var events: [SessionEvent] = []
    private var preparations: [BatchPreparation] = []
    /// Every output, in order (for tests of the outputs themselves).
    private(set) var outputs: [SessionOutput] = []

    init(initiator: Bool, replicator: Replicator, configuration: SessionConfiguration, now: UInt64,
         handshake: (any SessionHandshaking)? = nil) {
        session = SyncSession(initiator: initiator, replicator: replicator, configuration: configuration, now: now, handshake: handshake)
        take(session.start())
    }

    subscript<T>(dynamicMember path: KeyPath<SyncSession, T>) -> T { session[keyPath: path] }

    @discardableResult
    func take(_ out: SessionOutput) -> SessionOutput {
        outputs.append(out)
        frames += out.frames
        events += out.events
        preparations += out.preparations
        return out
    }

    @discardableResult
    func receive(_ bytes: [UInt8], now: UInt64) -> SessionOutput { take(session.receive(bytes, now: now)) }
    @discardableResult
    func push(logs: [LogID]? = nil, now: UInt64) -> SessionOutput { take(session.push(logs: logs, now: now)) }
    /// Whether the session is still open afterwards.
    @discardableResult
    func checkStanding(now: UInt64) -> Bool {
        take(session.checkStanding(now: now))
        return !session.isClosed
    }
    @discardableResult
    func timerFired(now: UInt64) -> SessionOutput { take(session.timerFired(now: now)) }
    @discardableResult
    func keepAlive(now: UInt64) -> SessionOutput { take(session.keepAlive(now: now)) }
    @discardableResult
    func connectionClosed() -> SessionOutput { take(session.connectionClosed()) }

    @discardableResult
    func completeBatchPreparation(ticket: UInt64, _ batch: PreparedBatch, now: UInt64) -> SessionOutput {
        take(session.completeBatchPreparation(ticket: ticket, batch, now: now))
    }
    /// Several results handed back in one call, as the node does with those that came back together.
    @discardableResult
    func completeBatchPreparations(_ results: [(ticket: UInt64, batch: PreparedBatch)], now: UInt64) -> SessionOutput {
        take(session.completeBatchPreparations(results, now: now))
    }

    func pollBatchPreparation() -> BatchPreparation? { preparations.isEmpty ? nil : preparations.removeFirst() }
    func pollFrame() -> SessionFrame? { frames.isEmpty ? nil : frames.removeFirst() }
    func pollTransmit() -> [UInt8]? { pollFrame()?.bytes }
    func pollEvent() -> SessionEvent? { events.isEmpty ? nil : events.removeFirst() }
}

/// A `MemoryStore` whose commits or reads can be made to fail: `commitError` is thrown by `commit`,
/// `readError` by every read a session makes (holdings, changes, forks).
final class FailingStore: SyncStore {
    let inner = MemoryStore()
    var commitError: (any Error)?
    var readError: (any Error)?
    /// Changes returned by `change` and `changes(_:in:)` (bytes read), counted.
    private(set) var changesRead = 0
    /// Seqs (of any log) that `change` and `changes(_:in:)` no longer return, as if evicted or quarantined.
    var vanished: Set<UInt64> = []

    private func read<T>(_ body: () throws -> T) throws -> T {
        if let readError { throw readError }
        return try body()
    }

    func holdings() throws -> [LogID: HeldIntervals] { try read { try inner.holdings() } }
    func holdings(of log: LogID) throws -> HeldIntervals { try read { try inner.holdings(of: log) } }
    func orderedLogs() throws -> [LogID] { try read { try inner.orderedLogs() } }
    func logHoldings(_ log: LogID) throws -> LogHoldings? { try read { try inner.logHoldings(log) } }
    func change(_ log: LogID, seq: UInt64) throws -> StoredChange? {
        guard !vanished.contains(seq), let c = try read({ try inner.change(log, seq: seq) }) else { return nil }
        changesRead += 1
        return c
    }
    func hash(_ log: LogID, seq: UInt64) throws -> [UInt8]? { try read { try inner.hash(log, seq: seq) } }
    func changes(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChange] {
        let cs = try read { try inner.changes(log, in: seqs) }.filter { !vanished.contains($0.seq) }
        changesRead += cs.count
        return cs
    }
    func changeKeys(_ log: LogID, in seqs: ClosedRange<UInt64>) throws -> [StoredChangeKey] {
        try read { try inner.changeKeys(log, in: seqs) }.filter { !vanished.contains($0.seq) }
    }
    /// Throws the error it returns for a batch, from a commit that carries that batch (of one batch or of
    /// several: then nothing of the group is applied, as a store with transactions rolls it back).
    var poison: ((CommitBatch) -> (any Error)?)?
    /// Store transactions: one per `commit` call, of one batch or several (failed ones not counted).
    private(set) var transactions = 0
    /// Calls of `commit(_: [CommitBatch])` with several batches, failed ones included.
    private(set) var groupCommits = 0
    func commit(_ batch: CommitBatch) throws -> CommitReport {
        if let commitError { throw commitError }
        if let e = poison?(batch) { throw e }
        transactions += 1
        return try inner.commit(batch)
    }
    /// Several batches in one transaction (counted once), all or nothing, as `SQLiteStore` does.
    func commit(_ batches: [CommitBatch]) throws -> [CommitReport] {
        if batches.count > 1 { groupCommits += 1 }
        if let commitError { throw commitError }
        for b in batches { if let e = poison?(b) { throw e } }
        transactions += 1
        return try batches.map { try inner.commit($0) }
    }
    func record(_ id: RecordID) throws -> Record? { try inner.record(id) }
    func heldRecordIDs(_ ids: [RecordID]) throws -> Set<RecordID> { try inner.heldRecordIDs(ids) }
    func records(_ query: RecordQuery) throws -> [Record] { try inner.records(query) }
    func history(of id: RecordID) throws -> [StoredChange] { try inner.history(of: id) }
    func unopened(in scope: Scope?) throws -> [StoredChange] { try inner.unopened(in: scope) }
    func controlChanges() throws -> [StoredChange] { try inner.controlChanges() }
    func forks() throws -> [ForkEvidence] { try read { try inner.forks() } }
    func forks(of log: LogID) throws -> [ForkEvidence] { try read { try inner.forks(of: log) } }
    func receipted(_ log: LogID) throws -> UInt64 { try inner.receipted(log) }
    func certificates() throws -> [Certificate] { try inner.certificates() }
    func status() throws -> StoreStatus { try inner.status() }
    func quarantined() throws -> [QuarantinedChange] { try inner.quarantined() }
    func changes(by author: DeviceID, after hlc: HLCTimestamp) throws -> [StoredChange] { try inner.changes(by: author, after: hlc) }
}
