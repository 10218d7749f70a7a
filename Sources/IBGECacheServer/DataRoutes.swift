import Hummingbird
import IBGE

/// The IBGE mirror: `/api/v1/localidades/...` with IBGE's paths and JSON.
struct DataRoutes {
    let service: IBGEService
    static let prefix = "/api/v1/localidades/"

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/localidades/**") { request, _ in
            await answer(request)
        }
        router.get("/api/v1/localidades") { request, _ in
            await answer(request)
        }
    }

    func answer(_ request: Request) async -> Response {
        let path = request.uri.path
        let relative = path.hasPrefix(Self.prefix) ? String(path.dropFirst(Self.prefix.count)) : ""
        let query = request.uri.queryParameters.map { (String($0.key), String($0.value)) }
        do {
            let parsed = try service.request(path: relative, query: query)
            return .ibgeJSON(try await service.body(for: parsed))
        } catch {
            return .error(error.message, status: error.status)
        }
    }
}
