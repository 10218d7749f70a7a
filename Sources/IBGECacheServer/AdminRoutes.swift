import Foundation
import Hummingbird
import IBGE
import NIOCore
import TieredCache
import Utilities

/// The admin API of the original service (same paths and field names), and more.
struct AdminRoutes {
    let service: IBGEService
    let configuration: ServerConfiguration
    let startedAt: ContinuousClock.Instant
    let preloads: PreloadState
    var cache: TieredCache { service.cache }

    func register(on router: Router<AppRequestContext>) {
        // Health answers any Host: probes (Kubernetes, load balancers) name the address they reach.
        router.group("/api/ibge/cache").getAndHead("health") { _, _ in await health() }
        let group = router.group("/api/ibge/cache")
        if let hosts = configuration.allowedHosts { group.add(middleware: AllowedHostsMiddleware(allowedHosts: hosts)) }
        group.add(middleware: AdminAuthMiddleware(token: configuration.adminToken, trustedProxies: configuration.trustedProxies))
        group.getAndHead("status") { _, _ in await status() }
        group.getAndHead("metrics") { _, _ -> Response in
            .json(MetricsBody(success: true, metrics: .init(cache.metrics(), embeddedFallbacks: service.embeddedFallbacks, circuit: service.upstream?.circuitState)))
        }
        group.post("clear") { _, _ in await clear() }
        group.post("preload") { request, context in await preload(request, context: context) }
        group.delete("keys/**") { request, _ in await deleteKey(request) }
    }

    // MARK: status

    struct StatusBody: Encodable {
        var success = true
        var status: Status
        struct Status: Encodable {
            var backend: String
            var redis_connected: Bool
            var redis_url: String
            var redis_error: String?
            var key_prefix: String
            var keys: Keys?
            var redis_memory: RedisMemory?
            /// How far this instance's clock is behind Redis's (negative: ahead), in ms, as
            /// freshness uses it; with Redis only.
            var redis_clock_offset_ms: Int64?
            var preload: Preload
            var l1: L1
            var source: String
            var ttl_seconds: Int64
            var uptime_seconds: Int64
        }
        struct Preload: Encodable {
            /// The scope of the preload running now, if one is.
            var running: String?
            /// When a preload last cached every key of its scope (Unix seconds).
            var last_success: Double?
            var last_duration_ms: Int64?
            var last_loaded: Int
            var last_failed: Int
            var runs: Int
            /// IBGE_PRELOAD_INTERVAL in seconds, when scheduled.
            var interval_seconds: Int64?
        }
        struct RedisMemory: Encodable {
            var used_bytes: Int
            var max_bytes: Int
            var policy: String
        }
        struct Keys: Encodable {
            var count: Int
            var sample: [String]
            var complete: Bool
        }
        struct L1: Encodable {
            var entries: Int
            var bytes: Int
            var max_entries: Int
            var max_bytes: Int
            var sample: [String]
        }
    }

    func status() async -> Response {
        let metrics = cache.metrics()
        // Counted at most once per 10 s and up to 100,000 keys, whoever asks how often.
        let overview = cache.hasSharedStore ? await cache.l2Overview() : nil
        let keys = overview?.keys
        let l1 = cache.l1Status(sampleSize: 10)
        let body = StatusBody(
            status: .init(
                backend: cache.backend.rawValue,
                redis_connected: cache.isRedisConnected,
                redis_url: configuration.redisURLDescription,
                redis_error: cache.isRedisConnected ? nil : metrics.redisLastError,
                key_prefix: configuration.keyPrefix,
                keys: keys.map { .init(count: $0.count, sample: $0.sample, complete: $0.complete) },
                redis_memory: overview?.memory.map { .init(used_bytes: $0.usedBytes, max_bytes: $0.maximumBytes, policy: $0.policy) },
                redis_clock_offset_ms: cache.hasSharedStore ? cache.clockOffsetMilliseconds : nil,
                preload: preloadStatus(),
                l1: .init(
                    entries: l1.statistics.entries, bytes: l1.statistics.bytes, max_entries: l1.limits.maximumEntries,
                    max_bytes: l1.limits.maximumBytes, sample: l1.sample.map { configuration.keyPrefix + $0 }),
                source: service.upstream == nil ? "embedded-snapshot" : "ibge-api",
                ttl_seconds: service.ttl.components.seconds,
                uptime_seconds: (ContinuousClock.now - startedAt).components.seconds
            ))
        return .json(body)
    }

