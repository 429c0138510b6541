import FieldSyncTestSupport
import FieldSyncCore
import Foundation
import Testing

@_spi(Seeded) @testable import FieldSyncCrypto

/// Builds the interoperability vectors of Protocols/vectors/{identity,change}.json from fixed inputs, and
/// checks the committed files byte for byte. Regenerate (after a deliberate format change only) with
/// `FIELDSYNC_WRITE_VECTORS=1 swift test --filter VectorTests`.
enum Vectors {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func url(_ name: String) -> URL { packageRoot.appendingPathComponent("Protocols/vectors/\(name)") }

    /// 32 bytes `start, start+1, ...`.
    static func seq32(_ start: UInt8) -> [UInt8] { (0..<32).map { start &+ UInt8($0) } }
    static func seq(_ start: UInt8, _ n: Int) -> [UInt8] { (0..<n).map { start &+ UInt8($0) } }
    static func h(_ b: [UInt8]) -> String { Hex.encode(b) }

    static let notBefore: UInt64 = 1_790_000_000_000
    static let notAfter: UInt64 = 1_790_604_800_000

    struct Keys {
        let rootSeed = seq32(0x00), countySeed = seq32(0x20), countyX = seq32(0x40), deviceSeed = seq32(0x60), deviceX = seq32(0x80)
        let memberSeed = seq32(0xA0), memberX = seq32(0xC0)
        let root: Authority, county: Authority, device: Ed25519.SecretKey, deviceAgreement: X25519.SecretKey
        let member: Ed25519.SecretKey, memberAgreement: X25519.SecretKey
        let countyRequest: EnrollmentRequest, countyCert: Certificate, deviceRequest: EnrollmentRequest, deviceCert: Certificate
        let memberCert: Certificate

        init() throws {
            root = Authority(root: try Ed25519.SecretKey(seed: SecretBytes(copying: rootSeed)))
            let ck = try Ed25519.SecretKey(seed: SecretBytes(copying: countySeed))
            let cx = try X25519.SecretKey(secret: SecretBytes(copying: countyX))
            let wudu = try Scope("longnan/wudu")
            countyRequest = try EnrollmentRequest(signingKey: ck, agreementKey: cx.publicKey, requestedRole: .county, requestedScopes: [wudu],
                                                  createdAt: notBefore - 1000, label: "wudu county authority")
            countyCert = try root.delegate(countyRequest, scopes: [wudu], notBefore: notBefore, notAfter: notBefore + 365 * 86_400_000, serial: 7)
            county = try Authority(delegated: ck, certificate: countyCert)
            device = try Ed25519.SecretKey(seed: SecretBytes(copying: deviceSeed))
            deviceAgreement = try X25519.SecretKey(secret: SecretBytes(copying: deviceX))
            let station = try Scope("longnan/wudu/station-017")
            deviceRequest = try EnrollmentRequest(signingKey: device, agreementKey: deviceAgreement.publicKey, requestedRole: .backpack,
                                                  requestedScopes: [station, try Scope("longnan/wudu/station-017/village-0412")],
                                                  createdAt: notBefore - 500, label: "backpack 17")
            deviceCert = try county.enroll(deviceRequest, role: .backpack, scopes: [station], notBefore: notBefore, notAfter: notAfter, serial: 4242)
            member = try Ed25519.SecretKey(seed: SecretBytes(copying: memberSeed))
            memberAgreement = try X25519.SecretKey(secret: SecretBytes(copying: memberX))
            let mreq = try EnrollmentRequest(signingKey: member, agreementKey: memberAgreement.publicKey, requestedRole: .command,
                                             requestedScopes: [wudu], createdAt: notBefore, label: "command 3")
            memberCert = try root.enroll(mreq, role: .command, scopes: [wudu], notBefore: notBefore, notAfter: notAfter, serial: 3)
        }

        var trust: TrustStore {
            var t = TrustStore(root: root.signingKey.publicKey)
            try! t.addAuthority(countyCert, now: notBefore)
            return t
        }
    }

