import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import IBGETestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TestSupport
import Testing

/// A request and its answer as a client sees them: status, every header in order (but `Date`,
/// which moves with the clock), and the body.
struct WireAnswer: Equatable, CustomStringConvertible {
    var status: UInt
    var headers: [String]
    var body: [UInt8]

    var description: String { "\(status) \(headers) \(body.count) bytes" }

    func header(_ name: String) -> String? {
        headers.first { $0.lowercased().hasPrefix(name.lowercased() + ": ") }.map { String($0.dropFirst(name.count + 2)) }
    }
}

/// Runs the application with a live server and calls `body` with its port.
func withLiveServer<App: ApplicationProtocol>(_ app: App, _ body: @Sendable (Int) async throws -> Void) async throws {
    try await app.test(.live) { client in
        let port = try #require(client.port)
        try await body(port)
    }
}

/// A client that sends only the headers it is given (no `Accept-Encoding`) and leaves bodies
/// as they come; it lives as long as the test process.
let plainClient = HTTPClient(
    eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
    configuration: .init(redirectConfiguration: .disallow, decompression: .disabled))

/// GET/HEAD/OPTIONS with AsyncHTTPClient (no decompression, no redirects).
func fetch(_ port: Int, _ target: String, method: NIOHTTP1.HTTPMethod = .GET, headers: [(String, String)] = []) async throws -> WireAnswer {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(target)")
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    let response = try await plainClient.execute(request, timeout: .seconds(30))
    let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
    return WireAnswer(
        status: response.status.code,
        headers: response.headers.filter { $0.name.lowercased() != "date" }.map { "\($0.name): \($0.value)" },
        body: Array(body.readableBytesView))
}

/// Opens a TCP connection, writes `bytes`, and reads until the server closes it (or `limit`
/// passes): what came back and how long the server took to close.
func rawExchange(_ port: Int, _ bytes: String, limit: Duration = .seconds(30)) async throws -> (reply: String, closedAfter: Duration) {
    try await rawExchange(port, pieces: [bytes], limit: limit)
}

/// ``rawExchange(_:_:limit:)`` writing `pieces` one at a time, 100 ms apart.
func rawExchange(_ port: Int, pieces: [String], limit: Duration = .seconds(30)) async throws -> (reply: String, closedAfter: Duration) {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
    }
    let start = ContinuousClock.now
    return try await withThrowingTaskGroup(of: (String, Duration)?.self) { group in
        group.addTask {
            // The server may close the connection at any point (that is what is measured).
            let reply = try? await channel.executeThenClose { inbound, outbound in
                for (i, piece) in pieces.enumerated() {
                    if i > 0 { try? await Task.sleep(for: .milliseconds(100)) }
                    try? await outbound.write(ByteBuffer(string: piece))
                }
                var reply = ""
                do {
                    for try await chunk in inbound { reply += String(buffer: chunk) }
                } catch {}
                return reply
            }
            return (reply ?? "", ContinuousClock.now - start)
        }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            try? await channel.channel.close()
            throw TimeoutError(what: "the server did not close the connection within \(limit)")
        }
        return result
    }
}

/// `ibge_cache_http_fast_path_answers_total` of the server on `port`.
func fastAnswers(_ port: Int) async throws -> Int {
    let text = String(decoding: try await fetch(port, "/metrics").body, as: UTF8.self)
    let line = text.split(separator: "\n").first { $0.hasPrefix("ibge_cache_http_fast_path_answers_total ") }
    return line.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
}

struct TimeoutError: Error, CustomStringConvertible {
    var what: String
    var description: String { what }
}

