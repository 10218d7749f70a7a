import NIOCore
import RESP
import Redis
import TestSupport
import Testing

@Suite("Redis pub/sub against a real redis-server")
struct RedisPubSubTests {
    @Test("subscribe, publish, receive; pattern subscriptions name their pattern")
    func subscribeAndPublish() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            defer { Task { await client.shutdown() } }
            var messages = try await client.subscribe(to: ["news"]).makeAsyncIterator()
            var patterned = try await client.psubscribe(to: ["ibge:*"]).makeAsyncIterator()
            #expect(try await client.publish(ByteBuffer(string: "hello"), to: "news") == 1)
            #expect(try await client.publish(ByteBuffer(string: "bye"), to: "ibge:backplane") == 1)
            #expect(await nextMessage(&messages) == RedisMessage(channel: "news", pattern: nil, payload: ByteBuffer(string: "hello")))
            #expect(await nextMessage(&patterned) == RedisMessage(channel: "ibge:backplane", pattern: "ibge:*", payload: ByteBuffer(string: "bye")))
        }
    }

    @Test("pub/sub works on a RESP2-only server too")
    func resp2() async throws {
        try await RedisServerProcess.with(["--rename-command", "HELLO", ""]) { server in
            let client = RedisClient(configuration: server.configuration())
            defer { Task { await client.shutdown() } }
            var messages = try await client.subscribe(to: ["a", "b"]).makeAsyncIterator()
            _ = try await client.publish(ByteBuffer(string: "1"), to: "b")
            #expect(await nextMessage(&messages)?.payload == ByteBuffer(string: "1"))
            #expect(try await client.get("k") == nil, "commands still work beside the subscription")
        }
    }

    @Test("a subscription survives a server restart")
    func survivesRestart() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            defer { Task { await client.shutdown() } }
            var messages = try await client.subscribe(to: ["events"]).makeAsyncIterator()
            server.kill()
            try await server.restart()
            // Publish until the restored subscription hears it (it comes back within the backoff).
            var delivered = 0
            for _ in 0..<200 where delivered == 0 {
                delivered = (try? await client.publish(ByteBuffer(string: "after"), to: "events")) ?? 0
                if delivered == 0 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(delivered == 1)
            // The consumer is told that messages may have been lost meanwhile, and hears the new one.
            let first = await nextMessage(&messages)
            let second = await nextMessage(&messages)
            #expect([first, second].contains { $0?.isGap == true })
            #expect([first, second].contains { $0?.payload == ByteBuffer(string: "after") })
        }
    }

    @Test("a server that keeps refusing a subscription (NOPERM) is asked ever less often, each refusal a gap; once it accepts, the subscription is back")
    func refusalBacksOff() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            let admin = RedisClient(configuration: server.configuration())
            var messages = try await client.subscribe(to: [], shardChannels: ["ibge:sharded"]).makeAsyncIterator()
            #expect(try await admin.spublish(ByteBuffer(string: "one"), to: "ibge:sharded") == 1)
            #expect(await nextMessage(&messages)?.payload == ByteBuffer(string: "one"))
            // The default user loses its channels, and the subscription its connection: every
            // attempt to restore it is refused.
            _ = try await admin.send(RESPCommand("ACL", "SETUSER", "default", "resetchannels"))
            let before = try await Self.connectionsReceived(admin)
            _ = try await admin.send(RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
            try await Task.sleep(for: .seconds(3))
            let attempts = try await Self.connectionsReceived(admin) - before
            // 50 ms doubling (±25 %): about 6 attempts in 3 s; starting over after each refusal
            // would make dozens.
            #expect(attempts >= 2 && attempts <= 12, "\(attempts) connections in 3 s")
            _ = try await admin.send(RESPCommand("ACL", "SETUSER", "default", "allchannels"))
            let delivered = await eventually(within: .seconds(15)) {
                (try? await admin.spublish(ByteBuffer(string: "two"), to: "ibge:sharded")) == 1
            }
            #expect(delivered, "the subscription is restored once the server accepts it")
            // A gap for each refused attempt (nothing was heard meanwhile) and one at the restore.
            var gaps = 0
            var heard = false
            while !heard, let message = await nextMessage(&messages) {
                if message.isGap { gaps += 1 } else { heard = message.payload == ByteBuffer(string: "two") }
            }
            #expect(heard)
            #expect(gaps >= 2, "told, again and again, that messages may have been lost: \(gaps) gaps")
            await client.shutdown()
            await admin.shutdown()
        }
    }

    @Test("restores that do not last (the connection killed as soon as it is back) are spaced out ever more, not started over")
    func shortRestoresBackOff() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            let admin = RedisClient(configuration: server.configuration())
            var messages = try await client.subscribe(to: ["events"]).makeAsyncIterator()
            let before = try await Self.connectionsReceived(admin)
            // For 3 s, every subscription connection is killed as soon as it appears.
            let end = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < end {
                _ = try await admin.send(RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
                try await Task.sleep(for: .milliseconds(10))
            }
            let attempts = try await Self.connectionsReceived(admin) - before
            #expect(attempts >= 2 && attempts <= 12, "\(attempts) connections in 3 s")
            let delivered = await eventually(within: .seconds(15)) { (try? await admin.publish(ByteBuffer(string: "back"), to: "events")) == 1 }
            #expect(delivered, "restored once left alone")
            var heard = false
            while !heard, let message = await nextMessage(&messages) { heard = !message.isGap && message.payload == ByteBuffer(string: "back") }
            #expect(heard)
            await client.shutdown()
            await admin.shutdown()
        }
    }

    /// `total_connections_received` of `INFO stats`.
    static func connectionsReceived(_ client: RedisClient) async throws -> Int {
        let stats = try await client.send(RESPCommand("INFO", "stats")).string ?? ""
        let line = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_connections_received:") }
        return try #require(line.flatMap { Int($0.dropFirst("total_connections_received:".count)) })
    }

    @Test("consumers that fall behind are each told of the gap, after their last lost message")
    func consumersBehind() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            defer { Task { await client.shutdown() } }
            let a = try await client.subscribe(to: ["flood"])
            let b = try await client.subscribe(to: ["flood"])
            // Neither reads while 20,000 messages (five times the 4,096 a consumer holds) arrive,
            // pipelined in batches.
            let total = 20_000
            for batch in stride(from: 0, to: total, by: 500) {
                _ = try await client.pipeline((batch..<batch + 500).map { RESPCommand("PUBLISH", "flood", "m\($0)") })
            }
            // Both consumers get everything up to the last message (what is left after the drops).
            func read(_ stream: AsyncStream<RedisMessage>) async -> [RedisMessage] {
                var seen: [RedisMessage] = []
                for await message in stream {
                    seen.append(message)
                    if message.payload == ByteBuffer(string: "m\(total - 1)") { break }
                }
                return seen
            }
            for stream in [a, b] {
                let seen = await read(stream)
                // The stream holds only the newest 4,096: the oldest were dropped, and a notice of
                // the gap is among what it still holds (one sent at the first drop would itself
                // have been pushed out by the messages after it).
                #expect(seen.first?.payload != ByteBuffer(string: "m0"), "the oldest were dropped")
                #expect(seen.contains { $0.isGap }, "told of the gap")
                #expect(seen.filter { !$0.isGap }.count < total)
            }
        }
    }

    @Test("ending the stream unsubscribes on the server")
    func unsubscribeOnEnd() async throws {
        try await RedisServerProcess.with { server in
            let client = RedisClient(configuration: server.configuration())
            defer { Task { await client.shutdown() } }
            func subscribers() async throws -> Int {
                let reply = try await client.send(RESPCommand("PUBSUB", "NUMSUB", "gone"))
                guard case .array(let parts) = reply, parts.count == 2, case .integer(let n) = parts[1] else { return -1 }
                return Int(n)
            }
            do {
                let stream = try await client.subscribe(to: ["gone"])
                #expect(try await subscribers() == 1)
                _ = stream
            }
            var count = 1
            for _ in 0..<100 where count != 0 {
                count = try await subscribers()
                if count != 0 { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(count == 0)
        }
    }
}
