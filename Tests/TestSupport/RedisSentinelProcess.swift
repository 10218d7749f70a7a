import Foundation
import RESP
import Redis
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A real Redis Sentinel deployment for tests, on loopback: a master, a replica of it, and
/// three sentinels watching it as `mymaster` (quorum 2, down after 1 s, failover timeout 3 s).
public final class RedisSentinelProcess: Sendable {
    /// The master at start.
    public let master: RedisServerProcess
    /// Its replica at start.
    public let replica: RedisServerProcess
    /// The sentinels' ports.
    public let sentinelPorts: [Int]
    private let sentinels: Mutex<[Process]>
    private let directory: String
    /// The name the sentinels watch the master under.
    public static let masterName = "mymaster"

    /// The data nodes' password, when they have one.
    public let password: String?
    /// The certificates of every process's TLS port, when they have them.
    public let certificates: TestCertificates?
    /// The TLS ports (master, replica, sentinels), when there are certificates.
    public let tlsPorts: TLSPorts?
    /// An ACL user the data nodes have, when started with one.
    public let user: RedisACLUser?

    /// Every process's TLS port.
    public struct TLSPorts: Sendable {
        public var master: Int
        public var replica: Int
        public var sentinels: [Int]
    }

    /// `redis+sentinel://[:<password>@]127.0.0.1:<port>,…/mymaster`; with TLS,
    /// `rediss+sentinel://` on the sentinels' TLS ports with the test CA; with an ACL user, as it.
    public var url: String {
        let credentials = user.map { "\($0.name):\($0.password)@" } ?? password.map { ":\($0)@" } ?? ""
        guard let certificates, let tlsPorts else {
            return "redis+sentinel://" + credentials + sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") + "/" + Self.masterName
        }
        return "rediss+sentinel://" + credentials + tlsPorts.sentinels.map { "127.0.0.1:\($0)" }.joined(separator: ",") + "/" + Self.masterName
            + "?tls_ca_file=\(certificates.caFile)&tls_server_name=localhost"
    }

    private init(
        master: RedisServerProcess, replica: RedisServerProcess, sentinelPorts: [Int], sentinels: [Process], directory: String, password: String?,
        certificates: TestCertificates?, tlsPorts: TLSPorts?, user: RedisACLUser?
    ) {
        self.password = password
        self.certificates = certificates
        self.tlsPorts = tlsPorts
        self.user = user
        self.master = master
        self.replica = replica
        self.sentinelPorts = sentinelPorts
        self.sentinels = Mutex(sentinels)
        self.directory = directory
    }

