import FieldSyncFuzz
import FieldSyncTestSupport
import Foundation
import Testing

/// The fuzz targets (docs/fuzzing.md) in the suite: every target's seed corpus, built from
/// Protocols/vectors, and every regression input (a crash or invariant violation the fuzzer found,
/// kept in `Regressions/TARGET/`) replays through the target without a crash. A regression input that
/// crashes stops the test process: that is the failure. CPU work of a few seconds (signatures, the
/// session seeds' syncs): on a thread of its own.
@Suite(.ownThread) struct FuzzReplayTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let vectors = root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Protocols/vectors").path
    static let regressions = root.appendingPathComponent("Regressions").path

    @Test(arguments: FuzzTarget.allCases)
    func seedsReplay(_ target: FuzzTarget) throws {
        let seeds = try FuzzSeeds.corpus(for: target, vectors: Self.vectors)
        #expect(!seeds.isEmpty)
        for s in seeds { target.run(s) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func regressionsReplay(_ target: FuzzTarget) throws {
        let dir = Self.regressions + "/" + target.rawValue
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for name in names.sorted() where !name.hasPrefix(".") {
            let data = try #require(FileManager.default.contents(atPath: dir + "/" + name))
            target.run(Array(data))
        }
    }

    /// The session seeds are real syncs: B's recorded messages bring A its three incidents, so the
    /// target reaches batches, verification and the store, not only the message decoder.
    @Test func sessionSeedReachesTheStore() throws {
        let seeds = try FuzzSeeds.corpus(for: .session, vectors: Self.vectors)
        #expect(FuzzProbe.changesStored(bySessionInput: seeds[0]) == 3)
        #expect(FuzzProbe.changesStored(bySessionInput: seeds[1]) == 3)
    }

    /// The target also plays a node that prepares batches elsewhere (flags bits 1 to 3): the seed of six
    /// one-change batches handed back together once three are out reaches the group commit
    /// (`SyncSession.completeBatchPreparations`, several batches in one store transaction) and stores
    /// what the inline session stores; handed back one by one after each message, it commits no group.
    @Test func sessionTargetReachesTheGroupCommit() throws {
        let seeds = try FuzzSeeds.corpus(for: .session, vectors: Self.vectors)
        let grouped = seeds[4]
        #expect(grouped[0] == 0b1110)
        let together = FuzzProbe.commits(bySessionInput: grouped)
        #expect(together.stored == 6)
        #expect(together.groupCommits >= 1)
        let inline = FuzzProbe.commits(bySessionInput: [0] + grouped.dropFirst())
        #expect(inline == (stored: 6, groupCommits: 0))
        let oneByOne = FuzzProbe.commits(bySessionInput: [0b0010] + grouped.dropFirst())
        #expect(oneByOne == (stored: 6, groupCommits: 0))
        #expect(FuzzProbe.changesStored(bySessionInput: seeds[5]) == 3)  // live, prepared elsewhere
    }

    /// No state passes from one session-target execution to the next (the fixture's handshake and A's
    /// transport keys are made once per process and copied): an input gives the same answer, byte for
    /// byte, run first and run again after other inputs, seeds and damaged seeds, ran in between.
    @Test func sessionExecutionsAreIndependent() throws {
        let seeds = try FuzzSeeds.corpus(for: .session, vectors: Self.vectors)
        // First an input that brings A nothing (the handshake, then no message from B): its answer
        // shows A's empty store, so it is run first and again after the seeds stored their changes.
        let inputs = [[0]] + seeds
        let first = inputs.map { FuzzProbe.answer(toSessionInput: $0) }
        #expect(first[0].stored == 0)
        #expect(first[1].stored == 3)
        #expect(first[1].sent.count > 2)
        for s in seeds.reversed() {
            _ = FuzzProbe.answer(toSessionInput: s)
            _ = FuzzProbe.answer(toSessionInput: Array(s.prefix(s.count / 2)))
            var damaged = s
            damaged[damaged.count / 3] ^= 0x5A
            _ = FuzzProbe.answer(toSessionInput: damaged)
        }
        for (s, before) in zip(inputs, first) {
            let again = FuzzProbe.answer(toSessionInput: s)
            #expect(again.sent == before.sent)
            #expect(again.stored == before.stored)
        }
    }

    /// Mutated inputs (a few hundred per target, seeded) never trap: a quick stand-in for the long
    /// libFuzzer runs, so a decoder that starts trapping on simple damage fails here first.
    @Test(arguments: FuzzTarget.allCases.filter { $0 != .session })
    func mutatedSeedsDoNotTrap(_ target: FuzzTarget) throws {
        var state: UInt64 = 0x5EED_0000 ^ UInt64(target.rawValue.utf8.count)
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        for seed in try FuzzSeeds.corpus(for: target, vectors: Self.vectors) {
            for _ in 0..<100 {
                var m = seed
                switch next() % 3 {
                case 0: if !m.isEmpty { m[Int(next() % UInt64(m.count))] ^= UInt8(truncatingIfNeeded: next() | 1) }
                case 1: m = Array(m.prefix(Int(next() % UInt64(m.count + 1))))
                default: m.insert(UInt8(truncatingIfNeeded: next()), at: Int(next() % UInt64(m.count + 1)))
                }
                target.run(m)
            }
        }
    }
}
