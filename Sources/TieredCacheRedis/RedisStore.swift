package import NIOCore
public import Redis
package import RESP
public import TieredCache
import Synchronization
import Utilities

/// The ``L2Store`` on Redis: what a ``TieredCache`` shares with every instance on one server.
///
/// - Values: `SET <prefix><key> <envelope> PX <lifetime>`, read with `GET` (or `MGET` for
///   several); the ``CacheEnvelope`` is the only format read back, and anything else under a
///   key is reported as ``L2Read/invalid(_:)``.
/// - A write and its backplane notice (`PUBLISH <prefix>backplane`) go in one pipelined round
///   trip; notices are `1|<origin>|<set|remove|clear>|<key>`. On a Redis 7 cluster, notices are
///   published on the sharded channel of that name (`SPUBLISH`, which stays within the
///   channel's shard where `PUBLISH` is copied to every node), after the write has answered
///   (the two are on different nodes, and a notice must never overtake its value); instances
///   listen to both channels, so ones that publish either way hear each other.
/// - Load locks: `SET <prefix>lock:{<prefix><key>} <token> NX PX <lease>`, released by a
///   compare-and-delete script, so an expired lock taken over by another is never deleted. The
///   braces are a hash tag: in a Redis Cluster the lock is in its value's slot (on its node),
///   so one script may touch both.
/// - `removeAll` and `count` walk the prefix with `SCAN` (never `KEYS` or `FLUSHDB`), so other
///   applications' keys in the same database are left alone.
public final class RedisStore: L2Store {
    /// Settings of the store.
    public struct Configuration: Sendable, Hashable {
        /// Prefix of every key the store writes (`ibge:`); `removeAll` deletes only these.
        public var keyPrefix: String
        /// Keys asked for per `SCAN` step.
        public var scanCount: Int

        /// Creates a configuration.
        public init(keyPrefix: String = "ibge:", scanCount: Int = 1000) {
            self.keyPrefix = keyPrefix
            self.scanCount = max(1, scanCount)
        }
    }

    /// The configuration.
    public let configuration: Configuration
    let client: RedisClient
    /// With reads from replicas: the keys a notice announced lately, read from the master.
    private let announced = Mutex(AnnouncedKeys())
    /// Whether notices go out with `SPUBLISH`: decided once, by the first map the client reads,
    /// so that this instance publishes where it listens for its whole life.
    private let sharded = Mutex<Bool?>(nil)

    /// Creates a store on `client` (which the caller runs and shuts down).
    public init(client: RedisClient, configuration: Configuration = Configuration()) {
        self.client = client
        self.configuration = configuration
    }

    public var isShared: Bool { true }

    public var location: String { client.configuration.endpoint.description }

    /// The Redis key of a cache key.
    func redisKey(_ key: String) -> String { configuration.keyPrefix + key }

    /// The Redis key of a cache key's load lock: `<prefix>lock:{<what the value key's slot is
    /// computed from>}`, so that in a Redis Cluster both are in one slot.
    func lockKey(_ key: String) -> String { configuration.keyPrefix + "lock:{" + Self.hashInput(redisKey(key)) + "}" }

    /// What a key's cluster slot is computed from: its hash tag (between the first `{` and the
    /// next `}`, when not empty), or the whole key.
    static func hashInput(_ key: String) -> Substring {
        if let open = key.firstIndex(of: "{") {
            let afterOpen = key.index(after: open)
            if let close = key[afterOpen...].firstIndex(of: "}"), close != afterOpen { return key[afterOpen..<close] }
        }
        return key[...]
    }

    /// The pub/sub channel of the backplane.
    var backplaneChannel: String { configuration.keyPrefix + "backplane" }

    // MARK: - Values

    public func read(_ key: String) async throws(L2StoreError) -> L2Read {
        let reply: RESPValue
        do {
            reply = try await send(RESPCommand("GET", redisKey(key)), keys: CollectionOfOne(key))
        } catch {
            throw Self.storeError(error)
        }
        return try Self.decode(reply, for: "GET")
    }

    public func read(_ keys: [String]) async throws(L2StoreError) -> [L2Read] {
        guard !keys.isEmpty else { return [] }
        var command = RESPCommand("MGET")
        for key in keys { command.append(redisKey(key)) }
        let reply: RESPValue
        do {
            reply = try await send(command, keys: keys)
        } catch {
            throw Self.storeError(error)
        }
        guard case .array(let values) = reply, values.count == keys.count else {
            throw L2StoreError(.rejected, "MGET of \(keys.count) keys returned \(reply)")
        }
        var reads: [L2Read] = []
        reads.reserveCapacity(values.count)
        for value in values { reads.append(try Self.decode(value, for: "MGET")) }
        return reads
    }

