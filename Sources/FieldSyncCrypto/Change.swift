// Changes, the sync unit: a clear, signed header; a payload sealed once under a fresh data key; the data
// key wrapped in one slot per reader group; fork proofs. Normative spec: Protocols/change.md.

import FieldSyncCore

/// What a change carries. Values below 0x80 are sealed content (payload encrypted, key slots); values
/// from 0x80 are control content (payload in clear, signed, no slots), so a peer knows which form an
/// unknown type has. Encoded as one byte.
public struct ContentType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The type byte.
    public let rawValue: UInt8
    /// Wraps a type byte (any value is accepted; unknown ones are carried through).
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// CRDT record operations (sealed).
    public static let records = ContentType(rawValue: 0x01)
    /// A ``KeyGrant`` (control).
    public static let keyGrant = ContentType(rawValue: 0x80)
    /// A ``Revocation`` (control).
    public static let revocation = ContentType(rawValue: 0x81)
    /// A receipt ("HQ holds these changes") (control).
    public static let receipt = ContentType(rawValue: 0x82)

    /// The first control type: values from it on are control content (clear payload, no key slots).
    public static let firstControl: UInt8 = 0x80
    /// Whether the payload is clear and there are no key slots.
    public var isControl: Bool { rawValue >= Self.firstControl }
    /// Whether it is a key grant or a revocation: the control changes that change what a node trusts
    /// and reads, kept for start-up (`SyncStore.controlChanges()`) and sent with the authority
    /// certificates that verify them.
    public var carriesTrust: Bool { self == .keyGrant || self == .revocation }

    /// A name for known types, hex for others.
    public var description: String {
        switch rawValue {
        case 0x01: "records"
        case 0x80: "keyGrant"
        case 0x81: "revocation"
        case 0x82: "receipt"
        default: "0x" + Hex.encode([rawValue])
        }
    }
}

/// A typed error of change sealing, verification and opening.
public struct ChangeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed. Raw values are stable.
    public enum Code: String, Sendable, Equatable {
        /// The author's signature does not verify (tampered header, slots or payload, or signed by
        /// another key).
        case badSignature
        /// The certificate presented is not the author's (its subject differs from the header's author).
        case impersonation
        /// The author's certificate chain fails; see ``ChangeError/identityCode``.
        case certificateInvalid
        /// The author may not write in the change's scope.
        case scopeEscalation
        /// The author's role may not author this content (a relay authoring sealed records).
        case roleNotAllowed
        /// The author (or its issuing authority) was revoked before the change's HLC.
        case revoked
        /// The change's HLC is further in the future than the clock-skew tolerance allows.
        case timestampInFuture
        /// None of the keys given matches a key slot of the change.
        case noMatchingSlot
        /// A slot or the payload failed AEAD authentication (wrong key, moved payload, tampered bytes).
        case authenticationFailed
        /// The change is structurally invalid, or the operation does not apply (opening a control change).
        case invalid
        /// Two changes are not a fork (different logs, or the same change).
        case notAFork
        /// A control change's payload (a key grant or a revocation) does not decode or does not verify,
        /// for example a revocation outside its signer's delegation; see ``ChangeError/identityCode``.
        /// Such a change is refused as a whole, so it is neither stored nor forwarded.
        case unauthorizedControl
    }

    /// The error code.
    public var code: Code
    /// For `certificateInvalid`: the certificate check that failed.
    public var identityCode: IdentityError.Code?
    /// Human-readable detail.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "", identityCode: IdentityError.Code? = nil) {
        self.code = code
        self.detail = detail
        self.identityCode = identityCode
    }

    /// Code, identity code and detail.
    public var description: String {
        let id = identityCode.map { " (\($0.rawValue))" } ?? ""
        return detail.isEmpty ? code.rawValue + id : "\(code.rawValue)\(id): \(detail)"
    }
}

/// The clear header of a change. Everything here is visible to relays (see docs/threat-model.md).
public struct ChangeHeader: Hashable, Sendable, CanonicalCodable {
    /// The author device.
    public let author: DeviceID
    /// The scope; the log is one per (author, scope).
    public let scope: Scope
    /// Position in the log, from 1.
    public let seq: UInt64
    /// Id (hash) of the previous change of the log; 32 zero bytes for seq 1.
    public let prevHash: [UInt8]
    /// The author's hybrid logical clock at writing.
    public let hlc: HLCTimestamp
    /// What the payload is.
    public let contentType: ContentType
    /// Delivery priority.
    public let priority: Priority
    /// Epoch of the first key slot (0 for control changes).
    public let keyEpoch: UInt32
    /// Length in bytes of the payload as stored (ciphertext including the 16-byte tag for sealed
    /// changes, clear bytes for control changes).
    public let payloadLength: UInt64

