import FieldSyncCore
import FieldSyncCrypto
import Foundation
@testable import FieldSyncProtocol
import Testing

/// The fixed-key vectors of `Protocols/vectors/reconciliation.json`.
///
/// Everything below is computed from the fixed inputs by this implementation and compared byte for
/// byte with the file. Set `FIELDSYNC_WRITE_VECTORS=1` to rewrite the file after a deliberate,
/// versioned format change.
@Suite struct ReconciliationVectorTests {
    static let saltI: [UInt8] = Array(0x40..<0x50)
    static let saltR: [UInt8] = Array(0x50..<0x60)
    static let logs: [LogID] = [
        LogID(author: DeviceID(hex: "a1a2a3a4a5a6a7a8a9aaabacadaeaf00")!, scope: try! Scope("longnan/wudu/station-017")),
        LogID(author: DeviceID(hex: "a1a2a3a4a5a6a7a8a9aaabacadaeaf00")!, scope: try! Scope("longnan/wudu/station-017/village-0412")),
        LogID(author: DeviceID(hex: "0123456789abcdef0123456789abcdef")!, scope: try! Scope("longnan/cheng")),
    ]

    static func hash(_ i: Int, _ h: UInt32) -> [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: i &* 31 &+ Int(h) &* 7 &+ $0) } }

    static let holdings = Holdings([
        LogHoldings(log: logs[0], height: 120, headHash: hash(0, 120)),
        LogHoldings(log: logs[1], intervals: [HeldInterval(start: 1, end: 7, endHash: hash(1, 7)),
                                              HeldInterval(start: 10, end: 12, endHash: hash(1, 12))]),
        LogHoldings(log: logs[2], intervals: [HeldInterval(start: 300, end: 301, endHash: hash(2, 301))]),
    ])

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// The vector file's content, as computed by this implementation.
    static func computed() -> [String: Any] {
        let keys = SipHashReconciliationHashing(sessionKey: testSessionKey)
        let hasher = keys.elementHasher(initiatorSalt: saltI, responderSalt: saltR)
        var out: [String: Any] = [
            "description": "FieldSync reconciliation v1 vectors (Protocols/sync-reconciliation.md). Integers are hex strings (64-bit values as 16 digits, big-endian); byte strings are hex.",
            "sessionKey": Hex.encode(testSessionKey),
            "saltInitiator": Hex.encode(saltI),
            "saltResponder": Hex.encode(saltR),
            "digestKey": Hex.encode(keys.derive(label: "fieldsync/recon/v1/digest", extra: [])),
            "elementKey": Hex.encode(keys.derive(label: "fieldsync/recon/v1/element", extra: saltI + saltR)),
            "sipHashPaperVector": ["key": Hex.encode(Array(0..<16) as [UInt8]), "message": Hex.encode(Array(0..<15) as [UInt8]),
                                   "output": hex(SipHash24(key: Array(0..<16)).hash(Array(0..<15))),
                                   // The same value as the 8 bytes the reference code writes (little-endian).
                                   "outputBytes": Hex.encode(withUnsafeBytes(of: SipHash24(key: Array(0..<16)).hash(Array(0..<15)).littleEndian) { Array($0) })],
        ]
        out["logs"] = logs.map { ["author": $0.author.description, "scope": $0.scope.path,
                                  "canonical": Hex.encode($0.canonicalBytes), "tag": hex(hasher.tag($0))] }
        out["holdings"] = holdings.logs.map { l in
            ["log": l.log.description,
             "intervals": l.intervals.map { ["start": "\($0.start)", "end": "\($0.end)", "endHash": Hex.encode($0.endHash)] }]
        }
        out["digestInput"] = Hex.encode(holdings.canonicalDigestInput)
        out["digest"] = Hex.encode(keys.holdingsDigest(holdings.canonicalDigestInput))
        let elements = holdings.logs.flatMap { HeadElement.elements(tag: hasher.tag($0.log), intervals: $0.intervals.map(\.summary)) }.sorted()
        out["elements"] = elements.map { ["element": $0.description, "checksum": hex(hasher.checksum($0))] }
        var mapping = SymbolIndexMapping(seed: hasher.checksum(elements[0]))
        out["mappingOfFirstElement"] = [hex(mapping.index)] + (0..<12).map { _ in hex(mapping.advance()) }
        var encoder = RatelessEncoder(elements: elements, hasher: hasher)
        let symbols = encoder.nextSymbols(10)
        let entries = holdings.logs.map { HeadEntry(tag: hasher.tag($0.log), intervals: $0.intervals.map(\.summary)) }.sorted { $0.tag < $1.tag }
        let l2: UInt8 = 4
        let messages: [(String, ReconMessage)] = [
            ("hello", .hello(Hello(elementCount: UInt64(holdings.elementCount), digest: keys.holdingsDigest(holdings.canonicalDigestInput), salt: saltI))),
            ("estimate", .estimate(Estimate(log2Buckets: l2, cells: Estimate.cells(of: elements, checksums: elements.map { hasher.checksum($0) }, log2Buckets: l2)))),
            ("symbols 0..<10", .symbols(SymbolBatch(firstIndex: 0, symbols: symbols))),
            ("more", .more(received: 10)),
            ("fullHeads", .fullHeads(entries)),
            ("decoded", .decoded([entries[0], HeadEntry(tag: entries[1].tag, intervals: [])])),
            ("names", .names(holdings.logs.map { LogName(tag: hasher.tag($0.log), log: $0.log) }.sorted { $0.tag < $1.tag })),
            // A list in parts (section 6.4): the parts, then the list's final message with the rest.
            ("fullHeadsPart", .fullHeadsPart(Array(entries.prefix(2)))),
            ("decodedPart", .decodedPart([entries[0]])),
            ("namesPart", .namesPart(Array(holdings.logs.map { LogName(tag: hasher.tag($0.log), log: $0.log) }.sorted { $0.tag < $1.tag }.prefix(1)))),
        ]
        out["messages"] = messages.map { ["name": $0.0, "hex": Hex.encode($0.1.canonicalBytes)] }
        out["invalid"] = invalid.map { ["name": $0.0, "hex": $0.1, "error": $0.2.rawValue] }
        return out
    }

    static let invalid: [(String, String, DecodingError.Code)] = [
        ("empty", "", .truncated),
        ("unknown type", "0b", .unknownTag),
        ("empty fullHeadsPart", "0800", .invalidValue),
        ("empty namesPart", "0a00", .invalidValue),
        ("hello version 2", "0102", .unsupportedVersion),
        ("hello truncated digest", "01010a0001", .truncated),
        ("estimate 2^3 buckets", "0203", .invalidValue),
        ("symbols count beyond input", "0300ffff03", .lengthTooLarge),
        ("more with non-minimal varint", "048000", .nonCanonicalVarint),
        ("more with trailing byte", "040100", .trailingBytes),
        ("fullHeads entry without intervals", "0501000000000000000100", .invalidValue),
        ("decoded tags out of order", "0602000000000000000200000000000000000100", .nonCanonicalOrder),
        ("decoded interval count beyond input", "06" + "01" + "0000000000000001" + "02" + "0103" + "00000000" + "0406" + "000000", .lengthTooLarge),
        ("decoded adjacent intervals", "06" + "01" + "0000000000000001" + "02" + "0103" + "00000000" + "0406" + "00000000", .invalidValue),
        ("names with invalid scope", "07010000000000000001a1a2a3a4a5a6a7a8a9aaabacadaeaf00012f", .invalidValue),
    ]

    static var url: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/reconciliation.json")
    }

    static func normalized(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }

    @Test func vectorsMatchTheSpecFile() throws {
        if ProcessInfo.processInfo.environment["FIELDSYNC_WRITE_VECTORS"] == "1" {
            try Self.normalized(Self.computed()).write(to: Self.url)
        }
        let onDisk = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.url))
        let mine = try JSONSerialization.jsonObject(with: Self.normalized(Self.computed()))
        let a = try #require(onDisk as? [String: Any]), b = try #require(mine as? [String: Any])
        #expect(Set(a.keys) == Set(b.keys))
        for key in a.keys.sorted() {
            #expect(try Self.normalized([key: a[key]!]) == Self.normalized([key: b[key] ?? NSNull()]), "vector \(key) differs")
        }
    }

    @Test func fileMessagesDecodeAndInvalidOnesFail() throws {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.url)) as? [String: Any])
        for m in try #require(json["messages"] as? [[String: String]]) {
            let bytes = try #require(Hex.decode(m["hex"]!))
            #expect(try ReconMessage(canonicalBytes: bytes).canonicalBytes == bytes, "\(m["name"]!)")
        }
        for v in try #require(json["invalid"] as? [[String: String]]) {
            let bytes = try #require(Hex.decode(v["hex"]!), "bad hex in \(v["name"]!)")
            do {
                _ = try ReconMessage(canonicalBytes: bytes)
                Issue.record("\(v["name"]!) decoded")
            } catch {
                #expect(error.code.rawValue == v["error"], "\(v["name"]!): \(error)")
            }
        }
    }
}

