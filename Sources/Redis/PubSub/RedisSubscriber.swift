import Logging
public import NIOCore
import NIOPosix
import RESP
import Synchronization
import Utilities

/// A message received on a subscription.
public struct RedisMessage: Sendable, Equatable {
    /// The channel it was published to.
    public var channel: String
    /// The pattern that matched it, for pattern subscriptions.
    public var pattern: String?
    /// The message.
    public var payload: ByteBuffer
    /// Not a message: messages may have been lost before this point (the subscription's
    /// connection was lost and restored, or the consumer fell 4,096 messages behind).
    public var isGap: Bool

    /// Creates a message.
    public init(channel: String, pattern: String?, payload: ByteBuffer, isGap: Bool = false) {
        self.channel = channel
        self.pattern = pattern
        self.payload = payload
        self.isGap = isGap
    }
}

/// The client's subscriptions, on one connection of their own (RESP3 or RESP2 alike), so that
/// messages never queue behind command replies and a slow command never delays a message.
///
/// The connection is opened by the first subscription. When it drops, it is opened again with
/// exponential backoff and jitter, and every channel, pattern and sharded channel still wanted
/// is subscribed again: a subscription survives a server restart (messages published while it
/// was down are lost, as Redis pub/sub does not keep them). The server ending a sharded
/// subscription by itself (`sunsubscribe`: its slot moved) or refusing a subscription (an error
/// reply, such as `MOVED` or `NOPERM`) is treated as a lost connection; the backoff keeps growing
/// while restores do not last, so a server that keeps refusing is asked ever less often (at
/// most every 5 s), and every refused attempt tells the consumers again that messages may have
/// been lost (they were not listening meanwhile, on any channel of that connection).
///
/// The connection is pinged every ``RedisConfiguration/keepAliveInterval``; one that does not
/// answer within the command timeout (a peer gone without a FIN, a NAT that forgot the flow)
/// is closed and opened again, and the consumers are told that messages may have been lost.
final class RedisSubscriber: Sendable {
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex<State>(State())

    private struct Subscription {
        var channels: Set<String>
        var patterns: Set<String>
        /// Sharded channels (`SSUBSCRIBE`, Redis 7).
        var shardChannels: Set<String>
        var continuation: AsyncStream<RedisMessage>.Continuation
    }

    private struct State {
        var connection: RedisConnection?
        var connecting: EventLoopFuture<RedisConnection>?
        var subscriptions: [Int: Subscription] = [:]
        var nextID = 0
        /// Waiting for the server's confirmation of `subscribe:<channel>`, `psubscribe:<pattern>`
        /// or `ssubscribe:<channel>`.
        var confirmations: [String: [Confirmation]] = [:]
        var reconnect: Task<Void, Never>?
        /// The waits between restores; kept from one restore to the next while they do not last
        /// (a subscription refused again at once), so a refusal cannot make a tight loop.
        var restoreBackoff = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
        /// When the subscriptions were last restored.
        var lastRestore: ContinuousClock.Instant?
        var keepAlive: Task<Void, Never>?
        var isShutdown = false
        /// The endpoint the next connection goes to (an index into ``endpoints``): a cluster's
        /// seeds are tried in turn, each after the last failed.
        var nextEndpoint = 0

        var channels: Set<String> { subscriptions.values.reduce(into: []) { $0.formUnion($1.channels) } }
        var patterns: Set<String> { subscriptions.values.reduce(into: []) { $0.formUnion($1.patterns) } }
        var shardChannels: Set<String> { subscriptions.values.reduce(into: []) { $0.formUnion($1.shardChannels) } }
        var isEmpty: Bool { subscriptions.values.allSatisfy { $0.channels.isEmpty && $0.patterns.isEmpty && $0.shardChannels.isEmpty } }
    }

