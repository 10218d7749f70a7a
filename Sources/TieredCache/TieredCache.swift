public import CoreMetrics
public import Logging
public import NIOCore
public import ServiceLifecycle
import Synchronization
import Utilities

/// A two-tier read-through cache: an in-process ``MemoryStore`` (L1) in front of an
/// ``L2Store`` (Redis, through `RedisStore`, or ``InMemoryL2Store``).
///
/// The cache holds the policy; the stores only store:
/// - Reads go L1, then L2, then the loader, and fill the tiers on the way back.
/// - One load per key at a time in the process (single-flight): concurrent callers of a cold
///   key wait for the one load; with a shared store, one load across instances (a load lock in
///   the store; the others wait for the value).
/// - Values in L2 are ``CacheEnvelope``s: fresh for the TTL, kept for TTL + grace, so a stale
///   value can still answer when the loader fails (fail-safe).
/// - Store failures open a circuit: while it is open no request touches the store (the cache
///   serves from L1 and the loader), and ``run()`` probes it with backoff and jitter until it
///   answers, then closes it. Nothing fails because the store is down.
/// - Instances sharing a store drop each other's changed L1 entries (the backplane).
///
/// Every decision that depends on time reads the injected ``CacheClock``, so tests drive time
/// by hand. ``run()`` must be running (it is a swift-service-lifecycle `Service`) for the cache
/// to use a shared store at all: it makes the first connection and every reconnection,
/// listens to the backplane and runs the background work (eager refreshes, loads past the soft
/// timeout).
public final class TieredCache: Service, Sendable {
    /// The configuration.
    public let configuration: Configuration
    /// The in-process tier.
    package let memory: MemoryStore
    /// The shared tier, if any.
    package let l2: (any L2Store)?
    /// Whether there is an L2 (a plain flag: testing the existential costs a copy on the hot path).
    let hasL2: Bool
    let circuit: CircuitBreaker
    let flights = SingleFlight()
    /// Milliseconds to add to ``clock`` to read the shared store's clock (see
    /// ``Configuration/maximumClockOffset``); freshness crosses the L2 boundary through it.
    let storeClockOffset = Atomic<Int64>(0)
    /// Whether a ping of the L2 store has ended, answered or not (see ``hasTriedL2``).
    let l2Attempted = Atomic<Bool>(false)
    /// When the last "notices may have been lost" warning was logged (monotonic ns).
    let gapWarnings = Throttle(interval: .seconds(1))
    /// The last overview of L2 for status; whether one is being taken; and this instance's
    /// L2 writes so far (an overview taken before the latest one is out of date).
    let overview = Mutex<OverviewState>(OverviewState())
    let counters = Counters()
    /// Durations of recent loads, for percentiles.
    let loadDurations = DurationSamples(capacity: 1024)
    /// The counters' way into swift-metrics.
    let exporter: MetricsExporter
    let logger: Logger
    /// ``Configuration/defaultTTL`` in milliseconds, computed once (a `Duration`'s components
    /// cost a 128-bit division, more than the rest of an L1 write).
    let defaultTTLMilliseconds: Int64
    /// This instance's name on the backplane, so it ignores its own notices.
    public let instanceID: String
    /// Work that outlives the request that started it (eager refreshes, loads past the soft
    /// timeout), run by ``run()`` as child tasks.
    let background: AsyncStream<@Sendable () async -> Void>.Continuation
    let backgroundJobs: AsyncStream<@Sendable () async -> Void>

