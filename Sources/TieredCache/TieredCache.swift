public import Logging
public import NIOCore
public import Redis
public import ServiceLifecycle
import Synchronization
import RESP
public import CoreMetrics

/// A two-tier read-through cache: an in-process ``MemoryStore`` (L1) in front of Redis (L2).
///
/// - Reads go L1, then L2, then the loader, and fill the tiers on the way back.
/// - One load per key at a time in the process (single-flight): concurrent callers of a cold
///   key wait for the one load.
/// - Values in Redis are ``CacheEnvelope``s: fresh for the TTL, kept for TTL + grace, so a stale
///   value can still answer when the loader fails.
/// - Redis failures open a circuit: while it is open no request touches Redis (the cache serves
///   from L1 and the loader), and ``run()`` probes Redis with backoff and jitter until it answers,
///   then closes it. Nothing fails because Redis is down.
///
/// - Instances sharing Redis load a cold key once (a lock in Redis) and drop each other's
///   changed L1 entries (a backplane over pub/sub).
///
/// Keys given to the cache are relative: Redis sees ``Configuration/keyPrefix`` + key.
/// ``run()`` must be running (it is a swift-service-lifecycle `Service`) for the cache to use
/// Redis at all: it makes the first connection and every reconnection, listens to the backplane
/// and runs the background work (eager refreshes, loads past the soft timeout).
public final class TieredCache: Service, Sendable {
    /// Settings of the cache.
    public struct Configuration: Sendable {
        /// Prefix of every key this cache writes to Redis (`ibge:`); `clear` deletes only these.
        public var keyPrefix: String
        /// How long a value is fresh when the caller gives no TTL.
        public var defaultTTL: Duration
        /// How long Redis keeps a value after it stops being fresh, to serve it if the loader fails.
        public var gracePeriod: Duration
        /// Limits of the in-process tier.
        public var memory: MemoryStore.Configuration
        /// First wait before probing Redis again after a failure.
        public var minimumRecoveryBackoff: Duration
        /// Longest wait between probes while Redis is down.
        public var maximumRecoveryBackoff: Duration
        /// How often a healthy Redis is pinged, so an outage is noticed without traffic.
        public var healthCheckInterval: Duration
        /// How often expired L1 entries are swept.
        public var sweepInterval: Duration
        /// How long a distributed load lock lives (`SET … NX PX`): the longest one instance may
        /// take to load a key before another gives up waiting and loads it too. Nil turns the
        /// lock off (single-flight stays, per process).
        public var lockTimeout: Duration?
        /// How often a caller waiting for another instance's load looks for the value.
        public var lockPollInterval: Duration
        /// Whether set/remove/clear notices are exchanged with the other instances (pub/sub on
        /// `<prefix>backplane`), so each drops the L1 entries another one changed.
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
        /// A Redis read slower than this is treated as a miss (the source answers, and the
        /// value is written back to Redis in the background), so a slow Redis never makes a
        /// request slower than the source (nil: wait up to the command timeout).
        public var l2SoftTimeout: Duration?

        /// Creates a configuration.
        public init(
            keyPrefix: String = "ibge:",
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
            l2SoftTimeout: Duration? = nil
        ) {
            self.keyPrefix = keyPrefix
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
        /// Redis is configured and connected.
        case redis
        /// Redis is configured but unreachable: memory and the source answer (fallback).
        case memoryFallback = "memory-fallback"
        /// No Redis configured.
        case memory
    }

    /// The configuration.
    public let configuration: Configuration
    /// The in-process tier.
    public let memory: MemoryStore
    /// The Redis client, when Redis is configured.
    public let redis: RedisClient?
    let circuit = CircuitBreaker()
    let flights = SingleFlight()
    let counters = Counters()
    /// Durations of recent loads, for percentiles.
    let loadDurations = DurationSamples(capacity: 1024)
    /// The counters' way into swift-metrics.
    let exporter: MetricsExporter
    let logger: Logger
    let defaultTTLMilliseconds: Int64
    /// This instance's name on the backplane, so it ignores its own notices.
    public let instanceID: String
    /// Work that outlives the request that started it (eager refreshes, loads past the soft
    /// timeout), run by ``run()`` as child tasks.
    let background: AsyncStream<@Sendable () async -> Void>.Continuation
    private let backgroundJobs: AsyncStream<@Sendable () async -> Void>

