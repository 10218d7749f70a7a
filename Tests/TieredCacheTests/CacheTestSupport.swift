import Foundation
import NIOCore
import RESP
import Redis
import Synchronization
import TestSupport
import TieredCache
import TieredCacheRedis

func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

/// Counts loader runs, can be told to fail, and can hold each run at a gate.
final class CountingLoader: Sendable {
    let calls = Atomic<Int>(0)
    let failing = Atomic<Bool>(false)
    let gate: Gate?

    init(gate: Gate? = nil) { self.gate = gate }

    func load(_ value: String) async throws -> ByteBuffer {
        calls.add(1, ordering: .relaxed)
        if let gate { try await gate.wait() }
        if failing.load(ordering: .relaxed) { throw LoaderFailure() }
        return buffer(value)
    }

    var count: Int { calls.load(ordering: .relaxed) }
}

struct LoaderFailure: Error {}

/// The L2 stores the policy tests run on: in-process and one Redis, or, with
/// `IBGE_TEST_REDIS_TOPOLOGY=cluster` (a phase of its own in `scripts/test`), a Redis Cluster.
enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    static var allCases: [StoreKind] {
        ProcessInfo.processInfo.environment["IBGE_TEST_REDIS_TOPOLOGY"] == "cluster" ? [.cluster] : [.memory, .redis]
    }

    /// ``InMemoryL2Store`` shared by the test's caches, on the test's manual clock.
    case memory
    /// `RedisStore` on a real redis-server the test starts, one client per cache.
    case redis
    /// `RedisStore` on a real Redis Cluster (3 masters, 3 replicas) the test starts.
    case cluster

    var description: String { rawValue }
}

/// What a policy test runs on: a manual clock, an L2 store of one kind shared by the caches it
/// makes (as instances sharing a Redis would), and a way to reach under the cache.
final class Harness: Sendable {
    let kind: StoreKind
    let clock = ManualClock()
    let server: RedisServerProcess?
    let cluster: RedisClusterProcess?
    let memoryStore: InMemoryL2Store?
    private let clients = Mutex<[RedisClient]>([])

    private init(kind: StoreKind, server: RedisServerProcess?, cluster: RedisClusterProcess? = nil) {
        self.kind = kind
        self.server = server
        self.cluster = cluster
        self.memoryStore = server == nil && cluster == nil ? InMemoryL2Store(clock: .manual(clock), shared: true) : nil
    }

    /// Runs `body` with a harness of `kind` (starting and stopping a redis-server for `.redis`).
    static func with(_ kind: StoreKind, _ body: (Harness) async throws -> Void) async throws {
        switch kind {
        case .memory:
            try await body(Harness(kind: kind, server: nil))
        case .redis:
            try await RedisServerProcess.with { server in
                let harness = Harness(kind: kind, server: server)
                do {
                    try await body(harness)
                } catch {
                    await harness.shutdown()
                    throw error
                }
                await harness.shutdown()
            }
        case .cluster:
            try await RedisClusterProcess.with { cluster in
                let harness = Harness(kind: kind, server: nil, cluster: cluster)
                do {
                    try await body(harness)
                } catch {
                    await harness.shutdown()
                    throw error
                }
                await harness.shutdown()
            }
        }
    }

