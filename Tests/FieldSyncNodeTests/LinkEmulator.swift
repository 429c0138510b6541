// A loopback TCP proxy that impairs the link between two nodes: delay, jitter, loss, bandwidth,
// duplication and cuts mid-transfer, for tests with real `fieldsync` processes (this kernel has no
// netem). Every decision is seeded and deterministic; only the timing of the real sockets is not.

import FieldSyncCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a link is impaired (both directions alike).
///
/// TCP is reliable, so the emulator models what TCP makes of a lossy radio link rather than dropping
/// bytes: the stream is cut into segments of `segmentBytes`; a lost segment is sent again after
/// `retransmitMilliseconds` (doubling for each further loss of the same segment), holding back every
/// later segment (in-order delivery) and taking link time and wire bytes again; a duplicated segment
/// (a spurious retransmission) takes link time and wire bytes twice and is delivered once, as TCP would;
/// a cut closes both sides of the connection with a reset in the middle of the transfer.
struct LinkProfile: Sendable, Equatable, CustomStringConvertible {
    /// One-way propagation delay, ms.
    var delayMilliseconds = 0.0
    /// Each segment's delay varies uniformly by up to ± this, ms (never below zero, never reordering).
    var jitterMilliseconds = 0.0
    /// Probability that a segment (or its retransmission) is lost.
    var lossRate = 0.0
    /// Retransmission timeout of a lost segment, ms; doubles for each further loss of it.
    var retransmitMilliseconds = 200.0
    /// Link rate in bytes per second, each direction (nil: unlimited).
    var bytesPerSecond: Int?
    /// Probability that a segment is sent twice.
    var duplicateRate = 0.0
    /// Probability that a connection is cut, at a byte offset (both directions counted together)
    /// drawn uniformly in 1...`cutWithinBytes`; a connection that moves fewer bytes is not cut.
    var cutRate = 0.0
    /// See `cutRate`.
    var cutWithinBytes = 65_536
    /// Segment size (a TCP MSS on Ethernet).
    var segmentBytes = 1_448
    /// Bytes the link holds in flight per direction before it stops reading (the sender then sees a
    /// full window, as it would behind a slow link).
    var queueBytes = 65_536

    /// No impairment at all (still through the proxy, so bytes are counted the same way).
    static let clean = LinkProfile()

    var isClean: Bool { self == .clean }

    var description: String {
        if isClean { return "clean" }
        var parts = ["delay \(Int(delayMilliseconds)) ms ± \(Int(jitterMilliseconds)) ms"]
        if let bytesPerSecond { parts.append("\(bytesPerSecond / 1_024) KiB/s") }
        if lossRate > 0 { parts.append("loss \(lossRate * 100)% (retransmit after \(Int(retransmitMilliseconds)) ms)") }
        if duplicateRate > 0 { parts.append("duplication \(duplicateRate * 100)%") }
        if cutRate > 0 { parts.append("\(Int(cutRate * 100))% of connections cut within \(cutWithinBytes / 1_024) KiB") }
        return parts.joined(separator: ", ")
    }
}

/// The seeded decisions of a link: which segments are lost (how often), duplicated, how much each is
/// jittered, and where each connection is cut. A pure function of the seed, the connection's index
/// (accept order), the direction and the segment's position in the stream, so that a run's decisions do
/// not depend on how the kernel splits reads.
struct LinkPlan: Sendable {
    /// What happens to one segment.
    struct SegmentFate: Sendable, Equatable {
        /// Times it is lost before it gets through.
        var losses: Int
        /// Whether it is sent twice.
        var duplicated: Bool
        /// Added delay, ms (may be negative: `delay + jitter` is clamped at zero).
        var jitterMilliseconds: Double
    }

    /// Direction of a connection: from the connecting node to the node listening behind the proxy, or back.
    enum Direction: UInt64, Sendable { case forward = 1, backward = 2 }

    var profile: LinkProfile
    var seed: UInt64

    private func generator(_ parts: UInt64...) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed)
        var state = mixer.next()
        for p in parts {
            var g = SplitMix64(seed: state ^ p)
            state = g.next()
        }
        return SplitMix64(seed: state)
    }

    private static func unit(_ g: inout SplitMix64) -> Double { Double(g.next() >> 11) / Double(1 << 53) }

    /// The fate of segment `segment` of `direction` on connection `connection`.
    func fate(connection: Int, direction: Direction, segment: Int) -> SegmentFate {
        var g = generator(UInt64(connection), direction.rawValue, UInt64(segment))
        var losses = 0
        while losses < 6, Self.unit(&g) < profile.lossRate { losses += 1 }
        let duplicated = Self.unit(&g) < profile.duplicateRate
        let jitter = profile.jitterMilliseconds * (2 * Self.unit(&g) - 1)
        return SegmentFate(losses: losses, duplicated: duplicated, jitterMilliseconds: jitter)
    }

    /// Where connection `connection` is cut (bytes delivered in both directions together), nil if never.
    func cutOffset(connection: Int) -> Int? {
        var g = generator(UInt64(connection), 0)
        guard Self.unit(&g) < profile.cutRate else { return nil }
        return 1 + Int(g.next() % UInt64(max(1, profile.cutWithinBytes)))
    }
}

