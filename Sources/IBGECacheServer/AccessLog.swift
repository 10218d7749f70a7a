import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization
import IBGE
import Utilities

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `ACCESS_LOG=true`: one line per request on standard output, as `LOG_FORMAT` says: text
/// (`key=value` fields after the timestamp) or JSON (one object a line).
///
/// ```
/// 2026-12-01T15:20:33.123Z remote=127.0.0.1 method=GET status=200 bytes=93 duration_ms=0.041 tier=l1 path=/api/v1/localidades/estados/SC
/// {"timestamp":"2026-12-01T15:20:33.123Z","remote":"127.0.0.1","method":"GET","path":"/api/v1/localidades/estados/SC","status":200,"bytes":93,"duration_ms":0.041,"tier":"l1"}
/// ```
///
/// A request never waits on the log: lines are added to a buffer (on the event loop, for the
/// fast path) and written by a background flush every 50 ms, one chunk at a time, on NIO's
/// thread pool (a slow or blocked standard output holds a pool thread, not an event loop or a
/// task, and shutdown waits for it a second at most). The buffer is bounded: past
/// ``maximumPendingBytes`` lines are dropped; they, and lines a failed write lost, are counted
/// (`ibge_cache_access_log_dropped_lines_total`) and reported in a warning at most every 10 s.
/// `remote` is the connection's peer: behind a proxy, the proxy.
///
/// Every byte of a request target outside printable ASCII, and `"` and `\`, is written as
/// `%XX`: a line is always one line, a text field one word, a JSON string needs no escaping.
/// Targets are cut after ``longestTarget`` bytes.
final class AccessLog: Service, Sendable {
    /// The line format (`LOG_FORMAT`).
    enum Format: Sendable {
        case text
        case json
    }

    /// One request, as logged.
    struct Entry {
        var method: String
        var target: String
        var status: Int
        /// Body bytes sent; nil when unknown.
        var bytes: Int?
        var tier: AnswerTier
        var elapsedNanoseconds: Int64
        var remote: SocketAddress?
    }

    let format: Format
    /// Bytes of lines waiting for the next flush, at most.
    let maximumPendingBytes: Int
    private let output: @Sendable ([UInt8]) -> Int
    private let logger: Logger
    private let droppedLines: Counter
    /// A warning about dropped lines at most every 10 s (it says how many since the last).
    private let warnings = Throttle(interval: .seconds(10))
    private let state = Mutex(State())

    private struct State {
        var pending: [UInt8] = []
        /// The last chunk written, emptied: the next lines go in it (no new buffer per flush).
        var spare: [UInt8] = []
        /// Lines dropped since the last flush took them into account.
        var dropped = 0
        /// Lines lost and not yet in a warning.
        var unreported = 0
        /// A chunk is being written: the next waits (two writes at once could mix their bytes).
        var writing = false
        var clock = TimestampCache()
    }

    /// The timestamp's text up to the seconds (`2026-12-01T15:20:33`), for `second`.
    private struct TimestampCache {
        var second = -1
        var text: [UInt8] = []
    }

    /// An access log in `format`. `output` writes a chunk of whole lines and returns how many
    /// it could not write (by default: to standard output); it is called on NIO's thread pool,
    /// one chunk at a time.
    init(
        format: Format, registry: PrometheusCollectorRegistry, logger: Logger, maximumPendingBytes: Int = 8 * 1024 * 1024,
        output: (@Sendable ([UInt8]) -> Int)? = nil
    ) {
        self.format = format
        self.maximumPendingBytes = maximumPendingBytes
        self.output = output ?? Self.writeToStandardOutput
        self.logger = logger
        self.droppedLines = registry.makeCounter(
            descriptor: .init(
                namespace: "ibge_cache", subsystem: "access_log", metricName: "dropped_lines", unitName: "total",
                helpText: "access log lines dropped because standard output did not keep up or failed"))
    }

