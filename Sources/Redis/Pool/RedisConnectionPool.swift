import Logging
import NIOCore
import RESP
import Synchronization
import Utilities

/// The connections of a ``RedisClient``: carries out what ``ConnectionPoolStateMachine``
/// decides (which connection a caller gets, when to open one, when to back off, what to
/// ping and close), with the connection attempts under way.
final class RedisConnectionPool: Sendable {
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>
    /// Told how many connections are open whenever that may have changed.
    private let onOpenCountChange: @Sendable (Int) -> Void

    /// The pool's decisions, and the connection attempts under way, under one lock: a caller
    /// told to wait for a slot always finds that slot's attempt.
    private struct State: ~Copyable {
        var machine: ConnectionPoolStateMachine<RedisConnection>
        var attempts: [Int: EventLoopFuture<RedisConnection>] = [:]
    }

    init(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger,
        onOpenCountChange: @escaping @Sendable (Int) -> Void
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.onOpenCountChange = onOpenCountChange
        self.state = Mutex(
            State(
                machine: ConnectionPoolStateMachine(
                    limits: .init(
                        maximumConnections: max(1, configuration.maximumConnections),
                        minimumConnections: min(configuration.minimumConnections, configuration.maximumConnections),
                        maximumPendingPerConnection: max(1, configuration.maximumPendingPerConnection),
                        growThreshold: 32,
                        reconnect: Backoff(initial: configuration.reconnectBackoff, maximum: configuration.maximumReconnectBackoff),
                        idleTimeoutMilliseconds: configuration.idleTimeout.wholeMilliseconds,
                        keepAliveMilliseconds: configuration.keepAliveInterval.wholeMilliseconds
                    ))))
    }

    private static var nowMilliseconds: Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000) }

    /// Slot counts now.
    var counts: (open: Int, connecting: Int, backingOff: Int, lastError: RedisError?) {
        state.withLock { $0.machine.counts }
    }

    /// A connection, opening one when needed (waiting at most
    /// ``RedisConfiguration/poolWaitTimeout`` for it).
    func connection() async throws(RedisError) -> RedisConnection {
        enum Next {
            case use(RedisConnection)
            case wait(EventLoopFuture<RedisConnection>)
            case fail(RedisError)
        }
        let now = Self.nowMilliseconds
        var started: (slot: Int, future: EventLoopFuture<RedisConnection>)?
        let next: Next = state.withLock { state in
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
    private func startAttempt(slot: Int, in state: inout State) -> EventLoopFuture<RedisConnection> {
        let future = RedisConnection.makeConnection(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger)
        state.attempts[slot] = future
        return future
    }

    private func watch(_ future: EventLoopFuture<RedisConnection>, slot: Int) {
        future.whenComplete { [self] result in
            let now = Self.nowMilliseconds
            let unwanted: RedisConnection? = state.withLock { state in
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
            onOpenCountChange(counts.open)
            if case .success(let connection) = result, unwanted == nil {
                connection.channel.closeFuture.whenComplete { [self] _ in
                    // Count what is still open (a closed one is noticed as inactive at once).
                    onOpenCountChange(state.withLock { $0.machine.activeCount { $0.isActive } })
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
        let endpoint = configuration.endpoint
        let timer = eventLoop.scheduleTask(in: TimeAmount(limit)) {
            bounded.fail(RedisError(.poolTimeout, "no connection to \(endpoint) within \(limit.roundedUpMilliseconds) ms"))
        }
        defer { timer.cancel() }
        do {
            return try await bounded.futureResult.get()
        } catch {
            throw error as? RedisError ?? RedisError(.connectFailed, "\(error)")
        }
    }

    /// One round of maintenance: opens connections up to the minimum, closes those idle too
    /// long, pings the idle ones.
    func maintain() async {
        let now = Self.nowMilliseconds
        var started: [(Int, EventLoopFuture<RedisConnection>)] = []
        let work = state.withLock { state in
            let work = state.machine.maintain(now: now, isActive: { $0.isActive })
            for slot in work.open { started.append((slot, startAttempt(slot: slot, in: &state))) }
            return work
        }
        for (slot, future) in started { watch(future, slot: slot) }
        for connection in work.close { await connection.close() }
        for connection in work.ping { _ = try? await connection.send(RESPCommand("PING")) }
    }

    /// Shuts the pool: closes every open connection; later calls fail with
    /// ``RedisError/Code/clientShutdown``. Attempts still under way are closed by their
    /// watcher when they complete.
    func shutdown() async {
        let connections = state.withLock { $0.machine.shutdown() }
        for connection in connections { await connection.close() }
    }
}
