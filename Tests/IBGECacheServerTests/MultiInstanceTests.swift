import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Redis
import IBGETestSupport
import TestSupport
import Testing

/// Real `ibge-cache serve` processes (the binary `swift build --build-tests` puts beside the
/// test bundle), sharing one real Redis and one stand-in IBGE.
final class ServeProcesses: Sendable {
    let ports: [Int]
    private let processes: [Process]

    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ibge-cache")
    }

    init(count: Int, environment: [String: String]) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            throw RedisFixtureError(message: "\(Self.binary.path) is missing: build with `swift build --build-tests` (scripts/test does)")
        }
        var ports: [Int] = []
        var processes: [Process] = []
        for _ in 0..<count {
            let port = try RedisServerProcess.freePort()
            let process = Process()
            process.executableURL = Self.binary
            process.arguments = ["serve"]
            var env = environment
            env["PORT"] = String(port)
            env["HOST"] = "127.0.0.1"
            env["PATH"] = ProcessInfo.processInfo.environment["PATH"]
            process.environment = env
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            ports.append(port)
            processes.append(process)
        }
        self.ports = ports
        self.processes = processes
    }

    func stop() {
        for process in processes where process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

@Suite("Three ibge-cache processes sharing one Redis")
struct MultiInstanceTests {
    @Test("1,000 concurrent requests spread across three instances for one cold key: exactly one upstream load")
    func oneLoadAcrossProcesses() async throws {
        try await RedisServerProcess.with { server in try await Self.oneLoad(redisURL: server.url) }
    }

    @Test("the same on a Redis Cluster (3 masters, 3 replicas): exactly one upstream load")
    func oneLoadAcrossProcessesOnCluster() async throws {
        try await RedisClusterProcess.with { cluster in try await Self.oneLoad(redisURL: cluster.url) }
    }

    /// Three `serve` processes on `redisURL` and a slow stand-in IBGE; 1,000 concurrent requests
    /// for one cold key, spread across them.
    static func oneLoad(redisURL: String) async throws {
        let fake = try await FakeIBGE.start()
        // A slow IBGE widens the window in which every instance asks for the key.
        fake.inject(.latency(.milliseconds(300)))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            do {
                let instances = try ServeProcesses(
                    count: 3,
                    environment: ["REDIS_URL": redisURL, "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "LOG_LEVEL": "error"])
                defer { instances.stop() }
                for port in instances.ports {
                    let ready = await eventually(within: .seconds(30)) {
                        guard
                            let response = try? await http.execute(
                                HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/ibge/cache/status"), timeout: .seconds(2)),
                            let body = try? await response.body.collect(upTo: 1 << 20)
                        else { return false }
                        return String(buffer: body).contains("\"redis_connected\":true")
                    }
                    #expect(ready, "instance on port \(port) is up with Redis")
                }
                let path = "/api/v1/localidades/estados/SC/municipios"
                let statuses = try await withThrowingTaskGroup(of: UInt.self) { group in
                    for i in 0..<1000 {
                        let port = instances.ports[i % 3]
                        group.addTask {
                            let response = try await http.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(30))
                            _ = try await response.body.collect(upTo: 1 << 22)
                            return response.status.code
                        }
                    }
                    return try await group.reduce(into: [UInt]()) { $0.append($1) }
                }
                #expect(statuses.count == 1000 && statuses.allSatisfy { $0 == 200 })
                #expect(fake.calls("/api/v1/localidades/estados/42/municipios") == 1, "one load across three processes")
            }
        } catch {
            Issue.record(error)
        }
        try await http.shutdown()
        await fake.stop()
    }
}
