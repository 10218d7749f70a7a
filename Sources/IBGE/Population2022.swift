public import Foundation
public import NIOCore

/// Census 2022 resident population (SIDRA agregado 4709, variável 93, período 2022), embedded,
/// answering the population queries of the agregados API in IBGE's own response shape when the
/// upstream cannot (see `Snapshot/PROVENANCE.md`: values as corrected on 2023-12-22).
public struct Population2022: Sendable {
    /// Brazil's population.
    public let brasil: Int
    /// Population per UF code.
    public let ufs: [Int: Int]
    /// Population per município code (5,570: 5101837 did not exist in 2022).
    public let municipios: [Int: Int]

    private struct File: Decodable {
        var brasil: Int
        var ufs: [String: Int]
        var municipios: [String: Int]
    }

    /// The data shipped with this build.
    public static func embedded() throws(IBGEError) -> Population2022 {
        switch embeddedResult {
        case .success(let population): return population
        case .failure(let error): throw error
        }
    }

    private static let embeddedResult: Result<Population2022, IBGEError> = {
        guard let url = Bundle.module.url(forResource: "populacao-2022", withExtension: "json", subdirectory: "Snapshot"),
            let data = try? Data(contentsOf: url)
        else { return .failure(IBGEError(.snapshotUnavailable, "resource Snapshot/populacao-2022.json is missing from the build")) }
        do throws(IBGEError) {
            return .success(try Population2022(data: data))
        } catch {
            return .failure(error)
        }
    }()

