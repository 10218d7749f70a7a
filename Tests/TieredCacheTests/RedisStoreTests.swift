import NIOCore
import RESP
import Redis
import TestSupport
import TieredCache
import TieredCacheRedis
import Testing

/// The cache on a real redis-server, in real time: what only Redis can show (its key layout
/// and expiry, a killed and restarted server, other applications' keys, several instances
/// with real connections).
@Suite("Tiered cache on a real Redis")
struct RedisStoreTests {
    /// A cache on the test's Redis that notices outages and recoveries quickly.
    static func cache(_ server: RedisServerProcess, lockTimeout: Duration = .seconds(10)) -> TieredCache {
        TieredCache(
            configuration: .init(
                minimumRecoveryBackoff: .milliseconds(20), maximumRecoveryBackoff: .milliseconds(200), healthCheckInterval: .milliseconds(50),
                lockTimeout: lockTimeout),
            l2: RedisStore(client: RedisClient(configuration: server.configuration())))
    }

    @Test("keys are <prefix><key>, values live TTL + grace in Redis, and locks (in their value's cluster slot) and notices use the prefix too")
    func layout() async throws {
        try await RedisServerProcess.with { server in
            let cache = Self.cache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                _ = try await cache.getOrLoad("v1:thing", ttl: .seconds(60)) { buffer("payload") }
                let stored = try #require(try await raw.get("ibge:v1:thing"))
                #expect(try CacheEnvelope(decoding: stored).payload == buffer("payload"))
                let pttl = try await raw.pttl("ibge:v1:thing")
                #expect(pttl > 60_000 && pttl <= (66 + 24 * 3600) * 1000, "TTL (up to 10 % jitter) + grace")
                // The load lock, held while a load runs, is in the value's cluster slot.
                let gate = Gate()
                let loader = CountingLoader(gate: gate)
                async let slow = cache.getOrLoad("v1:other", ttl: .seconds(60)) { try await loader.load("x") }
                let lock = "ibge:lock:{ibge:v1:other}"
                #expect(await eventually { (try? await raw.exists([lock])) == 1 }, "held during the load")
                #expect(HashSlot(key: lock) == HashSlot(key: "ibge:v1:other"))
                gate.open()
                _ = try await slow
                #expect(try await raw.exists([lock]) == 0, "the load lock is released")
            }
            await raw.shutdown()
        }
    }

    @Test("freshness judged against one clock: an instance whose clock runs 40 s ahead reads and writes freshness on Redis's clock; an offset past the bound is not believed")
    func oneClock() async throws {
        try await RedisServerProcess.with { server in
            func cache(_ clock: CacheClock) -> TieredCache {
                TieredCache(
                    configuration: .init(healthCheckInterval: .milliseconds(50), ttlJitter: 0),
                    l2: RedisStore(client: RedisClient(configuration: server.configuration())), clock: clock)
            }
            let realNow = CacheClock.system.nowMilliseconds()
            let aheadClock = ManualClock(start: realNow + 40_000)
            let farClock = ManualClock(start: realNow + 600_000)
            let a = cache(.system)
            let ahead = cache(.manual(aheadClock))
            let far = cache(.manual(farClock))
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning([a.run, ahead.run, far.run]) {
                #expect(await eventually { a.isRedisConnected && ahead.isRedisConnected && far.isRedisConnected })
                #expect(abs(a.clockOffsetMilliseconds) < 1000, "same host: \(a.clockOffsetMilliseconds) ms")
                // The manual clocks stand still while real time goes on: the instance "ahead" is
                // 40 s ahead minus however long the start took.
                let elapsed = CacheClock.system.nowMilliseconds() - realNow
                #expect(
                    (-41_000...(-40_000 + elapsed + 1000)).contains(ahead.clockOffsetMilliseconds),
                    "40 s ahead: \(ahead.clockOffsetMilliseconds) ms, \(elapsed) ms after the start")
                #expect(far.clockOffsetMilliseconds == 0, "10 min is past the 5 min bound: its own clock is used")

                // What the instance ahead writes carries Redis's time, not its own.
                await ahead.set("j", value: buffer("from ahead"), ttl: .seconds(60))
                let stored = try CacheEnvelope(decoding: try #require(try await raw.get("ibge:j")))
                let latest = CacheClock.system.nowMilliseconds() + 60_000
                #expect(
                    (realNow + 59_000...latest + 1000).contains(stored.freshUntil),
                    "fresh until \(stored.freshUntil), Redis's clock + 60 s is at most \(latest), not its own \(aheadClock.now + 60_000)")

                // A value A stored fresh for 60 s, read by the instance ahead when its own clock
                // reads 65 s past that write (25 s on Redis's): still fresh, no load.
                await a.set("k", value: buffer("from A"), ttl: .seconds(60))
                aheadClock.advance(by: .seconds(25))
                let loads = CountingLoader()
                #expect(try await ahead.getOrLoad("k", ttl: .seconds(60)) { try await loads.load("reloaded") } == buffer("from A"))
                #expect(loads.count == 0, "judged on Redis's clock, the value is fresh")
            }
            await raw.shutdown()
        }
    }

    @Test("two instances asking for one cold key at once: one load, the other waits for its value")
    func oneLoadAcrossInstances() async throws {
        try await RedisServerProcess.with { server in
            let a = Self.cache(server)
            let b = Self.cache(server)
            let gate = Gate()
            let loader = CountingLoader(gate: gate)
            try await withRunning(a.run) {
                try await withRunning(b.run) {
                    #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                    let values = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
                        for i in 0..<50 {
                            let cache = i % 2 == 0 ? a : b
                            group.addTask { try await cache.getOrLoad("cold") { try await loader.load("shared") } }
                        }
                        #expect(await eventually { gate.arrivals == 1 && a.metrics().lockWaits + b.metrics().lockWaits == 1 })
                        gate.open()
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                    #expect(values.count == 50 && values.allSatisfy { $0 == buffer("shared") })
                    #expect(loader.count == 1)
                }
            }
        }
    }

    @Test("a lock whose holder died: the waiting instance loads once Redis expires it")
    func deadHolder() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { raw in
                let cache = Self.cache(server)
                try await withRunning(cache.run) { () async throws in
                    #expect(await eventually { cache.isRedisConnected })
                    // A holder that took the lock and then vanished (no expiry yet: the test ends its lease).
                    #expect(try await raw.set("ibge:lock:{ibge:orphan}", value: buffer("dead-token"), condition: .ifNotExists))
                    let loader = CountingLoader()
                    async let value = cache.getOrLoad("orphan") { try await loader.load("recovered") }
                    #expect(await eventually { cache.metrics().lockWaits == 1 }, "the cache waits for the holder")
                    #expect(loader.count == 0)
                    #expect(try await raw.pexpire("ibge:lock:{ibge:orphan}", after: .milliseconds(1)))
                    #expect(try await value == buffer("recovered"))
                    #expect(loader.count == 1)
                    #expect(try await raw.exists(["ibge:lock:{ibge:orphan}"]) == 0, "our lock is released after the load")
                }
            }
        }
    }

    @Test("Redis killed: requests keep being answered in fallback; Redis restarted: reconnects, flushes L1, writes again")
    func killAndRecover() async throws {
        try await RedisServerProcess.with { server in
            let cache = Self.cache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                #expect(cache.backend == .redis)
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("before") { try await loader.load("b") }

                server.kill()
                #expect(try await cache.getOrLoad("before") { try await loader.load("x") } == buffer("b"))
                for i in 0..<20 {
                    #expect(try await cache.getOrLoad("during\(i)") { try await loader.load("d\(i)") } == buffer("d\(i)"))
                }
                #expect(await eventually { !cache.isRedisConnected })
                #expect(cache.backend == .memoryFallback)
                let down = cache.metrics()
                #expect(down.fallbackActivations >= 1 && down.redisLastError != nil)
                #expect(down.l1Entries == 21, "during the outage L1 keeps answering")

                try await server.restart()
                #expect(await eventually { cache.isRedisConnected })
                #expect(await eventually { cache.metrics().l1Entries == 0 }, "L1 flushed: notices may have been missed")
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
        let cache = TieredCache(configuration: .init(minimumRecoveryBackoff: .milliseconds(20)), l2: RedisStore(client: client))
        try await withRunning(cache.run) { () async throws in
            #expect(try await cache.getOrLoad("k") { buffer("v") } == buffer("v"))
            #expect(await cache.get("k") == buffer("v"))
            #expect(await eventually { cache.metrics().redisLastError?.contains("refused") == true })
            #expect(!cache.isRedisConnected)
            #expect(cache.backend == .memoryFallback)
        }
        await client.shutdown()
    }

    @Test("clear deletes only keys under the prefix; other applications' keys survive")
    func clearKeepsForeignKeys() async throws {
        try await RedisServerProcess.with { server in
            let cache = Self.cache(server)
            let raw = RedisClient(configuration: server.configuration())
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<300 { await cache.set("v1:k\(i)", value: buffer("\(i)")) }
                try await raw.set("other-app:session", value: buffer("keep me"))
                try await raw.set("ibgeX:lookalike", value: buffer("keep me too"))
                let status = try #require(await cache.l2Keys(sampleSize: 5))
                #expect(status.count == 300 && status.sample.count == 5 && status.complete)
                #expect(status.sample.allSatisfy { $0.hasPrefix("ibge:v1:k") })
                let partial = try #require(await cache.l2Keys(sampleSize: 5, limit: 100))
                #expect(partial.count == 100 && !partial.complete)
                let result = await cache.clear()
                #expect(result.l2Keys == 300)
                #expect(result.memoryEntries == 300)
                #expect(try await raw.dbsize() == 2)
                #expect(try await raw.get("other-app:session") == buffer("keep me"))
            }
            await raw.shutdown()
        }
    }

    @Test("a prefix with glob characters deletes only its own keys")
    func globPrefix() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            let store = RedisStore(client: client, configuration: .init(keyPrefix: "a*[b]:"))
            try await store.write(
                [L2Entry(key: "k", envelope: CacheEnvelope(freshUntil: 0, payload: buffer("v")), lifetime: .seconds(60))], notify: nil)
            try await client.set("a-other:k", value: buffer("keep"))
            try await client.set("ab:k", value: buffer("keep"))
            #expect(try await store.count(limit: 100, sampleSize: 10) == L2KeyCount(count: 1, sample: ["a*[b]:k"], complete: true))
            #expect(try await store.removeAll(notify: nil) == 1)
            #expect(try await client.dbsize() == 2)
            await client.shutdown()
        }
    }

    @Test("with reads from replicas, keys a notice announced are read from the master for 5 s; a clear, a gap or too many keys mean every key")
    func announcedKeys() {
        let now = ContinuousClock.now
        var announced = AnnouncedKeys()
        #expect(!announced.includesAny(of: ["k"], now: now))
        announced.note(BackplaneNotice(origin: "a", operation: .set, key: "k"), now: now)
        #expect(announced.includesAny(of: ["x", "k"], now: now + .seconds(4)))
        #expect(!announced.includesAny(of: ["x"], now: now + .seconds(4)))
        #expect(!announced.includesAny(of: ["k"], now: now + .seconds(6)), "only for the window")
        announced.note(BackplaneNotice(origin: "", operation: .lost, key: ""), now: now)
        #expect(announced.includesAny(of: ["anything"], now: now + .seconds(4)))
        #expect(!announced.includesAny(of: ["anything"], now: now + .seconds(6)))
        var many = AnnouncedKeys()
        for i in 0...AnnouncedKeys.limit { many.note(BackplaneNotice(origin: "a", operation: .remove, key: "k\(i)"), now: now) }
        #expect(many.includesAny(of: ["never-announced"], now: now + .seconds(1)), "past the bound, every key")
    }

    @Test("backplane notices survive the round trip, and strays on the channel are ignored")
    func notices() throws {
        let notice = BackplaneNotice(origin: "abc", operation: .remove, key: "v1:localidades/estados|x")
        let store = RedisStore(client: RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1))))
        let command = store.notice(notice)
        #expect(command.name == "PUBLISH")
        #expect(store.notice(notice, sharded: true).name == "SPUBLISH", "on a Redis 7 cluster")
        #expect(RedisStore.notice(from: buffer("1|abc|remove|v1:localidades/estados|x")) == notice)
        #expect(RedisStore.notice(from: buffer("2|abc|remove|k")) == nil)
        #expect(RedisStore.notice(from: buffer("1||set|k")) == nil)
        #expect(RedisStore.notice(from: buffer("1|abc|drop|k")) == nil)
        #expect(RedisStore.notice(from: buffer("hello")) == nil)
    }
}