    /// Creates a cache; pass `redis: nil` for a memory-only cache. Counters go to
    /// `metricsFactory` (default: the process-wide swift-metrics backend).
    public init(
        configuration: Configuration = Configuration(), redis: RedisClient?, clock: CacheClock = .system, logger: Logger = Logger(label: "cache"),
        metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.exporter = MetricsExporter(factory: metricsFactory)
        self.configuration = configuration
        self.memory = MemoryStore(configuration: configuration.memory, clock: clock)
        self.redis = redis
        self.logger = logger
        self.defaultTTLMilliseconds = configuration.defaultTTL.wholeMilliseconds
        self.instanceID = String(UInt64.random(in: .min ... .max), radix: 36)
        (self.backgroundJobs, self.background) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1024))
    }

    /// The pub/sub channel of the backplane.
    public var backplaneChannel: String { configuration.keyPrefix + "backplane" }

    var clock: CacheClock { memory.clock }

    /// Which tier serves as the shared store right now.
    public var backend: Backend {
        guard redis != nil else { return .memory }
        return circuit.isOpen ? .memoryFallback : .redis
    }

    /// Whether Redis is configured and the cache is using it.
    public var isRedisConnected: Bool { redis != nil && !circuit.isOpen }

    /// The Redis key of a cache key.
    public func redisKey(_ key: String) -> String { configuration.keyPrefix + key }

    // MARK: - Reads and writes

    /// The cached value of `key` from L1 or L2, or nil. Never calls a loader.
    nonisolated(nonsending) public func get(_ key: String) async -> ByteBuffer? {
        if let value = memory.get(key) { return value }
        if redis != nil, let envelope = await readL2(key), envelope.freshUntil > clock.nowMilliseconds() {
            counters.l2Hits.add(1, ordering: .relaxed)
            return fillL1(key, envelope)
        }
        counters.misses.add(1, ordering: .relaxed)
        return nil
    }

    /// Stores a value in both tiers, fresh for `ttl` (default ``Configuration/defaultTTL``).
    /// A Redis failure is absorbed (the value is in L1, and the circuit opens).
    nonisolated(nonsending) public func set(_ key: String, value: ByteBuffer, ttl: Duration? = nil) async {
        let now = clock.nowMilliseconds()
        let ttlMilliseconds = ttl?.wholeMilliseconds ?? defaultTTLMilliseconds
        let freshUntil = now &+ ttlMilliseconds
        let refreshAt = configuration.eagerRefreshFraction.map { now &+ Int64(Double(ttlMilliseconds) * $0) } ?? .max
        memory.set(key, value: value, expiresAt: freshUntil, now: now, refreshAt: refreshAt)
        if redis != nil && !circuit.isOpen {
            await writeL2(key, CacheEnvelope(freshUntil: freshUntil, payload: value), ttl: ttl ?? configuration.defaultTTL)
        }
    }

    /// The value of `key`: from L1, else L2, else by running `loader` and storing its result in
    /// both tiers.
    ///
    /// - The loader runs once per key at a time in this process (single-flight) and, with Redis,
    ///   in all the instances sharing it (a load lock in Redis; the others wait for the value).
    /// - Past ``Configuration/eagerRefreshFraction`` of its TTL, a hit starts one background
    ///   refresh. Values live `ttl` (or `negativeTTL` when `isNegative` says so) plus jitter.
    /// - When the loader fails or passes the hard timeout and Redis still holds a stale value
    ///   (within the grace period), the stale value is returned, counted as `staleServed`, and
    ///   reused for ``Configuration/failSafeThrottle``; otherwise the loader's error is thrown.
    ///   Past the soft timeout, the stale value is returned at once and the load goes on.
    public func getOrLoad(
        _ key: String,
        ttl: Duration? = nil,
        negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil,
        loader: @escaping @Sendable () async throws -> ByteBuffer
    ) async throws -> ByteBuffer {
        let load = Load(key: key, ttl: ttl ?? configuration.defaultTTL, negativeTTL: negativeTTL, isNegative: isNegative, loader: loader)
        if let (value, refresh) = memory.lookup(key) {
            if refresh { startRefresh(load) }
            return value
        }
        while true {
            switch try await flights.run(key, { try await self.loadThroughL2(load) }) {
            case .value(let value, let leader):
                if !leader {
                    // Nothing was cached when this caller asked: a miss, served by another caller's load.
                    counters.coalesced.add(1, ordering: .relaxed)
                    counters.misses.add(1, ordering: .relaxed)
                }
                return value
            case .retry:
                if let value = memory.get(key) { return value }
            }
        }
    }

    /// One key's load: how to run it and how long its value lives.
    struct Load: Sendable {
        var key: String
        var ttl: Duration
        var negativeTTL: Duration?
        var isNegative: (@Sendable (ByteBuffer) -> Bool)?
        var loader: @Sendable () async throws -> ByteBuffer

        /// The TTL for a value: the negative TTL for negative answers, plus jitter.
        func ttl(for value: ByteBuffer, jitter: Double) -> Duration {
            var base = ttl
            if let negativeTTL, let isNegative, isNegative(value) { base = negativeTTL }
            guard jitter > 0 else { return base }
            return base * (1 + Double.random(in: 0...jitter))
        }
    }

    private func loadThroughL2(_ load: Load) async throws -> ByteBuffer {
        let key = load.key
        // Another caller may have filled L1 while this one waited to lead.
        if let value = memory.get(key) { return value }
        var stale: CacheEnvelope?
        let read = await readL2Timed(key)
        if let envelope = read.envelope {
            if envelope.freshUntil > clock.nowMilliseconds() {
                counters.l2Hits.add(1, ordering: .relaxed)
                return fillL1(key, envelope)
            }
            stale = envelope
        }
        counters.misses.add(1, ordering: .relaxed)
        if read.slow {
            // Redis is slow: go to the source now, and write the value back behind the request.
            return try await loadWithoutWaitingOnRedis(load)
        }
        // Across instances: one of them loads, the others wait for its value in Redis.
        var lock: DistributedLock?
        switch await acquireLoadLock(key) {
        case .acquired(let held): lock = held
        case .valueAppeared(let value): return value
        case .proceed: break
        }
        if let stale, let soft = configuration.softTimeout {
            return try await loadWithinSoftTimeout(load, soft: soft, stale: stale, lock: lock)
        }
        do {
            let value = try await loadAndStore(load)
            if let lock { await release(lock) }
            return value
        } catch {
            if let lock { await release(lock) }
            return try serveStale(stale, for: key, after: error)
        }
    }

    private func recordLoadDuration(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        loadDurations.record(elapsed)
        let (seconds, attoseconds) = elapsed.components
        exporter.loadDuration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Runs the loader (within the hard timeout), counting it and timing it.
    private func runLoader(_ load: Load) async throws -> ByteBuffer {
        counters.loads.add(1, ordering: .relaxed)
        let start = ContinuousClock.now
        defer { recordLoadDuration(since: start) }
        do {
            return try await withHardTimeout(load.loader)
        } catch {
            counters.loadErrors.add(1, ordering: .relaxed)
            throw error
        }
    }

    /// Loads without touching Redis on the way (no lock), storing in L1 at once and in Redis in
    /// the background.
    private func loadWithoutWaitingOnRedis(_ load: Load) async throws -> ByteBuffer {
        let value = try await runLoader(load)
        let ttl = load.ttl(for: value, jitter: configuration.ttlJitter)
        let now = clock.nowMilliseconds()
        memory.set(load.key, value: value, expiresAt: now &+ ttl.wholeMilliseconds, now: now)
        background.yield { await self.set(load.key, value: value, ttl: ttl) }
        return value
    }

    /// Runs the loader (within the hard timeout) and writes its value to both tiers.
    func loadAndStore(_ load: Load) async throws -> ByteBuffer {
        let value = try await runLoader(load)
        await set(load.key, value: value, ttl: load.ttl(for: value, jitter: configuration.ttlJitter))
        return value
    }

    /// The loader's failure, answered with the stale value when there is one (fail-safe): it
    /// then answers from L1 for the throttle period before the loader is tried again.
    private func serveStale(_ stale: CacheEnvelope?, for key: String, after error: any Error) throws -> ByteBuffer {
        guard let stale else { throw error }
        counters.staleServed.add(1, ordering: .relaxed)
        logger.warning("loader failed, serving stale value", metadata: ["key": "\(key)", "error": "\(error)"])
        memory.set(key, value: stale.payload, expiresAt: clock.nowMilliseconds() &+ configuration.failSafeThrottle.wholeMilliseconds)
        return stale.payload
    }

    private func withHardTimeout(_ loader: @escaping @Sendable () async throws -> ByteBuffer) async throws -> ByteBuffer {
        guard let limit = configuration.hardTimeout else { return try await loader() }
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await loader() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw CacheError(.loaderTimeout, "the load took longer than the hard timeout (\(limit))")
            }
            return value
        }
    }

    /// With a stale value at hand: start the load in the background and wait for it at most
    /// `soft`; past that, answer with the stale value and let the load finish and refresh the cache.
    private func loadWithinSoftTimeout(_ load: Load, soft: Duration, stale: CacheEnvelope, lock: DistributedLock?) async throws -> ByteBuffer {
        let outcome = OneShot<ByteBuffer>()
        let submitted = background.yield {
            do {
                outcome.succeed(try await self.loadAndStore(load))
            } catch {
                outcome.fail(error)
            }
            if let lock { await self.release(lock) }
        }
        guard case .enqueued = submitted else {
            // No background runner: load in the foreground.
            outcome.fail(CacheError(.loaderFailed, "no background runner"))
            return try await loadAndStoreOrStale(load, stale: stale, lock: lock)
        }
        switch await outcome.wait(timeout: soft) {
        case .value(let value):
            return value
        case .failed(let error):
            return try serveStale(stale, for: load.key, after: error)
        case .timedOut:
            counters.softTimeouts.add(1, ordering: .relaxed)
            counters.staleServed.add(1, ordering: .relaxed)
            return stale.payload
        }
    }

    private func loadAndStoreOrStale(_ load: Load, stale: CacheEnvelope, lock: DistributedLock?) async throws -> ByteBuffer {
        defer { if let lock { background.yield { await self.release(lock) } } }
        do {
            return try await loadAndStore(load)
        } catch {
            return try serveStale(stale, for: load.key, after: error)
        }
    }

    /// Eager refresh: load the key again in the background (once per process at a time).
    private func startRefresh(_ load: Load) {
        background.yield {
            _ = try? await self.flights.run(load.key) {
                let value = try await self.loadAndStore(load)
                self.counters.eagerRefreshes.add(1, ordering: .relaxed)
                return value
            }
        }
    }

    /// Removes `key` from both tiers; returns whether each had it (`redis` is nil when Redis
    /// is not configured or not reachable).
    @discardableResult
    public func remove(_ key: String) async -> (memory: Bool, redis: Bool?) {
        let inMemory = memory.remove(key)
        guard let redis, !circuit.isOpen else { return (inMemory, nil) }
        do {
            let removed = try await redis.unlink([redisKey(key)]) > 0
            await publish(.remove, key)
            return (inMemory, removed)
        } catch {
            redisFailed(error)
            return (inMemory, nil)
        }
    }

    /// What ``clear()`` removed.
    public struct ClearResult: Sendable {
        /// Entries removed from L1.
        public var memoryEntries: Int
        /// Keys removed from Redis, or nil when Redis was not reachable.
        public var redisKeys: Int?
    }

    /// Removes every entry of L1 and every Redis key under the prefix (SCAN + UNLINK; other keys
    /// in the database are left alone, and FLUSHDB is never used).
    public func clear() async -> ClearResult {
        let memoryEntries = memory.removeAll()
        guard let redis, !circuit.isOpen else { return ClearResult(memoryEntries: memoryEntries, redisKeys: nil) }
        do {
            var removed = 0
            var cursor = "0"
            repeat {
                let step = try await redis.scan(cursor: cursor, match: Self.globEscaped(configuration.keyPrefix) + "*", count: 1000)
                if !step.keys.isEmpty { removed += try await redis.unlink(step.keys) }
                cursor = step.cursor
            } while cursor != "0"
            await publish(.clear, "")
            return ClearResult(memoryEntries: memoryEntries, redisKeys: removed)
        } catch {
            redisFailed(error)
            return ClearResult(memoryEntries: memoryEntries, redisKeys: nil)
        }
    }

    /// Counts the Redis keys under the prefix (walking at most `scanLimit` keys) and returns up
    /// to `sampleSize` of them; nil when Redis is not reachable.
    public func redisKeys(sampleSize: Int = 10, scanLimit: Int = 1_000_000) async -> (count: Int, sample: [String], complete: Bool)? {
        guard let redis, !circuit.isOpen else { return nil }
        do {
            var count = 0
            var sample: [String] = []
            var cursor = "0"
            repeat {
                let step = try await redis.scan(cursor: cursor, match: Self.globEscaped(configuration.keyPrefix) + "*", count: 1000)
                count += step.keys.count
                for key in step.keys where sample.count < sampleSize { sample.append(key) }
                cursor = step.cursor
            } while cursor != "0" && count < scanLimit
            return (count, sample, cursor == "0")
        } catch {
            redisFailed(error)
            return nil
        }
    }

    /// Pings Redis now; returns the round trip, or nil when it failed or no Redis is configured.
    public func pingRedis() async -> Duration? {
        guard let redis else { return nil }
        let start = ContinuousClock.now
        do {
            _ = try await redis.ping()
            return ContinuousClock.now - start
        } catch {
            redisFailed(error)
            return nil
        }
    }

    static func globEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }

    // MARK: - L2

    func readL2(_ key: String) async -> CacheEnvelope? {
        await readL2Timed(key).envelope
    }

    /// Reads a key from Redis: the envelope (nil when absent, unreachable, or not an envelope),
    /// and whether the read was cut short by the L2 soft timeout.
    func readL2Timed(_ key: String) async -> (envelope: CacheEnvelope?, slow: Bool) {
        guard let redis, !circuit.isOpen else { return (nil, false) }
        let raw: ByteBuffer?
        do {
            if let limit = configuration.l2SoftTimeout {
                guard let reply = try await redis.send(RESPCommand("GET", redisKey(key)), answerWithin: limit) else {
                    counters.l2SoftTimeouts.add(1, ordering: .relaxed)
                    return (nil, true)
                }
                raw = reply.bytes
            } else {
                raw = try await redis.get(redisKey(key))
            }
        } catch {
            redisFailed(error)
            return (nil, false)
        }
        guard let raw else { return (nil, false) }
        do {
            return (try CacheEnvelope(decoding: raw), false)
        } catch {
            counters.invalidValues.add(1, ordering: .relaxed)
            logger.warning("ignoring an invalid value in Redis", metadata: ["key": "\(redisKey(key))", "error": "\(error)"])
            return (nil, false)
        }
    }

    /// Writes the value (`SET … PX ttl+grace`) and, with the backplane on, announces it
    /// (`PUBLISH`) in the same round trip.
    private func writeL2(_ key: String, _ envelope: CacheEnvelope, ttl: Duration) async {
        guard let redis, !circuit.isOpen else { return }
        var commands = [setCommand(key, envelope, ttl: ttl)]
        if configuration.backplane { commands.append(backplaneNotice(.set, key)) }
        do {
            let replies = try await redis.pipeline(commands)
            if let message = replies.lazy.compactMap(\.errorMessage).first { throw RedisError(.serverError, message) }
            if replies.count > 1 { counters.backplaneSent.add(1, ordering: .relaxed) }
        } catch {
            redisFailed(error)
        }
    }

    /// `SET <prefix><key> <envelope> PX <ttl + grace>`.
    func setCommand(_ key: String, _ envelope: CacheEnvelope, ttl: Duration) -> RESPCommand {
        let payload = envelope.encoded()
        var command = RESPCommand("SET", capacity: payload.readableBytes + key.utf8.count + 64)
        command.append(redisKey(key))
        command.append(payload)
        command.append("PX")
        command.append(Int(max(1, (ttl + configuration.gracePeriod).wholeMilliseconds)))
        return command
    }

    func fillL1(_ key: String, _ envelope: CacheEnvelope) -> ByteBuffer {
        // Copy out of the (possibly much larger) read buffer the reply arrived in.
        var value = ByteBufferAllocator().buffer(capacity: envelope.payload.readableBytes)
        value.writeImmutableBuffer(envelope.payload)
        memory.set(key, value: value, expiresAt: envelope.freshUntil)
        return value
    }

    func redisFailed(_ error: any Error) {
        guard let redisError = error as? RedisError else { return }
        counters.redisErrors.add(1, ordering: .relaxed)
        guard redisError.isConnectivityFailure else { return }
        if circuit.trip("\(redisError)", now: clock.nowMilliseconds()) {
            logger.warning("Redis unavailable: serving from memory until it answers again", metadata: ["error": "\(redisError)"])
        }
    }

    // MARK: - Service

    /// Connects to Redis, watches it (probing with exponential backoff and jitter while it is
    /// down, pinging it while it is up) and sweeps expired L1 entries, until cancelled or told
    /// to shut down gracefully.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.watch() }
                if self.redis != nil && self.configuration.backplane {
                    group.addTask { await self.listen() }
                }
                group.addTask {
                    await withDiscardingTaskGroup { jobs in
                        for await job in self.backgroundJobs {
                            jobs.addTask { await job() }
                        }
                    }
                }
            }
        }
    }

    private func watch() async {
        var backoff = configuration.minimumRecoveryBackoff
        var sinceSweep = Duration.zero
        var reportedFirstFailure = false
        while !Task.isCancelled {
            var pause = configuration.healthCheckInterval
            if redis != nil {
                if circuit.isOpen {
                    if await pingRedis() != nil {
                        if circuit.reset(now: clock.nowMilliseconds()) {
                            logger.info("Redis connected", metadata: ["endpoint": "\(redis?.configuration.endpoint.description ?? "")"])
                            if configuration.backplane, circuit.snapshot.openings > 0 {
                                // Notices sent while we could not hear them are lost: what L1 holds may be stale.
                                let dropped = memory.removeAll()
                                logger.info("L1 flushed after the Redis outage", metadata: ["entries": "\(dropped)"])
                            }
                        }
                        backoff = configuration.minimumRecoveryBackoff
                    } else {
                        if !reportedFirstFailure && circuit.snapshot.openings == 0 {
                            logger.warning(
                                "Redis not reachable: serving from memory, retrying in the background",
                                metadata: ["error": "\(circuit.snapshot.lastError ?? "")"])
                        }
                        reportedFirstFailure = true
                        pause = Self.jittered(backoff)
                        backoff = min(backoff * 2, configuration.maximumRecoveryBackoff)
                    }
                } else {
                    _ = await pingRedis()
                }
            }
            exportMetrics()
            sinceSweep += pause
            if sinceSweep >= configuration.sweepInterval {
                memory.removeExpired()
                sinceSweep = .zero
            }
            do {
                try await Task.sleep(for: pause)
            } catch {
                return
            }
        }
    }

    /// `backoff` spread by ±25 %, so instances that lost Redis together do not retry in step.
    static func jittered(_ backoff: Duration) -> Duration {
        backoff * Double.random(in: 0.75...1.25)
    }
}

/// Counters of the cache, updated with relaxed atomics off the L1-hit path.
final class Counters: Sendable {
    let l2Hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let loads = Atomic<Int>(0)
    let loadErrors = Atomic<Int>(0)
    let staleServed = Atomic<Int>(0)
    let coalesced = Atomic<Int>(0)
    let redisErrors = Atomic<Int>(0)
    let invalidValues = Atomic<Int>(0)
    let lockWaits = Atomic<Int>(0)
    let eagerRefreshes = Atomic<Int>(0)
    let l2SoftTimeouts = Atomic<Int>(0)
    let softTimeouts = Atomic<Int>(0)
    let backplaneSent = Atomic<Int>(0)
    let backplaneReceived = Atomic<Int>(0)
}