    public func write(_ entries: [L2Entry], notify origin: String?) async throws(L2StoreError) {
        guard !entries.isEmpty else { return }
        var commands: [RESPCommand] = []
        commands.reserveCapacity(entries.count * (origin == nil ? 1 : 2))
        let sharded = origin != nil ? await publishesSharded() : false
        var notices: [RESPCommand] = []
        for entry in entries {
            let payload = entry.envelope.encoded()
            var set = RESPCommand("SET", capacity: payload.readableBytes + entry.key.utf8.count + 64)
            set.append(redisKey(entry.key))
            set.append(payload)
            set.append("PX")
            set.append(Int(max(1, entry.lifetime.roundedUpMilliseconds)))
            commands.append(set)
            if let origin { notices.append(notice(BackplaneNotice(origin: origin, operation: .set, key: entry.key), sharded: sharded)) }
            if !sharded { commands.append(contentsOf: notices.popLast().map { [$0] } ?? []) }
        }
        let replies: [RESPValue]
        do {
            replies = try await pipeline(commands)
        } catch {
            // Some values may have been written (a cluster's other nodes): announce them all (a
            // notice for a value not written costs another instance one read).
            await publish(notices)
            throw error
        }
        // A value that was not written is a failure; a notice that was not published is not
        // (the value is there; other instances see it when their L1 entry expires). Sharded
        // notices go out for the values written, even when another was refused.
        var refusal: String?
        var written: [RESPCommand] = []
        for (index, reply) in replies.enumerated() where sharded || index % (origin == nil ? 1 : 2) == 0 {
            if let message = reply.errorMessage {
                refusal = refusal ?? message
            } else if sharded, index < notices.count {
                written.append(notices[index])
            }
        }
        await publish(written)
        if let refusal { throw L2StoreError(.rejected, refusal) }
    }

    public func remove(_ key: String, notify origin: String?) async throws(L2StoreError) -> Bool {
        var commands = [RESPCommand("UNLINK", redisKey(key))]
        let sharded = origin != nil ? await publishesSharded() : false
        var notices: [RESPCommand] = []
        if let origin { notices.append(notice(BackplaneNotice(origin: origin, operation: .remove, key: key), sharded: sharded)) }
        if !sharded { commands += notices.popLast().map { [$0] } ?? [] }
        let replies = try await pipeline(commands)
        guard case .integer(let removed) = replies[0] else { throw L2StoreError(.rejected, "UNLINK returned \(replies[0])") }
        await publish(notices)
        return removed > 0  // a notice that was not published does not undo the removal
    }

    public func removeAll(notify origin: String?) async throws(L2StoreError) -> Int {
        var removed = 0
        var batch: [String] = []
        func unlink() async throws(RedisError) {
            guard !batch.isEmpty else { return }
            removed += try await client.unlink(batch)
            batch.removeAll(keepingCapacity: true)
        }
        do {
            for try await key in client.scanKeys(matching: Self.globEscaped(configuration.keyPrefix) + "*", count: configuration.scanCount) {
                batch.append(key)
                if batch.count >= configuration.scanCount { try await unlink() }
            }
            try await unlink()
        } catch {
            throw Self.storeError(error)
        }
        if let origin { await publish([notice(BackplaneNotice(origin: origin, operation: .clear, key: ""), sharded: await publishesSharded())]) }
        return removed
    }

    public func count(limit: Int, sampleSize: Int) async throws(L2StoreError) -> L2KeyCount {
        var count = 0
        var sample: [String] = []
        var keys = client.scanKeys(matching: Self.globEscaped(configuration.keyPrefix) + "*", count: configuration.scanCount).makeAsyncIterator()
        do {
            while count < limit, let key = try await keys.next() {
                count += 1
                if sample.count < sampleSize { sample.append(key) }
            }
            let complete = count < limit ? true : try await keys.next() == nil
            return L2KeyCount(count: count, sample: sample, complete: complete)
        } catch {
            throw Self.storeError(error)
        }
    }

    /// `INFO memory`; on a cluster, every master's added up (the policy is the first's).
    public func memory() async throws(L2StoreError) -> L2Memory? {
        let replies: [RESPValue]
        do {
            replies = try await client.sendToEveryMaster(RESPCommand("INFO", "memory"))
        } catch {
            throw Self.storeError(error)
        }
        var total: L2Memory?
        for reply in replies {
            guard let memory = Self.memory(fromInfo: reply) else { return nil }
            if var sum = total {
                func added(_ a: Int, _ b: Int) -> Int {
                    let (sum, overflow) = a.addingReportingOverflow(b)
                    return overflow ? .max : sum
                }
                sum.usedBytes = added(sum.usedBytes, memory.usedBytes)
                // One master without a bound leaves the whole without one.
                sum.maximumBytes = sum.maximumBytes == 0 || memory.maximumBytes == 0 ? 0 : added(sum.maximumBytes, memory.maximumBytes)
                total = sum
            } else {
                total = memory
            }
        }
        return total
    }

