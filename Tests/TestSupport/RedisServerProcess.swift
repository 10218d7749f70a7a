import Foundation
import Logging
import NIOCore
import NIOPosix
import RESP
public import Redis
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A real `redis-server` process for tests: started on a free loopback port (and a unix
/// socket), stopped when the test is done, and killable and restartable on the same port for
/// fault tests.
public final class RedisServerProcess: Sendable {
    /// The TCP port the server listens on (127.0.0.1 only).
    public let port: Int
    /// The unix socket the server also listens on.
    public let socketPath: String
    private let arguments: [String]
    private let directory: String
    private let process = Mutex<Process?>(nil)

    /// `redis://127.0.0.1:<port>`
    public var url: String { "redis://127.0.0.1:\(port)" }

    /// A client configuration for this server.
    public func configuration(database: Int = 0) -> RedisConfiguration {
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port))
        configuration.database = database
        configuration.connectTimeout = .seconds(2)
        configuration.commandTimeout = .seconds(2)
        if let index = arguments.firstIndex(of: "--requirepass"), index + 1 < arguments.count { configuration.password = arguments[index + 1] }
        return configuration
    }

    private init(port: Int, extraArguments: [String]) {
        self.port = port
        self.directory = NSTemporaryDirectory() + "ibge-cache-redis-\(port)-\(UUID().uuidString.prefix(8))"
        self.socketPath = directory + "/redis.sock"
        self.arguments =
            [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
                "--unixsocket", directory + "/redis.sock", "--unixsocketperm", "700",
            ] + extraArguments
    }

    /// Starts a server on a free port with extra `redis-server` arguments
    /// (e.g. `["--requirepass", "secret"]`), and waits until it answers.
    public static func start(_ extraArguments: [String] = []) async throws -> RedisServerProcess {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let server = RedisServerProcess(port: try freePort(), extraArguments: extraArguments)
            do {
                try FileManager.default.createDirectory(atPath: server.directory, withIntermediateDirectories: true)
                try await server.launch()
                return server
            } catch {
                server.stop()
                lastError = error
            }
        }
        throw lastError ?? RedisFixtureError(message: "could not start redis-server")
    }

    /// Runs `body` with a fresh server and stops the server afterwards.
    public static func with<T>(_ extraArguments: [String] = [], _ body: (RedisServerProcess) async throws -> T) async throws -> T {
        let server = try await start(extraArguments)
        defer { server.stop() }
        return try await body(server)
    }

    private func launch() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.redisServerPath())
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process.withLock { $0 = process }
        try await waitUntilReady(process)
    }

    private func waitUntilReady(_ process: Process) async throws {
        var config = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port))
        config.connectTimeout = .milliseconds(500)
        if let index = arguments.firstIndex(of: "--requirepass"), index + 1 < arguments.count { config.password = arguments[index + 1] }
        let logger = Logger(label: "redis-fixture")
        for _ in 0..<500 {
            guard process.isRunning else { throw RedisFixtureError(message: "redis-server exited with \(process.terminationStatus)") }
            if let connection = try? await RedisConnection.connect(
                configuration: config, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
            {
                // Ours, not another test's server that took the port first (ours then failed to bind).
                let info = try? await connection.send(RESPCommand("INFO", "server")).string
                await connection.close()
                guard let info, info.contains("process_id:\(process.processIdentifier)\r\n") else {
                    throw RedisFixtureError(message: "port \(port) answered for another redis-server")
                }
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RedisFixtureError(message: "redis-server on port \(port) did not answer within 10 s")
    }

    /// Kills the server process with SIGKILL, as a crash would, and waits until it is gone.
    public func kill() {
        let process = self.process.withLock { process -> Process? in
            defer { process = nil }
            return process
        }
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Starts the server again on the same port (after ``kill()``), with an empty dataset.
    public func restart() async throws {
        kill()
        var lastError: (any Error)?
        for _ in 0..<50 {
            do {
                try await launch()
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError ?? RedisFixtureError(message: "restart failed")
    }

    /// Stops the server and removes its directory.
    public func stop() {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit {
        stop()
    }

    /// A free TCP port on 127.0.0.1, found by binding port 0.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisFixtureError(message: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw RedisFixtureError(message: "bind() failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw RedisFixtureError(message: "getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func redisServerPath() throws -> String {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw RedisFixtureError(message: "redis-server not found: run scripts/test, which installs it")
    }
}

/// A failure of the test fixture itself.
public struct RedisFixtureError: Error, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    public var description: String { message }

    /// Creates an error.
    public init(message: String) {
        self.message = message
    }
}

/// Runs `body` with a client of `configuration`, then shuts the client down (awaited, also
/// when `body` throws).
public func withRedisClient<T>(_ configuration: RedisConfiguration, _ body: (RedisClient) async throws -> T) async throws -> T {
    let client = RedisClient(configuration: configuration)
    do {
        let result = try await body(client)
        await client.shutdown()
        return result
    } catch {
        await client.shutdown()
        throw error
    }
}
