/// Exponential backoff with jitter: the wait before the next attempt after a run of failures.
///
/// The wait starts at ``initial``, doubles with each failure up to ``maximum``, and is spread by
/// a random factor (±25 % by default) so that clients which failed together do not retry in step.
/// A value type: callers keep one per thing they retry and ``reset()`` it on success.
package struct Backoff: Sendable, Hashable {
    /// The wait after the first failure.
    package var initial: Duration
    /// The longest wait.
    package var maximum: Duration
    /// The random factor a wait is multiplied by.
    package var jitter: ClosedRange<Double>
    /// Failures since the last success.
    package private(set) var failures = 0

    package init(initial: Duration, maximum: Duration, jitter: ClosedRange<Double> = 0.75...1.25) {
        self.initial = max(initial, .zero)
        self.maximum = max(maximum, self.initial)
        self.jitter = jitter
    }

    /// The wait after `failures` failures in a row (1 or more), with the jitter `factor`
    /// given: a pure function, for state machines that draw their randomness outside.
    package func delay(afterFailures failures: Int, factor: Double) -> Duration {
        let doublings = min(max(failures - 1, 0), 30)
        let base = min(initial * (1 << doublings), maximum)
        return base * factor
    }

    /// Counts a failure and returns the wait before the next attempt.
    package mutating func next() -> Duration {
        failures += 1
        return delay(afterFailures: failures, factor: Double.random(in: jitter))
    }

    /// Counts a success: the next failure waits ``initial`` again.
    package mutating func reset() {
        failures = 0
    }
}
