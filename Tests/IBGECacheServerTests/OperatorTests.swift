import Foundation
import IBGECacheServer
import Logging
import Synchronization
import IBGETestSupport
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

/// The built `ibge-cache` executable, beside the test bundle (`swift build --build-tests` builds
/// both into the same directory, whatever the configuration or scratch path).
func ibgeCacheExecutable() -> URL {
    let beside = Bundle.main.executableURL?.deletingLastPathComponent().appendingPathComponent("ibge-cache")
    if let beside, FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/ibge-cache")
}

/// Runs the executable with `arguments` (and only the `environment` given for its own
/// variables: the CI's CACHE_ADMIN_TOKEN or PORT would change what it does), without blocking
/// a thread the live server under test needs; returns its exit status and standard output.
func runCLI(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
    let settings = ["-u", "CACHE_ADMIN_TOKEN", "-u", "PORT", "-u", "HOST"] + environment.map { "\($0.key)=\($0.value)" }
    let run = try await runTool(settings + [ibgeCacheExecutable().path] + arguments, limit: .seconds(120), standardError: false)
    return (run.status, run.output)
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
                let tolerant = try await runCLI(["health", "--url", url, "--degraded-ok"])
                #expect(tolerant.status == 0, "--degraded-ok: degraded is not a failure")
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
        let started = ContinuousClock.now
        let app = try await makeApp(["REDIS_URL": "redis://127.0.0.1:\(silent.port)"])
        try await withLiveServer(app) { port in
            let early = try await fetch(port, "/readyz")
            // Seen within the 2 s the first attempt takes (a machine too busy to ask that soon
            // cannot see it, and is not a failure of the server).
            if ContinuousClock.now - started < .milliseconds(1500) {
                #expect(early.status == 503, "\(String(decoding: early.body, as: UTF8.self))")
                #expect(String(decoding: early.body, as: UTF8.self).contains("first attempt to reach Redis"))
            }
            #expect(try await fetch(port, "/livez").status == 200)
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

    @Test("scheduled warming: two instances with IBGE_PRELOAD_INTERVAL=2s on one Redis: each cycle is run by one instance only (counted at the stand-in IBGE), and the last success time advances")
    func scheduledWarming() async throws {
        let fake = try await FakeIBGE.start()
        try await RedisServerProcess.with { server in
            let environment = [
                "REDIS_URL": server.url, "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_PRELOAD_INTERVAL": "2s",
                "IBGE_PRELOAD_ON_START": "true",
            ]
            let a = try await makeApp(environment)
            let b = try await makeApp(environment)
            try await withLiveServer(a) { portA in
                try await withLiveServer(b) { portB in
                    func preload(_ port: Int) async throws -> [String: Any] {
                        let body = try object(ByteBuffer(bytes: try await fetch(port, "/api/ibge/cache/status").body))
                        return (body["status"] as? [String: Any])?["preload"] as? [String: Any] ?? [:]
                    }
                    func runs() async throws -> Int { (try await preload(portA)["runs"] as? Int ?? 0) + (try await preload(portB)["runs"] as? Int ?? 0) }
                    func lastSuccess() async throws -> Double {
                        max(try await preload(portA)["last_success"] as? Double ?? 0, try await preload(portB)["last_success"] as? Double ?? 0)
                    }
                    // The first run loads every key (seconds in a debug build); the next ones find
                    // them cached and take well under the 2 s interval.
                    #expect(try await eventually(within: .seconds(30)) { try await runs() >= 2 })
                    let firstSuccess = try await lastSuccess()
                    #expect(firstSuccess > 0)
                    // Then, over a window of three cycles, IBGE sees one run per cycle (each run asks
                    // for the município list once), not one per instance per cycle (six).
                    let before = fake.calls("/api/v1/localidades/municipios")
                    let windowStart = ContinuousClock.now
                    try await Task.sleep(for: .seconds(6))
                    let during = fake.calls("/api/v1/localidades/municipios") - before
                    let cycles = Int((ContinuousClock.now - windowStart) / .seconds(2)) + 1
                    #expect(during >= 2, "the cycles ran: \(during)")
                    // (One more allowed: a claim whose Redis answer times out is taken as won.)
                    #expect(during <= cycles + 1, "one instance per cycle: \(during) runs in \(cycles) cycles")
                    #expect(try await lastSuccess() > firstSuccess, "the last success time advances")
                    let metrics = String(decoding: try await fetch(portA, "/metrics").body, as: UTF8.self)
                        + String(decoding: try await fetch(portB, "/metrics").body, as: UTF8.self)
                    #expect(metrics.contains("ibge_cache_preload_last_success_timestamp_seconds"))
                    // A value cached by the warming, read through either instance.
                    #expect(try await fetch(portB, "/api/v1/localidades/municipios/4208203").status == 200)
                }
            }
        }
        await fake.stop()
    }

    @Test("a preload already running is reported (409 with its scope), not started twice")
    func preloadConflict() async throws {
        let fake = try await FakeIBGE.start()
        fake.inject(.latency(.seconds(1)))
        let app = try await makeApp(["REDIS_URL": "none", "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL])
        try await withLiveServer(app) { port in
            let first = Task { try await fetch(port, "/api/ibge/cache/preload", method: .POST) }
            #expect(
                try await eventually {
                    let body = try object(ByteBuffer(bytes: try await fetch(port, "/api/ibge/cache/status").body))
                    return ((body["status"] as? [String: Any])?["preload"] as? [String: Any])?["running"] as? String == "all"
                })
            let second = try await fetch(port, "/api/ibge/cache/preload?uf=SC", method: .POST)
            #expect(second.status == 409)
            #expect(String(decoding: second.body, as: UTF8.self).contains("(all) is running already"))
            #expect(try await first.value.status == 200)
            #expect(try await fetch(port, "/api/ibge/cache/preload?uf=SC", method: .POST).status == 200, "and once it ended, another starts")
        }
        await fake.stop()
    }

    @Test("LOG_FORMAT=json: one JSON object a line with timestamp, level, label, message and metadata; hostile text stays on its line")
    func jsonLogs() throws {
        #expect(try ServerConfiguration(environment: ["LOG_FORMAT": "JSON"]).logFormat == .json)
        let lines = LockedLines()
        var handler = JSONLogHandler(label: "ibge-cache.test") { lines.append($0) }
        handler.logLevel = .info
        handler[metadataKey: "instance"] = "a"
        let logger = Logger(label: "ibge-cache.test") { _ in handler }
        logger.debug("not at this level")
        logger.warning("IBGE said \"no\"\nthen closed", metadata: ["path": "estados/14", "attempts": "\(3)"])
        let written = lines.all
        #expect(written.count == 1 && written[0].hasSuffix("\n") && written[0].dropLast().contains("\n") == false)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(written[0].utf8)) as? [String: Any])
        #expect(object["level"] as? String == "warning" && object["label"] as? String == "ibge-cache.test")
        #expect(object["message"] as? String == "IBGE said \"no\"\nthen closed")
        #expect(object["metadata"] as? [String: String] == ["path": "estados/14", "attempts": "3", "instance": "a"])
        let timestamp = try #require(object["timestamp"] as? String)
        #expect(timestamp.count >= 20 && timestamp.hasSuffix("Z") && timestamp.contains("T"), "\(timestamp)")
    }
}

/// Lines a test's log handler wrote.
final class LockedLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
