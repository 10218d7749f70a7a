import HTTPTypes
import Hummingbird

extension RouterMethods {
    /// Registers `handler` for GET and HEAD on `path`. The HEAD answer is the GET's, headers
    /// and `Content-Length` included; SwiftNIO's response encoder, which saw the request's
    /// method, sends no body for it.
    @discardableResult
    func getAndHead(_ path: RouterPath, use handler: @Sendable @escaping (Request, Context) async throws -> some ResponseGenerator) -> Self {
        on(path, method: .get, use: handler)
        return on(path, method: .head, use: handler)
    }
}
