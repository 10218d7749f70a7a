/// A failure inside the cache, or of a loader it ran.
public struct CacheError: Error, Sendable, CustomStringConvertible {
    /// Kinds of cache failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: Hashable, Sendable { case invalidEnvelope, loaderFailed, loaderTimeout, redisUnavailable }
        let base: Base
        /// A value read from Redis is not a valid envelope.
        public static let invalidEnvelope = Code(base: .invalidEnvelope)
        /// The loader threw.
        public static let loaderFailed = Code(base: .loaderFailed)
        /// The loader did not finish in time.
        public static let loaderTimeout = Code(base: .loaderTimeout)
        /// Redis is not reachable (circuit open) for an operation that needs it.
        public static let redisUnavailable = Code(base: .redisUnavailable)

        public var description: String {
            switch base {
            case .invalidEnvelope: "invalid envelope"
            case .loaderFailed: "loader failed"
            case .loaderTimeout: "loader timeout"
            case .redisUnavailable: "redis unavailable"
            }
        }
    }

    /// What failed.
    public let code: Code
    /// Details.
    public let message: String
    /// The loader's own error, for ``Code/loaderFailed``.
    public let underlying: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { "cache \(code): \(message)" }
}
