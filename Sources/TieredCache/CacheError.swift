/// A failure inside the cache, or of a loader it ran.
public struct CacheError: Error, Sendable, CustomStringConvertible {
    /// Kinds of cache failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: Hashable, Sendable { case invalidEnvelope, loaderTimeout }
        let base: Base
        /// A value read from the L2 store is not a valid envelope.
        public static let invalidEnvelope = Code(base: .invalidEnvelope)
        /// The loader did not finish in time.
        public static let loaderTimeout = Code(base: .loaderTimeout)

        public var description: String {
            switch base {
            case .invalidEnvelope: "invalid envelope"
            case .loaderTimeout: "loader timeout"
            }
        }
    }

    /// What failed.
    public let code: Code
    /// Details.
    public let message: String
    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "cache \(code): \(message)" }
}
