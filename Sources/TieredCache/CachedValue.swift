public import NIOCore

/// A cached value with what HTTP caching needs to describe it: a validator computed once when
/// the value was stored, and the time it stops being fresh.
public struct CachedValue: Sendable {
    /// The cached bytes.
    public var value: ByteBuffer
    /// A 64-bit digest of the bytes (``ContentTag``), computed when the value was stored and
    /// kept with it in L1 and in the L2 envelope: two values with the same tag are the same bytes.
    public var tag: UInt64
    /// When the value stops being fresh (Unix ms). In the past for a stale value served by the
    /// fail-safe.
    public var freshUntil: Int64

    /// Creates a cached value.
    public init(value: ByteBuffer, tag: UInt64, freshUntil: Int64) {
        self.value = value
        self.tag = tag
        self.freshUntil = freshUntil
    }

    /// Seconds (rounded down, at least 0) until the value stops being fresh, seen at `now` (Unix ms).
    @inlinable
    public func freshSeconds(now: Int64) -> Int64 {
        freshUntil > now ? (freshUntil &- now) / 1000 : 0
    }
}

/// The digest that identifies a value's bytes: a 64-bit hash, the same in every process and
/// every run (unlike the L1's seeded key hash), fast enough to compute on every store
/// (~8 bytes per step). It is a validator, not a defence: values come from IBGE, not from the
/// clients that compare tags.
public enum ContentTag {
    /// The tag of `buffer`'s readable bytes.
    public static func of(_ buffer: ByteBuffer) -> UInt64 {
        buffer.withUnsafeReadableBytes { of($0) }
    }

    /// The tag of `bytes`.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        let k1: UInt64 = 0x87C3_7B91_1142_53D5
        let k2: UInt64 = 0x4CF5_AD43_2745_937F
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ (UInt64(bytes.count) &* k1)
        var offset = 0
        while offset + 8 <= bytes.count {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            h ^= rotate(word &* k1, 31) &* k2
            h = rotate(h, 27) &* 5 &+ 0x52DC_E729
            offset += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count {
            tail |= UInt64(bytes[offset]) << shift
            shift += 8
            offset += 1
        }
        h ^= rotate(tail &* k1, 31) &* k2
        // MurmurHash3's finalizer: every input bit reaches every output bit.
        h ^= h >> 33
        h &*= 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h &*= 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }

    @inline(__always)
    private static func rotate(_ x: UInt64, _ by: UInt64) -> UInt64 { (x << by) | (x >> (64 - by)) }
}
