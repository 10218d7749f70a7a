import Foundation
import Hummingbird
import IBGE
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceLifecycle
import IBGETestSupport
import Synchronization
import TestSupport
import Testing

@testable import IBGECacheServer

/// The access log's lines as a test reads them (the server writes them in chunks of whole lines).
final class LineCollector: Sendable {
    private let lines = Mutex<[String]>([])

    var output: @Sendable ([UInt8]) -> Void {
        { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            self.lines.withLock { $0 += text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
        }
    }

    /// ``output`` as the access log's writer (which reports the lines it could not write: none).
    var writer: @Sendable ([UInt8]) -> Int {
        let output = self.output
        return { bytes in
            output(bytes)
            return 0
        }
    }

    var all: [String] { lines.withLock { $0 } }

    /// Waits until `count` lines have arrived (the log flushes every 50 ms).
    func waitFor(_ count: Int) async -> [String] {
        _ = await eventually { self.all.count >= count }
        return all
    }

    /// The fields of the first line after the first `before` whose path is `path`, once it has arrived.
    func line(after before: Int, path: String) async -> [String: String]? {
        var found: [String: String]?
        _ = await eventually {
            found = self.all.dropFirst(before).map(fields).first { $0["path"] == path }
            return found != nil
        }
        return found
    }
}

/// The fields of a text access-log line (`key=value` after the timestamp).
func fields(_ line: String) -> [String: String] {
    line.split(separator: " ").dropFirst().reduce(into: [:]) { fields, pair in
        guard let equals = pair.firstIndex(of: "=") else { return }
        fields[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
}

/// `ibge_cache_http_requests_total` of a scrape, by "tier status".
func requestCounts(_ metrics: String) -> [String: Int] {
    var counts: [String: Int] = [:]
    for line in metrics.split(separator: "\n") where line.hasPrefix("ibge_cache_http_requests_total{") {
        // ibge_cache_http_requests_total{tier="l1",status="200"} 3
        let parts = line.split(separator: "\"")
        guard parts.count >= 5, let value = Int(parts[4].split(separator: " ").last ?? "") else { continue }
        if value > 0 { counts["\(parts[1]) \(parts[3])"] = value }
    }
    return counts
}

func makeApp(_ environment: [String: String], accessLog: LineCollector) async throws -> some ApplicationProtocol {
    var configuration = try ServerConfiguration(environment: environment)
    configuration.host = "127.0.0.1"
    configuration.port = 0
    var logger = Logger(label: "ibge-cache-test")
    logger.logLevel = .warning
    return try await buildApplication(configuration: configuration, logger: logger, accessLogOutput: accessLog.output)
}

@Suite("ACCESS_LOG and the request metrics")
struct AccessLogTests {
    @Test("a line per request with the tier that answered (upstream, l1 on the fast path and the router, l2, none; a 304, a HEAD, a 414), counted alike in ibge_cache_http_requests_total; JSON lines parse")
    func tiers() async throws {
        let fake = try await FakeIBGE.start()
        let textLines = LineCollector()
        let jsonLines = LineCollector()
        try await RedisServerProcess.with { redis in
            let environment = [
                "REDIS_URL": redis.url, "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "ACCESS_LOG": "true",
            ]
            let text = try await makeApp(environment, accessLog: textLines)
            var jsonEnvironment = environment
            jsonEnvironment["LOG_FORMAT"] = "json"
            let json = try await makeApp(jsonEnvironment, accessLog: jsonLines)
            try await withLiveServer(text) { port in
                try await withLiveServer(json) { jsonPort in
                    let itajai = "/api/v1/localidades/municipios/4208203"
                    let loaded = try await fetch(port, itajai)
                    #expect(loaded.status == 200)
                    _ = try await fetch(port, itajai)
                    let etag = try #require(loaded.header("ETag"))
                    let notModified = try await fetch(port, itajai, headers: [("If-None-Match", etag)])
                    #expect(notModified.status == 304)
                    let head = try await fetch(port, itajai, method: .HEAD)
                    #expect(head.status == 200)
                    let joined = "/api/v1/localidades/municipios/4208203%7C3550308"
                    _ = try await fetch(port, joined)  // one part in L1, one loaded
                    _ = try await fetch(port, joined)  // both in L1: the router assembles them
                    // Loaded by the other instance: fresh in Redis for this one.
                    _ = try await fetch(jsonPort, "/api/v1/localidades/estados/SC")
                    _ = try await fetch(port, "/api/v1/localidades/estados/SC")
                    _ = try await fetch(port, "/nowhere")
                    let long = try await rawExchange(port, "GET /api/v1/localidades/\(String(repeating: "a", count: 9000)) HTTP/1.1\r\nHost: x\r\n\r\n")
                    #expect(long.reply.hasPrefix("HTTP/1.1 414"))

                    let lines = await textLines.waitFor(9)
                    try #require(lines.count == 9, "\(lines)")
                    let logged = lines.map(fields)
                    let expected: [(path: String, status: String, tier: String, method: String)] = [
                        (itajai, "200", "upstream", "GET"), (itajai, "200", "l1", "GET"), (itajai, "304", "l1", "GET"), (itajai, "200", "l1", "HEAD"),
                        (joined, "200", "upstream", "GET"), (joined, "200", "l1", "GET"),
                        ("/api/v1/localidades/estados/SC", "200", "l2", "GET"), ("/nowhere", "404", "none", "GET"),
                    ]
                    for (line, want) in zip(logged, expected) {
                        #expect(line["path"] == want.path && line["status"] == want.status && line["tier"] == want.tier && line["method"] == want.method, "\(line) is not \(want)")
                        #expect(line["remote"] == "127.0.0.1")
                        #expect(line["duration_ms"].flatMap(Double.init) != nil, "\(line)")
                    }
                    #expect(logged[0]["bytes"] == String(loaded.body.count), "a GET's body bytes")
                    #expect(logged[2]["bytes"] == "0" && logged[3]["bytes"] == "0", "no body for a 304 or a HEAD")
                    // The refused request: its status, its target cut, and no tier.
                    let refused = logged[8]
                    #expect(refused["status"] == "414" && refused["tier"] == "none" && refused["method"] == "GET")
                    #expect(refused["path"]?.hasSuffix("...") == true && (refused["path"]?.utf8.count ?? 0) <= AccessLog.longestTarget + 3)
                    // Each line begins with its time, in UTC with milliseconds.
                    #expect(lines[0].range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "#, options: .regularExpression) != nil, "\(lines[0])")

                    // The metrics count what the log shows, tier by tier and status by status.
                    let metrics = String(decoding: try await fetch(port, "/metrics").body, as: UTF8.self)
                    var fromLog: [String: Int] = [:]
                    for line in logged { fromLog["\(line["tier"] ?? "?") \(line["status"] ?? "?")", default: 0] += 1 }
                    #expect(requestCounts(metrics) == fromLog)
                    #expect(metrics.contains(#"ibge_cache_http_request_duration_seconds_count{tier="l1"} 4"# + "\n"))

                    // The other instance writes JSON: one object a line, with typed fields.
                    let jsonLine = try #require(await jsonLines.waitFor(1).first)
                    let object = try #require(try JSONSerialization.jsonObject(with: Data(jsonLine.utf8)) as? [String: Any])
                    #expect(object["tier"] as? String == "upstream" && object["status"] as? Int == 200 && object["method"] as? String == "GET")
                    #expect(object["path"] as? String == "/api/v1/localidades/estados/SC" && object["remote"] as? String == "127.0.0.1")
                    #expect((object["bytes"] as? Int ?? 0) > 0 && object["duration_ms"] is Double && object["timestamp"] is String)
                }
            }
        }
        await fake.stop()
    }

    @Test("IBGE down: a stale value is logged stale (by the router and the fast path), an answer from the snapshot snapshot, IBGE's failure upstream; without an upstream a load is source")
    func fallbackTiers() async throws {
        let fake = try await FakeIBGE.start()
        let lines = LineCollector()
        let app = try await makeApp(
            ["REDIS_URL": "none", "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_CACHE_TTL": "1", "ACCESS_LOG": "true"],
            accessLog: lines)
        try await withLiveServer(app) { port in
            let itajai = "/api/v1/localidades/municipios/4208203"
            let first = try await fetch(port, itajai)
            #expect(first.status == 200)
            fake.inject(.outage)
            // Once its second of freshness has passed, the value answers stale while IBGE is down.
            #expect(
                try await eventually {
                    _ = try await fetch(port, itajai)
                    return fields(lines.all.last ?? "")["tier"] == "stale"
                }, "\(lines.all.map { fields($0)["tier"] ?? "?" })")
            // The fail-safe keeps it in L1 meanwhile: the fast path answers it, still as stale.
            _ = await lines.waitFor(lines.all.count + 1)  // the last request's line, flushed
            let fastBefore = try await fastAnswers(port)
            let before = lines.all.count
            _ = try await fetch(port, itajai)
            #expect(try await fastAnswers(port) == fastBefore + 1, "answered by the fast path")
            #expect(await lines.line(after: before, path: itajai)?["tier"] == "stale")
            let rio = "/api/v1/localidades/municipios/3304557"
            let beforeRio = lines.all.count
            #expect(try await fetch(port, rio).status == 200)
            let snapshot = await lines.line(after: beforeRio, path: rio)
            #expect(snapshot?["tier"] == "snapshot", "\(snapshot ?? [:])")
            #expect(fields(lines.all.first ?? "")["tier"] == "upstream")
            // An agregados query IBGE fails on, with nothing cached: IBGE's failure, on its tier.
            let agregados = "/api/v3/agregados/1705/periodos/2010/variaveis/all"
            let beforeFailure = lines.all.count
            let failed = try await fetch(port, agregados)
            #expect(failed.status >= 500)
            let failedLine = await lines.line(after: beforeFailure, path: agregados)
            #expect(failedLine?["tier"] == "upstream" && failedLine?["status"] == String(failed.status), "\(failedLine ?? [:])")
        }
        await fake.stop()

        let offline = LineCollector()
        let embedded = try await makeApp(["REDIS_URL": "none", "ACCESS_LOG": "true"], accessLog: offline)
        try await withLiveServer(embedded) { port in
            _ = try await fetch(port, "/api/v1/localidades/regioes")
            #expect(await offline.waitFor(1).first.map(fields)?["tier"] == "source")
        }
    }

    @Test("the buffer is bounded: lines past it are dropped and counted, never queued; odd bytes in a target are escaped")
    func bounded() async throws {
        let registry = PrometheusCollectorRegistry()
        let lines = LineCollector()
        let log = AccessLog(format: .text, registry: registry, logger: Logger(label: "test"), maximumPendingBytes: 2000, output: lines.writer)
        let entry = AccessLog.Entry(
            method: "GET", target: "/a b\"c\\d\né", status: 200, bytes: 10, tier: .l1, elapsedNanoseconds: 1_234_567, remote: nil)
        for _ in 0..<100 { log.append(entry) }
        await log.flush(waitingAtMost: .seconds(30))
        let written = lines.all
        #expect(written.count > 5 && written.count < 100, "\(written.count) lines")
        #expect(written.joined(separator: "\n").utf8.count < 2000 + 200, "at most the bound and one line")
        let dropped = String(decoding: registry.emitToBuffer(), as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix("ibge_cache_access_log_dropped_lines_total ") }
        #expect(dropped == "ibge_cache_access_log_dropped_lines_total \(100 - written.count)")
        let line = fields(try #require(written.first))
        #expect(line["path"] == "/a%20b%22c%5Cd%0A%C3%A9", "\(line)")
        #expect(line["duration_ms"] == "1.234" && line["remote"] == "-" && line["bytes"] == "10")
        // Flushed: the buffer takes lines again.
        log.append(entry)
        await log.flush(waitingAtMost: .seconds(30))
        #expect(lines.all.count == written.count + 1)

        // Lines a write could not take count as dropped too.
        let failing = AccessLog(format: .text, registry: registry, logger: Logger(label: "test"), output: { _ in 3 })
        for _ in 0..<5 { failing.append(entry) }
        await failing.flush(waitingAtMost: .seconds(30))
        let afterFailure = String(decoding: registry.emitToBuffer(), as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix("ibge_cache_access_log_dropped_lines_total ") }
        #expect(afterFailure == "ibge_cache_access_log_dropped_lines_total \(100 - written.count + 3)")

        let json = AccessLog(format: .json, registry: registry, logger: Logger(label: "test"), output: lines.writer)
        json.append(entry)
        await json.flush(waitingAtMost: .seconds(30))
        let lastLine = try #require(lines.all.last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lastLine.utf8)) as? [String: Any])
        #expect(object["path"] as? String == "/a%20b%22c%5Cd%0A%C3%A9" && object["remote"] is NSNull && object["duration_ms"] as? Double == 1.234)
    }

    @Test("one write at a time: lines added during a slow write wait for the next; shutdown writes the last lines, and does not wait on a stuck stdout")
    func writes() async throws {
        let registry = PrometheusCollectorRegistry()
        let writer = SlowWriter()
        let log = AccessLog(format: .text, registry: registry, logger: Logger(label: "test"), output: writer.write)
        let entry = { (path: String) in
            AccessLog.Entry(method: "GET", target: path, status: 200, bytes: 1, tier: .l1, elapsedNanoseconds: 1000, remote: nil)
        }
        writer.hold()
        log.append(entry("/first"))
        await log.flush()
        #expect(await eventually { writer.entered == 1 }, "the first chunk is being written")
        log.append(entry("/second"))
        await log.flush()
        await log.flush()
        writer.release()
        // Once the first write has ended, a flush takes the second line.
        #expect(
            await eventually {
                await log.flush(waitingAtMost: .seconds(30))
                return writer.lines.count == 2
            })
        #expect(writer.lines.map { fields($0)["path"] } == ["/first", "/second"])
        #expect(writer.mostAtOnce == 1, "never two writes at once")

        // Shutdown: every line added before it is written.
        let group = ServiceGroup(configuration: .init(services: [log], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for i in 0..<200 { log.append(entry("/shutdown/\(i)")) }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(writer.lines.count == 202, "\(writer.lines.count)")

        // A stdout that takes nothing: shutdown waits about a second, and counts what it dropped.
        let stuck = SlowWriter()
        let stuckLog = AccessLog(format: .text, registry: registry, logger: Logger(label: "test"), output: stuck.write)
        stuck.hold()
        let stuckGroup = ServiceGroup(configuration: .init(services: [stuckLog], logger: Logger(label: "test")))
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await stuckGroup.run() }
            stuckLog.append(entry("/taken"))
            #expect(await eventually { stuck.entered == 1 })
            for i in 0..<10 { stuckLog.append(entry("/left/\(i)")) }
            await stuckGroup.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(ContinuousClock.now - start < .seconds(10), "shutdown did not wait on the stuck write")
        let dropped = String(decoding: registry.emitToBuffer(), as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix("ibge_cache_access_log_dropped_lines_total ") }
        #expect(dropped == "ibge_cache_access_log_dropped_lines_total 10", "\(dropped ?? "none")")
        stuck.release()
    }
}

/// An access-log writer that can be held (as a stuck stdout is), counting writes in progress.
final class SlowWriter: Sendable {
    private struct State {
        var held = false
        var active = 0
        var mostAtOnce = 0
        var entered = 0
        var lines: [String] = []
    }
    private let state = Mutex(State())

    func hold() { state.withLock { $0.held = true } }
    func release() { state.withLock { $0.held = false } }
    var entered: Int { state.withLock { $0.entered } }
    var mostAtOnce: Int { state.withLock { $0.mostAtOnce } }
    var lines: [String] { state.withLock { $0.lines } }

    var write: @Sendable ([UInt8]) -> Int {
        { bytes in
            self.state.withLock { state in
                state.entered += 1
                state.active += 1
                state.mostAtOnce = max(state.mostAtOnce, state.active)
            }
            while self.state.withLock({ $0.held }) { usleep(1000) }
            let text = String(decoding: bytes, as: UTF8.self)
            self.state.withLock { state in
                state.lines += text.split(separator: "\n").map(String.init)
                state.active -= 1
            }
            return 0
        }
    }
}
