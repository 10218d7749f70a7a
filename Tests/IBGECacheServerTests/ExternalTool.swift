import Foundation

/// What an external program (schemathesis, chromium) printed and how it ended.
struct ToolRun {
    var status: Int32
    var output: String
}

/// Runs `arguments` (looked up on `PATH`) to completion without blocking a thread of the
/// concurrency pool (the live server under test needs them): output goes to a file, and the
/// end is polled for. Killed after `limit`. `standardError`: whether what it writes there is in
/// the output too.
func runTool(_ arguments: [String], limit: Duration = .seconds(300), standardError: Bool = true) async throws -> ToolRun {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("tool-\(UUID().uuidString).log")
    _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: log) }
    let handle = try FileHandle(forWritingTo: log)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.standardOutput = handle
    process.standardError = standardError ? handle : FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let pid = process.processIdentifier
    // Killed if still running after `limit` (the watchdog is cancelled as soon as it ends).
    let watchdog = Task {
        try await Task.sleep(for: limit)
        kill(pid, SIGKILL)
    }
    while process.isRunning {
        try? await Task.sleep(for: .milliseconds(100))
    }
    watchdog.cancel()
    let status = process.terminationStatus
    try? handle.close()
    let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    return ToolRun(status: status, output: output)
}

/// Whether `program` is on `PATH`.
func toolExists(_ program: String) -> Bool {
    (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
        FileManager.default.isExecutableFile(atPath: "\($0)/\(program)")
    }
}
