import IBGECacheServer
import Logging
import Redis
import Testing

@Suite("Configuration from the environment")
struct ServerConfigurationTests {
    @Test("defaults are DESIGN.md's")
    func defaults() throws {
        let c = try ServerConfiguration(environment: [:])
        #expect(c.redis?.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(c.ttl == .seconds(3600))
        #expect(c.enableRealAPIs == false)
        #expect(c.upstreamBaseURL == "https://servicodados.ibge.gov.br/api")
        #expect(c.host == "127.0.0.1" && c.port == 8080)
        #expect(c.adminToken == nil)
        #expect(c.keyPrefix == "ibge:")
        #expect(c.upstreamCircuitFailures == 5 && c.upstreamCircuitOpen == .seconds(15))
    }

    @Test("every variable is read")
    func values() throws {
        let c = try ServerConfiguration(environment: [
            "REDIS_URL": "redis://:pw@10.1.2.3:6380/4", "IBGE_CACHE_TTL": "60", "ENABLE_REAL_APIS": "true",
            "IBGE_API_BASE_URL": "http://127.0.0.1:9999/api/", "HOST": "0.0.0.0", "PORT": "9090", "CACHE_ADMIN_TOKEN": "t0k",
            "IBGE_CACHE_PREFIX": "ibge-test:", "IBGE_CACHE_L1_MAX_ENTRIES": "5000", "IBGE_CACHE_L1_MAX_MB": "64", "LOG_LEVEL": "debug",
            "IBGE_CIRCUIT_FAILURES": "0", "IBGE_CIRCUIT_OPEN_SECONDS": "30", "ALLOWED_HOSTS": "Cache.Example.com, .example.org",
            "TRUSTED_PROXIES": "10.0.0.1, ::1, 2001:0db8::1", "IBGE_PRELOAD_ON_START": "true", "IBGE_PRELOAD_INTERVAL": "6h",
            "ACCESS_LOG": "yes",
        ])
        #expect(c.accessLog && !ServerConfiguration().accessLog)
        #expect(c.preloadOnStart && c.preloadInterval == .seconds(6 * 3600))
        #expect(try ServerConfiguration(environment: ["IBGE_PRELOAD_INTERVAL": "90"]).preloadInterval == .seconds(90))
        #expect(try ServerConfiguration(environment: ["IBGE_PRELOAD_INTERVAL": "30m"]).preloadInterval == .seconds(1800))
        #expect(c.allowedHosts == ["cache.example.com", ".example.org"] && c.trustedProxies == ["10.0.0.1", "::1", "2001:db8::1"])
        #expect(c.upstreamCircuitFailures == 0 && c.upstreamCircuitOpen == .seconds(30))
        #expect(c.redis?.endpoint == .tcp(host: "10.1.2.3", port: 6380) && c.redis?.database == 4 && c.redis?.password == "pw")
        #expect(c.redisURLDescription == "redis://:***@10.1.2.3:6380/4")
        #expect(c.ttl == .seconds(60) && c.enableRealAPIs)
        #expect(c.upstreamBaseURL == "http://127.0.0.1:9999/api")
        #expect(c.host == "0.0.0.0" && c.port == 9090 && c.adminToken == "t0k" && c.keyPrefix == "ibge-test:")
        #expect(c.memoryMaximumEntries == 5000 && c.memoryMaximumBytes == 64 << 20 && c.logLevel == .debug)
    }

    @Test("REDIS_URL=none runs on memory only")
    func noRedis() throws {
        #expect(try ServerConfiguration(environment: ["REDIS_URL": "none"]).redis == nil)
    }

    @Test(
        "a bad value stops start-up with one line naming the variable and the value",
        arguments: [
            (["IBGE_CACHE_TTL": "-5"], "invalid IBGE_CACHE_TTL='-5'"),
            (["IBGE_CACHE_TTL": "1h"], "invalid IBGE_CACHE_TTL='1h'"),
            (["REDIS_URL": "localhost:6379"], "invalid REDIS_URL='localhost:6379'"),
            (["REDIS_URL": "redis://u:secret@h:x"], "invalid REDIS_URL='redis://u:***@h:x'"),
            (["PORT": "80000"], "invalid PORT='80000'"),
            (["ENABLE_REAL_APIS": "maybe"], "invalid ENABLE_REAL_APIS='maybe'"),
            (["IBGE_API_BASE_URL": "ftp://x"], "invalid IBGE_API_BASE_URL='ftp://x'"),
            (["LOG_LEVEL": "loud"], "invalid LOG_LEVEL='loud'"),
            (["IBGE_CIRCUIT_FAILURES": "-1"], "invalid IBGE_CIRCUIT_FAILURES='-1'"),
            (["IBGE_PRELOAD_INTERVAL": "soon"], "invalid IBGE_PRELOAD_INTERVAL='soon'"),
            (["LOG_FORMAT": "xml"], "invalid LOG_FORMAT='xml'"),
            (["ACCESS_LOG": "stdout"], "invalid ACCESS_LOG='stdout'"),
            (["IBGE_PRELOAD_INTERVAL": "500ms"], "invalid IBGE_PRELOAD_INTERVAL='500ms'"),
            (["IBGE_CIRCUIT_OPEN_SECONDS": "0"], "invalid IBGE_CIRCUIT_OPEN_SECONDS='0'"),
            (["TRUSTED_PROXIES": "10.0.0.0/8"], "invalid TRUSTED_PROXIES='10.0.0.0/8'"),
            (["ALLOWED_HOSTS": "a.example, http://b/"], "invalid ALLOWED_HOSTS='a.example, http://b/'"),
            (["ALLOWED_HOSTS": "cache.example.com:8443"], "invalid ALLOWED_HOSTS='cache.example.com:8443'"),
        ])
    func invalid(environment: [String: String], message: String) {
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration(environment: environment) }
        let text = error.map(String.init(describing:)) ?? ""
        #expect(text.hasPrefix(message), "\(text)")
        #expect(!text.contains("\n"))
        #expect(!text.contains("secret"))
    }
}
