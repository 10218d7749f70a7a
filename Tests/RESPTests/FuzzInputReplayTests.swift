import Foundation
import NIOCore
import RESP
import Testing

/// Replays the fuzzer's saved inputs (crashes it found and interesting cases, in
/// `Tests/RESPTests/FuzzInputs/`) through the same self-check the fuzz target runs, and checks
/// what each decodes to against its expected transcript in `FuzzExpected/<name>.txt`: every
/// frame, then how decoding ended (the typed error, or the bytes of an incomplete frame).
///
/// To add an input, save it in `FuzzInputs/`, run the tests once with
/// `IBGE_RECORD_FUZZ_EXPECTATIONS=1`, and read the new transcript before committing it.
@Suite("Saved fuzz inputs")
struct FuzzInputReplayTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let inputs = directory.appendingPathComponent("FuzzInputs")
    static let expected = directory.appendingPathComponent("FuzzExpected")

    static var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: inputs.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    /// The fuzz target's limits.
    let decoder = RESPDecoder(limits: .init(maxBulkLength: 4096, maxAggregateCount: 256, maxDepth: 8, maxLineLength: 256))

    /// What an input decodes to, one line a frame, then the ending.
    static func transcript(_ result: RESPDecoder.SelfCheckResult) -> String {
        var lines = result.values.map { "frame: " + render($0) }
        if let error = result.error {
            lines.append("error: \(error)")
        } else {
            lines.append("end: \(result.leftover) bytes of an incomplete frame left")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A value as text, bytes escaped, so a transcript reads the same on every machine.
    static func render(_ value: RESPValue) -> String {
        func bytes(_ buffer: ByteBuffer) -> String {
            var out = "\""
            for byte in buffer.readableBytesView {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += "\\" + String(UnicodeScalar(byte))
                case 0x20..<0x7F: out.append(Character(UnicodeScalar(byte)))
                default: out += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
                }
            }
            return out + "\""
        }
        func list(_ values: [RESPValue]) -> String { values.map(render).joined(separator: ", ") }
        switch value {
        case .simpleString(let b): return "simple(\(bytes(b)))"
        case .simpleError(let b): return "error(\(bytes(b)))"
        case .integer(let n): return "integer(\(n))"
        case .bulkString(let b): return "bulk(\(bytes(b)))"
        case .array(let values): return "array[\(list(values))]"
        case .null: return "null"
        case .boolean(let b): return "boolean(\(b))"
        case .double(let d): return "double(\(d))"
        case .bigNumber(let b): return "big(\(bytes(b)))"
        case .bulkError(let b): return "bulkError(\(bytes(b)))"
        case .verbatimString(let format, let content): return "verbatim(\(format), \(bytes(content)))"
        case .map(let pairs): return "map{" + pairs.map { render($0.key) + ": " + render($0.value) }.joined(separator: ", ") + "}"
        case .set(let values): return "set[\(list(values))]"
        case .push(let values): return "push[\(list(values))]"
        }
    }

    @Test("the saved inputs are there, each with its expected transcript")
    func present() {
        #expect(Self.names.count >= 20)
        let transcripts = Set(((try? FileManager.default.contentsOfDirectory(atPath: Self.expected.path)) ?? []).filter { $0.hasSuffix(".txt") })
        #expect(transcripts == Set(Self.names.map { $0 + ".txt" }))
    }

    @Test("every saved input decodes the same whole and in pieces, round-trips, and gives its expected frames or error", arguments: names)
    func replay(name: String) throws {
        let data = try Data(contentsOf: Self.inputs.appendingPathComponent(name))
        let result = data.withUnsafeBytes { decoder.selfCheck($0) }
        let transcript = Self.transcript(result)
        let file = Self.expected.appendingPathComponent(name + ".txt")
        if ProcessInfo.processInfo.environment["IBGE_RECORD_FUZZ_EXPECTATIONS"] == "1" {
            try Data(transcript.utf8).write(to: file)
        }
        #expect(transcript == (try String(contentsOf: file, encoding: .utf8)))
    }

    @Test("known inputs end as they must")
    func landmarks() throws {
        func check(_ name: String) throws -> RESPDecoder.SelfCheckResult {
            let data = try Data(contentsOf: Self.inputs.appendingPathComponent(name))
            return data.withUnsafeBytes { decoder.selfCheck($0) }
        }
        #expect(try check("too-deep").error?.description.contains("nested deeper") == true)
        #expect(
            try check("nested-array").values == [
                .array([.integer(1), .bulkString(.init(string: "foo")), .array([.simpleString(.init(string: "x"))])])
            ])
        #expect(try check("resp3-scalars").frames == 7)
        #expect(try check("long-bulk").error?.description.contains("bulk length 99999") == true)
        #expect(try check("simple-string").values == [.simpleString(.init(string: "OK"))])
    }
}
