import NIOCore
import RESP
import Redis
import Synchronization
import TestSupport
import TieredCache
import Testing

/// The cache policy, on each kind of L2 store, with time driven by hand: no test here sleeps
/// or measures time; each moves a ``ManualClock`` and waits for the behaviour to follow.
@Suite("Cache policy on each L2 store, with a manual clock", .timeLimit(.minutes(1)))
struct PolicyTests {
    @Test("values reach L2 in an envelope that stays for TTL + grace; another instance reads them without loading", arguments: StoreKind.allCases)
    func sharedThroughL2(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let a = h.cache()
            let b = h.cache()
            try await running([a, b], on: h.clock) {
                let loader = CountingLoader()
                _ = try await a.getOrLoad("v1:thing", ttl: .seconds(60)) { try await loader.load("payload") }
                let envelope = try #require(try await h.stored("v1:thing"))
                #expect(envelope.payload == buffer("payload"))
                #expect(envelope.freshUntil == h.clock.now + 60_000)
                #expect(try await b.getOrLoad("v1:thing") { try await loader.load("not this") } == buffer("payload"))
                #expect(loader.count == 1)
                #expect(b.metrics().l2Hits == 1)
                #expect(await b.get("v1:thing") == buffer("payload"))
                #expect(b.metrics().l1Hits == 1)
            }
        }
    }

    @Test(
        "the loader fails: the stale value answers, then L1 holds it for the throttle before the loader is tried again", arguments: StoreKind.allCases
    )
    func failSafeThrottle(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("old") }
                h.clock.advance(by: .seconds(11))
                loader.failing.store(true, ordering: .relaxed)
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
                #expect(cache.metrics().staleServed == 1)
                #expect(loader.count == 2)
                loader.failing.store(false, ordering: .relaxed)
                h.clock.advance(by: .seconds(29))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"), "within the throttle")
                #expect(loader.count == 2, "the loader is not tried during the throttle")
                h.clock.advance(by: .seconds(2))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("new"))
                #expect(loader.count == 3)
            }
        }
    }

    @Test("once L2 has dropped the stale value (its grace is over), the loader's error reaches the caller", arguments: StoreKind.allCases)
    func graceOver(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                let loader = CountingLoader()
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("old") }
                h.clock.advance(by: .seconds(11))
                loader.failing.store(true, ordering: .relaxed)
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } == buffer("old"))
                try await h.expire("k")
                h.clock.advance(by: .seconds(31))
                await #expect(throws: LoaderFailure.self) { try await cache.getOrLoad("k", ttl: .seconds(10)) { try await loader.load("new") } }
            }
        }
    }

    @Test("a value in L2 that is not our envelope is ignored, counted and replaced", arguments: StoreKind.allCases)
    func foreignValue(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                try await h.putForeign("k", "not an envelope")
                #expect(try await cache.getOrLoad("k") { buffer("loaded") } == buffer("loaded"))
                #expect(cache.metrics().invalidValues == 1)
                #expect(try await h.stored("k")?.payload == buffer("loaded"))
            }
        }
    }

    @Test("remove deletes the key from both tiers and says whether each had it", arguments: StoreKind.allCases)
    func remove(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                await cache.set("k", value: buffer("v"))
                let first = await cache.remove("k")
                #expect(first.memory && first.l2 == true)
                #expect(await cache.get("k") == nil)
                let second = await cache.remove("k")
                #expect(!second.memory && second.l2 == false)
            }
        }
    }

    @Test("past 90% of its TTL a read returns the cached value and refreshes it in the background, once", arguments: StoreKind.allCases)
    func eagerRefresh(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                let loader = CountingLoader()
                let next: @Sendable () async throws -> ByteBuffer = { try await loader.load("v\(loader.count + 1)") }
                #expect(try await cache.getOrLoad("k", ttl: .seconds(100), loader: next) == buffer("v1"))
                h.clock.advance(by: .seconds(89))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(100), loader: next) == buffer("v1"))
                #expect(loader.count == 1, "not yet due")
                h.clock.advance(by: .seconds(2))
                #expect(try await cache.getOrLoad("k", ttl: .seconds(100), loader: next) == buffer("v1"))
                // The refresh runs in the background: this reader gets the old value or, when the
                // refresh was quicker, the new one; either way it starts no refresh of its own.
                let fourth = try await cache.getOrLoad("k", ttl: .seconds(100), loader: next)
                #expect(fourth == buffer("v1") || fourth == buffer("v2"))
                #expect(await eventually { cache.metrics().eagerRefreshes == 1 }, "refreshed with no caller waiting")
                #expect(cache.memory.get("k") == buffer("v2"))
                #expect(try await h.stored("k")?.payload == buffer("v2"), "the refresh reached L2")
                #expect(loader.count == 2)
                _ = try await cache.getOrLoad("k", ttl: .seconds(100)) { try await loader.load("again") }
                #expect(loader.count == 2, "the refreshed value is fresh again")
            }
        }
    }

    @Test(
        "an eager refresh that fails while a caller waits for it (the value expired meanwhile): the caller gets the stale value, not the refresh's error",
        arguments: StoreKind.allCases)
    func failedRefreshServesStale(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache()
            try await running([cache], on: h.clock) {
                _ = try await cache.getOrLoad("k", ttl: .seconds(100)) { buffer("old") }
                h.clock.advance(by: .seconds(95))
                let gate = Gate()
                let refresh = CountingLoader(gate: gate)
                refresh.failing.store(true, ordering: .relaxed)
                // Due for refresh: answered at once, the refresh waits at the gate.
                #expect(try await cache.getOrLoad("k", ttl: .seconds(100)) { try await refresh.load("new") } == buffer("old"))
                #expect(await eventually { gate.arrivals == 1 })
                h.clock.advance(by: .seconds(10))
                let later = CountingLoader()
                later.failing.store(true, ordering: .relaxed)
                // Expired: this caller finds the refresh in flight and waits for it.
                async let answer = cache.getOrLoadValue("k", ttl: .seconds(100)) { try await later.load("newer") }
                #expect(await eventually { cache.loadWaiters == 1 })
                gate.open()
                let value = try await answer
                #expect(value.value == buffer("old") && value.tier == .stale, "the stale value, from the caller's own load's fail-safe")
                #expect(later.count == 1, "the caller led a load of its own")
            }
        }
    }

    @Test(
        "a loader slower than the soft timeout: the stale value when the timeout passes, the fresh value once the load ends",
        arguments: StoreKind.allCases)
    func softTimeout(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache { $0.softTimeout = .seconds(2) }
            try await running([cache], on: h.clock) {
                _ = try await cache.getOrLoad("k", ttl: .seconds(10)) { buffer("old") }
                h.clock.advance(by: .seconds(11))
                let gate = Gate()
                let slow = CountingLoader(gate: gate)
                let sleepers = h.clock.sleepers
                async let answer = cache.getOrLoad("k", ttl: .seconds(10)) { try await slow.load("new") }
                try #require(await h.clock.waitForSleepers(sleepers + 1), "the request waits out the soft timeout on the clock")
                #expect(await eventually { gate.arrivals == 1 }, "the load has started")
                h.clock.advance(by: .seconds(2))
                #expect(try await answer == buffer("old"))
                #expect(cache.metrics().softTimeouts == 1 && cache.metrics().staleServed == 1)
                // While the load goes on, the next callers get the stale value at once, from L1,
                // and start no load of their own.
                for _ in 0..<3 { #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { try await slow.load("again") } == buffer("old")) }
                #expect(slow.count == 1 && cache.metrics().l1Hits >= 3)
                gate.open()
                #expect(await eventually { cache.memory.get("k") == buffer("new") }, "the load finished in the background")
                #expect(try await cache.getOrLoad("k", ttl: .seconds(10)) { buffer("unused") } == buffer("new"))
                #expect(slow.count == 1)
            }
        }
    }

    @Test(
        "a slow L2 read past the L2 soft timeout (on the cache's clock) is a miss: the source answers, the value is written back behind",
        arguments: StoreKind.allCases)
    func slowL2(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let cache = h.cache { $0.l2SoftTimeout = .milliseconds(100) }
            try await running([cache], on: h.clock) {
                let loader = CountingLoader()
                var sleeping = h.clock.sleepers + 1  // the cache's timer on the read
                if let store = h.memoryStore {
                    store.faults.readDelay = .seconds(5)
                    sleeping += 1  // the store's own delay
                } else {
                    // Every client waits a second for its replies (within the command timeout).
                    try await h.pauseRedis(milliseconds: 1000)
                }
                async let answer = cache.getOrLoad("k") { try await loader.load("from source") }
                try #require(await h.clock.waitForSleepers(sleeping), "the read and the cache's timer race on the clock")
                #expect(loader.count == 0, "not before the soft timeout")
                h.clock.advance(by: .milliseconds(100))
                #expect(try await answer == buffer("from source"))
                #expect(loader.count == 1)
                #expect(cache.metrics().l2SoftTimeouts == 1)
                #expect(cache.metrics().redisErrors == 0, "the abandoned read is not an error")
                #expect(cache.isRedisConnected, "slow is not down: the circuit stays closed")
                h.memoryStore?.faults.readDelay = nil
                #expect(await eventually { (try? await h.stored("k"))?.payload == buffer("from source") }, "written back once the store answers")
            }
        }
    }

    @Test("getMany: L1, then one L2 read, then one loader call for the rest, written back", arguments: StoreKind.allCases)
    func getMany(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let a = h.cache()
            let b = h.cache()
            try await running([a, b], on: h.clock) {
                await a.set("k1", value: buffer("1"))
                await a.set("k2", value: buffer("2"))
                await b.set("k3", value: buffer("3"))
                let asked = LockedList()
                let values = try await b.getMany(["k1", "k2", "k3", "k4", "k5"]) { missing in
                    asked.append(missing)
                    return ["k4": buffer("4")]
                }
                #expect(values == ["k1": buffer("1"), "k2": buffer("2"), "k3": buffer("3"), "k4": buffer("4")])
                #expect(asked.all == [["k4", "k5"]], "one loader call, for what neither tier had")
                let m = b.metrics()
                #expect(m.l2Hits == 2 && m.loads == 2, "two keys loaded, in one call")
                #expect(await a.get("k4") == buffer("4"), "the loaded value reached L2")
            }
        }
    }

    @Test("backplane: when the subscription's connection is lost, the notices sent meanwhile may be lost, so L1 is flushed and counted")
    func backplaneGap() async throws {
        try await Harness.with(.redis) { h in
            let a = h.cache()
            let b = h.cache()
            try await running([a, b], on: h.clock) {
                #expect(await awaitBackplane(from: a, to: b))
                await b.set("kept", value: buffer("v"))
                #expect(b.memory.get("kept") == buffer("v"))
                // Every subscription connection of the server is cut (as a network blip or a
                // Redis restart would); a notice published before it is restored is lost.
                _ = try await h.client().send(RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
                // Once the subscription is back, B hears that it may have missed notices.
                #expect(await eventually { b.metrics().backplaneGaps >= 1 }, "B heard that it may have missed notices")
                #expect(b.memory.get("kept") == nil, "and flushed L1 rather than keep what may be stale")
                #expect(await b.get("kept") == buffer("v"), "the value is still in Redis")
            }
        }
    }

    @Test("backplane: a change on one instance drops the entry from the other's L1", arguments: StoreKind.allCases)
    func backplane(kind: StoreKind) async throws {
        try await Harness.with(kind) { h in
            let a = h.cache()
            let b = h.cache()
            try await running([a, b], on: h.clock) {
                #expect(await awaitBackplane(from: a, to: b))
                await a.set("k", value: buffer("v1"))
                #expect(await b.get("k") == buffer("v1"))
                #expect(b.memory.get("k") == buffer("v1"))

                await a.set("k", value: buffer("v2"))
                #expect(await eventually { b.memory.get("k") == nil }, "B dropped its stale copy")
                #expect(await b.get("k") == buffer("v2"))
                // A hears its own notices too, and must not drop what it just wrote: a notice from
                // B, sent after A's, shows A's has been handled.
                let heardFromB = a.metrics().backplaneReceived
                await b.set("marker", value: buffer("m"))
                #expect(await eventually { a.metrics().backplaneReceived > heardFromB })
                #expect(a.memory.get("k") == buffer("v2"), "an instance ignores its own notices")

                await a.remove("k")
                #expect(await eventually { b.memory.get("k") == nil })
                #expect(await b.get("k") == nil)

                await b.set("x", value: buffer("1"))
                #expect(await a.get("x") == buffer("1"))
                #expect(await awaitBackplane(from: b, to: a), "A hears B")
                _ = await a.clear()
                #expect(await eventually { b.memory.statistics.entries == 0 })
            }
        }
    }
}

/// A list of loader calls, appended from any task.
final class LockedList: Sendable {
    private let items = Mutex<[[String]]>([])
    func append(_ item: [String]) { items.withLock { $0.append(item) } }
    var all: [[String]] { items.withLock { $0 } }
}
