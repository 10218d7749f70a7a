import Utilities
/// A level of the localidades hierarchy, named as in the API's paths.
public enum LocalidadesLevel: String, Sendable, Hashable, CaseIterable {
    case regioes
    case estados
    case mesorregioes
    case microrregioes
    case regioesIntermediarias = "regioes-intermediarias"
    case regioesImediatas = "regioes-imediatas"
    case municipios

    /// How many digits an id of this level has.
    public var idDigits: Int {
        switch self {
        case .regioes: 1
        case .estados: 2
        case .mesorregioes, .regioesIntermediarias: 4
        case .microrregioes: 5
        case .regioesImediatas: 6
        case .municipios: 7
        }
    }

    /// The singular noun, for error messages.
    var singular: String {
        switch self {
        case .regioes: "região"
        case .estados: "UF"
        case .mesorregioes: "mesorregião"
        case .microrregioes: "microrregião"
        case .regioesIntermediarias: "região intermediária"
        case .regioesImediatas: "região imediata"
        case .municipios: "município"
        }
    }

    /// The levels below this one that `/{self}/{ids}/{child}` may name.
    public var children: [LocalidadesLevel] {
        switch self {
        case .regioes: [.estados, .mesorregioes, .microrregioes, .regioesIntermediarias, .regioesImediatas, .municipios]
        case .estados: [.mesorregioes, .microrregioes, .regioesIntermediarias, .regioesImediatas, .municipios]
        case .mesorregioes: [.microrregioes, .municipios]
        case .microrregioes: [.municipios]
        case .regioesIntermediarias: [.regioesImediatas, .municipios]
        case .regioesImediatas: [.municipios]
        case .municipios: []
        }
    }
}

/// One id in a request path: a numeric code, or a UF sigla this service does not know.
public enum LocalidadeID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// A numeric IBGE code.
    case code(Int)
    /// A two-letter UF abbreviation that matches no UF (answers `[]`, as IBGE does for unknown ids).
    case unknownSigla(String)

    public var description: String {
        switch self {
        case .code(let n): String(n)
        case .unknownSigla(let s): s
        }
    }
}

/// A request for the localidades API (`/api/v1/localidades/...`), validated and in canonical
/// form: UF siglas resolved to codes, ids de-duplicated and sorted, only the query parameters that change the
/// answer kept. Its ``cacheKey`` is the same for every spelling of the same question.
public struct LocalidadesRequest: Sendable, Hashable {
    /// The collection.
    public var level: LocalidadesLevel
    /// The ids asked for (sorted), or nil for the whole collection.
    public var ids: [LocalidadeID]?
    /// The child collection asked for (`/estados/42/municipios`), or nil.
    public var child: LocalidadesLevel?
    /// `orderBy=nome`.
    public var orderByName: Bool
    /// `view=nivelado`.
    public var flat: Bool

    /// The most ids one request may name.
    public static let maximumIDs = 1000

    /// Whether the answer is one object rather than an array (one id, no `|`, no child).
    public var isSingleObject: Bool { child == nil && ids?.count == 1 && !joinedIDs }
    /// Whether the ids were joined with `|` (the answer is an array, even of one id).
    public var isJoined: Bool { joinedIDs }
    private var joinedIDs: Bool

    /// Creates a request.
    public init(level: LocalidadesLevel, ids: [LocalidadeID]? = nil, child: LocalidadesLevel? = nil, orderByName: Bool = false, flat: Bool = false) {
        self.level = level
        // One key per id set: every order and repetition of the same ids is the same request
        // (IBGE answers each id once however often it is named).
        self.ids = ids.map { Array(Set($0)).sorted() }
        self.child = child
        self.orderByName = orderByName
        self.flat = flat
        self.joinedIDs = (ids?.count ?? 0) > 1
    }

    /// Parses the part of a path after `/api/v1/localidades/` and the query parameters.
    ///
    /// - Parameter siglas: UF sigla (upper case) to code.
    /// - Throws: ``IBGEError`` `badRequest` for malformed ids or parameters, `notServed` for
    ///   paths outside the localidades levels this service knows.
    public init(path: String, query: [(String, String)], siglas: [String: Int]) throws(IBGEError) {
        let components = path.split(separator: "/", omittingEmptySubsequences: true).map { PercentDecoding.lenient($0) }
        guard let first = components.first else {
            throw IBGEError(.notServed, "no localidades collection named; try /api/v1/localidades/estados")
        }
        guard components.count <= 3, let level = LocalidadesLevel(rawValue: first) else {
            throw IBGEError(.notServed, "/api/v1/localidades/\(path) is not served from the embedded snapshot")
        }
        var ids: [LocalidadeID]?
        if components.count >= 2 {
            let tokens = components[1].split(separator: "|", omittingEmptySubsequences: false)
            guard tokens.count <= Self.maximumIDs else {
                throw IBGEError(.badRequest, "too many ids (\(tokens.count)); at most \(Self.maximumIDs) per request")
            }
            ids = try tokens.map { token throws(IBGEError) in try Self.parseID(String(token), level: level, siglas: siglas) }
        }
        var child: LocalidadesLevel?
        if components.count == 3 {
            guard let named = LocalidadesLevel(rawValue: components[2]), level.children.contains(named) else {
                throw IBGEError(.notServed, "/api/v1/localidades/\(path) is not served from the embedded snapshot")
            }
            child = named
        }
        var orderByName = false
        var flat = false
        for (name, value) in query {
            switch name {
            case "orderBy":
                guard value == "nome" else { throw IBGEError(.badRequest, "orderBy supports only 'nome', not '\(value)'") }
                orderByName = true
            case "view":
                guard value == "nivelado" else { throw IBGEError(.badRequest, "view supports only 'nivelado', not '\(value)'") }
                flat = true
            default:
                continue  // Parameters that do not change the answer are not part of the key.
            }
        }
        self.init(level: level, ids: ids, child: child, orderByName: orderByName, flat: flat)
        self.joinedIDs = components.count >= 2 && components[1].contains("|")
    }

    private static func parseID(_ token: String, level: LocalidadesLevel, siglas: [String: Int]) throws(IBGEError) -> LocalidadeID {
        let bytes = Array(token.utf8)
        if level == .estados, bytes.count == 2, bytes.allSatisfy({ ($0 | 0x20) >= UInt8(ascii: "a") && ($0 | 0x20) <= UInt8(ascii: "z") }) {
            let sigla = token.uppercased()
            if let code = siglas[sigla] { return .code(code) }
            return .unknownSigla(sigla)
        }
        guard bytes.count == level.idDigits, bytes.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let n = Int(token) else {
            let shown = token.count > 40 ? String(token.prefix(40)) + "…" : token
            let expected = level == .estados ? "2 digits or a UF sigla" : "\(level.idDigits) digits"
            throw IBGEError(.badRequest, "invalid \(level.singular) id '\(shown)': expected \(expected)")
        }
        return .code(n)
    }

    /// The path in canonical form, without the `/api/v1/localidades/` prefix.
    public var canonicalPath: String {
        var path = level.rawValue
        if let ids { path += "/" + ids.map(\.description).joined(separator: "|") + (joinedIDs && ids.count == 1 ? "|" : "") }
        if let child { path += "/" + child.rawValue }
        var query: [String] = []
        if orderByName { query.append("orderBy=nome") }
        if flat { query.append("view=nivelado") }
        if !query.isEmpty { path += "?" + query.joined(separator: "&") }
        return path
    }

    /// The cache key: `v1:localidades/<canonical path>`.
    public var cacheKey: String { "v1:localidades/" + canonicalPath }
}
