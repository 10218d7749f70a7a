import Foundation
import HTTPTypes
import HummingbirdCore
import IBGE
import Logging
import NIOCore
import NIOHTTPTypes
import Prometheus
import TieredCache

/// Answers L1 hits on the event loop, below the router: a GET or HEAD of a single-entry
/// localidades path whose answer (plain, or its gzip variant when the client accepts gzip) is
/// in L1 and not due for an eager refresh. The request is resolved to its cache key by the
/// same code as the router's (``DataRoutes/localidadesRequest(_:service:)``), and the answer
/// written by the same ``DataAnswers``, so both give the same bytes; anything else (a miss, a
/// refresh due, a joined or mirrored path, `Connection: close`, a body) goes to the router.
final class L1FastPath: Sendable {
    let service: IBGEService
    let answers: DataAnswers
    let logger: Logger
    /// Requests answered here (`ibge_cache_http_fast_path_answers_total`).
    let answered: Prometheus.Counter

    init(service: IBGEService, answers: DataAnswers, registry: PrometheusCollectorRegistry, logger: Logger) {
        self.service = service
        self.answers = answers
        self.logger = logger
        self.answered = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "ibge_cache", subsystem: "http", metricName: "fast_path_answers", unitName: "total",
                helpText: "Requests answered from L1 below the router (the L1 fast path)."))
    }

    /// The answer to `request` from L1, or nil when the router must answer it.
    func answer(_ request: HTTPRequest) -> DataAnswers.Answer? {
        guard request.method == .get || request.method == .head, let target = request.path,
            target.utf8.starts(with: "/api/v1/localidades".utf8)
        else { return nil }
        let fields = request.headerFields
        guard fields[.contentLength] == nil, fields[.transferEncoding] == nil else { return nil }
        if let connection = fields[.connection], connection.lowercased().contains("close") { return nil }
        guard let parsed = try? DataRoutes.localidadesRequest(URI(target), service: service), IBGEService.isSingleEntry(parsed) else {
            return nil
        }
        let memory = service.cache.memory
        let key = parsed.cacheKey
        guard let (plain, refreshDue) = memory.lookupValue(key, consumeRefresh: false), !refreshDue else { return nil }
        var gzip: CachedValue?
        if plain.value.readableBytes >= DataAnswers.gzipMinimumBytes, DataAnswers.acceptsGzip(fields[.acceptEncoding]) {
            guard let (variant, _) = memory.lookupValue(DataAnswers.gzipKey(key, plainTag: plain.tag), consumeRefresh: false) else {
                return nil
            }
            gzip = variant
        }
        if logger.logLevel <= .debug {
            logger.debug("Request", metadata: ["hb.request.path": "\(target)", "hb.request.method": "\(request.method.rawValue)", "fast_path": "l1"])
        }
        answered.increment()
        return answers.answer(requestFields: fields, plain: plain, gzip: gzip, now: memory.clock.nowMilliseconds())
    }
}

/// The channel handler of ``L1FastPath``, between the HTTP codec and Hummingbird. While a
/// request it passed on is being answered by the router, later requests on the connection go
/// to the router too, so a pipelined connection's answers keep their order.
final class L1FastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let fastPath: L1FastPath
    /// The current request's parts go to the router.
    private var forwarding = false
    /// Requests passed to the router whose answers have not ended.
    private var atRouter = 0
    /// The answer to the current request, written when its end arrives.
    private var pending: DataAnswers.Answer?
    private var date = HTTPDateCache()

    init(fastPath: L1FastPath) { self.fastPath = fastPath }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            // Not while the client is not reading its answers: the router's channel then stops
            // reading, where answering here would queue answers without bound.
            if atRouter == 0, context.channel.isWritable, let answer = fastPath.answer(request) {
                forwarding = false
                pending = answer
                return
            }
            forwarding = true
            atRouter += 1
            context.fireChannelRead(data)
        case .body:
            if forwarding { context.fireChannelRead(data) }
        case .end:
            if forwarding {
                forwarding = false
                context.fireChannelRead(data)
            } else if let answer = pending {
                pending = nil
                write(answer, context: context)
            }
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { atRouter = max(0, atRouter - 1) }
        context.write(data, promise: promise)
    }

    private func write(_ answer: DataAnswers.Answer, context: ChannelHandlerContext) {
        var fields = answer.fields
        // As Hummingbird adds them to the router's answers.
        fields.append(HTTPField(name: .date, value: date.now()))
        fields.append(HTTPField(name: .server, value: DataAnswers.serverName))
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: fields))), promise: nil)
        if answer.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(answer.body)), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// The `Date` header's value, formatted once per second (RFC 9110 IMF-fixdate, as Hummingbird's).
struct HTTPDateCache {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var seconds = time(nil)
        guard seconds != second else { return text }
        second = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        text =
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        return text
    }
}
