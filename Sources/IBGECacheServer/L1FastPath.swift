import Foundation
import HTTPTypes
import HummingbirdCore
import IBGE
import NIOCore
import Prometheus
import Synchronization
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
    /// Records each answer (metrics, access log).
    let recorder: RequestRecorder
    /// Requests answered here (`ibge_cache_http_fast_path_answers_total`).
    let answered: Prometheus.Counter
    /// Request targets already resolved to the cache key of a single-entry request (parsing a
    /// target costs more than the rest of a hit). Emptied when full, so any mix of targets
    /// keeps it bounded.
    private let keys = Mutex<[String: String]>([:])
    static let remembersTargets = 4096
    static let longestRememberedTarget = 256

    init(service: IBGEService, answers: DataAnswers, registry: PrometheusCollectorRegistry, recorder: RequestRecorder) {
        self.service = service
        self.answers = answers
        self.recorder = recorder
        self.answered = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "ibge_cache", subsystem: "http", metricName: "fast_path_answers", unitName: "total",
                helpText: "Requests answered from L1 below the router (the L1 fast path)."))
    }

    /// The cache key of the single-entry localidades request `target` names, or nil when it
    /// names anything else (the router answers it).
    func cacheKey(_ target: String) -> String? {
        if let key = keys.withLock({ $0[target] }) { return key }
        guard target.utf8.starts(with: "/api/v1/localidades".utf8),
            let parsed = try? DataRoutes.localidadesRequest(URI(target), service: service), IBGEService.isSingleEntry(parsed)
        else { return nil }
        let key = parsed.cacheKey
        // Long targets (a query of parameters the answer ignores, say) are parsed each time.
        guard target.utf8.count <= Self.longestRememberedTarget else { return key }
        keys.withLock { keys in
            if keys.count >= Self.remembersTargets { keys.removeAll(keepingCapacity: true) }
            keys[target] = key
        }
        return key
    }

    /// The answer from L1 to a GET or HEAD of `target`, and whether it is a stale value the
    /// fail-safe keeps in L1 while the source fails; nil when the router must answer it.
    func answer(target: String, isHead: Bool, acceptEncoding: String?, ifNoneMatch: String?) -> (answer: DataAnswers.Answer, stale: Bool)? {
        guard let key = cacheKey(target) else { return nil }
        let memory = service.cache.memory
        guard let (plain, refreshDue) = memory.lookupValue(key, consumeRefresh: false), !refreshDue else { return nil }
        var gzip: CachedValue?
        if plain.value.readableBytes >= DataAnswers.gzipMinimumBytes, DataAnswers.acceptsGzip(acceptEncoding) {
            guard let (variant, _) = memory.lookupValue(DataAnswers.gzipKey(key, plainTag: plain.tag), consumeRefresh: false) else {
                return nil
            }
            gzip = variant
        }
        answered.increment()
        return (answers.answer(ifNoneMatch: ifNoneMatch, plain: plain, gzip: gzip, now: memory.clock.nowMilliseconds()), plain.tier == .stale)
    }
}

