import Utilities
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The time source of the cache policy: what time it is, and how to wait.
///
/// Every decision of ``TieredCache`` that depends on time (freshness, grace, the fail-safe
/// throttle, eager refresh, soft and hard timeouts, lock waits, recovery backoff) reads and
/// sleeps on this clock, so tests drive time by hand with a ``ManualClock`` instead of sleeping.
///
/// The system clock reads `CLOCK_REALTIME_COARSE`, a vDSO read of the kernel's tick-updated
/// time (no system call, a few nanoseconds, millisecond-ish resolution): cheap enough for every
/// L1 read, and wall time, so the expiry written into shared envelopes means the same to every
/// instance. Durations are measured on the monotonic clock.
public struct CacheClock: Sendable {
    private enum Source: Sendable {
        case system
        case manual(ManualClock)
    }

    private let source: Source

    /// The system clock.
    public static let system = CacheClock(source: .system)

    /// A clock that only moves when told to (for tests).
    public static func manual(_ clock: ManualClock) -> CacheClock {
        CacheClock(source: .manual(clock))
    }

    /// Milliseconds since 1970-01-01T00:00:00Z.
    @inline(__always)
    public func nowMilliseconds() -> Int64 {
        switch source {
        case .system:
            var ts = timespec()
            #if os(Linux)
                clock_gettime(CLOCK_REALTIME_COARSE, &ts)
            #else
                clock_gettime(CLOCK_REALTIME, &ts)
            #endif
            return Int64(ts.tv_sec) &* 1000 &+ Int64(ts.tv_nsec) / 1_000_000
        case .manual(let clock):
            return clock.now
        }
    }

    /// A monotonic instant in nanoseconds, for measuring how long something took.
    public func monotonicNanoseconds() -> Int64 {
        switch source {
        case .system:
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
        case .manual(let clock):
            return clock.now &* 1_000_000
        }
    }

    /// Suspends for `duration` (on a manual clock: until it is advanced that far).
    /// - Throws: `CancellationError` when the task is cancelled first.
    public func sleep(for duration: Duration) async throws {
        switch source {
        case .system:
            try await Task.sleep(for: duration)
        case .manual(let clock):
            try await clock.sleep(until: clock.now &+ max(0, duration.wholeMilliseconds))
        }
    }
}
