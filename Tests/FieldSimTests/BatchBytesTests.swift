import FieldSim
import FieldSyncProtocol
import Testing

/// `fieldsync.batch_bytes_breakdown`: the batch bytes split by what they carry (docs/simulator.md,
/// "Issue 14: what the batch bytes are").
@Suite struct BatchBytesTests {
    /// Every batch byte that left a sender is in exactly one part: the parts sum to the batch total of
    /// `bytes_by_message_type`, each part is measured on its own (a part left out, or a frame not classed,
    /// breaks the sum), and the framing is exactly the length prefix and AEAD tag of each whole frame.
    /// Without officers meeting (`backpackMeetings: false`): a meeting closes a triangle of live sessions
    /// (station-officer, station-officer, officer-officer), so one change can be in flight to a node over two
    /// sessions at once and the second copy arrives as a duplicate; reader copies would then exceed deliveries
    /// by those (docs/simulator.md, "Officers meeting; village-scope logs").
    @Test func batchBreakdownPartsSumToTheBatchTotal() throws {
        var (f, path) = try shippedScenario("longnan-small", days: 1)
        f.longnan!.backpackMeetings = false
        let scen = try makeScenario(f, seed: 1, path: path)
        let sim = runFieldSync(scenario: scen, seed: 1, crypto: .standIn, options: RunOptions(oracleSampleEvery: 0))
        let a = sim.agent
        let b = a.batchBytes
        let batchTotal = a.bytesByKind[SessionFrameKind.batch.rawValue]
        #expect(batchTotal > 0)
        #expect(b.total == batchTotal, "parts \(b.parts) sum to \(b.total), batch bytes \(batchTotal)")
        #expect(b.framing == Int64(18 * b.frames), "2-byte length + 16-byte AEAD tag per frame")
        // The parts a run of longnan-small must have: changes to readers and to relay boxes, certificates
        // (once per session), the encoding of each batch.
        #expect(b.changesToReaders > 0 && b.readerChanges > 0)
        #expect(b.changesToRelays > 0 && b.relayChanges > 0)
        #expect(b.certificates > 0 && b.certificateCount > 0)
        #expect(b.encoding > 0)
        #expect(b.changesToNonCarriers == 0, "no session sends a change to a node that may not carry it")
        #expect(b.certificatesPeerHeldBytes <= b.certificates && b.certificatesPeerHeld <= b.certificateCount)
        // Copies to readers are the deliveries the engine counted (refused ones were moved out).
        #expect(b.readerChanges == sim.metrics.delivered, "reader copies \(b.readerChanges), delivered \(sim.metrics.delivered)")
        // The report says the same, and its parts sum to the batch bytes it reports.
        let report = fieldSyncReport(sim, scenarioName: f.name, seed: 1, derived: scen.derivedParameters)
        let json = report.summary.render()
        #expect(json.contains("\"batch_bytes_breakdown\""))
        #expect(json.contains("\"changes_to_relays\": \(b.changesToRelays)") || json.contains("\"changes_to_relays\":\(b.changesToRelays)"))
    }

    /// With devices hours ahead and sessions that do not send their clock (the protocol before 2026-12-05),
    /// receivers refuse changes dated ahead of their clock and later sessions send them again: those copies
    /// move to `changesRefused`, so the reader copies left are the deliveries, and the parts still sum to the
    /// batch total. With the clock sent (the default, Protocols/sync.md §4.3) none is sent to be refused, and
    /// the same changes reach the same readers.
    @Test func refusedChangesAreTheirOwnPart() throws {
        var (f, path) = try shippedScenario("longnan-small", days: 4)
        f.faults?.clockSkewShare = 0.3
        f.longnan!.backpackMeetings = false  // no duplicates in flight (see above)
        let scen = try makeScenario(f, seed: 1, path: path)
        let sim = runFieldSync(scenario: scen, seed: 1, crypto: .standIn, announcesClock: false, options: RunOptions(oracleSampleEvery: 0))
        let b = sim.agent.batchBytes
        #expect(b.refusedChanges > 0 && b.changesRefused > 0 && b.refusedDatedAhead == b.refusedChanges)
        #expect(b.readerChanges == sim.metrics.delivered, "reader copies \(b.readerChanges), delivered \(sim.metrics.delivered)")
        #expect(b.total == sim.agent.bytesByKind[SessionFrameKind.batch.rawValue])
        let held = runFieldSync(scenario: try makeScenario(f, seed: 1, path: path), seed: 1, crypto: .standIn,
                                options: RunOptions(oracleSampleEvery: 0))
        let h = held.agent.batchBytes
        #expect(h.refusedChanges == 0 && h.changesRefused == 0, "\(h.refusedChanges) copies refused with the clock sent")
        #expect(held.metrics.delivered == sim.metrics.delivered && h.readerChanges == b.readerChanges)
        #expect(h.total < b.total && h.total == held.agent.bytesByKind[SessionFrameKind.batch.rawValue])
    }
}
