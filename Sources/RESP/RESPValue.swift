public import NIOCore

/// A decoded RESP2 or RESP3 value.
///
/// String-like payloads are kept as `ByteBuffer` slices of the buffer they were read from,
/// so decoding a bulk string never copies its bytes.
public enum RESPValue: Sendable, Equatable {
    /// `+OK\r\n`
    case simpleString(ByteBuffer)
    /// `-ERR message\r\n`
    case simpleError(ByteBuffer)
    /// `:42\r\n`
    case integer(Int64)
    /// `$5\r\nhello\r\n`; RESP2's null bulk string (`$-1\r\n`) decodes as ``null``.
    case bulkString(ByteBuffer)
    /// `*2\r\n...`; RESP2's null array (`*-1\r\n`) decodes as ``null``.
    case array([RESPValue])
    /// RESP3 `_\r\n`, and the RESP2 null bulk string and null array.
    case null
    /// RESP3 `#t\r\n` / `#f\r\n`
    case boolean(Bool)
    /// RESP3 `,3.14\r\n` (also `inf`, `-inf`, `nan`)
    case double(Double)
    /// RESP3 `(12345678901234567890\r\n`, kept as its decimal digits.
    case bigNumber(ByteBuffer)
    /// RESP3 `!21\r\nSYNTAX invalid syntax\r\n`
    case bulkError(ByteBuffer)
    /// RESP3 `=15\r\ntxt:Some string\r\n`: the three-letter format and the content.
    case verbatimString(format: String, content: ByteBuffer)
    /// RESP3 `%1\r\n...`: key/value pairs in the order the server sent them.
    case map([RESPPair])
    /// RESP3 `~2\r\n...`
    case set([RESPValue])
    /// RESP3 `>3\r\n...`: an out-of-band push message (pub/sub, invalidation).
    case push([RESPValue])

    /// The payload of a string-like value (simple, bulk or verbatim string) as UTF-8 text.
    public var string: String? {
        switch self {
        case .simpleString(let b), .bulkString(let b), .verbatimString(_, let b): String(buffer: b)
        default: nil
        }
    }

    /// The payload of a string-like value as bytes.
    public var bytes: ByteBuffer? {
        switch self {
        case .simpleString(let b), .bulkString(let b), .verbatimString(_, let b): b
        default: nil
        }
    }

    /// The error text when the value is a simple or bulk error.
    public var errorMessage: String? {
        switch self {
        case .simpleError(let b), .bulkError(let b): String(buffer: b)
        default: nil
        }
    }

    /// `true` when the value is ``null``.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

/// One key/value pair of a RESP3 map.
public struct RESPPair: Sendable, Equatable {
    /// The key.
    public var key: RESPValue
    /// The value.
    public var value: RESPValue

    /// Creates a pair.
    public init(key: RESPValue, value: RESPValue) {
        self.key = key
        self.value = value
    }
}
