// The backup file of `fieldsync backup` / `fieldsync restore` (docs/backup.md): one file holding a
// device directory and a copy of its store, encrypted and authenticated in chunks. The byte format is
// normative: Protocols/backup.md (with a test vector in Protocols/vectors/backup.json).

import FieldSyncCore
import FieldSyncCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a backup could not be written or read; `description` says what to do.
public struct BackupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What failed. Raw values are stable (`--json` output).
    public enum Code: String, Sendable, Equatable {
        /// Not a FieldSync backup (magic), or a format version this build does not read.
        case notABackup
        /// The passphrase or key file does not open this backup (the header is intact).
        case wrongPassphraseOrKey
        /// The backup was sealed with the other method (passphrase vs key file).
        case wrongUnlockMethod
        /// The file is shorter than its header says: a copy cut short.
        case truncated
        /// The header's checksum, a chunk's authentication or the contents do not check: damaged or
        /// tampered with.
        case damaged
        /// The target exists (a store, a device directory, an output file); nothing was overwritten.
        case exists
        /// A file-system operation failed.
        case io
    }

    /// The code.
    public var code: Code
    /// What happened, with the path.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(code.rawValue): \(detail)" }
}

/// How a backup is protected: Argon2id of a passphrase (with the cost for a new backup), or a 32-byte
/// key file (mode 0600; `Keystore.createKeyFile` makes one). The keystore's own choice, reused.
public typealias BackupProtection = KeystoreProtection

/// How a backup is opened (the Argon2id parameters come from the file).
public typealias BackupUnlock = KeystoreUnlock

/// What a backup holds, listed before the contents (Protocols/backup.md §3).
public struct BackupManifest: Sendable, Equatable {
    /// One file of the device directory.
    public struct File: Sendable, Equatable {
        /// Its name in the directory (no `/`).
        public var name: String
        /// Its size in bytes.
        public var size: UInt64
        /// Creates an entry.
        public init(name: String, size: UInt64) {
            self.name = name
            self.size = size
        }
    }

    /// When the backup was taken (the store copy's time), ms since the Unix epoch.
    public var createdAt: UInt64
    /// The program that wrote it (`fieldsync 0.1.0`).
    public var producer: String
    /// The store's schema version (`SQLiteStore.schemaVersion` of the copy).
    public var storeSchemaVersion: UInt64
    /// The device directory's files, in the order their bytes follow.
    public var files: [File]
    /// The store copy's size in bytes (its bytes follow the files').
    public var storeSize: UInt64

    /// Creates a manifest.
    public init(createdAt: UInt64, producer: String, storeSchemaVersion: UInt64, files: [File], storeSize: UInt64) {
        self.createdAt = createdAt
        self.producer = producer
        self.storeSchemaVersion = storeSchemaVersion
        self.files = files
        self.storeSize = storeSize
    }

    /// The canonical encoding (Protocols/backup.md §3).
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 128)
        w.writeVarint(createdAt)
        w.writeString(producer)
        w.writeVarint(storeSchemaVersion)
        w.writeVarint(UInt64(files.count))
        for f in files {
            w.writeString(f.name)
            w.writeVarint(f.size)
        }
        w.writeVarint(storeSize)
        return w.bytes
    }

    /// Decodes and checks a manifest: file names are plain names (no `/`, not `.` or `..`, no NUL, at
    /// most 255 bytes), unique, at most 4,096 files.
    /// - Throws: `DecodingError`.
    public init(encoded bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes)
        createdAt = try r.readVarint()
        producer = try r.readString()
        storeSchemaVersion = try r.readVarint()
        let n = try r.readVarint()
        guard n <= 4_096 else { throw DecodingError(.lengthTooLarge, at: 0, "\(n) files") }
        var seen = Set<String>()
        files = []
        for _ in 0..<n {
            let name = try r.readString()
            let size = try r.readVarint()
            guard Self.isPlainName(name), seen.insert(name).inserted else {
                throw DecodingError(.invalidValue, at: 0, "file name \(name.debugDescription) is not a plain, unique file name")
            }
            files.append(File(name: name, size: size))
        }
        storeSize = try r.readVarint()
        try r.expectEnd()
    }

    /// Whether `name` may name a file in the device directory.
    public static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && name.utf8.count <= 255 && !name.contains("/") && !name.utf8.contains(0)
    }

    /// The plaintext length: the manifest (length-prefixed), then every file, then the store.
    var plaintextLength: UInt64 {
        var w = ByteWriter()
        w.writeBytes(encoded)
        return UInt64(w.bytes.count) + files.reduce(0) { $0 + $1.size } + storeSize
    }
}

