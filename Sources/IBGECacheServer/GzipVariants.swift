import CompressNIO
import HTTPTypes
import Hummingbird
import IBGE
import NIOCore
import TieredCache

/// gzip for clients that ask for it (`Accept-Encoding: gzip`), and only for them. The
/// compressed body is cached beside the plain one (key + `|gzip`, same TTL), so a body is
/// compressed once, not per request; `/municipios` goes from 2.5 MB to about 300 KB.
struct GzipVariants {
    let cache: TieredCache
    /// Bodies smaller than this are sent as they are.
    static let minimumBytes = 1024

    /// Whether the request's `Accept-Encoding` accepts gzip (a `q=0` refuses it).
    static func accepted(by request: Request) -> Bool {
        guard let header = request.headers[.acceptEncoding] else { return false }
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace() }
            guard let coding = parts.first?.lowercased(), coding == "gzip" || coding == "*" else { continue }
            let quality = parts.dropFirst().first { $0.lowercased().hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            return quality > 0
        }
        return false
    }

    /// The response for `body` (cached under `key`): gzip-compressed when the client accepts it
    /// and the body is worth compressing, else as it is. Both vary on `Accept-Encoding`.
    func response(for request: Request, body: ByteBuffer, key: String, ttl: Duration) async -> Response {
        guard Self.accepted(by: request), body.readableBytes >= Self.minimumBytes else {
            return Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8", .vary: "Accept-Encoding"],
                body: .init(byteBuffer: body))
        }
        let compressed = try? await cache.getOrLoad(key + "|gzip", ttl: ttl) {
            var input = body
            return try input.compress(with: .gzip)
        }
        guard let compressed else { return .ibgeJSON(body) }
        return Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .contentEncoding: "gzip", .vary: "Accept-Encoding"],
            body: .init(byteBuffer: compressed))
    }
}
