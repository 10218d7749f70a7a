public import NIOCore

/// A command as a client sends it: an array of bulk strings, encoded as it is built.
///
/// Arguments are written straight into one buffer, so sending a command costs one allocation
/// however many arguments it has.
public struct RESPCommand: Sendable {
    /// How many arguments, the command name included.
    public private(set) var argumentCount: Int
    package var body: ByteBuffer

    /// Starts a command with its name (`GET`, `SET`, ...).
    public init(_ name: String, capacity: Int = 64) {
        self.argumentCount = 0
        self.body = ByteBufferAllocator().buffer(capacity: capacity)
        self.append(name)
    }

    /// Starts a command with its name and string arguments.
    public init(_ name: String, _ arguments: String...) {
        self.init(name)
        for argument in arguments { append(argument) }
    }

    /// Appends a text argument.
    public mutating func append(_ argument: String) {
        argumentCount += 1
        body.writeStaticString("$")
        body.writeDecimal(argument.utf8.count)
        body.writeStaticString("\r\n")
        body.writeString(argument)
        body.writeStaticString("\r\n")
    }

    /// Appends a binary argument.
    public mutating func append(_ argument: ByteBuffer) {
        argumentCount += 1
        body.writeStaticString("$")
        body.writeDecimal(argument.readableBytes)
        body.writeStaticString("\r\n")
        body.writeImmutableBuffer(argument)
        body.writeStaticString("\r\n")
    }

    /// Appends a binary argument.
    public mutating func append(bytes argument: some Collection<UInt8>) {
        argumentCount += 1
        body.writeStaticString("$")
        body.writeDecimal(argument.count)
        body.writeStaticString("\r\n")
        body.writeBytes(argument)
        body.writeStaticString("\r\n")
    }

    /// Appends an integer argument, in decimal.
    public mutating func append(_ argument: Int) {
        append(String(argument))
    }

    /// Writes the whole command (`*N\r\n` then the arguments) to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        buffer.writeDecimal(argumentCount)
        buffer.writeStaticString("\r\n")
        buffer.writeImmutableBuffer(body)
    }

    /// The command's arguments, decoded back to text (for logs and errors).
    public var name: String {
        var copy = body
        guard copy.readInteger(as: UInt8.self) == UInt8(ascii: "$"),
            let line = copy.readableBytesView.firstIndex(of: UInt8(ascii: "\r")),
            let length = Int(copy.getString(at: copy.readerIndex, length: line - copy.readerIndex) ?? "")
        else { return "?" }
        return copy.getString(at: line + 2, length: length) ?? "?"
    }
}

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
