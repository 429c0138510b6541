import FieldSyncCore
import FieldSyncCrypto

/// What a session reconciles with a peer: this node's holdings of every log both may hold, the hello
/// digest's input over them, and the logs whose view leaves a held range out (`LogHoldings.coversHeld`,
/// or no view at all), which a live session looks at again after its first exchange.
struct ReconciliationView {
    /// The holdings, in `LogID` order, with their digest input and element count computed.
    var holdings: Holdings
    /// Logs both may hold whose view leaves something held out.
    var uncovered: Set<LogID>
}

/// Reconciliation views kept between sessions, one per kind of peer (the logs both sides may hold depend
/// only on what `Entitlement.mayHold` reads of the peer's certificate: `Entitlement.key`), and patched from
/// the store's journal (`SyncStore.logsChanged(since:)`) instead of rebuilt: a session start walked every
/// log both sides may hold, filtered it by both certificates, read its view and encoded it into the digest
/// input, about 17 % of a late-year simulator profile, and only a few logs move between two sessions with
/// the same kind of peer.
///
/// Only for a store that keeps a journal (`holdingsGeneration` not nil: `MemoryStore`); otherwise every
/// session builds its view. A view equals the one a fresh walk gives (`build`); debug builds check that at
/// every use.
final class ReconciliationViews {
    /// Kinds of peer kept; the least recently used one goes first.
    static let capacity = 3

    private struct Entry {
        var key: Entitlement.Key
        var generation: UInt64
        /// Holdings in `LogID` order.
        var logs: [LogHoldings]
        /// The digest input without its leading log count: each log's part in `logs` order.
        var body: [UInt8]
        /// Where each log's part of `body` starts.
        var offsets: [Int32]
        var elementCount: Int
        var uncovered: Set<LogID>
    }

    /// Most recently used first.
    private var entries: [Entry] = []

    /// Views served from a kept entry (patched or not) and built from the store.
    private(set) var kept = 0
    private(set) var built = 0

    /// The view for a session between `own` and `peer` over `store`.
    func view(own: Certificate, peer: Certificate, store: any SyncStore) throws -> ReconciliationView {
        let include = { (log: LogID) in Entitlement.mayHold(own, log) && Entitlement.mayHold(peer, log) }
        guard let generation = store.holdingsGeneration else { return try Self.build(store, include) }
        let key = Entitlement.key(peer)
        var entry: Entry
        if let i = entries.firstIndex(where: { $0.key == key }) {
            entry = entries.remove(at: i)
            if entry.generation != generation {
                if let moved = store.logsChanged(since: entry.generation) {
                    try Self.patch(&entry, moved: moved, store: store, include)
                } else {
                    entry = try Self.entry(key, generation, store, include)
                }
                entry.generation = generation
            }
            kept += 1
        } else {
            entry = try Self.entry(key, generation, store, include)
            built += 1
        }
        entries.insert(entry, at: 0)
        if entries.count > Self.capacity { entries.removeLast() }
        var input = ByteWriter(capacity: entry.body.count + 10)
        input.writeVarint(UInt64(entry.logs.count))
        input.writeRaw(entry.body)
        let view = ReconciliationView(
            holdings: Holdings(ordered: entry.logs, digestInput: input.bytes, elementCount: entry.elementCount),
            uncovered: entry.uncovered)
        assert(Self.matches(view, try? Self.build(store, include)), "a kept reconciliation view differs from the store's")
        return view
    }

    /// Whether `kept` says what the fresh walk `fresh` says (debug builds check every kept view).
    private static func matches(_ kept: ReconciliationView, _ fresh: ReconciliationView?) -> Bool {
        guard let fresh else { return false }
        return kept.holdings == fresh.holdings && kept.uncovered == fresh.uncovered
            && kept.holdings.canonicalDigestInput == fresh.holdings.canonicalDigestInput
            && kept.holdings.elementCount == fresh.holdings.elementCount
    }

    /// A fresh walk of the store: what every session did before views were kept.
    static func build(_ store: any SyncStore, _ include: (LogID) -> Bool) throws -> ReconciliationView {
        var logs: [LogHoldings] = []
        var uncovered: Set<LogID> = []
        for (log, view) in try store.orderedLogHoldings(where: include) {
            if let held = view {
                logs.append(held)
                if !held.coversHeld { uncovered.insert(log) }
            } else {
                uncovered.insert(log)
            }
        }
        return ReconciliationView(holdings: Holdings(logs), uncovered: uncovered)
    }

    private static func entry(_ key: Entitlement.Key, _ generation: UInt64, _ store: any SyncStore,
                              _ include: (LogID) -> Bool) throws -> Entry {
        let fresh = try build(store, include)
        // Exact copies: the walk's array and the writer's buffer kept the room they grew by (every replica
        // keeps up to `capacity` of these).
        var e = Entry(key: key, generation: generation, logs: fresh.holdings.logs.withoutSpareRoom(), body: [], offsets: [],
                      elementCount: 0, uncovered: fresh.uncovered)
        var w = ByteWriter(capacity: e.logs.count * 96)
        e.offsets.reserveCapacity(e.logs.count)
        for l in e.logs {
            e.offsets.append(Int32(w.bytes.count))
            Holdings.encodeDigestPart(l, to: &w)
            e.elementCount += Holdings.elementCount(of: l)
        }
        e.body = w.bytes.withoutSpareRoom()
        return e
    }

    /// Room for `count` elements in `array`, growing by an eighth when it must grow: an array grown by
    /// inserting doubles, and these grow by a few logs at a time for the whole run.
    private static func reserve<T>(_ array: inout [T], _ count: Int) {
        if array.capacity < count { array.reserveCapacity(count + count / 8) }
    }

    /// Brings `e` up to date with the logs commits moved since it was kept: each one's view replaces the
    /// kept one (or is inserted in order, or removed), and its part of the digest input with it.
    private static func patch(_ e: inout Entry, moved: [LogID], store: any SyncStore, _ include: (LogID) -> Bool) throws {
        for log in moved.sorted() where include(log) {
            let view = try store.logHoldings(log)
            if view == nil || view?.coversHeld == false { e.uncovered.insert(log) } else { e.uncovered.remove(log) }
            let lo = e.logs.firstIndex(notBelow: log, by: \.log)
            let present = lo < e.logs.count && e.logs[lo].log == log
            let start = present || lo < e.logs.count ? Int(e.offsets[lo]) : e.body.count
            let end = present ? (lo + 1 < e.logs.count ? Int(e.offsets[lo + 1]) : e.body.count) : start
            var part = ByteWriter(capacity: 96)
            if let view { Holdings.encodeDigestPart(view, to: &part) }
            let shift = part.bytes.count - (end - start)
            Self.reserve(&e.body, e.body.count + shift)
            e.body.replaceSubrange(start..<end, with: part.bytes)
            if present {
                e.elementCount -= Holdings.elementCount(of: e.logs[lo])
                if let view {
                    e.logs[lo] = view
                } else {
                    e.logs.remove(at: lo)
                    e.offsets.remove(at: lo)
                }
            } else if let view {
                Self.reserve(&e.logs, e.logs.count + 1)
                Self.reserve(&e.offsets, e.offsets.count + 1)
                e.logs.insert(view, at: lo)
                e.offsets.insert(Int32(start), at: lo)
            }
            if let view { e.elementCount += Holdings.elementCount(of: view) }
            let after = view == nil ? lo : lo + 1
            if shift != 0 { for i in after..<e.offsets.count { e.offsets[i] += Int32(shift) } }
        }
    }
}
