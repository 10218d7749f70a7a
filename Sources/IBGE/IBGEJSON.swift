import NIOCore

/// Writes IBGE's own JSON: compact, keys in the API's order, non-ASCII as UTF-8, only `"`, `\`
/// and control characters escaped. Re-serialising the snapshot this way gives its bytes back
/// exactly (a test checks all 5,571 municípios).
struct IBGEJSONWriter {
    var buffer: ByteBuffer

    init(capacity: Int = 512) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func raw(_ s: StaticString) { buffer.writeStaticString(s) }

    mutating func string(_ s: String) {
        buffer.writeInteger(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default: buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    mutating func int(_ n: Int) { buffer.writeString(String(n)) }

    mutating func array<T>(_ items: [T], _ write: (inout IBGEJSONWriter, T) -> Void) {
        raw("[")
        for (i, item) in items.enumerated() {
            if i > 0 { raw(",") }
            write(&self, item)
        }
        raw("]")
    }

    // MARK: Nested (the API's default view)

    mutating func regiao(_ r: Regiao) {
        raw("{\"id\":"); int(r.id); raw(",\"sigla\":"); string(r.sigla); raw(",\"nome\":"); string(r.nome); raw("}")
    }

    mutating func uf(_ u: UF) {
        raw("{\"id\":"); int(u.id); raw(",\"sigla\":"); string(u.sigla); raw(",\"nome\":"); string(u.nome)
        raw(",\"regiao\":"); regiao(u.regiao); raw("}")
    }

    mutating func mesorregiao(_ m: Mesorregiao) {
        raw("{\"id\":"); int(m.id); raw(",\"nome\":"); string(m.nome); raw(",\"UF\":"); uf(m.uf); raw("}")
    }

    mutating func microrregiao(_ m: Microrregiao) {
        raw("{\"id\":"); int(m.id); raw(",\"nome\":"); string(m.nome); raw(",\"mesorregiao\":"); mesorregiao(m.mesorregiao); raw("}")
    }

    mutating func regiaoIntermediaria(_ r: RegiaoIntermediaria) {
        raw("{\"id\":"); int(r.id); raw(",\"nome\":"); string(r.nome); raw(",\"UF\":"); uf(r.uf); raw("}")
    }

    mutating func regiaoImediata(_ r: RegiaoImediata) {
        raw("{\"id\":"); int(r.id); raw(",\"nome\":"); string(r.nome)
        raw(",\"regiao-intermediaria\":"); regiaoIntermediaria(r.regiaoIntermediaria); raw("}")
    }

    mutating func municipio(_ m: Municipio) {
        raw("{\"id\":"); int(m.id); raw(",\"nome\":"); string(m.nome); raw(",\"microrregiao\":")
        if let micro = m.microrregiao { microrregiao(micro) } else { raw("null") }
        raw(",\"regiao-imediata\":"); regiaoImediata(m.regiaoImediata); raw("}")
    }

    // MARK: Flat (`view=nivelado`)

    private mutating func field(_ name: StaticString, _ value: Int?, first: Bool = false) {
        if !first { raw(",") }
        raw("\""); raw(name); raw("\":")
        if let value { int(value) } else { raw("null") }
    }

    private mutating func field(_ name: StaticString, _ value: String?) {
        raw(",\""); raw(name); raw("\":")
        if let value { string(value) } else { raw("null") }
    }

    private mutating func flatUF(_ u: UF) {
        field("UF-id", u.id); field("UF-sigla", u.sigla); field("UF-nome", u.nome)
        field("regiao-id", u.regiao.id); field("regiao-sigla", u.regiao.sigla); field("regiao-nome", u.regiao.nome)
    }

    mutating func flatRegiao(_ r: Regiao) {
        raw("{"); field("regiao-id", r.id, first: true); field("regiao-sigla", r.sigla); field("regiao-nome", r.nome); raw("}")
    }

    mutating func flatUFObject(_ u: UF) {
        raw("{")
        field("UF-id", u.id, first: true); field("UF-sigla", u.sigla); field("UF-nome", u.nome)
        field("regiao-id", u.regiao.id); field("regiao-sigla", u.regiao.sigla); field("regiao-nome", u.regiao.nome)
        raw("}")
    }

    mutating func flatMesorregiao(_ m: Mesorregiao) {
        raw("{"); field("mesorregiao-id", m.id, first: true); field("mesorregiao-nome", m.nome); flatUF(m.uf); raw("}")
    }

    mutating func flatMicrorregiao(_ m: Microrregiao) {
        raw("{"); field("microrregiao-id", m.id, first: true); field("microrregiao-nome", m.nome)
        field("mesorregiao-id", m.mesorregiao.id); field("mesorregiao-nome", m.mesorregiao.nome); flatUF(m.mesorregiao.uf); raw("}")
    }

    mutating func flatRegiaoIntermediaria(_ r: RegiaoIntermediaria) {
        raw("{"); field("regiao-intermediaria-id", r.id, first: true); field("regiao-intermediaria-nome", r.nome); flatUF(r.uf); raw("}")
    }

    mutating func flatRegiaoImediata(_ r: RegiaoImediata) {
        raw("{"); field("regiao-imediata-id", r.id, first: true); field("regiao-imediata-nome", r.nome)
        field("regiao-intermediaria-id", r.regiaoIntermediaria.id); field("regiao-intermediaria-nome", r.regiaoIntermediaria.nome)
        flatUF(r.regiaoIntermediaria.uf); raw("}")
    }

    mutating func flatMunicipio(_ m: Municipio) {
        raw("{")
        field("municipio-id", m.id, first: true); field("municipio-nome", m.nome)
        field("microrregiao-id", m.microrregiao?.id); field("microrregiao-nome", m.microrregiao?.nome)
        field("mesorregiao-id", m.microrregiao?.mesorregiao.id); field("mesorregiao-nome", m.microrregiao?.mesorregiao.nome)
        field("regiao-imediata-id", m.regiaoImediata.id); field("regiao-imediata-nome", m.regiaoImediata.nome)
        field("regiao-intermediaria-id", m.regiaoImediata.regiaoIntermediaria.id)
        field("regiao-intermediaria-nome", m.regiaoImediata.regiaoIntermediaria.nome)
        flatUF(m.uf)
        raw("}")
    }
}