    /// Starts the master, the replica and the sentinels, and waits until every sentinel knows
    /// the replica and the two other sentinels.
    ///
    /// - Parameters:
    ///   - certificates: every process also gets a TLS port with these; the replication and the
    ///     sentinels' links to the data nodes go over TLS (so the sentinels name TLS ports). The
    ///     plaintext ports stay open for the fixture's own checks.
    ///   - user: an ACL user the data nodes have, beside the default one (which the sentinels use).
    public static func start(password: String? = nil, certificates: TestCertificates? = nil, user: RedisACLUser? = nil) async throws
        -> RedisSentinelProcess
    {
        let auth = password.map { ["--requirepass", $0, "--masterauth", $0] } ?? []
        let tlsPorts = try certificates.map { _ in
            TLSPorts(
                master: try RedisServerProcess.freePort(), replica: try RedisServerProcess.freePort(),
                sentinels: try (0..<3).map { _ in try RedisServerProcess.freePort() })
        }
        func tls(_ port: Int?) -> [String] {
            guard let certificates, let port else { return [] }
            return certificates.serverArguments(tlsPort: port) + ["--tls-replication", "yes"]
        }
        let master = try await RedisServerProcess.start(["--repl-diskless-sync-delay", "0"] + auth + tls(tlsPorts?.master) + (user?.serverArguments ?? []))
        let replica = try await RedisServerProcess.start(
            ["--replicaof", "127.0.0.1", String(tlsPorts?.master ?? master.port), "--repl-diskless-sync-delay", "0"] + auth + tls(tlsPorts?.replica)
                + (user?.serverArguments ?? []))
        let directory = NSTemporaryDirectory() + "ibge-cache-sentinel-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var ports: [Int] = []
        var processes: [Process] = []
        do {
            for index in 0..<3 {
                let port = try RedisServerProcess.freePort()
                let config = "\(directory)/sentinel-\(index).conf"
                var tlsLines = ""
                if let certificates, let tlsPorts {
                    tlsLines = """
                        tls-port \(tlsPorts.sentinels[index])
                        tls-cert-file \(certificates.certificateFile)
                        tls-key-file \(certificates.keyFile)
                        tls-ca-cert-file \(certificates.caFile)
                        tls-auth-clients no
                        tls-replication yes

                        """
                }
                try """
                \(tlsLines)port \(port)
                bind 127.0.0.1
                protected-mode no
                daemonize no
                dir \(directory)
                loglevel warning
                sentinel monitor \(masterName) 127.0.0.1 \(tlsPorts?.master ?? master.port) 2
                sentinel down-after-milliseconds \(masterName) 1000
                sentinel failover-timeout \(masterName) 3000
                sentinel parallel-syncs \(masterName) 1
                \(password.map { "sentinel auth-pass \(masterName) \($0)" } ?? "")

                """.write(toFile: config, atomically: true, encoding: .utf8)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: try RedisServerProcess.redisServerPath())
                process.arguments = [config, "--sentinel"]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                ports.append(port)
                processes.append(process)
            }
            let deployment = RedisSentinelProcess(
                master: master, replica: replica, sentinelPorts: ports, sentinels: processes, directory: directory, password: password,
                certificates: certificates, tlsPorts: tlsPorts, user: user)
            for _ in 0..<750 {
                if await deployment.isReady() { return deployment }
                try await Task.sleep(for: .milliseconds(20))
            }
            deployment.stop()
            throw RedisFixtureError(message: "the sentinels did not see the replica and each other within 15 s")
        } catch {
            for process in processes where process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
            master.stop()
            replica.stop()
            throw error
        }
    }

    /// Runs `body` with a fresh deployment and stops it afterwards.
    public static func with<T>(
        password: String? = nil, certificates: TestCertificates? = nil, user: RedisACLUser? = nil, _ body: (RedisSentinelProcess) async throws -> T
    ) async throws -> T {
        try await TopologyTurn.withDeployment(
            start: { try await start(password: password, certificates: certificates, user: user) }, stop: { $0.stop() }, body)
    }

    /// Whether every sentinel knows the replica and the two other sentinels.
    func isReady() async -> Bool {
        for port in sentinelPorts {
            guard let others = try? await Self.ask(port, RESPCommand("SENTINEL", "sentinels", Self.masterName)),
                case .array(let sentinels) = others, sentinels.count == 2,
                let replicas = try? await Self.ask(port, RESPCommand("SENTINEL", "replicas", Self.masterName)),
                case .array(let known) = replicas, known.count == 1
            else { return false }
        }
        return true
    }

    /// The master the sentinel on `port` names now.
    public func namedMaster(sentinel port: Int) async -> Int? {
        guard let reply = try? await Self.ask(port, RESPCommand("SENTINEL", "get-master-addr-by-name", Self.masterName)),
            case .array(let parts) = reply, parts.count == 2
        else { return nil }
        return parts[1].string.flatMap(Int.init)
    }

    static func ask(_ port: Int, _ command: RESPCommand) async throws -> RESPValue {
        let client = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)))
        do {
            let reply = try await client.send(command)
            await client.shutdown()
            return reply
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// Stops every process.
    public func stop() {
        for process in sentinels.withLock({ $0 }) where process.isRunning {
            // SIGKILL: a sentinel in the middle of a failover may take its time over SIGTERM.
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        master.stop()
        replica.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
