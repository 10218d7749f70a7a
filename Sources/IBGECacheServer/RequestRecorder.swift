import HTTPTypes
import Hummingbird
public import IBGE
import NIOCore
import NIOHTTP1
import Prometheus
import Synchronization

/// What the server records of every request it answers, wherever it is answered (the router,
/// the L1 fast path, or the connection guard refusing it): `ibge_cache_http_requests_total`
/// by tier and status, `ibge_cache_http_request_duration_seconds` by tier, and with
/// `ACCESS_LOG=true` a line of the ``AccessLog``.
///
/// The duration is the server's: from the request read to its answer handed on to be written
/// (on the router, the `Response` returned to Hummingbird; not the time the client takes to
/// read it).
final class RequestRecorder: Sendable {
    /// The access log, when `ACCESS_LOG=true`.
    let accessLog: AccessLog?
    private let registry: PrometheusCollectorRegistry
    /// `ibge_cache_http_requests_total{tier,status}`, made on first use, keyed by tier and
    /// status (statuses are few: the server's own and those IBGE answers with).
    private let counters = Mutex<[Int: Counter]>([:])
    /// `ibge_cache_http_request_duration_seconds{tier}`, by ``AnswerTier/rawValue``.
    private let durations: [DurationHistogram]
    /// The fast path's two outcomes, made once.
    private let l1OK: Counter
    private let l1NotModified: Counter

    init(registry: PrometheusCollectorRegistry, buckets: [Duration], accessLog: AccessLog?) {
        self.registry = registry
        self.accessLog = accessLog
        self.durations = AnswerTier.allCases.map { tier in
            registry.makeDurationHistogram(
                descriptor: .init(
                    namespace: "ibge_cache", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                    helpText: "time from a request read to its answer handed to the connection, by the tier that answered"),
                labels: [("tier", tier.name)], buckets: buckets)
        }
        self.l1OK = Self.makeCounter(registry, tier: .l1, status: 200)
        self.l1NotModified = Self.makeCounter(registry, tier: .l1, status: 304)
    }

    private static func makeCounter(_ registry: PrometheusCollectorRegistry, tier: AnswerTier, status: Int) -> Counter {
        registry.makeCounter(
            descriptor: .init(
                namespace: "ibge_cache", subsystem: "http", metricName: "requests", unitName: "total",
                helpText: "requests answered, by the tier that answered (none: not a cached data answer) and status"),
            labels: [("tier", tier.name), ("status", String(status))])
    }

    private func counter(tier: AnswerTier, status: Int) -> Counter {
        if tier == .l1, status == 200 { return l1OK }
        if tier == .l1, status == 304 { return l1NotModified }
        let key = Int(tier.rawValue) << 16 | (status & 0xFFFF)
        return counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Self.makeCounter(registry, tier: tier, status: status)
            counters[key] = counter
            return counter
        }
    }

    /// Records an answered request. `bytes`: the body's bytes sent (nil when unknown); `target`
    /// and `remote` (the client's address) are read only when the access log writes them.
    func record(
        method: String, target: @autoclosure () -> String, status: Int, bytes: Int?, tier: AnswerTier, elapsedNanoseconds: Int64,
        remote: @autoclosure () -> SocketAddress?
    ) {
        counter(tier: tier, status: status).increment()
        durations[Int(tier.rawValue)].recordNanoseconds(elapsedNanoseconds)
        guard let accessLog else { return }
        accessLog.append(
            .init(method: method, target: target(), status: status, bytes: bytes, tier: tier, elapsedNanoseconds: elapsedNanoseconds, remote: remote()))
    }

    /// Records an L1 hit the fast path answered (200, or 304 for a matching `If-None-Match`);
    /// `stale`: a stale value the fail-safe keeps in L1.
    func recordFastPath(
        method: String, target: String, notModified: Bool, stale: Bool, bytes: Int, elapsedNanoseconds: Int64,
        remote: @autoclosure () -> SocketAddress?
    ) {
        record(
            method: method, target: target, status: notModified ? 304 : 200, bytes: bytes, tier: stale ? .stale : .l1,
            elapsedNanoseconds: elapsedNanoseconds, remote: remote())
    }

    /// Nanoseconds on the monotonic clock, for request durations.
    @inline(__always)
    static func now() -> Int64 {
        Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
    }
}

/// Where the router's handlers say which tier answered (the middleware that records the
/// request reads it once the handler is done): one per request, in ``AppRequestContext``.
public final class AnswerTierCell: Sendable {
    private let raw = Atomic<UInt8>(AnswerTier.none.rawValue)

    /// A cell saying `none` until a handler sets it.
    public init() {}

    /// The tier that answered (``AnswerTier/none`` unless a data handler said otherwise).
    public var tier: AnswerTier {
        get { AnswerTier(rawValue: raw.load(ordering: .relaxed)) ?? .none }
        set { raw.store(newValue.rawValue, ordering: .relaxed) }
    }
}

/// First on the router: records every request it answers (``RequestRecorder``), errors
/// included, which it turns into their answers here so their status and size are known. It
/// replaces Hummingbird's `LogRequestsMiddleware`: requests are logged by `ACCESS_LOG`.
struct RecordRequestsMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let recorder: RequestRecorder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = RequestRecorder.now()
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch let error as HTTPParserError {
            // A body the decoder could not read: Hummingbird answers 400 and closes.
            record(request, context: context, status: 400, bytes: 0, start: start)
            throw error
        } catch {
            // Hummingbird answers it with a 500 and no body.
            record(request, context: context, status: 500, bytes: 0, start: start)
            throw error
        }
        let withoutBody = request.method == .head || response.status == .notModified || response.status == .noContent
        record(request, context: context, status: response.status.code, bytes: withoutBody ? 0 : response.body.contentLength, start: start)
        return response
    }

    private func record(_ request: Request, context: Context, status: Int, bytes: Int?, start: Int64) {
        recorder.record(
            method: request.method.rawValue, target: request.uri.description, status: status, bytes: bytes, tier: context.answer.tier,
            elapsedNanoseconds: RequestRecorder.now() - start, remote: context.remoteAddress)
    }
}
