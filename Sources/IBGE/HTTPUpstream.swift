import Utilities
import AsyncHTTPClient
import Foundation
public import Logging
public import NIOCore
import NIOHTTP1
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

/// The IBGE API over HTTP (AsyncHTTPClient), with timeouts, bounded retries and response
/// validation: only a 200 with a JSON body that parses, within the size limit, is ever returned
/// (and so cached). An HTML error page, a truncated body or a 5xx is an error.
public final class HTTPUpstream: Sendable {
    /// Settings.
    public struct Configuration: Sendable {
        /// `IBGE_API_BASE_URL`, without a trailing slash.
        public var baseURL: String
        /// Time to establish a connection.
        public var connectTimeout: Duration
        /// Time a whole attempt (request and full response) may take.
        public var requestTimeout: Duration
        /// Attempts in all (the first plus retries) for connection errors, timeouts and 5xx.
        public var maximumAttempts: Int
        /// Wait before the first retry; doubles each time, ±25 % jitter.
        public var retryBackoff: Duration
        /// Largest body accepted (`/municipios` is 2.5 MB).
        public var maximumBodyBytes: Int
        /// Requests to IBGE in flight at once (`IBGE_MAX_CONCURRENT_LOADS`); more wait in line.
        public var maximumConcurrentRequests: Int
        /// Requests that may wait in that line; past it a request fails at once (the cache then
        /// answers from a stale value or the snapshot) instead of piling up on a slow IBGE.
        public var maximumQueuedRequests: Int
        /// Longest `Retry-After` honoured before a retry; a longer one ends the attempts.
        public var maximumRetryAfter: Duration

        /// Creates a configuration.
        public init(
            baseURL: String = "https://servicodados.ibge.gov.br/api", connectTimeout: Duration = .seconds(3),
            requestTimeout: Duration = .seconds(20), maximumAttempts: Int = 3, retryBackoff: Duration = .milliseconds(200),
            maximumBodyBytes: Int = 32 * 1024 * 1024, maximumConcurrentRequests: Int = 16, maximumQueuedRequests: Int = 256,
            maximumRetryAfter: Duration = .seconds(5)
        ) {
            self.maximumConcurrentRequests = max(1, maximumConcurrentRequests)
            self.maximumQueuedRequests = max(0, maximumQueuedRequests)
            self.maximumRetryAfter = maximumRetryAfter
            self.baseURL = baseURL
            self.connectTimeout = connectTimeout
            self.requestTimeout = requestTimeout
            self.maximumAttempts = maximumAttempts
            self.retryBackoff = retryBackoff
            self.maximumBodyBytes = maximumBodyBytes
        }
    }

    /// The settings.
    public let configuration: Configuration
    private let client: HTTPClient
    private let logger: Logger
    private let lastOutcome = Mutex<Outcome?>(nil)
    private let slots: ConcurrencyLimiter

    /// The result of the most recent fetch, for health checks (nothing is fetched to check health).
    public struct Outcome: Sendable {
        /// When it finished.
        public var at: ContinuousClock.Instant
        /// The error, or nil for a success.
        public var error: IBGEError?
    }

    /// The result of the most recent fetch, or nil before the first.
    public var lastResult: Outcome? { lastOutcome.withLock { $0 } }

    /// Creates the upstream (and its HTTP client; call ``shutdown()`` when done).
    public init(configuration: Configuration, logger: Logger = Logger(label: "ibge.upstream")) {
        self.configuration = configuration
        self.logger = logger
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.timeout = .init(connect: TimeAmount(configuration.connectTimeout), read: TimeAmount(configuration.requestTimeout))
        clientConfiguration.redirectConfiguration = .disallow
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        self.slots = ConcurrencyLimiter(limit: configuration.maximumConcurrentRequests, queue: configuration.maximumQueuedRequests)
    }

    /// Requests to IBGE in flight now, and waiting for a slot.
    public var inFlight: (running: Int, waiting: Int) { slots.counts }

