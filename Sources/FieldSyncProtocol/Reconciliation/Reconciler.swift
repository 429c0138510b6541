import FieldSyncCore

/// Which end of the session a reconciler is. The initiator encodes coded symbols; the responder
/// decodes them and reports the difference.
public enum ReconciliationRole: Sendable, Equatable {
    /// The side that opened the session.
    case initiator
    /// The side that accepted it.
    case responder
}

/// Tunable constants of the reconciliation policy. Both sides must use equal values of
/// `fallbackSizeRatio` and `smallSetElements` (they decide the fallback from the two hellos alone);
/// the defaults are normative (Protocols/sync-reconciliation.md, section 6).
public struct ReconciliationConfiguration: Sendable, Equatable {
    /// Full head vector instead of symbols when `min(n) < fallbackSizeRatio * max(n)` element counts.
    public var fallbackSizeRatio: Double = 0.75
    /// Full head vector instead of symbols when both sides have at most this many elements.
    public var smallSetElements: UInt64 = 16
    /// Safety factor on the first batch over the expected symbol count.
    public var firstBatchMargin: Double = 1.25
    /// Symbols added to the first batch on top of the margin (small differences vary most).
    public var extraFirstBatchSymbols: Int = 4
    /// Each later batch makes the total grow by this factor.
    public var growth: Double = 1.5
    /// Smallest batch.
    public var minimumBatch: Int = 4
    /// Largest message this side sends: a `fullHeads`, `decoded` or `names` list that would be larger
    /// goes in parts (`maximumReconMessageBytes`, what a session carries; smaller in tests). A sender's
    /// choice: a receiver accepts any split.
    public var maximumMessageBytes: Int = maximumReconMessageBytes

    /// The default (normative) policy.
    public init() {}

    /// Expected symbols per differing element for `d` differing elements that come in pairs (one per
    /// side for each differing log), with the decoder's partner inference (`RatelessDecoder`):
    /// measured 1.39 at d = 20, 1.14 at 120, 1.10 at 600 (`PartnerInferenceTests`). Without pairs the
    /// paper's figures apply (1.73 at d = 10, 1.46 at 100, 1.40 at 300); batches assume pairs, as
    /// `d̂ = 2k̂` over-counts unpaired differences.
    public static func expectedOverhead(_ d: Double) -> Double { 1.05 + 1.5 / max(d, 1).squareRoot() }
}

/// What one log looks like on both sides, when they differ.
public struct LogDifference: Hashable, Sendable, CustomStringConvertible {
    /// The log.
    public var log: LogID
    /// Our held intervals (empty when we do not hold the log).
    public var local: [IntervalSummary]
    /// The peer's held intervals (empty when the peer does not hold the log).
    public var remote: [IntervalSummary]

    /// Creates a difference.
    public init(log: LogID, local: [IntervalSummary], remote: [IntervalSummary]) {
        self.log = log
        self.local = local
        self.remote = remote
    }

    /// Heights we hold and the peer does not: what we should send.
    public var missingAtRemote: [ClosedRange<UInt32>] { Self.subtract(local, remote) }
    /// Heights the peer holds and we do not: what we should receive.
    public var missingLocally: [ClosedRange<UInt32>] { Self.subtract(remote, local) }

    /// Heights held by both where the two sides' interval ends disagree on the change hash: a fork.
    public var forkedHeights: [UInt32] {
        var out: [UInt32] = []
        for a in local { for b in remote where a.end == b.end && a.endHashPrefix != b.endHashPrefix { out.append(a.end) } }
        return out
    }

    static func subtract(_ a: [IntervalSummary], _ b: [IntervalSummary]) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        for x in a {
            var pieces: [ClosedRange<UInt32>] = [x.start...x.end]
            for y in b {
                var next: [ClosedRange<UInt32>] = []
                for p in pieces {
                    if y.end < p.lowerBound || y.start > p.upperBound { next.append(p); continue }
                    if y.start > p.lowerBound { next.append(p.lowerBound...(y.start - 1)) }
                    if y.end < p.upperBound { next.append((y.end + 1)...p.upperBound) }
                }
                pieces = next
            }
            out += pieces
        }
        return out
    }

    /// `log: local ⇄ remote`.
    public var description: String { "\(log): \(local) vs \(remote)" }
}