/// The backup file format (Protocols/backup.md): a header, then the plaintext (manifest, device files,
/// store copy) sealed in chunks with XChaCha20-Poly1305 (the STREAM construction: a nonce prefix and a
/// chunk counter, the last chunk flagged), so a file of any size is sealed and opened in constant memory
/// and a truncated, reordered or altered file is refused.
public enum BackupArchive {
    /// The file's first four bytes.
    public static let magic: [UInt8] = Array("FSBK".utf8)
    /// The format version written and read.
    public static let version: UInt8 = 1
    /// Plaintext bytes per chunk written by this build (the reader takes the value from the header).
    public static let defaultChunkSize = 1 << 20
    /// Largest chunk accepted from a file (16 MiB), so a damaged header cannot exhaust memory.
    static let maxChunkSize: UInt64 = 16 << 20
    static let kdfArgon2id: UInt8 = 1
    static let kdfKeyFile: UInt8 = 2
    /// Largest Argon2id cost accepted from a file (the keystore's caps).
    static let maxMemLimit: UInt64 = 4 << 30
    static let maxOpsLimit: UInt64 = 64
    static let checkLabel = Array("fieldsync/v1/backup-check".utf8)
    static let streamLabel = Array("fieldsync/v1/backup-stream".utf8)

    /// Where a part of the plaintext comes from when writing.
    public enum Source: Sendable {
        /// Bytes in memory.
        case bytes([UInt8])
        /// A file read in chunks (it must keep the size the manifest gives).
        case file(String)
    }

