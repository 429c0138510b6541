import FieldSyncTestSupport
import FieldSyncCore
import FieldSyncCrypto
import Foundation
import Testing

/// The Debian packages of docs/packaging/make-deb.sh, installed on this machine with `dpkg -i`, the
/// service started, a sync with it, and a purge (issue 16). It needs root and changes the system (a
/// user, /etc/fieldsync, /var/lib/fieldsync, /usr/bin/fieldsync), and building the release packages
/// takes minutes, so it runs only with FIELDSYNC_DEB_TEST=1 (FIELDSYNC_DEB_DIR=DIR uses the .debs in DIR
/// instead of building them). Without systemd as PID 1 (a container) the service's command line is run
/// as its unit runs it (the `fieldsync` user, umask 0077) and the unit is checked with
/// `systemd-analyze verify`.
@Suite(.ownThread, .serialized, .enabled(if: ProcessInfo.processInfo.environment["FIELDSYNC_DEB_TEST"] == "1"))
struct DebianPackageTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @discardableResult
    static func sh(_ command: String) throws -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        let o = Pipe()
        p.standardOutput = o
        p.standardError = o
        try p.run()
        let out = String(decoding: o.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, out)
    }

    static func stat(_ path: String) throws -> String { try sh("stat -c '%a %U %G' \(path)").out.trimmingCharacters(in: .whitespacesAndNewlines) }

    @Test(.timeLimit(.minutes(60))) func installServeSyncAndPurge() throws {
        #expect(getuid() == 0, "dpkg -i needs root")
        let debs: String
        if let dir = ProcessInfo.processInfo.environment["FIELDSYNC_DEB_DIR"] { debs = dir } else {
            debs = NSTemporaryDirectory() + "fieldsync-debs-\(Hex.encode(SecureRandom.bytes(4)))"
            let built = try Self.sh("\(Self.root)/docs/packaging/make-deb.sh \(debs)")
            try #require(built.status == 0, "make-deb.sh: \(built.out)")
        }
        #expect(try Self.sh("getent passwd fieldsync").status != 0, "the machine must not have a fieldsync user before the test")
        let installed = try Self.sh("dpkg -i \(debs)/fieldsync_*.deb \(debs)/fieldsim_*.deb")
        try #require(installed.status == 0, "dpkg -i: \(installed.out)")
        var purged = false
        defer { if !purged { _ = try? Self.sh("dpkg --purge fieldsync fieldsim") } }

        // What the package put in place.
        #expect(try Self.sh("getent passwd fieldsync").out.contains("/var/lib/fieldsync"))
        #expect(try Self.stat("/etc/fieldsync") == "750 root fieldsync")
        #expect(try Self.stat("/var/lib/fieldsync") == "700 fieldsync fieldsync")
        let version = try Self.sh("/usr/bin/fieldsync --version")
        #expect(version.status == 0 && version.out.hasPrefix("fieldsync ") && version.out.contains("store schema"))
        #expect(try Self.sh("/usr/bin/fieldsim --help").status == 0)
        let control = try Self.sh("dpkg -s fieldsync").out
        #expect(control.contains("libsodium23") && control.contains("libsqlite3-0"), "\(control)")
        #expect(try Self.sh("ldd /usr/bin/fieldsync").out.contains("libswiftCore") == false, "the Swift runtime is linked in statically")
        for f in ["/usr/share/man/man1/fieldsync.1.gz", "/usr/share/man/man1/fieldsync.backup.1.gz", "/usr/share/man/man1/fieldsim.1.gz",
                  "/usr/share/bash-completion/completions/fieldsync", "/usr/share/zsh/vendor-completions/_fieldsync",
                  "/usr/share/fish/vendor_completions.d/fieldsync.fish", "/lib/systemd/system/fieldsync.service",
                  "/usr/share/doc/fieldsync/backup.md"] {
            #expect(FileManager.default.fileExists(atPath: f), "\(f) is installed")
        }
        let unit = try String(contentsOfFile: "/lib/systemd/system/fieldsync.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/fieldsync serve --config /etc/fieldsync/node.json") && unit.contains("ProtectSystem=strict")
                && unit.contains("NoNewPrivileges=yes") && unit.contains("UMask=0077"))
        let verify = try Self.sh("systemd-analyze verify /lib/systemd/system/fieldsync.service")
        #expect(verify.status == 0, "\(verify.out)")

        // A station node under /var/lib/fieldsync, owned by the service user, and a backpack that syncs with it.
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let st = try w.device("station", .station, [ProcessTests.station.path])
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        try Self.sh("cp -r \(st.dir) /var/lib/fieldsync/device && cp \(w.epochKeyFile) /var/lib/fieldsync/station.epochkey "
                    + "&& chown -R fieldsync:fieldsync /var/lib/fieldsync && chmod 600 /var/lib/fieldsync/station.epochkey")
        let config = """
            {"device": {"dir": "/var/lib/fieldsync/device", "keyFile": "/var/lib/fieldsync/device/device.key"},
             "epochKeyFiles": ["/var/lib/fieldsync/station.epochkey"],
             "store": {"path": "/var/lib/fieldsync/store.sqlite"}, "listen": "127.0.0.1:\(st.port)",
             "metrics": {"enabled": false}, "discovery": {"enabled": false}}
            """
        try config.write(toFile: "/etc/fieldsync/node.json", atomically: true, encoding: .utf8)
        try Self.sh("chgrp fieldsync /etc/fieldsync/node.json && chmod 640 /etc/fieldsync/node.json")
        let check = try Self.sh("runuser -u fieldsync -- /usr/bin/fieldsync config check /etc/fieldsync/node.json")
        #expect(check.status == 0, "\(check.out)")
        let systemd = FileManager.default.fileExists(atPath: "/run/systemd/system")
        var serve: Process?
        if systemd {
            #expect(try Self.sh("systemctl start fieldsync").status == 0)
        } else {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            // setpriv execs (runuser would fork and stand between the signal and the node).
            p.arguments = ["-c", "umask 077 && exec setpriv --reuid fieldsync --regid fieldsync --init-groups "
                           + "/usr/bin/fieldsync serve --config /etc/fieldsync/node.json > \(w.dir)/serve.log 2>&1"]
            try p.run()
            serve = p
        }
        let deadline = Date().addingTimeInterval(20)
        while !RawSocket.canConnect(st.port), Date() < deadline { usleep(50_000) }
        #expect(try w.run(["incident", "new"] + w.args(bp) + ["--scope", ProcessTests.village.path, "--category", "dispute",
                                                            "--summary", "to the packaged node", "--lat", "33.4", "--lon", "104.9"]).status == 0)
        let synced = try w.sync(bp, st)
        #expect(synced["finished"] as? Bool == true && synced["changesAcknowledged"] as? Int == 1,
                "\(synced); serve: \(String(decoding: FileManager.default.contents(atPath: w.dir + "/serve.log") ?? Data(), as: UTF8.self))")
        if systemd {
            #expect(try Self.sh("systemctl stop fieldsync").status == 0)
        } else if let serve {
            kill(serve.processIdentifier, SIGTERM)
            serve.waitUntilExit()
            #expect(serve.terminationStatus == 0)
        }
        #expect(try Self.stat("/var/lib/fieldsync/store.sqlite") == "600 fieldsync fieldsync", "the store is the service user's, mode 0600")
        let status = try Self.sh("runuser -u fieldsync -- /usr/bin/fieldsync list --dir /var/lib/fieldsync/device "
                                 + "--key-file /var/lib/fieldsync/device/device.key --store /var/lib/fieldsync/store.sqlite "
                                 + "--epoch-key-file /var/lib/fieldsync/station.epochkey")
        #expect(status.out.contains("to the packaged node"), "\(status.out)")

        // Purge: the binary, the user, the state and the config are gone.
        let purge = try Self.sh("dpkg --purge fieldsync fieldsim")
        purged = purge.status == 0
        #expect(purged, "\(purge.out)")
        #expect(try Self.sh("getent passwd fieldsync").status != 0)
        for f in ["/usr/bin/fieldsync", "/usr/bin/fieldsim", "/etc/fieldsync", "/var/lib/fieldsync", "/lib/systemd/system/fieldsync.service"] {
            #expect(!FileManager.default.fileExists(atPath: f), "\(f) is removed by the purge")
        }
    }
}