    /// Adds a request's line (written at the next flush, or dropped when the buffer is full).
    func append(_ entry: Entry) {
        // All but the timestamp is formatted before taking the lock.
        var rest: [UInt8] = []
        rest.reserveCapacity(192 + min(entry.target.utf8.count, Self.longestTarget) * 3)
        let remote = entry.remote?.ipAddress
        switch format {
        case .text: Self.text(entry, remote: remote, into: &rest)
        case .json: Self.json(entry, remote: remote, into: &rest)
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        state.withLock { state in
            guard state.pending.count < maximumPendingBytes else {
                state.dropped += 1
                return
            }
            if format == .json { state.pending.append(contentsOf: #"{"timestamp":""#.utf8) }
            Self.timestamp(now, clock: &state.clock, into: &state.pending)
            state.pending.append(contentsOf: rest)
        }
    }

    /// Starts writing what is pending on NIO's thread pool, unless the last chunk is still
    /// being written (it stays pending: two writes at once could mix their bytes), and waits at
    /// most `limit` for it. Lines dropped or lost are counted, and reported by a warning (from
    /// the pool thread, never from an event loop) at most every 10 s.
    func flush(waitingAtMost limit: Duration = .zero) async {
        let chunk = state.withLock { state -> [UInt8] in
            let dropped = state.dropped
            state.dropped = 0
            state.unreported += dropped
            droppedLines.increment(by: Int64(dropped))
            guard !state.writing, !state.pending.isEmpty else { return [] }
            state.writing = true
            // The buffer written last time (emptied, its capacity kept) takes the next lines.
            var chunk = state.spare
            swap(&chunk, &state.pending)
            state.spare = []
            return chunk
        }
        guard !chunk.isEmpty else { return }
        let written = NIOThreadPool.singleton.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.any()) {
            let lost = self.output(chunk)
            self.lost(lost)
            return chunk
        }
        written.whenComplete { result in
            self.state.withLock { state in
                state.writing = false
                if case .success(var buffer) = result, buffer.capacity <= Self.keptBufferBytes {
                    buffer.removeAll(keepingCapacity: true)
                    state.spare = buffer
                }
            }
            // The pool was not running (the process is stopping): the chunk is lost.
            if case .failure = result { self.lost(chunk.count(where: { $0 == UInt8(ascii: "\n") })) }
        }
        await Self.wait(for: written, atMost: limit)
    }

    /// The largest buffer kept for reuse once written.
    static let keptBufferBytes = 1024 * 1024

    /// Starts a flush every 50 ms until the server shuts down; then writes the last lines (the
    /// HTTP server, which stops first, has answered its last request), waiting one second at
    /// most in all, so a stuck standard output does not hold up shutdown: lines it did not
    /// take are counted as dropped.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while true {
                do {
                    try await Task.sleep(for: .milliseconds(50))
                } catch {
                    return
                }
                await self.flush()
            }
        }
        let deadline = ContinuousClock.now + .seconds(1)
        while state.withLock({ $0.writing }), ContinuousClock.now < deadline {
            do {
                try await Task.sleep(for: .milliseconds(10))
            } catch {
                break
            }
        }
        await flush(waitingAtMost: max(.zero, deadline - ContinuousClock.now))
        let (left, unreported) = state.withLock { state in
            defer {
                state.pending = []
                state.unreported = 0
            }
            return (state.pending.count(where: { $0 == UInt8(ascii: "\n") }), state.unreported)
        }
        droppedLines.increment(by: Int64(left))
        if left + unreported > 0 {
            logger.warning("access log lines dropped: standard output did not keep up or failed", metadata: ["lines": "\(left + unreported)"])
        }
    }

    /// Counts lines a write lost, and says so (at most every 10 s, with the count since the last
    /// time). Called on the thread pool, where a blocking write to standard error holds no event loop.
    private func lost(_ lines: Int) {
        let total = state.withLock { state -> Int? in
            state.unreported += lines
            droppedLines.increment(by: Int64(lines))
            guard state.unreported > 0, warnings.allow() else { return nil }
            defer { state.unreported = 0 }
            return state.unreported
        }
        if let total {
            logger.warning("access log lines dropped: standard output does not keep up or fails", metadata: ["lines": "\(total)"])
        }
    }

    /// Waits for `future`, at most `limit` (it goes on without the caller after that).
    private static func wait<T: Sendable>(for future: EventLoopFuture<T>, atMost limit: Duration) async {
        guard limit > .zero else { return }
        let once = ResumeOnce()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let timeout = future.eventLoop.scheduleTask(in: TimeAmount(limit)) { if once.take() { continuation.resume() } }
            future.whenComplete { _ in
                timeout.cancel()
                if once.take() { continuation.resume() }
            }
        }
    }

    // MARK: - Formats

    /// A text line after its timestamp; the path last, so nothing in it reads as a later field.
    private static func text(_ entry: Entry, remote: String?, into line: inout [UInt8]) {
        line.append(contentsOf: " remote=".utf8)
        line.append(contentsOf: (remote ?? "-").utf8)
        line.append(contentsOf: " method=".utf8)
        escaped(entry.method, into: &line)
        line.append(contentsOf: " status=".utf8)
        line.append(contentsOf: String(entry.status).utf8)
        line.append(contentsOf: " bytes=".utf8)
        line.append(contentsOf: (entry.bytes.map(String.init) ?? "-").utf8)
        line.append(contentsOf: " duration_ms=".utf8)
        milliseconds(entry.elapsedNanoseconds, into: &line)
        line.append(contentsOf: " tier=".utf8)
        line.append(contentsOf: entry.tier.name.utf8)
        line.append(contentsOf: " path=".utf8)
        escaped(entry.target, limit: longestTarget, into: &line)
        line.append(UInt8(ascii: "\n"))
    }

    /// A JSON line after `{"timestamp":"` and the timestamp.
    private static func json(_ entry: Entry, remote: String?, into line: inout [UInt8]) {
        line.append(contentsOf: #"","remote":"#.utf8)
        if let remote {
            line.append(UInt8(ascii: "\""))
            line.append(contentsOf: remote.utf8)
            line.append(UInt8(ascii: "\""))
        } else {
            line.append(contentsOf: "null".utf8)
        }
        line.append(contentsOf: #","method":""#.utf8)
        escaped(entry.method, into: &line)
        line.append(contentsOf: #"","path":""#.utf8)
        escaped(entry.target, limit: longestTarget, into: &line)
        line.append(contentsOf: #"","status":"#.utf8)
        line.append(contentsOf: String(entry.status).utf8)
        line.append(contentsOf: #","bytes":"#.utf8)
        line.append(contentsOf: (entry.bytes.map(String.init) ?? "null").utf8)
        line.append(contentsOf: #","duration_ms":"#.utf8)
        milliseconds(entry.elapsedNanoseconds, into: &line)
        line.append(contentsOf: #","tier":""#.utf8)
        line.append(contentsOf: entry.tier.name.utf8)
        line.append(contentsOf: "\"}\n".utf8)
    }

    /// `2026-12-01T15:20:33.123Z` (UTC, milliseconds); the part up to the seconds is formatted
    /// once a second.
    private static func timestamp(_ now: timespec, clock: inout TimestampCache, into line: inout [UInt8]) {
        let second = Int(now.tv_sec)
        if second != clock.second {
            var seconds = time_t(second)
            var parts = tm()
            gmtime_r(&seconds, &parts)
            var text: [UInt8] = []
            func digits(_ value: Int32, _ width: Int, then separator: Character?) {
                let digits = String(value)
                text.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: max(0, width - digits.utf8.count)))
                text.append(contentsOf: digits.utf8)
                if let separator { text.append(contentsOf: String(separator).utf8) }
            }
            digits(parts.tm_year + 1900, 4, then: "-")
            digits(parts.tm_mon + 1, 2, then: "-")
            digits(parts.tm_mday, 2, then: "T")
            digits(parts.tm_hour, 2, then: ":")
            digits(parts.tm_min, 2, then: ":")
            digits(parts.tm_sec, 2, then: nil)
            clock = TimestampCache(second: second, text: text)
        }
        line.append(contentsOf: clock.text)
        let millisecond = Int(now.tv_nsec) / 1_000_000
        line.append(UInt8(ascii: "."))
        line.append(UInt8(ascii: "0") &+ UInt8(millisecond / 100))
        line.append(UInt8(ascii: "0") &+ UInt8(millisecond / 10 % 10))
        line.append(UInt8(ascii: "0") &+ UInt8(millisecond % 10))
        line.append(UInt8(ascii: "Z"))
    }

    /// Milliseconds with three decimals (microsecond precision), from nanoseconds.
    static func milliseconds(_ nanoseconds: Int64, into line: inout [UInt8]) {
        let microseconds = max(0, nanoseconds) / 1000
        line.append(contentsOf: String(microseconds / 1000).utf8)
        let fraction = Int(microseconds % 1000)
        line.append(UInt8(ascii: "."))
        line.append(UInt8(ascii: "0") &+ UInt8(fraction / 100))
        line.append(UInt8(ascii: "0") &+ UInt8(fraction / 10 % 10))
        line.append(UInt8(ascii: "0") &+ UInt8(fraction % 10))
    }

    private static let hex = Array("0123456789ABCDEF".utf8)

    /// Whether a byte is written as it is: printable ASCII but `"` and `\`.
    @inline(__always)
    private static func isPlain(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\")
    }

    /// Bytes of a request target logged, at most (the rest is cut, marked `...`): a target may
    /// be as long as `HTTP_MAX_URI_BYTES`, or the header limit when it is refused.
    static let longestTarget = 2048

    /// `text`'s bytes, each outside printable ASCII (or `"`, `\`) as `%XX`; past `limit`
    /// bytes of `text`, `...` instead of the rest.
    static func escaped(_ text: String, limit: Int = .max, into line: inout [UInt8]) {
        // The usual target: nothing to escape, nothing to cut; copied at once.
        if text.utf8.count <= limit, text.utf8.allSatisfy(isPlain) {
            line.append(contentsOf: text.utf8)
            return
        }
        var count = 0
        for byte in text.utf8 {
            count += 1
            guard count <= limit else {
                line.append(contentsOf: "...".utf8)
                return
            }
            if isPlain(byte) {
                line.append(byte)
            } else {
                line.append(UInt8(ascii: "%"))
                line.append(hex[Int(byte >> 4)])
                line.append(hex[Int(byte & 0xF)])
            }
        }
    }

    /// Writes all of `bytes` to standard output (retrying on interruption, and waiting up to a
    /// second for a non-blocking one to take more); gives up on an error such as a closed pipe
    /// (the server keeps answering: `serve` ignores SIGPIPE). Returns the lines not written. A
    /// line cut by a failed write is ended by the next write, so lines stay whole.
    @Sendable private static func writeToStandardOutput(_ bytes: [UInt8]) -> Int {
        if endedMidLine.load(ordering: .relaxed) {
            guard writeAll([UInt8(ascii: "\n")]) == nil else { return bytes.count(where: { $0 == UInt8(ascii: "\n") }) }
            endedMidLine.store(false, ordering: .relaxed)
        }
        guard let stop = writeAll(bytes) else { return 0 }
        if stop > 0, bytes[stop - 1] != UInt8(ascii: "\n") { endedMidLine.store(true, ordering: .relaxed) }
        return bytes[stop...].count(where: { $0 == UInt8(ascii: "\n") })
    }

    /// Whether the last write to standard output stopped inside a line.
    private static let endedMidLine = Atomic<Bool>(false)

    /// Writes `bytes` to standard output; nil when all were written, else where it stopped.
    private static func writeAll(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { buffer -> Int? in
            guard let base = buffer.baseAddress else { return nil }
            var offset = 0
            while offset < buffer.count {
                let written = write(STDOUT_FILENO, base + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                    continue
                }
                if written < 0, errno == EINTR { continue }
                if written < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                    var ready = pollfd(fd: STDOUT_FILENO, events: Int16(POLLOUT), revents: 0)
                    var polled: Int32
                    repeat { polled = poll(&ready, 1, 1000) } while polled < 0 && errno == EINTR
                    if polled > 0 { continue }
                }
                return offset
            }
            return nil
        }
    }
}

/// Lets one of two racing callbacks through.
private final class ResumeOnce: Sendable {
    private let done = Atomic<Bool>(false)

    /// True for the first caller only.
    func take() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}
