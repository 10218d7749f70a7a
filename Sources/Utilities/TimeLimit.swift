/// Runs `work`, or gives up when `sleep(limit)` returns first: nil then, and `work` is
/// cancelled (and awaited: it must honour cancellation). Errors of `work` are thrown.
///
/// `sleep` is how time passes (`Task.sleep` by default; a cache passes its own clock so tests
/// drive it by hand).
public func withTimeLimit<T: Sendable>(
    _ limit: Duration,
    sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
    _ work: @escaping @Sendable () async throws -> T
) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await work() }
        group.addTask {
            try await sleep(max(limit, .zero))
            return nil
        }
        defer { group.cancelAll() }
        return try await group.next() ?? nil
    }
}
