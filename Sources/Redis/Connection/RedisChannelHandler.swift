import NIOCore
import NIOSSL
import RESP
import Synchronization

/// A command on its way to the server, with the promise its reply completes.
struct RedisRequest: Sendable {
    /// The connection's number for it, to cancel it by.
    var id: UInt64
    var command: RESPCommand
    var promise: EventLoopPromise<RESPValue>
    /// How long the reply may take before the connection is given up (nil: no limit).
    var timeout: TimeAmount?
    /// False for (P)SUBSCRIBE and (P)UNSUBSCRIBE: the server confirms them with pushes, not replies.
    var expectsReply = true
}

/// The NIO handler of one Redis connection: encodes commands, decodes replies, and lets a
/// ``RedisConnectionStateMachine`` decide what each event means (handshake steps, which caller a
/// reply belongs to, pushes, cancellations, timeouts, the close). It holds no state of its
/// own beyond the decoder's buffer and one deadline check.
///
/// ``RedisConnection`` calls ``send(_:)`` and ``cancel(id:)`` directly on the event loop
/// (valkey-swift does the same): commands never travel the pipeline as `NIOAny`.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>
    private let decoder: RESPDecoder
    private var cumulation: ByteBuffer?
    /// Bytes the frame at the head of `cumulation` needs at least before it is parsed again.
    private var needed = 0
    /// Most bytes of replies held while a reply is incomplete; past it the connection closes.
    private let maximumBufferedBytes: Int
    private var context: ChannelHandlerContext?
    /// Completed with the protocol version when the handshake ends, or failed.
    private let handshake: EventLoopPromise<Int>
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private let stats: ConnectionStats
    /// How often late replies are looked for while commands are in flight (a quarter of the
    /// command timeout: a late reply is noticed within 1.25 × the timeout).
    private let deadlineCheckPeriod: TimeAmount
    private var deadlineCheck: Scheduled<Void>?

    init(
        handshake: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>.Handshake, completing promise: EventLoopPromise<Int>,
        commandTimeout: TimeAmount, decoderLimits: RESPDecoder.Limits, maximumBufferedBytes: Int, stats: ConnectionStats,
        onPush: (@Sendable (RESPValue) -> Void)?
    ) {
        self.maximumBufferedBytes = maximumBufferedBytes
        self.machine = RedisConnectionStateMachine(handshake: handshake, unsolicitedArraysArePushes: onPush != nil)
        self.handshake = promise
        self.deadlineCheckPeriod = max(.milliseconds(1), .nanoseconds(commandTimeout.nanoseconds / 4))
        self.decoder = RESPDecoder(limits: decoderLimits)
        self.stats = stats
        self.onPush = onPush
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { startHandshake(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        close(RedisError(.connectionClosed, "connection handler removed"), context: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        startHandshake(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        close(RedisError(.connectionClosed, "the connection to Redis closed"), context: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let typeName = String(reflecting: type(of: error))
        if error is NIOSSLError || error is BoringSSLError || typeName.contains("NIOSSL") || typeName.contains("BoringSSL") {
            close(
                RedisError(.handshakeFailed, "TLS failed (the server's certificate is not trusted, or the server does not speak TLS): \(error)"),
                context: context)
        } else {
            close(RedisError(.connectionClosed, "connection error: \(error)"), context: context)
        }
    }

    // MARK: - Commands out (on the event loop)

    /// Writes the commands and flushes once.
    func send(_ requests: some Collection<RedisRequest>) {
        guard let context else {
            for request in requests { request.promise.fail(RedisError(.connectionClosed, "the connection to Redis is closed")) }
            return
        }
        let now = context.eventLoop.now.uptimeNanoseconds
        var wrote = false
        for request in requests {
            let deadline = request.timeout.map { now &+ UInt64(max(0, $0.nanoseconds)) } ?? .max
            switch machine.send(id: request.id, promise: request.promise, expectsReply: request.expectsReply, deadline: deadline) {
            case .fail(let error):
                request.promise.fail(error)
            case .writeWithoutReply:
                context.write(wrapOutboundOut(encode(request.command, context: context)), promise: nil)
                request.promise.succeed(.null)
                wrote = true
            case .write:
                context.write(wrapOutboundOut(encode(request.command, context: context)), promise: nil)
                wrote = true
            }
        }
        if wrote { context.flush() }
        armDeadlineCheck(context: context)
        updateStats()
    }

    /// Drops the caller of command `id`: it fails at once with ``RedisError/Code/cancelled``,
    /// and its reply is read and dropped when it comes.
    func cancel(id: UInt64) {
        if let caller = machine.cancel(id: id) {
            caller.fail(RedisError(.cancelled, "the caller stopped waiting; its reply will be dropped"))
        }
    }

    private func encode(_ command: RESPCommand, context: ChannelHandlerContext) -> ByteBuffer {
        var out = context.channel.allocator.buffer(capacity: command.body.readableBytes + 16)
        command.encode(into: &out)
        return out
    }

    // MARK: - Replies in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffer = cumulation, buffer.readableBytes > 0 {
            cumulation = nil  // keep the buffer uniquely referenced while appending
            buffer.writeBuffer(&incoming)
            incoming = buffer
        }
        guard incoming.readableBytes <= maximumBufferedBytes else {
            close(
                RedisError(.protocolError, "a reply passed \(maximumBufferedBytes) bytes before it was whole (RedisConfiguration.maximumBufferedBytes)"),
                context: context)
            return
        }
        var replies = 0
        do {
            while !machine.isClosed, incoming.readableBytes >= needed, let value = try decoder.decode(from: &incoming, needing: &needed) {
                perform(machine.received(value), context: context)
                replies += 1
            }
            stats.lastReadReplies.store(replies, ordering: .relaxed)
        } catch {
            close(RedisError(.protocolError, "\(error)"), context: context)
            return
        }
        if incoming.readableBytes > 0 {
            incoming.discardReadBytes()
            cumulation = incoming
        } else {
            cumulation = nil
        }
        updateStats()
    }

    private func perform(_ action: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>.ReceiveAction, context: ChannelHandlerContext) {
        switch action {
        case .none, .discard:
            break
        case .handshake(let step):
            perform(step, context: context)
        case .succeed(_, let promise, let value):
            promise.succeed(value)
        case .push(let value):
            onPush?(value)
        case .close(let error, let failing):
            finish(error, failing: failing, duringHandshake: false, context: context)
        }
    }

    private func perform(_ step: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>.HandshakeAction, context: ChannelHandlerContext) {
        switch step {
        case .write(let command):
            context.writeAndFlush(wrapOutboundOut(encode(command, context: context)), promise: nil)
        case .completed(let version):
            handshake.succeed(version)
        case .failed(let error):
            finish(error, failing: [], duringHandshake: true, context: context)
        }
    }

    // MARK: - Timeouts and closing

    private func startHandshake(context: ChannelHandlerContext) {
        if let step = machine.channelActive() { perform(step, context: context) }
    }

    /// While commands with a deadline are in flight, looks for late replies every
    /// `deadlineCheckPeriod` (one repeating check per connection, not a timer per command).
    private func armDeadlineCheck(context: ChannelHandlerContext) {
        guard deadlineCheck == nil, machine.hasDeadlines else { return }
        deadlineCheck = context.eventLoop.assumeIsolated().scheduleTask(in: deadlineCheckPeriod) { [weak self] in
            self?.checkDeadlines()
        }
    }

    private func checkDeadlines() {
        let error = RedisError(
            .commandTimeout, "a command got no reply within its timeout (\(machine.inFlight) in flight; the connection is closed)")
        deadlineCheck = nil
        if let action = machine.expired(now: (context?.eventLoop.now ?? .now()).uptimeNanoseconds, error: error) {
            finish(error, failing: action.failing, duringHandshake: action.duringHandshake, context: context)
        } else if let context {
            armDeadlineCheck(context: context)
        }
    }

    private func close(_ error: RedisError, context: ChannelHandlerContext?) {
        let action = machine.close(error)
        finish(error, failing: action.failing, duringHandshake: action.duringHandshake, context: context)
    }

    /// Fails the callers and the handshake (once each), stops the deadline check, closes the channel.
    private func finish(_ error: RedisError, failing: [EventLoopPromise<RESPValue>], duringHandshake: Bool, context: ChannelHandlerContext?) {
        deadlineCheck?.cancel()
        deadlineCheck = nil
        for promise in failing { promise.fail(error) }
        if duringHandshake { handshake.fail(error) }
        updateStats()
        context?.close(promise: nil)
    }

    private func updateStats() {
        stats.pending.store(machine.inFlight, ordering: .relaxed)
    }
}

/// Counters shared by a connection's handler (which updates them on the event loop) and the
/// connection (which reads them from anywhere).
final class ConnectionStats: Sendable {
    /// Commands written and not answered yet.
    let pending = Atomic<Int>(0)
    /// Values the last read delivered: one means a caller waiting for each reply in turn
    /// (nobody to share a write with), many means concurrent callers.
    let lastReadReplies = Atomic<Int>(0)
}
