import Foundation
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

/// The browser app the mirror is for: a web form's UF and município dropdowns, on a page served
/// from another site, fetching from ibge-cache as it would from IBGE.
func dropdownsPage(api: String) -> String {
    """
    <!doctype html><html lang="pt-BR"><head><meta charset="utf-8"><title>UF e município</title></head><body>
    <select id="uf"></select><select id="municipio"></select>
    <p id="clear">pending</p><p id="error"></p>
    <script>
    const api = "\(api)";
    function fill(select, items, value) {
      for (const item of items) {
        const option = document.createElement("option");
        option.value = item[value];
        option.textContent = item.nome;
        select.appendChild(option);
      }
    }
    async function main() {
      const uf = document.getElementById("uf");
      fill(uf, await (await fetch(api + "/api/v1/localidades/estados?orderBy=nome")).json(), "sigla");
      uf.value = "SC";
      const municipios = await fetch(api + "/api/v1/localidades/estados/" + uf.value + "/municipios?orderBy=nome");
      fill(document.getElementById("municipio"), await municipios.json(), "id");
      // What a hostile page would try: clear the cache through the visitor's browser.
      let outcome;
      try {
        const answer = await fetch(api + "/api/ibge/cache/clear", { method: "POST", body: "x", headers: { "Content-Type": "text/plain" } });
        outcome = "answered " + answer.status;
      } catch (error) {
        outcome = "refused: " + error.name;
      }
      document.getElementById("clear").textContent = outcome;
    }
    main().catch(error => { document.getElementById("error").textContent = String(error); });
    </script></body></html>
    """
}

