// `fieldsync backup`, `fieldsync restore` and `fieldsync fence` (issue 16; docs/backup.md): an online,
// encrypted backup of a device directory and its store, its restore on new hardware, and the restore
// fence that keeps a restored device from reusing seqs it wrote after the backup.

import ArgumentParser
import FieldSyncCore
import FieldSyncCrypto
import FieldSyncNode
import FieldSyncProtocol
import FieldSyncStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a backup file is protected or opened: exactly one of a passphrase file or a key file.
struct BackupKeyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("File holding the backup passphrase (first line; mode 0600). Not the keystore's.", valueName: "file"))
    var backupPassphraseFile: String?

    @Option(help: ArgumentHelp("32-byte backup key file (mode 0600); `backup` creates it if missing.", valueName: "file"))
    var backupKeyFile: String?

    func validate() throws {
        guard (backupPassphraseFile == nil) != (backupKeyFile == nil) else {
            throw ValidationError("give exactly one of --backup-passphrase-file or --backup-key-file")
        }
    }

    func unlock() throws -> BackupUnlock {
        if let backupKeyFile { return .keyFile(path: backupKeyFile) }
        return .passphrase(try KeystoreOptions.readPassphrase(backupPassphraseFile!))
    }
}

/// `fieldsync backup`.
struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Write an encrypted backup of a device directory and its store, while the node runs.",
        discussion: """
            The store is copied with SQLite's online backup API (a consistent copy as of one commit; a running \
            `fieldsync serve` keeps syncing and writing), the device directory's files are read just before it, and both go into \
            one file sealed with a key from the backup passphrase (Argon2id) or a key file: Protocols/backup.md. \
            The file is created with mode 0600 and never replaces an existing one. docs/backup.md has the procedure.
            """)

    @Option(help: "The device's directory (holds device.keystore).") var dir: String
    @Option(help: "The SQLite store file.") var store: String
    @Option(help: "The backup file to write (must not exist).") var out: String
    @OptionGroup var key: BackupKeyOptions
    @Option(help: "Argon2id cost for a passphrase: moderate (256 MiB, default) or interactive (64 MiB).") var kdf: String = "moderate"
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        guard ["moderate", "interactive"].contains(kdf) else { throw ValidationError("--kdf must be moderate or interactive") }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: dir + "/" + DeviceCommand.keystoreName) else {
            throw CLIError("\(dir) holds no \(DeviceCommand.keystoreName): give the device's directory (--dir)")
        }
        var createdKeyFile = false
        let protection: BackupProtection
        if let kf = key.backupKeyFile {
            if !FileManager.default.fileExists(atPath: kf) {
                do { try Keystore.createKeyFile(at: kf) } catch { throw CLIError("cannot create the backup key file: \(error)") }
                createdKeyFile = true
            }
            protection = .keyFile(path: kf)
        } else {
            protection = .passphrase(try KeystoreOptions.readPassphrase(key.backupPassphraseFile!), kdf == "interactive" ? .interactive : .moderate)
        }
        if FileManager.default.fileExists(atPath: out) { throw CLIError("\(out) already exists; choose another --out (a backup never replaces a file)") }
        // The device directory first: its seq guard and rollback checkpoint are then never ahead of the store copy.
        let (names, skipped) = try Self.deviceFiles(dir: dir, store: store, out: out)
        var files: [BackupManifest.File] = []
        var sources: [BackupArchive.Source] = []
        for name in names {
            let bytes = try Files.read(dir + "/" + name, what: "device file")
            files.append(BackupManifest.File(name: name, size: UInt64(bytes.count)))
            sources.append(.bytes(bytes))
        }
        // The store copy goes to a private folder beside the output, removed at the end.
        var template = Array((PathText.folder(of: out) + "/.fieldsync-backup-XXXXXX").utf8CString)
        guard let work = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw CLIError("cannot create a work folder beside \(out): \(String(cString: strerror(errno)))")
        }
        defer {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(work + "/store.sqlite" + suffix) }
            rmdir(work)
        }
        let takenAt = wallClockMilliseconds()
        let check: StoreCopyCheck
        do { check = try SQLiteStore.onlineCopy(from: store, to: work + "/store.sqlite") } catch { throw CLIError("backup of \(store) failed: \(error)") }
        var st = stat()
        guard stat(work + "/store.sqlite", &st) == 0 else { throw CLIError("the store copy disappeared") }
        let manifest = BackupManifest(createdAt: takenAt, producer: "fieldsync \(FieldSyncVersion.release)",
                                      storeSchemaVersion: UInt64(check.schemaVersion), files: files, storeSize: UInt64(st.st_size))
        do {
            try BackupArchive.write(to: out, manifest: manifest, files: sources, store: .file(work + "/store.sqlite"), protection: protection)
        } catch { throw CLIError("\(error)") }
        var outStat = stat()
        _ = stat(out, &outStat)
        let method: String = if case let .passphrase(_, p) = protection { "passphrase (Argon2id \(p))" } else { "key file \(key.backupKeyFile!)" }
        if json {
            try printJSON(["backup": out, "bytes": Int(outStat.st_size), "takenAt": takenAt, "takenAtTime": TimeText.format(Int64(takenAt)),
                           "storeBytes": Int(st.st_size), "changes": check.changes, "records": check.records,
                           "storeSchemaVersion": check.schemaVersion, "deviceFiles": names, "skipped": skipped,
                           "protection": method, "createdKeyFile": createdKeyFile])
        } else {
            print("backup \(out): \(outStat.st_size) bytes, taken \(TimeText.format(Int64(takenAt)))")
            print("  store \(store): \(check.changes) changes, \(check.records) records, \(st.st_size) bytes, schema \(check.schemaVersion)")
            print("  device directory \(dir): \(names.joined(separator: ", "))")
            if !skipped.isEmpty { print("  not included: \(skipped.joined(separator: ", "))") }
            print("  sealed with \(method)")
            if createdKeyFile { print("  created the key file \(key.backupKeyFile!): keep a copy apart from the backups, without it they do not open") }
        }
    }

    /// The device directory's files a backup carries: the regular files at its top level, except lock and
    /// temporary files, a restore fence (a restore writes its own), and the store (with its companions)
    /// or the output when they live in the directory.
    /// - Returns: the names included, sorted, and what was left out (with why).
    static func deviceFiles(dir: String, store: String, out: String) throws -> (included: [String], skipped: [String]) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted() } catch {
            throw CLIError("cannot list \(dir): \(error.localizedDescription)")
        }
        func real(_ p: String) -> String? {
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        let excluded = Set((["", "-wal", "-shm", "-journal"].map { store + $0 } + [out]).compactMap(real))
        var included: [String] = [], skipped: [String] = []
        for name in names {
            let path = dir + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            if let r = real(path), excluded.contains(r) { skipped.append("\(name) (the store or the output)"); continue }
            guard (st.st_mode & S_IFMT) == S_IFREG else { skipped.append("\(name) (not a regular file)"); continue }
            if name.hasSuffix(".lock") || name.contains(".tmp-") || name.contains(".new-") || name == SeqGuardFile.fenceName {
                skipped.append(name)
                continue
            }
            guard BackupManifest.isPlainName(name) else { skipped.append("\(name) (name)"); continue }
            included.append(name)
        }
        return (included, skipped)
    }
}

