import Foundation
import Logging
import NIOCore
import IBGETestSupport
import TestSupport
import TieredCache
import Testing

@testable import IBGE

/// A service mirroring a stand-in IBGE, with quick retries.
func mirrorService(_ fake: FakeIBGE, cache: TieredCache = TieredCache(l2: nil)) throws -> IBGEService {
    let upstream = HTTPUpstream(
        configuration: .init(
            baseURL: fake.baseURL, connectTimeout: .seconds(2), requestTimeout: .seconds(5), maximumAttempts: 3, retryBackoff: .milliseconds(5)))
    return IBGEService(
        cache: cache, snapshot: try IBGESnapshot.embedded(), population: try Population2022.embedded(), upstream: upstream, ttl: .seconds(3600),
        logger: quietLogger)
}

/// Tests assert on outcomes; the fallbacks' warnings would only bury the test output.
let quietLogger: Logger = {
    var logger = Logger(label: "ibge-test")
    logger.logLevel = .critical
    return logger
}()

/// Zipf-distributed ranks in 0..<n (exponent s), by inverse transform over the cumulative weights.
struct Zipf {
    let cumulative: [Double]
    init(n: Int, s: Double) {
        var total = 0.0
        cumulative = (1...n).map { rank in
            total += 1 / pow(Double(rank), s)
            return total
        }
    }
    func sample(_ u: Double) -> Int {
        let target = u * (cumulative.last ?? 1)
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < target { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

@Suite("Mirror of a stand-in IBGE")
struct MirrorTests {
    @Test("answers carry the upstream's bytes; raw and percent-encoded queries are one upstream call")
    func upstreamBytes() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        let itajai = try await service.body(for: service.request(path: "municipios/4208203", query: []))
        #expect(String(buffer: itajai).hasPrefix(#"{"id":4208203,"nome":"Itajaí""#))
        #expect(fake.calls("/api/v1/localidades/municipios/4208203") == 1)
        let raw = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N6[4208203]")])
        let body = try await service.mirror(raw)
        #expect(String(buffer: body).contains(#""serie":{"2022":"264054"}"#))
        let encoded = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N6%5B4208203%5D".removingPercentEncoding ?? "")])
        #expect(try await service.mirror(encoded) == body)
        #expect(fake.totalCalls == 2)
        await service.upstream?.shutdown()
        await fake.stop()
    }

    /// What the cache controls is that each distinct key reaches the upstream once; the share
    /// saved then depends only on the traffic (its count of distinct keys), printed here.
    @Test("a Zipf replay of 10,000 requests reaches the upstream once per distinct key", arguments: [1.0, 1.5, 2.0])
    func zipfReplay(exponent: Double) async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        let ids = service.snapshot.municipios.map(\.id)
        let zipf = Zipf(n: ids.count, s: exponent)
        var generator = SeededGenerator(seed: 2022)
        let requests = (0..<10_000).map { _ in ids[zipf.sample(Double.random(in: 0..<1, using: &generator))] }
        let distinct = Set(requests).count
        for batch in stride(from: 0, to: requests.count, by: 100) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in requests[batch..<batch + 100] {
                    group.addTask { _ = try await service.body(for: service.request(path: "municipios/\(id)", query: [])) }
                }
                try await group.waitForAll()
            }
        }
        #expect(fake.totalCalls == distinct, "one upstream call per distinct key")
        let saved = 1 - Double(fake.totalCalls) / Double(requests.count)
        print(
            "Zipf s=\(exponent): \(requests.count) requests, \(distinct) distinct keys, \(fake.totalCalls) upstream calls, \(String(format: "%.2f", saved * 100))% saved"
        )
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("IBGE going down halfway: every localidades request is still answered, from cache or snapshot")
    func outageHalfway() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        let ids = service.snapshot.municipios.map(\.id)
        var answered = 0
        for i in 0..<400 {
            if i == 200 { fake.inject(.outage) }
            let id = ids[(i * 7919) % 300]
            let body = try await service.body(for: service.request(path: "municipios/\(id)", query: []))
            if String(buffer: body).hasPrefix("{\"id\":\(id),") { answered += 1 }
        }
        #expect(answered == 400)
        #expect(service.embeddedFallbacks > 0, "keys first asked during the outage came from the snapshot")
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("HTML error pages and truncated bodies are never cached nor served as data", arguments: [FakeIBGE.Fault.html, .truncated])
    func badBodies(fault: FakeIBGE.Fault) async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        fake.inject(fault)
        let request = try service.request(path: "estados/SC", query: [])
        let answer = try await service.body(for: request)
        #expect(String(buffer: answer) == #"{"id":42,"sigla":"SC","nome":"Santa Catarina","regiao":{"id":4,"sigla":"S","nome":"Sul"}}"#)
        #expect(fake.calls("/api/v1/localidades/estados/42") == 3, "retried, then the snapshot answered")
        #expect(service.cache.memory.get(request.cacheKey) == nil, "the fallback is not cached")
        fake.inject(.none)
        _ = try await service.body(for: request)
        #expect(fake.calls("/api/v1/localidades/estados/42") == 4, "the next request asks IBGE again")
        #expect(service.cache.memory.get(request.cacheKey) != nil)
        // An agregado the embedded data does not cover gets the error, not the bad body.
        fake.inject(fault)
        let other = try UpstreamRequest(path: "v3/agregados/6579/periodos/-1/variaveis/9324", query: [("localidades", "N1[all]")])
        let error = await #expect(throws: IBGEError.self) { try await service.mirror(other) }
        #expect(error?.code == .upstreamFailed)
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("5xx is retried; 4xx is not, and its status reaches the caller")
    func retries() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        fake.inject(.failFirst(2, status: 503))
        let request = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N3[42]")])
        #expect(String(buffer: try await service.mirror(request)).contains("Santa Catarina"))
        #expect(fake.totalCalls == 3)
        fake.inject(.status(400))
        let bad = try UpstreamRequest(path: "v3/agregados/9999/periodos/2022/variaveis/1", query: [])
        let error = await #expect(throws: IBGEError.self) { try await service.mirror(bad) }
        #expect(error?.upstreamStatus == 400)
        #expect(fake.totalCalls == 4, "a 4xx is not retried")
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("preload with an upstream costs IBGE three requests and warms every key")
    func preloadFromLists() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        let result = await service.preload(.all)
        #expect(result.keys == 3 + 5 + 27 * 2 + 5571 && result.failed == 0)
        #expect(fake.totalCalls == 3)
        let itajai = try #require(service.cache.memory.get("v1:localidades/municipios/4208203"))
        #expect(String(buffer: itajai).hasPrefix(#"{"id":4208203,"nome":"Itajaí","microrregiao":{"id":42013"#))
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("preload during an IBGE outage reports the failures and stores nothing of the snapshot as IBGE's answer; what was cached stays counted as cached")
    func preloadDuringOutage() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        // One key cached from IBGE before the outage.
        _ = try await service.body(for: service.request(path: "municipios/4208203", query: []))
        fake.inject(.outage)
        let result = await service.preload(.uf(42))
        #expect(result.keys == 2 + 295)
        #expect(result.loaded == 0, "nothing loaded from the embedded data")
        #expect(result.failed == result.keys - 1, "every key not cached yet is a failure: \(result)")
        #expect(result.alreadyCached == 1)
        #expect(service.cache.memory.statistics.entries == 1, "only the value IBGE gave is cached")
        // IBGE back: the next preload fills them from IBGE.
        fake.inject(.none)
        let again = await service.preload(.uf(42))
        #expect(again.failed == 0 && again.loaded == again.keys - 1)
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("a slow IBGE times out: 504-class error for what nothing else can answer, the snapshot for localidades")
    func slowUpstream() async throws {
        let fake = try await FakeIBGE.start()
        let upstream = HTTPUpstream(
            configuration: .init(baseURL: fake.baseURL, requestTimeout: .milliseconds(200), maximumAttempts: 2, retryBackoff: .milliseconds(5)))
        let service = IBGEService(
            cache: TieredCache(l2: nil), snapshot: try IBGESnapshot.embedded(), population: try Population2022.embedded(), upstream: upstream,
            ttl: .seconds(3600), logger: quietLogger)
        fake.inject(.latency(.seconds(2)))
        let other = try UpstreamRequest(path: "v3/agregados/6579/periodos/-1/variaveis/9324", query: [("localidades", "N1[all]")])
        let error = await #expect(throws: IBGEError.self) { try await service.mirror(other) }
        #expect(error?.code == .upstreamTimeout, "\(error?.message ?? "")")
        #expect(fake.totalCalls >= 1)
        let sc = try await service.body(for: service.request(path: "estados/42", query: []))
        #expect(String(buffer: sc).contains("Santa Catarina"))
        await upstream.shutdown()
        await fake.stop()
    }

