import Foundation
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import NIOCore
import TestSupport
import Testing

/// Parses Prometheus text with the reference parser (Python's prometheus_client) and returns
/// every sample as "name{sorted labels JSON}" → value.
func parseWithPrometheusClient(_ text: String) throws -> [String: Double] {
    let script = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for family in text_string_to_metric_families(sys.stdin.read()):
            for s in family.samples:
                out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
        print(json.dumps(out))
        """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script]
    let input = Pipe()
    let output = Pipe()
    let errors = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    input.fileHandleForWriting.write(Data(text.utf8))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let problems = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw HTTPError(.internalServerError, message: "prometheus_client could not parse /metrics (scripts/test installs it): \(problems)")
    }
    return try JSONDecoder().decode([String: Double].self, from: data)
}

@Suite("GET /metrics against the reference Prometheus parser")
struct PrometheusParseTests {
    @Test("the text parses with prometheus_client and its counters agree with the JSON metrics")
    func parses() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            for path in ["estados/42", "estados/SC", "municipios/4208203", "municipios/9999999", "regioes"] {
                _ = try await client.execute(uri: "/api/v1/localidades/\(path)", method: .get)
            }
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            let samples = try parseWithPrometheusClient(text)
            let json = try #require(
                try object(try await client.execute(uri: "/api/ibge/cache/metrics", method: .get).body)["metrics"] as? [String: Any])
            let l1 = try #require(samples[#"ibge_cache_hits_total{"tier": "l1"}"#])
            let l2 = try #require(samples[#"ibge_cache_hits_total{"tier": "l2"}"#])
            #expect(Int(l1 + l2) == json["hits"] as? Int)
            #expect(Int(try #require(samples["ibge_cache_misses_total{}"])) == json["misses"] as? Int)
            #expect(Int(try #require(samples["ibge_cache_loads_total{}"])) == json["loads"] as? Int)
            #expect(Int(try #require(samples["ibge_cache_l1_entries{}"])) == json["l1_entries"] as? Int)
            // Memory only: no Redis to be down (an alert on it would fire for ever).
            #expect(samples["ibge_cache_redis_connected{}"] == nil)
            #expect(json["hits"] as? Int == 1 && json["misses"] as? Int == 4)
        }
    }

    @Test("with Redis, the client's own metrics (swift-metrics through swift-prometheus) are there too and parse")
    func redisMetrics() async throws {
        try await RedisServerProcess.with { server in
            let app = try await makeApp(["REDIS_URL": server.url])
            try await app.test(.live) { client in
                #expect(try await redisConnected(client))
                _ = try await client.execute(uri: "/api/v1/localidades/estados/42", method: .get)
                let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                let samples = try parseWithPrometheusClient(text)
                let commands = samples.filter { $0.key.hasPrefix("redis_command_duration_seconds_count") }.values.reduce(0, +)
                #expect(commands >= 2, "GET and SET at least")
                #expect(samples["redis_connections_open{}"] ?? 0 >= 1)
            }
        }
    }
}
