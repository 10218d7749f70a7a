import Foundation
import IBGECacheServer
import TestSupport
import Testing

/// The built `ibge-cache` executable (`swift build --build-tests` builds it beside the tests).
func ibgeCacheExecutable() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/ibge-cache")
}

/// Runs the executable with `arguments`; returns its exit status and standard output.
func runCLI(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = ibgeCacheExecutable()
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = try await Task.detached { try output.fileHandleForReading.readToEnd() ?? Data() }.value
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite("Operating ibge-cache: CLI probes and Kubernetes-style probes", .serialized)
struct OperatorTests {
    @Test("ibge-cache health exits 0 healthy, 1 degraded (Redis killed), 2 unreachable, from the client and from the executable")
    func healthExitCodes() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: ibgeCacheExecutable().path), "built by swift build --build-tests")
        try await RedisServerProcess.with { server in
            let app = try await makeApp(["REDIS_URL": server.url])
            try await withLiveServer(app) { port in
                let url = "http://127.0.0.1:\(port)"
                let client = OperatorClient(baseURL: url)
                #expect(await eventually { await client.health().verdict == .healthy })
                let healthy = try await runCLI(["health", "--url", url])
                #expect(healthy.status == 0, "\(healthy.output)")
                #expect(healthy.output.hasPrefix("healthy\n") && healthy.output.contains("redis: up"), "\(healthy.output)")

                server.kill()
                #expect(await eventually { await client.health().verdict == .degraded })
                let degraded = try await runCLI(["health", "--url", url])
                #expect(degraded.status == 1, "\(degraded.output)")
                #expect(degraded.output.contains("redis: down"), "\(degraded.output)")
            }
        }
        // Nothing listens there any more.
        let gone = try await LoopbackServer.start()
        let port = gone.port
        await gone.stop()
        let unreachable = await OperatorClient(baseURL: "http://127.0.0.1:\(port)", timeout: .seconds(2)).health()
        #expect(unreachable.verdict == .unreachable && unreachable.verdict.exitCode == 2)
        let cli = try await runCLI(["health", "--url", "http://127.0.0.1:\(port)", "--timeout", "2"])
        #expect(cli.status == 2 && cli.output.hasPrefix("unreachable"), "\(cli.output)")
    }

    @Test("ibge-cache status prints a table (or the JSON); ibge-cache preload warms every UF with a line each when not on a terminal")
    func statusAndPreload() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "CACHE_ADMIN_TOKEN": "s3cret"])
        try await withLiveServer(app) { port in
            let url = "http://127.0.0.1:\(port)"
            let refused = try await runCLI(["preload", "--url", url, "--uf", "SC"])
            #expect(refused.status == 2, "no token: the server refuses, exit 2")
            let one = try await runCLI(["preload", "--url", url, "--uf", "SC"], environment: ["CACHE_ADMIN_TOKEN": "s3cret"])
            #expect(one.status == 0, "\(one.output)")
            #expect(one.output.contains("1/1 SC: 297 keys, 297 loaded, 0 failed"), "\(one.output)")
            let all = try await runCLI(["preload", "--url", url, "--token", "s3cret"])
            #expect(all.status == 0, "\(all.output)")
            let lines = all.output.split(separator: "\n")
            #expect(lines.count == 27 + 1 + 1, "a line per UF, one for the rest, the summary: \(all.output)")
            #expect(lines.last?.hasPrefix("preloaded 5633 keys at \(url): 5336 loaded, 297 already cached, 0 failed") == true, "\(all.output)")

            let table = try await runCLI(["status", "--url", url])
            #expect(table.status == 0)
            #expect(table.output.contains("backend") && table.output.contains("memory"), "\(table.output)")
            #expect(table.output.contains("5633/100000 entries"), "\(table.output)")
            let json = try await runCLI(["status", "--url", url, "--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
            #expect((object["status"] as? [String: Any])?["backend"] as? String == "memory")
            #expect((object["metrics"] as? [String: Any])?["total_requests"] != nil)
        }
    }

    @Test("/livez answers while the process runs; /readyz is 503 until the first attempt to reach Redis ends, then 200 even with Redis down")
    func probes() async throws {
        // A "Redis" that accepts connections and never answers: the first attempt ends at the
        // connect timeout (2 s).
        let silent = try await LoopbackServer.start()
        let app = try await makeApp(["REDIS_URL": "redis://127.0.0.1:\(silent.port)"])
        try await withLiveServer(app) { port in
            #expect(try await fetch(port, "/livez").status == 200)
            let early = try await fetch(port, "/readyz")
            #expect(early.status == 503, "\(String(decoding: early.body, as: UTF8.self))")
            #expect(String(decoding: early.body, as: UTF8.self).contains("first attempt to reach Redis"))
            #expect(try await eventually { try await fetch(port, "/readyz").status == 200 }, "ready once the attempt ended, though Redis is down")
            #expect(try await fetch(port, "/livez").status == 200)
        }
        await silent.stop()
        // Without Redis there is nothing to wait for.
        let memoryOnly = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(memoryOnly) { port in
            let status = try await fetch(port, "/readyz").status
            #expect(status == 200)
        }
    }
}