/// `fieldsync restore`.
struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a device directory and its store from a backup (new hardware); the device starts fenced.",
        discussion: """
            Refuses to overwrite: the device directory must not exist (or be empty) and the store must not exist. Every chunk \
            of the backup is authenticated and the store copy passes SQLite's integrity check before anything is moved into \
            place; files are created with mode 0600, the directory 0700. A wrong passphrase or key file, a truncated file and a \
            damaged or tampered one are told apart. The restored device writes nothing until a sync with a peer that holds its own \
            logs has brought back what it wrote after the backup (`fieldsync fence`; docs/backup.md).
            """)

    @Argument(help: "The backup file.") var backup: String
    @Option(help: "The device directory to create.") var dir: String
    @Option(help: "The store file to create.") var store: String
    @OptionGroup var key: BackupKeyOptions
    @Flag(help: "Check the backup (authentication, store integrity) and restore nothing.") var checkOnly = false
    @Flag(help: "Print the result as JSON.") var json = false

    func run() throws {
        if !checkOnly { try Self.refuseExisting(dir: dir, store: store) }
        let reader: BackupArchive.Reader
        do { reader = try BackupArchive.open(backup, unlock: try key.unlock()) } catch { throw CLIError("\(error)") }
        let m = reader.manifest
        let base = checkOnly ? PathText.folder(of: backup) : PathText.folder(of: dir)
        var template = Array((base + "/.fieldsync-restore-XXXXXX").utf8CString)
        guard let work = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw CLIError("cannot create a work folder in \(base): \(String(cString: strerror(errno)))")
        }
        let newDir = work + "/device"
        // A store inside the device directory is written there under its name and moves with the directory;
        // one elsewhere is written beside its target (same file system) and linked into place.
        func standard(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.path }
        let storeInDir = standard(PathText.folder(of: store)) == standard(dir)
        let storeName = (store as NSString).lastPathComponent
        let storeTmp = checkOnly ? work + "/store.sqlite" : storeInDir ? newDir + "/" + storeName : "\(store).restore-\(getpid())"
        var moved = false
        defer {
            if !moved {
                unlink(storeTmp)
                for f in m.files { unlink(newDir + "/" + f.name) }
                unlink(newDir + "/" + SeqGuardFile.fenceName)
                rmdir(newDir)
            }
            rmdir(work)
        }
        let check: StoreCopyCheck
        do {
            guard mkdir(newDir, 0o700) == 0 else { throw CLIError("cannot create \(newDir): \(String(cString: strerror(errno)))") }
            for f in m.files {
                let fd = open(newDir + "/" + f.name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw CLIError("cannot create \(newDir)/\(f.name): \(String(cString: strerror(errno)))") }
                defer { close(fd) }
                try reader.copy(f.size, to: fd, path: newDir + "/" + f.name)
                guard fsync(fd) == 0 else { throw CLIError("cannot sync \(newDir)/\(f.name)") }
            }
            let fd = open(storeTmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw CLIError("cannot create \(storeTmp): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            try reader.copy(m.storeSize, to: fd, path: storeTmp)
            guard fsync(fd) == 0 else { throw CLIError("cannot sync \(storeTmp)") }
            try reader.finish()
            check = try SQLiteStore.checkCopy(at: storeTmp)
        } catch let e as BackupError { throw CLIError("\(e)") } catch let e as StoreError {
            throw CLIError("the store in \(backup) does not check: \(e)")
        }
        let fence = RestoreFence(backupTime: m.createdAt, restoredTime: wallClockMilliseconds())
        if !checkOnly {
            try SeqGuardFile.writeFence(fence, inDirectory: newDir)
            try Self.refuseExisting(dir: dir, store: store)
            guard rename(newDir, dir) == 0 else { throw CLIError("cannot move the restored directory to \(dir): \(String(cString: strerror(errno)))") }
            moved = true
            if !storeInDir {
                guard link(storeTmp, store) == 0 else {
                    throw CLIError("cannot create \(store): \(String(cString: strerror(errno))); the device directory is restored at \(dir), "
                                   + "the store copy is at \(storeTmp): move it to \(store) by hand")
                }
                unlink(storeTmp)
            }
            for d in [PathText.folder(of: dir), PathText.folder(of: store)] {
                let dfd = open(d, O_RDONLY)
                if dfd >= 0 { _ = fsync(dfd); close(dfd) }
            }
        }
        let taken = TimeText.format(Int64(m.createdAt))
        if json {
            try printJSON(["backup": backup, "checkOnly": checkOnly, "takenAt": m.createdAt, "takenAtTime": taken, "producer": m.producer,
                           "deviceFiles": m.files.map(\.name), "storeBytes": Int(m.storeSize), "changes": check.changes,
                           "records": check.records, "storeSchemaVersion": check.schemaVersion, "fenced": !checkOnly])
        } else if checkOnly {
            print("backup \(backup) checks: taken \(taken) by \(m.producer); \(m.files.count) device files; store \(m.storeSize) bytes, "
                  + "\(check.changes) changes, \(check.records) records, schema \(check.schemaVersion); every chunk authenticated")
        } else {
            print("restored \(dir) (\(m.files.map(\.name).joined(separator: ", "))) and \(store) (\(check.changes) changes, \(check.records) records) "
                  + "from the backup taken \(taken)")
            print("FENCED: this device writes nothing until it has synced with a peer that holds its own logs (its station, relay box "
                  + "or HQ): `fieldsync sync HOST:PORT --dir \(dir) --store \(store) ...`, or start `fieldsync serve`. "
                  + "`fieldsync fence --dir \(dir)` shows the fence; docs/backup.md")
        }
    }

    /// Refuses an existing store (or companion) and a device directory that exists and is not empty.
    static func refuseExisting(dir: String, store: String) throws {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            var st = stat()
            if lstat(store + suffix, &st) == 0 {
                throw CLIError("exists: \(store + suffix) already exists; restore never overwrites a store: move it away or choose another --store")
            }
        }
        var st = stat()
        if lstat(dir, &st) == 0 {
            let empty = (st.st_mode & S_IFMT) == S_IFDIR && ((try? FileManager.default.contentsOfDirectory(atPath: dir).isEmpty) ?? false)
            guard empty else {
                throw CLIError("exists: \(dir) already exists; restore never overwrites a device directory: move it away or choose another --dir")
            }
        }
    }
}