    /// Where subscriptions may live: the server, any node of a cluster (a message published
    /// on any node reaches the subscribers of every node), or the given endpoints (sentinels).
    private let endpoints: [RedisConfiguration.Endpoint]
    /// Where the next connection goes, asked before each (the master Sentinel names), when given.
    private let resolveEndpoint: (@Sendable () async -> RedisConfiguration.Endpoint?)?

    init(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger, endpoints: [RedisConfiguration.Endpoint]? = nil,
        resolveEndpoint: (@Sendable () async -> RedisConfiguration.Endpoint?)? = nil
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.endpoints = endpoints.flatMap { $0.isEmpty ? nil : $0 } ?? configuration.clusterSeeds.flatMap { $0.isEmpty ? nil : $0 } ?? [configuration.endpoint]
        self.resolveEndpoint = resolveEndpoint
    }

    /// Subscribes to channels, patterns and sharded channels; the stream ends (and the server is
    /// told to unsubscribe) when its consumer stops.
    func subscribe(channels: [String], patterns: [String], shardChannels: [String] = []) async throws(RedisError) -> AsyncStream<RedisMessage> {
        let connection = try await connection()
        let (stream, continuation) = AsyncStream.makeStream(of: RedisMessage.self, bufferingPolicy: .bufferingNewest(4096))
        let (id, newChannels, newPatterns, newShardChannels) = state.withLock { state in
            let known = (state.channels, state.patterns, state.shardChannels)
            let id = state.nextID
            state.nextID += 1
            state.subscriptions[id] = Subscription(
                channels: Set(channels), patterns: Set(patterns), shardChannels: Set(shardChannels), continuation: continuation)
            return (id, Set(channels).subtracting(known.0), Set(patterns).subtracting(known.1), Set(shardChannels).subtracting(known.2))
        }
        continuation.onTermination = { [weak self] _ in self?.end(id) }
        do {
            try await subscribe(connection, channels: newChannels, patterns: newPatterns, shardChannels: newShardChannels)
        } catch {
            continuation.finish()
            throw error
        }
        return stream
    }

    /// Sends `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE` on `connection` and waits (at most the
    /// command timeout) until the server has confirmed every name.
    private func subscribe(_ connection: RedisConnection, channels: Set<String>, patterns: Set<String>, shardChannels: Set<String>)
        async throws(RedisError)
    {
        // Register the waiters before sending, so no confirmation can arrive unexpected.
        let confirmation = Confirmation(count: channels.count + patterns.count + shardChannels.count)
        state.withLock { state in
            for channel in channels { state.confirmations["subscribe:" + channel, default: []].append(confirmation) }
            for pattern in patterns { state.confirmations["psubscribe:" + pattern, default: []].append(confirmation) }
            for channel in shardChannels { state.confirmations["ssubscribe:" + channel, default: []].append(confirmation) }
        }
        if !channels.isEmpty { connection.sendWithoutReply(Self.command("SUBSCRIBE", channels)) }
        if !patterns.isEmpty { connection.sendWithoutReply(Self.command("PSUBSCRIBE", patterns)) }
        if !shardChannels.isEmpty { connection.sendWithoutReply(Self.command("SSUBSCRIBE", shardChannels)) }
        let timeout = connection.channel.eventLoop.scheduleTask(in: TimeAmount(configuration.commandTimeout)) {
            confirmation.fail(RedisError(.commandTimeout, "the server did not confirm the subscription in time"))
        }
        defer { timeout.cancel() }
        do {
            try await confirmation.wait()
        } catch {
            throw error as? RedisError ?? RedisError(.connectionClosed, "subscribing failed: \(error)")
        }
    }

    private static func command(_ name: String, _ arguments: Set<String>) -> RESPCommand {
        var command = RESPCommand(name)
        for argument in arguments.sorted() { command.append(argument) }
        return command
    }