    static let epochKeyBytes = seq32(0xE0)
    static let grantSeeds = [seq32(0x11), seq32(0x33)]

    static func identity() throws -> [String: Any] {
        let k = try Keys()
        let epochKey = try EpochKey(scope: Scope("longnan/wudu/station-017"), epoch: 5, key: SecretBytes(copying: epochKeyBytes))
        let grant = try KeyGrant.issue(epochKey: epochKey, members: [k.deviceCert, k.memberCert], issuedAt: notBefore + 60_000,
                                       by: k.county, ephemeralSeeds: grantSeeds)
        let rev = try Revocation(certificate: k.deviceCert, revokedAt: HLCTimestamp(milliseconds: notBefore + 3_600_000, counter: 2),
                                 reason: .stolen, note: "reported by radio", by: k.county)
        return [
            "description": "FieldSync identity vectors (Protocols/identity.md). Seeds are 32 bytes; all other values are derived.",
            "root": ["seed": h(k.rootSeed), "publicKey": h(k.root.signingKey.publicKey.bytes), "keyID": k.root.keyID.description],
            "countyAuthority": [
                "seed": h(k.countySeed), "x25519Secret": h(k.countyX), "publicKey": h(k.county.signingKey.publicKey.bytes),
                "keyID": k.county.keyID.description, "request": h(k.countyRequest.canonicalBytes),
                "certificateTBS": h(k.countyCert.tbsBytes), "certificateSignedDigest": h(k.countyCert.signedDigest),
                "certificate": h(k.countyCert.canonicalBytes),
            ],
            "device": [
                "seed": h(k.deviceSeed), "x25519Secret": h(k.deviceX), "publicKey": h(k.device.publicKey.bytes),
                "x25519Public": h(k.deviceAgreement.publicKey.bytes), "deviceID": k.deviceCert.subject.description,
                "request": h(k.deviceRequest.canonicalBytes), "requestTBS": h(k.deviceRequest.tbsBytes),
                "certificateTBS": h(k.deviceCert.tbsBytes), "certificateSignedDigest": h(k.deviceCert.signedDigest),
                "certificate": h(k.deviceCert.canonicalBytes),
            ],
            "member": ["seed": h(k.memberSeed), "x25519Secret": h(k.memberX), "certificate": h(k.memberCert.canonicalBytes)],
            "keyGrant": [
                "scope": "longnan/wudu/station-017", "epoch": 5, "epochKey": h(epochKeyBytes),
                "ephemeralSeeds": grantSeeds.map(h), "grant": h(grant.canonicalBytes), "signedDigest": h(grant.signedDigest),
            ],
            "revocation": ["revocation": h(rev.canonicalBytes), "signedDigest": h(rev.signedDigest)],
            "revocationBounds": try revocationBounds(k),
            "verifyAt": notBefore + 1000,
        ]
    }

    static let rogueSeed = seq32(0xF0)

