import NIOCore
import RESP
import Testing

@testable import Redis

private typealias Machine = RedisConnectionStateMachine<String>

private func ok() -> RESPValue { .simpleString(ByteBuffer(string: "OK")) }
private func bulk(_ s: String) -> RESPValue { .bulkString(ByteBuffer(string: s)) }
private func error(_ s: String) -> RESPValue { .simpleError(ByteBuffer(string: s)) }

/// A machine past its handshake (RESP3, no SELECT).
private func active(unsolicitedArraysArePushes: Bool = false) -> Machine {
    var machine = Machine(
        handshake: .init(RedisConfiguration(endpoint: .tcp(host: "h", port: 1))), unsolicitedArraysArePushes: unsolicitedArraysArePushes)
    _ = machine.channelActive()
    _ = machine.received(.map([]))
    return machine
}

extension Machine.HandshakeAction {
    var written: String? {
        if case .write(let command) = self { return command.name }
        return nil
    }
}

extension Machine.ReceiveAction {
    var written: String? {
        if case .handshake(let step) = self { return step.written }
        return nil
    }
    var completedVersion: Int? {
        if case .handshake(.completed(let version)) = self { return version }
        return nil
    }
    var failure: RedisError? {
        switch self {
        case .handshake(.failed(let error)): error
        case .close(let error, _): error
        default: nil
        }
    }
    var succeeded: (UInt64, String, RESPValue)? {
        if case .succeed(let id, let promise, let value) = self { return (id, promise, value) }
        return nil
    }
}

@Suite("Redis connection state machine (no network)")
struct RedisConnectionStateMachineTests {
    @Test("handshake: HELLO 3 with AUTH and SETNAME, then SELECT, then ready on RESP3")
    func resp3Handshake() throws {
        var configuration = try RedisConfiguration(url: "redis://alice:pw@h:1/4")
        configuration.clientName = "me"
        var machine = Machine(handshake: .init(configuration))
        guard case .write(let hello) = machine.channelActive() else {
            Issue.record("HELLO first")
            return
        }
        var encoded = ByteBuffer()
        hello.encode(into: &encoded)
        #expect(String(buffer: encoded) == "*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$2\r\npw\r\n$7\r\nSETNAME\r\n$2\r\nme\r\n")
        #expect(machine.channelActive()?.written == nil, "the handshake starts once")
        #expect(machine.received(.map([])).written == "SELECT")
        #expect(machine.received(ok()).completedVersion == 3)
        #expect(machine.send(id: 1, promise: "p1", expectsReply: true).isWrite)
    }

    @Test("handshake: HELLO refused (old server) falls back to RESP2 with AUTH, CLIENT SETNAME and SELECT")
    func resp2Fallback() throws {
        var configuration = try RedisConfiguration(url: "redis://:pw@h:1/2")
        configuration.clientName = "me"
        var machine = Machine(handshake: .init(configuration))
        _ = machine.channelActive()
        #expect(machine.received(error("ERR unknown command 'HELLO'")).written == "AUTH")
        #expect(machine.received(ok()).written == "CLIENT")
        #expect(machine.received(ok()).written == "SELECT")
        #expect(machine.received(ok()).completedVersion == 2)
    }

    @Test("handshake: a wrong password fails at once as an authentication error; a failed step names itself")
    func handshakeFailures() throws {
        var wrong = Machine(handshake: .init(try RedisConfiguration(url: "redis://:bad@h:1")))
        _ = wrong.channelActive()
        #expect(wrong.received(error("WRONGPASS invalid username-password pair")).failure?.code == .authenticationFailed)
        #expect(wrong.isClosed)

        var select = Machine(handshake: .init(try RedisConfiguration(url: "redis://h:1/99")))
        _ = select.channelActive()
        _ = select.received(.map([]))
        let failed = select.received(error("ERR DB index is out of range")).failure
        #expect(failed?.code == .handshakeFailed)
        #expect(failed?.message.hasPrefix("SELECT:") == true)
    }

    @Test("no command is sent before the handshake ends")
    func notBeforeHandshake() {
        var machine = Machine(handshake: .init(RedisConfiguration(endpoint: .tcp(host: "h", port: 1))))
        _ = machine.channelActive()
        guard case .fail(let error) = machine.send(id: 1, promise: "p", expectsReply: true) else {
            Issue.record("must fail")
            return
        }
        #expect(error.code == .connectionClosed)
    }

