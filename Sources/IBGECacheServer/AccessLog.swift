import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization
import IBGE

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `ACCESS_LOG=true`: one line per request on standard output, as `LOG_FORMAT` says: text
/// (`key=value` fields after the timestamp) or JSON (one object a line).
///
/// ```
/// 2026-12-01T15:20:33.123Z remote=127.0.0.1 method=GET path=/api/v1/localidades/estados/SC status=200 bytes=93 duration_ms=0.041 tier=l1
/// {"timestamp":"2026-12-01T15:20:33.123Z","remote":"127.0.0.1","method":"GET","path":"/api/v1/localidades/estados/SC","status":200,"bytes":93,"duration_ms":0.041,"tier":"l1"}
/// ```
///
/// A request never waits on the log: lines are added to a buffer (on the event loop, for the
/// fast path) and written by a background flush every 50 ms, on NIO's thread pool (a slow or
/// blocked standard output holds a pool thread, not an event loop or a task). The buffer is
/// bounded: past ``maximumPendingBytes`` lines are dropped and counted
/// (`ibge_cache_access_log_dropped_lines_total`, and a warning per flush that dropped some).
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
    private let output: @Sendable ([UInt8]) -> Void
    private let logger: Logger
    private let droppedLines: Counter
    private let state = Mutex(State())

    private struct State {
        var pending: [UInt8] = []
        var dropped = 0
        var clock = TimestampCache()
    }

    /// The timestamp's text up to the seconds (`2026-12-01T15:20:33`), for `second`.
    private struct TimestampCache {
        var second = -1
        var text: [UInt8] = []
    }

    /// An access log in `format`; `output` writes a chunk of whole lines (by default, to
    /// standard output), called from NIO's thread pool, one chunk at a time.
    init(
        format: Format, registry: PrometheusCollectorRegistry, logger: Logger, maximumPendingBytes: Int = 8 * 1024 * 1024,
        output: (@Sendable ([UInt8]) -> Void)? = nil
    ) {
        self.format = format
        self.maximumPendingBytes = maximumPendingBytes
        self.output = output ?? Self.writeToStandardOutput
        self.logger = logger
        self.droppedLines = registry.makeCounter(
            descriptor: .init(
                namespace: "ibge_cache", subsystem: "access_log", metricName: "dropped_lines", unitName: "total",
                helpText: "access log lines dropped because standard output did not keep up"))
    }

    /// Adds a request's line (written at the next flush, or dropped when the buffer is full).
    func append(_ entry: Entry) {
        var line: [UInt8] = []
        line.reserveCapacity(192 + entry.target.utf8.count)
        let remote = entry.remote?.ipAddress
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        state.withLock { state in
            guard state.pending.count < maximumPendingBytes else {
                state.dropped += 1
                return
            }
            switch format {
            case .text: Self.text(entry, remote: remote, at: now, clock: &state.clock, into: &line)
            case .json: Self.json(entry, remote: remote, at: now, clock: &state.clock, into: &line)
            }
            state.pending.append(contentsOf: line)
        }
    }

    /// Writes what is pending (on NIO's thread pool) and reports lines dropped since the last flush.
    func flush() async {
        let (chunk, dropped) = state.withLock { state in
            defer {
                state.pending = []
                state.dropped = 0
            }
            return (state.pending, state.dropped)
        }
        if dropped > 0 {
            droppedLines.increment(by: Int64(dropped))
            logger.warning("access log lines dropped: standard output does not keep up", metadata: ["lines": "\(dropped)"])
        }
        guard !chunk.isEmpty else { return }
        let output = self.output
        try? await NIOThreadPool.singleton.runIfActive { output(chunk) }
    }

    /// Flushes every 50 ms until the server shuts down, then once more (after the HTTP server,
    /// which stops first, has answered its last request).
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(50))
                await self.flush()
            }
        }
        await flush()
    }

    // MARK: - Formats

    private static func text(_ entry: Entry, remote: String?, at now: timespec, clock: inout TimestampCache, into line: inout [UInt8]) {
        timestamp(now, clock: &clock, into: &line)
        line.append(contentsOf: " remote=".utf8)
        line.append(contentsOf: (remote ?? "-").utf8)
        line.append(contentsOf: " method=".utf8)
        escaped(entry.method, into: &line)
        line.append(contentsOf: " path=".utf8)
        escaped(entry.target, limit: longestTarget, into: &line)
        line.append(contentsOf: " status=".utf8)
        line.append(contentsOf: String(entry.status).utf8)
        line.append(contentsOf: " bytes=".utf8)
        line.append(contentsOf: (entry.bytes.map(String.init) ?? "-").utf8)
        line.append(contentsOf: " duration_ms=".utf8)
        milliseconds(entry.elapsedNanoseconds, into: &line)
        line.append(contentsOf: " tier=".utf8)
        line.append(contentsOf: entry.tier.name.utf8)
        line.append(UInt8(ascii: "\n"))
    }

    private static func json(_ entry: Entry, remote: String?, at now: timespec, clock: inout TimestampCache, into line: inout [UInt8]) {
        line.append(contentsOf: #"{"timestamp":""#.utf8)
        timestamp(now, clock: &clock, into: &line)
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

    /// Bytes of a request target logged, at most (the rest is cut, marked `...`): a target may
    /// be as long as `HTTP_MAX_URI_BYTES`, or the header limit when it is refused.
    static let longestTarget = 2048

    /// `text`'s bytes, each outside printable ASCII (or `"`, `\`) as `%XX`; past `limit`
    /// bytes of `text`, `...` instead of the rest.
    static func escaped(_ text: String, limit: Int = .max, into line: inout [UInt8]) {
        var count = 0
        for byte in text.utf8 {
            count += 1
            guard count <= limit else {
                line.append(contentsOf: "...".utf8)
                return
            }
            if byte > 0x20, byte < 0x7F, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
                line.append(byte)
            } else {
                line.append(UInt8(ascii: "%"))
                line.append(hex[Int(byte >> 4)])
                line.append(hex[Int(byte & 0xF)])
            }
        }
    }

    /// Writes all of `bytes` to standard output (retrying on interruption); gives up on an error
    /// such as a closed pipe (the server keeps answering; SIGPIPE is ignored).
    @Sendable private static func writeToStandardOutput(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let written = write(STDOUT_FILENO, base + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}
