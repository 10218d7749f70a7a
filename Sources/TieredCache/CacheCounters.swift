import Synchronization

/// Counters of the cache, updated with relaxed atomics off the L1-hit path.
final class Counters: Sendable {
    let l2Hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let loads = Atomic<Int>(0)
    let loadErrors = Atomic<Int>(0)
    let staleServed = Atomic<Int>(0)
    let coalesced = Atomic<Int>(0)
    let l2Errors = Atomic<Int>(0)
    let invalidValues = Atomic<Int>(0)
    let lockWaits = Atomic<Int>(0)
    let eagerRefreshes = Atomic<Int>(0)
    let l2SoftTimeouts = Atomic<Int>(0)
    let softTimeouts = Atomic<Int>(0)
    let backplaneSent = Atomic<Int>(0)
    let backplaneReceived = Atomic<Int>(0)
    /// Times backplane notices may have been lost (L1 flushed each time).
    let backplaneGaps = Atomic<Int>(0)
    /// Background jobs the queue did not take (full, or shut down): the caller did the work
    /// itself or, for an eager refresh, gave it up.
    let backgroundRefused = Atomic<Int>(0)
    /// Background jobs queued and not yet started.
    let backgroundQueued = Atomic<Int>(0)

}
