import Synchronization

/// A gate tasks wait at until a test opens it: lets a test hold a loader (or anything) in
/// the middle of its work for as long as it needs, with no sleeping and no timing. A waiting
/// task that is cancelled leaves with `CancellationError`, as a real loader would.
public final class Gate: Sendable {
    private struct State {
        var open = false
        var waiters: [Int: CheckedContinuation<Void, any Error>] = [:]
        var cancelled: Set<Int> = []
        var arrivals = 0
    }

    private let state = Mutex(State())

    /// Creates a closed gate.
    public init() {}

    /// How many tasks have reached the gate so far (waiting or passed).
    public var arrivals: Int { state.withLock { $0.arrivals } }

    /// Waits until the gate is open (at once if it is).
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    public func wait() async throws {
        let id = state.withLock { state -> Int in
            state.arrivals += 1
            return state.arrivals
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Next { case wait, pass, cancel }
                let next = state.withLock { state -> Next in
                    if state.cancelled.remove(id) != nil { return .cancel }
                    if state.open { return .pass }
                    state.waiters[id] = continuation
                    return .wait
                }
                switch next {
                case .wait: break
                case .pass: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                if let waiter = state.waiters.removeValue(forKey: id) { return waiter }
                if !state.open { state.cancelled.insert(id) }
                return nil
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Opens the gate: every waiting task goes on, and later ones pass at once.
    public func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }
}
