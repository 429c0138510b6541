import FieldSyncCore

/// The keyed hashes of head elements for one reconciliation session.
///
/// Both functions must be keyed by a secret that is fresh for every session (the session key from the
/// handshake mixed with both sides' hello salts), so that no one can craft `LogID`s or change hashes
/// whose tags or checksums collide with someone else's: collisions would stall or mislead decoding, as
/// crafted false positives poisoned Automerge's Bloom-filter sync.
///
/// Version 1 (Protocols/sync-reconciliation.md §3) is `SipHashElementHasher`, keyed per session by
/// `SipHashReconciliationHashing.elementHasher` from the session key and both hello salts; nodes, the simulator,
/// tests and benchmarks all use it. Both ends of a session must use the same construction: the hello's
/// version byte names it.
public protocol ElementHasher: Sendable {
    /// The 64-bit keyed tag of a log.
    func tag(_ log: LogID) -> UInt64
    /// The same tag from the log's canonical encoding (`log.canonicalBytes`), which callers may cache.
    func tag(encodedLogID: [UInt8]) -> UInt64
    /// The 64-bit keyed checksum of an element. It is also the seed of the element's symbol mapping.
    func checksum(_ element: HeadElement) -> UInt64
    /// `tag(_:)` of every log, in order (a session tags every log it holds when the hello digests differ).
    func tags(of logs: [LogHoldings]) -> [UInt64]
}

extension ElementHasher {
    /// Default: `tag(_:)` of each log.
    public func tags(of logs: [LogHoldings]) -> [UInt64] { logs.map { tag($0.log) } }
}

/// The key schedule of reconciliation: what a session needs from the session key.
///
/// - `holdingsDigest` is keyed by the session key alone, because each side computes it before it sees
///   the peer's salt (it goes into the hello, and equal digests end reconciliation).
/// - `elementHasher` mixes in both salts.
public protocol ReconciliationHashing: Sendable {
    /// The 16-byte keyed digest of `Holdings.canonicalDigestInput`.
    func holdingsDigest(_ canonicalHoldings: [UInt8]) -> [UInt8]
    /// The element hasher for a session whose initiator and responder sent these 16-byte salts.
    func elementHasher(initiatorSalt: [UInt8], responderSalt: [UInt8]) -> any ElementHasher
}

/// `ElementHasher` over SipHash-2-4 with a 128-bit key.
///
/// `tag(log) = SipHash24(key, 0x01 ‖ canonical(log))` and
/// `checksum(e) = SipHash24(key, 0x02 ‖ e[0..<16])`.
public struct SipHashElementHasher: ElementHasher, Equatable {
    /// The keyed PRF.
    public let sip: SipHash24

    /// Creates a hasher with a 16-byte key.
    public init(key: [UInt8]) { sip = SipHash24(key: key) }

    /// Creates a hasher from a SipHash instance.
    public init(_ sip: SipHash24) { self.sip = sip }

    /// `SipHash24(key, 0x01 ‖ canonical(log))`.
    public func tag(_ log: LogID) -> UInt64 { tag(encodedLogID: log.canonicalBytes) }

    /// `SipHash24(key, 0x01 ‖ encodedLogID)`.
    public func tag(encodedLogID: [UInt8]) -> UInt64 {
        var message = [UInt8]()
        message.reserveCapacity(encodedLogID.count + 1)
        message.append(0x01)
        message.append(contentsOf: encodedLogID)
        return sip.hash(message)
    }

    /// `SipHash24(key, 0x01 ‖ canonical(log))` of every log, each encoded into one reused buffer (no array
    /// per log: a store holds thousands).
    public func tags(of logs: [LogHoldings]) -> [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(logs.count)
        var w = ByteWriter(capacity: 128)
        for l in logs {
            w.bytes.removeAll(keepingCapacity: true)
            w.writeByte(0x01)
            l.log.encode(to: &w)
            out.append(w.bytes.withUnsafeBufferPointer { sip.hash($0) })
        }
        return out
    }

    /// `SipHash24(key, 0x02 ‖ element bytes)`.
    public func checksum(_ element: HeadElement) -> UInt64 {
        sip.hash(bigEndianWords: element.high, element.low, prefix: 0x02)
    }
}

/// The default key schedule over SipHash-2-4 (Protocols/sync-reconciliation.md, section 3).
///
/// With `K` the 32-byte session key, `P = SipHash24` keyed by `K[0..<16]`, and
/// `derive(label, extra) = LE64(P(label ‖ K[16..<32] ‖ extra ‖ 0x00)) ‖ LE64(P(label ‖ K[16..<32] ‖ extra ‖ 0x01))`:
/// - digest key `DK = derive("fieldsync/recon/v1/digest", "")`,
///   `digest = LE64(SipHash24(DK, 0x03 ‖ H)) ‖ LE64(SipHash24(DK, 0x04 ‖ H))` for digest input `H`;
/// - element key `EK = derive("fieldsync/recon/v1/element", saltInitiator ‖ saltResponder)`.
public struct SipHashReconciliationHashing: ReconciliationHashing {
    private let prf: SipHash24
    private let keyTail: [UInt8]
    private let digestKey: SipHash24

    /// Creates the schedule from the 32-byte session key.
    /// - Precondition: `sessionKey.count == 32`.
    public init(sessionKey: [UInt8]) {
        precondition(sessionKey.count == 32, "session keys are 32 bytes")
        prf = SipHash24(key: Array(sessionKey[0..<16]))
        keyTail = Array(sessionKey[16..<32])
        digestKey = SipHash24(key: Self.derive(prf, keyTail, label: "fieldsync/recon/v1/digest", extra: []))
    }

    /// `derive(label, extra)` of the type documentation: a 16-byte subkey.
    public func derive(label: String, extra: [UInt8]) -> [UInt8] {
        Self.derive(prf, keyTail, label: label, extra: extra)
    }

    private static func derive(_ prf: SipHash24, _ keyTail: [UInt8], label: String, extra: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for i: UInt8 in 0...1 {
            let h = prf.hash(Array(label.utf8) + keyTail + extra + [i])
            for b in 0..<8 { out.append(UInt8(truncatingIfNeeded: h >> UInt64(8 * b))) }
        }
        return out
    }

    /// The 16-byte digest of the hello.
    public func holdingsDigest(_ canonicalHoldings: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var message = [UInt8]()
        message.reserveCapacity(canonicalHoldings.count + 1)
        message.append(0x03)
        message.append(contentsOf: canonicalHoldings)
        for prefix: UInt8 in [0x03, 0x04] {
            message[0] = prefix
            let h = digestKey.hash(message)
            for b in 0..<8 { out.append(UInt8(truncatingIfNeeded: h >> UInt64(8 * b))) }
        }
        return out
    }

    /// The session's element hasher.
    /// - Precondition: both salts are 16 bytes.
    public func elementHasher(initiatorSalt: [UInt8], responderSalt: [UInt8]) -> any ElementHasher {
        precondition(initiatorSalt.count == 16 && responderSalt.count == 16, "salts are 16 bytes")
        return SipHashElementHasher(key: derive(label: "fieldsync/recon/v1/element", extra: initiatorSalt + responderSalt))
    }
}
