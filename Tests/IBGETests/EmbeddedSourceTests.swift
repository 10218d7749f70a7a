import Foundation
import NIOCore
import Testing

@testable import IBGE

@Suite("Embedded source answers as IBGE does")
struct EmbeddedSourceTests {
    let snapshot: IBGESnapshot
    let source: EmbeddedSource

    init() throws {
        snapshot = try IBGESnapshot.embedded()
        source = EmbeddedSource(snapshot: snapshot)
    }

    func request(_ path: String, _ query: [(String, String)] = []) throws(IBGEError) -> LocalidadesRequest {
        try LocalidadesRequest(path: path, query: query, siglas: snapshot.siglas)
    }

    func body(_ path: String, _ query: [(String, String)] = []) throws -> ByteBuffer {
        try source.body(for: request(path, query))
    }

    func json(_ path: String, _ query: [(String, String)] = []) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(body(path, query).readableBytesView))
    }

    @Test("the three list bodies are byte-identical to the snapshot files")
    func lists() throws {
        #expect(Data(try body("estados").readableBytesView) == (try snapshotFile("estados.json")))
        #expect(Data(try body("regioes").readableBytesView) == (try snapshotFile("regioes.json")))
        #expect(Data(try body("municipios").readableBytesView) == (try snapshotFile("municipios.json")))
    }

    @Test("one município is one object, exactly as it stands in IBGE's list body")
    func singleMunicipio() throws {
        let itajai = String(buffer: try body("municipios/4208203"))
        #expect(itajai.hasPrefix("{\"id\":4208203,\"nome\":\"Itajaí\",\"microrregiao\":{\"id\":42013"))
        let list = String(decoding: try snapshotFile("municipios.json"), as: UTF8.self)
        #expect(list.contains(itajai + ",{\"id\":4208302"))
        let boa = String(buffer: try body("municipios/5101837"))
        #expect(boa.contains("\"microrregiao\":null,\"regiao-imediata\":{\"id\":510008"))
    }

    @Test("UF by code, by sigla and in lower case are the same answer and the same key")
    func ufBySigla() throws {
        let byCode = try request("estados/42")
        let bySigla = try request("estados/SC")
        let lower = try request("estados/sc")
        #expect(byCode.cacheKey == bySigla.cacheKey && bySigla.cacheKey == lower.cacheKey)
        #expect(byCode.cacheKey == "v1:localidades/estados/42")
        let sc = try #require(try json("estados/SC") as? [String: Any])
        #expect(sc["sigla"] as? String == "SC")
        #expect((sc["regiao"] as? [String: Any])?["nome"] as? String == "Sul")
    }

    @Test("municípios of a UF: all of them, only them, by id")
    func municipiosOfUF() throws {
        let list = try #require(try json("estados/SC/municipios") as? [[String: Any]])
        #expect(list.count == 295)
        let ids = list.compactMap { $0["id"] as? Int }
        #expect(ids == ids.sorted())
        #expect(ids.allSatisfy { $0 / 100_000 == 42 })
        let two = try #require(try json("estados/SC|RR/municipios") as? [[String: Any]])
        #expect(two.count == 295 + 15)
    }

    @Test("joined ids give an array in id order, whatever order they were asked in; %7C is |")
    func joinedIDs() throws {
        let a = try request("municipios/4208203|3550308")
        let b = try request("municipios/3550308%7C4208203")
        #expect(a.cacheKey == b.cacheKey)
        let list = try #require(try json("municipios/4208203|3550308") as? [[String: Any]])
        #expect(list.compactMap { $0["id"] as? Int } == [3_550_308, 4_208_203])
        // A joined list naming one id is still an array.
        #expect(try json("municipios/4208203|4208203") is [Any])
        #expect(try request("municipios/4208203|4208203").cacheKey != (try request("municipios/4208203").cacheKey))
    }

    @Test("unknown ids answer [] as IBGE does", arguments: ["municipios/9999999", "estados/99", "estados/XX", "regioes/9", "mesorregioes/9999"])
    func unknown(path: String) throws {
        #expect(String(buffer: try body(path)) == "[]")
    }

    @Test(
        "malformed ids are a bad request naming the problem",
        arguments: [
            ("municipios/abc", "invalid município id 'abc': expected 7 digits"),
            ("municipios/420820", "expected 7 digits"),
            ("municipios/4208203|", "invalid município id ''"),
            ("estados/S1", "expected 2 digits or a UF sigla"),
            ("estados/SCX", "expected 2 digits or a UF sigla"),
            ("regioes/12", "expected 1 digits"),
            ("microrregioes/4201", "expected 5 digits"),
        ])
    func malformed(path: String, message: String) {
        let error = #expect(throws: IBGEError.self) { try request(path) }
        #expect(error?.code == .badRequest)
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
    }

    @Test("paths outside the snapshot are not served", arguments: ["distritos", "municipios/4208203/distritos", "paises", "estados/42/nada", ""])
    func notServed(path: String) {
        let error = #expect(throws: IBGEError.self) { try request(path) }
        #expect(error?.code == .notServed)
    }

    @Test("bad orderBy and view values are rejected, unknown parameters ignored")
    func queryParameters() throws {
        #expect(throws: IBGEError.self) { try request("estados", [("orderBy", "id")]) }
        #expect(throws: IBGEError.self) { try request("estados", [("view", "plano")]) }
        #expect(try request("estados", [("utm_source", "x")]).cacheKey == "v1:localidades/estados")
        #expect(try request("estados", [("view", "nivelado"), ("orderBy", "nome")]).cacheKey == "v1:localidades/estados?orderBy=nome&view=nivelado")
    }

    @Test("orderBy=nome sorts by name without regard to accents or case")
    func orderByName() throws {
        let list = try #require(try json("estados", [("orderBy", "nome")]) as? [[String: Any]])
        let names = list.compactMap { $0["nome"] as? String }
        #expect(names.first == "Acre")
        #expect(names.last == "Tocantins")
        #expect(names.firstIndex(of: "Amapá")! < names.firstIndex(of: "Amazonas")!)
        let municipios = try #require(try json("estados/AL/municipios", [("orderBy", "nome")]) as? [[String: Any]])
        let first = try #require(municipios.first?["nome"] as? String)
        #expect(first == "Água Branca")
    }

    @Test("view=nivelado flattens with IBGE's hyphenated keys, nulls for 5101837's missing branch")
    func nivelado() throws {
        let flat = String(buffer: try body("municipios/4208203", [("view", "nivelado")]))
        #expect(
            flat.hasPrefix(
                "{\"municipio-id\":4208203,\"municipio-nome\":\"Itajaí\",\"microrregiao-id\":42013,\"microrregiao-nome\":\"Itajaí\",\"mesorregiao-id\":4204,"
            ))
        #expect(
            flat.hasSuffix(
                "\"UF-id\":42,\"UF-sigla\":\"SC\",\"UF-nome\":\"Santa Catarina\",\"regiao-id\":4,\"regiao-sigla\":\"S\",\"regiao-nome\":\"Sul\"}"))
        let boa = String(buffer: try body("municipios/5101837", [("view", "nivelado")]))
        #expect(boa.contains("\"microrregiao-id\":null,\"microrregiao-nome\":null,\"mesorregiao-id\":null,\"mesorregiao-nome\":null"))
        let estados = try #require(try json("estados", [("view", "nivelado")]) as? [[String: Any]])
        #expect(estados.count == 27 && estados.first?["UF-sigla"] as? String == "RO")
    }

    @Test("the other levels: lists, by id and children")
    func otherLevels() throws {
        let meso = try #require(try json("mesorregioes/4204") as? [String: Any])
        #expect(meso["nome"] as? String == "Vale do Itajaí")
        #expect(String(buffer: try body("mesorregioes/4204")).hasPrefix("{\"id\":4204,\"nome\":\"Vale do Itajaí\",\"UF\":{\"id\":42,"))
        #expect((try json("mesorregioes") as? [Any])?.count == 137)
        #expect((try json("microrregioes") as? [Any])?.count == 558)
        #expect((try json("regioes-intermediarias") as? [Any])?.count == 133)
        #expect((try json("regioes-imediatas") as? [Any])?.count == 510)
        let sul = try #require(try json("regioes/4/estados") as? [[String: Any]])
        #expect(sul.compactMap { $0["sigla"] as? String } == ["PR", "SC", "RS"])
        let valeMunicipios = try #require(try json("mesorregioes/4204/municipios") as? [[String: Any]])
        #expect(!valeMunicipios.isEmpty && valeMunicipios.contains { $0["id"] as? Int == 4_208_203 })
        let imediata = try #require(try json("regioes-imediatas/510008/municipios") as? [[String: Any]])
        #expect(imediata.contains { $0["id"] as? Int == 5_101_837 }, "5101837 belongs to its região imediata")
        let mt = try #require(try json("estados/MT/mesorregioes/") as? [[String: Any]])
        #expect(mt.count == 5)
        let imediataJSON = String(buffer: try body("regioes-imediatas/420020"))
        #expect(imediataJSON.hasPrefix("{\"id\":420020,\"nome\":\"Itajaí\",\"regiao-intermediaria\":{\"id\":4207,\"nome\":\"Blumenau\",\"UF\":"))
    }

    @Test("too many ids in one request is a bad request, not unbounded work")
    func tooManyIDs() {
        let path = "municipios/" + Array(repeating: "4208203", count: 1001).joined(separator: "|")
        let error = #expect(throws: IBGEError.self) { try request(path) }
        #expect(error?.code == .badRequest)
    }
}
