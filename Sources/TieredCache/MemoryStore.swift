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

    /// The value of a live entry, and whether its eager-refresh time has passed. Only the first
    /// caller to find it due is told so (the mark is cleared under the lock), so one refresh is
    /// started, not one per reader.
    @inline(__always)
    public func lookup(_ key: String) -> (value: ByteBuffer, refresh: Bool)? {
        let hash = hasher.hash(key)
        let now = clock.nowMilliseconds()
        return shard(for: hash).pointee.withLock { $0.lookup(key, hash: hash, now: now) }
    }

    /// The value of a live entry and the time (ms since 1970) it expires, or nil.
    public func entry(_ key: String) -> (value: ByteBuffer, expiresAt: Int64)? {
        let hash = hasher.hash(key)
        let now = clock.nowMilliseconds()
        return shard(for: hash).pointee.withLock { $0.get(key, hash: hash, now: now) }
    }

    /// Stores a value until `expiresAt` (ms since 1970).
    ///
    /// - Returns: false when the value alone is larger than a shard may hold (it is not stored,
    ///   and an older value under the key is removed).
    @discardableResult
    public func set(_ key: String, value: ByteBuffer, expiresAt: Int64) -> Bool {
        set(key, value: value, expiresAt: expiresAt, now: clock.nowMilliseconds())
    }

    @inline(__always) @discardableResult
    func set(_ key: String, value: ByteBuffer, expiresAt: Int64, now: Int64, refreshAt: Int64 = .max) -> Bool {
        let hash = hasher.hash(key)
        return shard(for: hash).pointee.withLock { $0.set(key, hash: hash, value: value, expiresAt: expiresAt, refreshAt: refreshAt, now: now) }
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

/// One shard: an open-addressing index (linear probing, backward-shift deletion, no
/// tombstones) over a dense array of entries, evicted by CLOCK.
struct ShardTable: ~Copyable {
    struct Entry {
        var key: String
        var value: ByteBuffer
        var hash: UInt64
        var expiresAt: Int64
        /// When a read should start an eager refresh (Int64.max: never, or already started).
        var refreshAt: Int64
        var size: Int
        var referenced: Bool
        var occupied: Bool
    }

    /// 0 = empty; else the hash's upper 32 bits << 32 | (entry index + 1).
    private var slots: [UInt64]
    private let slotMask: Int
    fileprivate(set) var entries: [Entry] = []
    private var freeList: [Int] = []
    private var hand = 0
    let maximumEntries: Int
    let maximumBytes: Int
    fileprivate(set) var count = 0
    fileprivate(set) var bytes = 0
    fileprivate(set) var hits = 0
    fileprivate(set) var misses = 0
    fileprivate(set) var evictions = 0
    fileprivate(set) var expirations = 0
    fileprivate(set) var rejections = 0
    /// How often keys were asked for and not found (or stored): the admission's memory.
    private var sketch: FrequencySketch

    init(maximumEntries: Int, maximumBytes: Int) {
        self.maximumEntries = maximumEntries
        self.maximumBytes = maximumBytes
        var capacity = 16
        while capacity < maximumEntries * 2 { capacity <<= 1 }
        self.slots = Array(repeating: 0, count: capacity)
        self.slotMask = capacity - 1
        self.sketch = FrequencySketch(capacity: maximumEntries)
    }

    @inline(__always)
    private func idealSlot(_ hash: UInt64) -> Int {
        Int(truncatingIfNeeded: hash >> 32) & slotMask
    }

    /// The slot and entry index of `key`, if present.
    @inline(__always)
    private func find(_ key: String, hash: UInt64) -> (slot: Int, index: Int)? {
        let tag = hash >> 32
        var position = idealSlot(hash)
        while true {
            let slot = slots[position]
            if slot == 0 { return nil }
            if slot >> 32 == tag {
                let index = Int(truncatingIfNeeded: slot & 0xFFFF_FFFF) - 1
                if entries[index].hash == hash && entries[index].key == key { return (position, index) }
            }
            position = (position + 1) & slotMask
        }
    }

    /// The index of the live entry for `key`, counting the hit or the miss (and dropping an
    /// expired entry on the way).
    @inline(__always)
    private mutating func live(_ key: String, hash: UInt64, now: Int64) -> Int? {
        guard let found = find(key, hash: hash) else {
            misses += 1
            sketch.increment(hash)
            return nil
        }
        if entries[found.index].expiresAt <= now {
            removeEntry(index: found.index, slot: found.slot)
            expirations += 1
            misses += 1
            return nil
        }
        if !entries[found.index].referenced { entries[found.index].referenced = true }
        hits += 1
        return found.index
    }

    mutating func get(_ key: String, hash: UInt64, now: Int64) -> (value: ByteBuffer, expiresAt: Int64)? {
        guard let index = live(key, hash: hash, now: now) else { return nil }
        return (entries[index].value, entries[index].expiresAt)
    }

    mutating func lookup(_ key: String, hash: UInt64, now: Int64) -> (value: ByteBuffer, refresh: Bool)? {
        guard let index = live(key, hash: hash, now: now) else { return nil }
        guard entries[index].refreshAt <= now else { return (entries[index].value, false) }
        entries[index].refreshAt = .max
        return (entries[index].value, true)
    }

    mutating func set(_ key: String, hash: UInt64, value: ByteBuffer, expiresAt: Int64, refreshAt: Int64 = .max, now: Int64) -> Bool {
        let size = key.utf8.count + value.readableBytes + MemoryStore.entryOverhead
        let existing = find(key, hash: hash)
        guard size <= maximumBytes else {
            if let existing { removeEntry(index: existing.index, slot: existing.slot) }
            return false
        }
        if let existing {
            bytes += size - entries[existing.index].size
            entries[existing.index].value = value
            entries[existing.index].expiresAt = expiresAt
            entries[existing.index].refreshAt = refreshAt
            entries[existing.index].size = size
            entries[existing.index].referenced = true
            if bytes > maximumBytes { makeRoom(for: 0, now: now) }
            return true
        }
        // TinyLFU admission: when the store is full, a newcomer takes the place of CLOCK's victim
        // only if it has been asked for more often; one-off keys (a scan) cannot flush hot ones.
        let frequency = sketch.increment(hash)
        if isFull(adding: size), let victim = clockVictim(now: now), frequency <= sketch.estimate(entries[victim].hash) {
            rejections += 1
            return false
        }
        makeRoom(for: size, now: now)
        let entry = Entry(
            key: key, value: value, hash: hash, expiresAt: expiresAt, refreshAt: refreshAt, size: size, referenced: false, occupied: true)
        let index: Int
        if let free = freeList.popLast() {
            index = free
            entries[index] = entry
        } else {
            index = entries.count
            entries.append(entry)
        }
        var position = idealSlot(hash)
        while slots[position] != 0 { position = (position + 1) & slotMask }
        slots[position] = (hash >> 32) << 32 | UInt64(index + 1)
        count += 1
        bytes += size
        return true
    }

    mutating func remove(_ key: String, hash: UInt64) -> Bool {
        guard let found = find(key, hash: hash) else { return false }
        removeEntry(index: found.index, slot: found.slot)
        return true
    }

    mutating func removeAll() -> Int {
        let removed = count
        for i in slots.indices { slots[i] = 0 }
        entries.removeAll(keepingCapacity: true)
        freeList.removeAll(keepingCapacity: true)
        hand = 0
        count = 0
        bytes = 0
        return removed
    }

    mutating func removeExpired(now: Int64) -> Int {
        var removed = 0
        for index in entries.indices where entries[index].occupied && entries[index].expiresAt <= now {
            removeEntry(index: index, slot: nil)
            removed += 1
        }
        expirations += removed
        return removed
    }

    /// Evicts by CLOCK until one more entry of `size` bytes fits.
    private func isFull(adding size: Int) -> Bool {
        count + 1 > maximumEntries || bytes + size > maximumBytes
    }

    /// The entry CLOCK would evict next: advances the hand past referenced entries (clearing
    /// their bit, as an eviction pass does) and returns the first one that is not.
    private mutating func clockVictim(now: Int64) -> Int? {
        var steps = 0
        let limit = entries.count * 2 + 2
        while steps < limit, !entries.isEmpty {
            if hand >= entries.count { hand = 0 }
            if entries[hand].occupied {
                if entries[hand].expiresAt <= now || !entries[hand].referenced { return hand }
                entries[hand].referenced = false
            }
            hand += 1
            steps += 1
        }
        return nil
    }

    private mutating func makeRoom(for size: Int, now: Int64) {
        var steps = 0
        let limit = entries.count * 3 + 3
        while count > 0, count + (size > 0 ? 1 : 0) > maximumEntries || bytes + size > maximumBytes, steps < limit {
            if hand >= entries.count { hand = 0 }
            if entries[hand].occupied {
                if entries[hand].expiresAt <= now {
                    removeEntry(index: hand, slot: nil)
                    expirations += 1
                } else if entries[hand].referenced {
                    entries[hand].referenced = false
                } else {
                    removeEntry(index: hand, slot: nil)
                    evictions += 1
                }
            }
            hand += 1
            steps += 1
        }
    }

    private mutating func removeEntry(index: Int, slot knownSlot: Int?) {
        let hash = entries[index].hash
        var position: Int
        if let knownSlot {
            position = knownSlot
        } else {
            position = idealSlot(hash)
            let wanted = (hash >> 32) << 32 | UInt64(index + 1)
            while slots[position] != wanted { position = (position + 1) & slotMask }
        }
        // Backward-shift deletion: pull later members of the probe run into the hole.
        var hole = position
        var next = position
        while true {
            next = (next + 1) & slotMask
            let slot = slots[next]
            if slot == 0 { break }
            let ideal = Int(truncatingIfNeeded: slot >> 32) & slotMask
            let staysPut = hole <= next ? (hole < ideal && ideal <= next) : (hole < ideal || ideal <= next)
            if !staysPut {
                slots[hole] = slot
                hole = next
            }
        }
        slots[hole] = 0
        count -= 1
        bytes -= entries[index].size
        entries[index].occupied = false
        entries[index].referenced = false
        entries[index].key = ""
        entries[index].value = ByteBuffer()
        freeList.append(index)
    }
}

/// A count-min sketch of 4-bit counters (four rows of 4 × capacity), halved every `10 × capacity` increments
/// so old popularity fades (TinyLFU's "reset").
struct FrequencySketch {
    private var counters: [UInt8]
    private let mask: Int
    private var additions = 0
    private let sampleSize: Int

    init(capacity: Int) {
        var width = 64
        while width < max(1, capacity) * 4 { width <<= 1 }
        counters = Array(repeating: 0, count: width * 4)
        mask = width - 1
        sampleSize = max(1, capacity) * 10
    }

    /// The counter of `hash` in `row`: each row re-mixes the hash with its own constant
    /// (MurmurHash3's finalizer), so a collision in one row says nothing about the others.
    @inline(__always)
    private func index(_ hash: UInt64, row: Int) -> Int {
        var x = hash ^ (UInt64(row + 1) &* 0x9E37_79B9_7F4A_7C15)
        x ^= x >> 33
        x = x &* 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        return row * (mask + 1) + (Int(truncatingIfNeeded: x) & mask)
    }

    /// Counts one more sighting of `hash`; returns the new estimate.
    @discardableResult
    mutating func increment(_ hash: UInt64) -> UInt8 {
        var minimum: UInt8 = 15
        for row in 0..<4 {
            let i = index(hash, row: row)
            if counters[i] < 15 { counters[i] += 1 }
            minimum = min(minimum, counters[i])
        }
        additions += 1
        if additions >= sampleSize {
            for i in counters.indices { counters[i] >>= 1 }
            additions /= 2
        }
        return minimum
    }

    /// How many times `hash` was seen (an over-estimate at worst).
    func estimate(_ hash: UInt64) -> UInt8 {
        var minimum: UInt8 = 15
        for row in 0..<4 { minimum = min(minimum, counters[index(hash, row: row)]) }
        return minimum
    }
}
