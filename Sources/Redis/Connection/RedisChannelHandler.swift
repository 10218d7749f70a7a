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

/// Asks the handler to drop a command's caller (an outbound user event): the caller fails at
/// once with ``RedisError/Code/cancelled``, the reply is read and dropped when it comes.
struct RedisCancel: Sendable {
    var id: UInt64
}

/// The NIO handler of one Redis connection: encodes commands, decodes replies, and lets a
/// ``RedisConnectionStateMachine`` decide what each event means (handshake steps, which caller a
/// reply belongs to, pushes, cancellations, timeouts, the close). It holds no state of its
/// own beyond the decoder's buffer and the timers.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private var machine: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>
    private let decoder: RESPDecoder
    private var cumulation: ByteBuffer?
    private var timers: [UInt64: Scheduled<Void>] = [:]
    private var context: ChannelHandlerContext?
    /// Completed with the protocol version when the handshake ends, or failed.
    private let handshake: EventLoopPromise<Int>
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private let stats: ConnectionStats

    init(
        handshake: RedisConnectionStateMachine<EventLoopPromise<RESPValue>>.Handshake, completing promise: EventLoopPromise<Int>,
        decoderLimits: RESPDecoder.Limits, stats: ConnectionStats, onPush: (@Sendable (RESPValue) -> Void)?
    ) {
        self.machine = RedisConnectionStateMachine(handshake: handshake, unsolicitedArraysArePushes: onPush != nil)
        self.handshake = promise
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

    // MARK: - Commands out

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        switch machine.send(id: request.id, promise: request.promise, expectsReply: request.expectsReply) {
        case .fail(let error):
            request.promise.fail(error)
            promise?.fail(error)
            return
        case .writeWithoutReply:
            context.write(wrapOutboundOut(encode(request.command, context: context)), promise: promise)
            request.promise.succeed(.null)
        case .write:
            if let timeout = request.timeout {
                let id = request.id
                let name = request.command.name
                timers[id] = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                    self?.timedOut(id: id, command: name, after: timeout)
                }
            }
            context.write(wrapOutboundOut(encode(request.command, context: context)), promise: promise)
        }
        updateStats()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let cancel = event as? RedisCancel else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        if let caller = machine.cancel(id: cancel.id) {
            caller.fail(RedisError(.cancelled, "the caller stopped waiting; its reply will be dropped"))
        }
        promise?.succeed()
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
        do {
            while !machine.isClosed, let value = try decoder.decode(from: &incoming) {
                perform(machine.received(value), context: context)
            }
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
        case .none:
            break
        case .handshake(let step):
            perform(step, context: context)
        case .succeed(let id, let promise, let value):
            timers.removeValue(forKey: id)?.cancel()
            promise.succeed(value)
        case .discard(let id):
            timers.removeValue(forKey: id)?.cancel()
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

    private func timedOut(id: UInt64, command: String, after timeout: TimeAmount) {
        timers[id] = nil
        // Replies come in order: a command stuck behind a slow one can only be failed by
        // giving up on the connection, which fails everything queued behind it too.
        let error = RedisError(.commandTimeout, "\(command) got no reply within \(timeout.nanoseconds / 1_000_000) ms")
        guard let action = machine.timedOut(id: id, error: error) else { return }
        finish(error, failing: action.failing, duringHandshake: action.duringHandshake, context: context)
    }

    private func close(_ error: RedisError, context: ChannelHandlerContext?) {
        let action = machine.close(error)
        finish(error, failing: action.failing, duringHandshake: action.duringHandshake, context: context)
    }

    /// Fails the callers and the handshake (once each), cancels the timers, closes the channel.
    private func finish(_ error: RedisError, failing: [EventLoopPromise<RESPValue>], duringHandshake: Bool, context: ChannelHandlerContext?) {
        for timer in timers.values { timer.cancel() }
        timers = [:]
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
}
