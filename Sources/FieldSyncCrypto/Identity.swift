// Identity and enrollment: roles, device and authority certificates, enrollment requests, authorities,
// and chain verification against the pinned HQ root key. Normative spec: Protocols/identity.md.

import FieldSyncCore

/// Version byte of every FieldSync security object defined here (certificates, requests, changes, grants,
/// revocations).
public let fieldSyncFormatVersion: UInt8 = 1

/// Crypto suite id `FPS-1`: Ed25519, X25519, XChaCha20-Poly1305-IETF, BLAKE2b, crypto_box_seal.
public let fieldSyncSuiteFPS1: UInt8 = 1

/// Domain-separation labels (hash inputs are `label || 0x00 || bytes`).
enum Domain {
    static let certificate: StaticString = "fieldsync/v1/certificate"
    static let enrollmentRequest: StaticString = "fieldsync/v1/enrollment-request"
    static let changeHeader: StaticString = "fieldsync/v1/change-header"
    static let changeSignature: StaticString = "fieldsync/v1/change"
    static let keyGrant: StaticString = "fieldsync/v1/key-grant"
    static let revocation: StaticString = "fieldsync/v1/revocation"
}

/// What a device (or authority) is allowed to be. Encoded as one byte.
public enum Role: UInt8, CaseIterable, Sendable, Hashable, CanonicalCodable, CustomStringConvertible {
    /// An officer's backpack unit.
    case backpack = 1
    /// A mobile command client.
    case command = 2
    /// A police station node.
    case station = 3
    /// A county node, or (on an authority certificate) a delegated county authority.
    case county = 4
    /// A blind relay box: verifies and forwards, never holds epoch keys.
    case relay = 5
    /// Headquarters.
    case hq = 6

    /// Parses a lower-case role name (`backpack`, `command`, ...).
    public init?(name: String) {
        guard let r = Role.allCases.first(where: { $0.description == name }) else { return nil }
        self = r
    }

    /// The lower-case role name.
    public var description: String {
        switch self {
        case .backpack: "backpack"
        case .command: "command"
        case .station: "station"
        case .county: "county"
        case .relay: "relay"
        case .hq: "hq"
        }
    }

    /// Writes the role byte.
    public func encode(to writer: inout ByteWriter) { writer.writeByte(rawValue) }

    /// Reads a role byte; unknown values are `unknownTag`.
    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        let b = try reader.readByte()
        guard let r = Role(rawValue: b) else { throw DecodingError(.unknownTag, at: at, "role \(b)") }
        self = r
    }
}

/// A typed identity error naming what failed.
public struct IdentityError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed. Raw values are stable.
    public enum Code: String, Sendable, Equatable {
        /// The issuer is neither the pinned root nor a known delegated authority.
        case unknownAuthority
        /// A certificate in the chain is past `notAfter` (beyond the clock-skew tolerance).
        case expired
        /// A certificate in the chain is before `notBefore` (beyond the clock-skew tolerance).
        case notYetValid
        /// A child claims a scope not contained in its issuer's scopes (or a change, grant or member
        /// lies outside the scopes of its certificate).
        case scopeEscalation
        /// The issuer may not grant this role (a county authority issuing `hq` or `county`).
        case roleEscalation
        /// A signature does not verify.
        case badSignature
        /// The subject id is not the one derived from the signing key.
        case deviceIDMismatch
        /// The chain is longer than root -> authority -> device.
        case chainTooDeep
        /// The device (or its issuing authority) is revoked.
        case revoked
        /// A revocation (or other authority act) targets something outside its signer's delegation: the
        /// HQ root itself, an authority (for a county signer), or a certificate the signer did not issue.
        case outsideDelegation
        /// A certificate of the wrong kind was used (e.g. a device certificate as an issuer).
        case wrongKind
        /// A relay was given a role it may not have (e.g. made a member of an epoch key grant).
        case relayNotAllowed
        /// An object is structurally invalid (empty scopes, inverted validity window, ...).
        case invalid
    }

    /// The error code.
    public var code: Code
    /// Human-readable detail naming the certificate or field.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// The code and the detail.
    public var description: String { detail.isEmpty ? code.rawValue : "\(code.rawValue): \(detail)" }
}

extension DeviceID {
    /// The id of a signing key: the first 16 bytes of BLAKE2b-256 of the 32-byte Ed25519 public key.
    /// Also used as the key id of authorities.
    ///
    /// ```swift
    /// let id = DeviceID(signingKey: key.publicKey)
    /// ```
    public init(signingKey: Ed25519.PublicKey) {
        self.init(keyIDOf: signingKey.bytes)
    }

