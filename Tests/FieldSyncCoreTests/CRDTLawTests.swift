import Testing
@testable import FieldSyncCore

/// Merge laws (commutativity, associativity, idempotence) of every CRDT, on seeded random states.
@Suite struct CRDTLawTests {
    @Test func lwwRegister() { #expect(checkMergeLaws(seed: 1) { $0.lww() } == []) }
    @Test func latticeRegister() { #expect(checkMergeLaws(seed: 2) { $0.lattice() } == []) }
    @Test func orSet() { #expect(checkMergeLaws(seed: 3) { $0.orSet() } == []) }
    @Test func addOnlyLog() { #expect(checkMergeLaws(seed: 4) { $0.log() } == []) }
    @Test func tombstone() { #expect(checkMergeLaws(seed: 5) { g in MaxOpID(g.bool() ? g.opID() : nil) } == []) }
    @Test func creation() { #expect(checkMergeLaws(seed: 6) { g in MinOpID(g.bool() ? g.opID() : nil) } == []) }
    @Test func wholeRecord() { #expect(checkMergeLaws(seed: 7, iterations: 200) { $0.record() } == []) }

    /// N replicas applying the same random edits in random orders, with duplicates, end byte-identical;
    /// and so does merging the replicas' states in random orders.
    @Test(arguments: [11, 12, 13, 14, 15] as [UInt64])
    func replicasConverge(seed: UInt64) throws {
        var g = Gen(seed: seed)
        for round in 0..<40 {
            let edits = g.edits(count: g.int(1...25))
            var encodings = Set<[UInt8]>()
            var replicas: [Replica] = []
            for _ in 0..<5 {
                var order = g.shuffled(edits)
                for _ in 0..<g.int(0...5) { order.insert(g.pick(edits), at: g.int(0...order.count)) }
                var r = Replica()
                for e in order { try r.apply(e, schemas: nil) }
                encodings.insert(r.canonicalBytes)
                replicas.append(r)
            }
            #expect(encodings.count == 1, "seed \(seed) round \(round): replicas diverged")
            // State-based: merging partial replicas in any order gives the same result too.
            var partials: [Replica] = []
            for chunk in stride(from: 0, to: edits.count, by: 3) {
                var r = Replica()
                for e in edits[chunk..<min(chunk + 3, edits.count)] { try r.apply(e, schemas: nil) }
                partials.append(r)
            }
            var merged = Replica()
            for p in g.shuffled(partials) { merged.merge(p) }
            #expect(merged.canonicalBytes == replicas[0].canonicalBytes, "seed \(seed) round \(round): merge ≠ apply")
        }
    }

    @Test func orSetAddWinsOverConcurrentRemove() {
        let a = Gen.authors[0], b = Gen.authors[1]
        var s1 = ORSet<Token>(), s2 = ORSet<Token>()
        let t1 = OpID(hlc: HLCTimestamp(milliseconds: 1, counter: 0), author: a)
        s1.add("unit-7", tag: t1)
        s2.merge(s1)
        // b removes what it observed while a concurrently re-adds.
        s2.remove("unit-7", observed: s2.observedTags(of: "unit-7"))
        s1.add("unit-7", tag: OpID(hlc: HLCTimestamp(milliseconds: 2, counter: 0), author: a))
        #expect(s1.merging(s2).contains("unit-7"))
        #expect(s2.merging(s1).contains("unit-7"))
        // A remove that observed every add removes it.
        var s3 = s1.merging(s2)
        s3.remove("unit-7", observed: s3.observedTags(of: "unit-7"))
        #expect(!s3.contains("unit-7"))
        #expect(!s3.merging(s1).contains("unit-7"), "a late copy of an observed add must stay removed")
        _ = b
    }

    @Test func tokensAreByteExact() {
        var s = ORSet<Token>()
        let a = Gen.authors[0]
        s.add(Token("é"), tag: OpID(hlc: .zero, author: a, index: 0))
        s.add(Token("e\u{301}"), tag: OpID(hlc: .zero, author: a, index: 1))
        #expect(s.elements.count == 2, "canonically equivalent strings with different bytes are different elements")
    }
}