    /// Creates a header, checking the invariants the decoder also checks.
    /// - Throws: `ChangeError.invalid`.
    public init(author: DeviceID, scope: Scope, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp, contentType: ContentType,
                priority: Priority, keyEpoch: UInt32, payloadLength: UInt64) throws(ChangeError) {
        guard seq >= 1 else { throw ChangeError(.invalid, "seq starts at 1") }
        guard prevHash.count == 32 else { throw ChangeError(.invalid, "prevHash must be 32 bytes") }
        guard seq > 1 || prevHash.allSatisfy({ $0 == 0 }) else { throw ChangeError(.invalid, "prevHash of seq 1 must be zero") }
        guard contentType.isControl == (keyEpoch == 0) else {
            throw ChangeError(.invalid, "keyEpoch must be 0 exactly for control changes")
        }
        guard payloadLength <= UInt64(Change.maxPayloadLength) else { throw ChangeError(.invalid, "payload too large") }
        self.author = author; self.scope = scope; self.seq = seq; self.prevHash = prevHash; self.hlc = hlc
        self.contentType = contentType; self.priority = priority; self.keyEpoch = keyEpoch; self.payloadLength = payloadLength
        var w = ByteWriter(capacity: 96)
        encodeFields(to: &w)
        encoded = w.bytes
    }

    /// The encoding, computed once.
    private var encoded: [UInt8] = []

    /// `BLAKE2b-256("fieldsync/v1/change-header" || 0x00 || header)`: the associated data of the payload
    /// and of every key slot.
    public var hash: [UInt8] { BLAKE2b.domainHash(Domain.changeHeader, [encoded[...]], outputLength: 32) }

    /// Writes the header fields in order.
    public func encode(to w: inout ByteWriter) { w.writeRaw(encoded) }

    private func encodeFields(to w: inout ByteWriter) {
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.write(author)
        w.write(scope)
        w.writeVarint(seq)
        w.writeRaw(prevHash)
        w.write(hlc)
        w.writeByte(contentType.rawValue)
        w.writeByte(priority.rawValue)
        w.writeVarint(UInt64(keyEpoch))
        w.writeVarint(payloadLength)
    }

    /// Reads and validates a header.
    public init(from r: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&r)
        let author = try r.read(DeviceID.self)
        let scope = try r.read(Scope.self)
        let at = r.offset
        let seq = try r.readVarint()
        let prev = try r.readRaw(32)
        let hlc = try r.read(HLCTimestamp.self)
        let ct = ContentType(rawValue: try r.readByte())
        let pAt = r.offset
        let pb = try r.readByte()
        guard let priority = Priority(rawValue: pb) else { throw DecodingError(.invalidValue, at: pAt, "priority \(pb)") }
        let epoch = try r.readVarint(as: UInt32.self)
        let len = try r.readVarint()
        do {
            self = try ChangeHeader(author: author, scope: scope, seq: seq, prevHash: prev, hlc: hlc, contentType: ct,
                                    priority: priority, keyEpoch: epoch, payloadLength: len)
        } catch { throw DecodingError(.invalidValue, at: at, error.detail) }
    }
}

/// One wrapping of a change's data key.
public struct KeySlot: Hashable, Sendable {
    /// Who can open the slot.
    public enum Recipient: Hashable, Sendable, CanonicalEncodable {
        /// Holders of the epoch key of `scope` at `epoch` (XChaCha20-Poly1305 under the epoch key).
        case epoch(scope: Scope, epoch: UInt32)
        /// The HQ archive X25519 key with this key id (`crypto_box_seal`).
        case archive(keyID: DeviceID)

        /// Tag byte, then the fields.
        public func encode(to w: inout ByteWriter) {
            switch self {
            case let .epoch(scope, epoch):
                w.writeByte(1)
                w.write(scope)
                w.writeVarint(UInt64(epoch))
            case let .archive(keyID):
                w.writeByte(2)
                w.write(keyID)
            }
        }
    }

    /// Who can open it.
    public let recipient: Recipient
    /// 24-byte nonce for epoch slots; empty for archive slots.
    public let nonce: [UInt8]
    /// Epoch slot: 48 bytes (data key + tag). Archive slot: 112 bytes (sealed data key || header hash).
    public let ciphertext: [UInt8]

    /// The HQ archive key id of an X25519 public key: the first 16 bytes of BLAKE2b-256 of the key.
    public static func archiveKeyID(_ key: X25519.PublicKey) -> DeviceID {
        DeviceID(keyIDOf: key.bytes)
    }

