import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import IBGETestSupport
import NIOCore
import RESP
import Redis
import TestSupport
import Testing
import TieredCache

/// Waits (bounded) until the server's status says Redis is connected.
func redisConnected(_ client: some TestClientProtocol) async throws -> Bool {
    try await eventually {
        let status = try object(try await client.execute(uri: "/api/ibge/cache/status", method: .get).body)
        return (status["status"] as? [String: Any])?["redis_connected"] as? Bool == true
    }
}

@Suite("HTTP with a real Redis", .serialized)
struct ServerRedisTests {
    @Test("derived values carry their source's freshness: a gzip variant lives as long as its plain value, and the variant of a snapshot fallback is never written to Redis")
    func derivedFreshness() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { raw in
                let fake = try await FakeIBGE.start()
                let app = try await makeApp(["REDIS_URL": server.url, "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_CACHE_TTL_JITTER": "0"])
                try await withLiveServer(app) { port in
                    let gzip = [("Accept-Encoding", "gzip")]
                    // Fresh from IBGE, the variant asked for 1.5 s after the plain value was stored:
                    // it expires with the plain value, not a whole TTL after its own creation.
                    #expect(try await fetch(port, "/api/v1/localidades/estados/SC/municipios").status == 200)
                    try await Task.sleep(for: .milliseconds(1500))
                    let fresh = try await fetch(port, "/api/v1/localidades/estados/SC/municipios", headers: gzip)
                    #expect(fresh.header("content-encoding") == "gzip")
                    // Judged on the freshness stored with each value (an exact figure), not on the
                    // keys' PTTLs, which also count how long each write took to reach Redis.
                    var plainFresh: Int64 = 0
                    var variantFresh: Int64 = 0
                    #expect(
                        try await eventually {
                            var variant: String?
                            for try await key in raw.scanKeys(matching: "ibge:v1:localidades/estados/42/municipios|gzip|*") { variant = key }
                            guard let variant, let variantBytes = try await raw.get(variant),
                                let plainBytes = try await raw.get("ibge:v1:localidades/estados/42/municipios")
                            else { return false }
                            variantFresh = try CacheEnvelope(decoding: variantBytes).freshUntil
                            plainFresh = try CacheEnvelope(decoding: plainBytes).freshUntil
                            return true
                        })
                    #expect(plainFresh > 0 && variantFresh <= plainFresh, "variant fresh until \(variantFresh), plain until \(plainFresh)")

                    // IBGE down, nothing cached for RR: the snapshot answers, and its variant stays out of Redis.
                    fake.inject(.outage)
                    let fallback = try await fetch(port, "/api/v1/localidades/estados/RR/municipios", headers: gzip)
                    #expect(fallback.status == 200 && fallback.header("content-encoding") == "gzip")
                    #expect(fallback.header("cache-control")?.hasPrefix("public, max-age=0") == true)
                    try await Task.sleep(for: .milliseconds(300))
                    var stored: [String] = []
                    for try await key in raw.scanKeys(matching: "ibge:v1:localidades/estados/14/municipios*") { stored.append(key) }
                    #expect(stored.isEmpty, "nothing of a fallback is stored as fresh: \(stored)")
                }
                await fake.stop()
            }
        }
    }

    @Test("status without a full scan per request: twenty statuses in a row walk the keys at most twice; status shows Redis memory")
    func cheapStatus() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { raw in
                let app = try await makeApp(["REDIS_URL": server.url])
                try await withLiveServer(app) { port in
                    func status() async throws -> [String: Any] {
                        let body = try object(ByteBuffer(bytes: try await fetch(port, "/api/ibge/cache/status").body))
                        return try #require(body["status"] as? [String: Any])
                    }
                    #expect(try await eventually { try await status()["redis_connected"] as? Bool == true })
                    for target in ["/api/v1/localidades/regioes", "/api/v1/localidades/estados"] { _ = try await fetch(port, target) }
                    // The writes to Redis land, and the second before the next walk may start passes.
                    try await Task.sleep(for: .milliseconds(1200))
                    func scans() async throws -> Int {
                        let text: String
                        switch try await raw.send(RESPCommand("INFO", "commandstats")) {
                        case .bulkString(let bytes), .verbatimString(_, let bytes): text = String(buffer: bytes)
                        default: return -1
                        }
                        let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_scan:") }
                        return line.flatMap { Int($0.split(separator: "=")[1].split(separator: ",")[0]) } ?? 0
                    }
                    let before = try await scans()
                    var last: [String: Any] = [:]
                    for _ in 0..<20 { last = try await status() }
                    let walks = try await scans() - before
                    #expect(walks >= 1 && walks <= 2, "\(walks) SCANs for 20 statuses")
                    #expect((last["keys"] as? [String: Any])?["count"] as? Int == 2)
                    let memory = try #require(last["redis_memory"] as? [String: Any])
                    #expect((memory["used_bytes"] as? Int ?? 0) > 0)
                    #expect(memory["policy"] as? String == "noeviction")
                }
            }
        }
    }

    @Test("DELETE /api/ibge/cache/keys/{key} invalidates one key in Redis and in L1")
    func deleteKey() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { raw in
                let app = try await makeApp(["REDIS_URL": server.url])
                try await app.test(.live) { client in
                    #expect(try await redisConnected(client))
                    _ = try await client.execute(uri: "/api/v1/localidades/municipios/4208203", method: .get)
                    #expect(try await eventually { try await raw.exists(["ibge:v1:localidades/municipios/4208203"]) == 1 })
                    let response = try await client.execute(uri: "/api/ibge/cache/keys/ibge:v1:localidades/municipios/4208203", method: .delete)
                    let body = try object(response.body)
                    let removed = try #require(body["removed"] as? [String: Any])
                    #expect(removed["memory"] as? Bool == true && removed["redis"] as? Bool == true)
                    #expect(try await raw.exists(["ibge:v1:localidades/municipios/4208203"]) == 0)
                }
            }
        }
    }

    @Test("Redis killed: requests keep being answered and status/health say degraded; restarted: reconnects and writes keys again")
    func redisOutage() async throws {
        try await RedisServerProcess.with { server in
            let app = try await makeApp(["REDIS_URL": server.url])
            try await app.test(.live) { client in
                func status() async throws -> [String: Any] {
                    try #require(try object(try await client.execute(uri: "/api/ibge/cache/status", method: .get).body)["status"] as? [String: Any])
                }
                #expect(try await eventually { try await status()["redis_connected"] as? Bool == true })
                _ = try await client.execute(uri: "/api/v1/localidades/municipios/4208203", method: .get)

                server.kill()
                for id in [4_208_203, 3_550_308, 5_300_108, 1_100_015] {
                    let response = try await client.execute(uri: "/api/v1/localidades/municipios/\(id)", method: .get)
                    #expect(response.status == .ok, "municipio \(id) during the outage")
                }
                #expect(try await eventually { try await status()["redis_connected"] as? Bool == false })
                #expect(try await status()["backend"] as? String == "memory-fallback")
                let health = try await client.execute(uri: "/api/ibge/cache/health", method: .get)
                #expect(health.status == .ok)
                #expect(try object(health.body)["status"] as? String == "degraded")
                let metrics = try #require(
                    try object(try await client.execute(uri: "/api/ibge/cache/metrics", method: .get).body)["metrics"] as? [String: Any])
                #expect(metrics["redis_connected"] as? Bool == false)

                try await server.restart()
                #expect(try await eventually { try await status()["redis_connected"] as? Bool == true })
                _ = try await client.execute(uri: "/api/v1/localidades/estados/SC/municipios", method: .get)
                let raw = RedisClient(configuration: server.configuration())
                #expect(try await eventually { try await raw.exists(["ibge:v1:localidades/estados/42/municipios"]) == 1 })
                await raw.shutdown()
                let healthAfter = try object(try await client.execute(uri: "/api/ibge/cache/health", method: .get).body)
                #expect(healthAfter["status"] as? String == "healthy")
            }
        }
    }

    @Test("100 concurrent requests for one cold key cause one load")
    func concurrentColdKey() async throws {
        try await RedisServerProcess.with { server in
            let app = try await makeApp(["REDIS_URL": server.url])
            // Through the router, in process: the load count is what is tested, not sockets.
            try await app.test(.router) { client in
                let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for _ in 0..<100 {
                        group.addTask { try await client.execute(uri: "/api/v1/localidades/estados/SP/municipios", method: .get).status }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(statuses.count == 100 && statuses.allSatisfy { $0 == .ok })
                let metrics = try #require(
                    try object(try await client.execute(uri: "/api/ibge/cache/metrics", method: .get).body)["metrics"] as? [String: Any])
                #expect(metrics["loads"] as? Int == 1)
                #expect(metrics["total_requests"] as? Int == 100)
            }
        }
    }
}

/// A small seeded generator for shuffles a test can replay.
struct SeededShuffle: RandomNumberGenerator {
    var seed: UInt64
    mutating func next() -> UInt64 {
        seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return seed
    }
}
