import Synchronization

/// A value that one task sets and another awaits, with a time limit on the wait.
final class OneShot<Value: Sendable>: Sendable {
    enum Outcome {
        case value(Value)
        case failed(any Error)
        case timedOut
    }

    private struct State {
        var result: Result<Value, any Error>?
        var waiter: CheckedContinuation<Outcome, Never>?
        var gaveUp = false
    }

    private let state = Mutex<State>(State())

    func succeed(_ value: Value) { complete(.success(value)) }

    func fail(_ error: any Error) { complete(.failure(error)) }

    private func complete(_ result: Result<Value, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Outcome, Never>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: Self.outcome(result))
    }

    private static func outcome(_ result: Result<Value, any Error>) -> Outcome {
        switch result {
        case .success(let value): .value(value)
        case .failure(let error): .failed(error)
        }
    }

    /// The value or failure, or `.timedOut` after `timeout` on `clock` (the value may still
    /// come later).
    func wait(timeout: Duration, clock: CacheClock) async -> Outcome {
        await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                    let ready = self.state.withLock { state -> Outcome? in
                        if let result = state.result { return Self.outcome(result) }
                        if state.gaveUp { return .timedOut }
                        state.waiter = continuation
                        return nil
                    }
                    if let ready { continuation.resume(returning: ready) }
                }
            }
            group.addTask {
                try? await clock.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            if first == nil {
                // Timed out: release the waiting child so the group can end.
                let waiter = state.withLock { state -> CheckedContinuation<Outcome, Never>? in
                    state.gaveUp = true
                    defer { state.waiter = nil }
                    return state.waiter
                }
                waiter?.resume(returning: .timedOut)
                group.cancelAll()
                return .timedOut
            }
            group.cancelAll()
            return first ?? .timedOut
        }
    }
}
