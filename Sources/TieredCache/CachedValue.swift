public import NIOCore

/// A cached value with what HTTP caching needs to describe it: a validator computed once when
/// the value was stored, and the time it stops being fresh.
public struct CachedValue: Sendable {
    /// The cached bytes.
    public var value: ByteBuffer
    /// A 64-bit digest of the bytes (``ContentTag``), computed once and kept with the value in
    /// L1 and in the L2 envelope: two values with the same tag are, but for a 1-in-2^64
    /// collision, the same bytes. Never 0 in a value the cache returns (0 marks a tag not
    /// computed yet inside the cache).
    public var tag: UInt64
    /// When the value stops being fresh (Unix ms). In the past for a stale value served by the
    /// fail-safe.
    public var freshUntil: Int64
    /// Where this answer came from: L1, L2, the loader, or a stale value kept by the fail-safe.
    public var tier: CacheTier

    /// Creates a cached value; `tier` says where it came from.
    public init(value: ByteBuffer, tag: UInt64, freshUntil: Int64, tier: CacheTier) {
        self.value = value
        self.tag = tag
        self.freshUntil = freshUntil
        self.tier = tier
    }

    /// Seconds (rounded down, at least 0) until the value stops being fresh, seen at `now` (Unix ms).
    @inlinable
    public func freshSeconds(now: Int64) -> Int64 {
        freshUntil > now ? (freshUntil &- now) / 1000 : 0
    }
}

/// Where the cache found, or how it made, the value it answered with, in order from the
/// cheapest and freshest: an answer assembled from several values has the last of their tiers
/// in this order (a joined answer with one loaded part is loaded, with one stale part stale).
/// For logs and metrics: which tier answers how much, and how fast.
public enum CacheTier: UInt8, Sendable, Comparable {
    /// This process's memory (L1), fresh.
    case l1
    /// The shared store (L2: Redis, or the in-process L2 without it), fresh; put in L1 too.
    case l2
    /// The loader (or another caller's load this one waited for): the source.
    case source
    /// A value past its freshness: kept by the fail-safe while the source fails or is slow (or
    /// derived from one, as ``TieredCache/memoized(_:lifetime:compute:)`` values are).
    case stale
    /// Not from the cache at all: what the caller answered with when the cache could not (the
    /// source failed and nothing stale was kept). The cache never returns it.
    case fallback

    public static func < (lhs: CacheTier, rhs: CacheTier) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The digest that identifies a value's bytes: the L1's key hash (``KeyHasher``) with a fixed
/// seed instead of the per-process random one, so the same bytes get the same tag in every
/// process and every run (on the little-endian machines Swift servers run on). Fast enough to
/// compute on every store (eight bytes a step). It is a validator, not a defence: values come
/// from IBGE, not from the clients that compare tags.
public enum ContentTag {
    private static let hasher = KeyHasher(seed: 0x9E37_79B9_7F4A_7C15)

    /// The tag of `buffer`'s readable bytes (never 0, which marks a tag not computed yet).
    public static func of(_ buffer: ByteBuffer) -> UInt64 {
        max(1, buffer.withUnsafeReadableBytes { hasher.hash(bytes: $0) })
    }
}
