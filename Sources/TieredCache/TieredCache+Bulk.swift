import Synchronization
public import NIOCore

extension TieredCache {
    /// The values of several keys at once: L1 first, then one L2 read for the keys L1 lacks,
    /// then one call of `loader` with the keys neither tier has (it returns what it found;
    /// absent keys are absent from the result). Loaded values are written to both tiers in one
    /// round trip.
    ///
    /// Single-flight per key, as ``getOrLoad(_:ttl:negativeTTL:isNegative:loader:)``: keys
    /// another caller (single or bulk) is loading in this process are waited for, not loaded
    /// again; the loader gets only the keys this call leads. There is no lock across instances.
    /// When the loader fails, keys with a stale value in L2 get it, and the error is thrown only
    /// if some key has neither.
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
        try await bulk(keys, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative, lookAgain: true, loader: loader)
    }

    /// `lookAgain`: whether keys whose flight ended without a value for this caller (its leader
    /// cancelled, or its loader did not find them) are looked up once more.
    private func bulk(
        _ keys: [String],
        ttl: Duration?,
        negativeTTL: Duration?,
        isNegative: (@Sendable (ByteBuffer) -> Bool)?,
        lookAgain: Bool,
        loader: @Sendable ([String]) async throws -> [String: ByteBuffer]
    ) async throws -> [String: CachedValue] {
        var found: [String: CachedValue] = [:]
        var missing: [String] = []
        for key in Set(keys) {
            if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { found[key] = value } else { missing.append(key) }
        }
        guard !missing.isEmpty else { return found }
        missing.sort()

        // This call loads the keys no one else is loading, and waits for the others.
        let (led, others) = flights.claim(missing)
        let outcome: Result<[String: CachedValue], any Error>
        do {
            outcome = .success(try await loadMany(led, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative, loader: loader))
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .success(let values):
            flights.finish(Dictionary(uniqueKeysWithValues: led.map { key in (key, values[key].map { Result.success($0) }) }))
            found.merge(values) { _, new in new }
        case .failure(let error):
            // Keys found before the loader failed (fresh in L2, now in L1) answer their waiters;
            // the others get the error.
            flights.finish(
                Dictionary(
                    uniqueKeysWithValues: led.map { key in
                        (key, memory.lookupValue(key, consumeRefresh: false).map { Result.success($0.0) } ?? Result.failure(error))
                    }))
            throw error
        }
        var again: [String] = []
        for key in others {
            switch try await flights.join(key) {
            case .value(let value, _):
                // Nothing was cached when this caller asked: a miss, served by another caller's load.
                counters.coalesced.add(1, ordering: .relaxed)
                counters.misses.add(1, ordering: .relaxed)
                found[key] = value
            case .retry, .waitedTooLong:
                again.append(key)
            }
        }
        if lookAgain, !again.isEmpty {
            let more = try await bulk(again, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative, lookAgain: false, loader: loader)
            found.merge(more) { _, new in new }
        }
        return found
    }

    /// The leader's way for keys L1 lacks: one L2 read, then one loader call for the rest.
    private func loadMany(
        _ keys: [String],
        ttl: Duration?,
        negativeTTL: Duration?,
        isNegative: (@Sendable (ByteBuffer) -> Bool)?,
        loader: @Sendable ([String]) async throws -> [String: ByteBuffer]
    ) async throws -> [String: CachedValue] {
        var found: [String: CachedValue] = [:]
        var missing: [String] = []
        // A flight that ended between this caller's look at L1 and its claim filled L1.
        for key in keys {
            if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { found[key] = value } else { missing.append(key) }
        }
        guard !missing.isEmpty else { return found }

        var stale: [String: CachedValue] = [:]
        if let l2 = usableL2 {
            do {
                let reads = try await l2.read(missing)
                let now = clock.nowMilliseconds()
                var stillMissing: [String] = []
                for (key, read) in zip(missing, reads) {
                    switch onLocalClock(read) {
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
            for key in missing {
                found[key] = stale[key]
                found[key]?.tier = .stale
            }
            return found
        }
        let stored = await storeMany(missing.compactMap { key in loaded[key].map { (key, $0) } }, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative)
        found.merge(stored) { _, new in new }
        return found
    }

    /// Stores several values at once, as a load stores them: each fresh for `ttl` (or
    /// `negativeTTL` when `isNegative` says so) plus jitter, in L1, and in L2 in one round trip.
    public func setMany(
        _ values: [(key: String, value: ByteBuffer)], ttl: Duration? = nil, negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil
    ) async {
        _ = await storeMany(values, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative)
    }

    private func storeMany(
        _ values: [(key: String, value: ByteBuffer)], ttl: Duration?, negativeTTL: Duration?, isNegative: (@Sendable (ByteBuffer) -> Bool)?
    ) async -> [String: CachedValue] {
        let load = Load(key: "", ttl: ttl ?? configuration.defaultTTL, negativeTTL: negativeTTL, isNegative: isNegative, loader: { ByteBuffer() })
        let now = clock.nowMilliseconds()
        var stored: [String: CachedValue] = [:]
        var entries: [L2Entry] = []
        for (key, value) in values {
            let ttl = load.ttl(for: value, jitter: configuration.ttlJitter, now: now)
            let cached = storeL1(key, value: value, ttl: ttl, now: now)
            stored[key] = cached
            entries.append(l2Entry(key, cached, ttl: ttl))
        }
        await writeL2(entries)
        return stored
    }
}
