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
        // One failure would open the circuit: the 4xx answers must not count as failures.
        let client = upstream(fake, circuitFailures: 1, clientErrorLifetime: .seconds(3))
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

    @Test("a refused connection fails its attempt at once: three attempts against a stopped IBGE take milliseconds, not three connect timeouts")
    func refusedConnection() async throws {
        let fake = try await FakeIBGE.start()
        let baseURL = fake.baseURL
        await fake.stop()
        let client = HTTPUpstream(
            configuration: .init(baseURL: baseURL, connectTimeout: .seconds(2), requestTimeout: .seconds(5), maximumAttempts: 3, retryBackoff: .milliseconds(5)))
        let started = ContinuousClock.now
        let error = await #expect(throws: IBGEError.self) { try await client.fetch(UpstreamRequest(path: "v1/localidades/estados/42", query: [])) }
        #expect(error?.message.contains("connection refused") == true, "\(error?.message ?? "")")
        // The bound is the behaviour: less than one connect timeout (2 s) for all three attempts.
        #expect(ContinuousClock.now - started < .seconds(2), "\(ContinuousClock.now - started)")
        await client.shutdown()
    }

    @Test("a body dripped in slowly ends with the attempt's time, not when the last byte comes")
    func slowBody() async throws {
        let fake = try await FakeIBGE.start()
        let client = HTTPUpstream(
            configuration: .init(baseURL: fake.baseURL, connectTimeout: .seconds(2), requestTimeout: .seconds(1), maximumAttempts: 1))
        fake.inject(.drip(.seconds(2)))  // about 100 bytes: some 14 s in all
        let started = ContinuousClock.now
        let error = await #expect(throws: IBGEError.self) { try await client.fetch(UpstreamRequest(path: "v1/localidades/estados/42", query: [])) }
        #expect(error?.code == .upstreamTimeout, "\(error?.message ?? "")")
        // The bound is the behaviour (the attempt's 1 s), with a wide margin (the whole body: 14 s).
        #expect(ContinuousClock.now - started < .seconds(8))
        await client.shutdown()
        await fake.stop()
    }

    @Test("a circuit on the upstream: after consecutive failures requests fail fast without reaching IBGE; one probe closes it, a failed probe opens it again")
    func circuitBreaker() async throws {
        let fake = try await FakeIBGE.start()
        // Two attempts per fetch; the circuit opens after three failed fetches, for 5 s (what
        // happens while it is open must fit in that time, on a loaded machine too).
        let client = upstream(fake, attempts: 2, circuitFailures: 3, circuitOpen: .seconds(5))
        let request = try UpstreamRequest(path: "v1/localidades/estados/42", query: [])
        fake.inject(.status(503))
        for _ in 0..<3 { _ = await #expect(throws: IBGEError.self) { try await client.fetch(request) } }
        #expect(fake.totalCalls == 6)
        #expect(client.circuitState == (isOpen: true, openings: 1))
        // Open: twenty requests fail at once, IBGE sees none of them.
        for _ in 0..<20 {
            let error = await #expect(throws: IBGEError.self) { try await client.fetch(request) }
            #expect(error?.message.contains("circuit open") == true, "\(error?.message ?? "")")
        }
        #expect(fake.totalCalls == 6)
        // The agregados have a circuit of their own, still closed: an agregados failure (anyone
        // can send a query IBGE fails on) does not stop the localidades, nor the reverse.
        let agregado = try UpstreamRequest(path: Population2022.path, query: [("localidades", "N3[42]")])
        _ = await #expect(throws: IBGEError.self) { try await client.fetch(agregado) }
        #expect(fake.totalCalls == 8, "asked (twice), not failed fast")

        // A probe that fails opens it again: exactly one more request reached IBGE (one attempt).
        #expect(await eventually { _ = try? await client.fetch(request); return fake.totalCalls == 9 })
        #expect(client.circuitState == (isOpen: true, openings: 2))
        _ = await #expect(throws: IBGEError.self) { try await client.fetch(request) }
        #expect(fake.totalCalls == 9, "open again after the failed probe")

        // IBGE back: the next probe succeeds and closes the circuit; requests go through again.
        fake.inject(.none)
        #expect(await eventually { (try? await client.fetch(request)) != nil })
        #expect(fake.totalCalls == 10, "one probe, no request before it")
        #expect(client.circuitState.isOpen == false)
        _ = try await client.fetch(request)
        #expect(fake.totalCalls == 11)
        await client.shutdown()
        await fake.stop()
    }

    @Test("the circuit counts outcomes against the state they were admitted in: a late failure neither reopens nor re-counts; one probe at a time")
    func circuitGenerations() {
        let circuit = UpstreamCircuit(threshold: 2, openDuration: .seconds(10))
        let start = ContinuousClock.now
        guard case .closed(let g0) = circuit.admit(now: start), case .closed = circuit.admit(now: start) else {
            Issue.record("a new circuit is closed")
            return
        }
        #expect(!circuit.failed(probe: false, generation: g0, now: start))
        #expect(circuit.failed(probe: false, generation: g0, now: start), "the second failure in a row opens it")
        // A request admitted before the opening fails late: nothing changes.
        #expect(!circuit.failed(probe: false, generation: g0, now: start))
        #expect(circuit.snapshot.openings == 1)
        guard case .open = circuit.admit(now: start + .seconds(5)) else {
            Issue.record("open for 10 s")
            return
        }
        // After 10 s: one probe, the others still fail fast while it runs.
        guard case .probe(let g1) = circuit.admit(now: start + .seconds(11)) else {
            Issue.record("the first request after 10 s is the probe")
            return
        }
        guard case .open(let remaining, _) = circuit.admit(now: start + .seconds(11)), remaining == .zero else {
            Issue.record("one probe at a time")
            return
        }
        circuit.succeeded(probe: true, generation: g1)
        #expect(circuit.snapshot.isOpen == false)
        // Late failures of earlier generations do not count against the closed circuit.
        #expect(!circuit.failed(probe: false, generation: g0, now: start + .seconds(12)))
        #expect(!circuit.failed(probe: false, generation: g1, now: start + .seconds(12)))
        #expect(circuit.snapshot.consecutiveFailures == 0)
        guard case .closed = circuit.admit(now: start + .seconds(12)) else {
            Issue.record("closed after the probe")
            return
        }
        // A cancelled probe lets another probe.
        let other = UpstreamCircuit(threshold: 1, openDuration: .seconds(1))
        guard case .closed(let h0) = other.admit(now: start) else { return }
        other.failed(probe: false, generation: h0, now: start)
        guard case .probe(let h1) = other.admit(now: start + .seconds(2)) else {
            Issue.record("probe")
            return
        }
        other.abandoned(probe: true, generation: h1)
        guard case .probe = other.admit(now: start + .seconds(2)) else {
            Issue.record("another probe after the first was abandoned")
            return
        }
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