    private func end(_ id: Int) {
        let (connection, goneChannels, gonePatterns, goneShardChannels) = state.withLock {
            state -> (RedisConnection?, Set<String>, Set<String>, Set<String>) in
            guard let subscription = state.subscriptions.removeValue(forKey: id) else { return (nil, [], [], []) }
            return (
                state.connection, subscription.channels.subtracting(state.channels), subscription.patterns.subtracting(state.patterns),
                subscription.shardChannels.subtracting(state.shardChannels)
            )
        }
        guard let connection, connection.isActive else { return }
        if !goneChannels.isEmpty { connection.sendWithoutReply(Self.command("UNSUBSCRIBE", goneChannels)) }
        if !gonePatterns.isEmpty { connection.sendWithoutReply(Self.command("PUNSUBSCRIBE", gonePatterns)) }
        if !goneShardChannels.isEmpty { connection.sendWithoutReply(Self.command("SUNSUBSCRIBE", goneShardChannels)) }
    }

    // MARK: - Connection

    private func connection() async throws(RedisError) -> RedisConnection {
        let resolved = await resolveEndpoint?()
        // Following a master (Sentinel): none known now is a failed attempt, never a fallback
        // to another endpoint (a sentinel would accept the subscription and never deliver).
        if resolveEndpoint != nil, resolved == nil, state.withLock({ $0.connection?.isActive != true }) {
            throw RedisError(.connectFailed, "no master known to subscribe on")
        }
        let future: EventLoopFuture<RedisConnection> = try state.withLock { (state) throws(RedisError) in
            guard !state.isShutdown else { throw RedisError(.clientShutdown, "the Redis client was shut down") }
            if let connection = state.connection, connection.isActive { return eventLoopGroup.any().makeSucceededFuture(connection) }
            if let connecting = state.connecting { return connecting }
            var target = configuration
            target.endpoint = resolved ?? endpoints[state.nextEndpoint % endpoints.count]
            if target.clusterSeeds != nil { target.database = 0 }
            let connecting = RedisConnection.makeConnection(
                configuration: target, eventLoop: eventLoopGroup.next(), logger: logger,
                onPush: { [weak self] value in self?.received(value) })
            state.connecting = connecting
            return connecting
        }
        do {
            let connection = try await future.get()
            let isNew = state.withLock { state -> Bool? in
                state.connecting = nil
                // Shut down while it was being opened: never kept.
                if state.isShutdown { return nil }
                if state.connection === connection { return false }
                state.connection = connection
                return true
            }
            guard let isNew else {
                await connection.close()
                throw RedisError(.clientShutdown, "the Redis client was shut down")
            }
            if isNew {
                connection.channel.closeFuture.whenComplete { [weak self] _ in self?.connectionLost(connection) }
                state.withLock { state in
                    guard !state.isShutdown, state.keepAlive == nil else { return }
                    let interval = configuration.keepAliveInterval
                    // Holds the subscriber only while it pings: one dropped without shutdown() ends it.
                    state.keepAlive = Task { [weak self] in
                        while !Task.isCancelled {
                            try? await Task.sleep(for: interval)
                            guard let self, await self.pingOnce() else { return }
                        }
                    }
                }
            }
            return connection
        } catch {
            state.withLock { state in
                state.connecting = nil
                state.nextEndpoint = (state.nextEndpoint + 1) % endpoints.count
            }
            throw error as? RedisError ?? RedisError(.connectFailed, "\(error)")
        }
    }

    private func connectionLost(_ connection: RedisConnection) {
        let waiters = state.withLock { state -> [Confirmation] in
            guard state.connection === connection else { return [] }
            state.connection = nil
            let waiters = state.confirmations.values.flatMap { $0 }
            state.confirmations = [:]
            if !state.isShutdown, !state.isEmpty, state.reconnect == nil {
                state.reconnect = Task { await self.resubscribe() }
            }
            return waiters
        }
        for waiter in waiters { waiter.fail(RedisError(.connectionClosed, "the subscription connection closed")) }
    }

