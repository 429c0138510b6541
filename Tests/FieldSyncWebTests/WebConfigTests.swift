import FieldSyncNode
import FieldSyncWeb
import Foundation
import Testing

/// The `"web"` section of the node config and the operator accounts file.
struct WebConfigTests {
    static func decode(_ json: String) throws -> NodeConfigFile { try NodeConfigFile.decode(Data(json.utf8), source: "test.json") }
    static let base = #""device": {"dir": "dev", "keyFile": "k"}, "store": {"path": "s.sqlite"}"#

    @Test func theWebSectionIsOffByDefaultAndLoopbackOnly() throws {
        #expect(try Self.decode("{\(Self.base)}").web == nil)
        #expect(try Self.decode("{\(Self.base), \"web\": null}").web == nil)
        let on = try Self.decode("{\(Self.base), \"web\": {}}")
        #expect(on.web?.listen == "127.0.0.1:8080" && on.web?.sessionMinutes == 480 && on.web?.secureCookies == false)
        #expect(on.webAccessLogPath == "s.sqlite.web-access.log")
        let wide = try Self.decode("{\(Self.base), \"web\": {\"listen\": \"0.0.0.0:8080\"}}")
        #expect(wide.check().contains { $0.key == "web.listen" && $0.description.contains("reverse proxy") })
        let v6 = try Self.decode("{\(Self.base), \"web\": {\"listen\": \"[::1]:8080\", \"sessionMinutes\": 0}}")
        #expect(!v6.check().contains { $0.key == "web.listen" })
        #expect(v6.check().contains { $0.key == "web.sessionMinutes" })
        #expect(throws: ConfigError.self) { try Self.decode("{\(Self.base), \"web\": {\"port\": 8080}}") }
    }

    @Test func theReportPagesSettingsHaveDefaultsAndBounds() throws {
        let on = try Self.decode("{\(Self.base), \"web\": {}}")
        #expect(on.web?.unitSilentMinutes == 1_440 && on.web?.duplicateMetres == 500 && on.web?.duplicateMinutes == 30)
        let set = try Self.decode("{\(Self.base), \"web\": {\"unitSilentMinutes\": 90, \"duplicateMetres\": 250.5, \"duplicateMinutes\": 10}}")
        #expect(set.web?.unitSilentMinutes == 90 && set.web?.duplicateMetres == 250.5 && set.web?.duplicateMinutes == 10)
        #expect(!set.check().contains { $0.key?.hasPrefix("web.") == true })
        let bad = try Self.decode("{\(Self.base), \"web\": {\"unitSilentMinutes\": 0, \"duplicateMetres\": -1, \"duplicateMinutes\": 99999}}")
        let keys = Set(bad.check().compactMap(\.key))
        #expect(keys.isSuperset(of: ["web.unitSilentMinutes", "web.duplicateMetres", "web.duplicateMinutes"]))
    }

    @Test func accountsAreHashedWithArgon2idInAFileOnlyTheOwnerReads() throws {
        let path = NSTemporaryDirectory() + "web-users-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var a = OperatorAccounts()
        try a.add(name: "alice", password: "a long enough password", scopes: ["longnan/wudu"], replace: false, now: 1, cost: .testingOnlyMinimum)
        #expect(throws: WebAccountError.self) { try a.add(name: "alice", password: "another password", scopes: [], replace: false, now: 2) }
        #expect(throws: WebAccountError.self) { try a.add(name: "Bob!", password: "a long enough password", scopes: [], replace: false, now: 2) }
        #expect(throws: WebAccountError.self) { try a.add(name: "bob", password: "short", scopes: [], replace: false, now: 2) }
        #expect(throws: WebAccountError.self) { try a.add(name: "bob", password: "a long enough password", scopes: ["Not/A/Scope"], replace: false, now: 2) }
        try a.save(path: path)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("$argon2id$") && !text.contains("a long enough password"))
        let back = try OperatorAccounts.load(path: path)
        #expect(back == a)
        #expect(OperatorAccounts.verify("a long enough password", hash: back.users[0].passwordHash))
        #expect(!OperatorAccounts.verify("a long enough passwore", hash: back.users[0].passwordHash))
        chmod(path, 0o644)
        #expect(throws: WebAccountError.self) { _ = try OperatorAccounts.load(path: path) }
    }

    @Test func escapingCoversTextAttributesURLsAndCSV() {
        #expect(HTML.escape("<a href=\"x\" onclick='y'>&\u{0}\u{1B}</a>") == "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;\u{FFFD}\u{FFFD}&lt;/a&gt;")
        #expect(HTML.urlComponent("a b/?#&=\"<>") == "a%20b%2F%3F%23%26%3D%22%3C%3E")
        #expect(HTML.query([("q", "x&y=z"), ("empty", "")]) == "?q=x%26y%3Dz")
        #expect(HTML.csvCell("=1+2") == "'=1+2")
        #expect(HTML.csvCell("-12.5") == "-12.5")
        #expect(HTML.csvCell("a,\"b\"") == "\"a,\"\"b\"\"\"")
    }
}
