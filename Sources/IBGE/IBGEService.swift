public import Logging
public import NIOCore
public import TieredCache
import Synchronization
import Foundation
import Utilities

/// The cached IBGE facade: turns a request into its cache key and answers it through the
/// two-tier cache, loading misses from the IBGE API (when an upstream is given) or from the
/// embedded snapshot.
///
/// With an upstream, the order of answers is: fresh cache, the upstream, a stale cached value
/// (within the cache's grace period), then the embedded data (the localidades snapshot, Census
/// 2022 population) — never cached, so the upstream is asked again next time — and only then
/// a 502/504 error.
public final class IBGEService: Sendable {
    /// The cache it answers through.
    public let cache: TieredCache
    /// The embedded source (the snapshot).
    public let embedded: EmbeddedSource
    /// The snapshot (for validation: UF siglas, and for preload's key list).
    public var snapshot: IBGESnapshot { embedded.snapshot }
    /// Census 2022 population, for the agregados population queries.
    public let population: Population2022
    /// The IBGE API, when `ENABLE_REAL_APIS` is on.
    public let upstream: HTTPUpstream?
    /// How long localidades answers stay fresh.
    public let ttl: Duration
    /// How long agregados answers stay fresh.
    public let agregadosTTL: Duration
    /// How long an empty answer (`[]`: an unknown id) stays cached.
    public let negativeTTL: Duration
    let logger: Logger
    private let fallbacks = Atomic<Int>(0)
    /// When a fallback was last logged (monotonic ns): while IBGE is down every miss falls
    /// back, at once when its circuit is open, so the warning is logged at most once a second.
    private let fallbackWarnings = Throttle(interval: .seconds(1))
    /// IBGE's lists as a preload last fetched them, and when: reused for a minute, so a preload
    /// done UF by UF (the command line's) costs IBGE three requests, not three per UF.
    let recentPreloadSource = Mutex<(source: EmbeddedSource, at: ContinuousClock.Instant)?>(nil)
    /// Answers computed from embedded data for the cache (population): one per miss, none per hit.
    private let derivedBodies = Atomic<Int>(0)
    /// How many answers were computed from embedded data for the cache (population queries).
    public var derivedAnswers: Int { derivedBodies.load(ordering: .relaxed) }

    /// Creates the service.
    public init(
        cache: TieredCache, snapshot: IBGESnapshot, population: Population2022, upstream: HTTPUpstream? = nil, ttl: Duration,
        agregadosTTL: Duration? = nil, negativeTTL: Duration = .seconds(300), logger: Logger = Logger(label: "ibge")
    ) {
        // An empty answer is never kept longer than a real one would be.
        self.negativeTTL = min(negativeTTL, ttl, agregadosTTL ?? ttl)
        self.cache = cache
        self.embedded = EmbeddedSource(snapshot: snapshot)
        self.population = population
        self.upstream = upstream
        self.ttl = ttl
        self.agregadosTTL = agregadosTTL ?? ttl
        self.logger = logger
    }

    /// Answers served from embedded data because the upstream failed and nothing was cached.
    public var embeddedFallbacks: Int { fallbacks.load(ordering: .relaxed) }

    /// Parses and validates a localidades path (after `/api/v1/localidades/`) and query.
    public func request(path: String, query: [(String, String)]) throws(IBGEError) -> LocalidadesRequest {
        try LocalidadesRequest(path: path, query: query, siglas: snapshot.siglas)
    }

    /// The JSON body IBGE gives for the request, from the cache, the upstream or the snapshot.
    public func body(for request: LocalidadesRequest) async throws(IBGEError) -> ByteBuffer {
        try await answer(for: request).value
    }

    /// Whether the request's answer is one cache entry, under ``LocalidadesRequest/cacheKey``
    /// (not assembled from several, as a joined request is).
    public static func isSingleEntry(_ request: LocalidadesRequest) -> Bool {
        !request.isJoined || request.child != nil || request.orderByName || request.flat
    }

    /// The answer to the request with its validator and freshness: from the cache, the
    /// upstream or the snapshot. A joined answer's tag combines its parts' tags, and it is
    /// fresh as long as all of them; a snapshot fallback (not cached) is not fresh at all.
    public func answer(for request: LocalidadesRequest) async throws(IBGEError) -> CachedValue {
        if !Self.isSingleEntry(request), let ids = request.ids {
            return try await joined(request.level, ids: ids)
        }
        guard let upstream else {
            let embedded = self.embedded
            return try await cached(request.cacheKey, ttl: ttl) { () throws(IBGEError) in try embedded.body(for: request) }
        }
        let upstreamRequest = UpstreamRequest(request)
        do {
            return try await cached(request.cacheKey, ttl: ttl) { () async throws(IBGEError) in try await upstream.fetch(upstreamRequest) }
        } catch {
            fallbacks.add(1, ordering: .relaxed)
            warnFallback("IBGE unavailable, answering from the embedded snapshot", metadata: ["path": "\(request.canonicalPath)", "error": "\(error)"])
            return uncached(try embedded.body(for: request))
        }
    }

