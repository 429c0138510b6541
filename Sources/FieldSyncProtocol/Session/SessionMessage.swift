import FieldSyncCore
import FieldSyncCrypto

/// Application messages inside the encrypted transport (Protocols/sync.md). Tag bytes are normative.
public enum SessionMessage: Sendable {
    /// A reconciliation message. Tag 1.
    case recon(ReconMessage)
    /// A batch of changes (each an encoded `Change`, as stored) with the certificates of their authors
    /// the peer may lack. Tag 2.
    case batch(id: UInt32, certificates: [Certificate], changes: [[UInt8]])
    /// The receiver applied batch `id` atomically. Tag 3.
    case ack(id: UInt32)
    /// The sender has nothing more to send. Tag 4.
    case done
    /// The sender has nothing more to send now and keeps the session open: it will send batches of
    /// changes it gets later (live mode, Protocols/sync.md §4.1). Tag 5.
    case live
    /// A fork proof (Protocols/change.md §6) the receiver may lack, with the author's certificate if
    /// this session has not sent it yet. Not acknowledged. Tag 6.
    case fork(certificates: [Certificate], proof: ForkProof)
    /// The sender no longer accepts the receiver (its certificate, or its issuer's, is revoked or no
    /// longer valid) and closes the session: sent last, then the connection is closed
    /// (Protocols/sync.md §4.2). Tag 7.
    case refuse(SessionRefusal)
    /// The receiver applied batch `id` atomically but did not store some of its changes: each by its
    /// position in the batch (ascending) and why (relay quota full, held back, dated ahead, author
    /// revoked, forked). Sent instead of `ack` for such a batch, so that the sender does not count those
    /// changes as delivered (Protocols/sync.md §2, Batches). Tag 8.
    case ackRefused(id: UInt32, refused: [BatchRefusal])
    /// Nothing to carry: the sender is still there and keeps the live session open (Protocols/sync.md
    /// §4.1). A live side sends it when it sent nothing for its driver's keep-alive interval; the receiver
    /// counts it as traffic (and re-checks the sender's standing, as on every message). Tag 9.
    case keepAlive
    /// The sender's clock when it sent this (ms since the Unix epoch), sent once at the start of the
    /// session, before its first reconciliation message: the receiver does not send it changes dated
    /// beyond this clock plus the tolerance, which it would refuse as `timestampInFuture`, until they would
    /// be accepted (Protocols/sync.md §4.3). Tag 10.
    case clock(milliseconds: UInt64)

    func encode(to w: inout ByteWriter) {
        switch self {
        case let .recon(m):
            w.writeByte(1)
            m.encode(to: &w)
        case let .batch(id, certs, changes):
            w.writeByte(2)
            w.writeVarint(UInt64(id))
            w.writeArray(certs)
            w.writeVarint(UInt64(changes.count))
            for c in changes { w.writeBytes(c) }
        case let .ack(id):
            w.writeByte(3)
            w.writeVarint(UInt64(id))
        case .done:
            w.writeByte(4)
        case .live:
            w.writeByte(5)
        case let .fork(certs, proof):
            w.writeByte(6)
            w.writeArray(certs)
            w.writeBytes(proof.canonicalBytes)
        case let .refuse(reason):
            w.writeByte(7)
            w.writeByte(reason.rawValue)
        case let .ackRefused(id, refused):
            w.writeByte(8)
            w.writeVarint(UInt64(id))
            w.writeVarint(UInt64(refused.count))
            for r in refused {
                w.writeVarint(UInt64(r.index))
                w.writeByte(r.reason.wireCode)
            }
        case .keepAlive:
            w.writeByte(9)
        case let .clock(ms):
            w.writeByte(10)
            w.writeVarint(ms)
        }
    }

