import Utilities
/// A GET to forward to the IBGE API: an allow-listed path (under `v1/localidades/` or
/// `v3/agregados/`) and its query in canonical form (parameters sorted by name, values
/// percent-decoded then encoded one way), so every spelling of the same question — such as
/// `N6%5B3550308%2C4208203%5D` and `N6[3550308,4208203]` — is one cache key and one upstream call.
public struct UpstreamRequest: Sendable, Hashable {
    /// Which class of data, for its TTL.
    public enum Kind: Sendable, Hashable {
        /// `/api/v1/localidades/...`
        case localidades
        /// `/api/v3/agregados/...`
        case agregados
    }

    /// The path after `/api/`, decoded (`v3/agregados/4709/periodos/2022/variaveis/93`).
    public let path: String
    /// Query parameters, decoded, sorted by name (then value).
    public let query: [QueryItem]
    /// Which class of data.
    public let kind: Kind

    /// One query parameter.
    public struct QueryItem: Sendable, Hashable {
        /// Name.
        public var name: String
        /// Value.
        public var value: String
    }

    /// The longest path and query accepted.
    static let maximumPathBytes = 1024
    static let maximumQueryBytes = 4096
    static let maximumParameters = 32

    /// Validates a path (after `/api/`, as received: percent-encoded or not) and decoded query
    /// parameters.
    ///
    /// - Throws: ``IBGEError`` `notServed` for paths outside the allow-list, `badRequest` for
    ///   paths or queries that are malformed or too long.
    public init(path rawPath: String, query: [(String, String)]) throws(IBGEError) {
        let decoded = PercentDecoding.lenient(rawPath)
        guard decoded.utf8.count <= Self.maximumPathBytes else { throw IBGEError(.badRequest, "path longer than \(Self.maximumPathBytes) bytes") }
        let segments = decoded.split(separator: "/", omittingEmptySubsequences: true)
        guard segments.count >= 3 else { throw IBGEError(.notServed, "/api/\(decoded) is not an IBGE data path this mirror serves") }
        switch (segments[0], segments[1]) {
        case ("v1", "localidades"): kind = .localidades
        case ("v3", "agregados"): kind = .agregados
        default:
            throw IBGEError(.notServed, "/api/\(decoded) is outside the mirror's allow-list (/api/v1/localidades/, /api/v3/agregados/)")
        }
        for segment in segments.dropFirst(2) {
            guard segment != ".", segment != "..",
                segment.unicodeScalars.allSatisfy({ Self.allowedInSegment($0) })
            else { throw IBGEError(.badRequest, "invalid path segment '\(segment.prefix(40))'") }
        }
        path = segments.joined(separator: "/")
        guard query.count <= Self.maximumParameters else { throw IBGEError(.badRequest, "more than \(Self.maximumParameters) query parameters") }
        var size = 0
        var items: [QueryItem] = []
        for (name, value) in query {
            size += name.utf8.count + value.utf8.count + 2
            guard !name.isEmpty, size <= Self.maximumQueryBytes else {
                throw IBGEError(.badRequest, "query longer than \(Self.maximumQueryBytes) bytes")
            }
            items.append(QueryItem(name: name, value: value))
        }
        self.query = items.sorted { ($0.name, $0.value) < ($1.name, $1.value) }
    }

    /// A localidades request in its canonical form.
    public init(_ request: LocalidadesRequest) {
        var canonical = String(request.canonicalPath.prefix { $0 != "?" })
        // One id named with `|` (an array answer): IBGE is asked `id|id`, never `id|`.
        if request.isJoined, let ids = request.ids, ids.count == 1, let id = ids.first {
            canonical = canonical.replacing("/\(id)|", with: "/\(id)|\(id)")
        }
        path = "v1/localidades/" + canonical
        var items: [QueryItem] = []
        if request.orderByName { items.append(QueryItem(name: "orderBy", value: "nome")) }
        if request.flat { items.append(QueryItem(name: "view", value: "nivelado")) }
        query = items
        kind = .localidades
    }

    private static func allowedInSegment(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".", "|", ",", "~", "[", "]": true
        default: scalar.value >= 0xA0 && scalar.properties.isAlphabetic  // names with accents
        }
    }

    /// The canonical query string (`a=1&b=N6%5B1%2C2%5D`), empty when there is none.
    public var canonicalQuery: String {
        query.map { Self.encoded($0.name) + "=" + Self.encoded($0.value) }.joined(separator: "&")
    }

    /// The cache key: `v1:localidades/...` or `v3:agregados/...`, then `?` and the canonical query.
    public var cacheKey: String {
        let versionEnd = path.firstIndex(of: "/") ?? path.endIndex
        var key = path[..<versionEnd] + ":" + path[path.index(after: versionEnd)...].replacing("|", with: "%7C")
        if !query.isEmpty { key += "?" + canonicalQuery }
        return String(key)
    }

    /// The full upstream URL under `baseURL` (`https://servicodados.ibge.gov.br/api`).
    public func url(base baseURL: String) -> String {
        var url = baseURL + "/" + path.split(separator: "/").map { Self.encoded(String($0)) }.joined(separator: "/")
        if !query.isEmpty { url += "?" + canonicalQuery }
        return url
    }

    /// Whether this is the Census 2022 population query the embedded data can answer, and its
    /// `localidades` selector.
    var populationSelector: String? {
        guard path == Population2022.path, query.count == 1, query[0].name == "localidades" else { return nil }
        return query[0].value
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters and `,`.
    static func encoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ","):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hex[Int(byte >> 4)])
                out.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }
}
