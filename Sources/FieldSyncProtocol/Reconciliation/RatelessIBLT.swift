// Rateless invertible Bloom lookup tables (Yang, Gilad & Alizadeh, "Practical Rateless Set
// Reconciliation", SIGCOMM 2024), specialised to 16-byte head elements.
//
// A set defines an unbounded stream of coded symbols. Element x with checksum c = checksum(x) is added
// to symbol 0 and then to the indices produced by `SymbolIndexMapping(seed: c)`, which visits index i
// with probability about 1/(1 + i/2). A receiver subtracts the symbols of its own set and peels.

/// One coded symbol: XOR of elements, XOR of their checksums, and the signed count of elements.
public struct CodedSymbol: Hashable, Sendable {
    /// XOR of the elements mapped to this symbol.
    public var sum: HeadElement
    /// XOR of the checksums of those elements.
    public var checksum: UInt64
    /// Number of elements mapped (negative after subtracting a larger set).
    public var count: Int64

    /// Creates a symbol.
    public init(sum: HeadElement, checksum: UInt64, count: Int64) {
        self.sum = sum
        self.checksum = checksum
        self.count = count
    }

    /// The empty symbol.
    public static let empty = CodedSymbol(sum: .zero, checksum: 0, count: 0)

    /// Whether every field is zero.
    public var isEmpty: Bool { count == 0 && checksum == 0 && sum == .zero }

    /// Adds (`sign = 1`) or removes (`sign = -1`) an element.
    @inline(__always) mutating func apply(_ element: HeadElement, checksum c: UInt64, sign: Int64) {
        sum = sum ^ element
        checksum ^= c
        count &+= sign
    }
}

/// The index sequence of one element (the reference implementation's `randomMapping`).
///
/// The sequence starts at index 0. Each step multiplies the 64-bit state by `0xda942042e4dd58b5`
/// (mod 2^64), then advances the index by `ceil((Double(index) + 1.5) * (2^32 / sqrt(Double(state) + 1) - 1))`,
/// all in IEEE-754 binary64 with round-to-nearest and no fused multiply-add. A step that would pass
/// 2^64 - 1 ends the sequence.
public struct SymbolIndexMapping: Sendable, Equatable {
    /// The multiplier of the state.
    public static let multiplier: UInt64 = 0xda94_2042_e4dd_58b5
    /// The state (initially the element's checksum).
    public private(set) var state: UInt64
    /// The current index (initially 0); `UInt64.max` once the sequence has ended.
    public private(set) var index: UInt64

    /// Starts the sequence of an element whose checksum is `seed`.
    public init(seed: UInt64) {
        state = seed
        index = 0
    }

    /// Moves to the next index and returns it.
    @inline(__always) public mutating func advance() -> UInt64 {
        guard index != UInt64.max else { return index }
        state = state &* SymbolIndexMapping.multiplier
        let gap = ((Double(index) + 1.5) * (4_294_967_296.0 / (Double(state) + 1).squareRoot() - 1)).rounded(.up)
        if gap >= 18_446_744_073_709_551_616.0 {
            index = UInt64.max
        } else {
            let (sum, overflow) = index.addingReportingOverflow(UInt64(gap))
            index = overflow ? UInt64.max : sum
        }
        return index
    }
}

/// Produces the coded-symbol stream of a fixed set of head elements, batch after batch.
///
/// ```swift
/// var encoder = RatelessEncoder(elements: mine, hasher: hasher)
/// let first = encoder.nextSymbols(64)   // symbols 0..<64
/// let more = encoder.nextSymbols(32)    // symbols 64..<96
/// ```
public struct RatelessEncoder: Sendable {
    private var elements: [HeadElement]
    private var checksums: [UInt64]
    private var mappings: [SymbolIndexMapping]
    /// How many symbols have been produced so far (the index of the next one).
    public private(set) var produced: Int = 0

    /// Creates an encoder for a set. Duplicates are removed; order does not matter.
    public init(elements: [HeadElement], hasher: any ElementHasher) {
        let unique = sortedUnique(elements)
        self.init(sortedUniqueElements: unique, checksums: unique.map { hasher.checksum($0) })
    }

    /// Creates an encoder from strictly increasing elements and their checksums.
    init(sortedUniqueElements: [HeadElement], checksums: [UInt64]) {
        precondition(sortedUniqueElements.count == checksums.count)
        elements = sortedUniqueElements
        self.checksums = checksums
        mappings = checksums.map { SymbolIndexMapping(seed: $0) }
    }

    /// The number of elements.
    public var elementCount: Int { elements.count }