    /// Creates a cache over `l2` (nil: L1 only). Time comes from `clock`; counters go to
    /// `metricsFactory` (default: the process-wide swift-metrics backend).
    public init(
        configuration: Configuration = Configuration(), l2: (any L2Store)?, clock: CacheClock = .system,
        logger: Logger = Logger(label: "cache"), metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.exporter = MetricsExporter(factory: metricsFactory, sharedStore: l2?.isShared ?? false)
        self.configuration = configuration
        self.memory = MemoryStore(configuration: configuration.memory, clock: clock)
        self.l2 = l2
        self.hasL2 = l2 != nil
        self.circuit = CircuitBreaker(open: l2?.isShared ?? false)
        self.defaultTTLMilliseconds = configuration.defaultTTL.wholeMilliseconds
        self.logger = logger
        self.instanceID = String(UInt64.random(in: .min ... .max), radix: 36)
        // When full, a new job is refused (``submit(_:)`` says so); the queued ones stay.
        (self.backgroundJobs, self.background) = AsyncStream.makeStream(bufferingPolicy: .bufferingOldest(Self.backgroundQueueCapacity))
    }

    var clock: CacheClock { memory.clock }

    /// Milliseconds this process's clock is behind the shared store's (negative: ahead), as
    /// last measured and believed.
    package var clockOffsetMilliseconds: Int64 { storeClockOffset.load(ordering: .relaxed) }

    /// Callers waiting for another caller's load of their key in this process now.
    package var loadWaiters: Int { flights.waiting }

    /// Most background jobs waiting to start.
    static let backgroundQueueCapacity = 1024
    /// Most background jobs running at once.
    static let maximumRunningJobs = 64

    /// Hands `job` to the background runner. False when it is not taken (the queue is full, or
    /// the cache has shut down), counted in ``CacheMetrics/backgroundRefused``: the caller then
    /// does the work itself or gives it up knowingly. A job is never run twice nor dropped
    /// unseen.
    @discardableResult
    func submit(_ job: @escaping @Sendable () async -> Void) -> Bool {
        counters.backgroundQueued.add(1, ordering: .relaxed)
        if case .enqueued = background.yield(job) { return true }
        counters.backgroundQueued.subtract(1, ordering: .relaxed)
        counters.backgroundRefused.add(1, ordering: .relaxed)
        return false
    }

    /// Which tier serves as the shared store right now.
    public var backend: Backend {
        guard let l2, l2.isShared else { return .memory }
        return circuit.isOpen ? .memoryFallback : .redis
    }

    /// Whether a shared store (Redis) is configured and the cache is using it.
    public var isRedisConnected: Bool { backend == .redis }

    /// Whether a shared store is configured, reachable or not.
    public var hasSharedStore: Bool { l2?.isShared ?? false }

    /// The L2 store when the circuit lets the cache use it.
    var usableL2: (any L2Store)? { circuit.isOpen ? nil : l2 }

    /// The origin announced with changes, when the backplane is on and someone shares the store.
    var noticeOrigin: String? { configuration.backplane && hasSharedStore ? instanceID : nil }

    // MARK: - Reads and writes

    /// The cached value of `key` from L1 or L2, or nil. Never calls a loader.
    nonisolated(nonsending) public func get(_ key: String) async -> ByteBuffer? {
        if let value = memory.get(key) { return value }
        if hasL2, case .hit(let envelope) = await readL2(key), envelope.freshUntil > clock.nowMilliseconds() {
            counters.l2Hits.add(1, ordering: .relaxed)
            return fillL1(key, envelope).value
        }
        counters.misses.add(1, ordering: .relaxed)
        return nil
    }

    /// Stores a value in both tiers, fresh for `ttl` (default ``Configuration/defaultTTL``),
    /// with its ``ContentTag``. A store failure is absorbed (the value is in L1, and the circuit opens).
    nonisolated(nonsending) public func set(_ key: String, value: ByteBuffer, ttl: Duration? = nil) async {
        guard hasL2 else {
            // L1 only: nothing to return or to write on, so nothing more than the store itself.
            _ = storeL1(key, value: value, ttlMilliseconds: ttl?.wholeMilliseconds ?? defaultTTLMilliseconds, now: clock.nowMilliseconds(), tagNow: false)
            return
        }
        _ = await store(key, value: value, ttl: ttl, tagNow: true)
    }

