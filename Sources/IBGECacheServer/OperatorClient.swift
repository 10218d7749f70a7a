public import AsyncHTTPClient
import Foundation
import Utilities
import NIOCore
import NIOHTTP1

/// The operator's side of the admin API: what `ibge-cache health`, `status` and `preload` ask a
/// running server, over HTTP, with a timeout. Container and systemd probes need an exit code;
/// operators need a readable answer.
public struct OperatorClient: Sendable {
    /// The server, such as `http://127.0.0.1:8080` (no trailing slash).
    public let baseURL: String
    /// `CACHE_ADMIN_TOKEN`, sent as a bearer token to the calls that change state.
    public let token: String?
    /// How long one call may take.
    public let timeout: Duration
    private let client: HTTPClient

    /// No redirects followed (an admin answer is never a redirect), no decompression; never shut
    /// down (it lives as long as the process).
    public static let defaultClient = HTTPClient(
        eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow, decompression: .disabled))

    /// Creates a client of the server at `baseURL`.
    public init(baseURL: String, token: String? = nil, timeout: Duration = .seconds(5), client: HTTPClient = OperatorClient.defaultClient) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.timeout = timeout
        self.client = client
    }

    /// A failure to get an answer: the server unreachable, too slow, or answering something that
    /// is not its JSON.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        /// What went wrong, for the operator.
        public var message: String
        public var description: String { message }
    }

    // MARK: - Health

    /// What `/api/ibge/cache/health` says, reduced to a verdict and one line per check.
    public struct Health: Sendable, Equatable {
        /// The verdict, and the exit code a probe gets for it.
        public enum Verdict: String, Sendable {
            case healthy, degraded, unhealthy, unreachable

            /// 0 healthy, 1 degraded, 2 unhealthy or unreachable.
            public var exitCode: Int32 {
                switch self {
                case .healthy: 0
                case .degraded: 1
                case .unhealthy, .unreachable: 2
                }
            }
        }

        /// The verdict.
        public var verdict: Verdict
        /// `redis: up (0.21 ms)`, `source: down (IBGE API … failed …)`, or why it is unreachable.
        public var lines: [String]
    }

    /// Asks the server's health; never throws (an unreachable server is a verdict).
    public func health() async -> Health {
        let body: [String: Any]
        do {
            body = try await json(.GET, "/api/ibge/cache/health", acceptingStatus: [200, 503])
        } catch {
            return Health(verdict: .unreachable, lines: ["\(baseURL): \(error)"])
        }
        guard let status = body["status"] as? String, let verdict = Health.Verdict(rawValue: status), verdict != .unreachable else {
            return Health(verdict: .unreachable, lines: ["\(baseURL): the answer has no health status"])
        }
        var lines: [String] = []
        let checks = body["checks"] as? [String: Any] ?? [:]
        for name in ["redis", "l1", "source"] {
            guard let check = checks[name] as? [String: Any] else { continue }
            var line = "\(name): \(check["status"] as? String ?? "?")"
            var notes: [String] = []
            if let latency = check["latency_ms"] as? Double { notes.append(String(format: "%.2f ms", latency)) }
            if let detail = check["detail"] as? String { notes.append(detail) }
            if !notes.isEmpty { line += " (" + notes.joined(separator: "; ") + ")" }
            lines.append(line)
        }
        return Health(verdict: verdict, lines: lines)
    }

    // MARK: - Status

    /// `/api/ibge/cache/status` and `/api/ibge/cache/metrics`, as the server wrote them.
    public func statusJSON() async throws(Failure) -> (status: [String: Any], metrics: [String: Any]) {
        let status = try await json(.GET, "/api/ibge/cache/status")
        let metrics = try await json(.GET, "/api/ibge/cache/metrics")
        return (status["status"] as? [String: Any] ?? [:], metrics["metrics"] as? [String: Any] ?? [:])
    }

    /// The status as rows of a two-column table (name, value), for a terminal.
    public func statusRows() async throws(Failure) -> [(String, String)] {
        let (status, metrics) = try await statusJSON()
        func text(_ value: Any?) -> String { value.map { "\($0)" } ?? "-" }
        let keys = status["keys"] as? [String: Any]
        let l1 = status["l1"] as? [String: Any]
        let memory = status["redis_memory"] as? [String: Any]
        var rows: [(String, String)] = [
            ("backend", text(status["backend"])),
            ("redis", "\(text(status["redis_url"])), connected: \((status["redis_connected"] as? Bool) == true ? "yes" : "no")"),
        ]
        if let error = status["redis_error"] as? String { rows.append(("redis error", error)) }
        if let keys { rows.append(("keys in redis", "\(text(keys["count"]))\((keys["complete"] as? Bool) == false ? "+" : "")")) }
        if let memory {
            rows.append(("redis memory", "\(text(memory["used_bytes"])) bytes used, max \(text(memory["max_bytes"])), \(text(memory["policy"]))"))
        }
        if let l1 {
            rows.append(("l1", "\(text(l1["entries"]))/\(text(l1["max_entries"])) entries, \(text(l1["bytes"]))/\(text(l1["max_bytes"])) bytes"))
        }
        rows += [
            ("source", text(status["source"])),
            ("requests", text(metrics["total_requests"])),
            ("hit rate", "\(text(metrics["hit_rate_percent"]))%"),
            ("stale served", text(metrics["stale_served"])),
            ("uptime", "\(text(status["uptime_seconds"])) s"),
        ]
        return rows
    }

    // MARK: - Preload

    /// What one `POST /api/ibge/cache/preload` did.
    public struct Preload: Sendable, Equatable {
        /// Keys in its scope.
        public var keys: Int
        /// Keys it loaded.
        public var loaded: Int
        /// Keys that were cached already.
        public var alreadyCached: Int
        /// Keys it could not load.
        public var failed: Int

        /// Creates counts.
        public init(keys: Int, loaded: Int, alreadyCached: Int, failed: Int) {
            self.keys = keys
            self.loaded = loaded
            self.alreadyCached = alreadyCached
            self.failed = failed
        }
    }

    /// Warms `scope` (a UF's sigla or code; nil: everything) on the server.
    public func preload(_ scope: String?) async throws(Failure) -> Preload {
        var path = "/api/ibge/cache/preload"
        if let scope {
            path += "?uf=" + (scope.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? scope)
        }
        let body = try await json(.POST, path)
        guard let counts = body["preloaded"] as? [String: Any], let keys = counts["keys"] as? Int, let loaded = counts["loaded"] as? Int,
            let cached = counts["already_cached"] as? Int, let failed = counts["failed"] as? Int
        else { throw Failure(message: "the preload answer has no counts") }
        return Preload(keys: keys, loaded: loaded, alreadyCached: cached, failed: failed)
    }

    // MARK: - HTTP

    /// The JSON object a call answers, within ``timeout`` for the whole call (the body included).
    private func json(_ method: HTTPMethod, _ path: String, acceptingStatus accepted: Set<UInt> = [200]) async throws(Failure) -> [String: Any] {
        let outcome = try? await withTimeLimit(timeout) { await self.call(method, path, acceptingStatus: accepted) }
        guard let outcome else { throw Failure(message: "cannot reach it: no answer in time") }
        return try outcome.get().value
    }

    /// An answer's JSON object, boxed to cross a task boundary (the object is not Sendable; it is
    /// only read once it has crossed).
    private struct Answer: @unchecked Sendable {
        var value: [String: Any]
    }

    private func call(_ method: HTTPMethod, _ path: String, acceptingStatus accepted: Set<UInt>) async -> Result<Answer, Failure> {
        do throws(Failure) {
            return .success(Answer(value: try await request(method, path, acceptingStatus: accepted)))
        } catch {
            return .failure(error)
        }
    }

    private func request(_ method: HTTPMethod, _ path: String, acceptingStatus accepted: Set<UInt>) async throws(Failure) -> [String: Any] {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "ibge-cache-cli")
        if method != .GET, let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let status: UInt
        let body: ByteBuffer
        do {
            let response = try await client.execute(request, timeout: TimeAmount(timeout))
            status = response.status.code
            body = try await response.body.collect(upTo: 4 * 1024 * 1024)
        } catch {
            throw Failure(message: "cannot reach it: \(Self.describe(error))")
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any]
        guard accepted.contains(status) else {
            let reason = object?["error"] as? String ?? String(buffer: body.getSlice(at: body.readerIndex, length: min(200, body.readableBytes)) ?? body)
            throw Failure(message: "\(method) \(path) answered \(status): \(reason)")
        }
        guard let object else { throw Failure(message: "\(method) \(path) answered \(status) without JSON") }
        return object
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return "no answer in time"
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
        return "\(error)"
    }
}
