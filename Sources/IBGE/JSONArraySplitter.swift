import NIOCore

/// Cuts a JSON array body into its top-level elements' bytes, without decoding them, so a
/// joined answer from IBGE can be cached element by element with IBGE's own bytes.
enum JSONArraySplitter {
    /// The elements of a top-level array, or nil when the body is not one.
    static func elements(of body: ByteBuffer) -> [ByteBuffer]? {
        let bytes = body.readableBytesView
        var index = bytes.startIndex
        func skipSpace() { while index < bytes.endIndex, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 } }
        skipSpace()
        guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "[") else { return nil }
        index += 1
        var elements: [ByteBuffer] = []
        var depth = 0
        var inString = false
        var escaped = false
        var start: Int?
        /// The element from `begin` up to `end`, trailing white space left out.
        func element(from begin: Int, to end: Int) -> ByteBuffer? {
            var last = end
            while last > begin, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[last - 1]) { last -= 1 }
            return body.getSlice(at: body.readerIndex + (begin - bytes.startIndex), length: last - begin)
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case UInt8(ascii: "\""):
                    inString = true
                    if start == nil { start = index }
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    if start == nil { start = index }
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if depth == 0 {
                        // The closing bracket of the array itself.
                        if let begin = start, let last = element(from: begin, to: index) { elements.append(last) }
                        return elements
                    }
                    depth -= 1
                case UInt8(ascii: ","):
                    if depth == 0 {
                        guard let begin = start, let next = element(from: begin, to: index) else { return nil }
                        elements.append(next)
                        start = nil
                    }
                case 0x20, 0x0A, 0x0D, 0x09:
                    break
                default:
                    if start == nil { start = index }
                }
            }
            index += 1
        }
        return nil
    }

    /// The `id` an IBGE object starts with (`{"id":4208203,...`), or nil.
    static func leadingID(_ element: ByteBuffer) -> Int? {
        let prefix = Array("{\"id\":".utf8)
        guard element.readableBytes > prefix.count, element.getBytes(at: element.readerIndex, length: prefix.count) == prefix else { return nil }
        var value = 0
        var index = element.readerIndex + prefix.count
        var digits = 0
        while let byte = element.getInteger(at: index, as: UInt8.self), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 18 {
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
