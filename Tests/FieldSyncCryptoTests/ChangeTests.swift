import FieldSyncCore
import Testing

@testable import FieldSyncCrypto

@Suite struct ChangeTests {
    let w: World
    let author: Device
    let other: Device
    let key: EpochKey
    let scope = World.scope("longnan/wudu/station-017")
    let hlc = HLCTimestamp(milliseconds: World.t0, counter: 1)
    let payload = Array("incident 42: status dispatched".utf8)

    init() throws {
        w = try World()
        author = try Device(20, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        other = try Device(21, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        key = EpochKey.generate(scope: World.scope("longnan/wudu/station-017"), epoch: 3)
    }

    func sealed(seq: UInt64 = 1, prev: [UInt8] = Change.zeroHash, payload: [UInt8]? = nil, by d: Device? = nil,
                archive: X25519.PublicKey? = nil, hlc: HLCTimestamp? = nil) throws -> Change {
        try Change.seal(author: (d ?? author).signing, scope: scope, seq: seq, prevHash: prev, hlc: hlc ?? self.hlc,
                        priority: .urgent, payload: payload ?? self.payload, readers: [key], archive: archive)
    }

    @Test func sealVerifyOpenRoundTrip() throws {
        let c = try sealed()
        try c.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(try c.open(with: [key]) == payload)
        let decoded = try Change(canonicalBytes: c.canonicalBytes)
        #expect(decoded == c && decoded.id == c.id)
        #expect(c.header.payloadLength == UInt64(payload.count + 16))
        // The next change chains to this one.
        let c2 = try sealed(seq: 2, prev: c.id)
        try c2.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(c2.header.prevHash == c.id)
        // Relays see no plaintext.
        #expect(!c.canonicalBytes.contains(payload))
    }

    /// A change keeps its bytes once, in a buffer of their size: stores keep `encodedBytes` (a simulator's
    /// replicas share one copy), so spare room in it, or a second copy of the payload or signature, is
    /// paid for every change held. The payload and signature read from the encoding are the sealed ones.
    @Test func encodingHasNoSpareRoomAndPayloadComesFromIt() throws {
        let village = World.scope("longnan/wudu/station-017/village-0412")
        for (size, changeScope) in [0, 30, 200, 700, 3_000].flatMap({ n in [(n, scope), (n, village)] }) {
            let plain = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let c = try Change.seal(author: author.signing, scope: changeScope, seq: 1, prevHash: Change.zeroHash, hlc: hlc,
                                    priority: .normal, payload: plain, readers: [key])
            let decoded = try Change(canonicalBytes: c.canonicalBytes)
            for x in [c, decoded] {
                // Malloc rounds a buffer up to its next size class (16 bytes here), never by half a change.
                #expect(x.encodedBytes.capacity - x.encodedBytes.count < 32, "payload \(size): \(x.encodedBytes.capacity) for \(x.encodedBytes.count)")
                #expect(x.encodedBytes.suffix(64).elementsEqual(x.signature) && x.signature.count == 64)
                #expect(x.payload.count == plain.count + 16 && x.encodedBytes.dropLast(64).suffix(x.payload.count).elementsEqual(x.payload))
                #expect(try x.open(with: [key]) == plain)
            }
        }
        let rev = try Revocation(certificate: other.certificate, revokedAt: hlc, reason: .lost, note: "", by: w.county)
        let control = try Change.control(author: author.signing, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc,
                                         contentType: .revocation, priority: .urgent, payload: rev.canonicalBytes)
        #expect(control.payload == rev.canonicalBytes)
        #expect(control.encodedBytes.capacity - control.encodedBytes.count < 32)
    }

    @Test func archiveSlot() throws {
        let hq = X25519.SecretKey.generate()
        let c = try sealed(archive: hq.publicKey)
        try c.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(try c.openArchive(with: hq) == payload)
        #expect(try c.open(with: [key]) == payload)
        #expect(changeError { _ = try c.openArchive(with: X25519.SecretKey.generate()) }?.code == .noMatchingSlot)
    }

    /// Sealing with an injected generator (what the simulator does; it used to swap libsodium's global
    /// generator): the same generator state seals the same bytes, archive slot included, another state
    /// other bytes, and both verify and open like a change sealed with libsodium's randomness.
    @Test func injectedRandomnessSealsReproducibly() throws {
        let hq = X25519.SecretKey.generate()
        func seal(seed: UInt64) throws -> Change {
            var generator = FieldSyncCore.SplitMix64(seed: seed)
            return try Change.seal(author: author.signing, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc, priority: .urgent,
                                   payload: payload, readers: [key], archive: hq.publicKey, using: &generator)
        }
        let a = try seal(seed: 7), b = try seal(seed: 7), c = try seal(seed: 8)
        #expect(a.canonicalBytes == b.canonicalBytes)
        #expect(a.payloadNonce != c.payloadNonce && a.slots.map(\.ciphertext) != c.slots.map(\.ciphertext))
        for x in [a, c] {
            try x.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
            #expect(try x.open(with: [key]) == payload)
            #expect(try x.openArchive(with: hq) == payload)
        }
        #expect(try sealed().canonicalBytes != sealed().canonicalBytes, "libsodium's randomness by default")
    }

    @Test func tamperedHeaderFails() throws {
        let c = try sealed()
        var bytes = c.canonicalBytes
        bytes[2 + 16 + 1 + 3] ^= 1  // inside the scope string
        if let t = try? Change(canonicalBytes: bytes) {
            #expect(changeError { try t.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) } != nil)
            #expect(changeError { _ = try t.open(with: [key]) }?.code != nil)
        }
        // An insider re-signs a modified header (seq changed) with the author's own key: AEAD binding fails.
        let h = c.header
        let moved = try ChangeHeader(author: h.author, scope: h.scope, seq: 7, prevHash: [UInt8](repeating: 1, count: 32), hlc: h.hlc,
                                     contentType: h.contentType, priority: .low, keyEpoch: h.keyEpoch, payloadLength: h.payloadLength)
        let unsigned = Change(header: moved, payloadNonce: c.payloadNonce, slots: c.slots, payload: c.payload, signature: [])
        let resigned = Change(header: moved, payloadNonce: c.payloadNonce, slots: c.slots, payload: c.payload,
                              signature: try author.signing.sign(unsigned.signedDigest))
        try resigned.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(changeError { _ = try resigned.open(with: [key]) }?.code == .authenticationFailed)
        // Without re-signing, the original signature fails.
        let unsignedMove = Change(header: moved, payloadNonce: c.payloadNonce, slots: c.slots, payload: c.payload, signature: c.signature)
        #expect(changeError { try unsignedMove.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .badSignature)
    }

    @Test func tamperedCiphertextFails() throws {
        let c = try sealed()
        var p = c.payload
        p[0] ^= 1
        let t = Change(header: c.header, payloadNonce: c.payloadNonce, slots: c.slots, payload: p, signature: c.signature)
        #expect(changeError { try t.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .badSignature)
        #expect(changeError { _ = try t.open(with: [key]) }?.code == .authenticationFailed)
        // Every single-byte flip anywhere is caught by the decoder or the verifier.
        let bytes = c.canonicalBytes
        for i in 0..<bytes.count {
            var b = bytes
            b[i] ^= 0x01
            if let d = try? Change(canonicalBytes: b) {
                #expect(changeError { try d.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) } != nil)
            }
        }
    }

    @Test func transplantedPayloadAndSlotsFail() throws {
        let a = try sealed(payload: Array("A".utf8))
        let b = try sealed(seq: 2, prev: a.id, payload: Array("B".utf8))
        // Move A's payload and slots under B's header, re-signed by the author: still cannot be opened.
        let unsigned = Change(header: b.header, payloadNonce: a.payloadNonce, slots: a.slots, payload: a.payload, signature: [])
        let moved = Change(header: b.header, payloadNonce: a.payloadNonce, slots: a.slots, payload: a.payload,
                           signature: try author.signing.sign(unsigned.signedDigest))
        #expect(changeError { _ = try moved.open(with: [key]) }?.code == .authenticationFailed)
    }

    @Test func truncatedChangeIsATypedDecodingError() throws {
        let bytes = try sealed().canonicalBytes
        for n in 0..<bytes.count {
            #expect(throws: DecodingError.self) { _ = try Change(canonicalBytes: bytes.prefix(n)) }
        }
        #expect(throws: DecodingError.self) { _ = try Change(canonicalBytes: bytes + [0]) }
        // A huge claimed payload length does not allocate.
        #expect(throws: DecodingError.self) { _ = try Change(canonicalBytes: [1, 1] + [UInt8](repeating: 0xFF, count: 40)) }
    }

    @Test func wrongEpochKey() throws {
        let c = try sealed()
        let stale = EpochKey.generate(scope: key.scope, epoch: 2)
        #expect(changeError { _ = try c.open(with: [stale]) }?.code == .noMatchingSlot)
        let forged = try EpochKey(scope: key.scope, epoch: 3, key: SecretBytes.random(count: 32))
        #expect(changeError { _ = try c.open(with: [forged]) }?.code == .authenticationFailed)
    }

    @Test func impersonationFails() throws {
        // Signed by another device but presented with the victim's certificate, or vice versa.
        let c = try sealed(by: other)
        #expect(changeError { try c.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .impersonation)
        // Re-signing A's change under B's key while keeping A as author: signature fails.
        let a = try sealed()
        let forged = Change(header: a.header, payloadNonce: a.payloadNonce, slots: a.slots, payload: a.payload,
                            signature: try other.signing.sign(a.signedDigest))
        #expect(changeError { try forged.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .badSignature)
    }

    @Test func authorOutsideItsScopes() throws {
        let narrow = try Device(22, role: .backpack, scopes: ["longnan/wudu/station-018"], by: w.county)
        let c = try sealed(by: narrow)
        #expect(changeError { try c.verify(authorCertificate: narrow.certificate, trust: w.trust, now: World.t0) }?.code == .scopeEscalation)
    }

    @Test func expiredOrUnknownAuthorCertificate() throws {
        let old = try Device(23, role: .backpack, scopes: ["longnan/wudu"], by: w.county, notBefore: World.t0 - 10 * World.day,
                             notAfter: World.t0 - 5 * World.day)
        let c = try sealed(by: old)
        let e = changeError { try c.verify(authorCertificate: old.certificate, trust: w.trust, now: World.t0) }
        #expect(e?.code == .certificateInvalid && e?.identityCode == .expired)
        let rogue = try Device(24, role: .backpack, scopes: ["longnan/wudu"], by: Authority(root: Ed25519.SecretKey.generate()))
        let c2 = try sealed(by: rogue)
        let e2 = changeError { try c2.verify(authorCertificate: rogue.certificate, trust: w.trust, now: World.t0) }
        #expect(e2?.code == .certificateInvalid && e2?.identityCode == .unknownAuthority)
    }

    @Test func futureTimestampRefused() throws {
        let c = try sealed(hlc: HLCTimestamp(milliseconds: World.t0 + World.day, counter: 0))
        #expect(changeError { try c.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .timestampInFuture)
    }

    @Test func revokedAuthorAfterCutoff() throws {
        var trust = w.trust
        let before = try sealed(hlc: HLCTimestamp(milliseconds: World.t0 - 1000, counter: 0))
        let after = try sealed(seq: 2, prev: before.id, hlc: HLCTimestamp(milliseconds: World.t0 + 1000, counter: 0))
        let rev = try Revocation(device: author.id, serial: 20, revokedAt: HLCTimestamp(milliseconds: World.t0, counter: 0),
                                 reason: .stolen, note: "", by: w.root)
        try trust.addRevocation(rev)
        try before.verify(authorCertificate: author.certificate, trust: trust, now: World.t0 + 2000)
        #expect(changeError { try after.verify(authorCertificate: author.certificate, trust: trust, now: World.t0 + 2000) }?.code == .revoked)
    }

    @Test func relayMayNotAuthorSealedContent() throws {
        let relay = try Device(25, role: .relay, scopes: ["longnan/wudu"], by: w.county)
        let c = try sealed(by: relay)
        #expect(changeError { try c.verify(authorCertificate: relay.certificate, trust: w.trust, now: World.t0) }?.code == .roleNotAllowed)
    }

    @Test func controlChangesAreClearAndSigned() throws {
        let rev = try Revocation(certificate: other.certificate, revokedAt: hlc, reason: .lost, note: "", by: w.county)
        let c = try Change.control(author: author.signing, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc,
                                   contentType: .revocation, priority: .urgent, payload: rev.canonicalBytes)
        try c.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(c.slots.isEmpty && c.payloadNonce.isEmpty)
        #expect(try Revocation(canonicalBytes: try Change(canonicalBytes: c.canonicalBytes).payload) == rev)
        #expect(changeError { _ = try c.open(with: [key]) }?.code == .invalid)
        #expect(changeError { _ = try Change.seal(author: author.signing, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc,
                                                  contentType: .receipt, priority: .low, payload: [], readers: [key]) }?.code == .invalid)
    }

    @Test func forkProof() throws {
        let a = try sealed(payload: Array("one".utf8))
        let b = try sealed(payload: Array("two".utf8))
        let proof = try ForkProof(a, b)
        try proof.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        let decoded = try ForkProof(canonicalBytes: proof.canonicalBytes)
        #expect(decoded == proof)
        #expect(proof.description.contains("fork by \(author.id)"))
        #expect(changeError { _ = try ForkProof(a, a) }?.code == .notAFork)
        let c2 = try sealed(seq: 2, prev: a.id)
        #expect(changeError { _ = try ForkProof(a, c2) }?.code == .notAFork)
        // A "proof" mixing two authors cannot be built, and one with a forged change does not verify.
        let forged = Change(header: b.header, payloadNonce: b.payloadNonce, slots: b.slots, payload: b.payload,
                            signature: try other.signing.sign(b.signedDigest))
        let bad = try ForkProof(a, forged)
        #expect(changeError { try bad.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0) }?.code == .badSignature)
    }

    /// Chain proofs (Protocols/change.md §6): seq n and a seq n + 1 that does not follow it.
    @Test func chainForkProof() throws {
        let a = try sealed(payload: Array("one".utf8))
        let b = try sealed(payload: Array("two".utf8))
        let afterB = try sealed(seq: 2, prev: b.id)
        let proof = try ForkProof(afterB, a)  // either argument order
        #expect(proof.kind == .chain && proof.first == a && proof.second == afterB && proof.seq == 1)
        try proof.verify(authorCertificate: author.certificate, trust: w.trust, now: World.t0)
        #expect(try ForkProof(canonicalBytes: proof.canonicalBytes) == proof)
        #expect(proof.description.contains("after seq 1"))
        // Wrong order on the wire, a real successor, and seqs two apart are refused.
        var wrong = ByteWriter()
        wrong.writeByte(1); wrong.writeByte(1)
        wrong.writeBytes(afterB.canonicalBytes); wrong.writeBytes(a.canonicalBytes)
        #expect(throws: DecodingError.self) { _ = try ForkProof(canonicalBytes: wrong.bytes) }
        #expect(changeError { _ = try ForkProof(b, afterB) }?.code == .notAFork)
        let third = try sealed(seq: 3, prev: afterB.id)
        #expect(changeError { _ = try ForkProof(a, third) }?.code == .notAFork)
    }

    @Test func verifiedCertificateFastPathMatchesFullCheck() throws {
        let v = try w.trust.certified(author.certificate)
        let c = try sealed()
        try c.verify(author: v, trust: w.trust, now: World.t0)
        // Wrong author, expired at the change's time, and revocation are still checked per change.
        let o = try w.trust.certified(other.certificate)
        #expect(changeError { try c.verify(author: o, trust: w.trust, now: World.t0) }?.code == .impersonation)
        let late = try sealed(hlc: HLCTimestamp(milliseconds: World.t0 + 60 * World.day, counter: 0))
        let e = changeError { try late.verify(author: v, trust: w.trust, now: World.t0 + 60 * World.day) }
        #expect(e?.code == .certificateInvalid && e?.identityCode == .expired)
        // The static checks refuse what the full check refuses.
        let rogue = try Device(26, role: .backpack, scopes: ["longnan"], by: Authority(root: Ed25519.SecretKey.generate()))
        #expect(identityCode { _ = try w.trust.certified(rogue.certificate) } == .unknownAuthority)
    }
}
