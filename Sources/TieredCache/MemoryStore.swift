public import NIOCore
import Synchronization
import Utilities

/// The in-process tier (L1): a bounded map from keys to bytes with a time to live.
///
/// Built for the read path: a read hashes the key once with a fast seeded hash, takes one
/// uncontended lock of one of several shards, probes an open-addressing table whose slots carry
/// 32 bits of the hash (so most mismatches never touch the key), reads a coarse clock, and
/// returns the stored `ByteBuffer` (a reference count, no copy, no allocation).
///
/// Bounded by entry count and by bytes (key + value + a fixed overhead). When full, the CLOCK
/// policy (second chance) picks a victim: an entry read since the hand last passed keeps its
/// place once more, an entry never read again goes first, so hot keys survive a scan of cold
/// ones. Expired entries are dropped when met, or by ``removeExpired()``.
public final class MemoryStore: @unchecked Sendable {
    // @unchecked: `shards` is an immutable pointer to Mutex-guarded state, owned by this object.
    /// Limits of the store.
    public struct Configuration: Sendable, Hashable {
        /// Most entries held at once.
        public var maximumEntries: Int
        /// Most bytes held at once (keys, values and per-entry overhead).
        public var maximumBytes: Int
        /// Number of independently locked shards (rounded up to a power of two).
        public var shardCount: Int

        /// Creates a configuration.
        public init(maximumEntries: Int = 100_000, maximumBytes: Int = 256 * 1024 * 1024, shardCount: Int = 16) {
            self.maximumEntries = maximumEntries
            self.maximumBytes = maximumBytes
            self.shardCount = shardCount
        }
    }

    /// Counters and sizes of the store.
    public struct Statistics: Sendable, Hashable {
        /// Reads that found a live entry.
        public var hits: Int
        /// Reads that found nothing (or an expired entry).
        public var misses: Int
        /// Entries dropped to make room.
        public var evictions: Int
        /// Entries dropped because they expired.
        public var expirations: Int
        /// Newcomers not stored because the store was full of keys asked for more often.
        public var rejections: Int
        /// Entries held now.
        public var entries: Int
        /// Bytes held now.
        public var bytes: Int
    }

    /// Bytes counted per entry beyond its key and value.
    public static let entryOverhead = 64

    /// The shards' locks and tables, in one allocation so that reaching a shard costs no
    /// reference counting (an array of class instances would retain and release one per call).
    private let shards: UnsafeMutablePointer<Mutex<ShardTable>>
    private let shardCount: Int
    private let shardMask: UInt64
    private let hasher: KeyHasher
    /// The clock used for expiry.
    public let clock: CacheClock
    /// The limits this store was made with.
    public let configuration: Configuration

    /// Creates an empty store.
    public init(configuration: Configuration = Configuration(), clock: CacheClock = .system) {
        var shardCount = 1
        while shardCount < max(1, configuration.shardCount) { shardCount <<= 1 }
        let entriesPerShard = max(1, (configuration.maximumEntries + shardCount - 1) / shardCount)
        let bytesPerShard = max(1, configuration.maximumBytes / shardCount)
        self.shards = .allocate(capacity: shardCount)
        for i in 0..<shardCount {
            (shards + i).initialize(to: Mutex(ShardTable(maximumEntries: entriesPerShard, maximumBytes: bytesPerShard)))
        }
        self.shardCount = shardCount
        self.shardMask = UInt64(shardCount - 1)
        self.hasher = KeyHasher()
        self.clock = clock
        self.configuration = configuration
    }

    deinit {
        shards.deinitialize(count: shardCount)
        shards.deallocate()
    }

    @inline(__always)
    private func shard(for hash: UInt64) -> UnsafeMutablePointer<Mutex<ShardTable>> {
        shards + Int(truncatingIfNeeded: hash & shardMask)
    }

    private func forEachShard(_ body: (UnsafeMutablePointer<Mutex<ShardTable>>) -> Void) {
        for i in 0..<shardCount { body(shards + i) }
    }

    /// The value of a live entry, or nil.
    @inline(__always)
    public func get(_ key: String) -> ByteBuffer? {
        let hash = hasher.hash(key)
        let now = clock.nowMilliseconds()
        return shard(for: hash).pointee.withLock { $0.get(key, hash: hash, now: now)?.value }
    }

    /// The live entry of `key` with its tag and freshness, and whether its eager-refresh time
    /// has passed. With `consumeRefresh` only the first caller to find it due is told so (it
    /// starts the refresh); without, the mark stays for a caller that can start one.
    @inline(__always)
    public func lookupValue(_ key: String, consumeRefresh: Bool) -> (value: CachedValue, refresh: Bool)? {
        let hash = hasher.hash(key)
        let now = clock.nowMilliseconds()
        return shard(for: hash).pointee.withLock { $0.lookupValue(key, hash: hash, now: now, consumeRefresh: consumeRefresh) }
    }

