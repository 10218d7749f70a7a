import MetricsTestKit
import NIOCore
import Synchronization
import TestSupport
import TieredCache
import Testing

@Suite("Tiered cache, L1 only", .timeLimit(.minutes(1)))
struct TieredCacheMemoryTests {
    @Test("getOrLoad loads once, then answers from L1; metrics count it")
    func readThrough() async throws {
        let cache = TieredCache(l2: nil)
        let loader = CountingLoader()
        #expect(try await cache.getOrLoad("k") { try await loader.load("v") } == buffer("v"))
        #expect(try await cache.getOrLoad("k") { try await loader.load("other") } == buffer("v"))
        #expect(await cache.get("k") == buffer("v"))
        #expect(await cache.get("nothing") == nil)
        #expect(loader.count == 1)
        let m = cache.metrics()
        #expect(m.hits == 2 && m.misses == 2 && m.loads == 1 && m.totalRequests == 4)
        #expect(m.hitRatePercent == 50)
        #expect(m.redisConnected == false)
        #expect(cache.backend == .memory)
    }

    @Test("a hundred concurrent callers of one cold key cause one load")
    func singleFlight() async throws {
        let cache = TieredCache(l2: nil)
        let gate = Gate()
        let loader = CountingLoader(gate: gate)
        let values = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for _ in 0..<100 { group.addTask { try await cache.getOrLoad("cold") { try await loader.load("once") } } }
            // The load is under way before it is let go (callers arriving later hit L1).
            #expect(await eventually { gate.arrivals == 1 && cache.metrics().loadsInFlight == 1 })
            gate.open()
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(values.count == 100)
        #expect(values.allSatisfy { $0 == buffer("once") })
        #expect(loader.count == 1)
        let m = cache.metrics()
        #expect(m.loads == 1)
        #expect(m.totalRequests == 100, "every caller is counted, as a hit or a miss")
        #expect(m.coalesced + m.hits == 99)
    }

    @Test("the counters reach swift-metrics: each export adds what they gained since the last")
    func swiftMetrics() async throws {
        let metrics = TestMetrics()
        let cache = TieredCache(l2: nil, metricsFactory: metrics)
        for _ in 0..<3 { _ = try await cache.getOrLoad("k") { buffer("v") } }
        cache.exportMetrics()
        #expect(try metrics.expectCounter("ibge_cache_hits_total", [("tier", "l1")]).totalValue == 2)
        #expect(try metrics.expectCounter("ibge_cache_misses_total").totalValue == 1)
        #expect(try metrics.expectCounter("ibge_cache_loads_total").totalValue == 1)
        #expect(try metrics.expectTimer("ibge_cache_load_duration_seconds").values.count == 1)
        _ = await cache.get("k")
        cache.exportMetrics()
        cache.exportMetrics()
        #expect(try metrics.expectCounter("ibge_cache_hits_total", [("tier", "l1")]).totalValue == 3, "no double counting")
        #expect(try metrics.expectGauge("ibge_cache_l1_entries").lastValue == 1)
    }

    @Test("load durations are measured on the cache's clock and reported as percentiles")
    func loadPercentiles() async throws {
        let clock = ManualClock()
        let cache = TieredCache(l2: nil, clock: .manual(clock))
        #expect(cache.metrics().loadMilliseconds == nil)
        // 99 loads take no time on the clock; one takes 250 ms of it.
        for i in 0..<99 { _ = try await cache.getOrLoad("fast\(i)") { buffer("f") } }
        _ = try await cache.getOrLoad("slow") {
            clock.advance(by: .milliseconds(250))
            return buffer("s")
        }
        let p = try #require(cache.metrics().loadMilliseconds)
        #expect(p.p50 == 0 && p.p90 == 0 && p.p99 == 0)
        #expect(p.max == 250)
    }

