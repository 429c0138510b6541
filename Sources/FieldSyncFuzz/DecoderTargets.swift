import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol

// Fuzz entry points for the decoders that take a peer's bytes (docs/fuzzing.md).
//
// Each entry point feeds the input to one decoder. A decoder must be total: it returns a value or
// throws its typed error; it never traps, and it never allocates more than its input justifies (the
// fuzzer's `-malloc_limit_mb` catches that). Where a decoder accepts the input, the entry point also
// checks the canonical-encoding invariant of Protocols/encoding.md: a value decoded from bytes encodes
// back to exactly those bytes (one value, one encoding). A violation stops the process through
// `FuzzFinding.fail`, which the fuzzer records as a crash.

/// How an entry point reports an invariant that does not hold: a trap, which the fuzzer records as a
/// crash with the input that caused it, and which fails the suite's replay test.
enum FuzzFinding {
    static func fail(_ target: String, _ message: String) -> Never {
        fatalError("fuzz target \(target): \(message)")
    }
}

/// Decodes a complete `T` from `bytes`; if it decodes, it must encode back to the same bytes.
@inline(never)
func roundTrip<T: CanonicalCodable>(_ type: T.Type, _ bytes: [UInt8], target: String) {
    guard let value = try? T(canonicalBytes: bytes) else { return }
    let again = value.canonicalBytes
    if again != bytes {
        FuzzFinding.fail(target, "\(T.self) accepted \(bytes.count) bytes that encode back as \(again.count) other bytes")
    }
}

/// Canonical encoding (Protocols/encoding.md): the first byte chooses one of the core value types,
/// the rest is decoded as that type.
public func fuzzEncoding(_ data: UnsafeRawBufferPointer) {
    guard let selector = data.first else { return }
    let bytes = Array(data.dropFirst())
    let name = "encoding"
    switch selector % 20 {
    case 0: roundTrip(UInt64.self, bytes, target: name)
    case 1: roundTrip(String.self, bytes, target: name)
    case 2: roundTrip(ID128.self, bytes, target: name)
    case 3: roundTrip(Scope.self, bytes, target: name)
    case 4: roundTrip(HLCTimestamp.self, bytes, target: name)
    case 5: roundTrip(OpID.self, bytes, target: name)
    case 6: roundTrip(LatticePoint.self, bytes, target: name)
    case 7: roundTrip(Token.self, bytes, target: name)
    case 8: roundTrip(Location.self, bytes, target: name)
    case 9: roundTrip(FieldValue.self, bytes, target: name)
    case 10: roundTrip(Action.self, bytes, target: name)
    case 11: roundTrip(RecordEdit.self, bytes, target: name)
    case 12: roundTrip(ChangeBody.self, bytes, target: name)
    case 13: roundTrip(Record.self, bytes, target: name)
    case 14: roundTrip(LogID.self, bytes, target: name)
    case 15: roundTrip(ORSet<Token>.self, bytes, target: name)
    case 16: roundTrip(LWWRegister<FieldValue>.self, bytes, target: name)
    case 17: roundTrip(AddOnlyLog<String>.self, bytes, target: name)
    case 18: roundTrip(RecordKind.self, bytes, target: name)
    default:
        // The primitive readers one after another, as a decoder of a composite value calls them.
        var r = ByteReader(bytes)
        _ = try? r.readSignedVarint()
        _ = try? r.readBool()
        _ = try? r.readDouble()
        _ = try? r.readVarint(as: UInt32.self)
        _ = try? r.readBytes()
        _ = try? r.readCount(minElementSize: 3)
    }
}

/// Device and authority certificates (Protocols/identity.md), as a handshake or a batch carries them.
public func fuzzCertificate(_ data: UnsafeRawBufferPointer) {
    roundTrip(Certificate.self, Array(data), target: "certificate")
}

/// Enrollment requests (Protocols/identity.md §2), as a device hands them to an authority.
public func fuzzEnrollmentRequest(_ data: UnsafeRawBufferPointer) {
    roundTrip(EnrollmentRequest.self, Array(data), target: "enrollment-request")
}

/// Signed, sealed changes (Protocols/change.md), as a batch carries them; also their headers.
public func fuzzChange(_ data: UnsafeRawBufferPointer) {
    let bytes = Array(data)
    roundTrip(Change.self, bytes, target: "change")
    roundTrip(ChangeHeader.self, bytes, target: "change")
}

/// Epoch-key grants (Protocols/identity.md), as a control change carries them.
public func fuzzGrant(_ data: UnsafeRawBufferPointer) {
    roundTrip(KeyGrant.self, Array(data), target: "grant")
}