    /// One revocation per row of the table of Protocols/identity.md §5, each with the outcome every
    /// verifier must reach from the root key alone: "accept" or the error code. The out-of-bounds ones
    /// are signed with the unchecked initializer, as a rogue county would.
    static func revocationBounds(_ k: Keys) throws -> [[String: Any]] {
        let at = HLCTimestamp(milliseconds: notBefore + 7_200_000, counter: 0)
        func county(_ device: DeviceID, serial: UInt64, revoked: Certificate?, at t: HLCTimestamp = at) throws -> Revocation {
            try Revocation(unchecked: device, serial: serial, revokedAt: t, reason: .compromised, note: "", by: k.county,
                           issuerCertificate: k.countyCert, revokedCertificate: revoked)
        }
        // A device certificate the county signs for the root's own key (subject = the root's id).
        let forgedRootCert = try Certificate(kind: .device, signingKey: k.root.signingKey.publicKey, agreementKey: k.deviceAgreement.publicKey,
                                             role: .backpack, scopes: [Scope("longnan/wudu")], notBefore: notBefore, notAfter: notAfter,
                                             serial: 99, issuer: k.county.signingKey)
        let rogue = Authority(root: try Ed25519.SecretKey(seed: SecretBytes(copying: rogueSeed)))
        let rows: [(String, Revocation, String)] = [
            ("root revokes a county-issued device", try Revocation(device: k.deviceCert.subject, serial: 4242, revokedAt: at, reason: .lost,
                                                                   note: "", by: k.root), "accept"),
            ("root revokes a county authority", try Revocation(certificate: k.countyCert, revokedAt: at, reason: .compromised, note: "",
                                                               by: k.root), "accept"),
            ("county revokes a device it issued", try Revocation(certificate: k.deviceCert, revokedAt: at, reason: .lost, note: "", by: k.county),
             "accept"),
            ("root revokes itself", try Revocation(unchecked: k.root.keyID, serial: 0, revokedAt: at, reason: .other, note: "", by: k.root,
                                                   issuerCertificate: nil, revokedCertificate: nil), "outsideDelegation"),
            ("county revokes the root", try county(k.root.keyID, serial: 99, revoked: forgedRootCert), "outsideDelegation"),
            ("county revokes a root-issued device", try county(k.memberCert.subject, serial: 3, revoked: k.memberCert), "outsideDelegation"),
            ("county revokes its own authority certificate", try county(k.countyCert.subject, serial: 7, revoked: k.countyCert), "outsideDelegation"),
            ("county revokes without carrying the certificate", try county(k.deviceCert.subject, serial: 4242, revoked: nil), "outsideDelegation"),
            ("county signs after its certificate expired", try county(k.deviceCert.subject, serial: 4242, revoked: k.deviceCert,
                                                                     at: HLCTimestamp(milliseconds: k.countyCert.notAfter + 86_400_000, counter: 0)),
             "expired"),
            ("another root's revocation", try Revocation(device: k.deviceCert.subject, serial: 4242, revokedAt: at, reason: .lost, note: "",
                                                        by: rogue), "unknownAuthority"),
        ]
        return rows.map { ["case": $0.0, "revocation": h($0.1.canonicalBytes), "expect": $0.2] }
    }

    static let dataKey = seq32(0x50)
    static let payloadNonce = seq(0x70, 24)
    static let slotNonce = seq(0x90, 24)
    static let archiveSecret = seq32(0xB0)
    static let archiveSeed = seq32(0xD0)
    static let payload = Array("{\"incident\":\"0412-7\",\"status\":\"dispatched\"} (opaque CRDT operations in real use)".utf8)