/// How reconciliation concluded.
public enum ReconciliationMethod: Hashable, Sendable {
    /// Equal hello digests.
    case digest
    /// Rateless IBLT symbols, decoded after `symbols` symbols.
    case rateless(symbols: Int)
    /// The initiator's full head vector.
    case fullHeads
}

/// The outcome: every log whose holdings differ, sorted by `LogID`.
public struct ReconciliationResult: Hashable, Sendable {
    /// The differing logs (empty when in sync).
    public var differences: [LogDifference]
    /// How the difference was found.
    public var method: ReconciliationMethod

    /// Whether both sides hold exactly the same.
    public var inSync: Bool { differences.isEmpty }
}

/// What the driver must do after feeding the reconciler.
public enum ReconOutput: Hashable, Sendable {
    /// Send this message to the peer (in order).
    case send(ReconMessage)
    /// Reconciliation is complete on this side.
    case finished(ReconciliationResult)
}

/// A peer violated the reconciliation protocol. The session should be closed; nothing was learned.
public struct ReconciliationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Stable error codes.
    public enum Code: String, Sendable, Equatable {
        /// The message is not expected in the current state.
        case unexpectedMessage
        /// The peer's hello is unacceptable (version).
        case badHello
        /// The symbol stream is out of order or longer than the sets could need.
        case badSymbolStream
        /// The symbols cannot come from an honest peer (inconsistent peeling).
        case undecodable
        /// A difference or name list contradicts what we know.
        case inconsistentDifference
        /// Two of our own logs got the same tag under this session's key.
        case tagCollision
        /// The peer sent more symbols or symbol messages than the two sides' sizes allow
        /// (`Reconciler.symbolLimit`, `Reconciler.symbolMessageLimit`); its resource use is cut here.
        case limitExceeded
    }

    /// The code.
    public var code: Code
    /// Detail for logs.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// `code: detail`.
    public var description: String { detail.isEmpty ? code.rawValue : "\(code.rawValue): \(detail)" }
}

/// The reconciliation state machine of one side of one session: pure, no I/O, no clock.
///
/// ```swift
/// var me = Reconciler(role: .initiator, holdings: mine, hashing: keys, salt: salt16)
/// var outputs = me.start()                       // [.send(.hello)]
/// // for each message from the peer:
/// outputs = try me.receive(message)              // .send(...) and finally .finished(result)
/// ```
///
/// Message flow (RTT = round-trip time; both hellos cross at once):
/// 1. both send `hello`; equal digests finish after ½ RTT;
/// 2. otherwise the responder sends `estimate` (or nothing, if the counts call for the fallback) and
///    the initiator answers with `symbols` (or `fullHeads`);
/// 3. the responder replies `more` until it decodes, then `decoded` (+ `names` of logs the initiator
///    lacks); the initiator replies `names` of logs the responder lacks, if any.
public struct Reconciler: Sendable {
    private enum State: Sendable {
        case idle
        case awaitingHello
        case awaitingEstimate
        case streaming(RatelessEncoder)
        case awaitingDecoded(symbols: Int?)
        case awaitingSymbols(RatelessDecoder)
        case awaitingNames(partial: [LogDifference], unnamed: [UInt64: [IntervalSummary]], method: ReconciliationMethod)
        case done
        /// A peer error happened, or a transition is in progress.
        case failed
    }

    /// This side's role.
    public let role: ReconciliationRole
    /// The policy.
    public let configuration: ReconciliationConfiguration
    private let holdings: Holdings
    private let hashing: any ReconciliationHashing
    private let salt: [UInt8]
    private let hello: Hello
    private var state: State = .idle
    private var peerHello: Hello?
    private var hasher: (any ElementHasher)?
    // Our logs by tag, sorted by tag; our elements and their checksums, sorted.
    private var tags: [(tag: UInt64, index: Int)] = []
    private var elements: [HeadElement] = []
    private var checksums: [UInt64] = []
    // Responder: the most symbols and symbol messages the initiator may send (0 after the fallback by
    // counts), and the symbol messages received so far.
    private var symbolCap = 0
    private var symbolMessageCap = 0
    private var symbolMessages = 0
    // A list of the peer's received in parts so far (`fullHeadsPart`, `decodedPart`, `namesPart`), until
    // its final message.
    private var pending: PendingList?