    func encode(to w: inout ByteWriter) {
        w.write(recipient)
        w.writeRaw(nonce)
        w.writeRaw(ciphertext)
    }

    static func decode(from r: inout ByteReader) throws(DecodingError) -> KeySlot {
        let at = r.offset
        switch try r.readByte() {
        case 1:
            let scope = try r.read(Scope.self)
            let epoch = try r.readVarint(as: UInt32.self)
            guard epoch >= 1 else { throw DecodingError(.invalidValue, at: at, "slot epoch 0") }
            return KeySlot(recipient: .epoch(scope: scope, epoch: epoch), nonce: try r.readRaw(24), ciphertext: try r.readRaw(48))
        case 2:
            let id = try r.read(DeviceID.self)
            return KeySlot(recipient: .archive(keyID: id), nonce: [], ciphertext: try r.readRaw(64 + SealedBox.overhead))
        case let t:
            throw DecodingError(.unknownTag, at: at, "key slot kind \(t)")
        }
    }

    /// Associated data of slot `index`: header hash || varint(index) || recipient encoding.
    static func associatedData(headerHash: [UInt8], index: Int, recipient: Recipient) -> [UInt8] {
        var w = ByteWriter(capacity: 80)
        w.writeRaw(headerHash)
        w.writeVarint(UInt64(index))
        w.write(recipient)
        return w.bytes
    }
}

/// The random bytes one sealing uses: fixed ones for test vectors, drawn from an injected generator
/// (`Change.seal(...using:)`), or from libsodium (the default).
struct SealingRandomness {
    var dataKey: [UInt8]
    var payloadNonce: [UInt8]
    var slotNonces: [[UInt8]]
    var archiveSeed: [UInt8]?

    static func fresh(slots: Int, archive: Bool) -> SealingRandomness {
        SealingRandomness(dataKey: SecureRandom.bytes(32), payloadNonce: SecureRandom.bytes(24),
                          slotNonces: (0..<slots).map { _ in SecureRandom.bytes(24) }, archiveSeed: nil)
    }

    /// Everything drawn from `generator`, the archive slot's ephemeral key included.
    static func drawn(slots: Int, archive: Bool, using generator: inout some RandomNumberGenerator) -> SealingRandomness {
        func bytes(_ n: Int) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(n)
            while out.count < n { withUnsafeBytes(of: generator.next().littleEndian) { out += $0.prefix(n - out.count) } }
            return out
        }
        let dataKey = bytes(32), payloadNonce = bytes(24)
        let slotNonces = (0..<slots).map { _ in bytes(24) }
        return SealingRandomness(dataKey: dataKey, payloadNonce: payloadNonce, slotNonces: slotNonces,
                                 archiveSeed: archive ? bytes(32) : nil)
    }
}

/// A change: clear header, payload nonce, key slots, payload, author signature.
///
/// ```swift
/// let c = try Change.seal(author: me, scope: s, seq: 1, prevHash: Change.zeroHash, hlc: t, priority: .normal,
///                         payload: ops, readers: [epochKey])
/// try c.verify(authorCertificate: myCert, trust: trust, now: nowMs)   // what relays do
/// let ops2 = try c.open(with: [epochKey])                             // what members do
/// ```
public struct Change: Hashable, Sendable, CanonicalCodable {
    /// Largest payload (16 MiB); larger data goes to attachments.
    public static let maxPayloadLength = 16 << 20
    /// Largest change that syncs (48 KiB of encoding; Protocols/change.md, "Size"). A change travels in
    /// one batch message of at most 65,519 bytes of plaintext (Protocols/sync.md §5) together with its
    /// author's certificates (and, first in a session, every authority certificate): 16 KiB are left for
    /// those. A larger change could never be sent: every session offering it would fail, and with it the
    /// sync of everything else between the two nodes. Local writes refuse to seal one, and verification
    /// rejects one (`invalid`), so that no node stores a change it could not pass on.
    public static let maxSyncBytes = 49_152
    /// Largest number of key slots.
    public static let maxSlots = 16
    /// The prevHash of seq 1.
    public static let zeroHash = [UInt8](repeating: 0, count: 32)

    /// The clear header.
    public let header: ChangeHeader
    /// The 24-byte payload nonce (empty for control changes).
    public let payloadNonce: [UInt8]
    /// Key slots (none for control changes).
    public let slots: [KeySlot]
    /// Sealed payload (ciphertext || tag), or the clear payload of a control change. Read from the
    /// encoding (a copy each time): a change keeps its bytes once.
    public var payload: [UInt8] {
        let end = encoded.count - signatureLength
        return Array(encoded[(end - payloadLength)..<end])
    }
    /// The author's Ed25519 signature over `BLAKE2b-512("fieldsync/v1/change" || 0x00 || everything before it)`.
    /// Read from the end of the encoding (empty while unsigned).
    public var signature: [UInt8] { Array(encoded[(encoded.count - signatureLength)...]) }

