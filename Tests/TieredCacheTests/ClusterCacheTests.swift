import NIOCore
import RESP
import Redis
import Synchronization
import TestSupport
import TieredCache
import TieredCacheRedis
import Testing

/// The cache on a real Redis Cluster (3 masters, 3 replicas), in real time: what only a
/// cluster can show (keys on every master, a master killed and its replica promoted).
@Suite("Tiered cache on a real Redis Cluster")
struct ClusterCacheTests {
    /// A cache on the cluster; `query`: URL parameters, as `?read_from=replicas`.
    static func cache(_ cluster: RedisClusterProcess, query: String = "") throws -> TieredCache {
        TieredCache(
            configuration: .init(
                minimumRecoveryBackoff: .milliseconds(20), maximumRecoveryBackoff: .milliseconds(200), healthCheckInterval: .milliseconds(50)),
            l2: RedisStore(client: RedisClient(configuration: try RedisConfiguration(url: cluster.url + (query.isEmpty ? "" : "/" + query)))))
    }

    @Test("clear and key counts walk every master; other applications' keys survive")
    func clear() async throws {
        try await RedisClusterProcess.with { cluster in
            let cache = try Self.cache(cluster)
            let raw = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<300 { await cache.set("v1:k\(i)", value: buffer("\(i)")) }
                try await raw.set("other-app:session", value: buffer("keep me"))
                let status = try #require(await cache.l2Keys(sampleSize: 5))
                #expect(status.count == 300 && status.complete)
                let result = await cache.clear()
                #expect(result.l2Keys == 300)
                #expect(try await raw.dbsize() == 1)
                #expect(try await raw.get("other-app:session") == buffer("keep me"))
            }
            // /status's Redis memory: every master's added up.
            let masters = try await cluster.topology().masters
            for master in masters {
                let node = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: master.host, port: master.port)))
                _ = try await node.send(RESPCommand("CONFIG", "SET", "maxmemory", "64mb"))
                await node.shutdown()
            }
            let memory = try #require(try await RedisStore(client: raw).memory())
            #expect(memory.maximumBytes == masters.count * 64 * 1024 * 1024, "\(memory)")
            #expect(memory.usedBytes > 0 && memory.policy == "noeviction")
            await raw.shutdown()
        }
    }

    @Test("the backplane on a Redis 7 cluster: notices go on the sharded channel, and one on the classic channel (an older instance) is heard too")
    func shardedBackplane() async throws {
        try await RedisClusterProcess.with { cluster in
            let a = try Self.cache(cluster)
            let b = try Self.cache(cluster)
            let raw = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            try await withRunning([a.run, b.run]) {
                #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                #expect(await awaitBackplane(from: a, to: b))
                _ = try await b.getOrLoad("v1:k") { buffer("old") }
                await a.set("v1:k", value: buffer("new"))
                #expect(await eventually { await b.get("v1:k") == buffer("new") }, "B dropped its copy on A's notice")
                // Every notice so far was an SPUBLISH, none a PUBLISH (which the cluster copies to every node).
                var spublished = 0
                for master in try await cluster.topology().masters {
                    let node = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: master.host, port: master.port)))
                    let stats = try await node.send(RESPCommand("INFO", "commandstats")).string ?? ""
                    #expect(!stats.contains("cmdstat_publish:"), "no classic PUBLISH on \(master)")
                    spublished += commandCalls("spublish", in: stats)
                    await node.shutdown()
                }
                #expect(spublished >= 2, "notices went out with SPUBLISH")
                // An instance that publishes on the classic channel is still heard.
                let heard = b.metrics().backplaneReceived
                _ = try await raw.publish(ByteBuffer(string: "1|older-instance|remove|v1:k"), to: "ibge:backplane")
                #expect(await eventually { b.metrics().backplaneReceived > heard }, "a classic notice is heard")
            }
            await raw.shutdown()
        }
    }

    @Test("reads from replicas: a key another instance just changed is read from its master (a replica may lag); others from the replicas")
    func replicaReadsAfterNotice() async throws {
        try await RedisClusterProcess.with { cluster in
            // The caches read the map once every shard's replica is online.
            #expect(await eventually { (try? await cluster.topology())?.shards.allSatisfy { !$0.replicas.isEmpty } == true })
            let (a, b) = (try Self.cache(cluster, query: "?read_from=replicas"), try Self.cache(cluster, query: "?read_from=replicas"))
            let topology = try await cluster.topology()
            let direct = cluster.nodes.map { RedisClient(configuration: $0.configuration()) }
            func readsOnMasters() async throws -> Int {
                var reads = 0
                for (process, node) in zip(cluster.nodes, direct) where topology.masters.contains(where: { $0.port == process.port }) {
                    let stats = try await node.send(RESPCommand("INFO", "commandstats")).string ?? ""
                    reads += commandCalls("get", in: stats) + commandCalls("mget", in: stats)
                }
                return reads
            }
            try await withRunning([a.run, b.run]) {
                #expect(await eventually { a.isRedisConnected && b.isRedisConnected })
                #expect(await awaitBackplane(from: a, to: b))
                await a.set("v1:quiet", value: buffer("q"))
                // Wait until the replicas have it, then let 5 s pass for the probe's and this notice.
                try await Task.sleep(for: .milliseconds(5500))
                for node in direct { _ = try await node.send(RESPCommand("CONFIG", "RESETSTAT")) }
                #expect(await b.get("v1:quiet") == buffer("q"))
                #expect(try await readsOnMasters() == 0, "a key not announced lately is read from a replica")
                let heard = b.metrics().backplaneReceived
                await a.set("v1:k", value: buffer("new"))
                #expect(await eventually { b.metrics().backplaneReceived > heard })
                #expect(await b.get("v1:k") == buffer("new"))
                #expect(try await readsOnMasters() >= 1, "the key just announced is read from its master")
            }
            for node in direct { await node.shutdown() }
        }
    }

    @Test("a batch of writes of which one master refuses one (out of memory): the values written are announced, the refused one is not")
    func noticesOfPartialWrites() async throws {
        try await RedisClusterProcess.with { cluster in
            let raw = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            let store = RedisStore(client: RedisClient(configuration: try RedisConfiguration(url: cluster.url)))
            var notices = try await raw.subscribe(to: [], shardChannels: ["ibge:backplane"]).makeAsyncIterator()
            let topology = try await cluster.topology()
            // Two keys on different masters; the second's master is full.
            let keys = (0..<100).map { "v1:p\($0)" }
            let first = try #require(keys.first)
            let second = try #require(keys.first { topology.master(of: HashSlot(key: "ibge:" + $0)) != topology.master(of: HashSlot(key: "ibge:" + first)) })
            let full = try #require(topology.master(of: HashSlot(key: "ibge:" + second)))
            let onFull = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: full.host, port: full.port)))
            _ = try await onFull.send(RESPCommand("CONFIG", "SET", "maxmemory", "1"))
            let entries = [first, second].map {
                L2Entry(key: $0, envelope: CacheEnvelope(freshUntil: 0, payload: buffer("v")), lifetime: .seconds(60))
            }
            let refused = await #expect(throws: L2StoreError.self) { try await store.write(entries, notify: "writer") }
            #expect(refused?.message.contains("OOM") == true, "\(String(describing: refused))")
            _ = try await onFull.send(RESPCommand("CONFIG", "SET", "maxmemory", "0"))
            #expect(try await raw.get("ibge:" + first) != nil, "the first value was written")
            // Its notice came; the refused value's did not (the marker follows at once).
            #expect(await nextNotice(&notices) == "1|writer|set|\(first)")
            _ = try await raw.spublish(buffer("marker"), to: "ibge:backplane")
            #expect(await nextNotice(&notices) == "marker")
            await onFull.shutdown()
            await raw.shutdown()
        }
    }

    /// The next notice's text, gaps skipped (nil when none comes within 10 s).
    func nextNotice(_ iterator: inout AsyncStream<RedisMessage>.Iterator) async -> String? {
        while let message = await nextMessage(&iterator) {
            if !message.isGap { return String(buffer: message.payload) }
        }
        return nil
    }


    @Test("a master killed while 64 callers read and write: its replica is promoted, no request fails, and writes reach Redis again")
    func failover() async throws {
        try await RedisClusterProcess.with { cluster in
            let cache = try Self.cache(cluster)
            let raw = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<200 { _ = try await cache.getOrLoad("v1:k\(i)") { buffer("v\(i)") } }
                // The master of one of the keys, and the node that is its replica.
                let victim = try #require(try await cluster.topology().master(of: HashSlot(key: "{k7}")))
                let victimNode = try #require(cluster.nodes.first { $0.port == victim.port })

                // Old keys, and new ones (written to the cluster when it takes them).
                let load = try await underLoad(cache, oldKeys: 200, newEvery: 3, pause: .milliseconds(5)) {
                    try await Task.sleep(for: .milliseconds(300))
                    victimNode.kill()
                    // The replica takes over after the node timeout (2 s) and an election.
                    let promoted = await eventually(within: .seconds(30)) {
                        guard let now = try? await cluster.topology(), let master = now.master(of: HashSlot(key: "{k7}")) else { return false }
                        return master != victim && now.coversAllSlots
                    }
                    #expect(promoted, "the replica was promoted")
                    // New keys of the failed master's slots are written to its new master.
                    var probe = 0
                    let landed = await eventually(within: .seconds(30)) {
                        probe += 1
                        let key = "v1:{k7}after-\(probe)"  // in k7's slot (the hash tag)
                        let value = "after-\(probe)"
                        _ = try? await cache.getOrLoad(key) { buffer(value) }
                        guard let stored = try? await raw.get("ibge:" + key) else { return false }
                        return (try? CacheEnvelope(decoding: stored).payload) == buffer(value)
                    }
                    #expect(landed, "a key of the failed master's slots is written to its new master")
                }
                #expect(load.requests.load(ordering: .relaxed) > 500)
                #expect(load.failures.load(ordering: .relaxed) == 0, "L1 and the source cover the gap")
                #expect(await eventually { cache.isRedisConnected }, "the cache is back on Redis, not left in fallback")
            }
            await raw.shutdown()
        }
    }

    @Test("slots resharded while 64 callers read and write through the cache: no request fails, and every key reads back from Redis")
    func reshardUnderLoad() async throws {
        try await RedisClusterProcess.with { cluster in
            let cache = try Self.cache(cluster)
            let raw = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<200 { _ = try await cache.getOrLoad("v1:k\(i)") { buffer("v\(i)") } }
                let topology = try await cluster.topology()
                let (from, to) = (topology.masters[0], topology.masters[1])
                let (fromID, toID) = (try await cluster.id(of: from), try await cluster.id(of: to))
                let load = try await underLoad(cache, oldKeys: 200, newEvery: 2, pause: .milliseconds(2)) {
                    let moved = try RedisClusterProcess.redisCLI([
                        "--cluster", "reshard", "\(from.host):\(from.port)", "--cluster-from", fromID, "--cluster-to", toID,
                        "--cluster-slots", "1000", "--cluster-yes",
                    ])
                    #expect(moved.status == 0, "\(moved.output.suffix(300))")
                }
                #expect(load.requests.load(ordering: .relaxed) > 200)
                #expect(load.failures.load(ordering: .relaxed) == 0)
                // Every key written before and during the move reads back from the cluster.
                let values = try await raw.mget((0..<200).map { "ibge:v1:k\($0)" })
                #expect(values.allSatisfy { $0 != nil }, "\(values.filter { $0 == nil }.count) keys missing")
                #expect(cache.isRedisConnected)
                // MOVED and ASK were followed inside the client: none reached the cache as an error.
                #expect(cache.metrics().redisErrors == 0, "\(cache.metrics().redisLastError ?? "")")
            }
            await raw.shutdown()
        }
    }
}

