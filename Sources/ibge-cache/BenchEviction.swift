import ArgumentParser
import Foundation
import NIOCore
import TieredCache

/// Hit ratios of the L1's eviction policy against plain LRU on two traces of município ids.
struct BenchEviction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eviction",
        abstract: "Compare the L1's eviction (CLOCK with TinyLFU admission) with plain LRU on a Zipf trace and a scan-heavy trace.",
        discussion: """
            Keys are the 5,571 município ids. The Zipf trace draws --requests ids with exponent --exponent. The \
            scan-heavy trace mixes the same Zipf traffic with sequential scans over every id (a crawler, or a \
            preload), one scan every --scan-every requests. Both policies hold --capacity entries; a miss \
            inserts the key, as a read-through cache does. For the scan-heavy trace the ratios count only the \
            Zipf requests: how well the hot keys survive the scans.
            """
    )

    @Option(help: "Requests per trace.")
    var requests = 500_000

    @Option(help: "Entries the cache holds.")
    var capacity = 500

    @Option(help: "Zipf exponent.")
    var exponent = 0.9

    @Option(help: "Zipf requests between two full scans in the scan-heavy trace.")
    var scanEvery = 20_000

    @Flag(help: "Print one JSON line.")
    var json = false

    func validate() throws {
        guard requests > 0, capacity > 0, exponent > 0, scanEvery > 0 else { throw ValidationError("options must be positive") }
    }

    struct Row: Codable {
        var trace: String
        var clock_hit_ratio: Double
        var lru_hit_ratio: Double
    }

    func run() async throws {
        let keyCount = 5571
        var generator = SplitMix(seed: 7)
        let zipf = ZipfSampler(n: keyCount, s: exponent)
        let zipfTrace = (0..<requests).map { _ in zipf.sample(&generator) }
        // Scan requests are stored as -1 - key, so they can be told apart and left out of the count.
        var scanTrace: [Int] = []
        scanTrace.reserveCapacity(requests + requests / scanEvery * keyCount)
        for (i, key) in zipfTrace.enumerated() {
            if i % scanEvery == scanEvery / 2 { scanTrace += (0..<keyCount).map { -1 - $0 } }
            scanTrace.append(key)
        }
        let keys = (0..<keyCount).map { "v1:localidades/municipios/\($0)" }
        var rows: [Row] = []
        for (name, trace) in [("zipf", zipfTrace), ("zipf+scans (hot requests)", scanTrace)] {
            rows.append(
                Row(
                    trace: name, clock_hit_ratio: Self.clockHitRatio(trace, keys: keys, capacity: capacity),
                    lru_hit_ratio: Self.lruHitRatio(trace, capacity: capacity)))
        }
        if json {
            print(String(decoding: try JSONEncoder().encode(rows), as: UTF8.self))
            return
        }
        print("eviction: \(keyCount) keys, capacity \(capacity), Zipf s=\(exponent), \(requests) requests (+ a full scan every \(scanEvery))")
        print("")
        print("| trace | L1 (CLOCK + TinyLFU admission) hit ratio | LRU hit ratio | difference |")
        print("|---|---:|---:|---:|")
        for row in rows {
            print(
                String(
                    format: "| %@ | %.2f%% | %.2f%% | %+.2f points |", row.trace, row.clock_hit_ratio * 100, row.lru_hit_ratio * 100,
                    (row.clock_hit_ratio - row.lru_hit_ratio) * 100))
        }
    }

    /// The real L1 (one shard, so the capacity is exact), used as a read-through cache.
    static func clockHitRatio(_ trace: [Int], keys: [String], capacity: Int) -> Double {
        let store = MemoryStore(configuration: .init(maximumEntries: capacity, maximumBytes: 1 << 40, shardCount: 1))
        let value = ByteBuffer(string: "x")
        var hits = 0
        var counted = 0
        for entry in trace {
            let index = entry >= 0 ? entry : -1 - entry
            if store.get(keys[index]) != nil {
                if entry >= 0 { hits += 1 }
            } else {
                store.set(keys[index], value: value, ttl: .seconds(3600))
            }
            if entry >= 0 { counted += 1 }
        }
        return Double(hits) / Double(counted)
    }

    /// Plain LRU: a hash map into a doubly linked list kept in arrays.
    static func lruHitRatio(_ trace: [Int], capacity: Int) -> Double {
        var slotOf: [Int: Int] = [:]
        var keyAt = [Int](repeating: -1, count: capacity)
        var prev = [Int](repeating: -1, count: capacity)
        var next = [Int](repeating: -1, count: capacity)
        var head = -1  // most recent
        var tail = -1  // least recent
        var used = 0
        func unlink(_ s: Int) {
            if prev[s] >= 0 { next[prev[s]] = next[s] } else { head = next[s] }
            if next[s] >= 0 { prev[next[s]] = prev[s] } else { tail = prev[s] }
        }
        func pushFront(_ s: Int) {
            prev[s] = -1
            next[s] = head
            if head >= 0 { prev[head] = s }
            head = s
            if tail < 0 { tail = s }
        }
        var hits = 0
        var counted = 0
        for entry in trace {
            let key = entry >= 0 ? entry : -1 - entry
            if entry >= 0 { counted += 1 }
            if let s = slotOf[key] {
                if entry >= 0 { hits += 1 }
                unlink(s)
                pushFront(s)
                continue
            }
            let s: Int
            if used < capacity {
                s = used
                used += 1
            } else {
                s = tail
                unlink(s)
                slotOf[keyAt[s]] = nil
            }
            keyAt[s] = key
            slotOf[key] = s
            pushFront(s)
        }
        return Double(hits) / Double(counted)
    }
}

/// Zipf ranks by inverse transform over the cumulative weights.
struct ZipfSampler {
    let cumulative: [Double]

    init(n: Int, s: Double) {
        var total = 0.0
        cumulative = (1...n).map { rank in
            total += 1 / pow(Double(rank), s)
            return total
        }
    }

    func sample(_ generator: inout SplitMix) -> Int {
        let target = Double(generator.next() >> 11) / Double(1 << 53) * (cumulative.last ?? 1)
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < target { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// SplitMix64, so the traces are the same on every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
