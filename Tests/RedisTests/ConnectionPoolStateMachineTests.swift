import Testing
import Utilities

@testable import Redis

/// A stand-in connection: the state machine only needs identity, load and liveness.
final class FakeConnection {
    var pending = 0
    var active = true
}

@Suite("Connection pool state machine (no network)")
struct ConnectionPoolStateMachineTests {
    typealias Machine = ConnectionPoolStateMachine<FakeConnection>

    func machine(maximum: Int = 3, minimum: Int = 0) -> Machine {
        Machine(
            limits: .init(
                maximumConnections: maximum, minimumConnections: minimum, maximumPendingPerConnection: 100, growThreshold: 10,
                reconnect: Backoff(initial: .milliseconds(100), maximum: .milliseconds(1000)), idleTimeoutMilliseconds: 5000,
                keepAliveMilliseconds: 1000))
    }

    func acquire(_ m: inout Machine, now: Int64 = 0) -> Machine.Acquire {
        m.acquire(now: now, pending: { $0.pending }, isActive: { $0.active })
    }

    @Test("the first caller opens a connection and waits; later callers share it while it is not busy")
    func growsOnDemand() {
        var m = machine()
        guard case .openAndWait(let slot) = acquire(&m) else { Issue.record("expected openAndWait"); return }
        guard case .wait(let same) = acquire(&m) else { Issue.record("expected to wait for the same attempt"); return }
        #expect(same == slot)
        let a = FakeConnection()
        #expect(m.connected(slot: slot, a, now: 0) == nil)
        guard case .use(let used, let open) = acquire(&m) else { Issue.record("expected use"); return }
        #expect(used === a && open == nil)
    }

    @Test("a busy connection makes the pool open another, while the caller still uses the busy one")
    func growsUnderLoad() {
        var m = machine()
        _ = acquire(&m)
        let a = FakeConnection()
        _ = m.connected(slot: 0, a, now: 0)
        a.pending = 50
        guard case .use(let used, let open) = acquire(&m) else { Issue.record("expected use"); return }
        #expect(used === a && open == 1)
        #expect(m.counts.connecting == 1)
    }

    @Test("never more connections than the maximum, and a full pool refuses rather than queue")
    func bounded() {
        var m = machine(maximum: 2)
        var connections: [FakeConnection] = []
        for slot in 0..<2 {
            _ = acquire(&m)
            let c = FakeConnection()
            c.pending = 100
            connections.append(c)
            _ = m.connected(slot: slot, c, now: 0)
        }
        for _ in 0..<1000 {
            if case .openAndWait = acquire(&m) { Issue.record("opened beyond the maximum") }
        }
        #expect(m.counts.open == 2 && m.counts.connecting == 0)
        guard case .fail(let error) = acquire(&m) else { Issue.record("expected a refusal"); return }
        #expect(error.code == .poolTimeout)
    }

    @Test("failed attempts back off exponentially; callers fail fast until the wait is over")
    func backoff() {
        var m = machine(maximum: 1)
        _ = acquire(&m, now: 0)
        m.failedToConnect(slot: 0, error: RedisError(.connectFailed, "refused"), now: 0, jitter: 1)
        guard case .fail(let error) = acquire(&m, now: 50) else { Issue.record("expected fail-fast"); return }
        #expect(error.code == .connectFailed && error.message.contains("refused"))
        guard case .openAndWait = acquire(&m, now: 100) else { Issue.record("expected a new attempt after 100 ms"); return }
        m.failedToConnect(slot: 0, error: RedisError(.connectFailed, "refused"), now: 100, jitter: 1)
        guard case .fail = acquire(&m, now: 299) else { Issue.record("expected the second wait to be 200 ms"); return }
        guard case .openAndWait = acquire(&m, now: 300) else { Issue.record("expected a new attempt at 300 ms"); return }
    }

    @Test("a closed connection is replaced")
    func replacesClosed() {
        var m = machine(maximum: 1)
        _ = acquire(&m)
        let a = FakeConnection()
        _ = m.connected(slot: 0, a, now: 0)
        a.active = false
        guard case .openAndWait = acquire(&m) else { Issue.record("expected a new connection"); return }
    }

    @Test("maintenance opens the minimum, pings the idle and closes the long idle above the minimum")
    func maintenance() {
        var m = machine(maximum: 3, minimum: 1)
        let first = m.maintain(now: 0, isActive: { $0.active })
        #expect(first.open == [0])
        let a = FakeConnection()
        let b = FakeConnection()
        _ = m.connected(slot: 0, a, now: 0)
        a.pending = 50
        _ = acquire(&m, now: 0)  // opens slot 1
        _ = m.connected(slot: 1, b, now: 0)
        let ping = m.maintain(now: 1500, isActive: { $0.active })
        #expect(ping.ping.count == 2 && ping.close.isEmpty)
        let close = m.maintain(now: 7000, isActive: { $0.active })
        #expect(close.close.count == 1, "one of two closes; the minimum of one stays")
        #expect(m.counts.open == 1)
    }

    @Test("keep-alive pings do not make a connection used: pinged every interval, it still closes once idle past the idle timeout")
    func pingsDoNotPostponeIdleClose() {
        var m = machine(maximum: 3, minimum: 1)
        _ = m.maintain(now: 0, isActive: { $0.active })
        let a = FakeConnection()
        let b = FakeConnection()
        _ = m.connected(slot: 0, a, now: 0)
        a.pending = 50
        _ = acquire(&m, now: 0)  // opens slot 1
        _ = m.connected(slot: 1, b, now: 0)
        // Maintenance every second: pinged while alive, closed (one of two) past the idle timeout.
        var closed = 0
        var pings = 0
        for second in 1...10 {
            let step = m.maintain(now: Int64(second) * 1000, isActive: { $0.active })
            closed += step.close.count
            pings += step.ping.count
        }
        #expect(closed == 1, "before, each ping reset the idle clock and nothing ever closed")
        #expect(pings > 0)
        #expect(m.counts.open == 1)
    }

    @Test("shutdown hands back every connection and refuses callers")
    func shutdown() {
        var m = machine()
        _ = acquire(&m)
        _ = m.connected(slot: 0, FakeConnection(), now: 0)
        #expect(m.shutdown().count == 1)
        guard case .fail(let error) = acquire(&m) else { Issue.record("expected refusal"); return }
        #expect(error.code == .clientShutdown)
        #expect(m.connected(slot: 1, FakeConnection(), now: 0) != nil, "a late connection is closed")
    }
}
