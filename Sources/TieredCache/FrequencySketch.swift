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
