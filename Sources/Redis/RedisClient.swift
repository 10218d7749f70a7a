public import Logging
public import NIOCore
public import NIOPosix
public import RESP
public import ServiceLifecycle
public import CoreMetrics
import Metrics
import Synchronization
import Utilities

/// A Redis client: a pool of pipelined connections with typed commands.
///
/// - Many commands share a connection: concurrent callers' commands are written together and
///   their replies matched in order. The pool opens another connection (up to
///   ``RedisConfiguration/maximumConnections``) when the least busy one has commands queued,
///   and never queues without bound (``RedisConfiguration/maximumPendingPerConnection``).
/// - Every call is bounded in time: connecting (handshake included) by
///   ``RedisConfiguration/connectTimeout``, waiting for a connection by
///   ``RedisConfiguration/poolWaitTimeout``, each command by ``RedisConfiguration/commandTimeout``.
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
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let pool: Mutex<PoolState>
    private let subscriber: RedisSubscriber
    private let metrics: ClientMetrics

    /// The pool's decisions, and the connection attempts under way, under one lock: a caller
    /// told to wait for a slot always finds that slot's attempt.
    private struct PoolState: ~Copyable {
        var machine: ConnectionPoolStateMachine<RedisConnection>
        var attempts: [Int: EventLoopFuture<RedisConnection>] = [:]
    }

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
        self.metrics = ClientMetrics(factory: metricsFactory)
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.pool = Mutex(
            PoolState(
                machine:
                    ConnectionPoolStateMachine(
                        limits: .init(
                            maximumConnections: max(1, configuration.maximumConnections),
                            minimumConnections: min(configuration.minimumConnections, configuration.maximumConnections),
                            maximumPendingPerConnection: max(1, configuration.maximumPendingPerConnection),
                            growThreshold: 32,
                            reconnect: Backoff(initial: configuration.reconnectBackoff, maximum: configuration.maximumReconnectBackoff),
                            idleTimeoutMilliseconds: configuration.idleTimeout.wholeMilliseconds,
                            keepAliveMilliseconds: configuration.keepAliveInterval.wholeMilliseconds
                        ))))
        self.subscriber = RedisSubscriber(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
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
        let counts = pool.withLock { $0.machine.counts }
        return PoolStatus(open: counts.open, connecting: counts.connecting, backingOff: counts.backingOff, lastError: counts.lastError)
    }

    /// The number of open connections.
    public var openConnections: Int { poolStatus.open }

    private static var nowMilliseconds: Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }

    /// A connection of the pool, opening one when needed (waiting at most
    /// ``RedisConfiguration/poolWaitTimeout`` for it).
    public func connection() async throws(RedisError) -> RedisConnection {
        enum Next {
            case use(RedisConnection)
            case wait(EventLoopFuture<RedisConnection>)
            case fail(RedisError)
        }
        let now = Self.nowMilliseconds
        var started: (slot: Int, future: EventLoopFuture<RedisConnection>)?
        let next: Next = pool.withLock { state in
            switch state.machine.acquire(now: now, pending: { $0.pendingCommands }, isActive: { $0.isActive }) {
            case .use(let connection, let open):
                if let open { started = (open, startAttempt(slot: open, in: &state)) }
                return .use(connection)
            case .openAndWait(let slot):
                let future = startAttempt(slot: slot, in: &state)
                started = (slot, future)
                return .wait(future)
            case .wait(let slot):
                guard let future = state.attempts[slot] else { return .fail(RedisError(.connectFailed, "no connection attempt")) }
                return .wait(future)
            case .fail(let error):
                return .fail(error)
            }
        }
        if let started { watch(started.future, slot: started.slot) }
        switch next {
        case .use(let connection): return connection
        case .fail(let error): throw error
        case .wait(let future): return try await wait(for: future)
        }
    }

    /// Starts opening a connection for `slot` (inside the pool lock; completion is watched
    /// outside it, since a failed attempt may complete at once).
    private func startAttempt(slot: Int, in state: inout PoolState) -> EventLoopFuture<RedisConnection> {
        let future = RedisConnection.makeConnection(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger)
        state.attempts[slot] = future
        return future
    }

    private func watch(_ future: EventLoopFuture<RedisConnection>, slot: Int) {
        future.whenComplete { [self] result in
            let now = Self.nowMilliseconds
            let unwanted: RedisConnection? = pool.withLock { state in
                if state.attempts[slot] === future { state.attempts[slot] = nil }
                switch result {
                case .success(let connection):
                    return state.machine.connected(slot: slot, connection, now: now)
                case .failure(let error):
                    let redisError = error as? RedisError ?? RedisError(.connectFailed, "\(error)")
                    state.machine.failedToConnect(slot: slot, error: redisError, now: now, jitter: Double.random(in: 0.75...1.25))
                    return nil
                }
            }
            unwanted?.channel.close(promise: nil)
            self.metrics.connectionsOpen.record(self.pool.withLock { $0.machine.counts.open })
            if case .success(let connection) = result, unwanted == nil {
                connection.channel.closeFuture.whenComplete { [self] _ in
                    // Count what is still open (a closed one is noticed as inactive at once).
                    let open = pool.withLock { state in
                        state.machine.slots.reduce(0) { count, slot in
                            if case .ready(let c, _) = slot, c.isActive { return count + 1 }
                            return count
                        }
                    }
                    metrics.connectionsOpen.record(open)
                }
            }
        }
    }

    private func wait(for future: EventLoopFuture<RedisConnection>) async throws(RedisError) -> RedisConnection {
        // Wait no longer than the pool-wait timeout, even if connecting takes longer.
        let eventLoop = future.eventLoop
        let bounded = eventLoop.makePromise(of: RedisConnection.self)
        future.cascade(to: bounded)
        let limit = configuration.poolWaitTimeout
        let timer = eventLoop.scheduleTask(in: TimeAmount(limit)) {
            bounded.fail(RedisError(.poolTimeout, "no connection to \(self.configuration.endpoint) within \(limit.roundedUpMilliseconds) ms"))
        }
        do {
            let connection = try await bounded.futureResult.get()
            timer.cancel()
            return connection
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.connectFailed, "\(error)")
        }
    }

    /// Keeps the minimum number of connections open, pings idle ones and closes those idle too
    /// long, until cancelled or told to shut down gracefully; then closes every connection.
    public func run() async throws {
        let interval = min(configuration.keepAliveInterval, configuration.idleTimeout, .seconds(1))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let now = Self.nowMilliseconds
                var started: [(Int, EventLoopFuture<RedisConnection>)] = []
                let work = self.pool.withLock { state in
                    let work = state.machine.maintain(now: now, isActive: { $0.isActive })
                    for slot in work.open { started.append((slot, self.startAttempt(slot: slot, in: &state))) }
                    return work
                }
                for (slot, future) in started { self.watch(future, slot: slot) }
                for connection in work.close { await connection.close() }
                for connection in work.ping { _ = try? await connection.send(RESPCommand("PING")) }
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
        let start = NIODeadline.now()
        do throws(RedisError) {
            let connection = try await connection()
            let reply = try await connection.send(command)
            metrics.commandDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
            return reply
        } catch {
            metrics.failed(error)
            throw error
        }
    }

    /// Sends a command and returns its reply, or nil if none came within `limit` (the command
    /// still completes on its connection; nothing is closed or counted as a failure). For
    /// callers with something else to do when Redis is slow, such as a cache with a source.
    public func send(_ command: RESPCommand, answerWithin limit: Duration) async throws(RedisError) -> RESPValue? {
        let connection = try await connection()
        let future = connection.sendFuture(command)
        let eventLoop = future.eventLoop
        let first = eventLoop.makePromise(of: RESPValue?.self)
        future.whenComplete { result in first.completeWith(result.map { Optional($0) }) }
        let timer = eventLoop.scheduleTask(in: TimeAmount(limit)) { first.succeed(nil) }
        let reply: RESPValue?
        do {
            reply = try await first.futureResult.get()
        } catch let error as RedisError {
            metrics.failed(error)
            throw error
        } catch {
            throw RedisError(.connectionClosed, "\(error)")
        }
        timer.cancel()
        if let message = reply?.errorMessage { throw RedisError(.serverError, message) }
        return reply
    }

    /// Closes every connection; later calls fail with ``RedisError/Code/clientShutdown``.
    public func shutdown() async {
        await subscriber.shutdown()
        // Attempts still under way are closed by their watcher when they complete.
        let connections = pool.withLock { $0.machine.shutdown() }
        for connection in connections { await connection.close() }
    }
}