/// The channel handler of ``L1FastPath``: first on the connection's bytes, ahead of the HTTP
/// decoder. It reads each request head itself (``RequestHeadScanner``) and answers an L1 hit
/// by writing the answer's bytes, as NIO's encoder would write the router's; every other
/// request goes to the decoder, and so to Hummingbird, as the bytes it arrived as.
///
/// - While a request it passed on is being answered by the router, later requests go to the
///   router too, so a pipelined connection's answers keep their order.
/// - A request it cannot frame (a body, a byte it does not accept, a head past the decoder's
///   limits) hands the rest of the connection to the decoder.
/// - Not while the client is not reading its answers: the router's channel then stops reading,
///   where answering here would queue answers without bound.
final class L1FastPathHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let fastPath: L1FastPath
    let state: ConnectionState
    let scanner: RequestHeadScanner
    /// Past this many bytes without the end of a head, the decoder takes over (and refuses it).
    let maximumHeadBytes: Int
    /// The start of a head whose end has not arrived.
    private var held: ByteBuffer?
    /// Bytes of `held` already searched for the head's end.
    private var scanned = 0
    /// Every byte goes to the decoder from now on.
    private var passthrough = false
    /// Answers written since the last flush.
    private var unflushed = false
    private var date = HTTPDateCache()

    init(fastPath: L1FastPath, state: ConnectionState, limits: ConnectionLimits) {
        self.fastPath = fastPath
        self.state = state
        self.scanner = RequestHeadScanner(
            maximumTargetBytes: limits.maximumURIBytes, maximumFields: limits.maximumHeaderFields,
            maximumFieldBytes: limits.maximumHeaderFieldBytes, maximumHeadBytes: limits.maximumHeaderBytes)
        self.maximumHeadBytes = limits.maximumHeaderBytes + limits.maximumHeaderFieldBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !passthrough, !state.closing else {
            passthrough = true
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if var earlier = held {
            held = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        while bytes.readableBytes > 0 {
            switch scanner.scan(bytes, from: scanned) {
            case .incomplete(let searched):
                if bytes.readableBytes > maximumHeadBytes {
                    handOver(bytes, context: context)
                } else {
                    scanned = searched
                    held = bytes
                }
                return
            case .unframed:
                handOver(bytes, context: context)
                return
            case .head(let head):
                scanned = 0
                // A whole head is here, so `readSlice` cannot fail.
                guard let request = bytes.readSlice(length: head.length) else { return }
                let start = RequestRecorder.now()
                if head.eligible, state.outstanding == 0, !state.closing, context.channel.isActive, isWritable(context),
                    let answer = fastPath.answer(
                        target: head.target, isHead: head.isHead, acceptEncoding: head.acceptEncoding, ifNoneMatch: head.ifNoneMatch)
                {
                    write(answer.answer, isHead: head.isHead, context: context)
                    let notModified = answer.answer.status == .notModified
                    fastPath.recorder.recordFastPath(
                        method: head.isHead ? "HEAD" : "GET", target: head.target, notModified: notModified, stale: answer.stale,
                        bytes: head.isHead || notModified ? 0 : answer.answer.body.readableBytes, elapsedNanoseconds: RequestRecorder.now() - start,
                        remote: context.channel.remoteAddress)
                    state.idleSince = .now()
                    state.readingSince = nil
                } else {
                    // A whole request without a body: the decoder reads it at once, and the
                    // router has it (``ConnectionState/outstanding`` counts it) before the
                    // next request is looked at.
                    context.fireChannelRead(wrapInboundOut(request))
                    if !head.keepsConnection || state.closing {
                        // The decoder reads no further requests as HTTP/1.1 keep-alive ones.
                        if bytes.readableBytes > 0 { handOver(bytes, context: context) } else { passthrough = true }
                        return
                    }
                }
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if unflushed {
            unflushed = false
            context.flush()
        }
        // A part of a head held back is a request being read: its timeout runs.
        if held != nil, state.readingSince == nil { state.readingSince = .now() }
        context.fireChannelReadComplete()
    }

    /// Whether the client reads its answers: the channel is writable, or becomes so once the
    /// answers written in this read are flushed (a large answer alone may pass the high-water
    /// mark before the kernel has taken any of it).
    private func isWritable(_ context: ChannelHandlerContext) -> Bool {
        if context.channel.isWritable { return true }
        guard unflushed else { return false }
        unflushed = false
        context.flush()
        return context.channel.isWritable
    }

    private func handOver(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        passthrough = true
        held = nil
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    /// Writes an answer as NIO's HTTP/1.1 encoder writes the router's: the status line, the
    /// fields in order, then `Date` and `Server` (as Hummingbird adds them); a 304 has no
    /// `Content-Length`, a HEAD no body. A small body is copied after the head (one buffer to
    /// write); a large one is written as it is in L1 (no copy per answer, however many clients
    /// are slow to read it).
    private func write(_ answer: DataAnswers.Answer, isHead: Bool, context: ChannelHandlerContext) {
        let notModified = answer.status == .notModified
        let withBody = !isHead && !notModified
        let copyBody = withBody && answer.body.readableBytes <= Self.copiedBodyBytes
        var out = context.channel.allocator.buffer(capacity: 320 + (copyBody ? answer.body.readableBytes : 0))
        out.writeStaticString(notModified ? "HTTP/1.1 304 Not Modified\r\n" : "HTTP/1.1 200 OK\r\n")
        for field in answer.fields where !(notModified && field.name == .contentLength) {
            out.writeString(field.name.rawName)
            out.writeStaticString(": ")
            out.writeString(field.value)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("Date: ")
        out.writeString(date.now())
        out.writeStaticString("\r\nServer: ")
        out.writeString(DataAnswers.serverName)
        out.writeStaticString("\r\n\r\n")
        if copyBody {
            var body = answer.body
            out.writeBuffer(&body)
        }
        context.write(wrapOutboundOut(out), promise: nil)
        if withBody, !copyBody { context.write(wrapOutboundOut(answer.body), promise: nil) }
        unflushed = true
    }

    /// Bodies up to this size are copied into the head's buffer.
    static let copiedBodyBytes = 4096
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
