import FieldSyncCore
import FieldSyncTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The link emulator itself: its seeded decisions, and bytes through it (plain sockets and threads).
@Suite(.ownThread, .serialized)
struct LinkEmulatorTests {
    static let lossy = LinkProfile(delayMilliseconds: 30, jitterMilliseconds: 10, lossRate: 0.05, retransmitMilliseconds: 100,
                                   bytesPerSecond: 512 * 1_024, duplicateRate: 0.03, cutRate: 0.25, cutWithinBytes: 20_000)

    @Test func planIsAFunctionOfTheSeedAndKeepsItsRates() {
        let a = LinkPlan(profile: Self.lossy, seed: 11), b = LinkPlan(profile: Self.lossy, seed: 11), c = LinkPlan(profile: Self.lossy, seed: 12)
        let n = 20_000
        var lost = 0, duplicated = 0, differs = 0
        for s in 0..<n {
            let f = a.fate(connection: 3, direction: .forward, segment: s)
            #expect(f == b.fate(connection: 3, direction: .forward, segment: s))
            if f != c.fate(connection: 3, direction: .forward, segment: s) { differs += 1 }
            lost += f.losses > 0 ? 1 : 0
            duplicated += f.duplicated ? 1 : 0
            #expect(abs(f.jitterMilliseconds) <= 10)
        }
        #expect(differs > n * 9 / 10, "another seed, other decisions")
        #expect((800...1_200).contains(lost), "5% of \(n) segments lost at least once: \(lost)")
        #expect((450...750).contains(duplicated), "3% duplicated: \(duplicated)")
        #expect(a.fate(connection: 3, direction: .forward, segment: 7) != a.fate(connection: 3, direction: .backward, segment: 7)
                || a.fate(connection: 4, direction: .forward, segment: 7) != a.fate(connection: 3, direction: .forward, segment: 7))
        let cuts = (0..<4_000).compactMap { a.cutOffset(connection: $0) }
        #expect((850...1_150).contains(cuts.count), "25% of connections cut: \(cuts.count)")
        #expect(cuts.allSatisfy { (1...20_000).contains($0) })
        #expect((0..<100).map { a.cutOffset(connection: $0) } == (0..<100).map { b.cutOffset(connection: $0) })
    }

    @Test(.timeLimit(.minutes(1))) func bytesCrossIntactInOrderNoFasterThanTheLinkAllows() throws {
        let sink = try Sink()
        defer { sink.stop() }
        let link = try LinkEmulator(targetPort: sink.port, profile: LinkProfile(delayMilliseconds: 30, jitterMilliseconds: 10, lossRate: 0.05,
                                                                                retransmitMilliseconds: 100, bytesPerSecond: 512 * 1_024,
                                                                                duplicateRate: 0.03),
                                    seed: 5)
        defer { link.stop() }
        var g = SplitMix64(seed: 1)
        let payload = (0..<262_144).map { _ in UInt8.random(in: 0...255, using: &g) }
        let started = Date()
        let fd = try #require(RawSocket.connectTo(link.port))
        var sent = 0
        while sent < payload.count {
            let n = payload[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            try #require(n > 0)
            sent += n
        }
        shutdown(fd, Int32(SHUT_WR))
        // The sink answers with one byte once it has everything: read it, then the close.
        var byte: UInt8 = 0
        #expect(recv(fd, &byte, 1, 0) == 1)
        let elapsed = Date().timeIntervalSince(started)
        close(fd)
        let received = sink.waitForClose(timeout: 20)
        #expect(received == payload, "every byte, in order (\(received.count) of \(payload.count))")
        // 256 KiB at 512 KiB/s plus retransmissions is at least 0.5 s; the answer's way back adds 30 ms ± 10.
        #expect(elapsed >= 0.5 && elapsed < 20, "\(elapsed) s")
        link.stop()  // its threads have left: the counters are final
        let stats = link.stats
        #expect(stats.connections == 1 && stats.cuts == 0)
        #expect(stats.bytesForward == payload.count && stats.bytesBackward == 1)
        #expect(stats.losses > 0 && stats.duplicates > 0)
        #expect(stats.wireBytes > payload.count + 1, "retransmissions and duplicates cost wire bytes: \(stats.wireBytes)")
        print("link emulator: 256 KiB through [\(link.plan.profile)] in \(Int(elapsed * 1_000)) ms, \(stats.losses) losses, "
              + "\(stats.duplicates) duplicates, \(stats.wireBytes) wire bytes")
    }

    @Test(.timeLimit(.minutes(1))) func delayIsPaidOnEveryRoundTrip() throws {
        let sink = try Sink(echo: true)
        defer { sink.stop() }
        let link = try LinkEmulator(targetPort: sink.port, profile: LinkProfile(delayMilliseconds: 50), seed: 1)
        defer { link.stop() }
        let fd = try #require(RawSocket.connectTo(link.port))
        defer { close(fd) }
        let started = Date()
        for i in 0..<5 {
            var out = UInt8(i), back: UInt8 = 0
            #expect(send(fd, &out, 1, Int32(MSG_NOSIGNAL)) == 1)
            #expect(recv(fd, &back, 1, 0) == 1 && back == out)
        }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.5 && elapsed < 20, "5 round trips of 2 × 50 ms: \(elapsed) s")
    }

    @Test(.timeLimit(.minutes(1))) func aCutResetsBothSidesAtThePlannedOffset() throws {
        let sink = try Sink()
        defer { sink.stop() }
        let profile = LinkProfile(cutRate: 1, cutWithinBytes: 50_000)
        let link = try LinkEmulator(targetPort: sink.port, profile: profile, seed: 9)
        defer { link.stop() }
        let offset = try #require(link.plan.cutOffset(connection: 0))
        let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let fd = try #require(RawSocket.connectTo(link.port))
        defer { close(fd) }
        var sent = 0, failed = false
        while sent < payload.count {
            let n = payload[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                failed = true
                break
            }
            sent += n
        }
        if !failed {
            var byte: UInt8 = 0
            failed = recv(fd, &byte, 1, 0) <= 0
        }
        #expect(failed, "the sender sees the connection end")
        let received = sink.waitForClose(timeout: 20)
        #expect(received.count == offset && received == Array(payload.prefix(offset)), "\(received.count) bytes, cut planned at \(offset)")
        #expect(sink.reset, "the receiver sees a reset, not an orderly close")
        #expect(link.stats.cuts == 1)
    }

    @Test(.timeLimit(.minutes(1))) func aClosedLinkHoldsConnectionsUntilOpened() throws {
        let sink = try Sink(echo: true)
        defer { sink.stop() }
        let link = try LinkEmulator(targetPort: sink.port, profile: .clean, seed: 1, open: false)
        defer { link.stop() }
        let fd = try #require(RawSocket.connectTo(link.port))
        defer { close(fd) }
        var out: UInt8 = 42, back: UInt8 = 0
        #expect(send(fd, &out, 1, Int32(MSG_NOSIGNAL)) == 1)
        var tv = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        #expect(recv(fd, &back, 1, 0) < 0, "nothing crosses a closed link")
        link.open()
        tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        #expect(recv(fd, &back, 1, 0) == 1 && back == 42)
    }
}

