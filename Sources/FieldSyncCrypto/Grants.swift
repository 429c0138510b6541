// Group keys (scope epoch keys), key grants, revocations and epoch rotation.
// Normative spec: Protocols/identity.md (grants and revocations) and Protocols/change.md (slots).

import FieldSyncCore

/// The symmetric key of one scope epoch: whoever holds it can open every change of that scope (and
/// its sub-scopes) sealed in that epoch. 32 random bytes, never printed.
public struct EpochKey: Sendable, CustomStringConvertible {
    /// The scope the key belongs to.
    public let scope: Scope
    /// The epoch number (starts at 1, increases on every rotation).
    public let epoch: UInt32
    /// The 32 key bytes.
    public let key: SecretBytes

    /// Wraps existing key bytes.
    /// - Throws: `CryptoError.invalidLength` unless the key is 32 bytes.
    public init(scope: Scope, epoch: UInt32, key: SecretBytes) throws(CryptoError) {
        try requireLength(0..<key.count, 32, "epoch key")
        self.scope = scope
        self.epoch = epoch
        self.key = key
    }

    /// A fresh random key for `scope` at `epoch`.
    public static func generate(scope: Scope, epoch: UInt32) -> EpochKey {
        try! EpochKey(scope: scope, epoch: epoch, key: SecretBytes.random(count: 32))
    }

    /// Scope and epoch only; the key is redacted.
    public var description: String { "EpochKey(\(scope)#\(epoch), <redacted>)" }

    /// Keystore encoding: scope, epoch (varint), 32 key bytes.
    func encode(to w: inout ByteWriter) {
        w.write(scope)
        w.writeVarint(UInt64(epoch))
        key.withUnsafeBytes { w.writeRaw($0) }
    }

    static func decode(from r: inout ByteReader) throws(DecodingError) -> EpochKey {
        let scope = try r.read(Scope.self)
        let epoch = try r.readVarint(as: UInt32.self)
        var raw = try r.readRaw(32)
        defer { wipe(&raw) }
        return try! EpochKey(scope: scope, epoch: epoch, key: SecretBytes(copying: raw))
    }
}

/// An epoch key grant: the epoch key of `scope` sealed (`crypto_box_seal`) to each member's X25519 key,
/// signed by the HQ root or by the county authority responsible for the scope.
///
/// Relays are never members: ``issue(epochKey:members:issuedAt:by:)`` refuses them.
public struct KeyGrant: Hashable, Sendable, CanonicalCodable {
    /// One member's entry.
    public struct Member: Hashable, Sendable {
        /// The member device.
        public let device: DeviceID
        /// `crypto_box_seal(epochKey, member.agreementKey)`: 80 bytes.
        public let sealedKey: [UInt8]
    }

    /// The scope whose key is granted.
    public let scope: Scope
    /// The epoch number.
    public let epoch: UInt32
    /// When the grant was issued, ms since the Unix epoch.
    public let issuedAt: UInt64
    /// Key id of the issuing authority.
    public let issuer: DeviceID
    /// Members, sorted by device id (strictly increasing).
    public let members: [Member]
    /// The issuer's Ed25519 signature over `BLAKE2b-512("fieldsync/v1/key-grant" || 0x00 || tbs)`.
    public let signature: [UInt8]

    /// Seals `epochKey` to every member and signs the grant.
    ///
    /// ```swift
    /// let grant = try KeyGrant.issue(epochKey: k, members: [bp17, bp18], issuedAt: now, by: hq)
    /// ```
    /// - Throws: `IdentityError.relayNotAllowed` if a member is a relay, `.wrongKind` for an authority
    ///   certificate, `.scopeEscalation` if a member's scopes do not contain the grant scope or the
    ///   authority is not responsible for it, `.invalid` for no members.
    public static func issue(epochKey: EpochKey, members: [Certificate], issuedAt: UInt64, by authority: Authority) throws(IdentityError) -> KeyGrant {
        try issue(epochKey: epochKey, members: members, issuedAt: issuedAt, by: authority, ephemeralSeeds: nil)
    }

