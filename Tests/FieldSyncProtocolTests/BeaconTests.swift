import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing

@testable import FieldSyncProtocol

/// LAN discovery beacons (Protocols/discovery.md) against `Protocols/vectors/discovery.json`, written by an
/// independent Python script, and the discovery table's bookkeeping.
@Suite struct BeaconTests {
    struct Vectors: Decodable {
        struct Valid: Decodable { var name, network, root, secret: String; var port: Int; var nonce, beaconKey, beacon: String }
        struct Invalid: Decodable { var name, beacon, error: String }
        var valid: [Valid]
        var invalid: [Invalid]
    }

    static let vectors: Vectors = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/discovery.json")
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    static let root = try! Ed25519.PublicKey(bytes: Array(0..<32))

    static func codec(_ network: String = "longnan-police", secret: String = "") throws -> BeaconCodec {
        let s = Hex.decode(secret)!
        return try BeaconCodec(networkID: network, root: root, secret: s.isEmpty ? nil : SecretBytes(copying: s))
    }

    @Test func validVectorsEncodeAndDecode() throws {
        #expect(Self.vectors.valid.count == 3)
        for v in Self.vectors.valid {
            #expect(Hex.decode(v.root)! == Self.root.bytes)
            let codec = try Self.codec(v.network, secret: v.secret)
            let beacon = Beacon(port: UInt16(v.port), nonce: Hex.decode(v.nonce)!)
            #expect(Hex.encode(codec.encode(beacon)) == v.beacon, "\(v.name)")
            #expect(try codec.decode(Hex.decode(v.beacon)!) == beacon, "\(v.name)")
        }
    }

    @Test func invalidVectorsAreRejectedWithTheirError() throws {
        #expect(Self.vectors.invalid.count == 7)
        let codec = try Self.codec()
        for v in Self.vectors.invalid {
            var name = "accepted"
            do { _ = try codec.decode(Hex.decode(v.beacon)!) } catch {
                name = switch error {
                case .wrongLength: "wrongLength"
                case .notABeacon: "notABeacon"
                case .zeroPort: "zeroPort"
                case .badTag: "badTag"
                }
            }
            #expect(name == v.error, "\(v.name)")
        }
    }

    @Test func aSecretSeparatesNetworksThatShareARoot() throws {
        let open = try Self.codec()
        let closed = try Self.codec(secret: Hex.encode(Array("county secret".utf8)))
        let beacon = closed.encode(Beacon(port: 7000, nonce: Array(repeating: 7, count: 16)))
        #expect(throws: BeaconError.badTag) { try open.decode(beacon) }
        #expect(try closed.decode(beacon).port == 7000)
    }

    @Test func everyBitFlipIsRejected() throws {
        let codec = try Self.codec()
        let good = codec.encode(Beacon(port: 7000, nonce: Array(repeating: 9, count: 16)))
        for bit in 0..<(good.count * 8) {
            var bad = good
            bad[bit / 8] ^= 1 << (bit % 8)
            #expect(throws: BeaconError.self, "bit \(bit)") { try codec.decode(bad) }
        }
    }

    @Test func tableReportsNewPeersOnceIgnoresItsOwnAndExpires() throws {
        let codec = try Self.codec()
        var mine = DiscoveryTable(codec: codec, expiry: 30_000)
        var theirs = DiscoveryTable(codec: codec, expiry: 30_000)
        let own = mine.makeBeacon(port: 7000, nonce: Array(repeating: 1, count: 16))
        #expect(mine.receive(own, from: "10.0.0.1", now: 0) == .own)
        let peer = DiscoveredPeer(host: "10.0.0.2", port: 7001)
        let b1 = theirs.makeBeacon(port: 7001, nonce: Array(repeating: 2, count: 16))
        #expect(mine.receive(b1, from: "10.0.0.2", now: 1_000) == .new(peer))
        let b2 = theirs.makeBeacon(port: 7001, nonce: Array(repeating: 3, count: 16))
        #expect(mine.receive(b2, from: "10.0.0.2", now: 20_000) == .refreshed(peer))
        #expect(mine.peers == [peer])
        #expect(mine.present(now: 50_001).isEmpty && mine.peers == [peer], "reading forgets nobody")
        #expect(mine.expire(now: 50_000).isEmpty)
        #expect(mine.expire(now: 50_001) == [peer])
        #expect(mine.peers.isEmpty)
        #expect(mine.receive(b2, from: "10.0.0.2", now: 50_002) == .new(peer))
        #expect(mine.receive(Array(b2.dropLast()), from: "10.0.0.3", now: 50_003) == .rejected(.wrongLength(39)))
        #expect((mine.accepted, mine.rejected, mine.own) == (3, 1, 1))
    }

