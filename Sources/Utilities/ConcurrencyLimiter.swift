import Synchronization

/// At most `limit` holders at once, and at most `queue` waiting for a turn (in order); past
/// that, ``acquire()`` refuses at once.
public final class ConcurrencyLimiter: Sendable {
    private struct State {
        var running = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    /// Most holders at once.
    public let limit: Int
    /// Most waiting for a turn.
    public let queue: Int

    /// Creates a limiter.
    public init(limit: Int, queue: Int) {
        self.limit = limit
        self.queue = queue
    }

    /// Holders now, and callers waiting.
    public var counts: (running: Int, waiting: Int) { state.withLock { ($0.running, $0.waiting.count) } }

    /// Takes a slot, waiting for one in line; false when the line is full (nothing taken).
    public func acquire() async -> Bool {
        enum Decision { case granted, full, wait }
        let decision: Decision = state.withLock { state in
            if state.running < limit {
                state.running += 1
                return .granted
            }
            return state.waiting.count < queue ? .wait : .full
        }
        switch decision {
        case .granted: return true
        case .full: return false
        case .wait:
            await withCheckedContinuation { continuation in
                let granted: Bool = state.withLock { state in
                    // A slot may have come free meanwhile.
                    if state.running < limit {
                        state.running += 1
                        return true
                    }
                    state.waiting.append(continuation)
                    return false
                }
                if granted { continuation.resume() }
            }
            return true
        }
    }

    /// Gives a slot back: to the first in line, if any (it keeps the count), else to the pool.
    public func release() {
        let next: CheckedContinuation<Void, Never>? = state.withLock { state in
            if state.waiting.isEmpty {
                state.running -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
