// The list an authority keeps of what it signed: `authority list`.

import ArgumentParser
import FieldSyncCrypto
import Foundation

/// What an authority signed, one JSON object per line in `DIR/issued.jsonl` (mode 0600, next to its keystore):
/// each enrollment, delegation, renewal, revocation and key grant made with that directory. It is the
/// authority's own record, for operators; nothing else reads it, and it holds no secret.
enum AuthorityLedger {
    static let fileName = "issued.jsonl"

    /// Appends one entry; a ledger that cannot be written is reported on standard error and does not undo
    /// what was signed (the signed file is already written).
    static func record(dir: String, _ entry: [String: Any]) {
        var e = entry
        e["at"] = TimeText.format(Int64(wallClockMilliseconds()))
        guard let data = try? JSONSerialization.data(withJSONObject: e, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        let path = dir + "/" + fileName
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let h = FileHandle(forWritingAtPath: path) else {
            FileHandle.standardError.write(Data("warning: cannot write \(path); the signed file was written, but is not in `authority list`\n".utf8))
            return
        }
        h.seekToEndOfFile()
        h.write(data + Data("\n".utf8))
        try? h.close()
    }

    /// The entries, oldest first.
    static func entries(dir: String) throws -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: dir + "/" + fileName) else { return [] }
        return try String(decoding: data, as: UTF8.self).split(separator: "\n").map { line in
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw CLIError("\(dir)/\(fileName) has a line that is not a JSON object: \(line.prefix(80))")
            }
            return o
        }
    }

    /// The entry of a certificate this authority signed.
    static func certificate(_ action: String, _ c: Certificate, file: String) -> [String: Any] {
        ["action": action, "subject": c.subject.description, "role": c.role.description, "scopes": c.scopes.map(\.path),
         "serial": String(c.serial), "notAfter": TimeText.format(Int64(c.notAfter)), "file": file]
    }
}

extension AuthorityCommand {
    /// `authority list`: what this authority signed, from its ledger.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List what this authority enrolled, delegated, renewed, revoked and granted (from DIR/issued.jsonl).",
            discussion: "Each command that signs with the authority's directory adds a line to DIR/issued.jsonl; what was signed "
                + "before that file existed is not listed. Needs no key: the list holds no secret.")

        @Option(help: "The authority's directory.") var dir: String
        @Flag(help: "Print one JSON object per entry, one per line.") var json = false

        func run() async throws {
            let entries = try AuthorityLedger.entries(dir: dir)
            for e in entries {
                if json { try printJSON(e); continue }
                let at = e["at"] as? String ?? "?"
                let action = e["action"] as? String ?? "?"
                switch action {
                case "revoked":
                    print("\(at)  revoked    \(e["subject"] as? String ?? "?")  from \(e["cutoff"] as? String ?? "?") (\(e["reason"] as? String ?? "?"))  \(e["file"] as? String ?? "")")
                case "granted":
                    print("\(at)  granted    \(e["key"] as? String ?? "?") to \((e["members"] as? [String])?.count ?? 0) member(s)  \(e["file"] as? String ?? "")")
                default:
                    let scopes = (e["scopes"] as? [String])?.joined(separator: ",") ?? "?"
                    print("\(at)  \(action.padding(toLength: 9, withPad: " ", startingAt: 0))  \(e["subject"] as? String ?? "?")  "
                          + "\(e["role"] as? String ?? "?") \(scopes) until \(e["notAfter"] as? String ?? "?")  \(e["file"] as? String ?? "")")
                }
            }
            if !json { print("\(entries.count) entr\(entries.count == 1 ? "y" : "ies") in \(dir)/\(AuthorityLedger.fileName)") }
        }
    }
}