    /// Logs a fallback, at most once a second (`embedded_fallbacks` counts them all).
    private func warnFallback(_ message: Logger.Message, metadata: Logger.Metadata) {
        guard fallbackWarnings.allow() else { return }
        logger.warning(message, metadata: metadata)
    }

    /// An answer that is not in the cache (a fallback): its tag computed now, not fresh.
    private func uncached(_ body: ByteBuffer) -> CachedValue {
        CachedValue(value: body, tag: ContentTag.of(body), freshUntil: 0, tier: .fallback)
    }

    /// Where an answer came from (the access log's `tier`).
    public func tier(of answer: CachedValue) -> AnswerTier {
        switch answer.tier {
        case .l1: .l1
        case .l2: .l2
        case .source: upstream == nil ? .source : .upstream
        case .stale: .stale
        case .fallback: .snapshot
        }
    }

    /// A `|`-joined request (`/municipios/4208203|3550308`), answered from the per-id cache
    /// entries (one `MGET` for those L1 lacks, one upstream request for the rest), so joined and
    /// single requests share their cached answers. The array holds the known ids' objects in id
    /// order, IBGE's bytes for each.
    private func joined(_ level: LocalidadesLevel, ids: [LocalidadeID]) async throws(IBGEError) -> CachedValue {
        let codes = Array(Set(ids.compactMap { id -> Int? in if case .code(let n) = id { return n } else { return nil } })).sorted()
        let keyOf: @Sendable (Int) -> String = { code in LocalidadesRequest(level: level, ids: [.code(code)]).cacheKey }
        let codeOf = Dictionary(uniqueKeysWithValues: codes.map { (keyOf($0), $0) })
        let values: [String: CachedValue]
        do {
            values = try await cache.getManyValues(codes.map(keyOf), ttl: ttl, negativeTTL: negativeTTL, isNegative: Self.isEmptyAnswer) { missing in
                let missingCodes = missing.compactMap { codeOf[$0] }
                return try await self.loadSingles(level, codes: missingCodes).reduce(into: [:]) { $0[keyOf($1.key)] = $1.value }
            }
        } catch {
            guard upstream != nil else { throw error as? IBGEError ?? IBGEError(.upstreamFailed, "\(error)") }
            fallbacks.add(1, ordering: .relaxed)
            warnFallback("IBGE unavailable, answering from the embedded snapshot", metadata: ["level": "\(level.rawValue)", "error": "\(error)"])
            return uncached(try embedded.body(for: LocalidadesRequest(level: level, ids: ids)))
        }
        var writer = IBGEJSONWriter(capacity: codes.count * 500 + 2)
        writer.raw("[")
        var first = true
        // The parts' tags, combined in id order (no hash of the assembled bytes per request).
        var tag: UInt64 = 0x6A09_E667_F3BC_C908
        var freshUntil = Int64.max
        var tier = CacheTier.l1
        for code in codes {
            guard let part = values[keyOf(code)] else { continue }
            tag = (tag ^ part.tag) &* 0x100_0000_01B3 &+ UInt64(truncatingIfNeeded: code)
            freshUntil = min(freshUntil, part.freshUntil)
            tier = max(tier, part.tier)
            guard !Self.isEmptyAnswer(part.value) else { continue }
            if !first { writer.raw(",") }
            first = false
            var element = part.value
            writer.buffer.writeBuffer(&element)
        }
        writer.raw("]")
        return CachedValue(value: writer.buffer, tag: tag, freshUntil: freshUntil == .max ? 0 : freshUntil, tier: tier)
    }

    /// The single-id answers for `codes`: from the snapshot, or from one joined upstream request
    /// cut into its elements (ids IBGE does not know answer `[]`, as a single request would).
    private func loadSingles(_ level: LocalidadesLevel, codes: [Int]) async throws(IBGEError) -> [Int: ByteBuffer] {
        guard let upstream else {
            var answers: [Int: ByteBuffer] = [:]
            for code in codes { answers[code] = try embedded.body(for: LocalidadesRequest(level: level, ids: [.code(code)])) }
            return answers
        }
        guard let firstCode = codes.first else { return [:] }
        var answers: [Int: ByteBuffer] = Dictionary(uniqueKeysWithValues: codes.map { ($0, ByteBuffer(string: "[]")) })
        // One id is asked as `id|id`, so the answer is an array like the others.
        let joinedPath = codes.count > 1 ? codes.sorted().map(String.init).joined(separator: "|") : "\(firstCode)|\(firstCode)"
        let joinedRequest = try UpstreamRequest(path: "v1/localidades/\(level.rawValue)/\(joinedPath)", query: [])
        let body = try await upstream.fetch(joinedRequest)
        guard let elements = JSONArraySplitter.elements(of: body) else {
            throw IBGEError(.upstreamFailed, "IBGE's answer to \(joinedRequest.path) is not a JSON array")
        }
        for element in elements {
            guard let id = JSONArraySplitter.leadingID(element), answers[id] != nil else { continue }
            var copy = ByteBufferAllocator().buffer(capacity: element.readableBytes)
            copy.writeImmutableBuffer(element)
            answers[id] = copy
        }
        return answers
    }

