/// An in-memory set of materialized records: what a replica knows, folded from the edits it received.
///
/// Applying edits is a join, so replicas that receive the same edits in any order, with duplicates,
/// end with identical `canonicalBytes`. Used by the demo, tests and benchmarks; the stores of
/// FieldSyncStore keep the same fold on disk.
public struct Replica: Sendable, CRDT {
    /// Records by id.
    public private(set) var records: [RecordID: Record]

    /// An empty replica.
    public init() { records = [:] }

    /// Validates (when a registry is given) and applies one edit.
    /// - Throws: `RecordError` if the edit fails the schema or contradicts the record's kind or scope.
    public mutating func apply(_ edit: RecordEdit, schemas: SchemaRegistry? = .standard) throws(RecordError) {
        if let schemas { try schemas.validate(edit) }
        var r = records[edit.record] ?? Record(id: edit.record, kind: edit.kind, scope: edit.scope)
        try r.apply(edit)
        records[edit.record] = r
    }

    /// Joins another replica. Records with the same id but different kind or scope cannot come from
    /// honest authors; the one already held is kept and the other reported.
    /// - Returns: ids whose kind or scope disagreed (empty for honest inputs).
    @discardableResult
    public mutating func merge(reportingConflicts other: Replica) -> [RecordID] {
        var conflicts: [RecordID] = []
        for (id, theirs) in other.records {
            if var mine = records[id] {
                guard mine.kind == theirs.kind, mine.scope == theirs.scope else {
                    conflicts.append(id)
                    continue
                }
                mine.merge(theirs)
                records[id] = mine
            } else {
                records[id] = theirs
            }
        }
        return conflicts.sorted()
    }

    public mutating func merge(_ other: Replica) { merge(reportingConflicts: other) }

    public func encode(to writer: inout ByteWriter) {
        let ids = records.keys.sorted()
        writer.writeVarint(UInt64(ids.count))
        for id in ids { records[id]!.encode(to: &writer) }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let n = try reader.readCount(minElementSize: 40)
        var out: [RecordID: Record] = [:]
        var last: RecordID?
        for _ in 0..<n {
            let at = reader.offset
            let r = try Record(from: &reader)
            if let last, !(last < r.id) { throw DecodingError(.nonCanonicalOrder, at: at, "record ids") }
            last = r.id
            out[r.id] = r
        }
        records = out
    }
}
