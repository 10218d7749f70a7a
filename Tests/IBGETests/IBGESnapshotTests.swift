import Foundation
import NIOCore
import Testing

@testable import IBGE

/// The snapshot files as committed, read from the source tree (not through the module).
func snapshotFile(_ name: String) throws -> Data {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/IBGE/Snapshot/\(name)")
    return try Data(contentsOf: url)
}

@Suite("Embedded IBGE snapshot")
struct IBGESnapshotTests {
    let snapshot: IBGESnapshot

    init() throws {
        snapshot = try IBGESnapshot.embedded()
    }

    @Test("counts match PROVENANCE.md")
    func counts() {
        #expect(snapshot.regioes.count == 5)
        #expect(snapshot.estados.count == 27)
        #expect(snapshot.municipios.count == 5571)
        #expect(snapshot.mesorregioes.count == 137)
        #expect(snapshot.microrregioes.count == 558)
        #expect(snapshot.regioesIntermediarias.count == 133)
        #expect(snapshot.regioesImediatas.count == 510)
        let perUF = Dictionary(grouping: snapshot.municipios, by: \.uf.sigla).mapValues(\.count)
        #expect(perUF["SC"] == 295 && perUF["SP"] == 645 && perUF["MG"] == 853 && perUF["DF"] == 1 && perUF["RR"] == 15)
    }

    @Test("5101837 Boa Esperança do Norte has no microrregião and takes its UF from the região imediata")
    func nullMicrorregiao() throws {
        let boa = try #require(snapshot.municipio(5_101_837))
        #expect(boa.nome == "Boa Esperança do Norte")
        #expect(boa.microrregiao == nil)
        #expect(boa.uf.sigla == "MT")
        #expect(boa.regiaoImediata.id == 510_008)
        #expect(snapshot.municipios.filter { $0.microrregiao == nil }.map(\.id) == [5_101_837])
    }

    @Test("spot checks from PROVENANCE.md")
    func spotChecks() throws {
        let itajai = try #require(snapshot.municipio(4_208_203))
        #expect(itajai.nome == "Itajaí")
        #expect(itajai.microrregiao?.id == 42013 && itajai.microrregiao?.mesorregiao.id == 4204)
        #expect(itajai.regiaoImediata.id == 420_020 && itajai.regiaoImediata.regiaoIntermediaria.id == 4207)
        #expect(snapshot.municipio(3_550_308)?.nome == "São Paulo")
        #expect(snapshot.uf("sc")?.id == 42)
        #expect(snapshot.uf("42")?.sigla == "SC")
    }

    @Test("re-serialising the decoded models gives IBGE's bytes back exactly")
    func byteIdenticalSerialisation() throws {
        for (name, records) in [
            ("municipios.json", snapshot.municipios as [any LocalidadeRecord]),
            ("estados.json", snapshot.estados), ("regioes.json", snapshot.regioes),
        ] {
            var writer = IBGEJSONWriter()
            writer.array(records) { w, r in r.write(to: &w) }
            let expected = try snapshotFile(name)
            #expect(Data(writer.buffer.readableBytesView) == expected, "\(name)")
        }
    }

    @Test("the Codable models round-trip through JSONEncoder too, null microrregião included")
    func codable() throws {
        let boa = try #require(snapshot.municipio(5_101_837))
        let encoded = try JSONEncoder().encode(boa)
        #expect(String(decoding: encoded, as: UTF8.self).contains("\"microrregiao\":null"))
        #expect(try JSONDecoder().decode(Municipio.self, from: encoded) == boa)
    }
}