/// `fieldsync fence`.
struct FenceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fence",
        abstract: "Show a restored device's write fence, or lift it by hand (exit 0; 3 while fenced).",
        discussion: """
            A device restored from a backup is fenced: it writes nothing until a sync with a peer that holds its own logs \
            has shown their heads (the fence then lifts by itself). Lift it by hand only for a device whose peers are all gone: \
            if it wrote anything after the backup that reached a peer, its next change forks its log (docs/backup.md).
            """)

    @Option(help: "The device's directory.") var dir: String
    @Flag(help: "Lift the fence now (needs --accept-fork-risk).") var lift = false
    @Flag(help: "Confirm that no peer holding this device's logs can be reached, and that a fork is accepted if one did.") var acceptForkRisk = false
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        if lift && !acceptForkRisk {
            throw ValidationError("--lift needs --accept-fork-risk: a device that wrote after its backup forks its log when it writes "
                                  + "before a peer has given those changes back; sync it with its station first (docs/backup.md)")
        }
    }

    func run() throws {
        let fence: RestoreFence?
        do { fence = try SeqGuardFile.readFence(inDirectory: dir) } catch { throw CLIError("\(error)") }
        if lift, let fence {
            try SeqGuardFile.liftFence(inDirectory: dir)
            FileHandle.standardError.write(Data(("""
                WARNING: the restore fence of \(dir) is lifted by hand. If this device wrote anything after its backup of \
                \(TimeText.format(Int64(fence.backupTime))) that reached any peer, its next change forks its log: every node that \
                meets both branches records a fork proof and `fieldsync forks` flags the device (docs/node.md, "Forks").\n
                """).utf8))
        }
        let fencedNow = lift ? false : fence != nil
        if json {
            var o: [String: Any] = ["dir": dir, "fenced": fencedNow, "lifted": lift && fence != nil]
            if let fence {
                o["backupTime"] = fence.backupTime
                o["restoredTime"] = fence.restoredTime
            }
            try printJSON(o)
        } else if let fence {
            let what = lift ? "was fenced" : "FENCED"
            print("\(what): restored \(TimeText.format(Int64(fence.restoredTime))) from a backup taken \(TimeText.format(Int64(fence.backupTime)))")
            if !lift {
                print("it writes nothing until a sync with a peer that holds its own logs (station, relay box, HQ) shows their heads; "
                      + "if every such peer is gone: fieldsync fence --dir \(dir) --lift --accept-fork-risk")
            }
        } else {
            print("not fenced")
        }
        if fencedNow { throw ExitCode(3) }
    }
}
