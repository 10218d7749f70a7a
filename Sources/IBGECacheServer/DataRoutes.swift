import HTTPTypes
import Hummingbird
import HummingbirdCore
import IBGE
import NIOCore
import TieredCache

/// The IBGE mirror: `/api/v1/localidades/...` and `/api/v3/agregados/...` with IBGE's paths
/// and JSON. Localidades paths the snapshot knows are validated and answered by the service
/// (cache, upstream, snapshot); other allow-listed paths are mirrored from the upstream.
/// Every answer is written by ``DataAnswers`` (CORS, ETag and 304, Cache-Control); `OPTIONS`
/// answers a CORS preflight. L1 hits on single-entry localidades paths are usually answered
/// before they reach here, by ``L1FastPathHandler``, with the same bytes.
struct DataRoutes {
    let service: IBGEService
    let answers: DataAnswers
    static let prefix = "/api/v1/localidades/"
    var gzip: GzipVariants { GzipVariants(cache: service.cache) }

    func register(on router: Router<AppRequestContext>) {
        router.getAndHead("/api/v1/localidades/**") { request, context in await localidades(request, context) }
        router.getAndHead("/api/v1/localidades") { request, context in await localidades(request, context) }
        router.getAndHead("/api/v3/agregados/**") { request, context in await mirror(request, context) }
        for path in ["/api/v1/localidades/**", "/api/v1/localidades", "/api/v3/agregados/**"] {
            router.on(RouterPath(path), method: .options) { request, _ in
                Response(status: .noContent, headers: DataAnswers.preflightFields(requestFields: request.headers))
            }
        }
    }

    /// The localidades request a URI names (the fast path resolves URIs with this too).
    static func localidadesRequest(_ uri: URI, service: IBGEService) throws(IBGEError) -> LocalidadesRequest {
        let path = uri.path
        let relative = path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : ""
        return try service.request(path: relative, query: query(uri))
    }

    func localidades(_ request: Request, _ context: AppRequestContext) async -> Response {
        do {
            let parsed = try Self.localidadesRequest(request.uri, service: service)
            let answer = try await service.answer(for: parsed)
            return await respond(request, context, answer, key: parsed.cacheKey, ttl: service.ttl)
        } catch where error.code == .notServed && service.upstream != nil {
            return await mirror(request, context)
        } catch {
            return errorAnswer(error, context)
        }
    }

    func mirror(_ request: Request, _ context: AppRequestContext) async -> Response {
        let path = request.uri.path.dropFirst("/api/".count)
        do {
            let upstreamRequest = try UpstreamRequest(path: String(path), query: Self.query(request.uri))
            let answer = try await service.mirrorAnswer(upstreamRequest)
            let ttl = upstreamRequest.kind == .agregados ? service.agregadosTTL : service.ttl
            return await respond(request, context, answer, key: upstreamRequest.cacheKey, ttl: ttl)
        } catch {
            return errorAnswer(error, context)
        }
    }

    private func respond(_ request: Request, _ context: AppRequestContext, _ plain: CachedValue, key: String, ttl: Duration) async -> Response {
        context.answer.tier = service.tier(of: plain)
        let variant = await gzip.variant(acceptEncoding: request.headers[.acceptEncoding], plain: plain, key: key, ttl: ttl)
        let answer = answers.answer(
            ifNoneMatch: request.headers[.ifNoneMatch], plain: plain, gzip: variant, now: service.cache.memory.clock.nowMilliseconds())
        return Response(status: answer.status, headers: answer.fields, body: .init(byteBuffer: answer.body))
    }

    /// A data error's answer; one IBGE gave, or its failure, is recorded with the tier `upstream`.
    func errorAnswer(_ error: IBGEError, _ context: AppRequestContext) -> Response {
        let fromIBGE = error.upstreamStatus != nil || error.code == .upstreamFailed || error.code == .upstreamTimeout
        if fromIBGE, service.upstream != nil { context.answer.tier = .upstream }
        return .error(error.message, status: error.status, headers: DataAnswers.errorFields)
    }

    static func query(_ uri: URI) -> [(String, String)] {
        uri.queryParameters.map { (String($0.key), String($0.value)) }
    }
}
