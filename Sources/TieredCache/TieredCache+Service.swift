import Logging
import ServiceLifecycle
import Synchronization
import Utilities

extension TieredCache {
    /// Connects to the L2 store, watches it (probing with exponential backoff and jitter while
    /// it is down, pinging it while it is up), listens to the backplane, runs the background
    /// work and sweeps expired L1 entries, until cancelled or told to shut down gracefully.
    ///
    /// At a graceful shutdown the watch and the backplane stop at once, no new background job is
    /// taken, and the queued ones still run (their number is logged); cancelled, the queued
    /// jobs are not run and their number is logged.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await withTaskGroup(of: Void.self) { watchers in
                        watchers.addTask { await self.watch() }
                        if let l2 = self.l2, l2.isShared, self.configuration.backplane {
                            watchers.addTask { await self.listen() }
                        }
                    }
                }
                let queued = self.counters.backgroundQueued.load(ordering: .relaxed)
                if !Task.isCancelled, queued > 0 {
                    self.logger.info("shutting down: running the background jobs still queued", metadata: ["jobs": "\(queued)"])
                }
                // No new job is taken from here on; the runner below ends once the queue is empty.
                self.background.finish()
            }
            group.addTask {
                // At most this many jobs run at once; the others wait in the queue (whose bound
                // then refuses more, see submit(_:)).
                let slots = ConcurrencyLimiter(limit: Self.maximumRunningJobs, queue: 1)
                await withDiscardingTaskGroup { jobs in
                    for await job in self.backgroundJobs {
                        self.counters.backgroundQueued.subtract(1, ordering: .relaxed)
                        _ = await slots.acquire()
                        jobs.addTask {
                            await job()
                            slots.release()
                        }
                    }
                }
                let dropped = self.counters.backgroundQueued.load(ordering: .relaxed)
                if dropped > 0 {
                    self.logger.warning("cancelled: background jobs left unrun", metadata: ["jobs": "\(dropped)"])
                }
            }
        }
    }

    private func watch() async {
        var backoff = Backoff(initial: configuration.minimumRecoveryBackoff, maximum: configuration.maximumRecoveryBackoff)
        var sinceSweep = Duration.zero
        var sinceClockSync = Duration.zero
        var reportedFirstFailure = false
        while !Task.isCancelled {
            var pause = configuration.healthCheckInterval
            if let l2 {
                if circuit.isOpen {
                    if await pingL2() != nil {
                        // Before any value crosses the boundary: the store's clock judges freshness.
                        await syncClockWithStore()
                        sinceClockSync = .zero
                        if circuit.reset(now: clock.nowMilliseconds()) {
                            logger.info("L2 store connected", metadata: ["store": "\(l2.location)"])
                            if configuration.backplane, l2.isShared, circuit.snapshot.openings > 0 {
                                // Notices sent while we could not hear them are lost: what L1 holds may be stale.
                                let dropped = memory.removeAll()
                                logger.info("L1 flushed after the L2 outage", metadata: ["entries": "\(dropped)"])
                            }
                        }
                        backoff.reset()
                    } else {
                        if !reportedFirstFailure && circuit.snapshot.openings == 0 {
                            logger.warning(
                                "L2 store not reachable: serving from memory, retrying in the background",
                                metadata: ["store": "\(l2.location)", "error": "\(circuit.snapshot.lastError ?? "")"])
                        }
                        reportedFirstFailure = true
                        pause = backoff.next()
                    }
                } else {
                    _ = await pingL2()
                    sinceClockSync += pause
                    if sinceClockSync >= configuration.clockSyncInterval {
                        await syncClockWithStore()
                        sinceClockSync = .zero
                    }
                }
                // The first attempt's outcome is applied (connected and clock read, or down).
                l2Attempted.store(true, ordering: .releasing)
            }
            exportMetrics()
            sinceSweep += pause
            if sinceSweep >= configuration.sweepInterval {
                memory.removeExpired()
                sinceSweep = .zero
            }
            do {
                try await clock.sleep(for: pause)
            } catch {
                return
            }
        }
    }
}
