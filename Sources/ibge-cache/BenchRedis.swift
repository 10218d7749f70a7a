import ArgumentParser
import Foundation
import Logging
import NIOCore
import RESP
import Redis

/// SET then GET against a Redis with N concurrent callers sharing the client, next to
/// `redis-benchmark` with the same parameters.
struct BenchRedis: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "Measure the Redis client: SET then GET with concurrent callers, compared with redis-benchmark.",
        discussion: """
            --clients tasks share one RedisClient (its connections pipeline and batch their commands). \
            Without --json, redis-benchmark (when installed) runs with the same -c, -n, -d, -P and key space, \
            and the ratios are printed.
            """
    )

    @Option(help: "Redis to measure (default: REDIS_URL, else redis://127.0.0.1:6379/0).")
    var redisURL: String?

    @Option(help: "Concurrent callers.")
    var clients = 50

    @Option(help: "Total requests per command (SET, then GET).")
    var requests = 100_000

    @Option(help: "Value size in bytes.")
    var size = 419

    @Option(help: "Commands each caller sends per round trip (explicit pipeline).")
    var pipeline = 1

    @Option(help: "Most connections the client opens.")
    var connections = 4

    @Option(help: "Distinct keys.")
    var keyspace = 100_000

    @Flag(help: "A Redis Cluster: --redis-url names a seed node (redis+cluster:// URLs say so themselves); redis-benchmark runs with --cluster.")
    var cluster = false

    @Flag(help: "Print one JSON line: {\"set_ops_per_s\": …, \"get_ops_per_s\": …}.")
    var json = false

    func validate() throws {
        guard clients > 0, requests > 0, size >= 0, pipeline > 0, connections > 0, keyspace > 0 else {
            throw ValidationError("--clients, --requests, --pipeline, --connections and --keyspace must be positive")
        }
    }

    struct Figures: Codable {
        var set_ops_per_s: Int
        var get_ops_per_s: Int
    }

    func run() async throws {
        let url = redisURL ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        var configuration = try RedisConfiguration(url: url)
        if cluster, configuration.clusterSeeds == nil { configuration.clusterSeeds = [configuration.endpoint] }
        configuration.maximumConnections = connections
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let client = RedisClient(configuration: configuration, logger: logger)
        defer { Task { await client.shutdown() } }
        _ = try await client.ping()
        let value = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)

        // Warm up every connection, then measure.
        _ = try await Self.phase(client: client, clients: clients, requests: min(requests, 5_000), pipeline: pipeline, keyspace: keyspace) { key in
            var command = RESPCommand("SET", key)
            command.append(value)
            return command
        }
        let setRate = try await Self.phase(client: client, clients: clients, requests: requests, pipeline: pipeline, keyspace: keyspace) { key in
            var command = RESPCommand("SET", key)
            command.append(value)
            return command
        }
        let getRate = try await Self.phase(client: client, clients: clients, requests: requests, pipeline: pipeline, keyspace: keyspace) { key in
            RESPCommand("GET", key)
        }
        let ours = Figures(set_ops_per_s: Int(setRate), get_ops_per_s: Int(getRate))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(ours), as: UTF8.self))
            return
        }
        print(
            "ibge-cache bench redis: \(clients) callers, \(requests) requests, \(size)-byte values, pipeline \(pipeline), ≤\(connections) connections"
                + (configuration.clusterSeeds != nil ? " per node, on a Redis Cluster" : "")
        )
        print("")
        print("| | SET ops/s | GET ops/s |")
        print("|---|---:|---:|")
        print("| ibge-cache Redis client | \(ours.set_ops_per_s.formatted()) | \(ours.get_ops_per_s.formatted()) |")
        if let reference = try Self.redisBenchmark(
            configuration: configuration, clients: clients, requests: requests, size: size, pipeline: pipeline, keyspace: keyspace)
        {
            let flags = configuration.clusterSeeds != nil ? " --cluster" : ""
            print("| redis-benchmark -c \(clients) -P \(pipeline)\(flags) | \(Int(reference.set).formatted()) | \(Int(reference.get).formatted()) |")
            print(String(format: "| ratio | %.2f | %.2f |", Double(ours.set_ops_per_s) / reference.set, Double(ours.get_ops_per_s) / reference.get))
        } else {
            print("| redis-benchmark | not installed | |")
        }
    }

    /// Runs `requests` commands from `clients` concurrent tasks; returns commands per second.
    static func phase(
        client: RedisClient, clients: Int, requests: Int, pipeline: Int, keyspace: Int,
        command: @escaping @Sendable (String) -> RESPCommand
    ) async throws -> Double {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<clients {
                let share = requests / clients + (caller < requests % clients ? 1 : 0)
                group.addTask {
                    var sent = 0
                    var n = caller
                    while sent < share {
                        let batch = min(pipeline, share - sent)
                        if batch == 1 {
                            _ = try await client.send(command("key:\(n % keyspace)"))
                            n += clients
                        } else {
                            var commands: [RESPCommand] = []
                            commands.reserveCapacity(batch)
                            for _ in 0..<batch {
                                commands.append(command("key:\(n % keyspace)"))
                                n += clients
                            }
                            _ = try await client.pipeline(commands)
                        }
                        sent += batch
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        let (seconds, attoseconds) = elapsed.components
        return Double(requests) / (Double(seconds) + Double(attoseconds) / 1e18)
    }

    /// `redis-benchmark -t set,get` with the same parameters, if it is installed.
    static func redisBenchmark(
        configuration: RedisConfiguration, clients: Int, requests: Int, size: Int, pipeline: Int, keyspace: Int
    ) throws -> (set: Double, get: Double)? {
        guard let path = ["/usr/bin/redis-benchmark", "/usr/local/bin/redis-benchmark"].first(where: FileManager.default.isExecutableFile)
        else { return nil }
        var arguments = [
            "-t", "set,get", "-n", String(requests), "-c", String(clients), "-d", String(size), "-P", String(pipeline),
            "-r", String(keyspace), "--csv",
        ]
        // A cluster: every master, keys spread over them; else the database chosen.
        arguments += configuration.clusterSeeds != nil ? ["--cluster"] : ["--dbnum", String(configuration.database)]
        switch configuration.endpoint {
        case .tcp(let host, let port): arguments += ["-h", host, "-p", String(port)]
        case .unixSocket(let socket): arguments += ["-s", socket]
        }
        if let user = configuration.username { arguments += ["--user", user] }
        if let password = configuration.password { arguments += ["-a", password, "--no-auth-warning"] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var rates: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count >= 2, let rate = Double(fields[1]) { rates[fields[0]] = rate }
        }
        guard let set = rates["SET"], let get = rates["GET"] else { return nil }
        return (set, get)
    }
}