    private enum PendingList: Sendable {
        case heads([HeadEntry])
        case decoded([HeadEntry])
        case names([LogName])

        /// The type of the list's final message.
        var typeByte: UInt8 {
            switch self {
            case .heads: 5
            case .decoded: 6
            case .names: 7
            }
        }
    }

    /// The most coded symbols a responder accepts from an initiator that announced `initiatorCount`
    /// elements when it holds `responderCount` itself (Protocols/sync-reconciliation.md 6.3):
    /// `min(n_I, 2 × n_R) + 16`. An honest initiator never sends more than `(19 n_I + 6) / 25`
    /// (it switches to `fullHeads` first, and its head vector costs at most 19 bytes per element),
    /// and without the fallback by counts `n_I ≤ n_R / 0.75`; the responder's own size bounds the
    /// stream whatever count the peer announces.
    public static func symbolLimit(initiatorCount: UInt64, responderCount: UInt64) -> Int {
        Int(min(initiatorCount, 2 * min(responderCount, 1 << 40))) + 16
    }

    /// The most `symbols` messages a responder accepts for a stream of at most `symbolLimit` symbols:
    /// `64 + ⌈symbolLimit / 65,536⌉`. Each message costs the responder a pass over its own elements,
    /// so their number is bounded separately from the symbols they carry. An honest initiator's
    /// batches grow ×1.5 from at least 4 symbols, so it needs at most 41 rounds below 2^25 symbols.
    public static func symbolMessageLimit(symbolLimit: Int) -> Int {
        64 + (symbolLimit + maximumSymbolsPerMessage - 1) / maximumSymbolsPerMessage
    }

    /// Creates a reconciler.
    /// - Parameters:
    ///   - role: initiator or responder (from the handshake).
    ///   - holdings: what this node holds within the scopes being reconciled.
    ///   - hashing: the key schedule, keyed by the session key.
    ///   - salt: 16 fresh random bytes drawn by the caller from its injected generator.
    ///   - configuration: the policy (defaults are normative).
    public init(
        role: ReconciliationRole, holdings: Holdings, hashing: any ReconciliationHashing, salt: [UInt8],
        configuration: ReconciliationConfiguration = ReconciliationConfiguration()
    ) {
        precondition(salt.count == 16, "salts are 16 bytes")
        self.role = role
        self.holdings = holdings
        self.hashing = hashing
        self.salt = salt
        self.configuration = configuration
        hello = Hello(
            elementCount: UInt64(holdings.elementCount), digest: hashing.holdingsDigest(holdings.canonicalDigestInput),
            salt: salt)
    }

    /// Whether reconciliation has finished on this side.
    public var isFinished: Bool { if case .done = state { true } else { false } }

    /// Whether a peer error ended the session (every later `receive` throws `unexpectedMessage`).
    public var hasFailed: Bool { if case .failed = state { true } else { false } }

    /// Begins: returns the hello to send.
    public mutating func start() -> [ReconOutput] {
        guard case .idle = state else { preconditionFailure("start() called twice") }
        state = .awaitingHello
        return [.send(.hello(hello))]
    }

