import NIOCore
import TieredCache
import Testing

@Suite("Redis value envelope")
struct CacheEnvelopeTests {
    @Test("round trip keeps codec, expiry and payload")
    func roundTrip() throws {
        let envelope = CacheEnvelope(codec: .json, freshUntil: 1_767_225_600_123, payload: ByteBuffer(string: "[{\"id\":1}]"))
        let encoded = envelope.encoded()
        #expect(encoded.readableBytes == CacheEnvelope.headerSize + 10)
        #expect(try CacheEnvelope(decoding: encoded) == envelope)
    }

    @Test(
        "foreign or damaged bytes are rejected with a reason",
        arguments: [
            ([UInt8](), "shorter than the envelope header"),
            (Array("{\"pickle\": true, \"x\": 1}".utf8), "magic"),
            ([0x49, 0x43, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0], "version 9"),
            ([0x49, 0x43, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0], "unknown codec 7"),
        ])
    func rejects(bytes: [UInt8], reason: String) {
        let error = #expect(throws: CacheError.self) { try CacheEnvelope(decoding: ByteBuffer(bytes: bytes)) }
        #expect(error?.code == .invalidEnvelope)
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "")")
    }
}
