import Synchronization

/// A circuit breaker on the IBGE API: after ``threshold`` fetches in a row fail (connection
/// errors, timeouts, 5xx, bad bodies; not a 4xx, which is IBGE answering), requests fail at once
/// for ``openDuration`` (the cache answers them from a stale value or the snapshot) instead of
/// each waiting out its timeouts and retries. Then one request is let through as a probe: its
/// success closes the circuit, its failure opens it again. The others keep failing fast while
/// the probe runs.
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
    }

    /// What a fetch may do now.
    enum Admission {
        /// Go ahead (the circuit is closed).
        case closed
        /// Go ahead as the probe; report its outcome with `probe: true`.
        case probe
        /// Fail at once; the circuit stays open this much longer (zero while a probe runs).
        case open(remaining: Duration, failures: Int)
    }

    init(threshold: Int, openDuration: Duration) {
        self.threshold = max(0, threshold)
        self.openDuration = openDuration
    }

    func admit(now: ContinuousClock.Instant = .now) -> Admission {
        state.withLock { state in
            guard let openUntil = state.openUntil else { return .closed }
            if now < openUntil { return .open(remaining: openUntil - now, failures: state.consecutiveFailures) }
            if state.probing { return .open(remaining: .zero, failures: state.consecutiveFailures) }
            state.probing = true
            return .probe
        }
    }

    /// IBGE answered (a 200, or a 4xx about the request): the circuit closes.
    func succeeded(probe: Bool) {
        state.withLock { state in
            state.consecutiveFailures = 0
            state.openUntil = nil
            if probe { state.probing = false }
        }
    }

    /// A fetch failed; returns true when this failure opened the circuit.
    @discardableResult
    func failed(probe: Bool, now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            state.consecutiveFailures += 1
            if probe { state.probing = false }
            guard threshold > 0, probe || (state.openUntil == nil && state.consecutiveFailures >= threshold) else { return false }
            state.openUntil = now + openDuration
            state.openings += 1
            return true
        }
    }

    /// A probe that ended without an outcome (its task was cancelled): another may probe.
    func abandoned(probe: Bool) {
        guard probe else { return }
        state.withLock { $0.probing = false }
    }

    /// Whether requests fail fast now, and how many times the circuit opened.
    var snapshot: (isOpen: Bool, openings: Int, consecutiveFailures: Int) {
        state.withLock { ($0.openUntil != nil, $0.openings, $0.consecutiveFailures) }
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
    private let entries = Mutex<[String: Entry]>([:])

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
            guard let entry = entries[url] else { return nil }
            guard entry.until > now else {
                entries[url] = nil
                return nil
            }
            return entry.error
        }
    }

    /// Remembers IBGE's refusal of `url`.
    func remember(_ error: IBGEError, for url: String, now: ContinuousClock.Instant = .now) {
        guard lifetime > .zero, maximumEntries > 0, url.utf8.count <= Self.maximumURLBytes else { return }
        entries.withLock { entries in
            if entries.count >= maximumEntries, entries[url] == nil {
                entries = entries.filter { $0.value.until > now }
                // Still full of current errors: this one is not remembered (no eviction work
                // per request under a flood; the flood's own errors expire soon).
                guard entries.count < maximumEntries else { return }
            }
            entries[url] = Entry(error: error, until: now + lifetime)
        }
    }

    var count: Int { entries.withLock { $0.count } }
}
