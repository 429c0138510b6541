import FieldSyncCore
import FieldSyncNode
import Foundation

/// Import files (`fieldsync record import`, docs/cli.md): the first byte chooses CSV (even) or JSON
/// (odd), the rest is the file. CSV goes through `CSVReader` and the header's column names, JSON through
/// `JSONSerialization` (an array of objects, or one object per line), as the command reads them; each
/// row then goes through `RecordImport.creatingEdit`. A row that passes must give an edit that encodes
/// canonically and decodes back to itself.
public func fuzzImport(_ data: UnsafeRawBufferPointer) {
    guard let selector = data.first else { return }
    let file = Array(data.dropFirst())
    var rows: [[String: Any]] = []
    if selector % 2 == 0 {
        var reader = CSVReader(bytes: file)
        guard let header = try? reader.next() else { return }
        let names = header.cells.map { $0.trimmingCharacters(in: .whitespaces) }
        while let row = try? reader.next(), rows.count < 1_000 {
            guard row.cells.count == names.count else { break }
            var fields: [String: Any] = [:]
            for (k, v) in zip(names, row.cells) { fields[k] = v }
            rows.append(fields)
        }
    } else {
        let bytes = Data(file)
        if let array = try? JSONSerialization.jsonObject(with: bytes) as? [Any] {
            rows = array.compactMap { $0 as? [String: Any] }
        } else {
            for line in bytes.split(separator: 0x0A) {
                if let o = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] { rows.append(o) }
            }
        }
    }
    let author = DeviceID(ID128(high: 0xA1, low: 0xA2))
    var n: UInt64 = 0
    for row in rows {
        n += 1
        guard let (edit, _) = try? RecordImport.creatingEdit(row, schemas: .standard, author: author,
                                                            hlc: HLCTimestamp(milliseconds: 1_717_200_000_000, counter: 0),
                                                            newID: { RecordID(ID128(high: 0xB0, low: n)) }) else { continue }
        let bytes = edit.canonicalBytes
        guard let back = try? RecordEdit(canonicalBytes: bytes), back == edit else {
            FuzzFinding.fail("import", "an imported row's edit does not decode back to itself")
        }
    }
}
