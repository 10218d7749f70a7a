import DequeModule
import RESP

/// The state of one Redis connection as a value, with no I/O: the handshake, the commands in
/// flight, cancellations and the close. ``RedisChannelHandler`` feeds it what happens on the
/// channel and carries out what it answers; tests drive it directly.
///
/// - The handshake is a sequence of states: `HELLO 3` (with `AUTH` and `SETNAME`); when the
///   server refuses it (Redis < 6, or no RESP3), RESP2 with `AUTH` and `CLIENT SETNAME`; then
///   `SELECT` when a database other than 0 is wanted. Authentication errors fail it at once.
/// - Redis answers in order, so commands wait in a queue. A cancelled command stays in the
///   queue without its caller: its reply is read and dropped, and the connection stays usable.
/// - Pushes (RESP3 `>`) never take a command's reply; on a RESP2 subscriber, arrays that come
///   with no command waiting are pushes too, and so are a subscriber's error replies with no
///   command waiting (a refused `SSUBSCRIBE`).
/// - Closing fails every caller still waiting, once; later commands fail with the reason.
///
/// `Promise` is what completes a caller (an `EventLoopPromise` in the handler, plain values in tests).
struct RedisConnectionStateMachine<Promise> {
    /// What the handshake sends.
    struct Handshake {
        /// `HELLO 3 [AUTH user pass] [SETNAME name]`.
        var hello: RESPCommand
        /// The RESP2 steps when HELLO is refused: `AUTH`, `CLIENT SETNAME`.
        var fallback: [RESPCommand]
        /// `SELECT db`, when the database is not 0.
        var select: RESPCommand?
        /// `READONLY`, on a cluster replica that serves reads.
        var readOnly: RESPCommand?

        init(hello: RESPCommand, fallback: [RESPCommand], select: RESPCommand?, readOnly: RESPCommand? = nil) {
            self.hello = hello
            self.fallback = fallback
            self.select = select
            self.readOnly = readOnly
        }

        /// What follows HELLO (or the RESP2 steps).
        var after: [RESPCommand] { [select, readOnly].compactMap { $0 } }

        /// The handshake a configuration asks for.
        init(_ configuration: RedisConfiguration) {
            var hello = RESPCommand("HELLO", "3")
            var fallback: [RESPCommand] = []
            if let password = configuration.password {
                hello.append("AUTH")
                hello.append(configuration.username ?? "default")
                hello.append(password)
                var auth = RESPCommand("AUTH")
                if let user = configuration.username { auth.append(user) }
                auth.append(password)
                fallback.append(auth)
            }
            if let name = configuration.clientName {
                hello.append("SETNAME")
                hello.append(name)
                fallback.append(RESPCommand("CLIENT", "SETNAME", name))
            }
            self.init(
                hello: hello, fallback: fallback,
                select: configuration.database == 0 ? nil : RESPCommand("SELECT", String(configuration.database)),
                readOnly: configuration.sendsReadOnly ? RESPCommand("READONLY") : nil)
        }
    }

    enum State {
        /// Connected or not, nothing sent yet.
        case idle(Handshake)
        /// Waiting for HELLO's reply.
        case hello(Handshake)
        /// Waiting for the reply to `current`; `remaining` come after it.
        case steps(current: RESPCommand, remaining: [RESPCommand], protocolVersion: Int)
        /// Ready for commands.
        case active(protocolVersion: Int)
        /// Closed, for this reason.
        case closed(RedisError)
    }

    /// What the handshake needs done.
    enum HandshakeAction {
        /// Write this command.
        case write(RESPCommand)
        /// The connection is ready, speaking this protocol version.
        case completed(protocolVersion: Int)
        /// The handshake failed: close the connection.
        case failed(RedisError)
    }

    /// What a value from the server means.
    enum ReceiveAction {
        /// Nothing to do.
        case none
        /// A handshake step.
        case handshake(HandshakeAction)
        /// The reply to command `id`: complete its caller.
        case succeed(id: UInt64, Promise, RESPValue)
        /// The reply to command `id`, whose caller left (cancelled): drop it.
        case discard(id: UInt64)
        /// An out-of-band message (pub/sub).
        case push(RESPValue)
        /// The server broke the protocol: close, failing these callers.
        case close(RedisError, failing: [Promise])
    }

    /// What to do with a command to send.
    enum SendAction {
        /// Write it; its reply completes it.
        case write
        /// Write it; it gets no reply (SUBSCRIBE and friends are confirmed by pushes).
        case writeWithoutReply
        /// Do not write it: fail its caller.
        case fail(RedisError)
    }

    /// What closing did.
    struct CloseAction {
        /// Callers to fail with the reason.
        var failing: [Promise]
        /// Whether the handshake was still under way (it fails too).
        var duringHandshake: Bool
    }

    private struct Pending {
        var id: UInt64
        /// Nil once the caller cancelled.
        var promise: Promise?
        /// When its reply is late (uptime nanoseconds; `.max` for never).
        var deadline: UInt64
    }

    private(set) var state: State
    private var pending = Deque<Pending>()
    /// Whether arrays that arrive with no command waiting are pushes (a RESP2 subscriber).
    private let unsolicitedArraysArePushes: Bool
    /// The first element of a RESP2 subscriber's pushes (a PING's reply there is `pong`).
    static var subscriberPushKinds: Set<String> {
        ["message", "pmessage", "smessage", "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe"]
    }

    init(handshake: Handshake, unsolicitedArraysArePushes: Bool = false) {
        self.state = .idle(handshake)
        self.unsolicitedArraysArePushes = unsolicitedArraysArePushes
    }

