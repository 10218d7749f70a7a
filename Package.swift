// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "ibge-cache",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ibge-cache", targets: ["ibge-cache"]),
        .library(name: "RESP", targets: ["RESP"]),
        .library(name: "Redis", targets: ["Redis"]),
        .library(name: "TieredCache", targets: ["TieredCache"]),
        .library(name: "TieredCacheRedis", targets: ["TieredCacheRedis"]),
        .library(name: "IBGE", targets: ["IBGE"]),
        .library(name: "IBGECacheServer", targets: ["IBGECacheServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    ],
    targets: [
        // Small helpers every layer shares (backoff with jitter, Duration units, percent-decoding).
        .target(
            name: "Utilities",
            swiftSettings: swiftSettings
        ),
        // RESP2/RESP3 codec: pure, no I/O beyond ByteBuffer.
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Redis client: connections (a state machine under the channel handler), pool, commands, pub/sub.
        .target(
            name: "Redis",
            dependencies: [
                "RESP", "Utilities",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Two-tier cache policy: L1 in-process, an L2 store protocol, single-flight, fail-safe,
        // timeouts, refresh, breaker, metrics; an injected clock. Knows no Redis.
        .target(
            name: "TieredCache",
            dependencies: [
                "Utilities",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The cache's L2 store on Redis (RedisStore): envelopes, locks, backplane.
        .target(
            name: "TieredCacheRedis",
            dependencies: [
                "TieredCache", "Redis", "RESP", "Utilities",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // IBGE domain: models, keys, embedded snapshot, upstream, cached service facade.
        .target(
            name: "IBGE",
            dependencies: [
                "TieredCache", "Utilities",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            resources: [.copy("Snapshot")],
            swiftSettings: swiftSettings
        ),
        // HTTP server: data routes, admin API, configuration.
        .target(
            name: "IBGECacheServer",
            dependencies: [
                "IBGE", "TieredCache", "TieredCacheRedis", "Redis", "Utilities",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The OpenAPI 3.1 description served at GET /openapi.json.
            resources: [.copy("Resources/openapi.json")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ibge-cache",
            dependencies: [
                "IBGECacheServer", "IBGE", "TieredCache", "TieredCacheRedis", "Redis", "RESP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Test support for every layer: real redis-server processes, certificates, a loopback
        // server, a seeded generator, waiting helpers. Links no IBGE and no Hummingbird.
        .target(
            name: "TestSupport",
            dependencies: [
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        // A stand-in IBGE (Hummingbird) for the IBGE and server tests.
        .target(
            name: "IBGETestSupport",
            dependencies: [
                "IBGE", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/IBGETestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UtilitiesTests",
            dependencies: ["Utilities"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RESPTests",
            dependencies: ["RESP", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["FuzzInputs", "FuzzExpected"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "Redis", "RESP", "TestSupport", "Utilities",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TieredCacheTests",
            dependencies: [
                "TieredCache", "TieredCacheRedis", "Redis", "RESP", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IBGETests",
            dependencies: [
                "IBGE", "TieredCache", "TestSupport", "IBGETestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IBGECacheServerTests",
            dependencies: [
                "IBGECacheServer", "Redis", "RESP", "TestSupport", "IBGETestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// The RESP decoder's libFuzzer target, only when asked for (scripts/fuzz sets IBGE_FUZZ=1): it
// defines LLVMFuzzerTestOneInput instead of a main, so it links only with -sanitize=fuzzer.
if Context.environment["IBGE_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "FuzzRESP",
            dependencies: ["RESP", .product(name: "NIOCore", package: "swift-nio")],
            path: "FuzzTesting/FuzzRESP"
        ))
    package.products.append(.executable(name: "FuzzRESP", targets: ["FuzzRESP"]))
}