    /// Feeds one message from the peer.
    /// - Returns: messages to send, in order, and `.finished` once this side knows the difference.
    /// - Throws: `ReconciliationError` when the peer breaks the protocol; the reconciler is then dead.
    public mutating func receive(_ message: ReconMessage) throws(ReconciliationError) -> [ReconOutput] {
        let current = state
        if case .done = current {
            throw ReconciliationError(.unexpectedMessage, "type \(message.typeByte) after reconciliation finished")
        }
        state = .failed  // poison until the transition completes
        // A list in parts: its parts are kept until its final message, which then carries the whole list.
        var message = message
        switch message {
        case let .fullHeadsPart(e):
            try collect(.heads(e), count: e.count, ordered: e.first.map { ($0.tag, e.last!.tag) }, in: current)
            state = current
            return []
        case let .decodedPart(e):
            try collect(.decoded(e), count: e.count, ordered: e.first.map { ($0.tag, e.last!.tag) }, in: current)
            state = current
            return []
        case let .namesPart(n):
            try collect(.names(n), count: n.count, ordered: n.first.map { ($0.tag, n.last!.tag) }, in: current)
            state = current
            return []
        case let .fullHeads(e):
            if case let .heads(before)? = pending { message = .fullHeads(try Self.joined(before, e, tag: \.tag)) }
        case let .decoded(e):
            if case let .decoded(before)? = pending { message = .decoded(try Self.joined(before, e, tag: \.tag)) }
        case let .names(n):
            if case let .names(before)? = pending { message = .names(try Self.joined(before, n, tag: \.tag)) }
        default:
            break
        }
        if let kept = pending {
            pending = nil
            switch (kept, message) {
            case (.heads, .fullHeads), (.decoded, .decoded), (.names, .names): break
            default: throw ReconciliationError(.unexpectedMessage, "type \(message.typeByte) before the end of a list sent in parts")
            }
            try checkListLength(of: message, in: current)
        }
        switch (current, message) {
        case let (.awaitingHello, .hello(peer)):
            return try receiveHello(peer)
        case let (.awaitingEstimate, .estimate(e)) where role == .initiator:
            return try receiveEstimate(e)
        case let (.streaming(encoder), .more(received)) where role == .initiator:
            return try receiveMore(encoder, received)
        case let (.awaitingDecoded(symbols), .decoded(entries)) where role == .initiator:
            return try receiveDecoded(entries, method: symbols.map { .rateless(symbols: $0) } ?? .fullHeads)
        case let (.streaming(encoder), .decoded(entries)) where role == .initiator:
            return try receiveDecoded(entries, method: .rateless(symbols: encoder.produced))
        case let (.awaitingSymbols(decoder), .symbols(batch)) where role == .responder:
            return try receiveSymbols(decoder, batch)
        case let (.awaitingSymbols(_), .fullHeads(entries)) where role == .responder:
            return try finishResponder(remote: Self.group(entries), differing: nil, method: .fullHeads)
        case let (.awaitingNames(partial, unnamed, method), .names(names)):
            return try receiveNames(names, partial: partial, unnamed: unnamed, method: method)
        default:
            throw ReconciliationError(.unexpectedMessage, "type \(message.typeByte) in state \(current)")
        }
    }

    // MARK: - Lists in parts

    /// Keeps a part of a list: only in a state that expects that list, after the parts of the same list
    /// (tags increasing across parts), and within the list's length bound.
    private mutating func collect(_ part: PendingList, count: Int, ordered: (first: UInt64, last: UInt64)?, in current: State) throws(ReconciliationError) {
        let expected: Bool
        switch (part, current) {
        case (.heads, .awaitingSymbols): expected = role == .responder
        case (.decoded, .awaitingDecoded), (.decoded, .streaming): expected = role == .initiator
        case (.names, .awaitingNames): expected = true
        default: expected = false
        }
        guard expected, let ordered else {
            throw ReconciliationError(.unexpectedMessage, "a list part of type \(part.typeByte) in state \(current)")
        }
        var total = count
        switch (pending, part) {
        case (nil, _):
            pending = part
        case (.heads(var list)?, .heads(let more)):
            guard list.last!.tag < ordered.first else { throw Self.unordered() }
            total += list.count
            pending = nil  // the list held once while it grows (no copy per part)
            list += more
            pending = .heads(list)
        case (.decoded(var list)?, .decoded(let more)):
            guard list.last!.tag < ordered.first else { throw Self.unordered() }
            total += list.count
            pending = nil  // the list held once while it grows (no copy per part)
            list += more
            pending = .decoded(list)
        case (.names(var list)?, .names(let more)):
            guard list.last!.tag < ordered.first else { throw Self.unordered() }
            total += list.count
            pending = nil  // the list held once while it grows (no copy per part)
            list += more
            pending = .names(list)
        default:
            throw ReconciliationError(.unexpectedMessage, "a list part of type \(part.typeByte) before the end of another list")
        }
        try checkListLength(total, of: part, in: current)
    }

    private static func unordered() -> ReconciliationError {
        ReconciliationError(.inconsistentDifference, "list parts out of tag order")
    }

