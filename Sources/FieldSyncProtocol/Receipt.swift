import FieldSyncCore
import FieldSyncCrypto

/// HQ's statement "I hold these logs up to these seqs", carried in a receipt control change. Relays
/// may drop receipted changes under quota; officers see "reached HQ". Wire format (normative, with
/// vectors in `Protocols/vectors/change.json`): Protocols/change.md §2.1 — `varint count`, then per log
/// `LogID ‖ varint seq`, logs strictly increasing.
public struct Receipt: Sendable, Equatable, CanonicalCodable {
    /// Per log, the frontier HQ holds.
    public var heads: [(LogID, UInt64)]

    /// Creates a receipt.
    public init(heads: [(LogID, UInt64)]) { self.heads = heads }

    public static func == (a: Receipt, b: Receipt) -> Bool { a.canonicalBytes == b.canonicalBytes }

    public func encode(to writer: inout ByteWriter) {
        writer.writeVarint(UInt64(heads.count))
        for (log, seq) in heads {
            log.encode(to: &writer)
            writer.writeVarint(seq)
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 19)
        var out: [(LogID, UInt64)] = []
        var last: LogID?
        for _ in 0..<n {
            let at = reader.offset
            let log = try LogID(from: &reader)
            if let last, !(last < log) { throw DecodingError(.nonCanonicalOrder, at: at, "receipt logs") }
            last = log
            out.append((log, try reader.readVarint()))
        }
        heads = out
    }
}
