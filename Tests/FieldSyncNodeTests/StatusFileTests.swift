import FieldSyncTestSupport
import FieldSyncNode
import Foundation
import Testing

/// Issue 13 item 6: the daemon's status file is mode 0600 like the store (before: 0644 under umask 022).
@Suite(.ownThread) struct StatusFileTests {
    @Test func statusFileIsMode0600() throws {
        let old = umask(0o022)
        defer { umask(old) }
        let json = #"{"pid": 1, "device": "d", "role": "station", "listen": "127.0.0.1:1", "state": "running", "startedAt": 1, "updatedAt": 2, "sessionsActive": 0, "peers": []}"#
        let status = try JSONDecoder().decode(DaemonStatus.self, from: Data(json.utf8))
        let dir = NSTemporaryDirectory() + "fieldsync-status-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/s.status.json"
        try status.write(to: path)
        try status.write(to: path)  // rewritten over the old one
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        #expect(try DaemonStatus.read(from: path) == status)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["s.status.json"], "no temporary file left")
    }
}
