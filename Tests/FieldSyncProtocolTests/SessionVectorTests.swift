import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing
@testable import FieldSyncProtocol

/// Byte-exact vectors of the FieldSync handshake and the first session messages
/// (`Protocols/vectors/session.json`), from fixed keys. `FIELDSYNC_WRITE_VECTORS=1` rewrites the file.
@Suite struct SessionVectorTests {
    static func key(_ byte: UInt8) -> SecretBytes { SecretBytes(copying: [UInt8](repeating: byte, count: 32)) }

    static func identity(_ seed: UInt8, role: Role, scope: Scope, root: Authority) throws -> DeviceIdentity {
        let sk = try Ed25519.SecretKey(seed: key(seed))
        let xk = try X25519.SecretKey(secret: key(seed &+ 1))
        let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: role, requestedScopes: [scope],
                                        createdAt: 1_717_200_000_000, label: "vector")
        let cert = try root.enroll(req, role: role, scopes: [scope], notBefore: 1_717_000_000_000, notAfter: 1_720_000_000_000,
                                   serial: UInt64(seed))
        return DeviceIdentity(signingKey: sk, agreementKey: xk, certificate: cert)
    }

    static func generate() throws -> [String: String] {
        let rootKey = try Ed25519.SecretKey(seed: key(0x01))
        let root = Authority(root: rootKey)
        let trust = TrustStore(root: rootKey.publicKey)
        let initiator = try identity(0x10, role: .backpack, scope: try Scope("longnan/wudu/station-017"), root: root)
        let responder = try identity(0x20, role: .relay, scope: try Scope("longnan"), root: root)
        let net = NetworkParameters(networkID: "longnan-police")
        var i = SessionHandshake(initiator: true, identity: initiator, trust: trust, network: net,
                                 ephemeral: try X25519.SecretKey(secret: key(0x30)))
        var r = SessionHandshake(initiator: false, identity: responder, trust: trust, network: net,
                                 ephemeral: try X25519.SecretKey(secret: key(0x40)))
        let now: UInt64 = 1_717_200_000_000
        let m1 = try i.write()
        try r.read(m1, now: now)
        let m2 = try r.write()
        try i.read(m2, now: now)
        let m3 = try i.write()
        try r.read(m3, now: now)
        var ti = try i.transport()
        var w = ByteWriter()
        SessionMessage.done.encode(to: &w)
        let done = try ti.seal(w.bytes)
        var wa = ByteWriter()
        SessionMessage.ack(id: 7).encode(to: &wa)
        var wl = ByteWriter()
        SessionMessage.live.encode(to: &wl)
        // A fork proof (Protocols/sync.md §2, tag 6): the initiator signed two control changes at seq 1.
        let forkScope = try Scope("longnan/wudu/station-017")
        let f1 = try Change.control(author: initiator.signingKey, scope: forkScope, seq: 1, prevHash: Change.zeroHash,
                                    hlc: HLCTimestamp(milliseconds: now, counter: 0), contentType: ContentType(rawValue: 0x8F),
                                    priority: .urgent, payload: [0x01])
        let f2 = try Change.control(author: initiator.signingKey, scope: forkScope, seq: 1, prevHash: Change.zeroHash,
                                    hlc: HLCTimestamp(milliseconds: now, counter: 0), contentType: ContentType(rawValue: 0x8F),
                                    priority: .urgent, payload: [0x02])
        var wf = ByteWriter()
        SessionMessage.fork(certificates: [initiator.certificate], proof: try ForkProof(f1, f2)).encode(to: &wf)
        var wk = ByteWriter()
        SessionMessage.keepAlive.encode(to: &wk)
        var wr = ByteWriter(), wc = ByteWriter()
        SessionMessage.refuse(.revoked).encode(to: &wr)
        SessionMessage.refuse(.certificateInvalid).encode(to: &wc)
        // The responder refusing the initiator after message 3 (Protocols/handshake.md §4.1): its first
        // transport message, under the second cipher state of Split(), nonce 0.
        var tr = try r.transport()
        let refuseSealed = try tr.seal(wr.bytes)
        // Batch 7 applied, its changes 0 and 3 not stored: relay quota full, held back (Protocols/sync.md §2, tag 8).
        // The sender's clock at the start of a session (Protocols/sync.md §2 and §4.3, tag 10).
        var wt = ByteWriter()
        SessionMessage.clock(milliseconds: now).encode(to: &wt)
        // Batch 7 applied, its change 1 not stored: the author's certificate is needed (tag 8, reason 6).
        var wn = ByteWriter()
        SessionMessage.ackRefused(id: 7, refused: [BatchRefusal(index: 1, reason: .certificateNeeded)]).encode(to: &wn)
        var wq = ByteWriter()
        SessionMessage.ackRefused(id: 7, refused: [BatchRefusal(index: 0, reason: .quota), BatchRefusal(index: 3, reason: .heldBack)]).encode(to: &wq)
        return [
            "root_ed25519_seed": Hex.encode([UInt8](repeating: 0x01, count: 32)),
            "initiator_ed25519_seed": Hex.encode([UInt8](repeating: 0x10, count: 32)),
            "initiator_x25519_secret": Hex.encode([UInt8](repeating: 0x11, count: 32)),
            "initiator_ephemeral_secret": Hex.encode([UInt8](repeating: 0x30, count: 32)),
            "initiator_certificate": Hex.encode(initiator.certificate.canonicalBytes),
            "responder_ed25519_seed": Hex.encode([UInt8](repeating: 0x20, count: 32)),
            "responder_x25519_secret": Hex.encode([UInt8](repeating: 0x21, count: 32)),
            "responder_ephemeral_secret": Hex.encode([UInt8](repeating: 0x40, count: 32)),
            "responder_certificate": Hex.encode(responder.certificate.canonicalBytes),
            "network_id": net.networkID,
            "prologue": Hex.encode(net.prologue),
            "message1": Hex.encode(m1),
            "message2": Hex.encode(m2),
            "message3": Hex.encode(m3),
            "handshake_hash": Hex.encode(i.handshakeHash),
            "first_transport_message_initiator_to_responder_done": Hex.encode(done),
            "first_transport_message_responder_to_initiator_refuse_revoked": Hex.encode(refuseSealed),
            "plaintext_done": Hex.encode(w.bytes),
            "plaintext_ack_7": Hex.encode(wa.bytes),
            "plaintext_live": Hex.encode(wl.bytes),
            "plaintext_fork": Hex.encode(wf.bytes),
            "plaintext_refuse_revoked": Hex.encode(wr.bytes),
            "plaintext_refuse_certificate_invalid": Hex.encode(wc.bytes),
            "plaintext_ack_refused_7_quota_0_held_back_3": Hex.encode(wq.bytes),
            "plaintext_keep_alive": Hex.encode(wk.bytes),
            "plaintext_clock_1717200000000": Hex.encode(wt.bytes),
            "plaintext_ack_refused_7_certificate_needed_1": Hex.encode(wn.bytes),
        ]
    }

    static var url: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Protocols/vectors/session.json")
    }

    @Test func vectorsMatch() throws {
        let fresh = try Self.generate()
        if ProcessInfo.processInfo.environment["FIELDSYNC_WRITE_VECTORS"] == "1" {
            let data = try JSONSerialization.data(withJSONObject: ["description": "FieldSync handshake and session vectors (Protocols/handshake.md, Protocols/sync.md). Keys are 32 repeated bytes; certificates are issued by the root at the given times.", "vector": fresh], options: [.prettyPrinted, .sortedKeys])
            try data.write(to: Self.url)
        }
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.url)) as? [String: Any])
        let stored = try #require(json["vector"] as? [String: String])
        #expect(stored == fresh)
        // The fork message decodes from the committed bytes alone and its proof verifies.
        let fork = try SessionMessage.decode(Hex.decode(try #require(stored["plaintext_fork"]))!)
        guard case let .fork(certs, proof) = fork else { Issue.record("not a fork message"); return }
        let rootKey = try Ed25519.SecretKey(seed: Self.key(0x01))
        try proof.verify(authorCertificate: try #require(certs.first), trust: TrustStore(root: rootKey.publicKey), now: 1_717_200_000_000)
    }
}