    /// The complete encoding, computed once: the signature digest, the id and the wire form all use
    /// exactly these bytes. The payload and the signature are read from it, so that a change held by a
    /// store, a verification cache and a session costs its bytes once, not twice.
    private var encoded: [UInt8] = []
    /// Byte counts of the payload (which ends the unsigned part) and of the signature (which ends the
    /// encoding).
    private var payloadLength: Int
    private var signatureLength: Int

    /// Memberwise, for the decoder and sealing code (an empty signature makes an unsigned change whose
    /// ``signedDigest`` is what the author signs).
    init(header: ChangeHeader, payloadNonce: [UInt8], slots: [KeySlot], payload: [UInt8], signature: [UInt8]) {
        self.header = header; self.payloadNonce = payloadNonce; self.slots = slots
        payloadLength = payload.count
        signatureLength = signature.count
        var w = ByteWriter(capacity: 160 + slots.count * 120 + payload.count)
        encodeUnsigned(to: &w, payload: payload)
        w.writeRaw(signature)
        encoded = w.bytes.withoutSpareRoom()  // a writer's buffer keeps the spare room it grew by
    }

    /// The same change with `signature` (reuses the unsigned encoding).
    private func signed(_ signature: [UInt8]) -> Change {
        precondition(signatureLength == 0, "already signed")
        var c = self
        c.signatureLength = signature.count
        // Exactly the bytes needed: appending to the unsigned encoding would double its buffer, and the
        // encoding is what stores keep (and, in a simulator, what thousands of replicas share).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encoded.count + signature.count)
        bytes.append(contentsOf: encoded)
        bytes.append(contentsOf: signature)
        c.encoded = bytes
        return c
    }

    /// Seals a content change: encrypts `payload` once under a fresh data key and wraps the key for each
    /// reader epoch key (the first must be for a scope containing `scope`; its epoch goes in the header)
    /// and, optionally, for the HQ archive key. Then signs.
    /// - Throws: `ChangeError.invalid` (no readers, control content type, first reader not covering the
    ///   scope, too many slots, bad prevHash), or a wrapped crypto failure.
    public static func seal(author: Ed25519.SecretKey, scope: Scope, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp,
                            contentType: ContentType = .records, priority: Priority, payload: [UInt8], readers: [EpochKey],
                            archive: X25519.PublicKey? = nil) throws(ChangeError) -> Change {
        try seal(author: author, scope: scope, seq: seq, prevHash: prevHash, hlc: hlc, contentType: contentType,
                 priority: priority, payload: payload, readers: readers, archive: archive,
                 randomness: .fresh(slots: readers.count, archive: archive != nil))
    }

    /// Seals a content change like `seal(author:scope:seq:prevHash:hlc:contentType:priority:payload:readers:archive:)`,
    /// drawing the data key, the nonces and the archive slot's ephemeral key from `generator` instead of
    /// libsodium. For simulations and tests that must be reproducible (the same generator state seals the
    /// same bytes); a node uses the libsodium form, since seeded randomness is not secret.
    public static func seal(author: Ed25519.SecretKey, scope: Scope, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp,
                            contentType: ContentType = .records, priority: Priority, payload: [UInt8], readers: [EpochKey],
                            archive: X25519.PublicKey? = nil, using generator: inout some RandomNumberGenerator) throws(ChangeError) -> Change {
        try seal(author: author, scope: scope, seq: seq, prevHash: prevHash, hlc: hlc, contentType: contentType,
                 priority: priority, payload: payload, readers: readers, archive: archive,
                 randomness: .drawn(slots: readers.count, archive: archive != nil, using: &generator))
    }

