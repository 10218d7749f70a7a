import ArgumentParser
import Foundation
import IBGE
import Logging
import NIOCore
import Redis
import Synchronization
import TieredCache
import TieredCacheRedis

/// `ibge-cache bench [cache|redis]`.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: the cache (default) and the Redis client.",
        subcommands: [BenchCache.self, BenchRedis.self, BenchEviction.self, BenchHTTPBaseline.self],
        defaultSubcommand: BenchCache.self
    )
}

/// The original service's benchmark, through this cache's own public API.
struct BenchCache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Measure write and read rates through the cache's public get/set, single-threaded.",
        discussion: """
            Writes then reads a ~500-byte município value (Itajaí's IBGE JSON) over --keys keys, first in the \
            in-process tier (the fallback mode: no Redis), then, when Redis answers at --redis-url, through the \
            Redis tier (an L1 of one entry, so every read goes to Redis). Prints the original's table and the \
            ratios to the Python baselines, or one JSON line with --json.
            """
    )

    @Option(help: "Distinct keys.")
    var keys = 10_000

    @Option(help: "Passes over the keys for the in-process tier (operations = keys × rounds).")
    var rounds = 200

    @Option(help: "Passes over the keys for the Redis tier.")
    var redisRounds = 1

    @Option(help: "Redis to measure (default: REDIS_URL, else redis://127.0.0.1:6379/0); 'none' skips it.")
    var redisURL: String?

    @Flag(help: "Print one JSON line instead of the table.")
    var json = false

    func validate() throws {
        guard keys > 0, rounds > 0, redisRounds > 0 else { throw ValidationError("--keys, --rounds and --redis-rounds must be positive") }
    }

    struct Figures: Codable {
        var write_ops_per_s: Int
        var read_ops_per_s: Int
        var hit_rate_percent: Double
    }

    struct Output: Codable {
        var local: Figures
        var redis: Figures?
    }

    func run() async throws {
        let value = try Self.sampleValue()
        let keyList = (0..<keys).map { "bench:v1:localidades/municipios/\(1_000_000 + $0)" }

        let local = await Self.measure(cache: TieredCache(l2: nil), keys: keyList, value: value, rounds: rounds)
        let dictionary = Self.measureDictionary(keys: keyList, value: value, rounds: rounds)

        var redisFigures: Figures?
        let url = redisURL ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        var redisNote = "skipped (--redis-url none)"
        if url.lowercased() != "none" {
            var configuration = try RedisConfiguration(url: url)
            configuration.connectTimeout = .milliseconds(500)
            let client = RedisClient(configuration: configuration, logger: Logger(label: "bench"))
            if (try? await client.ping()) != nil {
                let cache = TieredCache(
                    configuration: .init(memory: .init(maximumEntries: 1, maximumBytes: 1 << 20, shardCount: 1)),
                    l2: RedisStore(client: client, configuration: .init(keyPrefix: "ibge-bench:")), logger: Self.quietLogger)
                // The cache starts "not connected" until its watch loop sees Redis answer.
                let watch = Task { try await cache.run() }
                while !cache.isRedisConnected { try await Task.sleep(for: .milliseconds(10)) }
                redisFigures = await Self.measure(cache: cache, keys: keyList, value: value, rounds: redisRounds)
                _ = await cache.clear()
                watch.cancel()
                redisNote = RedisConfiguration.redacted(url)
            } else {
                redisNote = "not reachable at \(RedisConfiguration.redacted(url))"
            }
            await client.shutdown()
        }

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(Output(local: local, redis: redisFigures)), as: UTF8.self))
            return
        }
        print("ibge-cache bench: \(keys) keys, value \(value.readableBytes) bytes, single-threaded, through TieredCache.get/set")
        print("")
        print("| tier | writes/s | reads/s | hit rate | writes vs Python design | reads vs Python design | writes vs original | reads vs original |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print(Self.row("in-process (fallback)", local))
        print(Self.row("baseline: Swift Dictionary + Mutex", dictionary))
        if let redisFigures {
            print(Self.row("Redis (\(redisNote))", redisFigures, ratios: false))
        } else {
            print("| Redis | \(redisNote) | | | | | | |")
        }
        print("")
        print(
            String(
                format: "TieredCache vs Dictionary + Mutex: writes %.2f×, reads %.2f×",
                Double(local.write_ops_per_s) / Double(dictionary.write_ops_per_s), Double(local.read_ops_per_s) / Double(dictionary.read_ops_per_s)))
        print(
            "Baselines: the Python design as measured for issue #2 on this machine: \(Self.pythonWrites) writes/s, \(Self.pythonReads) reads/s (Benchmarks/python_baseline.py re-measures it);"
        )
        print("the original service reported \(Self.originalWrites) writes/s and \(Self.originalReads) reads/s.")
    }

    static var quietLogger: Logger {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        return logger
    }

    static let pythonWrites = 1_700_000
    static let pythonReads = 1_500_000
    static let originalWrites = 871_997
    static let originalReads = 1_194_958

    static func row(_ name: String, _ f: Figures, ratios: Bool = true) -> String {
        func ratio(_ a: Int, _ b: Int) -> String { ratios ? String(format: "%.1f×", Double(a) / Double(b)) : "—" }
        return "| \(name) | \(f.write_ops_per_s.formatted()) | \(f.read_ops_per_s.formatted()) | \(f.hit_rate_percent)% | "
            + "\(ratio(f.write_ops_per_s, pythonWrites)) | \(ratio(f.read_ops_per_s, pythonReads)) | "
            + "\(ratio(f.write_ops_per_s, originalWrites)) | \(ratio(f.read_ops_per_s, originalReads)) |"
    }

    static func sampleValue() throws -> ByteBuffer {
        let snapshot = try IBGESnapshot.embedded()
        let request = LocalidadesRequest(level: .municipios, ids: [.code(4_208_203)])
        return try EmbeddedSource(snapshot: snapshot).body(for: request)
    }

    nonisolated static func measure(cache: TieredCache, keys: [String], value: ByteBuffer, rounds: Int) async -> Figures {
        let clock = ContinuousClock()
        let operations = Double(keys.count * rounds)
        let before = cache.metrics()
        let writeStart = clock.now
        for _ in 0..<rounds {
            for key in keys { await cache.set(key, value: value) }
        }
        let writeTime = clock.now - writeStart
        let readStart = clock.now
        var found = 0
        for _ in 0..<rounds {
            for key in keys where await cache.get(key) != nil { found += 1 }
        }
        let readTime = clock.now - readStart
        let after = cache.metrics()
        let hits = after.hits - before.hits
        let reads = after.totalRequests - before.totalRequests
        precondition(found == hits, "every hit is a value found")
        return Figures(
            write_ops_per_s: Int(operations / writeTime.seconds),
            read_ops_per_s: Int(operations / readTime.seconds),
            hit_rate_percent: reads == 0 ? 0 : (Double(hits) * 10_000 / Double(reads)).rounded() / 100
        )
    }
}

