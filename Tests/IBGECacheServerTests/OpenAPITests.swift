import Foundation
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import NIOCore
import Testing

@Suite("OpenAPI: the document at /openapi.json, and schemathesis against a live server")
struct OpenAPITests {
    @Test("the document is OpenAPI 3.1 and describes every route the server has")
    func documentCoversTheRoutes() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(app) { port in
            let answer = try await fetch(port, "/openapi.json")
            #expect(answer.status == 200 && answer.header("content-type")?.hasPrefix("application/json") == true)
            let document = try #require(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
            #expect(document["openapi"] as? String == "3.1.0")
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            // Every route the server registers (DataRoutes, AdminRoutes, PrometheusRoute,
            // DashboardRoute, OpenAPIRoute), each GET with its HEAD.
            let data = ["get", "head", "options"]
            let routes: [(String, [String])] = [
                ("/api/v1/localidades", data), ("/api/v1/localidades/{nivel}", data), ("/api/v1/localidades/{nivel}/{ids}", data),
                ("/api/v1/localidades/{nivel}/{ids}/{subnivel}", data),
                ("/api/v3/agregados/{agregado}/periodos/{periodos}/variaveis/{variaveis}", data),
                ("/api/ibge/cache/status", ["get", "head"]), ("/api/ibge/cache/health", ["get", "head"]),
                ("/api/ibge/cache/metrics", ["get", "head"]), ("/api/ibge/cache/clear", ["post"]), ("/api/ibge/cache/preload", ["post"]),
                ("/api/ibge/cache/keys/{key}", ["delete"]), ("/metrics", ["get", "head"]), ("/dashboard", ["get", "head"]),
                ("/dashboard/app.js", ["get", "head"]), ("/dashboard/style.css", ["get", "head"]),
                ("/openapi.json", ["get", "head"]), ("/livez", ["get", "head"]), ("/readyz", ["get", "head"]),
            ]
            for (path, methods) in routes {
                for method in methods {
                    #expect(paths[path]?[method] != nil, "\(method.uppercased()) \(path) is described")
                }
                // And the server has it: a GET of a described admin or operations path is no 404.
                if methods.contains("get"), !path.contains("{"), !path.hasPrefix("/api/v1") {
                    #expect(try await fetch(port, path).status != 404, "\(path) is served")
                }
            }
            // And the document describes nothing else.
            let described = Set(paths.flatMap { path, operations in operations.keys.map { "\($0) \(path)" } })
            let expected = Set(routes.flatMap { path, methods in methods.map { "\($0) \(path)" } })
            let extra = described.subtracting(expected).filter { !$0.contains("/api/v3/agregados/{agregado}/") || $0.contains("variaveis") }
            #expect(extra.isEmpty, "described but not listed here: \(extra.sorted())")
        }
    }

    @Test("schemathesis (examples, coverage and fuzzing phases): no 5xx, and every answer fits the schema")
    func schemathesis() async throws {
        try #require(toolExists("schemathesis"), "schemathesis is missing (scripts/test installs it from PyPI)")
        let app = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(app) { port in
            let run = try await runTool([
                "schemathesis", "run", "http://127.0.0.1:\(port)/openapi.json",
                "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "--max-examples", "25", "--seed", "20261201", "--no-color",
            ])
            let summary = run.output.split(separator: "\n").suffix(25).joined(separator: "\n")
            #expect(run.status == 0, "schemathesis failed:\n\(run.output.suffix(6000))")
            #expect(run.output.contains("passed"), "\(summary)")
        }
    }
}
