import Foundation

/// A throwaway certificate authority and a server certificate for `localhost` / 127.0.0.1,
/// made with the `openssl` command for TLS tests.
public struct TestCertificates: Sendable {
    /// The directory holding the files.
    public let directory: String
    /// The CA certificate (PEM).
    public var caFile: String { directory + "/ca.crt" }
    /// The server certificate (PEM), signed by the CA.
    public var certificateFile: String { directory + "/server.crt" }
    /// The server's private key (PEM).
    public var keyFile: String { directory + "/server.key" }
    /// Another CA, which signed nothing here (for "wrong CA" tests).
    public var otherCAFile: String { directory + "/other-ca.crt" }

    /// Makes the files in a new temporary directory.
    public static func make() throws -> TestCertificates {
        let directory = NSTemporaryDirectory() + "ibge-cache-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: directory + "/ext.cnf", atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj",
                "/CN=ibge-cache test CA",
            ],
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.crt", "-days", "2", "-subj",
                "/CN=other CA",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            [
                "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2",
                "-extfile", "ext.cnf",
            ],
        ]
        for arguments in steps {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw RedisFixtureError(message: "openssl \(arguments.first ?? "") failed with \(process.terminationStatus)")
            }
        }
        return TestCertificates(directory: directory)
    }

    /// `redis-server` arguments for a TLS port with these files (clients need no certificate).
    public func serverArguments(tlsPort: Int) -> [String] {
        [
            "--tls-port", String(tlsPort), "--tls-cert-file", certificateFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile,
            "--tls-auth-clients", "no",
        ]
    }

    /// Removes the files.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