    /// A client on the test's Redis, shut down with the harness.
    func client() -> RedisClient {
        let configuration =
            if let cluster, let clustered = try? RedisConfiguration(url: cluster.url) {
                clustered
            } else {
                server?.configuration() ?? RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 1))
            }
        let client = RedisClient(configuration: configuration)
        clients.withLock { $0.append(client) }
        return client
    }

    /// A new L2 store handle (for Redis, on its own client: another instance's).
    func store() -> any L2Store {
        if let memoryStore { return memoryStore }
        return RedisStore(client: client())
    }

    /// A cache on the shared store, on the manual clock, with no jitter, quick recovery, and a
    /// watch loop that sleeps until the test moves the clock a whole day.
    func cache(_ configure: (inout TieredCache.Configuration) -> Void = { _ in }) -> TieredCache {
        var configuration = TieredCache.Configuration(
            minimumRecoveryBackoff: .milliseconds(20), maximumRecoveryBackoff: .milliseconds(200), healthCheckInterval: .seconds(86_400),
            ttlJitter: 0)
        configure(&configuration)
        return TieredCache(configuration: configuration, l2: store(), clock: .manual(clock))
    }

    /// Writes bytes that are not an envelope under `key`, as another program would.
    func putForeign(_ key: String, _ bytes: String) async throws {
        if let memoryStore {
            memoryStore.putRaw(key, buffer(bytes), lifetime: .seconds(3600))
        } else {
            try await client().set("ibge:" + key, value: buffer(bytes))
        }
    }

    /// The envelope under `key` in the store, read around the cache.
    func stored(_ key: String) async throws -> CacheEnvelope? {
        let raw: ByteBuffer? = if let memoryStore { memoryStore.raw(key) } else { try await client().get("ibge:" + key) }
        return try raw.map { try CacheEnvelope(decoding: $0) }
    }

    /// Drops `key` from the store as its physical expiry would (no notice).
    func expire(_ key: String) async throws {
        if let memoryStore {
            _ = try await memoryStore.remove(key, notify: nil)
        } else {
            try await client().unlink(["ibge:" + key])
        }
    }

    /// Makes Redis hold every client's replies for a while (`CLIENT PAUSE … ALL`).
    func pauseRedis(milliseconds: Int) async throws {
        guard let cluster else {
            _ = try await client().send(RESPCommand("CLIENT", "PAUSE", String(milliseconds), "ALL"))
            return
        }
        // Every node of a cluster.
        for node in cluster.nodes {
            let direct = RedisClient(configuration: node.configuration())
            _ = try await direct.send(RESPCommand("CLIENT", "PAUSE", String(milliseconds), "ALL"))
            await direct.shutdown()
        }
    }

    func shutdown() async {
        for client in clients.withLock({ $0 }) { await client.shutdown() }
    }
}

/// Runs the caches' services around `body`: waits until each uses its store and its watch
/// loop sleeps on `clock` (so the sleepers a test counts are its own), then stops them and
/// waits for them to end.
func running<T: Sendable>(_ caches: [TieredCache], on clock: ManualClock, _ body: () async throws -> T) async throws -> T {
    try await withRunning(caches.map { cache in { try await cache.run() } }) {
        guard await eventually({ caches.allSatisfy { !$0.hasSharedStore || $0.isRedisConnected } }),
            await clock.waitForSleepers(caches.count)
        else {
            throw HarnessError(message: "the caches did not connect to their store")
        }
        return try await body()
    }
}

/// Waits until `b` hears `a`'s notices (its backplane subscription is live).
func awaitBackplane(from a: TieredCache, to b: TieredCache) async -> Bool {
    await eventually {
        await a.set("backplane-probe", value: buffer("p"))
        return b.metrics().backplaneReceived > 0
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Counts of a load test's callers, shared with their tasks.
final class LoadCounters: Sendable {
    let failures = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}

/// 64 callers reading and writing through `cache` while `body` runs: old keys
/// (`v1:k<i % oldKeys>`, loaded before) and, one call in `newEvery`, new ones, each caller
/// pausing `pause` between calls. Returns their counts once they have all stopped.
func underLoad(_ cache: TieredCache, oldKeys: Int, newEvery: Int, pause: Duration, _ body: () async throws -> Void) async throws -> LoadCounters {
    let load = LoadCounters()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for caller in 0..<64 {
            group.addTask {
                var i = caller
                while !load.stop.load(ordering: .relaxed) {
                    let key = i % newEvery == 0 ? "v1:new\(caller)-\(i)" : "v1:k\(i % oldKeys)"
                    do {
                        _ = try await cache.getOrLoad(key) { buffer("loaded") }
                    } catch {
                        load.failures.add(1, ordering: .relaxed)
                    }
                    load.requests.add(1, ordering: .relaxed)
                    i += 64
                    try await Task.sleep(for: pause)
                }
            }
        }
        do {
            try await body()
        } catch {
            load.stop.store(true, ordering: .relaxed)
            throw error
        }
        load.stop.store(true, ordering: .relaxed)
        try await group.waitForAll()
    }
    return load
}
