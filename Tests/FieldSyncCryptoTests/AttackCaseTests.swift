import FieldSyncCore
import Foundation
import Testing
@testable import FieldSyncCrypto

/// Attack cases of security-notes §11 at the primitive and Noise level (the table in
/// docs/threat-model.md names each test). The Noise attacks write handshake messages by hand with the
/// internal `NoiseSymmetricState`, so that an attacker can put any bytes where an honest implementation
/// puts its keys, or substitute a DH term, and still produce messages that decrypt.
@Suite struct AttackCaseTests {
    // MARK: Case 2: the Ed25519 accept/reject set

    /// Every case of `Protocols/vectors/ed25519-edge.json` (S ≥ L, small-order R or A, non-canonical
    /// encodings, mixed-order keys) gets exactly the committed answer from this build's verifier. Five
    /// of the refused cases are accepted by OpenSSL's Ed25519 (checked when the file was made), which
    /// is the divergence the file pins down.
    @Test func case02Ed25519AcceptRejectSetIsPinned() throws {
        let url = Vectors.url("ed25519-edge.json")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try #require(json["cases"] as? [[String: Any]])
        #expect(cases.count == 12)
        for c in cases {
            let name = c["name"] as! String
            let pk = try Ed25519.PublicKey(bytes: Hex.decode(c["publicKey"] as! String)!)
            let accepted = (try? pk.verify(signature: Hex.decode(c["signature"] as! String)!, message: Hex.decode(c["message"] as! String)!)) != nil
            #expect(accepted == (c["accept"] as! Bool), "\(name)")
        }
    }

