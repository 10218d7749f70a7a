public import NIOCore

/// How a value is stored in the L2 store (Redis): a small versioned header, then the payload.
///
/// ```
/// offset  size  field
/// 0       2     magic "IC"
/// 2       1     format version (2; 1 is still read)
/// 3       1     codec (0 raw bytes, 1 JSON)
/// 4       8     fresh until, Unix ms, big-endian (logical expiry)
/// 12      8     content tag, big-endian (``ContentTag`` of the payload; version 2)
/// 20      n     payload
/// ```
///
/// Version 1 envelopes (no tag) are still read: their tag is computed from the payload.
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
    public static let formatVersion: UInt8 = 2
    /// Bytes before the payload.
    public static let headerSize = 20
    /// Bytes before the payload in a version 1 envelope (no tag).
    static let version1HeaderSize = 12
    private static let magic: UInt16 = 0x4943  // "IC"

    /// The payload's codec.
    public var codec: Codec
    /// When the value stops being fresh (Unix ms).
    public var freshUntil: Int64
    /// The cached bytes.
    public var payload: ByteBuffer
    /// The payload's ``ContentTag``, computed when the value was first stored.
    public var tag: UInt64

    /// Creates an envelope; the tag is computed from the payload unless given.
    public init(codec: Codec = .json, freshUntil: Int64, payload: ByteBuffer, tag: UInt64? = nil) {
        self.codec = codec
        self.freshUntil = freshUntil
        self.payload = payload
        self.tag = tag ?? ContentTag.of(payload)
    }

    /// The envelope's value, tag and freshness, as read from L2.
    public var cachedValue: CachedValue { CachedValue(value: payload, tag: tag, freshUntil: freshUntil, tier: .l2) }

    /// Writes header and payload to a new buffer.
    public func encoded() -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: Self.headerSize + payload.readableBytes)
        out.writeInteger(Self.magic)
        out.writeInteger(Self.formatVersion)
        out.writeInteger(codec.rawValue)
        out.writeInteger(freshUntil)
        out.writeInteger(tag)
        out.writeImmutableBuffer(payload)
        return out
    }

    /// Reads an envelope; throws ``CacheError`` for bytes that are not one of ours.
    public init(decoding buffer: ByteBuffer) throws(CacheError) {
        var buffer = buffer
        guard buffer.readableBytes >= Self.version1HeaderSize else {
            throw CacheError(.invalidEnvelope, "value of \(buffer.readableBytes) bytes is shorter than the envelope header")
        }
        guard buffer.readInteger(as: UInt16.self) == Self.magic else {
            throw CacheError(.invalidEnvelope, "value does not start with the envelope magic (written by something else?)")
        }
        let version = buffer.readInteger(as: UInt8.self) ?? 0
        guard version == Self.formatVersion || version == 1 else {
            throw CacheError(.invalidEnvelope, "envelope format version \(version) is not supported (expected 1 or \(Self.formatVersion))")
        }
        let codecByte = buffer.readInteger(as: UInt8.self) ?? 255
        guard let codec = Codec(rawValue: codecByte) else { throw CacheError(.invalidEnvelope, "unknown codec \(codecByte)") }
        guard let freshUntil = buffer.readInteger(as: Int64.self) else { throw CacheError(.invalidEnvelope, "truncated header") }
        if version == 1 {
            self.tag = ContentTag.of(buffer)
        } else {
            guard let tag = buffer.readInteger(as: UInt64.self) else { throw CacheError(.invalidEnvelope, "truncated header") }
            self.tag = tag
        }
        self.codec = codec
        self.freshUntil = freshUntil
        self.payload = buffer
    }
}
