import NIOCore
import TieredCache
import TestSupport
import Testing

@Suite("L1 memory store")
struct MemoryStoreTests {
    @Test("set, get, overwrite, remove")
    func basics() {
        let store = MemoryStore()
        #expect(store.get("a") == nil)
        store.set("a", value: buffer("1"), ttl: .seconds(60))
        #expect(store.get("a") == buffer("1"))
        store.set("a", value: buffer("2"), ttl: .seconds(60))
        #expect(store.get("a") == buffer("2"))
        #expect(store.statistics.entries == 1)
        #expect(store.remove("a"))
        #expect(!store.remove("a"))
        #expect(store.get("a") == nil)
        let stats = store.statistics
        #expect(stats.hits == 2 && stats.misses == 2 && stats.entries == 0 && stats.bytes == 0)
    }

    @Test("entries expire at their TTL")
    func expiry() {
        let clock = ManualClock()
        let store = MemoryStore(clock: .manual(clock))
        store.set("short", value: buffer("s"), ttl: .seconds(10))
        store.set("long", value: buffer("l"), ttl: .seconds(100))
        clock.advance(by: .seconds(9))
        #expect(store.get("short") == buffer("s"))
        clock.advance(by: .seconds(1))
        #expect(store.get("short") == nil)
        #expect(store.get("long") == buffer("l"))
        clock.advance(by: .seconds(100))
        #expect(store.removeExpired() == 1)
        #expect(store.statistics.entries == 0)
        #expect(store.statistics.expirations == 2)
    }

    @Test("the entry count bound holds")
    func entryBound() {
        let store = MemoryStore(configuration: .init(maximumEntries: 100, maximumBytes: 1 << 30, shardCount: 4))
        for i in 0..<1000 { store.set("k\(i)", value: buffer("\(i)"), ttl: .seconds(60)) }
        let stats = store.statistics
        #expect(stats.entries <= 100)
        #expect(stats.entries >= 90)
        #expect(stats.evictions + stats.rejections == 1000 - stats.entries, "every key not held was evicted or not admitted")
    }

    @Test("when full, a newcomer asked for more often than CLOCK's victim replaces it; a one-off does not")
    func admission() {
        let store = MemoryStore(configuration: .init(maximumEntries: 10, maximumBytes: 1 << 30, shardCount: 1))
        for i in 0..<10 { store.set("k\(i)", value: buffer("\(i)"), ttl: .seconds(60)) }
        #expect(!store.set("once", value: buffer("x"), ttl: .seconds(60)), "a key seen once does not displace a resident")
        #expect(store.statistics.rejections == 1)
        // A key that keeps being asked for (and missed) earns its place.
        for _ in 0..<3 { _ = store.get("popular") }
        #expect(store.set("popular", value: buffer("p"), ttl: .seconds(60)))
        #expect(store.get("popular") == buffer("p"))
        #expect(store.statistics.entries == 10)
    }

    @Test("the byte bound holds, and a value larger than a shard is refused")
    func byteBound() {
        let store = MemoryStore(configuration: .init(maximumEntries: 10_000, maximumBytes: 64 * 1024, shardCount: 1))
        let value = ByteBuffer(repeating: 7, count: 1000)
        for i in 0..<500 { store.set("k\(i)", value: value, ttl: .seconds(60)) }
        #expect(store.statistics.bytes <= 64 * 1024)
        #expect(store.statistics.entries > 40)
        store.set("big-old", value: buffer("x"), ttl: .seconds(60))
        #expect(!store.set("big-old", value: ByteBuffer(repeating: 1, count: 65 * 1024), ttl: .seconds(60)))
        #expect(store.get("big-old") == nil, "a refused overwrite must not leave the old value behind")
    }

    @Test("hot keys survive a scan of cold keys (CLOCK second chance)")
    func scanResistance() {
        let store = MemoryStore(configuration: .init(maximumEntries: 100, maximumBytes: 1 << 30, shardCount: 1))
        let hot = (0..<50).map { "hot\($0)" }
        for key in hot { store.set(key, value: buffer(key), ttl: .seconds(60)) }
        for i in 0..<5000 {
            store.set("cold\(i)", value: buffer("c"), ttl: .seconds(60))
            if i % 10 == 0 { for key in hot { _ = store.get(key) } }
        }
        let survivors = hot.filter { store.get($0) != nil }.count
        #expect(survivors == 50)
    }

    @Test("random operations agree with a dictionary (probing and backward-shift deletion)")
    func modelCheck() {
        var generator = SeededGenerator(seed: 42)
        let store = MemoryStore(configuration: .init(maximumEntries: 4096, maximumBytes: 1 << 30, shardCount: 2))
        var model: [String: ByteBuffer] = [:]
        for step in 0..<200_000 {
            let key = "key:\(generator.next() % 1500)"
            switch generator.next() % 4 {
            case 0, 1:
                let value = buffer("\(step)")
                store.set(key, value: value, ttl: .seconds(60))
                model[key] = value
            case 2:
                #expect(store.remove(key) == (model.removeValue(forKey: key) != nil))
            default:
                #expect(store.get(key) == model[key], "step \(step) key \(key)")
            }
        }
        #expect(store.statistics.entries == model.count)
        for (key, value) in model { #expect(store.get(key) == value) }
        #expect(store.removeAll() == model.count)
        #expect(store.statistics.bytes == 0)
    }

    @Test("keys lists live entries only")
    func keys() {
        let clock = ManualClock()
        let store = MemoryStore(clock: .manual(clock))
        store.set("a", value: buffer("1"), ttl: .seconds(1))
        store.set("b", value: buffer("2"), ttl: .seconds(100))
        clock.advance(by: .seconds(2))
        #expect(store.keys(limit: 10) == ["b"])
    }
}
