import CompressNIO
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import Logging
import NIOCore
import Redis
import TestSupport
import Testing

func makeApp(_ environment: [String: String]) async throws -> some ApplicationProtocol {
    var configuration = try ServerConfiguration(environment: environment)
    configuration.host = "127.0.0.1"
    configuration.port = 0
    var logger = Logger(label: "ibge-cache-test")
    logger.logLevel = .warning
    return try await buildApplication(configuration: configuration, logger: logger)
}

func object(_ body: ByteBuffer) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any])
}

func snapshotBytes(_ name: String) throws -> ByteBuffer {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/IBGE/Snapshot/\(name)")
    return ByteBuffer(bytes: try Data(contentsOf: url))
}

@Suite("HTTP: the IBGE mirror")
struct DataRouteTests {
    @Test("Itajaí as IBGE serves it, JSON content type")
    func municipio() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            try await client.execute(uri: "/api/v1/localidades/municipios/4208203", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                let itajai = try object(response.body)
                #expect(itajai["nome"] as? String == "Itajaí")
                let list = String(buffer: try snapshotBytes("municipios.json"))
                #expect(list.contains(String(buffer: response.body)))
            }
        }
    }

    @Test("the list bodies are byte-identical to the snapshot files")
    func lists() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            for name in ["estados", "regioes", "municipios"] {
                let response = try await client.execute(uri: "/api/v1/localidades/\(name)", method: .get)
                #expect(response.status == .ok)
                #expect(response.body == (try snapshotBytes("\(name).json")), "\(name)")
            }
        }
    }

    @Test("query parameters, siglas and joined ids")
    func queries() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let sc = try await client.execute(uri: "/api/v1/localidades/estados/SC/municipios?orderBy=nome", method: .get)
            let list = try #require(try JSONSerialization.jsonObject(with: Data(sc.body.readableBytesView)) as? [[String: Any]])
            #expect(list.count == 295 && list.first?["nome"] as? String == "Abdon Batista")
            let two = try await client.execute(uri: "/api/v1/localidades/municipios/4208203%7C3550308", method: .get)
            #expect((try JSONSerialization.jsonObject(with: Data(two.body.readableBytesView)) as? [Any])?.count == 2)
            let flat = try await client.execute(uri: "/api/v1/localidades/municipios/4208203?view=nivelado", method: .get)
            #expect(try object(flat.body)["UF-sigla"] as? String == "SC")
        }
    }

    @Test("gzip only for clients that ask for it, compressed once and byte-identical once inflated")
    func gzip() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let plain = try await client.execute(uri: "/api/v1/localidades/municipios", method: .get)
            #expect(plain.headers[.contentEncoding] == nil)
            #expect(plain.headers[.vary] == "Accept-Encoding")
            let zipped = try await client.execute(uri: "/api/v1/localidades/municipios", method: .get, headers: [.acceptEncoding: "br, gzip;q=0.8"])
            #expect(zipped.headers[.contentEncoding] == "gzip")
            #expect(zipped.body.readableBytes < plain.body.readableBytes / 5)
            var compressed = zipped.body
            #expect(try compressed.decompress(with: .gzip) == (try snapshotBytes("municipios.json")))
            let refused = try await client.execute(uri: "/api/v1/localidades/municipios", method: .get, headers: [.acceptEncoding: "gzip;q=0"])
            #expect(refused.headers[.contentEncoding] == nil)
            let small = try await client.execute(uri: "/api/v1/localidades/regioes", method: .get, headers: [.acceptEncoding: "gzip"])
            #expect(small.headers[.contentEncoding] == nil, "a 194-byte body is not worth compressing")
            _ = try await client.execute(uri: "/api/v1/localidades/municipios", method: .get, headers: [.acceptEncoding: "gzip"])
            let metrics = try #require(
                try object(try await client.execute(uri: "/api/ibge/cache/metrics", method: .get).body)["metrics"] as? [String: Any])
            #expect(metrics["loads"] as? Int == 3, "the body, its gzip variant and /regioes: each loaded once")
        }
    }

    @Test("unknown ids answer 200 []; malformed ids 400 JSON; other paths 404 JSON")
    func errors() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let unknown = try await client.execute(uri: "/api/v1/localidades/municipios/9999999", method: .get)
            #expect(unknown.status == .ok && String(buffer: unknown.body) == "[]")
            let bad = try await client.execute(uri: "/api/v1/localidades/municipios/abc", method: .get)
            #expect(bad.status == .badRequest)
            let badBody = try object(bad.body)
            #expect(badBody["success"] as? Bool == false)
            #expect((badBody["error"] as? String)?.contains("invalid município id 'abc'") == true)
            let other = try await client.execute(uri: "/api/v1/localidades/distritos", method: .get)
            #expect(other.status == .notFound)
            #expect(try object(other.body)["success"] as? Bool == false)
        }
    }
}

