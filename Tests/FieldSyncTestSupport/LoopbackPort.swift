import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Loopback TCP ports for the servers a test starts (`fieldsync serve`, a daemon restarted on the same
/// port, chromedriver), shared by every test target of the test process.
///
/// Ports come from 20,000-31,999, below Linux's ephemeral range (32768-60999): a port the kernel handed
/// out for port 0 could be given again to another test's outgoing connection before the server binds it.
/// They come from one counter per test process and are never handed out twice: picked at random, two
/// tests running at once could both find the same port free before either server bound it (the second
/// server failed to bind, the first one answered in its place, and a test synced with another test's
/// world). The scratch PostgreSQL clusters take theirs from 32,000-32,767 (`ScratchPostgres`), so that
/// neither can take a port the other handed out (a daemon restarted on its port found it held by a
/// cluster started meanwhile: "Address already in use", in a clean-clone CI run).
public enum LoopbackPort {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var last = Int.random(in: 20_000..<26_000)

    /// A port of the sequence that was free a moment ago, or a kernel-chosen one if 64 in a row were taken.
    /// - Throws: when not even a kernel-chosen port can be bound.
    public static func next() throws -> Int {
        for _ in 0..<64 {
            let candidate = lock.withLock {
                last = last >= 31_999 ? 20_000 : last + 1
                return last
            }
            if let port = bound(candidate) { return port }
        }
        guard let port = bound(0) else { throw Unavailable() }
        return port
    }

    /// No loopback port could be bound.
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String { "cannot bind a loopback port" }
    }

    /// Binds `port` (0: any) on 127.0.0.1 and closes it again: the port bound, or nil if it was taken.
    private static func bound(_ port: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        return ok ? Int(UInt16(bigEndian: addr.sin_port)) : nil
    }
}