    /// Produces the next `count` symbols.
    public mutating func nextSymbols(_ count: Int) -> [CodedSymbol] {
        precondition(count >= 0)
        var out = [CodedSymbol](repeating: .empty, count: count)
        let from = UInt64(produced)
        let to = from + UInt64(count)
        out.withUnsafeMutableBufferPointer { buf in
            elements.withUnsafeBufferPointer { els in
                checksums.withUnsafeBufferPointer { cks in
                    mappings.withUnsafeMutableBufferPointer { maps in
                        for i in 0..<els.count {
                            var m = maps[i]
                            guard m.index < to else { continue }
                            let e = els[i], c = cks[i]
                            repeat {
                                buf[Int(m.index &- from)].apply(e, checksum: c, sign: 1)
                                _ = m.advance()
                            } while m.index < to
                            maps[i] = m
                        }
                    }
                }
            }
        }
        produced += count
        return out
    }
}

/// Why peeling failed on input from a peer.
public enum RatelessDecodingFailure: Error, Equatable, Sendable {
    /// More elements peeled than the symbols could legitimately carry (crafted symbols).
    case tooManyElements
    /// An element was recovered twice, or a recovered element contradicts the local set.
    case inconsistent
}

/// Subtracts the local set from a peer's coded symbols and peels the difference.
///
/// ```swift
/// var decoder = RatelessDecoder(localElements: mine, hasher: hasher)
/// try decoder.add(peerSymbols)
/// if decoder.isDecoded { use(decoder.remoteOnly, decoder.localOnly) }
/// ```
public struct RatelessDecoder: Sendable {
    private struct Recovered {
        var element: HeadElement
        var checksum: UInt64
        var sign: Int64
        var mapping: SymbolIndexMapping
    }

    private var local: RatelessEncoder
    private let hasher: any ElementHasher
    private let sortedLocal: [HeadElement]
    private var difference: [CodedSymbol] = []
    private var recovered: [Recovered] = []
    /// Position of each recovered element in `recovered` (so that a refuted inference is dropped in
    /// O(1), not by a scan: a crafted stream could refute many).
    private var recoveredIndex: [HeadElement: Int] = [:]
    /// Local elements removed on inference (see `peel`), not yet confirmed by decoding completing.
    private var inferred: Set<HeadElement> = []
    /// Inferences that turned out wrong; never inferred again.
    private var refuted: Set<HeadElement> = []
    private var nonEmpty = 0
    /// Whether to infer a log's local element once the peer's element of the same log is recovered.
    var infersPartners = true

    /// Creates a decoder holding the local set.
    public init(localElements: [HeadElement], hasher: any ElementHasher) {
        let unique = sortedUnique(localElements)
        self.init(sortedUniqueElements: unique, checksums: unique.map { hasher.checksum($0) }, hasher: hasher)
    }

    /// Creates a decoder from strictly increasing local elements and their checksums.
    init(sortedUniqueElements: [HeadElement], checksums: [UInt64], hasher: any ElementHasher) {
        local = RatelessEncoder(sortedUniqueElements: sortedUniqueElements, checksums: checksums)
        sortedLocal = sortedUniqueElements
        self.hasher = hasher
    }

