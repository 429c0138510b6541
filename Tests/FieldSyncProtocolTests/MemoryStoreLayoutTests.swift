import Testing
@testable import FieldSyncCore
@testable import FieldSyncProtocol
import FieldSyncCrypto

/// The in-memory store's per-log and per-record entries, which a simulator holds in every replica
/// (docs/simulator.md, "Issue 14: memory (session 16)"). What they hold is covered by
/// `StoreConformanceTests` (every kind of store): sparse and far seqs, opened marks, arrivals, histories.
@Suite struct MemoryStoreLayoutTests {
    /// A log's entry is at most 48 bytes inline (the window's three arrays: boxes, and the opened marks and
    /// arrivals, allocated only once needed; a far change's slot is 16 bytes), and a record's slot in the
    /// records table (one reference to the record and the changes that touched it) 8 bytes.
    @Test func entriesAreCompact() {
        #expect(MemoryLayout<MemoryStore.LogChanges>.stride <= 48)
        #expect(MemoryLayout<MemoryStore.LogChanges.Slot>.stride == 16)
        #expect(MemoryLayout<MemoryStore.RecordEntry?>.stride == 8)
    }

    /// A log's held changes answer as a dictionary of (box, opened, arrival) by seq does, over random stores,
    /// removals, opened marks and arrivals at seqs in order, below the window (it grows at the front), and far
    /// from it (the far table, later absorbed as the window reaches it).
    @Test func logChangesAnswerAsADictionaryDoes() throws {
        var rng = SplitMix64(seed: 5)
        let log = LogID(author: DeviceID(ID128(high: 1, low: 2)), scope: try Scope("longnan"))
        let boxes = (0..<8).map { i in
            MemoryStore.ChangeBox(StoredChange(log: log, seq: UInt64(i), hash: [UInt8(i)], prevHash: [], hlc: .zero,
                                               contentType: .records, priority: .normal, bytes: [1]))
        }
        for round in 0..<40 {
            var changes = MemoryStore.LogChanges()
            var model: [UInt64: (box: MemoryStore.ChangeBox, opened: Bool, arrival: UInt64?)] = [:]
            let origin = UInt64.random(in: 5_000...10_000, using: &rng)
            for _ in 0..<400 {
                let seq: UInt64 = switch Int.random(in: 0..<10, using: &rng) {
                case 0: origin + UInt64.random(in: 20_000...30_000, using: &rng)  // far
                case 1: origin - UInt64.random(in: 0...4_000, using: &rng)  // below
                default: origin + UInt64.random(in: 0...300, using: &rng)
                }
                switch Int.random(in: 0..<6, using: &rng) {
                case 0:
                    changes.set(seq, nil)
                    model[seq] = nil
                case 1:
                    changes.markOpened(seq)
                    model[seq]?.opened = true
                case 2:
                    let t = UInt64.random(in: 0...1_000_000, using: &rng)
                    changes.setArrival(seq, t)
                    model[seq]?.arrival = t
                default:
                    let box = boxes[Int.random(in: 0..<boxes.count, using: &rng)]
                    changes.set(seq, box)
                    model[seq, default: (box, false, nil)].box = box
                }
            }
            #expect(changes.count == model.count, "round \(round)")
            #expect(changes.seqs == model.keys.sorted(), "round \(round)")
            #expect(changes.values.map(ObjectIdentifier.init) == model.keys.sorted().map { ObjectIdentifier(model[$0]!.box) })
            for seq in Set(model.keys).union((0..<50).map { _ in origin + UInt64.random(in: 0...300, using: &rng) }) {
                #expect(changes[seq] === model[seq]?.box)
                #expect(changes.isOpened(seq) == (model[seq]?.opened ?? false))
                #expect(changes.arrival(seq) == model[seq]?.arrival)
            }
        }
    }

