import Hummingbird
import NIOCore
import Prometheus
import TieredCache

/// `GET /metrics`: everything reported through swift-metrics — the cache's counters and the
/// Redis client's — in the Prometheus text exposition format (0.0.4), by swift-prometheus.
struct PrometheusRoute {
    let cache: TieredCache
    let registry: PrometheusCollectorRegistry

    func register(on router: Router<AppRequestContext>) {
        router.getAndHead("/metrics") { _, _ -> Response in
            // Hand the counters' latest gains to swift-metrics, so the scrape is exactly current.
            cache.exportMetrics()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }
}
