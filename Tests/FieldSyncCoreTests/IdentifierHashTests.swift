import Testing
@testable import FieldSyncCore

/// `Scope` hashes its path once, and `LogID` hashes the author with that: an officer writes a log per
/// village (same author, same depth), and stores and sessions look logs up by `LogID` per change and per
/// log of every session.
@Suite struct IdentifierHashTests {
    @Test func anAuthorsVillageLogsDoNotShareAHashValue() throws {
        let author = DeviceID(ID128(high: 0x0123_4567_89AB_CDEF, low: 42))
        let logs = try (0..<200).map { v in
            LogID(author: author, scope: try Scope("longnan/wudu/station-017/village-\(1000 + v)"))
        }
        // Before, the hash was the author and the depth: 200 logs, one hash value, every lookup a probe
        // through all of them comparing paths.
        #expect(Set(logs.map(\.hashValue)).count >= 199)
        #expect(Set(logs).count == 200)
        var byLog: [LogID: Int] = [:]
        for (i, l) in logs.enumerated() { byLog[l] = i }
        for (i, l) in logs.enumerated() { #expect(byLog[l] == i) }
    }

    @Test func equalityAndHashFollowThePathAlone() throws {
        let a = try Scope("longnan/wudu/station-017")
        let b = try Scope(String("longnan/wudu/" + "station-017"))  // built apart, same path
        let c = try Scope("longnan/wudu/station-018")
        #expect(a == b && a.hashValue == b.hashValue)
        #expect(a != c)
        var r = ByteReader(a.canonicalBytes)
        let decoded = try Scope(from: &r)
        #expect(decoded == a && decoded.hashValue == a.hashValue)
        #expect(Set([a, b, c, decoded]).count == 2)
        let author = DeviceID(ID128(high: 1, low: 2))
        #expect(LogID(author: author, scope: a) == LogID(author: author, scope: decoded))
        #expect(LogID(author: author, scope: a) != LogID(author: DeviceID(ID128(high: 1, low: 3)), scope: a))
        #expect(LogID(author: author, scope: a) != LogID(author: author, scope: c))
        let root = try Scope("longnan")
        let deepest = try Scope((1...8).map { "s\($0)" }.joined(separator: "/"))
        #expect(a.depth == 3 && root.depth == 1 && deepest.depth == 8)
        #expect(MemoryLayout<Scope>.size == 24 && MemoryLayout<LogID>.size == 40)  // no bigger for the hash
    }
}
