// LAN discovery beacons: the bytes and the bookkeeping, without sockets or clocks. Normative spec:
// Protocols/discovery.md. The UDP adapter is FieldSyncNode's `LANDiscovery`.
//
// A beacon tells nodes on the same LAN segment "a FieldSync node of this network accepts sessions on
// TCP port P of the address this datagram came from". It carries nothing else: no device id, no role,
// no scope, and a fresh random nonce each time, so an outsider listening in a village hall learns that a
// FieldSync node is present and where, not whose it is. Who the node is, and whether it may be trusted,
// is settled by the Noise handshake of the session that follows; a beacon is a hint, never a credential.

import FieldSyncCore
import FieldSyncCrypto

/// One parsed beacon.
public struct Beacon: Sendable, Equatable {
    /// The TCP port on which the announcing node accepts sessions.
    public var port: UInt16
    /// 16 random bytes, fresh for every beacon (lets a node recognise and ignore its own beacons).
    public var nonce: [UInt8]

    /// Creates a beacon.
    public init(port: UInt16, nonce: [UInt8]) {
        self.port = port
        self.nonce = nonce
    }
}

/// Why a datagram is not a beacon of our network. Callers drop such datagrams (and may count them).
public enum BeaconError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not exactly `BeaconCodec.length` bytes.
    case wrongLength(Int)
    /// The first four bytes are not `"FSB" 0x01` (another protocol, or a future version).
    case notABeacon
    /// Port 0 (no listener to connect to).
    case zeroPort
    /// The tag does not match: a beacon of another network or root, a different discovery secret, or a
    /// corrupted datagram.
    case badTag

    /// What happened.
    public var description: String {
        switch self {
        case let .wrongLength(n): "datagram of \(n) bytes; a beacon has \(BeaconCodec.length)"
        case .notABeacon: "not a FieldSync v1 beacon (magic/version)"
        case .zeroPort: "beacon announces port 0"
        case .badTag: "beacon tag does not verify (other network, root or discovery secret)"
        }
    }
}

/// Builds and checks beacons of one network.
///
/// Layout (40 bytes): `"FSB"` `0x01` · port u16 BE · reserved u16 = 0 · nonce (16) ·
/// tag (16) = BLAKE2b-128 keyed with the beacon key over the first 24 bytes. The beacon key is
/// BLAKE2b-256 of `"fieldsync/v1/beacon" 0x00 networkID 0x00 rootPublicKey`, keyed with the optional
/// discovery secret (Protocols/discovery.md §2).
public struct BeaconCodec: Sendable {
    /// Size of every beacon on the wire.
    public static let length = 40
    static let magic: [UInt8] = [0x46, 0x53, 0x42, 0x01]  // "FSB" v1
    static let authenticatedLength = 24

    private let key: SecretBytes

    /// The key for `networkID` under `root`, with an optional shared discovery secret.
    ///
    /// Without a secret the key is derived from public values: the tag then only keeps other networks'
    /// and stray datagrams out, it does not stop a forger who knows the root key. With a secret shared
    /// by the network's devices (1...64 bytes), a forger also needs the secret.
    /// - Throws: `CryptoError` if the secret is longer than 64 bytes.
    public init(networkID: String, root: Ed25519.PublicKey, secret: SecretBytes? = nil) throws {
        var input = Array("fieldsync/v1/beacon".utf8)
        input.append(0)
        input += Array(networkID.utf8)
        input.append(0)
        input += root.bytes
        key = SecretBytes(copying: try BLAKE2b.hash(input, outputLength: 32, key: secret))
    }

    /// The 40 bytes of a beacon announcing `port`, with `nonce` (16 bytes).
    public func encode(_ beacon: Beacon) -> [UInt8] {
        precondition(beacon.nonce.count == 16, "a beacon nonce has 16 bytes")
        var bytes = Self.magic
        bytes += [UInt8(beacon.port >> 8), UInt8(beacon.port & 0xFF), 0, 0]
        bytes += beacon.nonce
        bytes += tag(bytes)
        return bytes
    }

