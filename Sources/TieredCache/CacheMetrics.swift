import Synchronization

/// A snapshot of the cache's counters and state.
public struct CacheMetrics: Sendable, Hashable {
    /// Reads answered by L1.
    public var l1Hits: Int
    /// Reads answered by the L2 store (Redis).
    public var l2Hits: Int
    /// Reads neither tier could answer (including callers that waited for another caller's load).
    public var misses: Int
    /// Loader runs.
    public var loads: Int
    /// Loader runs that failed.
    public var loadErrors: Int
    /// Stale values served because the loader failed.
    public var staleServed: Int
    /// Callers that waited for another caller's load instead of loading.
    public var coalesced: Int
    /// L2 store calls that failed (cancelled calls are not counted). Named for Redis, the usual store.
    public var redisErrors: Int
    /// Values in the L2 store that were not valid envelopes (ignored).
    public var invalidValues: Int
    /// Times the cache fell back to memory because the shared store (Redis) failed.
    public var fallbackActivations: Int
    /// Whether a shared store (Redis) is in use now.
    public var redisConnected: Bool
    /// The last failure of the shared store while it is down.
    public var redisLastError: String?
    /// L1 entries.
    public var l1Entries: Int
    /// L1 bytes.
    public var l1Bytes: Int
    /// L1 evictions.
    public var l1Evictions: Int
    /// L1 expirations.
    public var l1Expirations: Int
    /// Keys being loaded now.
    public var loadsInFlight: Int
    /// Loads that waited for another instance's lock.
    public var lockWaits: Int
    /// Backplane notices sent.
    public var backplaneSent: Int
    /// Backplane notices received from other instances.
    public var backplaneReceived: Int
    /// Background refreshes done before expiry.
    public var eagerRefreshes: Int
    /// Loads that outlasted the soft timeout (a stale value answered meanwhile).
    public var softTimeouts: Int
    /// L2 reads cut short by the L2 soft timeout (the source answered instead).
    public var l2SoftTimeouts: Int
    /// Background jobs the queue refused (full or shut down): the work was done in the request
    /// instead, or, for an eager refresh, left to the next miss.
    public var backgroundRefused: Int = 0
    /// Times backplane notices may have been lost (the subscription dropped, or fell behind);
    /// L1 was flushed each time.
    public var backplaneGaps: Int = 0
    /// Load durations over the last 1,024 loads, in milliseconds: p50, p90, p99 and the maximum
    /// (nil before the first load).
    public var loadMilliseconds: LoadPercentiles?

    /// Percentiles of load durations, in milliseconds.
    public struct LoadPercentiles: Sendable, Hashable {
        /// Median.
        public var p50: Double
        /// 90th percentile.
        public var p90: Double
        /// 99th percentile.
        public var p99: Double
        /// Slowest.
        public var max: Double
    }

    /// All hits.
    public var hits: Int { l1Hits + l2Hits }
    /// All reads.
    public var totalRequests: Int { hits + misses }
    /// Hits as a percentage of reads, two decimals (0 before any read).
    public var hitRatePercent: Double {
        guard totalRequests > 0 else { return 0 }
        return (Double(hits) * 10_000 / Double(totalRequests)).rounded() / 100
    }
}

extension TieredCache {
    /// The counters now.
    public func metrics() -> CacheMetrics {
        let memoryStatistics = memory.statistics
        let circuitState = circuit.snapshot
        return CacheMetrics(
            l1Hits: memoryStatistics.hits,
            l2Hits: counters.l2Hits.load(ordering: .relaxed),
            misses: counters.misses.load(ordering: .relaxed),
            loads: counters.loads.load(ordering: .relaxed),
            loadErrors: counters.loadErrors.load(ordering: .relaxed),
            staleServed: counters.staleServed.load(ordering: .relaxed),
            coalesced: counters.coalesced.load(ordering: .relaxed),
            redisErrors: counters.l2Errors.load(ordering: .relaxed),
            invalidValues: counters.invalidValues.load(ordering: .relaxed),
            fallbackActivations: circuitState.openings,
            redisConnected: isRedisConnected,
            redisLastError: hasSharedStore ? circuitState.lastError : nil,
            l1Entries: memoryStatistics.entries,
            l1Bytes: memoryStatistics.bytes,
            l1Evictions: memoryStatistics.evictions,
            l1Expirations: memoryStatistics.expirations,
            loadsInFlight: flights.inFlight,
            lockWaits: counters.lockWaits.load(ordering: .relaxed),
            backplaneSent: counters.backplaneSent.load(ordering: .relaxed),
            backplaneReceived: counters.backplaneReceived.load(ordering: .relaxed),
            eagerRefreshes: counters.eagerRefreshes.load(ordering: .relaxed),
            softTimeouts: counters.softTimeouts.load(ordering: .relaxed),
            l2SoftTimeouts: counters.l2SoftTimeouts.load(ordering: .relaxed),
            backgroundRefused: counters.backgroundRefused.load(ordering: .relaxed),
            backplaneGaps: counters.backplaneGaps.load(ordering: .relaxed),
            loadMilliseconds: loadDurations.percentiles([50, 90, 99, 100]).map { .init(p50: $0[0], p90: $0[1], p99: $0[2], max: $0[3]) }
        )
    }
}
