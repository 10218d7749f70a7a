import Foundation
import RESP
import Testing

/// Replays the fuzzer's saved inputs (crashes it found and interesting cases, in
/// `Tests/RESPTests/FuzzInputs/`) through the same self-check the fuzz target runs.
@Suite("Saved fuzz inputs")
struct FuzzInputReplayTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzInputs")

    static var inputs: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    /// The fuzz target's limits.
    let decoder = RESPDecoder(limits: .init(maxBulkLength: 4096, maxAggregateCount: 256, maxDepth: 8, maxLineLength: 256))

    @Test("the saved inputs are there")
    func present() {
        #expect(Self.inputs.count >= 8)
    }

    @Test("every saved input decodes the same whole and in pieces, and round-trips", arguments: inputs)
    func replay(name: String) throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent(name))
        let result = data.withUnsafeBytes { decoder.selfCheck($0) }
        if name == "too-deep" { #expect(result.endedWithError) }
        if name == "nested-array" { #expect(result.frames == 1 && !result.endedWithError) }
        if name == "resp3-scalars" { #expect(result.frames == 7 && !result.endedWithError) }
    }
}