    @Test("a failing loader's error reaches every waiting caller, and nothing is cached")
    func loaderFailure() async throws {
        let cache = TieredCache(l2: nil)
        let gate = Gate()
        let loader = CountingLoader(gate: gate)
        loader.failing.store(true, ordering: .relaxed)
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask { (try? await cache.getOrLoad("bad") { try await loader.load("x") }) == nil }
            }
            #expect(await eventually { gate.arrivals == 1 && cache.metrics().misses == 1 })
            gate.open()
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 20)
        #expect(cache.metrics().loadErrors >= 1)
        loader.failing.store(false, ordering: .relaxed)
        #expect(try await cache.getOrLoad("bad") { try await loader.load("good") } == buffer("good"))
    }

    @Test("an expired value is loaded again")
    func ttl() async throws {
        let clock = ManualClock()
        let cache = TieredCache(l2: nil, clock: .manual(clock))
        let loader = CountingLoader()
        _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("v1") }
        clock.advance(by: .seconds(9))
        #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("v2") } == buffer("v1"))
        clock.advance(by: .seconds(2))
        #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("v2") } == buffer("v2"))
        #expect(loader.count == 2)
    }

    @Test("loaded keys get their TTL plus up to 10% jitter; negative answers get the negative TTL")
    func jitterAndNegative() async throws {
        let clock = ManualClock()
        let cache = TieredCache(l2: nil, clock: .manual(clock))
        let start = clock.now
        for i in 0..<200 {
            _ = try await cache.getOrLoad("k\(i)", ttl: .seconds(100)) { buffer("v") }
        }
        let expiries = (0..<200).compactMap { cache.memory.entry("k\($0)")?.expiresAt }
        #expect(expiries.count == 200)
        #expect(expiries.allSatisfy { $0 >= start + 100_000 && $0 <= start + 110_000 })
        #expect(Set(expiries).count > 100, "spread, not all at once")

        let empty = try await cache.getOrLoad("unknown", ttl: .seconds(3600), negativeTTL: .seconds(30), isNegative: { $0.readableBytes == 2 }) {
            buffer("[]")
        }
        #expect(empty == buffer("[]"))
        let expiresAt = try #require(cache.memory.entry("unknown")?.expiresAt)
        #expect(expiresAt >= start + 30_000 && expiresAt <= start + 33_000, "cached for the negative TTL, not the hour")
    }

    @Test("getMany single-flight: keys another caller (bulk or single) is loading are waited for, not loaded again")
    func getManySingleFlight() async throws {
        let cache = TieredCache(l2: nil)
        let gate = Gate()
        let loaded = LockedList()
        let loader: @Sendable ([String]) async throws -> [String: ByteBuffer] = { keys in
            loaded.append(keys)
            try await gate.wait()
            return Dictionary(uniqueKeysWithValues: keys.map { ($0, buffer("v-\($0)")) })
        }
        let answers = try await withThrowingTaskGroup(of: [String: ByteBuffer].self) { group in
            group.addTask { try await cache.getMany(["a", "b", "c"], loader: loader) }
            #expect(await eventually { gate.arrivals == 1 })
            for _ in 0..<10 { group.addTask { try await cache.getMany(["b", "c", "d"], loader: loader) } }
            for _ in 0..<10 {
                group.addTask {
                    let a = try await cache.getOrLoad("a") {
                        loaded.append(["a"])
                        return buffer("v-a")
                    }
                    return ["a": a]
                }
            }
            // One more load (of d, the only key no one was loading); every other caller waits.
            #expect(await eventually { gate.arrivals == 2 && cache.loadWaiters == 19 }, "\(gate.arrivals) loads, \(cache.loadWaiters) waiting")
            gate.open()
            return try await group.reduce(into: [[String: ByteBuffer]]()) { $0.append($1) }
        }
        #expect(loaded.all.flatMap { $0 }.sorted() == ["a", "b", "c", "d"], "each key loaded once: \(loaded.all)")
        #expect(answers.count == 21)
        for answer in answers {
            for (key, value) in answer { #expect(value == buffer("v-\(key)")) }
        }
        #expect(answers.filter { Set($0.keys) == ["b", "c", "d"] }.count == 10)
        #expect(cache.metrics().coalesced >= 19, "each waiter counted")
    }

    @Test("a request waiting for a bulk load of its key (which has no soft timeout of its own) answers stale at its soft timeout")
    func softTimeoutBehindBulk() async throws {
        let clock = ManualClock()
        let cache = TieredCache(
            configuration: .init(ttlJitter: 0, softTimeout: .seconds(2)), l2: InMemoryL2Store(clock: .manual(clock)), clock: .manual(clock))
        await cache.set("k", value: buffer("old"), ttl: .seconds(10))
        clock.advance(by: .seconds(11))  // stale now, still in L2 (grace)
        let gate = Gate()
        let bulk = Task { try await cache.getMany(["k", "j"]) { keys in
            try await gate.wait()
            return Dictionary(uniqueKeysWithValues: keys.map { ($0, buffer("new")) })
        } }
        #expect(await eventually { gate.arrivals == 1 })
        let single = Task { try await cache.getOrLoad("k") { buffer("single") } }
        #expect(await eventually { cache.loadWaiters == 1 })
        #expect(await clock.waitForSleepers(1))
        clock.advance(by: .seconds(2))
        #expect(try await single.value == buffer("old"), "the stale value at the soft timeout, while the bulk load goes on")
        #expect(cache.metrics().softTimeouts == 1)
        gate.open()
        #expect(try await bulk.value == ["k": buffer("new"), "j": buffer("new")])
        #expect(try await cache.getOrLoad("k") { buffer("single") } == buffer("new"), "the bulk load's value replaced it")
    }

    @Test("a failing bulk load still answers the waiters of the keys it found; the others get its error")
    func bulkFailureAnswersFoundKeys() async throws {
        let clock = ManualClock()
        // Not shared, so usable from the start without run(); two caches on it stand for two instances.
        let store = InMemoryL2Store(clock: .manual(clock))
        let writer = TieredCache(l2: store, clock: .manual(clock))
        let cache = TieredCache(l2: store, clock: .manual(clock))
        await writer.set("a", value: buffer("A"), ttl: .seconds(60))
        var faults = store.faults
        faults.readDelay = .seconds(1)
        store.faults = faults
        let bulk = Task { try await cache.getMany(["a", "b"]) { _ in throw LoaderFailure() } }
        #expect(await clock.waitForSleepers(1), "the bulk read of L2 is under way")
        let single = Task { try await cache.getOrLoad("a") { buffer("single") } }
        let other = Task { try await cache.getOrLoad("b") { buffer("single") } }
        #expect(await eventually { cache.loadWaiters == 2 })
        clock.advance(by: .seconds(1))
        await #expect(throws: LoaderFailure.self) { try await bulk.value }
        #expect(try await single.value == buffer("A"), "found in L2 by the bulk load: answered, not failed")
        await #expect(throws: LoaderFailure.self) { try await other.value }
    }

    @Test("a stale value kept by the fail-safe never replaces a fresh one that reached L1 meanwhile")
    func keepStaleUnlessFresh() {
        let clock = ManualClock()
        let store = MemoryStore(clock: .manual(clock))
        let fresh = CachedValue(value: buffer("fresh"), tag: 1, freshUntil: clock.now + 60_000, tier: .l1)
        let stale = CachedValue(value: buffer("stale"), tag: 2, freshUntil: clock.now - 1000, tier: .stale)
        store.set("k", fresh, expiresAt: fresh.freshUntil, now: clock.now)
        #expect(!store.setUnlessFresh("k", stale, expiresAt: clock.now + 30_000, now: clock.now))
        #expect(store.get("k") == buffer("fresh"))
        #expect(store.setUnlessFresh("other", stale, expiresAt: clock.now + 30_000, now: clock.now))
        #expect(store.get("other") == buffer("stale"))
        // An entry that is itself stale is replaced.
        #expect(store.setUnlessFresh("other", stale, expiresAt: clock.now + 30_000, now: clock.now))
    }

    @Test("memoized: an L1-only value computed once at a time, kept for its lifetime, never fresh, never in L2")
    func memoized() async throws {
        let clock = ManualClock()
        let l2 = InMemoryL2Store(clock: .manual(clock))
        let cache = TieredCache(l2: l2, clock: .manual(clock))
        let gate = Gate()
        let loader = CountingLoader(gate: gate)
        let values = try await withThrowingTaskGroup(of: CachedValue.self) { group in
            for _ in 0..<20 {
                group.addTask { try await cache.memoized("k|gzip", lifetime: .seconds(10)) { try await loader.load("z") } }
            }
            #expect(await eventually { gate.arrivals == 1 && cache.loadWaiters == 19 })
            gate.open()
            return try await group.reduce(into: [CachedValue]()) { $0.append($1) }
        }
        #expect(loader.count == 1, "computed once for twenty callers")
        #expect(values.allSatisfy { $0.value == buffer("z") && $0.freshUntil == 0 })
        #expect(try await l2.read("k|gzip") == .miss, "never written to L2")
        clock.advance(by: .seconds(11))
        _ = try await cache.memoized("k|gzip", lifetime: .seconds(10)) { try await loader.load("z") }
        #expect(loader.count == 2, "computed again after its lifetime")
    }

    @Test("a derived value stops being fresh with its source, however long its load took and whatever its jitter")
    func freshNoLaterThan() async throws {
        let clock = ManualClock()
        let cache = TieredCache(l2: InMemoryL2Store(clock: .manual(clock)), clock: .manual(clock))
        let sourceFreshUntil = clock.now + 10_000
        let derived = try await cache.getOrLoadValue("k|derived", ttl: .seconds(100), freshNoLaterThan: sourceFreshUntil) {
            clock.advance(by: .seconds(4))  // a slow load: the cap is absolute, not "10 s from the ask"
            return buffer("v")
        }
        #expect(derived.freshUntil == sourceFreshUntil)
        #expect(cache.memory.entry("k|derived")?.expiresAt == sourceFreshUntil)
        // A load that outlives its source is answered, and not written to L2 already stale.
        let late = try await cache.getOrLoadValue("k|late", ttl: .seconds(100), freshNoLaterThan: clock.now + 1000) {
            clock.advance(by: .seconds(2))
            return buffer("late")
        }
        #expect(late.value == buffer("late") && late.freshUntil <= clock.now)
        #expect(try await cache.l2?.read("k|late") == .miss)
        // Without a cap, the same load is fresh for its TTL (plus jitter) from when it was stored.
        let plain = try await cache.getOrLoadValue("k", ttl: .seconds(100)) { buffer("v") }
        #expect(plain.freshUntil >= clock.now + 100_000)
    }

    @Test("a loader past the hard timeout fails with a timeout error when the clock passes it")
    func hardTimeout() async throws {
        let clock = ManualClock()
        let cache = TieredCache(configuration: .init(hardTimeout: .seconds(90)), l2: nil, clock: .manual(clock))
        let gate = Gate()
        let slow = CountingLoader(gate: gate)
        async let outcome: Result<ByteBuffer, any Error> = {
            do { return .success(try await cache.getOrLoad("slow") { try await slow.load("late") }) } catch { return .failure(error) }
        }()
        try #require(await clock.waitForSleepers(1))
        #expect(await eventually { gate.arrivals == 1 })
        clock.advance(by: .seconds(89))
        #expect(clock.sleepers == 1, "the timeout has not fired at 89 s")
        clock.advance(by: .seconds(1))
        guard case .failure(let error) = await outcome else {
            Issue.record("the load should have timed out")
            return
        }
        #expect((error as? CacheError)?.code == .loaderTimeout)
        #expect(cache.metrics().loadErrors == 1)
    }

    @Test("clear empties L1; with no L2 there are no L2 keys to report")
    func clear() async throws {
        let cache = TieredCache(l2: nil)
        for i in 0..<10 { await cache.set("k\(i)", value: buffer("\(i)")) }
        let result = await cache.clear()
        #expect(result.memoryEntries == 10)
        #expect(result.l2Keys == nil)
        #expect(await cache.get("k1") == nil)
    }

    @Test("an in-process L2 keeps a value through its grace period, so the fail-safe works without Redis")
    func inProcessGrace() async throws {
        let clock = ManualClock()
        let cache = TieredCache(configuration: .init(ttlJitter: 0), l2: InMemoryL2Store(clock: .manual(clock)), clock: .manual(clock))
        #expect(cache.backend == .memory && !cache.hasSharedStore)
        let loader = CountingLoader()
        _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("old") }
        clock.advance(by: .seconds(11))
        loader.failing.store(true, ordering: .relaxed)
        #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
        #expect(cache.metrics().staleServed == 1)
        clock.advance(by: .seconds(24 * 3600))
        await #expect(throws: LoaderFailure.self) { try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } }
    }
}
