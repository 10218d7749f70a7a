import NIOCore
import RESP
import Testing

private func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }
private func bulk(_ s: String) -> RESPValue { .bulkString(ByteBuffer(string: s)) }
private func simple(_ s: String) -> RESPValue { .simpleString(ByteBuffer(string: s)) }

/// Frames with the value each must decode to, covering every RESP2 and RESP3 type.
private let frames: [(String, RESPValue)] = [
    ("+OK\r\n", simple("OK")),
    ("-ERR unknown command 'FOO'\r\n", .simpleError(ByteBuffer(string: "ERR unknown command 'FOO'"))),
    (":0\r\n", .integer(0)),
    (":-9223372036854775808\r\n", .integer(.min)),
    (":9223372036854775807\r\n", .integer(.max)),
    ("$5\r\nhello\r\n", bulk("hello")),
    ("$0\r\n\r\n", bulk("")),
    ("$12\r\nhas\r\ncrlf\r\n!\r\n", bulk("has\r\ncrlf\r\n!")),
    ("$-1\r\n", .null),
    ("*-1\r\n", .null),
    ("*0\r\n", .array([])),
    ("*3\r\n:1\r\n$3\r\nfoo\r\n*1\r\n+x\r\n", .array([.integer(1), bulk("foo"), .array([simple("x")])])),
    ("_\r\n", .null),
    ("#t\r\n", .boolean(true)),
    ("#f\r\n", .boolean(false)),
    (",3.25\r\n", .double(3.25)),
    (",-inf\r\n", .double(-.infinity)),
    (",1e3\r\n", .double(1000)),
    ("(3492890328409238509324850943850943825024385\r\n", .bigNumber(ByteBuffer(string: "3492890328409238509324850943850943825024385"))),
    ("!21\r\nSYNTAX invalid syntax\r\n", .bulkError(ByteBuffer(string: "SYNTAX invalid syntax"))),
    ("=15\r\ntxt:Some string\r\n", .verbatimString(format: "txt", content: ByteBuffer(string: "Some string"))),
    (
        "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
        .map([
            RESPPair(key: simple("first"), value: .integer(1)), RESPPair(key: simple("second"), value: .integer(2)),
        ])
    ),
    ("~2\r\n+a\r\n+b\r\n", .set([simple("a"), simple("b")])),
    (">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", .push([bulk("message"), bulk("ch"), bulk("hi")])),
    ("|1\r\n+ttl\r\n:3600\r\n:42\r\n", .integer(42)),
]

@Suite("RESP decoder")
struct RESPDecoderTests {
    let decoder = RESPDecoder()

    @Test("each frame decodes to its value and consumes exactly its bytes")
    func wholeFrames() throws {
        for (text, expected) in frames {
            var input = buffer(text + "+NEXT\r\n")
            let value = try decoder.decode(from: &input)
            #expect(value == expected, "frame \(text.debugDescription)")
            #expect(input.readableBytes == 7, "frame \(text.debugDescription) consumed \(text.utf8.count + 7 - input.readableBytes) bytes")
        }
    }

    @Test("a frame split at every byte offset decodes once all its bytes arrived")
    func everySplit() throws {
        for (text, expected) in frames {
            let bytes = Array(text.utf8)
            for split in 0..<bytes.count {
                var input = ByteBuffer(bytes: bytes[..<split])
                let partial = try decoder.decode(from: &input)
                #expect(partial == nil, "frame \(text.debugDescription) split at \(split) decoded early")
                #expect(input.readableBytes == split, "a partial frame must not be consumed")
                input.writeBytes(bytes[split...])
                let value = try decoder.decode(from: &input)
                #expect(value == expected, "frame \(text.debugDescription) split at \(split)")
                #expect(input.readableBytes == 0)
            }
        }
    }

    @Test("bytes drip-fed one at a time decode to the same values")
    func dripFeed() throws {
        let stream = frames.map(\.0).joined()
        var input = ByteBuffer()
        var decoded: [RESPValue] = []
        for byte in stream.utf8 {
            input.writeInteger(byte)
            while let value = try decoder.decode(from: &input) { decoded.append(value) }
        }
        #expect(decoded == frames.map(\.1))
        #expect(input.readableBytes == 0)
    }

    @Test("many frames in one read decode one after another")
    func manyFramesInOneRead() throws {
        var input = buffer(String(repeating: ":7\r\n$1\r\nx\r\n", count: 1000))
        var count = 0
        while let value = try decoder.decode(from: &input) {
            #expect(value == (count % 2 == 0 ? .integer(7) : bulk("x")))
            count += 1
        }
        #expect(count == 2000)
    }

    @Test(
        "malformed input throws a typed error",
        arguments: [
            ("?what\r\n", "invalid RESP type byte 0x3f"),
            ("$-2\r\n", "invalid length"),
            ("*-5\r\n", "invalid length"),
            ("%-1\r\n", "invalid length"),
            ("!-1\r\n", "invalid length"),
            ("$abc\r\n", "invalid integer"),
            ("$\r\n", "invalid integer"),
            (":12a\r\n", "invalid integer"),
            (":99999999999999999999\r\n", "invalid integer"),
            (":-\r\n", "invalid integer"),
            ("+OK\rX", "expected CRLF"),
            ("$3\r\nfooXY", "expected CRLF"),
            ("_x\r\n", "expected CRLF"),
            ("#x\r\n", "invalid boolean"),
            ("#tt\r\n", "invalid boolean"),
            (",abc\r\n", "invalid double"),
            (",\r\n", "invalid double"),
            ("(12x\r\n", "invalid integer"),
            ("=3\r\ntxt\r\n", "invalid verbatim string"),
            ("=5\r\ntxtx1\r\n", "invalid verbatim string"),
            ("=5\r\nt\u{00BE}:x\r\n", "invalid verbatim string"),
            ("$?\r\n", "invalid integer"),
        ])
    func malformed(input text: String, message: String) throws {
        var input = buffer(text)
        let error = #expect(throws: RESPError.self) { try decoder.decode(from: &input) }
        #expect(error?.description.contains(message) == true, "\(text.debugDescription): \(error.map(String.init(describing:)) ?? "no error")")
    }