    /// Parses and authenticates a datagram.
    /// - Throws: `BeaconError` naming the first check that failed.
    public func decode(_ bytes: [UInt8]) throws(BeaconError) -> Beacon {
        guard bytes.count == Self.length else { throw .wrongLength(bytes.count) }
        guard Array(bytes[0..<4]) == Self.magic, bytes[6] == 0, bytes[7] == 0 else { throw .notABeacon }
        let expected = tag(Array(bytes[0..<Self.authenticatedLength]))
        var diff: UInt8 = 0
        for i in 0..<16 { diff |= expected[i] ^ bytes[Self.authenticatedLength + i] }
        guard diff == 0 else { throw .badTag }
        let port = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
        guard port != 0 else { throw .zeroPort }
        return Beacon(port: port, nonce: Array(bytes[8..<24]))
    }

    private func tag(_ authenticated: [UInt8]) -> [UInt8] {
        // Output length 16 and a 32-byte key are always valid for BLAKE2b.
        try! BLAKE2b.hash(authenticated, outputLength: 16, key: key)
    }
}

/// A node found on the LAN: where to open a session.
public struct DiscoveredPeer: Hashable, Sendable, CustomStringConvertible {
    /// The address the beacon came from.
    public var host: String
    /// The announced TCP port.
    public var port: Int

    /// Creates a peer address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`.
    public var description: String { "\(host):\(port)" }
}

/// The bookkeeping of discovery, fed with datagrams and the time: which peers are present, which are new,
/// which have gone quiet. No sockets, no clock (times are milliseconds from any fixed origin).
///
/// Beacons can be forged (Protocols/discovery.md §2), so the table bounds what one source can claim: at
/// most `perSource` peers per source address, at most `capacity` in all; and a peer that proved itself
/// (`markProven`: a session to it authenticated) within `provenRetention` is admitted even when the table
/// is full, in place of the least recently heard unproven peer. A flood of forged beacons can therefore
/// not keep out the real relay it once synced with.
public struct DiscoveryTable: Sendable {
    /// A peer not heard from for this long is forgotten (and reported as new when heard again).
    public var expiry: UInt64
    /// Most peers remembered at once; beacons from further addresses are ignored until some expire, so a
    /// flood of forged beacons costs bounded memory.
    public var capacity: Int
    /// Most peers (ports) remembered per source address.
    public var perSource: Int
    /// How long a proven peer keeps its precedence after its last authenticated session.
    public var provenRetention: UInt64
    /// Nonces of this node's own recent beacons (a node hears its own broadcasts).
    private var ownNonces: [[UInt8]] = []
    private var lastHeard: [DiscoveredPeer: UInt64] = [:]
    private var perHost: [String: Int] = [:]
    /// Peers a session authenticated, with when (at most `capacity`, oldest dropped first).
    private var proven: [DiscoveredPeer: UInt64] = [:]
    private let codec: BeaconCodec

    /// Counters, for metrics and `status`.
    public private(set) var accepted = 0
    /// Datagrams that were not beacons of this network (wrong length, magic, tag, port).
    public private(set) var rejected = 0
    /// Own beacons heard back.
    public private(set) var own = 0

    /// Creates a table.
    public init(codec: BeaconCodec, expiry: UInt64 = 30_000, capacity: Int = 256, perSource: Int = 4,
                provenRetention: UInt64 = 86_400_000) {
        self.codec = codec
        self.expiry = expiry
        self.capacity = capacity
        self.perSource = perSource
        self.provenRetention = provenRetention
    }

    /// Records that a session to `peer` authenticated at `now`: from then on, for `provenRetention`, its
    /// beacons are admitted even when the table is full or its source has `perSource` peers.
    public mutating func markProven(_ peer: DiscoveredPeer, now: UInt64) {
        proven[peer] = now
        if proven.count > capacity, let oldest = proven.min(by: { ($0.value, $0.key.host, $0.key.port) < ($1.value, $1.key.host, $1.key.port) }) {
            proven[oldest.key] = nil
        }
    }

