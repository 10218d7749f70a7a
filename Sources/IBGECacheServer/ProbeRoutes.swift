import Hummingbird
import IBGE
import NIOCore
import TieredCache

/// Kubernetes-style probes, beside the original's `/api/ibge/cache/health`, answering any Host:
///
/// - `GET /livez`: the process answers HTTP (200, always, while it runs).
/// - `GET /readyz`: it can answer data requests as configured: the embedded snapshot is loaded
///   and, when Redis is configured, the first attempt to reach it has been made (200), so a
///   rolling update does not send traffic to an instance that has not yet found out whether it
///   shares a cache; else 503 with the reason. Redis being down does not make it unready: the
///   instance answers from memory (`/api/ibge/cache/health` says degraded).
struct ProbeRoutes {
    let service: IBGEService

    struct Body: Encodable {
        var status: String
        var reason: String?
    }

    func register(on router: Router<AppRequestContext>) {
        router.getAndHead("/livez") { _, _ -> Response in
            .json(Body(status: "alive"), headers: [.cacheControl: "no-store"])
        }
        router.getAndHead("/readyz") { _, _ -> Response in
            if service.snapshot.municipios.isEmpty {
                return .json(Body(status: "not ready", reason: "the embedded snapshot is empty"), status: .serviceUnavailable, headers: [.cacheControl: "no-store"])
            }
            if !service.cache.hasTriedL2 {
                return .json(Body(status: "not ready", reason: "the first attempt to reach Redis has not ended yet"), status: .serviceUnavailable, headers: [.cacheControl: "no-store"])
            }
            return .json(Body(status: "ready"), headers: [.cacheControl: "no-store"])
        }
    }
}
