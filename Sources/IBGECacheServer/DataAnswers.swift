public import HTTPTypes
public import NIOCore
public import TieredCache

/// How every data answer (`/api/v1/localidades/...`, `/api/v3/agregados/...`) is written,
/// shared by the router and the L1 fast path so both give byte-identical answers:
/// - CORS as IBGE does it: `Access-Control-Allow-Origin: *` on every data answer, our errors too
///   (not the router's own answer to a method no data route takes);
/// - HTTP caching: a strong `ETag` from the value's tag (computed when it was stored), 304 for
///   a matching `If-None-Match`, `Cache-Control: public, max-age=<seconds still fresh>` (and
///   `stale-if-error` for the grace period the fail-safe serves stale values in);
/// - errors are `no-store`.
///
/// `max-age` counts down as the value ages (a shared cache downstream keeps it no longer than
/// we would), so no `Age` header is sent: with the remaining lifetime in `max-age`, an `Age`
/// would be subtracted a second time.
public struct DataAnswers: Sendable {
    /// `Content-Type` of every data answer.
    public static let jsonContentType = "application/json; charset=utf-8"
    /// Methods a data path answers (the preflight's `Access-Control-Allow-Methods`).
    public static let allowedMethods = "GET, HEAD, OPTIONS"
    /// How long a browser may keep a preflight's answer (`Access-Control-Max-Age`, seconds).
    public static let preflightMaxAge = 86_400
    /// `Server` header: the application's server name, which Hummingbird writes on the router's answers.
    public static let serverName = "ibge-cache"
    /// Bodies smaller than this are sent as they are, even to clients that accept gzip.
    public static let gzipMinimumBytes = 1024

    /// Seconds a stale answer may be used when the origin fails (the cache's grace period).
    public let staleIfErrorSeconds: Int64

    /// Creates the policy; `gracePeriod` is how long the cache keeps serving a stale value when
    /// the source fails.
    public init(gracePeriod: Duration) {
        self.staleIfErrorSeconds = gracePeriod.components.seconds
    }

    /// A data answer ready to write: status, headers (before `Date` and `Server`) and body
    /// (empty for a 304).
    public struct Answer: Sendable {
        /// 200 or 304.
        public var status: HTTPResponse.Status
        /// The headers, `Content-Length` included.
        public var fields: HTTPFields
        /// The body (empty for a 304).
        public var body: ByteBuffer
    }

    /// The answer to a GET or HEAD (whose `If-None-Match` is `ifNoneMatch`) for a
    /// representation: the plain value, or its gzip variant when `gzip` is given. Freshness
    /// comes from the plain value (the variant is keyed by the plain value's tag, so it is fresh
    /// exactly as long).
    public func answer(ifNoneMatch: String?, plain: CachedValue, gzip: CachedValue?, now: Int64) -> Answer {
        let representation = gzip ?? plain
        let etag = Self.etag(representation.tag)
        var fields = HTTPFields()
        fields.reserveCapacity(9)
        fields.append(HTTPField(name: .contentType, value: Self.jsonContentType))
        if gzip != nil { fields.append(HTTPField(name: .contentEncoding, value: "gzip")) }
        fields.append(HTTPField(name: .vary, value: "Accept-Encoding"))
        fields.append(HTTPField(name: .eTag, value: etag))
        fields.append(HTTPField(name: .cacheControl, value: cacheControl(freshSeconds: plain.freshSeconds(now: now))))
        fields.append(HTTPField(name: .accessControlAllowOrigin, value: "*"))
        fields.append(HTTPField(name: .contentLength, value: String(representation.value.readableBytes)))
        if let condition = ifNoneMatch, Self.ifNoneMatch(condition, matches: etag) {
            return Answer(status: .notModified, fields: fields, body: ByteBuffer())
        }
        return Answer(status: .ok, fields: fields, body: representation.value)
    }

    /// `Cache-Control` for a value fresh for `freshSeconds` more.
    func cacheControl(freshSeconds: Int64) -> String {
        staleIfErrorSeconds > 0
            ? "public, max-age=\(freshSeconds), stale-if-error=\(staleIfErrorSeconds)"
            : "public, max-age=\(freshSeconds)"
    }

    /// Whether a request target is on a data path (the IBGE mirror's, which carry CORS).
    public static func isDataPath(_ target: String) -> Bool {
        target.hasPrefix("/api/v1/localidades") || target.hasPrefix("/api/v3/agregados")
    }

    /// Headers of a data error: CORS (so the browser app can read the message) and `no-store`.
    public static let errorFields: HTTPFields = [.accessControlAllowOrigin: "*", .cacheControl: "no-store"]

    /// Headers of the answer to `OPTIONS` on a data path (a CORS preflight): the methods, the
    /// request headers the browser asked for (when they are a plain list of header names),
    /// and how long to keep the answer.
    public static func preflightFields(requestFields: HTTPFields) -> HTTPFields {
        var fields: HTTPFields = [
            .accessControlAllowOrigin: "*",
            .accessControlAllowMethods: allowedMethods,
            .accessControlMaxAge: String(preflightMaxAge),
            .allow: allowedMethods,
        ]
        if let asked = requestFields[.accessControlRequestHeaders], asked.utf8.count <= 1024,
            asked.utf8.allSatisfy({ isHeaderNameByte($0) || $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: " ") })
        {
            fields[.accessControlAllowHeaders] = asked
            fields[.vary] = "Access-Control-Request-Headers"
        }
        return fields
    }

    private static func isHeaderNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }

    // MARK: - Validators

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The strong entity tag of a value's tag: `"` + 16 hex digits + `"`.
    public static func etag(_ tag: UInt64) -> String {
        String(unsafeUninitializedCapacity: 18) { buffer in
            buffer[0] = UInt8(ascii: "\"")
            for i in 0..<16 {
                buffer[1 + i] = hexDigits[Int(truncatingIfNeeded: (tag >> UInt64(60 - 4 * i)) & 0xF)]
            }
            buffer[17] = UInt8(ascii: "\"")
            return 18
        }
    }

    /// Whether an `If-None-Match` value matches `etag`: `*`, or a list naming it (compared
    /// weakly, as RFC 9110 says for `If-None-Match`: a `W/` prefix is ignored).
    public static func ifNoneMatch(_ condition: String, matches etag: String) -> Bool {
        for item in condition.utf8.split(separator: UInt8(ascii: ",")) {
            var candidate = item.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            while let last = candidate.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { candidate = candidate.dropLast() }
            if candidate.elementsEqual("*".utf8) { return true }
            if candidate.starts(with: "W/".utf8) { candidate = candidate.dropFirst(2) }
            if candidate.elementsEqual(etag.utf8) { return true }
        }
        return false
    }

    // MARK: - Content negotiation

    /// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, with a `q` above 0).
    public static func acceptsGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace() }
            guard let coding = parts.first?.lowercased(), coding == "gzip" || coding == "*" else { continue }
            let quality = parts.dropFirst().first { $0.lowercased().hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            return quality > 0
        }
        return false
    }

    /// The cache key of a value's gzip variant: keyed by the plain value's tag, so a changed
    /// value never meets an old variant.
    public static func gzipKey(_ key: String, plainTag: UInt64) -> String {
        key + "|gzip|" + String(plainTag, radix: 16)
    }
}
