import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import IBGECacheServer
import NIOCore
import IBGETestSupport
import TestSupport
import Testing

@Suite("HTTP mirror of a stand-in IBGE (ENABLE_REAL_APIS=true)")
struct ServerUpstreamTests {
    @Test("IBGE failing in a row opens the circuit: localidades answer from the snapshot at once, health and /metrics say so, and it closes when IBGE is back")
    func circuitOverHTTP() async throws {
        let fake = try await FakeIBGE.start()
        let app = try await makeApp([
            "REDIS_URL": "none", "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_CIRCUIT_FAILURES": "2",
            "IBGE_CIRCUIT_OPEN_SECONDS": "5",
        ])
        try await app.test(.router) { client in
            fake.inject(.status(503))
            for uf in ["AC", "AL"] {
                let answer = try await client.execute(uri: "/api/v1/localidades/estados/\(uf)/municipios", method: .get)
                #expect(answer.status == .ok, "the snapshot answers")
            }
            let asked = fake.totalCalls
            for uf in ["AP", "AM", "BA", "CE", "DF", "ES"] {
                let answer = try await client.execute(uri: "/api/v1/localidades/estados/\(uf)/municipios", method: .get)
                #expect(answer.status == .ok)
            }
            #expect(fake.totalCalls == asked, "the circuit is open: IBGE not asked")
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(text.contains("ibge_upstream_circuit_open 1"), "\(text.split(separator: "\n").filter { $0.contains("circuit") })")
            #expect(text.contains("ibge_upstream_circuit_openings_total 1"))
            let health = try object(try await client.execute(uri: "/api/ibge/cache/health", method: .get).body)
            let source = (health["checks"] as? [String: Any])?["source"] as? [String: Any]
            #expect((source?["detail"] as? String)?.contains("circuit open") == true, "\(source ?? [:])")

            // IBGE back: after the open seconds, a probe closes the circuit and answers are IBGE's again.
            fake.inject(.none)
            #expect(
                try await eventually {
                    _ = try await client.execute(uri: "/api/v1/localidades/estados/GO/municipios", method: .get)
                    return fake.totalCalls > asked
                })
            let after = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(after.contains("ibge_upstream_circuit_open 0"))
        }
        await fake.stop()
    }

    @Test("localidades and agregados answer with the upstream's bytes; other paths pass through; an outage is a clear error")
    func mirror() async throws {
        let fake = try await FakeIBGE.start()
        let app = try await makeApp(["REDIS_URL": "none", "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL])
        try await app.test(.router) { client in
            let itajai = try await client.execute(uri: "/api/v1/localidades/municipios/4208203", method: .get)
            #expect(itajai.status == .ok)
            #expect(String(buffer: itajai.body).hasPrefix(#"{"id":4208203,"nome":"Itajaí""#))
            #expect(fake.calls("/api/v1/localidades/municipios/4208203") == 1)

            let raw = "/api/v3/agregados/4709/periodos/2022/variaveis/93?localidades=N6[4208203]"
            let encoded = "/api/v3/agregados/4709/periodos/2022/variaveis/93?localidades=N6%5B4208203%5D"
            let first = try await client.execute(uri: raw, method: .get)
            let second = try await client.execute(uri: encoded, method: .get)
            #expect(first.status == .ok && first.body == second.body)
            #expect(String(buffer: first.body).contains(#""nome":"Itajaí - SC"},"serie":{"2022":"264054"}"#))
            #expect(fake.totalCalls == 2, "the two spellings are one key")

            // A path the snapshot does not know goes to IBGE; its 404 comes back as a 404.
            let distritos = try await client.execute(uri: "/api/v1/localidades/distritos/420820305", method: .get)
            #expect(distritos.status == .notFound)
            #expect(fake.calls("/api/v1/localidades/distritos/420820305") == 1)

            // Nothing outside the allow-list is ever proxied.
            let outside = try await client.execute(uri: "/api/v2/cnae/classes", method: .get)
            #expect(outside.status == .notFound)

            fake.inject(.outage)
            let cached = try await client.execute(uri: "/api/v1/localidades/municipios/4208203", method: .get)
            #expect(cached.status == .ok)
            let snapshot = try await client.execute(uri: "/api/v1/localidades/estados/RR/municipios", method: .get)
            #expect(snapshot.status == .ok, "the snapshot answers what IBGE cannot")
            let down = try await client.execute(uri: "/api/v3/agregados/6579/periodos/-1/variaveis/9324?localidades=N1[all]", method: .get)
            #expect(down.status == .badGateway)
            let body = try object(down.body)
            #expect(body["success"] as? Bool == false)
            #expect((body["error"] as? String)?.contains("cannot reach IBGE") == true)
            let metrics = try #require(
                try object(try await client.execute(uri: "/api/ibge/cache/metrics", method: .get).body)["metrics"] as? [String: Any])
            #expect(metrics["embedded_fallbacks"] as? Int == 1)
            let health = try await client.execute(uri: "/api/ibge/cache/health", method: .get)
            #expect(health.status == .ok)
            let healthBody = try object(health.body)
            #expect(healthBody["status"] as? String == "degraded")
            let source = (healthBody["checks"] as? [String: Any])?["source"] as? [String: Any]
            #expect(source?["status"] as? String == "down")
            #expect((source?["detail"] as? String)?.contains("cannot reach IBGE") == true)
        }
        await fake.stop()
    }

    @Test("without ENABLE_REAL_APIS the population queries come from embedded data and nothing is fetched")
    func offline() async throws {
        let app = try await makeApp(["REDIS_URL": "none"])
        try await app.test(.router) { client in
            let population = try await client.execute(uri: "/api/v3/agregados/4709/periodos/2022/variaveis/93?localidades=N1[all]", method: .get)
            #expect(population.status == .ok)
            #expect(String(buffer: population.body).contains(#""serie":{"2022":"203080756"}"#))
            let other = try await client.execute(uri: "/api/v3/agregados/6579/periodos/-1/variaveis/9324?localidades=N1[all]", method: .get)
            #expect(other.status == .notFound)
            #expect((try object(other.body)["error"] as? String)?.contains("ENABLE_REAL_APIS=true") == true)
        }
    }
}