    static func decode(_ bytes: [UInt8]) throws(DecodingError) -> SessionMessage {
        var r = ByteReader(bytes)
        let at = r.offset
        let m: SessionMessage
        switch try r.readByte() {
        case 1: m = .recon(try ReconMessage(from: &r))
        case 2:
            let id = try r.readVarint(as: UInt32.self)
            let certs = try r.readArray(Certificate.self, minElementSize: 100)
            let n = try r.readCount(minElementSize: 100)
            var changes: [[UInt8]] = []
            changes.reserveCapacity(n)
            for _ in 0..<n { changes.append(try r.readBytes()) }
            m = .batch(id: id, certificates: certs, changes: changes)
        case 3: m = .ack(id: try r.readVarint(as: UInt32.self))
        case 4: m = .done
        case 5: m = .live
        case 6:
            let certs = try r.readArray(Certificate.self, minElementSize: 100)
            let pAt = r.offset
            let bytes = try r.readBytes()
            do { m = .fork(certificates: certs, proof: try ForkProof(canonicalBytes: bytes)) } catch {
                throw DecodingError(.invalidValue, at: pAt, "fork proof: \(error)")
            }
        case 7:
            let at = r.offset
            let b = try r.readByte()
            guard let reason = SessionRefusal(rawValue: b) else { throw DecodingError(.unknownTag, at: at, "refusal reason \(b)") }
            m = .refuse(reason)
        case 8:
            let id = try r.readVarint(as: UInt32.self)
            let countAt = r.offset
            let n = try r.readCount(minElementSize: 2)
            guard n > 0 else { throw DecodingError(.invalidValue, at: countAt, "ack-refused with no refused change (that is an ack)") }
            var refused: [BatchRefusal] = []
            refused.reserveCapacity(n)
            for _ in 0..<n {
                let at = r.offset
                let index = try r.readVarint(as: UInt32.self)
                if let last = refused.last, UInt32(last.index) >= index {
                    throw DecodingError(.invalidValue, at: at, "ack-refused positions must be strictly increasing")
                }
                let codeAt = r.offset
                let code = try r.readByte()
                guard let reason = ChangeRefusal(wireCode: code) else { throw DecodingError(.unknownTag, at: codeAt, "change refusal reason \(code)") }
                refused.append(BatchRefusal(index: Int(index), reason: reason))
            }
            m = .ackRefused(id: id, refused: refused)
        case 9: m = .keepAlive
        case 10: m = .clock(milliseconds: try r.readVarint(as: UInt64.self))
        case let t: throw DecodingError(.unknownTag, at: at, "session message tag \(t)")
        }
        try r.expectEnd()
        return m
    }
}

/// Why a session refuses its peer after the handshake (`SessionMessage.refuse`). Raw values are normative.
public enum SessionRefusal: UInt8, Sendable, Equatable {
    /// The receiver's certificate, or its issuer's, is revoked (as the sender knows it).
    case revoked = 1
    /// The receiver's certificate, or its issuer's, is outside its validity window (expired).
    case certificateInvalid = 2

    /// The wire reason for a session that fails with `code` because of the peer's standing: `revoked`
    /// for `.revoked`, `certificateInvalid` for `.badCertificate`; nil for every other code (those close
    /// the connection without a `refuse`).
    public init?(refusing code: SessionError.Code) {
        switch code {
        case .revoked: self = .revoked
        case .badCertificate: self = .certificateInvalid
        default: return nil
        }
    }

    /// The code both sides fail with: the refusing side, and the refused side when it reads the `refuse`.
    public var code: SessionError.Code {
        switch self {
        case .revoked: .revoked
        case .certificateInvalid: .badCertificate
        }
    }

    /// The error the refused side reports.
    var error: SessionError {
        switch self {
        case .revoked: SessionError(code, "the peer refused this device: it (or its issuer) is revoked")
        case .certificateInvalid: SessionError(code, "the peer refused this device: its certificate (or its issuer's) is not valid now")
        }
    }
}

/// A change of a batch the receiver applied but did not store (`SessionMessage.ackRefused`).
public struct BatchRefusal: Sendable, Equatable {
    /// Its position in the batch (0 for the first change).
    public var index: Int
    /// Why it was not stored.
    public var reason: ChangeRefusal

    /// Creates a value.
    public init(index: Int, reason: ChangeRefusal) {
        self.index = index
        self.reason = reason
    }
}

/// What a frame a session sends carries, for accounting (`SyncSession.bytesSent`).
public enum SessionFrameKind: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// A handshake message.
    case handshake
    /// A reconciliation message.
    case reconciliation
    /// A batch of changes (or a fork proof: two changes).
    case batch
    /// A batch acknowledgement.
    case ack
    /// The final `done` (or `live`), or a `refuse`.
    case done
    /// A live session's `keepAlive`.
    case keepAlive
    /// The session's `clock` (one per side, before reconciliation).
    case clock

    /// Name used in reports.
    public var description: String {
        switch self {
        case .handshake: "handshake"
        case .reconciliation: "reconciliation"
        case .batch: "batch"
        case .ack: "ack"
        case .done: "done"
        case .keepAlive: "keep_alive"
        case .clock: "clock"
        }
    }
}
