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

    /// The argument at `index` (0: the command's name), as the bytes it was written with; nil
    /// past the last.
    public func argument(_ index: Int) -> ByteBufferView? {
        var found: ByteBufferView?
        var current = 0
        forEachArgument { payload in
            if current == index { found = payload }
            current += 1
            return found == nil
        }
        return found
    }

    /// Every argument (the name first), in one pass.
    public var arguments: [ByteBufferView] {
        var all: [ByteBufferView] = []
        all.reserveCapacity(argumentCount)
        forEachArgument { payload in
            all.append(payload)
            return true
        }
        return all
    }

    /// Calls `visit` with each argument's bytes until it returns false.
    private func forEachArgument(_ visit: (ByteBufferView) -> Bool) {
        var copy = self.body
        while copy.readableBytes > 0 {
            guard copy.readInteger(as: UInt8.self) == UInt8(ascii: "$"),
                let end = copy.readableBytesView.firstIndex(of: UInt8(ascii: "\r")),
                let length = Int(copy.readString(length: end - copy.readerIndex) ?? ""), length >= 0,
                copy.readSlice(length: 2) != nil, let payload = copy.readSlice(length: length), copy.readSlice(length: 2) != nil
            else { return }
            guard visit(payload.readableBytesView) else { return }
        }
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