@Suite("HTTP: admin API")
struct AdminRouteTests {
    @Test("metrics keep the original's field names and count requests")
    func metrics() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            _ = try await client.execute(uri: "/api/v1/localidades/estados/42", method: .get)
            _ = try await client.execute(uri: "/api/v1/localidades/estados/SC", method: .get)
            let response = try await client.execute(uri: "/api/ibge/cache/metrics", method: .get)
            let body = try object(response.body)
            #expect(body["success"] as? Bool == true)
            let metrics = try #require(body["metrics"] as? [String: Any])
            #expect(metrics["hits"] as? Int == 1)
            #expect(metrics["misses"] as? Int == 1)
            #expect(metrics["total_requests"] as? Int == 2)
            #expect(metrics["hit_rate_percent"] as? Double == 50)
            #expect(metrics["redis_connected"] as? Bool == false)
            #expect(metrics["backplane_sent"] as? Int == 0, "no instance shares an in-process store: nothing to announce")
            #expect(metrics["redis_errors"] as? Int == 0)
        }
    }

    @Test("status and health without Redis: memory backend, healthy")
    func statusWithoutRedis() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let status = try object(try await client.execute(uri: "/api/ibge/cache/status", method: .get).body)
            let inner = try #require(status["status"] as? [String: Any])
            #expect(inner["backend"] as? String == "memory")
            #expect(inner["redis_connected"] as? Bool == false)
            #expect(inner["keys"] == nil, "no shared store to count keys in")
            let health = try await client.execute(uri: "/api/ibge/cache/health", method: .get)
            #expect(health.status == .ok)
            #expect(try object(health.body)["status"] as? String == "healthy")
        }
    }

    @Test("with a token, state-changing calls need it (401 otherwise); reads stay open")
    func token() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "CACHE_ADMIN_TOKEN": "s3cret"])
        try await app.test(.router) { client in
            let none = try await client.execute(uri: "/api/ibge/cache/clear", method: .post)
            #expect(none.status == .unauthorized)
            #expect(none.headers[.wwwAuthenticate] == "Bearer")
            #expect(try object(none.body)["success"] as? Bool == false)
            let wrong = try await client.execute(uri: "/api/ibge/cache/clear", method: .post, headers: [.authorization: "Bearer s3cre"])
            #expect(wrong.status == .unauthorized)
            let right = try await client.execute(uri: "/api/ibge/cache/clear", method: .post, headers: [.authorization: "Bearer s3cret"])
            #expect(right.status == .ok)
            let read = try await client.execute(uri: "/api/ibge/cache/metrics", method: .get)
            #expect(read.status == .ok)
        }
    }

    @Test("without a token, only loopback clients may change state")
    func loopbackOnly() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        // The in-process router test has no client address: not loopback.
        try await app.test(.router) { client in
            let response = try await client.execute(uri: "/api/ibge/cache/clear", method: .post)
            #expect(response.status == .forbidden)
        }
        // A real connection from 127.0.0.1 is.
        try await app.test(.live) { client in
            let response = try await client.execute(uri: "/api/ibge/cache/clear", method: .post)
            #expect(response.status == .ok)
        }
    }

    @Test("preload of one UF, given by query or JSON body; an unknown UF is a 400")
    func preloadScope() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "CACHE_ADMIN_TOKEN": "t"])
        try await app.test(.router) { client in
            let auth: HTTPFields = [.authorization: "Bearer t", .contentType: "application/json"]
            let byQuery = try object(try await client.execute(uri: "/api/ibge/cache/preload?uf=RR", method: .post, headers: auth).body)
            #expect((byQuery["preloaded"] as? [String: Any])?["keys"] as? Int == 2 + 15)
            let byBody = try object(
                try await client.execute(uri: "/api/ibge/cache/preload", method: .post, headers: auth, body: ByteBuffer(string: #"{"uf":"sc"}"#)).body
            )
            #expect(byBody["scope"] as? String == "SC")
            #expect((byBody["preloaded"] as? [String: Any])?["loaded"] as? Int == 2 + 295)
            let bad = try await client.execute(uri: "/api/ibge/cache/preload?uf=ZZ", method: .post, headers: auth)
            #expect(bad.status == .badRequest)
            let garbage = try await client.execute(
                uri: "/api/ibge/cache/preload", method: .post, headers: auth, body: ByteBuffer(string: "{not json"))
            #expect(garbage.status == .badRequest)
        }
    }

    @Test("the dashboard is one self-contained page that reads the admin JSON")
    func dashboard() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let page = try await client.execute(uri: "/dashboard", method: .get)
            #expect(page.status == .ok)
            #expect(page.headers[.contentType] == "text/html; charset=utf-8")
            #expect(page.headers[.contentSecurityPolicy] == "default-src 'self'; frame-ancestors 'none'")
            #expect(page.headers[.xContentTypeOptions] == "nosniff")
            let html = String(buffer: page.body)
            #expect(html.contains("<script src=\"/dashboard/app.js\"></script>") && !html.contains("<script>"), "no inline script")
            let script = try await client.execute(uri: "/dashboard/app.js", method: .get)
            #expect(script.headers[.contentType] == "text/javascript; charset=utf-8" && script.headers[.xContentTypeOptions] == "nosniff")
            let code = String(buffer: script.body)
            for path in ["/api/ibge/cache/", "\"status\"", "\"health\"", "\"metrics\""] { #expect(code.contains(path)) }
            #expect(!code.contains("innerHTML") && code.contains("textContent"))
            #expect(try await client.execute(uri: "/dashboard/style.css", method: .get).status == .ok)
            for text in [html, code] {
                // (The SVG namespace is a name, not something fetched.)
                let fetchable = text.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
                #expect(!fetchable.contains("http://") && !fetchable.contains("https://"), "no external resources")
            }
        }
    }

    @Test("GET /metrics is Prometheus text whose counters agree with the JSON metrics")
    func prometheus() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            for _ in 0..<3 { _ = try await client.execute(uri: "/api/v1/localidades/regioes", method: .get) }
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(text.contains("# TYPE ibge_cache_hits_total counter"))
            #expect(text.contains("ibge_cache_hits_total{tier=\"l1\"} 2\n"))
            #expect(text.contains("ibge_cache_misses_total 1\n"))
            // Memory only: nothing to say about Redis (an alert on "Redis down" would fire for ever).
            #expect(!text.contains("ibge_cache_redis_connected"))
        }
    }
}