    /// First 16 bytes of BLAKE2b-256(`key`), as an id.
    init(keyIDOf key: [UInt8]) {
        let d = BLAKE2b.hash(parts: [key[...]], outputLength: 32)
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 {
            high = high << 8 | UInt64(d[i])
            low = low << 8 | UInt64(d[8 + i])
        }
        self.init(ID128(high: high, low: low))
    }
}

/// Sorted, duplicate-free scopes (the canonical order), or `invalid` if empty or too many.
func canonicalScopes(_ scopes: [Scope]) throws(IdentityError) -> [Scope] {
    let sorted = Array(Set(scopes)).sorted()
    guard !sorted.isEmpty else { throw IdentityError(.invalid, "at least one scope is required") }
    guard sorted.count <= Certificate.maxScopes else { throw IdentityError(.invalid, "more than \(Certificate.maxScopes) scopes") }
    return sorted
}

/// Whether every scope of `child` is contained in some scope of `parent`.
func scopes(_ child: [Scope], within parent: [Scope]) -> Bool {
    child.allSatisfy { c in parent.contains { $0.contains(c) } }
}

/// Reads a canonical (strictly increasing, non-empty, bounded) scope list.
func readScopes(_ reader: inout ByteReader) throws(DecodingError) -> [Scope] {
    let at = reader.offset
    let s = try reader.readArray(Scope.self, minElementSize: 2, strictlyIncreasingBy: <)
    guard !s.isEmpty, s.count <= Certificate.maxScopes else {
        throw DecodingError(.invalidValue, at: at, "scope count \(s.count) not in 1...\(Certificate.maxScopes)")
    }
    return s
}

/// Reads the version and suite bytes shared by every object.
func readVersionAndSuite(_ reader: inout ByteReader) throws(DecodingError) {
    let at = reader.offset
    let v = try reader.readByte()
    guard v == fieldSyncFormatVersion else { throw DecodingError(.unsupportedVersion, at: at, "version \(v)") }
    let s = try reader.readByte()
    guard s == fieldSyncSuiteFPS1 else { throw DecodingError(.invalidValue, at: at + 1, "unknown suite \(s)") }
}

/// The kind of a certificate.
public enum CertificateKind: UInt8, Sendable, Hashable {
    /// A device (it may author changes and hold epoch keys).
    case device = 1
    /// A delegated county authority (it may issue device certificates, key grants and revocations
    /// within its scopes). Issued only by the root.
    case authority = 2
}

