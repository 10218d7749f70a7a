import ArgumentParser
import Foundation
import IBGE
import IBGECacheServer

#if canImport(Glibc)
    import Glibc
#endif

/// Where a running server is: `--url`, else `http://$HOST:$PORT` as the server reads them
/// (127.0.0.1 and 8080 by default; a wildcard HOST is reached on 127.0.0.1).
struct ServerOptions: ParsableArguments {
    @Option(help: "The running server (default: http://$HOST:$PORT, as the server reads them; 127.0.0.1:8080).")
    var url: String?

    @Option(help: "Seconds one call may take (default: 5; 300 for preload).")
    var timeout: Int?

    var baseURL: String {
        if let url { return url }
        let environment = ProcessInfo.processInfo.environment
        let port = environment["PORT"].flatMap { Int($0) } ?? 8080
        var host = environment["HOST"].map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if host.isEmpty || host == "0.0.0.0" || host == "::" || host == "[::]" { host = "127.0.0.1" }
        if host.contains(":"), !host.hasPrefix("[") { host = "[\(host)]" }
        return "http://\(host):\(port)"
    }

    func timeout(default seconds: Int) -> Duration { .seconds(timeout ?? seconds) }

    func validate() throws {
        if let url, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ValidationError("--url must start with http:// or https://")
        }
        if let timeout, !(1...3600).contains(timeout) { throw ValidationError("--timeout must be from 1 to 3600 seconds") }
    }
}

/// `ibge-cache health`: one line per check, and the exit code probes need.
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask a running server's health; exit 0 healthy, 1 degraded, 2 unhealthy or unreachable.",
        discussion: """
            Degraded means answering from a fallback (Redis down: memory; IBGE down: the snapshot). A probe that \
            restarts or removes an instance on failure should not fail on that (every instance degrades together \
            when Redis goes down, and a restart loses the memory that answers meanwhile): use --degraded-ok, or \
            the /livez and /readyz endpoints.
            """)

    @OptionGroup var server: ServerOptions

    @Flag(help: "Exit 0 when degraded too (for probes that restart or remove an instance).")
    var degradedOK = false

    func run() async throws {
        let client = OperatorClient(baseURL: server.baseURL, timeout: server.timeout(default: 5))
        let health = await client.health()
        print(health.verdict.rawValue)
        for line in health.lines { print("  " + line) }
        let code = degradedOK && health.verdict == .degraded ? 0 : health.verdict.exitCode
        throw ExitCode(code)
    }
}

/// `ibge-cache status`: the status and counters as a table, or the server's JSON.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a running server's status: backend, Redis, keys, L1, hit rate.")

    @OptionGroup var server: ServerOptions

    @Flag(help: "Print the server's status and metrics JSON as one object instead of the table.")
    var json = false

    func run() async throws {
        let client = OperatorClient(baseURL: server.baseURL, timeout: server.timeout(default: 5))
        do {
            if json {
                let (status, metrics) = try await client.statusJSON()
                let data = try JSONSerialization.data(withJSONObject: ["status": status, "metrics": metrics], options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            let rows = try await client.statusRows()
            let width = rows.map(\.0.count).max() ?? 0
            for (name, value) in rows { print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value) }
        } catch let failure as OperatorClient.Failure {
            FileHandle.standardError.write(Data("ibge-cache status: \(server.baseURL): \(failure)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// `ibge-cache preload`: warms a running server, UF by UF with progress, then the rest.
struct PreloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preload",
        abstract: "Warm a running server's cache: every UF (one by one, with progress) and the lists, or one UF.",
        discussion: """
            Exit 0 when every key is cached, 1 when some could not be loaded, 2 when the server refused (a missing \
            token; or 409: a preload is running there already) or could not be reached. Prefer CACHE_ADMIN_TOKEN in \
            the environment to --token, which other users can see in the process list.
            """)

    @OptionGroup var server: ServerOptions

    @Option(help: "One UF (sigla or code); default: all of them.")
    var uf: String?

    @Option(help: "The admin token (default: CACHE_ADMIN_TOKEN).")
    var token: String?

    func run() async throws {
        let client = OperatorClient(
            baseURL: server.baseURL, token: token ?? ProcessInfo.processInfo.environment["CACHE_ADMIN_TOKEN"],
            timeout: server.timeout(default: 300))
        let started = ContinuousClock.now
        var steps: [String?] = []
        if let uf {
            steps = [uf]
        } else {
            steps = (try? IBGESnapshot.embedded().estados.map(\.sigla)) ?? []
            steps.append(nil)  // then everything: the regiões, the lists, and what a UF step missed
        }
        let terminal = isatty(STDOUT_FILENO) == 1
        // Unbuffered, so the progress line shows as it changes.
        func emit(_ text: String) { FileHandle.standardOutput.write(Data(text.utf8)) }
        var total = OperatorClient.Preload(keys: 0, loaded: 0, alreadyCached: 0, failed: 0)
        for (index, step) in steps.enumerated() {
            let result: OperatorClient.Preload
            do {
                result = try await client.preload(step)
            } catch {
                if terminal { emit("\n") }
                FileHandle.standardError.write(Data("ibge-cache preload: \(server.baseURL): \(error)\n".utf8))
                throw ExitCode(2)
            }
            total.loaded += result.loaded
            if step == nil || steps.count == 1 {
                // The last step covers every key of the scope: its counts are the totals.
                total.keys = result.keys
                total.failed = result.failed
            }
            let label = step ?? "lists and regiões"
            let line = "\(index + 1)/\(steps.count) \(label): \(result.keys) keys, \(result.loaded) loaded, \(result.failed) failed"
            if terminal {
                let width = 30
                let done = width * (index + 1) / steps.count
                let bar = String(repeating: "#", count: done) + String(repeating: "-", count: width - done)
                emit("\r[\(bar)] \(line)\u{1B}[K")
            } else {
                emit(line + "\n")
            }
        }
        if terminal { emit("\n") }
        total.alreadyCached = total.keys - total.loaded - total.failed
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        emit(
            "preloaded \(total.keys) keys at \(server.baseURL): \(total.loaded) loaded, \(max(0, total.alreadyCached)) already cached, \(total.failed) failed, in \(String(format: "%.1f", seconds)) s\n"
        )
        if total.failed > 0 { throw ExitCode(1) }
    }
}
