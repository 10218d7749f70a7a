import Foundation
import Hummingbird
import IBGE
import TestSupport
import Logging
import NIOCore
import Synchronization

/// A stand-in for the IBGE API on 127.0.0.1: serves the embedded snapshot at IBGE's
/// localidades paths and Census 2022 population at the agregados path, counts the calls it
/// gets, and injects faults on demand.
public final class FakeIBGE: Sendable {
    /// What the next requests get.
    public enum Fault: Sendable, Equatable {
        /// Normal answers.
        case none
        /// This status with a JSON error body, for every request.
        case status(Int)
        /// This status for the next `count` requests, then normal answers.
        case failFirst(Int, status: Int)
        /// A 200 with an HTML error page (`text/html`), as a proxy or a CDN might send.
        case html
        /// A 200 with JSON content type and a body cut in the middle.
        case truncated
        /// The connection is closed without an answer.
        case reset
        /// Every request is dropped (connections reset): IBGE is down.
        case outage
        /// Normal answers, after this delay.
        case latency(Duration)
        /// This status with `Retry-After: seconds`, for the first `count` requests; then normal.
        case retryAfter(count: Int, status: Int, seconds: Int)
        /// The head at once, then the body 16 bytes at a time, one piece every `interval`.
        case drip(Duration)
    }

    /// The port it listens on.
    public let port: Int
    /// `http://127.0.0.1:<port>/api`, for `IBGE_API_BASE_URL`.
    public var baseURL: String { "http://127.0.0.1:\(port)/api" }
    private let state: Mutex<State>
    private let task: Task<Void, any Error>

    struct State {
        var fault: Fault = .none
        var calls: [String: Int] = [:]
        var total = 0
        var overrides: [String: String] = [:]
        var running = 0
        var mostRunning = 0
    }

    /// The most requests it was answering at once.
    public var mostConcurrent: Int { state.withLock { $0.mostRunning } }

    fileprivate func started() {
        state.withLock { state in
            state.running += 1
            state.mostRunning = max(state.mostRunning, state.running)
        }
    }

    fileprivate func finished() { state.withLock { $0.running -= 1 } }

    /// Answers `target` (path and raw query) with `body` from now on, as IBGE does when its data changes.
    public func override(_ target: String, body: String) {
        state.withLock { $0.overrides[target] = body }
    }

    fileprivate func overridden(_ target: String) -> String? { state.withLock { $0.overrides[target] } }

    /// Sets the fault for the following requests.
    public func inject(_ fault: Fault) {
        state.withLock { $0.fault = fault }
    }

    /// Requests received (faulty or not).
    public var totalCalls: Int { state.withLock { $0.total } }

    /// Requests received for one path and raw query (`/api/v1/localidades/estados?orderBy=nome`).
    public func calls(_ target: String) -> Int { state.withLock { $0.calls[target] ?? 0 } }

    /// Distinct paths and queries requested.
    public var distinctTargets: Int { state.withLock { $0.calls.count } }

    private init(port: Int, task: Task<Void, any Error>) {
        self.port = port
        self.state = Mutex(State())
        self.task = task
    }

    /// Starts a stand-in on a free port.
    public static func start() async throws -> FakeIBGE {
        let snapshot = try IBGESnapshot.embedded()
        let population = try Population2022.embedded()
        let shared = SharedState()
        let router = Router(context: FakeContext.self)
        router.get("/api/**") { request, context in
            try await shared.answer(request, context: context, snapshot: snapshot, population: population)
        }
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "fake-ibge")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "fake-ibge"),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            }, logger: logger)
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var port = 0
        for await value in portStream { port = value }
        guard port > 0 else { throw RedisFixtureError(message: "the stand-in IBGE did not start") }
        let fake = FakeIBGE(port: port, task: task)
        shared.owner.withLock { $0 = fake }
        return fake
    }

    /// Stops the server.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }

    fileprivate func record(_ target: String) -> Fault {
        state.withLock { state in
            state.total += 1
            state.calls[target, default: 0] += 1
            let fault = state.fault
            if case .failFirst(let count, let status) = fault {
                state.fault = count > 1 ? .failFirst(count - 1, status: status) : .none
            }
            if case .retryAfter(let count, let status, let seconds) = fault {
                state.fault = count > 1 ? .retryAfter(count: count - 1, status: status, seconds: seconds) : .none
            }
            return fault
        }
    }
}

/// The handler's way to its `FakeIBGE` (set once the server is up).
private final class SharedState: Sendable {
    let owner = Mutex<FakeIBGE?>(nil)

    func answer(_ request: Request, context: FakeContext, snapshot: IBGESnapshot, population: Population2022) async throws -> Response {
        let target = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let owner = self.owner.withLock { $0 }
        let fault = owner?.record(target) ?? .none
        owner?.started()
        defer { owner?.finished() }
        switch fault {
        case .retryAfter(_, let status, let seconds):
            var response = Self.json("{\"message\":\"erro \(status)\"}", status: .init(code: status))
            response.headers[.retryAfter] = String(seconds)
            return response
        case .status(let code), .failFirst(_, let code):
            return Self.json("{\"message\":\"erro \(code)\"}", status: .init(code: code))
        case .html:
            return Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: "<html><body><h1>502 Bad Gateway</h1></body></html>")))
        case .reset, .outage:
            try await context.channel.close()
            throw HTTPError(.serviceUnavailable)
        case .latency(let delay):
            try await Task.sleep(for: delay)
        case .truncated, .none, .drip:
            break
        }
        if let text = owner?.overridden(target) {
            return Response(status: .ok, headers: [.contentType: "application/json;charset=UTF-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        guard var body = Self.body(request, snapshot: snapshot, population: population) else {
            return Self.json("{\"message\":\"not found\"}", status: .notFound)
        }
        if fault == .truncated { body = body.getSlice(at: body.readerIndex, length: body.readableBytes / 2) ?? ByteBuffer() }
        if case .drip(let interval) = fault {
            let whole = body
            return Response(
                status: .ok, headers: [.contentType: "application/json;charset=UTF-8"],
                body: ResponseBody { writer in
                    var rest = whole
                    while let piece = rest.readSlice(length: min(16, rest.readableBytes)), piece.readableBytes > 0 {
                        try await writer.write(piece)
                        try await Task.sleep(for: interval)
                    }
                    try await writer.finish(nil)
                })
        }
        return Response(status: .ok, headers: [.contentType: "application/json;charset=UTF-8"], body: .init(byteBuffer: body))
    }

    static func body(_ request: Request, snapshot: IBGESnapshot, population: Population2022) -> ByteBuffer? {
        let path = request.uri.path
        let query = request.uri.queryParameters.map { (String($0.key), String($0.value)) }
        if path.hasPrefix("/api/v1/localidades/") {
            guard
                let parsed = try? LocalidadesRequest(
                    path: String(path.dropFirst("/api/v1/localidades/".count)), query: query, siglas: snapshot.siglas)
            else { return nil }
            return try? EmbeddedSource(snapshot: snapshot).body(for: parsed)
        }
        if path == "/api/" + Population2022.path, let selector = request.uri.queryParameters["localidades"] {
            return population.body(localidades: String(selector), snapshot: snapshot)
        }
        return nil
    }

    static func json(_ text: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// A request context that can reach the connection (to reset it).
struct FakeContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
