/// A Grande Região (`/regioes`): `{"id":4,"sigla":"S","nome":"Sul"}`.
public struct Regiao: Codable, Sendable, Hashable {
    /// 1 to 5.
    public var id: Int
    /// N, NE, SE, S, CO.
    public var sigla: String
    /// Norte, Nordeste, Sudeste, Sul, Centro-Oeste.
    public var nome: String

    /// Creates a região.
    public init(id: Int, sigla: String, nome: String) {
        self.id = id
        self.sigla = sigla
        self.nome = nome
    }
}

/// A Unidade da Federação (`/estados`).
public struct UF: Codable, Sendable, Hashable {
    /// Two-digit IBGE code (11 to 53).
    public var id: Int
    /// Two-letter abbreviation (SC, SP, ...).
    public var sigla: String
    /// Name.
    public var nome: String
    /// The região it belongs to.
    public var regiao: Regiao

    /// Creates a UF.
    public init(id: Int, sigla: String, nome: String, regiao: Regiao) {
        self.id = id
        self.sigla = sigla
        self.nome = nome
        self.regiao = regiao
    }
}

/// A mesorregião geográfica (frozen since 2017): `{"id":4204,"nome":"Vale do Itajaí","UF":{...}}`.
public struct Mesorregiao: Codable, Sendable, Hashable {
    /// Four-digit code (UF × 100 + n).
    public var id: Int
    /// Name.
    public var nome: String
    /// The UF it lies in.
    public var uf: UF

    enum CodingKeys: String, CodingKey {
        case id, nome
        case uf = "UF"
    }

    /// Creates a mesorregião.
    public init(id: Int, nome: String, uf: UF) {
        self.id = id
        self.nome = nome
        self.uf = uf
    }
}

/// A microrregião geográfica (frozen since 2017).
public struct Microrregiao: Codable, Sendable, Hashable {
    /// Five-digit code (UF × 1000 + n).
    public var id: Int
    /// Name.
    public var nome: String
    /// The mesorregião it lies in.
    public var mesorregiao: Mesorregiao

    /// Creates a microrregião.
    public init(id: Int, nome: String, mesorregiao: Mesorregiao) {
        self.id = id
        self.nome = nome
        self.mesorregiao = mesorregiao
    }
}

/// A região geográfica intermediária (2017 division).
public struct RegiaoIntermediaria: Codable, Sendable, Hashable {
    /// Four-digit code.
    public var id: Int
    /// Name.
    public var nome: String
    /// The UF it lies in.
    public var uf: UF

    enum CodingKeys: String, CodingKey {
        case id, nome
        case uf = "UF"
    }

    /// Creates a região intermediária.
    public init(id: Int, nome: String, uf: UF) {
        self.id = id
        self.nome = nome
        self.uf = uf
    }
}

/// A região geográfica imediata (2017 division).
public struct RegiaoImediata: Codable, Sendable, Hashable {
    /// Six-digit code.
    public var id: Int
    /// Name.
    public var nome: String
    /// The região intermediária it lies in.
    public var regiaoIntermediaria: RegiaoIntermediaria

    enum CodingKeys: String, CodingKey {
        case id, nome
        case regiaoIntermediaria = "regiao-intermediaria"
    }

    /// Creates a região imediata.
    public init(id: Int, nome: String, regiaoIntermediaria: RegiaoIntermediaria) {
        self.id = id
        self.nome = nome
        self.regiaoIntermediaria = regiaoIntermediaria
    }
}

/// A município (`/municipios`).
///
/// `microrregiao` is `null` for Boa Esperança do Norte/MT (5101837), installed in 2025 after the
/// meso/micro division was frozen: take the UF from ``regiaoImediata``, which every município has.
public struct Municipio: Codable, Sendable, Hashable {
    /// Seven-digit code.
    public var id: Int
    /// Name.
    public var nome: String
    /// The microrregião, or nil (5101837).
    public var microrregiao: Microrregiao?
    /// The região imediata.
    public var regiaoImediata: RegiaoImediata

    enum CodingKeys: String, CodingKey {
        case id, nome, microrregiao
        case regiaoImediata = "regiao-imediata"
    }

    /// The UF, from the região imediata branch (never nil).
    public var uf: UF { regiaoImediata.regiaoIntermediaria.uf }

    /// Creates a município.
    public init(id: Int, nome: String, microrregiao: Microrregiao?, regiaoImediata: RegiaoImediata) {
        self.id = id
        self.nome = nome
        self.microrregiao = microrregiao
        self.regiaoImediata = regiaoImediata
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(nome, forKey: .nome)
        // IBGE writes the key with null rather than leaving it out.
        try container.encode(microrregiao, forKey: .microrregiao)
        try container.encode(regiaoImediata, forKey: .regiaoImediata)
    }
}