    /// Any allow-listed GET (`/api/v1/localidades/...`, `/api/v3/agregados/...`): from the cache
    /// or the upstream; when the upstream fails, the Census 2022 population queries are answered
    /// from embedded data. Without an upstream only those population queries are answered.
    public func mirror(_ request: UpstreamRequest) async throws(IBGEError) -> ByteBuffer {
        try await mirrorAnswer(request).value
    }

    /// As ``mirror(_:)``, with the answer's validator and freshness.
    public func mirrorAnswer(_ request: UpstreamRequest) async throws(IBGEError) -> CachedValue {
        let ttl = request.kind == .agregados ? agregadosTTL : self.ttl
        guard let upstream else {
            let notServed = IBGEError(.notServed, "/api/\(request.path) is not in the embedded data; the mirror needs ENABLE_REAL_APIS=true for it")
            // Checked without computing anything, in canonical form (one key and one computation
            // for every spelling, repeated codes once); the answer is computed only on a miss.
            guard let raw = request.populationSelector, let selector = Population2022.canonicalSelector(raw),
                let keyed = try? UpstreamRequest(path: request.path, query: [("localidades", selector)])
            else { throw notServed }
            return try await cached(keyed.cacheKey, ttl: ttl) { () throws(IBGEError) in
                self.derivedBodies.add(1, ordering: .relaxed)
                guard let body = self.population.body(localidades: selector, snapshot: self.snapshot) else { throw notServed }
                return body
            }
        }
        do {
            return try await cached(request.cacheKey, ttl: ttl) { () async throws(IBGEError) in try await upstream.fetch(request) }
        } catch {
            if let selector = request.populationSelector, let body = population.body(localidades: selector, snapshot: snapshot) {
                fallbacks.add(1, ordering: .relaxed)
                warnFallback("IBGE unavailable, answering Census 2022 population from embedded data", metadata: ["error": "\(error)"])
                return uncached(body)
            }
            throw error
        }
    }

    /// IBGE answers an unknown id with `[]`.
    @Sendable static func isEmptyAnswer(_ body: ByteBuffer) -> Bool {
        body.readableBytes == 2 && body.getInteger(at: body.readerIndex, as: UInt8.self) == UInt8(ascii: "[")
            && body.getInteger(at: body.readerIndex + 1, as: UInt8.self) == UInt8(ascii: "]")
    }

    private func cached(_ key: String, ttl: Duration, _ load: @escaping @Sendable () async throws(IBGEError) -> ByteBuffer) async throws(IBGEError)
        -> CachedValue
    {
        do {
            return try await cache.getOrLoadValue(key, ttl: ttl, negativeTTL: negativeTTL, isNegative: Self.isEmptyAnswer) { try await load() }
        } catch let error as IBGEError {
            throw error
        } catch {
            throw IBGEError(.upstreamFailed, "loading \(key) failed: \(error)")
        }
    }
}

/// Where an answer came from, as the access log's `tier` and the `tier` label of
/// `ibge_cache_http_requests_total` name it.
public enum AnswerTier: UInt8, Sendable, CaseIterable {
    /// Not a data answer from the cache: an error, a CORS preflight, the admin API, a probe.
    case none
    /// This process's memory, fresh.
    case l1
    /// Redis (or, without Redis, the in-process L2), fresh.
    case l2
    /// Loaded from embedded data (the snapshot, Census 2022 population): the source without an upstream.
    case source
    /// Loaded from the IBGE API.
    case upstream
    /// A value past its freshness, kept by the fail-safe while IBGE fails or is slow.
    case stale
    /// IBGE failed and nothing was cached: embedded data, not cached.
    case snapshot

    /// The tier's name in logs and labels.
    public var name: String {
        switch self {
        case .none: "none"
        case .l1: "l1"
        case .l2: "l2"
        case .source: "source"
        case .upstream: "upstream"
        case .stale: "stale"
        case .snapshot: "snapshot"
        }
    }
}
