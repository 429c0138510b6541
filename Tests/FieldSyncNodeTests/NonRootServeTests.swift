import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing

/// A node run as an unprivileged user, as the systemd unit runs it (`User=fieldsync`): it must accept
/// sessions and open them. Every other process test runs as root, which hid that the node asked for
/// TCP_NODELAY at the socket level (`SOL_SOCKET`, option 1: SO_DEBUG), which only a privileged process
/// may set; unprivileged, every incoming and outgoing connection was closed at once. Found by
/// DebianPackageTests. Needs root (to drop to `nobody` with `setpriv`), as the suite runs in CI.
@Suite(.ownThread, .serialized,
       .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")))
struct NonRootServeTests {
    /// `args` run as `nobody` (uid and gid 65534, no supplementary groups).
    static func asNobody(_ args: [String]) throws -> [String] {
        ["/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", try ProcessWorld.binary] + args
    }

    @Test(.timeLimit(.minutes(2))) func anUnprivilegedNodeAcceptsAndOpensSessions() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        // Both devices' files belong to nobody (the temporary folder itself is world-searchable).
        for d in [st.dir, bp.dir, w.epochKeyFile] { _ = chown(d, 65534, 65534) }
        for d in [st, bp] {
            for f in try FileManager.default.contentsOfDirectory(atPath: d.dir) { _ = chown(d.dir + "/" + f, 65534, 65534) }
        }
        _ = chmod(w.dir, 0o755)
        #expect(try w.run(["incident", "new"] + w.args(bp) + ["--scope", ProcessTests.village.path, "--category", "dispute",
                                                            "--summary", "unprivileged", "--lat", "33.4", "--lon", "104.9"]).status == 0)
        for suffix in ["", "-wal", "-shm"] { _ = chown(bp.store + suffix, 65534, 65534) }
        for f in try FileManager.default.contentsOfDirectory(atPath: bp.dir) { _ = chown(bp.dir + "/" + f, 65534, 65534) }

        // The station serves as nobody; the backpack (root) syncs with it.
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        serve.arguments = Array(try Self.asNobody(["serve"] + w.args(st) + ["--listen", "127.0.0.1:\(st.port)"]).dropFirst())
        let log = Pipe()
        serve.standardOutput = log
        serve.standardError = log
        try serve.run()
        defer { if serve.isRunning { serve.terminate(); serve.waitUntilExit() } }
        let deadline = Date().addingTimeInterval(15)
        while !RawSocket.canConnect(st.port), serve.isRunning, Date() < deadline { usleep(20_000) }
        let incoming = try w.sync(bp, st)
        #expect(incoming["finished"] as? Bool == true && incoming["changesAcknowledged"] as? Int == 1,
                "an unprivileged serve accepts a session: \(incoming)")

        // The backpack syncs as nobody (an outgoing connection of an unprivileged process).
        let argv = try Self.asNobody(["sync", "127.0.0.1:\(st.port)"] + w.args(bp) + ["--json"])
        let outgoing = try FieldSyncBinary.run(Array(argv.dropFirst()), executable: argv[0])
        #expect(outgoing.status == 0 && outgoing.out.contains("\"finished\":true"), "an unprivileged sync connects: \(outgoing.out) \(outgoing.err)")
        serve.terminate()
        serve.waitUntilExit()
        #expect(serve.terminationStatus == 0)
    }
}
