public import Foundation
import NIOCore

/// The IBGE localidades data shipped inside the package (SwiftPM resources): the bodies of
/// `/regioes`, `/estados` and `/municipios` as IBGE served them (byte for byte; see
/// `Snapshot/PROVENANCE.md`), and every other level derived from the municípios.
public struct IBGESnapshot: Sendable {
    /// The five regiões, by id.
    public let regioes: [Regiao]
    /// The 27 UFs, by id.
    public let estados: [UF]
    /// Mesorregiões, by id (derived from the municípios).
    public let mesorregioes: [Mesorregiao]
    /// Microrregiões, by id (derived).
    public let microrregioes: [Microrregiao]
    /// Regiões intermediárias, by id (derived).
    public let regioesIntermediarias: [RegiaoIntermediaria]
    /// Regiões imediatas, by id (derived).
    public let regioesImediatas: [RegiaoImediata]
    /// The 5,571 municípios, by id.
    public let municipios: [Municipio]
    /// UF sigla to code.
    public let siglas: [String: Int]

    /// The raw bodies, as IBGE served them.
    let rawRegioes: ByteBuffer
    let rawEstados: ByteBuffer
    let rawMunicipios: ByteBuffer

    private let byLevel: [LocalidadesLevel: [any LocalidadeRecord]]
    private let index: [LocalidadesLevel: [Int: any LocalidadeRecord]]

    /// The snapshot shipped with this build, read once.
    public static func embedded() throws(IBGEError) -> IBGESnapshot {
        switch embeddedResult {
        case .success(let snapshot): return snapshot
        case .failure(let error): throw error
        }
    }

    private static let embeddedResult: Result<IBGESnapshot, IBGEError> = {
        do {
            func resource(_ name: String) throws -> Data {
                guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Snapshot") else {
                    throw IBGEError(.snapshotUnavailable, "resource Snapshot/\(name).json is missing from the build")
                }
                return try Data(contentsOf: url)
            }
            return .success(try IBGESnapshot(regioes: resource("regioes"), estados: resource("estados"), municipios: resource("municipios")))
        } catch let error as IBGEError {
            return .failure(error)
        } catch {
            return .failure(IBGEError(.snapshotUnavailable, "cannot read the embedded IBGE snapshot: \(error)"))
        }
    }()

    /// Builds a snapshot from the three bodies.
    public init(regioes: Data, estados: Data, municipios: Data) throws(IBGEError) {
        let decoder = JSONDecoder()
        do {
            self.regioes = try decoder.decode([Regiao].self, from: regioes).sorted { $0.id < $1.id }
            self.estados = try decoder.decode([UF].self, from: estados).sorted { $0.id < $1.id }
            self.municipios = try decoder.decode([Municipio].self, from: municipios).sorted { $0.id < $1.id }
        } catch {
            throw IBGEError(.snapshotUnavailable, "the IBGE snapshot does not decode: \(error)")
        }
        rawRegioes = ByteBuffer(bytes: regioes)
        rawEstados = ByteBuffer(bytes: estados)
        rawMunicipios = ByteBuffer(bytes: municipios)

        var mesos: [Int: Mesorregiao] = [:]
        var micros: [Int: Microrregiao] = [:]
        var intermediarias: [Int: RegiaoIntermediaria] = [:]
        var imediatas: [Int: RegiaoImediata] = [:]
        for municipio in self.municipios {
            if let micro = municipio.microrregiao {
                micros[micro.id] = micro
                mesos[micro.mesorregiao.id] = micro.mesorregiao
            }
            imediatas[municipio.regiaoImediata.id] = municipio.regiaoImediata
            intermediarias[municipio.regiaoImediata.regiaoIntermediaria.id] = municipio.regiaoImediata.regiaoIntermediaria
        }
        mesorregioes = mesos.values.sorted { $0.id < $1.id }
        microrregioes = micros.values.sorted { $0.id < $1.id }
        regioesIntermediarias = intermediarias.values.sorted { $0.id < $1.id }
        regioesImediatas = imediatas.values.sorted { $0.id < $1.id }
        siglas = Dictionary(self.estados.map { ($0.sigla, $0.id) }, uniquingKeysWith: { a, _ in a })

        let levels: [LocalidadesLevel: [any LocalidadeRecord]] = [
            .regioes: self.regioes, .estados: self.estados, .mesorregioes: mesorregioes, .microrregioes: microrregioes,
            .regioesIntermediarias: regioesIntermediarias, .regioesImediatas: regioesImediatas, .municipios: self.municipios,
        ]
        byLevel = levels
        index = levels.mapValues { records in Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    func records(_ level: LocalidadesLevel) -> [any LocalidadeRecord] { byLevel[level] ?? [] }

    func record(_ level: LocalidadesLevel, id: Int) -> (any LocalidadeRecord)? { index[level]?[id] }

    /// The município with this code.
    public func municipio(_ id: Int) -> Municipio? { record(.municipios, id: id) as? Municipio }

    /// The UF with this code or sigla.
    public func uf(_ codeOrSigla: String) -> UF? {
        if let code = Int(codeOrSigla) { return record(.estados, id: code) as? UF }
        return siglas[codeOrSigla.uppercased()].flatMap { record(.estados, id: $0) as? UF }
    }
}
