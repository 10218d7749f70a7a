public import CoreMetrics
public import Logging
import Metrics
public import NIOCore
public import NIOPosix
public import RESP
public import ServiceLifecycle
import Synchronization

/// A Redis client: a pool of pipelined connections with typed commands.
///
/// - Many commands share a connection: concurrent callers' commands are written together and
///   their replies matched in order. The pool opens another connection (up to
///   ``RedisConfiguration/maximumConnections``) when the least busy one has commands queued,
///   and never queues without bound (``RedisConfiguration/maximumPendingPerConnection``).
/// - Every call is bounded in time: connecting (handshake included) by
///   ``RedisConfiguration/connectTimeout``, waiting for a connection by
///   ``RedisConfiguration/poolWaitTimeout``, each command by ``RedisConfiguration/commandTimeout``.
///   A cancelled caller stops waiting at once (its reply is dropped when it comes).
/// - After a failed connection attempt the pool waits before trying again (exponential backoff
///   with jitter); callers in the meantime fail at once with the last error.
/// - The client never retries a command by itself.
///
/// ``run()`` (a swift-service-lifecycle `Service`) keeps ``RedisConfiguration/minimumConnections``
/// open, pings idle connections and closes the ones idle too long; without it the pool still
/// works, opening connections on demand.
public final class RedisClient: Service, Sendable {
    /// The configuration the client was made with.
    public let configuration: RedisConfiguration
    /// One server's pool, or a cluster's router (``RedisConfiguration/clusterSeeds``).
    private let backend: Backend
    private let subscriber: RedisSubscriber
    /// On a cluster, the subscriptions to sharded channels: one connection per slot subscribed
    /// to, on the master serving that slot (made on first use, kept until shutdown; nil after).
    private let shardSubscribers = Mutex<[HashSlot: RedisSubscriber]?>([:])
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger

    private enum Backend: Sendable {
        case server(RedisConnectionPool)
        case cluster(ClusterRouter)
        case sentinel(SentinelRouter)
    }

    /// The cluster's router, when the client speaks to a Redis Cluster.
    var cluster: ClusterRouter? {
        if case .cluster(let router) = backend { return router }
        return nil
    }

    /// Whether the client speaks to a Redis Cluster.
    public var isCluster: Bool { cluster != nil }
    private let metrics: ClientMetrics

