public import Logging
public import NIOCore
public import RESP
import Synchronization

/// One connection to a Redis server, ready for commands: connected, and through its handshake
/// (`HELLO 3`, or RESP2 with `AUTH` when the server refuses it, then `SELECT`).
///
/// Commands may be sent from any task, concurrently: they are pipelined on the connection and
/// their replies matched in order. A caller whose task is cancelled stops waiting at once; its
/// reply is read and dropped, and the connection stays usable.
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
    /// The handler, called directly on the event loop.
    private let handler: NIOLoopBound<RedisChannelHandler>
    private let nextID = Atomic<UInt64>(0)

    private struct Outbox {
        var requests: [RedisRequest] = []
        var drainScheduled = false
    }

    init(channel: any Channel, handler: NIOLoopBound<RedisChannelHandler>, protocolVersion: Int, commandTimeout: TimeAmount, stats: ConnectionStats) {
        self.channel = channel
        self.handler = handler
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

    // MARK: - Commands

    /// Sends a command and waits for its reply. An error reply is returned as a value
    /// (``RESPValue/simpleError(_:)``); use ``RedisClient`` for typed commands.
    ///
    /// - Throws: ``RedisError/Code/cancelled`` when the task is cancelled first (the reply is
    ///   dropped when it comes), or the connection's failure.
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPValue {
        let request = makeRequest(command)
        enqueue(CollectionOfOne(request))
        do {
            return try await withTaskCancellationHandler {
                try await request.promise.futureResult.get()
            } onCancel: {
                self.cancel(request.id)
            }
        } catch {
            throw Self.redisError(error)
        }
    }

    /// Sends several commands in one write (one round trip) and returns their replies in order.
    /// Error replies are returned as values, not thrown.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [RESPValue] {
        let requests = commands.map(makeRequest)
        enqueue(requests)
        return try await wait(for: requests)
    }

    /// Writes a command that the server answers with pushes rather than a reply
    /// (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBE forms).
    func sendWithoutReply(_ command: RESPCommand) {
        var request = makeRequest(command)
        request.expectsReply = false
        request.timeout = nil
        enqueue(CollectionOfOne(request))
    }

    /// Closes the connection; pending commands fail with ``RedisError/Code/connectionClosed``.
    public func close() async {
        try? await channel.close()
    }

    // MARK: - Internals

    private func makeRequest(_ command: RESPCommand) -> RedisRequest {
        RedisRequest(
            id: nextID.add(1, ordering: .relaxed).newValue, command: command, promise: channel.eventLoop.makePromise(), timeout: commandTimeout)
    }

    private func wait(for requests: [RedisRequest]) async throws(RedisError) -> [RESPValue] {
        do {
            return try await withTaskCancellationHandler {
                var replies: [RESPValue] = []
                replies.reserveCapacity(requests.count)
                for request in requests { replies.append(try await request.promise.futureResult.get()) }
                return replies
            } onCancel: {
                for request in requests { self.cancel(request.id) }
            }
        } catch {
            throw Self.redisError(error)
        }
    }

    /// Drops the caller of command `id` (see ``RedisChannelHandler/cancel(id:)``). Goes
    /// through the event loop after any drain already scheduled, so the command is known there.
    private func cancel(_ id: UInt64) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.cancel(id: id) }
    }

    private static func redisError(_ error: any Error) -> RedisError {
        error as? RedisError ?? RedisError(.connectionClosed, "\(error)")
    }

    private func enqueue(_ requests: some Collection<RedisRequest>) {
        // On the connection's own event loop with nothing in flight, nothing queued, and one
        // reply in the last read (a caller that waits for each reply in turn, as with NIO's
        // executor takeover), there is no one to share a write with: write and flush now,
        // saving a turn of the loop. Concurrent callers (many replies a read) batch instead.
        if channel.eventLoop.inEventLoop, stats.pending.load(ordering: .relaxed) == 0,
            stats.lastReadReplies.load(ordering: .relaxed) <= 1,
            outbox.withLock({ $0.requests.isEmpty && !$0.drainScheduled })
        {
            handler.value.send(requests)
            return
        }
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
        handler.value.send(batch)
    }
}