/// A certificate binding a signing key, a key-agreement key, a role and scopes, signed by its issuer.
///
/// Wire format (Protocols/identity.md): `tbs || signature`, where the issuer signs
/// `BLAKE2b-512("fieldsync/v1/certificate" || 0x00 || tbs)` with Ed25519.
public struct Certificate: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Largest number of scopes a certificate may carry.
    public static let maxScopes = 32

    /// Device or authority certificate.
    public let kind: CertificateKind
    /// The subject's id, derived from `signingKey`.
    public let subject: DeviceID
    /// The subject's Ed25519 public key.
    public let signingKey: Ed25519.PublicKey
    /// The subject's X25519 public key (epoch keys are sealed to it).
    public let agreementKey: X25519.PublicKey
    /// The subject's role.
    public let role: Role
    /// The scopes the subject may act in, sorted and duplicate-free.
    public let scopes: [Scope]
    /// Start of validity, milliseconds since the Unix epoch.
    public let notBefore: UInt64
    /// End of validity (inclusive), milliseconds since the Unix epoch.
    public let notAfter: UInt64
    /// Issuer-chosen serial number.
    public let serial: UInt64
    /// Key id of the issuer (the root or a delegated authority).
    public let issuer: DeviceID
    /// The issuer's Ed25519 signature (64 bytes).
    public private(set) var signature: [UInt8]

    /// The signed part of the encoding.
    public var tbsBytes: [UInt8] {
        var w = ByteWriter(capacity: 160 + scopes.count * 24)
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.writeByte(kind.rawValue)
        w.write(subject)
        w.write(signingKey)
        w.write(agreementKey)
        w.write(role)
        w.writeArray(scopes)
        w.writeVarint(notBefore)
        w.writeVarint(notAfter)
        w.writeVarint(serial)
        w.write(issuer)
        return w.bytes
    }

    /// The 64-byte digest the issuer signs.
    var signedDigest: [UInt8] { BLAKE2b.domainHash(Domain.certificate, [tbsBytes[...]], outputLength: 64) }

    /// Signs a new certificate (used by ``Authority``).
    init(kind: CertificateKind, signingKey: Ed25519.PublicKey, agreementKey: X25519.PublicKey, role: Role,
         scopes: [Scope], notBefore: UInt64, notAfter: UInt64, serial: UInt64, issuer: Ed25519.SecretKey) throws(IdentityError) {
        guard notBefore <= notAfter else { throw IdentityError(.invalid, "notAfter is before notBefore") }
        self.kind = kind
        subject = DeviceID(signingKey: signingKey)
        self.signingKey = signingKey
        self.agreementKey = agreementKey
        self.role = role
        self.scopes = try canonicalScopes(scopes)
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.serial = serial
        self.issuer = DeviceID(signingKey: issuer.publicKey)
        signature = []
        do {
            let sig = try issuer.sign(signedDigest)
            signature = sig
        } catch { throw IdentityError(.invalid, "signing failed: \(error)") }
    }

    /// Checks the issuer's signature with `issuerKey`.
    /// - Throws: `IdentityError.badSignature`.
    public func verifySignature(issuerKey: Ed25519.PublicKey) throws(IdentityError) {
        do { try issuerKey.verify(signature: signature, message: signedDigest) } catch {
            throw IdentityError(.badSignature, "certificate \(subject) serial \(serial): issuer signature does not verify")
        }
    }

    /// Whether `time` (ms) is inside the validity window widened by `skew` on both sides.
    /// - Throws: `IdentityError.notYetValid` or `.expired`.
    public func checkValidity(at time: UInt64, skew: UInt64) throws(IdentityError) {
        if time &+ skew < notBefore { throw IdentityError(.notYetValid, "certificate \(subject) valid from \(notBefore), now \(time)") }
        if time > notAfter &+ skew { throw IdentityError(.expired, "certificate \(subject) expired at \(notAfter), now \(time)") }
    }

    /// Whether this certificate was issued later than `other` (a renewal or re-enrollment of the same key):
    /// later `notBefore`, then later `notAfter`, then higher serial. The newest valid certificate of a
    /// device is the one it presents.
    public func isNewer(than other: Certificate) -> Bool {
        (notBefore, notAfter, serial) > (other.notBefore, other.notAfter, other.serial)
    }

    /// A short summary (kind, subject, role, scopes, issuer); no key material beyond the public ids.
    public var description: String {
        "\(kind == .device ? "device" : "authority") \(subject) role=\(role) scopes=\(scopes.map(\.path).joined(separator: ",")) valid=\(notBefore)...\(notAfter) serial=\(serial) issuer=\(issuer)"
    }

    /// Writes `tbs || signature`.
    public func encode(to writer: inout ByteWriter) {
        writer.writeRaw(tbsBytes)
        writer.writeRaw(signature)
    }

    /// Reads and structurally validates a certificate (the signature is checked by ``TrustStore``).
    public init(from reader: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&reader)
        let at = reader.offset
        let k = try reader.readByte()
        guard let kind = CertificateKind(rawValue: k) else { throw DecodingError(.unknownTag, at: at, "certificate kind \(k)") }
        self.kind = kind
        subject = try reader.read()
        signingKey = try reader.read()
        agreementKey = try reader.read()
        role = try reader.read()
        scopes = try readScopes(&reader)
        notBefore = try reader.readVarint()
        let naAt = reader.offset
        notAfter = try reader.readVarint()
        guard notBefore <= notAfter else { throw DecodingError(.invalidValue, at: naAt, "notAfter before notBefore") }
        serial = try reader.readVarint()
        issuer = try reader.read()
        signature = try reader.readRaw(Ed25519.signatureLength)
    }
}

/// A self-signed enrollment request: the device proves possession of its signing key and asks an
/// authority for a certificate. The authority decides the role and scopes it grants.
public struct EnrollmentRequest: Hashable, Sendable, CanonicalCodable {
    /// Largest label length in UTF-8 bytes.
    public static let maxLabelLength = 128

    /// The requesting device's id (derived from `signingKey`).
    public let subject: DeviceID
    /// The device's Ed25519 public key.
    public let signingKey: Ed25519.PublicKey
    /// The device's X25519 public key.
    public let agreementKey: X25519.PublicKey
    /// The role asked for (the authority may grant another).
    public let requestedRole: Role
    /// The scopes asked for (the authority may grant fewer).
    public let requestedScopes: [Scope]
    /// When the request was made, ms since the Unix epoch.
    public let createdAt: UInt64
    /// A free-text label for the operator (e.g. "backpack 17, officer 0412").
    public let label: String
    /// The device's own Ed25519 signature over `BLAKE2b-512("fieldsync/v1/enrollment-request" || 0x00 || tbs)`.
    public let signature: [UInt8]

