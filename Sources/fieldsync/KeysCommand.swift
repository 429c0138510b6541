// `fieldsync keys list`: the epoch keys a device holds, by scope and epoch, where each came from, and two
// different keys under one scope and epoch said out loud.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

/// `fieldsync keys`.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "Show the epoch keys a device holds.", subcommands: [List.self])

    /// `keys list`: every epoch key the device holds (keystore, `--epoch-key-file`, and grants in its store).
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the epoch keys this device holds: scope, epoch, a fingerprint, and the grant it came from.",
            discussion: "The fingerprint is the first 8 hex digits of the key's BLAKE2b hash (it reveals nothing of the key): two "
                + "devices that show the same fingerprint for a scope and epoch hold the same key. Two different keys under one "
                + "scope and epoch (made by two `epoch-key new` runs) are flagged: records sealed under one cannot be opened "
                + "with the other; the command then exits 65.")

        @OptionGroup var node: NodeOptions
        @Flag(help: "Print one JSON object per key, one per line.") var json = false

        func run() async throws {
            let r = try node.openReplicator(create: false)
            let keys = r.allKeys
            // Where each key came from: the keystore, a key file given now, or a grant in the store.
            var withoutFiles = try node.spec()
            withoutFiles.epochKeyFiles = []
            withoutFiles.createStore = false
            let granted = try withoutFiles.open().allKeys
            let inKeystore = try Keystore.read(from: node.dir + "/" + DeviceCommand.keystoreName, unlock: try node.keystore.unlock()).epochKeys
            var bySlot: [String: Int] = [:]
            for k in keys { bySlot["\(k.scope.path)#\(k.epoch)", default: 0] += 1 }
            let conflicts = bySlot.filter { $0.value > 1 }.keys.sorted()
            for k in keys {
                let slot = "\(k.scope.path)#\(k.epoch)"
                let fingerprint = Hex.encode(Array(k.orderingDigest.prefix(4)))
                let issued = r.keyIssuedAt[k.scope]?[k.epoch]
                let source: String
                if inKeystore.contains(where: { $0.isSameKey(as: k) }) {
                    source = "keystore"
                } else if !granted.contains(where: { $0.isSameKey(as: k) }) {
                    source = "--epoch-key-file"
                } else {
                    source = issued.map { "grant signed \(TimeText.format(Int64($0)))" } ?? "grant"
                }
                if json {
                    var o: [String: Any] = ["scope": k.scope.path, "epoch": Int(k.epoch), "fingerprint": fingerprint,
                                            "conflict": conflicts.contains(slot)]
                    o["source"] = source
                    try printJSON(o)
                } else {
                    print("\(k.scope.path)  epoch \(k.epoch)  key \(fingerprint)  \(source)\(conflicts.contains(slot) ? "  CONFLICT" : "")")
                }
            }
            if !json { print("\(keys.count) key(s)") }
            guard conflicts.isEmpty else {
                let text = "two different keys under one scope and epoch: \(conflicts.joined(separator: ", ")); records sealed under one "
                    + "cannot be opened with the other. Keep one: grant the same key file to every member (fieldsync authority grant), "
                    + "and stop passing the other with --epoch-key-file"
                FileHandle.standardError.write(Data(((json ? JSONValue.object([("error", .string(text)), ("exitCode", .int(65))]).serialized
                                                     : "WARNING: \(text)") + "\n").utf8))
                throw ExitCode(65)
            }
        }
    }
}
