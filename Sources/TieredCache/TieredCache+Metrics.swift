import CoreMetrics
import Synchronization

/// Hands the cache's counters to swift-metrics.
///
/// The hot path counts with plain integers under the shard locks and relaxed atomics (a
/// swift-metrics call per L1 hit would cost more than the hit); the exporter adds what each
/// counter gained since its last run to the swift-metrics counters, and sets the gauges. The
/// cache's `run()` does that every second, and a scrape (`GET /metrics`) just before it reads.
final class MetricsExporter: Sendable {
    private let last = Mutex<CacheMetrics?>(nil)
    private let counters: [String: Counter]
    private let gauges: [String: Gauge]
    let loadDuration: CoreMetrics.Timer

    /// `sharedStore`: whether a shared store (Redis) is configured; without one there is no
    /// `ibge_cache_redis_connected` (a memory-only instance is not "Redis down").
    init(factory: any MetricsFactory, sharedStore: Bool = true) {
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: label, dimensions: dimensions, factory: factory)
        }
        counters = [
            "l1Hits": counter("ibge_cache_hits_total", [("tier", "l1")]),
            "l2Hits": counter("ibge_cache_hits_total", [("tier", "l2")]),
            "misses": counter("ibge_cache_misses_total"),
            "loads": counter("ibge_cache_loads_total"),
            "loadErrors": counter("ibge_cache_load_errors_total"),
            "staleServed": counter("ibge_cache_stale_served_total"),
            "coalesced": counter("ibge_cache_coalesced_waiters_total"),
            "redisErrors": counter("ibge_cache_redis_errors_total"),
            "invalidValues": counter("ibge_cache_invalid_values_total"),
            "fallbackActivations": counter("ibge_cache_fallback_activations_total"),
            "l1Evictions": counter("ibge_cache_l1_evictions_total"),
            "l1Expirations": counter("ibge_cache_l1_expirations_total"),
            "lockWaits": counter("ibge_cache_lock_waits_total"),
            "eagerRefreshes": counter("ibge_cache_eager_refreshes_total"),
            "softTimeouts": counter("ibge_cache_soft_timeouts_total"),
            "l2SoftTimeouts": counter("ibge_cache_l2_soft_timeouts_total"),
            "backgroundRefused": counter("ibge_cache_background_jobs_refused_total"),
            "backplaneGaps": counter("ibge_cache_backplane_gaps_total"),
            "backplaneSent": counter("ibge_cache_backplane_messages_total", [("direction", "sent")]),
            "backplaneReceived": counter("ibge_cache_backplane_messages_total", [("direction", "received")]),
        ]
        var gauges = [
            "l1Entries": Gauge(label: "ibge_cache_l1_entries", factory: factory),
            "l1Bytes": Gauge(label: "ibge_cache_l1_bytes", factory: factory),
            "loadsInFlight": Gauge(label: "ibge_cache_loads_in_flight", factory: factory),
        ]
        if sharedStore { gauges["redisConnected"] = Gauge(label: "ibge_cache_redis_connected", factory: factory) }
        self.gauges = gauges
        loadDuration = CoreMetrics.Timer(label: "ibge_cache_load_duration_seconds", factory: factory)
    }

    /// The counters by their exporter name.
    private static func counts(_ m: CacheMetrics) -> [String: Int] {
        [
            "l1Hits": m.l1Hits, "l2Hits": m.l2Hits, "misses": m.misses, "loads": m.loads, "loadErrors": m.loadErrors,
            "staleServed": m.staleServed, "coalesced": m.coalesced, "redisErrors": m.redisErrors, "invalidValues": m.invalidValues,
            "fallbackActivations": m.fallbackActivations, "l1Evictions": m.l1Evictions, "l1Expirations": m.l1Expirations,
            "lockWaits": m.lockWaits, "eagerRefreshes": m.eagerRefreshes, "softTimeouts": m.softTimeouts, "l2SoftTimeouts": m.l2SoftTimeouts,
            "backgroundRefused": m.backgroundRefused, "backplaneGaps": m.backplaneGaps,
            "backplaneSent": m.backplaneSent, "backplaneReceived": m.backplaneReceived,
        ]
    }

    /// Adds every counter's gain since the last call, and sets the gauges.
    func export(_ m: CacheMetrics) {
        let previous = last.withLock { last in
            defer { last = m }
            return last
        }
        let now = Self.counts(m)
        let before = previous.map(Self.counts) ?? [:]
        for (name, value) in now {
            let delta = value - (before[name] ?? 0)
            if delta > 0 { counters[name]?.increment(by: delta) } else if previous == nil { counters[name]?.increment(by: 0) }
        }
        gauges["redisConnected"]?.record(m.redisConnected ? 1 : 0)
        gauges["l1Entries"]?.record(m.l1Entries)
        gauges["l1Bytes"]?.record(m.l1Bytes)
        gauges["loadsInFlight"]?.record(m.loadsInFlight)
    }
}

extension TieredCache {
    /// Hands the counters' gains since the last call to swift-metrics (``run()`` does it every
    /// second; call it before a scrape for figures that are exactly current).
    public func exportMetrics() {
        exporter.export(metrics())
    }
}