    func preloadStatus() -> StatusBody.Preload {
        let state = preloads.snapshot
        return .init(
            running: state.running, last_success: state.lastSuccess,
            last_duration_ms: state.lastDuration.map(\.wholeMilliseconds),
            last_loaded: state.lastLoaded, last_failed: state.lastFailed, runs: state.runs,
            interval_seconds: configuration.preloadInterval.map { $0.components.seconds })
    }

    // MARK: health

    struct HealthBody: Encodable {
        var success: Bool
        var status: String
        var checks: Checks
        struct Checks: Encodable {
            var redis: Check
            var l1: Check
            var source: Check
        }
        struct Check: Encodable {
            var status: String
            var latency_ms: Double?
            var detail: String?

            init(_ check: IBGEService.Health.Check) {
                status = check.status.rawValue
                latency_ms = check.latency.map { ($0.inMilliseconds * 1000).rounded() / 1000 }
                detail = check.detail
            }
        }
    }

    func health() async -> Response {
        let health = await service.health()
        let checks = HealthBody.Checks(redis: .init(health.redis), l1: .init(health.l1), source: .init(health.source))
        return .json(
            HealthBody(success: health.status != .unhealthy, status: health.status.rawValue, checks: checks),
            status: health.status == .unhealthy ? .serviceUnavailable : .ok)
    }

    // MARK: metrics

    struct MetricsBody: Encodable {
        var success: Bool
        var metrics: Metrics
        struct Metrics: Encodable {
            var hits: Int
            var misses: Int
            var hit_rate_percent: Double
            var redis_connected: Bool
            var total_requests: Int
            var l1_hits: Int
            var l2_hits: Int
            var loads: Int
            var load_errors: Int
            var stale_served: Int
            var coalesced_waiters: Int
            var redis_errors: Int
            var invalid_values: Int
            var fallback_activations: Int
            var l1_entries: Int
            var l1_bytes: Int
            var l1_evictions: Int
            var l1_expirations: Int
            var loads_in_flight: Int
            var embedded_fallbacks: Int
            var lock_waits: Int
            var eager_refreshes: Int
            var soft_timeouts: Int
            var l2_soft_timeouts: Int
            var backplane_sent: Int
            var backplane_received: Int
            var background_jobs_refused: Int
            var backplane_gaps: Int
            /// With ENABLE_REAL_APIS: whether requests to IBGE fail at once now, and how often
            /// that circuit opened.
            var upstream_circuit_open: Bool?
            var upstream_circuit_openings: Int?
            var load_ms: LoadMilliseconds?

            struct LoadMilliseconds: Encodable {
                var p50: Double
                var p90: Double
                var p99: Double
                var max: Double
            }

            init(_ m: CacheMetrics, embeddedFallbacks: Int, circuit: (isOpen: Bool, openings: Int)?) {
                embedded_fallbacks = embeddedFallbacks
                upstream_circuit_open = circuit?.isOpen
                upstream_circuit_openings = circuit?.openings
                lock_waits = m.lockWaits
                eager_refreshes = m.eagerRefreshes
                soft_timeouts = m.softTimeouts
                l2_soft_timeouts = m.l2SoftTimeouts
                backplane_sent = m.backplaneSent
                backplane_received = m.backplaneReceived
                background_jobs_refused = m.backgroundRefused
                backplane_gaps = m.backplaneGaps
                load_ms = m.loadMilliseconds.map { .init(p50: $0.p50, p90: $0.p90, p99: $0.p99, max: $0.max) }
                hits = m.hits
                misses = m.misses
                hit_rate_percent = m.hitRatePercent
                redis_connected = m.redisConnected
                total_requests = m.totalRequests
                l1_hits = m.l1Hits
                l2_hits = m.l2Hits
                loads = m.loads
                load_errors = m.loadErrors
                stale_served = m.staleServed
                coalesced_waiters = m.coalesced
                redis_errors = m.redisErrors
                invalid_values = m.invalidValues
                fallback_activations = m.fallbackActivations
                l1_entries = m.l1Entries
                l1_bytes = m.l1Bytes
                l1_evictions = m.l1Evictions
                l1_expirations = m.l1Expirations
                loads_in_flight = m.loadsInFlight
            }
        }
    }

