import NIOCore
import RESP
import TestSupport
@testable import Redis
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

    @Test("redirections parsed strictly (an address without a host is the node that answered); a MOVED remaps one slot, bounded, until the next read of the map")
    func redirections() throws {
        let here = ClusterTopology.Node(host: "10.0.0.9", port: 7000)
        #expect(Redirection("MOVED 3999 127.0.0.1:6381", from: here) == .moved(HashSlot(rawValue: 3999)!, .init(host: "127.0.0.1", port: 6381)))
        #expect(Redirection("ASK 3999 [::1]:6381", from: here) == .ask(.init(host: "::1", port: 6381)))
        #expect(Redirection("MOVED 3999 :6381", from: here) == .moved(HashSlot(rawValue: 3999)!, .init(host: "10.0.0.9", port: 6381)))
        #expect(Redirection("TRYAGAIN Multiple keys request during rehashing of slot", from: here) == .tryAgain)
        #expect(Redirection("CLUSTERDOWN The cluster is down", from: here) == .tryAgain)
        for junk in ["MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h:0", "MOVED 1 h", "MOVED 1", "ASK 1 h:99999", "ERR unknown", "MOVED 1 h:1 extra"] {
            #expect(Redirection(junk, from: here) == nil, "\(junk)")
        }
        let a = ClusterTopology.Node(host: "127.0.0.1", port: 7000)
        let b = ClusterTopology.Node(host: "127.0.0.1", port: 7001)
        var topology = try ClusterTopology(shards: [.init(slots: 0...16383, master: a, replicas: [])])
        for raw in 0..<16384 { topology.assign(HashSlot(rawValue: raw)!, to: b) }
        #expect(topology.masters == [a, b] && topology.shards.count == 1, "at most one override a slot, no shard per MOVED")
        topology.assign(HashSlot(rawValue: 5)!, to: a)
        #expect(topology.master(of: HashSlot(rawValue: 5)!) == a && topology.master(of: HashSlot(rawValue: 6)!) == b)
        #expect(topology.knows(b) && !topology.knows(.init(host: "169.254.169.254", port: 80)))
    }

    @Test("a failed master still listed in CLUSTER SHARDS is not the shard's master; TLS takes the tls-port")
    func failedMaster() throws {
        let seed = ClusterTopology.Node(host: "127.0.0.1", port: 7000)
        func node(_ port: Int64, role: String, health: String, tlsPort: Int64? = nil) -> RESPValue {
            var pairs = [
                RESPPair(key: .bulkString(ByteBuffer(string: "ip")), value: .bulkString(ByteBuffer(string: "127.0.0.1"))),
                RESPPair(key: .bulkString(ByteBuffer(string: "port")), value: .integer(port)),
                RESPPair(key: .bulkString(ByteBuffer(string: "role")), value: .bulkString(ByteBuffer(string: role))),
                RESPPair(key: .bulkString(ByteBuffer(string: "health")), value: .bulkString(ByteBuffer(string: health))),
            ]
            if let tlsPort { pairs.append(RESPPair(key: .bulkString(ByteBuffer(string: "tls-port")), value: .integer(tlsPort))) }
            return .map(pairs)
        }
        let reply = RESPValue.array([
            .map([
                RESPPair(key: .bulkString(ByteBuffer(string: "slots")), value: .array([.integer(0), .integer(16383)])),
                RESPPair(
                    key: .bulkString(ByteBuffer(string: "nodes")),
                    value: .array([node(7000, role: "master", health: "fail"), node(7001, role: "master", health: "online", tlsPort: 8001)])),
            ])
        ])
        #expect(try ClusterTopology(shardsReply: reply, seed: seed).masters == [.init(host: "127.0.0.1", port: 7001)])
        #expect(try ClusterTopology(shardsReply: reply, seed: seed, tls: true).masters == [.init(host: "127.0.0.1", port: 8001)])
    }

    @Test("multi-key commands split by slot keep their keys' order; URLs are redacted of every password")
    func splitsAndRedaction() throws {
        var mget = RESPCommand("MGET")
        for key in ["a", "b", "{a}c", "d"] { mget.append(key) }
        let split = try #require(MultiKeyCommand(mget))
        let groups = split.groupsBySlot()
        #expect(groups.flatMap { $0 }.sorted() == [0, 1, 2, 3] && groups.first { $0.contains(0) }?.contains(2) == true)
        #expect(split.command(for: [0, 2]).arguments.map { String(decoding: $0, as: UTF8.self) } == ["MGET", "a", "{a}c"])
        var mset = RESPCommand("MSET")
        for part in ["k", "v", "odd"] { mset.append(part) }
        #expect(MultiKeyCommand(mset) == nil, "an odd MSET is sent as it is, for the server to refuse")
        let url = RedisConfiguration.redacted("redis+sentinel://u:pw@s1:26379/m?sentinel_password=sp&db=1&tls_server_name=x")
        #expect(!url.contains("pw@") && !url.contains("=sp") && url.contains("sentinel_password=***") && url.contains("tls_server_name=x"), "\(url)")
    }
}
