import Foundation
import IBGETestSupport
import NIOCore
import TestSupport
import Testing

@testable import IBGE

@Suite("Upstream amplification: Retry-After and a cap on concurrent requests")
struct UpstreamAmplificationTests {
    func upstream(
        _ fake: FakeIBGE, concurrency: Int = 16, queue: Int = 256, attempts: Int = 3, circuitFailures: Int = 5,
        circuitOpen: Duration = .seconds(15), clientErrorLifetime: Duration = .seconds(30)
    ) -> HTTPUpstream {
        HTTPUpstream(
            configuration: .init(
                baseURL: fake.baseURL, connectTimeout: .seconds(2), requestTimeout: .seconds(10), maximumAttempts: attempts,
                retryBackoff: .milliseconds(5), maximumConcurrentRequests: concurrency, maximumQueuedRequests: queue,
                circuitFailureThreshold: circuitFailures, circuitOpenDuration: circuitOpen, clientErrorLifetime: clientErrorLifetime))
    }

    @Test("a short negative cache for upstream 4xx: a refused URL is refused again without asking IBGE, until its error expires; IBGE is not marked failing")
    func clientErrorsRemembered() async throws {
        let fake = try await FakeIBGE.start()
        let client = upstream(fake, circuitFailures: 3, clientErrorLifetime: .seconds(1))
        fake.inject(.status(404))
        let missing = try UpstreamRequest(path: "v1/localidades/estados/42", query: [])
        for _ in 0..<20 {
            let error = await #expect(throws: IBGEError.self) { try await client.fetch(missing) }
            #expect(error?.upstreamStatus == 404)
        }
        #expect(fake.calls("/api/v1/localidades/estados/42") == 1, "IBGE asked once for twenty refusals")
        #expect(client.circuitState.isOpen == false, "a 4xx is IBGE answering: the circuit stays closed")
        #expect(client.lastResult?.error == nil, "and health does not call IBGE failing")
        // Another URL is asked on its own.
        let other = try UpstreamRequest(path: "v3/agregados/9998/periodos/2022/variaveis/1", query: [])
        _ = await #expect(throws: IBGEError.self) { try await client.fetch(other) }
        #expect(fake.calls("/api/v3/agregados/9998/periodos/2022/variaveis/1") == 1)
        // Once the error expires, IBGE is asked again (and now answers).
        fake.inject(.none)
        #expect(await eventually { (try? await client.fetch(missing)) != nil })
        #expect(fake.calls("/api/v1/localidades/estados/42") == 2)
        await client.shutdown()
        await fake.stop()
    }

    @Test("a circuit on the upstream: after consecutive failures requests fail fast without reaching IBGE; one probe closes it, a failed probe opens it again")
    func circuitBreaker() async throws {
        let fake = try await FakeIBGE.start()
        let client = upstream(fake, attempts: 1, circuitFailures: 3, circuitOpen: .milliseconds(500))
        let request = try UpstreamRequest(path: "v1/localidades/estados/42", query: [])
        fake.inject(.status(503))
        for _ in 0..<3 { _ = await #expect(throws: IBGEError.self) { try await client.fetch(request) } }
        #expect(fake.totalCalls == 3)
        #expect(client.circuitState == (isOpen: true, openings: 1))
        // Open: twenty requests fail at once, IBGE sees none of them.
        for _ in 0..<20 {
            let error = await #expect(throws: IBGEError.self) { try await client.fetch(request) }
            #expect(error?.message.contains("circuit open") == true, "\(error?.message ?? "")")
        }
        #expect(fake.totalCalls == 3)

        // A probe that fails opens it again: exactly one more request reached IBGE.
        #expect(await eventually { _ = try? await client.fetch(request); return fake.totalCalls == 4 })
        #expect(client.circuitState == (isOpen: true, openings: 2))
        _ = await #expect(throws: IBGEError.self) { try await client.fetch(request) }
        #expect(fake.totalCalls == 4, "open again after the failed probe")

        // IBGE back: the next probe succeeds and closes the circuit; requests go through again.
        fake.inject(.none)
        #expect(await eventually { (try? await client.fetch(request)) != nil })
        #expect(fake.totalCalls == 5, "one probe, no request before it")
        #expect(client.circuitState.isOpen == false)
        _ = try await client.fetch(request)
        #expect(fake.totalCalls == 6)
        await client.shutdown()
        await fake.stop()
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
