import TieredCache

extension IBGEService {
    /// The service's health: each part's check, and the verdict.
    public struct Health: Sendable {
        /// How well a part (or the whole) works.
        public enum Status: String, Sendable {
            /// Works as configured.
            case healthy
            /// Answers, from a fallback (Redis down, IBGE failing).
            case degraded
            /// Cannot answer.
            case unhealthy
        }

        /// One part's check.
        public struct Check: Sendable {
            /// What state it is in.
            public enum State: String, Sendable {
                case up, down, disabled
            }

            /// Its state.
            public var status: State
            /// How long it took to answer the check, when it was asked.
            public var latency: Duration?
            /// Details for operators.
            public var detail: String?
        }

        /// The verdict.
        public var status: Status
        /// The shared store (Redis).
        public var redis: Check
        /// The in-process tier.
        public var l1: Check
        /// Where answers come from (the embedded snapshot, the IBGE API).
        public var source: Check
    }

    /// Checks every part now: Redis answers a ping (degraded when it does not, since memory
    /// answers meanwhile), the upstream's last outcome (degraded while IBGE fails, since the
    /// snapshot answers meanwhile), and the snapshot (unhealthy only when it is empty).
    public func health() async -> Health {
        var degraded = false
        let redis: Health.Check
        if !cache.hasSharedStore {
            redis = .init(status: .disabled, detail: "REDIS_URL=none: memory only")
        } else if cache.isRedisConnected, let latency = await cache.pingL2() {
            redis = .init(status: .up, latency: latency)
        } else {
            degraded = true
            redis = .init(status: .down, detail: (cache.metrics().redisLastError ?? "unreachable") + "; serving from memory (fallback)")
        }
        let l1Statistics = cache.l1Status(sampleSize: 0).statistics
        let l1 = Health.Check(status: .up, detail: "\(l1Statistics.entries) entries, \(l1Statistics.bytes) bytes")
        var source = Health.Check(status: .up, detail: "embedded IBGE snapshot, \(snapshot.municipios.count) municípios")
        if let upstream {
            let fallbacks = "embedded snapshot as fallback (\(embeddedFallbacks) answers so far)"
            if let last = upstream.lastResult, let error = last.error {
                degraded = true
                let ago = (ContinuousClock.now - last.at).components.seconds
                let circuit = upstream.circuitState.isOpen ? "; circuit open: requests answered without asking IBGE until a probe succeeds" : ""
                source = .init(
                    status: .down,
                    detail: "IBGE API at \(upstream.configuration.baseURL) failed \(ago) s ago: \(error.message)\(circuit); \(fallbacks)")
            } else {
                source = .init(status: .up, detail: "IBGE API at \(upstream.configuration.baseURL); \(fallbacks)")
            }
        }
        var status: Health.Status = degraded ? .degraded : .healthy
        if snapshot.municipios.isEmpty {
            status = .unhealthy
            source = .init(status: .down, detail: "the embedded snapshot is empty")
        }
        return Health(status: status, redis: redis, l1: l1, source: source)
    }
}
