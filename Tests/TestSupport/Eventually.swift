/// Waits until `condition` holds, polling every few milliseconds for at most `limit` of real
/// time; returns whether it held. A bound on waiting for something to happen, never a
/// measure of how fast it happened.
public func eventually(within limit: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Runs `service` (a long-running `run()`, such as a cache's or a client's) in a child task
/// around `body`, then cancels it and waits for it to end before returning.
public func withRunning<T: Sendable>(_ service: @escaping @Sendable () async throws -> Void, _ body: () async throws -> T) async throws -> T {
    try await withRunning([service], body)
}

/// Runs each of `services` in a child task around `body`, then cancels them and waits for them
/// to end before returning.
public func withRunning<T: Sendable>(_ services: [@Sendable () async throws -> Void], _ body: () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for service in services { group.addTask { try await service() } }
        do {
            let result = try await body()
            group.cancelAll()
            try await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            try? await group.waitForAll()
            throw error
        }
    }
}
