public import NIOCore

/// An incremental RESP2/RESP3 decoder.
///
/// ``decode(from:)`` looks at the readable bytes of a buffer: when they hold a whole frame it
/// returns the value and moves the reader index past it; when the frame is not complete yet it
/// returns `nil` and leaves the buffer as it was, so the caller appends more bytes and tries
/// again. Bytes that cannot be RESP throw a ``RESPError``. Every length is checked against
/// ``Limits`` before anything is allocated, so a hostile or broken peer cannot make the
/// decoder use unbounded memory or recurse without end.
public struct RESPDecoder: Sendable {
    /// Bounds on what a single frame may declare.
    public struct Limits: Sendable, Hashable {
        /// Longest bulk string, bulk error or verbatim string, in bytes.
        public var maxBulkLength: Int
        /// Most elements in one array, set or push (pairs, for a map).
        public var maxAggregateCount: Int
        /// Deepest nesting of aggregates.
        public var maxDepth: Int
        /// Longest line (simple string, error, number) before its CRLF.
        public var maxLineLength: Int

        /// Creates limits.
        public init(maxBulkLength: Int, maxAggregateCount: Int, maxDepth: Int, maxLineLength: Int) {
            self.maxBulkLength = maxBulkLength
            self.maxAggregateCount = maxAggregateCount
            self.maxDepth = maxDepth
            self.maxLineLength = maxLineLength
        }

        /// 512 MiB bulks (Redis's own `proto-max-bulk-len`), 16 Mi elements, depth 64, 64 KiB lines.
        public static let `default` = Limits(
            maxBulkLength: 512 * 1024 * 1024,
            maxAggregateCount: 16 * 1024 * 1024,
            maxDepth: 64,
            maxLineLength: 64 * 1024
        )
    }

    /// The limits this decoder enforces.
    public var limits: Limits

    /// Creates a decoder.
    public init(limits: Limits = .default) {
        self.limits = limits
    }

    /// Decodes one value from the start of `buffer`'s readable bytes.
    ///
    /// - Returns: the value, with `buffer`'s reader index moved past it; or `nil` when more bytes
    ///   are needed, with `buffer` untouched.
    /// - Throws: ``RESPError`` when the bytes are not valid RESP or break a limit.
    public func decode(from buffer: inout ByteBuffer) throws(RESPError) -> RESPValue? {
        var needed = 0
        return try decode(from: &buffer, needing: &needed)
    }

    /// As ``decode(from:)``; when more bytes are needed, `needed` is set to the fewest readable
    /// bytes the frame can be whole with (0 when not known), so a caller appending bytes need not
    /// parse the frame again before that many have arrived (a large bulk string is parsed once,
    /// not once per read).
    public func decode(from buffer: inout ByteBuffer, needing needed: inout Int) throws(RESPError) -> RESPValue? {
        var parser = Parser(buffer: buffer, limits: limits)
        guard let value = try parser.parseValue(depth: 0) else {
            needed = max(0, parser.needed - buffer.readerIndex)
            return nil
        }
        needed = 0
        buffer.moveReaderIndex(to: parser.index)
        return value
    }
}

private let cr = UInt8(ascii: "\r")
private let lf = UInt8(ascii: "\n")

private struct Parser {
    let buffer: ByteBuffer
    let limits: RESPDecoder.Limits
    let start: Int
    let end: Int
    var index: Int
    /// When a frame is not whole: the index its bytes reach at least (0: not known).
    var needed = 0

    init(buffer: ByteBuffer, limits: RESPDecoder.Limits) {
        self.buffer = buffer
        self.limits = limits
        self.start = buffer.readerIndex
        self.end = buffer.writerIndex
        self.index = buffer.readerIndex
    }

    func error(_ code: RESPError.Code, at position: Int) -> RESPError {
        RESPError(code, offset: position - start)
    }

    @inline(__always)
    func byte(at position: Int) -> UInt8 {
        // Callers check `position < end` first.
        buffer.getInteger(at: position, as: UInt8.self) ?? 0
    }

