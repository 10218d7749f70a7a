import Foundation
import NIOCore
import RESP
import TestSupport
@testable import Redis
import Testing

@Suite("Redis Cluster: the client on a real cluster")
struct ClusterClientTests {
    @Test("redis+cluster:// URLs: seeds, TLS, credentials; a database other than 0 is refused")
    func urls() throws {
        let plain = try RedisConfiguration(url: "redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(plain.clusterSeeds == [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 7001), .tcp(host: "::1", port: 7002)])
        #expect(plain.endpoint == .tcp(host: "10.0.0.1", port: 7000) && plain.username == "u" && plain.password == "p@ss" && !plain.tls)
        #expect(try RedisConfiguration(url: "rediss+cluster://h:1").tls)
        #expect(try RedisConfiguration(url: "redis://h:1").clusterSeeds == nil)
        for bad in ["redis+cluster://h:1/2", "redis+cluster://h:1,,h:2", "redis+cluster://h:99999", "redis+cluster://"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }

    @Test("each key on the master of its slot; MGET, EXISTS, DEL, MSET and pipelines across slots; SCAN and DBSIZE over every master; scripts")
    func commands() async throws {
        try await RedisClusterProcess.with { cluster in
            let client = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            let keys = (0..<300).map { "ibge:test:\($0)" }
            for key in keys { try await client.set(key, value: ByteBuffer(string: "v-\(key)")) }
            // Each key is on one master only: the one its slot maps to.
            let topology = try await cluster.topology()
            for key in keys.prefix(30) {
                let owner = try #require(topology.master(of: HashSlot(key: key)))
                let direct = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: owner.host, port: owner.port)))
                #expect(try await direct.get(key) == ByteBuffer(string: "v-\(key)"), "\(key) on \(owner)")
                await direct.shutdown()
            }
            let values = try await client.mget(keys + ["ibge:absent"])
            #expect(values.count == 301 && values.last == .some(nil))
            #expect(zip(keys, values).allSatisfy { $1 == ByteBuffer(string: "v-\($0)") }, "MGET's values in the keys' order")
            #expect(try await client.exists(keys) == 300)
            var scanned = Set<String>()
            for try await key in client.scanKeys(matching: "ibge:test:*", count: 50) { scanned.insert(key) }
            #expect(scanned == Set(keys), "SCAN visits every master")
            #expect(try await client.dbsize() == 300)
            try await client.mset(keys.prefix(10).map { ($0, ByteBuffer(string: "m")) })
            #expect(try await client.mget(Array(keys.prefix(10))).allSatisfy { $0 == ByteBuffer(string: "m") })
            let replies = try await client.pipeline(keys.suffix(50).map { RESPCommand("GET", $0) })
            #expect(zip(keys.suffix(50), replies).allSatisfy { $1.bytes == ByteBuffer(string: "v-\($0)") }, "a pipeline's replies in order")
            let script = RedisScript("return redis.call('GET', KEYS[1])")
            #expect(try await client.run(script, keys: [keys[42]]).bytes == ByteBuffer(string: "v-\(keys[42])"))
            #expect(try await client.del(keys) == 300)
            #expect(try await client.dbsize() == 0)
            await client.shutdown()
        }
    }

    @Test("slots resharded under a client holding the old map: MOVED is followed and the map updated, nothing fails")
    func reshard() async throws {
        try await RedisClusterProcess.with { cluster in
            let client = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            let keys = (0..<400).map { "k\($0)" }
            for key in keys { try await client.set(key, value: ByteBuffer(string: key)) }
            let before = try await cluster.topology()
            let masters = before.masters
            let from = try await cluster.id(of: masters[0])
            let to = try await cluster.id(of: masters[1])
            let moved = try RedisClusterProcess.redisCLI([
                "--cluster", "reshard", "\(masters[0].host):\(masters[0].port)", "--cluster-from", from, "--cluster-to", to,
                "--cluster-slots", "500", "--cluster-yes",
            ])
            try #require(moved.status == 0, "\(moved.output.suffix(500))")
            let after = try await cluster.topology()
            let movedKeys = keys.filter { before.master(of: HashSlot(key: $0)) != after.master(of: HashSlot(key: $0)) }
            #expect(movedKeys.count > 0, "some of the keys moved")
            // The client still has the old map: every read and write lands.
            for key in keys { #expect(try await client.get(key) == ByteBuffer(string: key), "\(key)") }
            for key in movedKeys { try await client.set(key, value: ByteBuffer(string: "new")) }
            #expect(try await client.mget(movedKeys).allSatisfy { $0 == ByteBuffer(string: "new") })
            let first = HashSlot(key: try #require(movedKeys.first))
            #expect(
                await eventually {
                    _ = try? await client.get(movedKeys[0])
                    return client.cluster?.topology?.master(of: first) == after.master(of: first)
                }, "the client's map follows the move")
            await client.shutdown()
        }
    }

    @Test("a slot being migrated: ASK is followed with ASKING, once, and does not change the client's map; MOVED does")
    func ask() async throws {
        try await RedisClusterProcess.with { cluster in
            let client = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            try await client.set("{ask}old", value: ByteBuffer(string: "stays"))
            try await client.set("{ask}gone", value: ByteBuffer(string: "moved"))
            let topology = try await cluster.topology()
            let slot = HashSlot(key: "{ask}")
            let source = try #require(topology.master(of: slot))
            let target = try #require(topology.masters.first { $0 != source })
            let (sourceID, targetID) = (try await cluster.id(of: source), try await cluster.id(of: target))
            let onSource = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: source.host, port: source.port)))
            let onTarget = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: target.host, port: target.port)))
            _ = try await onTarget.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "IMPORTING", sourceID))
            _ = try await onSource.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "MIGRATING", targetID))
            _ = try await onSource.send(RESPCommand("MIGRATE", target.host, String(target.port), "", "0", "5000", "KEYS", "{ask}gone"))
            // The source still has one key, the target the other; a new key goes to the target.
            #expect(try await client.get("{ask}old") == ByteBuffer(string: "stays"))
            #expect(try await client.get("{ask}gone") == ByteBuffer(string: "moved"), "ASK followed to the target")
            try await client.set("{ask}new", value: ByteBuffer(string: "fresh"))
            let onTargetNow = try await onTarget.pipeline([RESPCommand("ASKING"), RESPCommand("GET", "{ask}new")])
            #expect(onTargetNow.last?.bytes == ByteBuffer(string: "fresh"), "the new key was written on the importing node")
            #expect(client.cluster?.topology?.master(of: slot) == source, "an ASK is for one command: the map is unchanged")
            // The migration ends: the slot is the target's, and the client follows the MOVED.
            _ = try await onSource.send(RESPCommand("MIGRATE", target.host, String(target.port), "", "0", "5000", "KEYS", "{ask}old"))
            for node in [onTarget, onSource] { _ = try await node.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "NODE", targetID)) }
            #expect(try await client.mget(["{ask}old", "{ask}gone", "{ask}new"]) == ["stays", "moved", "fresh"].map { ByteBuffer(string: $0) })
            // MOVED updated the map (a refresh may still be settling: the nodes hear of the move by gossip).
            #expect(
                await eventually {
                    _ = try? await client.get("{ask}old")
                    return client.cluster?.topology?.master(of: slot) == target
                }, "MOVED updated the map")
            for node in [client, onSource, onTarget] { await node.shutdown() }
        }
    }

    @Test("sharded pub/sub: SSUBSCRIBE on the master of the channel's slot, following the slot when it moves and when its master fails")
    func shardedPubSub() async throws {
        try await RedisClusterProcess.with { cluster in
            let client = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            let publisher = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            #expect(await client.prefersShardedPubSub() == true, "a Redis 7 cluster has sharded pub/sub")
            let nowhere = RedisClient(configuration: try RedisConfiguration(url: "redis+cluster://127.0.0.1:1"))
            #expect(await nowhere.prefersShardedPubSub() == nil, "not known before a map could be read")
            await nowhere.shutdown()
            let crossSlot = await #expect(throws: RedisError.self) { _ = try await client.subscribe(to: [], shardChannels: ["a", "b"]) }
            #expect(crossSlot?.message.contains("hash slot") == true, "\(String(describing: crossSlot))")

            let channel = "ibge:backplane"
            let slot = HashSlot(key: channel)
            var messages = try await client.subscribe(to: [channel], shardChannels: [channel]).makeAsyncIterator()
            let owner = try #require(try await cluster.topology().master(of: slot))
            #expect(try await Self.shardSubscribers(of: channel, on: owner) == 1, "the sharded subscription is on the slot's master")
            #expect(try await publisher.spublish(ByteBuffer(string: "s1"), to: channel) == 1)
            #expect(await nextMessage(&messages) == RedisMessage(channel: channel, pattern: nil, payload: ByteBuffer(string: "s1")))
            // The classic channel of the same name comes on the same stream.
            #expect(try await publisher.publish(ByteBuffer(string: "c1"), to: channel) == 1)
            #expect(await nextMessage(&messages) == RedisMessage(channel: channel, pattern: nil, payload: ByteBuffer(string: "c1")))

            // The slot moves to another master: the old one ends the subscription, and the client
            // restores it on the new one, telling the stream that messages may have been lost.
            let target = try #require(try await cluster.topology().masters.first { $0 != owner })
            try await Self.move(slot, from: owner, to: target, in: cluster)
            #expect(await Self.next(&messages, gap: true), "the move is announced as a gap")
            #expect(await eventually { (try? await Self.shardSubscribers(of: channel, on: target)) == 1 }, "subscribed again on the new master")
            #expect(try await publisher.spublish(ByteBuffer(string: "s2"), to: channel) == 1)
            #expect(await Self.next(&messages, payload: "s2"))

            // The new master dies: its replica takes the slot, and the subscription follows.
            let victim = try #require(cluster.nodes.first { $0.port == target.port })
            victim.kill()
            #expect(await Self.next(&messages, gap: true, within: .seconds(40)), "the failover is announced as a gap")
            let delivered = await eventually(within: .seconds(30)) {
                (try? await publisher.spublish(ByteBuffer(string: "s3"), to: channel)) == 1
            }
            #expect(delivered, "a subscriber is back on the slot's new master")
            #expect(await Self.next(&messages, payload: "s3"))
            #expect(try #require(try await cluster.topology().master(of: slot)) != target)
            for node in [client, publisher] { await node.shutdown() }
        }
    }

    @Test("read_from=replicas: reads go to the slots' replicas (after READONLY), writes to the masters; a replica gone leaves its reads to its master")
    func replicaReads() async throws {
        try await RedisClusterProcess.with { cluster in
            let configuration = try RedisConfiguration(url: cluster.url + "/?read_from=replicas")
            #expect(configuration.readFromReplicas)
            let client = RedisClient(configuration: configuration)
            let keys = (0..<120).map { "r\($0)" }
            let values = keys.map { ByteBuffer(string: "v-\($0)") }
            for (key, value) in zip(keys, values) { try await client.set(key, value: value) }
            // Replicas are listed once they have synchronised with their masters (`online`); the
            // client's map (read every 30 s) is read again now.
            let synced = await eventually {
                guard let now = try? await cluster.topology(), now.shards.allSatisfy({ !$0.replicas.isEmpty }) else { return false }
                await client.cluster?.refresh()
                return client.cluster?.topology == now
            }
            try #require(synced, "every shard has an online replica in the client's map")
            let topology = try await cluster.topology()
            let direct = cluster.nodes.map { RedisClient(configuration: $0.configuration()) }
            // Replication is asynchronous: wait until the replicas have every key.
            #expect(await eventually { (try? await client.mget(keys)) == values }, "the replicas caught up")
            for node in direct { _ = try await node.send(RESPCommand("CONFIG", "RESETSTAT")) }
            for (key, value) in zip(keys, values) { #expect(try await client.get(key) == value, "\(key)") }
            #expect(try await client.mget(keys) == values, "MGET across slots, from the replicas")
            var onMasters = 0
            var onReplicas = 0
            for (process, node) in zip(cluster.nodes, direct) {
                let stats = try await node.send(RESPCommand("INFO", "commandstats")).string ?? ""
                let reads = commandCalls("get", in: stats) + commandCalls("mget", in: stats)
                if topology.masters.contains(where: { $0.port == process.port }) { onMasters += reads } else { onReplicas += reads }
            }
            #expect(onMasters == 0, "no read reached a master")
            #expect(onReplicas >= keys.count + 3, "every read was served by a replica")
            try await client.set("r0", value: ByteBuffer(string: "written"))
            let r0Master = try #require(zip(cluster.nodes, direct).first { $0.0.port == topology.master(of: HashSlot(key: "r0"))?.port }?.1)
            #expect(try await r0Master.get("r0") == ByteBuffer(string: "written"), "a write goes to the master")

            // A replica dies: the reads of its shard are served by its master, and none fails.
            let shard = try #require(topology.shard(of: HashSlot(key: "r1")))
            let replica = try #require(shard.replicas.first)
            try #require(cluster.nodes.first { $0.port == replica.port }).kill()
            for (key, value) in zip(keys.dropFirst(), values.dropFirst()) { #expect(try await client.get(key) == value, "\(key)") }
            for node in direct { await node.shutdown() }
            await client.shutdown()
        }
    }

    @Test("a cluster over TLS, as an ACL user: every node's pool speaks TLS on its tls-port and logs in as the user, whose rules hold")
    func tlsAndACLUser() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let user = RedisACLUser(name: "ibge", password: "s3cret", rules: ["~ibge:*", "&ibge:*", "+@all"])
        try await RedisClusterProcess.with(certificates: certificates, user: user) { cluster in
            let configuration = try RedisConfiguration(url: cluster.url + "&read_from=replicas")
            #expect(configuration.tls && configuration.username == "ibge" && configuration.readFromReplicas)
            let client = RedisClient(configuration: configuration)
            let keys = (0..<60).map { "ibge:tls:\($0)" }
            let values = keys.map { ByteBuffer(string: $0) }
            for (key, value) in zip(keys, values) { try await client.set(key, value: value) }
            #expect(await eventually { (try? await client.mget(keys)) == values }, "keys on every master, over TLS")
            #expect(try await client.dbsize() == 60)
            // Reads from the replicas, over TLS too, once the map lists them online.
            #expect(
                await eventually {
                    await client.cluster?.refresh()
                    return client.cluster?.topology?.shards.allSatisfy { !$0.replicas.isEmpty } == true
                })
            let masters = try #require(client.cluster?.topology?.masters)
            let replicaNodes = zip(cluster.nodes, cluster.tlsPorts).filter { _, tlsPort in !masters.contains { $0.port == tlsPort } }.map(\.0)
            #expect(replicaNodes.count == 3)
            let replicaClients = replicaNodes.map { RedisClient(configuration: $0.configuration()) }
            for node in replicaClients { _ = try await node.send(RESPCommand("CONFIG", "RESETSTAT")) }
            #expect(try await client.mget(keys) == values)
            var onReplicas = 0
            for node in replicaClients {
                onReplicas += commandCalls("mget", in: try await node.send(RESPCommand("INFO", "commandstats")).string ?? "")
                await node.shutdown()
            }
            #expect(onReplicas >= 3, "the MGET's parts were served by the replicas")
            // The map names the nodes' TLS ports: no pool ever opened a plaintext one.
            let named = try #require(client.cluster?.topology).shards.flatMap { [$0.master] + $0.replicas }
            #expect(!named.isEmpty && named.allSatisfy { cluster.tlsPorts.contains($0.port) }, "\(named)")
            // Logged in as the user: its key rules hold.
            let refused = await #expect(throws: RedisError.self) { try await client.set("other:k", value: ByteBuffer(string: "v")) }
            #expect(refused?.message.contains("NOPERM") == true, "\(String(describing: refused))")
            // The backplane's sharded channel, over TLS, as the user.
            var messages = try await client.subscribe(to: ["ibge:backplane"], shardChannels: ["ibge:backplane"]).makeAsyncIterator()
            #expect(try await client.spublish(ByteBuffer(string: "hi"), to: "ibge:backplane") == 1)
            #expect(await nextMessage(&messages)?.payload == ByteBuffer(string: "hi"))
            await client.shutdown()
        }
    }

    /// `PUBSUB SHARDNUMSUB channel` asked of `node` itself.
    static func shardSubscribers(of channel: String, on node: ClusterTopology.Node) async throws -> Int? {
        let direct = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: node.host, port: node.port)))
        defer { Task { await direct.shutdown() } }
        let reply = try await direct.send(RESPCommand("PUBSUB", "SHARDNUMSUB", channel))
        switch reply {
        case .array(let parts) where parts.count == 2: if case .integer(let n) = parts[1] { return Int(n) }
        case .map(let pairs) where pairs.count == 1: if case .integer(let n) = pairs[0].value { return Int(n) }
        default: break
        }
        return nil
    }

    /// Moves an empty slot from one master to another by hand (`CLUSTER SETSLOT`).
    static func move(_ slot: HashSlot, from source: ClusterTopology.Node, to target: ClusterTopology.Node, in cluster: RedisClusterProcess)
        async throws
    {
        let (sourceID, targetID) = (try await cluster.id(of: source), try await cluster.id(of: target))
        let onSource = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: source.host, port: source.port)))
        let onTarget = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: target.host, port: target.port)))
        _ = try await onTarget.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "IMPORTING", sourceID))
        _ = try await onSource.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "MIGRATING", targetID))
        for node in [onTarget, onSource] { _ = try await node.send(RESPCommand("CLUSTER", "SETSLOT", String(slot.rawValue), "NODE", targetID)) }
        for node in [onTarget, onSource] { await node.shutdown() }
    }

    /// Reads the stream until a gap (`gap`) or a message with `payload` comes; false if none
    /// does within `limit`.
    static func next(
        _ messages: inout AsyncStream<RedisMessage>.Iterator, gap: Bool = false, payload: String? = nil, within limit: Duration = .seconds(15)
    ) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            guard let message = await nextMessage(&messages, within: deadline - ContinuousClock.now) else { return false }
            if gap, message.isGap { return true }
            if let payload, !message.isGap, message.payload == ByteBuffer(string: payload) { return true }
        }
        return false
    }

    @Test("a cluster whose nodes need a password: every node's pool authenticates; a wrong password fails clearly")
    func password() async throws {
        try await RedisClusterProcess.with(password: "s3cret") { cluster in
            let client = RedisClient(configuration: try RedisConfiguration(url: cluster.url))
            let keys = (0..<50).map { "auth:\($0)" }
            for key in keys { try await client.set(key, value: ByteBuffer(string: key)) }
            #expect(try await client.mget(keys) == keys.map { ByteBuffer(string: $0) }, "keys on every master")
            #expect(try await client.dbsize() == 50)
            await client.shutdown()
            let wrong = RedisClient(configuration: try RedisConfiguration(url: cluster.url.replacingOccurrences(of: "s3cret", with: "nope")))
            let error = await #expect(throws: RedisError.self) { try await wrong.set("k", value: ByteBuffer(string: "v")) }
            #expect(error?.code == .authenticationFailed || error?.message.contains("WRONGPASS") == true, "\(String(describing: error))")
            await wrong.shutdown()
        }
    }
}