    @Test func aFloodOfForgedAddressesCostsBoundedMemory() throws {
        let codec = try Self.codec()
        var table = DiscoveryTable(codec: codec, expiry: 30_000, capacity: 4)
        var sender = DiscoveryTable(codec: codec)
        var outcomes: [DiscoveryTable.Outcome] = []
        for i in 0..<10 {
            let b = sender.makeBeacon(port: 7000, nonce: Array(repeating: UInt8(i), count: 16))
            outcomes.append(table.receive(b, from: "10.0.0.\(i)", now: UInt64(i)))
        }
        #expect(outcomes.filter { if case .new = $0 { true } else { false } }.count == 4)
        #expect(outcomes.filter { $0 == .full }.count == 6)
        #expect(table.peers.count == 4)
    }

    /// Issue 13 item 2: 256 beacons from one host on different ports used to fill the table, so the real
    /// relay's beacon was ignored. One source now gets at most `perSource` (4) entries.
    @Test func oneHostCannotFillTheTable() throws {
        let codec = try Self.codec()
        var table = DiscoveryTable(codec: codec, expiry: 30_000)
        var sender = DiscoveryTable(codec: codec)
        var admitted = 0
        for port in 1...256 {
            let b = sender.makeBeacon(port: UInt16(port), nonce: Array(repeating: UInt8(port % 256), count: 16))
            if case .new = table.receive(b, from: "10.0.0.66", now: UInt64(port)) { admitted += 1 }
        }
        #expect(admitted == 4 && table.peers.count == 4)
        let relay = sender.makeBeacon(port: 7000, nonce: Array(repeating: 0xAA, count: 16))
        #expect(table.receive(relay, from: "10.0.0.7", now: 300) == .new(DiscoveredPeer(host: "10.0.0.7", port: 7000)))
    }

    /// A relay this node synced with (proven) is admitted even when beacons from many forged addresses
    /// filled the table: it takes the place of the least recently heard unproven entry.
    @Test func aProvenPeerIsNotCrowdedOut() throws {
        let codec = try Self.codec()
        var table = DiscoveryTable(codec: codec, expiry: 30_000, capacity: 8)
        var sender = DiscoveryTable(codec: codec)
        let relay = DiscoveredPeer(host: "10.0.0.7", port: 7000)
        table.markProven(relay, now: 0)
        for i in 0..<8 {
            let b = sender.makeBeacon(port: 7000, nonce: Array(repeating: UInt8(i), count: 16))
            #expect(table.receive(b, from: "10.1.0.\(i)", now: UInt64(10 + i)) == .new(DiscoveredPeer(host: "10.1.0.\(i)", port: 7000)))
        }
        let stranger = sender.makeBeacon(port: 7000, nonce: Array(repeating: 0xBB, count: 16))
        #expect(table.receive(stranger, from: "10.2.0.1", now: 100) == .full)
        let b = sender.makeBeacon(port: 7000, nonce: Array(repeating: 0xAA, count: 16))
        #expect(table.receive(b, from: "10.0.0.7", now: 200) == .replaced(relay, evicted: DiscoveredPeer(host: "10.1.0.0", port: 7000)))
        #expect(table.peers.count == 8 && table.peers.contains(relay))
        #expect(!table.isProven(relay, now: 200 + 86_400_001), "precedence lasts provenRetention")
    }
}
