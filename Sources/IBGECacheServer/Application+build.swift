public import Hummingbird
import IBGE
public import Logging
import Redis
import TieredCache

/// Builds the whole server from its configuration: the Redis client (unless `REDIS_URL=none`),
/// the two-tier cache, the IBGE service over the embedded snapshot, and the routes. The cache's
/// Redis watch runs as a service of the application, started and stopped with it.
public func buildApplication(
    configuration: ServerConfiguration,
    logger: Logger
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
    let redis = redisConfiguration.map { RedisClient(configuration: $0, logger: makeLogger("ibge-cache.redis")) }
    let cache = TieredCache(
        configuration: .init(
            keyPrefix: configuration.keyPrefix,
            defaultTTL: configuration.ttl,
            gracePeriod: configuration.gracePeriod,
            memory: .init(maximumEntries: configuration.memoryMaximumEntries, maximumBytes: configuration.memoryMaximumBytes)
        ),
        redis: redis,
        logger: makeLogger("ibge-cache.cache")
    )
    if configuration.enableRealAPIs {
        logger.warning(
            "ENABLE_REAL_APIS=true: this build has no upstream source yet; answering from the embedded IBGE snapshot",
            metadata: ["IBGE_API_BASE_URL": "\(configuration.upstreamBaseURL)"])
    }
    let service = IBGEService(
        cache: cache, source: EmbeddedSource(snapshot: snapshot), snapshot: snapshot, ttl: configuration.ttl,
        logger: makeLogger("ibge-cache.ibge"))

    let router = Router(context: AppRequestContext.self)
    router.add(middleware: LogRequestsMiddleware(.debug))
    DataRoutes(service: service).register(on: router)
    AdminRoutes(service: service, configuration: configuration, startedAt: .now).register(on: router)
    PrometheusRoute(cache: cache).register(on: router)

    var app = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "ibge-cache"),
        logger: logger
    )
    app.addServices(cache)
    if let redis {
        // Keeps its minimum connection open and pings it; closes everything on shutdown.
        app.addServices(redis)
    }
    logger.info(
        "ibge-cache configured",
        metadata: [
            "redis": "\(configuration.redisURLDescription)", "ttl_s": "\(configuration.ttl.components.seconds)",
            "prefix": "\(configuration.keyPrefix)", "admin_token": "\(configuration.adminToken == nil ? "unset (loopback only)" : "set")",
        ])
    return app
}
