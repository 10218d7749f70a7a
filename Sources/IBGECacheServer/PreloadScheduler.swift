import Foundation
import IBGE
import Logging
import ServiceLifecycle
import Synchronization
import TieredCache
import Utilities

/// What warming is doing and last did, shared by the scheduler, `POST /api/ibge/cache/preload`
/// (one preload at a time per instance: a second is answered 409), `/status` and `/metrics`.
final class PreloadState: Sendable {
    struct Snapshot: Sendable {
        /// The scope of the preload running now, if one is.
        var running: String?
        /// When it started.
        var startedAt: ContinuousClock.Instant?
        /// When a preload of everything last ended with every key cached (Unix seconds); a
        /// preload of one UF does not count.
        var lastSuccess: Double?
        /// How long the last preload took, and what it did.
        var lastDuration: Duration?
        var lastLoaded = 0
        var lastFailed = 0
        /// Preloads run by this instance (scheduled and asked for).
        var runs = 0
    }

    private let state = Mutex(Snapshot())

    var snapshot: Snapshot { state.withLock { $0 } }

    /// Marks a preload of `scope` as running; false when one already is.
    func begin(_ scope: String) -> Bool {
        state.withLock { state in
            guard state.running == nil else { return false }
            state.running = scope
            state.startedAt = .now
            return true
        }
    }

    /// Ends the running preload without recording a run (it did not start after all).
    func abandon() {
        state.withLock { state in
            state.running = nil
            state.startedAt = nil
        }
    }

    /// Records how the running preload ended.
    func end(_ result: Preloader.Result) {
        state.withLock { state in
            let scope = state.running
            state.running = nil
            state.startedAt = nil
            state.runs += 1
            state.lastDuration = result.duration
            state.lastLoaded = result.loaded
            state.lastFailed = result.failed
            if result.failed == 0, scope == "all" { state.lastSuccess = Date().timeIntervalSince1970 }
        }
    }
}

/// Scheduled warming (`IBGE_PRELOAD_ON_START`, `IBGE_PRELOAD_INTERVAL`): every interval, on the
/// boundaries of the shared clock (Redis's, when there is one), one instance among those sharing
/// Redis warms everything that is missing or would expire before the next cycle; the others skip
/// that cycle (a claim in Redis per cycle). Without Redis each instance warms its own memory.
struct PreloadScheduler: Service {
    let service: IBGEService
    let state: PreloadState
    let onStart: Bool
    let interval: Duration?
    let logger: Logger

    func run() async throws {
        // Stops at a graceful shutdown (a cycle under way is cancelled: its IBGE requests fail
        // and it records a failed run); a service that returned early would end the whole
        // application.
        await cancelWhenGracefulShutdown { await schedule() }
        try? await gracefulShutdown()
    }

    private func schedule() async {
        guard onStart || interval != nil else { return }
        // Until the first attempt to reach Redis ends, a claim cannot be made: wait for it (a
        // few seconds at most), so two instances starting together do not both warm.
        for _ in 0..<100 where !service.cache.hasTriedL2 {
            try? await Task.sleep(for: .milliseconds(50))
        }
        var first = onStart
        var lastCycle = Int64.min
        while !Task.isCancelled {
            let now = service.cache.sharedNowMilliseconds
            let cycle: Int64
            if let interval {
                let length = max(1, interval.wholeMilliseconds)
                if !first {
                    // Sleep to the next boundary of the shared clock.
                    let next = (now / length + 1) * length
                    try? await Task.sleep(for: .milliseconds(next - now))
                    if Task.isCancelled { return }
                }
                cycle = service.cache.sharedNowMilliseconds / length
            } else {
                cycle = 0
            }
            first = false
            // A clock stepped back (or a new offset) must not run a cycle again.
            guard cycle > lastCycle else {
                if interval == nil { return }
                continue
            }
            lastCycle = cycle
            // An operator's preload running here: this cycle is left to the other instances
            // (not claimed), or to the next one. Marked running before the claim, so none can
            // start between the claim and the run.
            guard state.begin("all") else {
                logger.info("preload: one is running already, this cycle is left to another instance")
                if interval == nil { return }
                continue
            }
            // Held past the cycle's end, so a late instance cannot take the same cycle.
            let lease = (interval ?? .seconds(30)) * 2
            if await service.cache.claim("preload:\(cycle)", for: lease) {
                await warm(refreshWithin: interval)
            } else {
                state.abandon()
                logger.debug("preload: another instance runs this cycle", metadata: ["cycle": "\(cycle)"])
            }
            if interval == nil { return }
        }
    }

    /// One cycle: everything missing, or fresh for less than `refreshWithin` (at most half the
    /// TTL: a key that expires before the next cycle whatever is done is not loaded twice), is
    /// loaded.
    /// (The caller has marked the preload running.)
    private func warm(refreshWithin: Duration?) async {
        logger.info("preload: warming the cache")
        let refreshBefore = refreshWithin.map { service.cache.memory.clock.nowMilliseconds() + min($0, service.ttl / 2).wholeMilliseconds }
        let result = await Preloader(service: service).run(.all, refreshBefore: refreshBefore, freshLists: true)
        state.end(result)
        logger.info(
            "preload: done",
            metadata: [
                "keys": "\(result.keys)", "loaded": "\(result.loaded)", "failed": "\(result.failed)",
                "ms": "\(result.duration.wholeMilliseconds)",
            ])
    }
}
