import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import FieldSyncStore
import FieldSyncTestSupport
import Foundation
import Testing

/// Attack case 38 (docs/threat-model.md): a relay box's **process memory**, not only its files, holds
/// no plaintext of what it carries and no epoch key. A real `fieldsync serve` relay carries a record
/// whose summary is a random marker; while it still runs, the test reads every readable mapping of
/// its memory (`/proc/PID/maps` and `/proc/PID/mem`, which a parent process may read) and looks for the
/// marker and the station's epoch key. The scan must also find what the relay does hold, the carried
/// change's signature, or it proves nothing.
@Suite(.ownThread, .serialized)
struct RelayMemoryTests {
    /// Every readable mapping of process `pid`, concatenated per mapping (unreadable ones skipped).
    static func memory(of pid: Int32) throws -> [Data] {
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        let mem = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/\(pid)/mem"))
        defer { try? mem.close() }
        var regions: [Data] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, fields[1].hasPrefix("r") else { continue }
            if fields.count >= 6, fields[5] == "[vvar]" || fields[5] == "[vsyscall]" || fields[5] == "[vvar_vclock]" { continue }
            let range = fields[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
            guard range.count == 2, range[1] > range[0] else { continue }
            do {
                try mem.seek(toOffset: range[0])
                if let data = try mem.read(upToCount: Int(range[1] - range[0])) { regions.append(data) }
            } catch {
                continue  // a mapping the kernel will not let us read (guard pages and the like)
            }
        }
        return regions
    }

    static func contains(_ regions: [Data], _ needle: [UInt8]) -> Bool {
        let n = Data(needle)
        return regions.contains { $0.range(of: n) != nil }
    }

    @Test(.timeLimit(.minutes(2))) func aRelaysProcessMemoryHoldsNoPlaintextAndNoEpochKey() throws {
        let w = try ProcessWorld()
        defer { w.cleanUp() }
        let relay = try w.device("relay", .relay, ["longnan/wudu"], readsRecords: false)
        let bp = try w.device("bp", .backpack, [ProcessTests.station.path])
        let marker = "case38-" + Hex.encode(SecureRandom.bytes(12))
        try w.expectOK(["incident", "new"] + w.args(bp) + ["--scope", ProcessTests.village.path, "--category", "dispute",
                                                         "--summary", marker, "--lat", "33.4", "--lon", "104.9"])
        try w.serve(relay)
        defer { try? w.stopAll() }
        let r = try w.sync(bp, relay)
        #expect(r["finished"] as? Bool == true, "backpack -> relay: \(r)")

        let carried = try w.open(bp).changes(LogID(author: bp.id, scope: ProcessTests.village), in: 1...1)
        let change = try #require(carried.first, "the backpack wrote its incident as change 1")
        let signature = Array(change.bytes.suffix(64))
        let key = w.stationKey.key.withUnsafeBytes { Array($0) }

        let pid = try #require(w.servers[relay.name]).processIdentifier
        let regions = try Self.memory(of: pid)
        let scanned = regions.reduce(0) { $0 + $1.count }
        #expect(scanned > 1_000_000, "read \(scanned) bytes of the relay's memory")
        #expect(Self.contains(regions, signature), "the scan finds what the relay holds: the carried change's signature")
        #expect(!Self.contains(regions, Array(marker.utf8)), "the record's text is nowhere in the relay's memory")
        #expect(!Self.contains(regions, key), "the epoch key is nowhere in the relay's memory")
    }
}
