import DequeModule
import NIOCore
import NIOSSL
import RESP
import Synchronization

/// A command on its way to the server, with the promise its reply completes.
struct RedisRequest: Sendable {
    var command: RESPCommand
    var promise: EventLoopPromise<RESPValue>
    var timeout: TimeAmount?
    /// False for (P)SUBSCRIBE and (P)UNSUBSCRIBE: the server confirms them with pushes, not replies.
    var expectsReply = true
}

/// The NIO handler of one Redis connection: encodes commands, decodes replies and matches them
/// to commands in order (Redis answers in the order it was asked). Many commands may be in
/// flight at once. When the connection closes or the stream breaks, every pending command fails.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var id: UInt64
        var promise: EventLoopPromise<RESPValue>
        var timeout: Scheduled<Void>?
    }

    private var pending = Deque<Pending>()
    private var cumulation: ByteBuffer?
    private let decoder: RESPDecoder
    private var failure: RedisError?
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var context: ChannelHandlerContext?
    private var nextID: UInt64 = 0

    private let stats: ConnectionStats

    init(decoderLimits: RESPDecoder.Limits, stats: ConnectionStats, onPush: (@Sendable (RESPValue) -> Void)?) {
        self.decoder = RESPDecoder(limits: decoderLimits)
        self.stats = stats
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        failAll(RedisError(.connectionClosed, "connection handler removed"))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            request.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        guard request.expectsReply else {
            var out = context.channel.allocator.buffer(capacity: request.command.body.readableBytes + 16)
            request.command.encode(into: &out)
            context.write(wrapOutboundOut(out), promise: promise)
            request.promise.succeed(.null)
            return
        }
        nextID &+= 1
        let id = nextID
        var entry = Pending(id: id, promise: request.promise, timeout: nil)
        if let timeout = request.timeout {
            entry.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                self?.commandTimedOut(id: id, command: request.command, after: timeout)
            }
        }
        pending.append(entry)
        stats.pending.add(1, ordering: .relaxed)
        var out = context.channel.allocator.buffer(capacity: request.command.body.readableBytes + 16)
        request.command.encode(into: &out)
        context.write(wrapOutboundOut(out), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffer = cumulation, buffer.readableBytes > 0 {
            cumulation = nil  // keep the buffer uniquely referenced while appending
            buffer.writeBuffer(&incoming)
            incoming = buffer
        }
        do {
            while let value = try decoder.decode(from: &incoming) {
                deliver(value, context: context)
            }
        } catch {
            fatal(RedisError(.protocolError, "\(error)"), context: context)
            return
        }
        if incoming.readableBytes > 0 {
            incoming.discardReadBytes()
            cumulation = incoming
        } else {
            cumulation = nil
        }
    }

    private func deliver(_ value: RESPValue, context: ChannelHandlerContext) {
        if case .push = value {
            onPush?(value)
            return
        }
        // A subscribed RESP2 connection sends messages as plain arrays, with no command waiting.
        if pending.isEmpty, let onPush, case .array = value {
            onPush(value)
            return
        }
        guard let entry = pending.popFirst() else {
            fatal(RedisError(.protocolError, "reply with no command waiting for it: \(value)"), context: context)
            return
        }
        stats.pending.subtract(1, ordering: .relaxed)
        entry.timeout?.cancel()
        entry.promise.succeed(value)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(failure ?? RedisError(.connectionClosed, "the connection to Redis closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let typeName = String(reflecting: type(of: error))
        if error is NIOSSLError || error is BoringSSLError || typeName.contains("NIOSSL") || typeName.contains("BoringSSL") {
            fatal(
                RedisError(.handshakeFailed, "TLS failed (the server's certificate is not trusted, or the server does not speak TLS): \(error)"),
                context: context)
        } else {
            fatal(RedisError(.connectionClosed, "connection error: \(error)"), context: context)
        }
    }

    private func commandTimedOut(id: UInt64, command: RESPCommand, after timeout: TimeAmount) {
        guard let context, let first = pending.first, first.id <= id else { return }
        // Replies come in order: a command stuck behind a slow one can only be failed by
        // giving up on the connection, which fails everything queued behind it too.
        fatal(RedisError(.commandTimeout, "\(command.name) got no reply within \(timeout.nanoseconds / 1_000_000) ms"), context: context)
    }

    private func fatal(_ error: RedisError, context: ChannelHandlerContext) {
        if failure == nil { failure = error }
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if failure == nil { failure = error }
        while let entry = pending.popFirst() {
            stats.pending.subtract(1, ordering: .relaxed)
            entry.timeout?.cancel()
            entry.promise.fail(error)
        }
    }
}

/// Counters shared by a connection's handler (which updates them on the event loop) and the
/// connection (which reads them from anywhere).
final class ConnectionStats: Sendable {
    /// Commands written and not answered yet.
    let pending = Atomic<Int>(0)
}
