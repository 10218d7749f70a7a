import Synchronization
import Logging
import NIOCore
import Utilities

/// A load lock held in the L2 store: the key it guards and the random token that proves it is ours.
struct LoadLock: Sendable {
    var key: String
    var token: String
}

extension TieredCache {
    enum LockOutcome {
        /// This caller holds the lock: it loads.
        case acquired(LoadLock)
        /// Another instance loaded the value meanwhile.
        case valueAppeared(CachedValue)
        /// No lock (none configured, no shared store, store unavailable, or the wait ran out):
        /// load anyway.
        case proceed
        /// Another instance holds the lock and the caller's wait limit passed (it has a stale
        /// value to answer with meanwhile).
        case stillHeld
    }

    /// Takes the key's load lock in the shared store, or waits for the instance that holds it
    /// to write the value (polling, bounded by the lock's life); if that instance dies, its
    /// lock expires and a waiter takes it.
    ///
    /// With `waitAtMost` (a caller with a stale value at hand), the wait ends after that long
    /// with ``LockOutcome/stillHeld``: the holder renews its lease while its load runs, so
    /// waiting for the lease to lapse could take as long as the load.
    func acquireLoadLock(_ key: String, waitAtMost: Duration? = nil) async -> LockOutcome {
        guard let l2 = usableL2, l2.isShared, let lease = configuration.lockTimeout else { return .proceed }
        let lock = LoadLock(key: key, token: String(UInt64.random(in: .min ... .max), radix: 36))
        // On the monotonic clock: a step of wall time must not cut the wait short or stretch it.
        let start = clock.monotonicNanoseconds()
        // The holder renews its lease while its load runs, so the lock is held as long as the
        // load (at most the hard timeout); if the holder dies, the lease lapses and a waiter
        // takes the lock. The wait is bounded by both.
        let deadline = start &+ (renewalLimit + lease + Self.lockWaitSlack).wholeNanoseconds
        let patience = waitAtMost.map { start &+ $0.wholeNanoseconds }
        var pause = configuration.lockPollInterval
        var waited = false
        while clock.monotonicNanoseconds() < deadline {
            do {
                if try await l2.lock(key, token: lock.token, lease: lease) {
                    if waited, let value = await readL2Fresh(key) {
                        // The holder went away without writing (it died, or its load failed):
                        // the value may have arrived in between.
                        await release(lock)
                        return .valueAppeared(value)
                    }
                    return .acquired(lock)
                }
            } catch {
                l2Failed(error)
                return .proceed
            }
            if !waited {
                waited = true
                counters.lockWaits.add(1, ordering: .relaxed)
            }
            do {
                try await clock.sleep(for: pause)
            } catch {
                return .proceed
            }
            pause = min(pause * 2, .milliseconds(100))
            if let value = await readL2Fresh(key) { return .valueAppeared(value) }
            if let patience, clock.monotonicNanoseconds() >= patience { return .stillHeld }
        }
        logger.warning("gave up waiting for another instance's load", metadata: ["key": "\(key)"])
        return .proceed
    }

    /// Longest a holder renews its lock, and so longest a waiter may wait: the hard timeout, or
    /// five minutes without one.
    var renewalLimit: Duration { configuration.hardTimeout ?? .seconds(300) }

    /// How long past a lock's lease a waiter keeps polling: one last look for the value
    /// before it loads the key itself.
    static let lockWaitSlack = Duration.milliseconds(100)

    /// Runs `operation` while renewing `lock`'s lease every third of it (compare-and-PEXPIRE),
    /// so a load longer than the lease keeps it: other instances wait for this one's value
    /// instead of loading the key again. If this process dies, the renewals stop and the lease
    /// lapses, so another instance takes over. Real time, as the store measures the lease.
    func whileHolding<T: Sendable>(_ lock: LoadLock?, _ operation: () async throws -> T) async throws -> T {
        guard let lock, let lease = configuration.lockTimeout, let l2 = usableL2 else { return try await operation() }
        let logger = self.logger
        let limit = ContinuousClock.now + renewalLimit
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Until the load ends, or at most the hard timeout (a hung load must not hold
                // the lock for ever); a failed renewal is tried again, a refused one ends it.
                while !Task.isCancelled, ContinuousClock.now < limit {
                    try? await Task.sleep(for: lease / 3)
                    guard !Task.isCancelled else { return }
                    do {
                        if try await l2.renew(lock.key, token: lock.token, lease: lease) { continue }
                        logger.warning("load lock lapsed before the load ended", metadata: ["key": "\(lock.key)"])
                        return
                    } catch {
                        continue
                    }
                }
            }
            defer { group.cancelAll() }
            return try await operation()
        }
    }

    func release(_ lock: LoadLock) async {
        guard let l2 else { return }
        do {
            try await l2.unlock(lock.key, token: lock.token)
        } catch {
            l2Failed(error)
        }
    }

    private func readL2Fresh(_ key: String) async -> CachedValue? {
        guard case .hit(let envelope) = await readL2(key), envelope.freshUntil > clock.nowMilliseconds() else { return nil }
        counters.l2Hits.add(1, ordering: .relaxed)
        return fillL1(key, envelope)
    }

    // MARK: - Backplane

    /// Listens to the other instances' notices and drops what they changed from L1, until
    /// cancelled; listens again, with backoff, while the store is away.
    func listen() async {
        guard let l2 else { return }
        var backoff = Backoff(initial: configuration.minimumRecoveryBackoff, maximum: configuration.maximumRecoveryBackoff)
        while !Task.isCancelled {
            do {
                let notices = try await l2.notices()
                backoff.reset()
                for await notice in notices { apply(notice) }
                return  // the stream ends only when the store shuts down
            } catch {
                try? await clock.sleep(for: backoff.next())
            }
        }
    }

    /// Applies another instance's notice to L1.
    func apply(_ notice: BackplaneNotice) {
        guard notice.origin != instanceID else { return }
        counters.backplaneReceived.add(1, ordering: .relaxed)
        switch notice.operation {
        case .set, .remove: memory.remove(notice.key)
        case .clear: memory.removeAll()
        case .lost:
            // A listener far behind hears this often: a flush costs what L1 holds (an empty
            // shard costs nothing), so after the first only what was added since; the warning is
            // logged at most once a second.
            counters.backplaneGaps.add(1, ordering: .relaxed)
            let dropped = memory.removeAll()
            if gapWarnings.allow() {
                logger.warning("backplane notices may have been lost: L1 flushed", metadata: ["entries": "\(dropped)"])
            }
        }
    }
}