    /// Creates and self-signs a request.
    ///
    /// ```swift
    /// let req = try EnrollmentRequest(signingKey: sk, agreementKey: xk.publicKey, requestedRole: .backpack,
    ///                                 requestedScopes: [try Scope("longnan/wudu")], createdAt: now, label: "bp-17")
    /// ```
    /// - Throws: `IdentityError.invalid` for empty scopes or a label over 128 bytes.
    public init(signingKey: Ed25519.SecretKey, agreementKey: X25519.PublicKey, requestedRole: Role,
                requestedScopes: [Scope], createdAt: UInt64, label: String) throws(IdentityError) {
        guard label.utf8.count <= Self.maxLabelLength else { throw IdentityError(.invalid, "label longer than \(Self.maxLabelLength) bytes") }
        subject = DeviceID(signingKey: signingKey.publicKey)
        self.signingKey = signingKey.publicKey
        self.agreementKey = agreementKey
        self.requestedRole = requestedRole
        self.requestedScopes = try canonicalScopes(requestedScopes)
        self.createdAt = createdAt
        self.label = label
        var w = ByteWriter()
        Self.writeTBS(&w, subject, self.signingKey, agreementKey, requestedRole, self.requestedScopes, createdAt, label)
        do {
            signature = try signingKey.sign(BLAKE2b.domainHash(Domain.enrollmentRequest, [w.bytes[...]], outputLength: 64))
        } catch { throw IdentityError(.invalid, "signing failed: \(error)") }
    }

    private static func writeTBS(_ w: inout ByteWriter, _ subject: DeviceID, _ sk: Ed25519.PublicKey, _ ak: X25519.PublicKey,
                                 _ role: Role, _ scopes: [Scope], _ createdAt: UInt64, _ label: String) {
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.write(subject)
        w.write(sk)
        w.write(ak)
        w.write(role)
        w.writeArray(scopes)
        w.writeVarint(createdAt)
        w.writeString(label)
    }

    /// The signed part of the encoding.
    public var tbsBytes: [UInt8] {
        var w = ByteWriter()
        Self.writeTBS(&w, subject, signingKey, agreementKey, requestedRole, requestedScopes, createdAt, label)
        return w.bytes
    }

    /// Checks the proof of possession (self-signature) and that the id matches the key.
    /// - Throws: `IdentityError.deviceIDMismatch` or `.badSignature`.
    public func verify() throws(IdentityError) {
        guard DeviceID(signingKey: signingKey) == subject else {
            throw IdentityError(.deviceIDMismatch, "request subject \(subject) is not the id of its signing key")
        }
        do {
            try signingKey.verify(signature: signature, message: BLAKE2b.domainHash(Domain.enrollmentRequest, [tbsBytes[...]], outputLength: 64))
        } catch { throw IdentityError(.badSignature, "enrollment request self-signature does not verify") }
    }

    /// Writes `tbs || signature`.
    public func encode(to writer: inout ByteWriter) {
        writer.writeRaw(tbsBytes)
        writer.writeRaw(signature)
    }

    /// Reads a request (call ``verify()`` before trusting it).
    public init(from reader: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&reader)
        subject = try reader.read()
        signingKey = try reader.read()
        agreementKey = try reader.read()
        requestedRole = try reader.read()
        requestedScopes = try readScopes(&reader)
        createdAt = try reader.readVarint()
        let at = reader.offset
        label = try reader.readString()
        guard label.utf8.count <= Self.maxLabelLength else { throw DecodingError(.invalidValue, at: at, "label too long") }
        signature = try reader.readRaw(Ed25519.signatureLength)
    }
}

/// A certificate issuer: the HQ root (no certificate, its public key is pinned by every device) or a
/// delegated county authority (with an authority certificate signed by the root).
public struct Authority: Sendable {
    /// The authority's signing key.
    public let signingKey: Ed25519.SecretKey
    /// The authority certificate, or nil for the root.
    public let certificate: Certificate?

    /// The key id that certificates name as their issuer.
    public var keyID: DeviceID { DeviceID(signingKey: signingKey.publicKey) }
    /// Whether this is the HQ root.
    public var isRoot: Bool { certificate == nil }

