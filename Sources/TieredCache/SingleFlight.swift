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
        /// Another caller's load ran past the wait this caller allowed; it goes on.
        case waitedTooLong
    }

    private struct Flight {
        var waiters: [(id: Int, continuation: CheckedContinuation<CachedValue, any Error>)] = []
        /// Waiters whose limit passed before they were registered: they leave at once.
        var departed: Set<Int> = []
    }

    /// Ends a waiter's wait without a value: it looks again.
    private struct NoValue: Error {}
    /// Ends a waiter's wait at its limit.
    private struct WaitedTooLong: Error {}

    private let flights = Mutex<[String: Flight]>([:])
    private let nextWaiter = Atomic<Int>(0)

    /// Keys being loaded now.
    var inFlight: Int { flights.withLock { $0.count } }

    /// Callers waiting for another's load now.
    var waiting: Int { flights.withLock { $0.values.reduce(0) { $0 + $1.waiters.count } } }

    /// Runs `work` for `key` unless another caller is loading it; then waits for that result,
    /// at most `waitAtMost` (on `clock`) when given.
    func run(_ key: String, waitAtMost: Duration? = nil, clock: CacheClock = .system, _ work: () async throws -> CachedValue) async throws -> Outcome {
        guard claim([key]).led.first != nil else { return try await join(key, waitAtMost: waitAtMost, clock: clock) }
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
            for waiter in waiters { waiter.continuation.resume(with: result) }
        }
    }

    /// Waits for the flight of `key` that another caller leads, at most `waitAtMost` (on
    /// `clock`) when given.
    func join(_ key: String, waitAtMost: Duration? = nil, clock: CacheClock = .system) async throws -> Outcome {
        let id = nextWaiter.add(1, ordering: .relaxed).newValue
        @Sendable func wait() async throws -> CachedValue {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<CachedValue, any Error>) in
                let outcome = self.flights.withLock { flights -> (any Error)? in
                    guard flights[key] != nil else { return NoValue() }
                    if flights[key]?.departed.remove(id) != nil { return WaitedTooLong() }
                    flights[key]?.waiters.append((id, continuation))
                    return nil
                }
                if let outcome { continuation.resume(throwing: outcome) }
            }
        }
        do {
            guard let waitAtMost else { return .value(try await wait(), leader: false) }
            let value = try await withThrowingTaskGroup(of: CachedValue?.self) { group in
                group.addTask { try await wait() }
                group.addTask {
                    try? await clock.sleep(for: waitAtMost)
                    // Resumes the wait above if it is still on (the flight goes on without it).
                    self.leave(key, id: id)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let value = first else { throw WaitedTooLong() }
                return value
            }
            return .value(value, leader: false)
        } catch is NoValue {
            return .retry
        } catch is WaitedTooLong {
            return .waitedTooLong
        } catch is CancellationError where !Task.isCancelled {
            // The leader was cancelled, not us: try again (one of us becomes the leader).
            return .retry
        }
    }

    /// Ends the wait of waiter `id` on `key`, if it still waits (it leaves with
    /// ``Outcome/waitedTooLong``; the flight goes on).
    private func leave(_ key: String, id: Int) {
        let waiter = flights.withLock { flights -> CheckedContinuation<CachedValue, any Error>? in
            guard flights[key] != nil else { return nil }  // ended: its waiters were answered
            guard let index = flights[key]?.waiters.firstIndex(where: { $0.id == id }) else {
                // Not registered yet: it leaves as soon as it is.
                flights[key]?.departed.insert(id)
                return nil
            }
            return flights[key]?.waiters.remove(at: index).continuation
        }
        waiter?.resume(throwing: WaitedTooLong())
    }
}
