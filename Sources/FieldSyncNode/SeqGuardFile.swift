// The seq guard of a device (attack case 48): its own log heads in a small file next to the keystore,
// apart from the store, so that a store restored from an older copy cannot make the device sign a
// second change at a seq it already used. docs/node.md, "Restoring a device".

import FieldSyncCore
import FieldSyncCrypto
import FieldSyncProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why the seq guard file cannot be used.
public struct SeqGuardError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What to tell the operator.
    public var detail: String
    /// Creates an error.
    public init(_ detail: String) { self.detail = detail }
    public var description: String { "seq guard: \(detail)" }
}

/// An `OwnHeadGuard` kept in a file (mode 0600): one line per own log, `SCOPE SEQ HASH HLC`, under a
/// header naming the device. Every read goes to the file (the daemon and a CLI command may both write
/// for one device); `advance` merges under an exclusive lock and replaces the file atomically
/// (temporary file, fsync, rename, fsync of the directory). A file of another device, or one that does
/// not parse, is refused with an error instead of being reset: the operator decides (docs/node.md).
public final class SeqGuardFile: OwnHeadGuard, @unchecked Sendable {
    /// The file name the CLI uses in a device directory.
    public static let defaultName = "seq-guard"
    /// The file.
    public let path: String
    /// The device whose heads it keeps.
    public let device: DeviceID

    /// A guard at `path` for `device` (the file is created on the first `advance`).
    public init(path: String, device: DeviceID) {
        self.path = path
        self.device = device
    }

    public func head(of log: LogID) throws -> OwnHead? { try heads()[log] }

    public func heads() throws -> [LogID: OwnHead] {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) { throw SeqGuardError("cannot read \(path)") }
            return [:]
        }
        return try parse(String(decoding: data, as: UTF8.self))
    }

    public func advance(_ new: [LogID: OwnHead]) throws {
        guard !new.isEmpty else { return }
        let lockFD = open(path + ".lock", O_RDWR | O_CREAT, 0o600)
        guard lockFD >= 0 else { throw SeqGuardError("cannot open \(path).lock: \(String(cString: strerror(errno)))") }
        defer { close(lockFD) }
        guard flock(lockFD, LOCK_EX) == 0 else { throw SeqGuardError("cannot lock \(path).lock") }
        var merged = try heads()
        for (log, h) in new where log.author == device && (merged[log]?.seq ?? 0) < h.seq { merged[log] = h }
        var text = "fieldsync seq-guard v1 device \(device)\n"
        for (log, h) in merged.sorted(by: { $0.key < $1.key }) {
            text += "\(log.scope.path) \(h.seq) \(Hex.encode(h.hash)) \(h.hlc.raw)\n"
        }
        try write(Array(text.utf8))
    }

    /// The restore fence's file (`RestoreFence`), beside the guard: `restore-fence` in the device directory.
    public var fencePath: String { PathText.folder(of: path) + "/" + Self.fenceName }
    /// The fence file's name in a device directory.
    public static let fenceName = "restore-fence"

    /// The fence in force: the file `restore-fence` (three lines: `fieldsync restore-fence v1`,
    /// `backup MS`, `restored MS`), written by `fieldsync restore`. A file that does not parse is an
    /// error (writes stay refused), never read as no fence.
    public func fence() throws -> RestoreFence? { try Self.readFence(inDirectory: PathText.folder(of: path)) }

    /// Removes the fence file (and syncs the directory).
    public func liftFence() throws { try Self.liftFence(inDirectory: PathText.folder(of: path)) }

    /// The fence of the device directory `directory` (`fence()`).
    public static func readFence(inDirectory directory: String) throws -> RestoreFence? {
        let file = directory + "/" + fenceName
        guard let data = FileManager.default.contents(atPath: file) else {
            if FileManager.default.fileExists(atPath: file) { throw SeqGuardError("cannot read \(file)") }
            return nil
        }
        return try parseFence(String(decoding: data, as: UTF8.self), path: file)
    }

    /// Removes the fence of the device directory `directory` (`liftFence()`).
    public static func liftFence(inDirectory directory: String) throws {
        let file = directory + "/" + fenceName
        guard unlink(file) == 0 || errno == ENOENT else {
            throw SeqGuardError("cannot remove \(file): \(String(cString: strerror(errno)))")
        }
        syncDirectory(directory)
    }

    /// Writes a fence file into `directory` (a device directory being restored), mode 0600, synced.
    public static func writeFence(_ fence: RestoreFence, inDirectory directory: String) throws {
        let text = "fieldsync restore-fence v1\nbackup \(fence.backupTime)\nrestored \(fence.restoredTime)\n"
        try writeSynced(Array(text.utf8), to: directory + "/" + fenceName)
    }

    static func parseFence(_ text: String, path: String) throws -> RestoreFence {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map { $0.split(separator: " ") }
        guard lines.count == 3, lines[0].joined(separator: " ") == "fieldsync restore-fence v1",
              lines[1].count == 2, lines[1][0] == "backup", let backup = UInt64(lines[1][1]),
              lines[2].count == 2, lines[2][0] == "restored", let restored = UInt64(lines[2][1]) else {
            throw SeqGuardError("\(path) does not parse; this device stays fenced: see docs/backup.md, \"The restore fence\"")
        }
        return RestoreFence(backupTime: backup, restoredTime: restored)
    }

    private func parse(_ text: String) throws -> [LogID: OwnHead] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).makeIterator()
        guard let header = lines.next(), header == "fieldsync seq-guard v1 device \(device)" else {
            throw SeqGuardError("\(path) is not this device's seq guard (expected the header for \(device)); "
                                + "if this device's directory was copied from another, see docs/node.md \"Restoring a device\"")
        }
        var out: [LogID: OwnHead] = [:]
        var n = 1
        while let line = lines.next() {
            n += 1
            let f = line.split(separator: " ")
            guard f.count == 4, let scope = try? Scope(String(f[0])), let seq = UInt64(f[1]), seq >= 1,
                  let hash = Hex.decode(String(f[2])), hash.count == 32, let hlc = UInt64(f[3]) else {
                throw SeqGuardError("\(path) line \(n) does not parse; the file is damaged (docs/node.md, \"Restoring a device\")")
            }
            out[LogID(author: device, scope: scope)] = OwnHead(seq: seq, hash: hash, hlc: HLCTimestamp(raw: hlc))
        }
        return out
    }

    private func write(_ bytes: [UInt8]) throws { try Self.writeSynced(bytes, to: path) }

    private static func syncDirectory(_ dir: String) {
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    /// Replaces `path` atomically: temporary file (0600), fsync, rename, fsync of the directory.
    static func writeSynced(_ bytes: [UInt8], to path: String) throws {
        let dir = PathText.folder(of: path)
        let tmp = "\(path).tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw SeqGuardError("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            offset += n
        }
        guard offset == bytes.count, fsync(fd) == 0 else {
            close(fd)
            unlink(tmp)
            throw SeqGuardError("cannot write \(tmp)")
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw SeqGuardError("cannot rename \(tmp) to \(path): \(String(cString: strerror(errno)))")
        }
        let dfd = open(dir, O_RDONLY)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}
