// Group keys (scope epoch keys), key grants, revocations and epoch rotation.
// Normative spec: Protocols/identity.md (grants and revocations) and Protocols/change.md (slots).

import CSodium
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

    /// Whether `other` is the same key: same scope and epoch and the same 32 bytes (compared in
    /// constant time). Two authorities may issue the same epoch number concurrently with different keys
    /// (security-notes §11 case 28); those are different keys and are both kept.
    public func isSameKey(as other: EpochKey) -> Bool {
        guard scope == other.scope, epoch == other.epoch else { return false }
        return key.withUnsafeBytes { a in
            other.key.withUnsafeBytes { b in sodium_memcmp(a.baseAddress!, b.baseAddress!, 32) == 0 }
        }
    }

    /// An order for concurrent keys of one epoch that does not depend on arrival order: BLAKE2b-256 of
    /// the key bytes (never sent anywhere; it only orders slots).
    public var orderingDigest: [UInt8] {
        key.withUnsafeBytes { (k: UnsafeRawBufferPointer) in
            // BLAKE2b with a valid output length cannot fail.
            try! BLAKE2b.hash(Array(k), outputLength: 32)
        }
    }

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

    /// `issue` with injected sealed-box ephemeral seeds (one per member, in device-id order), for test vectors
    /// and the simulator (same seed, same grant bytes). Seeded randomness is not secret: never on a node.
    @_spi(Seeded)
    public static func issue(epochKey: EpochKey, members: [Certificate], issuedAt: UInt64, by authority: Authority,
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

    /// Verifies the issuer's signature and authority for the scope. The issuer's validity is judged at
    /// signing time, `issuedAt` (not now): a grant stays valid after its county authority's certificate
    /// expires, so a restart never forgets a key it granted (Protocols/identity.md §4).
    /// - Throws: `unknownAuthority`, `badSignature`, `scopeEscalation` (county authority outside its
    ///   scopes), and the authority's own checks (`expired`, `notYetValid` at `issuedAt`).
    public func verify(trust: TrustStore) throws(IdentityError) {
        let (key, bound) = try trust.issuerKey(issuer, at: issuedAt)
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

/// A signed revocation: changes by the revoked device with an HLC after `revokedAt` are refused, and
/// peers refuse its sessions. Who may revoke whom (Protocols/identity.md §5):
///
/// - the HQ root may revoke any device or county authority, never itself (the root is replaced only by
///   the offline root rotation of docs/enrollment.md); its revocation applies to the device id, and a
///   revoked county authority takes the devices it issued with it;
/// - a county authority may revoke only device certificates it issued itself, within its scopes; its
///   revocation carries its own authority certificate and the revoked certificate, so that any node
///   holding only the pinned root key can check the bound, and it applies only to certificates of the
///   device issued by that authority.
///
/// A revocation outside these bounds does not verify (`outsideDelegation`), so it is never applied,
/// stored or forwarded.
public struct Revocation: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Largest note length in UTF-8 bytes.
    public static let maxNoteLength = 256

    /// The revoked device (or, for the root, a county authority's key id).
    public let device: DeviceID
    /// Serial of the revoked certificate (for the audit trail; equal to `revokedCertificate.serial`
    /// when that is carried).
    public let serial: UInt64
    /// Changes by the device with an HLC strictly after this are refused. Also the signing time the
    /// issuer's validity is judged at.
    public let revokedAt: HLCTimestamp
    /// Why.
    public let reason: RevocationReason
    /// Free text for the audit trail.
    public let note: String
    /// Key id of the issuing authority.
    public let issuer: DeviceID
    /// A county issuer's authority certificate (signed by the root); nil for the root.
    public let issuerCertificate: Certificate?
    /// The revoked device certificate, issued by the county issuer; nil for the root.
    public let revokedCertificate: Certificate?
    /// Ed25519 signature over `BLAKE2b-512("fieldsync/v1/revocation" || 0x00 || tbs)`.
    public private(set) var signature: [UInt8]

    /// The HQ root revokes a device or a county authority by id.
    /// - Throws: `IdentityError.outsideDelegation` if `authority` is a county authority (it must name the
    ///   certificate: ``init(certificate:revokedAt:reason:note:by:)``) or `device` is the root itself;
    ///   `invalid` for a note over 256 bytes.
    public init(device: DeviceID, serial: UInt64, revokedAt: HLCTimestamp, reason: RevocationReason, note: String,
                by authority: Authority) throws(IdentityError) {
        guard device != (authority.certificate?.issuer ?? authority.keyID) else {
            throw IdentityError(.outsideDelegation, "the HQ root cannot be revoked from inside the system; see root rotation in docs/enrollment.md")
        }
        guard authority.isRoot else {
            throw IdentityError(.outsideDelegation, "a county authority revokes only a certificate it issued: name the certificate")
        }
        try self.init(unchecked: device, serial: serial, revokedAt: revokedAt, reason: reason, note: note, by: authority,
                      issuerCertificate: nil, revokedCertificate: nil)
    }

    /// Revokes `certificate`: the root may revoke any device or authority certificate (the revocation
    /// then names its subject and serial only); a county authority only a device certificate it issued
    /// within its scopes (the revocation then carries both certificates).
    /// - Throws: `IdentityError.outsideDelegation` (the root itself, an authority certificate or a
    ///   certificate of another issuer for a county), `roleEscalation`/`scopeEscalation` (a certificate
    ///   outside the county's bounds), `badSignature`, `invalid` for a note over 256 bytes.
    public init(certificate: Certificate, revokedAt: HLCTimestamp, reason: RevocationReason, note: String,
                by authority: Authority) throws(IdentityError) {
        guard let own = authority.certificate else {
            try self.init(device: certificate.subject, serial: certificate.serial, revokedAt: revokedAt, reason: reason, note: note,
                          by: authority)
            return
        }
        guard certificate.subject != own.issuer else {
            throw IdentityError(.outsideDelegation, "the HQ root cannot be revoked from inside the system; see root rotation in docs/enrollment.md")
        }
        try Self.checkBound(certificate, issuer: own)
        try self.init(unchecked: certificate.subject, serial: certificate.serial, revokedAt: revokedAt, reason: reason, note: note,
                      by: authority, issuerCertificate: own, revokedCertificate: certificate)
    }

    /// Signs whatever it is given (tests and vectors build out-of-bounds revocations with it).
    init(unchecked device: DeviceID, serial: UInt64, revokedAt: HLCTimestamp, reason: RevocationReason, note: String,
         by authority: Authority, issuerCertificate: Certificate?, revokedCertificate: Certificate?) throws(IdentityError) {
        guard note.utf8.count <= Self.maxNoteLength else { throw IdentityError(.invalid, "note longer than \(Self.maxNoteLength) bytes") }
        self.device = device; self.serial = serial; self.revokedAt = revokedAt; self.reason = reason; self.note = note
        issuer = authority.keyID
        self.issuerCertificate = issuerCertificate
        self.revokedCertificate = revokedCertificate
        signature = []
        do {
            let sig = try authority.signingKey.sign(signedDigest)
            signature = sig
        } catch { throw IdentityError(.invalid, "signing failed: \(error)") }
    }

    /// The bound of a county authority `a`: `c` is a device certificate that `a` issued and signed,
    /// with a role and scopes `a` may issue.
    static func checkBound(_ c: Certificate, issuer a: Certificate) throws(IdentityError) {
        guard c.kind == .device else {
            throw IdentityError(.outsideDelegation, "a county authority may not revoke authority \(c.subject); only the HQ root may")
        }
        guard c.issuer == a.subject else {
            throw IdentityError(.outsideDelegation, "\(c.subject) was certified by \(c.issuer), not by county authority \(a.subject)")
        }
        guard DeviceID(signingKey: c.signingKey) == c.subject else {
            throw IdentityError(.deviceIDMismatch, "revoked certificate subject \(c.subject) is not the id of its key")
        }
        try c.verifySignature(issuerKey: a.signingKey)
        guard c.role != .hq, c.role != .county else {
            throw IdentityError(.roleEscalation, "county authority \(a.subject) may not hold a certificate of role \(c.role)")
        }
        guard Scope.all(c.scopes, within: a.scopes) else {
            throw IdentityError(.scopeEscalation, "scopes \(c.scopes.map(\.path)) exceed county authority \(a.subject)'s \(a.scopes.map(\.path))")
        }
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
        for c in [issuerCertificate, revokedCertificate] {
            w.writeBool(c != nil)
            if let c { w.write(c) }
        }
        return w.bytes
    }

    var signedDigest: [UInt8] { BLAKE2b.domainHash(Domain.revocation, [tbsBytes[...]], outputLength: 64) }

    /// Checks the revocation with the pinned root alone (plus the certificates it carries): the signer
    /// is the root or a county authority certified by it and valid at `revokedAt` (signing time, not now:
    /// a stored revocation stays valid after its issuer expires), the signature, and the bounds of
    /// ``Revocation``. The result depends on nothing else, so every node decides the same.
    /// - Throws: `outsideDelegation` (the root as target, a county without the revoked certificate or
    ///   beyond its delegation), `unknownAuthority` (neither the root nor a carried authority
    ///   certificate), `invalid` (root revocations carry no certificates; subject or serial mismatch),
    ///   `badSignature`, and the authority and certificate checks (`unknownAuthority`, `expired`, ...).
    public func verify(trust: TrustStore) throws(IdentityError) {
        guard device != trust.rootID else {
            throw IdentityError(.outsideDelegation, "the HQ root cannot be revoked from inside the system (revocation by \(issuer))")
        }
        let key: Ed25519.PublicKey
        if issuer == trust.rootID {
            guard issuerCertificate == nil, revokedCertificate == nil else {
                throw IdentityError(.invalid, "a revocation by the root carries no certificates")
            }
            key = trust.root
        } else {
            guard let a = issuerCertificate else {
                throw IdentityError(.unknownAuthority, "revocation issuer \(issuer) is not the root and carries no authority certificate")
            }
            guard let c = revokedCertificate else {
                throw IdentityError(.outsideDelegation, "a revocation by county authority \(issuer) must carry the certificate it revokes")
            }
            guard a.subject == issuer else { throw IdentityError(.invalid, "the carried authority certificate is for \(a.subject), not the issuer \(issuer)") }
            try trust.verifyAuthorityStatic(a)
            try a.checkValidity(at: revokedAt.milliseconds, skew: trust.clockSkewMilliseconds)
            guard c.subject == device else { throw IdentityError(.invalid, "the carried certificate is for \(c.subject), not \(device)") }
            guard c.serial == serial else { throw IdentityError(.invalid, "serial \(serial) is not the carried certificate's \(c.serial)") }
            try Self.checkBound(c, issuer: a)
            key = a.signingKey
        }
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

    /// Reads a revocation (call ``verify(trust:)`` before trusting it).
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
        issuerCertificate = try reader.readBool() ? try reader.read(Certificate.self) : nil
        revokedCertificate = try reader.readBool() ? try reader.read(Certificate.self) : nil
        signature = try reader.readRaw(Ed25519.signatureLength)
    }
}

/// A grow-only set of verified revocations. Merge is set union, so replicas converge whatever order
/// revocations arrive in; the cut-off in force against a certificate is the earliest `revokedAt` among
/// the revocations that reach it (a join: ``TrustStore/revocation(of:)``).
public struct RevocationList: Sendable, Equatable {
    private var byDevice: [DeviceID: Set<Revocation>] = [:]

    /// An empty list.
    public init() {}

    /// Every revocation, sorted by device id then `revokedAt` (a stable order for encoding and display).
    public var all: [Revocation] { byDevice.keys.sorted().flatMap { revocations(of: $0) } }

    /// Number of revocations held.
    public var count: Int { byDevice.values.reduce(0) { $0 + $1.count } }

    /// Every revocation naming `device`, earliest cut-off first, whoever signed it (for display: which
    /// of them is in force against a certificate is ``TrustStore/revocation(of:)``'s question).
    public func revocations(of device: DeviceID) -> [Revocation] {
        (byDevice[device] ?? []).sorted { a, b in
            a.revokedAt != b.revokedAt ? a.revokedAt < b.revokedAt : a.canonicalBytes.lexicographicallyPrecedes(b.canonicalBytes)
        }
    }

    /// Verifies `revocation` against `trust`, then adds it.
    /// - Returns: whether it was new.
    /// - Throws: the verification's ``IdentityError``; the list is unchanged then.
    @discardableResult
    public mutating func insert(_ revocation: Revocation, verifiedBy trust: TrustStore) throws(IdentityError) -> Bool {
        try revocation.verify(trust: trust)
        return byDevice[revocation.device, default: []].insert(revocation).inserted
    }

    /// Union with another list (whose entries were verified when they were inserted there).
    public mutating func merge(_ other: RevocationList) {
        for (id, set) in other.byDevice { byDevice[id, default: []].formUnion(set) }
    }

    /// The revocation with the earliest cut-off among those of `device` that reach a certificate issued
    /// by `issuer`: signed by `root`, or by `issuer` itself. Ties go to the smaller encoding.
    public func revocation(of device: DeviceID, certifiedBy issuer: DeviceID, root: DeviceID) -> Revocation? {
        revocations(of: device).first { $0.issuer == root || $0.issuer == issuer }
    }
}

extension TrustStore {
    /// Verifies and records a revocation.
    /// - Returns: whether it was new.
    /// - Throws: the verification's ``IdentityError``; the store is unchanged then.
    @discardableResult
    public mutating func addRevocation(_ revocation: Revocation) throws(IdentityError) -> Bool {
        var list = revocations
        let new = try list.insert(revocation, verifiedBy: self)
        revocations = list
        return new
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
