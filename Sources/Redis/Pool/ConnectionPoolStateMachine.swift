import Utilities

/// The decisions of the connection pool, as a value type with no I/O: which connection a caller
/// gets, when to open one, when to back off, what to close. ``RedisClient`` carries them out.
///
/// `Connection` is generic so the machine can be tested with plain values.
struct ConnectionPoolStateMachine<Connection: AnyObject> {
    enum Slot {
        case empty
        case connecting(attempt: Int)
        /// `lastUsed`: the last command (idleness counts from it); `lastPinged`: the last
        /// keep-alive ping, which keeps the connection alive but does not make it used.
        case ready(Connection, lastUsed: Int64, lastPinged: Int64)
        case backingOff(until: Int64, attempt: Int, error: RedisError)
    }

    struct Limits {
        var maximumConnections: Int
        var minimumConnections: Int
        var maximumPendingPerConnection: Int
        /// A ready connection with fewer commands in flight than this is used rather than opening another.
        var growThreshold: Int
        /// The wait between failed connection attempts in one slot.
        var reconnect: Backoff
        var idleTimeoutMilliseconds: Int64
        var keepAliveMilliseconds: Int64
    }

    /// What a caller should do.
    enum Acquire {
        /// Use this connection now; if `open` is set, also open a connection in that slot.
        case use(Connection, open: Int?)
        /// Open a connection in this slot and wait for it.
        case openAndWait(slot: Int)
        /// Wait for the connection being opened in this slot.
        case wait(slot: Int)
        case fail(RedisError)
    }

    private(set) var slots: [Slot]
    let limits: Limits
    private(set) var isShutdown = false

    init(limits: Limits) {
        self.limits = limits
        self.slots = Array(repeating: .empty, count: max(1, limits.maximumConnections))
    }

    /// Picks a connection for one command. `pending` and `isActive` read a connection's state.
    mutating func acquire(now: Int64, pending: (Connection) -> Int, isActive: (Connection) -> Bool) -> Acquire {
        guard !isShutdown else { return .fail(RedisError(.clientShutdown, "the Redis client was shut down")) }
        var best: (index: Int, connection: Connection, pending: Int)?
        var openable: Int?
        var connecting: Int?
        var backoffError: RedisError?
        var backoffEnds = Int64.max
        for index in slots.indices {
            switch slots[index] {
            case .ready(let connection, _, _):
                guard isActive(connection) else {
                    slots[index] = .empty
                    if openable == nil { openable = index }
                    continue
                }
                let load = pending(connection)
                if best.map({ load < $0.pending }) ?? true { best = (index, connection, load) }
            case .empty:
                if openable == nil { openable = index }
            case .connecting:
                if connecting == nil { connecting = index }
            case .backingOff(let until, _, let error):
                if until <= now {
                    if openable == nil { openable = index }
                } else {
                    backoffError = error
                    backoffEnds = min(backoffEnds, until)
                }
            }
        }
        let usable = best.flatMap { $0.pending < limits.maximumPendingPerConnection ? $0 : nil }
        func use(_ choice: (index: Int, connection: Connection, pending: Int), open: Int? = nil) -> Acquire {
            slots[choice.index] = .ready(choice.connection, lastUsed: now, lastPinged: now)
            return .use(choice.connection, open: open)
        }
        // A connection that is not busy: share it (commands pipeline).
        if let usable, usable.pending < limits.growThreshold { return use(usable) }
        // One is being opened already: use a busy one meanwhile, or wait for it. Never more than
        // one attempt at a time, so an outage does not become a storm of connects.
        if let connecting {
            if let usable { return use(usable) }
            return .wait(slot: connecting)
        }
        if let openable {
            startConnecting(openable)
            if let usable { return use(usable, open: openable) }
            return .openAndWait(slot: openable)
        }
        if let usable { return use(usable) }
        if best != nil {
            return .fail(RedisError(.poolTimeout, "every connection has \(limits.maximumPendingPerConnection) commands in flight"))
        }
        let error = backoffError ?? RedisError(.connectFailed, "no connection")
        return .fail(RedisError(error.code, "\(error.message) (not retrying for \(max(0, backoffEnds - now)) ms)"))
    }