    /// The same set through a real FieldSync object: a certificate whose signature is made non-canonical
    /// (S + L) no longer verifies, although it is the same signature modulo L.
    @Test func case02NonCanonicalSignatureOnACertificateIsRefused() throws {
        let root = Authority(root: .generate())
        let sk = Ed25519.SecretKey.generate()
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: X25519.SecretKey.generate().publicKey, requestedRole: .backpack,
                                        requestedScopes: [try Scope("longnan")], createdAt: 1_000, label: "x")
        let cert = try root.enroll(req, role: .backpack, scopes: [try Scope("longnan")], notBefore: 0, notAfter: 10_000_000, serial: 1)
        let trust = TrustStore(root: root.signingKey.publicKey)
        try trust.verify(cert, now: 5_000)
        var bytes = cert.canonicalBytes
        // S is the last 32 bytes, little-endian; add L = 2^252 + 27742317777372353535851937790883648493.
        let l: [UInt8] = Hex.decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")!
        var carry = 0
        for i in 0..<32 {
            let sum = Int(bytes[bytes.count - 32 + i]) + Int(l[i]) + carry
            bytes[bytes.count - 32 + i] = UInt8(sum & 0xFF)
            carry = sum >> 8
        }
        #expect(carry == 0)
        let tampered = try Certificate(canonicalBytes: bytes)
        #expect(throws: IdentityError.self) { try trust.verify(tampered, now: 5_000) }
    }

    // MARK: Case 8: low-order and all-zero keys in the handshake

    /// X25519 public keys whose DH output is all zeros with any scalar (libsodium's blocklist), and
    /// the same with the ignored top bit set.
    static let lowOrderPoints: [[UInt8]] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    ].map { Hex.decode($0)! }

    static let prologue = Array("FieldSync\u{01}\u{0e}longnan-police".utf8)
    static let zeros = [UInt8](repeating: 0, count: 32)

    static func dh(_ s: X25519.SecretKey, _ p: [UInt8]) throws -> [UInt8] {
        try s.sharedSecret(with: X25519.PublicKey(bytes: p)).unsafeCopy()
    }

    /// An XX responder written by hand: `ephemeral` and `staticPublic` may be any 32 bytes, and the
    /// `ee` and `es` inputs to MixKey are given (an attacker uses zeros for a low-order key, or a DH
    /// value of its choice for KCI).
    struct RogueResponder {
        var sym = NoiseSymmetricState(protocolName: Noise.protocolName)
        let initiatorEphemeral: [UInt8]

        init(message1: [UInt8]) throws {
            sym.mixHash(AttackCaseTests.prologue)
            initiatorEphemeral = Array(message1.prefix(32))
            sym.mixHash(initiatorEphemeral)
            _ = try sym.decryptAndHash(Array(message1.dropFirst(32)))
        }

        mutating func message2(ephemeral: [UInt8], ee: [UInt8], staticPublic: [UInt8], es: [UInt8], payload: [UInt8]) throws -> [UInt8] {
            var out = ephemeral
            sym.mixHash(ephemeral)
            sym.mixKey(ee)
            out += try sym.encryptAndHash(staticPublic)
            sym.mixKey(es)
            out += try sym.encryptAndHash(payload)
            return out
        }
    }

    /// An XX initiator written by hand, for message 3 with any static key and any `se` input.
    struct RogueInitiator {
        var sym = NoiseSymmetricState(protocolName: Noise.protocolName)
        let e = X25519.SecretKey.generate()
        var responderEphemeral: [UInt8] = []
        var responderStatic: [UInt8] = []

        init() { sym.mixHash(AttackCaseTests.prologue) }

        mutating func message1() throws -> [UInt8] {
            sym.mixHash(e.publicKey.bytes)
            return e.publicKey.bytes + (try sym.encryptAndHash([1]))
        }

        mutating func read2(_ m: [UInt8]) throws {
            responderEphemeral = Array(m.prefix(32))
            sym.mixHash(responderEphemeral)
            sym.mixKey(try AttackCaseTests.dh(e, responderEphemeral))
            responderStatic = try sym.decryptAndHash(Array(m[32..<80]))
            sym.mixKey(try AttackCaseTests.dh(e, responderStatic))
            _ = try sym.decryptAndHash(Array(m.dropFirst(80)))
        }

        mutating func message3(staticPublic: [UInt8], se: [UInt8], payload: [UInt8]) throws -> [UInt8] {
            var out = try sym.encryptAndHash(staticPublic)
            sym.mixKey(se)
            out += try sym.encryptAndHash(payload)
            return out
        }
    }

    static func lowOrderError(_ body: () throws -> Void) -> NoiseError.Code? {
        do {
            try body()
            return nil
        } catch let e as NoiseError {
            return e.code
        } catch {
            return nil
        }
    }

    /// A low-order ephemeral key in message 1: the responder refuses to write message 2 (its `ee` is
    /// all zeros), for every point of the blocklist.
    @Test func case08LowOrderInitiatorEphemeralIsRefused() throws {
        for point in Self.lowOrderPoints {
            var responder = NoiseXX(initiator: false, staticKey: .generate(), prologue: Self.prologue)
            _ = try responder.readMessage(point + [1])
            #expect(Self.lowOrderError { _ = try responder.writeMessage(payload: [9]) } == .lowOrderKey, "\(Hex.encode(point))")
        }
    }

    /// A low-order ephemeral key in message 2, with the rest of the message made consistently with an
    /// all-zero `ee` (what an implementation that skips the check would compute): the initiator refuses.
    @Test func case08LowOrderResponderEphemeralIsRefused() throws {
        for point in Self.lowOrderPoints {
            var initiator = NoiseXX(initiator: true, staticKey: .generate(), prologue: Self.prologue)
            let m1 = try initiator.writeMessage(payload: [1])
            var rogue = try RogueResponder(message1: m1)
            let s = X25519.SecretKey.generate()
            let m2 = try rogue.message2(ephemeral: point, ee: Self.zeros, staticPublic: s.publicKey.bytes,
                                        es: try Self.dh(s, rogue.initiatorEphemeral), payload: Array("certificate".utf8))
            #expect(Self.lowOrderError { _ = try initiator.readMessage(m2) } == .lowOrderKey, "\(Hex.encode(point))")
        }
    }

    /// A low-order static key in message 2 (es all zeros): the initiator refuses before reading the payload.
    @Test func case08LowOrderResponderStaticIsRefused() throws {
        for point in Self.lowOrderPoints {
            var initiator = NoiseXX(initiator: true, staticKey: .generate(), prologue: Self.prologue)
            let m1 = try initiator.writeMessage(payload: [1])
            var rogue = try RogueResponder(message1: m1)
            let e = X25519.SecretKey.generate()
            let m2 = try rogue.message2(ephemeral: e.publicKey.bytes, ee: try Self.dh(e, rogue.initiatorEphemeral),
                                        staticPublic: point, es: Self.zeros, payload: Array("certificate".utf8))
            #expect(Self.lowOrderError { _ = try initiator.readMessage(m2) } == .lowOrderKey, "\(Hex.encode(point))")
        }
    }

    /// A low-order static key in message 3 (se all zeros): the responder refuses.
    @Test func case08LowOrderInitiatorStaticIsRefused() throws {
        for point in Self.lowOrderPoints {
            var responder = NoiseXX(initiator: false, staticKey: .generate(), prologue: Self.prologue)
            var rogue = RogueInitiator()
            _ = try responder.readMessage(try rogue.message1())
            try rogue.read2(try responder.writeMessage(payload: Array("certificate".utf8)))
            let m3 = try rogue.message3(staticPublic: point, se: Self.zeros, payload: Array("certificate".utf8))
            #expect(Self.lowOrderError { _ = try responder.readMessage(m3) } == .lowOrderKey, "\(Hex.encode(point))")
        }
    }

    /// The rogue writers above are faithful: with honest keys they complete a handshake with `NoiseXX`,
    /// so the refusals are caused by the low-order keys, not by a malformed message.
    @Test func case08RogueWritersCompleteWithHonestKeys() throws {
        var initiator = NoiseXX(initiator: true, staticKey: .generate(), prologue: Self.prologue)
        var rogue = try RogueResponder(message1: try initiator.writeMessage(payload: [1]))
        let e = X25519.SecretKey.generate(), s = X25519.SecretKey.generate()
        let m2 = try rogue.message2(ephemeral: e.publicKey.bytes, ee: try Self.dh(e, rogue.initiatorEphemeral),
                                    staticPublic: s.publicKey.bytes, es: try Self.dh(s, rogue.initiatorEphemeral), payload: [7])
        #expect(try initiator.readMessage(m2) == [7])

        let rs = X25519.SecretKey.generate()
        var responder = NoiseXX(initiator: false, staticKey: rs, prologue: Self.prologue)
        var ri = RogueInitiator()
        _ = try responder.readMessage(try ri.message1())
        try ri.read2(try responder.writeMessage(payload: [2]))
        let s3 = X25519.SecretKey.generate()
        let m3 = try ri.message3(staticPublic: s3.publicKey.bytes, se: try Self.dh(s3, ri.responderEphemeral), payload: [3])
        #expect(try responder.readMessage(m3) == [3])
        #expect(responder.remoteStatic?.bytes == s3.publicKey.bytes)
    }

    // MARK: Case 21: a key slot for the wrong jurisdiction

    /// A sealed change written by hand, as an insider would (`Change.seal` refuses to): header scope
    /// `scope`, slot 0 sealed under `slotKey` (correctly: its AD binds this header), signed by `author`.
    static func handSealed(author: Ed25519.SecretKey, scope: Scope, slotKey: EpochKey, withSlot: Bool = true) throws -> Change {
        let payload = Array("insider note".utf8)
        let header = try ChangeHeader(author: author.keyID, scope: scope, seq: 1, prevHash: Change.zeroHash,
                                      hlc: HLCTimestamp(milliseconds: World.t0, counter: 0), contentType: .records, priority: .normal,
                                      keyEpoch: slotKey.epoch, payloadLength: UInt64(payload.count + XChaCha20Poly1305.tagLength))
        let dataKey = SecureRandom.bytes(32), payloadNonce = SecureRandom.bytes(24), slotNonce = SecureRandom.bytes(24)
        let sealed = try XChaCha20Poly1305.seal(payload, key: SecretBytes(copying: dataKey), nonce: payloadNonce, associatedData: header.hash)
        let recipient = KeySlot.Recipient.epoch(scope: slotKey.scope, epoch: slotKey.epoch)
        let ct = try XChaCha20Poly1305.seal(dataKey, key: slotKey.key, nonce: slotNonce,
                                            associatedData: KeySlot.associatedData(headerHash: header.hash, index: 0, recipient: recipient))
        let slots = withSlot ? [KeySlot(recipient: recipient, nonce: slotNonce, ciphertext: ct)] : []
        let unsigned = Change(header: header, payloadNonce: payloadNonce, slots: slots, payload: sealed, signature: [])
        return Change(header: header, payloadNonce: payloadNonce, slots: slots, payload: sealed, signature: try author.sign(unsigned.signedDigest))
    }

    /// Protocols/change.md §3: slot 0 must be an epoch slot whose scope contains the header's scope. An
    /// insider holding another station's key writes a change in station 017 whose only slot is for
    /// station 018 (so that 018 reads 017's record and 017's members cannot), or one whose slot names a
    /// narrower scope than the header (a village key for a station-wide change): the decoder refuses
    /// both bytes outright. The same hand-made change with a slot for a scope containing the header's
    /// decodes and verifies, so only the scope rule refuses the others. A sealed change with no slot is
    /// refused as well (missing slot).
    @Test func case21SlotWhoseScopeDoesNotContainTheHeadersIsRefused() throws {
        let w = try World()
        let insider = try Device(40, role: .backpack, scopes: ["longnan/wudu/station-017"], by: w.county)
        let station017 = World.scope("longnan/wudu/station-017"), village = World.scope("longnan/wudu/station-017/village-0412")
        let station018 = World.scope("longnan/wudu/station-018")
        let forged = [
            (village, EpochKey.generate(scope: station018, epoch: 1), "another station's key"),
            (station017, EpochKey.generate(scope: village, epoch: 1), "a narrower scope's key"),
        ]
        for (scope, key, what) in forged {
            let c = try Self.handSealed(author: insider.signing, scope: scope, slotKey: key)
            do {
                _ = try Change(canonicalBytes: c.encodedBytes)
                Issue.record("a change in \(scope) whose slot 0 is for \(key.scope) (\(what)) decoded")
            } catch {
                #expect(error.code == .invalidValue && error.detail.contains("slot 0"), "\(what): \(error)")
            }
        }
        // A sealed change with no slot at all (nobody could open it) is refused too.
        let slotless = try Self.handSealed(author: insider.signing, scope: village, slotKey: EpochKey.generate(scope: station017, epoch: 1),
                                           withSlot: false)
        #expect(throws: DecodingError.self, "a sealed change without a slot") { try Change(canonicalBytes: slotless.encodedBytes) }
        let honest = try Self.handSealed(author: insider.signing, scope: village, slotKey: EpochKey.generate(scope: station017, epoch: 1))
        let decoded = try Change(canonicalBytes: honest.encodedBytes)
        try decoded.verify(authorCertificate: insider.certificate, trust: w.trust, now: World.t0)
    }

    // MARK: Case 11: reflection

    /// Echoing a side's own handshake message back to it fails, and so does echoing its own transport
    /// messages (each direction has its own key from Split()).
    @Test func case11ReflectedMessagesFail() throws {
        var a = NoiseXX(initiator: true, staticKey: .generate(), prologue: Self.prologue)
        var b = NoiseXX(initiator: false, staticKey: .generate(), prologue: Self.prologue)
        let m1 = try a.writeMessage(payload: [1])
        var aReflected = a
        #expect(throws: NoiseError.self) { _ = try aReflected.readMessage(m1) }  // m1 back to the initiator
        _ = try b.readMessage(m1)
        let m2 = try b.writeMessage(payload: [2])
        var bReflected = b
        #expect(throws: NoiseError.self) { _ = try bReflected.readMessage(m2) }  // m2 back to the responder
        _ = try a.readMessage(m2)
        let m3 = try a.writeMessage(payload: [3])
        _ = try b.readMessage(m3)
        var (aSend, aReceive) = try a.split()
        let sealed = try aSend.encrypt([42])
        #expect(throws: NoiseError(.decryptFailed)) { _ = try aReceive.decrypt(sealed) }  // own transport message
        var (_, bReceive) = try b.split()
        #expect(try bReceive.decrypt(sealed) == [42])
    }

    // MARK: Case 12: key-compromise impersonation

    /// With A's static key compromised, an attacker who presents B's static public key cannot complete
    /// a handshake with A, as responder or as initiator: the `es` (resp. `se`) term needs B's secret or
    /// A's ephemeral secret; the attacker tries the DH values A's stolen key lets it compute instead.
    @Test func case12CompromisedStaticKeyDoesNotLetAnAttackerImpersonateOthersToIt() throws {
        let aStatic = X25519.SecretKey.generate()  // compromised: the attacker holds it
        let bStatic = X25519.SecretKey.generate().publicKey.bytes  // B's public key only

        // Attacker as responder to A.
        var a = NoiseXX(initiator: true, staticKey: aStatic, prologue: Self.prologue)
        let m1 = try a.writeMessage(payload: [1])
        for attempt in 0..<3 {
            var rogue = try RogueResponder(message1: m1)
            let e = X25519.SecretKey.generate()
            let es: [UInt8]
            switch attempt {
            case 0: es = try Self.dh(aStatic, e.publicKey.bytes)  // DH(s_A, e_attacker): what A could compute as se
            case 1: es = try Self.dh(aStatic, rogue.initiatorEphemeral)  // DH(s_A, e_A)
            default: es = try Self.dh(e, rogue.initiatorEphemeral)  // DH(e_attacker, e_A), i.e. ee again
            }
            let m2 = try rogue.message2(ephemeral: e.publicKey.bytes, ee: try Self.dh(e, rogue.initiatorEphemeral),
                                        staticPublic: bStatic, es: es, payload: Array("B's certificate".utf8))
            var victim = a
            #expect(Self.lowOrderError { _ = try victim.readMessage(m2) } == .decryptFailed, "responder attempt \(attempt)")
        }

        // Attacker as initiator to A (A responds).
        for attempt in 0..<2 {
            var victim = NoiseXX(initiator: false, staticKey: aStatic, prologue: Self.prologue)
            var rogue = RogueInitiator()
            _ = try victim.readMessage(try rogue.message1())
            try rogue.read2(try victim.writeMessage(payload: Array("A's certificate".utf8)))
            let se = attempt == 0 ? try Self.dh(aStatic, rogue.responderEphemeral)  // DH(s_A, e_A)
                : try Self.dh(rogue.e, rogue.responderStatic)  // DH(e_attacker, s_A), i.e. es again
            let m3 = try rogue.message3(staticPublic: bStatic, se: se, payload: Array("B's certificate".utf8))
            #expect(Self.lowOrderError { _ = try victim.readMessage(m3) } == .decryptFailed, "initiator attempt \(attempt)")
        }
    }

    // MARK: Case 15: nonce exhaustion

    /// A cipher state refuses to encrypt or decrypt with the reserved nonce 2^64 − 1 (`nonceExhausted`),
    /// reached here directly instead of after 2^64 messages.
    @Test func case15NonceExhaustionIsAnErrorNotAWrap() throws {
        let (a, b) = try NoiseTests.handshake()
        let (send, _) = try a.split()
        let (_, receive) = try b.split()
        var s = send.settingNonce(UInt64.max - 1), r = receive.settingNonce(UInt64.max - 1)
        #expect(try r.decrypt(try s.encrypt([1])) == [1])
        #expect(s.nonce == .max && r.nonce == .max)
        #expect(throws: NoiseError(.nonceExhausted)) { _ = try s.encrypt([2]) }
        #expect(throws: NoiseError(.nonceExhausted)) { _ = try r.decrypt([UInt8](repeating: 0, count: 17)) }
    }
}