    static func change() throws -> [String: Any] {
        let k = try Keys()
        let epochKey = try EpochKey(scope: Scope("longnan/wudu/station-017"), epoch: 5, key: SecretBytes(copying: epochKeyBytes))
        let archive = try X25519.SecretKey(secret: SecretBytes(copying: archiveSecret))
        let scope = try Scope("longnan/wudu/station-017/village-0412")
        let hlc1 = HLCTimestamp(milliseconds: notBefore + 120_000, counter: 0)
        let c1 = try Change.seal(author: k.device, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc1, contentType: .records,
                                 priority: .urgent, payload: payload, readers: [epochKey], archive: archive.publicKey,
                                 randomness: SealingRandomness(dataKey: dataKey, payloadNonce: payloadNonce, slotNonces: [slotNonce],
                                                               archiveSeed: archiveSeed))
        let rev = try Revocation(device: k.memberCert.subject, serial: 3, revokedAt: HLCTimestamp(milliseconds: notBefore + 100_000, counter: 0),
                                 reason: .lost, note: "", by: k.root)
        let c2 = try Change.control(author: k.device, scope: scope, seq: 2, prevHash: c1.id, hlc: HLCTimestamp(milliseconds: notBefore + 130_000, counter: 1),
                                    contentType: .revocation, priority: .urgent, payload: rev.canonicalBytes)
        let c1b = try Change.seal(author: k.device, scope: scope, seq: 1, prevHash: Change.zeroHash, hlc: hlc1, contentType: .records,
                                  priority: .normal, payload: Array("a different first change".utf8), readers: [epochKey], archive: nil,
                                  randomness: SealingRandomness(dataKey: dataKey, payloadNonce: payloadNonce, slotNonces: [slotNonce], archiveSeed: nil))
        let fork = try ForkProof(c1, c1b)
        let chainFork = try ForkProof(c2, c1b)  // c2 follows c1, not c1b: a chain proof
        let hh = c1.header.hash
        let receipt = try receiptVector(k, device: scope, deviceLogHead: c2)
        return [
            "description": "FieldSync change vectors (Protocols/change.md). Keys and certificates come from identity.json.",
            "epochKey": ["scope": "longnan/wudu/station-017", "epoch": 5, "key": h(epochKeyBytes)],
            "archive": ["x25519Secret": h(archiveSecret), "x25519Public": h(archive.publicKey.bytes),
                        "keyID": KeySlot.archiveKeyID(archive.publicKey).description, "ephemeralSeed": h(archiveSeed)],
            "sealed": [
                "scope": scope.path, "seq": 1, "hlc": String(hlc1.raw), "priority": 0, "contentType": 1,
                "dataKey": h(dataKey), "payloadNonce": h(payloadNonce), "slotNonce": h(slotNonce), "payload": h(payload),
                "header": h(c1.header.canonicalBytes), "headerHash": h(hh),
                "slot0AssociatedData": h(KeySlot.associatedData(headerHash: hh, index: 0, recipient: c1.slots[0].recipient)),
                "signedDigest": h(c1.signedDigest), "change": h(c1.canonicalBytes), "id": h(c1.id),
            ],
            "control": ["change": h(c2.canonicalBytes), "id": h(c2.id), "prevHash": h(c1.id), "payloadIsRevocation": h(rev.canonicalBytes)],
            "fork": ["second": h(c1b.canonicalBytes), "proof": h(fork.canonicalBytes)],
            "chainFork": ["proof": h(chainFork.canonicalBytes), "note": "control change (seq 2, prevHash = id of sealed.change) after fork.second (seq 1)"],
            "receipt": receipt,
            "verifyAt": notBefore + 200_000,
        ]
    }

    static let hqSeed = seq32(0x10)
    static let hqX = seq32(0x30)

    /// The receipt payload (Protocols/change.md §2.1), encoded here field by field from the spec rather
    /// than through the protocol layer's `Receipt` (which `FieldSyncProtocolTests` checks against these bytes).
    static func receiptPayload(_ heads: [(author: DeviceID, scope: Scope, seq: UInt64)]) -> [UInt8] {
        var w = ByteWriter()
        w.writeVarint(UInt64(heads.count))
        for head in heads {
            w.writeRaw(head.author.canonicalBytes)  // DeviceID: 16 raw bytes
            w.writeString(head.scope.path)          // Scope: string
            w.writeVarint(head.seq)
        }
        return w.bytes
    }

