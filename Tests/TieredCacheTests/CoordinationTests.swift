import NIOCore
import RESP
import Redis
import TestSupport
import TieredCache
import Synchronization
import Testing

private func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

@Suite("Instances sharing one Redis: load lock and backplane")
struct CoordinationTests {
    @Test("two instances asking for one cold key at once: one load, the other waits for its value")
    func oneLoadAcrossInstances() async throws {
        try await RedisServerProcess.with { server in
            let a = redisCache(server)
            let b = redisCache(server)
            let loader = CountingLoader(delay: .milliseconds(200))
            try await withRunning(a) {
                try await withRunning(b) {
                    #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                    let values = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
                        for i in 0..<50 {
                            let cache = i % 2 == 0 ? a : b
                            group.addTask { try await cache.getOrLoad("cold") { try await loader.load("shared") } }
                        }
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                    #expect(values.count == 50 && values.allSatisfy { $0 == buffer("shared") })
                    #expect(loader.count == 1)
                    #expect(a.metrics().lockWaits + b.metrics().lockWaits == 1, "one instance's leader waited for the other's")
                }
            }
        }
    }

    @Test("a lock whose holder died: the next instance loads once the lock expires")
    func deadHolder() async throws {
        try await RedisServerProcess.with { server in
            let raw = RedisClient(configuration: server.configuration())
            let cache = redisCache(server)
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                // A holder that took the lock and then vanished.
                let locked = try await raw.set(
                    "ibge:lock:orphan", value: buffer("dead-token"), expiration: .milliseconds(1500), condition: .ifNotExists)
                #expect(locked)
                let loader = CountingLoader()
                let value = try await cache.getOrLoad("orphan") { try await loader.load("recovered") }
                #expect(value == buffer("recovered"))
                #expect(loader.count == 1)
                #expect(cache.metrics().lockWaits == 1)
                let lockLeft = try await raw.exists(["ibge:lock:orphan"])
                #expect(lockLeft == 0, "our lock is released after the load")
            }
            await raw.shutdown()
        }
    }

    @Test("backplane: a change on one instance drops the entry from the other's L1")
    func backplane() async throws {
        try await RedisServerProcess.with { server in
            let a = redisCache(server)
            let b = redisCache(server)
            try await withRunning(a) {
                try await withRunning(b) {
                    #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                    // Wait until both listen (the subscription is confirmed by a message coming through).
                    #expect(
                        await eventually {
                            await a.set("probe", value: buffer("p"))
                            return b.metrics().backplaneReceived > 0
                        })
                    await a.set("k", value: buffer("v1"))
                    #expect(await b.get("k") == buffer("v1"))
                    #expect(b.memory.get("k") == buffer("v1"))

                    await a.set("k", value: buffer("v2"))
                    #expect(await eventually { b.memory.get("k") == nil }, "B dropped its stale copy")
                    #expect(await b.get("k") == buffer("v2"))

                    await a.remove("k")
                    #expect(await eventually { b.memory.get("k") == nil })
                    #expect(await b.get("k") == nil)

                    await b.set("x", value: buffer("1"))
                    _ = await a.get("x")
                    _ = await a.clear()
                    #expect(await eventually { b.memory.statistics.entries == 0 })
                    #expect(a.metrics().backplaneReceived >= 1, "A heard B's set")
                }
            }
        }
    }

    @Test("after a Redis outage an instance flushes its L1, since it may have missed notices")
    func flushAfterOutage() async throws {
        try await RedisServerProcess.with { server in
            let cache = redisCache(server)
            try await withRunning(cache) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<10 { await cache.set("k\(i)", value: buffer("\(i)")) }
                server.kill()
                #expect(await eventually { !cache.isRedisConnected })
                #expect(cache.memory.statistics.entries == 10, "during the outage L1 keeps answering")
                try await server.restart()
                #expect(await eventually { cache.isRedisConnected })
                #expect(await eventually { cache.memory.statistics.entries == 0 })
            }
        }
    }
}

@Suite("Bulk reads")
struct BulkTests {
    @Test("getMany: L1, then one MGET, then one loader call for the rest, written back in one round trip")
    func getMany() async throws {
        try await RedisServerProcess.with { server in
            let a = redisCache(server)
            let b = redisCache(server)
            try await withRunning(a) {
                try await withRunning(b) {
                    #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                    await a.set("k1", value: ByteBuffer(string: "1"))
                    await a.set("k2", value: ByteBuffer(string: "2"))
                    await b.set("k3", value: ByteBuffer(string: "3"))
                    let asked = Mutex<[[String]]>([])
                    let values = try await b.getMany(["k1", "k2", "k3", "k4", "k5"]) { missing in
                        asked.withLock { $0.append(missing) }
                        return ["k4": ByteBuffer(string: "4")]
                    }
                    #expect(
                        values == [
                            "k1": ByteBuffer(string: "1"), "k2": ByteBuffer(string: "2"), "k3": ByteBuffer(string: "3"),
                            "k4": ByteBuffer(string: "4"),
                        ])
                    #expect(asked.withLock { $0 } == [["k4", "k5"]], "one loader call, for what neither tier had")
                    let m = b.metrics()
                    #expect(m.l2Hits == 2 && m.loads == 1)
                    #expect(await a.get("k4") == ByteBuffer(string: "4"), "the loaded value reached Redis")
                }
            }
        }
    }
}