    static func seal(author: Ed25519.SecretKey, scope: Scope, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp,
                     contentType: ContentType, priority: Priority, payload: [UInt8], readers: [EpochKey],
                     archive: X25519.PublicKey?, randomness rnd: SealingRandomness) throws(ChangeError) -> Change {
        guard !contentType.isControl else { throw ChangeError(.invalid, "control content is not sealed; use Change.control") }
        guard let first = readers.first else { throw ChangeError(.invalid, "a sealed change needs at least one reader key") }
        guard first.scope.contains(scope) else {
            throw ChangeError(.invalid, "the first reader key (\(first.scope)) must cover the change scope \(scope)")
        }
        guard readers.count + (archive == nil ? 0 : 1) <= maxSlots else { throw ChangeError(.invalid, "too many key slots") }
        precondition(rnd.slotNonces.count == readers.count, "one nonce per reader slot")
        let header = try ChangeHeader(author: author.keyID, scope: scope, seq: seq, prevHash: prevHash,
                                      hlc: hlc, contentType: contentType, priority: priority, keyEpoch: first.epoch,
                                      payloadLength: UInt64(payload.count + XChaCha20Poly1305.tagLength))
        let hh = header.hash
        let dataKey = SecretBytes(copying: rnd.dataKey)
        do {
            let sealedPayload = try XChaCha20Poly1305.seal(payload, key: dataKey, nonce: rnd.payloadNonce, associatedData: hh)
            var slots: [KeySlot] = []
            slots.reserveCapacity(readers.count + 1)
            var dk = rnd.dataKey
            defer { wipe(&dk) }
            for (i, r) in readers.enumerated() {
                let recipient = KeySlot.Recipient.epoch(scope: r.scope, epoch: r.epoch)
                let ad = KeySlot.associatedData(headerHash: hh, index: i, recipient: recipient)
                let ct = try XChaCha20Poly1305.seal(dk, key: r.key, nonce: rnd.slotNonces[i], associatedData: ad)
                slots.append(KeySlot(recipient: recipient, nonce: rnd.slotNonces[i], ciphertext: ct))
            }
            if let archive {
                var plain = dk + hh
                defer { wipe(&plain) }
                let ct = try rnd.archiveSeed.map { seed throws(CryptoError) in try SealedBox.seal(plain, to: archive, ephemeralSeed: seed) }
                    ?? SealedBox.seal(plain, to: archive)
                slots.append(KeySlot(recipient: .archive(keyID: KeySlot.archiveKeyID(archive)), nonce: [], ciphertext: ct))
            }
            let unsigned = Change(header: header, payloadNonce: rnd.payloadNonce, slots: slots, payload: sealedPayload, signature: [])
            return unsigned.signed(try author.sign(unsigned.signedDigest))
        } catch { throw ChangeError(.invalid, "sealing failed: \(error)") }
    }

    /// Builds a signed control change (key grant, revocation, receipt): clear payload, no slots, key epoch 0.
    /// - Throws: `ChangeError.invalid` for a non-control content type or bad header fields.
    public static func control(author: Ed25519.SecretKey, scope: Scope, seq: UInt64, prevHash: [UInt8], hlc: HLCTimestamp,
                               contentType: ContentType, priority: Priority, payload: [UInt8]) throws(ChangeError) -> Change {
        guard contentType.isControl else { throw ChangeError(.invalid, "\(contentType) is sealed content; use Change.seal") }
        let header = try ChangeHeader(author: author.keyID, scope: scope, seq: seq, prevHash: prevHash,
                                      hlc: hlc, contentType: contentType, priority: priority, keyEpoch: 0,
                                      payloadLength: UInt64(payload.count))
        let unsigned = Change(header: header, payloadNonce: [], slots: [], payload: payload, signature: [])
        do {
            return unsigned.signed(try author.sign(unsigned.signedDigest))
        } catch { throw ChangeError(.invalid, "signing failed: \(error)") }
    }

    /// Everything before the signature.
    var unsignedBytes: ArraySlice<UInt8> { encoded[0..<(encoded.count - signatureLength)] }

    private func encodeUnsigned(to w: inout ByteWriter, payload: [UInt8]) {
        w.write(header)
        w.writeRaw(payloadNonce)
        w.writeVarint(UInt64(slots.count))
        for s in slots { s.encode(to: &w) }
        w.writeRaw(payload)
    }

    var signedDigest: [UInt8] { BLAKE2b.domainHash(Domain.changeSignature, [unsignedBytes], outputLength: 64) }

    /// The change id: BLAKE2b-256 of the complete encoding. The next change of the log uses it as prevHash.
    public var id: [UInt8] { BLAKE2b.hash(parts: [encoded[...]], outputLength: 32) }

    /// The complete encoding (the same bytes as `canonicalBytes`, without re-encoding).
    public var encodedBytes: [UInt8] { encoded }

    /// Writes the change.
    public func encode(to w: inout ByteWriter) { w.writeRaw(encoded) }

