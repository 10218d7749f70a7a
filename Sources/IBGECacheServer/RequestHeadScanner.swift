import NIOCore

/// Reads an HTTP/1.1 request head straight from the connection's bytes, for the L1 fast path
/// (RFC 9112 §2–5, strictly). It finds where the head ends and the few fields the fast path
/// needs; it never decides anything the HTTP decoder would decide differently:
/// - a head with a body (`Content-Length`, `Transfer-Encoding`), or any byte it does not
///   accept, is ``Outcome/unframed``: the fast path then hands the connection's bytes to the
///   decoder from there on;
/// - a well-framed head the fast path does not answer (another method, a repeated field it
///   reads, `Expect`, a field past the decoder's limits) is still a whole request without a
///   body, so it can be handed to the decoder on its own and the next request read here again;
/// - unless it ends HTTP/1.1 keep-alive (``Head/keepsConnection`` false: HTTP/1.0,
///   `Connection` other than `keep-alive`, `Upgrade`, `CONNECT`): the decoder then stops reading
///   requests, so every later byte must go to it too.
struct RequestHeadScanner {
    /// What one well-framed request head says.
    struct Head {
        /// Bytes of the head, its final empty line included; no body follows it.
        var length: Int
        /// `GET` or `HEAD` over HTTP/1.1 with nothing that asks for more than a plain answer.
        var eligible: Bool
        /// The connection stays an HTTP/1.1 keep-alive connection after this request.
        var keepsConnection: Bool
        var isHead: Bool
        /// The request target (origin form), when eligible.
        var target: String
        var acceptEncoding: String?
        var ifNoneMatch: String?
    }

    enum Outcome {
        /// The head has not all arrived; `scanned` bytes hold no end of head (resume there).
        case incomplete(scanned: Int)
        /// Not a head this scanner can frame: the rest of the connection goes to the decoder.
        case unframed
        /// A whole head without a body.
        case head(Head)
    }

    /// Longest target the fast path answers (longer ones go to the router, which refuses them).
    let maximumTargetBytes: Int
    /// Most header fields (more go to the decoder, which refuses them).
    let maximumFields: Int
    /// Longest field (name and value) and request line the decoder accepts.
    let maximumFieldBytes: Int
    /// Largest header section the decoder accepts.
    let maximumHeadBytes: Int