    /// The memory an `INFO memory` reply reports (nil when it is not one).
    static func memory(fromInfo reply: RESPValue) -> L2Memory? {
        let text: String
        switch reply {
        case .bulkString(let bytes): text = String(buffer: bytes)
        case .verbatimString(_, let bytes): text = String(buffer: bytes)
        default: return nil
        }
        var fields: [Substring: Substring] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...]
        }
        guard let used = fields["used_memory"].flatMap({ Int($0) }), used >= 0, used < 1 << 50 else { return nil }
        let maximum = fields["maxmemory"].flatMap { Int($0) }.map { (0..<(1 << 50)).contains($0) ? $0 : 0 } ?? 0
        return L2Memory(usedBytes: used, maximumBytes: maximum, policy: fields["maxmemory_policy"].map { String($0.prefix(64)) } ?? "unknown")
    }

    public func time() async throws(L2StoreError) -> Int64? {
        let reply: RESPValue
        do {
            reply = try await client.send(RESPCommand("TIME"))
        } catch {
            throw Self.storeError(error)
        }
        // [seconds, microseconds], as bulk strings.
        guard case .array(let parts) = reply, parts.count == 2,
            let seconds = parts[0].string.flatMap({ Int64($0) }), let micros = parts[1].string.flatMap({ Int64($0) }),
            (0..<(Int64(1) << 40)).contains(seconds), (0..<1_000_000).contains(micros)
        else { throw L2StoreError(.rejected, "TIME answered \(reply)") }
        return seconds * 1000 + micros / 1000
    }

    public func ping() async throws(L2StoreError) {
        do {
            _ = try await client.ping()
        } catch {
            throw Self.storeError(error)
        }
    }

    // MARK: - Load lock

    /// Deletes the lock only if it still holds our token (another instance may hold it now).
    static let releaseScript = RedisScript(
        """
        if redis.call("GET", KEYS[1]) == ARGV[1] then
            return redis.call("DEL", KEYS[1])
        end
        return 0
        """)

    public func lock(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool {
        do {
            return try await client.set(lockKey(key), value: ByteBuffer(string: token), expiration: lease, condition: .ifNotExists)
        } catch {
            throw Self.storeError(error)
        }
    }

    /// Extends the lock only if it still holds our token.
    static let renewScript = RedisScript(
        """
        if redis.call("GET", KEYS[1]) == ARGV[1] then
            return redis.call("PEXPIRE", KEYS[1], ARGV[2])
        end
        return 0
        """)

    public func renew(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool {
        do {
            let reply = try await client.run(
                Self.renewScript, keys: [lockKey(key)], arguments: [ByteBuffer(string: token), ByteBuffer(string: String(lease.wholeMilliseconds))])
            if case .integer(let renewed) = reply { return renewed == 1 }
            return false
        } catch {
            throw Self.storeError(error)
        }
    }

    public func unlock(_ key: String, token: String) async throws(L2StoreError) {
        do {
            _ = try await client.run(Self.releaseScript, keys: [lockKey(key)], arguments: [ByteBuffer(string: token)])
        } catch {
            throw Self.storeError(error)
        }
    }

    // MARK: - Backplane

    public func notices() async throws(L2StoreError) -> AsyncStream<BackplaneNotice> {
        let messages: AsyncStream<RedisMessage>
        do {
            // Both channels where the cluster has sharded ones: an instance that publishes on the
            // classic one (an older version, or one that read the map from an older node) is heard.
            let shardChannels = await publishesSharded() ? [backplaneChannel] : []
            messages = try await client.subscribe(to: [backplaneChannel], shardChannels: shardChannels)
        } catch {
            throw Self.storeError(error)
        }
        let pending = MessageIterator(messages.makeAsyncIterator())
        let readsFromReplicas = client.configuration.readFromReplicas
        return AsyncStream { [self] in
            while let message = await pending.iterator.next() {
                let notice = message.isGap ? BackplaneNotice(origin: "", operation: .lost, key: "") : Self.notice(from: message.payload)
                guard let notice else { continue }
                // A replica may not have the announced change yet: reads of it go to the master a while.
                if readsFromReplicas { self.announced.withLock { $0.note(notice) } }
                return notice
            }
            return nil
        }
    }

    /// The `PUBLISH` (`SPUBLISH` when `sharded`) of a notice.
    package func notice(_ notice: BackplaneNotice, sharded: Bool = false) -> RESPCommand {
        var command = RESPCommand(sharded ? "SPUBLISH" : "PUBLISH", backplaneChannel)
        command.append(ByteBuffer(string: "1|\(notice.origin)|\(notice.operation.rawValue)|\(notice.key)"))
        return command
    }

    /// Reads a notice; nil for anything that is not one (another version, a stray publisher).
    package static func notice(from payload: ByteBuffer) -> BackplaneNotice? {
        let parts = String(buffer: payload).split(separator: "|", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "1", !parts[1].isEmpty, let operation = BackplaneNotice.Operation(rawValue: String(parts[2])) else {
            return nil
        }
        return BackplaneNotice(origin: String(parts[1]), operation: operation, key: String(parts[3]))
    }

    // MARK: - Helpers

    /// Whether this store publishes its notices with `SPUBLISH` (see ``sharded``).
    private func publishesSharded() async -> Bool {
        if let decided = sharded.withLock({ $0 }) { return decided }
        // No map yet (the cluster unreachable): classic this time (every instance listens to
        // it), decided with the first map.
        guard let now = await client.prefersShardedPubSub() else { return false }
        return sharded.withLock { decided in
            if decided == nil { decided = now }
            return decided ?? now
        }
    }

    /// Sends a read of `keys`: to the master when a notice announced a change to one of them
    /// lately (reads from replicas only), as the client routes it otherwise.
    private func send(_ command: RESPCommand, keys: some Collection<String>) async throws(RedisError) -> RESPValue {
        if client.configuration.readFromReplicas, announced.withLock({ $0.includesAny(of: keys) }) {
            return try await client.sendToMaster(command)
        }
        return try await client.send(command)
    }

    /// Publishes notices sent apart from their writes (sharded ones); one that is not published
    /// is not a failure (the value is there; other instances see it when their L1 entry expires).
    private func publish(_ notices: [RESPCommand]) async {
        guard !notices.isEmpty else { return }
        _ = try? await client.pipeline(notices)
    }

    /// Sends commands in one round trip; error replies come back as values for the caller to weigh.
    private func pipeline(_ commands: [RESPCommand]) async throws(L2StoreError) -> [RESPValue] {
        do {
            return try await client.pipeline(commands)
        } catch {
            throw Self.storeError(error)
        }
    }

    static func decode(_ reply: RESPValue, for command: String) throws(L2StoreError) -> L2Read {
        switch reply {
        case .null:
            return .miss
        case .bulkString(let bytes):
            do {
                return .hit(try CacheEnvelope(decoding: bytes))
            } catch {
                return .invalid("\(error)")
            }
        default:
            if let message = reply.errorMessage { throw L2StoreError(.rejected, message) }
            throw L2StoreError(.rejected, "\(command) returned \(reply)")
        }
    }

    static func storeError(_ error: RedisError) -> L2StoreError {
        if error.code == .cancelled { return L2StoreError(.cancelled, "\(error)") }
        return L2StoreError(error.isConnectivityFailure ? .unavailable : .rejected, "\(error)")
    }

    /// `text` with the glob characters of `SCAN MATCH` escaped.
    static func globEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}

/// The subscription's iterator, advanced by the notices stream's `unfolding` closure, which
/// `AsyncStream` never runs concurrently with itself: one consumer, one call at a time.
private final class MessageIterator: @unchecked Sendable {
    var iterator: AsyncStream<RedisMessage>.Iterator

    init(_ iterator: AsyncStream<RedisMessage>.Iterator) {
        self.iterator = iterator
    }
}

/// The keys backplane notices announced lately, for ``RedisStore`` with reads from replicas: a
/// replica may lag behind the master the notice's write went to, so reads of those keys go to
/// the master for ``window``. Bounded: past ``limit`` keys, every key counts as announced for
/// the window.
package struct AnnouncedKeys {
    package static let window: Duration = .seconds(5)
    package static let limit = 10_000
    private var keys: [String: ContinuousClock.Instant] = [:]
    private var allUntil: ContinuousClock.Instant?

    package init() {}

    package mutating func note(_ notice: BackplaneNotice, now: ContinuousClock.Instant = .now) {
        let until = now + Self.window
        switch notice.operation {
        case .set, .remove:
            if keys.count >= Self.limit { keys = keys.filter { $0.value > now } }
            if keys.count >= Self.limit {
                keys = [:]
                allUntil = until
            } else {
                keys[notice.key] = until
            }
        case .clear, .lost:
            keys = [:]
            allUntil = until
        }
    }

    package func includesAny(of candidates: some Collection<String>, now: ContinuousClock.Instant = .now) -> Bool {
        if let allUntil, allUntil > now { return true }
        guard !keys.isEmpty else { return false }
        return candidates.contains { keys[$0].map { $0 > now } ?? false }
    }
}
