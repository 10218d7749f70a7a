import NIOCore
import RESP

/// Where a command's key is, to route it to the node serving the key's slot in a cluster.
///
/// Commands not listed here (`PING`, `INFO`, `TIME`, `PUBLISH`, or ones this table does not
/// know) go to any master; one that does carry a key is then redirected (`MOVED`) and followed.
enum CommandKeys {
    /// Commands whose first key is their first argument.
    private static let firstArgument: Set<String> = [
        "GET", "SET", "SETNX", "SETEX", "PSETEX", "GETSET", "GETDEL", "GETEX", "INCR", "INCRBY", "DECR", "DECRBY", "APPEND",
        "STRLEN", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "TTL", "PTTL", "PERSIST", "TYPE", "DEL", "UNLINK", "EXISTS",
        "MGET", "MSET", "TOUCH", "DUMP", "RESTORE", "HGET", "HSET", "HDEL", "HGETALL", "HINCRBY", "LPUSH", "RPUSH", "LRANGE",
        "SADD", "SREM", "SMEMBERS", "ZADD", "ZRANGE", "ZREM", "WATCH", "COPY", "RENAME",
        // A sharded channel is in the slot of its name.
        "SPUBLISH",
    ]
    /// Scripts and functions: `EVAL script numkeys key ...`.
    private static let numberOfKeysSecond: Set<String> = ["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"]

    /// Commands without effects: safe to send again when their reply was lost.
    private static let readOnly: Set<String> = [
        "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN", "HGET", "HGETALL", "LRANGE", "SMEMBERS", "ZRANGE", "SCAN", "DBSIZE",
        "PING", "INFO", "TIME", "ROLE", "CLUSTER", "DUMP", "EVAL_RO", "EVALSHA_RO", "FCALL_RO",
    ]

    /// Whether `command` has no effect (sending it twice is the same as once).
    static func isReadOnly(_ command: RESPCommand) -> Bool {
        guard let nameBytes = command.argument(0), nameBytes.count <= 16 else { return false }
        return readOnly.contains(String(decoding: nameBytes, as: UTF8.self).uppercased())
    }

    /// The slot of the command's first key, or nil when it has none this table knows.
    static func slot(of command: RESPCommand) -> HashSlot? {
        guard let nameBytes = command.argument(0), nameBytes.count <= 16 else { return nil }
        let name = String(decoding: nameBytes, as: UTF8.self).uppercased()
        if firstArgument.contains(name) {
            return command.argument(1).map { HashSlot(key: $0) }
        }
        if numberOfKeysSecond.contains(name) {
            guard let count = command.argument(2).flatMap({ Int(String(decoding: $0, as: UTF8.self)) }), count > 0 else { return nil }
            return command.argument(3).map { HashSlot(key: $0) }
        }
        return nil
    }
}
