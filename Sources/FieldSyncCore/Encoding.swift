// Canonical binary encoding (normative spec: Protocols/encoding.md).
//
// Every FieldSync value, operation and record has exactly one byte representation. Integers are
// unsigned LEB128 varints that must be minimal; signed integers are zig-zag mapped first; byte strings
// and UTF-8 strings carry a varint length prefix; collections carry a varint count and are written in
// a canonical (sorted, duplicate-free) order. The decoder is total: any input either decodes or throws
// a `DecodingError`, and it never allocates more than the remaining input can justify.

/// A typed error thrown by every canonical decoder.
///
/// Decoding never traps: malformed, truncated, oversized or non-canonical input is reported with one of
/// these codes, plus the offset in the input where the problem was found.
public struct DecodingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong. Stable names: the test vectors in `Protocols/vectors/encoding.json` use them.
    public enum Code: String, Sendable, Equatable {
        /// The input ended before the value did.
        case truncated
        /// A varint used more bytes than needed (e.g. `0x80 0x00` for 0).
        case nonCanonicalVarint
        /// A varint does not fit in 64 bits.
        case varintOverflow
        /// A length or count prefix claims more than the remaining input could hold.
        case lengthTooLarge
        /// A string is not valid UTF-8.
        case invalidUTF8
        /// An enum or union tag is not known to this version.
        case unknownTag
        /// The format version byte is not supported.
        case unsupportedVersion
        /// Bytes remained after a complete top-level value.
        case trailingBytes
        /// Map keys or set elements are not in strictly increasing canonical order (or repeat).
        case nonCanonicalOrder
        /// A value is out of its allowed range (e.g. latitude 200, a NaN double, a bad scope).
        case invalidValue
    }

    /// The error code.
    public var code: Code
    /// Byte offset in the input where decoding failed.
    public var offset: Int
    /// Human-readable detail (which field, which value).
    public var detail: String

    /// Creates a decoding error.
    public init(_ code: Code, at offset: Int, _ detail: String = "") {
        self.code = code
        self.offset = offset
        self.detail = detail
    }

    public var description: String {
        detail.isEmpty ? "\(code.rawValue) at byte \(offset)" : "\(code.rawValue) at byte \(offset): \(detail)"
    }
}

/// Appends canonical encodings to a byte buffer.
public struct ByteWriter: Sendable {
    /// The bytes written so far.
    public var bytes: [UInt8]

    /// Creates an empty writer, optionally reserving capacity.
    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Writes one raw byte.
    @inlinable public mutating func writeByte(_ byte: UInt8) { bytes.append(byte) }

    /// Writes raw bytes with no length prefix (fixed-size fields such as ids and keys).
    @inlinable public mutating func writeRaw<C: Collection>(_ raw: C) where C.Element == UInt8 {
        bytes.append(contentsOf: raw)
    }