/// Two answers are the same but for the number in `max-age`: the two servers loaded their
/// values at different moments (seconds apart on a loaded machine), so each counts down from
/// its own; both must be within the TTL (3600 s, no jitter; 300 s for an unknown id's `[]`).
func expectSame(_ a: WireAnswer, _ b: WireAnswer, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    func split(_ answer: WireAnswer) -> (WireAnswer, Int?) {
        var copy = answer
        var age: Int?
        copy.headers = answer.headers.map { line in
            guard line.hasPrefix("Cache-Control: public, max-age="), let digits = line.split(separator: "=").dropFirst().first else { return line }
            age = Int(digits.split(separator: ",")[0])
            return line.replacingOccurrences(of: "max-age=\(age ?? 0)", with: "max-age=N")
        }
        return (copy, age)
    }
    let (x, ageX) = split(a)
    let (y, ageY) = split(b)
    #expect(x == y, "\(label)", sourceLocation: sourceLocation)
    for age in [ageX, ageY].compactMap({ $0 }) where age != 0 {
        #expect(age <= 3600, "\(label): max-age \(age)", sourceLocation: sourceLocation)
    }
    #expect((ageX == nil) == (ageY == nil) && (ageX == 0) == (ageY == 0), "\(label)", sourceLocation: sourceLocation)
}