    /// Reads the embedded file's shape.
    public init(data: Data) throws(IBGEError) {
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw IBGEError(.snapshotUnavailable, "populacao-2022.json does not decode: \(error)")
        }
        brasil = file.brasil
        ufs = Dictionary(uniqueKeysWithValues: file.ufs.compactMap { key, value in Int(key).map { ($0, value) } })
        municipios = Dictionary(uniqueKeysWithValues: file.municipios.compactMap { key, value in Int(key).map { ($0, value) } })
    }

    /// The path of the population query this data answers: `/api/v3/agregados/4709/periodos/2022/variaveis/93`.
    public static let path = "v3/agregados/4709/periodos/2022/variaveis/93"

    /// One locality of a `localidades=` selector.
    enum Locality: Hashable {
        case brasil
        case uf(Int)
        case municipio(Int)
    }

    /// Parses a SIDRA `localidades` selector: `N1[all]`, `N3[all]`, `N3[42,35]`, `N6[all]`,
    /// `N6[4208203,3550308]`, `N6[N3[42]]`, several joined with `|`. Nil for anything else.
    /// Most `|`-separated parts a selector may have.
    static let maximumParts = 32

    /// Whether `selector` is a population query this type answers (checked without computing
    /// it): at most ``maximumParts`` parts of `N1[all]`, `N3[all|codes]`, `N6[all|codes|N3[codes]]`.
    public static func isSelector(_ selector: String) -> Bool {
        let parts = selector.split(separator: "|")
        guard !parts.isEmpty, parts.count <= maximumParts else { return false }
        for part in parts {
            guard part.count >= 4, part.hasSuffix("]"), let open = part.firstIndex(of: "[") else { return false }
            let level = part[..<open]
            let inside = part[part.index(after: open)..<part.index(before: part.endIndex)]
            func codes(_ text: Substring, digits: Int) -> Bool {
                text.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { $0.count == digits && $0.allSatisfy { $0 >= "0" && $0 <= "9" } }
            }
            switch level {
            case "N1": guard inside == "all" || inside == "1" else { return false }
            case "N3": guard inside == "all" || codes(inside, digits: 2) else { return false }
            case "N6":
                if inside == "all" || codes(inside, digits: 7) { continue }
                guard inside.hasPrefix("N3["), inside.hasSuffix("]"), codes(inside.dropFirst(3).dropLast(), digits: 2) else { return false }
            default: return false
            }
        }
        return true
    }

    /// Most codes a selector may name in all.
    static let maximumCodes = 1000

    /// `selector` in canonical form (parts and codes de-duplicated and sorted, `N1[1]` as
    /// `N1[all]`), so every spelling of the same question is one cache key and one computation;
    /// nil when it is not a selector this type answers, or names more than ``maximumCodes`` codes.
    public static func canonicalSelector(_ selector: String) -> String? {
        guard isSelector(selector) else { return nil }
        var brasil = false
        var allUFs = false
        var allMunicipios = false
        var ufs = Set<Int>()
        var municipios = Set<Int>()
        var municipiosOfUFs = Set<Int>()
        var named = 0
        for part in selector.split(separator: "|") {
            guard let open = part.firstIndex(of: "[") else { return nil }
            let level = part[..<open]
            let inside = part[part.index(after: open)..<part.index(before: part.endIndex)]
            func codes(_ text: Substring) -> [Int] { text.split(separator: ",").compactMap { Int($0) } }
            switch level {
            case "N1": brasil = true
            case "N3":
                if inside == "all" { allUFs = true } else { ufs.formUnion(codes(inside)); named += inside.split(separator: ",").count }
            default:
                if inside == "all" {
                    allMunicipios = true
                } else if inside.hasPrefix("N3[") {
                    let list = inside.dropFirst(3).dropLast()
                    municipiosOfUFs.formUnion(codes(list))
                    named += list.split(separator: ",").count
                } else {
                    municipios.formUnion(codes(inside))
                    named += inside.split(separator: ",").count
                }
            }
            guard named <= maximumCodes else { return nil }
        }
        func list(_ codes: Set<Int>) -> String { codes.sorted().map(String.init).joined(separator: ",") }
        var parts: [String] = []
        if brasil { parts.append("N1[all]") }
        if allUFs { parts.append("N3[all]") } else if !ufs.isEmpty { parts.append("N3[\(list(ufs))]") }
        if allMunicipios {
            parts.append("N6[all]")
        } else {
            if !municipiosOfUFs.isEmpty { parts.append("N6[N3[\(list(municipiosOfUFs))]]") }
            if !municipios.isEmpty { parts.append("N6[\(list(municipios))]") }
        }
        return parts.joined(separator: "|")
    }

    static func localities(_ selector: String, snapshot: IBGESnapshot) -> [Locality]? {
        guard isSelector(selector) else { return nil }
        var result: [Locality] = []
        // A level named twice (`N6[all]|N6[all]|…`) is expanded once.
        var expanded = Set<Substring>()
        for part in selector.split(separator: "|") where expanded.insert(part).inserted {
            guard part.count >= 4, part.hasSuffix("]"), let open = part.firstIndex(of: "[") else { return nil }
            let level = part[..<open]
            let inside = part[part.index(after: open)..<part.index(before: part.endIndex)]
            switch level {
            case "N1":
                guard inside == "all" || inside == "1" else { return nil }
                result.append(.brasil)
            case "N3":
                if inside == "all" {
                    result += snapshot.estados.map { .uf($0.id) }
                } else {
                    for code in inside.split(separator: ",") {
                        guard let n = Int(code), code.count == 2 else { return nil }
                        result.append(.uf(n))
                    }
                }
            case "N6":
                if inside == "all" {
                    result += snapshot.municipios.map { .municipio($0.id) }
                } else if inside.hasPrefix("N3["), inside.hasSuffix("]") {
                    let ufCodes = inside.dropFirst(3).dropLast().split(separator: ",")
                    for code in ufCodes {
                        guard let uf = Int(code) else { return nil }
                        result += snapshot.municipios.filter { $0.uf.id == uf }.map { .municipio($0.id) }
                    }
                } else {
                    for code in inside.split(separator: ",") {
                        guard let n = Int(code), code.count == 7 else { return nil }
                        result.append(.municipio(n))
                    }
                }
            default:
                return nil
            }
        }
        return result
    }

    /// The agregados response for the selector, in IBGE's shape (numbers as strings, localities
    /// in the order IBGE lists them: by level, then by code), or nil when the selector is not one
    /// this data can answer.
    public func body(localidades selector: String, snapshot: IBGESnapshot) -> ByteBuffer? {
        guard let localities = Self.localities(selector, snapshot: snapshot), !localities.isEmpty else { return nil }
        var writer = IBGEJSONWriter(capacity: 200 + localities.count * 130)
        writer.raw("[{\"id\":\"93\",\"variavel\":\"População residente\",\"unidade\":\"Pessoas\",\"resultados\":[{\"classificacoes\":[],\"series\":[")
        var first = true
        var seen = Set<Locality>()
        func sortKey(_ l: Locality) -> (Int, Int) {
            switch l {
            case .brasil: (1, 1)
            case .uf(let n): (3, n)
            case .municipio(let n): (6, n)
            }
        }
        for locality in localities.sorted(by: { sortKey($0) < sortKey($1) }) where seen.insert(locality).inserted {
            let id: Int
            let level: StaticString
            let name: String
            let value: Int?
            switch locality {
            case .brasil:
                (id, level, name, value) = (1, "{\"id\":\"N1\",\"nome\":\"Brasil\"}", "Brasil", brasil)
            case .uf(let code):
                guard let uf = snapshot.uf(String(code)) else { continue }
                (id, level, name, value) = (code, "{\"id\":\"N3\",\"nome\":\"Unidade da Federação\"}", uf.nome, ufs[code])
            case .municipio(let code):
                guard let municipio = snapshot.municipio(code), let population = municipios[code] else { continue }
                (id, level, name, value) = (code, "{\"id\":\"N6\",\"nome\":\"Município\"}", "\(municipio.nome) - \(municipio.uf.sigla)", population)
            }
            guard let value else { continue }
            if !first { writer.raw(",") }
            first = false
            writer.raw("{\"localidade\":{\"id\":")
            writer.string(String(id))
            writer.raw(",\"nivel\":")
            writer.raw(level)
            writer.raw(",\"nome\":")
            writer.string(name)
            writer.raw("},\"serie\":{\"2022\":")
            writer.string(String(value))
            writer.raw("}}")
        }
        writer.raw("]}]}]")
        return writer.buffer
    }
}
