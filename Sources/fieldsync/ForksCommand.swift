// `fieldsync forks`: the fork proofs a store holds and the authors they flag (issue 12 item 3;
// policy: docs/node.md, "Forks").

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import Foundation

/// One fork proof as the CLI shows it.
struct ForkRow {
    let evidence: ForkEvidence
    /// The proof's kind, or nil when its bytes cannot be read back (evicted or damaged).
    let kind: ForkProof.Kind?
    /// Whether both changes verify against the author's certificate now.
    let verifies: Bool
    let ownDevice: Bool

    static func read(_ r: Replicator) throws -> [ForkRow] {
        let now = wallClockMilliseconds()
        return try r.store.forks().map { f in
            let proof = try? f.proof()
            var ok = false
            if let proof, let cert = r.certificates[proof.author]?.certificate {
                ok = (try? proof.verify(authorCertificate: cert, trust: r.trust, now: now)) != nil
            }
            return ForkRow(evidence: f, kind: proof?.kind, verifies: ok, ownDevice: f.log.author == r.identity.id)
        }
    }

    var json: [String: Any] {
        let f = evidence
        return ["author": f.log.author.description, "scope": f.log.scope.path, "seq": f.seq, "kind": kind?.rawValue ?? "unreadable",
                "kept": Hex.encode(f.kept.hash), "keptSeq": f.kept.seq, "conflicting": Hex.encode(f.conflicting.hash),
                "conflictingSeq": f.conflicting.seq, "verifies": verifies, "thisDevice": ownDevice]
    }
}

/// `fieldsync forks`.
struct Forks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the fork proofs this store holds and the authors they flag (exit 0; 3 if this device's own log is forked).",
        discussion: "A fork proof is two changes one author signed that no single log can hold. Policy and what to do: docs/node.md, \"Forks\".")

    @OptionGroup var node: NodeOptions
    @Flag(help: "Print the result as JSON.") var json = false

    func run() async throws {
        let r = try node.openReplicator()
        let rows = try ForkRow.read(r)
        let flagged = Array(Set(rows.map(\.evidence.log.author))).sorted()
        let ownForked = rows.contains(where: \.ownDevice)
        if json {
            try printJSON(["device": r.identity.id.description, "forks": rows.map(\.json), "flaggedAuthors": flagged.map(\.description),
                           "thisDeviceForked": ownForked])
        } else {
            print("\(rows.count) fork proof(s); \(flagged.count) flagged author(s)")
            for row in rows {
                let f = row.evidence
                let kind = row.kind.map { $0 == .position ? "two changes at seq \(f.seq)" : "seq \(f.seq + 1) does not follow seq \(f.seq)" }
                    ?? "unreadable (bytes evicted or damaged)"
                print("  \(f.log.author) \(f.log.scope.path): \(kind); kept \(Hex.encode(Array(f.kept.hash.prefix(8)))) "
                    + "(seq \(f.kept.seq)), other \(Hex.encode(Array(f.conflicting.hash.prefix(8)))) (seq \(f.conflicting.seq))"
                    + (row.verifies ? "" : "; does NOT verify with the author's certificate") + (row.ownDevice ? "  <- THIS DEVICE" : ""))
            }
            if ownForked {
                print("this device's own log is forked (a store restored from an old copy wrote again): stop writing, "
                    + "have it revoked and re-enrolled (docs/node.md, \"Forks\")")
            }
        }
        if ownForked { throw ExitCode(3) }
    }
}