    /// An HQ device (enrolled by the root) receipts the device's log up to seq 2 and the member's log
    /// in `longnan/wudu` up to seq 7, in one control change of type 0x82 in its own `longnan` log.
    static func receiptVector(_ k: Keys, device deviceScope: Scope, deviceLogHead: Change) throws -> [String: Any] {
        let hq = try Ed25519.SecretKey(seed: SecretBytes(copying: hqSeed))
        let hqAgreement = try X25519.SecretKey(secret: SecretBytes(copying: hqX))
        let longnan = try Scope("longnan"), wudu = try Scope("longnan/wudu")
        let req = try EnrollmentRequest(signingKey: hq, agreementKey: hqAgreement.publicKey, requestedRole: .hq,
                                        requestedScopes: [longnan], createdAt: notBefore, label: "hq 1")
        let cert = try k.root.enroll(req, role: .hq, scopes: [longnan], notBefore: notBefore, notAfter: notAfter, serial: 1)
        var heads: [(author: DeviceID, scope: Scope, seq: UInt64)] = [
            (k.deviceCert.subject, deviceScope, deviceLogHead.header.seq), (k.memberCert.subject, wudu, 7),
        ]
        heads.sort { $0.author != $1.author ? $0.author < $1.author : $0.scope < $1.scope }
        let payload = receiptPayload(heads)
        let change = try Change.control(author: hq, scope: longnan, seq: 1, prevHash: Change.zeroHash,
                                        hlc: HLCTimestamp(milliseconds: notBefore + 140_000, counter: 0),
                                        contentType: .receipt, priority: .urgent, payload: payload)
        return [
            "hqSeed": h(hqSeed), "hqX25519Secret": h(hqX), "hqCertificate": h(cert.canonicalBytes),
            "heads": heads.map { ["author": $0.author.description, "scope": $0.scope.path, "seq": $0.seq] },
            "payload": h(payload), "change": h(change.canonicalBytes), "id": h(change.id),
            "invalidPayloads": [
                ["name": "logs out of order", "payload": h(receiptPayload(Array(heads.reversed()))), "error": "nonCanonicalOrder"],
                ["name": "same log twice", "payload": h(receiptPayload([heads[0], heads[0]])), "error": "nonCanonicalOrder"],
                ["name": "trailing byte", "payload": h(payload + [0]), "error": "trailingBytes"],
                ["name": "count larger than the input", "payload": h([0x05] + Array(payload.dropFirst())), "error": "lengthTooLarge"],
                ["name": "truncated seq", "payload": h(Array(payload.dropLast())), "error": "truncated"],
            ] as [[String: Any]],
        ]
    }

    static func json(_ obj: [String: Any]) throws -> Data {
        var d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        d.append(0x0A)
        return d
    }
}

@Suite(.ownThread) struct VectorTests {
    func check(_ name: String, _ build: () throws -> [String: Any]) throws {
        let generated = try Vectors.json(build())
        if ProcessInfo.processInfo.environment["FIELDSYNC_WRITE_VECTORS"] == "1" {
            try FileManager.default.createDirectory(at: Vectors.url(""), withIntermediateDirectories: true)
            try generated.write(to: Vectors.url(name))
        }
        let committed = try Data(contentsOf: Vectors.url(name))
        #expect(committed == generated, "\(name) differs from what the code produces")
    }