    private mutating func startConnecting(_ index: Int) {
        var attempt = 0
        if case .backingOff(_, let previous, _) = slots[index] { attempt = previous }
        slots[index] = .connecting(attempt: attempt)
    }

    /// A connection attempt finished. Returns a connection to close when the pool no longer wants it.
    mutating func connected(slot index: Int, _ connection: Connection, now: Int64) -> Connection? {
        guard !isShutdown, case .connecting = slots[index] else { return connection }
        slots[index] = .ready(connection, lastUsed: now, lastPinged: now)
        return nil
    }

    /// A connection attempt failed: back off, exponentially with jitter (`jitter` in 0.75...1.25).
    mutating func failedToConnect(slot index: Int, error: RedisError, now: Int64, jitter: Double) {
        guard case .connecting(let attempt) = slots[index] else { return }
        let wait = limits.reconnect.delay(afterFailures: attempt + 1, factor: jitter).wholeMilliseconds
        slots[index] = .backingOff(until: now + wait, attempt: attempt + 1, error: error)
    }

    /// Ready connections that `isActive` says are still open.
    func activeCount(_ isActive: (Connection) -> Bool) -> Int {
        slots.reduce(0) { count, slot in
            if case .ready(let connection, _, _) = slot, isActive(connection) { return count + 1 }
            return count
        }
    }

    /// Maintenance: connections to ping (idle past the keep-alive), to close (idle past the idle
    /// timeout, above the minimum), and slots to open (below the minimum).
    mutating func maintain(now: Int64, isActive: (Connection) -> Bool) -> (ping: [Connection], close: [Connection], open: [Int]) {
        guard !isShutdown else { return ([], [], []) }
        var ping: [Connection] = []
        var close: [Connection] = []
        var live = 0
        for index in slots.indices {
            if case .ready(let connection, _, _) = slots[index], !isActive(connection) { slots[index] = .empty }
            switch slots[index] {
            case .ready, .connecting: live += 1
            default: break
            }
        }
        for index in slots.indices {
            guard case .ready(let connection, let lastUsed, let lastPinged) = slots[index] else { continue }
            let idle = now - lastUsed
            if idle >= limits.idleTimeoutMilliseconds && live > limits.minimumConnections {
                slots[index] = .empty
                close.append(connection)
                live -= 1
            } else if now - max(lastUsed, lastPinged) >= limits.keepAliveMilliseconds {
                // A ping keeps the connection alive; it does not make it used, so a connection
                // above the minimum still closes once idle past the idle timeout.
                ping.append(connection)
                slots[index] = .ready(connection, lastUsed: lastUsed, lastPinged: now)
            }
        }
        var open: [Int] = []
        for index in slots.indices where live < limits.minimumConnections {
            switch slots[index] {
            case .empty:
                startConnecting(index)
                open.append(index)
                live += 1
            case .backingOff(let until, _, _) where until <= now:
                startConnecting(index)
                open.append(index)
                live += 1
            default: break
            }
        }
        return (ping, close, open)
    }

    /// Shuts the pool: returns every open connection to close.
    mutating func shutdown() -> [Connection] {
        isShutdown = true
        var connections: [Connection] = []
        for index in slots.indices {
            if case .ready(let connection, _, _) = slots[index] { connections.append(connection) }
            slots[index] = .empty
        }
        return connections
    }

    /// Counts of slots by state.
    var counts: (open: Int, connecting: Int, backingOff: Int, lastError: RedisError?) {
        var result = (open: 0, connecting: 0, backingOff: 0, lastError: RedisError?.none)
        for slot in slots {
            switch slot {
            case .ready: result.open += 1
            case .connecting: result.connecting += 1
            case .backingOff(_, _, let error):
                result.backingOff += 1
                result.lastError = error
            case .empty: break
            }
        }
        return result
    }
}
