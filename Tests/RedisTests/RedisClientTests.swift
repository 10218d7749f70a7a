import Logging
import NIOCore
import NIOPosix
import RESP
import Redis
import TestSupport
import Testing

private func buffer(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

@Suite("Redis client against a real redis-server")
struct RedisClientTests {
    @Test("HELLO 3 is negotiated and the basic commands work")
    func basics() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                #expect(try await client.connection().protocolVersion == 3)
                #expect(try await client.ping() == "PONG")
                #expect(try await client.get("missing") == nil)
                #expect(try await client.set("k", value: buffer("v\r\n\u{0}binary")))
                #expect(try await client.get("k") == buffer("v\r\n\u{0}binary"))
                #expect(try await client.set("k", value: buffer("other"), condition: .ifNotExists) == false)
                #expect(try await client.get("k") == buffer("v\r\n\u{0}binary"))
                #expect(try await client.set("fresh", value: buffer("1"), expiration: .seconds(60), condition: .ifNotExists))
                let ttl = try await client.pttl("fresh")
                #expect(ttl > 0 && ttl <= 60_000)
                #expect(try await client.pexpire("fresh", after: .seconds(120)))
                #expect(try await client.pttl("fresh") > 60_000)
                #expect(try await client.mget(["k", "missing", "fresh"]) == [buffer("v\r\n\u{0}binary"), nil, buffer("1")])
                #expect(try await client.exists(["k", "fresh", "missing"]) == 2)
                #expect(try await client.unlink(["k"]) == 1)
                #expect(try await client.del(["fresh", "missing"]) == 1)
                #expect(try await client.dbsize() == 0)
                #expect(try await client.publish(buffer("hello"), to: "nobody") == 0)
            }
        }
    }

    @Test("a server error reply is a typed error with the server's text, and the connection stays usable")
    func serverError() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                _ = try await client.send(RESPCommand("LPUSH", "list", "x"))
                let error = await #expect(throws: RedisError.self) { try await client.get("list") }
                #expect(error?.code == .serverError)
                #expect(error?.serverErrorPrefix == "WRONGTYPE")
                #expect(try await client.ping() == "PONG")
            }
        }
    }

    @Test("SCAN with MATCH walks every matching key and only those")
    func scan() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                for i in 0..<250 { try await client.set("ibge:test:\(i)", value: buffer("\(i)")) }
                for i in 0..<30 { try await client.set("other:\(i)", value: buffer("\(i)")) }
                var cursor = "0"
                var seen = Set<String>()
                repeat {
                    let step = try await client.scan(cursor: cursor, match: "ibge:*", count: 50)
                    seen.formUnion(step.keys)
                    cursor = step.cursor
                } while cursor != "0"
                #expect(seen == Set((0..<250).map { "ibge:test:\($0)" }))
            }
        }
    }

    @Test("MSET, the SCAN sequence, and MULTI/EXEC transactions (also when aborted by WATCH)")
    func bulkAndTransactions() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                try await client.mset((0..<2500).map { (key: "scan:\($0)", value: buffer("\($0)")) })
                try await client.set("other", value: buffer("x"))
                var seen = Set<String>()
                for try await key in client.scanKeys(matching: "scan:*", count: 100) { seen.insert(key) }
                #expect(seen.count == 2500 && seen.contains("scan:2499") && !seen.contains("other"))

                let results = try #require(
                    try await client.transaction([RESPCommand("INCR", "counter"), RESPCommand("INCR", "counter"), RESPCommand("GET", "counter")]))
                #expect(results == [.integer(1), .integer(2), .bulkString(buffer("2"))])

                // WATCH on a dedicated connection, a change from elsewhere, then EXEC: aborted.
                var single = server.configuration()
                single.maximumConnections = 1
                let watcher = RedisClient(configuration: single)
                _ = try await watcher.send(RESPCommand("WATCH", "counter"))
                _ = try await client.send(RESPCommand("INCR", "counter"))
                #expect(try await watcher.transaction([RESPCommand("SET", "counter", "0")]) == nil)
                await watcher.shutdown()

                let rejected = await #expect(throws: RedisError.self) { try await client.transaction([RESPCommand("NOSUCHCOMMAND")]) }
                #expect(rejected?.code == .serverError)
            }
        }
    }

    @Test("a script runs by SHA and is sent again after SCRIPT FLUSH (NOSCRIPT)")
    func scripts() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                let script = RedisScript("return redis.call('SET', KEYS[1], ARGV[1]) and 7")
                #expect(try await client.run(script, keys: ["a"], arguments: [buffer("1")]) == .integer(7))
                // The SHA we computed is the one Redis computes.
                let loaded = try await client.send(RESPCommand("SCRIPT", "LOAD", script.source))
                #expect(loaded.string == script.sha1)
                _ = try await client.send(RESPCommand("SCRIPT", "FLUSH"))
                #expect(try await client.run(script, keys: ["b"], arguments: [buffer("2")]) == .integer(7))
                #expect(try await client.get("b") == buffer("2"))
            }
        }
    }

    @Test("the database from the URL is selected")
    func selectsDatabase() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(try RedisConfiguration(url: server.url + "/3")) { db3 in
                try await withRedisClient(server.configuration()) { db0 in
                    try await db3.set("where", value: buffer("three"))
                    #expect(try await db0.get("where") == nil)
                    #expect(try await db3.get("where") == buffer("three"))
                }
            }
        }
    }

    @Test("a unix-domain socket works like TCP")
    func unixSocket() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(try RedisConfiguration(url: "unix://" + server.socketPath)) { client in
                try await client.set("via", value: buffer("socket"))
                #expect(try await client.get("via") == buffer("socket"))
            }
        }
    }

    @Test("password and ACL user authentication, and a clear error for a wrong password")
    func authentication() async throws {
        try await RedisServerProcess.with(["--requirepass", "s3cret", "--user", "alice", "on", ">wonder", "~*", "&*", "+@all"]) { server in
            var good = server.configuration()
            good.password = "s3cret"
            let client = RedisClient(configuration: good)
            #expect(try await client.ping() == "PONG")
            await client.shutdown()

            let acl = RedisClient(configuration: try RedisConfiguration(url: "redis://alice:wonder@127.0.0.1:\(server.port)"))
            #expect(try await acl.send(RESPCommand("ACL", "WHOAMI")).string == "alice")
            await acl.shutdown()

            var bad = server.configuration()
            bad.password = "wrong"
            let refused = RedisClient(configuration: bad)
            let error = await #expect(throws: RedisError.self) { try await refused.ping() }
            #expect(error?.code == .authenticationFailed)
            #expect(error?.message.contains("WRONGPASS") == true)
            await refused.shutdown()

            var withoutPassword = server.configuration()
            withoutPassword.password = nil
            let noPassword = RedisClient(configuration: withoutPassword)
            let noAuth = await #expect(throws: RedisError.self) { try await noPassword.get("x") }
            #expect(noAuth?.code == .serverError || noAuth?.code == .authenticationFailed)
            await noPassword.shutdown()
        }
    }

    @Test("a server without HELLO gets RESP2 with AUTH and SELECT")
    func resp2Fallback() async throws {
        try await RedisServerProcess.with(["--rename-command", "HELLO", "", "--requirepass", "pw"]) { server in
            var configuration = try RedisConfiguration(url: "redis://:pw@127.0.0.1:\(server.port)/2")
            configuration.clientName = "fallback-test"
            try await withRedisClient(configuration) { client in
                let connection = try await client.connection()
                #expect(connection.protocolVersion == 2)
                try await client.set("k", value: buffer("resp2"))
                #expect(try await client.get("k") == buffer("resp2"))
                #expect(try await client.get("none") == nil)
                #expect(try await client.mget(["k", "none"]) == [buffer("resp2"), nil])
                let info = try await client.send(RESPCommand("CLIENT", "INFO")).string ?? ""
                #expect(info.contains("db=2"))
                #expect(info.contains("name=fallback-test"))
            }
        }
    }

    @Test("a thousand concurrent commands share the pool and each gets its own reply")
    func pipelining() async throws {
        try await RedisServerProcess.with { server in
            var configuration = server.configuration()
            configuration.maximumConnections = 2
            try await withRedisClient(configuration) { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<1000 {
                        group.addTask { try await client.set("p:\(i)", value: buffer("value-\(i)")) }
                    }
                    try await group.waitForAll()
                }
                let mismatches = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for i in 0..<1000 {
                        group.addTask { try await client.get("p:\(i)") == buffer("value-\(i)") }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 0 : 1) }
                }
                #expect(mismatches == 0)
                #expect(client.openConnections <= 2)
                let clients = try await client.send(RESPCommand("CLIENT", "LIST")).string ?? ""
                #expect(clients.split(separator: "\n").count <= 2)
            }
        }
    }

    @Test("a large value (2.4 MB) crosses in many reads")
    func largeValue() async throws {
        try await RedisServerProcess.with { server in
            try await withRedisClient(server.configuration()) { client in
                let big = ByteBuffer(bytes: (0..<2_470_036).map { UInt8(truncatingIfNeeded: $0 &* 31) })
                try await client.set("big", value: big)
                #expect(try await client.get("big") == big)
            }
        }
    }

    @Test("killing the server fails pending commands promptly, and the client reconnects after a restart")
    func killAndRestart() async throws {
        try await RedisServerProcess.with { server in
            var configuration = server.configuration()
            configuration.reconnectBackoff = .milliseconds(1)
            try await withRedisClient(configuration) { client in
                try await client.set("k", value: buffer("v"))
                // Block the server so commands are in flight when it dies: wait until it is blocked.
                let blocked = Task { try await client.send(RESPCommand("BLPOP", "never", "30")) }
                let admin = RedisClient(configuration: server.configuration())
                var inFlight = false
                for _ in 0..<500 where !inFlight {
                    inFlight = (try await admin.send(RESPCommand("CLIENT", "LIST")).string ?? "").contains("cmd=blpop")
                    if !inFlight { try await Task.sleep(for: .milliseconds(10)) }
                }
                #expect(inFlight)
                await admin.shutdown()
                server.kill()
                let error = await #expect(throws: RedisError.self) { _ = try await blocked.value }
                #expect(error?.code == .connectionClosed)
                let refused = await #expect(throws: RedisError.self) { try await client.get("k") }
                #expect(refused?.isConnectivityFailure == true)
                try await server.restart()
                try await client.set("k", value: buffer("after"))
                #expect(try await client.get("k") == buffer("after"))
            }
        }
    }

    @Test("a cancelled caller stops waiting at once; its reply is dropped and the same connection answers the next command")
    func cancellation() async throws {
        try await RedisServerProcess.with { server in
            var configuration = server.configuration()
            configuration.maximumConnections = 1
            configuration.commandTimeout = .seconds(30)
            try await withRedisClient(configuration) { client in
                try await client.set("a", value: buffer("A"))
                try await client.set("b", value: buffer("B"))
                let connection = try await client.connection()
                try await withRedisClient(server.configuration()) { admin in
                    _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", "10000", "WRITE"))
                    let waiting = Task { try await client.send(RESPCommand("SET", "a", "A2")) }
                    #expect(await eventually { connection.pendingCommands == 1 })
                    waiting.cancel()
                    let error = await #expect(throws: RedisError.self) { try await waiting.value }
                    #expect(error?.code == .cancelled, "the caller left while Redis still held the reply")
                    _ = try await admin.send(RESPCommand("CLIENT", "UNPAUSE"))
                }
                #expect(try await client.get("b") == buffer("B"), "the dropped reply did not shift the next one")
                #expect(try await client.get("a") == buffer("A2"), "the command itself ran")
                #expect(try await client.connection() === connection, "no reconnect")
                #expect(client.openConnections == 1)
            }
        }
    }

    @Test("a server that accepts but never answers fails the handshake with a connect timeout")
    func silentServer() async throws {
        let silent = try await LoopbackServer.start()
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: silent.port))
        configuration.connectTimeout = .milliseconds(200)
        configuration.poolWaitTimeout = .seconds(5)
        let client = RedisClient(configuration: configuration)
        let error = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(error?.code == .connectTimeout)
        await client.shutdown()
        await silent.stop()
    }

    @Test("a caller waits for a connection no longer than the pool-wait timeout")
    func poolWaitTimeout() async throws {
        let silent = try await LoopbackServer.start()
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: silent.port))
        configuration.connectTimeout = .seconds(30)
        configuration.poolWaitTimeout = .milliseconds(50)
        let client = RedisClient(configuration: configuration)
        let error = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(error?.code == .poolTimeout)
        #expect(client.poolStatus.connecting == 1, "the attempt goes on in the background")
        await client.shutdown()
        await silent.stop()
    }

    @Test("after a failed connection attempt the pool backs off: callers fail at once with the last error")
    func connectBackoff() async throws {
        let port = try RedisServerProcess.freePort()
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port))
        configuration.maximumConnections = 1
        configuration.reconnectBackoff = .seconds(30)
        configuration.maximumReconnectBackoff = .seconds(60)
        let client = RedisClient(configuration: configuration)
        let first = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(first?.code == .connectFailed)
        #expect(client.poolStatus.backingOff == 1)
        let second = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(second?.code == .connectFailed)
        #expect(second?.message.contains("not retrying for") == true, "\(second.map { "\($0.code): \($0.message)" } ?? "")")
        await client.shutdown()
    }

    @Test("run() keeps the minimum open and closes connections idle past the timeout")
    func maintenance() async throws {
        try await RedisServerProcess.with { server in
            var configuration = server.configuration()
            configuration.minimumConnections = 1
            configuration.maximumConnections = 4
            configuration.idleTimeout = .milliseconds(300)
            configuration.keepAliveInterval = .milliseconds(100)
            configuration.commandTimeout = .seconds(30)
            let client = RedisClient(configuration: configuration)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await client.run() }
                // The minimum is opened without any command.
                var opened = false
                for _ in 0..<100 where !opened {
                    opened = client.openConnections == 1
                    if !opened { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(opened)
                // Commands held in flight (the server pauses writes) grow the pool: once one
                // connection has 32 waiting, the next command opens another.
                var adminConfiguration = server.configuration()
                adminConfiguration.commandTimeout = .seconds(30)
                var grown = 1
                try await withRedisClient(adminConfiguration) { admin in
                    _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", "20000", "WRITE"))
                    try await withThrowingTaskGroup(of: Void.self) { burst in
                        for wave in 0..<100 where grown < 2 {
                            for i in 0..<10 { burst.addTask { _ = try await client.send(RESPCommand("SET", "k\(wave)-\(i)", "v")) } }
                            try await Task.sleep(for: .milliseconds(10))
                            grown = client.openConnections + client.poolStatus.connecting
                        }
                        _ = try await admin.send(RESPCommand("CLIENT", "UNPAUSE"))
                        try await burst.waitForAll()
                    }
                }
                // ...and idle connections above the minimum are closed again.
                var shrunk = false
                for _ in 0..<200 where !shrunk {
                    shrunk = client.openConnections == 1
                    if !shrunk { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(grown >= 2, "more than 32 commands in flight on one connection open another")
                #expect(shrunk)
                group.cancelAll()
            }
            #expect(client.openConnections == 0, "run() closes every connection when it ends")
        }
    }

    @Test("nothing listening: connect fails with a clear error")
    func refused() async throws {
        let port = try RedisServerProcess.freePort()
        let client = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)))
        let error = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(error?.code == .connectFailed)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
        await client.shutdown()
    }

    @Test("a paused server makes the command time out, and the client recovers")
    func commandTimeout() async throws {
        try await RedisServerProcess.with { server in
            var configuration = server.configuration()
            configuration.commandTimeout = .milliseconds(200)
            configuration.maximumConnections = 1
            var adminConfiguration = server.configuration()
            // UNPAUSE waits out the pause too: give the admin client the time.
            adminConfiguration.commandTimeout = .seconds(10)
            try await withRedisClient(configuration) { client in
                try await withRedisClient(adminConfiguration) { admin in
                    try await client.set("k", value: buffer("v"))
                    _ = try await admin.send(RESPCommand("CLIENT", "PAUSE", "2500", "ALL"))
                    let error = await #expect(throws: RedisError.self) { try await client.get("k") }
                    #expect(error?.code == .commandTimeout)
                    _ = try await admin.send(RESPCommand("CLIENT", "UNPAUSE"))
                    #expect(try await client.get("k") == buffer("v"))
                }
            }
        }
    }

    @Test("garbage from the server is a protocol error that closes the connection")
    func garbage() async throws {
        let liar = try await LoopbackServer.start(reply: Array("?this is not RESP\r\n".utf8))
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: liar.port))
        configuration.connectTimeout = .milliseconds(500)
        let client = RedisClient(configuration: configuration)
        let error = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(error?.code == .protocolError)
        #expect(error?.message.contains("invalid RESP type byte") == true)
        await client.shutdown()
        await liar.stop()
    }
}
