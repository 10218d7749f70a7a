public import NIOCore

/// How a value is stored in the L2 store (Redis): a small versioned header, then the payload.
///
/// ```
/// offset  size  field
/// 0       2     magic "IC"
/// 2       1     format version (1)
/// 3       1     codec (0 raw bytes, 1 JSON)
/// 4       8     fresh until, Unix ms, big-endian (logical expiry)
/// 12      n     payload
/// ```
///
/// The store keeps it for the fresh time plus a grace period (physical expiry), so a stale
/// value is still there to serve when the source fails. Only these codecs exist: nothing read
/// from the store is ever executed or instantiated as an arbitrary type.
public struct CacheEnvelope: Sendable, Equatable {
    /// How the payload is encoded.
    public enum Codec: UInt8, Sendable {
        /// Opaque bytes.
        case raw = 0
        /// JSON (UTF-8).
        case json = 1
    }

    /// Current format version.
    public static let formatVersion: UInt8 = 1
    /// Bytes before the payload.
    public static let headerSize = 12
    private static let magic: UInt16 = 0x4943  // "IC"

    /// The payload's codec.
    public var codec: Codec
    /// When the value stops being fresh (Unix ms).
    public var freshUntil: Int64
    /// The cached bytes.
    public var payload: ByteBuffer

    /// Creates an envelope.
    public init(codec: Codec = .json, freshUntil: Int64, payload: ByteBuffer) {
        self.codec = codec
        self.freshUntil = freshUntil
        self.payload = payload
    }

    /// Writes header and payload to a new buffer.
    public func encoded() -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: Self.headerSize + payload.readableBytes)
        out.writeInteger(Self.magic)
        out.writeInteger(Self.formatVersion)
        out.writeInteger(codec.rawValue)
        out.writeInteger(freshUntil)
        out.writeImmutableBuffer(payload)
        return out
    }

    /// Reads an envelope; throws ``CacheError`` for bytes that are not one of ours.
    public init(decoding buffer: ByteBuffer) throws(CacheError) {
        var buffer = buffer
        guard buffer.readableBytes >= Self.headerSize else {
            throw CacheError(.invalidEnvelope, "value of \(buffer.readableBytes) bytes is shorter than the envelope header")
        }
        guard buffer.readInteger(as: UInt16.self) == Self.magic else {
            throw CacheError(.invalidEnvelope, "value does not start with the envelope magic (written by something else?)")
        }
        let version = buffer.readInteger(as: UInt8.self) ?? 0
        guard version == Self.formatVersion else {
            throw CacheError(.invalidEnvelope, "envelope format version \(version) is not supported (expected \(Self.formatVersion))")
        }
        let codecByte = buffer.readInteger(as: UInt8.self) ?? 255
        guard let codec = Codec(rawValue: codecByte) else { throw CacheError(.invalidEnvelope, "unknown codec \(codecByte)") }
        guard let freshUntil = buffer.readInteger(as: Int64.self) else { throw CacheError(.invalidEnvelope, "truncated header") }
        self.codec = codec
        self.freshUntil = freshUntil
        self.payload = buffer
    }
}
