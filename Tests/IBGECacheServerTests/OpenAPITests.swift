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
            let routes: [(String, String)] = [
                ("/api/v1/localidades/{nivel}", "get"), ("/api/v1/localidades/{nivel}", "head"), ("/api/v1/localidades/{nivel}", "options"),
                ("/api/v1/localidades/{nivel}/{ids}", "get"), ("/api/v1/localidades/{nivel}/{ids}/{subnivel}", "get"),
                ("/api/ibge/cache/status", "get"), ("/api/ibge/cache/health", "get"), ("/api/ibge/cache/metrics", "get"),
                ("/api/ibge/cache/clear", "post"), ("/api/ibge/cache/preload", "post"), ("/api/ibge/cache/keys/{key}", "delete"),
                ("/metrics", "get"), ("/dashboard", "get"), ("/openapi.json", "get"),
            ]
            for (path, method) in routes {
                #expect(paths[path]?[method] != nil, "\(method.uppercased()) \(path) is described")
                // And the server has it: a GET of a described admin or operations path is no 404.
                if method == "get", !path.contains("{") {
                    #expect(try await fetch(port, path).status != 404, "\(path) is served")
                }
            }
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
            #expect(run.output.contains("passed") && !run.output.contains(" failed"), "\(summary)")
        }
    }
}
