import Crypto
public import NIOCore
public import RESP
import Utilities

/// How ``RedisClient/set(_:value:expiration:condition:)`` treats an existing key.
public enum RedisSetCondition: Sendable {
    /// Always set.
    case always
    /// Set only when the key does not exist (`NX`).
    case ifNotExists
    /// Set only when the key exists (`XX`).
    case ifExists
}

extension RedisClient {
    /// `PING`: the server's answer (`PONG`).
    public func ping() async throws(RedisError) -> String {
        let reply = try await send(RESPCommand("PING"))
        guard let text = reply.string else { throw .unexpected(reply, for: "PING") }
        return text
    }

    /// `GET key`: the value, or nil when the key does not exist.
    public func get(_ key: String) async throws(RedisError) -> ByteBuffer? {
        let reply = try await send(RESPCommand("GET", key))
        switch reply {
        case .bulkString(let value): return value
        case .null: return nil
        default: throw .unexpected(reply, for: "GET")
        }
    }

    /// `SET key value [PX ms] [NX|XX]`: whether the value was written.
    @discardableResult
    public func set(
        _ key: String,
        value: ByteBuffer,
        expiration: Duration? = nil,
        condition: RedisSetCondition = .always
    ) async throws(RedisError) -> Bool {
        var command = RESPCommand("SET", capacity: value.readableBytes + key.utf8.count + 48)
        command.append(key)
        command.append(value)
        if let expiration {
            command.append("PX")
            command.append(Int(max(1, expiration.roundedUpMilliseconds)))
        }
        switch condition {
        case .always: break
        case .ifNotExists: command.append("NX")
        case .ifExists: command.append("XX")
        }
        let reply = try await send(command)
        switch reply {
        case .simpleString: return true
        case .null: return false
        default: throw .unexpected(reply, for: "SET")
        }
    }

    /// `MGET key...`: one value or nil per key, in order.
    public func mget(_ keys: [String]) async throws(RedisError) -> [ByteBuffer?] {
        guard !keys.isEmpty else { return [] }
        let command = Self.command("MGET", keys: keys)
        let reply = try await send(command)
        guard case .array(let values) = reply, values.count == keys.count else { throw .unexpected(reply, for: "MGET") }
        return values.map { $0.bytes }
    }

    /// `MSET key value [key value ...]`: sets every pair at once.
    public func mset(_ pairs: [(key: String, value: ByteBuffer)]) async throws(RedisError) {
        guard !pairs.isEmpty else { return }
        var command = RESPCommand("MSET")
        for pair in pairs {
            command.append(pair.key)
            command.append(pair.value)
        }
        _ = try await send(command)
    }

    /// Runs the commands as one transaction (`MULTI` … `EXEC`) on one connection, in one round
    /// trip, and returns their replies; nil when the transaction was aborted (a `WATCH`ed key
    /// changed). A command the server rejects while queueing aborts it with that error.
    public func transaction(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue]? {
        let all = [RESPCommand("MULTI")] + commands + [RESPCommand("EXEC")]
        let replies: [RESPValue]
        if let cluster {
            // All on the node of the first key (a transaction's keys must share a slot).
            let node = try await cluster.master(for: commands.lazy.compactMap(CommandKeys.slot(of:)).first)
            replies = try await cluster.pool(for: node).connection().pipeline(all)
        } else {
            replies = try await pipeline(all)
        }
        for reply in replies.dropLast() {
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
        }
        switch replies.last {
        case .array(let results): return results
        case .null: return nil
        case .some(let other):
            if let message = other.errorMessage { throw RedisError(.serverError, message) }
            throw .unexpected(other, for: "EXEC")
        case .none: throw RedisError(.unexpectedReply, "EXEC returned nothing")
        }
    }

    /// Every key matching `pattern`, walked with `SCAN` (`count` per step) as an async sequence:
    /// a step is fetched only when the previous one is consumed.
    public func scanKeys(matching pattern: String? = nil, count: Int = 1000) -> RedisKeyScan {
        RedisKeyScan(client: self, pattern: pattern, count: count)
    }

