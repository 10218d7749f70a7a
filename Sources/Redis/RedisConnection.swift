public import Logging
public import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
public import RESP

/// One connection to a Redis server, ready for commands: connected, and through its handshake
/// (`HELLO 3`, or RESP2 with `AUTH` when the server refuses it, then `SELECT`).
///
/// Commands may be sent from any task, concurrently: they are pipelined on the connection and
/// their replies matched in order.
public final class RedisConnection: Sendable {
    /// The channel the connection runs on.
    let channel: any Channel
    /// The protocol version negotiated: 3 after a successful `HELLO 3`, else 2.
    public let protocolVersion: Int
    let commandTimeout: TimeAmount
    /// Commands waiting for the event loop. Concurrent callers append here and one event-loop
    /// task writes them all and flushes once: one `write` system call for many commands.
    private let outbox = Mutex<Outbox>(Outbox())
    /// Counters the channel handler keeps.
    private let stats: ConnectionStats

    private struct Outbox {
        var requests: [RedisRequest] = []
        var drainScheduled = false
    }

    private init(channel: any Channel, protocolVersion: Int, commandTimeout: TimeAmount, stats: ConnectionStats) {
        self.channel = channel
        self.protocolVersion = protocolVersion
        self.commandTimeout = commandTimeout
        self.stats = stats
    }

