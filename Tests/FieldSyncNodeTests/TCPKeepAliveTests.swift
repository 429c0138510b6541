import FieldSyncCore
import FieldSyncDriver
import FieldSyncNode
import Foundation
import FieldSyncTestSupport
import Testing

/// TCP keepalive on live sessions (docs/node.md, "Stalls and dead peers"): a probe and its answer are two
/// 52-byte segments after every `idleSeconds` of silence, so with the old 60 s an idle live connection
/// paid about 150 KB a day in probes, four times its 10-minute keep-alive. The first probe now waits for
/// the keep-alive's interval and a minute, so a healthy live session carries no probes at all.
@Suite(.ownThread) struct TCPKeepAliveTests {
    @Test func theFirstProbeWaitsLongerThanTheKeepAliveInterval() {
        let tcp = TCPKeepAlive()
        #expect(tcp.idleSeconds(live: .default) == 660)
        #expect(tcp.idleSeconds(live: KeepAlivePolicy(interval: 30_000, deadAfter: 90_000)) == 90)
        #expect(tcp.idleSeconds(live: nil) == 60, "without keep-alive, TCP keepalive is what finds a gone peer")
        #expect(tcp.userTimeoutSeconds == 120)
    }

    /// The kernel's own view of a live session's sockets (`ss -o`: the keepalive timer of each end):
    /// with the default configuration both ends' first probe is at least ten minutes away. On the old
    /// code the timers read under a minute.
    @Test(.timeLimit(.minutes(1))) func aLiveSessionsSocketsProbeAfterTheKeepAliveInterval() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ss") || FileManager.default.isExecutableFile(atPath: "/bin/ss") else {
            if ProcessInfo.processInfo.environment["CI"] != nil { Issue.record("ss (iproute2) is needed: .ci/run installs it") }
            print("TCPKeepAliveTests: SKIPPED, ss (iproute2) is not installed")
            return
        }
        var pki = NodeTests.PKI()
        let dir = try NodeTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let st = try await DaemonTests.start(try pki.device(.station, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "st",
                                             idle: .seconds(120)) { config, _ in config.liveKeepAlive = .default }
        let port = try await DaemonTests.address(st).port
        let bp = try await DaemonTests.start(try pki.device(.backpack, scopes: [NodeTests.station]), trust: pki.trust, dir: dir, name: "bp",
                                             peers: [try await DaemonTests.address(st)], idle: .seconds(120)) { config, _ in
            config.liveKeepAlive = .default
        }
        #expect(try await DaemonTests.eventually(20) { try await st.node.loop.submit { st.node.liveSessions.count }.get() == 1 })
        // Both ends of the connection: the station's (local port) and the backpack's (remote port). An end
        // with data in flight shows its retransmission timer instead: read again until both are idle.
        var text = "", timers: [Int] = []
        for _ in 0..<50 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["ss", "-tno", "state", "established", "( sport = :\(port) or dport = :\(port) )"]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            p.waitUntilExit()
            text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            timers = Self.keepaliveSeconds(text)
            if timers.count == 2 { break }
            try await TestClock.sleep(for: .milliseconds(100))
        }
        #expect(timers.count == 2, "two ends of one live connection: \(text)")
        #expect(timers.allSatisfy { $0 >= 600 }, "first probe in \(timers) s: \(text)")
        _ = try await bp.daemon.shutdown(grace: .seconds(5))
        _ = try await st.daemon.shutdown(grace: .seconds(5))
    }

    /// Seconds to the next keepalive probe of each socket in `ss -o` output (`timer:(keepalive,10min59sec,0)`).
    static func keepaliveSeconds(_ text: String) -> [Int] {
        text.components(separatedBy: "timer:(keepalive,").dropFirst().map { rest in
            let value = rest.prefix { $0 != "," }
            var seconds = 0, number = 0
            var unit = ""
            func flush() {
                switch unit {
                case "min": seconds += number * 60
                case "sec": seconds += number
                case "ms": seconds += number / 1_000
                default: break
                }
                number = 0
                unit = ""
            }
            for c in value {
                if c.isNumber {
                    if !unit.isEmpty { flush() }
                    number = number * 10 + Int(String(c))!
                } else {
                    unit.append(c)
                }
            }
            flush()
            return seconds
        }
    }
}
