import NIOCore
import Synchronization

/// At most one load per key at a time in this process: the first caller (the leader) runs the
/// work in its own task; callers that arrive while it runs wait for its result. A bulk read
/// (``TieredCache/getManyValues(_:ttl:negativeTTL:isNegative:loader:)``) leads the keys no one
/// loads and waits for the others, so single and bulk loads of one key never overlap.
final class SingleFlight: Sendable {
    enum Outcome {
        /// The value, and whether this caller ran the work itself.
        case value(CachedValue, leader: Bool)
        /// The flight ended without a value for this caller (its leader was cancelled, or a
        /// bulk leader's loader did not find the key): look again.
        case retry
    }

    private struct Flight {
        var waiters: [CheckedContinuation<CachedValue, any Error>] = []
    }

    /// Ends a waiter's wait without a value: it looks again.
    private struct NoValue: Error {}

    private let flights = Mutex<[String: Flight]>([:])

    /// Keys being loaded now.
    var inFlight: Int { flights.withLock { $0.count } }

    /// Callers waiting for another's load now.
    var waiting: Int { flights.withLock { $0.values.reduce(0) { $0 + $1.waiters.count } } }

    func run(_ key: String, _ work: () async throws -> CachedValue) async throws -> Outcome {
        guard claim([key]).led.first != nil else { return try await join(key) }
        let result: Result<CachedValue, any Error>
        do {
            result = .success(try await work())
        } catch {
            result = .failure(error)
        }
        finish([key: result])
        return .value(try result.get(), leader: true)
    }

    /// Claims the keys no flight loads now: this caller leads them and must ``finish(_:)`` every
    /// one. The others are being loaded by someone else (``join(_:)`` them).
    func claim(_ keys: [String]) -> (led: [String], others: [String]) {
        flights.withLock { flights in
            var led: [String] = []
            var others: [String] = []
            for key in keys {
                if flights[key] != nil {
                    others.append(key)
                } else {
                    flights[key] = Flight()
                    led.append(key)
                }
            }
            return (led, others)
        }
    }

    /// Ends this caller's flights: each waiter gets its key's result; a key without one (nil,
    /// or absent) sends its waiters to look again.
    func finish(_ results: [String: Result<CachedValue, any Error>?]) {
        let ended = flights.withLock { flights in
            results.keys.map { key in (key, flights.removeValue(forKey: key)?.waiters ?? []) }
        }
        for (key, waiters) in ended where !waiters.isEmpty {
            let result = results[key].flatMap { $0 } ?? .failure(NoValue())
            for waiter in waiters { waiter.resume(with: result) }
        }
    }

    /// Waits for the flight of `key` that another caller leads.
    func join(_ key: String) async throws -> Outcome {
        do {
            let value = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CachedValue, any Error>) in
                let joined = flights.withLock { flights in
                    guard flights[key] != nil else { return false }
                    flights[key]?.waiters.append(continuation)
                    return true
                }
                if !joined { continuation.resume(throwing: NoValue()) }
            }
            return .value(value, leader: false)
        } catch is NoValue {
            return .retry
        } catch is CancellationError where !Task.isCancelled {
            // The leader was cancelled, not us: try again (one of us becomes the leader).
            return .retry
        }
    }
}
