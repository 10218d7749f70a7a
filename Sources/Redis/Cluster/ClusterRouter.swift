import Logging
import NIOCore
import RESP
import Synchronization

/// A ``RedisClient``'s way to a Redis Cluster: the slot map, a pool per node, and the
/// redirections.
///
/// - The map comes from `CLUSTER SHARDS` (`CLUSTER SLOTS` on servers without it), asked of the
///   known masters and then the seeds, one refresh at a time, at most one every
///   ``minimumRefreshInterval``; ``RedisClient/run()`` refreshes it every
///   ``periodicRefreshInterval``.
/// - A command goes to the master of its key's slot (``CommandKeys``); one without a key to
///   any master.
/// - `MOVED slot host:port`: the slot is assigned to that node at once, a refresh is started,
///   and the command is sent there. `ASK slot host:port`: sent there once, after `ASKING`.
///   `TRYAGAIN` and `CLUSTERDOWN`: tried again after 25, 50, 100, 200 ms. A node that cannot be
///   reached: the map is refreshed and the command tried again (its replica may have taken
///   over). At most ``maximumAttempts`` in all.
final class ClusterRouter: Sendable {
    let configuration: RedisConfiguration
    let seeds: [ClusterTopology.Node]
    private let logger: Logger
    /// A pool per node.
    let nodes: NodePools
    private let refreshes = SingleFlightRefresh(minimumInterval: ClusterRouter.minimumRefreshInterval)
    private let state = Mutex(State())

    /// Sends to one node at most this many times per command (redirections and retries).
    static let maximumAttempts = 6
    static let minimumRefreshInterval: Duration = .milliseconds(100)
    static let periodicRefreshInterval: Duration = .seconds(30)

    private struct State {
        var topology: ClusterTopology?
        /// Why the last refresh found no map (nil once one did).
        var refreshError: RedisError?
        /// Whether a map came from `CLUSTER SHARDS`: the cluster runs Redis 7 or later, which
        /// has sharded pub/sub. Once true, it stays so (a cluster is not downgraded; one node
        /// answering `CLUSTER SLOTS` in a refresh must not switch the backplane's channel).
        var hasShardedPubSub = false
        /// Replicas that did not answer a read, and until when reads skip them.
        var replicasDown: [ClusterTopology.Node: ContinuousClock.Instant] = [:]
    }

    init(
        configuration: RedisConfiguration, seeds: [ClusterTopology.Node], eventLoopGroup: any EventLoopGroup, logger: Logger,
        onOpenCountChange: @escaping @Sendable (Int) -> Void
    ) {
        self.configuration = configuration
        self.seeds = seeds
        self.logger = logger
        var nodeConfiguration = configuration
        nodeConfiguration.database = 0
        self.nodes = NodePools(configuration: nodeConfiguration, eventLoopGroup: eventLoopGroup, logger: logger, onOpenCountChange: onOpenCountChange)
    }

    /// The slot map now (nil before the first refresh).
    var topology: ClusterTopology? { state.withLock { $0.topology } }

    // MARK: - Pools

    /// The pool of `node`, made on first use (`readOnly`: the one that reads from a replica).
    func pool(for node: ClusterTopology.Node, readOnly: Bool = false) throws(RedisError) -> RedisConnectionPool {
        try nodes.pool(for: node, readOnly: readOnly)
    }

    /// Turns of the replicas a read goes to.
    private let nextReplica = Atomic<Int>(0)

    /// Where a command goes: the master of `slot`, or, when reads go to replicas and the command
    /// has no effect, one of the slot's online replicas in turn, skipping those that failed in
    /// the last 5 s (its master when none is left).
    private func target(for command: RESPCommand, slot: HashSlot?, allowReplicas: Bool) async throws(RedisError) -> (
        node: ClusterTopology.Node, onReplica: Bool
    ) {
        let master = try await master(for: slot)
        guard allowReplicas, configuration.readFromReplicas, let slot, CommandKeys.isReadOnly(command) else { return (master, false) }
        let replicas = state.withLock { state -> [ClusterTopology.Node] in
            guard let shard = state.topology?.shard(of: slot), shard.master == master else { return [] }
            return shard.replicas
        }
        let now = ContinuousClock.now
        let up = state.withLock { state in replicas.filter { state.replicasDown[$0].map { $0 <= now } ?? true } }
        guard !up.isEmpty else { return (master, false) }
        let turn = nextReplica.add(1, ordering: .relaxed).oldValue
        return (up[turn % up.count], true)
    }