    /// Writes a backup to `path` (which must not exist): the manifest, then `files` (one source per
    /// manifest file, in order), then `store`. Created with mode 0600 under a temporary name, synced,
    /// then linked into place.
    /// - Parameters:
    ///   - salt, noncePrefix: for test vectors only; random when nil.
    /// - Throws: `BackupError`.
    public static func write(to path: String, manifest: BackupManifest, files: [Source], store: Source,
                             protection: BackupProtection, chunkSize: Int = defaultChunkSize,
                             salt: [UInt8]? = nil, noncePrefix: [UInt8]? = nil) throws(BackupError) {
        precondition(files.count == manifest.files.count, "one source per manifest file")
        precondition(chunkSize > 0 && UInt64(chunkSize) <= maxChunkSize)
        if FileManager.default.fileExists(atPath: path) { throw BackupError(.exists, "\(path) already exists; choose another --out") }
        let tmp = "\(path).tmp-\(getpid())"
        unlink(tmp)
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BackupError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        do throws(BackupError) {
            var sealer = try Sealer(fd: fd, path: tmp, manifest: manifest, protection: protection, chunkSize: chunkSize,
                                    salt: salt, noncePrefix: noncePrefix)
            var w = ByteWriter()
            w.writeBytes(manifest.encoded)
            try sealer.append(w.bytes)
            for (entry, source) in zip(manifest.files, files) { try sealer.append(source, size: entry.size) }
            try sealer.append(store, size: manifest.storeSize)
            try sealer.finish()
            guard fsync(fd) == 0 else { throw BackupError(.io, "cannot sync \(tmp): \(String(cString: strerror(errno)))") }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        defer { unlink(tmp) }
        guard link(tmp, path) == 0 else {
            if errno == EEXIST { throw BackupError(.exists, "\(path) already exists; choose another --out") }
            throw BackupError(.io, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        syncFolder(of: path)
    }

    /// Opens a backup for reading: reads and checks the header (magic, version, checksum), the file's
    /// length against it (a shorter file is `truncated`), and the key (`wrongPassphraseOrKey`), then
    /// reads the manifest. Contents are read in order with `Reader.copy` / `Reader.skip`.
    /// - Throws: `BackupError`.
    public static func open(_ path: String, unlock: BackupUnlock) throws(BackupError) -> Reader {
        try Reader(path: path, unlock: unlock)
    }

    // MARK: Header

    /// The header's fields (Protocols/backup.md §2).
    struct Header {
        var kdf: UInt8
        var salt: [UInt8]
        var params: Argon2id.Parameters
        var noncePrefix: [UInt8]
        var chunkSize: UInt64
        var length: UInt64

        /// The bytes up to and including the checksum.
        var summed: [UInt8] {
            var w = ByteWriter(capacity: 96)
            w.writeRaw(BackupArchive.magic)
            w.writeByte(BackupArchive.version)
            w.writeByte(kdf)
            if kdf == BackupArchive.kdfArgon2id {
                w.writeRaw(salt)
                w.writeVarint(params.opsLimit)
                w.writeVarint(params.memLimit)
            }
            w.writeRaw(noncePrefix)
            w.writeVarint(chunkSize)
            w.writeVarint(length)
            w.writeRaw(try! BLAKE2b.hash(w.bytes, outputLength: 32))  // 32 is a valid length
            return w.bytes
        }

        /// How many chunks the plaintext takes (at least one: an empty plaintext is one empty chunk).
        var chunks: UInt64 { max(1, (length + chunkSize - 1) / chunkSize) }
        /// The sealed size of the contents.
        var sealedLength: UInt64 { length + 16 * chunks }
    }

    static func deriveKeys(_ header: Header, material: SecretBytes) throws(BackupError) -> (check: [UInt8], stream: SecretBytes) {
        do {
            let check = try BLAKE2b.hash(checkLabel + header.summed, outputLength: 32, key: material)
            var stream = try BLAKE2b.hash(streamLabel, outputLength: 32, key: material)
            defer { for i in stream.indices { stream[i] = 0 } }
            return (check, SecretBytes(copying: stream))
        } catch { throw BackupError(.io, "key derivation failed: \(error)") }
    }

    static func chunkNonce(_ prefix: [UInt8], _ index: UInt64) -> [UInt8] {
        var n = prefix
        for i in 0..<8 { n.append(UInt8(truncatingIfNeeded: index >> (8 * UInt64(i)))) }
        return n
    }

    static func material(for protection: BackupProtection, salt: [UInt8]) throws(BackupError) -> SecretBytes {
        switch protection {
        case let .passphrase(pw, params):
            guard !pw.isEmpty else { throw BackupError(.io, "the backup passphrase is empty") }
            do { return try Argon2id.deriveKey(passphrase: pw, salt: salt, outputLength: 32, parameters: params) } catch {
                throw BackupError(.io, "Argon2id failed (\(params)): \(error)")
            }
        case let .keyFile(path):
            do { return try Keystore.readKeyFile(path) } catch { throw BackupError(.io, "\(error)") }
        }
    }

    // MARK: Writing

    struct Sealer {
        let fd: Int32
        let path: String
        let header: Header
        let key: SecretBytes
        let ad: [UInt8]
        var buffer: [UInt8] = []
        var index: UInt64 = 0
        var consumed: UInt64 = 0

        init(fd: Int32, path: String, manifest: BackupManifest, protection: BackupProtection, chunkSize: Int,
             salt: [UInt8]?, noncePrefix: [UInt8]?) throws(BackupError) {
            self.fd = fd
            self.path = path
            let kdf: UInt8
            var params = Argon2id.Parameters(opsLimit: 0, memLimit: 0)
            if case let .passphrase(_, p) = protection {
                kdf = BackupArchive.kdfArgon2id
                params = p
            } else { kdf = BackupArchive.kdfKeyFile }
            let s = salt ?? SecureRandom.bytes(Argon2id.saltLength)
            header = Header(kdf: kdf, salt: kdf == BackupArchive.kdfArgon2id ? s : [], params: params,
                            noncePrefix: noncePrefix ?? SecureRandom.bytes(16), chunkSize: UInt64(chunkSize),
                            length: manifest.plaintextLength)
            let keys = try BackupArchive.deriveKeys(header, material: try BackupArchive.material(for: protection, salt: s))
            key = keys.stream
            ad = header.summed + keys.check
            try writeAll(ad)
            buffer.reserveCapacity(chunkSize)
        }

        func writeAll(_ bytes: [UInt8]) throws(BackupError) {
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BackupError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }

        mutating func append(_ bytes: [UInt8]) throws(BackupError) {
            var rest = bytes[...]
            while !rest.isEmpty {
                let take = min(rest.count, Int(header.chunkSize) - buffer.count)
                buffer += rest.prefix(take)
                rest = rest.dropFirst(take)
                consumed += UInt64(take)
                // A full chunk is sealed once more plaintext is known to follow (the last one is flagged).
                if buffer.count == Int(header.chunkSize), consumed < header.length { try seal(final: false) }
            }
        }

        mutating func append(_ source: Source, size: UInt64) throws(BackupError) {
            switch source {
            case let .bytes(b):
                guard UInt64(b.count) == size else { throw BackupError(.io, "a part changed size while the backup was written") }
                try append(b)
            case let .file(p):
                let inFD = Glibc.open(p, O_RDONLY | O_CLOEXEC)
                guard inFD >= 0 else { throw BackupError(.io, "cannot read \(p): \(String(cString: strerror(errno)))") }
                defer { close(inFD) }
                var left = size
                var chunk = [UInt8](repeating: 0, count: 1 << 20)
                while left > 0 {
                    let want = Int(min(UInt64(chunk.count), left))
                    let n = chunk.withUnsafeMutableBytes { Glibc.read(inFD, $0.baseAddress, want) }
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw BackupError(.io, "\(p) is shorter than when the backup began") }
                    try append(Array(chunk[0..<n]))
                    left -= UInt64(n)
                }
            }
        }

        mutating func seal(final: Bool) throws(BackupError) {
            do {
                let sealed = try XChaCha20Poly1305.seal(buffer, key: key, nonce: BackupArchive.chunkNonce(header.noncePrefix, index),
                                                        associatedData: ad + [final ? 1 : 0])
                try writeAll(sealed)
            } catch let e as BackupError { throw e } catch { throw BackupError(.io, "sealing failed: \(error)") }
            index += 1
            buffer.removeAll(keepingCapacity: true)
        }

        mutating func finish() throws(BackupError) {
            precondition(consumed == header.length, "the manifest's sizes and the parts written differ")
            try seal(final: true)
            precondition(index == header.chunks)
        }
    }

    // MARK: Reading

    /// Reads a backup's contents in order, opening one chunk at a time.
    public final class Reader {
        /// The manifest.
        public private(set) var manifest: BackupManifest
        let fd: Int32
        let path: String
        let header: Header
        let key: SecretBytes
        let ad: [UInt8]
        var index: UInt64 = 0
        var plain: [UInt8] = []
        var offset = 0

        init(path: String, unlock: BackupUnlock) throws(BackupError) {
            self.path = path
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw BackupError(.io, "cannot read \(path): \(String(cString: strerror(errno)))") }
            self.fd = fd
            do throws(BackupError) {
                var st = stat()
                guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { throw BackupError(.io, "\(path) is not a regular file") }
                let start = try Self.readUpTo(fd, 256, path)
                var r = ByteReader(start)
                let header: Header
                do {
                    guard start.count >= 6, try r.readRaw(4) == BackupArchive.magic else {
                        throw BackupError(.notABackup, "\(path) is not a FieldSync backup")
                    }
                    let version = try r.readByte()
                    guard version == BackupArchive.version else {
                        throw BackupError(.notABackup, "\(path) is a backup of format version \(version); this fieldsync reads version \(BackupArchive.version)")
                    }
                    let kdf = try r.readByte()
                    var salt: [UInt8] = []
                    var params = Argon2id.Parameters(opsLimit: 0, memLimit: 0)
                    switch kdf {
                    case BackupArchive.kdfArgon2id:
                        salt = try r.readRaw(Argon2id.saltLength)
                        params = Argon2id.Parameters(opsLimit: try r.readVarint(), memLimit: try r.readVarint())
                    case BackupArchive.kdfKeyFile: break
                    default: throw BackupError(.damaged, "\(path): unknown key derivation \(kdf) (the header is damaged)")
                    }
                    let prefix = try r.readRaw(16)
                    let chunkSize = try r.readVarint()
                    let length = try r.readVarint()
                    header = Header(kdf: kdf, salt: salt, params: params, noncePrefix: prefix, chunkSize: chunkSize, length: length)
                    let sum = try r.readRaw(32)
                    guard header.summed.suffix(32).elementsEqual(sum) else {
                        throw BackupError(.damaged, "\(path): the header's checksum does not match (damaged)")
                    }
                    guard (1...BackupArchive.maxChunkSize).contains(chunkSize), length < (1 << 50) else {
                        throw BackupError(.damaged, "\(path): chunk size \(chunkSize) or length \(length) out of range")
                    }
                    if kdf == BackupArchive.kdfArgon2id, params.opsLimit > BackupArchive.maxOpsLimit || params.memLimit > BackupArchive.maxMemLimit {
                        throw BackupError(.damaged, "\(path): Argon2id cost \(params) above the accepted maximum")
                    }
                } catch let e as BackupError { throw e } catch {
                    throw BackupError(start.count < 70 ? .truncated : .damaged, "\(path): the header does not decode (\(error))")
                }
                let checkAt = start.count - r.remaining
                let check: [UInt8]
                do { check = try r.readRaw(32) } catch { throw BackupError(.truncated, "\(path) ends inside its header") }
                let expected = UInt64(checkAt + 32) + header.sealedLength
                if UInt64(st.st_size) < expected {
                    throw BackupError(.truncated, "\(path) is truncated: \(st.st_size) bytes of the \(expected) its header announces "
                                      + "(an incomplete copy; use another copy of the backup)")
                }
                if UInt64(st.st_size) > expected {
                    throw BackupError(.damaged, "\(path) has \(UInt64(st.st_size) - expected) bytes after the end its header announces")
                }
                let material: SecretBytes
                switch (header.kdf, unlock) {
                case (BackupArchive.kdfArgon2id, .passphrase(let pw)):
                    material = try BackupArchive.material(for: .passphrase(pw, header.params), salt: header.salt)
                case (BackupArchive.kdfKeyFile, .keyFile(let kf)):
                    material = try BackupArchive.material(for: .keyFile(path: kf), salt: [])
                case (BackupArchive.kdfArgon2id, .keyFile):
                    throw BackupError(.wrongUnlockMethod, "\(path) is protected by a passphrase; give --backup-passphrase-file")
                default:
                    throw BackupError(.wrongUnlockMethod, "\(path) is protected by a key file; give --backup-key-file")
                }
                let keys = try BackupArchive.deriveKeys(header, material: material)
                guard keys.check == check else {
                    throw BackupError(.wrongPassphraseOrKey, "the passphrase or key file does not open \(path) (its header is intact)")
                }
                self.header = header
                key = keys.stream
                ad = header.summed + check
                guard lseek(fd, off_t(checkAt + 32), SEEK_SET) >= 0 else { throw BackupError(.io, "cannot seek in \(path)") }
                manifest = BackupManifest(createdAt: 0, producer: "", storeSchemaVersion: 0, files: [], storeSize: 0)
                let length = try readLength()
                guard length <= 1 << 20 else { throw BackupError(.damaged, "\(path): manifest of \(length) bytes") }
                let bytes = try read(length)
                do { manifest = try BackupManifest(encoded: bytes) } catch {
                    throw BackupError(.damaged, "\(path): the manifest does not decode (\(error))")
                }
                var w = ByteWriter()
                w.writeBytes(bytes)
                let total = UInt64(w.bytes.count) + manifest.files.reduce(0) { $0 + $1.size } + manifest.storeSize
                guard total == header.length else {
                    throw BackupError(.damaged, "\(path): the manifest's sizes (\(total) bytes) disagree with the header (\(header.length))")
                }
            } catch {
                close(fd)
                throw error
            }
        }

        deinit { close(fd) }

        static func readUpTo(_ fd: Int32, _ count: Int, _ path: String) throws(BackupError) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                let n = out[got...].withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw BackupError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                got += n
            }
            return Array(out[0..<got])
        }

