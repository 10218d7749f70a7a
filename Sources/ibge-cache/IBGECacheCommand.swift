import ArgumentParser
import Foundation
import Hummingbird
import IBGECacheServer
import Logging

struct IBGECacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ibge-cache",
        abstract: "A caching mirror of the IBGE localidades API, on a two-tier cache (memory + Redis).",
        discussion: """
            Configuration comes from the environment: REDIS_URL, IBGE_CACHE_TTL, ENABLE_REAL_APIS, IBGE_API_BASE_URL, \
            HOST, PORT, CACHE_ADMIN_TOKEN, IBGE_CACHE_PREFIX, IBGE_CACHE_GRACE, IBGE_CACHE_L1_MAX_ENTRIES, \
            IBGE_CACHE_L1_MAX_MB, LOG_LEVEL (see README.md).
            """,
        subcommands: [Serve.self, HealthCommand.self, StatusCommand.self, PreloadCommand.self, Bench.self, SnapshotCommand.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HTTP server until SIGINT or SIGTERM.")

    @Option(help: "Address to listen on (overrides HOST).")
    var host: String?

    @Option(help: "Port to listen on (overrides PORT).")
    var port: Int?

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw ValidationError("--port must be from 0 to 65535") }
    }

    func run() async throws {
        var configuration: ServerConfiguration
        do {
            configuration = try ServerConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            FileHandle.standardError.write(Data("ibge-cache: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        // A closed standard output or error (a log reader gone) fails the write instead of
        // killing the server: log lines are lost, answers are not. (The other commands keep the
        // default: `ibge-cache status | head -1` ends quietly.)
        signal(SIGPIPE, SIG_IGN)
        let level = configuration.logLevel
        switch configuration.logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "ibge-cache")
        let app = try await buildApplication(configuration: configuration, logger: logger)
        try await app.runService()
    }
}

/// Runs the command line (after main.swift has set up the executor).
enum EntryPoint {
    static func run() async {
        await IBGECacheCommand.main()
    }
}
