import NIOCore

extension RESPDecoder {
    /// What ``selfCheck(_:)`` found.
    public struct SelfCheckResult: Sendable, Equatable {
        /// The frames decoded before the input ran out or an error stopped decoding.
        public var values: [RESPValue]
        /// The protocol error that stopped decoding, if one did.
        public var error: RESPError?
        /// How many bytes were left undecoded (an incomplete last frame), when no error stopped decoding.
        public var leftover: Int

        /// How many frames were decoded.
        public var frames: Int { values.count }
        /// Whether decoding stopped on a protocol error.
        public var endedWithError: Bool { error != nil }
    }

    /// Decodes `bytes` whole and fed in pieces (split points taken from the input itself) and
    /// traps unless both give the same values and the same error, and unless every decoded
    /// value survives an encode/decode round trip. The fuzzer runs it on every input; the tests
    /// replay the saved inputs through it.
    public func selfCheck(_ bytes: UnsafeRawBufferPointer) -> SelfCheckResult {
        let whole = decodeAll(ByteBuffer(bytes: bytes), chunkSize: nil)
        let chunk = bytes.isEmpty ? 1 : Int(bytes[0] % 7) + 1
        let pieces = decodeAll(ByteBuffer(bytes: bytes), chunkSize: chunk)
        precondition(whole.values == pieces.values, "whole and piecewise decoding disagree")
        precondition(
            whole.error == pieces.error,
            "whole and piecewise decoding fail differently: \(String(describing: whole.error)) vs \(String(describing: pieces.error))")
        for value in whole.values where !value.containsNaN {
            var encoded = ByteBuffer()
            encoded.writeRESPValue(value)
            let again = try? RESPDecoder(limits: .default).decode(from: &encoded)
            precondition(again == value, "value does not round-trip: \(value)")
        }
        return SelfCheckResult(values: whole.values, error: whole.error, leftover: whole.leftover)
    }

    private func decodeAll(_ input: ByteBuffer, chunkSize: Int?) -> (values: [RESPValue], error: RESPError?, leftover: Int) {
        var values: [RESPValue] = []
        var buffer = ByteBuffer()
        var remaining = input
        do {
            while true {
                let take = min(chunkSize ?? remaining.readableBytes, remaining.readableBytes)
                if take > 0, var slice = remaining.readSlice(length: take) { buffer.writeBuffer(&slice) }
                while let value = try decode(from: &buffer) { values.append(value) }
                if remaining.readableBytes == 0 { return (values, nil, buffer.readableBytes) }
            }
        } catch {
            return (values, error, 0)
        }
    }
}

extension RESPValue {
    var containsNaN: Bool {
        switch self {
        case .double(let d): d.isNaN
        case .array(let a), .set(let a), .push(let a): a.contains { $0.containsNaN }
        case .map(let pairs): pairs.contains { $0.key.containsNaN || $0.value.containsNaN }
        default: false
        }
    }
}
