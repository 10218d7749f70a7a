/// The shared tier under the cache (L2): where values outlive a process and are seen by every
/// instance. ``TieredCache`` holds the policy; a store only stores.
///
/// Shaped like Hummingbird's `PersistDriver`: a few async calls with typed errors. Keys given
/// to a store are the cache's keys (without any prefix: the store adds its own). Values are
/// ``CacheEnvelope``s, which a store keeps for the lifetime it is given (fresh time plus grace).
///
/// A store also carries what instances sharing it need to agree on: a load lock per key, and a
/// backplane of notices telling the others which L1 entries changed. `RedisStore` (module
/// `TieredCacheRedis`) implements it on Redis; ``InMemoryL2Store`` in this process.
///
/// Time limits are the cache's business, not the store's: the cache races a read against its
/// own clock and cancels the read when it loses, so a store must end a cancelled call promptly
/// (with ``L2StoreError/Code/cancelled``).
public protocol L2Store: Sendable {
    /// Whether other processes share this store (Redis), rather than this process alone. A
    /// shared store starts "not connected" until a ``ping()`` succeeds.
    var isShared: Bool { get }

    /// Where the store is, for logs and status (`redis://127.0.0.1:6379/0`, `memory`).
    var location: String { get }

    /// Reads one key.
    func read(_ key: String) async throws(L2StoreError) -> L2Read

    /// Reads several keys in one round trip; one result per key, in order.
    func read(_ keys: [String]) async throws(L2StoreError) -> [L2Read]

    /// Writes entries in one round trip; with `notify`, each write is announced on the
    /// backplane as a ``BackplaneNotice/Operation/set`` from that origin, in the same trip.
    func write(_ entries: [L2Entry], notify origin: String?) async throws(L2StoreError)

    /// Removes a key; returns whether it existed. With `notify`, announces it.
    func remove(_ key: String, notify origin: String?) async throws(L2StoreError) -> Bool

    /// Removes every key of this cache (and nothing else); returns how many. With `notify`,
    /// announces it.
    func removeAll(notify origin: String?) async throws(L2StoreError) -> Int

    /// Counts this cache's keys, walking at most `limit` of them, and returns up to
    /// `sampleSize` of their names as the store spells them (a Redis store with its prefix).
    func count(limit: Int, sampleSize: Int) async throws(L2StoreError) -> L2KeyCount

    /// Checks that the store answers.
    func ping() async throws(L2StoreError)

    /// The store's memory use and bound, when it has any to report (Redis: `INFO memory`).
    func memory() async throws(L2StoreError) -> L2Memory?

    /// The store's clock, in milliseconds since 1970, when it has its own (Redis: `TIME`):
    /// instances sharing the store judge freshness on it rather than on their own clocks.
    func time() async throws(L2StoreError) -> Int64?

    /// Takes the load lock of `key` for `lease` if nobody holds it; returns whether it did.
    func lock(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool

    /// Releases the load lock of `key` if it still holds `token` (it may have expired and been
    /// taken by another).
    func unlock(_ key: String, token: String) async throws(L2StoreError)

    /// Extends the load lock of `key` to `lease` from now if it still holds `token`; returns
    /// whether it did (false: it lapsed, and may be another's).
    func renew(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool

    /// The notices of every instance sharing the store (this one's included), until the task
    /// consuming them ends. Returns once listening.
    func notices() async throws(L2StoreError) -> AsyncStream<BackplaneNotice>
}

/// What a read of one key found.
public enum L2Read: Sendable, Equatable {
    /// A valid envelope.
    case hit(CacheEnvelope)
    /// No such key.
    case miss
    /// Something that is not one of our envelopes (ignored; the reason says what).
    case invalid(String)
    /// No answer within the cache's L2 soft timeout (the read was cancelled).
    case tooSlow
}

/// A value to write, and how long the store keeps it.
public struct L2Entry: Sendable {
    /// The cache key.
    public var key: String
    /// The value and when it stops being fresh.
    public var envelope: CacheEnvelope
    /// How long the store keeps it (its TTL plus the grace period).
    public var lifetime: Duration

    /// Creates an entry.
    public init(key: String, envelope: CacheEnvelope, lifetime: Duration) {
        self.key = key
        self.envelope = envelope
        self.lifetime = lifetime
    }
}

/// How many keys a store holds for the cache.
/// How much memory a shared store uses, and its bound.
public struct L2Memory: Sendable, Hashable {
    /// Bytes in use (Redis `used_memory`).
    public var usedBytes: Int
    /// The bound (Redis `maxmemory`; 0: none).
    public var maximumBytes: Int
    /// What happens at the bound (Redis `maxmemory-policy`).
    public var policy: String

    /// Creates a report.
    public init(usedBytes: Int, maximumBytes: Int, policy: String) {
        self.usedBytes = usedBytes
        self.maximumBytes = maximumBytes
        self.policy = policy
    }
}

extension L2Store {
    /// No memory to report.
    public func memory() async throws(L2StoreError) -> L2Memory? { nil }

    /// No clock of its own: the process's clock is the store's.
    public func time() async throws(L2StoreError) -> Int64? { nil }
}

public struct L2KeyCount: Sendable, Hashable {
    /// Keys counted.
    public var count: Int
    /// Some of their names, as the store spells them.
    public var sample: [String]
    /// Whether every key was counted (false when the walk stopped at its limit).
    public var complete: Bool

    /// Creates a count.
    public init(count: Int, sample: [String], complete: Bool) {
        self.count = count
        self.sample = sample
        self.complete = complete
    }
}

/// A message on the backplane: an instance changed a key (or everything).
public struct BackplaneNotice: Sendable, Hashable {
    /// What changed.
    public enum Operation: String, Sendable {
        /// A value was written.
        case set
        /// A key was removed.
        case remove
        /// Every key was removed.
        case clear
        /// Notices may have been lost (the subscription dropped, or this listener fell behind):
        /// anything in L1 may be stale.
        case lost
    }

    /// The instance that made the change.
    public var origin: String
    /// What it did.
    public var operation: Operation
    /// The cache key (empty for ``Operation/clear``).
    public var key: String

    /// Creates a notice.
    public init(origin: String, operation: Operation, key: String) {
        self.origin = origin
        self.operation = operation
        self.key = key
    }
}

/// A failure of an L2 store.
public struct L2StoreError: Error, Sendable, CustomStringConvertible {
    /// Kinds of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: Hashable, Sendable { case unavailable, rejected, cancelled }
        let base: Base
        /// The store cannot be reached, or did not answer in time: the cache stops using it
        /// until it answers again (the circuit opens).
        public static let unavailable = Code(base: .unavailable)
        /// The store answered, with an error (a bad command, a full server): this call failed,
        /// the store is still usable.
        public static let rejected = Code(base: .rejected)
        /// The caller stopped waiting (its task was cancelled): nothing is wrong with the store.
        public static let cancelled = Code(base: .cancelled)

        public var description: String {
            switch base {
            case .unavailable: "unavailable"
            case .rejected: "rejected"
            case .cancelled: "cancelled"
            }
        }
    }

    /// What failed.
    public let code: Code
    /// The store's words for it.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "L2 store \(code): \(message)" }
}
