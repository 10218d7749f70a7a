import NIOCore
import RESP
import Redis
import TestSupport
import Testing

@Suite("Redis Cluster: hash slots and topology")
struct ClusterTopologyTests {
    @Test("CRC16 and slots as the cluster specification gives them, hash tags included")
    func slots() {
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3, "the specification's check value")
        #expect(HashSlot(key: "foo").rawValue == 12182)
        #expect(HashSlot(key: "bar").rawValue == 5061)
        #expect(HashSlot(key: "").rawValue == 0)
        // The part between the first { and the next } decides, when it is not empty.
        #expect(HashSlot(key: "{user1000}.following") == HashSlot(key: "{user1000}.followers"))
        #expect(HashSlot(key: "{user1000}.following") == HashSlot(key: "user1000"))
        #expect(HashSlot(key: "foo{}{bar}") == HashSlot(key: Array("foo{}{bar}".utf8)), "an empty tag: the whole key")
        #expect(HashSlot(key: "foo{}{bar}") != HashSlot(key: "bar"))
        #expect(HashSlot(key: "foo{{bar}}zap") == HashSlot(key: "{bar"))
        #expect(HashSlot(key: "foo{bar}{zap}") == HashSlot(key: "bar"))
        #expect(HashSlot(key: "{open") == HashSlot(key: Array("{open".utf8)), "no closing brace: the whole key")
        #expect(HashSlot(rawValue: 16384) == nil && HashSlot(rawValue: -1) == nil && HashSlot(rawValue: 16383) != nil)
    }

    @Test("a real 3-master, 3-replica cluster: CLUSTER SHARDS and CLUSTER SLOTS give the same map, every slot served, the slot of a key where CLUSTER KEYSLOT says")
    func realCluster() async throws {
        try await RedisClusterProcess.with { cluster in
            let seed = cluster.nodes[0]
            let client = RedisClient(configuration: seed.configuration())
            let node = ClusterTopology.Node(host: "127.0.0.1", port: seed.port)
            var shards = try ClusterTopology(shardsReply: try await client.send(RESPCommand("CLUSTER", "SHARDS")), seed: node)
            #expect(shards.coversAllSlots)
            #expect(shards.masters.count == 3)
            let ports = Set(cluster.nodes.map(\.port))
            for master in shards.masters { #expect(ports.contains(master.port) && master.host == "127.0.0.1") }
            // A replica that has not replicated anything yet is "loading" (Redis 7 lists it so,
            // and leaves it out of CLUSTER SLOTS): a write to each master makes them online.
            for master in shards.masters {
                let masterClient = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: master.host, port: master.port)))
                let key = try #require((0..<10_000).lazy.map { "probe\($0)" }.first { shards.master(of: HashSlot(key: $0)) == master })
                _ = try await masterClient.send(RESPCommand("INCR", key))
                await masterClient.shutdown()
            }
            #expect(
                try await eventually {
                    shards = try ClusterTopology(shardsReply: try await client.send(RESPCommand("CLUSTER", "SHARDS")), seed: node)
                    return shards.shards.allSatisfy { $0.replicas.count == 1 }
                }, "each master has its replica online")
            let slots = try ClusterTopology(slotsReply: try await client.send(RESPCommand("CLUSTER", "SLOTS")), seed: node)
            #expect(slots.coversAllSlots)
            #expect(shards == slots, "the two commands give the same map, replicas included")
            for key in ["foo", "bar", "ibge:v1:localidades/estados", "{ibge:x}lock", "é"] {
                let server = try await client.send(RESPCommand("CLUSTER", "KEYSLOT", key))
                #expect(server == .integer(Int64(HashSlot(key: key).rawValue)), "\(key)")
                // The master the map names for the key's slot takes the key; the others redirect.
                let owner = try #require(shards.master(of: HashSlot(key: key)))
                let ownerClient = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: owner.host, port: owner.port)))
                #expect(try await ownerClient.send(RESPCommand("SET", key, "v")).string == "OK")
                await ownerClient.shutdown()
            }
            await client.shutdown()
        }
    }

    @Test("hostile or broken replies are refused as a whole, with a protocol error")
    func hostile() throws {
        let seed = ClusterTopology.Node(host: "127.0.0.1", port: 7000)
        func shard(_ bounds: [Int64], port: Int64 = 7000, host: String = "127.0.0.1", role: String = "master") -> RESPValue {
            .map([
                RESPPair(key: .bulkString(ByteBuffer(string: "slots")), value: .array(bounds.map { .integer($0) })),
                RESPPair(
                    key: .bulkString(ByteBuffer(string: "nodes")),
                    value: .array([
                        .map([
                            RESPPair(key: .bulkString(ByteBuffer(string: "ip")), value: .bulkString(ByteBuffer(string: host))),
                            RESPPair(key: .bulkString(ByteBuffer(string: "port")), value: .integer(port)),
                            RESPPair(key: .bulkString(ByteBuffer(string: "role")), value: .bulkString(ByteBuffer(string: role))),
                        ])
                    ])),
            ])
        }
        let good = try ClusterTopology(shardsReply: .array([shard([0, 8191]), shard([8192, 16383], port: 7001)]), seed: seed)
        #expect(good.coversAllSlots && good.master(of: HashSlot(key: "foo"))?.port == 7001)
        let cases: [(String, RESPValue)] = [
            ("not an array", .integer(1)),
            ("a slot past 16383", .array([shard([0, 16384])])),
            ("a negative slot", .array([shard([-1, 5])])),
            ("an odd list of bounds", .array([shard([0, 5, 9])])),
            ("a range backwards", .array([shard([9, 5])])),
            ("overlapping ranges", .array([shard([0, 100]), shard([50, 200], port: 7001)])),
            ("port 0", .array([shard([0, 5], port: 0)])),
            ("port past 65535", .array([shard([0, 5], port: 70000)])),
            ("a host with a space", .array([shard([0, 5], host: "a b")])),
            ("a host of 300 bytes", .array([shard([0, 5], host: String(repeating: "h", count: 300))])),
            ("a shard that is a number", .array([.integer(3)])),
        ]
        for (name, reply) in cases {
            let error = #expect(throws: RedisError.self, "\(name)") { try ClusterTopology(shardsReply: reply, seed: seed) }
            #expect(error?.code == .protocolError, "\(name)")
        }
        // A node announcing no address is the one that answered.
        let unnamed = try ClusterTopology(shardsReply: .array([shard([0, 16383], host: "?")]), seed: seed)
        #expect(unnamed.masters == [seed])
        // A shard without a master (mid-failover) leaves its slots unserved, not an error.
        let orphan = try ClusterTopology(shardsReply: .array([shard([0, 100], role: "replica"), shard([101, 16383])]), seed: seed)
        #expect(!orphan.coversAllSlots && orphan.master(of: HashSlot(rawValue: 50)!) == nil)
    }
}
