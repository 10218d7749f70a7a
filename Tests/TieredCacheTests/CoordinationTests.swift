import NIOCore
import TestSupport
import TieredCache
import Testing

/// Instances sharing one store, on a manual clock: the load lock and its timing, and what an
/// outage does to L1. (The same behaviours on a real Redis are in `RedisStoreTests`.)
@Suite("Instances sharing one store: load lock, takeover, outage", .timeLimit(.minutes(1)))
struct CoordinationTests {
    @Test("two instances asking for one cold key at once: one load, the other waits for its value")
    func oneLoadAcrossInstances() async throws {
        try await Harness.with(.memory) { h in
            let a = h.cache()
            let b = h.cache()
            try await running([a, b], on: h.clock) { () async throws in
                let gate = Gate()
                let loader = CountingLoader(gate: gate)
                let sleepers = h.clock.sleepers
                async let fromA = a.getOrLoad("cold") { try await loader.load("shared") }
                #expect(await eventually { gate.arrivals == 1 }, "one instance loads")
                async let fromB = b.getOrLoad("cold") { try await loader.load("shared") }
                try #require(await h.clock.waitForSleepers(sleepers + 1), "the other polls for the value")
                gate.open()
                #expect(try await fromA == buffer("shared"))
                h.clock.advance(by: .milliseconds(100))
                #expect(try await fromB == buffer("shared"))
                #expect(loader.count == 1)
                #expect(a.metrics().lockWaits + b.metrics().lockWaits == 1)
                #expect(b.metrics().l2Hits == 1, "the waiter read the value the holder wrote")
            }
        }
    }

    @Test("a lock whose holder died is taken over when its lease ends, not before")
    func takeoverTiming() async throws {
        try await Harness.with(.memory) { h in
            let cache = h.cache { $0.lockTimeout = .seconds(10) }
            let store = try #require(h.memoryStore)
            try await running([cache], on: h.clock) { () async throws in
                // A holder that took the lock and then vanished.
                #expect(try await store.lock("orphan", token: "dead", lease: .milliseconds(1500)))
                let start = h.clock.now
                let loadedAt = LockedList()
                let loader = CountingLoader()
                let sleepers = h.clock.sleepers
                async let value = cache.getOrLoad("orphan") {
                    loadedAt.append(["\(h.clock.now - start)"])
                    return try await loader.load("recovered")
                }
                // Move time in 100 ms steps, each once the waiter sleeps again, until it loads.
                for _ in 0..<100 {
                    try #require(await eventually { h.clock.sleepers > sleepers || loader.count > 0 }, "the waiter sleeps before each poll")
                    if loader.count > 0 { break }
                    h.clock.advance(by: .milliseconds(100))
                }
                #expect(try await value == buffer("recovered"))
                #expect(loader.count == 1)
                let waited = try #require(loadedAt.all.first.flatMap { $0.first }.flatMap { Int($0) })
                #expect(waited >= 1500 && waited <= 1600, "taken over within one poll of the lease's end (\(waited) ms)")
                #expect(cache.metrics().lockWaits == 1)
                #expect(!store.isLocked("orphan"), "our lock is released after the load")
            }
        }
    }

    @Test("the store goes away: answers from L1 and the loader; it comes back: the circuit closes and L1 is flushed")
    func outageAndRecovery() async throws {
        try await Harness.with(.memory) { h in
            let cache = h.cache()
            let store = try #require(h.memoryStore)
            try await running([cache], on: h.clock) { () async throws in
                for i in 0..<10 { await cache.set("k\(i)", value: buffer("\(i)"), ttl: .seconds(7 * 86_400)) }
                store.faults.unavailable = true
                let loader = CountingLoader()
                #expect(try await cache.getOrLoad("new") { try await loader.load("n") } == buffer("n"), "a miss is loaded")
                #expect(!cache.isRedisConnected && cache.backend == .memoryFallback)
                #expect(await cache.get("k1") == buffer("1"), "L1 keeps answering")
                let down = cache.metrics()
                #expect(down.fallbackActivations == 1 && down.redisLastError != nil)
                // The watch loop probes with backoff on the clock; the store answers again.
                store.faults.unavailable = false
                h.clock.advance(by: .seconds(86_400))
                #expect(await eventually { cache.isRedisConnected })
                #expect(await eventually { cache.metrics().l1Entries == 0 }, "notices may have been missed: L1 is flushed")
            }
        }
    }
}