    /// Scans the readable bytes of `buffer`, resuming the search for the head's end at `from`.
    func scan(_ buffer: ByteBuffer, from: Int) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            switch Self.endOfHead(bytes, from: from) {
            case .notYet:
                return .incomplete(scanned: bytes.count)
            case .bareLineFeed:
                // Lines ended by a lone LF, which the decoder may accept: its to read.
                return .unframed
            case .at(let end):
                return parse(UnsafeRawBufferPointer(rebasing: bytes[..<end]), length: end + 4)
            }
        }
    }

    enum EndOfHead: Equatable {
        case notYet
        /// A `\n` not after a `\r`.
        case bareLineFeed
        /// The offset of the first `\r\n\r\n`.
        case at(Int)
    }

    /// Where the head ends: the first `\r\n\r\n` ending at or after `from` (each `\n` looks
    /// back at the bytes before it, so a search resumes where the last one stopped).
    static func endOfHead(_ bytes: UnsafeRawBufferPointer, from: Int) -> EndOfHead {
        var i = from
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\n") {
                guard i > 0, bytes[i - 1] == UInt8(ascii: "\r") else { return .bareLineFeed }
                if i >= 3, bytes[i - 2] == UInt8(ascii: "\n"), bytes[i - 3] == UInt8(ascii: "\r") { return .at(i - 3) }
            }
            i += 1
        }
        return .notYet
    }

    /// Parses a head (without its final `\r\n\r\n`).
    private func parse(_ head: UnsafeRawBufferPointer, length: Int) -> Outcome {
        var lines = LineReader(bytes: head)
        guard let requestLine = lines.next() else { return .unframed }
        // method SP request-target SP HTTP-version
        guard let firstSpace = requestLine.firstIndex(of: UInt8(ascii: " ")), firstSpace > requestLine.startIndex else { return .unframed }
        let method = requestLine[requestLine.startIndex..<firstSpace]
        guard method.allSatisfy(Self.isTokenByte) else { return .unframed }
        let afterMethod = requestLine[(firstSpace + 1)...]
        guard let secondSpace = afterMethod.firstIndex(of: UInt8(ascii: " ")), secondSpace > afterMethod.startIndex else { return .unframed }
        let target = afterMethod[afterMethod.startIndex..<secondSpace]
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return .unframed }
        let version = afterMethod[(secondSpace + 1)...]
        let http11 = version.elementsEqual("HTTP/1.1".utf8)
        guard http11 || version.elementsEqual("HTTP/1.0".utf8) else { return .unframed }

        let isGet = method.elementsEqual("GET".utf8)
        let isHead = method.elementsEqual("HEAD".utf8)
        var eligible = (isGet || isHead) && http11 && target.count <= maximumTargetBytes && target.first == UInt8(ascii: "/")
            && requestLine.count <= maximumFieldBytes && head.count <= maximumHeadBytes
        var keepsConnection = http11 && !method.elementsEqual("CONNECT".utf8)
        var acceptEncoding: String?
        var ifNoneMatch: String?
        var fields = 0
        while let line = lines.next() {
            fields += 1
            if line.count > maximumFieldBytes { eligible = false }
            // field-name ":" OWS field-value OWS; no obs-fold, no space before the colon.
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else { return .unframed }
            let name = line[line.startIndex..<colon]
            guard name.allSatisfy(Self.isTokenByte) else { return .unframed }
            var value = line[(colon + 1)...]
            guard value.allSatisfy(Self.isFieldValueByte) else { return .unframed }
            while let first = value.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { value = value.dropFirst() }
            while let last = value.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { value = value.dropLast() }
            switch name.count {
            case 14 where Self.equalsLowercased(name, "content-length"), 17 where Self.equalsLowercased(name, "transfer-encoding"):
                return .unframed
            case 15 where Self.equalsLowercased(name, "accept-encoding"):
                if acceptEncoding != nil { eligible = false }
                acceptEncoding = String(decoding: value, as: UTF8.self)
            case 13 where Self.equalsLowercased(name, "if-none-match"):
                if ifNoneMatch != nil { eligible = false }
                ifNoneMatch = String(decoding: value, as: UTF8.self)
            case 10 where Self.equalsLowercased(name, "connection"), 7 where Self.equalsLowercased(name, "upgrade"):
                // Keep-alive is the default; anything else said here (close, upgrade) ends it.
                if !(name.count == 10 && Self.equalsLowercased(value, "keep-alive")) {
                    eligible = false
                    keepsConnection = false
                }
            case 6 where Self.equalsLowercased(name, "expect"):
                eligible = false
            default:
                break
            }
        }
        guard !lines.malformed else { return .unframed }
        if fields > maximumFields { eligible = false }
        return .head(
            Head(
                length: length, eligible: eligible && keepsConnection, keepsConnection: keepsConnection, isHead: isHead,
                target: eligible ? String(decoding: target, as: UTF8.self) : "", acceptEncoding: acceptEncoding, ifNoneMatch: ifNoneMatch))
    }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// field-vchar, SP or HTAB (RFC 9110 §5.5); no CR, LF or NUL.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: "\t") || (byte >= 0x20 && byte != 0x7F)
    }

    static func equalsLowercased(_ bytes: Slice<UnsafeRawBufferPointer>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return zip(bytes, expected).allSatisfy { actual, wanted in
            (actual >= UInt8(ascii: "A") && actual <= UInt8(ascii: "Z") ? actual | 0x20 : actual) == wanted
        }
    }
}

/// The `\r\n`-separated lines of a head; a bare `\r` or `\n` makes it malformed.
private struct LineReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0
    var malformed = false

    mutating func next() -> Slice<UnsafeRawBufferPointer>? {
        guard !malformed, position < bytes.count || position == 0 else { return nil }
        var i = position
        while i < bytes.count {
            let byte = bytes[i]
            if byte == UInt8(ascii: "\r") {
                guard i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "\n") else {
                    malformed = true
                    return nil
                }
                let line = bytes[position..<i]
                position = i + 2
                return line
            }
            if byte == UInt8(ascii: "\n") {
                malformed = true
                return nil
            }
            i += 1
        }
        let line = bytes[position..<i]
        position = bytes.count + 1
        return line
    }
}