    @Test("limits are enforced before anything is allocated")
    func limits() throws {
        let tight = RESPDecoder(limits: .init(maxBulkLength: 16, maxAggregateCount: 4, maxDepth: 3, maxLineLength: 32))

        var longBulk = buffer("$17\r\n")
        #expect(throws: RESPError.self) { try tight.decode(from: &longBulk) }

        var overlong = buffer("$9223372036854775807\r\n")
        #expect(throws: RESPError.self) { try decoder.decode(from: &overlong) }

        var bigArray = buffer("*5\r\n")
        #expect(throws: RESPError.self) { try tight.decode(from: &bigArray) }

        var bigMap = buffer("%5\r\n")
        #expect(throws: RESPError.self) { try tight.decode(from: &bigMap) }

        var deep = buffer("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n")
        let depthError = #expect(throws: RESPError.self) { try tight.decode(from: &deep) }
        #expect(depthError?.description.contains("nested") == true)
        var shallowEnough = buffer("*1\r\n*1\r\n*1\r\n:1\r\n")
        #expect(try tight.decode(from: &shallowEnough) == .array([.array([.array([.integer(1)])])]))

        var endlessLine = buffer("+" + String(repeating: "a", count: 40))
        #expect(throws: RESPError.self) { try tight.decode(from: &endlessLine) }
        var shortLine = buffer("+" + String(repeating: "a", count: 20))
        #expect(try tight.decode(from: &shortLine) == nil)
    }

    @Test("an array that declares more elements than the bytes could hold waits without allocating them")
    func hugeDeclaredArrayWaits() throws {
        var input = buffer("*16000000\r\n:1\r\n")
        #expect(try decoder.decode(from: &input) == nil)
        #expect(input.readableBytes == 15)
    }

    @Test("deeply nested input from a hostile peer is rejected, not recursed into")
    func hostileNesting() throws {
        var input = buffer(String(repeating: "*1\r\n", count: 100_000))
        #expect(throws: RESPError.self) { try decoder.decode(from: &input) }
    }
}

@Suite("RESP encoder")
struct RESPEncoderTests {
    @Test("a command is an array of bulk strings")
    func command() {
        var command = RESPCommand("SET")
        command.append("key")
        command.append(ByteBuffer(string: "va\r\nlue"))
        command.append(1500)
        var out = ByteBuffer()
        command.encode(into: &out)
        #expect(String(buffer: out) == "*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$7\r\nva\r\nlue\r\n$4\r\n1500\r\n")
        #expect(command.argumentCount == 4)
        #expect(command.name == "SET")
    }

    @Test("multi-byte UTF-8 arguments are measured in bytes")
    func utf8Lengths() {
        let command = RESPCommand("GET", "ibge:Rondônia")
        var out = ByteBuffer()
        command.encode(into: &out)
        #expect(String(buffer: out) == "*2\r\n$3\r\nGET\r\n$14\r\nibge:Rondônia\r\n")
    }

    @Test("every value round-trips through the encoder and decoder")
    func roundTrip() throws {
        for (_, value) in frames {
            var out = ByteBuffer()
            out.writeRESPValue(value)
            let decoded = try RESPDecoder().decode(from: &out)
            #expect(decoded == value)
            #expect(out.readableBytes == 0)
        }
    }

    @Test("RESP2 mode writes null as the null bulk string")
    func resp2Null() {
        var out = ByteBuffer()
        out.writeRESPValue(.null, resp2: true)
        #expect(String(buffer: out) == "$-1\r\n")
    }

    @Test("attribute frames count toward the depth: endless ones are refused at the limit")
    func attributesCountTowardDepth() throws {
        var frames = ByteBuffer(string: String(repeating: "|1\r\n+k\r\n+v\r\n", count: 10_000) + "+OK\r\n")
        #expect(throws: RESPError.self) { try RESPDecoder().decode(from: &frames) }
        var few = ByteBuffer(string: String(repeating: "|1\r\n+k\r\n+v\r\n", count: 3) + "+OK\r\n")
        #expect(try RESPDecoder().decode(from: &few) == .simpleString(ByteBuffer(string: "OK")))
    }

    @Test("an incomplete frame says how many bytes it needs at least, so it is not parsed again before")
    func neededBytes() throws {
        var needed = -1
        var bulk = ByteBuffer(string: "$10\r\nabc")
        #expect(try RESPDecoder().decode(from: &bulk, needing: &needed) == nil)
        #expect(needed == 17 && bulk.readableBytes == 8)
        var aggregate = ByteBuffer(string: "*100\r\n+a\r\n")
        #expect(try RESPDecoder().decode(from: &aggregate, needing: &needed) == nil)
        #expect(needed == 6 + 300)
        var whole = ByteBuffer(string: "$3\r\nabc\r\n")
        #expect(try RESPDecoder().decode(from: &whole, needing: &needed) == .bulkString(ByteBuffer(string: "abc")))
        #expect(needed == 0)
    }
}
