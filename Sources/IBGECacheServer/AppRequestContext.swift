public import Hummingbird
public import NIOCore

/// The request context of the server: Hummingbird's core context plus the client's address,
/// which the admin rule needs (without a token, only loopback clients may change state), and
/// where a data handler says which tier answered (for the access log and the request metrics).
public struct AppRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's per-request storage.
    public var coreContext: CoreRequestContextStorage
    /// The connected client's address.
    public let remoteAddress: SocketAddress?
    /// The tier that answered, set by the data routes.
    public let answer: AnswerTierCell

    /// Creates the context for a request on a channel.
    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.answer = AnswerTierCell()
    }
}
