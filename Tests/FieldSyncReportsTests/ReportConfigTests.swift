import FieldSyncNode
import Foundation
import Testing

/// `"reports": {"daily": {...}}` in the node config: off by default, checked, paths resolved.
@Suite struct ReportConfigTests {
    static func decode(_ json: String) throws -> NodeConfigFile { try NodeConfigFile.decode(Data(json.utf8), source: "test.json") }
    static let base = #""device": {"dir": "d", "keyFile": "k"}, "store": {"path": "s"}"#

    @Test func offByDefaultAndInTheExample() throws {
        #expect(try Self.decode("{\(Self.base)}").reports.daily == nil)
        #expect(try Self.decode(NodeConfigFile.examplePlain).reports.daily == nil)
        #expect(NodeConfigFile.example.contains("\"reports\": { \"daily\": null }"))
    }

    @Test func theDailyReportIsReadAndChecked() throws {
        let dir = NSTemporaryDirectory() + "fieldsync-report-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try Self.decode("{\(Self.base), \"reports\": {\"daily\": {\"dir\": \"\(dir)\"}}}")
        #expect(c.reports.daily?.at == "07:00" && c.reports.daily?.formats == ["html", "csv", "json"] && c.reports.daily?.atMinutes == 420)
        #expect(!c.check().contains { $0.key?.hasPrefix("reports") == true })
        let bad = try Self.decode("{\(Self.base), \"reports\": {\"daily\": {\"dir\": \"\(dir)/missing\", \"at\": \"7:00\", \"formats\": [\"pdf\"]}}}")
        let keys = Set(bad.check().compactMap(\.key))
        #expect(keys.isSuperset(of: ["reports.daily.dir", "reports.daily.at", "reports.daily.formats"]), "\(keys)")
        #expect(throws: (any Error).self) { try Self.decode("{\(Self.base), \"reports\": {\"daily\": {\"dir\": \"x\", \"when\": \"07:00\"}}}") }
        #expect(throws: (any Error).self) { try Self.decode("{\(Self.base), \"reports\": {\"weekly\": {}}}") }
    }
}
