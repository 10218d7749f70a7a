/// A failure answering an IBGE request; the HTTP layer maps each code to a status.
public struct IBGEError: Error, Sendable, CustomStringConvertible {
    /// Kinds of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: Hashable, Sendable { case badRequest, notServed, upstreamFailed, upstreamTimeout, snapshotUnavailable }
        let base: Base
        /// The request is malformed (a letter in a município id, a wrong digit count, ...): 400.
        public static let badRequest = Code(base: .badRequest)
        /// A valid-looking path this service does not answer (outside the snapshot or the allow-list): 404.
        public static let notServed = Code(base: .notServed)
        /// The upstream failed and nothing cached could answer: 502.
        public static let upstreamFailed = Code(base: .upstreamFailed)
        /// The upstream did not answer in time and nothing cached could answer: 504.
        public static let upstreamTimeout = Code(base: .upstreamTimeout)
        /// The embedded snapshot could not be read (a broken build): 500.
        public static let snapshotUnavailable = Code(base: .snapshotUnavailable)

        public var description: String {
            switch base {
            case .badRequest: "bad request"
            case .notServed: "not served"
            case .upstreamFailed: "upstream failed"
            case .upstreamTimeout: "upstream timeout"
            case .snapshotUnavailable: "snapshot unavailable"
            }
        }
    }

    /// What failed.
    public let code: Code
    /// A sentence for the client.
    public let message: String
    /// The upstream's HTTP status, when it answered with one other than 200.
    public let upstreamStatus: Int?

    /// Creates an error.
    public init(_ code: Code, _ message: String, upstreamStatus: Int? = nil) {
        self.code = code
        self.message = message
        self.upstreamStatus = upstreamStatus
    }

    public var description: String { message }
}