    /// Reads a change. Total: every malformed input throws a `DecodingError`; allocations are bounded by
    /// the input size.
    public init(from r: inout ByteReader) throws(DecodingError) {
        let h = try r.read(ChangeHeader.self)
        let payloadNonce = h.contentType.isControl ? [] : try r.readRaw(24)
        let at = r.offset
        let n = try r.readCount(minElementSize: 40)
        if h.contentType.isControl {
            guard n == 0 else { throw DecodingError(.invalidValue, at: at, "control changes carry no key slots") }
        } else {
            guard (1...Change.maxSlots).contains(n) else { throw DecodingError(.invalidValue, at: at, "slot count \(n)") }
        }
        var s: [KeySlot] = []
        s.reserveCapacity(n)
        for i in 0..<n {
            let sAt = r.offset
            let slot = try KeySlot.decode(from: &r)
            if i == 0 {
                guard case let .epoch(scope, epoch) = slot.recipient, epoch == h.keyEpoch, scope.contains(h.scope) else {
                    throw DecodingError(.invalidValue, at: sAt, "slot 0 must be the epoch slot of the header's key epoch and scope")
                }
            }
            s.append(slot)
        }
        guard h.payloadLength <= UInt64(r.remaining) else {
            throw DecodingError(.truncated, at: r.offset, "payload of \(h.payloadLength) bytes, \(r.remaining) left")
        }
        if !h.contentType.isControl, h.payloadLength < UInt64(XChaCha20Poly1305.tagLength) {
            throw DecodingError(.invalidValue, at: r.offset, "sealed payload shorter than its tag")
        }
        let p = try r.readRaw(Int(h.payloadLength))
        self.init(header: h, payloadNonce: payloadNonce, slots: s, payload: p, signature: try r.readRaw(Ed25519.signatureLength))
    }

    // MARK: Verification (public material only)

    /// Verifies the change with public material only (what a blind relay does): the certificate is the
    /// author's, the signature, the chain (valid at the change's HLC time), the author's scopes and role,
    /// the HLC against `now`, and revocation (refused if the HLC is after the author's `revokedAt`).
    /// - Throws: ``ChangeError`` naming the failed check.
    public func verify(authorCertificate cert: Certificate, trust: TrustStore, now: UInt64) throws(ChangeError) {
        try verify(authorCertificate: cert, trust: trust, now: now, checkRevocation: true)
    }

    /// Same as ``verify(authorCertificate:trust:now:)`` with a certificate already checked by
    /// ``TrustStore/certified(_:)`` (the fast path for a stream of changes from one author).
    /// - Throws: ``ChangeError`` naming the failed check.
    public func verify(author: VerifiedCertificate, trust: TrustStore, now: UInt64) throws(ChangeError) {
        try verify(author: author, trust: trust, now: now, checkRevocation: true)
    }

    func verify(authorCertificate cert: Certificate, trust: TrustStore, now: UInt64, checkRevocation: Bool) throws(ChangeError) {
        guard cert.subject == header.author else {
            throw ChangeError(.impersonation, "certificate of \(cert.subject) presented for a change by \(header.author)")
        }
        let verified: VerifiedCertificate
        do { verified = try trust.certified(cert) } catch {
            throw ChangeError(.certificateInvalid, error.detail, identityCode: error.code)
        }
        try verify(author: verified, trust: trust, now: now, checkRevocation: checkRevocation)
    }

    func verify(author: VerifiedCertificate, trust: TrustStore, now: UInt64, checkRevocation: Bool) throws(ChangeError) {
        guard encoded.count <= Self.maxSyncBytes else {
            throw ChangeError(.invalid, "change \(header.author)/\(header.scope)#\(header.seq) is \(encoded.count) bytes, "
                              + "over the \(Self.maxSyncBytes) bytes a change that syncs may have")
        }
        let cert = author.certificate
        guard cert.subject == header.author else {
            throw ChangeError(.impersonation, "certificate of \(cert.subject) presented for a change by \(header.author)")
        }
        do { try cert.signingKey.verify(signature: signature, message: signedDigest) } catch {
            throw ChangeError(.badSignature, "change \(header.author)/\(header.scope)#\(header.seq) signature does not verify")
        }
        do { try author.checkValidity(at: header.hlc.milliseconds, skew: trust.clockSkewMilliseconds) } catch {
            throw ChangeError(.certificateInvalid, error.detail, identityCode: error.code)
        }
        guard Scope.all([header.scope], within: cert.scopes) else {
            throw ChangeError(.scopeEscalation, "\(header.author) may not write in \(header.scope)")
        }
        guard cert.role != .relay || header.contentType.isControl else {
            throw ChangeError(.roleNotAllowed, "relays may not author sealed content")
        }
        guard header.hlc.milliseconds <= now &+ trust.clockSkewMilliseconds else {
            throw ChangeError(.timestampInFuture, "HLC \(header.hlc) is ahead of now \(now)")
        }
        if checkRevocation, let r = trust.revocation(of: cert), header.hlc > r.revokedAt {
            throw ChangeError(.revoked, "\(r.device) revoked at \(r.revokedAt) by \(r.issuer); change HLC \(header.hlc)")
        }
        try verifyControlPayload(trust: trust)
    }

