// What `fieldsync --version` prints: the release, and the versions of the formats a node shares with
// others (the wire protocol) or keeps on disk (the store schema, the backup file).

import FieldSyncProtocol
import FieldSyncStore

/// The release and the format versions of this build.
public enum FieldSyncVersion {
    /// The release (also the Debian package version, docs/packaging).
    public static let release = "0.1.0"

    /// The sync protocol version: the handshake's version byte (Protocols/handshake.md); peers of another
    /// version fail the handshake with `unsupportedVersion`.
    public static var protocolVersion: UInt8 { NetworkParameters.protocolVersion }

    /// The store schema version (`SQLiteStore.schemaVersion`): migrations are append-only, and a store of
    /// a newer schema is refused on open.
    public static var storeSchemaVersion: Int { SQLiteStore.schemaVersion }

    /// The text of `fieldsync --version`, four lines.
    public static var text: String {
        """
        fieldsync \(release)
        protocol \(protocolVersion) (Protocols/handshake.md)
        store schema \(storeSchemaVersion) (\(SQLiteStore.schemaMigration))
        backup format \(BackupArchive.version) (Protocols/backup.md)
        """
    }
}
