/// A change's delivery priority, most urgent first. The one definition: the change header carries it
/// in clear as one byte (`rawValue`, Protocols/change.md §2) so that relays forward urgent changes first,
/// the incident schema stores it as the symbol `name`, and the CLI parses that name.
public enum Priority: UInt8, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    /// Officer safety, urgent dispatch.
    case urgent = 0
    /// High.
    case high = 1
    /// Normal.
    case normal = 2
    /// Low (bulk, attachments).
    case low = 3

    /// The name in records and on the command line: `urgent`, `high`, `normal` or `low`.
    public var name: String {
        switch self {
        case .urgent: "urgent"
        case .high: "high"
        case .normal: "normal"
        case .low: "low"
        }
    }

    /// The priority named `name`, or nil.
    public init?(name: String) {
        guard let p = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = p
    }

    /// The name.
    public var description: String { name }

    /// Lower raw value = more urgent = sorts first.
    public static func < (a: Priority, b: Priority) -> Bool { a.rawValue < b.rawValue }
}