    /// For a key grant or revocation change: the payload decodes and verifies on its own
    /// (``KeyGrant/verify(trust:)``, ``Revocation/verify(trust:)``: signer, signing-time validity,
    /// bounds). Other content types pass. Part of ``verify(authorCertificate:trust:now:)``, so that a
    /// forged or out-of-bounds grant or revocation is refused with the change that carries it.
    /// - Throws: `ChangeError.unauthorizedControl` with the payload's ``IdentityError/Code``
    ///   (`invalid` for a payload that does not decode).
    public func verifyControlPayload(trust: TrustStore) throws(ChangeError) {
        do {
            switch header.contentType {
            case .revocation:
                try Revocation(canonicalBytes: payload).verify(trust: trust)
            case .keyGrant:
                try KeyGrant(canonicalBytes: payload).verify(trust: trust)
            default:
                return
            }
        } catch let e as IdentityError {
            throw ChangeError(.unauthorizedControl, "\(header.contentType) in \(header.author)/\(header.scope)#\(header.seq): \(e.detail)",
                              identityCode: e.code)
        } catch {
            throw ChangeError(.unauthorizedControl, "\(header.contentType) in \(header.author)/\(header.scope)#\(header.seq) does not decode: \(error)",
                              identityCode: .invalid)
        }
    }

    // MARK: Opening (needs an epoch key)

    /// Opens the payload with whichever of `keys` matches a slot. Call ``verify(authorCertificate:trust:now:)``
    /// first: opening proves the header was not altered (AEAD binding) but not who wrote it.
    /// - Throws: `noMatchingSlot`, `authenticationFailed` (wrong key bytes, tampered or moved data),
    ///   `invalid` for control changes.
    public func open(with keys: [EpochKey]) throws(ChangeError) -> [UInt8] {
        guard !header.contentType.isControl else { throw ChangeError(.invalid, "control changes are not sealed; read payload") }
        let hh = header.hash
        // Several keys may carry one (scope, epoch): authorities that issued the same epoch concurrently
        // (security-notes §11 case 28). Every held key of a slot's (scope, epoch) is tried on it.
        var failure: ChangeError?
        for (i, slot) in slots.enumerated() {
            guard case let .epoch(scope, epoch) = slot.recipient else { continue }
            let ad = KeySlot.associatedData(headerHash: hh, index: i, recipient: slot.recipient)
            for key in keys where key.scope == scope && key.epoch == epoch {
                let dk: [UInt8]
                do { dk = try XChaCha20Poly1305.open(slot.ciphertext, key: key.key, nonce: slot.nonce, associatedData: ad) } catch {
                    failure = ChangeError(.authenticationFailed, "slot \(i) (\(scope)#\(epoch)): \(error)")
                    continue
                }
                // The slot opened, so the data key is the author's: a payload that fails now is tampered.
                return try openPayload(dataKey: dk, headerHash: hh)
            }
        }
        if let failure { throw failure }
        throw ChangeError(.noMatchingSlot, "no key for any slot of \(header.author)/\(header.scope)#\(header.seq)")
    }

    /// Opens the payload through the HQ archive slot.
    /// - Throws: `noMatchingSlot` if no archive slot names this key, `authenticationFailed` otherwise.
    public func openArchive(with archiveKey: X25519.SecretKey) throws(ChangeError) -> [UInt8] {
        let keyID = KeySlot.archiveKeyID(archiveKey.publicKey)
        guard let slot = slots.first(where: { $0.recipient == .archive(keyID: keyID) }) else {
            throw ChangeError(.noMatchingSlot, "no archive slot for key \(keyID)")
        }
        let hh = header.hash
        do {
            let plain = try SealedBox.open(slot.ciphertext, with: archiveKey)
            var bytes = plain.unsafeCopy()
            defer { wipe(&bytes) }
            guard bytes.count == 64, Array(bytes[32...]) == hh else {
                throw ChangeError(.authenticationFailed, "archive slot is bound to another header")
            }
            return try openPayload(dataKey: Array(bytes[0..<32]), headerHash: hh)
        } catch let e as ChangeError { throw e } catch { throw ChangeError(.authenticationFailed, "archive slot: \(error)") }
    }

    private func openPayload(dataKey: [UInt8], headerHash: [UInt8]) throws(ChangeError) -> [UInt8] {
        var dk = dataKey
        defer { wipe(&dk) }
        do {
            return try XChaCha20Poly1305.open(payload, key: SecretBytes(copying: dk), nonce: payloadNonce, associatedData: headerHash)
        } catch { throw ChangeError(.authenticationFailed, "payload: \(error)") }
    }
}

