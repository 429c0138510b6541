import FieldSyncCore
import Testing

@testable import FieldSyncCrypto

/// A small seeded generator so that failures replay.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Every decoder is total: mutated and random inputs either decode or throw `DecodingError`, never trap.
@Suite struct DecoderFuzzTests {
    func mutate(_ bytes: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = bytes
        switch rng.next() % 4 {
        case 0: if !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] = UInt8.random(in: 0...255, using: &rng) }
        case 1: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
        case 2: b.insert(UInt8.random(in: 0...255, using: &rng), at: Int(rng.next() % UInt64(b.count + 1)))
        default: if b.count > 8 { let i = Int(rng.next() % UInt64(b.count - 8)); b[i..<i + 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F] }
        }
        return b
    }

    @Test func mutatedObjectsNeverTrap() throws {
        let w = try World()
        let d = try Device(70, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let key = EpochKey.generate(scope: World.scope("longnan/wudu/station-017"), epoch: 1)
        let c = try Change.seal(author: d.signing, scope: World.scope("longnan/wudu/station-017"), seq: 1, prevHash: Change.zeroHash,
                                hlc: HLCTimestamp(raw: 99), priority: .high, payload: [1, 2, 3], readers: [key],
                                archive: X25519.SecretKey.generate().publicKey)
        let grant = try KeyGrant.issue(epochKey: key, members: [d.certificate], issuedAt: 1, by: w.county)
        let rev = try Revocation(device: d.id, serial: 1, revokedAt: HLCTimestamp(raw: 5), reason: .lost, note: "n", by: w.root)
        let fork = try ForkProof(c, try Change.seal(author: d.signing, scope: World.scope("longnan/wudu/station-017"), seq: 1,
                                                    prevHash: Change.zeroHash, hlc: HLCTimestamp(raw: 99), priority: .high, payload: [4],
                                                    readers: [key]))
        let samples: [(String, [UInt8], ([UInt8]) throws -> Void)] = [
            ("change", c.canonicalBytes, { _ = try Change(canonicalBytes: $0) }),
            ("certificate", d.certificate.canonicalBytes, { _ = try Certificate(canonicalBytes: $0) }),
            ("grant", grant.canonicalBytes, { _ = try KeyGrant(canonicalBytes: $0) }),
            ("revocation", rev.canonicalBytes, { _ = try Revocation(canonicalBytes: $0) }),
            ("fork", fork.canonicalBytes, { _ = try ForkProof(canonicalBytes: $0) }),
        ]
        var rng = SplitMix64(state: 2026)
        for (name, bytes, decode) in samples {
            try decode(bytes)
            for _ in 0..<1500 {
                var m = bytes
                for _ in 0..<(1 + Int(rng.next() % 3)) { m = mutate(m, &rng) }
                do { try decode(m) } catch is DecodingError {} catch { Issue.record("\(name): unexpected \(error)") }
            }
            for n in [0, 1, 2, 17, 64, 300] {
                let random = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
                do { try decode([1, 1] + random) } catch is DecodingError {} catch { Issue.record("\(name): unexpected \(error)") }
            }
        }
    }
}
