public import Logging
public import Redis
import NIOCore

/// Everything the server reads from its environment, validated.
///
/// Names and defaults are the original service's (`REDIS_URL`, `IBGE_CACHE_TTL`,
/// `ENABLE_REAL_APIS`), plus the ones DESIGN.md adds. A value that does not parse stops
/// start-up with one line naming the variable and the value: nothing silently falls back.
public struct ServerConfiguration: Sendable {
    /// Where Redis is, or nil to run on memory only (`REDIS_URL=none`).
    public var redis: RedisConfiguration?
    /// `REDIS_URL` as given (password redacted), for status.
    public var redisURLDescription: String
    /// `IBGE_CACHE_TTL`: seconds an answer is fresh (`IBGE_LOCALIDADES_TTL` overrides it for
    /// localidades).
    public var ttl: Duration
    /// `IBGE_AGREGADOS_TTL`: seconds an agregados answer is fresh (default: `IBGE_CACHE_TTL`).
    public var agregadosTTL: Duration
    /// `ENABLE_REAL_APIS`.
    public var enableRealAPIs: Bool
    /// `IBGE_API_BASE_URL`.
    public var upstreamBaseURL: String
    /// `HOST`.
    public var host: String
    /// `PORT`.
    public var port: Int
    /// `CACHE_ADMIN_TOKEN`: when set, admin calls that change state need `Authorization: Bearer <token>`.
    public var adminToken: String?
    /// `IBGE_CACHE_PREFIX`: prefix of every Redis key (default `ibge:`).
    public var keyPrefix: String
    /// `IBGE_CACHE_L1_MAX_ENTRIES`.
    public var memoryMaximumEntries: Int
    /// `IBGE_CACHE_L1_MAX_MB`: L1 byte bound, in MiB.
    public var memoryMaximumBytes: Int
    /// `IBGE_CACHE_GRACE`: seconds Redis keeps a value after it stops being fresh.
    public var gracePeriod: Duration
    /// `LOG_LEVEL`.
    public var logLevel: Logger.Level
    /// `LOG_FORMAT`: `text` (default: key=value lines) or `json` (one object a line).
    public var logFormat: LogFormat

    /// How log lines are written.
    public enum LogFormat: String, Sendable {
        /// swift-log's stream format: timestamp, level, label, metadata as key=value, message.
        case text
        /// One JSON object a line (``JSONLogHandler``).
        case json
    }
    /// `HTTP_HEADER_TIMEOUT`, `HTTP_IDLE_TIMEOUT`, `MAX_CONNECTIONS`, `HTTP_MAX_URI_BYTES`,
    /// `HTTP_MAX_BODY_BYTES`.
    public var connectionLimits: ConnectionLimits
    /// `IBGE_CACHE_TTL_JITTER`: up to this fraction is added at random to each value's TTL, so
    /// keys loaded together do not expire together (percent in the variable; default 10).
    public var ttlJitter: Double
    /// `HTTP_FAST_PATH`: answer L1 hits below the router (default true; false sends every
    /// request through the router, for comparison).
    public var fastPath: Bool
    /// `IBGE_MAX_CONCURRENT_LOADS`: requests to IBGE in flight at once (default 16; up to 256
    /// more wait in line, past that a load fails at once to the stale value or the snapshot).
    public var upstreamConcurrency: Int
    /// `IBGE_CIRCUIT_FAILURES`: IBGE requests failing in a row before the circuit opens and
    /// requests fail at once to the stale value or the snapshot (default 5; 0 turns it off).
    public var upstreamCircuitFailures: Int
    /// `IBGE_CIRCUIT_OPEN_SECONDS`: how long the circuit stays open before one request probes
    /// IBGE (default 15).
    public var upstreamCircuitOpen: Duration
    /// `ALLOWED_HOSTS`: host names admin calls must name (`.example.com` for its subdomains;
    /// loopback names always pass), against DNS rebinding; nil (unset): any host.
    public var allowedHosts: [String]?
    /// `IBGE_PRELOAD_ON_START`: warm the cache when the server starts (default false).
    public var preloadOnStart: Bool
    /// `IBGE_PRELOAD_INTERVAL` (`6h`, `30m`, `90s`, or seconds): warm the cache every interval,
    /// one instance per cycle among those sharing Redis (unset: no scheduled warming).
    public var preloadInterval: Duration?
    /// `ACCESS_LOG`: one line per request on standard output, in `LOG_FORMAT` (default false).
    public var accessLog: Bool
    /// `TRUSTED_PROXIES`: addresses of reverse proxies whose `X-Forwarded-For`/`X-Real-IP` say
    /// who the client is, for the admin loopback rule (unset: none).
    public var trustedProxies: Set<String>

