import Testing
@testable import FieldSyncCrypto
