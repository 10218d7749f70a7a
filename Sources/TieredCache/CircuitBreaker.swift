import Synchronization

/// Whether the cache may use its L2 store right now.
///
/// Open means "do not even try": requests go to L1 and the source without waiting on the store's
/// timeouts. The first connectivity failure opens it; only the cache's background probe closes
/// it again, when the store answers a ping. For a shared store it starts open ("not connected
/// yet") until the first probe succeeds.
final class CircuitBreaker: Sendable {
    private let open: Atomic<Bool>
    private let details: Mutex<Details>

    init(open: Bool) {
        self.open = Atomic(open)
        self.details = Mutex(Details(lastError: open ? "not connected yet" : nil))
    }

    struct Details {
        var openings = 0
        var lastError: String?
        var changedAt: Int64 = 0
    }

    /// Whether the store must be skipped. One relaxed atomic load.
    @inline(__always)
    var isOpen: Bool { open.load(ordering: .relaxed) }

    /// Opens the circuit; returns true when it was closed before (this call opened it).
    @discardableResult
    func trip(_ reason: String, now: Int64) -> Bool {
        let wasOpen = open.exchange(true, ordering: .acquiringAndReleasing)
        details.withLock { details in
            details.lastError = reason
            if !wasOpen {
                details.openings += 1
                details.changedAt = now
            }
        }
        return !wasOpen
    }

    /// Closes the circuit; returns true when it was open before.
    @discardableResult
    func reset(now: Int64) -> Bool {
        let wasOpen = open.exchange(false, ordering: .acquiringAndReleasing)
        if wasOpen {
            details.withLock { details in
                details.lastError = nil
                details.changedAt = now
            }
        }
        return wasOpen
    }

    var snapshot: Details { details.withLock { $0 } }
}