    /// The defaults of DESIGN.md.
    public init() {
        self.redis = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 6379))
        self.redisURLDescription = "redis://127.0.0.1:6379/0"
        self.ttl = .seconds(3600)
        self.agregadosTTL = .seconds(3600)
        self.enableRealAPIs = false
        self.upstreamBaseURL = "https://servicodados.ibge.gov.br/api"
        self.host = "127.0.0.1"
        self.port = 8080
        self.adminToken = nil
        self.keyPrefix = "ibge:"
        self.memoryMaximumEntries = 100_000
        self.memoryMaximumBytes = 256 * 1024 * 1024
        self.gracePeriod = .seconds(24 * 3600)
        self.logLevel = .info
        self.logFormat = .text
        self.connectionLimits = ConnectionLimits()
        self.fastPath = true
        self.upstreamConcurrency = 16
        self.upstreamCircuitFailures = 5
        self.upstreamCircuitOpen = .seconds(15)
        self.allowedHosts = nil
        self.preloadOnStart = false
        self.preloadInterval = nil
        self.trustedProxies = []
        self.accessLog = false
        self.ttlJitter = 0.1
    }

    /// Reads the configuration from environment variables.
    ///
    /// - Throws: ``ConfigurationError`` naming the first bad variable and its value.
    public init(environment: [String: String]) throws(ConfigurationError) {
        self.init()
        func value(_ name: String) -> String? {
            guard let raw = environment[name] else { return nil }
            let trimmed = raw.trimmingWhitespace()
            return trimmed.isEmpty ? nil : trimmed
        }
        func integer(_ name: String, _ range: ClosedRange<Int>, _ expected: String) throws(ConfigurationError) -> Int? {
            guard let text = value(name) else { return nil }
            guard let n = Int(text), range.contains(n) else { throw ConfigurationError(variable: name, value: text, expected: expected) }
            return n
        }

        if let url = environment["REDIS_URL"] {
            let trimmed = url.trimmingWhitespace()
            if trimmed.isEmpty || trimmed.lowercased() == "none" {
                redis = nil
                redisURLDescription = "none"
            } else {
                do {
                    redis = try RedisConfiguration(url: trimmed)
                } catch {
                    throw ConfigurationError(variable: "REDIS_URL", value: RedisConfiguration.redacted(trimmed), expected: error.message)
                }
                redisURLDescription = RedisConfiguration.redacted(trimmed)
            }
        }
        if let seconds = try integer("IBGE_CACHE_TTL", 1...(10 * 365 * 86400), "a whole number of seconds, at least 1") {
            ttl = .seconds(seconds)
            agregadosTTL = .seconds(seconds)
        }
        if let seconds = try integer("IBGE_LOCALIDADES_TTL", 1...(10 * 365 * 86400), "a whole number of seconds, at least 1") {
            ttl = .seconds(seconds)
        }
        if let seconds = try integer("IBGE_AGREGADOS_TTL", 1...(10 * 365 * 86400), "a whole number of seconds, at least 1") {
            agregadosTTL = .seconds(seconds)
        }
        if let seconds = try integer("IBGE_CACHE_GRACE", 0...(365 * 86400), "a whole number of seconds, 0 or more") {
            gracePeriod = .seconds(seconds)
        }
        func flag(_ name: String) throws(ConfigurationError) -> Bool? {
            guard let text = value(name) else { return nil }
            switch text.lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: throw ConfigurationError(variable: name, value: text, expected: "true or false")
            }
        }
        if let on = try flag("ENABLE_REAL_APIS") { enableRealAPIs = on }
        if let on = try flag("HTTP_FAST_PATH") { fastPath = on }
        if let percent = try integer("IBGE_CACHE_TTL_JITTER", 0...100, "a whole percentage from 0 to 100") {
            ttlJitter = Double(percent) / 100
        }
        if let seconds = try integer("HTTP_HEADER_TIMEOUT", 1...3600, "a whole number of seconds from 1 to 3600") {
            connectionLimits.requestReadTimeout = .seconds(seconds)
        }
        if let seconds = try integer("HTTP_IDLE_TIMEOUT", 1...86400, "a whole number of seconds from 1 to 86400") {
            connectionLimits.idleTimeout = .seconds(seconds)
        }
        if let n = try integer("IBGE_MAX_CONCURRENT_LOADS", 1...1024, "a whole number of requests, 1 to 1024") {
            upstreamConcurrency = n
        }
        if let n = try integer("IBGE_CIRCUIT_FAILURES", 0...1000, "a whole number of failures, 0 (off) to 1000") {
            upstreamCircuitFailures = n
        }
        if let seconds = try integer("IBGE_CIRCUIT_OPEN_SECONDS", 1...3600, "a whole number of seconds from 1 to 3600") {
            upstreamCircuitOpen = .seconds(seconds)
        }
        if let on = try flag("IBGE_PRELOAD_ON_START") { preloadOnStart = on }
        if let on = try flag("ACCESS_LOG") { accessLog = on }
        if let text = value("IBGE_PRELOAD_INTERVAL") {
            guard let interval = Self.parseInterval(text.lowercased()), interval >= .seconds(1) else {
                throw ConfigurationError(variable: "IBGE_PRELOAD_INTERVAL", value: text, expected: "a duration of at least 1 s, such as 6h, 30m or 90s")
            }
            preloadInterval = interval
        }
        if let text = value("ALLOWED_HOSTS") {
            // Names (or IPv4 addresses), without a port; a trailing dot is dropped, as from a Host.
            let hosts = text.split(separator: ",").map { String($0).trimmingWhitespace().lowercased() }.filter { !$0.isEmpty }
                .map { $0.hasSuffix(".") && $0.count > 1 ? String($0.dropLast()) : $0 }
            guard !hosts.isEmpty,
                hosts.allSatisfy({ name in
                    name.count <= 253 && name != "." && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" }
                })
            else {
                throw ConfigurationError(
                    variable: "ALLOWED_HOSTS", value: text,
                    expected: "host names without ports separated by commas, such as cache.example.com,.example.org")
            }
            allowedHosts = hosts
        }
        if let text = value("TRUSTED_PROXIES") {
            let addresses = text.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
            guard !addresses.isEmpty, addresses.allSatisfy({ (try? SocketAddress(ipAddress: $0, port: 0)) != nil }) else {
                throw ConfigurationError(variable: "TRUSTED_PROXIES", value: text, expected: "IP addresses separated by commas, such as 127.0.0.1,::1")
            }
            trustedProxies = Set(addresses.map { AdminAuthMiddleware.normalized($0) })
        }
        if let n = try integer("MAX_CONNECTIONS", 1...1_000_000, "a whole number of connections, at least 1") {
            connectionLimits.maximumConnections = n
        }
        if let n = try integer("HTTP_MAX_URI_BYTES", 256...connectionLimits.maximumHeaderFieldBytes, "a number of bytes from 256 to 16384") {
            connectionLimits.maximumURIBytes = n
        }
        if let n = try integer("HTTP_MAX_BODY_BYTES", 0...(64 * 1024 * 1024), "a number of bytes from 0 to 67108864") {
            connectionLimits.maximumBodyBytes = n
        }
        if let base = value("IBGE_API_BASE_URL") {
            guard base.hasPrefix("https://") || base.hasPrefix("http://"), base.count > 8 else {
                throw ConfigurationError(variable: "IBGE_API_BASE_URL", value: base, expected: "an http:// or https:// URL")
            }
            upstreamBaseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        }
        if let host = value("HOST") { self.host = host }
        if let port = try integer("PORT", 0...65535, "a port number from 0 to 65535") { self.port = port }
        adminToken = value("CACHE_ADMIN_TOKEN")
        if let prefix = environment["IBGE_CACHE_PREFIX"] {
            guard !prefix.isEmpty, !prefix.contains(where: { $0.isWhitespace }) else {
                throw ConfigurationError(variable: "IBGE_CACHE_PREFIX", value: prefix, expected: "a non-empty prefix without spaces, such as ibge:")
            }
            keyPrefix = prefix
        }
        if let n = try integer("IBGE_CACHE_L1_MAX_ENTRIES", 1...100_000_000, "a whole number of entries, at least 1") {
            memoryMaximumEntries = n
        }
        if let mb = try integer("IBGE_CACHE_L1_MAX_MB", 1...1_048_576, "a whole number of MiB, at least 1") {
            memoryMaximumBytes = mb * 1024 * 1024
        }
        if let format = value("LOG_FORMAT") {
            guard let parsed = LogFormat(rawValue: format.lowercased()) else {
                throw ConfigurationError(variable: "LOG_FORMAT", value: format, expected: "text or json")
            }
            logFormat = parsed
        }
        if let level = value("LOG_LEVEL") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError(variable: "LOG_LEVEL", value: level, expected: "trace, debug, info, notice, warning, error or critical")
            }
            logLevel = parsed
        }
    }
}

/// A configuration value that does not parse.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// The environment variable.
    public let variable: String
    /// The value it had (secrets redacted).
    public let value: String
    /// What was expected.
    public let expected: String

    public var description: String { "invalid \(variable)='\(value)': expected \(expected)" }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let first = s.first, first.isWhitespace { s = s.dropFirst() }
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension ServerConfiguration {
    /// Parses `6h`, `30m`, `45s`, `2s`, or a number of seconds.
    static func parseInterval(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, milliseconds) in units.sorted(by: { $0.0.count > $1.0.count }) where text.hasSuffix(suffix) {
            guard let value = Int64(text.dropLast(suffix.count)), value > 0, value <= Int64.max / milliseconds / 2 else { return nil }
            return .milliseconds(value * milliseconds)
        }
        guard let seconds = Int64(text), seconds > 0, seconds <= 10 * 365 * 86400 else { return nil }
        return .seconds(seconds)
    }
}