/// The receipt vector of `Protocols/vectors/change.json` (`receipt`), built by
/// `FieldSyncCryptoTests.VectorTests` from the spec's field list (Protocols/change.md §2.1): `Receipt`
/// must decode those bytes to the listed heads, encode the heads to the same bytes, and refuse each
/// invalid payload with the named error.
@Suite struct ReceiptVectorTests {
    static var url: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/change.json")
    }

    @Test func receiptPayloadMatchesTheSpecVector() throws {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.url)) as? [String: Any])
        let v = try #require(json["receipt"] as? [String: Any])
        let payloadHex = try #require(v["payload"] as? String), changeHex = try #require(v["change"] as? String)
        let payload = try #require(Hex.decode(payloadHex))
        let listed = try #require(v["heads"] as? [[String: Any]])
        let heads = listed.map { h in
            (LogID(author: DeviceID(hex: h["author"] as! String)!, scope: try! Scope(h["scope"] as! String)),
             (h["seq"] as! NSNumber).uint64Value)
        }
        #expect(heads.count == 2)
        let decoded = try Receipt(canonicalBytes: payload)
        #expect(decoded.heads.map(\.0) == heads.map(\.0) && decoded.heads.map(\.1) == heads.map(\.1))
        #expect(Receipt(heads: heads).canonicalBytes == payload)
        let change = try Change(canonicalBytes: try #require(Hex.decode(changeHex)))
        #expect(change.header.contentType == .receipt && change.payload == payload)
        let invalid = try #require(v["invalidPayloads"] as? [[String: String]])
        #expect(invalid.count == 5)
        for bad in invalid {
            let bytes = try #require(Hex.decode(bad["payload"]!))
            do {
                _ = try Receipt(canonicalBytes: bytes)
                Issue.record("\(bad["name"]!) decoded")
            } catch {
                #expect(error.code.rawValue == bad["error"], "\(bad["name"]!): \(error)")
            }
        }
    }
}
