import Hummingbird
import NIOCore
import Prometheus
import TieredCache

/// `GET /metrics`: the cache's counters, and the Redis client's swift-metrics (through
/// swift-prometheus), in the Prometheus text exposition format (0.0.4).
struct PrometheusRoute {
    let cache: TieredCache
    let registry: PrometheusCollectorRegistry

    func register(on router: Router<AppRequestContext>) {
        router.get("/metrics") { _, _ -> Response in
            var text = ByteBuffer(string: Self.exposition(cache.metrics()))
            text.writeBytes(registry.emitToBuffer())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: .init(byteBuffer: text))
        }
    }

    static func exposition(_ m: CacheMetrics) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { out += name + (sample.labels.isEmpty ? "" : "{\(sample.labels)}") + " " + sample.value + "\n" }
        }
        metric(
            "ibge_cache_hits_total", "counter", "Reads answered by a cache tier.", [("tier=\"l1\"", "\(m.l1Hits)"), ("tier=\"l2\"", "\(m.l2Hits)")])
        metric("ibge_cache_misses_total", "counter", "Reads no tier could answer.", [("", "\(m.misses)")])
        metric("ibge_cache_loads_total", "counter", "Loader runs.", [("", "\(m.loads)")])
        metric("ibge_cache_load_errors_total", "counter", "Loader runs that failed.", [("", "\(m.loadErrors)")])
        metric("ibge_cache_stale_served_total", "counter", "Stale values served because the loader failed.", [("", "\(m.staleServed)")])
        metric("ibge_cache_coalesced_waiters_total", "counter", "Callers that waited for another caller's load.", [("", "\(m.coalesced)")])
        metric("ibge_cache_redis_errors_total", "counter", "Redis commands that failed.", [("", "\(m.redisErrors)")])
        metric("ibge_cache_invalid_values_total", "counter", "Values in Redis that were not valid envelopes.", [("", "\(m.invalidValues)")])
        metric(
            "ibge_cache_fallback_activations_total", "counter", "Times the cache fell back to memory because Redis failed.",
            [("", "\(m.fallbackActivations)")])
        metric("ibge_cache_lock_waits_total", "counter", "Loads that waited for another instance's lock.", [("", "\(m.lockWaits)")])
        metric("ibge_cache_eager_refreshes_total", "counter", "Background refreshes before expiry.", [("", "\(m.eagerRefreshes)")])
        metric("ibge_cache_soft_timeouts_total", "counter", "Loads past the soft timeout (stale answered meanwhile).", [("", "\(m.softTimeouts)")])
        metric(
            "ibge_cache_backplane_messages_total", "counter", "Backplane notices.",
            [("direction=\"sent\"", "\(m.backplaneSent)"), ("direction=\"received\"", "\(m.backplaneReceived)")])
        metric("ibge_cache_l1_evictions_total", "counter", "L1 entries evicted to make room.", [("", "\(m.l1Evictions)")])
        metric("ibge_cache_l1_expirations_total", "counter", "L1 entries dropped at expiry.", [("", "\(m.l1Expirations)")])
        metric("ibge_cache_redis_connected", "gauge", "1 when Redis is in use.", [("", m.redisConnected ? "1" : "0")])
        metric("ibge_cache_l1_entries", "gauge", "Entries in L1.", [("", "\(m.l1Entries)")])
        metric("ibge_cache_l1_bytes", "gauge", "Bytes in L1.", [("", "\(m.l1Bytes)")])
        metric("ibge_cache_loads_in_flight", "gauge", "Keys being loaded now.", [("", "\(m.loadsInFlight)")])
        return out
    }
}
