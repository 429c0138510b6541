import FieldSyncCore

// Reconciliation messages and their canonical encodings (Protocols/sync-reconciliation.md, section 5).
// Every decoder here is total: it returns a message or throws `DecodingError`, and it never allocates
// more than the remaining input justifies.

/// The reconciliation wire-format version this module speaks (SipHash-2-4 key schedule).
public let reconciliationVersion: UInt8 = 1

/// Upper bound on coded symbols in one `SymbolBatch` message.
public let maximumSymbolsPerMessage = 65_536

/// The smallest encoding of one coded symbol: 16-byte sum, 8-byte checksum, 1-byte count.
let minimumSymbolSize = 25

/// The largest reconciliation message a session carries: the transport's 65,519-byte plaintext
/// (`NoiseTransport.maxPlaintext`) minus the session message's one-byte tag. A `fullHeads`, `decoded` or
/// `names` list whose message would be larger is sent in parts (`fullHeadsPart`, `decodedPart`,
/// `namesPart`, then the final message of the list's own type; Protocols/sync-reconciliation.md §6.4).
public let maximumReconMessageBytes = 65_518

/// The most entries (or names) one list may have over all its parts: what a peer can make the receiver
/// hold before the list ends (about 5 MB on the wire at 19 bytes per log; Protocols/sync-reconciliation.md
/// §6.4). A longer list is `limitExceeded`.
public let maximumListEntries = 1 << 18

/// Phase 0: what each side sends first, before it has seen the peer's salt.
public struct Hello: Hashable, Sendable {
    /// Wire-format version; `reconciliationVersion`.
    public var version: UInt8
    /// Number of head elements of the sender.
    public var elementCount: UInt64
    /// 16-byte keyed digest of the sender's holdings (session key only).
    public var digest: [UInt8]
    /// 16 random bytes the sender contributes to the element key.
    public var salt: [UInt8]

    /// Creates a hello.
    /// - Precondition: `digest` and `salt` are 16 bytes each.
    public init(version: UInt8 = reconciliationVersion, elementCount: UInt64, digest: [UInt8], salt: [UInt8]) {
        precondition(digest.count == 16 && salt.count == 16, "digest and salt are 16 bytes")
        self.version = version
        self.elementCount = elementCount
        self.digest = digest
        self.salt = salt
    }
}

/// The responder's difference estimator: one 4-bit cell per bucket of logs.
///
/// Bucket of an element: the top `log2Buckets` bits of its tag. Cell: XOR of the top 4 bits of the
/// checksums of the bucket's elements. Two cells are packed per byte, even bucket in the high nibble.
public struct Estimate: Hashable, Sendable {
    /// Allowed range of `log2Buckets`.
    public static let log2BucketRange: ClosedRange<UInt8> = 4...12
    /// Base-2 logarithm of the number of buckets.
    public var log2Buckets: UInt8
    /// One 4-bit value per bucket (each 0...15).
    public var cells: [UInt8]

    /// Creates an estimator message.
    /// - Precondition: `log2Buckets` in range, one cell per bucket, each below 16.
    public init(log2Buckets: UInt8, cells: [UInt8]) {
        precondition(Estimate.log2BucketRange.contains(log2Buckets) && cells.count == 1 << Int(log2Buckets))
        precondition(cells.allSatisfy { $0 < 16 })
        self.log2Buckets = log2Buckets
        self.cells = cells
    }

    /// Computes the cells of a set of elements.
    public static func cells(of elements: [HeadElement], checksums: [UInt64], log2Buckets: UInt8) -> [UInt8] {
        var cells = [UInt8](repeating: 0, count: 1 << Int(log2Buckets))
        for (e, c) in zip(elements, checksums) {
            cells[Int(e.tag >> UInt64(64 - Int(log2Buckets)))] ^= UInt8(truncatingIfNeeded: c >> 60)
        }
        return cells
    }

    /// Estimates the number of differing logs from the number of differing cells.
    ///
    /// With B buckets and k differing logs, a bucket differs with probability
    /// `(1 - (1 - 1/B)^k) * 15/16`; the estimate inverts that. Returns nil when the cells are
    /// (nearly) all different, i.e. the difference is too large to estimate.
    public static func estimatedDifferingLogs(differingCells: Int, buckets: Int) -> Double? {
        let fraction = Double(differingCells) / (Double(buckets) * 15.0 / 16.0)
        if fraction >= 0.97 { return nil }
        return (1 - fraction).naturalLogarithm / (1 - 1 / Double(buckets)).naturalLogarithm
    }
}

