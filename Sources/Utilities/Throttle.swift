import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Says yes at most once per interval, from any thread (for a warning that could otherwise be
/// logged at every request or message).
public final class Throttle: Sendable {
    private let intervalNanoseconds: Int64
    private let last = Atomic<Int64>(Int64.min / 2)

    /// A throttle letting one event through per `interval`.
    public init(interval: Duration) {
        self.intervalNanoseconds = interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000
    }

    /// Whether this event may go (the first of its interval).
    public func allow() -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
        let previous = last.load(ordering: .relaxed)
        return now - previous >= intervalNanoseconds && last.compareExchange(expected: previous, desired: now, ordering: .relaxed).exchanged
    }
}
