import NIOCore
import Redis
import TestSupport
import Testing

@Suite("Redis over TLS against a real redis-server")
struct RedisTLSTests {
    @Test("rediss:// with the right CA works; a wrong CA or plaintext against the TLS port fails clearly")
    func tls() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let tlsPort = try RedisServerProcess.freePort()
        try await RedisServerProcess.with(certificates.serverArguments(tlsPort: tlsPort)) { _ in
            let url = "rediss://127.0.0.1:\(tlsPort)/0?tls_ca_file=\(certificates.caFile)&tls_server_name=localhost"
            let client = RedisClient(configuration: try RedisConfiguration(url: url))
            try await client.set("secure", value: ByteBuffer(string: "yes"))
            #expect(try await client.get("secure") == ByteBuffer(string: "yes"))
            await client.shutdown()

            let wrongCA = RedisClient(
                configuration: try RedisConfiguration(
                    url: "rediss://127.0.0.1:\(tlsPort)/0?tls_ca_file=\(certificates.otherCAFile)&tls_server_name=localhost"))
            let refused = await #expect(throws: RedisError.self) { try await wrongCA.ping() }
            #expect(refused?.code == .handshakeFailed, "\(refused?.message ?? "")")
            #expect(refused?.message.contains("TLS") == true, "\(refused?.message ?? "")")
            await wrongCA.shutdown()

            var plainConfiguration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: tlsPort))
            plainConfiguration.connectTimeout = .milliseconds(500)
            let plain = RedisClient(configuration: plainConfiguration)
            await #expect(throws: RedisError.self) { try await plain.ping() }
            await plain.shutdown()
        }
    }

    @Test("TLS options need rediss://, and a missing CA file is a configuration error")
    func configuration() async throws {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h:1?tls_ca_file=/x.pem") }
        let client = RedisClient(configuration: try RedisConfiguration(url: "rediss://127.0.0.1:1?tls_ca_file=/nonexistent/ca.pem"))
        let error = await #expect(throws: RedisError.self) { try await client.ping() }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("/nonexistent/ca.pem") == true)
        await client.shutdown()
    }
}
