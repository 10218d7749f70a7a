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
        appendBulk(length: argument.utf8.count) { $0.writeString(argument) }
    }

    /// Appends a binary argument.
    public mutating func append(_ argument: ByteBuffer) {
        appendBulk(length: argument.readableBytes) { $0.writeImmutableBuffer(argument) }
    }

    /// Appends a binary argument.
    public mutating func append(bytes argument: some Collection<UInt8>) {
        appendBulk(length: argument.count) { $0.writeBytes(argument) }
    }

    /// `$<length>\r\n<payload>\r\n`, the payload written by `write`.
    @inline(__always)
    private mutating func appendBulk(length: Int, _ write: (inout ByteBuffer) -> Void) {
        argumentCount += 1
        body.writeStaticString("$")
        body.writeDecimal(length)
        body.writeStaticString("\r\n")
        write(&body)
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
