import FieldSyncCore
import FieldSyncProtocol
import Foundation
import GRDB
import Testing
@testable import FieldSyncStore

#if canImport(Glibc)
import Glibc
#endif

/// Issue 13 item 6: the store file is never a symbolic link, an existing file that is not a store is
/// never turned into one, a read-only open never creates a store, and the files are mode 0600.
@Suite struct StoreFileTests {
    static func mode(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o777 : nil
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func code(_ body: () throws -> Void) -> StoreError.Code? {
        do { try body() } catch let e as StoreError { return e.code } catch { return nil }
        return nil
    }

    /// Before the fix SQLite followed the link and created its target.
    @Test func danglingSymlinkIsRefusedAndItsTargetNotCreated() throws {
        let path = TestFiles.tempPath()
        let target = path + ".target"
        #expect(symlink(target, path) == 0)
        #expect(Self.code { _ = try SQLiteStore(path: path, sealer: TestKeys.sealer) } == .ioError)
        #expect(!Self.exists(target), "the link's target is not created")
    }

    @Test func symlinkToARealStoreIsRefused() throws {
        let real = TestFiles.tempPath()
        _ = try SQLiteStore(path: real, sealer: TestKeys.sealer)
        let link = real + ".link"
        #expect(symlink(real, link) == 0)
        do {
            _ = try SQLiteStore(path: link, sealer: TestKeys.sealer)
            Issue.record("a symbolic link was opened as a store")
        } catch let e as StoreError {
            #expect(e.code == .ioError && e.detail.contains("symbolic link"))
        }
        // A link planted at a companion file is refused too.
        let other = TestFiles.tempPath()
        _ = try SQLiteStore(path: other, sealer: TestKeys.sealer)
        #expect(symlink(other + ".elsewhere", other + "-wal") == 0)
        #expect(Self.code { _ = try SQLiteStore(path: other, sealer: TestKeys.sealer) } == .ioError)
        #expect(!Self.exists(other + ".elsewhere"))
    }

    /// Before the fix an empty file became a store (`fieldsync list` initialised it).
    @Test func emptyFileIsNotTurnedIntoAStore() throws {
        let path = TestFiles.tempPath()
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        #expect(Self.code { _ = try SQLiteStore(path: path, sealer: TestKeys.sealer) } == .badDatabase)
        #expect(Self.code { _ = try SQLiteStore(path: path, sealer: TestKeys.sealer, create: false) } == .badDatabase)
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == 0, "left untouched")
    }

    @Test func anotherProgramsDatabaseIsLeftUntouched() throws {
        let path = TestFiles.tempPath()
        do {
            let q = try DatabaseQueue(path: path)
            try q.write { try $0.execute(sql: "CREATE TABLE contacts (name TEXT)") }
        }
        #expect(Self.code { _ = try SQLiteStore(path: path, sealer: TestKeys.sealer) } == .badDatabase)
        let tables = try DatabaseQueue(path: path).read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        #expect(tables == ["contacts"])
    }

    @Test func readOnlyOpenDoesNotCreateAStore() throws {
        let path = TestFiles.tempPath()
        #expect(Self.code { _ = try SQLiteStore(path: path, sealer: TestKeys.sealer, create: false) } == .ioError)
        #expect(!Self.exists(path))
        _ = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        _ = try SQLiteStore(path: path, sealer: TestKeys.sealer, create: false)  // an existing store opens
    }

    /// Before the fix the store and its companions were 0644 under the usual umask 022.
    @Test func storeFilesAreMode0600() throws {
        let old = umask(0o022)
        defer { umask(old) }
        let path = TestFiles.tempPath()
        var f = ChangeFactory()
        let c = f.next(ChangeFactory.log())
        let s = try SQLiteStore(path: path, sealer: TestKeys.sealer)
        _ = try s.commit(CommitBatch(changes: [c], edits: [(StoreConformanceTests.incident(1), c.hash)]))
        #expect(Self.mode(path) == 0o600)
        #expect(Self.exists(path + "-wal") && Self.mode(path + "-wal") == 0o600)
        #expect(Self.exists(path + "-shm") && Self.mode(path + "-shm") == 0o600)
        // An existing store made readable by others is tightened when opened.
        let loose = TestFiles.tempPath()
        _ = try SQLiteStore(path: loose, sealer: TestKeys.sealer)
        #expect(chmod(loose, 0o644) == 0)
        _ = try SQLiteStore(path: loose, sealer: TestKeys.sealer)
        #expect(Self.mode(loose) == 0o600)
    }
}