    /// Commands written and not answered yet (cancelled ones included: they still hold their
    /// place in the server's queue).
    var inFlight: Int { pending.count }

    /// Whether the connection is closed.
    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    // MARK: - Events

    /// The channel is connected: start the handshake.
    mutating func channelActive() -> HandshakeAction? {
        guard case .idle(let handshake) = state else { return nil }
        state = .hello(handshake)
        return .write(handshake.hello)
    }

    /// A caller wants `id` sent; its reply is late after `deadline` (uptime nanoseconds).
    mutating func send(id: UInt64, promise: Promise, expectsReply: Bool, deadline: UInt64 = .max) -> SendAction {
        switch state {
        case .active:
            guard expectsReply else { return .writeWithoutReply }
            pending.append(Pending(id: id, promise: promise, deadline: deadline))
            return .write
        case .idle, .hello, .steps:
            return .fail(RedisError(.connectionClosed, "the connection is not ready: its handshake has not finished"))
        case .closed(let error):
            return .fail(error)
        }
    }

    /// The server sent `value`.
    mutating func received(_ value: RESPValue) -> ReceiveAction {
        switch state {
        case .idle:
            return close(RedisError(.protocolError, "the server spoke first: \(value)"))
        case .hello(let handshake):
            if case .push = value { return .none }
            if let message = value.errorMessage {
                if Self.isAuthenticationError(message) { return handshakeFailed(RedisError(.authenticationFailed, message)) }
                // Redis < 6 does not know HELLO; a server may also refuse protocol 3 (NOPROTO).
                return nextStep(handshake.fallback + handshake.after, protocolVersion: 2)
            }
            return nextStep(handshake.after, protocolVersion: 3)
        case .steps(let current, let remaining, let version):
            if case .push = value { return .none }
            if let message = value.errorMessage {
                if Self.isAuthenticationError(message) { return handshakeFailed(RedisError(.authenticationFailed, message)) }
                return handshakeFailed(RedisError(.handshakeFailed, "\(current.name): \(message)"))
            }
            return nextStep(remaining, protocolVersion: version)
        case .active:
            if case .push = value { return .push(value) }
            // A RESP2 subscriber's messages are arrays like replies: told apart by their kind,
            // so one arriving while a PING waits is not taken for the PING's reply.
            if unsolicitedArraysArePushes, case .array(let elements) = value, let kind = elements.first?.string?.lowercased(),
                Self.subscriberPushKinds.contains(kind)
            {
                return .push(value)
            }
            guard let first = pending.popFirst() else {
                if unsolicitedArraysArePushes, case .array = value { return .push(value) }
                // A subscriber's refused SSUBSCRIBE (sent without waiting for a reply): its owner
                // weighs the error.
                if unsolicitedArraysArePushes, value.errorMessage != nil { return .push(value) }
                return close(RedisError(.protocolError, "reply with no command waiting for it: \(value)"))
            }
            guard let promise = first.promise else { return .discard(id: first.id) }
            return .succeed(id: first.id, promise, value)
        case .closed:
            return .none
        }
    }

    /// The caller of `id` left: returns its promise to fail now (nil when it was answered
    /// already, or is not known). Its reply will be dropped when it comes.
    mutating func cancel(id: UInt64) -> Promise? {
        guard let index = pending.firstIndex(where: { $0.id == id }), let promise = pending[index].promise else { return nil }
        pending[index].promise = nil
        return promise
    }

    /// Whether a command in flight has a deadline (a check is worth scheduling).
    var hasDeadlines: Bool { pending.contains { $0.deadline != .max } }

    /// At `now` (uptime nanoseconds): if a command's reply is late, the connection is stuck
    /// (replies come in order, so everything queued behind it is late too): close, failing
    /// every waiting caller with `error`. Nil when nothing is late.
    mutating func expired(now: UInt64, error: RedisError) -> CloseAction? {
        guard pending.contains(where: { $0.deadline != .max && $0.deadline <= now }) else { return nil }
        return close(error)
    }

    /// The connection closes (or must): every waiting caller fails, once.
    mutating func close(_ error: RedisError) -> CloseAction {
        let duringHandshake: Bool
        switch state {
        case .closed: return CloseAction(failing: [], duringHandshake: false)
        case .active: duringHandshake = false
        case .idle, .hello, .steps: duringHandshake = true
        }
        state = .closed(error)
        let failing = pending.compactMap(\.promise)
        pending.removeAll()
        return CloseAction(failing: failing, duringHandshake: duringHandshake)
    }

    // MARK: - Helpers

    private mutating func close(_ error: RedisError) -> ReceiveAction {
        let action: CloseAction = close(error)
        if action.duringHandshake { return .handshake(.failed(error)) }
        return .close(error, failing: action.failing)
    }

    private mutating func handshakeFailed(_ error: RedisError) -> ReceiveAction {
        state = .closed(error)
        return .handshake(.failed(error))
    }

    private mutating func nextStep(_ steps: [RESPCommand], protocolVersion: Int) -> ReceiveAction {
        guard let first = steps.first else {
            state = .active(protocolVersion: protocolVersion)
            return .handshake(.completed(protocolVersion: protocolVersion))
        }
        state = .steps(current: first, remaining: Array(steps.dropFirst()), protocolVersion: protocolVersion)
        return .handshake(.write(first))
    }

    static func isAuthenticationError(_ message: String) -> Bool {
        message.hasPrefix("WRONGPASS") || message.hasPrefix("NOAUTH") || message.hasPrefix("NOPERM")
            || message.contains("invalid password") || message.contains("AUTH <password> called without any password")
            || message.contains("invalid username-password")
    }
}
