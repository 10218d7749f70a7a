import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The time source of the cache: Unix time in milliseconds.
///
/// The system clock reads `CLOCK_REALTIME_COARSE`, a vDSO read of the kernel's tick-updated
/// time (no system call, a few nanoseconds, millisecond-ish resolution): cheap enough for every
/// L1 read, and wall time, so the expiry written into Redis envelopes means the same to every
/// instance. Tests use a manual clock they move by hand.
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
}

/// A clock for tests: starts at a fixed time and moves only by ``advance(by:)``.
public final class ManualClock: Sendable {
    private let milliseconds: Atomic<Int64>

    /// Creates a clock at `start` milliseconds since 1970 (default 2026-01-01).
    public init(start: Int64 = 1_767_225_600_000) {
        self.milliseconds = Atomic(start)
    }

    /// The current time in milliseconds since 1970.
    public var now: Int64 { milliseconds.load(ordering: .relaxed) }

    /// Moves the clock forward.
    public func advance(by duration: Duration) {
        milliseconds.add(duration.wholeMilliseconds, ordering: .relaxed)
    }
}

extension Duration {
    /// Whole milliseconds (truncated).
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1000 &+ attoseconds / 1_000_000_000_000_000
    }
}
