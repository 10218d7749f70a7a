import Foundation
import NIOCore
import Testing

@testable import IBGE

@Suite("Upstream requests and embedded population")
struct UpstreamRequestTests {
    @Test("percent-encoded and raw forms of a query are one key and one URL")
    func canonicalQuery() throws {
        let raw = try UpstreamRequest(path: "v3/agregados/4709/periodos/2022/variaveis/93", query: [("localidades", "N6[3550308,4208203]")])
        let encoded = try UpstreamRequest(
            path: "v3/agregados/4709/periodos/2022/variaveis/93", query: [("localidades", "N6[3550308,4208203]".removingPercentEncoding ?? "")])
        #expect(raw.cacheKey == encoded.cacheKey)
        #expect(raw.cacheKey == "v3:agregados/4709/periodos/2022/variaveis/93?localidades=N6%5B3550308,4208203%5D")
        #expect(raw.url(base: "http://h/api") == "http://h/api/v3/agregados/4709/periodos/2022/variaveis/93?localidades=N6%5B3550308,4208203%5D")
        let reordered = try UpstreamRequest(path: "v3/agregados/1/x", query: [("b", "2"), ("a", "1")])
        #expect(reordered.canonicalQuery == "a=1&b=2")
        let pipe = try UpstreamRequest(path: "v3/agregados/4709/periodos/2022/variaveis/93%7C94", query: [])
        #expect(pipe.path == "v3/agregados/4709/periodos/2022/variaveis/93|94")
        #expect(pipe.url(base: "http://h/api").hasSuffix("/variaveis/93%7C94"))
    }

    @Test(
        "only the allow-list is mirrored; traversal and junk are refused",
        arguments: [
            ("v2/cnae/classes", "allow-list"), ("v1/paises/76", "allow-list"), ("v1/localidades/../../etc/passwd", "invalid path segment"),
            ("v3/agregados/<script>", "invalid path segment"), ("v1/localidades", "not an IBGE data path"),
        ])
    func allowList(path: String, message: String) {
        let error = #expect(throws: IBGEError.self) { try UpstreamRequest(path: path, query: []) }
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
    }

    @Test("a localidades request forwards its canonical path and parameters")
    func fromLocalidades() throws {
        let snapshot = try IBGESnapshot.embedded()
        let request = try LocalidadesRequest(path: "estados/SC/municipios", query: [("orderBy", "nome")], siglas: snapshot.siglas)
        let upstream = UpstreamRequest(request)
        #expect(upstream.path == "v1/localidades/estados/42/municipios")
        #expect(upstream.canonicalQuery == "orderBy=nome")
    }

    @Test("Census 2022 population in IBGE's agregados shape")
    func population() throws {
        let snapshot = try IBGESnapshot.embedded()
        let population = try Population2022.embedded()
        let itajai = try #require(population.body(localidades: "N6[4208203]", snapshot: snapshot))
        #expect(
            String(buffer: itajai)
                == #"[{"id":"93","variavel":"População residente","unidade":"Pessoas","resultados":[{"classificacoes":[],"series":[{"localidade":{"id":"4208203","nivel":{"id":"N6","nome":"Município"},"nome":"Itajaí - SC"},"serie":{"2022":"264054"}}]}]}]"#
        )
        let brasil = String(buffer: try #require(population.body(localidades: "N1[all]", snapshot: snapshot)))
        #expect(
            brasil.contains(#""nome":"Brasil"},"serie":{"2022":"203080756"}"#) || brasil.contains(#""nome":"Brasil"},"serie":{"2022":"203080756"}}"#))
        let all = try #require(population.body(localidades: "N6[all]", snapshot: snapshot))
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(all.readableBytesView)) as? [[String: Any]])
        let series = try #require(((parsed.first?["resultados"] as? [[String: Any]])?.first?["series"]) as? [[String: Any]])
        #expect(series.count == 5570, "every município of 2022 (5101837 did not exist)")
        let sc = try #require(population.body(localidades: "N6[N3[42]]|N3[42]", snapshot: snapshot))
        #expect(String(buffer: sc).contains(#""nome":"Santa Catarina"},"serie":{"2022":"7610361"}"#))
        #expect(population.body(localidades: "N7[1]", snapshot: snapshot) == nil)
        #expect(population.body(localidades: "N6[42082]", snapshot: snapshot) == nil)
    }
}
