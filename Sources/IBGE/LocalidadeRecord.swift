/// What the embedded source needs of every level's model: its id and name, its JSON in both
/// views, and the ids of the levels above it.
protocol LocalidadeRecord: Sendable {
    var id: Int { get }
    var nome: String { get }
    func write(to writer: inout IBGEJSONWriter)
    func writeFlat(to writer: inout IBGEJSONWriter)
    /// The id of this record's ancestor at `level` (its own id at its own level), or nil when it
    /// has none there (5101837 has no micro/mesorregião).
    func ancestorID(at level: LocalidadesLevel) -> Int?
}

extension Regiao: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.regiao(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatRegiao(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? { level == .regioes ? id : nil }
}

extension UF: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.uf(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatUFObject(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? {
        switch level {
        case .estados: id
        case .regioes: regiao.id
        default: nil
        }
    }
}

extension Mesorregiao: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.mesorregiao(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatMesorregiao(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? { level == .mesorregioes ? id : uf.ancestorID(at: level) }
}

extension Microrregiao: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.microrregiao(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatMicrorregiao(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? { level == .microrregioes ? id : mesorregiao.ancestorID(at: level) }
}

extension RegiaoIntermediaria: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.regiaoIntermediaria(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatRegiaoIntermediaria(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? { level == .regioesIntermediarias ? id : uf.ancestorID(at: level) }
}

extension RegiaoImediata: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.regiaoImediata(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatRegiaoImediata(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? { level == .regioesImediatas ? id : regiaoIntermediaria.ancestorID(at: level) }
}

extension Municipio: LocalidadeRecord {
    func write(to writer: inout IBGEJSONWriter) { writer.municipio(self) }
    func writeFlat(to writer: inout IBGEJSONWriter) { writer.flatMunicipio(self) }
    func ancestorID(at level: LocalidadesLevel) -> Int? {
        switch level {
        case .municipios: id
        case .microrregioes, .mesorregioes: microrregiao?.ancestorID(at: level)
        default: regiaoImediata.ancestorID(at: level)
        }
    }
}