    /// The parts received so far followed by the final message's items, tags increasing across the join.
    private static func joined<T>(_ before: [T], _ last: [T], tag: (T) -> UInt64) throws(ReconciliationError) -> [T] {
        if let a = before.last, let b = last.first, tag(a) >= tag(b) { throw unordered() }
        return before + last
    }

    /// Length bounds of a list over all its parts: `maximumListEntries`; a `fullHeads` list has at most one
    /// entry per element the initiator announced; a `names` list names exactly the logs the receiver
    /// lacks (checked on its end), so no more.
    private func checkListLength(_ total: Int, of list: PendingList, in current: State) throws(ReconciliationError) {
        var bound = maximumListEntries
        if case .heads = list, let announced = peerHello?.elementCount { bound = Int(min(UInt64(bound), announced)) }
        if case let .awaitingNames(_, unnamed, _) = current, case .names = list { bound = min(bound, unnamed.count) }
        guard total <= bound else {
            throw ReconciliationError(.limitExceeded, "a list of more than \(bound) entries (type \(list.typeByte))")
        }
    }

    private func checkListLength(of message: ReconMessage, in current: State) throws(ReconciliationError) {
        switch message {
        case let .fullHeads(e): try checkListLength(e.count, of: .heads([]), in: current)
        case let .decoded(e): try checkListLength(e.count, of: .decoded([]), in: current)
        case let .names(n): try checkListLength(n.count, of: .names([]), in: current)
        default: break
        }
    }

    /// What to send for a list: one message if it fits `maximumMessageBytes`, else parts then the final one.
    private func sends(fullHeads entries: [HeadEntry]) -> [ReconOutput] {
        ReconMessage.split(entries, limit: configuration.maximumMessageBytes, size: ReconMessage.entrySize,
                           part: ReconMessage.fullHeadsPart, last: ReconMessage.fullHeads).map { .send($0) }
    }

    private func sends(decoded entries: [HeadEntry]) -> [ReconOutput] {
        ReconMessage.split(entries, limit: configuration.maximumMessageBytes, size: ReconMessage.entrySize,
                           part: ReconMessage.decodedPart, last: ReconMessage.decoded).map { .send($0) }
    }

    private func sends(names: [LogName]) -> [ReconOutput] {
        ReconMessage.split(names, limit: configuration.maximumMessageBytes, size: ReconMessage.nameSize,
                           part: ReconMessage.namesPart, last: ReconMessage.names).map { .send($0) }
    }

    // MARK: - Phase 0

    private mutating func receiveHello(_ peer: Hello) throws(ReconciliationError) -> [ReconOutput] {
        guard peer.version == reconciliationVersion else { throw ReconciliationError(.badHello, "version \(peer.version)") }
        peerHello = peer
        if peer.digest == hello.digest && peer.elementCount == hello.elementCount {
            state = .done
            return [.finished(ReconciliationResult(differences: [], method: .digest))]
        }
        let h = role == .initiator
            ? hashing.elementHasher(initiatorSalt: salt, responderSalt: peer.salt)
            : hashing.elementHasher(initiatorSalt: peer.salt, responderSalt: salt)
        hasher = h
        tags = h.tags(of: holdings.logs).enumerated().map { (tag: $0.element, index: $0.offset) }.sorted { $0.tag < $1.tag }
        for i in tags.indices.dropFirst() where tags[i - 1].tag == tags[i].tag {
            throw ReconciliationError(.tagCollision, "\(holdings.logs[tags[i - 1].index].log) and \(holdings.logs[tags[i].index].log)")
        }
        // Each log's elements (`HeadElement.elements(tag:intervals:)`), appended in tag order and sorted within
        // the log: they share its tag, the high word, so the whole is sorted. No arrays per log.
        var all: [HeadElement] = []
        all.reserveCapacity(Int(clamping: hello.elementCount))
        for t in tags {
            let first = all.count
            for i in holdings.logs[t.index].intervals { HeadElement.append(tag: t.tag, i.summary, to: &all) }
            if all.count - first > 1 { all[first...].sort() }
        }
        elements = all
        checksums = elements.map { h.checksum($0) }  // elements are strictly increasing: tags are sorted and unique
        let fallback = useFullHeads(peer.elementCount)
        switch role {
        case .initiator:
            if fallback {
                state = .awaitingDecoded(symbols: nil)
                return sends(fullHeads: myEntries())
            }
            state = .awaitingEstimate
            return []
        case .responder:
            state = .awaitingSymbols(RatelessDecoder(sortedUniqueElements: elements, checksums: checksums, hasher: h))
            // After the fallback by counts an honest initiator sends `fullHeads` and no symbol at all.
            symbolCap = fallback ? 0 : Self.symbolLimit(initiatorCount: peer.elementCount, responderCount: hello.elementCount)
            symbolMessageCap = fallback ? 0 : Self.symbolMessageLimit(symbolLimit: symbolCap)
            if fallback { return [] }
            let l = log2Buckets(max(peer.elementCount, hello.elementCount))
            let cells = Estimate.cells(of: elements, checksums: checksums, log2Buckets: l)
            return [.send(.estimate(Estimate(log2Buckets: l, cells: cells)))]
        }
    }

