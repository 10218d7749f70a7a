import NIOCore
import TieredCache
import Testing

@testable import IBGE

@Suite("Cached IBGE service")
struct IBGEServiceTests {
    func service() throws -> IBGEService {
        let snapshot = try IBGESnapshot.embedded()
        return IBGEService(cache: TieredCache(l2: nil), snapshot: snapshot, population: try Population2022.embedded(), ttl: .seconds(3600))
    }

    @Test("an answer is loaded once and then served from the cache under its canonical key")
    func cached() async throws {
        let service = try service()
        let a = try await service.body(for: service.request(path: "estados/SC", query: []))
        let b = try await service.body(for: service.request(path: "estados/42", query: []))
        #expect(a == b)
        let m = service.cache.metrics()
        #expect(m.loads == 1 && m.hits == 1)
        #expect(service.cache.memory.get("v1:localidades/estados/42") == a)
    }

    @Test("an unknown id's [] is cached for the negative TTL only")
    func negativeCaching() async throws {
        let service = try service()
        let start = service.cache.memory.clock.nowMilliseconds()
        let body = try await service.body(for: service.request(path: "municipios/9999999", query: []))
        #expect(String(buffer: body) == "[]")
        let expiresAt = try #require(service.cache.memory.entry("v1:localidades/municipios/9999999")?.expiresAt)
        #expect(expiresAt <= start + 331_000)
        let known = try #require(
            await {
                _ = try? await service.body(for: service.request(path: "municipios/4208203", query: []))
                return service.cache.memory.entry("v1:localidades/municipios/4208203")?.expiresAt
            }())
        #expect(known >= start + 3_600_000)
    }

    @Test("preload of one UF warms the UF, its list and each of its municípios")
    func preloadUF() async throws {
        let service = try service()
        let result = await service.preload(.uf(42))
        #expect(result.keys == 2 + 295)
        #expect(result.loaded == 297 && result.failed == 0)
        #expect(service.cache.memory.get("v1:localidades/municipios/4208203") != nil)
        #expect(service.cache.memory.get("v1:localidades/municipios/3550308") == nil)
        let again = await service.preload(.uf(42))
        #expect(again.loaded == 0)
    }

    @Test("preload of everything warms every município and estado key")
    func preloadAll() async throws {
        let service = try service()
        let result = await service.preload(.all)
        #expect(result.keys == 3 + 5 + 27 * 2 + 5571)
        #expect(result.failed == 0)
        let missing = service.snapshot.municipios.filter { service.cache.memory.get("v1:localidades/municipios/\($0.id)") == nil }
        #expect(missing.isEmpty)
        let missingUF = service.snapshot.estados.filter { service.cache.memory.get("v1:localidades/estados/\($0.id)") == nil }
        #expect(missingUF.isEmpty)
    }
}
