import Logging
import NIOCore
import Synchronization

/// A pool of connections per node, for a client that speaks to several (a cluster's nodes, the
/// masters a sentinel names in turn): made on first use, counted together for
/// `redis_connections_open`, closed when the node is forgotten or the client shuts down.
final class NodePools: Sendable {
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let onOpenCountChange: @Sendable (Int) -> Void
    private let state = Mutex(State())

    private struct State {
        var pools: [Key: RedisConnectionPool] = [:]
        var openPerNode: [Key: Int] = [:]
        var shutDown = false
    }

    /// A node, and whether its connections serve reads as a cluster replica (`READONLY`).
    private struct Key: Hashable {
        var node: ClusterTopology.Node
        var readOnly: Bool
    }

    /// `configuration` is each node's, but for its endpoint (and no sentinel, database 0 on a
    /// cluster: the caller adjusts it).
    init(
        configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger, onOpenCountChange: @escaping @Sendable (Int) -> Void
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.onOpenCountChange = onOpenCountChange
    }

    /// The pool of `node`, made on first use; `readOnly`: a separate pool whose connections
    /// send `READONLY` (reads from a cluster replica).
    func pool(for node: ClusterTopology.Node, readOnly: Bool = false) throws(RedisError) -> RedisConnectionPool {
        let key = Key(node: node, readOnly: readOnly)
        let pool = state.withLock { state -> RedisConnectionPool? in
            guard !state.shutDown else { return nil }
            if let pool = state.pools[key] { return pool }
            var nodeConfiguration = configuration
            nodeConfiguration.endpoint = .tcp(host: node.host, port: node.port)
            nodeConfiguration.sendsReadOnly = readOnly
            let pool = RedisConnectionPool(configuration: nodeConfiguration, eventLoopGroup: eventLoopGroup, logger: logger) { [weak self] open in
                self?.opened(open, on: key)
            }
            state.pools[key] = pool
            return pool
        }
        guard let pool else { throw RedisError(.clientShutdown, "the client was shut down") }
        return pool
    }

    /// Every pool now.
    var all: [RedisConnectionPool] { state.withLock { Array($0.pools.values) } }

    /// Closes the pools of the nodes `keep` says no to.
    func close(keeping keep: (ClusterTopology.Node) -> Bool) async {
        let gone = state.withLock { state -> [RedisConnectionPool] in
            let keys = state.pools.keys.filter { !keep($0.node) }
            defer {
                for key in keys {
                    state.pools[key] = nil
                    state.openPerNode[key] = nil
                }
            }
            return keys.compactMap { state.pools[$0] }
        }
        for pool in gone { await pool.shutdown() }
    }

    /// Closes every pool; later calls fail with ``RedisError/Code/clientShutdown``.
    func shutdown() async {
        let pools = state.withLock { state -> [RedisConnectionPool] in
            state.shutDown = true
            return Array(state.pools.values)
        }
        for pool in pools { await pool.shutdown() }
    }

    /// Reports every pool's open connections together.
    private func opened(_ count: Int, on key: Key) {
        let total = state.withLock { state in
            state.openPerNode[key] = count
            return state.openPerNode.values.reduce(0, +)
        }
        onOpenCountChange(total)
    }
}

/// One refresh at a time (callers that arrive meanwhile wait for it), and at most one start
/// every `minimumInterval` unless forced: reading a cluster's map, asking the sentinels.
final class SingleFlightRefresh: Sendable {
    private let minimumInterval: Duration
    private let state = Mutex(State())

    private struct State {
        var running: Task<Void, Never>?
        var lastStart: ContinuousClock.Instant?
        var stopped = false
    }

    init(minimumInterval: Duration) {
        self.minimumInterval = minimumInterval
    }

    /// Runs `work`, or waits for the run under way; nothing when the last start is more recent
    /// than the minimum interval (unless `force`) or after ``stop()``.
    func run(force: Bool = false, _ work: @escaping @Sendable () async -> Void) async {
        let task = state.withLock { state -> Task<Void, Never>? in
            if let running = state.running { return running }
            let now = ContinuousClock.now
            guard !state.stopped, force || state.lastStart.map({ now - $0 >= minimumInterval }) ?? true else { return nil }
            state.lastStart = now
            let task = Task {
                await work()
                self.state.withLock { $0.running = nil }
            }
            state.running = task
            return task
        }
        await task?.value
    }

    /// How long since the last run started (nil: never).
    var sinceLastStart: Duration? { state.withLock { $0.lastStart.map { ContinuousClock.now - $0 } } }

    /// Cancels the run under way; no more start.
    func stop() {
        state.withLock { state in
            state.stopped = true
            state.running?.cancel()
        }
    }
}
