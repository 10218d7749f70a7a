import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import NIOCore
import Redis
import TestSupport
import Testing

/// Waits (bounded) until the server's status says Redis is connected.
func redisConnected(_ client: some TestClientProtocol) async throws -> Bool {
    try await eventually {
        let status = try object(try await client.execute(uri: "/api/ibge/cache/status", method: .get).body)
        return (status["status"] as? [String: Any])?["redis_connected"] as? Bool == true
    }
}

@Suite("HTTP with a real Redis")
struct ServerRedisTests {
    @Test("preload warms every municipio and estado key in Redis; status counts them; clear spares foreign keys")
    func preloadAndClear() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { raw in
                let app = try await makeApp(["REDIS_URL": server.url])
                try await app.test(.live) { client in
                    #expect(try await redisConnected(client))
                    try await raw.set("someone-else:key", value: ByteBuffer(string: "survives"))
                    let preload = try await client.execute(uri: "/api/ibge/cache/preload", method: .post)
                    #expect(preload.status == .ok)
                    let expected = 3 + 5 + 27 * 2 + 5571
                    #expect((try object(preload.body)["preloaded"] as? [String: Any])?["keys"] as? Int == expected)
                    // A write may trail its request when Redis was slow (the L2 soft timeout): wait for it.
                    #expect(try await eventually { try await raw.dbsize() == expected + 1 })
                    #expect(try await raw.exists(["ibge:v1:localidades/municipios/4208203", "ibge:v1:localidades/estados/42"]) == 2)

                    let status = try object(try await client.execute(uri: "/api/ibge/cache/status", method: .get).body)
                    let keys = try #require((status["status"] as? [String: Any])?["keys"] as? [String: Any])
                    #expect(keys["count"] as? Int == expected)

                    let cleared = try object(try await client.execute(uri: "/api/ibge/cache/clear", method: .post).body)
                    #expect((cleared["cleared"] as? [String: Any])?["redis_keys"] as? Int == expected)
                    #expect(try await raw.dbsize() == 1)
                    #expect(try await raw.get("someone-else:key") == ByteBuffer(string: "survives"))
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