    /// `issue` with injected sealed-box ephemeral seeds (one per member, in device-id order) for vectors.
    static func issue(epochKey: EpochKey, members: [Certificate], issuedAt: UInt64, by authority: Authority,
                      ephemeralSeeds: [[UInt8]]?) throws(IdentityError) -> KeyGrant {
        if let own = authority.certificate, !Scope.all([epochKey.scope], within: own.scopes) {
            throw IdentityError(.scopeEscalation, "authority \(authority.keyID) is not responsible for \(epochKey.scope)")
        }
        var byID: [DeviceID: Certificate] = [:]
        for m in members {
            guard m.role != .relay else { throw IdentityError(.relayNotAllowed, "relay \(m.subject) may never hold epoch keys") }
            guard m.kind == .device else { throw IdentityError(.wrongKind, "\(m.subject) is not a device certificate") }
            guard Scope.all([epochKey.scope], within: m.scopes) else {
                throw IdentityError(.scopeEscalation, "member \(m.subject) is not entitled to \(epochKey.scope)")
            }
            byID[m.subject] = m
        }
        guard !byID.isEmpty else { throw IdentityError(.invalid, "a grant needs at least one member") }
        let sorted = byID.keys.sorted()
        if let ephemeralSeeds { precondition(ephemeralSeeds.count == sorted.count, "one ephemeral seed per member") }
        var entries: [Member] = []
        for (i, id) in sorted.enumerated() {
            let plain = epochKey.key.unsafeCopy()
            do {
                var p = plain
                defer { wipe(&p) }
                let sealed = try ephemeralSeeds.map { seeds throws(CryptoError) in
                    try SealedBox.seal(p, to: byID[id]!.agreementKey, ephemeralSeed: seeds[i])
                } ?? SealedBox.seal(p, to: byID[id]!.agreementKey)
                entries.append(Member(device: id, sealedKey: sealed))
            } catch { throw IdentityError(.invalid, "sealing for \(id) failed: \(error)") }
        }
        let unsigned = KeyGrant(scope: epochKey.scope, epoch: epochKey.epoch, issuedAt: issuedAt, issuer: authority.keyID,
                                members: entries, signature: [])
        do {
            let sig = try authority.signingKey.sign(unsigned.signedDigest)
            return KeyGrant(scope: unsigned.scope, epoch: unsigned.epoch, issuedAt: issuedAt, issuer: unsigned.issuer,
                            members: entries, signature: sig)
        } catch { throw IdentityError(.invalid, "signing failed: \(error)") }
    }

    private init(scope: Scope, epoch: UInt32, issuedAt: UInt64, issuer: DeviceID, members: [Member], signature: [UInt8]) {
        self.scope = scope; self.epoch = epoch; self.issuedAt = issuedAt; self.issuer = issuer
        self.members = members; self.signature = signature
    }

    /// The signed part of the encoding.
    public var tbsBytes: [UInt8] {
        var w = ByteWriter(capacity: 64 + members.count * 100)
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.write(scope)
        w.writeVarint(UInt64(epoch))
        w.writeVarint(issuedAt)
        w.write(issuer)
        w.writeVarint(UInt64(members.count))
        for m in members {
            w.write(m.device)
            w.writeRaw(m.sealedKey)
        }
        return w.bytes
    }

    var signedDigest: [UInt8] { BLAKE2b.domainHash(Domain.keyGrant, [tbsBytes[...]], outputLength: 64) }

    /// Verifies the issuer's signature and authority for the scope, at `now`.
    /// - Throws: `unknownAuthority`, `badSignature`, `scopeEscalation` (county authority outside its
    ///   scopes), and the authority's own checks.
    public func verify(trust: TrustStore, now: UInt64) throws(IdentityError) {
        let (key, bound) = try trust.issuerKey(issuer, at: now)
        if let bound, !Scope.all([scope], within: bound) {
            throw IdentityError(.scopeEscalation, "grant issuer \(issuer) is not responsible for \(scope)")
        }
        do { try key.verify(signature: signature, message: signedDigest) } catch {
            throw IdentityError(.badSignature, "key grant for \(scope)#\(epoch) does not verify")
        }
    }

    /// Opens this device's entry.
    /// - Throws: `CryptoError.authenticationFailed` if the device is not a member or the entry does not open.
    public func open(as device: DeviceID, agreementKey: X25519.SecretKey) throws(CryptoError) -> EpochKey {
        guard let m = members.first(where: { $0.device == device }) else {
            throw CryptoError(.authenticationFailed, "device \(device) is not a member of grant \(scope)#\(epoch)")
        }
        let key = try SealedBox.open(m.sealedKey, with: agreementKey)
        return try EpochKey(scope: scope, epoch: epoch, key: key)
    }

