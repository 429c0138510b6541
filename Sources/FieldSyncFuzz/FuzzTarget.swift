import FieldSyncNode
import Foundation

/// The fuzz targets, by the name the fuzz script and the replay test use (docs/fuzzing.md).
public enum FuzzTarget: String, CaseIterable, Sendable {
    case encoding
    case certificate
    case enrollmentRequest = "enrollment-request"
    case change
    case grant
    case revocation
    case receipt
    case forkProof = "fork-proof"
    case reconMessage = "recon-message"
    case framing
    case beacon
    case handshakePayload = "handshake-payload"
    case configFile = "config-file"
    case importFile = "import"
    case session

    /// Runs one input through the target.
    public func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .encoding: fuzzEncoding(data)
        case .certificate: fuzzCertificate(data)
        case .enrollmentRequest: fuzzEnrollmentRequest(data)
        case .change: fuzzChange(data)
        case .grant: fuzzGrant(data)
        case .revocation: fuzzRevocation(data)
        case .receipt: fuzzReceipt(data)
        case .forkProof: fuzzForkProof(data)
        case .reconMessage: fuzzReconMessage(data)
        case .framing: fuzzFraming(data)
        case .beacon: fuzzBeacon(data)
        case .handshakePayload: fuzzHandshakePayload(data)
        case .configFile: fuzzConfigFile(data)
        case .importFile: fuzzImport(data)
        case .session: fuzzSession(data)
        }
    }

    /// Runs one input given as bytes.
    public func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }
}

/// The node's config file (docs/node.md), as an operator or a copied file hands it to `fieldsync serve`:
/// it decodes or throws `ConfigError`; a config that decodes is also checked (`check()`, as `serve` and
/// `config check` do: value ranges, addresses, and whether the named files exist).
public func fuzzConfigFile(_ data: UnsafeRawBufferPointer) {
    guard let config = try? NodeConfigFile.decode(Data(data)) else { return }
    _ = config.check()
}
