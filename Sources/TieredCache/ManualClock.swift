import Utilities
import Synchronization

/// A clock for tests: starts at a fixed time and moves only by ``advance(by:)``.
///
/// Tasks sleeping on it (through ``CacheClock/manual(_:)``) are resumed when it is advanced
/// past their deadline, or when they are cancelled. ``sleepers`` and
/// ``waitForSleepers(_:)`` let a test wait until the code under test is really waiting before
/// it moves time.
public final class ManualClock: Sendable {
    private struct Sleeper {
        var deadline: Int64
        var continuation: CheckedContinuation<Void, any Error>?
    }

    private struct State {
        var now: Int64
        var sleepers: [UInt64: Sleeper] = [:]
        /// Sleepers cancelled before their continuation was registered.
        var cancelled: Set<UInt64> = []
        var nextID: UInt64 = 0
    }

    private let state: Mutex<State>

    /// Creates a clock at `start` milliseconds since 1970 (default 2026-01-01).
    public init(start: Int64 = 1_767_225_600_000) {
        self.state = Mutex(State(now: start))
    }

    /// The current time in milliseconds since 1970.
    public var now: Int64 { state.withLock { $0.now } }

    /// How many tasks are sleeping on the clock now.
    public var sleepers: Int { state.withLock { $0.sleepers.values.count { $0.continuation != nil } } }

    /// Moves the clock forward and wakes every sleeper whose deadline has come.
    public func advance(by duration: Duration) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.now &+= max(0, duration.wholeMilliseconds)
            let due = state.sleepers.filter { $0.value.deadline <= state.now && $0.value.continuation != nil }
                .sorted { $0.value.deadline < $1.value.deadline }
            for (id, _) in due { state.sleepers[id] = nil }
            return due.compactMap(\.value.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Waits (polling, bounded by `limit` of real time) until at least `count` tasks sleep on
    /// the clock; returns whether they do.
    @discardableResult
    public func waitForSleepers(_ count: Int = 1, limit: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while sleepers < count {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return true
    }

    /// Suspends until the clock reaches `deadline` (milliseconds since 1970).
    func sleep(until deadline: Int64) async throws {
        let id = state.withLock { state -> UInt64 in
            state.nextID &+= 1
            state.sleepers[state.nextID] = Sleeper(deadline: deadline)
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Now { case wait, wake, cancel }
                let now = state.withLock { state -> Now in
                    if state.cancelled.remove(id) != nil { return .cancel }
                    if deadline <= state.now {
                        state.sleepers[id] = nil
                        return .wake
                    }
                    state.sleepers[id]?.continuation = continuation
                    return .wait
                }
                switch now {
                case .wait: break
                case .wake: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let sleeper = state.sleepers.removeValue(forKey: id) else { return nil }
                if sleeper.continuation == nil { state.cancelled.insert(id) }
                return sleeper.continuation
            }
            continuation?.resume(throwing: CancellationError())
        }
    }
}
