import Logging
import NIOCore
import RESP
import Synchronization

/// A ``RedisClient``'s way to the master that Redis Sentinel names.
///
/// - The master is asked of the sentinels in turn (`SENTINEL get-master-addr-by-name`), and
///   used only once it says it is a master (`ROLE`): a node that reports itself a replica (an
///   old master that came back, a sentinel that lags) is refused and the next sentinel asked.
/// - The sentinels' `+switch-master` is followed (a subscription kept by ``RedisClient/run()``),
///   so a failover moves the client at once; and a command whose node does not answer, or says
///   `READONLY`, asks the sentinels again (100, 200, 400, 800 ms apart) before it fails.
final class SentinelRouter: Sendable {
    let configuration: RedisConfiguration
    let sentinel: RedisConfiguration.Sentinel
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    /// A pool per node (the master; briefly a node a sentinel named that was not one).
    let nodes: NodePools
    private let resolutions = SingleFlightRefresh(minimumInterval: SentinelRouter.minimumResolveInterval)
    private let watcher: RedisSubscriber
    private let state = Mutex(State())

    static let minimumResolveInterval: Duration = .milliseconds(100)
    static let retryDelays: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800)]

    private struct State {
        var master: ClusterTopology.Node?
        var watching: Task<Void, Never>?
        /// The next sentinel to ask first (the last one that answered).
        var preferred = 0
        var shutDown = false
    }

    init(
        configuration: RedisConfiguration, sentinel: RedisConfiguration.Sentinel, eventLoopGroup: any EventLoopGroup, logger: Logger,
        onOpenCountChange: @escaping @Sendable (Int) -> Void
    ) {
        self.configuration = configuration
        self.sentinel = sentinel
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        var nodeConfiguration = configuration
        nodeConfiguration.sentinel = nil
        self.nodes = NodePools(configuration: nodeConfiguration, eventLoopGroup: eventLoopGroup, logger: logger, onOpenCountChange: onOpenCountChange)
        self.watcher = RedisSubscriber(
            configuration: Self.sentinelConfiguration(configuration, sentinel, sentinel.endpoints[0]), eventLoopGroup: eventLoopGroup,
            logger: logger, endpoints: sentinel.endpoints)
    }

    /// How to reach a sentinel: the data nodes' TLS and timeouts, the sentinels' own password.
    static func sentinelConfiguration(
        _ configuration: RedisConfiguration, _ sentinel: RedisConfiguration.Sentinel, _ endpoint: RedisConfiguration.Endpoint
    ) -> RedisConfiguration {
        var sentinelConfiguration = RedisConfiguration(
            endpoint: endpoint, tls: configuration.tls, password: sentinel.password, database: 0, connectTimeout: configuration.connectTimeout,
            commandTimeout: configuration.commandTimeout)
        sentinelConfiguration.tlsCAFile = configuration.tlsCAFile
        sentinelConfiguration.clientName = configuration.clientName
        return sentinelConfiguration
    }

    /// The master now (nil before the sentinels have named one).
    var currentMaster: ClusterTopology.Node? { state.withLock { $0.master } }

    // MARK: - Pools

    func pool(for node: ClusterTopology.Node) throws(RedisError) -> RedisConnectionPool {
        try nodes.pool(for: node)
    }

    /// Keeps the pools' minimum open; starts following `+switch-master`.
    func maintain() async {
        startWatching()
        if let master = currentMaster, let pool = try? pool(for: master) { await pool.maintain() }
    }

    func shutdown() async {
        let watching = state.withLock { state -> Task<Void, Never>? in
            state.shutDown = true
            return state.watching
        }
        resolutions.stop()
        watching?.cancel()
        await watcher.shutdown()
        await nodes.shutdown()
    }

    private func startWatching() {
        state.withLock { state in
            guard state.watching == nil, !state.shutDown else { return }
            let name = sentinel.masterName
            state.watching = Task { [weak self] in
                guard let self else { return }
                while !Task.isCancelled {
                    do {
                        let messages = try await self.watcher.subscribe(channels: ["+switch-master"], patterns: [])
                        for await message in messages {
                            // `<name> <old host> <old port> <new host> <new port>`; a gap may have hidden one.
                            if message.isGap || String(buffer: message.payload).split(separator: " ").first.map(String.init) == name {
                                await self.resolve(force: true)
                            }
                        }
                    } catch {}
                    // The stream ended or could not start: not again at once.
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    // MARK: - Resolving

    /// Asks the sentinels for the master (or waits for the question under way); at most one
    /// question every ``minimumResolveInterval`` unless `force`.
    func resolve(force: Bool = false) async {
        await resolutions.run(force: force) { [weak self] in await self?.askSentinels() }
    }

    private func askSentinels() async {
        let count = sentinel.endpoints.count
        let first = state.withLock { $0.preferred }
        var problems: [String] = []
        for offset in 0..<count {
            let index = (first + offset) % count
            let endpoint = sentinel.endpoints[index]
            do {
                let named = try await masterAddress(from: endpoint)
                // Used only once it says it is the master.
                let role = try await pool(for: named).connection().send(RESPCommand("ROLE"))
                guard case .array(let parts) = role, parts.first?.string == "master" else {
                    problems.append("\(endpoint) names \(named), which is not a master (\(role))")
                    continue
                }
                let previous = state.withLock { state -> ClusterTopology.Node? in
                    defer {
                        state.master = named
                        state.preferred = index
                    }
                    return state.master
                }
                // The other nodes' pools (an old master, a replica a sentinel named) are closed.
                await nodes.close { $0 == named }
                if previous != named {
                    logger.info("Redis master from the sentinels", metadata: ["master": "\(named)", "previous": "\(previous.map { "\($0)" } ?? "none")"])
                }
                return
            } catch {
                problems.append("\(endpoint): \(error)")
            }
        }
        logger.warning("no sentinel names a usable master", metadata: ["master_name": "\(sentinel.masterName)", "problems": "\(problems)"])
    }

    private func masterAddress(from endpoint: RedisConfiguration.Endpoint) async throws(RedisError) -> ClusterTopology.Node {
        let connection = try await RedisConnection.connect(
            configuration: Self.sentinelConfiguration(configuration, sentinel, endpoint), eventLoop: eventLoopGroup.next(), logger: logger)
        let reply: RESPValue
        do {
            reply = try await connection.send(RESPCommand("SENTINEL", "get-master-addr-by-name", sentinel.masterName))
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
        guard case .array(let parts) = reply, parts.count == 2, let host = parts[0].string, !host.isEmpty, host.utf8.count <= 255,
            let port = parts[1].string.flatMap(Int.init) ?? (parts[1].integerValue), (1...65535).contains(port)
        else {
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
            throw RedisError(.unexpectedReply, "the sentinel does not know the master '\(sentinel.masterName)' (\(reply))")
        }
        return ClusterTopology.Node(host: host, port: port)
    }

    /// The master, asking the sentinels when none is known.
    func master() async throws(RedisError) -> ClusterTopology.Node {
        if let master = currentMaster { return master }
        await resolve(force: true)
        guard let master = currentMaster else {
            throw RedisError(.connectFailed, "no sentinel names a usable master for '\(sentinel.masterName)'")
        }
        return master
    }

    // MARK: - Commands

    /// Runs `body` on a connection to the master; when the master cannot be reached or says it
    /// is read-only (a failover), asks the sentinels again and tries again, at most
    /// ``retryDelays``.count times. A command whose reply was lost is sent again only when
    /// `withoutEffects` (it may have run).
    func withMaster<T>(
        withoutEffects: Bool, _ body: (RedisConnection) async throws(RedisError) -> T, isReadOnly: (T) -> Bool
    ) async throws(RedisError) -> T {
        var lastError: RedisError?
        for delay in [Duration.zero] + Self.retryDelays {
            if delay > .zero { try? await Task.sleep(for: delay) }
            do {
                let result = try await body(try await pool(for: master()).connection())
                guard isReadOnly(result) else { return result }
                lastError = RedisError(.serverError, "READONLY: the node is a replica now")
            } catch where error.commandWasNotSent || (error.replyWasLost && withoutEffects) {
                lastError = error
                // Busy, not gone: the same master, after the pause.
                if error.code == .poolTimeout { continue }
            }
            state.withLock { $0.master = nil }
        }
        throw lastError ?? RedisError(.connectFailed, "the master did not answer")
    }
}

extension RESPValue {
    /// The value of an integer reply.
    var integerValue: Int? {
        if case .integer(let n) = self { return Int(n) }
        return nil
    }
}
