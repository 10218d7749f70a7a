import HTTPTypes
import IBGE
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Limits that keep every HTTP connection honest (environment variables in parentheses).
public struct ConnectionLimits: Sendable, Hashable {
    /// Longest a request may take to arrive, from its first byte to its end (`HTTP_HEADER_TIMEOUT`):
    /// a half-sent request is cut off after it.
    public var requestReadTimeout: Duration = .seconds(10)
    /// Longest a keep-alive connection may wait for its next request (`HTTP_IDLE_TIMEOUT`).
    public var idleTimeout: Duration = .seconds(60)
    /// Most connections open at once (`MAX_CONNECTIONS`); a connection past it is answered 503
    /// and closed at once.
    public var maximumConnections = 4096
    /// Longest request target, path and query (`HTTP_MAX_URI_BYTES`); longer ones get 414.
    public var maximumURIBytes = 8192
    /// Largest request body (`HTTP_MAX_BODY_BYTES`); a larger `Content-Length` gets 413, a
    /// larger chunked body closes the connection.
    public var maximumBodyBytes = 64 * 1024
    /// Largest header field (and request line) the HTTP decoder buffers; past it the request is
    /// a 400 and the connection closes.
    public var maximumHeaderFieldBytes = 16 * 1024
    /// Largest header section the HTTP decoder buffers.
    public var maximumHeaderBytes = 32 * 1024
    /// Most header fields in a request.
    public var maximumHeaderFields = 100

    /// The defaults.
    public init() {}

    /// How often a connection looks at its deadlines: a timeout fires between its value and
    /// its value plus this.
    var tick: TimeAmount {
        let shortest = min(requestReadTimeout, idleTimeout)
        return TimeAmount(max(shortest / 4, .milliseconds(50)))
    }
}

/// The server's HTTP/1 channel: Hummingbird's, with the connection limits in front of it and
/// the L1 fast path ahead of its HTTP decoder. Counts open connections against
/// ``ConnectionLimits/maximumConnections``.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let responder: HTTPChannelHandler.Responder
    let limits: ConnectionLimits
    let fastPath: L1FastPath?
    let openConnections: OpenConnections
    let recorder: RequestRecorder
    private let template: HTTP1Channel

    init(
        responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits, fastPath: L1FastPath?, openConnections: OpenConnections,
        recorder: RequestRecorder
    ) {
        self.responder = responder
        self.limits = limits
        self.fastPath = fastPath
        self.openConnections = openConnections
        self.recorder = recorder
        self.template = HTTP1Channel(responder: responder)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let open = openConnections.opened()
        let counter = openConnections
        channel.closeFuture.whenComplete { _ in counter.closed() }
        let state = ConnectionState()
        let limits = self.limits
        let fastPath = self.fastPath
        do {
            if open > limits.maximumConnections {
                logger.debug("connection refused: too many open", metadata: ["open": "\(open)", "limit": "\(limits.maximumConnections)"])
                try channel.pipeline.syncOperations.addHandler(RefuseConnectionHandler(recorder: recorder))
            }
            try channel.pipeline.syncOperations.addHandler(RequestStartObserver(state: state))
            // Ahead of the HTTP decoder, which Hummingbird's setup below adds after it.
            if let fastPath {
                try channel.pipeline.syncOperations.addHandler(L1FastPathHandler(fastPath: fastPath, state: state, limits: limits))
            }
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        // Made for this channel, added on its event loop by the setup below.
        let channelHandlers = NIOLoopBound(
            [ConnectionGuard(state: state, limits: limits, recorder: recorder, logger: logger)] as [any RemovableChannelHandler],
            eventLoop: channel.eventLoop)
        let inner = HTTP1Channel(
            responder: responder,
            configuration: .init(
                additionalChannelHandlers: channelHandlers.value,
                idleTimeout: nil,
                httpDecoderConfiguration: .init(
                    maxHeaderFieldSize: limits.maximumHeaderFieldBytes, maxHeaderListSize: limits.maximumHeaderBytes, maxHeaderFieldCount: limits.maximumHeaderFields)
            ))
        return inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await template.handle(value: value, logger: logger)
    }
}

