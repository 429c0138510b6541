// Values stored in record fields.

/// A geographic position with an optional place name.
public struct Location: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// Latitude in degrees, -90...90.
    public var latitude: Double
    /// Longitude in degrees, -180...180.
    public var longitude: Double
    /// Human place name (village, road, landmark); may be empty.
    public var placeName: String

    /// Creates a location; range checks happen in `validate()` and in decoding.
    public init(latitude: Double, longitude: Double, placeName: String = "") {
        self.latitude = latitude
        self.longitude = longitude
        self.placeName = placeName
    }

    /// Checks the coordinate ranges.
    /// - Returns: a reason string if invalid, nil if valid.
    public func invalidReason() -> String? {
        if !latitude.isFinite || !(-90...90).contains(latitude) { return "latitude \(latitude) is outside -90...90" }
        if !longitude.isFinite || !(-180...180).contains(longitude) {
            return "longitude \(longitude) is outside -180...180"
        }
        return nil
    }

    public var description: String {
        placeName.isEmpty ? "(\(latitude), \(longitude))" : "\(placeName) (\(latitude), \(longitude))"
    }

    public func encode(to writer: inout ByteWriter) {
        writer.writeDouble(latitude)
        writer.writeDouble(longitude)
        writer.writeString(placeName)
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        latitude = try reader.readDouble()
        longitude = try reader.readDouble()
        placeName = try reader.readString()
        if let reason = invalidReason() { throw DecodingError(.invalidValue, at: at, reason) }
    }
}

/// A field value. The tag byte of each case is normative (Protocols/encoding.md).
public enum FieldValue: Hashable, Sendable, CanonicalCodable, CustomStringConvertible {
    /// No value (a cleared field). Tag 0.
    case null
    /// A UTF-8 string. Tag 1.
    case string(String)
    /// A signed 64-bit integer. Tag 2.
    case int(Int64)
    /// A finite double. Tag 3.
    case double(Double)
    /// A boolean. Tag 4.
    case bool(Bool)
    /// A point in time, milliseconds since the Unix epoch (wall time, as entered). Tag 5.
    case time(Int64)
    /// A location. Tag 6.
    case location(Location)
    /// A reference to another record. Tag 7.
    case record(RecordID)
    /// A reference to a device. Tag 8.
    case device(DeviceID)
    /// A symbol from a closed set named by the schema (category, priority, ...). Tag 9.
    case symbol(String)

    /// The tag byte.
    public var tag: UInt8 {
        switch self {
        case .null: 0
        case .string: 1
        case .int: 2
        case .double: 3
        case .bool: 4
        case .time: 5
        case .location: 6
        case .record: 7
        case .device: 8
        case .symbol: 9
        }
    }

    public var description: String {
        switch self {
        case .null: "null"
        case let .string(s): "\"\(s)\""
        case let .int(i): "\(i)"
        case let .double(d): "\(d)"
        case let .bool(b): "\(b)"
        case let .time(t): "t\(t)"
        case let .location(l): l.description
        case let .record(r): "record:\(r)"
        case let .device(d): "device:\(d)"
        case let .symbol(s): s
        }
    }

    public func encode(to writer: inout ByteWriter) {
        writer.writeByte(tag)
        switch self {
        case .null: break
        case let .string(s): writer.writeString(s)
        case let .int(i): writer.writeSignedVarint(i)
        case let .double(d): writer.writeDouble(d)
        case let .bool(b): writer.writeBool(b)
        case let .time(t): writer.writeSignedVarint(t)
        case let .location(l): l.encode(to: &writer)
        case let .record(r): r.encode(to: &writer)
        case let .device(d): d.encode(to: &writer)
        case let .symbol(s): writer.writeString(s)
        }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let at = reader.offset
        switch try reader.readByte() {
        case 0: self = .null
        case 1: self = .string(try reader.readString())
        case 2: self = .int(try reader.readSignedVarint())
        case 3: self = .double(try reader.readDouble())
        case 4: self = .bool(try reader.readBool())
        case 5: self = .time(try reader.readSignedVarint())
        case 6: self = .location(try Location(from: &reader))
        case 7: self = .record(try RecordID(from: &reader))
        case 8: self = .device(try DeviceID(from: &reader))
        case 9: self = .symbol(try reader.readString())
        case let t: throw DecodingError(.unknownTag, at: at, "field value tag \(t)")
        }
    }
}