/// Proof that an author equivocated in one log: two changes it signed that no single append-only log
/// can hold. Two shapes (Protocols/change.md §6):
/// - **position**: same author, scope and seq, different ids;
/// - **chain**: same author and scope, seqs `n` and `n + 1`, and the second's `prevHash` is not the
///   first's id (the author signed another change at `n`, or a successor of nothing it wrote).
/// It verifies on its own (both signatures) and can be stored, shown and sent to peers.
public struct ForkProof: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// The shape of a proof.
    public enum Kind: String, Sendable, Hashable {
        /// Two changes at one position.
        case position
        /// A change and a successor that names another predecessor.
        case chain
    }

    /// Position proofs: the change with the smaller id (canonical order). Chain proofs: the change at `n`.
    public let first: Change
    /// Position proofs: the change with the larger id. Chain proofs: the change at `n + 1`.
    public let second: Change

    /// Which shape the proof has.
    public var kind: Kind { first.header.seq == second.header.seq ? .position : .chain }
    /// The author.
    public var author: DeviceID { first.header.author }
    /// The scope of the forked log.
    public var scope: Scope { first.header.scope }
    /// The lowest seq at which the two branches provably differ (`first`'s seq).
    public var seq: UInt64 { first.header.seq }

    /// Builds a proof from two changes of one log that no single chain can hold: the same seq with
    /// different ids, or seqs `n` and `n + 1` where the later one's `prevHash` is not the earlier one's id.
    /// Either order of the arguments is accepted.
    /// - Throws: `ChangeError.notAFork` otherwise.
    public init(_ a: Change, _ b: Change) throws(ChangeError) {
        guard a.header.author == b.header.author, a.header.scope == b.header.scope else {
            throw ChangeError(.notAFork, "the changes are in different logs")
        }
        let sa = a.header.seq, sb = b.header.seq
        if sa == sb {
            let ia = a.id, ib = b.id
            guard ia != ib else { throw ChangeError(.notAFork, "the same change twice") }
            (first, second) = ia.lexicographicallyPrecedes(ib) ? (a, b) : (b, a)
        } else if sa &+ 1 == sb || sb &+ 1 == sa {
            let (lo, hi) = sa < sb ? (a, b) : (b, a)
            guard hi.header.prevHash != lo.id else { throw ChangeError(.notAFork, "seq \(hi.header.seq) follows seq \(lo.header.seq)") }
            (first, second) = (lo, hi)
        } else {
            throw ChangeError(.notAFork, "seqs \(sa) and \(sb) are neither equal nor adjacent")
        }
    }

    /// Checks both changes against the author's certificate (revocation is not applied: a fork stays
    /// provable after the author is revoked).
    /// - Throws: the first change's ``ChangeError``.
    public func verify(authorCertificate: Certificate, trust: TrustStore, now: UInt64) throws(ChangeError) {
        try first.verify(authorCertificate: authorCertificate, trust: trust, now: now, checkRevocation: false)
        try second.verify(authorCertificate: authorCertificate, trust: trust, now: now, checkRevocation: false)
    }

    /// `fork by A in S at seq N: id1 vs id2` (position) or `fork by A in S after seq N: id1 not
    /// followed by id2` (chain).
    public var description: String {
        switch kind {
        case .position:
            "fork by \(author) in \(scope) at seq \(seq): \(Hex.encode(first.id)) vs \(Hex.encode(second.id))"
        case .chain:
            "fork by \(author) in \(scope) after seq \(seq): \(Hex.encode(first.id)) is not the predecessor of \(Hex.encode(second.id))"
        }
    }

    /// version, suite, then each change length-prefixed.
    public func encode(to w: inout ByteWriter) {
        w.writeByte(fieldSyncFormatVersion)
        w.writeByte(fieldSyncSuiteFPS1)
        w.writeBytes(first.canonicalBytes)
        w.writeBytes(second.canonicalBytes)
    }

    /// Reads a proof and re-checks that it is a fork in canonical order (position proofs: smaller id
    /// first; chain proofs: lower seq first).
    public init(from r: inout ByteReader) throws(DecodingError) {
        try readVersionAndSuite(&r)
        let at = r.offset
        let a = try Change(canonicalBytes: try r.readBytes())
        let b = try Change(canonicalBytes: try r.readBytes())
        do { self = try ForkProof(a, b) } catch { throw DecodingError(.invalidValue, at: at, error.detail) }
        guard first == a else { throw DecodingError(.nonCanonicalOrder, at: at, "fork proof changes out of order") }
    }
}
