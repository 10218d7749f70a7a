/// A fast seeded 64-bit hash of a key's UTF-8 bytes, eight bytes at a time.
///
/// Swift's `Hasher` (SipHash-1-3) costs more than the rest of an L1 read; this mixes each word
/// with a multiply and xor-shift and ends with the MurmurHash3 finalizer. The per-process
/// random seed keeps bucket positions unpredictable from outside. Keys that reach the cache
/// are validated request paths, so this is not the only line against hash flooding.
struct KeyHasher: Sendable {
    let seed: UInt64

    init(seed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.seed = seed
    }

    @inline(__always)
    func hash(_ key: String) -> UInt64 {
        if let h = key.utf8.withContiguousStorageIfAvailable({ hash(bytes: UnsafeRawBufferPointer($0)) }) {
            return h
        }
        var copy = key
        return copy.withUTF8 { hash(bytes: UnsafeRawBufferPointer($0)) }
    }

    @inline(__always)
    func hash(bytes: UnsafeRawBufferPointer) -> UInt64 {
        let count = bytes.count
        var h = seed ^ (UInt64(truncatingIfNeeded: count) &* 0x9E37_79B9_7F4A_7C15)
        var offset = 0
        while offset + 8 <= count {
            let word = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            h = (h ^ word) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 29
            offset += 8
        }
        if offset < count {
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while offset < count {
                tail |= UInt64(bytes[offset]) << shift
                shift += 8
                offset += 1
            }
            h = (h ^ tail) &* 0x94D0_49BB_1331_11EB
        }
        // MurmurHash3 fmix64
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }
}