extension RedisClient {
    /// Sends several commands in one write on one connection (one round trip) and returns their
    /// replies in order; error replies are returned as values.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        try await connection().pipeline(commands)
    }
}

/// The client's metrics (swift-metrics), made once.
final class ClientMetrics: Sendable {
    let factory: any MetricsFactory
    let commandDuration: CoreMetrics.Timer
    let connectionsOpen: Gauge
    private let errors: [RedisError.Code: Counter]

    init(factory: any MetricsFactory) {
        self.factory = factory
        commandDuration = CoreMetrics.Timer(label: "redis_command_duration_seconds", factory: factory)
        connectionsOpen = Gauge(label: "redis_connections_open", factory: factory)
        let kinds: [RedisError.Code] = [
            .connectTimeout, .connectFailed, .handshakeFailed, .authenticationFailed, .commandTimeout, .poolTimeout,
            .connectionClosed, .serverError, .protocolError, .unexpectedReply, .clientShutdown, .invalidConfiguration,
        ]
        errors = Dictionary(
            uniqueKeysWithValues: kinds.map { ($0, Counter(label: "redis_command_errors_total", dimensions: [("kind", "\($0)")], factory: factory)) })
    }

    func failed(_ error: RedisError) {
        errors[error.code]?.increment()
    }
}