    /// A replica failed a read: reads skip it for 5 s, and the map is read again (it may be gone).
    /// Only for the replica's own failures (not reachable, not answering, loading, redirecting),
    /// never for the client's (a full pool, a cancelled caller).
    private func replicaFailed(_ node: ClusterTopology.Node) {
        state.withLock { state in
            // Bounded: entries past their time are dropped, and a map has at most a few hundred nodes.
            let now = ContinuousClock.now
            state.replicasDown = state.replicasDown.filter { $0.value > now }
            if state.replicasDown.count < 1024 { state.replicasDown[node] = now + .seconds(5) }
        }
        Task { await self.refresh() }
    }

    /// Keeps each pool's minimum open and pings idle connections; refreshes the map every
    /// ``periodicRefreshInterval``.
    func maintain() async {
        for pool in nodes.all { await pool.maintain() }
        if (refreshes.sinceLastStart ?? .seconds(Int64.max / 2)) >= Self.periodicRefreshInterval { await refresh() }
    }

    func shutdown() async {
        refreshes.stop()
        await nodes.shutdown()
    }

    // MARK: - Topology

    /// Refreshes the slot map (or waits for the refresh under way); at most one starts every
    /// ``minimumRefreshInterval``.
    func refresh() async {
        await refreshes.run { [weak self] in await self?.loadTopology() }
    }

    private func loadTopology() async {
        let known = state.withLock { $0.topology?.masters ?? [] }
        var lastError: RedisError?
        for node in known + seeds.filter({ !known.contains($0) }) {
            do throws(RedisError) {
                let (topology, fromShards) = try await topology(from: node)
                guard !topology.masters.isEmpty else { throw RedisError(.unexpectedReply, "\(node) knows no master") }
                state.withLock { state in
                    state.topology = topology
                    state.refreshError = nil
                    state.hasShardedPubSub = state.hasShardedPubSub || fromShards
                }
                // Pools of nodes the map no longer names are closed.
                let seeds = self.seeds
                await nodes.close { topology.knows($0) || seeds.contains($0) }
                return
            } catch {
                lastError = error
            }
        }
        state.withLock { $0.refreshError = lastError }
        logger.warning("cannot read the cluster's slot map from any node", metadata: ["error": "\(lastError.map { "\($0)" } ?? "no node")"])
    }

    /// The map as `node` sees it, and whether it came from `CLUSTER SHARDS`.
    private func topology(from node: ClusterTopology.Node) async throws(RedisError) -> (ClusterTopology, Bool) {
        let connection = try await pool(for: node).connection()
        let reply = try await connection.send(RESPCommand("CLUSTER", "SHARDS"))
        guard let message = reply.errorMessage else {
            return (try ClusterTopology(shardsReply: reply, seed: node, tls: configuration.tls), true)
        }
        // Before Redis 7 (`ERR Unknown subcommand`); any other error (`LOADING`, `NOPERM`) is
        // this node's failure, not a sign of an older server.
        let lowercased = message.lowercased()
        guard lowercased.contains("unknown subcommand") || lowercased.contains("wrong cluster subcommand") else {
            throw RedisError(.serverError, message)
        }
        let slots = try await connection.send(RESPCommand("CLUSTER", "SLOTS"))
        if let message = slots.errorMessage { throw RedisError(.serverError, message) }
        return (try ClusterTopology(slotsReply: slots, seed: node), false)
    }

    /// Whether the cluster has sharded pub/sub (Redis 7 and later), reading the map first when
    /// none was read yet; nil while no map could be read.
    func hasShardedPubSub() async -> Bool? {
        if state.withLock({ $0.topology == nil }) { await refresh() }
        return state.withLock { $0.topology == nil ? nil : $0.hasShardedPubSub }
    }

    /// The master serving `slot` (any master when nil), refreshing the map when it does not say.
    func master(for slot: HashSlot?) async throws(RedisError) -> ClusterTopology.Node {
        for _ in 0..<2 {
            let node = state.withLock { state -> ClusterTopology.Node? in
                guard let topology = state.topology else { return nil }
                if let slot { return topology.master(of: slot) }
                return topology.masters.first
            }
            if let node { return node }
            await refresh()
        }
        // Why no map could be read (a wrong password, say) says more than the missing slot.
        if let cause = state.withLock({ $0.topology == nil ? $0.refreshError : nil }) { throw cause }
        if let slot { throw RedisError(.connectFailed, "no node of the cluster serves slot \(slot)") }
        throw RedisError(.connectFailed, "no node of the cluster answers")
    }