    /// The value of a live entry and the time (ms since 1970) it expires, or nil.
    public func entry(_ key: String) -> (value: ByteBuffer, expiresAt: Int64)? {
        let hash = hasher.hash(key)
        let now = clock.nowMilliseconds()
        return shard(for: hash).pointee.withLock { $0.get(key, hash: hash, now: now) }
    }

    /// Stores a value until `expiresAt` (ms since 1970). Its ``ContentTag`` is computed by the
    /// first ``lookupValue(_:consumeRefresh:)`` that reads it.
    ///
    /// - Returns: false when the value alone is larger than a shard may hold (it is not stored,
    ///   and an older value under the key is removed).
    @discardableResult
    public func set(_ key: String, value: ByteBuffer, expiresAt: Int64) -> Bool {
        set(key, value: value, expiresAt: expiresAt, now: clock.nowMilliseconds())
    }

    @inline(__always) @discardableResult
    func set(
        _ key: String, value: ByteBuffer, expiresAt: Int64, now: Int64, refreshAt: Int64 = .max, tag: UInt64 = 0, freshUntil: Int64? = nil
    ) -> Bool {
        let hash = hasher.hash(key)
        return shard(for: hash).pointee.withLock {
            $0.set(key, hash: hash, value: value, expiresAt: expiresAt, refreshAt: refreshAt, tag: tag, freshUntil: freshUntil, now: now)
        }
    }

    /// Stores a value that is not fresh (a stale one kept by the fail-safe) until `expiresAt`,
    /// unless the key holds a fresh value by now (a load that ended meanwhile): that one stays.
    @discardableResult
    package func setUnlessFresh(_ key: String, _ cached: CachedValue, expiresAt: Int64, now: Int64) -> Bool {
        let hash = hasher.hash(key)
        return shard(for: hash).pointee.withLock {
            guard !$0.holdsFresh(key, hash: hash, now: now) else { return false }
            return $0.set(key, hash: hash, value: cached.value, expiresAt: expiresAt, tag: cached.tag, freshUntil: cached.freshUntil, now: now)
        }
    }

    /// Stores a cached value (with its tag and freshness) until `expiresAt` (ms since 1970).
    @inline(__always) @discardableResult
    package func set(_ key: String, _ cached: CachedValue, expiresAt: Int64, now: Int64, refreshAt: Int64 = .max) -> Bool {
        set(key, value: cached.value, expiresAt: expiresAt, now: now, refreshAt: refreshAt, tag: cached.tag, freshUntil: cached.freshUntil)
    }

    /// Stores a value for `ttl`.
    @discardableResult
    public func set(_ key: String, value: ByteBuffer, ttl: Duration) -> Bool {
        set(key, value: value, expiresAt: clock.nowMilliseconds() &+ ttl.wholeMilliseconds)
    }

    /// Removes an entry; returns whether there was one.
    @discardableResult
    public func remove(_ key: String) -> Bool {
        let hash = hasher.hash(key)
        return shard(for: hash).pointee.withLock { $0.remove(key, hash: hash) }
    }

    /// Removes every entry; returns how many there were.
    @discardableResult
    public func removeAll() -> Int {
        var total = 0
        forEachShard { shard in total += shard.pointee.withLock { $0.removeAll() } }
        return total
    }

    /// Removes expired entries; returns how many.
    @discardableResult
    public func removeExpired() -> Int {
        let now = clock.nowMilliseconds()
        var total = 0
        forEachShard { shard in total += shard.pointee.withLock { $0.removeExpired(now: now) } }
        return total
    }

    /// Up to `limit` keys of live entries, in no particular order.
    public func keys(limit: Int) -> [String] {
        var keys: [String] = []
        let now = clock.nowMilliseconds()
        forEachShard { shard in
            guard keys.count < limit else { return }
            shard.pointee.withLock { table in
                for entry in table.entries where entry.occupied && entry.expiresAt > now && keys.count < limit {
                    keys.append(entry.key)
                }
            }
        }
        return keys
    }

    /// Counters and sizes, summed over the shards.
    public var statistics: Statistics {
        var total = Statistics(hits: 0, misses: 0, evictions: 0, expirations: 0, rejections: 0, entries: 0, bytes: 0)
        forEachShard { shard in
            shard.pointee.withLock { table in
                total.hits += table.hits
                total.misses += table.misses
                total.evictions += table.evictions
                total.expirations += table.expirations
                total.rejections += table.rejections
                total.entries += table.count
                total.bytes += table.bytes
            }
        }
        return total
    }
}