    private func useFullHeads(_ peerCount: UInt64) -> Bool {
        let lo = Double(min(peerCount, hello.elementCount))
        let hi = max(peerCount, hello.elementCount)
        return hi <= configuration.smallSetElements || lo < configuration.fallbackSizeRatio * Double(hi)
    }

    /// Buckets ≈ n/4, as a power of two in 2^4 ... 2^9.
    private func log2Buckets(_ n: UInt64) -> UInt8 {
        var l: UInt8 = 4
        while l < 9 && (UInt64(1) << UInt64(l)) < n / 4 { l += 1 }
        return l
    }

    private func myEntries() -> [HeadEntry] {
        tags.map { HeadEntry(tag: $0.tag, intervals: holdings.logs[$0.index].intervals.map { $0.summary }) }
    }

    /// Encoded size of our `fullHeads` list (one message, or the sum of its parts without their few bytes
    /// of headers), the cost cap of the symbol stream.
    private var fullHeadsBytes: Int {
        var total = 1 + varintSize(UInt64(tags.count))
        for t in tags {
            let intervals = holdings.logs[t.index].intervals
            total += 8 + varintSize(UInt64(intervals.count))
            for i in intervals { total += varintSize(UInt64(i.start)) + varintSize(UInt64(i.end)) + 4 }
        }
        return total
    }

    // MARK: - Phase 1, initiator

    private mutating func receiveEstimate(_ e: Estimate) throws(ReconciliationError) -> [ReconOutput] {
        let mine = Estimate.cells(of: elements, checksums: checksums, log2Buckets: e.log2Buckets)
        let differing = zip(mine, e.cells).reduce(0) { $0 + ($1.0 == $1.1 ? 0 : 1) }
        let peerCount = Double(peerHello!.elementCount)
        var d: Double
        if let k = Estimate.estimatedDifferingLogs(differingCells: differing, buckets: mine.count) {
            d = max(2 * k.rounded(.up), abs(Double(elements.count) - peerCount), 1)
        } else {
            d = Double(elements.count) + peerCount
        }
        let target = Int((ReconciliationConfiguration.expectedOverhead(d) * d * configuration.firstBatchMargin).rounded(.up))
            + configuration.extraFirstBatchSymbols
        return sendBatch(RatelessEncoder(sortedUniqueElements: elements, checksums: checksums), count: max(target, configuration.minimumBatch))
    }

    private mutating func sendBatch(_ encoder: RatelessEncoder, count: Int) -> [ReconOutput] {
        var encoder = encoder
        // Symbols cost at least 25 bytes each: once the stream would outgrow our full head vector,
        // send the vector instead (it always concludes: one message, or parts and a final one).
        if (encoder.produced + count) * minimumSymbolSize > fullHeadsBytes {
            state = .awaitingDecoded(symbols: nil)
            return sends(fullHeads: myEntries())
        }
        var out: [ReconOutput] = []
        var remaining = count
        while remaining > 0 {
            let n = min(remaining, maximumSymbolsPerMessage)
            let first = UInt64(encoder.produced)
            out.append(.send(.symbols(SymbolBatch(firstIndex: first, symbols: encoder.nextSymbols(n)))))
            remaining -= n
        }
        state = .streaming(encoder)
        return out
    }

