// SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012).
//
// Used as the default keyed hash of the reconciliation layer (see `SipHashReconciliationHashing`).
// Production builds are expected to switch to keyed BLAKE2b from FieldSyncCrypto; the wire format
// then changes version (Protocols/sync-reconciliation.md, section 3).

/// Keyed SipHash-2-4 with a 128-bit key, producing a 64-bit output.
///
/// The key is given as two 64-bit words read little-endian from the 16 key bytes, exactly as in the
/// reference implementation; the output is the 64-bit value whose little-endian bytes the reference
/// implementation writes.
///
/// ```swift
/// let h = SipHash24(key: Array(0..<16)).hash(Array(0..<15))   // 0xa129ca6149be45e5
/// ```
public struct SipHash24: Sendable, Equatable {
    /// First key word (key bytes 0..<8, little-endian).
    public let k0: UInt64
    /// Second key word (key bytes 8..<16, little-endian).
    public let k1: UInt64

    /// Creates a hasher from two key words.
    public init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// Creates a hasher from exactly 16 key bytes.
    /// - Precondition: `key.count == 16` (a programming error otherwise).
    public init(key: [UInt8]) {
        precondition(key.count == 16, "SipHash keys are 16 bytes")
        self.init(k0: SipHash24.readLE(key, 0), k1: SipHash24.readLE(key, 8))
    }

    @inline(__always) static func readLE(_ b: [UInt8], _ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(b[at + i]) << UInt64(8 * i) }
        return v
    }

    /// Hashes `message` and returns the 64-bit tag.
    public func hash(_ message: [UInt8]) -> UInt64 {
        message.withUnsafeBufferPointer { hash($0) }
    }

    /// Hashes the bytes of `message` and returns the 64-bit tag.
    public func hash(_ message: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ k1

        @inline(__always) func round() {
            v0 &+= v1; v1 = v1.rotl(13); v1 ^= v0; v0 = v0.rotl(32)
            v2 &+= v3; v3 = v3.rotl(16); v3 ^= v2
            v0 &+= v3; v3 = v3.rotl(21); v3 ^= v0
            v2 &+= v1; v1 = v1.rotl(17); v1 ^= v2; v2 = v2.rotl(32)
        }

        let n = message.count
        let end = n - n % 8
        var i = 0
        let raw = UnsafeRawBufferPointer(message)
        while i < end {
            let m = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            v3 ^= m
            round(); round()
            v0 ^= m
            i += 8
        }
        var last = UInt64(truncatingIfNeeded: n) << 56
        for j in 0..<(n - end) { last |= UInt64(message[end + j]) << UInt64(8 * j) }
        v3 ^= last
        round(); round()
        v0 ^= last
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// Hashes exactly two 64-bit words given as 16 bytes (big-endian words), without allocating.
    /// Equal to `hash(bytes)` where `bytes` is the 16-byte big-endian serialization of `(a, b)`.
    public func hash(bigEndianWords a: UInt64, _ b: UInt64, prefix: UInt8) -> UInt64 {
        var buf: (UInt64, UInt64, UInt64) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &buf) { raw -> UInt64 in
            raw[0] = prefix
            for k in 0..<8 {
                raw[1 + k] = UInt8(truncatingIfNeeded: a >> UInt64(56 - 8 * k))
                raw[9 + k] = UInt8(truncatingIfNeeded: b >> UInt64(56 - 8 * k))
            }
            return hash(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: 17))
        }
    }
}

extension UInt64 {
    @inline(__always) fileprivate func rotl(_ r: UInt64) -> UInt64 { (self << r) | (self >> (64 - r)) }
}
