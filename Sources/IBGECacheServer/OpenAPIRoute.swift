import Foundation
import Hummingbird
import NIOCore

/// `GET /openapi.json`: the OpenAPI 3.1 description of every route (data, admin and
/// operations), with response schemas and the error shape. It is a file of the package
/// (`Resources/openapi.json`), read once at startup; the test suite runs schemathesis against
/// a live server with it.
struct OpenAPIRoute {
    let document: ByteBuffer

    /// Reads the document from the package's resources.
    init() throws {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json") else {
            throw OpenAPIDocumentMissing()
        }
        document = ByteBuffer(bytes: try Data(contentsOf: url))
    }

    func register(on router: Router<AppRequestContext>) {
        let document = self.document
        router.getAndHead("/openapi.json") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "public, max-age=3600", .accessControlAllowOrigin: "*"],
                body: .init(byteBuffer: document))
        }
    }
}

/// The package was built without its `openapi.json` resource.
struct OpenAPIDocumentMissing: Error, CustomStringConvertible {
    var description: String { "openapi.json is missing from the IBGECacheServer resources" }
}
