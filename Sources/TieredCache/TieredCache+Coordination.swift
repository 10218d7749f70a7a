import Logging
import NIOCore
import RESP
import Redis
import Synchronization

/// What instances tell each other on the backplane.
enum BackplaneOperation: String {
    case set, remove, clear
}

/// A load lock held in Redis: its key and the random token that proves it is ours.
struct DistributedLock {
    var key: String
    var token: String
}

extension TieredCache {
    enum LockOutcome {
        /// This caller holds the lock: it loads.
        case acquired(DistributedLock)
        /// Another instance loaded the value meanwhile.
        case valueAppeared(ByteBuffer)
        /// No lock (none configured, Redis unavailable, or the wait ran out): load anyway.
        case proceed
    }

    /// Deletes the lock only if it still holds our token (another instance may hold it now).
    static let releaseScript = RedisScript(
        """
        if redis.call("GET", KEYS[1]) == ARGV[1] then
            return redis.call("DEL", KEYS[1])
        end
        return 0
        """)

    /// Takes the key's load lock in Redis (`SET lock token NX PX`), or waits for the instance
    /// that holds it to write the value (polling, bounded by the lock's life); if that instance
    /// dies, its lock expires and a waiter takes it.
    func acquireLoadLock(_ key: String) async -> LockOutcome {
        guard let redis, let lockTimeout = configuration.lockTimeout, !circuit.isOpen else { return .proceed }
        let lock = DistributedLock(key: configuration.keyPrefix + "lock:" + key, token: String(UInt64.random(in: .min ... .max), radix: 36))
        let deadline = ContinuousClock.now + lockTimeout + .milliseconds(100)
        var pause = configuration.lockPollInterval
        var waited = false
        while ContinuousClock.now < deadline {
            do {
                if try await redis.set(lock.key, value: ByteBuffer(string: lock.token), expiration: lockTimeout, condition: .ifNotExists) {
                    if waited {
                        // The holder went away without writing (it died, or its load failed):
                        // the value may have arrived in between.
                        if let envelope = await readL2Fresh(key) {
                            await release(lock)
                            return .valueAppeared(envelope)
                        }
                    }
                    return .acquired(lock)
                }
            } catch {
                redisFailed(error)
                return .proceed
            }
            if !waited {
                waited = true
                counters.lockWaits.add(1, ordering: .relaxed)
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(100))
            if let value = await readL2Fresh(key) { return .valueAppeared(value) }
        }
        logger.warning("gave up waiting for another instance's load", metadata: ["key": "\(key)"])
        return .proceed
    }

    func release(_ lock: DistributedLock) async {
        guard let redis else { return }
        _ = try? await redis.run(Self.releaseScript, keys: [lock.key], arguments: [ByteBuffer(string: lock.token)])
    }

    private func readL2Fresh(_ key: String) async -> ByteBuffer? {
        guard let envelope = await readL2(key), envelope.freshUntil > clock.nowMilliseconds() else { return nil }
        counters.l2Hits.add(1, ordering: .relaxed)
        return fillL1(key, envelope)
    }

    // MARK: - Backplane

    /// The `PUBLISH` telling the other instances that `key` changed (or everything, for `clear`).
    func backplaneNotice(_ operation: BackplaneOperation, _ key: String) -> RESPCommand {
        var command = RESPCommand("PUBLISH", backplaneChannel)
        command.append(ByteBuffer(string: "1|\(instanceID)|\(operation.rawValue)|\(key)"))
        return command
    }

    /// Tells the other instances that `key` changed (or everything, for `clear`).
    func publish(_ operation: BackplaneOperation, _ key: String) async {
        guard configuration.backplane, let redis, !circuit.isOpen else { return }
        do {
            _ = try await redis.send(backplaneNotice(operation, key))
            counters.backplaneSent.add(1, ordering: .relaxed)
        } catch {
            redisFailed(error)
        }
    }

    /// Listens to the other instances' notices and drops what they changed from L1, until
    /// cancelled; (re)subscribes with backoff while Redis is away.
    func listen() async {
        guard let redis else { return }
        var backoff = configuration.minimumRecoveryBackoff
        while !Task.isCancelled {
            do {
                let messages = try await redis.subscribe(to: [backplaneChannel])
                backoff = configuration.minimumRecoveryBackoff
                for await message in messages {
                    apply(message.payload)
                }
                return  // the stream ends only when the client shuts down
            } catch {
                try? await Task.sleep(for: Self.jittered(backoff))
                backoff = min(backoff * 2, configuration.maximumRecoveryBackoff)
            }
        }
    }

    func apply(_ payload: ByteBuffer) {
        let text = String(buffer: payload)
        let parts = text.split(separator: "|", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "1", parts[1] != instanceID, let operation = BackplaneOperation(rawValue: String(parts[2])) else {
            return
        }
        counters.backplaneReceived.add(1, ordering: .relaxed)
        switch operation {
        case .set, .remove: memory.remove(String(parts[3]))
        case .clear: memory.removeAll()
        }
    }
}
