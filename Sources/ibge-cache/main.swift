import NIOCore
import TieredCache

nonisolated func bench() async {
let cache = TieredCache(redis: nil)
let keys = (0..<10_000).map { "v1:localidades/municipios/\(4_200_000 + $0)" }
let value = ByteBuffer(string: String(repeating: "x", count: 500))
let clock = ContinuousClock()
for _ in 0..<3 {
    let rounds = 100
    var start = clock.now
    for _ in 0..<rounds { for key in keys { await cache.set(key, value: value) } }
    var elapsed = clock.now - start
    let writes = Double(rounds * keys.count) / (Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
    start = clock.now
    var found = 0
    for _ in 0..<rounds { for key in keys { if await cache.get(key) != nil { found += 1 } } }
    elapsed = clock.now - start
    let reads = Double(rounds * keys.count) / (Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
    print("writes/s \(Int(writes))  reads/s \(Int(reads)) found \(found)")
}
}
await bench()
