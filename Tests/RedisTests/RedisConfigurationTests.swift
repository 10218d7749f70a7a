import Redis
import Testing

@Suite("Redis URL parsing")
struct RedisConfigurationTests {
    @Test("the default URL form")
    func plain() throws {
        let c = try RedisConfiguration(url: "redis://127.0.0.1:6379/0")
        #expect(c.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(c.database == 0 && c.password == nil && c.username == nil && !c.tls)
    }

    @Test("user, password, database, default port")
    func credentials() throws {
        let c = try RedisConfiguration(url: "redis://alice:p%40ss%3Aword@cache.internal/3")
        #expect(c.endpoint == .tcp(host: "cache.internal", port: 6379))
        #expect(c.username == "alice")
        #expect(c.password == "p@ss:word")
        #expect(c.database == 3)
    }

    @Test("password only, with and without a user before the colon")
    func passwordOnly() throws {
        #expect(try RedisConfiguration(url: "redis://:secret@h:1").password == "secret")
        #expect(try RedisConfiguration(url: "redis://:secret@h:1").username == nil)
        #expect(try RedisConfiguration(url: "redis://secret@h:1").password == "secret")
    }

    @Test("TLS, IPv6 and unix sockets")
    func otherForms() throws {
        #expect(try RedisConfiguration(url: "rediss://h:6380").tls)
        #expect(try RedisConfiguration(url: "redis://[::1]:7000/2").endpoint == .tcp(host: "::1", port: 7000))
        let unix = try RedisConfiguration(url: "unix:///run/redis/redis.sock?db=5")
        #expect(unix.endpoint == .unixSocket(path: "/run/redis/redis.sock"))
        #expect(unix.database == 5)
    }

    @Test(
        "bad URLs are rejected with a message naming the problem",
        arguments: [
            ("localhost:6379", "expected redis://"),
            ("http://h:1", "unknown scheme 'http'"),
            ("redis://h:99999", "port '99999'"),
            ("redis://h:abc", "port 'abc'"),
            ("redis://h/x", "database 'x'"),
            ("redis://:6379", "missing host"),
            ("unix://relative.sock", "absolute socket path"),
            ("redis://u:%zz@h", "percent-encoding"),
        ])
    func invalid(url: String, message: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
    }

    @Test("the password never appears in errors or redacted URLs")
    func redaction() {
        #expect(RedisConfiguration.redacted("redis://alice:topsecret@h:1/0") == "redis://alice:***@h:1/0")
        #expect(RedisConfiguration.redacted("redis://topsecret@h:1") == "redis://***@h:1")
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://u:topsecret@h:badport") }
        #expect(error?.message.contains("topsecret") == false)
    }
}
