import Logging
import MetricsTestKit
import NIOCore
import Redis
import Synchronization
import TestSupport
import TieredCache
import Testing

private func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

/// Counts loader runs and can be told to fail.
final class CountingLoader: Sendable {
    let calls = Atomic<Int>(0)
    let failing = Atomic<Bool>(false)
    let delay: Duration

    init(delay: Duration = .zero) { self.delay = delay }

    func load(_ value: String) async throws -> ByteBuffer {
        calls.add(1, ordering: .relaxed)
        if delay > .zero { try await Task.sleep(for: delay) }
        if failing.load(ordering: .relaxed) { throw LoaderFailure() }
        return buffer(value)
    }

    var count: Int { calls.load(ordering: .relaxed) }
}

struct LoaderFailure: Error {}

/// Runs the cache's service loop (Redis watch) around `body`.
func withRunning<T: Sendable>(_ cache: TieredCache, _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await cache.run() }
        defer { group.cancelAll() }
        return try await body()
    }
}

/// Waits (bounded) until `condition` holds; returns whether it did.
func eventually(within limit: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

func fastRecovery(prefix: String = "ibge:") -> TieredCache.Configuration {
    TieredCache.Configuration(
        keyPrefix: prefix, minimumRecoveryBackoff: .milliseconds(20), maximumRecoveryBackoff: .milliseconds(200),
        healthCheckInterval: .milliseconds(50))
}

/// A cache on the test's Redis that notices outages and recoveries quickly.
func redisCache(_ server: RedisServerProcess, clock: CacheClock = .system) -> TieredCache {
    TieredCache(configuration: fastRecovery(), redis: RedisClient(configuration: server.configuration()), clock: clock)
}

@Suite("Tiered cache, memory only")
struct TieredCacheMemoryTests {
    @Test("getOrLoad loads once, then answers from L1; metrics count it")
    func readThrough() async throws {
        let cache = TieredCache(redis: nil)
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
        let cache = TieredCache(redis: nil)
        let loader = CountingLoader(delay: .milliseconds(50))
        let values = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for _ in 0..<100 { group.addTask { try await cache.getOrLoad("cold") { try await loader.load("once") } } }
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
        let cache = TieredCache(redis: nil, metricsFactory: metrics)
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

    @Test("load durations are reported as percentiles")
    func loadPercentiles() async throws {
        let cache = TieredCache(redis: nil)
        #expect(cache.metrics().loadMilliseconds == nil)
        let slow = CountingLoader(delay: .milliseconds(30))
        for i in 0..<5 { _ = try await cache.getOrLoad("slow\(i)") { try await slow.load("s") } }
        for i in 0..<20 { _ = try await cache.getOrLoad("fast\(i)") { buffer("f") } }
        let p = try #require(cache.metrics().loadMilliseconds)
        #expect(p.p50 < 30, "most loads are instant")
        #expect(p.max >= 30, "the slowest took the loader's delay")
        #expect(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max)
    }

    @Test("a failing loader's error reaches every waiting caller, and nothing is cached")
    func loaderFailure() async throws {
        let cache = TieredCache(redis: nil)
        let loader = CountingLoader(delay: .milliseconds(20))
        loader.failing.store(true, ordering: .relaxed)
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask { (try? await cache.getOrLoad("bad") { try await loader.load("x") }) == nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 20)
        #expect(loader.count < 20)
        loader.failing.store(false, ordering: .relaxed)
        #expect(try await cache.getOrLoad("bad") { try await loader.load("good") } == buffer("good"))
        #expect(cache.metrics().loadErrors >= 1)
    }

    @Test("an expired value is loaded again")
    func ttl() async throws {
        let clock = ManualClock()
        let cache = TieredCache(redis: nil, clock: .manual(clock))
        let loader = CountingLoader()
        _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("v1") }
        clock.advance(by: .seconds(11))
        #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("v2") } == buffer("v2"))
        #expect(loader.count == 2)
    }

    @Test("clear empties L1")
    func clear() async throws {
        let cache = TieredCache(redis: nil)
        for i in 0..<10 { await cache.set("k\(i)", value: buffer("\(i)")) }
        let result = await cache.clear()
        #expect(result.memoryEntries == 10)
        #expect(result.redisKeys == nil)
        #expect(await cache.get("k1") == nil)
    }
}

@Suite("Tiered cache with a real Redis")
struct TieredCacheRedisTests {
    @Test("values reach Redis in the envelope under the prefix, and a second instance reads them without loading")
    func sharedThroughRedis() async throws {
        try await RedisServerProcess.with { server in
            let a = redisCache(server)
            let b = redisCache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(a) {
                try await withRunning(b) {
                    #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                    let loader = CountingLoader()
                    _ = try await a.getOrLoad("v1:thing", ttl: .seconds(60)) { try await loader.load("payload") }
                    let stored = try #require(try await raw.get("ibge:v1:thing"))
                    let envelope = try CacheEnvelope(decoding: stored)
                    #expect(envelope.payload == buffer("payload"))
                    let pttl = try await raw.pttl("ibge:v1:thing")
                    #expect(pttl > 60_000, "Redis keeps the value for TTL + grace")
                    #expect(try await b.getOrLoad("v1:thing") { try await loader.load("not this") } == buffer("payload"))
                    #expect(loader.count == 1)
                    #expect(b.metrics().l2Hits == 1)
                    #expect(await b.get("v1:thing") == buffer("payload"))
                    #expect(b.metrics().l1Hits == 1)
                }
            }
            await raw.shutdown()
        }
    }

    @Test("Redis killed: requests keep being answered in fallback; Redis restarted: reconnects and writes again")
    func killAndRecover() async throws {
        try await RedisServerProcess.with { server in
            let cache = redisCache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                #expect(cache.backend == .redis)
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("before") { try await loader.load("b") }

                server.kill()
                // Requests during the outage are answered: from L1, and from the loader.
                #expect(try await cache.getOrLoad("before") { try await loader.load("x") } == buffer("b"))
                for i in 0..<20 {
                    #expect(try await cache.getOrLoad("during\(i)") { try await loader.load("d\(i)") } == buffer("d\(i)"))
                }
                #expect(await eventually { !cache.isRedisConnected })
                #expect(cache.backend == .memoryFallback)
                let down = cache.metrics()
                #expect(down.redisConnected == false)
                #expect(down.fallbackActivations >= 1)
                #expect(down.redisLastError != nil)

                try await server.restart()
                #expect(await eventually { cache.isRedisConnected })
                _ = try await cache.getOrLoad("after") { try await loader.load("a") }
                #expect(try await raw.get("ibge:after") != nil, "new keys are written to Redis again")
            }
            await raw.shutdown()
        }
    }

    @Test("no Redis listening at start: the cache works from memory and says so")
    func redisAbsentAtStart() async throws {
        let port = try RedisServerProcess.freePort()
        let client = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)))
        let cache = TieredCache(configuration: fastRecovery(), redis: client)
        try await withRunning(cache) {
            #expect(try await cache.getOrLoad("k") { buffer("v") } == buffer("v"))
            #expect(await cache.get("k") == buffer("v"))
            try await Task.sleep(for: .milliseconds(200))
            #expect(!cache.isRedisConnected)
            #expect(cache.backend == .memoryFallback)
        }
    }

    @Test("clear deletes only keys under the prefix; a foreign key survives")
    func clearKeepsForeignKeys() async throws {
        try await RedisServerProcess.with { server in
            let cache = redisCache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<300 { await cache.set("v1:k\(i)", value: buffer("\(i)")) }
                try await raw.set("other-app:session", value: buffer("keep me"))
                try await raw.set("ibgeX:lookalike", value: buffer("keep me too"))
                let status = try #require(await cache.redisKeys(sampleSize: 5))
                #expect(status.count == 300 && status.sample.count == 5 && status.complete)
                let result = await cache.clear()
                #expect(result.redisKeys == 300)
                #expect(result.memoryEntries == 300)
                #expect(try await raw.dbsize() == 2)
                #expect(try await raw.get("other-app:session") == buffer("keep me"))
            }
            await raw.shutdown()
        }
    }

    @Test("when the loader fails, a stale value from Redis is served and counted")
    func staleServed() async throws {
        try await RedisServerProcess.with { server in
            let clock = ManualClock()
            let cache = redisCache(server, clock: .manual(clock))
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("old") }
                clock.advance(by: .seconds(11))
                loader.failing.store(true, ordering: .relaxed)
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
                #expect(cache.metrics().staleServed == 1)
                // Fail-safe throttle: the stale value answers for a while without the loader being tried again.
                loader.failing.store(false, ordering: .relaxed)
                let callsBefore = loader.count
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
                #expect(loader.count == callsBefore)
                clock.advance(by: .seconds(31))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("new"))
            }
        }
    }

    @Test("once Redis has dropped the stale value (its grace is over), the loader's error reaches the caller")
    func graceOver() async throws {
        try await RedisServerProcess.with { server in
            let clock = ManualClock()
            let cache = redisCache(server, clock: .manual(clock))
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("old") }
                clock.advance(by: .seconds(11))
                loader.failing.store(true, ordering: .relaxed)
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
                // The grace period ends: Redis expires the key (forced here), and the throttle passes.
                _ = try await raw.pexpire("ibge:k", after: .milliseconds(1))
                #expect(await eventually { (try? await raw.exists(["ibge:k"])) == 0 })
                clock.advance(by: .seconds(31))
                await #expect(throws: LoaderFailure.self) { try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } }
            }
            await raw.shutdown()
        }
    }

    @Test("a value in Redis that is not our envelope is ignored and replaced")
    func foreignValue() async throws {
        try await RedisServerProcess.with { server in
            let cache = redisCache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                try await raw.set("ibge:k", value: buffer("not an envelope"))
                #expect(try await cache.getOrLoad("k") { buffer("loaded") } == buffer("loaded"))
                #expect(cache.metrics().invalidValues == 1)
                let stored = try #require(try await raw.get("ibge:k"))
                #expect(try CacheEnvelope(decoding: stored).payload == buffer("loaded"))
            }
            await raw.shutdown()
        }
    }

    @Test("remove deletes the key from both tiers")
    func remove() async throws {
        try await RedisServerProcess.with { server in
            let cache = redisCache(server)
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                await cache.set("k", value: buffer("v"))
                let first = await cache.remove("k")
                #expect(first.memory && first.redis == true)
                #expect(await cache.get("k") == nil)
                let second = await cache.remove("k")
                #expect(!second.memory && second.redis == false)
            }
        }
    }
}
