import CompressNIO
import IBGE
import NIOCore
import TieredCache

/// gzip for clients that ask for it (`Accept-Encoding: gzip`), and only for them. The
/// compressed body is cached beside the plain one (under ``DataAnswers/gzipKey(_:plainTag:)``,
/// with the plain value's TTL, jittered on its own), so a body is compressed once, not per request; `/municipios` goes from 2.5 MB to
/// about 300 KB. The variant has its own tag (of the compressed bytes), hence its own ETag.
struct GzipVariants {
    let cache: TieredCache

    /// The gzip variant of `plain` (cached under `key`), or nil when the client does not accept
    /// gzip, the body is too small to be worth it, or compressing fails (the plain body is sent).
    func variant(acceptEncoding: String?, plain: CachedValue, key: String, ttl: Duration) async -> CachedValue? {
        guard DataAnswers.acceptsGzip(acceptEncoding), plain.value.readableBytes >= DataAnswers.gzipMinimumBytes else { return nil }
        let body = plain.value
        return try? await cache.getOrLoadValue(DataAnswers.gzipKey(key, plainTag: plain.tag), ttl: ttl) {
            var input = body
            return try input.compress(with: .gzip)
        }
    }
}