/// The number of open connections, shared by every connection of a server.
final class OpenConnections: Sendable {
    private let count = Atomic<Int>(0)

    /// Counts a new connection; returns how many are open with it.
    func opened() -> Int { count.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Counts a closed connection.
    func closed() { count.wrappingSubtract(1, ordering: .relaxed) }

    /// Connections open now.
    var current: Int { count.load(ordering: .relaxed) }
}

/// First on a connection past ``ConnectionLimits/maximumConnections``: answers 503 once it is
/// active, reads nothing, and closes it. The refusal is recorded as a request (method and path
/// unread: `-`).
final class RefuseConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private static let refusal = "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\nretry-after: 1\r\n\r\n"
    let recorder: RequestRecorder
    private var refused = false

    init(recorder: RequestRecorder) {
        self.recorder = recorder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func refuse(_ context: ChannelHandlerContext) {
        guard !refused else { return }
        refused = true
        recorder.record(method: "-", target: "-", status: 503, bytes: 0, tier: .none, elapsedNanoseconds: 0, remote: context.channel.remoteAddress)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(NIOAny(ByteBuffer(string: Self.refusal))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}

/// What one connection is doing, for its deadlines; shared by its two guard handlers, on its
/// event loop.
final class ConnectionState {
    /// When the first byte of the request being read arrived (nil: none being read).
    var readingSince: NIODeadline?
    /// Requests passed to the router whose answers have not ended (counted from their head, so
    /// a request answered before its body has arrived is not counted twice or left over).
    var outstanding = 0
    /// When the connection last became idle (opened, or its last answer was written).
    var idleSince = NIODeadline.now()
    /// No further request is answered: the connection closes once the outstanding ones are.
    var closing = false
}

/// First in the pipeline, before the HTTP decoder: notes when the bytes of a new request start
/// to arrive, so a half-sent request header is timed from its first byte.
final class RequestStartObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let state: ConnectionState

    init(state: ConnectionState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if state.readingSince == nil { state.readingSince = .now() }
        context.fireChannelRead(data)
    }
}

/// After the HTTP decoder: enforces the request-read and idle timeouts, the URI and body
/// limits, and counts requests in progress. A rejected request is answered here (414, 413)
/// and the connection closed, unless earlier requests are still being answered, in which case
/// it is closed once they are (the answers of a pipelined connection stay in order).
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let state: ConnectionState
    let limits: ConnectionLimits
    let recorder: RequestRecorder
    let logger: Logger
    private var checks: RepeatedTask?
    /// Parts of the current request are dropped (it was rejected).
    private var dropping = false
    private var bodyBytes = 0

    init(state: ConnectionState, limits: ConnectionLimits, recorder: RequestRecorder, logger: Logger) {
        self.state = state
        self.limits = limits
        self.recorder = recorder
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        checks = context.eventLoop.scheduleRepeatedTask(initialDelay: limits.tick, delay: limits.tick) { _ in
            let (handler, context) = loopBound.value
            handler.checkDeadlines(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        checks?.cancel()
        checks = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        checks?.cancel()
        checks = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // A client still reading a large answer is not idle: the clock restarts each time it
        // has drained the answer below the low-water mark (and runs out if it stops reading).
        if context.channel.isWritable { state.idleSince = .now() }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case .head(let request):
            guard !state.closing else {
                dropping = true
                return
            }
            bodyBytes = 0
            if let target = request.path, target.utf8.count > limits.maximumURIBytes {
                reject(
                    context: context, status: .uriTooLong, "the request target is \(target.utf8.count) bytes; at most \(limits.maximumURIBytes) are accepted",
                    dataPath: DataAnswers.isDataPath(target), request: request)
                return
            }
            if let length = request.headerFields[.contentLength], (Int(length) ?? .max) > limits.maximumBodyBytes {
                reject(
                    context: context, status: .contentTooLarge, "the request body may be at most \(limits.maximumBodyBytes) bytes",
                    dataPath: DataAnswers.isDataPath(request.path ?? ""), request: request)
                return
            }
            dropping = false
            state.outstanding += 1
            context.fireChannelRead(data)
        case .body(let bytes):
            guard !dropping else { return }
            bodyBytes += bytes.readableBytes
            guard bodyBytes <= limits.maximumBodyBytes else {
                // A chunked body past the limit, its request already on its way: nothing can
                // answer it in order any more.
                logger.debug("closing a connection whose request body passed the limit")
                dropping = true
                state.closing = true
                context.close(promise: nil)
                return
            }
            context.fireChannelRead(data)
        case .end:
            state.readingSince = nil
            guard !dropping else {
                dropping = false
                return
            }
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        state.outstanding = max(0, state.outstanding - 1)
        guard state.outstanding == 0 else {
            context.write(data, promise: promise)
            return
        }
        state.idleSince = .now()
        guard state.closing else {
            context.write(data, promise: promise)
            return
        }
        // The last answer due before closing: closed once it is written, not before (a close
        // with writes pending drops them).
        let written = promise ?? context.eventLoop.makePromise()
        context.writeAndFlush(data, promise: written)
        closeWhenWritten(written.futureResult, context: context)
    }

    private func closeWhenWritten(_ written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        written.whenComplete { _ in loopBound.value.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request the HTTP decoder cannot read: answered with the JSON error every endpoint
        // uses (Hummingbird's own answer has no body), unless earlier answers are still due.
        guard let parserError = error as? HTTPParserError, !state.closing, state.outstanding == 0 else {
            // Hummingbird answers it (or just closes) once the earlier answers are written; no
            // request read meanwhile may be answered first.
            state.closing = true
            context.fireErrorCaught(error)
            return
        }
        logger.debug("closing a connection whose request could not be parsed", metadata: ["error": "\(parserError)"])
        let tooLarge = parserError == .headerOverflow
        reject(
            context: context, status: tooLarge ? .requestHeaderFieldsTooLarge : .badRequest,
            tooLarge
                ? "the request header is too large (a field may be at most \(limits.maximumHeaderFieldBytes) bytes, the header \(limits.maximumHeaderBytes))"
                : "malformed HTTP request (\(parserError))",
            dataPath: false, request: nil)
    }

    /// Answers a request the limits refuse (when nothing before it is still being answered)
    /// and closes the connection; its remaining parts are dropped. `request` is nil when its
    /// head could not be read.
    private func reject(context: ChannelHandlerContext, status: HTTPResponse.Status, _ message: String, dataPath: Bool, request: HTTPRequest?) {
        dropping = true
        state.closing = true
        guard state.outstanding == 0 else { return }
        // From the request's first byte, when it was seen.
        let start = state.readingSince.map { Int64(truncatingIfNeeded: $0.uptimeNanoseconds) } ?? RequestRecorder.now()
        var body = ByteBuffer()
        body.writeString("{\"error\":\"\(message)\",\"success\":false}")
        var fields: HTTPFields = [
            .contentType: DataAnswers.jsonContentType, .cacheControl: "no-store", .connection: "close",
            .contentLength: String(body.readableBytes),
        ]
        // A data path's errors carry CORS, as all its answers do; admin paths' never.
        if dataPath { fields[.accessControlAllowOrigin] = "*" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
        let bytes = body.readableBytes
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        recorder.record(
            method: request?.method.rawValue ?? "-", target: request?.path ?? "-", status: status.code, bytes: bytes, tier: .none,
            elapsedNanoseconds: RequestRecorder.now() - start, remote: context.channel.remoteAddress)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        closeWhenWritten(written.futureResult, context: context)
    }

    private func checkDeadlines(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        if let since = state.readingSince, now - since >= TimeAmount(limits.requestReadTimeout) {
            logger.debug("closing a connection whose request did not arrive in time")
            context.close(promise: nil)
        } else if state.readingSince == nil, state.outstanding == 0, now - state.idleSince >= TimeAmount(limits.idleTimeout) {
            context.close(promise: nil)
        }
    }
}
