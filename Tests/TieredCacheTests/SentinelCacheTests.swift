import NIOCore
import RESP
import Redis
import Synchronization
import TestSupport
import TieredCache
import TieredCacheRedis
import Testing

/// The cache on Redis Sentinel (a master, its replica, three sentinels), in real time.
@Suite("Tiered cache on Redis Sentinel")
struct SentinelCacheTests {
    @Test("redis+sentinel:// URLs: sentinels (26379 unless given), master name, database, the sentinels' password")
    func urls() throws {
        let configuration = try RedisConfiguration(url: "redis+sentinel://:secret@s1,s2:26380,[::1]/mymaster/2?sentinel_password=s%3Fp")
        let sentinel = try #require(configuration.sentinel)
        #expect(sentinel.endpoints == [.tcp(host: "s1", port: 26379), .tcp(host: "s2", port: 26380), .tcp(host: "::1", port: 26379)])
        #expect(sentinel.masterName == "mymaster" && sentinel.password == "s?p")
        #expect(configuration.database == 2 && configuration.password == "secret" && configuration.clusterSeeds == nil)
        for bad in ["redis+sentinel://s1:26379", "redis+sentinel://s1:26379/", "redis+sentinel://s1:99999/m", "redis+sentinel://s1/m/x"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }

    @Test("the master killed while 64 callers read and write: the sentinels promote the replica, the client follows within 2 s of the switch, no request fails")
    func failover() async throws {
        try await RedisSentinelProcess.with { deployment in
            let client = RedisClient(configuration: try RedisConfiguration(url: deployment.url))
            let cache = TieredCache(
                configuration: .init(
                    minimumRecoveryBackoff: .milliseconds(20), maximumRecoveryBackoff: .milliseconds(200), healthCheckInterval: .milliseconds(50)),
                l2: RedisStore(client: client))
            let onMaster = RedisClient(configuration: deployment.master.configuration())
            let onReplica = RedisClient(configuration: deployment.replica.configuration())
            // The client's run() follows the sentinels' +switch-master, as the server runs it.
            try await withRunning(client.run) {
            try await withRunning(cache.run) {
                #expect(await eventually { cache.isRedisConnected })
                for i in 0..<100 { _ = try await cache.getOrLoad("v1:k\(i)") { buffer("v\(i)") } }
                #expect(try await onMaster.get("ibge:v1:k1") != nil, "written on the master the sentinels name")

                var switched: ContinuousClock.Instant?
                var landed: ContinuousClock.Instant?
                let load = try await underLoad(cache, oldKeys: 100, newEvery: 2, pause: .milliseconds(5)) {
                    try await Task.sleep(for: .milliseconds(200))
                    deployment.master.kill()
                    // The sentinels agree on the replica after down-after (1 s) and an election.
                    let port = deployment.sentinelPorts[0]
                    #expect(
                        await eventually(within: .seconds(30)) {
                            guard await deployment.namedMaster(sentinel: port) == deployment.replica.port else { return false }
                            switched = .now
                            return true
                        }, "the sentinels switched to the replica")
                    // The cache writes reach the new master.
                    var probe = 0
                    #expect(
                        await eventually(within: .seconds(30)) {
                            probe += 1
                            _ = try? await cache.getOrLoad("v1:after-\(probe)") { buffer("after") }
                            guard (try? await onReplica.get("ibge:v1:after-\(probe)")) != nil else { return false }
                            landed = .now
                            return true
                        }, "writes reach the promoted replica")
                }
                if let switched, let landed {
                    #expect(landed - switched < .seconds(2), "followed \(landed - switched) after the switch")
                }
                #expect(load.requests.load(ordering: .relaxed) > 300)
                #expect(load.failures.load(ordering: .relaxed) == 0, "L1 and the source cover the gap")
                #expect(await eventually { cache.isRedisConnected })
            }
            }
            for connection in [onMaster, onReplica] { await connection.shutdown() }
        }
    }

    @Test("a master that needs a password: the client finds it through the sentinels and authenticates")
    func password() async throws {
        try await RedisSentinelProcess.with(password: "s3cret") { deployment in
            let client = RedisClient(configuration: try RedisConfiguration(url: deployment.url))
            try await client.set("k", value: buffer("v"))
            let onMaster = RedisClient(configuration: deployment.master.configuration())
            #expect(try await onMaster.get("k") == buffer("v"))
            await client.shutdown()
            await onMaster.shutdown()
        }
    }

    @Test("over TLS, as an ACL user: the client asks the sentinels on their TLS ports, logs in to the master as the user, and follows a failover")
    func tlsAndACLUser() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let user = RedisACLUser(name: "ibge", password: "s3cret", rules: ["~ibge:*", "&ibge:*", "+@all"])
        try await RedisSentinelProcess.with(certificates: certificates, user: user) { deployment in
            let configuration = try RedisConfiguration(url: deployment.url)
            #expect(configuration.tls && configuration.username == "ibge")
            let tlsPorts = try #require(deployment.tlsPorts)
            let client = RedisClient(configuration: configuration)
            let onReplica = RedisClient(configuration: deployment.replica.configuration())
            try await withRunning(client.run) {
                try await client.set("ibge:before", value: buffer("1"))
                let refused = await #expect(throws: RedisError.self) { try await client.set("other:k", value: buffer("v")) }
                #expect(refused?.message.contains("NOPERM") == true, "logged in as the user: \(String(describing: refused))")
                deployment.master.kill()
                #expect(
                    await eventually(within: .seconds(30)) { await deployment.namedMaster(sentinel: deployment.sentinelPorts[0]) == tlsPorts.replica },
                    "the sentinels name the replica's TLS port")
                #expect(
                    await eventually(within: .seconds(30)) { (try? await client.set("ibge:after", value: buffer("2"))) != nil },
                    "writes reach the promoted replica over TLS")
                #expect(try await onReplica.get("ibge:after") == buffer("2"))
                #expect(try await client.get("ibge:before") == buffer("1"), "the replica had the value written before")
            }
            await onReplica.shutdown()
        }
    }
}

@Suite("Redis Sentinel: which node the client accepts")
struct SentinelRoleTests {
    @Test("a sentinel naming a replica is not believed: the client asks the next one and writes to the master; with only liars, commands fail clearly")
    func refusesReplica() async throws {
        try await RedisServerProcess.with { master in
            try await RedisServerProcess.with(["--replicaof", "127.0.0.1", String(master.port)]) { replica in
                let liar = try HostileRedisServer.startSentinel(naming: replica.port)
                let honest = try HostileRedisServer.startSentinel(naming: master.port)
                defer {
                    liar.stop()
                    honest.stop()
                }
                let client = RedisClient(configuration: try RedisConfiguration(url: "redis+sentinel://127.0.0.1:\(liar.port),127.0.0.1:\(honest.port)/mymaster"))
                try await client.set("k", value: buffer("v"))
                let onMaster = RedisClient(configuration: master.configuration())
                #expect(try await onMaster.get("k") == buffer("v"), "written on the master")
                #expect(liar.accepted >= 1, "the liar was asked first")
                await client.shutdown()
                await onMaster.shutdown()

                let fooled = RedisClient(configuration: try RedisConfiguration(url: "redis+sentinel://127.0.0.1:\(liar.port)/mymaster"))
                let error = await #expect(throws: RedisError.self) { try await fooled.set("k", value: buffer("x")) }
                #expect(error?.code == .connectFailed && error?.message.contains("no sentinel names a usable master") == true, "\(String(describing: error))")
                await fooled.shutdown()
            }
        }
    }
}