    /// Pings the connection, if there is one; closes it when the PING goes unanswered within the
    /// command timeout (the close reopens it and announces the gap). False once shut down.
    private func pingOnce() async -> Bool {
        let (connection, isShutdown) = state.withLock { ($0.connection, $0.isShutdown) }
        guard !isShutdown else { return false }
        guard let connection, connection.isActive else { return true }
        do {
            // A refusal that arrived while the PING waited was taken for its reply.
            if let message = try await connection.send(RESPCommand("PING")).errorMessage { refused(message) }
        } catch {
            guard !Task.isCancelled else { return false }
            logger.warning("the subscription connection did not answer a PING: reopening it", metadata: ["error": "\(error)"])
            await connection.close()
        }
        return true
    }

    /// Tells every consumer that messages may have been lost before this point.
    private func announceGap() {
        let targets = state.withLock { state in state.isShutdown ? [] : state.subscriptions.values.map(\.continuation) }
        for continuation in targets { continuation.yield(RedisMessage(channel: "", pattern: nil, payload: ByteBuffer(), isGap: true)) }
    }

    /// Reconnects with exponential backoff (50 ms doubling to 5 s, ±25 % jitter) and subscribes
    /// again to every channel, pattern and sharded channel still wanted. Restores that do not
    /// last (30 s) keep the backoff growing; a restore counts once the server has confirmed every
    /// name on a connection that is still the subscriber's.
    private func resubscribe() async {
        var backoff = state.withLock { state in
            guard let last = state.lastRestore, ContinuousClock.now - last < .seconds(30) else {
                return Backoff(initial: .milliseconds(50), maximum: .seconds(5))
            }
            return state.restoreBackoff
        }
        while !Task.isCancelled {
            try? await Task.sleep(for: backoff.next())
            // Nothing left to restore: this task ends, under the same lock that would start another.
            let wanted = state.withLock { state -> (Set<String>, Set<String>, Set<String>)? in
                guard !state.isShutdown, !state.isEmpty else {
                    state.reconnect = nil
                    return nil
                }
                return (state.channels, state.patterns, state.shardChannels)
            }
            guard let (channels, patterns, shardChannels) = wanted else { return }
            do {
                let connection = try await connection()
                try await subscribe(connection, channels: channels, patterns: patterns, shardChannels: shardChannels)
                // Done only if that connection is still the one (it may have closed meanwhile,
                // and its loss found this task still running).
                let restored = state.withLock { state -> Bool in
                    guard state.connection === connection, connection.isActive else { return false }
                    state.reconnect = nil
                    state.lastRestore = .now
                    state.restoreBackoff = backoff
                    return true
                }
                guard restored else { continue }
                logger.info(
                    "Redis subscriptions restored",
                    metadata: ["channels": "\(channels.count)", "patterns": "\(patterns.count)", "shard_channels": "\(shardChannels.count)"])
                // Whatever was published while the subscriptions were down is lost: say so now
                // (not at the loss, when nothing newer could be heard to replace it).
                announceGap()
                return
            } catch {
                // Refused by a server that answers (others may be publishing through it): what
                // was published since the last gap may be lost, so say so again. Unreachable:
                // the gap comes with the restore. Then try after a longer pause.
                if error.code == .serverError { announceGap() }
            }
        }
        state.withLock { $0.reconnect = nil }
    }

    // MARK: - Messages

