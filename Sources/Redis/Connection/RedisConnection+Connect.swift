import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RESP

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension RedisConnection {
    /// Connects (TCP or unix socket, TLS for `rediss://`) and runs the handshake; the future
    /// fails with ``RedisError/Code/connectTimeout`` when both together take longer than
    /// ``RedisConfiguration/connectTimeout``.
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
        let limits = RESPDecoder.Limits(
            maxBulkLength: configuration.maximumReplyBytes,
            maxAggregateCount: RESPDecoder.Limits.default.maxAggregateCount,
            maxDepth: RESPDecoder.Limits.default.maxDepth,
            maxLineLength: RESPDecoder.Limits.default.maxLineLength
        )
        let stats = ConnectionStats()
        let handshake = eventLoop.makePromise(of: Int.self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverName))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        RedisChannelHandler(
                            handshake: .init(configuration), completing: handshake, commandTimeout: TimeAmount(configuration.commandTimeout),
                            decoderLimits: limits, maximumBufferedBytes: configuration.maximumBufferedBytes, stats: stats, onPush: onPush))
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
        // One deadline for the connect and the handshake together.
        let deadline = eventLoop.scheduleTask(in: connectTimeout) {
            handshake.fail(RedisError(.connectTimeout, "no connection to \(endpoint) within \(connectTimeout.nanoseconds / 1_000_000) ms"))
        }
        handshake.futureResult.whenComplete { _ in deadline.cancel() }
        return connected.flatMapErrorThrowing { error in
            handshake.fail(RedisError(.connectFailed, "cannot connect"))  // a no-op if the deadline passed first
            if error is ChannelError, case .connectTimeout = error as? ChannelError {
                throw RedisError(.connectTimeout, "no connection to \(endpoint) within \(connectTimeout.nanoseconds / 1_000_000) ms")
            }
            throw RedisError(.connectFailed, "cannot connect to \(endpoint): \(describe(error))")
        }.flatMap { channel in
            handshake.futureResult.flatMapThrowing { version in
                let handler = try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self)
                return RedisConnection(
                    channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop), protocolVersion: version,
                    commandTimeout: TimeAmount(configuration.commandTimeout), stats: stats)
            }.flatMapError { error in
                channel.close(promise: nil)
                if let redisError = error as? RedisError, redisError.code == .connectTimeout {
                    return eventLoop.makeFailedFuture(
                        RedisError(.connectTimeout, "\(endpoint) accepted the connection but did not finish the handshake in time"))
                }
                return eventLoop.makeFailedFuture(error)
            }
        }
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
