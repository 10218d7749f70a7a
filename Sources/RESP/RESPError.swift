/// An error found while decoding RESP bytes. The connection that produced it cannot be trusted
/// any more: its stream is no longer aligned on frame boundaries.
public struct RESPError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Code: Sendable, Hashable {
        case invalidTypeByte(UInt8)
        case invalidLength
        case bulkTooLong(Int64)
        case aggregateTooLarge(Int64)
        case nestingTooDeep
        case missingCRLF
        case invalidInteger
        case invalidDouble
        case invalidBoolean
        case invalidVerbatimString
        case lineTooLong
    }

    package let code: Code
    /// Byte offset, from the start of the frame, where the problem was found.
    public let offset: Int

    package init(_ code: Code, offset: Int) {
        self.code = code
        self.offset = offset
    }

    /// A protocol byte that starts no RESP type.
    public static func isInvalidTypeByte(_ error: RESPError) -> Bool {
        if case .invalidTypeByte = error.code { return true }
        return false
    }

    public var description: String {
        let what: String
        switch code {
        case .invalidTypeByte(let b): what = "invalid RESP type byte 0x\(String(b, radix: 16))"
        case .invalidLength: what = "invalid length (only -1 may be negative, and only for bulk strings and arrays)"
        case .bulkTooLong(let n): what = "bulk length \(n) exceeds the limit"
        case .aggregateTooLarge(let n): what = "aggregate of \(n) elements exceeds the limit"
        case .nestingTooDeep: what = "aggregates nested deeper than the limit"
        case .missingCRLF: what = "expected CRLF"
        case .invalidInteger: what = "invalid integer"
        case .invalidDouble: what = "invalid double"
        case .invalidBoolean: what = "invalid boolean"
        case .invalidVerbatimString: what = "invalid verbatim string"
        case .lineTooLong: what = "line longer than the limit without CRLF"
        }
        return "RESP protocol error at byte \(offset): \(what)"
    }
}
