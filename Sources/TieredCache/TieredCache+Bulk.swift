public import NIOCore
import RESP
import Redis
import Synchronization

extension TieredCache {
    /// The values of several keys at once: L1 first, then one `MGET` for the keys L1 lacks,
    /// then one call of `loader` with the keys neither tier has (it returns what it found;
    /// absent keys are absent from the result). Loaded values are written to both tiers in one
    /// pipelined round trip.
    ///
    /// Unlike ``getOrLoad(_:ttl:negativeTTL:isNegative:loader:)`` there is no single-flight or
    /// lock across keys; when the loader fails, keys with a stale value in Redis get it, and the
    /// error is thrown only if some key has neither.
    public func getMany(
        _ keys: [String],
        ttl: Duration? = nil,
        negativeTTL: Duration? = nil,
        isNegative: (@Sendable (ByteBuffer) -> Bool)? = nil,
        loader: @Sendable ([String]) async throws -> [String: ByteBuffer]
    ) async throws -> [String: ByteBuffer] {
        var found: [String: ByteBuffer] = [:]
        var missing: [String] = []
        for key in Set(keys) {
            if let value = memory.get(key) { found[key] = value } else { missing.append(key) }
        }
        guard !missing.isEmpty else { return found }
        missing.sort()

        var stale: [String: ByteBuffer] = [:]
        if let redis, !circuit.isOpen {
            do {
                let raws = try await redis.mget(missing.map(redisKey))
                let now = clock.nowMilliseconds()
                var stillMissing: [String] = []
                for (key, raw) in zip(missing, raws) {
                    guard let raw, let envelope = try? CacheEnvelope(decoding: raw) else {
                        stillMissing.append(key)
                        continue
                    }
                    if envelope.freshUntil > now {
                        counters.l2Hits.add(1, ordering: .relaxed)
                        found[key] = fillL1(key, envelope)
                    } else {
                        stale[key] = envelope.payload
                        stillMissing.append(key)
                    }
                }
                missing = stillMissing
            } catch {
                redisFailed(error)
            }
        }
        guard !missing.isEmpty else { return found }

        counters.misses.add(missing.count, ordering: .relaxed)
        counters.loads.add(1, ordering: .relaxed)
        let loaded: [String: ByteBuffer]
        do {
            loaded = try await loader(missing)
        } catch {
            counters.loadErrors.add(1, ordering: .relaxed)
            guard missing.allSatisfy({ stale[$0] != nil }) else { throw error }
            counters.staleServed.add(missing.count, ordering: .relaxed)
            for key in missing { found[key] = stale[key] }
            return found
        }
        let load = Load(key: "", ttl: ttl ?? configuration.defaultTTL, negativeTTL: negativeTTL, isNegative: isNegative, loader: { ByteBuffer() })
        var writes: [(key: String, value: ByteBuffer, ttl: Duration)] = []
        for key in missing {
            guard let value = loaded[key] else { continue }
            found[key] = value
            writes.append((key, value, load.ttl(for: value, jitter: configuration.ttlJitter)))
        }
        await store(writes)
        return found
    }

    /// Writes several values to L1, and to Redis (with their backplane notices) in one round trip.
    func store(_ writes: [(key: String, value: ByteBuffer, ttl: Duration)]) async {
        let now = clock.nowMilliseconds()
        var commands: [RESPCommand] = []
        for write in writes {
            let freshUntil = now &+ write.ttl.wholeMilliseconds
            memory.set(write.key, value: write.value, expiresAt: freshUntil, now: now)
            commands.append(setCommand(write.key, CacheEnvelope(freshUntil: freshUntil, payload: write.value), ttl: write.ttl))
            if configuration.backplane { commands.append(backplaneNotice(.set, write.key)) }
        }
        guard let redis, !circuit.isOpen, !commands.isEmpty else { return }
        do {
            _ = try await redis.pipeline(commands)
            if configuration.backplane { counters.backplaneSent.add(writes.count, ordering: .relaxed) }
        } catch {
            redisFailed(error)
        }
    }
}
