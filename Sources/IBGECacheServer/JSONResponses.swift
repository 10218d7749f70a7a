import Foundation
import Hummingbird
import IBGE
import NIOCore

extension Response {
    /// IBGE's JSON bytes as they are (no decode, no re-encode).
    static func ibgeJSON(_ body: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: body))
    }

    /// An encodable value as compact JSON.
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        do {
            let data = try encoder.encode(value)
            return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            return Response(
                status: .internalServerError, headers: fields,
                body: .init(byteBuffer: ByteBuffer(string: "{\"success\":false,\"error\":\"response encoding failed\"}")))
        }
    }

    /// `{"success": false, "error": message}` with a status.
    static func error(_ message: String, status: HTTPResponse.Status, headers: HTTPFields = [:]) -> Response {
        json(ErrorBody(error: message), status: status, headers: headers)
    }
}

/// The error body of every endpoint, as the original service's admin API writes it.
struct ErrorBody: Encodable {
    var success = false
    var error: String
}

extension IBGEError {
    /// The HTTP status for this failure.
    var status: HTTPResponse.Status {
        if code == .upstreamFailed, let upstream = upstreamStatus, (400..<500).contains(upstream), upstream != 429 {
            return HTTPResponse.Status(code: upstream)
        }
        return switch code {
        case .badRequest: .badRequest
        case .notServed: .notFound
        case .upstreamTimeout: .gatewayTimeout
        case .upstreamFailed: .badGateway
        default: .internalServerError
        }
    }
}
