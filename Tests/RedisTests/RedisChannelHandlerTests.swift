import NIOCore
import NIOEmbedded
import RESP
import Synchronization
import Testing

@testable import Redis

/// What a promise ended with, read without blocking (EmbeddedEventLoop runs callbacks at once).
private final class Outcome: Sendable {
    private let result = Mutex<Result<RESPValue, any Error>?>(nil)

    init(_ future: EventLoopFuture<RESPValue>) {
        future.whenComplete { outcome in self.result.withLock { $0 = outcome } }
    }

    var value: RESPValue? { result.withLock { try? $0?.get() } }
    var error: RedisError? {
        result.withLock { result in
            guard case .failure(let error) = result else { return nil }
            return error as? RedisError
        }
    }
    var isDone: Bool { result.withLock { $0 != nil } }
}

/// Pushes the handler delivered.
private final class Pushes: Sendable {
    let values = Mutex<[RESPValue]>([])
}

/// A handler on an embedded channel, past its handshake, with the bytes it wrote read back.
private struct Harness {
    let channel = EmbeddedChannel()
    let pushes = Pushes()
    let handshake: EventLoopPromise<Int>
    let handler: RedisChannelHandler
    private var nextID: UInt64 = 0

    init() throws {
        handshake = channel.eventLoop.makePromise()
        let pushes = self.pushes
        handler = RedisChannelHandler(
            handshake: .init(RedisConfiguration(endpoint: .tcp(host: "h", port: 1))), completing: handshake, commandTimeout: .seconds(1),
            decoderLimits: .default, maximumBufferedBytes: 1024 * 1024, stats: ConnectionStats(),
            onPush: { value in pushes.values.withLock { $0.append(value) } })
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
    }

    func written() throws -> String {
        var all = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buffer) }
        return all
    }

    func feed(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    mutating func send(_ command: RESPCommand, timeout: TimeAmount? = nil) throws -> (id: UInt64, outcome: Outcome) {
        nextID += 1
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let outcome = Outcome(promise.futureResult)
        handler.send(CollectionOfOne(RedisRequest(id: nextID, command: command, promise: promise, timeout: timeout)))
        return (nextID, outcome)
    }

    func cancel(_ id: UInt64) {
        handler.cancel(id: id)
    }
}

@Suite("Redis channel handler on an embedded channel (no socket)")
struct RedisChannelHandlerTests {
    @Test("the handshake is written on connect and completes with the protocol version")
    func handshake() throws {
        let h = try Harness()
        #expect(try h.written() == "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
        try h.feed("%1\r\n+server\r\n+redis\r\n")
        #expect(try h.handshake.futureResult.wait() == 3)
    }

    @Test("a reply split at every byte completes its command only when whole")
    func splitFrames() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        _ = try h.written()
        let get = try h.send(RESPCommand("GET", "k"))
        #expect(try h.written() == "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        let reply = Array("$12\r\nhello\r\nworld\r\n".utf8)
        for (index, byte) in reply.enumerated() {
            #expect(!get.outcome.isDone, "not before byte \(index): \(String(describing: get.outcome.error))")
            try h.channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(get.outcome.value == .bulkString(ByteBuffer(string: "hello\r\nworld")))
    }

    @Test("pushes between replies reach the push handler; replies stay matched in order")
    func pushesBetweenReplies() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let a = try h.send(RESPCommand("GET", "a"))
        let b = try h.send(RESPCommand("GET", "b"))
        try h.feed(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n$1\r\nA\r\n>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nho\r\n$1\r\nB\r\n")
        #expect(a.outcome.value == .bulkString(ByteBuffer(string: "A")))
        #expect(b.outcome.value == .bulkString(ByteBuffer(string: "B")))
        #expect(h.pushes.values.withLock { $0.count } == 2)
        #expect(h.channel.isActive)
    }