    /// A store that keeps no arrivals (a simulator's) holds a log's changes in 9 bytes each (a box and an
    /// opened mark) where a slot with its arrival took 16; one that keeps them, 17. The window grows by an
    /// eighth.
    @Test func aLogsWindowCostsNineBytesAChangeWithoutArrivals() throws {
        let log = LogID(author: DeviceID(ID128(high: 3, low: 4)), scope: try Scope("longnan/wudu/station-017"))
        for keeps in [false, true] {
            let store = MemoryStore(recordInterner: RecordInterner(), keepsArrivals: keeps)
            var head = [UInt8](repeating: 0, count: 32)
            for seq in UInt64(1)...1_000 {
                let hash = withUnsafeBytes(of: seq.bigEndian, Array.init) + [UInt8](repeating: 0x5A, count: 24)
                var batch = CommitBatch(changes: [StoredChange(log: log, seq: seq, hash: hash, prevHash: head,
                                                               hlc: HLCTimestamp(milliseconds: seq, counter: 0), contentType: .records,
                                                               priority: .normal, bytes: [1, 2, 3])], opened: [hash])
                batch.now = 1_000 + seq
                _ = try store.commit(batch)
                head = hash
            }
            let perChange = keeps ? 17 : 9
            let bytes = try #require(store.logWindowBytes(log))
            #expect(bytes >= 1_000 * perChange && bytes <= 1_000 * perChange * 9 / 8 + 64, "keeps arrivals: \(keeps), \(bytes) bytes")
            #expect(try store.unopened(in: nil).isEmpty)
        }
    }