    /// Every master now.
    func masters() async throws(RedisError) -> [ClusterTopology.Node] {
        if let masters = state.withLock({ $0.topology?.masters }), !masters.isEmpty { return masters }
        await refresh()
        guard let masters = state.withLock({ $0.topology?.masters }), !masters.isEmpty else {
            throw RedisError(.connectFailed, "no node of the cluster answers")
        }
        return masters
    }

    // MARK: - Commands

    /// Sends `command` to the master of `slot` (any master when nil), following redirections.
    /// Error replies other than redirections are returned as values.
    ///
    /// A command is sent again only when it cannot have run (no connection could be had, or a
    /// redirection), or when it has no effect and its reply was lost: a write whose node died
    /// mid-reply fails rather than maybe run twice.
    ///
    /// `allowReplicas`: false sends even a read to the master (with ``RedisConfiguration/readFromReplicas``).
    func send(_ command: RESPCommand, slot: HashSlot?, allowReplicas: Bool = true) async throws(RedisError) -> RESPValue {
        var (target, onReplica) = try await target(for: command, slot: slot, allowReplicas: allowReplicas)
        var asking = false
        var backoff = Duration.milliseconds(25)
        var lastError: RedisError?
        for attempt in 0..<Self.maximumAttempts {
            let reply: RESPValue
            do {
                let connection = try await pool(for: target, readOnly: onReplica).connection()
                if asking {
                    // One write: no other caller's command can come between the two.
                    let replies = try await connection.pipeline([RESPCommand("ASKING"), command])
                    reply = replies.last ?? .null
                } else {
                    reply = try await connection.send(command)
                }
            } catch where error.code != .clientShutdown && error.code != .cancelled {
                guard error.commandWasNotSent || (error.replyWasLost && CommandKeys.isReadOnly(command)) else { throw error }
                if onReplica {
                    // A replica that does not answer: its master serves the read.
                    lastError = error
                    if Self.isReplicaFailure(error) { replicaFailed(target) }
                    target = try await master(for: slot)
                    onReplica = false
                    continue
                }
                // The node may be gone (a failover): read the map again and try where it says.
                lastError = error
                await refresh()
                target = try await master(for: slot)
                asking = false
                continue
            }
            asking = false
            guard let message = reply.errorMessage else { return reply }
            if onReplica {
                // A replica that cannot serve the read (`LOADING`, `MASTERDOWN`, a redirection to
                // its master or after a move): the master of the slot, as the map says, serves
                // it, and the replica is skipped a while; it never changes the map. Other errors
                // (`WRONGTYPE`…) are the command's, whoever answers.
                guard Self.isReplicaRefusal(message) else { return reply }
                replicaFailed(target)
                lastError = RedisError(.serverError, message)
                target = try await master(for: slot)
                onReplica = false
                continue
            }
            switch Redirection(message, from: target) {
            case .moved(let movedSlot, let node):
                // A node may only move the command's own slot, and only to a node the cluster names.
                guard slot == nil || movedSlot == slot else { return reply }
                if !isKnown(node) { await refresh() }
                guard isKnown(node) else { return reply }
                if state.withLock({ $0.topology?.master(of: movedSlot) != node }) {
                    state.withLock { $0.topology?.assign(movedSlot, to: node) }
                    Task { await self.refresh() }
                }
                target = node
            case .ask(let node):
                guard isKnown(node) else { return reply }
                target = node
                asking = true
            case .tryAgain:
                // CLUSTERDOWN may be a failover under way: the map is read again too.
                if message.hasPrefix("CLUSTERDOWN") { Task { await self.refresh() } }
                if attempt + 1 < Self.maximumAttempts { try? await Task.sleep(for: backoff) }
                backoff = min(backoff * 2, .milliseconds(200))
            case nil:
                return reply
            }
            lastError = RedisError(.serverError, message)
        }
        throw lastError ?? RedisError(.serverError, "too many redirections")
    }

    /// An error reply by which a replica says it cannot serve a read now.
    static func isReplicaRefusal(_ message: String) -> Bool {
        ["LOADING", "MASTERDOWN", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "READONLY"].contains { message.hasPrefix($0) }
    }

