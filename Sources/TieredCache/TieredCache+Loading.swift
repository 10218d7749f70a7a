import CoreMetrics
import Logging
import Synchronization
import NIOCore
import Utilities

extension TieredCache {
    /// One key's load: how to run it and how long its value lives.
    struct Load: Sendable {
        var key: String
        var ttl: Duration
        var negativeTTL: Duration?
        var isNegative: (@Sendable (ByteBuffer) -> Bool)?
        var loader: @Sendable () async throws -> ByteBuffer
        /// When the value must stop being fresh at the latest (milliseconds on the cache's
        /// clock), whatever its TTL and jitter: a derived value expires with its source.
        var freshNoLaterThan: Int64? = nil

        /// The TTL for a value stored at `now`: the negative TTL for negative answers, plus
        /// jitter, cut at ``freshNoLaterThan``.
        func ttl(for value: ByteBuffer, jitter: Double, now: Int64) -> Duration {
            var base = ttl
            if let negativeTTL, let isNegative, isNegative(value) { base = negativeTTL }
            if jitter > 0 { base = base * (1 + Double.random(in: 0...jitter)) }
            guard let freshNoLaterThan else { return base }
            return min(base, .milliseconds(max(0, freshNoLaterThan - now)))
        }
    }

    /// The leader's way for a key L1 lacks: L2, else the loader (under the load lock, within
    /// the timeouts, with the stale value as the fail-safe).
    func loadThroughL2(_ load: Load) async throws -> CachedValue {
        let key = load.key
        // Another caller may have filled L1 while this one waited to lead.
        if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { return value }
        var stale: CacheEnvelope?
        switch await readL2(key, answerWithin: configuration.l2SoftTimeout) {
        case .hit(let envelope):
            if envelope.freshUntil > clock.nowMilliseconds() {
                counters.l2Hits.add(1, ordering: .relaxed)
                return fillL1(key, envelope)
            }
            stale = envelope
        case .tooSlow:
            // The store is slow: go to the source now, and write the value back behind the request.
            counters.misses.add(1, ordering: .relaxed)
            return try await loadWithoutWaitingOnL2(load)
        case .miss, .invalid:
            break
        }
        counters.misses.add(1, ordering: .relaxed)
        // Across instances: one of them loads, the others wait for its value.
        var lock: LoadLock?
        // With a stale value and a soft timeout, another instance's load is waited for no
        // longer than the soft timeout: then the stale value answers, here and (from L1) for the
        // next callers, until the fresh value arrives.
        let soft = stale == nil ? nil : configuration.softTimeout
        switch await acquireLoadLock(key, waitAtMost: soft) {
        case .acquired(let held): lock = held
        case .valueAppeared(let value): return value
        case .proceed: break
        case .stillHeld:
            if let stale {
                counters.softTimeouts.add(1, ordering: .relaxed)
                counters.staleServed.add(1, ordering: .relaxed)
                let kept = keepStale(stale, for: key)
                // The holder's value may have landed (and its notice passed, with nothing in L1
                // to drop) between the last poll and now: look once more, so the stale value
                // does not stay pinned for the throttle period. Notices from now on drop it.
                submit {
                    if case .hit(let envelope) = await self.readL2(key), envelope.freshUntil > self.clock.nowMilliseconds() {
                        _ = self.fillL1(key, envelope)
                    }
                }
                return kept
            }
        }
        if let stale, let soft {
            return try await loadWithinSoftTimeout(load, soft: soft, stale: stale, lock: lock)
        }
        do {
            let value = try await whileHolding(lock) { try await loadAndStore(load) }
            if let lock { await release(lock) }
            return value
        } catch {
            if let lock { await release(lock) }
            return try serveStale(stale, for: key, after: error)
        }
    }

    /// Runs the loader (within the hard timeout), counting it and timing it.
    func runLoader(_ load: Load) async throws -> ByteBuffer {
        counters.loads.add(1, ordering: .relaxed)
        let start = clock.monotonicNanoseconds()
        defer { recordLoadDuration(since: start) }
        do {
            return try await withHardTimeout(load.loader)
        } catch {
            counters.loadErrors.add(1, ordering: .relaxed)
            throw error
        }
    }

    /// Records how long a load took (from `start`, on the monotonic clock).
    func recordLoadDuration(since start: Int64) {
        let elapsed = Duration.nanoseconds(clock.monotonicNanoseconds() - start)
        loadDurations.record(elapsed)
        exporter.loadDuration.recordNanoseconds(elapsed.wholeNanoseconds)
    }

    /// Runs the loader (within the hard timeout) and writes its value to both tiers.
    func loadAndStore(_ load: Load) async throws -> CachedValue {
        let value = try await runLoader(load)
        let now = clock.nowMilliseconds()
        let ttl = load.ttl(for: value, jitter: configuration.ttlJitter, now: now)
        // A derived value whose source expired during the load is answered, not shared stale.
        if load.freshNoLaterThan != nil, ttl <= .zero { return storeL1(load.key, value: value, ttl: ttl, now: now) }
        return await store(load.key, value: value, ttl: ttl, tagNow: true)
    }