    /// Writes `tbs || signature`.
    public func encode(to writer: inout ByteWriter) {
        writer.writeRaw(tbsBytes)
        writer.writeRaw(signature)
    }

    /// Reads a grant (members strictly increasing by device id, each entry 80 bytes).
    public init(from reader: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&reader)
        scope = try reader.read()
        epoch = try reader.readVarint(as: UInt32.self)
        issuedAt = try reader.readVarint()
        issuer = try reader.read()
        let n = try reader.readCount(minElementSize: 16 + 80)
        var ms: [Member] = []
        ms.reserveCapacity(n)
        for _ in 0..<n {
            let at = reader.offset
            let d = try reader.read(DeviceID.self)
            if let last = ms.last, !(last.device < d) { throw DecodingError(.nonCanonicalOrder, at: at, "grant members") }
            ms.append(Member(device: d, sealedKey: try reader.readRaw(32 + SealedBox.overhead)))
        }
        members = ms
        signature = try reader.readRaw(Ed25519.signatureLength)
    }
}

/// Why a device was revoked.
public enum RevocationReason: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The device was lost.
    case lost = 1
    /// The device was stolen.
    case stolen = 2
    /// The device's keys are believed compromised.
    case compromised = 3
    /// The device was retired.
    case decommissioned = 4
    /// Another reason (see the note).
    case other = 5

    /// Parses a lower-case reason name.
    public init?(name: String) {
        guard let r = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = r
    }

    /// The lower-case name.
    public var description: String {
        switch self {
        case .lost: "lost"
        case .stolen: "stolen"
        case .compromised: "compromised"
        case .decommissioned: "decommissioned"
        case .other: "other"
        }
    }
}

/// A signed revocation of a device: its changes with an HLC after `revokedAt` are refused, and peers
/// refuse its sessions. Signed by the HQ root or a delegated county authority.
public struct Revocation: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Largest note length in UTF-8 bytes.
    public static let maxNoteLength = 256

    /// The revoked device.
    public let device: DeviceID
    /// Serial of the revoked certificate (for the audit trail; revocation applies to the device id).
    public let serial: UInt64
    /// Changes by the device with an HLC strictly after this are refused.
    public let revokedAt: HLCTimestamp
    /// Why.
    public let reason: RevocationReason
    /// Free text for the audit trail.
    public let note: String
    /// Key id of the issuing authority.
    public let issuer: DeviceID
    /// Ed25519 signature over `BLAKE2b-512("fieldsync/v1/revocation" || 0x00 || tbs)`.
    public private(set) var signature: [UInt8]

    /// Creates and signs a revocation.
    /// - Throws: `IdentityError.invalid` for a note over 256 bytes.
    public init(device: DeviceID, serial: UInt64, revokedAt: HLCTimestamp, reason: RevocationReason, note: String,
                by authority: Authority) throws(IdentityError) {
        guard note.utf8.count <= Self.maxNoteLength else { throw IdentityError(.invalid, "note longer than \(Self.maxNoteLength) bytes") }
        self.device = device; self.serial = serial; self.revokedAt = revokedAt; self.reason = reason; self.note = note
        issuer = authority.keyID
        signature = []
        do {
            let sig = try authority.signingKey.sign(signedDigest)
            signature = sig
        } catch { throw IdentityError(.invalid, "signing failed: \(error)") }
    }

    /// The signed part of the encoding.
    public var tbsBytes: [UInt8] {
        var w = ByteWriter()
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.write(device)
        w.writeVarint(serial)
        w.write(revokedAt)
        w.writeByte(reason.rawValue)
        w.writeString(note)
        w.write(issuer)
        return w.bytes
    }

    var signedDigest: [UInt8] { BLAKE2b.domainHash(Domain.revocation, [tbsBytes[...]], outputLength: 64) }

    /// Checks the signature against the root or a known authority at `now`.
    /// - Throws: `unknownAuthority`, `badSignature`, and the authority's own checks.
    public func verify(trust: TrustStore, now: UInt64) throws(IdentityError) {
        let (key, _) = try trust.issuerKey(issuer, at: now)
        do { try key.verify(signature: signature, message: signedDigest) } catch {
            throw IdentityError(.badSignature, "revocation of \(device) does not verify")
        }
    }

    /// `device revokedAt reason`.
    public var description: String { "revocation of \(device) at \(revokedAt) (\(reason)) by \(issuer)" }

    /// Writes `tbs || signature`.
    public func encode(to writer: inout ByteWriter) {
        writer.writeRaw(tbsBytes)
        writer.writeRaw(signature)
    }

    /// Reads a revocation (call ``verify(trust:now:)`` before trusting it).
    public init(from reader: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&reader)
        device = try reader.read()
        serial = try reader.readVarint()
        revokedAt = try reader.read()
        let at = reader.offset
        let rb = try reader.readByte()
        guard let reason = RevocationReason(rawValue: rb) else { throw DecodingError(.unknownTag, at: at, "revocation reason \(rb)") }
        self.reason = reason
        let nAt = reader.offset
        note = try reader.readString()
        guard note.utf8.count <= Self.maxNoteLength else { throw DecodingError(.invalidValue, at: nAt, "note too long") }
        issuer = try reader.read()
        signature = try reader.readRaw(Ed25519.signatureLength)
    }
}