    // MARK: clear

    struct ClearBody: Encodable {
        var success = true
        var message: String
        var cleared: Cleared
        struct Cleared: Encodable {
            var memory_entries: Int
            var redis_keys: Int?
        }
    }

    func clear() async -> Response {
        let result = await cache.clear()
        let message =
            result.l2Keys == nil && cache.hasSharedStore
            ? "cleared memory; Redis is unreachable, its keys under \(configuration.keyPrefix) were not deleted"
            : "cleared every key under \(configuration.keyPrefix)"
        return .json(
            ClearBody(message: message, cleared: .init(memory_entries: result.memoryEntries, redis_keys: cache.hasSharedStore ? result.l2Keys : nil)))
    }

    // MARK: preload

    struct PreloadBody: Encodable {
        var success: Bool
        var scope: String
        var preloaded: Preloaded
        struct Preloaded: Encodable {
            var keys: Int
            var loaded: Int
            var already_cached: Int
            var failed: Int
            var duration_ms: Int64
        }
    }

    struct PreloadRequest: Decodable {
        var uf: String?
    }

    func preload(_ request: Request, context: AppRequestContext) async -> Response {
        var ufText = request.uri.queryParameters["uf"].map(String.init)
        if ufText == nil, request.headers[.contentType]?.hasPrefix("application/json") == true {
            do {
                var request = request
                let body = try await request.collectBody(upTo: 64 * 1024)
                if body.readableBytes > 0 {
                    ufText = try JSONDecoder().decode(PreloadRequest.self, from: Data(body.readableBytesView)).uf
                }
            } catch {
                return .error("the body must be JSON such as {\"uf\": \"SC\"} (at most 64 KiB): \(error)", status: .badRequest)
            }
        }
        var scope = Preloader.Scope.all
        if let ufText, !ufText.isEmpty, ufText.lowercased() != "all" {
            guard let uf = service.snapshot.uf(ufText) else {
                return .error("unknown UF '\(ufText.prefix(40))': use a sigla (SC) or a code (42)", status: .badRequest)
            }
            scope = .uf(uf.id)
        }
        let scopeName: String = if case .uf(let code) = scope { service.snapshot.uf(String(code))?.sigla ?? String(code) } else { "all" }
        // One preload at a time in an instance: another is reported, not started twice.
        guard preloads.begin(scopeName) else {
            let running = preloads.snapshot
            let seconds = running.startedAt.map { (ContinuousClock.now - $0).components.seconds } ?? 0
            return .error("a preload (\(running.running ?? "?")) is running already, started \(seconds) s ago", status: .conflict)
        }
        let result = await service.preload(scope)
        preloads.end(result)
        let ms = result.duration.wholeMilliseconds
        return .json(
            PreloadBody(
                success: result.failed == 0, scope: scopeName,
                preloaded: .init(
                    keys: result.keys, loaded: result.loaded, already_cached: result.alreadyCached,
                    failed: result.failed, duration_ms: ms)))
    }

    // MARK: keys

    struct DeleteKeyBody: Encodable {
        var success = true
        var key: String
        var removed: Removed
        struct Removed: Encodable {
            var memory: Bool
            var redis: Bool?
        }
    }

    func deleteKey(_ request: Request) async -> Response {
        let marker = "/api/ibge/cache/keys/"
        let path = request.uri.path
        guard let range = path.range(of: marker) else { return .error("missing key", status: .badRequest) }
        var key = PercentDecoding.lenient(path[range.upperBound...])
        guard !key.isEmpty, key.utf8.count <= 1024 else { return .error("the key must be 1 to 1024 bytes", status: .badRequest) }
        if key.hasPrefix(configuration.keyPrefix) { key = String(key.dropFirst(configuration.keyPrefix.count)) }
        let removed = await cache.remove(key)
        await cache.remove(key + "|gzip")
        return .json(
            DeleteKeyBody(key: configuration.keyPrefix + key, removed: .init(memory: removed.memory, redis: cache.hasSharedStore ? removed.l2 : nil)))
    }
}
