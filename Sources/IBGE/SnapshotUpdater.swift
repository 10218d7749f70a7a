public import Foundation
import NIOCore
#if canImport(Glibc)
    import Glibc
#endif

/// Refreshes the embedded snapshot from the upstream: fetches the three list bodies, checks
/// that they decode and hold what a snapshot must (5 regiões, 27 UFs, thousands of municípios,
/// every município in a known UF), and only then replaces the files, each through a temporary
/// file and a rename, so a failed or partial download never leaves a broken snapshot behind.
public struct SnapshotUpdater: Sendable {
    /// What an update found.
    public struct Report: Sendable {
        /// Per file: name, bytes, and whether it differs from what was there.
        public var files: [(name: String, bytes: Int, changed: Bool)]
        /// Counts in the new snapshot.
        public var regioes: Int
        /// Counts in the new snapshot.
        public var estados: Int
        /// Counts in the new snapshot.
        public var municipios: Int
    }

    let upstream: HTTPUpstream

    /// Creates an updater over an upstream.
    public init(upstream: HTTPUpstream) {
        self.upstream = upstream
    }

    /// Fetches, verifies and (unless `dryRun`) writes `regioes.json`, `estados.json` and
    /// `municipios.json` into `directory`.
    public func update(directory: URL, dryRun: Bool = false) async throws(IBGEError) -> Report {
        var bodies: [String: Data] = [:]
        for level in [LocalidadesLevel.regioes, .estados, .municipios] {
            let body = try await upstream.fetch(UpstreamRequest(LocalidadesRequest(level: level)))
            bodies[level.rawValue] = Data(body.readableBytesView)
        }
        let snapshot = try IBGESnapshot(
            regioes: bodies["regioes"] ?? Data(), estados: bodies["estados"] ?? Data(), municipios: bodies["municipios"] ?? Data())
        try Self.verify(snapshot)
        var files: [(String, Int, Bool)] = []
        for name in ["regioes", "estados", "municipios"] {
            let data = bodies[name] ?? Data()
            let url = directory.appendingPathComponent(name + ".json")
            let changed = (try? Data(contentsOf: url)) != data
            files.append((name + ".json", data.count, changed))
        }
        if !dryRun {
            for (name, _, changed) in files where changed {
                let url = directory.appendingPathComponent(name)
                let temporary = directory.appendingPathComponent("." + name + ".new")
                do {
                    try (bodies[String(name.dropLast(".json".count))] ?? Data()).write(to: temporary)
                    // rename(2) replaces the file atomically: readers see the old or the new one.
                    guard rename(temporary.path, url.path) == 0 else {
                        throw IBGEError(.snapshotUnavailable, "rename failed: \(String(cString: strerror(errno)))")
                    }
                } catch {
                    try? FileManager.default.removeItem(at: temporary)
                    throw IBGEError(.snapshotUnavailable, "cannot write \(url.path): \(error)")
                }
            }
        }
        return Report(files: files, regioes: snapshot.regioes.count, estados: snapshot.estados.count, municipios: snapshot.municipios.count)
    }

    /// The checks a new snapshot must pass before it replaces the old one.
    static func verify(_ snapshot: IBGESnapshot) throws(IBGEError) {
        func fail(_ why: String) -> IBGEError { IBGEError(.snapshotUnavailable, "the new snapshot is not plausible: \(why); nothing replaced") }
        guard snapshot.regioes.count == 5 else { throw fail("\(snapshot.regioes.count) regiões, expected 5") }
        guard snapshot.estados.count == 27 else { throw fail("\(snapshot.estados.count) UFs, expected 27") }
        guard snapshot.municipios.count >= 5500 else { throw fail("only \(snapshot.municipios.count) municípios") }
        let ufs = Set(snapshot.estados.map(\.id))
        let regioes = Set(snapshot.regioes.map(\.id))
        guard snapshot.estados.allSatisfy({ regioes.contains($0.regiao.id) }) else { throw fail("a UF names an unknown região") }
        if let orphan = snapshot.municipios.first(where: { !ufs.contains($0.uf.id) || $0.id / 100_000 != $0.uf.id }) {
            throw fail("município \(orphan.id) does not belong to a known UF")
        }
    }
}