    private mutating func receiveMore(_ encoder: RatelessEncoder, _ received: UInt64) throws(ReconciliationError) -> [ReconOutput] {
        guard received == UInt64(encoder.produced) else {
            throw ReconciliationError(.badSymbolStream, "peer reports \(received) symbols, \(encoder.produced) sent")
        }
        let next = max(configuration.minimumBatch, Int((Double(encoder.produced) * (configuration.growth - 1)).rounded(.up)))
        return sendBatch(encoder, count: next)
    }

    private mutating func receiveDecoded(_ entries: [HeadEntry], method: ReconciliationMethod) throws(ReconciliationError) -> [ReconOutput] {
        var differences: [LogDifference] = []
        var unnamed: [UInt64: [IntervalSummary]] = [:]
        var namesForPeer: [LogName] = []
        for e in entries {
            if let i = index(ofTag: e.tag) {
                let log = holdings.logs[i]
                let local = log.intervals.map { $0.summary }
                guard local != e.intervals else {
                    throw ReconciliationError(.inconsistentDifference, "log \(log.log) reported as differing but equal")
                }
                differences.append(LogDifference(log: log.log, local: local, remote: e.intervals))
                if e.intervals.isEmpty { namesForPeer.append(LogName(tag: e.tag, log: log.log)) }
            } else {
                guard !e.intervals.isEmpty else {
                    throw ReconciliationError(.inconsistentDifference, "tag \(e.tag) held by neither side")
                }
                unnamed[e.tag] = e.intervals
            }
        }
        var out: [ReconOutput] = namesForPeer.isEmpty ? [] : sends(names: namesForPeer)
        if unnamed.isEmpty {
            state = .done
            out.append(.finished(Self.result(differences, method)))
        } else {
            state = .awaitingNames(partial: differences, unnamed: unnamed, method: method)
        }
        return out
    }

