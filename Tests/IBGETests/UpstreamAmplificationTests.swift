import Foundation
import IBGETestSupport
import NIOCore
import Testing

@testable import IBGE

@Suite("Upstream amplification: Retry-After and a cap on concurrent requests")
struct UpstreamAmplificationTests {
    func upstream(_ fake: FakeIBGE, concurrency: Int = 16, queue: Int = 256) -> HTTPUpstream {
        HTTPUpstream(
            configuration: .init(
                baseURL: fake.baseURL, connectTimeout: .seconds(2), requestTimeout: .seconds(10), maximumAttempts: 3, retryBackoff: .milliseconds(5),
                maximumConcurrentRequests: concurrency, maximumQueuedRequests: queue))
    }

    @Test("Retry-After is honoured: a 503 asking for 1 s is retried after 1 s, not 5 ms; one asking for 60 s is not retried at all")
    func retryAfter() async throws {
        let fake = try await FakeIBGE.start()
        let client = upstream(fake)
        let request = try UpstreamRequest(path: "v1/localidades/estados/42", query: [])
        fake.inject(.retryAfter(count: 1, status: 503, seconds: 1))
        let start = ContinuousClock.now
        let body = try await client.fetch(request)
        #expect(String(buffer: body).contains("Santa Catarina"))
        #expect(ContinuousClock.now - start >= .milliseconds(950), "waited as asked")
        #expect(fake.calls("/api/v1/localidades/estados/42") == 2)

        fake.inject(.retryAfter(count: 5, status: 429, seconds: 60))
        let error = await #expect(throws: IBGEError.self) { try await client.fetch(request) }
        #expect(error?.upstreamStatus == 429)
        #expect(fake.calls("/api/v1/localidades/estados/42") == 3, "no retry against a 60 s Retry-After")
        await client.shutdown()
        await fake.stop()
    }

    @Test("at most IBGE_MAX_CONCURRENT_LOADS requests reach IBGE at once; past the line's bound a request fails at once")
    func concurrencyCap() async throws {
        let fake = try await FakeIBGE.start()
        fake.inject(.latency(.milliseconds(300)))
        let capped = upstream(fake, concurrency: 4)
        let ids = Array(4_200_000...4_200_040)
        let answered = try await withThrowingTaskGroup(of: Bool.self) { group in
            for id in ids {
                group.addTask { (try? await capped.fetch(UpstreamRequest(path: "v1/localidades/municipios/\(id)|\(id)", query: []))) != nil }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(answered == ids.count)
        #expect(fake.mostConcurrent <= 4 && fake.mostConcurrent >= 2, "at most 4 at once: \(fake.mostConcurrent)")
        await capped.shutdown()

        let short = upstream(fake, concurrency: 2, queue: 3)
        let outcomes = try await withThrowingTaskGroup(of: IBGEError?.self) { group in
            for id in ids.prefix(20) {
                group.addTask {
                    do {
                        _ = try await short.fetch(UpstreamRequest(path: "v1/localidades/municipios/\(id)|\(id)", query: []))
                        return nil
                    } catch let error as IBGEError {
                        return error
                    }
                }
            }
            return try await group.reduce(into: [IBGEError?]()) { $0.append($1) }
        }
        let refused = outcomes.compactMap { $0 }.filter { $0.message.contains("waiting") }
        #expect(outcomes.filter { $0 == nil }.count >= 5, "two running and three in line are answered")
        #expect(refused.count >= 10, "the rest are refused at once: \(refused.count)")
        await short.shutdown()
        await fake.stop()
    }
}
