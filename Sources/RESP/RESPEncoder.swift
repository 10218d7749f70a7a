public import NIOCore

extension ByteBuffer {
    mutating func writeDecimal(_ value: Int) {
        if value >= 0 && value < 10 {
            writeInteger(UInt8(ascii: "0") &+ UInt8(value))
        } else {
            writeString(String(value))
        }
    }

    /// Encodes any RESP value (as a server would send it).
    ///
    /// RESP3-only types are written in RESP3 form; ``RESPValue/null`` is written as `_\r\n`
    /// unless `resp2` is set, when it becomes the null bulk string `$-1\r\n`.
    public mutating func writeRESPValue(_ value: RESPValue, resp2: Bool = false) {
        switch value {
        case .simpleString(let b):
            writeStaticString("+"); writeImmutableBuffer(b); writeStaticString("\r\n")
        case .simpleError(let b):
            writeStaticString("-"); writeImmutableBuffer(b); writeStaticString("\r\n")
        case .integer(let i):
            writeStaticString(":"); writeString(String(i)); writeStaticString("\r\n")
        case .bulkString(let b):
            writeStaticString("$"); writeDecimal(b.readableBytes); writeStaticString("\r\n")
            writeImmutableBuffer(b); writeStaticString("\r\n")
        case .array(let elements):
            writeStaticString("*"); writeDecimal(elements.count); writeStaticString("\r\n")
            for element in elements { writeRESPValue(element, resp2: resp2) }
        case .null:
            if resp2 { writeStaticString("$-1\r\n") } else { writeStaticString("_\r\n") }
        case .boolean(let b):
            writeStaticString(b ? "#t\r\n" : "#f\r\n")
        case .double(let d):
            writeStaticString(",")
            if d.isNaN { writeStaticString("nan") } else if d.isInfinite { writeString(d < 0 ? "-inf" : "inf") } else { writeString(String(d)) }
            writeStaticString("\r\n")
        case .bigNumber(let b):
            writeStaticString("("); writeImmutableBuffer(b); writeStaticString("\r\n")
        case .bulkError(let b):
            writeStaticString("!"); writeDecimal(b.readableBytes); writeStaticString("\r\n")
            writeImmutableBuffer(b); writeStaticString("\r\n")
        case .verbatimString(let format, let content):
            let formatBytes = Array(format.utf8.prefix(3)) + Array(repeating: UInt8(ascii: " "), count: max(0, 3 - format.utf8.count))
            writeStaticString("="); writeDecimal(content.readableBytes + 4); writeStaticString("\r\n")
            writeBytes(formatBytes); writeStaticString(":"); writeImmutableBuffer(content); writeStaticString("\r\n")
        case .map(let pairs):
            writeStaticString("%"); writeDecimal(pairs.count); writeStaticString("\r\n")
            for pair in pairs {
                writeRESPValue(pair.key, resp2: resp2)
                writeRESPValue(pair.value, resp2: resp2)
            }
        case .set(let elements):
            writeStaticString("~"); writeDecimal(elements.count); writeStaticString("\r\n")
            for element in elements { writeRESPValue(element, resp2: resp2) }
        case .push(let elements):
            writeStaticString(">"); writeDecimal(elements.count); writeStaticString("\r\n")
            for element in elements { writeRESPValue(element, resp2: resp2) }
        }
    }
}