/// What crossed a link so far.
struct LinkStats: Sendable, Equatable {
    /// Connections accepted, and of them cut by the plan.
    var connections = 0, cuts = 0
    /// Payload bytes delivered, forward (to the listening node) and backward.
    var bytesForward = 0, bytesBackward = 0
    /// Bytes the link carried including retransmissions and duplicates.
    var wireBytes = 0
    /// Segments lost (each loss counted) and duplicated.
    var losses = 0, duplicates = 0

    var bytes: Int { bytesForward + bytesBackward }

    static func + (a: LinkStats, b: LinkStats) -> LinkStats {
        LinkStats(connections: a.connections + b.connections, cuts: a.cuts + b.cuts, bytesForward: a.bytesForward + b.bytesForward,
                  bytesBackward: a.bytesBackward + b.bytesBackward, wireBytes: a.wireBytes + b.wireBytes,
                  losses: a.losses + b.losses, duplicates: a.duplicates + b.duplicates)
    }
}

/// A TCP proxy on 127.0.0.1 that forwards every connection it accepts to `127.0.0.1:targetPort` through
/// an impaired link. Plain threads and blocking sockets (never Swift's cooperative pool): an accept
/// thread, and per connection one reader and one writer thread per direction.
///
/// ```swift
/// let link = try LinkEmulator(targetPort: station.port, profile: rural, seed: 7)
/// // a node dials 127.0.0.1:\(link.port) instead of the station
/// link.stop()
/// ```
final class LinkEmulator: @unchecked Sendable {
    /// The port nodes connect to.
    let port: Int
    let targetPort: Int
    let plan: LinkPlan

    private let listener: Int32
    private let lock = NSCondition()
    private var stopped = false
    private var accepting: Bool
    private var threads = 0
    private var nextConnection = 0
    private var counters = LinkStats()
    private var connections: [Int: Connection] = [:]
    private var dropping = false
    private var frozen = false

    /// Starts listening on an ephemeral loopback port. A link created closed (`open: false`) leaves
    /// connections waiting in the listen backlog (connected, their first bytes unread) until `open()`.
    /// - Throws: `NodeTestError` if no port can be bound.
    /// - Parameter receiveBuffer: the kernel receive buffer of the link's sockets toward the nodes
    ///   (`SO_RCVBUF`; nil: the kernel's default), small for a link that should hold little when `freeze`d.
    init(targetPort: Int, profile: LinkProfile, seed: UInt64, open: Bool = true, receiveBuffer: Int32? = nil) throws {
        self.targetPort = targetPort
        accepting = open
        plan = LinkPlan(profile: profile, seed: seed)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw NodeTestError("link emulator: socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if var size = receiveBuffer {  // set before listen: accepted sockets inherit it
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = RawSocket.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok, listen(fd, 64) == 0 else {
            close(fd)
            throw NodeTestError("link emulator: cannot listen on a loopback port")
        }
        Self.setTimeouts(fd)
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        spawn { [self] in acceptLoop() }
    }

    deinit { stop() }

    /// Bytes and events so far.
    var stats: LinkStats {
        lock.lock()
        defer { lock.unlock() }
        return counters
    }

    /// Stops accepting, resets every open connection and waits (up to 5 s) for the link's threads.
    func stop() {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.broadcast()
        let open = Array(connections.values)
        lock.unlock()
        for c in open { c.abort(cut: false) }
        let deadline = Date().addingTimeInterval(5)
        lock.lock()
        while threads > 0, lock.wait(until: deadline) {}
        lock.unlock()
        if first { close(listener) }
    }

    /// Drops every byte in both directions from now on (or forwards again, with `false`), without closing
    /// or resetting anything, and loses a close that arrives meanwhile: a half-open path, as when a peer
    /// vanishes behind a partition or a middlebox forgets the connection. Each node's TCP peer is the
    /// emulator, so TCP keepalive sees nothing wrong. Connections blackholed this way end at `stop()`.
    func blackhole(_ on: Bool) {
        lock.lock()
        dropping = on
        lock.unlock()
    }

    /// Stops reading from both nodes (or reads again, with `false`), without closing anything: a peer
    /// that stops reading, as a hung process or a hostile one does. Each node's writes then fill the
    /// emulator's queue and the kernel's buffers, and stay pending.
    func freeze(_ on: Bool) {
        lock.lock()
        frozen = on
        lock.unlock()
    }

    fileprivate var isFrozen: Bool {
        lock.lock()
        defer { lock.unlock() }
        return frozen
    }

    fileprivate var isDropping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return dropping
    }