    /// Finds the line that starts at `index`: returns its start and length and moves `index`
    /// past the CRLF, or returns nil when the CRLF has not arrived yet.
    mutating func readLine() throws(RESPError) -> (start: Int, length: Int)? {
        let lineStart = index
        let searchEnd = min(end, lineStart + limits.maxLineLength + 1)
        var position = lineStart
        let found: Int? = buffer.withUnsafeReadableBytes { raw in
            let base = buffer.readerIndex
            while position < searchEnd {
                if raw[position - base] == cr { return position }
                position += 1
            }
            return nil
        }
        guard let crIndex = found else {
            if searchEnd - lineStart > limits.maxLineLength { throw error(.lineTooLong, at: lineStart) }
            return nil
        }
        guard crIndex + 1 < end else { return nil }
        guard byte(at: crIndex + 1) == lf else { throw error(.missingCRLF, at: crIndex) }
        index = crIndex + 2
        return (lineStart, crIndex - lineStart)
    }

    func parseInteger(start: Int, length: Int) throws(RESPError) -> Int64 {
        guard length > 0 else { throw error(.invalidInteger, at: start) }
        var position = start
        let stop = start + length
        var negative = false
        let first = byte(at: position)
        if first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            position += 1
            guard position < stop else { throw error(.invalidInteger, at: start) }
        }
        var value: Int64 = 0
        while position < stop {
            let b = byte(at: position)
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { throw error(.invalidInteger, at: position) }
            let digit = Int64(b &- UInt8(ascii: "0"))
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
            guard !o1, !o2 else { throw error(.invalidInteger, at: start) }
            value = a
            position += 1
        }
        return value
    }

    /// Reads a length line; `allowNull` accepts -1 (RESP2 null bulk string / array) and returns nil for it.
    mutating func readLength(allowNull: Bool, maximum: Int, tooLarge: (Int64) -> RESPError.Code) throws(RESPError) -> Int?? {
        let lengthStart = index
        guard let line = try readLine() else { return .none }
        let n = try parseInteger(start: line.start, length: line.length)
        if n == -1 && allowNull { return .some(nil) }
        guard n >= 0 else { throw error(.invalidLength, at: lengthStart) }
        guard n <= Int64(maximum) else { throw error(tooLarge(n), at: lengthStart) }
        return .some(Int(n))
    }

    /// Reads `length` bytes plus the trailing CRLF.
    mutating func readBlob(length: Int) throws(RESPError) -> ByteBuffer? {
        guard end - index >= length + 2 else {
            needed = index + length + 2
            return nil
        }
        guard byte(at: index + length) == cr, byte(at: index + length + 1) == lf else {
            throw error(.missingCRLF, at: index + length)
        }
        let slice = buffer.getSlice(at: index, length: length) ?? ByteBuffer()
        index += length + 2
        return slice
    }

    mutating func parseValue(depth: Int) throws(RESPError) -> RESPValue? {
        guard index < end else { return nil }
        let typeIndex = index
        let type = byte(at: index)
        index += 1
        switch type {
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard let line = try readLine() else { return nil }
            let slice = buffer.getSlice(at: line.start, length: line.length) ?? ByteBuffer()
            return type == UInt8(ascii: "+") ? .simpleString(slice) : .simpleError(slice)

        case UInt8(ascii: ":"):
            guard let line = try readLine() else { return nil }
            return .integer(try parseInteger(start: line.start, length: line.length))

        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let allowNull = type == UInt8(ascii: "$")
            guard let length = try readLength(allowNull: allowNull, maximum: limits.maxBulkLength, tooLarge: { .bulkTooLong($0) }) else {
                return nil
            }
            guard let length else { return .null }
            let blobStart = index
            guard let blob = try readBlob(length: length) else { return nil }
            switch type {
            case UInt8(ascii: "$"): return .bulkString(blob)
            case UInt8(ascii: "!"): return .bulkError(blob)
            default:
                // `fmt:content`, where fmt is three printable ASCII bytes ("txt", "mkd").
                guard length >= 4, blob.getInteger(at: blob.readerIndex + 3, as: UInt8.self) == UInt8(ascii: ":"),
                    let formatBytes = blob.getBytes(at: blob.readerIndex, length: 3),
                    formatBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") })
                else {
                    throw error(.invalidVerbatimString, at: blobStart)
                }
                var content = blob
                let format = content.readString(length: 3) ?? ""
                content.moveReaderIndex(forwardBy: 1)
                return .verbatimString(format: format, content: content)
            }

        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            guard depth < limits.maxDepth else { throw error(.nestingTooDeep, at: typeIndex) }
            let allowNull = type == UInt8(ascii: "*")
            guard let count = try readLength(allowNull: allowNull, maximum: limits.maxAggregateCount, tooLarge: { .aggregateTooLarge($0) }) else {
                return nil
            }
            guard let count else { return .null }
            let isPairs = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
            let elementCount = isPairs ? count * 2 : count
            // Every element takes at least three bytes ("_\r\n"): when they cannot all be here
            // yet, ask for more before allocating anything.
            guard elementCount <= (end - index) / 3 else {
                needed = index + elementCount * 3
                return nil
            }
            var elements: [RESPValue] = []
            elements.reserveCapacity(elementCount)
            for _ in 0..<elementCount {
                guard let element = try parseValue(depth: depth + 1) else { return nil }
                elements.append(element)
            }
            switch type {
            case UInt8(ascii: "*"): return .array(elements)
            case UInt8(ascii: "~"): return .set(elements)
            case UInt8(ascii: ">"): return .push(elements)
            case UInt8(ascii: "%"):
                var pairs: [RESPPair] = []
                pairs.reserveCapacity(count)
                var i = 0
                while i < elements.count {
                    pairs.append(RESPPair(key: elements[i], value: elements[i + 1]))
                    i += 2
                }
                return .map(pairs)
            default:
                // An attribute is metadata about the value that follows it: skip it. It counts
                // toward the depth, so endless attributes end at the limit, not the stack's.
                return try parseValue(depth: depth + 1)
            }

        case UInt8(ascii: "_"):
            guard let line = try readLine() else { return nil }
            guard line.length == 0 else { throw error(.missingCRLF, at: line.start) }
            return .null

        case UInt8(ascii: "#"):
            guard let line = try readLine() else { return nil }
            guard line.length == 1 else { throw error(.invalidBoolean, at: line.start) }
            switch byte(at: line.start) {
            case UInt8(ascii: "t"): return .boolean(true)
            case UInt8(ascii: "f"): return .boolean(false)
            default: throw error(.invalidBoolean, at: line.start)
            }

        case UInt8(ascii: ","):
            guard let line = try readLine() else { return nil }
            guard line.length > 0, line.length <= 512,
                let text = buffer.getString(at: line.start, length: line.length),
                text.utf8.allSatisfy({ isDoubleCharacter($0) }),
                let value = Double(text)
            else { throw error(.invalidDouble, at: line.start) }
            return .double(value)

        case UInt8(ascii: "("):
            guard let line = try readLine() else { return nil }
            var position = line.start
            let stop = line.start + line.length
            if position < stop, byte(at: position) == UInt8(ascii: "-") || byte(at: position) == UInt8(ascii: "+") { position += 1 }
            guard position < stop else { throw error(.invalidInteger, at: line.start) }
            while position < stop {
                let b = byte(at: position)
                guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { throw error(.invalidInteger, at: position) }
                position += 1
            }
            return .bigNumber(buffer.getSlice(at: line.start, length: line.length) ?? ByteBuffer())

        default:
            throw error(.invalidTypeByte(type), at: typeIndex)
        }
    }
}

@inline(__always)
private func isDoubleCharacter(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "+"),
        UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "i"), UInt8(ascii: "n"), UInt8(ascii: "f"), UInt8(ascii: "a"):
        true
    default: false
    }
}
