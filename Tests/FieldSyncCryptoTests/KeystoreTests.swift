import FieldSyncCore
import Foundation
import Testing

@testable import FieldSyncCrypto

@Suite struct KeystoreTests {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "fieldsync-keystore-\(Hex.encode(SecureRandom.bytes(6)))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func contents() throws -> KeystoreContents {
        let w = try World()
        let d = try Device(60, role: .backpack, scopes: ["longnan/wudu"], by: w.county)
        return KeystoreContents(signingKey: d.signing, agreementKey: d.agreement, certificate: d.certificate,
                                chain: [w.county.certificate!], root: w.root.signingKey.publicKey,
                                epochKeys: [EpochKey.generate(scope: World.scope("longnan/wudu"), epoch: 4)])
    }

    func keystoreCode(_ body: () throws -> Void) -> KeystoreError.Code? {
        do { try body() } catch let e as KeystoreError { return e.code } catch { return nil }
        return nil
    }

    @Test func passphraseRoundTripAndWrongPassphrase() throws {
        let path = dir + "/device.keystore"
        let c = try contents()
        let pw = Array("correct horse battery staple".utf8)
        try Keystore.write(c, to: path, protection: .passphrase(pw, .testingOnlyMinimum))
        let back = try Keystore.read(from: path, unlock: .passphrase(pw))
        #expect(back.signingKey.publicKey == c.signingKey.publicKey)
        #expect(back.agreementKey.publicKey == c.agreementKey.publicKey)
        #expect(back.certificate == c.certificate && back.chain == c.chain && back.root == c.root)
        #expect(back.epochKeys.count == 1 && back.epochKeys[0].key.constantTimeEquals(c.epochKeys[0].key))
        // No secret in clear on disk.
        let disk = [UInt8](FileManager.default.contents(atPath: path)!)
        #expect(!disk.contains(c.signingKey.seed.unsafeCopy()))
        // Wrong passphrase: typed error, file untouched.
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .passphrase(Array("wrong".utf8))) } == .wrongPassphraseOrKey)
        #expect([UInt8](FileManager.default.contents(atPath: path)!) == disk)
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .keyFile(path: dir + "/none")) } == .wrongUnlockMethod)
        // Refuses to overwrite unless asked.
        #expect(keystoreCode { try Keystore.write(c, to: path, protection: .passphrase(pw, .testingOnlyMinimum)) } == .alreadyExists)
        try Keystore.write(c, to: path, protection: .passphrase(pw, .testingOnlyMinimum), overwrite: true)
        // No temporary files left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["device.keystore"])
    }

    @Test func corruptedFile() throws {
        let path = dir + "/device.keystore"
        let pw = Array("pw".utf8)
        try Keystore.write(try contents(), to: path, protection: .passphrase(pw, .testingOnlyMinimum))
        let good = [UInt8](FileManager.default.contents(atPath: path)!)
        for i in [0, 5, 7, 30, good.count / 2, good.count - 1] {
            var bad = good
            bad[i] ^= 0x40
            try Data(bad).write(to: URL(fileURLWithPath: path))
            #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .passphrase(pw)) } == .corrupted)
        }
        try Data(good.prefix(20)).write(to: URL(fileURLWithPath: path))
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .passphrase(pw)) } == .corrupted)
        #expect(keystoreCode { _ = try Keystore.read(from: dir + "/missing", unlock: .passphrase(pw)) } == .io)
    }

    @Test func keyFileMustBe0600() throws {
        let kf = dir + "/store.key"
        try Keystore.createKeyFile(at: kf)
        let path = dir + "/device.keystore"
        try Keystore.write(try contents(), to: path, protection: .keyFile(path: kf))
        _ = try Keystore.read(from: path, unlock: .keyFile(path: kf))
        let before = [UInt8](FileManager.default.contents(atPath: path)!)
        chmod(kf, 0o644)
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .keyFile(path: kf)) } == .keyFilePermissions)
        #expect(keystoreCode { try Keystore.write(try contents(), to: path, protection: .keyFile(path: kf), overwrite: true) } == .keyFilePermissions)
        #expect([UInt8](FileManager.default.contents(atPath: path)!) == before)
        chmod(kf, 0o600)
        // Another key file does not open it.
        let other = dir + "/other.key"
        try Keystore.createKeyFile(at: other)
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .keyFile(path: other)) } == .wrongPassphraseOrKey)
        #expect(keystoreCode { try Keystore.createKeyFile(at: other) } == .alreadyExists)
        // A short key file is refused.
        let short = dir + "/short.key"
        FileManager.default.createFile(atPath: short, contents: Data([1, 2, 3]), attributes: [.posixPermissions: 0o600])
        #expect(keystoreCode { _ = try Keystore.read(from: path, unlock: .keyFile(path: short)) } == .keyFileInvalid)
    }
}