    /// `DEL key...`: how many keys were removed.
    @discardableResult
    public func del(_ keys: [String]) async throws(RedisError) -> Int {
        try await integerCommand("DEL", keys)
    }

    /// `UNLINK key...`: how many keys were removed (memory is reclaimed in the background).
    @discardableResult
    public func unlink(_ keys: [String]) async throws(RedisError) -> Int {
        try await integerCommand("UNLINK", keys)
    }

    /// `EXISTS key...`: how many of the keys exist.
    public func exists(_ keys: [String]) async throws(RedisError) -> Int {
        try await integerCommand("EXISTS", keys)
    }

    private func integerCommand(_ name: String, _ keys: [String]) async throws(RedisError) -> Int {
        guard !keys.isEmpty else { return 0 }
        let reply = try await send(Self.command(name, keys: keys))
        guard case .integer(let n) = reply else { throw .unexpected(reply, for: name) }
        return Int(n)
    }

    /// `name key key ...`.
    private static func command(_ name: String, keys: [String]) -> RESPCommand {
        var command = RESPCommand(name)
        for key in keys { command.append(key) }
        return command
    }


    /// `PEXPIRE key ms`: whether the key exists and got the expiry.
    @discardableResult
    public func pexpire(_ key: String, after duration: Duration) async throws(RedisError) -> Bool {
        var command = RESPCommand("PEXPIRE", key)
        command.append(Int(max(1, duration.roundedUpMilliseconds)))
        let reply = try await send(command)
        guard case .integer(let n) = reply else { throw .unexpected(reply, for: "PEXPIRE") }
        return n == 1
    }

    /// `PTTL key`: milliseconds to live; -1 without expiry, -2 when the key does not exist.
    public func pttl(_ key: String) async throws(RedisError) -> Int {
        let reply = try await send(RESPCommand("PTTL", key))
        guard case .integer(let n) = reply else { throw .unexpected(reply, for: "PTTL") }
        return Int(n)
    }

    /// One step of `SCAN cursor [MATCH pattern] [COUNT n]`: the next cursor ("0" when done) and keys.
    public func scan(cursor: String = "0", match pattern: String? = nil, count: Int? = nil) async throws(RedisError) -> (
        cursor: String, keys: [String]
    ) {
        try await scan(cursor: cursor, match: pattern, count: count, on: nil)
    }