    /// Creates a client; no connection is opened until the first command (or ``run()``).
    ///
    /// - Parameter metricsFactory: where the client reports `redis_command_duration_seconds`,
    ///   `redis_command_errors_total{kind}` and `redis_connections_open` (default: the
    ///   process-wide swift-metrics backend).
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis"),
        metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        let metrics = ClientMetrics(factory: metricsFactory)
        self.metrics = metrics
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        var resolveEndpoint: (@Sendable () async -> RedisConfiguration.Endpoint?)?
        if let sentinel = configuration.sentinel, !sentinel.endpoints.isEmpty {
            let router = SentinelRouter(configuration: configuration, sentinel: sentinel, eventLoopGroup: eventLoopGroup, logger: logger) { open in
                metrics.connectionsOpen.record(open)
            }
            self.backend = .sentinel(router)
            // The backplane's subscriptions follow the master too.
            resolveEndpoint = {
                guard let master = try? await router.master() else { return nil }
                return .tcp(host: master.host, port: master.port)
            }
        } else if let seeds = configuration.clusterSeeds {
            let nodes = seeds.compactMap { endpoint -> ClusterTopology.Node? in
                if case .tcp(let host, let port) = endpoint { return ClusterTopology.Node(host: host, port: port) }
                return nil
            }
            self.backend = .cluster(
                ClusterRouter(configuration: configuration, seeds: nodes, eventLoopGroup: eventLoopGroup, logger: logger) { open in
                    metrics.connectionsOpen.record(open)
                })
        } else {
            self.backend = .server(
                RedisConnectionPool(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger) { open in
                    metrics.connectionsOpen.record(open)
                })
        }
        self.subscriber = RedisSubscriber(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger, resolveEndpoint: resolveEndpoint)
    }

    /// Subscribes to channels. Messages arrive on the returned stream (at most 4,096 waiting;
    /// beyond that the oldest are dropped); the subscription ends when the stream's consumer
    /// stops. Subscriptions live on a connection of their own and are restored after it drops.
    /// Returns once the server has confirmed every channel.
    public func subscribe(to channels: [String]) async throws(RedisError) -> AsyncStream<RedisMessage> {
        try await subscriber.subscribe(channels: channels, patterns: [])
    }

    /// Subscribes to channel patterns (`PSUBSCRIBE`), as ``subscribe(to:)`` does to channels.
    public func psubscribe(to patterns: [String]) async throws(RedisError) -> AsyncStream<RedisMessage> {
        try await subscriber.subscribe(channels: [], patterns: patterns)
    }

    /// Subscribes to channels and to sharded channels (`SSUBSCRIBE`, Redis 7), with one stream
    /// for both, as ``subscribe(to:)`` does.
    ///
    /// On a cluster, the sharded channels must share one hash slot (as one `SSUBSCRIBE` must);
    /// their subscription lives on the master serving that slot, and follows the slot when it
    /// moves (a resharding, a failover: the subscription is restored there and the stream is
    /// told that messages may have been lost). The channels are subscribed on the same
    /// connection.
    public func subscribe(to channels: [String], shardChannels: [String]) async throws(RedisError) -> AsyncStream<RedisMessage> {
        guard !shardChannels.isEmpty, case .cluster(let router) = backend else {
            return try await subscriber.subscribe(channels: channels, patterns: [], shardChannels: shardChannels)
        }
        let slots = Set(shardChannels.map { HashSlot(key: Array($0.utf8)) })
        guard slots.count == 1, let slot = slots.first else {
            throw RedisError(.invalidConfiguration, "the sharded channels of one subscription must share a hash slot: \(shardChannels)")
        }
        let subscriber = try shardSubscribers.withLock { (subscribers) throws(RedisError) -> RedisSubscriber in
            guard subscribers != nil else { throw RedisError(.clientShutdown, "the Redis client was shut down") }
            if let subscriber = subscribers?[slot] { return subscriber }
            let subscriber = RedisSubscriber(
                configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger,
                resolveEndpoint: {
                    // Asked before each connection: after a failover, a resharding or a
                    // refusal, the map is read again (at most every 100 ms) first.
                    await router.refresh()
                    guard let node = try? await router.master(for: slot) else { return nil }
                    return .tcp(host: node.host, port: node.port)
                })
            subscribers?[slot] = subscriber
            return subscriber
        }
        return try await subscriber.subscribe(channels: channels, patterns: [], shardChannels: shardChannels)
    }

    /// Whether notices are best published on sharded channels (`SPUBLISH`): on a cluster whose
    /// nodes run Redis 7 or later, where a classic `PUBLISH` is copied to every node of the
    /// cluster and a sharded one stays within the channel's shard. False elsewhere (a single
    /// server or Sentinel gains nothing from it). Nil on a cluster none of whose nodes could be
    /// asked yet.
    public func prefersShardedPubSub() async -> Bool? {
        guard case .cluster(let router) = backend else { return false }
        return await router.hasShardedPubSub()
    }

    /// The pool's state, for health checks.
    public struct PoolStatus: Sendable {
        /// Connections open and usable.
        public var open: Int
        /// Connections being opened.
        public var connecting: Int
        /// Slots waiting before the next connection attempt.
        public var backingOff: Int
        /// The last connection failure, while any slot is backing off.
        public var lastError: RedisError?
    }

    /// The pool's state now.
    public var poolStatus: PoolStatus {
        switch backend {
        case .server(let pool):
            let counts = pool.counts
            return PoolStatus(open: counts.open, connecting: counts.connecting, backingOff: counts.backingOff, lastError: counts.lastError)
        case .cluster(let router as any NodeRouter), .sentinel(let router as any NodeRouter):
            // Every node's pool together.
            var status = PoolStatus(open: 0, connecting: 0, backingOff: 0, lastError: nil)
            for pool in router.nodes.all {
                let counts = pool.counts
                status.open += counts.open
                status.connecting += counts.connecting
                status.backingOff += counts.backingOff
                status.lastError = status.lastError ?? counts.lastError
            }
            return status
        }
    }

    /// The number of open connections.
    public var openConnections: Int { poolStatus.open }

    /// A connection of the pool, opening one when needed (waiting at most
    /// ``RedisConfiguration/poolWaitTimeout`` for it); on a cluster, to one of its masters.
    public func connection() async throws(RedisError) -> RedisConnection {
        switch backend {
        case .server(let pool): return try await pool.connection()
        case .cluster(let router): return try await router.pool(for: router.master(for: nil)).connection()
        case .sentinel(let router): return try await router.pool(for: router.master()).connection()
        }
    }

    /// Keeps the minimum number of connections open, pings idle ones and closes those idle too
    /// long, until cancelled or told to shut down gracefully; then closes every connection.
    public func run() async throws {
        let interval = min(configuration.keepAliveInterval, configuration.idleTimeout, .seconds(1))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                switch self.backend {
                case .server(let pool): await pool.maintain()
                case .cluster(let router): await router.maintain()
                case .sentinel(let router): await router.maintain()
                }
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
            }
        }
        await shutdown()
    }

    /// Sends a command and returns its reply.
    ///
    /// - Throws: ``RedisError`` with ``RedisError/Code/serverError`` when the server answers with an
    ///   error, or the connection or timeout failure.
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        try await measured { () async throws(RedisError) -> RESPValue in
            let reply: RESPValue
            // One server, the common case, stays out of the routers' code (a smaller async frame).
            if case .server(let pool) = backend {
                reply = try await pool.connection().send(command)
            } else {
                reply = try await routedSend(command)
            }
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
            return reply
        }
    }

    /// Sends a command as ``send(_:)`` does, but to the master even when reads may go to replicas
    /// (``RedisConfiguration/readFromReplicas``): for a read that must see the latest write.
    public func sendToMaster(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        guard case .cluster(let router) = backend, configuration.readFromReplicas else { return try await send(command) }
        return try await measured { () async throws(RedisError) -> RESPValue in
            let reply = try await router.send(command, allowReplicas: false)
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
            return reply
        }
    }

    /// Sends several commands in one write on one connection (one round trip) and returns their
    /// replies in order; error replies are returned as values. On a cluster: one write per node
    /// serving the commands' keys, in parallel, the replies put back in order.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        let replies = try await measured { () async throws(RedisError) -> [RESPValue] in
            if case .server(let pool) = backend { return try await pool.connection().pipeline(commands) }
            return try await routedPipeline(commands)
        }
        for reply in replies where reply.errorMessage != nil { metrics.failed(RedisError(.serverError, "")) }
        return replies
    }

    /// A command to a cluster, or to the master Sentinel names.
    private func routedSend(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        switch backend {
        case .server(let pool): try await pool.connection().send(command)
        case .cluster(let router): try await router.send(command)
        case .sentinel(let router):
            try await router.withMaster(
                withoutEffects: CommandKeys.isReadOnly(command), { (connection) async throws(RedisError) in try await connection.send(command) },
                isReadOnly: Self.isReadOnly)
        }
    }

    /// A pipeline to a cluster, or to the master Sentinel names.
    private func routedPipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        switch backend {
        case .server(let pool): try await pool.connection().pipeline(commands)
        case .cluster(let router): try await router.pipeline(commands)
        case .sentinel(let router):
            try await router.withMaster(
                withoutEffects: commands.allSatisfy(CommandKeys.isReadOnly),
                { (connection) async throws(RedisError) in try await connection.pipeline(commands) },
                isReadOnly: { $0.contains(where: Self.isReadOnly) })
        }
    }

    /// Closes every connection; later calls fail with ``RedisError/Code/clientShutdown``.
    public func shutdown() async {
        await subscriber.shutdown()
        let shardSubscribers = shardSubscribers.withLock { subscribers in
            defer { subscribers = nil }
            return Array(subscribers?.values ?? [:].values)
        }
        for subscriber in shardSubscribers { await subscriber.shutdown() }
        switch backend {
        case .server(let pool): await pool.shutdown()
        case .cluster(let router): await router.shutdown()
        case .sentinel(let router): await router.shutdown()
        }
    }

    /// Runs `body`, recording its duration when the server answered (an error reply included)
    /// and its error kind when it failed.
    private func measured<T>(_ body: () async throws(RedisError) -> T) async throws(RedisError) -> T {
        let start = NIODeadline.now()
        do {
            let result = try await body()
            metrics.commandDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
            return result
        } catch {
            if error.code == .serverError { metrics.commandDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds) }
            metrics.failed(error)
            throw error
        }
    }
}

extension RedisClient {
    /// A `READONLY` error: the node became a replica (a failover the client has not heard of).
    @Sendable static func isReadOnly(_ reply: RESPValue) -> Bool {
        reply.errorMessage?.hasPrefix("READONLY") == true
    }
}

/// A router that keeps a pool per node.
protocol NodeRouter {
    var nodes: NodePools { get }
}

extension ClusterRouter: NodeRouter {}
extension SentinelRouter: NodeRouter {}

/// The client's metrics (swift-metrics), made once.
final class ClientMetrics: Sendable {
    let commandDuration: CoreMetrics.Timer
    let connectionsOpen: Gauge
    private let errors: [RedisError.Code: Counter]

    init(factory: any MetricsFactory) {
        commandDuration = CoreMetrics.Timer(label: "redis_command_duration_seconds", factory: factory)
        connectionsOpen = Gauge(label: "redis_connections_open", factory: factory)
        errors = Dictionary(
            uniqueKeysWithValues: RedisError.Code.all.map {
                ($0, Counter(label: "redis_command_errors_total", dimensions: [("kind", "\($0)")], factory: factory))
            })
    }

    func failed(_ error: RedisError) {
        errors[error.code]?.increment()
    }
}