    /// Writes an unsigned LEB128 varint in its minimal form.
    @inlinable public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Writes a signed integer as a zig-zag mapped varint.
    @inlinable public mutating func writeSignedVarint(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Writes a boolean as one byte, 0 or 1.
    @inlinable public mutating func writeBool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    /// Writes a fixed-width big-endian 64-bit integer.
    @inlinable public mutating func writeUInt64BE(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    /// Writes a finite double as its IEEE 754 bits, big-endian. `-0.0` is written as `0.0`.
    @inlinable public mutating func writeDouble(_ value: Double) {
        precondition(value.isFinite, "non-finite doubles are not encodable")
        writeUInt64BE((value == 0 ? 0.0 : value).bitPattern)
    }

    /// Writes a varint length followed by the bytes.
    @inlinable public mutating func writeBytes<C: Collection>(_ data: C) where C.Element == UInt8 {
        writeVarint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }

    /// Writes a UTF-8 string with a varint byte-length prefix.
    @inlinable public mutating func writeString(_ string: String) {
        var s = string
        s.withUTF8 { writeBytes($0) }
    }

    /// Writes any canonically encodable value.
    @inlinable public mutating func write<T: CanonicalEncodable>(_ value: T) { value.encode(to: &self) }

    /// Writes a count followed by each element, in the order given (caller guarantees canonical order).
    @inlinable public mutating func writeArray<T: CanonicalEncodable>(_ values: [T]) {
        writeVarint(UInt64(values.count))
        for v in values { v.encode(to: &self) }
    }
}

/// Reads canonical encodings from a byte buffer. Every read is bounds-checked and throws on error.
public struct ByteReader: Sendable {
    @usableFromInline let bytes: [UInt8]
    /// The current read position.
    public private(set) var offset: Int

    /// Creates a reader over `bytes`.
    public init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        self.bytes = Array(bytes)
        offset = 0
    }

    /// Number of bytes not yet read.
    public var remaining: Int { bytes.count - offset }

    /// Whether all input has been consumed.
    public var isAtEnd: Bool { offset == bytes.count }

    /// Throws `trailingBytes` unless the input is fully consumed.
    public func expectEnd() throws(DecodingError) {
        if !isAtEnd { throw DecodingError(.trailingBytes, at: offset, "\(remaining) byte(s) after the value") }
    }

    /// Reads one byte.
    public mutating func readByte() throws(DecodingError) -> UInt8 {
        guard offset < bytes.count else { throw DecodingError(.truncated, at: offset, "expected 1 byte") }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// Reads `count` raw bytes.
    public mutating func readRaw(_ count: Int) throws(DecodingError) -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw DecodingError(.truncated, at: offset, "expected \(count) bytes, \(remaining) left")
        }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Reads a minimal unsigned LEB128 varint of at most 64 bits.
    public mutating func readVarint() throws(DecodingError) -> UInt64 {
        let start = offset
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count else { throw DecodingError(.truncated, at: offset, "varint") }
            let byte = bytes[offset]
            offset += 1
            let payload = UInt64(byte & 0x7F)
            if shift == 63 && payload > 1 { throw DecodingError(.varintOverflow, at: start) }
            result |= payload << shift
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 { throw DecodingError(.nonCanonicalVarint, at: start) }
                return result
            }
            shift += 7
            if shift > 63 { throw DecodingError(.varintOverflow, at: start) }
        }
    }

    /// Reads a varint and checks it fits `T`.
    public mutating func readVarint<T: FixedWidthInteger & UnsignedInteger>(as: T.Type) throws(DecodingError) -> T {
        let start = offset
        let v = try readVarint()
        guard let r = T(exactly: v) else { throw DecodingError(.invalidValue, at: start, "\(v) exceeds \(T.self)") }
        return r
    }

    /// Reads a zig-zag mapped signed varint.
    public mutating func readSignedVarint() throws(DecodingError) -> Int64 {
        let u = try readVarint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    /// Reads a boolean; only 0 and 1 are valid.
    public mutating func readBool() throws(DecodingError) -> Bool {
        let start = offset
        switch try readByte() {
        case 0: return false
        case 1: return true
        case let b: throw DecodingError(.invalidValue, at: start, "bool byte \(b)")
        }
    }

    /// Reads a fixed-width big-endian 64-bit integer.
    public mutating func readUInt64BE() throws(DecodingError) -> UInt64 {
        guard remaining >= 8 else { throw DecodingError(.truncated, at: offset, "expected 8 bytes") }
        var v: UInt64 = 0
        for i in 0..<8 { v = (v << 8) | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }

    /// Reads a finite double; NaN, infinities and `-0.0` are not canonical and are rejected.
    public mutating func readDouble() throws(DecodingError) -> Double {
        let start = offset
        let d = Double(bitPattern: try readUInt64BE())
        guard d.isFinite else { throw DecodingError(.invalidValue, at: start, "non-finite double") }
        if d == 0 && d.sign == .minus { throw DecodingError(.invalidValue, at: start, "negative zero") }
        return d
    }

    /// Reads a length prefix and checks it against the remaining input (no allocation beyond it).
    public mutating func readLength() throws(DecodingError) -> Int {
        let start = offset
        let n = try readVarint()
        guard n <= UInt64(remaining) else {
            throw DecodingError(.lengthTooLarge, at: start, "length \(n) but \(remaining) byte(s) left")
        }
        return Int(n)
    }

    /// Reads a count of elements, each at least `minElementSize` bytes long, checked against the input.
    public mutating func readCount(minElementSize: Int = 1) throws(DecodingError) -> Int {
        let start = offset
        let n = try readVarint()
        guard n <= UInt64(remaining / max(minElementSize, 1)) else {
            throw DecodingError(.lengthTooLarge, at: start, "count \(n) but \(remaining) byte(s) left")
        }
        return Int(n)
    }

    /// Reads length-prefixed bytes.
    public mutating func readBytes() throws(DecodingError) -> [UInt8] {
        let n = try readLength()
        return try readRaw(n)
    }

    /// Reads a length-prefixed UTF-8 string, validating the encoding.
    public mutating func readString() throws(DecodingError) -> String {
        let start = offset
        let n = try readLength()
        let slice = bytes[offset..<offset + n]
        guard let s = String(validating: slice, as: UTF8.self) else {
            throw DecodingError(.invalidUTF8, at: start)
        }
        offset += n
        return s
    }

    /// Reads any canonically decodable value.
    public mutating func read<T: CanonicalDecodable>(_: T.Type = T.self) throws(DecodingError) -> T {
        try T(from: &self)
    }

    /// Reads a count-prefixed array, requiring strictly increasing order when `sorted` is set
    /// (the canonical form of sets and maps).
    public mutating func readArray<T: CanonicalDecodable>(
        _: T.Type = T.self, minElementSize: Int = 1, strictlyIncreasingBy less: ((T, T) -> Bool)? = nil
    ) throws(DecodingError) -> [T] {
        let n = try readCount(minElementSize: minElementSize)
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let at = offset
            let v = try T(from: &self)
            if let less, let last = out.last, !less(last, v) {
                throw DecodingError(.nonCanonicalOrder, at: at, "\(T.self) elements must be strictly increasing")
            }
            out.append(v)
        }
        return out
    }
}

