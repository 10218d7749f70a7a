import Foundation
import NIOCore
import IBGETestSupport
import TestSupport
import TieredCache
import Testing

@testable import IBGE

@Suite("Joined ids (a|b|c) answered from per-id cache entries")
struct JoinedRequestTests {
    @Test("the JSON array splitter cuts top-level elements, strings and nesting included")
    func splitter() throws {
        let body = ByteBuffer(string: #"[{"id":1,"nome":"a,b]"},{"id":22,"x":[1,{"y":"}"}],"q":"\"]"} , 3]"#)
        let elements = try #require(JSONArraySplitter.elements(of: body))
        #expect(elements.map { String(buffer: $0) } == [#"{"id":1,"nome":"a,b]"}"#, #"{"id":22,"x":[1,{"y":"}"}],"q":"\"]"}"#, "3"])
        #expect(elements.map(JSONArraySplitter.leadingID) == [1, 22, nil])
        #expect(JSONArraySplitter.elements(of: ByteBuffer(string: "[]")) == [])
        #expect(JSONArraySplitter.elements(of: ByteBuffer(string: #"{"id":1}"#)) == nil)
        #expect(JSONArraySplitter.elements(of: ByteBuffer(string: #"[{"id":1}"#)) == nil, "truncated")
    }

    @Test(
        "joined answers are the same bytes as before, and fill the per-id entries",
        arguments: [
            "municipios/4208203|3550308|9999999", "estados/SC|RR|XX", "mesorregioes/4204|3515", "municipios/4208203|4208203", "regioes/1|9",
        ])
    func embedded(path: String) async throws {
        let snapshot = try IBGESnapshot.embedded()
        let service = IBGEService(cache: TieredCache(l2: nil), snapshot: snapshot, population: try Population2022.embedded(), ttl: .seconds(3600))
        let request = try service.request(path: path, query: [])
        let answer = try await service.body(for: request)
        #expect(answer == (try EmbeddedSource(snapshot: snapshot).body(for: request)))
        let firstID = try #require(request.ids?.first)
        #expect(service.cache.memory.get(LocalidadesRequest(level: request.level, ids: [firstID]).cacheKey) != nil)
    }

    @Test("with an upstream: one request for the missing ids, then single and joined requests reuse the entries")
    func upstream() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        let joined = try await service.body(for: service.request(path: "municipios/4208203|3550308|9999999", query: []))
        let list = try #require(try JSONSerialization.jsonObject(with: Data(joined.readableBytesView)) as? [[String: Any]])
        #expect(list.compactMap { $0["id"] as? Int } == [3_550_308, 4_208_203])
        #expect(fake.totalCalls == 1)
        let single = try await service.body(for: service.request(path: "municipios/4208203", query: []))
        #expect(String(buffer: single).hasPrefix(#"{"id":4208203,"nome":"Itajaí""#))
        #expect(String(buffer: try await service.body(for: service.request(path: "municipios/9999999", query: []))) == "[]")
        _ = try await service.body(for: service.request(path: "municipios/3550308|4208203", query: []))
        #expect(fake.totalCalls == 1, "everything after the first request came from the cache")
        _ = try await service.body(for: service.request(path: "municipios/3550308|1100015", query: []))
        #expect(fake.totalCalls == 2 && fake.calls("/api/v1/localidades/municipios/1100015%7C1100015") == 1, "only the missing id is fetched")
        await service.upstream?.shutdown()
        await fake.stop()
    }
}
