public import Logging
public import NIOCore
public import TieredCache

/// The cached IBGE facade: turns a request into its cache key and answers it through the
/// two-tier cache, loading from the source (the embedded snapshot, or the upstream API) on a miss.
public final class IBGEService: Sendable {
    /// The cache it answers through.
    public let cache: TieredCache
    /// Where misses are loaded from.
    public let source: any IBGESource
    /// The snapshot (for validation: UF siglas, and for preload's key list).
    public let snapshot: IBGESnapshot
    /// How long answers stay fresh.
    public let ttl: Duration
    let logger: Logger

    /// Creates the service.
    public init(cache: TieredCache, source: any IBGESource, snapshot: IBGESnapshot, ttl: Duration, logger: Logger = Logger(label: "ibge")) {
        self.cache = cache
        self.source = source
        self.snapshot = snapshot
        self.ttl = ttl
        self.logger = logger
    }

    /// Parses and validates a localidades path (after `/api/v1/localidades/`) and query.
    public func request(path: String, query: [(String, String)]) throws(IBGEError) -> LocalidadesRequest {
        try LocalidadesRequest(path: path, query: query, siglas: snapshot.siglas)
    }

    /// The JSON body IBGE gives for the request, from the cache or the source.
    public func body(for request: LocalidadesRequest) async throws(IBGEError) -> ByteBuffer {
        let source = self.source
        do {
            return try await cache.getOrLoad(request.cacheKey, ttl: ttl) { try await source.body(for: request) }
        } catch let error as IBGEError {
            throw error
        } catch {
            throw IBGEError(.upstreamFailed, "loading \(request.canonicalPath) failed: \(error)")
        }
    }

    /// What to warm.
    public enum PreloadScope: Sendable, Hashable {
        /// Every región, UF, município and the lists.
        case all
        /// One UF: it, its município list and each of its municípios.
        case uf(Int)
    }

    /// What a preload did.
    public struct PreloadResult: Sendable {
        /// Keys the preload made sure are cached.
        public var keys: Int
        /// Keys that had to be loaded (the rest were cached already).
        public var loaded: Int
        /// Keys that failed to load.
        public var failed: Int
        /// How long it took.
        public var duration: Duration
    }

    /// The requests a preload of `scope` warms.
    public func preloadRequests(_ scope: PreloadScope) -> [LocalidadesRequest] {
        switch scope {
        case .all:
            var requests: [LocalidadesRequest] = [
                LocalidadesRequest(level: .regioes), LocalidadesRequest(level: .estados), LocalidadesRequest(level: .municipios),
            ]
            requests += snapshot.regioes.map { LocalidadesRequest(level: .regioes, ids: [.code($0.id)]) }
            for uf in snapshot.estados {
                requests.append(LocalidadesRequest(level: .estados, ids: [.code(uf.id)]))
                requests.append(LocalidadesRequest(level: .estados, ids: [.code(uf.id)], child: .municipios))
            }
            requests += snapshot.municipios.map { LocalidadesRequest(level: .municipios, ids: [.code($0.id)]) }
            return requests
        case .uf(let code):
            var requests = [
                LocalidadesRequest(level: .estados, ids: [.code(code)]),
                LocalidadesRequest(level: .estados, ids: [.code(code)], child: .municipios),
            ]
            requests += snapshot.municipios.filter { $0.uf.id == code }.map { LocalidadesRequest(level: .municipios, ids: [.code($0.id)]) }
            return requests
        }
    }

    /// Makes sure every key of `scope` is cached (loading only the missing ones), `concurrency`
    /// at a time.
    public func preload(_ scope: PreloadScope, concurrency: Int = 32) async -> PreloadResult {
        let start = ContinuousClock.now
        let requests = preloadRequests(scope)
        let loadsBefore = cache.metrics().loads
        var failed = 0
        await withTaskGroup(of: Bool.self) { group in
            var next = 0
            func addNext() {
                guard next < requests.count else { return }
                let request = requests[next]
                next += 1
                group.addTask { (try? await self.body(for: request)) != nil }
            }
            for _ in 0..<max(1, concurrency) { addNext() }
            for await ok in group {
                if !ok { failed += 1 }
                addNext()
            }
        }
        let loaded = cache.metrics().loads - loadsBefore
        let result = PreloadResult(keys: requests.count, loaded: loaded, failed: failed, duration: ContinuousClock.now - start)
        logger.info("preload done", metadata: ["keys": "\(result.keys)", "loaded": "\(loaded)", "failed": "\(failed)"])
        return result
    }
}
