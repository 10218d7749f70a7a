import NIOCore
import Synchronization

/// At most one load per key at a time in this process: the first caller (the leader) runs the
/// work in its own task; callers that arrive while it runs wait for its result.
final class SingleFlight: Sendable {
    enum Outcome {
        /// The value, and whether this caller ran the work itself.
        case value(CachedValue, leader: Bool)
        /// The flight ended before this caller could join it (or its leader was cancelled):
        /// look again.
        case retry
    }

    private struct Flight {
        var waiters: [CheckedContinuation<CachedValue, any Error>] = []
    }

    private struct LeaderCancelled: Error {}

    private let flights = Mutex<[String: Flight]>([:])

    /// Keys being loaded now.
    var inFlight: Int { flights.withLock { $0.count } }

    func run(_ key: String, _ work: () async throws -> CachedValue) async throws -> Outcome {
        let isLeader = flights.withLock { flights in
            if flights[key] != nil { return false }
            flights[key] = Flight()
            return true
        }
        guard isLeader else {
            do {
                let value = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CachedValue, any Error>) in
                    let joined = flights.withLock { flights in
                        guard flights[key] != nil else { return false }
                        flights[key]?.waiters.append(continuation)
                        return true
                    }
                    if !joined { continuation.resume(throwing: LeaderCancelled()) }
                }
                return .value(value, leader: false)
            } catch is LeaderCancelled {
                return .retry
            } catch is CancellationError where !Task.isCancelled {
                // The leader was cancelled, not us: try again (one of us becomes the leader).
                return .retry
            }
        }
        let result: Result<CachedValue, any Error>
        do {
            result = .success(try await work())
        } catch {
            result = .failure(error)
        }
        let waiters = flights.withLock { $0.removeValue(forKey: key)?.waiters ?? [] }
        for waiter in waiters { waiter.resume(with: result) }
        return .value(try result.get(), leader: true)
    }
}
