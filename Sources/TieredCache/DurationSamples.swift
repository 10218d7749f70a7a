import Synchronization
import Utilities

/// The last `capacity` durations recorded (a ring), for percentiles of recent behaviour.
final class DurationSamples: Sendable {
    private struct Ring {
        var values: [Duration] = []
        var next = 0
    }

    private let ring = Mutex<Ring>(Ring())
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    func record(_ duration: Duration) {
        ring.withLock { ring in
            if ring.values.count < capacity {
                ring.values.append(duration)
            } else {
                ring.values[ring.next] = duration
            }
            ring.next = (ring.next + 1) % capacity
        }
    }

    /// The `p`-th percentiles (0...100) of the recorded durations, in milliseconds; nil when empty.
    func percentiles(_ ps: [Double]) -> [Double]? {
        let sorted = ring.withLock { $0.values }.sorted()
        guard !sorted.isEmpty else { return nil }
        return ps.map { p in
            let rank = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
            return (sorted[rank].inMilliseconds * 1000).rounded() / 1000
        }
    }
}