    /// `SCAN` on one node of a cluster (nil: as ``send(_:)`` routes it).
    func scan(cursor: String, match pattern: String?, count: Int?, on node: ClusterTopology.Node?) async throws(RedisError) -> (
        cursor: String, keys: [String]
    ) {
        var command = RESPCommand("SCAN", cursor)
        if let pattern {
            command.append("MATCH")
            command.append(pattern)
        }
        if let count {
            command.append("COUNT")
            command.append(count)
        }
        var reply: RESPValue
        if let node, let cluster {
            reply = try await cluster.send(command, to: node)
            if let message = reply.errorMessage { throw RedisError(.serverError, message) }
        } else {
            reply = try await send(command)
        }
        guard case .array(let parts) = reply, parts.count == 2, let next = parts[0].string, case .array(let keys) = parts[1] else {
            throw .unexpected(reply, for: "SCAN")
        }
        return (next, keys.compactMap(\.string))
    }

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: ByteBuffer, to channel: String) async throws(RedisError) -> Int {
        try await publish("PUBLISH", message, to: channel)
    }

    /// `SPUBLISH shardchannel message` (Redis 7): how many subscribers of the channel's shard
    /// received it. On a cluster it goes to the master serving the channel's slot.
    @discardableResult
    public func spublish(_ message: ByteBuffer, to channel: String) async throws(RedisError) -> Int {
        try await publish("SPUBLISH", message, to: channel)
    }

    /// `PUBLISH` or `SPUBLISH`: the number of subscribers that received the message.
    private func publish(_ name: String, _ message: ByteBuffer, to channel: String) async throws(RedisError) -> Int {
        var command = RESPCommand(name, channel)
        command.append(message)
        let reply = try await send(command)
        guard case .integer(let n) = reply else { throw .unexpected(reply, for: name) }
        return Int(n)
    }

    /// Sends `command` to every master of a cluster (one reply each, in the map's order), or to
    /// the server: for per-node commands such as `INFO`. Error replies are returned as values.
    public func sendToEveryMaster(_ command: RESPCommand) async throws(RedisError) -> [RESPValue] {
        guard let cluster else { return [try await send(command)] }
        var replies: [RESPValue] = []
        for master in try await cluster.masters() { replies.append(try await cluster.send(command, to: master)) }
        return replies
    }

    /// `DBSIZE`: the number of keys in the selected database.
    public func dbsize() async throws(RedisError) -> Int {
        if let cluster {
            // Every master's keys.
            var total = 0
            for master in try await cluster.masters() {
                let reply = try await cluster.send(RESPCommand("DBSIZE"), to: master)
                guard case .integer(let n) = reply else { throw .unexpected(reply, for: "DBSIZE") }
                total += Int(n)
            }
            return total
        }
        let reply = try await send(RESPCommand("DBSIZE"))
        guard case .integer(let n) = reply else { throw .unexpected(reply, for: "DBSIZE") }
        return Int(n)
    }

    /// Runs a script by its SHA (`EVALSHA`), sending its source (`EVAL`) when the server does not
    /// have it cached (`NOSCRIPT`), as after a restart or `SCRIPT FLUSH`.
    public func run(_ script: RedisScript, keys: [String], arguments: [ByteBuffer] = []) async throws(RedisError) -> RESPValue {
        func command(_ name: String, _ first: String) -> RESPCommand {
            var command = RESPCommand(name, first)
            command.append(keys.count)
            for key in keys { command.append(key) }
            for argument in arguments { command.append(argument) }
            return command
        }
        do {
            return try await send(command("EVALSHA", script.sha1))
        } catch  where error.serverErrorPrefix == "NOSCRIPT" {
            return try await send(command("EVAL", script.source))
        }
    }
}

/// A Lua script with its SHA-1, for ``RedisClient/run(_:keys:arguments:)``.
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The SHA-1 of the source, in lowercase hex, as `EVALSHA` expects.
    public let sha1: String

    /// Creates a script and computes its SHA-1.
    public init(_ source: String) {
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}

/// The keys of a ``RedisClient/scanKeys(matching:count:)`` walk. Like `SCAN`, it may return a
/// key more than once if the keyspace changes during the walk.
public struct RedisKeyScan: AsyncSequence, Sendable {
    public typealias Element = String
    public typealias Failure = RedisError
    let client: RedisClient
    let pattern: String?
    let count: Int

    public func makeAsyncIterator() -> Iterator {
        Iterator(client: client, pattern: pattern, count: count)
    }

    /// Fetches one SCAN step at a time.
    public struct Iterator: AsyncIteratorProtocol, Sendable {
        public typealias Failure = RedisError
        let client: RedisClient
        let pattern: String?
        let count: Int
        var cursor: String?  // nil once the server said "0"
        var buffered: [String] = []

        init(client: RedisClient, pattern: String?, count: Int) {
            self.client = client
            self.pattern = pattern
            self.count = count
            self.cursor = "0"
        }

        public mutating func next() async throws(RedisError) -> String? {
            while buffered.isEmpty {
                if let cluster = client.cluster {
                    // A cluster: every master in turn, each with its own cursor.
                    if masters == nil { masters = try await cluster.masters() }
                    guard let remaining = masters, let node = remaining.first else { return nil }
                    let current = cursor ?? "0"
                    let step = try await client.scan(cursor: current, match: pattern, count: count, on: node)
                    buffered = step.keys.reversed()
                    if step.cursor == "0" {
                        masters = Array(remaining.dropFirst())
                        cursor = "0"
                    } else {
                        cursor = step.cursor
                    }
                    continue
                }
                guard let current = cursor else { return nil }
                let step = try await client.scan(cursor: current, match: pattern, count: count)
                buffered = step.keys.reversed()
                cursor = step.cursor == "0" ? nil : step.cursor
            }
            return buffered.popLast()
        }

        /// On a cluster, the masters not scanned to the end yet.
        private var masters: [ClusterTopology.Node]?
    }
}
