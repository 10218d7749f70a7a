import Foundation
import Hummingbird
import IBGE
import NIOCore
import Prometheus
import Synchronization
import TieredCache

/// `GET /metrics`: everything reported through swift-metrics — the cache's counters and the
/// Redis client's — in the Prometheus text exposition format (0.0.4), by swift-prometheus.
struct PrometheusRoute {
    let cache: TieredCache
    let upstream: HTTPUpstream?
    let preloads: PreloadState
    /// IBGE_PRELOAD_INTERVAL, exported for the alert on warming (0: not scheduled).
    let preloadInterval: Duration?
    let registry: PrometheusCollectorRegistry

    func register(on router: some RouterMethods<AppRequestContext>) {
        // The IBGE circuit breaker's state, set at each scrape (with ENABLE_REAL_APIS).
        let circuit = upstream.map { _ in
            (
                open: registry.makeGauge(
                    descriptor: .init(
                        namespace: "ibge", subsystem: "upstream", metricName: "circuit", unitName: "open",
                        helpText: "1 while requests to IBGE fail at once after repeated failures")),
                openings: registry.makeCounter(
                    descriptor: .init(
                        namespace: "ibge", subsystem: "upstream", metricName: "circuit_openings", unitName: "total",
                        helpText: "times a circuit on IBGE opened")),
                exported: ExportedCount()
            )
        }
        func gauge(_ name: String, _ unit: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: .init(namespace: "ibge_cache", subsystem: "preload", metricName: name, unitName: unit, helpText: help))
        }
        let preload = (
            lastSuccess: gauge("last_success", "timestamp_seconds", "when a preload last cached every key of its scope (Unix time; 0: never)"),
            duration: gauge("last_duration", "seconds", "how long the last preload took"),
            loaded: gauge("last_loaded", "keys", "keys the last preload loaded"),
            failed: gauge("last_failed", "keys", "keys the last preload could not load"),
            running: gauge("running", "", "1 while a preload runs")
        )
        gauge("interval", "seconds", "IBGE_PRELOAD_INTERVAL (0: no scheduled warming)")
            .set(to: preloadInterval.map { Double($0.components.seconds) } ?? 0)
        // When this process started: the alert on warming counts from it until a first success.
        registry.makeGauge(descriptor: .init(namespace: "ibge_cache", metricName: "start_time", unitName: "seconds", helpText: "when this process started (Unix time)"))
            .set(to: Date().timeIntervalSince1970)
        router.getAndHead("/metrics") { _, _ -> Response in
            let state = preloads.snapshot
            preload.lastSuccess.set(to: state.lastSuccess ?? 0)
            preload.duration.set(to: state.lastDuration.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 } ?? 0)
            preload.loaded.set(to: Double(state.lastLoaded))
            preload.failed.set(to: Double(state.lastFailed))
            preload.running.set(to: state.running == nil ? 0 : 1)
            // Hand the counters' latest gains to swift-metrics, so the scrape is exactly current.
            cache.exportMetrics()
            if let upstream, let circuit {
                let state = upstream.circuitState
                circuit.open.set(to: state.isOpen ? 1.0 : 0.0)
                let gain = circuit.exported.value.withLock { exported in
                    defer { exported = max(exported, state.openings) }
                    return state.openings - exported
                }
                if gain > 0 { circuit.openings.increment(by: Int64(gain)) }
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }
}

/// How much of a count was handed to its Prometheus counter already.
private final class ExportedCount: Sendable {
    let value = Mutex(0)
}
