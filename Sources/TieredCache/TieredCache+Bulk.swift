import Synchronization
public import NIOCore

extension TieredCache {
    /// The values of several keys at once: L1 first, then one L2 read for the keys L1 lacks,
    /// then one call of `loader` with the keys neither tier has (it returns what it found;
    /// absent keys are absent from the result). Loaded values are written to both tiers in one
    /// round trip.
    ///
    /// Unlike ``getOrLoad(_:ttl:negativeTTL:isNegative:loader:)`` there is no single-flight or
    /// lock across keys; when the loader fails, keys with a stale value in L2 get it, and the
    /// error is thrown only if some key has neither.
    public func getMany(
        _ keys: [String],
        ttl: Duration? = nil,
        negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil,
        loader: @Sendable ([String]) async throws -> [String: ByteBuffer]
    ) async throws -> [String: ByteBuffer] {
        try await getManyValues(keys, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative, loader: loader).mapValues(\.value)
    }

    /// As ``getMany(_:ttl:negativeTTL:isNegative:loader:)``, with each value's tag and freshness.
    public func getManyValues(
        _ keys: [String],
        ttl: Duration? = nil,
        negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil,
        loader: @Sendable ([String]) async throws -> [String: ByteBuffer]
    ) async throws -> [String: CachedValue] {
        var found: [String: CachedValue] = [:]
        var missing: [String] = []
        for key in Set(keys) {
            if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { found[key] = value } else { missing.append(key) }
        }
        guard !missing.isEmpty else { return found }
        missing.sort()

        var stale: [String: CachedValue] = [:]
        if let l2 = usableL2 {
            do {
                let reads = try await l2.read(missing)
                let now = clock.nowMilliseconds()
                var stillMissing: [String] = []
                for (key, read) in zip(missing, reads) {
                    switch read {
                    case .hit(let envelope) where envelope.freshUntil > now:
                        counters.l2Hits.add(1, ordering: .relaxed)
                        found[key] = fillL1(key, envelope)
                    case .hit(let envelope):
                        stale[key] = envelope.cachedValue
                        stillMissing.append(key)
                    case .invalid:
                        counters.invalidValues.add(1, ordering: .relaxed)
                        stillMissing.append(key)
                    case .miss, .tooSlow:
                        stillMissing.append(key)
                    }
                }
                missing = stillMissing
            } catch {
                l2Failed(error)
            }
        }
        guard !missing.isEmpty else { return found }

        // Counted per key, as getOrLoad counts them; the loader's one call is one duration.
        counters.misses.add(missing.count, ordering: .relaxed)
        counters.loads.add(missing.count, ordering: .relaxed)
        let start = clock.monotonicNanoseconds()
        let loaded: [String: ByteBuffer]
        do {
            loaded = try await loader(missing)
            recordLoadDuration(since: start)
        } catch {
            recordLoadDuration(since: start)
            counters.loadErrors.add(missing.count, ordering: .relaxed)
            guard missing.allSatisfy({ stale[$0] != nil }) else { throw error }
            counters.staleServed.add(missing.count, ordering: .relaxed)
            for key in missing { found[key] = stale[key] }
            return found
        }
        let load = Load(key: "", ttl: ttl ?? configuration.defaultTTL, negativeTTL: negativeTTL, isNegative: isNegative, loader: { ByteBuffer() })
        let now = clock.nowMilliseconds()
        var entries: [L2Entry] = []
        for key in missing {
            guard let value = loaded[key] else { continue }
            let ttl = load.ttl(for: value, jitter: configuration.ttlJitter, now: now)
            let cached = storeL1(key, value: value, ttl: ttl, now: now)
            found[key] = cached
            entries.append(l2Entry(key, cached, ttl: ttl))
        }
        await writeL2(entries)
        return found
    }
}