    private func received(_ value: RESPValue) {
        if let message = value.errorMessage { return refused(message) }
        let elements: [RESPValue]
        switch value {
        case .push(let e), .array(let e): elements = e
        default: return
        }
        guard let kind = elements.first?.string?.lowercased() else { return }
        switch kind {
        case "message" where elements.count == 3:
            guard let channel = elements[1].string, let payload = elements[2].bytes else { return }
            deliver(RedisMessage(channel: channel, pattern: nil, payload: payload)) { $0.channels.contains(channel) }
        case "smessage" where elements.count == 3:
            guard let channel = elements[1].string, let payload = elements[2].bytes else { return }
            deliver(RedisMessage(channel: channel, pattern: nil, payload: payload)) { $0.shardChannels.contains(channel) }
        case "pmessage" where elements.count == 4:
            guard let pattern = elements[1].string, let channel = elements[2].string, let payload = elements[3].bytes else { return }
            deliver(RedisMessage(channel: channel, pattern: pattern, payload: payload)) { $0.patterns.contains(pattern) }
        case "subscribe", "psubscribe", "ssubscribe":
            guard elements.count >= 2, let name = elements[1].string else { return }
            let waiters = state.withLock { $0.confirmations.removeValue(forKey: kind + ":" + name) ?? [] }
            for waiter in waiters { waiter.confirmOne() }
        case "sunsubscribe":
            // Not asked for while the channel is still wanted: its slot left this node (a
            // resharding, or the node became a replica). Reconnect where the slot is now.
            guard elements.count >= 2, let name = elements[1].string, state.withLock({ $0.shardChannels.contains(name) }) else { return }
            reconnect(because: "the server ended the subscription to sharded channel \(name) (its slot moved)")
        default:
            break
        }
    }

    /// An error reply on the subscription connection (a refused `SSUBSCRIBE`: `MOVED`, a
    /// `CROSSSLOT`, an unknown command): the subscriptions waiting for confirmation fail with it,
    /// and the connection is opened again (where the refreshed map says, for a cluster).
    private func refused(_ message: String) {
        let waiters = state.withLock { state in
            defer { state.confirmations = [:] }
            return state.confirmations.values.flatMap { $0 }
        }
        for waiter in waiters { waiter.fail(RedisError(.serverError, message)) }
        reconnect(because: "the server refused a subscription: \(message)")
    }

    /// Closes the subscription connection; its close restores the subscriptions on a new one and
    /// tells the consumers that messages may have been lost.
    private func reconnect(because reason: String) {
        guard let connection = state.withLock({ $0.connection }) else { return }
        logger.warning("reopening the subscription connection", metadata: ["reason": "\(reason)"])
        connection.channel.close(promise: nil)
    }

    private func deliver(_ message: RedisMessage, to wants: (Subscription) -> Bool) {
        let targets = state.withLock { state in state.subscriptions.values.filter(wants).map(\.continuation) }
        for continuation in targets {
            if case .dropped = continuation.yield(message) {
                // The consumer fell behind and its oldest message was dropped: say so, after the
                // drop, every time (an earlier notice of a gap may have been read already, or
                // dropped too). A consumer's reaction (flushing what it holds) costs little when
                // repeated, since nothing was added in between.
                continuation.yield(RedisMessage(channel: "", pattern: nil, payload: ByteBuffer(), isGap: true))
            }
        }
    }

    func shutdown() async {
        let (connection, subscriptions, reconnect, keepAlive) = state.withLock { state in
            state.isShutdown = true
            defer { state.subscriptions = [:] }
            return (state.connection, Array(state.subscriptions.values), state.reconnect, state.keepAlive)
        }
        reconnect?.cancel()
        keepAlive?.cancel()
        for subscription in subscriptions { subscription.continuation.finish() }
        await connection?.close()
    }
}

/// Counts the server's confirmations of one SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE call.
private final class Confirmation: Sendable {
    private struct State {
        var remaining: Int
        var failure: RedisError?
        var continuation: CheckedContinuation<Void, any Error>?
    }

    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(remaining: count))
    }

    func confirmOne() {
        let ready = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.remaining -= 1
            guard state.remaining <= 0 else { return nil }
            defer { state.continuation = nil }
            return state.continuation
        }
        ready?.resume()
    }

    func fail(_ error: RedisError) {
        let waiting = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard state.remaining > 0, state.failure == nil else { return nil }
            state.failure = error
            defer { state.continuation = nil }
            return state.continuation
        }
        waiting?.resume(throwing: error)
    }

    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state -> Result<Void, RedisError>? in
                if let failure = state.failure { return .failure(failure) }
                if state.remaining <= 0 { return .success(()) }
                state.continuation = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome.mapError { $0 as any Error }) }
        }
    }
}