    /// Starts forwarding the connections waiting in the backlog and every later one.
    func open() {
        lock.lock()
        accepting = true
        lock.broadcast()
        lock.unlock()
    }

    /// Waits until the link is open or stopped; whether it is stopped.
    private func waitOpen() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        while !accepting, !stopped { lock.wait() }
        return stopped
    }

    fileprivate func count(_ body: (inout LinkStats) -> Void) {
        lock.lock()
        body(&counters)
        lock.unlock()
    }

    fileprivate func spawn(_ body: @escaping @Sendable () -> Void) {
        lock.lock()
        threads += 1
        lock.unlock()
        let t = Thread { [self] in
            body()
            lock.lock()
            threads -= 1
            lock.broadcast()
            lock.unlock()
        }
        t.stackSize = 256 * 1_024
        t.start()
    }

    fileprivate func finished(_ index: Int) {
        lock.lock()
        connections[index] = nil
        lock.unlock()
    }

    /// Blocking socket calls return at least every 100 ms, so every loop notices a stop or a cut.
    static func setTimeouts(_ fd: Int32) {
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    private func acceptLoop() {
        while !waitOpen() {
            let client = accept(listener, nil, nil)
            if client < 0 { continue }  // timeout (EAGAIN) or interrupted: check `stopped` again
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            guard let server = RawSocket.connectTo(targetPort) else {
                // The node behind the link is down: the caller sees the connection reset, as if refused.
                Connection.reset(client)
                continue
            }
            setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            Self.setTimeouts(client)
            Self.setTimeouts(server)
            lock.lock()
            let index = nextConnection
            nextConnection += 1
            counters.connections += 1
            let c = Connection(link: self, index: index, client: client, server: server, cutAt: plan.cutOffset(connection: index))
            connections[index] = c
            let stop = stopped
            lock.unlock()
            if stop { c.abort(cut: false) }
            c.start()
        }
    }
}

/// Monotonic time in nanoseconds.
private func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// One proxied connection: two directions, each a reader (timestamps segments as they would arrive)
/// and a writer (delivers them at that time), and the connection-wide cut.
private final class Connection: @unchecked Sendable {
    /// Bytes on their way, with the time they reach the other side.
    struct Piece {
        var bytes: [UInt8]
        var deliverAt: UInt64
    }

    /// One direction's queue and timing.
    final class Lane: @unchecked Sendable {
        let direction: LinkPlan.Direction
        let from: Int32, to: Int32
        var queue: [Piece] = []
        var head = 0
        var queued = 0
        var eof = false
        var done = false
        /// When the link is next free to send, and when the last segment is delivered (ns).
        var linkFree: UInt64 = 0
        var lastDelivery: UInt64 = 0
        /// Stream offset of the next byte read.
        var offset = 0

        init(direction: LinkPlan.Direction, from: Int32, to: Int32) {
            self.direction = direction
            self.from = from
            self.to = to
        }
    }

    let link: LinkEmulator
    let index: Int
    let client: Int32, server: Int32
    let cutAt: Int?
    let lock = NSCondition()
    var aborted = false
    var wasCut = false
    var delivered = 0
    var cutReached = false
    var lanes: [Lane]
    var threadsLeft = 4

    init(link: LinkEmulator, index: Int, client: Int32, server: Int32, cutAt: Int?) {
        self.link = link
        self.index = index
        self.client = client
        self.server = server
        self.cutAt = cutAt
        lanes = [Lane(direction: .forward, from: client, to: server), Lane(direction: .backward, from: server, to: client)]
    }

    static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    func start() {
        for lane in lanes {
            link.spawn { [self] in read(lane) }
            link.spawn { [self] in write(lane) }
        }
    }

    /// Ends the connection (a cut, a failed socket or the link's stop): both sides are reset once the
    /// four threads have left. A connection whose two directions were closed by the nodes ends normally.
    func abort(cut: Bool) {
        lock.lock()
        if !aborted {
            aborted = true
            wasCut = cut
        }
        lock.broadcast()
        lock.unlock()
    }

    private func threadDone() {
        lock.lock()
        threadsLeft -= 1
        let last = threadsLeft == 0
        let reset = aborted
        lock.unlock()
        guard last else { return }
        if reset {
            Self.reset(client)
            Self.reset(server)
        } else {
            close(client)
            close(server)
        }
        link.finished(index)
    }