    /// The records table answers as a dictionary keyed by record id does, over random inserts and replacements
    /// of ids that share their high half (so that many start at the same slot) and ids that do not; iteration
    /// gives every entry once; the table is never more than three-quarters full nor, once grown, less than
    /// half full.
    @Test func recordTableAnswersAsADictionaryDoes() {
        var rng = SplitMix64(seed: 21)
        var table = MemoryStore.RecordTable()
        var model: [RecordID: MemoryStore.RecordEntry] = [:]
        #expect(table[RecordID(ID128(high: 1, low: 1))] == nil)
        for step in 0..<20_000 {
            let low = UInt64.random(in: 0..<6_000, using: &rng)
            let id = RecordID(ID128(high: Bool.random(using: &rng) ? 7 : low &* 31, low: low))
            if Int.random(in: 0..<3, using: &rng) == 0 {
                #expect(table[id] === model[id], "lookup at step \(step)")
            } else {
                let e = MemoryStore.RecordEntry(id: id, box: nil, touched: [[UInt8(truncatingIfNeeded: step)]])
                table.set(e)
                model[id] = e
            }
            #expect(table.count == model.count)
            #expect(table.capacity * 3 >= table.count * 4)
        }
        #expect(table.count * 2 >= table.capacity - MemoryStore.RecordTable.minimumSlots)
        var seen: [RecordID: Int] = [:]
        table.forEach { seen[$0.id, default: 0] += 1; #expect(model[$0.id] === $0) }
        #expect(seen.count == model.count && seen.values.allSatisfy { $0 == 1 })
        for id in model.keys { #expect(table[id] === model[id]) }
    }

    /// Stores that share an interner share one entry for a record whose version and list of changes are
    /// equal (one reference per record in each store's table, where each store kept its own two-word entry),
    /// and a record version between entries whose lists differ. Without the interner, each store has its own.
    @Test func storesSharingAnInternerShareRecordEntries() throws {
        let interner = RecordInterner()
        let shared = [MemoryStore(recordInterner: interner), MemoryStore(recordInterner: interner), MemoryStore(recordInterner: interner)]
        let alone = [MemoryStore(), MemoryStore()]
        let author = DeviceID(ID128(high: 4, low: 4))
        let id = RecordID(ID128(high: 8, low: 8))
        let log = LogID(author: author, scope: try Scope("longnan/wudu/station-017"))
        let r0 = Record(id: id, kind: .incident, scope: log.scope)
        let edits = (UInt64(1)...2).map { seq in
            r0.edit(author: author, hlc: HLCTimestamp(milliseconds: seq, counter: 0), [.set(field: FieldID(UInt32(seq)), value: .int(Int64(seq)))])
        }
        let changes = (UInt64(1)...2).map { seq in
            StoredChange(log: log, seq: seq, hash: [UInt8](repeating: UInt8(seq), count: 32),
                         prevHash: [UInt8](repeating: UInt8(seq - 1), count: 32), hlc: HLCTimestamp(milliseconds: seq, counter: 0),
                         contentType: .records, priority: .normal, bytes: [UInt8(seq)])
        }
        func deliver(_ i: Int, to stores: [MemoryStore]) throws {
            for store in stores { _ = try store.commit(CommitBatch(changes: [changes[i]], edits: [(edits[i], changes[i].hash)])) }
        }
        // The third shared store gets the second edit first: after the first, it holds an equal record with
        // another list. The others get each edit in turn, as a change spreads.
        try deliver(1, to: [shared[2]])
        try deliver(0, to: [shared[0], shared[1]] + alone + [shared[2]])
        try deliver(1, to: [shared[0], shared[1]] + alone)
        let entries = try shared.map { try #require($0.recordEntry(id)) }
        #expect(entries[0] === entries[1])
        #expect(entries[2] !== entries[0])
        #expect(entries[2].box === entries[0].box, "the equal record is shared")
        #expect(entries[2].touched == [changes[1].hash, changes[0].hash])
        #expect(try alone[0].recordEntry(id) !== alone[1].recordEntry(id))
        for store in shared + alone {
            #expect(try store.record(id) == (try alone[0].record(id)))
            #expect(try store.history(of: id).map(\.seq) == [1, 2])
        }
    }

    /// Stores that share an interner (a simulator's replicas) key their tables by one copy of each log id:
    /// a replica decodes its own copy of every change it receives, and with it its own copy of the scope's
    /// path (a heap string for every village path), which the store's tables kept as their key, once per
    /// (store, log). Measured by the path's storage address.
    @Test func storesSharingAnInternerShareLogIDs() throws {
        let interner = RecordInterner()
        let stores = [MemoryStore(recordInterner: interner), MemoryStore(recordInterner: interner)]
        let author = DeviceID(ID128(high: 7, low: 7))
        let hash = [UInt8](repeating: 0xAB, count: 32)
        for store in stores {
            // Built at run time: each store gets a path string of its own, as a decode makes one.
            let path = ["longnan", "wudu", "station-017", "village-\(40 + 2)"].joined(separator: "/")
            let log = LogID(author: author, scope: try Scope(path))
            let c = StoredChange(log: log, seq: 1, hash: hash, prevHash: [UInt8](repeating: 0, count: 32),
                                 hlc: HLCTimestamp(milliseconds: 1, counter: 0), contentType: .records, priority: .normal,
                                 bytes: [1, 2, 3])
            _ = try store.commit(CommitBatch(changes: [c]))
        }
        func storage(_ log: LogID) -> UnsafeRawPointer? {
            log.scope.path.utf8.withContiguousStorageIfAvailable { UnsafeRawPointer($0.baseAddress) } ?? nil
        }
        let ordered = try stores.map { try #require(try $0.orderedLogs().first) }
        let keyed = try stores.map { try #require(try $0.holdings().keys.first) }
        #expect(ordered[0] == ordered[1])
        #expect(storage(ordered[0]) != nil)
        #expect(storage(ordered[0]) == storage(ordered[1]))
        #expect(storage(keyed[0]) == storage(keyed[1]))
        #expect(storage(keyed[1]) == storage(ordered[0]))
    }

    /// Stores that share an interner keep no hash index of their own: a hash names its change's position
    /// through the interner's table of boxes, which the simulator keeps anyway (8 bytes and the set's slack
    /// per held change in every replica: 36 MB of a 60-day `longnan` run's heap). What the stores answer by
    /// hash (opened marks set by hash, before and after the change is held; counts) is what a store alone
    /// answers. `StoreConformanceTests` runs every store test against a store with an interner too
    /// (`StoreKind.internedMemory`: histories, arrivals, evictions, quarantines, forks).
    @Test func storesSharingAnInternerKeepNoHashIndex() throws {
        let interner = RecordInterner()
        let alone = MemoryStore()
        let shared = [MemoryStore(recordInterner: interner), MemoryStore(recordInterner: interner)]
        let log = LogID(author: DeviceID(ID128(high: 3, low: 3)), scope: try Scope("longnan/wudu/station-017/village-7"))
        var rng = SplitMix64(seed: 11)
        var head = [UInt8](repeating: 0, count: 32)
        let changes = (UInt64(1)...6).map { seq in
            let h = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            defer { head = h }
            return StoredChange(log: log, seq: seq, hash: h, prevHash: head, hlc: HLCTimestamp(milliseconds: 1_000 + seq, counter: 0),
                                contentType: .records, priority: .normal, bytes: [UInt8(seq), 2, 3])
        }
        for store in [alone] + shared {
            // Seqs 1-3, then 1-5 again (duplicates and new ones), seq 6 marked opened before it is held, seq 2 by hash.
            _ = try store.commit(CommitBatch(changes: Array(changes[0..<3]), opened: [changes[5].hash]))
            _ = try store.commit(CommitBatch(changes: Array(changes[0..<5]), opened: [changes[1].hash]))
            _ = try store.commit(CommitBatch(changes: [changes[5]]))
        }
        #expect(alone.hashIndexEntries == 6)
        for store in shared {
            #expect(store.hashIndexEntries == 0)
            #expect(try store.status().changes == 6)
            #expect(store.snapshot().changes == 6)
            #expect(try store.unopened(in: nil).map(\.seq) == (try alone.unopened(in: nil)).map(\.seq))
        }
        #expect(try alone.unopened(in: nil).map(\.seq) == [1, 3, 4, 5], "seq 2 opened when held, seq 6 before")
    }

    /// Records an interner keeps share one copy of their scope's path: each replica decodes its own copy of
    /// every edit, and with it a path string (a heap string for a village path) that the record kept, once
    /// per record version (10.5 MB of a 60-day `longnan` run's heap). The records are unchanged.
    @Test func recordsAnInternerKeepsShareTheirScopePath() throws {
        let interner = RecordInterner()
        // Built at run time: each record gets a path string of its own, as a decode makes one.
        func scope() throws -> Scope { try Scope(["longnan", "wudu", "station-017", "village-\(40 + 2)"].joined(separator: "/")) }
        let records = try (UInt64(1)...2).map { Record(id: RecordID(ID128(high: 1, low: $0)), kind: .incident, scope: try scope()) }
        func storage(_ s: Scope) -> UnsafeRawPointer? {
            s.path.utf8.withContiguousStorageIfAvailable { UnsafeRawPointer($0.baseAddress) } ?? nil
        }
        #expect(storage(records[0].scope) != storage(records[1].scope))
        let boxes = records.map { interner.intern($0, touched: []).box! }
        #expect(boxes.map(\.value) == records)
        #expect(storage(boxes[0].value.scope) != nil)
        #expect(storage(boxes[0].value.scope) == storage(boxes[1].value.scope))
    }

    /// A record the interner keeps (one copy of each version for every replica) has no spare room in its field
    /// tables: five fields set one edit at a time leave an array of eight; the kept copy holds five, and is
    /// equal to the record it was given.
    @Test func recordsAnInternerKeepsHaveNoSpareRoom() throws {
        let author = DeviceID(ID128(high: 6, low: 6))
        var r = Record(id: RecordID(ID128(high: 2, low: 2)), kind: .incident, scope: try Scope("longnan/wudu/station-017"))
        for f in UInt32(1)...5 {
            try r.apply(r.edit(author: author, hlc: HLCTimestamp(milliseconds: UInt64(f), counter: 0), [.set(field: FieldID(f), value: .int(Int64(f)))]))
        }
        #expect(r.registers.arrayBytes >= 8 * FieldTable<LWWRegister<FieldValue>>.slotStride)
        let kept = RecordInterner().intern(r, touched: []).box!.value
        #expect(kept == r)
        #expect(kept.registers.arrayBytes < 6 * FieldTable<LWWRegister<FieldValue>>.slotStride)
    }

    /// `logsChanged(since:)`: the logs commits after a generation moved, each once; nil once the journal
    /// no longer reaches back that far, and for every earlier generation after a `restore`.
    @Test func holdingsJournalNamesTheLogsThatMoved() throws {
        let store = MemoryStore()
        let author = DeviceID(ID128(high: 9, low: 9))
        let logs = try (0..<3).map { LogID(author: author, scope: try Scope("longnan/wudu/station-017/village-\($0)")) }
        var heads: [LogID: [UInt8]] = [:]
        func write(_ log: LogID, _ seq: UInt64) throws {
            let hash = withUnsafeBytes(of: seq.bigEndian, Array.init) + [UInt8](repeating: 0xEE, count: 23) + [UInt8(logs.firstIndex(of: log)!)]
            let c = StoredChange(log: log, seq: seq, hash: hash, prevHash: heads[log] ?? [UInt8](repeating: 0, count: 32),
                                 hlc: HLCTimestamp(milliseconds: seq, counter: 0), contentType: .records, priority: .normal,
                                 bytes: [1, 2, 3])
            _ = try store.commit(CommitBatch(changes: [c]))
            heads[log] = hash
        }
        #expect(store.holdingsGeneration == 0)
        #expect(store.logsChanged(since: 0) == [])
        try write(logs[0], 1)
        let g1 = try #require(store.holdingsGeneration)
        try write(logs[1], 1)
        try write(logs[1], 2)
        #expect(Set(try #require(store.logsChanged(since: g1))) == [logs[1]])
        #expect(store.logsChanged(since: g1)?.count == 1, "each log once")
        #expect(Set(try #require(store.logsChanged(since: 0))) == [logs[0], logs[1]])
        #expect(store.logsChanged(since: try #require(store.holdingsGeneration)) == [])
        #expect(store.logsChanged(since: try #require(store.holdingsGeneration) + 1) == nil, "a generation not reached yet")
        _ = try store.commit(CommitBatch(changes: []))  // moves nothing
        #expect(store.logsChanged(since: g1)?.count == 1)

        // Past the journal's capacity the oldest generations are no longer answered; recent ones are.
        let snapshot = store.snapshot()
        let before = try #require(store.holdingsGeneration)
        for seq in UInt64(2)...UInt64(2 + MemoryStore.HoldingsJournal.capacity) { try write(logs[0], seq) }
        #expect(store.logsChanged(since: g1) == nil)
        #expect(store.logsChanged(since: before) == nil)
        let recent = try #require(store.holdingsGeneration)
        #expect(store.logsChanged(since: recent - 3) == [logs[0]], "the newest entries, past the ring's wrap")
        try write(logs[2], 1)
        #expect(store.logsChanged(since: recent) == [logs[2]])

        // A restore takes holdings back, which no entry says: nothing from before it is answered.
        store.restore(snapshot)
        #expect(store.logsChanged(since: recent) == nil)
        let restored = try #require(store.holdingsGeneration)
        #expect(store.logsChanged(since: restored) == [])
        heads[logs[2]] = nil  // gone with the restore
        try write(logs[2], 1)
        #expect(store.logsChanged(since: restored) == [logs[2]])
    }

    /// The reconciliation views a session reads (`orderedLogHoldings`), kept beside the ordered logs, are
    /// what the store holds after every commit: a log inserted between two held ones, a log that grows, a
    /// gap in a log (two intervals), a filter, and a `restore` that takes holdings back. Each answer is
    /// compared with the protocol's default (`orderedLogs` and a view built from `holdings(of:)` and
    /// `hash(_:seq:)` for each log), asked after the views were read and kept.
    @Test func orderedViewsFollowEveryCommit() throws {
        let store = MemoryStore()
        let author = DeviceID(ID128(high: 5, low: 5))
        let logs = try [3, 1, 2, 0].map { LogID(author: author, scope: try Scope("longnan/wudu/station-017/village-\($0)")) }
        func hash(_ log: LogID, _ seq: UInt64) -> [UInt8] {
            seq == 0 ? [UInt8](repeating: 0, count: 32)
                : withUnsafeBytes(of: seq.bigEndian, Array.init) + [UInt8](repeating: 0xCD, count: 23) + [UInt8(logs.firstIndex(of: log)!)]
        }
        func write(_ log: LogID, _ seq: UInt64) throws {
            let c = StoredChange(log: log, seq: seq, hash: hash(log, seq), prevHash: hash(log, seq - 1),
                                 hlc: HLCTimestamp(milliseconds: seq, counter: 0), contentType: .records, priority: .normal,
                                 bytes: [1, 2, 3])
            _ = try store.commit(CommitBatch(changes: [c]))
        }
        func expected(_ include: (LogID) -> Bool) throws -> [LogHoldings?] {
            try store.holdings().keys.sorted().filter(include).map { try MemoryStore.buildLogHoldings($0, in: store) }
        }
        func check(_ what: Comment) throws {
            for include in [{ (_: LogID) in true }, { $0 != logs[1] }] {
                let views = try store.orderedLogHoldings(where: include)
                #expect(views.map(\.log) == (try store.orderedLogs()).filter(include), what)
                #expect(views.map(\.holdings) == (try expected(include)), what)
                for (log, view) in views { #expect(try store.logHoldings(log) == view, what) }
            }
        }
        try check("empty")
        try write(logs[0], 1)
        try check("one log")
        try write(logs[1], 1)
        try write(logs[2], 1)
        try check("logs inserted before and between held ones")
        let snapshot = store.snapshot()
        try write(logs[2], 2)
        try check("a log grown")
        try write(logs[2], 5)
        try check("a gap: two intervals")
        #expect(try store.logHoldings(logs[2])?.intervals.map(\.end) == [2, 5])
        try write(logs[3], 1)
        try check("the first log in order added")
        store.restore(snapshot)
        try check("restored")
        #expect(try store.logHoldings(logs[3]) == nil, "gone with the restore")
        #expect(try store.logHoldings(logs[2])?.intervals.map(\.end) == [1])
        try write(logs[3], 1)
        try write(logs[2], 2)
        try check("after the restore")
    }

    /// A slot's opened mark and arrival share one word without touching each other; an arrival too
    /// large for 63 bits (292 million years after 1970) is kept as the largest one the slot can say.
    @Test func slotKeepsOpenedMarkAndArrivalApart() {
        var s = MemoryStore.LogChanges.Slot(nil)
        #expect(!s.opened && s.arrived == nil)
        s.arrived = 1_733_400_000_000
        s.opened = true
        #expect(s.opened && s.arrived == 1_733_400_000_000)
        s.arrived = nil
        #expect(s.opened && s.arrived == nil)
        s.arrived = UInt64.max
        #expect(s.opened && s.arrived == (1 << 63) - 2)
        s.opened = false
        #expect(!s.opened && s.arrived == (1 << 63) - 2)
        s.arrived = 0
        #expect(!s.opened && s.arrived == 0)
    }
}