        /// Opens the next chunk.
        func nextChunk() throws(BackupError) {
            guard index < header.chunks else { throw BackupError(.damaged, "\(path): the contents run past the last chunk") }
            let final = index == header.chunks - 1
            let plainSize = final ? header.length - header.chunkSize * index : header.chunkSize
            let sealed = try Self.readUpTo(fd, Int(plainSize) + 16, path)
            guard sealed.count == Int(plainSize) + 16 else { throw BackupError(.truncated, "\(path) ends inside chunk \(index)") }
            do {
                plain = try XChaCha20Poly1305.open(sealed, key: key, nonce: BackupArchive.chunkNonce(header.noncePrefix, index),
                                                   associatedData: ad + [final ? 1 : 0])
            } catch {
                let at = UInt64(ad.count) + index * (header.chunkSize + 16)
                throw BackupError(.damaged, "\(path): chunk \(index) of \(header.chunks) (bytes \(at)..<\(at + UInt64(sealed.count))) "
                                  + "does not authenticate: the file was damaged or tampered with; use another copy")
            }
            offset = 0
            index += 1
        }

        func read(_ count: Int) throws(BackupError) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(count)
            while out.count < count {
                if offset == plain.count { try nextChunk() }
                let take = min(count - out.count, plain.count - offset)
                out += plain[offset..<(offset + take)]
                offset += take
            }
            return out
        }

        func readLength() throws(BackupError) -> Int {
            var value: UInt64 = 0
            for i in 0..<10 {
                let b = try read(1)[0]
                value |= UInt64(b & 0x7f) << (7 * UInt64(i))
                if b & 0x80 == 0 { return Int(clamping: value) }
            }
            throw BackupError(.damaged, "\(path): bad length")
        }

        /// Copies the next `size` plaintext bytes to `fd` (a file being restored).
        public func copy(_ size: UInt64, to out: Int32, path outPath: String) throws(BackupError) {
            var left = size
            while left > 0 {
                if offset == plain.count { try nextChunk() }
                let take = Int(min(left, UInt64(plain.count - offset)))
                var written = 0
                while written < take {
                    let n = plain[(offset + written)..<(offset + take)].withUnsafeBytes { Glibc.write(out, $0.baseAddress, $0.count) }
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw BackupError(.io, "cannot write \(outPath): \(String(cString: strerror(errno)))")
                    }
                    written += n
                }
                offset += take
                left -= UInt64(take)
            }
        }

        /// Reads the next `size` plaintext bytes into memory (a device-directory file).
        public func bytes(_ size: UInt64) throws(BackupError) -> [UInt8] { try read(Int(size)) }

        /// Checks that every byte was read and the last chunk was the final one.
        public func finish() throws(BackupError) {
            guard index == header.chunks, offset == plain.count else {
                throw BackupError(.damaged, "\(path): contents left after the store copy")
            }
        }
    }

    static func syncFolder(of path: String) {
        let dfd = Glibc.open(PathText.folder(of: path), O_RDONLY)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}