    @Test("replies complete their commands in order; pushes between them go to the push handler")
    func repliesAndPushes() {
        var machine = active()
        for id in 1...3 { #expect(machine.send(id: UInt64(id), promise: "p\(id)", expectsReply: true).isWrite) }
        #expect(machine.inFlight == 3)
        #expect(machine.received(bulk("one")).succeeded.map { "\($0.0) \($0.1)" } == "1 p1")
        guard case .push = machine.received(.push([bulk("message"), bulk("ch"), bulk("hi")])) else {
            Issue.record("a push is not a reply")
            return
        }
        #expect(machine.received(bulk("two")).succeeded?.2 == bulk("two"))
        #expect(machine.received(bulk("three")).succeeded?.1 == "p3")
        #expect(machine.inFlight == 0)
    }

    @Test("a command cancelled in the middle of a pipeline: its caller fails at once, its reply is dropped, the rest are answered")
    func cancelInPipeline() {
        var machine = active()
        for id in 1...3 { _ = machine.send(id: UInt64(id), promise: "p\(id)", expectsReply: true) }
        #expect(machine.cancel(id: 2) == "p2")
        #expect(machine.cancel(id: 2) == nil, "once")
        #expect(machine.inFlight == 3, "its reply still holds its place")
        #expect(machine.received(bulk("one")).succeeded?.1 == "p1")
        guard case .discard(let dropped) = machine.received(bulk("two")) else {
            Issue.record("the cancelled reply is dropped")
            return
        }
        #expect(dropped == 2)
        #expect(machine.received(bulk("three")).succeeded?.1 == "p3")
        #expect(machine.cancel(id: 3) == nil, "answered already")
        #expect(!machine.isClosed)
    }

    @Test("closing fails every waiting caller once (not the cancelled), and later commands fail with the reason")
    func closeWithPending() {
        var machine = active()
        for id in 1...3 { _ = machine.send(id: UInt64(id), promise: "p\(id)", expectsReply: true) }
        _ = machine.cancel(id: 1)
        let reason = RedisError(.connectionClosed, "gone")
        let closed = machine.close(reason)
        #expect(closed.failing == ["p2", "p3"])
        #expect(!closed.duringHandshake)
        #expect(machine.close(reason).failing.isEmpty, "once")
        guard case .fail(let error) = machine.send(id: 4, promise: "p4", expectsReply: true) else {
            Issue.record("a closed connection refuses commands")
            return
        }
        #expect(error.message == "gone")
        guard case .none = machine.received(bulk("late")) else {
            Issue.record("nothing is delivered after the close")
            return
        }
    }

    @Test("a late reply closes the connection, failing every waiting caller; nothing late, nothing closed")
    func deadlines() {
        var machine = active()
        _ = machine.send(id: 1, promise: "p1", expectsReply: true, deadline: 1_000)
        _ = machine.send(id: 2, promise: "p2", expectsReply: true, deadline: 2_000)
        #expect(machine.hasDeadlines)
        _ = machine.received(bulk("one"))
        let late = RedisError(.commandTimeout, "late")
        #expect(machine.expired(now: 1_500, error: late) == nil, "the first was answered in time, the second is not due")
        #expect(machine.expired(now: 2_000, error: late)?.failing == ["p2"])
        #expect(machine.isClosed)

        var open = active()
        _ = open.send(id: 1, promise: "p1", expectsReply: true)
        #expect(!open.hasDeadlines && open.expired(now: .max, error: late) == nil, "no deadline, never late")
    }

    @Test("a reply with no command waiting breaks the protocol; on a RESP2 subscriber an array is a push")
    func unsolicited() {
        var machine = active()
        #expect(machine.received(bulk("stray")).failure?.code == .protocolError)
        #expect(machine.isClosed)

        var subscriber = active(unsolicitedArraysArePushes: true)
        guard case .push = subscriber.received(.array([bulk("message"), bulk("ch"), bulk("hi")])) else {
            Issue.record("a RESP2 message is a push")
            return
        }
        #expect(subscriber.send(id: 1, promise: "sub", expectsReply: false).isWriteWithoutReply)
        #expect(subscriber.inFlight == 0)
        // A refused SSUBSCRIBE (sent without a reply expected) goes to the subscriber to weigh.
        guard case .push(let refusal) = subscriber.received(.simpleError(ByteBuffer(string: "MOVED 12 127.0.0.1:7001"))) else {
            Issue.record("an error with no command waiting is the subscriber's to weigh")
            return
        }
        #expect(refusal.errorMessage == "MOVED 12 127.0.0.1:7001")
        #expect(!subscriber.isClosed)
        #expect(machine.isClosed, "an ordinary connection still closes on one")
    }

    @Test("on a RESP2 subscriber, a message arriving while a PING waits is still a push; the PING gets its pong")
    func subscriberPing() {
        var subscriber = active(unsolicitedArraysArePushes: true)
        _ = subscriber.send(id: 1, promise: "ping", expectsReply: true)
        guard case .push = subscriber.received(.array([bulk("message"), bulk("ch"), bulk("hi")])) else {
            Issue.record("the message is a push, not the PING's reply")
            return
        }
        guard case .succeed(let id, let promise, let value) = subscriber.received(.array([bulk("pong"), bulk("")])) else {
            Issue.record("the pong answers the PING")
            return
        }
        #expect(id == 1 && promise == "ping" && value == .array([bulk("pong"), bulk("")]))
        #expect(subscriber.inFlight == 0)
    }

    @Test("the connection closing during the handshake fails the handshake")
    func closeDuringHandshake() {
        var machine = Machine(handshake: .init(RedisConfiguration(endpoint: .tcp(host: "h", port: 1))))
        _ = machine.channelActive()
        #expect(machine.close(RedisError(.connectionClosed, "reset")).duringHandshake)
    }
}

extension Machine.SendAction {
    var isWrite: Bool {
        if case .write = self { return true }
        return false
    }
    var isWriteWithoutReply: Bool {
        if case .writeWithoutReply = self { return true }
        return false
    }
}
