extension TieredCache {
    /// Settings of the cache policy.
    public struct Configuration: Sendable {
        /// How long a value is fresh when the caller gives no TTL.
        public var defaultTTL: Duration
        /// How long the L2 store keeps a value after it stops being fresh, to serve it if the
        /// loader fails.
        public var gracePeriod: Duration
        /// Limits of the in-process tier.
        public var memory: MemoryStore.Configuration
        /// First wait before probing the L2 store again after a failure.
        public var minimumRecoveryBackoff: Duration
        /// Longest wait between probes while the L2 store is down.
        public var maximumRecoveryBackoff: Duration
        /// How often a healthy L2 store is pinged, so an outage is noticed without traffic.
        public var healthCheckInterval: Duration
        /// How often expired L1 entries are swept.
        public var sweepInterval: Duration
        /// How long a load lock in the L2 store lives: the longest one instance may take to
        /// load a key before another gives up waiting and loads it too. Nil turns the lock off
        /// (single-flight stays, per process).
        public var lockTimeout: Duration?
        /// How often a caller waiting for another instance's load first looks for the value
        /// (the pause doubles up to 100 ms).
        public var lockPollInterval: Duration
        /// Whether set/remove/clear notices are exchanged with the other instances through the
        /// L2 store, so each drops the L1 entries another one changed.
        public var backplane: Bool
        /// After this fraction of its TTL, a read through ``TieredCache/getOrLoad(_:ttl:negativeTTL:isNegative:loader:)``
        /// returns the cached value and starts a refresh in the background, once (nil: off).
        /// Needs ``TieredCache/run()``.
        public var eagerRefreshFraction: Double?
        /// Loaded values live their TTL plus a random share of it up to this fraction, so keys
        /// loaded together do not all expire together.
        public var ttlJitter: Double
        /// After the loader failed and a stale value was served, the stale value answers from
        /// L1 for this long before the loader is tried again.
        public var failSafeThrottle: Duration
        /// With a stale value at hand, a load slower than this returns the stale value at once
        /// and goes on in the background, to refresh the cache when it ends (nil: wait). Needs
        /// ``TieredCache/run()``.
        public var softTimeout: Duration?
        /// A load slower than this fails (and a stale value, if any, is served) (nil: no limit).
        public var hardTimeout: Duration?
        /// An L2 read slower than this is treated as a miss (the source answers, and the value
        /// is written back in the background), so a slow store never makes a request slower
        /// than the source (nil: wait as long as the store does).
        public var l2SoftTimeout: Duration?
        /// Freshness written to and read from a shared store is judged on the store's clock
        /// (Redis `TIME`, read when the store connects and every ``clockSyncInterval``), so
        /// instances whose clocks differ agree on when a value stops being fresh. An offset
        /// larger than this is not believed (logged, and this process's clock is used).
        public var maximumClockOffset: Duration
        /// How often the store's clock is read again.
        public var clockSyncInterval: Duration

        /// Creates a configuration.
        public init(
            defaultTTL: Duration = .seconds(3600),
            gracePeriod: Duration = .seconds(24 * 3600),
            memory: MemoryStore.Configuration = MemoryStore.Configuration(),
            minimumRecoveryBackoff: Duration = .milliseconds(100),
            maximumRecoveryBackoff: Duration = .seconds(5),
            healthCheckInterval: Duration = .seconds(1),
            sweepInterval: Duration = .seconds(30),
            lockTimeout: Duration? = .seconds(10),
            lockPollInterval: Duration = .milliseconds(10),
            backplane: Bool = true,
            eagerRefreshFraction: Double? = 0.9,
            ttlJitter: Double = 0.1,
            failSafeThrottle: Duration = .seconds(30),
            softTimeout: Duration? = nil,
            hardTimeout: Duration? = nil,
            l2SoftTimeout: Duration? = nil,
            maximumClockOffset: Duration = .seconds(300),
            clockSyncInterval: Duration = .seconds(60)
        ) {
            self.maximumClockOffset = maximumClockOffset
            self.clockSyncInterval = clockSyncInterval
            self.defaultTTL = defaultTTL
            self.gracePeriod = gracePeriod
            self.memory = memory
            self.minimumRecoveryBackoff = minimumRecoveryBackoff
            self.maximumRecoveryBackoff = maximumRecoveryBackoff
            self.healthCheckInterval = healthCheckInterval
            self.sweepInterval = sweepInterval
            self.lockTimeout = lockTimeout
            self.lockPollInterval = lockPollInterval
            self.backplane = backplane
            self.eagerRefreshFraction = eagerRefreshFraction
            self.ttlJitter = ttlJitter
            self.failSafeThrottle = failSafeThrottle
            self.softTimeout = softTimeout
            self.hardTimeout = hardTimeout
            self.l2SoftTimeout = l2SoftTimeout
        }
    }

    /// Which tier serves as the shared store right now.
    public enum Backend: String, Sendable {
        /// A shared L2 store (Redis) is configured and answering.
        case redis
        /// A shared L2 store is configured but unreachable: memory and the source answer (fallback).
        case memoryFallback = "memory-fallback"
        /// No shared store: this process's memory only.
        case memory
    }
}