    /// The HQ root authority.
    public init(root signingKey: Ed25519.SecretKey) {
        self.signingKey = signingKey
        certificate = nil
    }

    /// A delegated county authority.
    /// - Throws: `IdentityError.wrongKind` unless `certificate` is an authority certificate for this key.
    public init(delegated signingKey: Ed25519.SecretKey, certificate: Certificate) throws(IdentityError) {
        guard certificate.kind == .authority, certificate.signingKey == signingKey.publicKey else {
            throw IdentityError(.wrongKind, "not an authority certificate for this key")
        }
        self.signingKey = signingKey
        self.certificate = certificate
    }

    /// Signs a device certificate for a verified enrollment request, with the role and scopes the
    /// authority chooses (bounded by its own for a delegated authority).
    ///
    /// ```swift
    /// let cert = try hq.enroll(request, role: .backpack, scopes: [wudu], notBefore: now, notAfter: now + 7 * day, serial: 1)
    /// ```
    /// - Throws: `badSignature`/`deviceIDMismatch` (request), `roleEscalation` (county issuing hq or
    ///   county), `scopeEscalation` (scopes outside the authority's), `invalid`.
    public func enroll(_ request: EnrollmentRequest, role: Role, scopes: [Scope], notBefore: UInt64, notAfter: UInt64,
                       serial: UInt64) throws(IdentityError) -> Certificate {
        try request.verify()
        if let own = certificate {
            guard role != .hq, role != .county else {
                throw IdentityError(.roleEscalation, "a county authority may not issue role \(role)")
            }
            guard Scope.all(scopes, within: own.scopes) else {
                throw IdentityError(.scopeEscalation, "scopes \(scopes.map(\.path)) exceed the authority's \(own.scopes.map(\.path))")
            }
        }
        return try Certificate(kind: .device, signingKey: request.signingKey, agreementKey: request.agreementKey, role: role,
                               scopes: scopes, notBefore: notBefore, notAfter: notAfter, serial: serial, issuer: signingKey)
    }

    /// Root only: signs an authority certificate delegating `scopes` to a county authority whose key
    /// is in `request`.
    /// - Throws: `roleEscalation` if this authority is not the root, plus the request checks.
    public func delegate(_ request: EnrollmentRequest, scopes: [Scope], notBefore: UInt64, notAfter: UInt64,
                         serial: UInt64) throws(IdentityError) -> Certificate {
        guard isRoot else { throw IdentityError(.roleEscalation, "only the HQ root may delegate authorities (chain depth 2)") }
        try request.verify()
        return try Certificate(kind: .authority, signingKey: request.signingKey, agreementKey: request.agreementKey,
                               role: .county, scopes: scopes, notBefore: notBefore, notAfter: notAfter, serial: serial,
                               issuer: signingKey)
    }
}

extension Authority {
    /// Renews (or re-enrolls) a certificate this authority issued: the same keys, a new validity window,
    /// and the same role and scopes unless new ones are given, within the authority's bounds exactly as
    /// for ``enroll(_:role:scopes:notBefore:notAfter:serial:)`` (device certificates) or
    /// ``delegate(_:scopes:notBefore:notAfter:serial:)`` (authority certificates, root only). The old
    /// certificate may have expired (that is when renewals are usually needed); it proves the binding of
    /// the keys because this authority's own signature on it is checked.
    ///
    /// ```swift
    /// let renewed = try hq.renew(old, notBefore: now, notAfter: now + 30 * day, serial: 2)
    /// ```
    /// - Throws: `unknownAuthority` if another authority issued `certificate`, `badSignature` if this
    ///   authority's signature on it does not verify, `roleEscalation`/`scopeEscalation` outside the
    ///   authority's bounds, `invalid` for an inverted window.
    public func renew(_ certificate: Certificate, role: Role? = nil, scopes: [Scope]? = nil, notBefore: UInt64, notAfter: UInt64,
                      serial: UInt64) throws(IdentityError) -> Certificate {
        guard certificate.issuer == keyID else {
            throw IdentityError(.unknownAuthority, "certificate \(certificate.subject) was issued by \(certificate.issuer), not by this authority \(keyID)")
        }
        try certificate.verifySignature(issuerKey: signingKey.publicKey)
        let role = role ?? certificate.role
        let scopes = scopes ?? certificate.scopes
        switch certificate.kind {
        case .device:
            if let own = self.certificate {
                guard role != .hq, role != .county else {
                    throw IdentityError(.roleEscalation, "a county authority may not issue role \(role)")
                }
                guard Scope.all(scopes, within: own.scopes) else {
                    throw IdentityError(.scopeEscalation, "scopes \(scopes.map(\.path)) exceed the authority's \(own.scopes.map(\.path))")
                }
            }
        case .authority:
            guard isRoot else { throw IdentityError(.roleEscalation, "only the HQ root may renew authority certificates") }
            guard role == .county else { throw IdentityError(.roleEscalation, "delegated authorities must have role county") }
        }
        return try Certificate(kind: certificate.kind, signingKey: certificate.signingKey, agreementKey: certificate.agreementKey,
                               role: role, scopes: scopes, notBefore: notBefore, notAfter: notAfter, serial: serial, issuer: signingKey)
    }
}

