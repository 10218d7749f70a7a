import Synchronization
import Utilities

extension TieredCache {
    /// Removes `key` from both tiers, and from the other instances' L1 through the backplane;
    /// returns whether each tier had it (`l2` is nil when there is no L2 store or it is not
    /// reachable).
    @discardableResult
    public func remove(_ key: String) async -> (memory: Bool, l2: Bool?) {
        let inMemory = memory.remove(key)
        guard let l2 = usableL2 else { return (inMemory, nil) }
        do {
            let origin = noticeOrigin
            let removed = try await l2.remove(key, notify: origin)
            forgetOverview()
            if origin != nil { counters.backplaneSent.add(1, ordering: .relaxed) }
            return (inMemory, removed)
        } catch {
            l2Failed(error)
            return (inMemory, nil)
        }
    }

    /// What ``clear()`` removed.
    public struct ClearResult: Sendable {
        /// Entries removed from L1.
        public var memoryEntries: Int
        /// Keys removed from the L2 store, or nil when there is none or it was not reachable.
        public var l2Keys: Int?
    }

    /// Removes every entry of L1 and every key of this cache in L2 (only this cache's: a Redis
    /// store deletes its prefix, never the database), and tells the other instances.
    public func clear() async -> ClearResult {
        let memoryEntries = memory.removeAll()
        guard let l2 = usableL2 else { return ClearResult(memoryEntries: memoryEntries, l2Keys: nil) }
        do {
            let origin = noticeOrigin
            let removed = try await l2.removeAll(notify: origin)
            forgetOverview()
            if origin != nil { counters.backplaneSent.add(1, ordering: .relaxed) }
            return ClearResult(memoryEntries: memoryEntries, l2Keys: removed)
        } catch {
            l2Failed(error)
            return ClearResult(memoryEntries: memoryEntries, l2Keys: nil)
        }
    }

    /// What status shows of L2: its keys (counted up to a bound) and its memory.
    public struct L2Overview: Sendable {
        /// This cache's keys, or nil when they could not be counted.
        public var keys: L2KeyCount?
        /// The store's memory, when it reports it.
        public var memory: L2Memory?
    }

    /// The L2 overview for status, cheap to ask for often: one walk of the keys at a time (a
    /// request arriving during one gets the last overview), reused for `maxAge` unless this
    /// instance writes to L2 meanwhile (other instances' writes show within `maxAge`), at most
    /// `limit` keys walked, and a failure here never opens the circuit (an admin read is not a
    /// probe of the store; the watch loop is). Nil when there is no usable L2 store.
    public func l2Overview(maxAge: Duration = .seconds(10), limit: Int = 100_000, sampleSize: Int = 10) async -> L2Overview? {
        guard let l2 = usableL2 else { return nil }
        let now = clock.monotonicNanoseconds() / 1_000_000
        let (cached, mustTake, generation): (L2Overview?, Bool, Int) = overview.withLock { state in
            if let last = state.last {
                let age = now - last.at
                let current = last.generation == state.writes
                // Reused while current and young; never walked more than once a second.
                if (current && age < maxAge.wholeMilliseconds) || age < OverviewState.minimumInterval {
                    return (last.value, false, 0)
                }
            }
            if state.taking { return (state.last?.value, false, 0) }
            state.taking = true
            return (nil, true, state.writes)
        }
        guard mustTake else { return cached }
        let keys = try? await l2.count(limit: limit, sampleSize: sampleSize)
        let memory = try? await l2.memory()
        let value = L2Overview(keys: keys, memory: memory ?? nil)
        let finished = clock.monotonicNanoseconds() / 1_000_000
        overview.withLock { state in
            state.taking = false
            // Stamped with the writes it may have missed: one that landed during the walk makes
            // it out of date at once.
            state.last = (finished, generation, value)
        }
        return value
    }

    /// This instance changed L2: the next status counts again.
    func forgetOverview() {
        overview.withLock { $0.writes &+= 1 }
    }

    /// Counts this cache's keys in L2 (walking at most `limit`) with a sample of `sampleSize`
    /// names; nil when there is no L2 store or it is not reachable.
    public func l2Keys(sampleSize: Int = 10, limit: Int = 1_000_000) async -> L2KeyCount? {
        guard let l2 = usableL2 else { return nil }
        do {
            return try await l2.count(limit: limit, sampleSize: sampleSize)
        } catch {
            l2Failed(error)
            return nil
        }
    }

    /// Pings the L2 store now; returns the round trip, or nil when it failed or there is none.
    public func pingL2() async -> Duration? {
        guard let l2 else { return nil }
        let start = clock.monotonicNanoseconds()
        do {
            try await l2.ping()
            return .nanoseconds(clock.monotonicNanoseconds() - start)
        } catch {
            l2Failed(error)
            return nil
        }
    }

    /// Claims `name` for `lease` among the instances sharing the store (a lock that is not
    /// released, so it also keeps late instances from doing the same work in that period): true
    /// when this instance got it, false when another holds it. Without a usable shared store
    /// (none, or Redis down), every instance claims it: each does the work for its own L1.
    public func claim(_ name: String, for lease: Duration) async -> Bool {
        guard let l2 = usableL2, l2.isShared else { return true }
        do {
            return try await l2.lock("claim:" + name, token: instanceID, lease: lease)
        } catch {
            l2Failed(error)
            return true
        }
    }

    /// The shared store's clock when there is one (this process's clock corrected by the
    /// measured offset), in milliseconds since 1970: what instances agree on to schedule together.
    public var sharedNowMilliseconds: Int64 { clock.nowMilliseconds() &+ storeClockOffset.load(ordering: .relaxed) }

    /// Whether the shared store has been tried at least once by the background watch (its
    /// answer applied: connected, clock read; or found down), or there is none: until then,
    /// whether this process answers from memory alone is not known yet.
    public var hasTriedL2: Bool { !(l2?.isShared ?? false) || l2Attempted.load(ordering: .acquiring) }

    /// The in-process tier at a glance.
    public struct L1Status: Sendable {
        /// Counters and sizes.
        public var statistics: MemoryStore.Statistics
        /// Its limits.
        public var limits: MemoryStore.Configuration
        /// Some of its keys.
        public var sample: [String]
    }

    /// The in-process tier now, with up to `sampleSize` of its keys.
    public func l1Status(sampleSize: Int = 10) -> L1Status {
        L1Status(statistics: memory.statistics, limits: memory.configuration, sample: memory.keys(limit: sampleSize))
    }

    /// Where the L2 store is (`redis://…`, `memory`), or nil without one.
    public var l2Location: String? { l2?.location }
}

/// What ``TieredCache/l2Overview(maxAge:limit:sampleSize:)`` remembers.
struct OverviewState {
    /// The last overview: when it was taken, the write count it saw, and what it found.
    var last: (at: Int64, generation: Int, value: TieredCache.L2Overview)?
    /// A walk is under way.
    var taking = false
    /// This instance's L2 writes so far.
    var writes = 0
    /// Least time between two walks, in milliseconds, however many writes there are.
    static let minimumInterval: Int64 = 1000
}
