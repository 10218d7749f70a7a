import Synchronization
import Logging
import NIOCore
import Utilities

/// A load lock held in the L2 store: the key it guards and the random token that proves it is ours.
struct LoadLock {
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
    }

    /// Takes the key's load lock in the shared store, or waits for the instance that holds it
    /// to write the value (polling, bounded by the lock's life); if that instance dies, its
    /// lock expires and a waiter takes it.
    func acquireLoadLock(_ key: String) async -> LockOutcome {
        guard let l2 = usableL2, l2.isShared, let lease = configuration.lockTimeout else { return .proceed }
        let lock = LoadLock(key: key, token: String(UInt64.random(in: .min ... .max), radix: 36))
        // On the monotonic clock: a step of wall time must not cut the wait short or stretch it.
        let deadline = clock.monotonicNanoseconds() &+ (lease + Self.lockWaitSlack).wholeNanoseconds
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
        }
        logger.warning("gave up waiting for another instance's load", metadata: ["key": "\(key)"])
        return .proceed
    }

    /// How long past a lock's lease a waiter keeps polling: one last look for the value
    /// before it loads the key itself.
    static let lockWaitSlack = Duration.milliseconds(100)

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
        }
    }
}