    /// Loads without touching L2 on the way (no lock), storing in L1 at once and in L2 in the
    /// background.
    private func loadWithoutWaitingOnL2(_ load: Load) async throws -> CachedValue {
        let value = try await runLoader(load)
        let now = clock.nowMilliseconds()
        let ttl = load.ttl(for: value, jitter: configuration.ttlJitter, now: now)
        let cached = storeL1(load.key, value: value, ttl: ttl, now: now)
        if load.freshNoLaterThan != nil, ttl <= .zero { return cached }  // already stale: answered, not shared
        let entry = l2Entry(load.key, cached, ttl: ttl)
        if !submit({ await self.writeL2([entry]) }) { await writeL2([entry]) }
        return cached
    }

    /// The loader's failure, answered with the stale value when there is one (fail-safe): it
    /// then answers from L1 for the throttle period before the loader is tried again.
    func serveStale(_ stale: CacheEnvelope?, for key: String, after error: any Error) throws -> CachedValue {
        guard let stale else { throw error }
        counters.staleServed.add(1, ordering: .relaxed)
        logger.warning("loader failed, serving stale value", metadata: ["key": "\(key)", "error": "\(error)"])
        return keepStale(stale, for: key)
    }

    /// Puts a stale value in L1 for the fail-safe's throttle period (still marked stale: its
    /// freshness is in the past) and returns it.
    ///
    /// A fresh value that reached L1 meanwhile (a load that just ended) is kept, not replaced.
    func keepStale(_ stale: CacheEnvelope, for key: String) -> CachedValue {
        let now = clock.nowMilliseconds()
        var cached = stale.cachedValue
        cached.tier = .stale
        memory.setUnlessFresh(key, cached, expiresAt: now &+ configuration.failSafeThrottle.wholeMilliseconds, now: now)
        return cached
    }

    private func withHardTimeout(_ loader: @escaping @Sendable () async throws -> ByteBuffer) async throws -> ByteBuffer {
        guard let limit = configuration.hardTimeout else { return try await loader() }
        let clock = self.clock
        guard let value = try await withTimeLimit(limit, sleep: { try await clock.sleep(for: $0) }, loader) else {
            throw CacheError(.loaderTimeout, "the load took longer than the hard timeout (\(limit))")
        }
        return value
    }

    /// With a stale value at hand: start the load in the background and wait for it at most
    /// `soft`; past that, answer with the stale value and let the load finish and refresh the cache.
    private func loadWithinSoftTimeout(_ load: Load, soft: Duration, stale: CacheEnvelope, lock: LoadLock?) async throws -> CachedValue {
        let outcome = OneShot<CachedValue>()
        let submitted = submit {
            do {
                outcome.succeed(try await self.whileHolding(lock) { try await self.loadAndStore(load) })
            } catch {
                outcome.fail(error)
            }
            if let lock { await self.release(lock) }
        }
        guard submitted else {
            // The queue did not take it: load in the foreground (only here, never twice).
            return try await loadAndStoreOrStale(load, stale: stale, lock: lock)
        }
        switch await outcome.wait(timeout: soft, clock: clock) {
        case .value(let value):
            return value
        case .failed(let error):
            return try serveStale(stale, for: load.key, after: error)
        case .timedOut:
            counters.softTimeouts.add(1, ordering: .relaxed)
            counters.staleServed.add(1, ordering: .relaxed)
            // Until the load ends (and replaces it), the stale value answers from L1: the next
            // callers neither wait nor start loads of their own.
            return keepStale(stale, for: load.key)
        }
    }

    private func loadAndStoreOrStale(_ load: Load, stale: CacheEnvelope, lock: LoadLock?) async throws -> CachedValue {
        let result: Result<CachedValue, any Error>
        do {
            result = .success(try await whileHolding(lock) { try await loadAndStore(load) })
        } catch {
            result = .failure(error)
        }
        // Released in the background, or here when the queue does not take it: never lost.
        if let lock, !submit({ await self.release(lock) }) { await release(lock) }
        switch result {
        case .success(let value): return value
        case .failure(let error): return try serveStale(stale, for: load.key, after: error)
        }
    }

    /// Eager refresh: load the key again in the background (once per process at a time: not
    /// while another load of it runs).
    ///
    /// Callers that arrive while it runs (the value may expire meanwhile) wait for it. When it
    /// fails they do not get its error: they look again, and the first leads a load of its own,
    /// with the stale value as its fail-safe.
    func startRefresh(_ load: Load) {
        // Refused (counted) when the queue is full: the value then lives out its TTL.
        submit {
            guard self.flights.claim([load.key]).led.first != nil else { return }
            let value = try? await self.loadAndStore(load)
            if value != nil { self.counters.eagerRefreshes.add(1, ordering: .relaxed) }
            self.flights.finish([load.key: value.map { .success($0) }])
        }
    }
}
