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
    ],
    targets: [
        // RESP2/RESP3 codec: pure, no I/O beyond ByteBuffer.
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Redis client: connections, pipelining, pool, commands.
        .target(
            name: "Redis",
            dependencies: [
                "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Two-tier cache: L1 in-process, L2 Redis, fallback, single-flight, circuit breaker.
        .target(
            name: "TieredCache",
            dependencies: [
                "Redis", "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // IBGE domain: models, keys, embedded snapshot, cached service facade.
        .target(
            name: "IBGE",
            dependencies: [
                "TieredCache",
                .product(name: "NIOCore", package: "swift-nio"),
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
                "IBGE", "TieredCache", "Redis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ibge-cache",
            dependencies: [
                "IBGECacheServer", "IBGE", "TieredCache", "Redis", "RESP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Test support: a real redis-server fixture.
        .target(
            name: "TestSupport",
            dependencies: [
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                "IBGE",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RESPTests",
            dependencies: ["RESP", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["FuzzInputs"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "Redis", "RESP", "TestSupport", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TieredCacheTests",
            dependencies: [
                "TieredCache", "Redis", "RESP", "TestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IBGETests",
            dependencies: [
                "IBGE", "TieredCache", "TestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IBGECacheServerTests",
            dependencies: [
                "IBGECacheServer", "IBGE", "TieredCache", "Redis", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
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
