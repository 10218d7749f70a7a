import CompressNIO
import IBGE
import NIOCore
import TieredCache

/// gzip for clients that ask for it (`Accept-Encoding: gzip`), and only for them. The
/// compressed body is cached beside the plain one (under ``DataAnswers/gzipKey(_:plainTag:)``),
/// so a body is compressed once, not per request; `/municipios` goes from 2.5 MB to about
/// 300 KB. The variant has its own tag (of the compressed bytes), hence its own ETag.
///
/// A variant is fresh exactly as long as its plain value: it is cached for the plain value's
/// remaining freshness. The variant of a value that is not fresh (a stale value served by the
/// fail-safe, a snapshot fallback) is never written to Redis; it is kept in this process's L1
/// for ``unfreshSeconds`` so an outage does not compress per request.
struct GzipVariants {
    let cache: TieredCache

    /// How long the variant of a value that is not fresh stays in L1.
    static let unfreshSeconds: Int64 = 10

    /// The gzip variant of `plain` (cached under `key`), or nil when the client does not accept
    /// gzip, the body is too small to be worth it, or compressing fails (the plain body is sent).
    func variant(acceptEncoding: String?, plain: CachedValue, key: String, ttl: Duration) async -> CachedValue? {
        guard DataAnswers.acceptsGzip(acceptEncoding), plain.value.readableBytes >= DataAnswers.gzipMinimumBytes else { return nil }
        let body = plain.value
        let variantKey = DataAnswers.gzipKey(key, plainTag: plain.tag)
        let remaining = plain.freshUntil - cache.memory.clock.nowMilliseconds()
        if remaining >= 1000 {
            return try? await cache.getOrLoadValue(variantKey, ttl: ttl, freshNoLaterThan: plain.freshUntil) {
                var input = body
                return try input.compress(with: .gzip)
            }
        }
        return try? await cache.memoized(variantKey, lifetime: .seconds(Self.unfreshSeconds)) {
            var input = body
            return try input.compress(with: .gzip)
        }
    }
}
