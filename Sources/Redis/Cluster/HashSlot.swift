/// A Redis Cluster hash slot: CRC16 (XMODEM, as the cluster specification defines it) of the
/// key, or of its hash tag, modulo 16384.
///
/// A hash tag is the part of the key between the first `{` and the first `}` after it, when
/// that part is not empty: `{user1000}.following` and `{user1000}.followers` share a slot, so
/// one command (or script) may touch both.
public struct HashSlot: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The slot number, 0 ..< 16384.
    public let rawValue: UInt16

    /// Slots in a cluster.
    public static let count = 16384

    /// The slot of `rawValue`, or nil outside 0 ..< 16384.
    public init?(rawValue: Int) {
        guard (0..<Self.count).contains(rawValue) else { return nil }
        self.rawValue = UInt16(rawValue)
    }

    /// The slot of a key.
    public init(key: String) {
        self.init(key: Array(key.utf8))
    }

    /// The slot of a key's bytes.
    public init(key: some Collection<UInt8>) {
        var bytes = key[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")) {
            let afterOpen = bytes.index(after: open)
            if let close = bytes[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen {
                bytes = bytes[afterOpen..<close]
            }
        }
        rawValue = Self.crc16(bytes) & 0x3FFF
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
    public static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte)) & 0xFF]
        }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    public static func < (lhs: HashSlot, rhs: HashSlot) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(rawValue) }
}