    /// Fetches and validates one request, retrying what is worth retrying.
    public func fetch(_ request: UpstreamRequest) async throws(IBGEError) -> ByteBuffer {
        let url = request.url(base: configuration.baseURL)
        var lastError = IBGEError(.upstreamFailed, "no attempt made")
        var backoff = Backoff(initial: configuration.retryBackoff, maximum: configuration.retryBackoff * 64)
        for attempt in 1...max(1, configuration.maximumAttempts) {
            do throws(Failure) {
                guard await slots.acquire() else {
                    throw Failure(
                        error: IBGEError(.upstreamFailed, "too many requests to IBGE waiting (\(configuration.maximumQueuedRequests)); not queued"),
                        retryable: false)
                }
                defer { slots.release() }
                let body = try await once(url)
                lastOutcome.withLock { $0 = Outcome(at: .now, error: nil) }
                return body
            } catch let failure {
                lastError = failure.error
                guard failure.retryable, attempt < configuration.maximumAttempts, !Task.isCancelled else { break }
                var wait = backoff.next()
                if let asked = failure.retryAfter {
                    // IBGE said when to come back: then, or not in this request if that is too far.
                    guard asked <= configuration.maximumRetryAfter else { break }
                    wait = max(wait, asked)
                }
                logger.debug("IBGE request failed, retrying", metadata: ["url": "\(url)", "attempt": "\(attempt)", "error": "\(failure.error)"])
                try? await Task.sleep(for: wait)
            }
        }
        let failure = lastError
        lastOutcome.withLock { $0 = Outcome(at: .now, error: failure) }
        throw failure
    }

    private struct Failure: Error {
        var error: IBGEError
        var retryable: Bool
        /// The wait IBGE asked for (`Retry-After` in seconds), if any.
        var retryAfter: Duration? = nil
    }

    private func once(_ url: String) async throws(Failure) -> ByteBuffer {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "ibge-cache")
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await client.execute(request, timeout: TimeAmount(configuration.requestTimeout))
            body = try await response.body.collect(upTo: configuration.maximumBodyBytes)
        } catch let error as HTTPClientError where [.connectTimeout, .readTimeout, .deadlineExceeded].contains(error) {
            throw Failure(error: IBGEError(.upstreamTimeout, "IBGE did not answer in time (\(error))"), retryable: true)
        } catch let error as NIOTooManyBytesError {
            throw Failure(
                error: IBGEError(.upstreamFailed, "IBGE's answer is larger than \(configuration.maximumBodyBytes) bytes (\(error))"), retryable: false
            )
        } catch let error as IOError {
            throw Failure(
                error: IBGEError(.upstreamFailed, "cannot reach IBGE: \(String(cString: strerror(error.errnoCode)).lowercased())"), retryable: true)
        } catch {
            throw Failure(error: IBGEError(.upstreamFailed, "cannot reach IBGE: \(error)"), retryable: true)
        }
        let status = response.status.code
        guard status == 200 else {
            let excerpt = String(buffer: body.getSlice(at: body.readerIndex, length: min(200, body.readableBytes)) ?? ByteBuffer())
            let retryable = status >= 500 || status == 429
            let retryAfter = response.headers.first(name: "Retry-After").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                .map { Duration.seconds(max(0, min($0, 86_400))) }
            throw Failure(
                error: IBGEError(.upstreamFailed, "IBGE answered \(status): \(excerpt)", upstreamStatus: Int(status)), retryable: retryable,
                retryAfter: retryAfter)
        }
        if let type = response.headers.first(name: "Content-Type")?.lowercased(), !type.contains("json") {
            throw Failure(error: IBGEError(.upstreamFailed, "IBGE answered \(type), not JSON (an error page?)"), retryable: true)
        }
        guard body.readableBytes > 0,
            (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed])) != nil
        else {
            throw Failure(
                error: IBGEError(.upstreamFailed, "IBGE's answer is not valid JSON (\(body.readableBytes) bytes: truncated or an error page)"),
                retryable: true)
        }
        return body
    }

    /// Closes the HTTP client.
    public func shutdown() async {
        try? await client.shutdown().get()
    }

    deinit {
        // A client dropped without shutdown() (an error path) is shut down here rather than trap.
        client.shutdown { _ in }
    }
}
