import NIOCore
import RESP
import Redis
import TestSupport
import TieredCache
import Testing

private func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

@Suite("Cache semantics: eager refresh, jitter, negative caching, timeouts")
struct CacheSemanticsTests {
    @Test("past 90% of its TTL a read returns the cached value and refreshes it in the background, once")
    func eagerRefresh() async throws {
        let clock = ManualClock()
        let cache = TieredCache(configuration: .init(ttlJitter: 0), redis: nil, clock: .manual(clock))
        let loader = CountingLoader()
        try await withRunning(cache) {
            #expect(try await cache.getOrLoad("k", ttl: .seconds(100)) { try await loader.load("v\(loader.count + 1)") } == buffer("v1"))
            clock.advance(by: .seconds(89))
            #expect(try await cache.getOrLoad("k", ttl: .seconds(100)) { try await loader.load("v\(loader.count + 1)") } == buffer("v1"))
            #expect(loader.count == 1, "not yet due")
            clock.advance(by: .seconds(2))
            #expect(try await cache.getOrLoad("k", ttl: .seconds(100)) { try await loader.load("v\(loader.count + 1)") } == buffer("v1"))
            #expect(await eventually { cache.memory.get("k") == buffer("v2") }, "refreshed with no caller waiting")
            #expect(loader.count == 2)
            #expect(cache.metrics().eagerRefreshes == 1)
            // The refreshed value is fresh again: more reads start no refresh.
            _ = try await cache.getOrLoad("k", ttl: .seconds(100)) { try await loader.load("again") }
            #expect(loader.count == 2)
        }
    }

    @Test("loaded keys get their TTL plus up to 10% jitter; negative answers get the negative TTL")
    func jitterAndNegative() async throws {
        let clock = ManualClock()
        let cache = TieredCache(redis: nil, clock: .manual(clock))
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
        #expect(expiresAt <= start + 33_000, "cached for the negative TTL, not the hour")
    }

    @Test("a slow Redis never makes a request wait: past the L2 soft timeout the source answers")
    func slowRedis() async throws {
        try await RedisServerProcess.with { server in
            var configuration = fastRecovery()
            configuration.l2SoftTimeout = .milliseconds(50)
            let cache = TieredCache(configuration: configuration, redis: RedisClient(configuration: server.configuration()))
            let admin = RedisClient(configuration: server.configuration())
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", "1500", "ALL"))
                let loader = CountingLoader()
                #expect(try await cache.getOrLoad("k") { try await loader.load("from source") } == buffer("from source"))
                #expect(loader.count == 1)
                #expect(cache.metrics().l2SoftTimeouts == 1)
                #expect(cache.isRedisConnected, "slow is not down: the circuit stays closed")
                // Once Redis answers again, the value written behind the request is there.
                #expect(await eventually { (try? await admin.get("ibge:k")) != nil })
            }
            await admin.shutdown()
        }
    }

    @Test("a loader past the hard timeout fails with a timeout error")
    func hardTimeout() async throws {
        let cache = TieredCache(configuration: .init(hardTimeout: .milliseconds(100)), redis: nil)
        let slow = CountingLoader(delay: .seconds(5))
        let error = await #expect(throws: CacheError.self) { try await cache.getOrLoad("slow") { try await slow.load("late") } }
        #expect(error?.code == .loaderTimeout)
        #expect(cache.metrics().loadErrors == 1)
    }

    @Test("a loader slower than the soft timeout: the stale value at once, the fresh value afterwards")
    func softTimeout() async throws {
        try await RedisServerProcess.with { server in
            let clock = ManualClock()
            var configuration = fastRecovery()
            configuration.softTimeout = .milliseconds(100)
            configuration.ttlJitter = 0
            let cache = TieredCache(configuration: configuration, redis: RedisClient(configuration: server.configuration()), clock: .manual(clock))
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { buffer("old") }
                clock.advance(by: .seconds(11))
                let slow = CountingLoader(delay: .milliseconds(600))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await slow.load("new") } == buffer("old"))
                #expect(cache.metrics().softTimeouts == 1)
                #expect(await eventually { cache.memory.get("k") == buffer("new") }, "the load finished in the background")
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { buffer("unused") } == buffer("new"))
                #expect(slow.count == 1)
            }
        }
    }
}