/// A grow-only set of verified revocations. Merge is set union, so replicas converge whatever order
/// revocations arrive in. A device's effective cut-off is the earliest `revokedAt` among its revocations.
public struct RevocationList: Sendable, Equatable {
    private var byDevice: [DeviceID: Set<Revocation>] = [:]

    /// An empty list.
    public init() {}

    /// Every revocation, sorted by device id then `revokedAt` (a stable order for encoding and display).
    public var all: [Revocation] {
        byDevice.keys.sorted().flatMap { id in
            byDevice[id]!.sorted { a, b in
                a.revokedAt != b.revokedAt ? a.revokedAt < b.revokedAt : a.canonicalBytes.lexicographicallyPrecedes(b.canonicalBytes)
            }
        }
    }

    /// Number of revocations held.
    public var count: Int { byDevice.values.reduce(0) { $0 + $1.count } }

    /// Verifies `revocation` against `trust` at `now`, then adds it.
    /// - Throws: the verification's ``IdentityError``; the list is unchanged then.
    public mutating func insert(_ revocation: Revocation, verifiedBy trust: TrustStore, now: UInt64) throws(IdentityError) {
        try revocation.verify(trust: trust, now: now)
        byDevice[revocation.device, default: []].insert(revocation)
    }

    /// Union with another list (whose entries were verified when they were inserted there).
    public mutating func merge(_ other: RevocationList) {
        for (id, set) in other.byDevice { byDevice[id, default: []].formUnion(set) }
    }

    /// The revocation with the earliest cut-off for `device`, if any.
    public func revocation(of device: DeviceID) -> Revocation? {
        byDevice[device]?.min { $0.revokedAt < $1.revokedAt }
    }

    /// Whether an action by `device` stamped `time` falls after its revocation.
    public func isRevoked(_ device: DeviceID, at time: HLCTimestamp) -> Bool {
        guard let r = revocation(of: device) else { return false }
        return time > r.revokedAt
    }
}

extension TrustStore {
    /// Verifies and records a revocation.
    /// - Throws: the verification's ``IdentityError``; the store is unchanged then.
    public mutating func addRevocation(_ revocation: Revocation, now: UInt64) throws(IdentityError) {
        var list = revocations
        try list.insert(revocation, verifiedBy: self, now: now)
        revocations = list
    }
}

/// Epoch rotation after a removal (or on schedule).
public enum EpochRotation {
    /// Makes the next epoch key of `current.scope` and a grant to the remaining members only.
    ///
    /// ```swift
    /// let (next, grant) = try EpochRotation.rotate(current: k, members: certs, removing: [lost.subject], issuedAt: now, by: hq)
    /// ```
    /// - Parameters:
    ///   - current: the epoch key being replaced (its epoch + 1 is the new epoch).
    ///   - members: the current members' certificates.
    ///   - removing: devices to leave out (e.g. the revoked one).
    /// - Throws: the grant's ``IdentityError``s (e.g. no members left).
    public static func rotate(current: EpochKey, members: [Certificate], removing: Set<DeviceID>, issuedAt: UInt64,
                              by authority: Authority) throws(IdentityError) -> (key: EpochKey, grant: KeyGrant) {
        guard current.epoch < UInt32.max else { throw IdentityError(.invalid, "epoch counter exhausted") }
        let next = EpochKey.generate(scope: current.scope, epoch: current.epoch + 1)
        let remaining = members.filter { !removing.contains($0.subject) }
        let grant = try KeyGrant.issue(epochKey: next, members: remaining, issuedAt: issuedAt, by: authority)
        return (next, grant)
    }
}