    private func index(ofTag tag: UInt64) -> Int? {
        var lo = 0
        var hi = tags.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if tags[mid].tag < tag { lo = mid + 1 } else { hi = mid }
        }
        return lo < tags.count && tags[lo].tag == tag ? tags[lo].index : nil
    }

    // MARK: - Phase 1, responder

    private mutating func receiveSymbols(_ decoder: RatelessDecoder, _ batch: SymbolBatch) throws(ReconciliationError) -> [ReconOutput] {
        var decoder = decoder
        guard batch.firstIndex == UInt64(decoder.symbolCount) else {
            throw ReconciliationError(.badSymbolStream, "batch starts at \(batch.firstIndex), expected \(decoder.symbolCount)")
        }
        guard !batch.symbols.isEmpty else { throw ReconciliationError(.badSymbolStream, "empty symbol batch") }
        symbolMessages += 1
        guard symbolMessages <= symbolMessageCap else {
            throw ReconciliationError(.limitExceeded, "more than \(symbolMessageCap) symbol messages")
        }
        guard decoder.symbolCount + batch.symbols.count <= symbolCap else {
            throw ReconciliationError(
                .limitExceeded,
                "more than \(symbolCap) symbols (peer announced \(peerHello!.elementCount) elements, this side holds \(elements.count))")
        }
        do { try decoder.add(batch.symbols) } catch { throw ReconciliationError(.undecodable, "\(error)") }
        guard decoder.isDecoded else {
            state = .awaitingSymbols(decoder)
            return [.send(.more(received: UInt64(decoder.symbolCount)))]
        }
        // The peer's elements of each differing tag: ours, minus what only we hold, plus what only it holds.
        var remote: [UInt64: [HeadElement]] = [:]
        var differing = Set<UInt64>()
        for e in decoder.localOnly { differing.insert(e.tag) }
        for e in decoder.remoteOnly { differing.insert(e.tag) }
        let localOnly = Set(decoder.localOnly)
        for tag in differing {
            var set: [HeadElement] = []
            if let i = index(ofTag: tag) {
                let ours = HeadElement.elements(tag: tag, intervals: holdings.logs[i].intervals.map { $0.summary })
                set = ours.filter { !localOnly.contains($0) }
            }
            remote[tag] = set
        }
        for e in decoder.remoteOnly { remote[e.tag, default: []].append(e) }
        var remoteIntervals: [UInt64: [IntervalSummary]] = [:]
        for (tag, els) in remote {
            if els.isEmpty { remoteIntervals[tag] = []; continue }
            guard let iv = HeadElement.intervals(from: els) else {
                throw ReconciliationError(.undecodable, "decoded elements of tag \(tag) are not a valid holding")
            }
            remoteIntervals[tag] = iv
        }
        return try finishResponder(remote: remoteIntervals, differing: differing, method: .rateless(symbols: decoder.symbolCount))
    }

    private static func group(_ entries: [HeadEntry]) -> [UInt64: [IntervalSummary]] {
        var out: [UInt64: [IntervalSummary]] = [:]
        for e in entries { out[e.tag] = e.intervals }
        return out
    }

    /// Computes the differences given the peer's intervals of the `differing` tags (nil: `remote` is the
    /// peer's complete vector), sends `decoded` and `names`, and finishes or waits for names.
    private mutating func finishResponder(
        remote: [UInt64: [IntervalSummary]], differing: Set<UInt64>?, method: ReconciliationMethod
    ) throws(ReconciliationError) -> [ReconOutput] {
        var tagsToReport: [UInt64]
        if let differing {
            tagsToReport = differing.sorted()
        } else {
            var all = Set(remote.keys)
            for t in tags { all.insert(t.tag) }
            tagsToReport = all.sorted().filter { tag in
                let mine = index(ofTag: tag).map { holdings.logs[$0].intervals.map { $0.summary } } ?? []
                return mine != (remote[tag] ?? [])
            }
        }
        var entries: [HeadEntry] = []
        var names: [LogName] = []
        var differences: [LogDifference] = []
        var unnamed: [UInt64: [IntervalSummary]] = [:]
        for tag in tagsToReport {
            let theirs = remote[tag] ?? []
            if let i = index(ofTag: tag) {
                let mine = holdings.logs[i].intervals.map { $0.summary }
                entries.append(HeadEntry(tag: tag, intervals: mine))
                if theirs.isEmpty { names.append(LogName(tag: tag, log: holdings.logs[i].log)) }
                differences.append(LogDifference(log: holdings.logs[i].log, local: mine, remote: theirs))
            } else {
                guard !theirs.isEmpty else { throw ReconciliationError(.inconsistentDifference, "tag \(tag) held by neither side") }
                entries.append(HeadEntry(tag: tag, intervals: []))
                unnamed[tag] = theirs
            }
        }
        var out: [ReconOutput] = sends(decoded: entries)
        if !names.isEmpty { out += sends(names: names) }
        if unnamed.isEmpty {
            state = .done
            out.append(.finished(Self.result(differences, method)))
        } else {
            state = .awaitingNames(partial: differences, unnamed: unnamed, method: method)
        }
        return out
    }

    // MARK: - Names

    private mutating func receiveNames(
        _ names: [LogName], partial: [LogDifference], unnamed: [UInt64: [IntervalSummary]], method: ReconciliationMethod
    ) throws(ReconciliationError) -> [ReconOutput] {
        guard names.count == unnamed.count else {
            throw ReconciliationError(.inconsistentDifference, "\(names.count) names for \(unnamed.count) unknown logs")
        }
        var differences = partial
        for n in names {
            guard let remote = unnamed[n.tag] else { throw ReconciliationError(.inconsistentDifference, "unrequested name \(n.tag)") }
            guard hasher!.tag(n.log) == n.tag else {
                throw ReconciliationError(.inconsistentDifference, "name \(n.log) does not match tag \(n.tag)")
            }
            differences.append(LogDifference(log: n.log, local: [], remote: remote))
        }
        state = .done
        return [.finished(Self.result(differences, method))]
    }

    private static func result(_ differences: [LogDifference], _ method: ReconciliationMethod) -> ReconciliationResult {
        ReconciliationResult(differences: differences.sorted { $0.log < $1.log }, method: method)
    }
}

/// Bytes of the minimal LEB128 encoding of `v`.
func varintSize(_ v: UInt64) -> Int { v == 0 ? 1 : (64 - v.leadingZeroBitCount + 6) / 7 }
