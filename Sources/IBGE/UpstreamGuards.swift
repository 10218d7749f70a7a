import Synchronization

/// A circuit breaker on the IBGE API: after ``threshold`` fetches in a row fail (connection
/// errors, timeouts, 5xx, bad bodies; not a 4xx, which is IBGE answering, nor what the request
/// itself caused, such as a body past the size limit), requests fail at once for
/// ``openDuration`` (the cache answers them from a stale value or the snapshot) instead of each
/// waiting out its timeouts and retries. Then one request is let through as a probe, with a
/// single attempt: its success closes the circuit, its failure opens it again. The others keep
/// failing fast while the probe runs.
///
/// Outcomes are counted against the state they were admitted in (a generation): a request
/// admitted before the circuit opened or closed, ending after, changes nothing.
final class UpstreamCircuit: Sendable {
    /// Failures in a row that open the circuit (0: never opens).
    let threshold: Int
    /// How long the circuit stays open before a probe.
    let openDuration: Duration
    private let state = Mutex(State())

    struct State {
        var consecutiveFailures = 0
        /// While open: when a probe may go.
        var openUntil: ContinuousClock.Instant?
        var probing = false
        var openings = 0
        /// Changes at every opening and closing.
        var generation = 0
    }

    /// What a fetch may do now.
    enum Admission {
        /// Go ahead (the circuit is closed); report the outcome with this generation.
        case closed(generation: Int)
        /// Go ahead as the probe; report its outcome with this generation.
        case probe(generation: Int)
        /// Fail at once; the circuit stays open this much longer (zero while a probe runs).
        case open(remaining: Duration, failures: Int)
    }

    init(threshold: Int, openDuration: Duration) {
        self.threshold = max(0, threshold)
        self.openDuration = openDuration
    }

    func admit(now: ContinuousClock.Instant = .now) -> Admission {
        state.withLock { state in
            guard let openUntil = state.openUntil else { return .closed(generation: state.generation) }
            if now < openUntil { return .open(remaining: openUntil - now, failures: state.consecutiveFailures) }
            if state.probing { return .open(remaining: .zero, failures: state.consecutiveFailures) }
            state.probing = true
            return .probe(generation: state.generation)
        }
    }

    /// IBGE answered (a 200, or a 4xx about the request): a closed circuit's count of failures
    /// starts again; the probe closes an open one.
    func succeeded(probe: Bool, generation: Int) {
        state.withLock { state in
            guard state.generation == generation else { return }
            if probe {
                state.probing = false
                state.openUntil = nil
                state.generation += 1
            }
            state.consecutiveFailures = 0
        }
    }

    /// A fetch failed; returns true when this failure opened the circuit.
    @discardableResult
    func failed(probe: Bool, generation: Int, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            guard state.generation == generation else { return false }
            if probe { state.probing = false }
            state.consecutiveFailures += 1
            guard threshold > 0, probe || (state.openUntil == nil && state.consecutiveFailures >= threshold) else { return false }
            state.openUntil = now + openDuration
            state.openings += 1
            if !probe { state.generation += 1 }
            return true
        }
    }

    /// A probe that ended without an outcome about IBGE (cancelled, refused here, or a failure
    /// the request caused): another may probe.
    func abandoned(probe: Bool, generation: Int) {
        guard probe else { return }
        state.withLock { state in
            if state.generation == generation { state.probing = false }
        }
    }

    /// Whether requests fail fast now (open, and no probe due yet: once the open period is over
    /// the next request probes, so a quiet instance does not report an open circuit for ever),
    /// and how many times the circuit opened.
    var snapshot: (isOpen: Bool, openings: Int, consecutiveFailures: Int) {
        let now = ContinuousClock.now
        return state.withLock { ($0.openUntil.map { now < $0 } ?? false, $0.openings, $0.consecutiveFailures) }
    }
}

/// One circuit per class of data, so failures of one (a heavy agregados query that IBGE's
/// SIDRA times out on, sent by anyone) do not stop the other (the localidades).
struct UpstreamCircuits: Sendable {
    let localidades: UpstreamCircuit
    let agregados: UpstreamCircuit

    init(threshold: Int, openDuration: Duration) {
        localidades = UpstreamCircuit(threshold: threshold, openDuration: openDuration)
        agregados = UpstreamCircuit(threshold: threshold, openDuration: openDuration)
    }

    func callAsFunction(_ kind: UpstreamRequest.Kind) -> UpstreamCircuit {
        switch kind {
        case .localidades: localidades
        case .agregados: agregados
        }
    }
}

/// IBGE's 4xx answers, remembered for a short while per URL: a client repeating a request IBGE
/// refuses (an agregado that does not exist, a malformed query) gets the same error without IBGE
/// being asked again. Bounded in entries and in key length, so hostile traffic cannot grow it.
final class ClientErrorMemory: Sendable {
    /// How long an error is remembered.
    let lifetime: Duration
    /// Most errors remembered at once.
    let maximumEntries: Int
    /// URLs longer than this are not remembered (they are answered, just not memoized).
    static let maximumURLBytes = 2048
    private let entries = Mutex<(map: [String: Entry], lastSweep: ContinuousClock.Instant?)>(([:], nil))

    struct Entry {
        var error: IBGEError
        var until: ContinuousClock.Instant
    }

    init(lifetime: Duration, maximumEntries: Int) {
        self.lifetime = lifetime
        self.maximumEntries = max(0, maximumEntries)
    }

    /// The error remembered for `url`, if it is still current.
    func error(for url: String, now: ContinuousClock.Instant = .now) -> IBGEError? {
        entries.withLock { entries in
            guard let entry = entries.map[url] else { return nil }
            guard entry.until > now else {
                entries.map[url] = nil
                return nil
            }
            return entry.error
        }
    }

    /// Remembers IBGE's refusal of `url`.
    func remember(_ error: IBGEError, for url: String, now: ContinuousClock.Instant = .now) {
        guard lifetime > .zero, maximumEntries > 0, url.utf8.count <= Self.maximumURLBytes else { return }
        entries.withLock { entries in
            if entries.map.count >= maximumEntries, entries.map[url] == nil {
                // Full: expired errors are swept, at most once a second; when none expired (a
                // flood of current ones), this one is not remembered (the flood's own expire soon).
                guard entries.lastSweep.map({ now - $0 >= .seconds(1) }) ?? true else { return }
                entries.lastSweep = now
                entries.map = entries.map.filter { $0.value.until > now }
                guard entries.map.count < maximumEntries else { return }
            }
            entries.map[url] = Entry(error: error, until: now + lifetime)
        }
    }

    var count: Int { entries.withLock { $0.map.count } }
}