@Suite("HTTP front door: CORS, HTTP caching, HEAD, limits, the L1 fast path")
struct FrontDoorTests {
    @Test("CORS as IBGE: data answers and their errors allow any origin, the preflight is a 204, admin paths send none")
    func cors() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(app) { port in
            let origin = [("Origin", "http://dropdowns.example")]
            let estados = try await fetch(port, "/api/v1/localidades/estados", headers: origin)
            #expect(estados.status == 200 && estados.header("access-control-allow-origin") == "*")
            let bad = try await fetch(port, "/api/v1/localidades/municipios/12ab", headers: origin)
            #expect(bad.status == 400 && bad.header("access-control-allow-origin") == "*")
            #expect(bad.header("cache-control") == "no-store")
            let unknown = try await fetch(port, "/api/v1/localidades/nada", headers: origin)
            #expect(unknown.status == 404 && unknown.header("access-control-allow-origin") == "*" && unknown.header("cache-control") == "no-store")

            let preflight = try await fetch(
                port, "/api/v1/localidades/estados/SC/municipios", method: .OPTIONS,
                headers: origin + [("Access-Control-Request-Method", "GET"), ("Access-Control-Request-Headers", "x-requested-with")])
            #expect(preflight.status == 204)
            #expect(preflight.header("access-control-allow-origin") == "*")
            #expect(preflight.header("access-control-allow-methods") == "GET, HEAD, OPTIONS")
            #expect(preflight.header("access-control-allow-headers") == "x-requested-with")
            #expect(preflight.header("access-control-max-age") == "86400")
            #expect(preflight.header("content-length") == nil, "a 204 has no Content-Length")
            let agregados = try await fetch(port, "/api/v3/agregados/4709/periodos/2022/variaveis/93", method: .OPTIONS, headers: origin)
            #expect(agregados.status == 204 && agregados.header("access-control-allow-origin") == "*")

            for target in ["/api/ibge/cache/status", "/api/ibge/cache/health", "/api/ibge/cache/metrics", "/metrics", "/dashboard"] {
                let admin = try await fetch(port, target, headers: origin)
                #expect(admin.status == 200 && admin.header("access-control-allow-origin") == nil, "\(target)")
            }
            let adminPreflight = try await fetch(
                port, "/api/ibge/cache/clear", method: .OPTIONS, headers: origin + [("Access-Control-Request-Method", "POST")])
            #expect(adminPreflight.status != 204 && adminPreflight.header("access-control-allow-origin") == nil)
            #expect(adminPreflight.header("access-control-allow-methods") == nil)
        }
    }

    @Test("ETag and 304, plain and gzip, each with its own tag; Cache-Control counts down; HEAD is GET without the body")
    func validators() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "IBGE_CACHE_TTL": "30", "IBGE_CACHE_GRACE": "600"])
        try await withLiveServer(app) { port in
            let target = "/api/v1/localidades/estados/SC/municipios"
            let gzip = [("Accept-Encoding", "gzip")]
            for fastPath in [false, true] {  // the first pass loads (router), the second is an L1 hit (fast path)
                let plain = try await fetch(port, target)
                let packed = try await fetch(port, target, headers: gzip)
                let plainTag = try #require(plain.header("etag"))
                let packedTag = try #require(packed.header("etag"))
                #expect(plainTag.count == 18 && plainTag.hasPrefix("\"") && plainTag.hasSuffix("\""), "a strong tag")
                #expect(plainTag != packedTag, "the gzip variant has its own ETag")
                #expect(packed.header("content-encoding") == "gzip")
                #expect(plain.header("cache-control")?.hasPrefix("public, max-age=") == true)
                #expect(plain.header("cache-control")?.hasSuffix(", stale-if-error=600") == true)

                for (headers, tag, label) in [([(String, String)](), plainTag, "plain"), (gzip, packedTag, "gzip")] {
                    let hit = try await fetch(port, target, headers: headers + [("If-None-Match", tag)])
                    #expect(hit.status == 304 && hit.body.isEmpty, "\(label), fast path \(fastPath)")
                    #expect(hit.header("etag") == tag && hit.header("access-control-allow-origin") == "*")
                    let listed = try await fetch(port, target, headers: headers + [("If-None-Match", "\"other\", W/\(tag)")])
                    #expect(listed.status == 304, "a weak match in a list matches for If-None-Match")
                    let other = try await fetch(port, target, headers: headers + [("If-None-Match", "\"0000000000000000\"")])
                    #expect(other.status == 200 && other.header("etag") == tag && !other.body.isEmpty)
                }
                #expect(try await fetch(port, target, headers: [("If-None-Match", packedTag)]).status == 200, "the gzip tag is not the plain one's")

                for headers in [[], gzip] {
                    let get = try await fetch(port, target, headers: headers)
                    let head = try await fetch(port, target, method: .HEAD, headers: headers)
                    // Same status and headers; max-age may tick down a second between the two.
                    var getWithoutBody = get
                    getWithoutBody.body = []
                    try expectSame(head, getWithoutBody, "HEAD: same headers")
                    #expect(head.body.isEmpty && !get.body.isEmpty)
                }
            }
            for target in ["/api/ibge/cache/health", "/dashboard", "/api/v1/localidades/municipios/9999999"] {
                let head = try await fetch(port, target, method: .HEAD)
                #expect(head.status == 200 && head.body.isEmpty && head.header("content-length") != nil, "\(target)")
            }

            func maxAge() async throws -> Int {
                let header = try #require(try await fetch(port, target).header("cache-control"))
                return try #require(Int(header.split(separator: "=")[1].split(separator: ",")[0]))
            }
            let before = try await maxAge()
            #expect(before <= 30 * 2 && before > 0)
            try await Task.sleep(for: .milliseconds(2100))
            let after = try await maxAge()
            #expect(after < before && after >= before - 4, "max-age counts down as the value ages (\(before) → \(after))")
        }
    }

    @Test("a changed value gets a new ETag, and its gzip variant too")
    func newTagAfterChange() async throws {
        let fake = try await FakeIBGE.start()
        let app = try await makeApp(["REDIS_URL": "none", "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_CACHE_TTL": "1"])
        try await withLiveServer(app) { port in
            let target = "/api/v1/localidades/municipios/4208203"
            let gzip = [("Accept-Encoding", "gzip")]
            let first = try await fetch(port, target)
            let firstPacked = try await fetch(port, target, headers: gzip)
            #expect(firstPacked.header("content-encoding") == nil, "419 bytes are not worth compressing")
            fake.override(target, body: "{\"id\":4208203,\"nome\":\"Mudou\",\"padding\":\"\(String(repeating: "x", count: 2000))\"}")
            // Eager refresh or expiry (TTL 1 s) brings the new body in.
            #expect(try await eventually { try await fetch(port, target).header("etag") != first.header("etag") })
            let changed = try await fetch(port, target)
            #expect(String(decoding: changed.body, as: UTF8.self).contains("Mudou"))
            let changedPacked = try await fetch(port, target, headers: gzip)
            #expect(changedPacked.header("content-encoding") == "gzip")
            #expect(changedPacked.header("etag") != firstPacked.header("etag"))
            #expect(changedPacked.header("etag") != changed.header("etag"))
            let stale = try await fetch(port, target, headers: [("If-None-Match", try #require(first.header("etag")))])
            #expect(stale.status == 200, "the old tag no longer matches")
        }
        await fake.stop()
    }

    @Test("the fast path and the router give the same answers: hits and misses, plain and gzip, with and without If-None-Match, GET and HEAD")
    func fastPathMatchesRouter() async throws {
        // No TTL jitter: both servers' values are fresh for the same time, to the millisecond or so.
        let fast = try await makeApp(["REDIS_URL": "none", "HTTP_FAST_PATH": "true", "IBGE_CACHE_TTL_JITTER": "0"])
        let routed = try await makeApp(["REDIS_URL": "none", "HTTP_FAST_PATH": "false", "IBGE_CACHE_TTL_JITTER": "0"])
        try await withLiveServer(fast) { fastPort in
            try await withLiveServer(routed) { routerPort in
                let targets = [
                    "/api/v1/localidades/municipios/4208203", "/api/v1/localidades/estados/SC/municipios",
                    "/api/v1/localidades/estados/sc/municipios?orderBy=nome", "/api/v1/localidades/municipios/9999999",
                    "/api/v1/localidades/estados", "/api/v1/localidades/municipios/4208203%7C3550308",
                    "/api/v1/localidades/regioes/4/estados", "/api/v1/localidades/municipios/abc",
                ]
                // The same values in both (the snapshot is the source, so the same bytes and tags).
                for round in 0..<3 {  // round 0: misses; then hits
                    for target in targets {
                        for headers in [[], [("Accept-Encoding", "gzip, deflate")], [("Accept-Encoding", "gzip;q=0")]] {
                            let a = try await fetch(fastPort, target, headers: headers)
                            let b = try await fetch(routerPort, target, headers: headers)
                            try expectSame(a, b, "\(target) \(headers) round \(round)")
                            if let tag = a.header("etag") {
                                let conditional = headers + [("If-None-Match", tag)]
                                let c = try await fetch(fastPort, target, headers: conditional)
                                try expectSame(c, try await fetch(routerPort, target, headers: conditional), "\(target) If-None-Match")
                                #expect(c.status == 304)
                            }
                            let headA = try await fetch(fastPort, target, method: .HEAD, headers: headers)
                            let headB = try await fetch(routerPort, target, method: .HEAD, headers: headers)
                            try expectSame(headA, headB, "HEAD \(target)")
                        }
                    }
                }
                #expect(try await fastAnswers(fastPort) > 100, "the hits were answered by the fast path")
                #expect(try await fastAnswers(routerPort) == 0)
            }
        }
    }

    @Test("the fast path writes the router's bytes: pipelined GET, HEAD and If-None-Match answers, plain and gzip, byte for byte")
    func fastPathWritesTheRoutersBytes() async throws {
        let fast = try await makeApp(["REDIS_URL": "none", "HTTP_FAST_PATH": "true", "IBGE_CACHE_TTL_JITTER": "0"])
        let routed = try await makeApp(["REDIS_URL": "none", "HTTP_FAST_PATH": "false", "IBGE_CACHE_TTL_JITTER": "0"])
        try await withLiveServer(fast) { fastPort in
            try await withLiveServer(routed) { routerPort in
                func normalized(_ reply: String) -> String {
                    reply.replacing(/Date: [^\r]*/, with: "Date: D").replacing(/max-age=[0-9]+/, with: "max-age=N")
                }
                var expectedFast = 0
                for target in ["/api/v1/localidades/municipios/4208203", "/api/v1/localidades/estados/SC/municipios", "/api/v1/localidades/regioes"] {
                    for encoding in ["", "Accept-Encoding: gzip\r\n", "accept-encoding:  gzip  \r\n"] {
                        let warm = try await fetch(routerPort, target, headers: encoding.isEmpty ? [] : [("Accept-Encoding", "gzip")])
                        let etag = try #require(warm.header("etag"))
                        _ = try await fetch(fastPort, target, headers: encoding.isEmpty ? [] : [("Accept-Encoding", "gzip")])
                        let before = try await fastAnswers(fastPort)
                        let request = "GET \(target) HTTP/1.1\r\nHost: x\r\n\(encoding)\r\n" + "HEAD \(target) HTTP/1.1\r\nHost: x\r\n\(encoding)\r\n"
                            + "GET \(target) HTTP/1.1\r\nHost: x\r\n\(encoding)If-None-Match: W/\(etag)\r\n\r\n"
                            + "GET /api/v1/localidades/regioes/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        let a = try await rawExchange(fastPort, request).reply
                        let b = try await rawExchange(routerPort, request).reply
                        #expect(a.components(separatedBy: "HTTP/1.1 ").count == 5, "four answers: \(a.prefix(300))")
                        #expect(normalized(a) == normalized(b), "\(target) \(encoding)")
                        let delta = try await fastAnswers(fastPort) - before
                        // An answer past the channel's high-water mark (64 KiB) may still be in
                        // the channel after its flush (the kernel decides how much it takes at
                        // once); the requests behind it then go to the router, as they should.
                        let large = warm.body.count > 64 * 1024
                        #expect(large ? delta >= 1 : delta == 3, "GET, HEAD and If-None-Match were the fast path's: \(delta), \(target) \(encoding)")
                        expectedFast += 3
                    }
                }
                #expect(expectedFast == 27)
            }
        }
    }

    @Test("on one connection: a head sent in pieces is answered, pipelined answers keep their order, a request with a body hands the rest to the router")
    func fastPathOnOneConnection() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(app) { port in
            for target in ["/api/v1/localidades/municipios/4208203", "/api/v1/localidades/estados/SC"] {
                #expect(try await fetch(port, target).status == 200)
            }
            // A head sent in three pieces is the fast path's, once it is whole.
            let before = try await fastAnswers(port)
            let split = try await rawExchange(
                port,
                pieces: [
                    "GET /api/v1/localidades/municipios/4208203 HT", "TP/1.1\r\nHost: x\r",
                    "\n\r\nGET /api/v1/localidades/regioes/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                ]
            ).reply
            #expect(split.hasPrefix("HTTP/1.1 200 OK") && split.contains("\"id\":4208203") && split.components(separatedBy: "HTTP/1.1 ").count == 3)
            #expect(try await fastAnswers(port) - before == 1)

            let florianopolis = "GET /api/v1/localidades/municipios/4208203 HTTP/1.1\r\nHost: x\r\n\r\n"
            let reply = try await rawExchange(
                port,
                pieces: [
                    "GET /api/v1/localidades/municipios/4208203 HT", "TP/1.1\r\nHost: x\r", "\n\r\n",
                    "GET /api/v1/localidades/municipios/3550308 HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /api/v1/localidades/estados/SC HTTP/1.1\r\nHost: x\r\n\r\n"
                        + florianopolis + "POST /api/ibge/cache/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" + florianopolis,
                    "GET /api/v1/localidades/estados/SC HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                ]
            ).reply
            let answers = reply.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0 }
            #expect(answers.count == 7, "\(reply.prefix(400))")
            guard answers.count == 7 else { return }
            #expect(answers[0].hasPrefix("200") && answers[0].contains("\"id\":4208203"))
            #expect(answers[1].hasPrefix("200") && answers[1].contains("\"id\":3550308"), "the miss, from the router, in its place")
            #expect(answers[2].hasPrefix("200") && answers[2].contains("\"sigla\":\"SC\""))
            #expect(answers[3].hasPrefix("200") && answers[3].contains("\"id\":4208203"))
            #expect(answers[4].hasPrefix("405") || answers[4].hasPrefix("404"), "\(answers[4].prefix(80))")
            #expect(answers[5].hasPrefix("200") && answers[5].contains("\"id\":4208203"))
            #expect(answers[6].hasPrefix("200") && answers[6].contains("\"sigla\":\"SC\""))

            // After a request that ends keep-alive (HTTP/1.0 here), the decoder reads no more
            // requests, so neither does the fast path: a hit behind it is not answered.
            let ended = try await rawExchange(
                port, "GET /api/v1/localidades/estados/SC HTTP/1.0\r\n\r\n" + florianopolis, limit: .seconds(20)
            ).reply
            #expect(ended.components(separatedBy: "HTTP/1.").count == 2, "one answer: \(ended.prefix(300))")
            #expect(ended.hasPrefix("HTTP/1.0 200") || ended.hasPrefix("HTTP/1.1 200"))

            // Lines ended by a bare LF are the decoder's to judge, at once (not held until the timeout).
            let bare = try await rawExchange(port, "GET /api/v1/localidades/estados/SC HTTP/1.1\nHost: x\nConnection: close\n\n", limit: .seconds(5))
            #expect(bare.closedAfter < .seconds(4))
        }
    }

    @Test("half-sent requests are closed after the header timeout while real clients are answered; long URIs get 414, too many ids 400, too many connections 503")
    func limits() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "HTTP_HEADER_TIMEOUT": "1", "HTTP_IDLE_TIMEOUT": "2", "MAX_CONNECTIONS": "80"])
        try await withLiveServer(app) { port in
            try await withThrowingTaskGroup(of: Duration.self) { group in
                for _ in 0..<40 {
                    group.addTask { try await rawExchange(port, "GET /api/v1/localidades/estados HTTP/1.1\r\nHost: x\r\nX-Slow: ").closedAfter }
                }
                for i in 0..<20 {
                    let answer = try await fetch(port, i.isMultiple(of: 2) ? "/api/v1/localidades/estados" : "/api/v1/localidades/municipios/4208203")
                    #expect(answer.status == 200)
                }
                var closed = 0
                for try await after in group {
                    #expect(after >= .milliseconds(900) && after < .seconds(8), "closed after \(after)")
                    closed += 1
                }
                #expect(closed == 40)
            }
            // An idle keep-alive connection is closed after the idle timeout.
            let idle = try await rawExchange(port, "GET /api/v1/localidades/regioes HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(idle.reply.hasPrefix("HTTP/1.1 200 OK") && idle.closedAfter >= .milliseconds(1900) && idle.closedAfter < .seconds(10))

            let long = try await rawExchange(port, "GET /api/v1/localidades/municipios/\(String(repeating: "1", count: 9000)) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(long.reply.hasPrefix("HTTP/1.1 414"))
            #expect(long.reply.contains("at most 8192") && long.reply.lowercased().contains("access-control-allow-origin: *"))
            let ids = (1..<1002).map { String(4_200_000 + $0) }.joined(separator: "|")
            let many = try await rawExchange(port, "GET /api/v1/localidades/municipios/\(ids) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(many.reply.hasPrefix("HTTP/1.1 400") && many.reply.contains("at most 1000"), "\(many.reply.prefix(200))")
            let body = try await rawExchange(port, "POST /api/ibge/cache/clear HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
            #expect(body.reply.hasPrefix("HTTP/1.1 413"))
            #expect(!body.reply.lowercased().contains("access-control"), "admin answers carry no CORS")
        }
        let capped = try await makeApp(["REDIS_URL": "none", "MAX_CONNECTIONS": "3", "HTTP_IDLE_TIMEOUT": "30"])
        try await withLiveServer(capped) { port in
            var held: [NIOAsyncChannel<ByteBuffer, ByteBuffer>] = []
            for _ in 0..<3 {
                held.append(
                    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    })
            }
            // The server counts a connection once it has accepted it: until it has accepted the
            // three held ones, a fourth may still be answered (and closes, asked to).
            var refused = ""
            #expect(
                try await eventually {
                    refused = try await rawExchange(port, "GET /api/v1/localidades/estados HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").reply
                    return refused.hasPrefix("HTTP/1.1 503")
                }, "\(refused.prefix(200))")
            for channel in held { try? await channel.channel.close() }
            #expect(try await eventually { try await fetch(port, "/api/v1/localidades/estados").status == 200 })
            // Refusals are requests answered too: in the request metrics, without a tier.
            let metrics = String(decoding: try await fetch(port, "/metrics").body, as: UTF8.self)
            #expect(requestCounts(metrics)["none 503"] ?? 0 >= 1, "\(requestCounts(metrics))")
        }
    }
}
