public import Hummingbird
import HummingbirdCore
import IBGE
import Prometheus
public import Logging
import Redis
import TieredCache
import TieredCacheRedis
import ServiceLifecycle

/// Builds the whole server from its configuration: the Redis client and its L2 store (or, with
/// `REDIS_URL=none`, an in-process L2 that keeps values through their grace period), the
/// two-tier cache, the IBGE service over the embedded snapshot, and the routes. The cache's
/// watch runs as a service of the application, started and stopped with it.
///
/// `accessLogOutput` receives the access log's lines (`ACCESS_LOG=true`) instead of standard
/// output, in chunks of whole lines.
public func buildApplication(
    configuration: ServerConfiguration,
    logger: Logger,
    accessLogOutput: (@Sendable ([UInt8]) -> Void)? = nil
) async throws -> some ApplicationProtocol {
    func makeLogger(_ label: String) -> Logger {
        var sublogger = Logger(label: label)
        sublogger.logLevel = logger.logLevel
        return sublogger
    }
    let snapshot = try IBGESnapshot.embedded()
    var redisConfiguration = configuration.redis
    redisConfiguration?.clientName = "ibge-cache"
    // A request never waits long for a connection: it goes to the source instead.
    redisConfiguration?.poolWaitTimeout = .milliseconds(50)
    redisConfiguration?.commandTimeout = .milliseconds(500)
    // No value we store comes near these; a server that sends more is broken or hostile.
    redisConfiguration?.maximumReplyBytes = 64 * 1024 * 1024
    redisConfiguration?.maximumBufferedBytes = 128 * 1024 * 1024
    // The Redis client reports through swift-metrics into this registry; GET /metrics shows it.
    let registry = PrometheusCollectorRegistry()
    var metricsFactory = PrometheusMetricsFactory(registry: registry)
    // From 50 µs: a Redis command takes a fraction of a millisecond, a load from the snapshot
    // too; the default buckets start at 5 ms, where every quantile would read the same.
    metricsFactory.defaultDurationHistogramBuckets = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    let redis = redisConfiguration.map { RedisClient(configuration: $0, logger: makeLogger("ibge-cache.redis"), metricsFactory: metricsFactory) }
    let memoryLimits = MemoryStore.Configuration(
        maximumEntries: configuration.memoryMaximumEntries, maximumBytes: configuration.memoryMaximumBytes)
    let l2: any L2Store =
        if let redis {
            RedisStore(client: redis, configuration: .init(keyPrefix: configuration.keyPrefix))
        } else {
            InMemoryL2Store(limits: memoryLimits)
        }
    let cache = TieredCache(
        configuration: .init(
            defaultTTL: configuration.ttl,
            gracePeriod: configuration.gracePeriod,
            memory: memoryLimits,
            ttlJitter: configuration.ttlJitter,
            // With a stale answer at hand, a slow IBGE never makes a request wait more than 2 s.
            softTimeout: configuration.enableRealAPIs ? .seconds(2) : nil,
            hardTimeout: .seconds(90),
            // A slow Redis is skipped for the source: the snapshot answers in microseconds, IBGE in
            // hundreds of milliseconds.
            l2SoftTimeout: configuration.enableRealAPIs ? .milliseconds(250) : .milliseconds(100)
        ),
        l2: l2,
        logger: makeLogger("ibge-cache.cache"),
        metricsFactory: metricsFactory
    )
    let upstream =
        configuration.enableRealAPIs
        ? HTTPUpstream(
            configuration: .init(
                baseURL: configuration.upstreamBaseURL, maximumConcurrentRequests: configuration.upstreamConcurrency,
                circuitFailureThreshold: configuration.upstreamCircuitFailures, circuitOpenDuration: configuration.upstreamCircuitOpen),
            logger: makeLogger("ibge-cache.upstream")) : nil
    let service = IBGEService(
        cache: cache, snapshot: snapshot, population: try Population2022.embedded(), upstream: upstream, ttl: configuration.ttl,
        agregadosTTL: configuration.agregadosTTL, logger: makeLogger("ibge-cache.ibge"))

    let answers = DataAnswers(gracePeriod: configuration.gracePeriod)
    var accessLog: AccessLog?
    if configuration.accessLog {
        var writer: (@Sendable ([UInt8]) -> Int)?
        if let accessLogOutput {
            writer = { lines in
                accessLogOutput(lines)
                return 0
            }
        }
        accessLog = AccessLog(
            format: configuration.logFormat == .json ? .json : .text, registry: registry, logger: makeLogger("ibge-cache.access"), output: writer)
    }
    let recorder = RequestRecorder(registry: registry, buckets: metricsFactory.defaultDurationHistogramBuckets, accessLog: accessLog)
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: RecordRequestsMiddleware(recorder: recorder))
    DataRoutes(service: service, answers: answers).register(on: router)
    let preloads = PreloadState()
    AdminRoutes(service: service, configuration: configuration, startedAt: .now, preloads: preloads).register(on: router)
    ProbeRoutes(service: service).register(on: router)
    // The dashboard answers only the hosts of ALLOWED_HOSTS, when set (as the admin API does);
    // /metrics answers any Host, as scrapers name the address they reach.
    let operators = router.group()
    if let hosts = configuration.allowedHosts { operators.add(middleware: AllowedHostsMiddleware(allowedHosts: hosts)) }
    PrometheusRoute(cache: cache, upstream: upstream, preloads: preloads, preloadInterval: configuration.preloadInterval, registry: registry)
        .register(on: router)
    DashboardRoute().register(on: operators)
    try OpenAPIRoute().register(on: router)

    let fastPath = configuration.fastPath ? L1FastPath(service: service, answers: answers, registry: registry, recorder: recorder) : nil
    let limits = configuration.connectionLimits
    let openConnections = OpenConnections()
    var app = Application(
        router: router,
        server: HTTPServerBuilder { responder in
            GuardedHTTP1Channel(responder: responder, limits: limits, fastPath: fastPath, openConnections: openConnections, recorder: recorder)
        },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: DataAnswers.serverName),
        logger: logger
    )
    // Services stop in reverse order (the HTTP server, which Hummingbird adds last, first): the
    // cache drains its queued background work while Redis and the upstream are still there, and
    // the access log writes its last lines after the last request.
    if let accessLog { app.addServices(accessLog) }
    if let redis {
        // Keeps its minimum connection open and pings it; closes everything on shutdown.
        app.addServices(redis)
    }
    if let upstream {
        app.addServices(UpstreamShutdown(upstream: upstream))
    }
    app.addServices(cache)
    if configuration.preloadOnStart || configuration.preloadInterval != nil {
        app.addServices(
            PreloadScheduler(
                service: service, state: preloads, onStart: configuration.preloadOnStart, interval: configuration.preloadInterval,
                logger: makeLogger("ibge-cache.preload")))
    }
    logger.info(
        "ibge-cache configured",
        metadata: [
            "redis": "\(configuration.redisURLDescription)", "ttl_s": "\(configuration.ttl.components.seconds)",
            "prefix": "\(configuration.keyPrefix)",
            "source": "\(configuration.enableRealAPIs ? "IBGE API at \(configuration.upstreamBaseURL), snapshot as fallback" : "embedded snapshot")",
            "admin_token": "\(configuration.adminToken == nil ? "unset (loopback only)" : "set")",
        ])
    return app
}

/// Closes the upstream HTTP client when the application shuts down.
struct UpstreamShutdown: Service {
    let upstream: HTTPUpstream

    func run() async throws {
        try? await gracefulShutdown()
        await upstream.shutdown()
    }
}
