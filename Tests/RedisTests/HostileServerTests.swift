import Logging
import NIOCore
import RESP
import TestSupport
import Testing

@testable import Redis

@Suite("The client against a hostile server")
struct HostileServerTests {
    @Test(
        "endless attribute frames, a 2 GiB bulk header, an endless array: a typed error within seconds, memory bounded, the process alive",
        arguments: HostileRedisServer.Mode.allCases)
    func hostile(mode: HostileRedisServer.Mode) async throws {
        let server = try HostileRedisServer.start(mode)
        defer { server.stop() }
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: server.port))
        configuration.commandTimeout = .seconds(10)
        configuration.maximumReplyBytes = 16 * 1024 * 1024
        configuration.maximumBufferedBytes = 32 * 1024 * 1024
        configuration.minimumConnections = 0
        let before = residentMemoryBytes() ?? 0
        let client = RedisClient(configuration: configuration)
        let started = ContinuousClock.now
        let error = await #expect(throws: RedisError.self) { _ = try await client.send(RESPCommand("GET", "k")) }
        #expect(error?.code == .protocolError, "\(String(describing: error))")
        #expect(ContinuousClock.now - started < .seconds(10), "refused as the bytes came, not at a timeout")
        // The broken connection is gone; the next command fails as cleanly (the same error on a
        // new connection, or the pool's backoff after the failure), and the process goes on.
        await #expect(throws: RedisError.self) { _ = try await client.send(RESPCommand("GET", "k")) }
        // The process is shared with the rest of the suite, so this bound is loose; what it
        // rules out is the 2 GiB the server declares, or the gigabyte an array of 16 million
        // values would take. The per-connection bound itself is maximumBufferedBytes (32 MiB).
        let grown = (residentMemoryBytes() ?? 0) - before
        #expect(grown < 512 * 1024 * 1024, "memory grew \(grown / 1_048_576) MiB")
        await client.shutdown()
    }
}