    /// Commands written on this connection and not answered yet.
    public var pendingCommands: Int { stats.pending.load(ordering: .relaxed) }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Opens a connection and runs the handshake, all within `configuration.connectTimeout`.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws(RedisError) -> RedisConnection {
        do {
            return try await makeConnection(configuration: configuration, eventLoop: eventLoop, logger: logger, onPush: onPush).get()
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.connectFailed, "\(error)")
        }
    }

    static func makeConnection(
        configuration: RedisConfiguration,
        eventLoop: any EventLoop,
        logger: Logger,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) -> EventLoopFuture<RedisConnection> {
        let tls: (context: NIOSSLContext, serverName: String?)?
        if configuration.tls {
            do {
                tls = try makeTLSContext(configuration)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        } else {
            tls = nil
        }
        let connectTimeout = TimeAmount(configuration.connectTimeout)
        let deadline = NIODeadline.now() + connectTimeout
        let limits = RESPDecoder.Limits(
            maxBulkLength: configuration.maximumReplyBytes,
            maxAggregateCount: RESPDecoder.Limits.default.maxAggregateCount,
            maxDepth: RESPDecoder.Limits.default.maxDepth,
            maxLineLength: RESPDecoder.Limits.default.maxLineLength
        )
        let stats = ConnectionStats()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(decoderLimits: limits, stats: stats, onPush: onPush))
                }
            }
        let endpoint = configuration.endpoint
        let connected: EventLoopFuture<any Channel>
        switch endpoint {
        case .tcp(let host, let port):
            connected = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .unixSocket(let path):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        return connected.flatMapErrorThrowing { error in
            if error is ChannelError, case .connectTimeout = error as? ChannelError {
                throw RedisError(.connectTimeout, "no connection to \(endpoint) within \(connectTimeout.nanoseconds / 1_000_000) ms")
            }
            throw RedisError(.connectFailed, "cannot connect to \(endpoint): \(describe(error))")
        }.flatMap { channel in
            let remaining = max(deadline - .now(), .milliseconds(1))
            return handshake(channel: channel, configuration: configuration, timeout: remaining, stats: stats, logger: logger)
                .flatMapError { error in
                    channel.close(promise: nil)
                    if let redisError = error as? RedisError, redisError.code == .commandTimeout {
                        return eventLoop.makeFailedFuture(
                            RedisError(.connectTimeout, "\(endpoint) accepted the connection but did not finish the handshake in time"))
                    }
                    return eventLoop.makeFailedFuture(error)
                }
        }
    }

    private static func handshake(
        channel: any Channel,
        configuration: RedisConfiguration,
        timeout: TimeAmount,
        stats: ConnectionStats,
        logger: Logger
    ) -> EventLoopFuture<RedisConnection> {
        let eventLoop = channel.eventLoop
        @Sendable func send(_ command: RESPCommand) -> EventLoopFuture<RESPValue> {
            write(RedisRequest(command: command, promise: eventLoop.makePromise(), timeout: timeout), to: channel)
        }

        var hello = RESPCommand("HELLO")
        hello.append("3")
        if let password = configuration.password {
            hello.append("AUTH")
            hello.append(configuration.username ?? "default")
            hello.append(password)
        }
        if let name = configuration.clientName {
            hello.append("SETNAME")
            hello.append(name)
        }
        let negotiated: EventLoopFuture<Int> = send(hello).flatMap { reply in
            guard let message = reply.errorMessage else { return eventLoop.makeSucceededFuture(3) }
            if isAuthenticationError(message) {
                return eventLoop.makeFailedFuture(RedisError(.authenticationFailed, message))
            }
            // Redis < 6 does not know HELLO; a server may also refuse protocol 3 (NOPROTO).
            logger.debug("HELLO 3 refused, falling back to RESP2", metadata: ["reply": "\(message)"])
            var steps: [RESPCommand] = []
            if let password = configuration.password {
                var auth = RESPCommand("AUTH")
                if let user = configuration.username { auth.append(user) }
                auth.append(password)
                steps.append(auth)
            }
            if let name = configuration.clientName {
                steps.append(RESPCommand("CLIENT", "SETNAME", name))
            }
            return run(steps, send: send, eventLoop: eventLoop).map { 2 }
        }
        return negotiated.flatMap { version in
            let select: [RESPCommand] = configuration.database == 0 ? [] : [RESPCommand("SELECT", String(configuration.database))]
            return run(select, send: send, eventLoop: eventLoop).map {
                RedisConnection(channel: channel, protocolVersion: version, commandTimeout: TimeAmount(configuration.commandTimeout), stats: stats)
            }
        }
    }

    private static func run(
        _ commands: [RESPCommand],
        send: @escaping @Sendable (RESPCommand) -> EventLoopFuture<RESPValue>,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        var future = eventLoop.makeSucceededVoidFuture()
        for command in commands {
            future = future.flatMap {
                send(command).flatMapThrowing { reply in
                    if let message = reply.errorMessage {
                        if isAuthenticationError(message) { throw RedisError(.authenticationFailed, message) }
                        throw RedisError(.handshakeFailed, "\(command.name): \(message)")
                    }
                }
            }
        }
        return future
    }

    /// The TLS context for `rediss://`: the system's trust roots or the configured CA file,
    /// full certificate verification, the host (or ``RedisConfiguration/tlsServerName``) as SNI.
    static func makeTLSContext(_ configuration: RedisConfiguration) throws(RedisError) -> (context: NIOSSLContext, serverName: String?) {
        var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
        tlsConfiguration.certificateVerification = .fullVerification
        if let file = configuration.tlsCAFile {
            tlsConfiguration.trustRoots = .file(file)
        }
        var serverName = configuration.tlsServerName
        if serverName == nil, case .tcp(let host, _) = configuration.endpoint, !host.isIPAddress {
            serverName = host
        }
        do {
            return (try NIOSSLContext(configuration: tlsConfiguration), serverName)
        } catch {
            throw RedisError(.invalidConfiguration, "TLS setup failed (CA file \(configuration.tlsCAFile ?? "system default")): \(error)")
        }
    }

    static func isAuthenticationError(_ message: String) -> Bool {
        message.hasPrefix("WRONGPASS") || message.hasPrefix("NOAUTH") || message.hasPrefix("NOPERM")
            || message.contains("invalid password") || message.contains("AUTH <password> called without any password")
            || message.contains("invalid username-password")
    }

    /// Sends a command and waits for its reply. An error reply is returned as a value
    /// (``RESPValue/simpleError(_:)``); use ``RedisClient`` for typed commands.
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        do {
            return try await sendFuture(command).get()
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.connectionClosed, "\(error)")
        }
    }

    func sendFuture(_ command: RESPCommand) -> EventLoopFuture<RESPValue> {
        let request = RedisRequest(command: command, promise: channel.eventLoop.makePromise(), timeout: commandTimeout)
        enqueue(CollectionOfOne(request))
        return request.promise.futureResult
    }

    /// Writes a command that the server answers with pushes rather than a reply
    /// (SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE).
    func sendWithoutReply(_ command: RESPCommand) {
        var request = RedisRequest(command: command, promise: channel.eventLoop.makePromise(), timeout: nil)
        request.expectsReply = false
        enqueue(CollectionOfOne(request))
    }

    /// Sends several commands in one write (one round trip) and returns their replies in order.
    /// Error replies are returned as values, not thrown.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        let requests = commands.map { RedisRequest(command: $0, promise: channel.eventLoop.makePromise(), timeout: commandTimeout) }
        enqueue(requests)
        var replies: [RESPValue] = []
        replies.reserveCapacity(requests.count)
        for request in requests {
            do {
                replies.append(try await request.promise.futureResult.get())
            } catch let error as RedisError {
                throw error
            } catch {
                throw RedisError(.connectionClosed, "\(error)")
            }
        }
        return replies
    }

    private func enqueue(_ requests: some Collection<RedisRequest>) {
        let schedule = outbox.withLock { outbox in
            outbox.requests.append(contentsOf: requests)
            if outbox.drainScheduled { return false }
            outbox.drainScheduled = true
            return true
        }
        if schedule {
            channel.eventLoop.execute { self.drain() }
        }
    }

    /// On the event loop: writes every queued command, then flushes once.
    private func drain() {
        let batch = outbox.withLock { outbox in
            outbox.drainScheduled = false
            let batch = outbox.requests
            outbox.requests = []
            return batch
        }
        guard channel.isActive else {
            // The handler is gone with the channel: fail what it will never see.
            for request in batch { request.promise.fail(RedisError(.connectionClosed, "the connection to Redis is closed")) }
            return
        }
        for request in batch { channel.write(request, promise: nil) }
        channel.flush()
    }

    private static func write(_ request: RedisRequest, to channel: any Channel) -> EventLoopFuture<RESPValue> {
        // When the channel is already closed the handler never sees the request: fail it here.
        channel.writeAndFlush(request).whenFailure { error in
            request.promise.fail(error as? RedisError ?? RedisError(.connectionClosed, "cannot write to Redis: \(error)"))
        }
        return request.promise.futureResult
    }

    /// Closes the connection; pending commands fail with ``RedisError/Code/connectionClosed``.
    public func close() async {
        try? await channel.close()
    }
}

/// A short description of a connection failure: the system's words ("Connection refused")
/// rather than NIO's nested error values.
func describe(_ error: any Error) -> String {
    if let connectionError = error as? NIOConnectionError, let first = connectionError.connectionErrors.first {
        return describe(first.error)
    }
    if let ioError = error as? IOError {
        return String(cString: strerror(ioError.errnoCode)).lowercased()
    }
    return "\(error)"
}

extension String {
    /// Whether this is an IPv4 or IPv6 literal (SNI must not carry one).
    var isIPAddress: Bool {
        if contains(":") { return true }
        let parts = split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }
}
