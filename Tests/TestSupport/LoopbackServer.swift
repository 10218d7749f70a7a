import NIOCore
import NIOPosix

/// A TCP server on 127.0.0.1 that plays a broken Redis: it accepts connections and then either
/// never answers, or answers every read with fixed bytes.
public final class LoopbackServer: Sendable {
    /// The port it listens on.
    public let port: Int
    private let channel: any Channel

    /// Starts a server; `reply` nil means it never answers.
    public static func start(reply: [UInt8]? = nil) async throws -> LoopbackServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let reply { try channel.pipeline.syncOperations.addHandler(FixedReplyHandler(reply: reply)) }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return LoopbackServer(channel: channel, port: channel.localAddress?.port ?? 0)
    }

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    /// Stops listening.
    public func stop() async {
        try? await channel.close()
    }
}

private final class FixedReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let reply: [UInt8]
    init(reply: [UInt8]) { self.reply = reply }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply)), promise: nil)
    }
}