extension Scope {
    /// Whether each of `child` lies within some scope of `parent`.
    public static func all(_ child: [Scope], within parent: [Scope]) -> Bool { scopes(child, within: parent) }
}

/// What a device pins and learns: the root key, the delegated authorities it has seen, and revocations.
/// Verification is pure: the time is always passed in.
public struct TrustStore: Sendable {
    /// The pinned HQ root public key.
    public let root: Ed25519.PublicKey
    /// Key id of the root.
    public let rootID: DeviceID
    /// Known delegated authority certificates by key id: the newest of each key (see ``Certificate/isNewer(than:)``),
    /// verified on insertion, validity re-checked on use.
    public private(set) var authorities: [DeviceID: Certificate] = [:]
    /// Every delegated authority certificate learned, by key id, in the order learned: a renewed authority
    /// keeps its key, and what its devices signed while an older certificate was valid is judged against that one.
    public private(set) var authorityCertificates: [DeviceID: [Certificate]] = [:]
    /// Known revocations (grow-only).
    public var revocations = RevocationList()
    /// Tolerance for clock skew when checking validity windows, in ms (default 5 minutes).
    public var clockSkewMilliseconds: UInt64
    /// Most certificates kept per authority key (renewals); further ones are refused as `invalid`.
    public static let maxCertificatesPerAuthority = 16

    /// Creates a store pinning `root`.
    public init(root: Ed25519.PublicKey, clockSkewMilliseconds: UInt64 = 5 * 60 * 1000) {
        self.root = root
        rootID = DeviceID(signingKey: root)
        self.clockSkewMilliseconds = clockSkewMilliseconds
    }

    /// Adds a delegated authority certificate after checking it against the root at `now` (what an operator
    /// imports: it must be valid today).
    /// - Throws: any ``IdentityError`` of the check.
    public mutating func addAuthority(_ certificate: Certificate, now: UInt64) throws(IdentityError) {
        try verifyAuthority(certificate, at: now)
        try insertAuthority(certificate)
    }

    /// Learns a delegated authority certificate that travelled in a certificate chain (a handshake, a batch, a
    /// store, a keystore): only the checks that do not depend on time are made here (kind, role, issued by
    /// the root, id, signature); validity is checked where the certificate is used, at the time that matters
    /// (now for a handshake, the change's HLC for a change). An expired authority certificate is still
    /// learned: changes its devices signed while it was valid stay verifiable.
    /// - Returns: whether it was new.
    /// - Throws: any ``IdentityError`` of the static checks (a forged or foreign authority certificate).
    @discardableResult
    public mutating func learnAuthority(_ certificate: Certificate) throws(IdentityError) -> Bool {
        if authorityCertificates[certificate.subject]?.contains(certificate) == true { return false }  // checked when learned
        try verifyAuthorityStatic(certificate)
        return try insertAuthority(certificate)
    }

    @discardableResult
    private mutating func insertAuthority(_ c: Certificate) throws(IdentityError) -> Bool {
        if authorityCertificates[c.subject]?.contains(c) == true { return false }
        guard (authorityCertificates[c.subject]?.count ?? 0) < Self.maxCertificatesPerAuthority else {
            throw IdentityError(.invalid, "authority \(c.subject) already has \(Self.maxCertificatesPerAuthority) certificates")
        }
        authorityCertificates[c.subject, default: []].append(c)
        if let current = authorities[c.subject], !c.isNewer(than: current) { return true }
        authorities[c.subject] = c
        return true
    }

    /// Checks an authority certificate: kind, role county, issued by the root, id, signature, validity.
    func verifyAuthority(_ c: Certificate, at time: UInt64) throws(IdentityError) {
        try verifyAuthorityStatic(c)
        try c.checkValidity(at: time, skew: clockSkewMilliseconds)
    }