    /// A failure that is the replica's (unreachable, silent, gone), not the client's.
    static func isReplicaFailure(_ error: RedisError) -> Bool {
        switch error.code.base {
        case .connectFailed, .connectTimeout, .connectionClosed, .commandTimeout, .handshakeFailed: true
        default: false
        }
    }

    /// Whether the slot map names `node` (as a master or a replica).
    private func isKnown(_ node: ClusterTopology.Node) -> Bool {
        state.withLock { $0.topology?.knows(node) ?? false } || seeds.contains(node)
    }

    /// Sends `command` where its key's slot is served; a multi-key command whose keys are in
    /// several slots (`MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH`) is split into one
    /// command per slot, sent as pipelines per node, and its replies merged as the single
    /// command's would be (values in the keys' order; counts added up).
    func send(_ command: RESPCommand, allowReplicas: Bool = true) async throws(RedisError) -> RESPValue {
        guard let split = MultiKeyCommand(command) else {
            return try await send(command, slot: CommandKeys.slot(of: command), allowReplicas: allowReplicas)
        }
        let groups = split.groupsBySlot()
        guard groups.count > 1 else { return try await send(command, slot: CommandKeys.slot(of: command), allowReplicas: allowReplicas) }
        let replies = try await pipeline(groups.map { split.command(for: $0) }, allowReplicas: allowReplicas)
        if let failed = replies.first(where: { $0.errorMessage != nil }) { return failed }
        switch split.merge {
        case .values:
            var values = [RESPValue](repeating: .null, count: split.keyCount)
            for (group, reply) in zip(groups, replies) {
                guard case .array(let parts) = reply, parts.count == group.count else { throw .unexpected(reply, for: split.name) }
                for (index, part) in zip(group, parts) { values[index] = part }
            }
            return .array(values)
        case .sum:
            var total: Int64 = 0
            for reply in replies {
                guard case .integer(let n) = reply else { throw .unexpected(reply, for: split.name) }
                total += n
            }
            return .integer(total)
        case .ok:
            return replies[0]
        }
    }

    /// Sends `command` to `node` itself (no routing): for per-node commands such as `SCAN`.
    func send(_ command: RESPCommand, to node: ClusterTopology.Node) async throws(RedisError) -> RESPValue {
        try await pool(for: node).connection().send(command)
    }

    /// The commands grouped by the node serving each one's key, sent as one pipeline per node
    /// (in parallel), the replies put back in order; reads may go to replicas (`allowReplicas`
    /// and ``RedisConfiguration/readFromReplicas``). A reply that is a redirection, or a
    /// replica's refusal (`LOADING`…), is retried alone through ``send(_:slot:allowReplicas:)``.
    func pipeline(_ commands: [RESPCommand], allowReplicas: Bool = true) async throws(RedisError) -> [RESPValue] {
        /// A node, and whether the commands read from it as a replica.
        struct PipelineTarget: Hashable {
            var node: ClusterTopology.Node
            var onReplica: Bool
        }
        var groups: [PipelineTarget: [Int]] = [:]
        // A command without a key (a PUBLISH after its SET) goes with the keyed command before
        // it, so it follows that command on its node.
        var slots: [HashSlot?] = []
        var previous: HashSlot?
        for command in commands {
            let slot = CommandKeys.slot(of: command) ?? previous
            slots.append(slot)
            previous = slot
        }
        // A multi-key command across slots is sent on its own, split (``send(_:)``).
        if commands.contains(where: { MultiKeyCommand($0).map { $0.groupsBySlot().count > 1 } ?? false }) {
            var replies: [RESPValue] = []
            for command in commands { replies.append(try await send(command, allowReplicas: allowReplicas)) }
            return replies
        }
        for (index, slot) in slots.enumerated() {
            let (node, onReplica) = try await target(for: commands[index], slot: slot, allowReplicas: allowReplicas)
            groups[PipelineTarget(node: node, onReplica: onReplica), default: []].append(index)
        }
        let outcome = await withTaskGroup(of: (PipelineTarget, [Int], Result<[RESPValue], RedisError>).self) { group in
            for (target, indices) in groups {
                group.addTask {
                    do throws(RedisError) {
                        let connection = try await self.pool(for: target.node, readOnly: target.onReplica).connection()
                        return (target, indices, .success(try await connection.pipeline(indices.map { commands[$0] })))
                    } catch {
                        return (target, indices, .failure(error))
                    }
                }
            }
            var results: [(PipelineTarget, [Int], Result<[RESPValue], RedisError>)] = []
            for await result in group { results.append(result) }
            return results
        }
        var replies = [RESPValue](repeating: .null, count: commands.count)
        for (target, indices, result) in outcome {
            switch result {
            case .success(let values):
                for (index, value) in zip(indices, values) {
                    // A redirection, or a replica that cannot serve the read (read again where the map says).
                    if let message = value.errorMessage,
                        target.onReplica ? Self.isReplicaRefusal(message) : Redirection(message, from: target.node) != nil
                    {
                        if target.onReplica { replicaFailed(target.node) }
                        replies[index] = try await send(commands[index], slot: slots[index], allowReplicas: allowReplicas)
                    } else {
                        replies[index] = value
                    }
                }
            case .failure(let error):
                if target.onReplica, Self.isReplicaFailure(error) { replicaFailed(target.node) }
                // That node's commands, one by one, where the refreshed map says: only when
                // none can have run (or none has effects).
                guard error.commandWasNotSent || (error.replyWasLost && indices.allSatisfy({ CommandKeys.isReadOnly(commands[$0]) })) else {
                    throw error
                }
                for index in indices { replies[index] = try await send(commands[index], slot: slots[index], allowReplicas: allowReplicas) }
            }
        }
        return replies
    }
}

