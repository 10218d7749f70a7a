import Logging
import ServiceLifecycle
import Synchronization
import Testing

@testable import TieredCache

/// Runs `cache` as a service and shuts it down gracefully as soon as it runs; returns when it has ended.
func runUntilGracefulShutdown(_ cache: TieredCache) async throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let group = ServiceGroup(services: [cache], logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

@Suite("The background job queue")
struct BackgroundQueueTests {
    @Test("the job queue never runs a job twice nor drops one silently; a graceful shutdown runs the queued jobs; after it, jobs are refused")
    func jobQueue() async throws {
        let cache = TieredCache(l2: nil)
        let ran = Mutex<[Int: Int]>([:])
        // Before the runner starts, the queue fills: past its capacity a job is refused (and
        // counted), and the queued ones stay (before, the oldest was dropped and the new one
        // both queued and run by its caller).
        for i in 0..<TieredCache.backgroundQueueCapacity {
            #expect(cache.submit { ran.withLock { $0[i, default: 0] += 1 } })
        }
        #expect(!cache.submit { ran.withLock { $0[-1, default: 0] += 1 } })
        #expect(cache.metrics().backgroundRefused == 1)

        // Shut down gracefully as soon as it runs: the queued jobs still run, once each.
        try await runUntilGracefulShutdown(cache)
        let counts = ran.withLock { $0 }
        #expect(counts.count == TieredCache.backgroundQueueCapacity)
        #expect(counts.values.allSatisfy { $0 == 1 })
        #expect(counts[-1] == nil)

        // After the shutdown nothing is queued where nothing would run it: the caller is told.
        #expect(!cache.submit {})
        #expect(cache.metrics().backgroundRefused == 2)
    }

    @Test("at most 64 background jobs run at once; the rest wait their turn and all run once")
    func runningCap() async throws {
        let cache = TieredCache(l2: nil)
        let state = Mutex<(running: Int, most: Int, done: Int)>((0, 0, 0))
        for _ in 0..<200 {
            #expect(cache.submit {
                state.withLock { $0.running += 1; $0.most = max($0.most, $0.running) }
                try? await Task.sleep(for: .milliseconds(20))
                state.withLock { $0.running -= 1; $0.done += 1 }
            })
        }
        try await runUntilGracefulShutdown(cache)
        let final = state.withLock { $0 }
        #expect(final.done == 200)
        #expect(final.most <= TieredCache.maximumRunningJobs && final.most > 1, "at most \(TieredCache.maximumRunningJobs) at once: \(final.most)")
    }
}
