import Foundation
public import NIOCore

/// Answers localidades requests from the embedded snapshot, in IBGE's JSON: the list bodies of
/// `/regioes`, `/estados` and `/municipios` byte for byte, everything else serialised the way
/// IBGE does (same keys, same order, same nesting).
public struct EmbeddedSource: Sendable {
    /// The data it answers from.
    public let snapshot: IBGESnapshot

    /// Creates a source over a snapshot.
    public init(snapshot: IBGESnapshot) {
        self.snapshot = snapshot
    }

    public func body(for request: LocalidadesRequest) throws(IBGEError) -> ByteBuffer {
        // The three list bodies IBGE serves, as they were recorded.
        if request.ids == nil, request.child == nil, !request.orderByName, !request.flat {
            switch request.level {
            case .regioes: return snapshot.rawRegioes
            case .estados: return snapshot.rawEstados
            case .municipios: return snapshot.rawMunicipios
            default: break
            }
        }
        var records: [any LocalidadeRecord]
        if let ids = request.ids {
            let codes = Set(ids.compactMap { id -> Int? in if case .code(let n) = id { return n } else { return nil } })
            if let child = request.child {
                records = snapshot.records(child).filter { record in record.ancestorID(at: request.level).map(codes.contains) ?? false }
            } else {
                records = codes.sorted().compactMap { snapshot.record(request.level, id: $0) }
            }
        } else {
            records = snapshot.records(request.level)
        }
        if request.orderByName {
            let keyed = records.map { (key: Self.sortKey($0.nome), record: $0) }
            records = keyed.sorted { $0.key == $1.key ? $0.record.id < $1.record.id : $0.key < $1.key }.map(\.record)
        }

        var writer = IBGEJSONWriter(capacity: max(256, records.count * (request.flat ? 600 : 450)))
        if request.isSingleObject {
            guard let record = records.first else {
                writer.raw("[]")  // IBGE answers an unknown id with 200 and an empty array.
                return writer.buffer
            }
            if request.flat { record.writeFlat(to: &writer) } else { record.write(to: &writer) }
            return writer.buffer
        }
        writer.array(records) { writer, record in
            if request.flat { record.writeFlat(to: &writer) } else { record.write(to: &writer) }
        }
        return writer.buffer
    }

    /// Names compared without case or accents ("Água Branca" sorts with "Agua"), then by code.
    static func sortKey(_ name: String) -> String {
        name.folding(options: [.caseInsensitive, .diacriticInsensitive], locale: Locale(identifier: "pt_BR"))
    }
}