    private func read(_ lane: Lane) {
        defer { threadDone() }
        let profile = link.plan.profile
        let segment = max(1, profile.segmentBytes)
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            lock.lock()
            while !aborted, lane.queued >= profile.queueBytes { lock.wait() }
            let stop = aborted
            lock.unlock()
            if stop { return }
            if link.isFrozen {
                Thread.sleep(forTimeInterval: 0.02)
                continue
            }
            let n = buffer.withUnsafeMutableBytes { recv(lane.from, $0.baseAddress, $0.count, 0) }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { continue }
            if n == 0, link.isDropping { return }  // blackholed: the close is lost too (the other side never sees it)
            if n <= 0 {
                // The sender closed its side (0) or the socket failed: pass the close on after the data.
                lock.lock()
                if n == 0 { lane.eof = true } else { aborted = true }
                lock.broadcast()
                lock.unlock()
                return
            }
            if link.isDropping { continue }  // blackholed: read and lost
            let now = monotonicNanoseconds()
            var pieces: [Piece] = []
            var wire = 0, losses = 0, duplicates = 0
            var start = 0
            lock.lock()
            while start < n {
                let inSegment = lane.offset % segment
                let size = min(n - start, segment - inSegment)
                var sends = 1
                var stall = 0.0
                var jitter = 0.0
                if inSegment == 0 {
                    // The segment's first bytes: its fate applies (later bytes of it ride along).
                    let fate = link.plan.fate(connection: index, direction: lane.direction, segment: lane.offset / segment)
                    sends += fate.losses + (fate.duplicated ? 1 : 0)
                    losses += fate.losses
                    duplicates += fate.duplicated ? 1 : 0
                    for i in 0..<fate.losses { stall += profile.retransmitMilliseconds * Double(1 << i) }
                    jitter = fate.jitterMilliseconds
                }
                let serialization = profile.bytesPerSecond.map { UInt64(Double(size * sends) / Double($0) * 1e9) } ?? 0
                let sent = max(lane.linkFree, now)
                lane.linkFree = sent + serialization
                let flight = max(0, profile.delayMilliseconds + jitter) + stall
                let arrive = max(lane.lastDelivery, lane.linkFree + UInt64(flight * 1e6))
                lane.lastDelivery = arrive
                pieces.append(Piece(bytes: Array(buffer[start..<(start + size)]), deliverAt: arrive))
                wire += size * sends
                lane.offset += size
                start += size
            }
            lane.queue.append(contentsOf: pieces)
            lane.queued += n
            lock.broadcast()
            lock.unlock()
            link.count {
                $0.wireBytes += wire
                $0.losses += losses
                $0.duplicates += duplicates
            }
        }
    }

    private func write(_ lane: Lane) {
        defer { threadDone() }
        while true {
            lock.lock()
            while !aborted, lane.head == lane.queue.count, !lane.eof { lock.wait() }
            if aborted {
                lock.unlock()
                return
            }
            if lane.head == lane.queue.count {
                // Everything before the close was delivered: close this direction (the sockets are
                // closed when the other direction is done too and the last thread leaves).
                lane.done = true
                lock.unlock()
                shutdown(lane.to, Int32(SHUT_WR))
                return
            }
            var piece = lane.queue[lane.head]
            lock.unlock()
            // Wait for its delivery time, in steps, so that an abort is noticed.
            while true {
                let now = monotonicNanoseconds()
                guard piece.deliverAt > now else { break }
                usleep(useconds_t(min(50_000, (piece.deliverAt - now) / 1_000 + 1)))
                lock.lock()
                let stop = aborted
                lock.unlock()
                if stop { return }
            }
            // Both directions count toward the cut: the bytes are reserved before they are sent.
            lock.lock()
            if cutReached {
                lock.unlock()
                return  // the other direction reached the cut; it resets the connection
            }
            var cutNow = false
            if let cutAt, delivered + piece.bytes.count >= cutAt {
                piece.bytes = Array(piece.bytes.prefix(max(0, cutAt - delivered)))
                cutNow = true
                cutReached = true
            }
            delivered += piece.bytes.count
            lock.unlock()
            guard send(all: piece.bytes, to: lane.to) else {
                abort(cut: false)
                return
            }
            lock.lock()
            lane.head += 1
            lane.queued -= lane.queue[lane.head - 1].bytes.count
            if lane.head > 256 {
                lane.queue.removeFirst(lane.head)
                lane.head = 0
            }
            lock.broadcast()
            lock.unlock()
            let n = piece.bytes.count
            link.count {
                if lane.direction == .forward { $0.bytesForward += n } else { $0.bytesBackward += n }
                if cutNow { $0.cuts += 1 }
            }
            if cutNow {
                abort(cut: true)
                return
            }
        }
    }

    /// Writes every byte (retrying after a send timeout); false if the socket failed or the connection
    /// was aborted meanwhile.
    private func send(all bytes: [UInt8], to fd: Int32) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
                continue
            }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return false }
            lock.lock()
            let stop = aborted
            lock.unlock()
            if stop { return false }
        }
        return true
    }
}
