import RESP

/// A failure of the Redis client: what failed, and the server's or system's words for it.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure, so callers can tell a timeout from a server error.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: Hashable, Sendable {
            case invalidConfiguration, connectTimeout, connectFailed, handshakeFailed, authenticationFailed
            case commandTimeout, poolTimeout, connectionClosed, cancelled, serverError, protocolError, unexpectedReply, clientShutdown
        }
        let base: Base

        /// The configuration (URL, option) is not valid.
        public static let invalidConfiguration = Code(base: .invalidConfiguration)
        /// The TCP or unix-socket connection was not established in time.
        public static let connectTimeout = Code(base: .connectTimeout)
        /// The connection could not be established (refused, unreachable, no such socket).
        public static let connectFailed = Code(base: .connectFailed)
        /// The server did not complete the handshake (HELLO, SELECT) correctly.
        public static let handshakeFailed = Code(base: .handshakeFailed)
        /// The server refused the credentials.
        public static let authenticationFailed = Code(base: .authenticationFailed)
        /// A command got no reply within its timeout.
        public static let commandTimeout = Code(base: .commandTimeout)
        /// No connection could take the command in time (all being opened, or all full).
        public static let poolTimeout = Code(base: .poolTimeout)
        /// The connection closed before the reply arrived.
        public static let connectionClosed = Code(base: .connectionClosed)
        /// The caller stopped waiting (its task was cancelled, or its answer came too late); the
        /// connection is still usable.
        public static let cancelled = Code(base: .cancelled)
        /// The server answered with an error reply (its text is in ``RedisError/message``).
        public static let serverError = Code(base: .serverError)
        /// The server sent bytes that are not valid RESP, or broke a decoder limit.
        public static let protocolError = Code(base: .protocolError)
        /// The reply had a type the command does not return.
        public static let unexpectedReply = Code(base: .unexpectedReply)
        /// The client was shut down.
        public static let clientShutdown = Code(base: .clientShutdown)

        /// Every kind, for metrics that count each.
        static let all: [Code] = [
            .invalidConfiguration, .connectTimeout, .connectFailed, .handshakeFailed, .authenticationFailed, .commandTimeout, .poolTimeout,
            .connectionClosed, .cancelled, .serverError, .protocolError, .unexpectedReply, .clientShutdown,
        ]

        public var description: String {
            switch base {
            case .invalidConfiguration: "invalid configuration"
            case .connectTimeout: "connect timeout"
            case .connectFailed: "connect failed"
            case .handshakeFailed: "handshake failed"
            case .authenticationFailed: "authentication failed"
            case .commandTimeout: "command timeout"
            case .poolTimeout: "pool timeout"
            case .connectionClosed: "connection closed"
            case .cancelled: "cancelled"
            case .serverError: "server error"
            case .protocolError: "protocol error"
            case .unexpectedReply: "unexpected reply"
            case .clientShutdown: "client shut down"
            }
        }
    }

    /// What failed.
    public let code: Code
    /// Details: the server's error text, the system error, the command.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `true` for failures of the connection or of time (not the server's answer to a command):
    /// the kind that should make a cache stop relying on Redis for a while.
    public var isConnectivityFailure: Bool {
        switch code.base {
        case .connectTimeout, .connectFailed, .handshakeFailed, .authenticationFailed, .commandTimeout, .poolTimeout, .connectionClosed,
            .protocolError, .clientShutdown:
            true
        case .invalidConfiguration, .serverError, .unexpectedReply, .cancelled:
            false
        }
    }

    /// `true` when the command cannot have reached the server (no connection could be had):
    /// sending it again elsewhere runs it at most once.
    var commandWasNotSent: Bool {
        switch code.base {
        case .connectTimeout, .connectFailed, .handshakeFailed, .poolTimeout: true
        default: false
        }
    }

    /// `true` when the command may have run but its reply was lost (the connection closed, the
    /// reply was late): only a command without effects may be sent again.
    var replyWasLost: Bool {
        code == .connectionClosed || code == .commandTimeout
    }

    /// The error prefix of a server error reply (`ERR`, `WRONGTYPE`, `NOSCRIPT`, ...).
    public var serverErrorPrefix: String? {
        guard code == .serverError else { return nil }
        return message.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String { "Redis \(code): \(message)" }

    static func unexpected(_ value: RESPValue, for command: String) -> RedisError {
        RedisError(.unexpectedReply, "\(command) returned \(value)")
    }
}