    /// Whether `peer` proved itself within `provenRetention` of `now`.
    public func isProven(_ peer: DiscoveredPeer, now: UInt64) -> Bool {
        guard let at = proven[peer] else { return false }
        return now < at || now - at <= provenRetention
    }

    /// The beacon to send now, announcing `port`; remembers its nonce to ignore it when it comes back.
    public mutating func makeBeacon(port: UInt16, nonce: [UInt8]) -> [UInt8] {
        ownNonces.append(nonce)
        if ownNonces.count > 8 { ownNonces.removeFirst(ownNonces.count - 8) }
        return codec.encode(Beacon(port: port, nonce: nonce))
    }

    /// What a received datagram means.
    public enum Outcome: Sendable, Equatable {
        /// A peer not currently known: connect to it.
        case new(DiscoveredPeer)
        /// A known peer, still present.
        case refreshed(DiscoveredPeer)
        /// One of this node's own beacons.
        case own
        /// Not a beacon of this network.
        case rejected(BeaconError)
        /// A valid beacon from a new address while the table is full.
        case full
        /// A valid beacon from a source address that already has `perSource` peers in the table.
        case sourceFull
        /// A proven peer heard again while the table was full: it took the place of `evicted` (the least
        /// recently heard unproven peer), which is forgotten.
        case replaced(DiscoveredPeer, evicted: DiscoveredPeer)
    }

    /// Records a datagram received from `host` at `now`.
    public mutating func receive(_ datagram: [UInt8], from host: String, now: UInt64) -> Outcome {
        let beacon: Beacon
        do { beacon = try codec.decode(datagram) } catch {
            rejected += 1
            return .rejected(error)
        }
        if ownNonces.contains(beacon.nonce) {
            own += 1
            return .own
        }
        let peer = DiscoveredPeer(host: host, port: Int(beacon.port))
        expire(now: now)
        if lastHeard[peer] != nil {
            lastHeard[peer] = now
            accepted += 1
            return .refreshed(peer)
        }
        let trusted = isProven(peer, now: now)
        guard trusted || perHost[host, default: 0] < perSource else { return .sourceFull }
        var evicted: DiscoveredPeer?
        if lastHeard.count >= capacity {
            guard trusted, let victim = lastHeard.filter({ !isProven($0.key, now: now) })
                .min(by: { ($0.value, $0.key.host, $0.key.port) < ($1.value, $1.key.host, $1.key.port) })?.key else { return .full }
            forget(victim)
            evicted = victim
        }
        lastHeard[peer] = now
        perHost[host, default: 0] += 1
        accepted += 1
        return evicted.map { .replaced(peer, evicted: $0) } ?? .new(peer)
    }

    private mutating func forget(_ peer: DiscoveredPeer) {
        guard lastHeard.removeValue(forKey: peer) != nil else { return }
        let left = perHost[peer.host, default: 1] - 1
        perHost[peer.host] = left > 0 ? left : nil
    }

    /// Forgets peers not heard from within `expiry` of `now`.
    /// - Returns: the peers forgotten, sorted by address.
    @discardableResult
    public mutating func expire(now: UInt64) -> [DiscoveredPeer] {
        let gone = lastHeard.filter { now >= $0.value && now - $0.value > expiry }.keys
        for p in gone { forget(p) }
        return gone.sorted { ($0.host, $0.port) < ($1.host, $1.port) }
    }

    /// The peers heard within `expiry` of `now`, sorted by address (nothing is forgotten).
    public func present(now: UInt64) -> [DiscoveredPeer] {
        lastHeard.filter { now < $0.value || now - $0.value <= expiry }.keys.sorted { ($0.host, $0.port) < ($1.host, $1.port) }
    }

    /// The peers in the table, sorted by address.
    public var peers: [DiscoveredPeer] {
        lastHeard.keys.sorted { ($0.host, $0.port) < ($1.host, $1.port) }
    }

    /// When `peer` was last heard, if it is present.
    public func lastHeard(_ peer: DiscoveredPeer) -> UInt64? { lastHeard[peer] }
}
