public import Logging
public import NIOCore
public import NIOPosix
public import RESP
import Synchronization

/// A Redis client: a small pool of pipelined connections, opened on demand and replaced when
/// they close, with typed commands.
///
/// Every call is bounded in time: connecting (handshake included) by
/// ``RedisConfiguration/connectTimeout``, each command by ``RedisConfiguration/commandTimeout``.
/// The client never retries a command by itself: a failed call throws at once, and the next
/// call opens a new connection.
public final class RedisClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let state: Mutex<PoolState>
    private let subscriber: RedisSubscriber

    private enum Slot {
        case empty
        case connecting(EventLoopFuture<RedisConnection>)
        case ready(RedisConnection)
    }

    private struct PoolState {
        var slots: [Slot]
        var next = 0
        var isShutdown = false
    }

    /// Creates a client; no connection is opened until the first command.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.state = Mutex(PoolState(slots: Array(repeating: .empty, count: max(1, configuration.maximumConnections))))
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

    /// The number of open connections.
    public var openConnections: Int {
        state.withLock { state in
            state.slots.reduce(0) { count, slot in
                if case .ready(let connection) = slot, connection.isActive { return count + 1 }
                return count
            }
        }
    }

    private enum Choice {
        case use(RedisConnection)
        case wait(EventLoopFuture<RedisConnection>)
        case fail(RedisError)
    }

    /// A connection of the pool, opening one when needed.
    public func connection() async throws(RedisError) -> RedisConnection {
        var started: (index: Int, future: EventLoopFuture<RedisConnection>)?
        let choice: Choice = state.withLock { state in
            guard !state.isShutdown else { return .fail(RedisError(.clientShutdown, "the Redis client was shut down")) }
            let count = state.slots.count
            let index = state.next % count
            state.next &+= 1
            switch state.slots[index] {
            case .ready(let connection) where connection.isActive:
                return .use(connection)
            case .connecting(let future):
                if let other = Self.anyReady(state.slots) { return .use(other) }
                return .wait(future)
            case .ready, .empty:
                let future = RedisConnection.makeConnection(configuration: configuration, eventLoop: eventLoopGroup.next(), logger: logger)
                state.slots[index] = .connecting(future)
                started = (index, future)
                // Grow the pool without making this caller wait when another connection is ready.
                if let other = Self.anyReady(state.slots) { return .use(other) }
                return .wait(future)
            }
        }
        if let started {
            started.future.whenComplete { [self] result in
                let closeIt: RedisConnection? = state.withLock { state in
                    guard case .connecting(let current) = state.slots[started.index], current === started.future else {
                        if case .success(let connection) = result { return connection }
                        return nil
                    }
                    switch result {
                    case .success(let connection):
                        if state.isShutdown {
                            state.slots[started.index] = .empty
                            return connection
                        }
                        state.slots[started.index] = .ready(connection)
                        return nil
                    case .failure:
                        state.slots[started.index] = .empty
                        return nil
                    }
                }
                if let closeIt { closeIt.channel.close(promise: nil) }
            }
        }
        switch choice {
        case .use(let connection):
            return connection
        case .fail(let error):
            throw error
        case .wait(let future):
            do {
                return try await future.get()
            } catch let error as RedisError {
                throw error
            } catch {
                throw RedisError(.connectFailed, "\(error)")
            }
        }
    }

    private static func anyReady(_ slots: [Slot]) -> RedisConnection? {
        for slot in slots {
            if case .ready(let connection) = slot, connection.isActive { return connection }
        }
        return nil
    }

    /// Sends a command and returns its reply.
    ///
    /// - Throws: ``RedisError`` with ``RedisError/Code/serverError`` when the server answers with an
    ///   error, or the connection or timeout failure.
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        let connection = try await connection()
        let reply = try await connection.send(command)
        if let message = reply.errorMessage { throw RedisError(.serverError, message) }
        return reply
    }

    /// Closes every connection; later calls fail with ``RedisError/Code/clientShutdown``.
    public func shutdown() async {
        await subscriber.shutdown()
        let slots = state.withLock { state in
            state.isShutdown = true
            let slots = state.slots
            state.slots = Array(repeating: .empty, count: slots.count)
            return slots
        }
        for slot in slots {
            switch slot {
            case .ready(let connection): await connection.close()
            case .connecting(let future): if let connection = try? await future.get() { await connection.close() }
            case .empty: break
            }
        }
    }
}

extension RedisClient {
    /// Sends several commands in one write on one connection (one round trip) and returns their
    /// replies in order; error replies are returned as values.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        try await connection().pipeline(commands)
    }
}