extension Double {
    fileprivate var naturalLogarithm: Double {
        // Natural logarithm without Foundation: log(x) = log2(x) * ln 2, log2 from the exponent and
        // a short series on the mantissa in [1, 2).
        guard self > 0 else { return -.infinity }
        let e = Double(exponent)
        let m = significand  // in [1, 2)
        // ln(m) = 2 atanh((m-1)/(m+1)), series converges fast for m in [1, 2).
        let t = (m - 1) / (m + 1)
        let t2 = t * t
        var term = t
        var sum = 0.0
        var k = 1.0
        for _ in 0..<30 {
            sum += term / k
            term *= t2
            k += 2
        }
        return 2 * sum + e * 0.693_147_180_559_945_3
    }
}

/// Phase 1: a contiguous run of the initiator's coded symbols.
public struct SymbolBatch: Hashable, Sendable {
    /// Index of the first symbol in the stream.
    public var firstIndex: UInt64
    /// The symbols `firstIndex ..< firstIndex + symbols.count`.
    public var symbols: [CodedSymbol]

    /// Creates a batch.
    public init(firstIndex: UInt64, symbols: [CodedSymbol]) {
        precondition(symbols.count <= maximumSymbolsPerMessage)
        self.firstIndex = firstIndex
        self.symbols = symbols
    }
}

/// One log's holdings as reconciliation messages carry them: tag and interval summaries.
public struct HeadEntry: Hashable, Sendable {
    /// The log tag.
    public var tag: UInt64
    /// The sender's intervals of the log (possibly empty in `Decoded`: the sender lacks the log).
    public var intervals: [IntervalSummary]

    /// Creates an entry.
    public init(tag: UInt64, intervals: [IntervalSummary]) {
        self.tag = tag
        self.intervals = intervals
    }
}

/// A tag together with the log it names, for logs the receiver does not hold.
public struct LogName: Hashable, Sendable {
    /// The log tag.
    public var tag: UInt64
    /// The log.
    public var log: LogID

    /// Creates a name.
    public init(tag: UInt64, log: LogID) {
        self.tag = tag
        self.log = log
    }
}

/// A reconciliation message. Each starts with a one-byte type.
public enum ReconMessage: Hashable, Sendable {
    /// Type 1: Phase 0 hello.
    case hello(Hello)
    /// Type 2: the responder's difference estimator.
    case estimate(Estimate)
    /// Type 3: coded symbols from the initiator.
    case symbols(SymbolBatch)
    /// Type 4: the responder has `received` symbols and has not decoded yet.
    case more(received: UInt64)
    /// Type 5: the initiator's complete head vector (fallback instead of symbols).
    case fullHeads([HeadEntry])
    /// Type 6: the responder's holdings for every differing log, by increasing tag.
    case decoded([HeadEntry])
    /// Type 7: names of logs the receiver lacks, by increasing tag.
    case names([LogName])
    /// Type 8: a part of a `fullHeads` list too large for one message; the list goes on in the next
    /// message (another part, or the final `fullHeads`), tags increasing across parts. Never empty.
    case fullHeadsPart([HeadEntry])
    /// Type 9: a part of a `decoded` list, as `fullHeadsPart`.
    case decodedPart([HeadEntry])
    /// Type 10: a part of a `names` list, as `fullHeadsPart`.
    case namesPart([LogName])

    /// The type byte.
    public var typeByte: UInt8 {
        switch self {
        case .hello: 1
        case .estimate: 2
        case .symbols: 3
        case .more: 4
        case .fullHeads: 5
        case .decoded: 6
        case .names: 7
        case .fullHeadsPart: 8
        case .decodedPart: 9
        case .namesPart: 10
        }
    }

    /// Encoded size of a `fullHeads`, `decoded` or part message holding `entries`.
    static func listSize(_ entries: [HeadEntry]) -> Int {
        entries.reduce(1 + varintSize(UInt64(entries.count))) { $0 + entrySize($1) }
    }

    /// Encoded size of one entry: tag, interval count, and per interval start, end and hash prefix.
    static func entrySize(_ e: HeadEntry) -> Int {
        e.intervals.reduce(8 + varintSize(UInt64(e.intervals.count))) { $0 + varintSize(UInt64($1.start)) + varintSize(UInt64($1.end)) + 4 }
    }

