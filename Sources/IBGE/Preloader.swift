import Logging
import Foundation
import NIOCore
import Synchronization
import TieredCache

/// Warms the cache: makes sure every key of a scope is cached, loading only the missing ones.
///
/// Its counts are its own (how many of its keys it had to load, how many failed), not
/// differences of the cache's global counters, which other traffic moves at the same time.
public struct Preloader: Sendable {
    /// What to warm.
    public enum Scope: Sendable, Hashable {
        /// Every region, UF, município and the lists.
        case all
        /// One UF: it, its município list and each of its municípios.
        case uf(Int)
    }

    /// What a preload did.
    public struct Result: Sendable {
        /// Keys the preload made sure are cached.
        public var keys: Int
        /// Keys it had to load (the rest were cached already, or loaded by another caller meanwhile).
        public var loaded: Int
        /// Keys that failed to load.
        public var failed: Int
        /// How long it took.
        public var duration: Duration

        /// Keys that were cached already.
        public var alreadyCached: Int { keys - loaded - failed }
    }

    let service: IBGEService

    /// Creates a preloader for `service`'s cache.
    public init(service: IBGEService) {
        self.service = service
    }

    /// The requests a preload of `scope` warms.
    public func requests(for scope: Scope) -> [LocalidadesRequest] {
        let snapshot = service.snapshot
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

    /// The data preload answers from: a snapshot built from IBGE's current list bodies when
    /// there is an upstream, the embedded snapshot when there is none. The lists are fetched,
    /// not cached here: the batches cache them with the rest (and count them).
    ///
    /// Nil when IBGE's lists cannot be had: the embedded data is then not stored as IBGE's
    /// answer (it would be served as fresh for a whole TTL); the keys not already cached are
    /// reported as failed, and a later preload fills them from IBGE.
    private func source(reuseRecent: Bool) async -> EmbeddedSource? {
        guard let upstream = service.upstream else { return service.embedded }
        if reuseRecent, let recent = service.recentPreloadSource.withLock({ $0 }), ContinuousClock.now - recent.at < .seconds(60) { return recent.source }
        do {
            let regioes = try await upstream.fetch(UpstreamRequest(LocalidadesRequest(level: .regioes)))
            let estados = try await upstream.fetch(UpstreamRequest(LocalidadesRequest(level: .estados)))
            let municipios = try await upstream.fetch(UpstreamRequest(LocalidadesRequest(level: .municipios)))
            let fresh = try IBGESnapshot(
                regioes: Data(regioes.readableBytesView), estados: Data(estados.readableBytesView), municipios: Data(municipios.readableBytesView))
            let source = EmbeddedSource(snapshot: fresh)
            service.recentPreloadSource.withLock { $0 = (source, .now) }
            return source
        } catch {
            service.logger.warning(
                "preload: IBGE's lists are not available: nothing is loaded, the keys not cached yet are reported as failed",
                metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Makes sure every key of `scope` is cached (loading only the missing ones), in batches
    /// of `batchSize` keys: one L2 read (`MGET`) per batch for what L1 lacks, and one pipelined
    /// write for what had to be loaded, `concurrency` batches at a time.
    ///
    /// With an upstream, the three list bodies come from IBGE (three calls, cached like any
    /// answer) and every per-id answer is cut from them, the way IBGE's own per-id bodies read:
    /// a full preload costs IBGE three requests, not 5,633.
    ///
    /// With `refreshBefore` (milliseconds on the cache's clock), keys cached but fresh only until
    /// before then are loaded again too (a scheduled warm-up refreshes what would expire before
    /// the next one).
    ///
    /// IBGE's lists fetched in the last minute are reused unless `freshLists` (a scheduled warm-up
    /// asks IBGE again each cycle).
    public func run(_ scope: Scope, batchSize: Int = 256, concurrency: Int = 4, refreshBefore: Int64? = nil, freshLists: Bool = false) async -> Result {
        let start = ContinuousClock.now
        let requests = requests(for: scope)
        let source = await source(reuseRecent: !freshLists)
        let service = self.service
        let batches = stride(from: 0, to: requests.count, by: max(1, batchSize)).map {
            Array(requests[$0..<min($0 + max(1, batchSize), requests.count)])
        }
        var loaded = 0
        var failed = 0
        await withTaskGroup(of: (loaded: Int, failed: Int).self) { group in
            var next = 0
            func addNext() {
                guard next < batches.count else { return }
                let batch = batches[next]
                next += 1
                group.addTask { await Self.warm(batch, from: source, service: service, refreshBefore: refreshBefore) }
            }
            for _ in 0..<max(1, concurrency) { addNext() }
            for await counts in group {
                loaded += counts.loaded
                failed += counts.failed
                addNext()
            }
        }
        let result = Result(keys: requests.count, loaded: loaded, failed: failed, duration: ContinuousClock.now - start)
        service.logger.info("preload done", metadata: ["keys": "\(result.keys)", "loaded": "\(loaded)", "failed": "\(failed)"])
        return result
    }

    /// Warms one batch; returns how many keys it loaded and how many it could not.
    private static func warm(
        _ batch: [LocalidadesRequest], from source: EmbeddedSource?, service: IBGEService, refreshBefore: Int64?
    ) async -> (loaded: Int, failed: Int) {
        let byKey = Dictionary(batch.map { ($0.cacheKey, $0) }, uniquingKeysWith: { first, _ in first })
        let loaded = LoadCount()
        do {
            let found = try await service.cache.getManyValues(
                Array(byKey.keys), ttl: service.ttl, negativeTTL: service.negativeTTL, isNegative: IBGEService.isEmptyAnswer
            ) { missing in
                var bodies: [String: ByteBuffer] = [:]
                for key in missing {
                    guard let request = byKey[key], let body = try? source?.body(for: request) else { continue }
                    bodies[key] = body
                }
                loaded.value.add(bodies.count, ordering: .relaxed)
                return bodies
            }
            if let refreshBefore, let source {
                // Cached, but not fresh until the next warm-up: loaded again now, in one write.
                let due = found.compactMap { key, value -> (key: String, value: ByteBuffer)? in
                    guard value.freshUntil < refreshBefore, let request = byKey[key], let body = try? source.body(for: request) else { return nil }
                    return (key, body)
                }
                await service.cache.setMany(due, ttl: service.ttl, negativeTTL: service.negativeTTL, isNegative: IBGEService.isEmptyAnswer)
                loaded.value.add(due.count, ordering: .relaxed)
            }
            return (loaded.value.load(ordering: .relaxed), byKey.count - found.count)
        } catch {
            return (0, byKey.count)
        }
    }
}

extension IBGEService {
    /// Warms `scope` (see ``Preloader/run(_:batchSize:concurrency:)``).
    public func preload(_ scope: Preloader.Scope) async -> Preloader.Result {
        await Preloader(service: self).run(scope)
    }
}

/// The loads one preload ran, counted from its own loaders.
private final class LoadCount: Sendable {
    let value = Atomic<Int>(0)
}
