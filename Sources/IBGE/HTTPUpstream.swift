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
        /// Fetches in a row that fail (after their retries) before the circuit opens and
        /// requests fail at once (`IBGE_CIRCUIT_FAILURES`; 0 turns the circuit off).
        public var circuitFailureThreshold: Int
        /// How long the circuit stays open before one request probes IBGE
        /// (`IBGE_CIRCUIT_OPEN_SECONDS`).
        public var circuitOpenDuration: Duration
        /// How long IBGE's 4xx answer to a URL is remembered and repeated without asking again.
        public var clientErrorLifetime: Duration
        /// Most 4xx answers remembered at once.
        public var maximumRememberedClientErrors: Int

        /// Creates a configuration.
        public init(
            baseURL: String = "https://servicodados.ibge.gov.br/api", connectTimeout: Duration = .seconds(3),
            requestTimeout: Duration = .seconds(20), maximumAttempts: Int = 3, retryBackoff: Duration = .milliseconds(200),
            maximumBodyBytes: Int = 32 * 1024 * 1024, maximumConcurrentRequests: Int = 16, maximumQueuedRequests: Int = 256,
            maximumRetryAfter: Duration = .seconds(5), circuitFailureThreshold: Int = 5, circuitOpenDuration: Duration = .seconds(15),
            clientErrorLifetime: Duration = .seconds(30), maximumRememberedClientErrors: Int = 4096
        ) {
            self.circuitFailureThreshold = max(0, circuitFailureThreshold)
            self.circuitOpenDuration = circuitOpenDuration
            self.clientErrorLifetime = clientErrorLifetime
            self.maximumRememberedClientErrors = maximumRememberedClientErrors
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
    let circuits: UpstreamCircuits
    let clientErrors: ClientErrorMemory

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
        // A refused connection is this attempt's failure, now: the attempts, their backoff and
        // the circuit are ours (AsyncHTTPClient would otherwise retry until the connect timeout,
        // 3 s per attempt against a stopped IBGE).
        clientConfiguration.connectionPool.retryConnectionEstablishment = false
        // As many connections as requests may be in flight (its default keeps 8).
        clientConfiguration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = configuration.maximumConcurrentRequests
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        self.slots = ConcurrencyLimiter(limit: configuration.maximumConcurrentRequests, queue: configuration.maximumQueuedRequests)
        self.circuits = UpstreamCircuits(threshold: configuration.circuitFailureThreshold, openDuration: configuration.circuitOpenDuration)
        self.clientErrors = ClientErrorMemory(
            lifetime: configuration.clientErrorLifetime, maximumEntries: configuration.maximumRememberedClientErrors)
    }

    /// The circuit breakers' state (one for localidades, one for agregados): whether either
    /// makes requests fail at once now (IBGE failed ``Configuration/circuitFailureThreshold``
    /// times in a row), and how often they opened.
    public var circuitState: (isOpen: Bool, openings: Int) {
        let localidades = circuits.localidades.snapshot
        let agregados = circuits.agregados.snapshot
        return (localidades.isOpen || agregados.isOpen, localidades.openings + agregados.openings)
    }

    /// Requests to IBGE in flight now, and waiting for a slot.
    public var inFlight: (running: Int, waiting: Int) { slots.counts }

    /// Fetches and validates one request, retrying what is worth retrying.
    ///
    /// Fails at once, without asking IBGE, while the circuit is open, and with IBGE's own
    /// answer when it refused the same URL with a 4xx within ``Configuration/clientErrorLifetime``.
    public func fetch(_ request: UpstreamRequest) async throws(IBGEError) -> ByteBuffer {
        let url = request.url(base: configuration.baseURL)
        if let refused = clientErrors.error(for: url) { throw refused }
        let circuit = circuits(request.kind)
        let probe: Bool
        let generation: Int
        switch circuit.admit() {
        case .closed(let admitted): (probe, generation) = (false, admitted)
        case .probe(let admitted): (probe, generation) = (true, admitted)
        case .open(let remaining, let failures):
            let wait = remaining > .zero ? "for \(Int((remaining / .seconds(1)).rounded(.up))) s more" : "until a probe answers"
            throw IBGEError(.upstreamFailed, "IBGE failed \(failures) times in a row; not asked \(wait) (circuit open)")
        }
        // The probe makes one attempt: the circuit is open again (or closed) as soon as IBGE
        // says how it is, not after a whole round of retries.
        // It does not wait in line either: slow requests of the other class holding every slot
        // must not keep this circuit open (one probe per circuit at a time: at most two over the cap).
        switch await attempts(url, maximumAttempts: probe ? 1 : configuration.maximumAttempts, inLine: !probe) {
        case .success(let body):
            circuit.succeeded(probe: probe, generation: generation)
            lastOutcome.withLock { $0 = Outcome(at: .now, error: nil) }
            return body
        case .failure(let failure):
            if failure.isClientError {
                // IBGE answered, about this request: not a failure of IBGE.
                circuit.succeeded(probe: probe, generation: generation)
                clientErrors.remember(failure.error, for: url)
            } else if failure.countsAgainstIBGE, !Task.isCancelled {
                if circuit.failed(probe: probe, generation: generation) {
                    logger.warning(
                        "IBGE failing: circuit open, requests answered from the cache or the snapshot without asking IBGE",
                        metadata: [
                            "kind": "\(request.kind)", "seconds": "\(configuration.circuitOpenDuration.components.seconds)", "error": "\(failure.error)",
                        ])
                }
                lastOutcome.withLock { $0 = Outcome(at: .now, error: failure.error) }
            } else {
                // Refused here, caused by the request, or given up by its caller: says nothing about IBGE.
                circuit.abandoned(probe: probe, generation: generation)
            }
            throw failure.error
        }
    }

    /// The attempts at one URL (the first and its retries), within the concurrency cap.
    private func attempts(_ url: String, maximumAttempts: Int, inLine: Bool) async -> Result<ByteBuffer, Failure> {
        var lastFailure = Failure(error: IBGEError(.upstreamFailed, "no attempt made"), retryable: false, countsAgainstIBGE: false)
        var backoff = Backoff(initial: configuration.retryBackoff, maximum: configuration.retryBackoff * 64)
        for attempt in 1...max(1, maximumAttempts) {
            do throws(Failure) {
                guard inLine else { return .success(try await once(url)) }
                guard await slots.acquire() else {
                    throw Failure(
                        error: IBGEError(.upstreamFailed, "too many requests to IBGE waiting (\(configuration.maximumQueuedRequests)); not queued"),
                        retryable: false, countsAgainstIBGE: false)
                }
                defer { slots.release() }
                return .success(try await once(url))
            } catch let failure {
                lastFailure = failure
                guard failure.retryable, attempt < maximumAttempts, !Task.isCancelled else { break }
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
        return .failure(lastFailure)
    }

    private struct Failure: Error {
        var error: IBGEError
        var retryable: Bool
        /// The wait IBGE asked for (`Retry-After` in seconds), if any.
        var retryAfter: Duration? = nil
        /// Whether it says IBGE is failing (for the circuit and health); a request refused
        /// here (the line to IBGE full) does not.
        var countsAgainstIBGE = true

        /// IBGE refused the request itself (a 4xx other than 408 and 429): the same request
        /// will be refused again, and IBGE is working.
        var isClientError: Bool {
            guard let status = error.upstreamStatus else { return false }
            return (400..<500).contains(status) && status != 408 && status != 429
        }
    }

    private func once(_ url: String) async throws(Failure) -> ByteBuffer {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "ibge-cache")
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            let started = ContinuousClock.now
            response = try await client.execute(request, timeout: TimeAmount(configuration.requestTimeout))
            // The client's deadline ends with the response head; the body gets what is left of
            // the attempt's time (a body dripped in slowly ends with the attempt, not never).
            body = try await Self.collect(response, upTo: configuration.maximumBodyBytes, within: configuration.requestTimeout - (.now - started))
        } catch let error as HTTPClientError where [.connectTimeout, .readTimeout, .deadlineExceeded].contains(error) {
            throw Failure(error: IBGEError(.upstreamTimeout, "IBGE did not answer in time (\(error))"), retryable: true)
        } catch let error as NIOTooManyBytesError {
            // The request asked for too much: IBGE itself is fine.
            throw Failure(
                error: IBGEError(.upstreamFailed, "IBGE's answer is larger than \(configuration.maximumBodyBytes) bytes (\(error))"), retryable: false,
                countsAgainstIBGE: false)
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

    /// The whole body, or `HTTPClientError.deadlineExceeded` past `limit` (the read is cancelled).
    private static func collect(_ response: HTTPClientResponse, upTo maximum: Int, within limit: Duration) async throws -> ByteBuffer {
        guard let body = try await withTimeLimit(limit, { try await response.body.collect(upTo: maximum) }) else {
            throw HTTPClientError.deadlineExceeded
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
