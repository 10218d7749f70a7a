import MetricsTestKit
import NIOCore
import RESP
import Redis
import TestSupport
import Testing

@Suite("Redis client metrics (swift-metrics)")
struct RedisMetricsTests {
    @Test("command latency, errors by kind and open connections are reported to the factory given")
    func reported() async throws {
        try await RedisServerProcess.with { server in
            let metrics = TestMetrics()
            let client = RedisClient(configuration: server.configuration(), metricsFactory: metrics)
            for i in 0..<10 { try await client.set("m\(i)", value: ByteBuffer(string: "v")) }
            _ = try? await client.send(RESPCommand("NOSUCHCOMMAND"))
            let timer = try metrics.expectTimer("redis_command_duration_seconds")
            #expect(timer.values.count == 11)
            #expect(timer.values.allSatisfy { $0 > 0 })
            #expect(try metrics.expectCounter("redis_command_errors_total", [("kind", "server error")]).totalValue == 1)
            #expect(try metrics.expectGauge("redis_connections_open").lastValue == 1)
            await client.shutdown()

            let refused = RedisClient(
                configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: try RedisServerProcess.freePort())),
                metricsFactory: metrics)
            _ = try? await refused.ping()
            #expect(try metrics.expectCounter("redis_command_errors_total", [("kind", "connect failed")]).totalValue == 1)
            await refused.shutdown()
        }
    }
}