extension BenchCache {
    /// The obvious L1: a `Dictionary` behind a `Mutex`, with the same TTL check per read.
    static func measureDictionary(keys: [String], value: ByteBuffer, rounds: Int) -> Figures {
        struct Entry {
            var value: ByteBuffer
            var expiresAt: ContinuousClock.Instant
        }
        let store = Mutex<[String: Entry]>([:])
        let clock = ContinuousClock()
        let ttl = Duration.seconds(3600)
        let operations = Double(keys.count * rounds)
        let writeStart = clock.now
        for _ in 0..<rounds {
            for key in keys {
                let expiresAt = clock.now + ttl
                store.withLock { $0[key] = Entry(value: value, expiresAt: expiresAt) }
            }
        }
        let writeTime = clock.now - writeStart
        var found = 0
        let readStart = clock.now
        for _ in 0..<rounds {
            for key in keys {
                let now = clock.now
                let hit = store.withLock { store -> ByteBuffer? in
                    guard let entry = store[key], entry.expiresAt > now else { return nil }
                    return entry.value
                }
                if hit != nil { found += 1 }
            }
        }
        let readTime = clock.now - readStart
        return Figures(
            write_ops_per_s: Int(operations / writeTime.seconds), read_ops_per_s: Int(operations / readTime.seconds),
            hit_rate_percent: Double(found) * 100 / operations)
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
