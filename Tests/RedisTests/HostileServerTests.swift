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
        // scripts/test runs this suite on its own (the three cases at once), so the process's
        // growth is theirs: it rules out the 2 GiB the server declares, or the gigabyte an array
        // of 16 million values would take. The per-connection bound is maximumBufferedBytes (32 MiB).
        let grown = (residentMemoryBytes() ?? 0) - before
        #expect(grown < 256 * 1024 * 1024, "memory grew \(grown / 1_048_576) MiB")
        await client.shutdown()
    }

    @Test("the subscriber connection is pinged: a server that stops answering is left for a new connection, and the consumer hears of the gap")
    func silentSubscriber() async throws {
        let server = try HostileRedisServer.startSilentSubscriber()
        defer { server.stop() }
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: server.port))
        configuration.keepAliveInterval = .milliseconds(200)
        configuration.commandTimeout = .milliseconds(300)
        configuration.minimumConnections = 0
        let client = RedisClient(configuration: configuration)
        let messages = try await client.subscribe(to: ["ch"])
        #expect(await eventually { server.accepted == 1 })
        // No byte comes from the server again, and its socket stays open: only the PING finds out.
        let heard = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await message in messages where message.isGap { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(15))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        #expect(heard, "the consumer was told messages may have been lost")
        #expect(await eventually { server.accepted >= 2 }, "the subscription was opened again on a new connection")
        await client.shutdown()
    }
}
