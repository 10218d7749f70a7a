public import Redis

/// The next message of a subscription, or nil if none arrives within `limit`.
public func nextMessage(_ iterator: inout AsyncStream<RedisMessage>.Iterator, within limit: Duration = .seconds(10)) async -> RedisMessage? {
    let box = IteratorBox(iterator)
    let message = await withTaskGroup(of: RedisMessage?.self) { group in
        group.addTask { await box.next() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
    iterator = box.iterator
    return message
}

/// Lets a child task advance an iterator the test owns.
private final class IteratorBox: @unchecked Sendable {
    var iterator: AsyncStream<RedisMessage>.Iterator
    init(_ iterator: AsyncStream<RedisMessage>.Iterator) { self.iterator = iterator }
    func next() async -> RedisMessage? { await iterator.next() }
}

/// The `calls=` of `cmdstat_<command>` in an `INFO commandstats` text (0 when absent): how
/// many times a node ran a command since its statistics were reset.
public func commandCalls(_ command: String, in stats: String) -> Int {
    let prefix = "cmdstat_\(command):calls="
    guard let line = stats.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix(prefix) }) else { return 0 }
    return Int(line.dropFirst(prefix.count).prefix { $0.isNumber }) ?? 0
}