/// A loopback server for one connection on its own thread: it reads everything (echoing each chunk, or
/// answering one byte once the peer closed its side) and records how the connection ended.
final class Sink: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let echo: Bool
    private let lock = NSCondition()
    private var bytes: [UInt8] = []
    private var closed = false
    private(set) var reset = false
    private var stopped = false

    init(echo: Bool = false) throws {
        self.echo = echo
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = RawSocket.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard fd >= 0, ok, listen(fd, 4) == 0 else { throw NodeTestError("sink: cannot listen") }
        LinkEmulator.setTimeouts(fd)
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread { [self] in serve() }.start()
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private func serve() {
        var fd: Int32 = -1
        while fd < 0, !isStopped { fd = accept(listener, nil, nil) }
        close(listener)
        guard fd >= 0 else { return }
        LinkEmulator.setTimeouts(fd)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                if isStopped { return }
                continue
            }
            lock.lock()
            if n > 0 { bytes += buffer[0..<n] }
            if n <= 0 {
                closed = true
                reset = n < 0
                lock.broadcast()
            }
            lock.unlock()
            if n > 0, echo { _ = send(fd, buffer, n, Int32(MSG_NOSIGNAL)) }
            if n == 0, !echo {
                var one: UInt8 = 1
                _ = send(fd, &one, 1, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { return }
        }
    }

    /// Waits until the peer closed (or `timeout` seconds); the bytes received.
    func waitForClose(timeout: Double) -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while !closed, lock.wait(until: deadline) {}
        return bytes
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }
}