    /// Encoded size of one name: tag and canonical log id.
    static func nameSize(_ n: LogName) -> Int { 8 + n.log.canonicalBytes.count }

    /// `items` as messages of at most `limit` bytes each: the parts (`part`), then the final message
    /// (`last`, possibly empty), filled in order. A list that fits is one final message, byte for byte
    /// what it was before parts existed.
    /// An item too large for a message alone (a log of thousands of disjoint intervals) goes alone in its
    /// message, which the transport then refuses (`limitExceeded`: the session fails, the process goes on).
    static func split<T>(_ items: [T], limit: Int, size: (T) -> Int, part: ([T]) -> ReconMessage, last: ([T]) -> ReconMessage) -> [ReconMessage] {
        var out: [ReconMessage] = []
        var current: [T] = []
        var bytes = 0  // sum of the current items' sizes
        for item in items {
            let n = size(item)
            // Type byte and count (at most 5 bytes of varint) on top of the items.
            if !current.isEmpty && 1 + varintSize(UInt64(current.count + 1)) + bytes + n > limit {
                out.append(part(current))
                current = []
                bytes = 0
            }
            current.append(item)
            bytes += n
        }
        out.append(last(current))
        return out
    }
}

extension ReconMessage: CanonicalCodable {
    /// Writes the type byte and the body.
    public func encode(to w: inout ByteWriter) {
        w.writeByte(typeByte)
        switch self {
        case let .hello(h):
            w.writeByte(h.version)
            w.writeVarint(h.elementCount)
            w.writeRaw(h.digest)
            w.writeRaw(h.salt)
        case let .estimate(e):
            w.writeByte(e.log2Buckets)
            var i = 0
            while i < e.cells.count {
                w.writeByte(e.cells[i] << 4 | e.cells[i + 1])
                i += 2
            }
        case let .symbols(b):
            w.writeVarint(b.firstIndex)
            w.writeVarint(UInt64(b.symbols.count))
            for s in b.symbols {
                w.writeUInt64BE(s.sum.high)
                w.writeUInt64BE(s.sum.low)
                w.writeUInt64BE(s.checksum)
                w.writeSignedVarint(s.count)
            }
        case let .more(received):
            w.writeVarint(received)
        case let .fullHeads(entries), let .decoded(entries), let .fullHeadsPart(entries), let .decodedPart(entries):
            w.writeVarint(UInt64(entries.count))
            for e in entries { Self.write(e, to: &w) }
        case let .names(names), let .namesPart(names):
            w.writeVarint(UInt64(names.count))
            for n in names {
                w.writeUInt64BE(n.tag)
                n.log.encode(to: &w)
            }
        }
    }

    static func write(_ e: HeadEntry, to w: inout ByteWriter) {
        w.writeUInt64BE(e.tag)
        w.writeVarint(UInt64(e.intervals.count))
        for i in e.intervals {
            w.writeVarint(UInt64(i.start))
            w.writeVarint(UInt64(i.end))
            for shift in [24, 16, 8, 0] as [UInt32] { w.writeByte(UInt8(truncatingIfNeeded: i.endHashPrefix >> shift)) }
        }
    }

    static func readUInt32BE(_ r: inout ByteReader) throws(DecodingError) -> UInt32 {
        let b = try r.readRaw(4)
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }

    static func readEntries(_ r: inout ByteReader, allowEmpty: Bool) throws(DecodingError) -> [HeadEntry] {
        // Smallest entry: 8-byte tag + 1-byte interval count (0 intervals).
        let n = try r.readCount(minElementSize: 9)
        var out: [HeadEntry] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let at = r.offset
            let tag = try r.readUInt64BE()
            if let last = out.last, last.tag >= tag {
                throw DecodingError(.nonCanonicalOrder, at: at, "entry tags must be strictly increasing")
            }
            // Smallest interval: start, end (1 byte each) + 4-byte hash prefix.
            let m = try r.readCount(minElementSize: 6)
            if m == 0 && !allowEmpty { throw DecodingError(.invalidValue, at: at, "entry without intervals") }
            var intervals: [IntervalSummary] = []
            intervals.reserveCapacity(m)
            for _ in 0..<m {
                let start = try r.readVarint(as: UInt32.self)
                let end = try r.readVarint(as: UInt32.self)
                let prefix = try readUInt32BE(&r)
                intervals.append(IntervalSummary(start: start, end: end, endHashPrefix: prefix))
            }
            guard IntervalSummary.isValidHolding(intervals) else {
                throw DecodingError(.invalidValue, at: at, "intervals are not sorted, disjoint, non-adjacent and in 1...2^31-1")
            }
            out.append(HeadEntry(tag: tag, intervals: intervals))
        }
        return out
    }

    static func readNames(_ r: inout ByteReader) throws(DecodingError) -> [LogName] {
        // Smallest name: 8-byte tag, 16-byte author, 2-byte scope.
        let n = try r.readCount(minElementSize: 26)
        var names: [LogName] = []
        names.reserveCapacity(n)
        for _ in 0..<n {
            let nAt = r.offset
            let tag = try r.readUInt64BE()
            if let last = names.last, last.tag >= tag {
                throw DecodingError(.nonCanonicalOrder, at: nAt, "name tags must be strictly increasing")
            }
            names.append(LogName(tag: tag, log: try LogID(from: &r)))
        }
        return names
    }

    /// A part carries at least one item (only the final message of a list may be empty).
    static func nonEmpty<T>(_ items: [T], at: Int) throws(DecodingError) -> [T] {
        guard !items.isEmpty else { throw DecodingError(.invalidValue, at: at, "an empty list part") }
        return items
    }

    /// Reads one message.
    /// - Throws: `DecodingError` (`truncated`, `unknownTag`, `unsupportedVersion`, `lengthTooLarge`,
    ///   `nonCanonicalOrder`, `invalidValue`, varint errors) for any malformed input.
    public init(from r: inout ByteReader) throws(DecodingError) {
        let at = r.offset
        switch try r.readByte() {
        case 1:
            let vAt = r.offset
            let version = try r.readByte()
            guard version == reconciliationVersion else {
                throw DecodingError(.unsupportedVersion, at: vAt, "reconciliation version \(version)")
            }
            let count = try r.readVarint()
            let digest = try r.readRaw(16)
            let salt = try r.readRaw(16)
            self = .hello(Hello(version: version, elementCount: count, digest: digest, salt: salt))
        case 2:
            let lAt = r.offset
            let l = try r.readByte()
            guard Estimate.log2BucketRange.contains(l) else {
                throw DecodingError(.invalidValue, at: lAt, "log2Buckets \(l) outside 4...12")
            }
            let packed = try r.readRaw(1 << (Int(l) - 1))
            var cells: [UInt8] = []
            cells.reserveCapacity(packed.count * 2)
            for b in packed {
                cells.append(b >> 4)
                cells.append(b & 0x0F)
            }
            self = .estimate(Estimate(log2Buckets: l, cells: cells))
        case 3:
            let first = try r.readVarint()
            let cAt = r.offset
            let n = try r.readCount(minElementSize: minimumSymbolSize)
            guard n <= maximumSymbolsPerMessage else {
                throw DecodingError(.lengthTooLarge, at: cAt, "\(n) symbols in one message")
            }
            guard first <= UInt64(Int32.max) else { throw DecodingError(.invalidValue, at: at + 1, "first index \(first)") }
            var symbols: [CodedSymbol] = []
            symbols.reserveCapacity(n)
            for _ in 0..<n {
                let hi = try r.readUInt64BE()
                let lo = try r.readUInt64BE()
                let ck = try r.readUInt64BE()
                let count = try r.readSignedVarint()
                symbols.append(CodedSymbol(sum: HeadElement(high: hi, low: lo), checksum: ck, count: count))
            }
            self = .symbols(SymbolBatch(firstIndex: first, symbols: symbols))
        case 4:
            self = .more(received: try r.readVarint())
        case 5:
            self = .fullHeads(try Self.readEntries(&r, allowEmpty: false))
        case 6:
            self = .decoded(try Self.readEntries(&r, allowEmpty: true))
        case 7:
            self = .names(try Self.readNames(&r))
        case 8:
            self = .fullHeadsPart(try Self.nonEmpty(Self.readEntries(&r, allowEmpty: false), at: at))
        case 9:
            self = .decodedPart(try Self.nonEmpty(Self.readEntries(&r, allowEmpty: true), at: at))
        case 10:
            self = .namesPart(try Self.nonEmpty(Self.readNames(&r), at: at))
        case let t:
            throw DecodingError(.unknownTag, at: at, "reconciliation message type \(t)")
        }
    }
}