    func load(_ name: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Vectors.url(name))) as! [String: Any]
    }

    func bytes(_ obj: [String: Any], _ path: String...) -> [UInt8] {
        var o: Any = obj
        for p in path { o = (o as! [String: Any])[p]! }
        return Hex.decode(o as! String)!
    }

    /// Runs `python3 args`, returning the exit status and the output (nil if python3 cannot start).
    static func python(_ args: [String]) -> (status: Int32, output: String)? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return nil }
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self))
    }

    static let pythonWithCryptography = python(["-c", "import cryptography"])?.status == 0
    static let pythonWithNoise = python(["-c", "import noise.connection"])?.status == 0
    /// In CI (`CI` set, as `.ci/run`'s environment has it) the checkers run or fail: `.ci/run` installs
    /// what they need, and a check that cannot run there must not pass as skipped.
    static let inCI = ProcessInfo.processInfo.environment["CI"] != nil

    /// The independent checker (written from the specs, OpenSSL instead of libsodium) agrees with the
    /// committed vectors, including the revocation bounds table.
    @Test(.enabled(if: pythonWithCryptography || inCI, "python3 with pyca/cryptography is installed (.ci/run installs it)"))
    func independentCheckerAgrees() throws {
        let r = try #require(Self.python([Vectors.url("check_vectors.py").path]))
        #expect(r.status == 0, "\(r.output)")
    }

    /// A second Noise implementation (the Python `noiseprotocol` package, no Swift and no libsodium)
    /// reproduces every ciphertext and the handshake hash of the Noise vectors our suite asserts
    /// (attack case 4's differential test).
    @Test(.enabled(if: pythonWithNoise || inCI, "python3 with noiseprotocol is installed (.ci/run installs it)"))
    func secondNoiseImplementationReproducesTheVectors() throws {
        let r = try #require(Self.python([Vectors.url("check_noise_vector.py").path]))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("Noise_XX_25519_ChaChaPoly_BLAKE2b: ciphertexts and handshake hash reproduced"), "\(r.output)")
    }

    @Test func identityVectorsMatch() throws { try check("identity.json", Vectors.identity) }
    @Test func changeVectorsMatch() throws { try check("change.json", Vectors.change) }

    /// Uses the committed bytes alone (as another implementation would): decode, verify, open.
    @Test func committedBytesVerifyAndOpen() throws {
        let id = try load("identity.json"), ch = try load("change.json")
        let now = (id["verifyAt"] as! NSNumber).uint64Value
        var trust = TrustStore(root: try Ed25519.PublicKey(bytes: bytes(id, "root", "publicKey")))
        try trust.addAuthority(try Certificate(canonicalBytes: bytes(id, "countyAuthority", "certificate")), now: now)
        let device = try Certificate(canonicalBytes: bytes(id, "device", "certificate"))
        try trust.verify(device, now: now)
        try EnrollmentRequest(canonicalBytes: bytes(id, "device", "request")).verify()
        let grant = try KeyGrant(canonicalBytes: bytes(id, "keyGrant", "grant"))
        try grant.verify(trust: trust)
        let x = try X25519.SecretKey(secret: SecretBytes(copying: bytes(id, "device", "x25519Secret")))
        let epochKey = try grant.open(as: device.subject, agreementKey: x)
        #expect(epochKey.key.unsafeCopy() == bytes(ch, "epochKey", "key"))
        try Revocation(canonicalBytes: bytes(id, "revocation", "revocation")).verify(trust: trust)
        // The bounds table, from the root key alone (no authority known: revocations carry what they need).
        let rootOnly = TrustStore(root: trust.root)
        for row in id["revocationBounds"] as! [[String: Any]] {
            let r = try Revocation(canonicalBytes: Hex.decode(row["revocation"] as! String)!)
            let code = identityCode { try r.verify(trust: rootOnly) }
            #expect((code?.rawValue ?? "accept") == row["expect"] as! String, "\(row["case"]!)")
        }

        let at = (ch["verifyAt"] as! NSNumber).uint64Value
        let c1 = try Change(canonicalBytes: bytes(ch, "sealed", "change"))
        try c1.verify(authorCertificate: device, trust: trust, now: at)
        #expect(try c1.open(with: [epochKey]) == bytes(ch, "sealed", "payload"))
        let archive = try X25519.SecretKey(secret: SecretBytes(copying: bytes(ch, "archive", "x25519Secret")))
        #expect(try c1.openArchive(with: archive) == bytes(ch, "sealed", "payload"))
        #expect(c1.id == bytes(ch, "sealed", "id"))
        let c2 = try Change(canonicalBytes: bytes(ch, "control", "change"))
        try c2.verify(authorCertificate: device, trust: trust, now: at)
        #expect(c2.header.prevHash == c1.id)
        let fork = try ForkProof(canonicalBytes: bytes(ch, "fork", "proof"))
        try fork.verify(authorCertificate: device, trust: trust, now: at)
        #expect(fork.kind == .position)
        let chainFork = try ForkProof(canonicalBytes: bytes(ch, "chainFork", "proof"))
        try chainFork.verify(authorCertificate: device, trust: trust, now: at)
        #expect(chainFork.kind == .chain && chainFork.first.header.seq == 1 && chainFork.second == c2)
        // The receipt: an HQ-role certificate from the root, and a control change of type 0x82 whose
        // clear payload is the receipt (decoded in FieldSyncProtocolTests.VectorTests).
        let hq = try Certificate(canonicalBytes: bytes(ch, "receipt", "hqCertificate"))
        try trust.verify(hq, now: at)
        #expect(hq.role == .hq)
        let rc = try Change(canonicalBytes: bytes(ch, "receipt", "change"))
        try rc.verify(authorCertificate: hq, trust: trust, now: at)
        #expect(rc.header.contentType == .receipt && rc.header.keyEpoch == 0 && rc.slots.isEmpty)
        #expect(rc.payload == bytes(ch, "receipt", "payload") && rc.id == bytes(ch, "receipt", "id"))
    }
}