/// Revocations (Protocols/identity.md), as a control change carries them.
public func fuzzRevocation(_ data: UnsafeRawBufferPointer) {
    roundTrip(Revocation.self, Array(data), target: "revocation")
}

/// HQ receipts (Protocols/change.md §2.1), as a receipt control change carries them.
public func fuzzReceipt(_ data: UnsafeRawBufferPointer) {
    roundTrip(Receipt.self, Array(data), target: "receipt")
}

/// Fork proofs (Protocols/change.md §6), as a session's fork message carries them.
public func fuzzForkProof(_ data: UnsafeRawBufferPointer) {
    roundTrip(ForkProof.self, Array(data), target: "fork-proof")
}

/// Reconciliation messages (Protocols/sync-reconciliation.md), as a session carries them.
public func fuzzReconMessage(_ data: UnsafeRawBufferPointer) {
    roundTrip(ReconMessage.self, Array(data), target: "recon-message")
}

/// Stream framing (Protocols/sync.md §2): the input arrives in chunks whose sizes come from the input
/// itself (first byte: the chunk size); every complete frame must be a slice of the stream, and the
/// decoder must never hold more than one frame's worth of bytes.
public func fuzzFraming(_ data: UnsafeRawBufferPointer) {
    guard let first = data.first else { return }
    let chunk = Int(first) + 1
    let stream = Array(data.dropFirst())
    var decoder = FrameDecoder()
    var offset = 0
    var consumed = 0
    while offset < stream.count {
        let end = min(stream.count, offset + chunk)
        decoder.append(stream[offset..<end])
        offset = end
        do {
            while let frame = try decoder.next() {
                let length = Int(stream[consumed]) << 8 | Int(stream[consumed + 1])
                guard frame.count == length, Array(stream[(consumed + 2)..<(consumed + 2 + length)]) == frame else {
                    FuzzFinding.fail("framing", "a frame at \(consumed) is not the bytes the stream carried there")
                }
                consumed += 2 + length
            }
        } catch {
            return
        }
        if decoder.pending != offset - consumed || decoder.pending > FrameDecoder.maxFrame + 2 + chunk {
            FuzzFinding.fail("framing", "the decoder holds \(decoder.pending) bytes, the stream left \(offset - consumed)")
        }
    }
}

/// The key every beacon input is checked against (the first vector of Protocols/vectors/discovery.json:
/// network "longnan-police", root key 0x00...1f, no secret).
let beaconKey: BeaconCodec = {
    let root = try! Ed25519.PublicKey(bytes: Array(0..<32))
    return try! BeaconCodec(networkID: "longnan-police", root: root)
}()

/// Discovery beacons (Protocols/discovery.md), as any host on the LAN can send them. A beacon that
/// authenticates must encode back to the same 40 bytes.
public func fuzzBeacon(_ data: UnsafeRawBufferPointer) {
    let bytes = Array(data)
    guard let beacon = try? beaconKey.decode(bytes) else { return }
    if beaconKey.encode(beacon) != bytes { FuzzFinding.fail("beacon", "an accepted beacon does not encode back to its bytes") }
}

/// The payloads of handshake messages (Protocols/handshake.md §3): the first byte chooses message 1
/// (the version, in clear) or messages 2 and 3 (a certificate and its chain, decrypted), checked with
/// a verifier that accepts any certificate, so that the checks after decoding run too.
public func fuzzHandshakePayload(_ data: UnsafeRawBufferPointer) {
    guard let selector = data.first else { return }
    let payload = Array(data.dropFirst())
    let own = DeviceID(ID128(high: 1, low: 2))
    let index = Int(selector % 3)
    do {
        let cert = try SessionHandshake.check(payload: payload, ofMessage: index, remoteStatic: nil, own: own) { (_: Certificate, chain: [Certificate]) throws(IdentityError) in
            if chain.count > SessionHandshake.maxChainLength { FuzzFinding.fail("handshake-payload", "a chain of \(chain.count) passed") }
        }
        if index == 0, cert != nil { FuzzFinding.fail("handshake-payload", "message 1 returned a certificate") }
    } catch {
        if index > 0, error.code == .unsupportedVersion { FuzzFinding.fail("handshake-payload", "a certificate message checked as a version") }
        if error.detail.utf8.count > SessionError.maxDetail * 4 {
            FuzzFinding.fail("handshake-payload", "an error detail of \(error.detail.utf8.count) bytes (peer bytes reach the log)")
        }
    }
}