    @Test("a reply that passes the buffered-bytes cap before it is whole closes the connection with a protocol error")
    func bufferedBytesCap() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let get = try h.send(RESPCommand("MGET", "a"))
        // An aggregate whose elements never end (each within every per-frame limit).
        try h.feed("*16000000\r\n")
        let chunk = String(repeating: "+x\r\n", count: 64 * 1024)  // 256 KiB
        for _ in 0..<3 { try h.feed(chunk) }
        #expect(!get.outcome.isDone && h.channel.isActive, "under the cap (1 MiB) it waits")
        try h.feed(chunk)
        try h.feed(chunk)
        #expect(get.outcome.error?.code == .protocolError, "\(String(describing: get.outcome.error))")
        #expect(!h.channel.isActive)
    }

    @Test("endless attribute frames end at the depth limit with a protocol error, not in the stack")
    func endlessAttributes() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let get = try h.send(RESPCommand("GET", "a"))
        try h.feed(String(repeating: "|1\r\n+k\r\n+v\r\n", count: 100_000))
        #expect(get.outcome.error?.code == .protocolError)
        #expect(!h.channel.isActive)
    }

    @Test("a command cancelled in the middle of a pipeline fails at once; its reply is dropped and the connection goes on")
    func cancelledInPipeline() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let first = try h.send(RESPCommand("GET", "1"))
        let second = try h.send(RESPCommand("GET", "2"))
        let third = try h.send(RESPCommand("GET", "3"))
        h.cancel(second.id)
        #expect(second.outcome.error?.code == .cancelled)
        try h.feed("$3\r\none\r\n$3\r\ntwo\r\n$5\r\nthree\r\n")
        #expect(first.outcome.value == .bulkString(ByteBuffer(string: "one")))
        #expect(third.outcome.value == .bulkString(ByteBuffer(string: "three")), "not shifted by the dropped reply")
        let fourth = try h.send(RESPCommand("PING"))
        try h.feed("+PONG\r\n")
        #expect(fourth.outcome.value == .simpleString(ByteBuffer(string: "PONG")))
    }

    @Test("closing with commands pending fails each once with a connection error")
    func closeWithPending() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let a = try h.send(RESPCommand("GET", "a"))
        let b = try h.send(RESPCommand("GET", "b"))
        try h.channel.close().wait()
        #expect(a.outcome.error?.code == .connectionClosed)
        #expect(b.outcome.error?.code == .connectionClosed)
    }

    @Test("garbage from the server fails what is pending with a protocol error and closes")
    func garbage() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let a = try h.send(RESPCommand("GET", "a"))
        try h.feed("?what\r\n")
        #expect(a.outcome.error?.code == .protocolError)
        #expect(!h.channel.isActive)
    }

    @Test("a command without a reply in time closes the connection (noticed within 1.25 × its timeout); one answered in time does not")
    func commandTimeout() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let quick = try h.send(RESPCommand("GET", "q"), timeout: .seconds(1))
        try h.feed("$1\r\nq\r\n")
        h.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(quick.outcome.value != nil && h.channel.isActive)
        let slow = try h.send(RESPCommand("GET", "s"), timeout: .seconds(1))
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(!slow.outcome.isDone, "not late yet")
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(251))
        #expect(slow.outcome.error?.code == .commandTimeout)
        #expect(!h.channel.isActive)
    }

    @Test("a cancelled command still holds its place: if its reply never comes, the timeout closes the connection")
    func cancelledThenLate() throws {
        var h = try Harness()
        try h.feed("%0\r\n")
        let stuck = try h.send(RESPCommand("GET", "s"), timeout: .seconds(1))
        let behind = try h.send(RESPCommand("GET", "b"), timeout: .seconds(1))
        h.cancel(stuck.id)
        #expect(stuck.outcome.error?.code == .cancelled)
        h.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1250))
        #expect(behind.outcome.error?.code == .commandTimeout)
        #expect(!h.channel.isActive)
    }

    @Test("a wrong password fails the handshake promise and closes the channel; a push during the handshake is ignored")
    func handshakeFailure() throws {
        let h = try Harness()
        try h.feed(">2\r\n$10\r\ninvalidate\r\n_\r\n")
        try h.feed("-WRONGPASS invalid username-password pair\r\n")
        #expect(throws: RedisError.self) { try h.handshake.futureResult.wait() }
        #expect(!h.channel.isActive)
        #expect(h.pushes.values.withLock { $0.isEmpty })
    }
}