@Suite("A browser app on another site, in headless chromium")
struct BrowserTests {
    @Test("the page fills 27 UFs and SC's 295 municípios from the mirror across origins; its POST to clear changes nothing")
    func dropdownsFromAnotherOrigin() async throws {
        try #require(toolExists("chromium"), "chromium is missing (scripts/test installs it from Debian's packages)")
        let mirror = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(mirror) { apiPort in
            let html = dropdownsPage(api: "http://127.0.0.1:\(apiPort)")
            let router = Router()
            router.get("/") { _, _ in
                Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: html)))
            }
            let site = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
            try await site.test(.live) { client in
                let sitePort = try #require(client.port)
                let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
                defer { try? FileManager.default.removeItem(at: profile) }
                // `localhost` for the page, `127.0.0.1` for the API: another origin, another site.
                let run = try await runTool(
                    [
                        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                        "--user-data-dir=\(profile.path)", "--virtual-time-budget=30000", "--dump-dom", "http://localhost:\(sitePort)/",
                    ], limit: .seconds(120))
                #expect(run.status == 0, "chromium: \(run.output.suffix(2000))")
                let dom = run.output
                func options(in id: String) -> Int {
                    guard let start = dom.range(of: "<select id=\"\(id)\">"), let end = dom[start.upperBound...].range(of: "</select>") else { return -1 }
                    return dom[start.upperBound..<end.lowerBound].components(separatedBy: "<option").count - 1
                }
                #expect(options(in: "uf") == 27, "\(dom.prefix(1500))")
                #expect(options(in: "municipio") == 295)
                #expect(dom.contains("<option value=\"SC\">Santa Catarina</option>"))
                #expect(dom.contains("<option value=\"4205407\">Florianópolis</option>"))
                #expect(dom.contains("<p id=\"error\"></p>"), "no script error")
                // The browser hides the cross-origin answer from the page either way; the server
                // must also not have acted on it.
                #expect(dom.contains("<p id=\"clear\">refused: TypeError</p>"))
            }
            let status = try object(ByteBuffer(bytes: try await fetch(apiPort, "/api/ibge/cache/status").body))
            let l1 = try #require((status["status"] as? [String: Any])?["l1"] as? [String: Any])
            #expect((l1["entries"] as? Int ?? 0) >= 2, "the page's POST did not clear the cache: \(l1)")
        }
    }

    @Test("admin calls are refused with another site's Origin or Sec-Fetch-Site, allowed from the same origin and from clients that are not browsers")
    func crossSiteAdminCalls() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await withLiveServer(app) { port in
            func clear(_ headers: [(String, String)]) async throws -> UInt {
                try await fetch(port, "/api/ibge/cache/clear", method: .POST, headers: headers).status
            }
            let status1 = try await clear([("Origin", "http://evil.example")])
            #expect(status1 == 403)
            let status2 = try await clear([("Origin", "null")])
            #expect(status2 == 403)
            let status3 = try await clear([("Sec-Fetch-Site", "cross-site")])
            #expect(status3 == 403)
            let status4 = try await clear([("Sec-Fetch-Site", "same-site"), ("Origin", "http://127.0.0.1:\(port)")])
            #expect(status4 == 403)
            let status5 = try await clear([("Origin", "http://127.0.0.1:\(port + 1)")])
            #expect(status5 == 403, "another port is another origin")
            let status6 = try await clear([("Origin", "http://127.0.0.1:\(port)"), ("Sec-Fetch-Site", "same-origin")])
            #expect(status6 == 200, "the server's own pages")
            let status7 = try await clear([])
            #expect(status7 == 200, "curl, Python, the CLI")
            // Same origin by Origin and Host alone (no Sec-Fetch-Site), a default port left out.
            let sameOrigin = try await clear([("Origin", "http://127.0.0.1:\(port)")])
            #expect(sameOrigin == 200)
            let defaultPort = try await clear([("Origin", "http://localhost"), ("Host", "localhost:80")])
            #expect(defaultPort == 200)
            // DNS rebinding: same-origin to the browser, but the page's own host name.
            let rebound = try await clear([("Origin", "http://rebind.example:\(port)"), ("Host", "rebind.example:\(port)"), ("Sec-Fetch-Site", "same-origin")])
            #expect(rebound == 403)
            // A form's body types are refused without a token, even with no Origin at all; JSON is not.
            for type in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain;charset=UTF-8"] {
                let form = try await clear([("Content-Type", type)])
                #expect(form == 403, "\(type)")
            }
            let json = try await clear([("Content-Type", "application/json")])
            #expect(json == 200)
            // Through a proxy on this host, every client is loopback: not without a token.
            let proxied = try await clear([("X-Forwarded-For", "203.0.113.9")])
            #expect(proxied == 403)
        }
    }

    @Test("ALLOWED_HOSTS keeps a rebound name from reading admin answers (421); TRUSTED_PROXIES judges the client a trusted proxy forwards")
    func allowedHostsAndTrustedProxies() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "ALLOWED_HOSTS": "cache.example.com,.example.org", "TRUSTED_PROXIES": "127.0.0.1"])
        try await withLiveServer(app) { port in
            func status(_ host: String) async throws -> UInt {
                try await fetch(port, "/api/ibge/cache/status", headers: [("Host", host)]).status
            }
            let rebound = try await status("rebind.example:\(port)")
            #expect(rebound == 421, "a page whose name was re-pointed here cannot read the status")
            let listed = try await status("cache.example.com")
            let sub = try await status("a.example.org:\(port)")
            let apex = try await status("example.org")
            let local = try await status("localhost:\(port)")
            #expect(listed == 200 && sub == 200 && apex == 200 && local == 200)
            let unlisted = try await status("other.example.com")
            #expect(unlisted == 421)
            let fullyQualified = try await status("cache.example.com.")
            #expect(fullyQualified == 200, "a trailing dot names the same host")
            // The dashboard too.
            for path in ["/dashboard", "/dashboard/app.js", "/api/ibge/cache/metrics", "/api/ibge/cache/keys/x"] {
                let rebound = try await fetch(port, path, method: path.hasSuffix("/x") ? .DELETE : .GET, headers: [("Host", "rebind.example")]).status
                #expect(rebound == 421, "\(path): \(rebound)")
                let listed = try await fetch(port, path, headers: [("Host", "cache.example.com")]).status
                #expect(path.hasSuffix("/x") || listed == 200, "\(path): \(listed)")
            }
            // Probes and scrapers name the address they reach: health and /metrics answer any Host.
            for path in ["/api/ibge/cache/health", "/metrics"] {
                let byAddress = try await fetch(port, path, headers: [("Host", "10.1.2.3:8080")]).status
                #expect(byAddress == 200, "\(path): \(byAddress)")
            }
            // Data paths answer any host (their answers are public, CORS *).
            #expect(try await fetch(port, "/api/v1/localidades/regioes", headers: [("Host", "rebind.example")]).status == 200)

            // The peer (127.0.0.1) is a trusted proxy: the client it forwards decides.
            func clear(_ headers: [(String, String)]) async throws -> UInt {
                try await fetch(port, "/api/ibge/cache/clear", method: .POST, headers: [("Host", "localhost")] + headers).status
            }
            let remote = try await clear([("X-Forwarded-For", "203.0.113.9")])
            #expect(remote == 403, "a remote client through the proxy")
            let spoofed = try await clear([("X-Forwarded-For", "127.0.0.1, 203.0.113.9")])
            #expect(spoofed == 403, "the client wrote the left part; the proxy appended the real address")
            let localClient = try await clear([("X-Forwarded-For", "127.0.0.1")])
            #expect(localClient == 200, "a loopback client through the proxy")
            let realIP = try await clear([("X-Real-IP", "198.51.100.7")])
            #expect(realIP == 403)
            let passedThrough = try await clear([("X-Forwarded-For", "127.0.0.1"), ("X-Real-IP", "203.0.113.9")])
            #expect(passedThrough == 403, "the client's own X-Forwarded-For passed through beside the proxy's X-Real-IP")
            let unread = try await clear([("Forwarded", "for=127.0.0.1")])
            #expect(unread == 403, "Forwarded is not read, so not trusted")
            let direct = try await clear([])
            #expect(direct == 403, "a trusted proxy that forwards no client is not a local client")
            let bothLocal = try await clear([("X-Forwarded-For", "127.0.0.1"), ("X-Real-IP", "127.0.0.1")])
            #expect(bothLocal == 200)
        }
    }

    @Test("with CACHE_ADMIN_TOKEN set, the token decides: a form body with it is accepted, without it 401; cross-site markers are refused either way")
    func adminWithToken() async throws {
        let app = try await makeApp(["REDIS_URL": "none", "CACHE_ADMIN_TOKEN": "s3cret"])
        try await withLiveServer(app) { port in
            func clear(_ headers: [(String, String)]) async throws -> UInt {
                try await fetch(port, "/api/ibge/cache/clear", method: .POST, headers: headers).status
            }
            let form = [("Content-Type", "application/x-www-form-urlencoded")]
            let withToken = try await clear(form + [("Authorization", "Bearer s3cret")])
            #expect(withToken == 200)
            let withoutToken = try await clear(form)
            #expect(withoutToken == 401)
            let crossSite = try await clear(form + [("Authorization", "Bearer s3cret"), ("Origin", "http://evil.example")])
            #expect(crossSite == 403)
        }
    }

    @Test("the dashboard runs under its Content-Security-Policy and shows hostile text as text")
    func dashboardEscapes() async throws {
        try #require(toolExists("chromium"), "chromium is missing (scripts/test installs it from Debian's packages)")
        // The key prefix reaches the page ("keys under <prefix>"); make it markup.
        let app = try await makeApp(["REDIS_URL": "none", "IBGE_CACHE_PREFIX": "<b/id=injected>x</b>:"])
        try await withLiveServer(app) { port in
            for _ in 0..<3 { _ = try await fetch(port, "/api/v1/localidades/regioes") }
            let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: profile) }
            let run = try await runTool(
                [
                    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--user-data-dir=\(profile.path)", "--virtual-time-budget=5000", "--dump-dom", "http://127.0.0.1:\(port)/dashboard",
                ], limit: .seconds(120))
            let dom = run.output
            #expect(dom.contains("<td>hit rate</td>"), "the script ran under the policy: \(dom.prefix(1500))")
            #expect(dom.contains("<td>total</td><td>3</td>") || dom.contains("<td>total</td><td>4</td>"), "the admin JSON was read")
            #expect(dom.contains("keys under &lt;b"), "the prefix is shown as text")
            #expect(!dom.contains("id=\"injected\""), "and not as markup")
        }
    }

    @Test("the dashboard in headless chromium: after N requests it shows the counter at N and Redis up; with Redis killed it shows it down within two polls; its history charts are drawn")
    func dashboardState() async throws {
        try #require(toolExists("chromium"), "chromium is missing (scripts/test installs it from Debian's packages)")
        try await RedisServerProcess.with { server in
            let app = try await makeApp(["REDIS_URL": server.url])
            try await withLiveServer(app) { port in
                #expect(try await eventually { try await redisConnectedLive(port) })
                let ids = [4208203, 3550308, 3304557, 5300108, 2927408, 1302603, 4314902]
                for id in ids { _ = try await fetch(port, "/api/v1/localidades/municipios/\(id)") }
                func render(pollsBudgetMs: Int) async throws -> String {
                    let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
                    defer { try? FileManager.default.removeItem(at: profile) }
                    return try await runTool(
                        [
                            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                            "--user-data-dir=\(profile.path)", "--virtual-time-budget=\(pollsBudgetMs)", "--dump-dom",
                            "http://127.0.0.1:\(port)/dashboard",
                        ], limit: .seconds(120)
                    ).output
                }
                let up = try await render(pollsBudgetMs: 5000)
                #expect(up.contains("<td>total</td><td>\(ids.count)</td>"), "the request counter at N: \(up.prefix(3000))")
                #expect(up.contains(#"<span id="redis" class="state up">up</span>"#), "Redis up")
                #expect(up.contains("<polyline points="), "the history charts are drawn")

                server.kill()
                #expect(try await eventually { !(try await redisConnectedLive(port)) })
                // Two polls (2 s apart) of virtual time.
                let down = try await render(pollsBudgetMs: 4000)
                #expect(down.contains(#"<span id="redis" class="state down">down</span>"#), "Redis down: \(down.prefix(3000))")
                #expect(down.contains(#"<span id="health" class="state degraded">degraded</span>"#))
            }
        }
    }
}

/// Whether a live server's status says Redis is connected.
func redisConnectedLive(_ port: Int) async throws -> Bool {
    let body = try object(ByteBuffer(bytes: try await fetch(port, "/api/ibge/cache/status").body))
    return (body["status"] as? [String: Any])?["redis_connected"] as? Bool == true
}
