import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore

/// A bare Hummingbird route returning a file's bytes, for `scripts/bench-http`: what the
/// router alone costs, beside nginx and ibge-cache in the same run.
struct BenchHTTPBaseline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http-baseline",
        abstract: "Serve one file's bytes from a bare Hummingbird route (GET /fixed), for scripts/bench-http."
    )

    @Option(help: "Port to listen on (127.0.0.1).")
    var port: Int = 8099

    @Option(help: "The file whose bytes every answer carries.")
    var file: String

    func run() async throws {
        let body = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: file)))
        let router = Router()
        router.get("/fixed") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: body))
        }
        var logger = Logger(label: "http-baseline")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        try await app.runService()
    }
}
