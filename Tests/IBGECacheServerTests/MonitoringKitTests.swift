import Foundation
import IBGETestSupport
import TestSupport
import Testing

/// `deploy/`: the repository's directory.
func deployDirectory() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("deploy")
}

@Suite("The monitoring kit under deploy/: Prometheus rules, the Grafana dashboard, the systemd unit")
struct MonitoringKitTests {
    @Test("promtool checks the scrape config and the rules, and its unit tests pass: a case per alert that fires and one that stays quiet")
    func promtool() async throws {
        #expect(toolExists("promtool"), "scripts/test installs Debian's prometheus package")
        let directory = deployDirectory().appendingPathComponent("prometheus").path
        let config = try await runTool(["promtool", "check", "config", "\(directory)/prometheus.yml"])
        #expect(config.status == 0, "\(config.output)")
        let rules = try await runTool(["promtool", "check", "rules", "\(directory)/alerts.yml"])
        #expect(rules.status == 0 && rules.output.contains("SUCCESS: 9 rules found"), "\(rules.output)")
        let tests = try await runTool(["promtool", "test", "rules", "\(directory)/alerts.test.yml"])
        #expect(tests.status == 0 && tests.output.contains("SUCCESS"), "\(tests.output)")
        // Every alert has a test case that fires it and one that keeps it quiet.
        let alerts = try String(contentsOfFile: "\(directory)/alerts.yml", encoding: .utf8)
        let testCases = try String(contentsOfFile: "\(directory)/alerts.test.yml", encoding: .utf8)
        let names = alerts.split(separator: "\n").compactMap { line -> String? in
            let text = line.trimmingCharacters(in: .whitespaces)
            return text.hasPrefix("- alert: ") ? String(text.dropFirst("- alert: ".count)) : nil
        }
        #expect(names.count == 9)
        for name in names {
            let cases = testCases.components(separatedBy: "alertname: \(name)\n").dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(cases.contains { $0.hasPrefix("exp_alerts: []") }, "\(name): a case that stays quiet")
            #expect(cases.contains { $0.hasPrefix("exp_alerts:\n") }, "\(name): a case that fires")
        }
    }

    @Test("every metric the Grafana dashboard and the alert rules query is one /metrics exports")
    func metricNames() async throws {
        let dashboard = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: deployDirectory().appendingPathComponent("grafana/ibge-cache.json")))
                as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        var expressions = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        #expect(expressions.count >= 10)
        expressions.append(try String(contentsOf: deployDirectory().appendingPathComponent("prometheus/alerts.yml"), encoding: .utf8))
        let pattern = try Regex(#"\b(ibge_[a-z0-9_]+|redis_[a-z0-9_]+)"#)
        var queried = Set<String>()
        for expression in expressions {
            for match in expression.matches(of: pattern) {
                var name = String(expression[match.range])
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
                queried.insert(name)
            }
        }
        #expect(queried.count >= 15, "\(queried.sorted())")
        let names = queried

        // A server with every part on (Redis, IBGE, scheduled warming) exports them all.
        let fake = try await FakeIBGE.start()
        try await RedisServerProcess.with { server in
            let app = try await makeApp([
                "REDIS_URL": server.url, "ENABLE_REAL_APIS": "true", "IBGE_API_BASE_URL": fake.baseURL, "IBGE_PRELOAD_INTERVAL": "1h",
            ])
            try await withLiveServer(app) { port in
                #expect(try await fetch(port, "/api/v1/localidades/estados/42").status == 200)
                let text = String(decoding: try await fetch(port, "/metrics").body, as: UTF8.self)
                let exported = Set(
                    text.split(separator: "\n").compactMap { line -> String? in
                        let parts = line.split(separator: " ")
                        return parts.count >= 3 && parts[0] == "#" && parts[1] == "TYPE" ? String(parts[2]) : nil
                    })
                let missing = names.subtracting(exported)
                #expect(missing.isEmpty, "queried but not exported: \(missing.sorted())")
            }
        }
        await fake.stop()
    }

    @Test("the systemd unit verifies (systemd-analyze verify, where systemd is installed)")
    func systemdUnit() async throws {
        let unit = try String(contentsOf: deployDirectory().appendingPathComponent("systemd/ibge-cache.service"), encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/ibge-cache/ibge-cache serve"))
        guard toolExists("systemd-analyze") else { return }
        // Verified with ExecStart pointing at the executable this build made (verify checks it exists).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ibge-cache.service")
        try unit.replacingOccurrences(of: "/opt/ibge-cache/ibge-cache", with: ibgeCacheExecutable().path).write(to: path, atomically: true, encoding: .utf8)
        let verify = try await runTool(["systemd-analyze", "verify", path.path])
        #expect(verify.status == 0 && !verify.output.contains("ignoring"), "\(verify.output)")
    }
}
