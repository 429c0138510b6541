import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation

/// The seed corpora of the fuzz targets: the byte strings of the test vectors in `Protocols/vectors`
/// (valid and invalid), plus inputs built from the same test fixtures (a recorded sync for the session
/// target, the config example for the config target). `fieldsync-fuzz seeds` writes them as corpus
/// files; the suite replays them through every target.
public enum FuzzSeeds {
    /// A seed corpus could not be built: a vector file is missing or does not have the expected shape.
    public struct Missing: Error, CustomStringConvertible {
        /// What was missing.
        public var description: String
    }

    /// The seeds of `target`, built from the vector files in `vectors` (the `Protocols/vectors` folder).
    /// - Throws: `Missing` if a vector file or a field it should hold is missing.
    public static func corpus(for target: FuzzTarget, vectors: String) throws -> [[UInt8]] {
        let v = try VectorFiles(folder: vectors)
        switch target {
        case .encoding:
            let selectors: [String: UInt8] = [
                "varint": 0, "string": 1, "id128": 2, "scope": 3, "hlc": 4, "opid": 5, "fieldValue": 9, "action": 10,
                "recordEdit": 11, "changeBody": 12, "record": 13, "orset": 15, "svarint": 19, "bool": 19, "double": 19,
            ]
            let file = try v.file("encoding")
            return try (v.list(file, "valid") + v.list(file, "invalid")).compactMap { entry in
                guard let type = entry["type"] as? String, let selector = selectors[type] else { return nil }
                return [selector] + (try v.hex(entry, "hex"))
            }
        case .certificate:
            let id = try v.file("identity"), ch = try v.file("change"), s = try v.file("session")
            return [try v.hex(id, "countyAuthority", "certificate"), try v.hex(id, "device", "certificate"),
                    try v.hex(id, "member", "certificate"), try v.hex(ch, "receipt", "hqCertificate"),
                    try v.hex(s, "vector", "initiator_certificate"), try v.hex(s, "vector", "responder_certificate")]
        case .enrollmentRequest:
            let id = try v.file("identity")
            return [try v.hex(id, "countyAuthority", "request"), try v.hex(id, "device", "request")]
        case .change:
            let ch = try v.file("change")
            return [try v.hex(ch, "sealed", "change"), try v.hex(ch, "control", "change"), try v.hex(ch, "receipt", "change"),
                    try v.hex(ch, "fork", "second"), try v.hex(ch, "sealed", "header")]
        case .grant:
            return [try v.hex(try v.file("identity"), "keyGrant", "grant")]
        case .revocation:
            let id = try v.file("identity")
            return [try v.hex(id, "revocation", "revocation")] + (try v.list(id, "revocationBounds").map { try v.hex($0, "revocation") })
        case .receipt:
            let ch = try v.file("change")
            let receipt = try v.dict(ch, "receipt")
            return [try v.hex(receipt, "payload")] + (try v.list(receipt, "invalidPayloads").map { try v.hex($0, "payload") })
        case .forkProof:
            let ch = try v.file("change")
            return [try v.hex(ch, "fork", "proof"), try v.hex(ch, "chainFork", "proof")]
        case .reconMessage:
            let r = try v.file("reconciliation")
            return try (v.list(r, "messages") + v.list(r, "invalid")).map { try v.hex($0, "hex") }
        case .framing:
            let s = try v.file("session")
            let stream = try ["message1", "message2", "message3", "first_transport_message_initiator_to_responder_done"]
                .flatMap { FrameDecoder.frame(try v.hex(s, "vector", $0)) }
            return [[0] + stream, [6] + stream, [255] + stream, [31, 0, 0] + stream]
        case .beacon:
            let d = try v.file("discovery")
            return try (v.list(d, "valid") + v.list(d, "invalid")).map { try v.hex($0, "beacon") }
        case .handshakePayload:
            let s = try v.file("session"), id = try v.file("identity")
            return [[0, NetworkParameters.protocolVersion], [0, 2], [0],
                    [1] + (try v.hex(s, "vector", "responder_certificate")),
                    [2] + (try v.hex(s, "vector", "initiator_certificate")),
                    [2] + (try v.hex(id, "device", "certificate")) + (try v.hex(id, "countyAuthority", "certificate"))]
        case .configFile:
            return [Array(NodeConfigFile.examplePlain.utf8), Array(NodeConfigFile.example.utf8),
                    Array(#"{"device":{"dir":"/tmp/none","passphraseFile":"p"},"store":{"path":"/tmp/none/s.db"}}"#.utf8),
                    Array(#"{"device":{"dir":"d","keyFile":"k"},"store":{"path":"s"},"peers":["10.0.0.1:7000"],"sessions":{"max":0}}"#.utf8)]
        case .importFile:
            let csv = """
                id,kind,scope,category,priority,location.lat,location.lon,location.place,summary,reportedAt,reporter,notes
                ,incident,longnan/wudu/station-017,dispute,high,33.39,104.93,Wudu,"Boundary dispute, two households",2026-11-29T06:30:00.000Z,caller-118,"[""arrived""]"
                0123456789abcdef0123456789abcdef,incident,longnan/wudu/station-017,traffic,urgent,33.4,104.9,"Road ""G212"" north",Crash,1764397800000,caller-7,

                """
            let json = #"[{"kind":"incident","scope":"longnan/wudu/station-017","category":"fire","priority":"urgent","#
                + #""location":{"lat":33.39,"lon":104.93,"place":"Wudu"},"summary":"Barn fire","reportedAt":"2026-11-29","reporter":"r","notes":["a","b"]}]"#
            let lines = #"{"kind":"visit","scope":"longnan/wudu/station-017","subject":"s","visitor":"v","visitType":"routine","visitedAt":1764397800000}"#
                + "\n" + #"{"kind":"incident","scope":"bad scope"}"#
            return [[0] + Array(csv.utf8), [1] + Array(json.utf8), [1] + Array(lines.utf8), [0] + Array("\u{FEFF}kind,scope\r\n".utf8)]
        case .session:
            let fork = try v.hex(try v.file("session"), "vector", "plaintext_fork")
            let transcript = SessionSeeds.transcript(live: false)
            let live = SessionSeeds.transcript(live: true)
            return [SessionInput.encode(live: false, messages: transcript),
                    SessionInput.encode(live: true, messages: live),
                    SessionInput.encode(live: false, messages: Array(transcript.prefix(1)) + [fork]),
                    SessionInput.encode(live: true, messages: [[4], [5], [3, 0], [2, 0, 0, 0]]),
                    // Batches prepared elsewhere, as a node does: six batches of one change each, handed
                    // back together (bit 2) once three are out (bit 3), so some commit in one transaction.
                    SessionInput.encode(flags: 0b1110, messages: SessionSeeds.transcript(live: false, changes: 6, maxBatchBytes: 1_000)),
                    SessionInput.encode(flags: 0b0011, messages: live)]
        }
    }
}

/// The vector files, read as JSON.
struct VectorFiles {
    let folder: String

    init(folder: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw FuzzSeeds.Missing(description: "\(folder) is not the vectors folder (Protocols/vectors)")
        }
        self.folder = folder
    }

    func file(_ name: String) throws -> [String: Any] {
        let path = folder + "/" + name + ".json"
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw FuzzSeeds.Missing(description: "\(path) is missing or not a JSON object")
        }
        return object
    }

    func dict(_ object: [String: Any], _ key: String) throws -> [String: Any] {
        guard let d = object[key] as? [String: Any] else { throw FuzzSeeds.Missing(description: "no object `\(key)`") }
        return d
    }

    func list(_ object: [String: Any], _ key: String) throws -> [[String: Any]] {
        guard let l = object[key] as? [[String: Any]] else { throw FuzzSeeds.Missing(description: "no list `\(key)`") }
        return l
    }

    func hex(_ object: [String: Any], _ keys: String...) throws -> [UInt8] {
        var o = object
        for k in keys.dropLast() { o = try dict(o, k) }
        guard let text = o[keys.last!] as? String, let bytes = Hex.decode(text) else {
            throw FuzzSeeds.Missing(description: "no hex string `\(keys.joined(separator: "."))`")
        }
        return bytes
    }
}

/// A recorded sync between the session fixture's two devices, from B's side.
enum SessionSeeds {
    /// The plaintexts of B's transport messages in a full sync with A, B holding `changes` incidents of
    /// the station that A lacks (B's real session; A's side replays the fixture's handshake); with
    /// `maxBatchBytes`, B's batches are that small (about one change each at 1,000).
    static func transcript(live: Bool, changes: Int = 3, maxBatchBytes: Int? = nil) -> [[UInt8]] {
        let f = SessionFixture.shared
        let now = SessionFixture.now
        let rb = Replicator(identity: f.b, trust: TrustStore(root: f.root.publicKey), store: MemoryStore())
        rb.addKey(f.epochKey)
        for i in 0..<changes {
            let id = RecordID(ID128(high: 0xF0, low: UInt64(i)))
            let edit = Incident.create(id: id, scope: SessionFixture.station, author: f.b.id, hlc: HLCTimestamp(milliseconds: now, counter: UInt16(i)),
                                       category: .dispute, priority: .high, location: Location(latitude: 33.39, longitude: 104.93, placeName: "Wudu"),
                                       summary: "fuzz seed \(i)", reportedAt: Int64(now), reporter: "caller-\(i)")
            _ = try? rb.write([edit], scope: SessionFixture.station, priority: i == 0 ? .urgent : .normal, now: now)
        }
        var config = SessionConfiguration(network: SessionFixture.network, salt: Array(16..<32))
        config.live = live
        if let maxBatchBytes { config.maxBatchBytes = maxBatchBytes; config.firstBatchBytes = maxBatchBytes }
        let b = SyncSession(initiator: false, replicator: rb, configuration: config, now: now,
                            handshake: SessionHandshake(initiator: false, identity: f.b, trust: TrustStore(root: f.root.publicKey),
                                                        network: SessionFixture.network,
                                                        ephemeral: try! X25519.SecretKey(secret: SessionFixture.secret(6))))
        let a = f.sessionA(live: live)
        var aReceive = f.aTransport
        var decoder = FrameDecoder()
        var plaintexts: [[UInt8]] = []
        var toB = a.start().frames.map(\.bytes), toA = b.start().frames.map(\.bytes)
        var rounds = 0
        while rounds < 100 {
            rounds += 1
            var progress = false
            while !toB.isEmpty {
                progress = true
                toA += b.receive(toB.removeFirst(), now: now).frames.map(\.bytes)
            }
            while !toA.isEmpty {
                progress = true
                let frame = toA.removeFirst()
                decoder.append(frame)
                toB += a.receive(frame, now: now).frames.map(\.bytes)
            }
            if !progress { break }
        }
        while let body = try? decoder.next() {
            if body == f.messages[1] { continue }
            if let plain = try? aReceive.open(body) { plaintexts.append(plain) }
        }
        return plaintexts
    }
}