    /// The time-independent checks of an authority certificate.
    func verifyAuthorityStatic(_ c: Certificate) throws(IdentityError) {
        guard c.kind == .authority else { throw IdentityError(.wrongKind, "\(c.subject) is not an authority certificate") }
        guard c.issuer == rootID else {
            if authorities[c.issuer] != nil { throw IdentityError(.chainTooDeep, "authority \(c.subject) is issued by another authority") }
            throw IdentityError(.unknownAuthority, "authority \(c.subject) is issued by unknown \(c.issuer)")
        }
        guard c.role == .county else { throw IdentityError(.roleEscalation, "delegated authorities must have role county") }
        guard DeviceID(signingKey: c.signingKey) == c.subject else {
            throw IdentityError(.deviceIDMismatch, "authority \(c.subject) id does not match its key")
        }
        try c.verifySignature(issuerKey: root)
    }

    /// The public key and scopes of issuer `keyID` (root: unbounded scopes), checked at `time`.
    /// - Throws: `unknownAuthority` and the authority checks.
    public func issuerKey(_ keyID: DeviceID, at time: UInt64) throws(IdentityError) -> (key: Ed25519.PublicKey, scopes: [Scope]?) {
        if keyID == rootID { return (root, nil) }
        guard let a = authorities[keyID] else { throw IdentityError(.unknownAuthority, "issuer \(keyID) is not the root nor a known authority") }
        try verifyAuthority(a, at: time)
        return (a.signingKey, a.scopes)
    }

    /// Checks everything about a device certificate that does not depend on time: kind, id, issuer,
    /// the issuing authority's certificate and signature, the certificate's signature, and the role and
    /// scope bounds of a county authority. Verify once per peer, then check each change against the
    /// result (one Ed25519 verification per change instead of two or three). The issuing authority's
    /// newest certificate is used; ``certifiedAll(_:)`` gives one result per known authority certificate.
    /// - Throws: the first ``IdentityError`` found.
    public func certified(_ c: Certificate) throws(IdentityError) -> VerifiedCertificate {
        try checkDeviceStatic(c)
        if c.issuer == rootID {
            try c.verifySignature(issuerKey: root)
            return VerifiedCertificate(certificate: c, authority: nil)
        }
        guard let a = authorities[c.issuer] else {
            throw IdentityError(.unknownAuthority, "issuer \(c.issuer) is not the root nor a known authority")
        }
        return try certified(c, under: a)
    }

    /// ``certified(_:)`` once per known certificate of the issuing authority (a renewed authority has
    /// several; each bounds the device certificate in its own validity window), newest authority first.
    /// - Throws: the error of the newest authority certificate when none of them certifies `c`.
    public func certifiedAll(_ c: Certificate) throws(IdentityError) -> [VerifiedCertificate] {
        let newest = try certified(c)
        guard c.issuer != rootID, let all = authorityCertificates[c.issuer], all.count > 1 else { return [newest] }
        var out = [newest]
        for a in all where a != newest.authority {
            if let v = try? certified(c, under: a) { out.append(v) }
        }
        return out
    }

    private func checkDeviceStatic(_ c: Certificate) throws(IdentityError) {
        guard c.kind == .device else { throw IdentityError(.wrongKind, "\(c.subject) is not a device certificate") }
        guard DeviceID(signingKey: c.signingKey) == c.subject else {
            throw IdentityError(.deviceIDMismatch, "certificate subject \(c.subject) is not the id of its signing key")
        }
    }

    private func certified(_ c: Certificate, under a: Certificate) throws(IdentityError) -> VerifiedCertificate {
        try verifyAuthorityStatic(a)
        try c.verifySignature(issuerKey: a.signingKey)
        guard c.role != .hq, c.role != .county else {
            throw IdentityError(.roleEscalation, "county authority \(c.issuer) may not issue role \(c.role)")
        }
        guard Scope.all(c.scopes, within: a.scopes) else {
            throw IdentityError(.scopeEscalation, "scopes \(c.scopes.map(\.path)) exceed issuer's \(a.scopes.map(\.path))")
        }
        return VerifiedCertificate(certificate: c, authority: a)
    }

    /// Verifies a device certificate's chain at `time`, ignoring revocation (see ``verify(_:now:)``): it
    /// passes if one known certificate of its issuing authority certifies it and both are valid at `time`.
    /// - Throws: the first ``IdentityError`` found (for the newest authority certificate).
    public func verifyChain(_ c: Certificate, at time: UInt64) throws(IdentityError) {
        let all = try certifiedAll(c)
        for v in all.dropFirst() where (try? v.checkValidity(at: time, skew: clockSkewMilliseconds)) != nil { return }
        try all[0].checkValidity(at: time, skew: clockSkewMilliseconds)
    }

