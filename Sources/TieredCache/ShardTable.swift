import NIOCore

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
        /// The value's ``ContentTag`` (0: not computed yet; the first ``lookupValue`` computes it).
        var tag: UInt64
        var size: Int
        var referenced: Bool
        var occupied: Bool
        /// A stale value kept for the fail-safe's throttle: no longer fresh, though live until
        /// `expiresAt`. Otherwise the value is fresh until `expiresAt`. (A flag, not a second
        /// time: it fits beside the other flags, so an entry stays as small as it can.)
        var stale: Bool

        /// When the value stops being fresh, as ``CachedValue/freshUntil`` reports it.
        var freshUntil: Int64 { stale ? 0 : expiresAt }
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

    /// The live entry with its tag and freshness; `consumeRefresh` clears a due refresh mark
    /// (the caller starts the refresh), else the mark stays for a caller that can.
    mutating func lookupValue(_ key: String, hash: UInt64, now: Int64, consumeRefresh: Bool) -> (value: CachedValue, refresh: Bool)? {
        guard let index = live(key, hash: hash, now: now) else { return nil }
        if entries[index].tag == 0 { entries[index].tag = ContentTag.of(entries[index].value) }
        let entry = CachedValue(
            value: entries[index].value, tag: entries[index].tag, freshUntil: entries[index].freshUntil,
            tier: entries[index].stale ? .stale : .l1)
        guard entries[index].refreshAt <= now else { return (entry, false) }
        if consumeRefresh { entries[index].refreshAt = .max }
        return (entry, true)
    }

    /// Stores a value; `freshUntil` before `expiresAt` marks it stale (kept for the fail-safe's throttle).
    /// Whether the key holds a live value that is fresh (not one kept stale by the fail-safe).
    func holdsFresh(_ key: String, hash: UInt64, now: Int64) -> Bool {
        guard let found = find(key, hash: hash) else { return false }
        return !entries[found.index].stale && entries[found.index].expiresAt > now
    }

    mutating func set(
        _ key: String, hash: UInt64, value: ByteBuffer, expiresAt: Int64, refreshAt: Int64 = .max, tag: UInt64 = 0,
        freshUntil: Int64? = nil, now: Int64
    ) -> Bool {
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
            entries[existing.index].tag = tag
            entries[existing.index].stale = freshUntil.map { $0 < expiresAt } ?? false
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
            key: key, value: value, hash: hash, expiresAt: expiresAt, refreshAt: refreshAt, tag: tag, size: size, referenced: false,
            occupied: true, stale: freshUntil.map { $0 < expiresAt } ?? false)
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
        // An empty table costs nothing to empty again (a listener far behind flushes often).
        guard count > 0 || !entries.isEmpty else { return 0 }
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
