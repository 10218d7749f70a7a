import Hummingbird
import IBGE

/// The IBGE mirror: `/api/v1/localidades/...` and `/api/v3/agregados/...` with IBGE's paths
/// and JSON. Localidades paths the snapshot knows are validated and answered by the service
/// (cache, upstream, snapshot); other allow-listed paths are mirrored from the upstream.
struct DataRoutes {
    let service: IBGEService
    static let prefix = "/api/v1/localidades/"
    var gzip: GzipVariants { GzipVariants(cache: service.cache) }

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/localidades/**") { request, _ in await localidades(request) }
        router.get("/api/v1/localidades") { request, _ in await localidades(request) }
        router.get("/api/v3/agregados/**") { request, _ in await mirror(request) }
    }

    func localidades(_ request: Request) async -> Response {
        let path = request.uri.path
        let relative = path.hasPrefix(Self.prefix) ? String(path.dropFirst(Self.prefix.count)) : ""
        let query = Self.query(request)
        do {
            let parsed = try service.request(path: relative, query: query)
            let body = try await service.body(for: parsed)
            return await gzip.response(for: request, body: body, key: parsed.cacheKey, ttl: service.ttl)
        } catch  where error.code == .notServed && service.upstream != nil {
            return await mirror(request)
        } catch {
            return .error(error.message, status: error.status)
        }
    }

    func mirror(_ request: Request) async -> Response {
        let path = request.uri.path.dropFirst("/api/".count)
        do {
            let upstreamRequest = try UpstreamRequest(path: String(path), query: Self.query(request))
            let body = try await service.mirror(upstreamRequest)
            let ttl = upstreamRequest.kind == .agregados ? service.agregadosTTL : service.ttl
            return await gzip.response(for: request, body: body, key: upstreamRequest.cacheKey, ttl: ttl)
        } catch {
            return .error(error.message, status: error.status)
        }
    }

    static func query(_ request: Request) -> [(String, String)] {
        request.uri.queryParameters.map { (String($0.key), String($0.value)) }
    }
}