    /// Verifies a device certificate at `now` including revocation: a certificate with a revocation in
    /// force against it (``revocation(of:)``) is refused for new sessions.
    /// - Throws: the first ``IdentityError`` found (`revoked` last).
    public func verify(_ c: Certificate, now: UInt64) throws(IdentityError) {
        try checkStanding(certified(c), now: now)
    }

    /// The time- and revocation-dependent part of ``verify(_:now:)`` for a certificate already checked by
    /// ``certified(_:)``: the validity windows of the certificate and its issuing authority at `now`, and
    /// no revocation in force against it (``revocation(of:)``). What a session re-checks about its peer
    /// before every push and on every message it receives (Protocols/sync.md §4.2), without a signature
    /// check.
    /// - Throws: `expired` or `notYetValid`, then `revoked`.
    public func checkStanding(_ v: VerifiedCertificate, now: UInt64) throws(IdentityError) {
        try v.checkValidity(at: now, skew: clockSkewMilliseconds)
        if let r = revocation(of: v.certificate) {
            throw IdentityError(.revoked, "\(r.device) revoked at \(r.revokedAt) (\(r.reason)) by \(r.issuer)")
        }
    }

    /// The revocation in force against certificate `c`: the one with the earliest cut-off among the
    /// known revocations of `c.subject` signed by the root or by `c.issuer` (a county authority's
    /// revocation reaches only certificates it issued), and of `c.issuer` signed by the root (a revoked
    /// county authority takes its devices with it). Nil if none. The cut-off is a join: it depends on
    /// the set of revocations known, never on the order they arrived in (Protocols/identity.md §5).
    public func revocation(of c: Certificate) -> Revocation? {
        let own = revocations.revocation(of: c.subject, certifiedBy: c.issuer, root: rootID)
        let issuer = c.issuer == rootID ? nil : revocations.revocation(of: c.issuer, certifiedBy: rootID, root: rootID)
        switch (own, issuer) {
        case let (a?, b?): return b.revokedAt < a.revokedAt ? b : a
        case let (a, b): return a ?? b
        }
    }

    /// Whether an act stamped `time` by the holder of certificate `c` falls after the cut-off of the
    /// revocation in force against it (``revocation(of:)``).
    public func isRevoked(_ c: Certificate, at time: HLCTimestamp) -> Bool {
        guard let r = revocation(of: c) else { return false }
        return time > r.revokedAt
    }

    /// Verifies a device certificate presented with its chain (Protocols/handshake.md §3): the issuing
    /// authority's certificate, when the issuer is not the root. The chain is checked against the root
    /// (``learnAuthority(_:)``) before the device certificate is checked against it at `now`; a chain that
    /// does not verify, names another issuer, or is longer than one certificate is refused.
    /// - Returns: this trust store with the chain's authority learned (for the caller to keep or drop).
    /// - Throws: the first ``IdentityError`` found.
    @discardableResult
    public func verify(_ c: Certificate, chain: [Certificate], now: UInt64) throws(IdentityError) -> TrustStore {
        var t = self
        if !chain.isEmpty {
            guard chain.count == 1 else { throw IdentityError(.chainTooDeep, "a chain carries at most the issuing authority's certificate") }
            guard c.issuer != rootID else { throw IdentityError(.invalid, "certificate \(c.subject) is issued by the root; its chain must be empty") }
            guard chain[0].subject == c.issuer else {
                throw IdentityError(.unknownAuthority, "chain certificate \(chain[0].subject) is not the issuer \(c.issuer) of \(c.subject)")
            }
            try t.learnAuthority(chain[0])
        }
        try t.verify(c, now: now)
        return t
    }
}

/// A device certificate whose signatures, issuer and bounds were checked by ``TrustStore/certified(_:)``.
/// Validity windows and revocation depend on time and are checked on use.
public struct VerifiedCertificate: Sendable, Hashable {
    /// The device certificate.
    public let certificate: Certificate
    /// The issuing county authority's certificate, or nil when the root issued it.
    public let authority: Certificate?

    /// Checks the validity windows of the certificate and of its issuing authority at `time`.
    /// - Throws: `IdentityError.notYetValid` or `.expired`.
    public func checkValidity(at time: UInt64, skew: UInt64) throws(IdentityError) {
        try authority?.checkValidity(at: time, skew: skew)
        try certificate.checkValidity(at: time, skew: skew)
    }
}
