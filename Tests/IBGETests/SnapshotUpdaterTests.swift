import Foundation
import IBGETestSupport
import TestSupport
import Testing

@testable import IBGE

@Suite("Snapshot update")
struct SnapshotUpdaterTests {
    func directory() throws -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("snapshot-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for name in ["regioes.json", "estados.json", "municipios.json"] {
            try Data("old".utf8).write(to: url.appendingPathComponent(name))
        }
        return url
    }

    @Test("fetches the three bodies, checks them and rewrites the files byte for byte")
    func update() async throws {
        let fake = try await FakeIBGE.start()
        let upstream = HTTPUpstream(configuration: .init(baseURL: fake.baseURL, retryBackoff: .milliseconds(5)))
        let target = try directory()
        let report: SnapshotUpdater.Report
        do {
            report = try await SnapshotUpdater(upstream: upstream).update(directory: target)
        } catch {
            Issue.record("update failed: \(error)")
            await upstream.shutdown()
            await fake.stop()
            return
        }
        #expect(report.municipios == 5571 && report.estados == 27 && report.regioes == 5)
        let allChanged = report.files.allSatisfy { $0.changed }
        #expect(allChanged)
        for name in ["regioes.json", "estados.json", "municipios.json"] {
            let written = try Data(contentsOf: target.appendingPathComponent(name))
            let expected = try snapshotFile(name)
            #expect(written == expected, "\(name)")
        }
        let again = try await SnapshotUpdater(upstream: upstream).update(directory: target)
        let noneChanged = again.files.allSatisfy { !$0.changed }
        #expect(noneChanged)
        await upstream.shutdown()
        await fake.stop()
    }

    @Test("a broken download replaces nothing", arguments: [FakeIBGE.Fault.truncated, .html, .outage])
    func brokenDownload(fault: FakeIBGE.Fault) async throws {
        let fake = try await FakeIBGE.start()
        let upstream = HTTPUpstream(configuration: .init(baseURL: fake.baseURL, maximumAttempts: 1))
        let target = try directory()
        fake.inject(fault)
        await #expect(throws: IBGEError.self) { try await SnapshotUpdater(upstream: upstream).update(directory: target) }
        for name in ["regioes.json", "estados.json", "municipios.json"] {
            #expect(try Data(contentsOf: target.appendingPathComponent(name)) == Data("old".utf8))
        }
        await upstream.shutdown()
        await fake.stop()
    }

    @Test("implausible data is refused before anything is written")
    func implausible() throws {
        let snapshot = try IBGESnapshot.embedded()
        let few = try IBGESnapshot(
            regioes: snapshotFile("regioes.json"), estados: snapshotFile("estados.json"),
            municipios: Data(
                #"[{"id":4208203,"nome":"Itajaí","microrregiao":null,"regiao-imediata":{"id":420020,"nome":"Itajaí","regiao-intermediaria":{"id":4207,"nome":"Blumenau","UF":{"id":42,"sigla":"SC","nome":"Santa Catarina","regiao":{"id":4,"sigla":"S","nome":"Sul"}}}}}]"#
                    .utf8))
        let error = #expect(throws: IBGEError.self) { try SnapshotUpdater.verify(few) }
        #expect(error?.message.contains("only 1 municípios") == true)
        try SnapshotUpdater.verify(snapshot)
    }
}