    @Test("during an outage: population queries come from embedded data; other agregados get a clear error")
    func agregadosOutage() async throws {
        let fake = try await FakeIBGE.start()
        let service = try mirrorService(fake)
        fake.inject(.outage)
        let population = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N6[3550308]")])
        #expect(String(buffer: try await service.mirror(population)).contains(#""serie":{"2022":"11451999"}"#))
        let other = try UpstreamRequest(path: "v3/agregados/6579/periodos/-1/variaveis/9324", query: [("localidades", "N1[all]")])
        let error = await #expect(throws: IBGEError.self) { try await service.mirror(other) }
        #expect(error?.code == .upstreamFailed)
        #expect(error?.message.contains("cannot reach IBGE") == true, "\(error?.message ?? "")")
        await service.upstream?.shutdown()
        await fake.stop()
    }

    @Test("population and any derived answer computed only on a miss; a level named many times is expanded once, and a selector of too many parts is refused unexpanded")
    func populationOnlyOnMiss() async throws {
        let service = IBGEService(
            cache: TieredCache(l2: nil), snapshot: try IBGESnapshot.embedded(), population: try Population2022.embedded(), ttl: .seconds(3600))
        let query = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N6[N3[42]]")])
        let first = try await service.mirror(query)
        for _ in 0..<50 { #expect(try await service.mirror(query) == first) }
        #expect(service.derivedAnswers == 1, "computed once, for the miss")
        // Another spelling of the same question (repeated codes) is the same key: no computation.
        let repeatedCodes = "N6[N3[" + Array(repeating: "42", count: 900).joined(separator: ",") + "]]"
        #expect(try await service.mirror(try UpstreamRequest(path: Population2022.path, query: [("localidades", repeatedCodes)])) == first)
        #expect(service.derivedAnswers == 1, "one key for every spelling")
        #expect(Population2022.canonicalSelector("N6[4208203,3550308,4208203]|N1[1]|N3[42,35]") == "N1[all]|N3[35,42]|N6[3550308,4208203]")
        #expect(Population2022.canonicalSelector("N6[" + Array(repeating: "4208203", count: 1001).joined(separator: ",") + "]") == nil, "at most 1000 codes")

        let once = try await service.mirror(try UpstreamRequest(path: Population2022.path, query: [("localidades", "N6[all]")]))
        let repeated = Array(repeating: "N6[all]", count: 20).joined(separator: "|")
        let twenty = try await service.mirror(try UpstreamRequest(path: Population2022.path, query: [("localidades", repeated)]))
        #expect(twenty.readableBytes == once.readableBytes, "every município once")
        let hundreds = Array(repeating: "N6[all]", count: 300).joined(separator: "|")
        let computedBefore = service.derivedAnswers
        let error = await #expect(throws: IBGEError.self) {
            try await service.mirror(try UpstreamRequest(path: Population2022.path, query: [("localidades", hundreds)]))
        }
        #expect(error?.code == .notServed)
        #expect(service.derivedAnswers == computedBefore, "refused before anything was computed")
    }

    @Test("the negative TTL is never longer than the configured TTL")
    func negativeTTLWithinTTL() throws {
        let snapshot = try IBGESnapshot.embedded()
        let population = try Population2022.embedded()
        let short = IBGEService(cache: TieredCache(l2: nil), snapshot: snapshot, population: population, ttl: .seconds(60))
        #expect(short.negativeTTL == .seconds(60))
        let agregados = IBGEService(cache: TieredCache(l2: nil), snapshot: snapshot, population: population, ttl: .seconds(3600), agregadosTTL: .seconds(30))
        #expect(agregados.negativeTTL == .seconds(30))
        let long = IBGEService(cache: TieredCache(l2: nil), snapshot: snapshot, population: population, ttl: .seconds(3600))
        #expect(long.negativeTTL == .seconds(300))
    }
}
