import ArgumentParser
import Foundation
import IBGE
import Logging

/// `ibge-cache snapshot update`.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Maintain the embedded IBGE snapshot.",
        subcommands: [Update.self]
    )

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch /regioes, /estados and /municipios from the IBGE API and rewrite the snapshot files.",
            discussion: """
                The new bodies must decode and pass sanity checks (5 regiões, 27 UFs, at least 5,500 municípios, every \
                município in a known UF) before any file is replaced. Rebuild afterwards to embed them, and update \
                Sources/IBGE/Snapshot/PROVENANCE.md.
                """
        )

        @Option(help: "The API base URL (default: IBGE_API_BASE_URL, else https://servicodados.ibge.gov.br/api).")
        var baseURL: String?

        @Option(help: "The snapshot directory to rewrite.")
        var directory = "Sources/IBGE/Snapshot"

        @Flag(help: "Fetch and check, but write nothing.")
        var dryRun = false

        func run() async throws {
            let base = baseURL ?? ProcessInfo.processInfo.environment["IBGE_API_BASE_URL"] ?? "https://servicodados.ibge.gov.br/api"
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--directory \(directory) is not a directory (run from the repository's root, or pass --directory)")
            }
            var logger = Logger(label: "snapshot")
            logger.logLevel = .warning
            let upstream = HTTPUpstream(configuration: .init(baseURL: base, requestTimeout: .seconds(60)), logger: logger)
            defer { Task { await upstream.shutdown() } }
            do {
                let report = try await SnapshotUpdater(upstream: upstream).update(directory: URL(fileURLWithPath: directory), dryRun: dryRun)
                print("fetched from \(base): \(report.regioes) regiões, \(report.estados) UFs, \(report.municipios) municípios")
                for file in report.files {
                    print("  \(file.name): \(file.bytes) bytes, \(file.changed ? (dryRun ? "would change" : "rewritten") : "unchanged")")
                }
            } catch {
                FileHandle.standardError.write(Data("ibge-cache snapshot update: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