    /// Stores a value in both tiers (as ``set(_:value:ttl:)``) and returns it with its
    /// freshness, and its tag when `tagNow` (or an L2 envelope needs it).
    nonisolated(nonsending) func store(_ key: String, value: ByteBuffer, ttl: Duration?, tagNow: Bool) async -> CachedValue {
        let now = clock.nowMilliseconds()
        let cached = storeL1(key, value: value, ttlMilliseconds: ttl?.wholeMilliseconds ?? defaultTTLMilliseconds, now: now, tagNow: tagNow)
        if hasL2 { await writeL2([l2Entry(key, cached, ttl: ttl ?? configuration.defaultTTL)]) }
        return cached
    }

    /// The value of `key`: from L1, else L2, else by running `loader` and storing its result in
    /// both tiers.
    ///
    /// - The loader runs once per key at a time in this process (single-flight) and, with a
    ///   shared store, in all the instances sharing it (a load lock; the others wait for the value).
    /// - Past ``Configuration/eagerRefreshFraction`` of its TTL, a hit starts one background
    ///   refresh. Values live `ttl` (or `negativeTTL` when `isNegative` says so) plus jitter.
    /// - When the loader fails or passes the hard timeout and L2 still holds a stale value
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
        try await getOrLoadValue(key, ttl: ttl, negativeTTL: negativeTTL, isNegative: isNegative, loader: loader).value
    }

    /// As ``getOrLoad(_:ttl:negativeTTL:isNegative:loader:)``, with the value's tag and
    /// freshness (for HTTP validators and `max-age`).
    ///
    /// `freshNoLaterThan` (milliseconds on the cache's clock, ``MemoryStore/clock``) caps the freshness of a loaded value,
    /// whenever it is stored: a value derived from another (a compressed variant) then expires
    /// with its source even when the load took a while.
    public func getOrLoadValue(
        _ key: String,
        ttl: Duration? = nil,
        freshNoLaterThan: Int64? = nil,
        negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil,
        loader: @escaping @Sendable () async throws -> ByteBuffer
    ) async throws -> CachedValue {
        let load = Load(
            key: key, ttl: ttl ?? configuration.defaultTTL, negativeTTL: negativeTTL, isNegative: isNegative, loader: loader,
            freshNoLaterThan: freshNoLaterThan)
        if let (value, refresh) = memory.lookupValue(key, consumeRefresh: true) {
            if refresh { startRefresh(load) }
            return value
        }
        // Waiting for another caller's load (a bulk one has no soft timeout of its own) ends at the
        // soft timeout too, to answer with the stale value if there is one.
        var waitAtMost = hasL2 ? configuration.softTimeout : nil
        while true {
            switch try await flights.run(key, waitAtMost: waitAtMost, clock: clock, { try await self.loadThroughL2(load) }) {
            case .value(let value, let leader):
                if !leader {
                    // Nothing was cached when this caller asked: a miss, served by another caller's load.
                    counters.coalesced.add(1, ordering: .relaxed)
                    counters.misses.add(1, ordering: .relaxed)
                }
                return value
            case .retry:
                if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { return value }
            case .waitedTooLong:
                if let (value, _) = memory.lookupValue(key, consumeRefresh: false) { return value }
                if case .hit(let envelope) = await readL2(key, answerWithin: configuration.l2SoftTimeout) {
                    if envelope.freshUntil > clock.nowMilliseconds() { return fillL1(key, envelope) }
                    counters.softTimeouts.add(1, ordering: .relaxed)
                    counters.staleServed.add(1, ordering: .relaxed)
                    return keepStale(envelope, for: key)
                }
                // Nothing stale to answer with: wait for the load after all.
                waitAtMost = nil
            }
        }
    }

    /// A value kept in this process's L1 only, for `lifetime`, computed by `compute` when L1
    /// lacks it: once at a time per key (callers that arrive meanwhile wait for that result).
    /// It is not fresh (``CachedValue/freshUntil`` is 0) and never reaches L2: for what is
    /// derived from an answer that is not fresh itself, such as the compressed body of a
    /// fallback, so an outage does not compress per request.
    public func memoized(_ key: String, lifetime: Duration, compute: @Sendable () async throws -> ByteBuffer) async throws -> CachedValue {
        while true {
            if let (kept, _) = memory.lookupValue(key, consumeRefresh: false) { return kept }
            let outcome = try await flights.run(key) {
                let value = try await compute()
                let cached = CachedValue(value: value, tag: ContentTag.of(value), freshUntil: 0, tier: .stale)
                let now = clock.nowMilliseconds()
                memory.set(key, cached, expiresAt: now &+ lifetime.wholeMilliseconds, now: now)
                return cached
            }
            if case .value(let value, _) = outcome { return value }
        }
    }

    // MARK: - Tiers

    /// Stores a value in L1 with its eager-refresh time; returns it with when it stops being
    /// fresh. The tag is computed here when asked (`tagNow`: a loaded value, answered at once
    /// with its validator, or one an L2 envelope will carry); else it is left to the first
    /// read that asks for it (``MemoryStore/lookupValue(_:consumeRefresh:)``), so a plain
    /// ``set(_:value:ttl:)`` of an L1-only cache costs no hashing.
    @inline(__always)
    func storeL1(_ key: String, value: ByteBuffer, ttl: Duration, now: Int64) -> CachedValue {
        storeL1(key, value: value, ttlMilliseconds: ttl.wholeMilliseconds, now: now, tagNow: true)
    }

    @inline(__always)
    func storeL1(_ key: String, value: ByteBuffer, ttlMilliseconds: Int64, now: Int64, tagNow: Bool) -> CachedValue {
        let tag = tagNow || hasL2 ? ContentTag.of(value) : 0
        let freshUntil = now &+ ttlMilliseconds
        let refreshAt = configuration.eagerRefreshFraction.map { now &+ Int64(Double(ttlMilliseconds) * $0) } ?? .max
        memory.set(key, value: value, expiresAt: freshUntil, now: now, refreshAt: refreshAt, tag: tag)
        // Built after the store, so a caller that drops it (`set` on an L1-only cache) costs no copy.
        return CachedValue(value: value, tag: tag, freshUntil: freshUntil, tier: .source)
    }

    /// The L2 entry of a value: its envelope (with its tag), kept for its TTL plus the grace period.
    func l2Entry(_ key: String, _ cached: CachedValue, ttl: Duration) -> L2Entry {
        L2Entry(
            key: key,
            envelope: CacheEnvelope(
                freshUntil: cached.freshUntil &+ storeClockOffset.load(ordering: .relaxed), payload: cached.value, tag: cached.tag),
            lifetime: ttl + configuration.gracePeriod)
    }

    /// Reads a key from L2 (a miss when there is none, it is unusable, or the value is not an
    /// envelope). With `limit`, a read that has not answered when the clock passes it is
    /// cancelled and reported as ``L2Read/tooSlow``.
    func readL2(_ key: String, answerWithin limit: Duration? = nil) async -> L2Read {
        guard let l2 = usableL2 else { return .miss }
        do throws(L2StoreError) {
            let read: L2Read
            if let limit {
                read = try await race(l2, key, limit)
            } else {
                read = try await l2.read(key)
            }
            switch read {
            case .invalid(let reason):
                counters.invalidValues.add(1, ordering: .relaxed)
                logger.warning("ignoring an invalid value in the L2 store", metadata: ["key": "\(key)", "error": "\(reason)"])
                return .miss
            case .tooSlow:
                counters.l2SoftTimeouts.add(1, ordering: .relaxed)
                return .tooSlow
            case .hit, .miss:
                return onLocalClock(read)
            }
        } catch {
            l2Failed(error)
            return .miss
        }
    }

    /// A read from L2 with its freshness moved from the store's clock to this process's.
    func onLocalClock(_ read: L2Read) -> L2Read {
        let offset = storeClockOffset.load(ordering: .relaxed)
        guard offset != 0, case .hit(var envelope) = read else { return read }
        envelope.freshUntil = envelope.freshUntil &- offset
        return .hit(envelope)
    }

    /// Measures the offset between this process's clock and the shared store's (half the
    /// round trip counted as the store's answer time); believes it within
    /// ``Configuration/maximumClockOffset``, and ignores differences under 20 ms (the resolution
    /// of the coarse clock and of one round trip).
    func syncClockWithStore() async {
        guard let l2, l2.isShared else { return }
        let before = clock.nowMilliseconds()
        let started = clock.monotonicNanoseconds()
        guard let storeNow = try? await l2.time() else { return }
        let roundTrip = (clock.monotonicNanoseconds() - started) / 1_000_000
        // Too slow an answer says too little about when the store read its clock: the offset
        // known so far stays (zero until one is measured), and the next sync tries again.
        guard roundTrip <= 100 else {
            logger.debug("the L2 store's clock not read: the answer took too long", metadata: ["round_trip_ms": "\(roundTrip)"])
            return
        }
        var offset = storeNow - (before + roundTrip / 2)
        if abs(offset) < 20 { offset = 0 }
        if abs(offset) > configuration.maximumClockOffset.wholeMilliseconds {
            logger.warning(
                "the L2 store's clock differs from this process's by more than the allowed offset: judging freshness on this process's clock",
                metadata: ["offset_ms": "\(offset)", "allowed_ms": "\(configuration.maximumClockOffset.wholeMilliseconds)"])
            offset = 0
        }
        let previous = storeClockOffset.exchange(offset, ordering: .relaxed)
        if abs(offset - previous) >= 1000 {
            logger.info("judging freshness on the L2 store's clock", metadata: ["offset_ms": "\(offset)"])
        }
    }

    /// Writes entries to L2, announcing them on the backplane in the same round trip.
    func writeL2(_ entries: [L2Entry]) async {
        guard let l2 = usableL2, !entries.isEmpty else { return }
        do {
            let origin = noticeOrigin
            try await l2.write(entries, notify: origin)
            forgetOverview()
            if origin != nil { counters.backplaneSent.add(entries.count, ordering: .relaxed) }
        } catch {
            l2Failed(error)
        }
    }

    /// Puts a value read from L2 into L1 (with the tag it was stored with) and returns it.
    func fillL1(_ key: String, _ envelope: CacheEnvelope) -> CachedValue {
        // Copy out of the (possibly much larger) read buffer the reply arrived in.
        var value = ByteBufferAllocator().buffer(capacity: envelope.payload.readableBytes)
        value.writeImmutableBuffer(envelope.payload)
        let cached = CachedValue(value: value, tag: envelope.tag, freshUntil: envelope.freshUntil, tier: .l2)
        memory.set(key, cached, expiresAt: envelope.freshUntil, now: clock.nowMilliseconds())
        return cached
    }

    /// Reads `key`, or gives up when the clock passes `limit` first (the read is cancelled).
    private func race(_ l2: any L2Store, _ key: String, _ limit: Duration) async throws(L2StoreError) -> L2Read {
        let clock = self.clock
        let first: Result<L2Read, L2StoreError>? = await withTaskGroup(of: Result<L2Read, L2StoreError>?.self) { group in
            group.addTask {
                do throws(L2StoreError) {
                    return .success(try await l2.read(key))
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                do {
                    try await clock.sleep(for: limit)
                    return .success(.tooSlow)
                } catch {
                    return nil  // the read answered first
                }
            }
            defer { group.cancelAll() }
            while let next = await group.next() {
                if let next { return next }
            }
            return nil
        }
        guard let first else { throw L2StoreError(.cancelled, "the read was cancelled") }
        return try first.get()
    }

    /// Counts an L2 failure; one that says the store is unreachable opens the circuit. A
    /// cancelled call is nobody's failure and is not counted.
    func l2Failed(_ error: L2StoreError) {
        guard error.code != .cancelled else { return }
        counters.l2Errors.add(1, ordering: .relaxed)
        guard error.code == .unavailable else { return }
        if circuit.trip(error.message, now: clock.nowMilliseconds()) {
            logger.warning("L2 store unavailable: serving from memory until it answers again", metadata: ["error": "\(error.message)"])
        }
    }
}