/// A command on several keys that a cluster may need split by slot.
struct MultiKeyCommand {
    enum Merge {
        /// An array of one value per key (`MGET`).
        case values
        /// Counts added up (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`).
        case sum
        /// `OK` (`MSET`).
        case ok
    }

    let name: String
    let merge: Merge
    /// The keys, and after each its value for `MSET`.
    let keys: [ByteBufferView]
    let values: [ByteBufferView]

    var keyCount: Int { keys.count }

    init?(_ command: RESPCommand) {
        guard let nameBytes = command.argument(0), nameBytes.count <= 8 else { return nil }
        let name = String(decoding: nameBytes, as: UTF8.self).uppercased()
        let merge: Merge
        switch name {
        case "MGET": merge = .values
        case "DEL", "UNLINK", "EXISTS", "TOUCH": merge = .sum
        case "MSET": merge = .ok
        default: return nil
        }
        let arguments = Array(command.arguments.dropFirst())
        if merge == .ok {
            guard arguments.count % 2 == 0 else { return nil }
            keys = stride(from: 0, to: arguments.count, by: 2).map { arguments[$0] }
            values = stride(from: 1, to: arguments.count, by: 2).map { arguments[$0] }
        } else {
            keys = arguments
            values = []
        }
        self.name = name
        self.merge = merge
    }

    /// The keys' indices grouped by slot, each group in the keys' order.
    func groupsBySlot() -> [[Int]] {
        var groups: [HashSlot: [Int]] = [:]
        for (index, key) in keys.enumerated() { groups[HashSlot(key: key), default: []].append(index) }
        return groups.values.sorted { $0[0] < $1[0] }
    }

    /// The command for one group of keys.
    func command(for group: [Int]) -> RESPCommand {
        var command = RESPCommand(name)
        for index in group {
            command.append(bytes: keys[index])
            if merge == .ok { command.append(bytes: values[index]) }
        }
        return command
    }
}

/// A cluster's answer that the command belongs elsewhere, or must wait.
enum Redirection: Equatable {
    case moved(HashSlot, ClusterTopology.Node)
    case ask(ClusterTopology.Node)
    case tryAgain

    /// `from`: the node that answered (an address without a host means it).
    init?(_ message: String, from: ClusterTopology.Node) {
        let parts = message.split(separator: " ")
        guard let kind = parts.first else { return nil }
        switch kind {
        case "MOVED", "ASK":
            guard parts.count == 3, let raw = Int(parts[1]), let slot = HashSlot(rawValue: raw), let node = Self.node(parts[2], from: from) else {
                return nil
            }
            self = kind == "MOVED" ? .moved(slot, node) : .ask(node)
        case "TRYAGAIN", "CLUSTERDOWN":
            self = .tryAgain
        default:
            return nil
        }
    }

    /// `host:port`, `[v6]:port` or `:port` (the node that answered, which the caller knows).
    private static func node(_ text: Substring, from: ClusterTopology.Node) -> ClusterTopology.Node? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard host.utf8.count <= 255 else { return nil }
        return ClusterTopology.Node(host: host.isEmpty ? from.host : String(host), port: port)
    }
}