/// A value with one canonical byte encoding.
public protocol CanonicalEncodable {
    /// Appends the canonical encoding of `self`.
    func encode(to writer: inout ByteWriter)
}

/// A value that can be decoded from its canonical encoding.
public protocol CanonicalDecodable {
    /// Decodes one value, advancing `reader`.
    /// - Throws: `DecodingError` for any malformed, truncated or non-canonical input.
    init(from reader: inout ByteReader) throws(DecodingError)
}

/// A value with a canonical encoding in both directions.
public typealias CanonicalCodable = CanonicalEncodable & CanonicalDecodable

extension CanonicalEncodable {
    /// The canonical encoding of `self`.
    public var canonicalBytes: [UInt8] {
        var w = ByteWriter()
        encode(to: &w)
        return w.bytes
    }
}

extension CanonicalDecodable {
    /// Decodes a complete value from `bytes`; trailing bytes are an error.
    /// - Throws: `DecodingError`.
    public init<C: Collection>(canonicalBytes bytes: C) throws(DecodingError) where C.Element == UInt8 {
        var r = ByteReader(bytes)
        self = try Self(from: &r)
        try r.expectEnd()
    }
}

extension String: CanonicalCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeString(self) }
    public init(from reader: inout ByteReader) throws(DecodingError) { self = try reader.readString() }
}

extension UInt64: CanonicalCodable {
    public func encode(to writer: inout ByteWriter) { writer.writeVarint(self) }
    public init(from reader: inout ByteReader) throws(DecodingError) { self = try reader.readVarint() }
}

/// Lower-case hexadecimal helpers used for ids, vectors and logs.
public enum Hex {
    /// Encodes bytes as lower-case hex.
    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes hex (either case); returns nil for odd length or non-hex characters.
    public static func decode(_ string: String) -> [UInt8]? {
        let utf8 = Array(string.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
