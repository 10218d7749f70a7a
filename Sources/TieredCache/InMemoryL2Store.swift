import Utilities
package import NIOCore
import Synchronization

/// An ``L2Store`` in this process: for a cache with no Redis (`REDIS_URL=none`), where it keeps
/// values through their grace period so a stale value can still answer when the source fails,
/// and for tests, where several caches share one to play instances sharing a Redis (locks and
/// backplane included) on a ``ManualClock``.
///
/// Bounded like L1 (it is a ``MemoryStore`` of encoded envelopes). Tests can make it fail
/// (``Faults/unavailable``), answer slowly (``Faults/readDelay``) or hold foreign bytes
/// (``putRaw(_:_:lifetime:)``).
public final class InMemoryL2Store: L2Store {
    /// Failures a test can inject.
    package struct Faults: Sendable {
        /// Every call fails with ``L2StoreError/Code/unavailable``.
        package var unavailable = false
        /// Reads take this long (on the store's clock) before answering.
        package var readDelay: Duration?

        /// No faults.
        package init() {}
    }

    public let isShared: Bool
    public var location: String { "memory" }
    private let values: MemoryStore
    private let clock: CacheClock
    private let locks = Mutex<[String: (token: String, expiresAt: Int64)]>([:])
    private let listeners = Mutex<(next: Int, continuations: [Int: AsyncStream<BackplaneNotice>.Continuation])>((0, [:]))
    private let injected = Mutex(Faults())

    /// Creates a store bounded by `limits`; `shared` makes caches treat it as a shared store
    /// (starting "not connected" until a ping).
    public init(limits: MemoryStore.Configuration = .init(), clock: CacheClock = .system, shared: Bool = false) {
        self.values = MemoryStore(configuration: limits, clock: clock)
        self.clock = clock
        self.isShared = shared
    }

    /// The faults in force.
    package var faults: Faults {
        get { injected.withLock { $0 } }
        set { injected.withLock { $0 = newValue } }
    }

    /// Stores bytes as they are (not an envelope), as another program writing the key would.
    package func putRaw(_ key: String, _ bytes: ByteBuffer, lifetime: Duration) {
        values.set(key, value: bytes, ttl: lifetime)
    }

    /// The bytes stored under `key`, as they are.
    package func raw(_ key: String) -> ByteBuffer? {
        values.get(key)
    }

    /// Whether the load lock of `key` is held now.
    package func isLocked(_ key: String) -> Bool {
        let now = clock.nowMilliseconds()
        return locks.withLock { $0[key].map { $0.expiresAt > now } ?? false }
    }

    private func check() throws(L2StoreError) {
        if injected.withLock({ $0.unavailable }) { throw L2StoreError(.unavailable, "the in-memory store is made unavailable") }
    }

    private func decode(_ bytes: ByteBuffer?) -> L2Read {
        guard let bytes else { return .miss }
        do {
            return .hit(try CacheEnvelope(decoding: bytes))
        } catch {
            return .invalid("\(error)")
        }
    }

    public func read(_ key: String) async throws(L2StoreError) -> L2Read {
        try await delayRead()
        return decode(values.get(key))
    }

    public func read(_ keys: [String]) async throws(L2StoreError) -> [L2Read] {
        try await delayRead()
        return keys.map { decode(values.get($0)) }
    }

    /// Checks the store answers, after the injected read delay if any.
    private func delayRead() async throws(L2StoreError) {
        try check()
        if let delay = injected.withLock({ $0.readDelay }) {
            do {
                try await clock.sleep(for: delay)
            } catch {
                throw L2StoreError(.cancelled, "the read was cancelled")
            }
            try check()
        }
    }

    public func write(_ entries: [L2Entry], notify origin: String?) async throws(L2StoreError) {
        try check()
        for entry in entries {
            values.set(entry.key, value: entry.envelope.encoded(), ttl: entry.lifetime)
            if let origin { announce(BackplaneNotice(origin: origin, operation: .set, key: entry.key)) }
        }
    }

    public func remove(_ key: String, notify origin: String?) async throws(L2StoreError) -> Bool {
        try check()
        let removed = values.remove(key)
        if let origin { announce(BackplaneNotice(origin: origin, operation: .remove, key: key)) }
        return removed
    }

    public func removeAll(notify origin: String?) async throws(L2StoreError) -> Int {
        try check()
        let removed = values.removeAll()
        if let origin { announce(BackplaneNotice(origin: origin, operation: .clear, key: "")) }
        return removed
    }

    public func count(limit: Int, sampleSize: Int) async throws(L2StoreError) -> L2KeyCount {
        try check()
        let entries = values.statistics.entries
        return L2KeyCount(count: min(entries, limit), sample: values.keys(limit: sampleSize), complete: entries <= limit)
    }

    public func ping() async throws(L2StoreError) {
        try check()
    }

    /// A shared store stands for a server with its own clock (the one it was given); a store
    /// of this process alone has none.
    public func time() async throws(L2StoreError) -> Int64? {
        try check()
        return isShared ? clock.nowMilliseconds() : nil
    }

    public func lock(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool {
        try check()
        let now = clock.nowMilliseconds()
        return locks.withLock { locks in
            if locks.count > 1024 { locks = locks.filter { $0.value.expiresAt > now } }
            if let held = locks[key], held.expiresAt > now { return false }
            locks[key] = (token, now &+ lease.wholeMilliseconds)
            return true
        }
    }

    public func renew(_ key: String, token: String, lease: Duration) async throws(L2StoreError) -> Bool {
        try check()
        let now = clock.nowMilliseconds()
        return locks.withLock { locks in
            guard let held = locks[key], held.token == token, held.expiresAt > now else { return false }
            locks[key] = (token, now &+ lease.wholeMilliseconds)
            return true
        }
    }

    public func unlock(_ key: String, token: String) async throws(L2StoreError) {
        try check()
        locks.withLock { locks in
            if locks[key]?.token == token { locks[key] = nil }
        }
    }

    public func notices() async throws(L2StoreError) -> AsyncStream<BackplaneNotice> {
        try check()
        let (stream, continuation) = AsyncStream.makeStream(of: BackplaneNotice.self, bufferingPolicy: .bufferingNewest(4096))
        let id = listeners.withLock { listeners in
            defer { listeners.next += 1 }
            listeners.continuations[listeners.next] = continuation
            return listeners.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.listeners.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    private func announce(_ notice: BackplaneNotice) {
        for continuation in listeners.withLock({ Array($0.continuations.values) }) {
            // A listener this far behind is told once; it flushes L1 and catches up.
            if case .dropped = continuation.yield(notice), notice.operation != .lost {
                continuation.yield(BackplaneNotice(origin: "", operation: .lost, key: ""))
            }
        }
    }
}