    private func holdsLocally(_ e: HeadElement) -> Bool {
        var lo = 0
        var hi = sortedLocal.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sortedLocal[mid] < e { lo = mid + 1 } else { hi = mid }
        }
        return lo < sortedLocal.count && sortedLocal[lo] == e
    }

    /// The number of peer symbols received so far.
    public var symbolCount: Int { difference.count }

    /// Whether the difference is fully recovered: at least one symbol, and every symbol peeled to empty.
    public var isDecoded: Bool { !difference.isEmpty && nonEmpty == 0 }

    /// Elements the peer holds and we do not, in increasing order (complete once `isDecoded`).
    public var remoteOnly: [HeadElement] { recovered.filter { $0.sign == 1 }.map { $0.element }.sorted() }

    /// Elements we hold and the peer does not, in increasing order (complete once `isDecoded`).
    public var localOnly: [HeadElement] { recovered.filter { $0.sign == -1 }.map { $0.element }.sorted() }

    /// Adds the peer's next symbols (continuing the stream where the previous batch ended) and peels.
    /// - Throws: `RatelessDecodingFailure` when the symbols cannot come from an honest peer's set.
    public mutating func add(_ symbols: [CodedSymbol]) throws(RatelessDecodingFailure) {
        let from = difference.count
        let mine = local.nextSymbols(symbols.count)
        for (i, s) in symbols.enumerated() {
            var d = s
            d.sum = d.sum ^ mine[i].sum
            d.checksum ^= mine[i].checksum
            d.count &-= mine[i].count
            difference.append(d)
        }
        let to = UInt64(difference.count)
        // Apply what was already recovered to the new symbols.
        for r in recovered.indices {
            var m = recovered[r].mapping
            while m.index < to {
                difference[Int(m.index)].apply(recovered[r].element, checksum: recovered[r].checksum, sign: -recovered[r].sign)
                _ = m.advance()
            }
            recovered[r].mapping = m
        }
        // Only the new symbols changed above; count and queue those.
        var queue: [Int] = []
        for j in from..<difference.count where !difference[j].isEmpty {
            nonEmpty += 1
            queue.append(j)
        }
        try peel(queue.reversed())
    }

    private func isPure(_ s: CodedSymbol) -> Bool {
        (s.count == 1 || s.count == -1) && hasher.checksum(s.sum) == s.checksum
    }

    /// The only local element carrying `tag`, if there is exactly one.
    private func soleLocalElement(tag: UInt64) -> HeadElement? {
        var lo = 0
        var hi = sortedLocal.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sortedLocal[mid].high < tag { lo = mid + 1 } else { hi = mid }
        }
        guard lo < sortedLocal.count, sortedLocal[lo].high == tag else { return nil }
        if lo + 1 < sortedLocal.count && sortedLocal[lo + 1].high == tag { return nil }
        return sortedLocal[lo]
    }

    /// Removes `element` (found with `sign`) from every received symbol it maps to, queueing symbols
    /// that become pure; returns the mapping positioned after the received symbols.
    private mutating func remove(_ element: HeadElement, checksum: UInt64, sign: Int64, queue: inout [Int]) -> SymbolIndexMapping {
        let to = UInt64(difference.count)
        var m = SymbolIndexMapping(seed: checksum)
        while m.index < to {
            let k = Int(m.index)
            let wasEmpty = difference[k].isEmpty
            difference[k].apply(element, checksum: checksum, sign: -sign)
            let isEmpty = difference[k].isEmpty
            if wasEmpty && !isEmpty { nonEmpty += 1 }
            if !wasEmpty && isEmpty { nonEmpty -= 1 }
            if !isEmpty && isPure(difference[k]) { queue.append(k) }
            _ = m.advance()
        }
        return m
    }

    /// Peels pure symbols.
    ///
    /// Side information: head elements of one log share their tag, and a log usually has a single
    /// element on each side. When a peer element of tag T is recovered and we hold exactly one element
    /// of tag T, that element is almost surely ours alone, so it is removed at once, as if recovered.
    /// If the guess is wrong (the peer holds it too), the removal leaves the element in the symbols
    /// with count +1; it then peels like any other element and cancels the guess. The stream format
    /// is unchanged; only fewer symbols are needed.
    private mutating func peel(_ initial: [Int]) throws(RatelessDecodingFailure) {
        var queue = initial
        let limit = 2 * difference.count + 8
        while let j = queue.popLast() {
            let s = difference[j]
            guard isPure(s) else { continue }
            let element = s.sum
            let sign = s.count
            if let at = recoveredIndex[element] {
                // Only a wrong inference may come back, and only as the peer's (+1).
                guard sign == 1, inferred.contains(element) else { throw .inconsistent }
                _ = remove(element, checksum: s.checksum, sign: sign, queue: &queue)
                inferred.remove(element)
                refuted.insert(element)
                recoveredIndex[element] = nil
                let last = recovered.removeLast()
                if at < recovered.count {
                    recovered[at] = last
                    recoveredIndex[last.element] = at
                }
                continue
            }
            guard (sign == 1) != holdsLocally(element) else { throw .inconsistent }
            guard recovered.count < limit else { throw .tooManyElements }
            let m = remove(element, checksum: s.checksum, sign: sign, queue: &queue)
            recoveredIndex[element] = recovered.count
            recovered.append(Recovered(element: element, checksum: s.checksum, sign: sign, mapping: m))
            if infersPartners, sign == 1, let mine = soleLocalElement(tag: element.tag),
               recoveredIndex[mine] == nil, !refuted.contains(mine) {
                let c = hasher.checksum(mine)
                let mm = remove(mine, checksum: c, sign: -1, queue: &queue)
                recoveredIndex[mine] = recovered.count
                recovered.append(Recovered(element: mine, checksum: c, sign: -1, mapping: mm))
                inferred.insert(mine)
            }
        }
    }
}

/// The elements in increasing order, without duplicates.
func sortedUnique(_ elements: [HeadElement]) -> [HeadElement] {
    var sorted = elements
    sorted.sort()
    var out: [HeadElement] = []
    out.reserveCapacity(sorted.count)
    for e in sorted where out.last != e { out.append(e) }
    return out
}
